"""resnet-lab: residual networks and batch normalization in PyTorch.

Build (:func:`create_model`), train (:func:`train`), transfer, reproduce the classic experiments,
and ship (BN folding, ONNX) ResNets and their relatives.
"""

from .models import create_model, list_models

__version__ = "0.1.0"

__all__ = ["__version__", "create_model", "list_models"]
