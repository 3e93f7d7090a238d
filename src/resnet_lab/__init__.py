"""resnet-lab: residual networks and batch normalization in PyTorch.

Build (:func:`create_model`), train (:func:`train` on :func:`load_data`), transfer
(:mod:`resnet_lab.transfer`), reproduce the classic experiments (:mod:`resnet_lab.experiments`),
and ship (:func:`fuse_bn`, :func:`export_onnx`) ResNets and their relatives.
"""

from .analysis import count_params, summarize
from .data import DataBundle, DataConfig, DatasetInfo, load_data
from .deploy import export_onnx, fuse_bn, predict_images
from .models import ModelInfo, create_model, list_models, model_info
from .nn import BatchNorm1d, BatchNorm2d, norm_layer
# `train` is the resnet_lab.train package, callable as its train() function (see its docstring).
from . import train
from .train import TrainConfig, evaluate, load_model, lr_find, save_model
from .weights import Weights, get_weights, list_weights

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
