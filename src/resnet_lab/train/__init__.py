"""Training: config, loop, optimizers and schedules, checkpoints, metrics, plots."""

from .checkpoint import load_model, load_state_dict_file, save_model
from .config import TrainConfig
from .loop import History, TrainingDiverged, evaluate, resolve_device, train
from .optim import build_optimizer, build_scheduler, param_groups

__all__ = [
    "History",
    "TrainConfig",
    "TrainingDiverged",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "load_model",
    "load_state_dict_file",
    "param_groups",
    "resolve_device",
    "save_model",
    "train",
]
