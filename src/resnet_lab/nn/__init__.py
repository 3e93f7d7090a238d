"""Normalization layers: from-scratch batch norm (and its synchronized form) and the ``norm=`` factory."""

from . import functional
from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNormBase
from .norm import NORMS, check_norm, group_count, norm_has_bias, norm_layer
from .sync_batchnorm import SyncBatchNorm, convert_sync_batchnorm

__all__ = [
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNormBase",
    "NORMS",
    "SyncBatchNorm",
    "check_norm",
    "convert_sync_batchnorm",
    "functional",
    "group_count",
    "norm_has_bias",
    "norm_layer",
]
