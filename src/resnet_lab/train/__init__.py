"""Training: config, loop, optimizers and schedules, checkpoints, metrics, plots, the learning-rate finder."""

from ..runs import load_model, load_state_dict_file, save_model
from .checkpoint import Checkpointer
from .config import TrainConfig
from .device import resolve_device
from .distributed import DistContext
from .loop import EpochStats, History, TrainingDiverged, evaluate, train, train_one_epoch
from .lr_finder import LRFindResult, lr_find, lr_find_figure, plot_lr_find
from .optim import build_optimizer, build_scheduler, param_groups

__all__ = [
    "Checkpointer",
    "DistContext",
    "EpochStats",
    "History",
    "LRFindResult",
    "TrainConfig",
    "TrainingDiverged",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "load_model",
    "load_state_dict_file",
    "lr_find",
    "lr_find_figure",
    "param_groups",
    "plot_lr_find",
    "resolve_device",
    "save_model",
    "train",
    "train_one_epoch",
]
