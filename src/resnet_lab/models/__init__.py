"""The model zoo: ResNet (ImageNet, CIFAR, pre-activation, wide), plain nets, DenseNet, VGG, GoogLeNet."""

# Importing the family modules registers their builders.
from . import densenet, googlenet, resnet, vgg
from .layers import ClassifierModel, LinearWithHead, stack_head
from .registry import (
    Family,
    ModelInfo,
    Paper,
    create_model,
    is_model,
    list_models,
    model_family,
    model_info,
    register_model,
)

__all__ = [
    "ClassifierModel",
    "Family",
    "LinearWithHead",
    "ModelInfo",
    "Paper",
    "create_model",
    "densenet",
    "googlenet",
    "is_model",
    "list_models",
    "model_family",
    "model_info",
    "register_model",
    "resnet",
    "stack_head",
    "vgg",
]
