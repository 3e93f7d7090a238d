"""Training: config, loop, optimizers and schedules, checkpoints, metrics, plots, the learning-rate finder.

The package is also callable as its own :func:`train` (``resnet_lab.train(model, data, config)``):
the top level exports ``train``, and a plain function under that name would hide the package, so
``import resnet_lab.train.lr_finder as m`` would fail with "'function' object has no attribute".
"""

import inspect
import sys
import types

from ..runs import load_model, load_state_dict_file, save_model
from .checkpoint import Checkpointer
from .config import TrainConfig
from .device import resolve_device
from .distributed import DistContext
from .loop import EpochStats, History, TrainingDiverged, evaluate, train, train_one_epoch
from .lr_finder import LRFindInterrupted, LRFindResult, lr_find, lr_find_figure, plot_lr_find
from .optim import build_optimizer, build_scheduler, param_groups

__all__ = [
    "Checkpointer",
    "DistContext",
    "EpochStats",
    "History",
    "LRFindInterrupted",
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


class _TrainPackage(types.ModuleType):
    """The type of this package: a module that calls :func:`train` when called."""

    def __call__(self, *args, **kwargs):
        return train(*args, **kwargs)


# Python supports swapping a module's class for a ModuleType subclass (the data model, "Customizing
# module attribute access"). inspect.signature(resnet_lab.train) reads __signature__.
__signature__ = inspect.signature(train)
sys.modules[__name__].__class__ = _TrainPackage
