"""The model zoo: ResNet (ImageNet, CIFAR, pre-activation, wide), plain nets, DenseNet, VGG, GoogLeNet."""

# Importing the family modules registers their builders.
from . import densenet, googlenet, resnet, vgg
from .layers import ClassifierModel, LinearWithHead, stack_head
from .registry import (
    Family,
    ModelInfo,
    Paper,
    check_input_size,
    create_model,
    is_model,
    list_models,
    meta_device,
    model_family,
    model_info,
    register_model,
)
from .whitening import Whitening, find_first_conv, whiten_first_conv

__all__ = [
    "ClassifierModel",
    "Family",
    "LinearWithHead",
    "ModelInfo",
    "Paper",
    "Whitening",
    "check_input_size",
    "create_model",
    "densenet",
    "find_first_conv",
    "googlenet",
    "is_model",
    "list_models",
    "meta_device",
    "model_family",
    "model_info",
    "register_model",
    "resnet",
    "stack_head",
    "vgg",
    "whiten_first_conv",
]
