"""Normalization layers: from-scratch batch norm and the ``norm=`` factory."""

from . import functional
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNormBase
from .norm import NORMS, check_norm, group_count, make_norm, norm_has_bias, norm_layer

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNormBase",
    "NORMS",
    "check_norm",
    "functional",
    "group_count",
    "make_norm",
    "norm_has_bias",
    "norm_layer",
]
