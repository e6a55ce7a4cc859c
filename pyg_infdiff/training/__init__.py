r"""Training: the :class:`Trainer` loop, EMA, atomic checkpoints, logs and distributed data
parallel helpers."""
from pyg_infdiff.training.checkpoint import (
    CheckpointManager,
    capture_rng_state,
    check_storable,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
    state_is_finite,
)
from pyg_infdiff.training.config import TrainerConfig
from pyg_infdiff.training.cursor import DataCursor, move_to_device
from pyg_infdiff.training.distributed import (
    DistributedContext,
    all_gather_objects,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    distributed_sampler,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    unwrap_model,
    wrap_ddp,
)
from pyg_infdiff.training.ema import create_ema, ema_decay, update_ema
from pyg_infdiff.training.logging import RunningMeans, TrainingLog, plot_loss_curve, read_log
from pyg_infdiff.training.lr import LR_SCHEDULES, lr_factor
from pyg_infdiff.training.pretrained import (
    Pretrained,
    diffusion_from_dict,
    diffusion_to_dict,
    load_pretrained,
    resolve_checkpoint,
    run_config,
)
from pyg_infdiff.training.signals import StopSignal
from pyg_infdiff.training.trainer import NonFiniteLossError, Trainer, TrainResult

__all__ = [
    "LR_SCHEDULES",
    "CheckpointManager",
    "DataCursor",
    "DistributedContext",
    "NonFiniteLossError",
    "Pretrained",
    "RunningMeans",
    "StopSignal",
    "TrainResult",
    "Trainer",
    "TrainerConfig",
    "TrainingLog",
    "all_gather_objects",
    "all_reduce_sum",
    "barrier",
    "capture_rng_state",
    "check_storable",
    "cleanup_distributed",
    "diffusion_from_dict",
    "diffusion_to_dict",
    "create_ema",
    "ema_decay",
    "distributed_sampler",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_distributed",
    "is_main_process",
    "load_pretrained",
    "lr_factor",
    "load_checkpoint",
    "move_to_device",
    "plot_loss_curve",
    "read_log",
    "resolve_checkpoint",
    "restore_rng_state",
    "run_config",
    "save_checkpoint",
    "state_is_finite",
    "unwrap_model",
    "update_ema",
    "wrap_ddp",
]
