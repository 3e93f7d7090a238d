"""The model zoo: ResNet (ImageNet, CIFAR, pre-activation, wide), plain nets, DenseNet, VGG, GoogLeNet."""

from .layers import ClassifierModel
from .registry import create_model, is_model, list_models, model_family, register_model

__all__ = ["ClassifierModel", "create_model", "is_model", "list_models", "model_family", "register_model"]
