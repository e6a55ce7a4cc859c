r"""Saving what a checkpoint needs to rebuild its model and diffusion process, and loading it
back: the one place that knows the layout of a run's ``model_config``.

A run's ``model_config`` (stored in every checkpoint by :class:`~pyg_infdiff.training.Trainer`)
is a dictionary of plain values, so that checkpoints load with ``weights_only=True``:

.. code-block:: text

    {"unet": UNetConfig.to_dict(),
     "diffusion": {"sigma": ..., "noise_cutoff": ..., "schedule": "cosine" | "linear" | "custom",
                   "num_steps": ..., "parametrization": ..., "betas": [...] (custom only),
                   "data_sigma": ..., "data_cutoff": ... (a data mollifier other than the
                   noise's only)},
     "data": {"resolution": ..., ...}}

A diffusion autoencoder's run has ``"autoencoder": DiffusionAutoencoder.to_dict()`` in place of
``"unet"``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from pyg_infdiff.diffusion import (
    LatticeSubset,
    MollifiedDiffusion,
    NoiseSchedule,
    context_for,
    cosine_schedule,
    linear_schedule,
    training_nodes,
)
from pyg_infdiff.models import DiffusionAutoencoder, MultiscaleOperatorUNet, UNetConfig
from pyg_infdiff.noise import GaussianMollifier, MollifiedNoise
from pyg_infdiff.training.checkpoint import CheckpointManager, load_checkpoint


def diffusion_to_dict(diffusion: MollifiedDiffusion) -> dict[str, Any]:
    r"""Describes a :class:`~pyg_infdiff.diffusion.MollifiedDiffusion` with plain values.

    The inverse is :func:`diffusion_from_dict`. Named schedules (cosine, linear, at their default
    parameters) are stored by name; any other schedule by its :math:`\beta_t` as a list. A data
    mollifier of another width than the noise is stored as ``data_sigma``, and one of another
    truncation than :class:`~pyg_infdiff.noise.GaussianMollifier`'s default as ``data_cutoff``.
    """
    schedule = diffusion.schedule
    out: dict[str, Any] = {
        "sigma": float(diffusion.noise.sigma),
        "ndim": int(diffusion.noise.ndim),
        "noise_cutoff": float(diffusion.noise.cutoff),
        "schedule": schedule.name,
        "num_steps": int(schedule.num_steps),
        "parametrization": diffusion.parametrization,
    }
    if diffusion.snr_gamma is not None:
        out["snr_gamma"] = diffusion.snr_gamma
    data_sigma = float(diffusion.mollifier.sigma)
    if data_sigma != out["sigma"]:
        out["data_sigma"] = data_sigma
    data_cutoff = float(diffusion.mollifier.cutoff)
    if data_cutoff != GaussianMollifier(data_sigma).cutoff:
        out["data_cutoff"] = data_cutoff
    named = {"cosine": cosine_schedule, "linear": linear_schedule}.get(schedule.name)
    if named is None or not torch.equal(named(schedule.num_steps).betas, schedule.betas.cpu()):
        out["schedule"] = "custom"
        out["betas"] = schedule.betas.cpu().tolist()
    return out


def diffusion_from_dict(info: dict[str, Any], ndim: int | None = None) -> MollifiedDiffusion:
    r"""Rebuilds the diffusion process described by :func:`diffusion_to_dict`.

    Args:
        info (dict): The description.
        ndim (int, optional): The domain dimension, for descriptions that do not record it.
            (default: :obj:`None`)
    """
    ndim = int(info.get("ndim", ndim if ndim is not None else 2))
    name = info.get("schedule", "cosine")
    num_steps = int(info.get("num_steps", 1000))
    if name == "cosine":
        schedule = cosine_schedule(num_steps)
    elif name == "linear":
        schedule = linear_schedule(num_steps)
    elif name == "custom" and "betas" in info:
        schedule = NoiseSchedule(torch.tensor(info["betas"], dtype=torch.float64), name="custom")
    else:
        raise ValueError(f"Unknown schedule {name!r} in the diffusion description")
    noise = MollifiedNoise(float(info["sigma"]), ndim, cutoff=float(info.get("noise_cutoff", 1e-3)))
    mollifier = None  # the default: the noise's width, GaussianMollifier's default truncation
    if "data_sigma" in info or "data_cutoff" in info:
        cutoff = {"cutoff": float(info["data_cutoff"])} if "data_cutoff" in info else {}
        mollifier = GaussianMollifier(float(info.get("data_sigma", info["sigma"])), **cutoff)
    return MollifiedDiffusion(noise, schedule,
                              parametrization=info.get("parametrization", "mollified_eps"),
                              mollifier=mollifier, snr_gamma=info.get("snr_gamma"))


def run_config(
    unet: UNetConfig, diffusion: MollifiedDiffusion, **data: Any
) -> dict[str, Any]:
    r"""The ``model_config`` of a run: everything :func:`load_pretrained` needs.

    Args:
        unet (UNetConfig): The model configuration.
        diffusion (MollifiedDiffusion): The diffusion process.
        **data: Plain facts about the training data, e.g. ``resolution=32, dataset="shapes"``.
    """
    return {"unet": unet.to_dict(), "diffusion": diffusion_to_dict(diffusion), "data": data}


def resolve_checkpoint(path: str | Path) -> Path:
    r"""A checkpoint file, or the latest checkpoint of a run folder (``<run>/checkpoints`` or
    the folder itself)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        for folder in (path / "checkpoints", path):
            latest = CheckpointManager(folder).latest() if folder.is_dir() else None
            if latest is not None:
                return latest
        raise FileNotFoundError(f"No checkpoint (ckpt_<step>.pt) in {path} or {path}/checkpoints")
    raise FileNotFoundError(f"No checkpoint file or run folder at {path}")


@dataclass
class Pretrained:
    r"""A model rebuilt from a checkpoint, with its diffusion process.

    Attributes:
        model (MultiscaleOperatorUNet or DiffusionAutoencoder): The network, in eval mode.
        diffusion (MollifiedDiffusion): The diffusion process it was trained with.
        config (UNetConfig): The model configuration (of the U-Net of an autoencoder).
        info (dict): The run's whole ``model_config`` (``"data"`` holds e.g. the resolution).
        step (int): The training step of the checkpoint.
        path (pathlib.Path): The checkpoint file.
    """

    model: MultiscaleOperatorUNet | DiffusionAutoencoder
    diffusion: MollifiedDiffusion
    config: UNetConfig
    info: dict[str, Any]
    step: int
    path: Path

    @property
    def resolution(self) -> int | None:
        r"""The training resolution, when the run recorded it."""
        return self.info.get("data", {}).get("resolution")

    @property
    def shapes(self) -> str:
        r"""The name (:meth:`~pyg_infdiff.data.ShapesConfig.named`) of the built-in shapes
        distribution a run on :class:`~pyg_infdiff.data.ContinuousShapes` learnt: the examples
        record it; :obj:`"full"`, the default configuration, for runs that did not."""
        return self.info.get("data", {}).get("shapes", "full")

    def training_context(self) -> LatticeSubset | Tensor | None:
        r"""The context that reads any point set the way this model was trained, for
        ``sample(..., context=...)`` (:class:`~pyg_infdiff.diffusion.ContextNodes`): the nodes
        per function of training, :math:`n^d / s` random pixel centres of the training lattice
        for resolution :math:`n` and subsampling rate :math:`s > 1`
        (:class:`~pyg_infdiff.diffusion.LatticeSubset`, drawn as the training nodes were); the
        pixel centres of the training lattice when every pixel was a node (:math:`s = 1`);
        :obj:`None` when the run did not record its resolution
        (:func:`~pyg_infdiff.diffusion.training_nodes`).
        """
        if self.resolution is None:
            return None
        rate = float(self.info.get("data", {}).get("subsample") or 1.0)
        return training_nodes((int(self.resolution),) * self.config.ndim, rate)

    def context_for(self, num_nodes: int) -> LatticeSubset | Tensor | None:
        r""":meth:`training_context` where it helps a point set of :obj:`num_nodes` points per
        sample (:func:`~pyg_infdiff.diffusion.context_for`): on at least as many points as the
        model's training nodes per function (so that every lattice of a zoom shares one
        context, the one as dense as training included), and :obj:`None` (the nodes are their
        own context) otherwise: on fewer nodes than in training a context cannot help (its
        integrals would need the missing nodes). A model that saw every pixel of its lattice
        (a context of the full lattice) needs more points than that lattice has: read through
        itself, its own lattice would give exactly the plain call (each pixel reads its context
        twin as itself), at the price of twice the nodes and a radius graph of them instead of
        the dense path (at 128², preset 32, 16 samples: 16 GiB instead of a few hundred MiB).

        Args:
            num_nodes (int): The number of points per sample.
        """
        return context_for(self.training_context(), num_nodes)


def load_pretrained(
    path: str | Path,
    *,
    weights: Literal["ema", "model"] = "ema",
    device: torch.device | str | None = None,
) -> Pretrained:
    r"""Loads a model and its diffusion process from a checkpoint or a run folder.

    The file is read with ``torch.load(..., weights_only=True)``: nothing in it can run code.

    Args:
        path (str or pathlib.Path): A checkpoint file, or a run folder (its latest checkpoint).
        weights (str, optional): ``"ema"`` for the averaged weights (when the checkpoint has
            them), ``"model"`` for the raw ones. (default: :obj:`"ema"`)
        device (torch.device or str, optional): Where to put the model. (default: CPU)
    """
    if weights not in ("ema", "model"):
        raise ValueError(f"'weights' must be 'ema' or 'model', got {weights!r}")
    file = resolve_checkpoint(path)
    state = load_checkpoint(file)
    info = state.get("model_config") or {}
    if ("unet" not in info and "autoencoder" not in info) or "diffusion" not in info:
        raise ValueError(f"{file} has no model_config with 'unet' (or 'autoencoder') and "
                         "'diffusion' entries: it was not written with "
                         "pyg_infdiff.training.run_config")
    if "autoencoder" in info:
        model = DiffusionAutoencoder.from_dict(info["autoencoder"])
        config = model.unet.config
    else:
        config = UNetConfig.from_dict(info["unet"])
        model = MultiscaleOperatorUNet(config)
    if weights == "ema" and state.get("ema") is not None:
        # AveragedModel keeps the network under 'module.' next to its 'n_averaged' counter.
        params = {k.removeprefix("module."): v for k, v in state["ema"].items()
                  if k.startswith("module.")}
    else:
        params = state["model"]
    model.load_state_dict(params)
    model.to(device or "cpu").eval()
    diffusion = diffusion_from_dict(info["diffusion"], ndim=config.ndim)
    return Pretrained(model, diffusion, config, info, int(state.get("step", 0)), file)
