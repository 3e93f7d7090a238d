"""resnet-lab: residual networks and batch normalization in PyTorch.

Build (:func:`create_model`), train (:func:`train` on :func:`load_data`), transfer
(:mod:`resnet_lab.transfer`), reproduce the classic experiments (:mod:`resnet_lab.experiments`),
and ship (:func:`fuse_bn`, :func:`export_onnx`) ResNets and their relatives.
"""

import importlib
from typing import TYPE_CHECKING, Any

# The public names and the module of each, imported on first use (PEP 562): `import resnet_lab` loads
# no torch, so the `resnet-lab` command (resnet_lab._launch) can catch a Ctrl-C while torch loads.
_EXPORTS = {
    "count_params": "analysis", "summarize": "analysis",
    "DataBundle": "data", "DataConfig": "data", "DatasetInfo": "data", "load_data": "data",
    "export_onnx": "deploy", "fuse_bn": "deploy", "predict_images": "deploy",
    "ModelInfo": "models", "create_model": "models", "list_models": "models", "model_info": "models",
    "BatchNorm1d": "nn", "BatchNorm2d": "nn", "norm_layer": "nn",
    # `train` is the resnet_lab.train package, callable as its train() function (see its docstring).
    "train": "train",
    "TrainConfig": "train", "evaluate": "train", "load_model": "train", "lr_find": "train", "save_model": "train",
    "Weights": "weights", "get_weights": "weights", "list_weights": "weights",
}

if TYPE_CHECKING:  # what static tools and IDEs see: the same names, imported eagerly
    from . import train
    from .analysis import count_params, summarize
    from .data import DataBundle, DataConfig, DatasetInfo, load_data
    from .deploy import export_onnx, fuse_bn, predict_images
    from .models import ModelInfo, create_model, list_models, model_info
    from .nn import BatchNorm1d, BatchNorm2d, norm_layer
    from .train import TrainConfig, evaluate, load_model, lr_find, save_model
    from .weights import Weights, get_weights, list_weights


# The subpackages `resnet_lab.NAME` reaches after `import resnet_lab` alone (the CLI is not one of them).
_SUBPACKAGES = ("analysis", "data", "deploy", "experiments", "figures", "models", "nn", "runs", "train", "transfer",
                "weights")


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name, name if name in _SUBPACKAGES else None)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = importlib.import_module(f".{module}", __name__)
    if name != module:
        value = getattr(value, name)
    globals()[name] = value  # once: later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_SUBPACKAGES))


__version__ = "0.1.0"

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "DataBundle",
    "DataConfig",
    "DatasetInfo",
    "ModelInfo",
    "TrainConfig",
    "Weights",
    "__version__",
    "count_params",
    "create_model",
    "evaluate",
    "export_onnx",
    "fuse_bn",
    "get_weights",
    "list_models",
    "list_weights",
    "load_data",
    "load_model",
    "lr_find",
    "model_info",
    "norm_layer",
    "predict_images",
    "save_model",
    "summarize",
    "train",
]
