r"""Schedules, the mollified forward process and its training loss, time-step samplers,
DDPM/DDIM samplers, sampling at any resolution, conditioning on observed nodes, and the use
cases of diffusion autoencoders (reconstruction, latent interpolation)."""
from pyg_infdiff.diffusion.autoencoding import (
    Autoencoder,
    AutoencoderLoss,
    encoder_inputs,
    interpolate,
    reconstruct,
    slerp,
)
from pyg_infdiff.diffusion.conditioning import Observation, renoise, repaint_levels
from pyg_infdiff.diffusion.context import (
    ContextNodes,
    LatticeSubset,
    context_for,
    training_nodes,
)
from pyg_infdiff.diffusion.denoiser import Denoiser, accepts_lattice, call_denoiser
from pyg_infdiff.diffusion.latent import LatentDiffusion, LatentStats, LatentTrainingLosses
from pyg_infdiff.diffusion.latent_sampling import decode_latents, sample_latents, sample_two_stage
from pyg_infdiff.diffusion.process import (
    MollifiedDiffusion,
    Parametrization,
    TrainingLosses,
    canonical_parametrization,
    min_snr_weight,
    predict_noise,
    predict_x0,
    training_target,
)
from pyg_infdiff.diffusion.samplers import DDIMSampler, DDPMSampler, NoiseSource, SamplerOutput
from pyg_infdiff.diffusion.sampling import SampleOutput, sample
from pyg_infdiff.diffusion.schedules import (
    NoiseSchedule,
    constant_schedule,
    cosine_schedule,
    linear_schedule,
)
from pyg_infdiff.diffusion.timesteps import (
    LossAwareTimestepSampler,
    TimestepSampler,
    UniformTimestepSampler,
)

__all__ = [
    "ContextNodes",
    "Autoencoder",
    "AutoencoderLoss",
    "DDIMSampler",
    "DDPMSampler",
    "Denoiser",
    "LatentDiffusion",
    "LatentStats",
    "LatentTrainingLosses",
    "LatticeSubset",
    "LossAwareTimestepSampler",
    "MollifiedDiffusion",
    "NoiseSchedule",
    "NoiseSource",
    "Observation",
    "Parametrization",
    "SampleOutput",
    "SamplerOutput",
    "TimestepSampler",
    "TrainingLosses",
    "UniformTimestepSampler",
    "accepts_lattice",
    "call_denoiser",
    "canonical_parametrization",
    "constant_schedule",
    "context_for",
    "cosine_schedule",
    "decode_latents",
    "encoder_inputs",
    "interpolate",
    "linear_schedule",
    "min_snr_weight",
    "predict_noise",
    "predict_x0",
    "reconstruct",
    "renoise",
    "repaint_levels",
    "sample",
    "sample_latents",
    "sample_two_stage",
    "slerp",
    "training_nodes",
    "training_target",
]
