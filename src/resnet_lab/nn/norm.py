"""The ``norm=`` factory: one name picks the normalization layer of every block of every model.

* ``batch``: ``torch.nn.BatchNorm2d`` (the default; fastest).
* ``scratch``: :class:`resnet_lab.nn.BatchNorm2d`, our from-scratch BN (same state-dict keys).
* ``group``: ``torch.nn.GroupNorm`` with :func:`group_count` groups (Wu & He 2018).
* ``none``: identity; layers before it then keep their bias (see :func:`norm_has_bias`).
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from .batchnorm import BatchNorm1d as ScratchBatchNorm1d
from .batchnorm import BatchNorm2d as ScratchBatchNorm2d
from .batchnorm import BatchNormBase

__all__ = ["NORMS", "NORM_LAYERS", "NormLayer", "check_norm", "group_count", "has_norm_layers", "norm_layer",
           "norm_has_bias"]

NORMS = ("batch", "scratch", "group", "none")
NormLayer = Callable[[int], nn.Module]

# Every normalization layer class: torch's batch and instance norms (_NormBase, SyncBatchNorm
# included), group, layer and RMS norms, and our batch norms.
NORM_LAYERS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.RMSNorm, BatchNormBase)


def has_norm_layers(model: nn.Module) -> bool:
    """Whether ``model`` holds any normalization layer (:data:`NORM_LAYERS`)."""
    return any(isinstance(m, NORM_LAYERS) for m in model.modules())


def check_norm(norm: str) -> str:
    """``norm`` if it is one of :data:`NORMS` (batch, scratch, group, none), else a ValueError listing them."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}: expected one of {', '.join(NORMS)}")
    return norm


def group_count(channels: int, max_groups: int = 32, min_channels_per_group: int = 2) -> int:
    """Number of GroupNorm groups for ``channels``: Wu & He's 32 where it divides, otherwise the
    largest divisor of ``channels`` that keeps at least ``min_channels_per_group`` channels per
    group (16 channels -> 8 groups of 2), so narrow CIFAR layers do not become InstanceNorm."""
    for g in range(min(max_groups, channels), 0, -1):
        if channels % g == 0 and channels // g >= min(min_channels_per_group, channels):
            return g
    return 1


class _GroupNorm(nn.GroupNorm):
    """GroupNorm built from a channel count alone, so it fits the ``norm_layer(C)`` call."""

    def __init__(self, num_channels: int, eps: float = 1e-5) -> None:
        super().__init__(group_count(num_channels), num_channels, eps=eps)


def norm_layer(norm: str = "batch", dim: int = 2) -> NormLayer:
    """Return a callable ``C -> nn.Module`` for the normalization named ``norm``.

    Args:
        norm: one of :data:`NORMS`.
        dim: 2 for feature maps (N, C, H, W), 1 for features (N, C) or sequences (N, C, L).
    """
    check_norm(norm)
    if isinstance(dim, bool) or dim not in (1, 2):  # True == 1: it gave BatchNorm1d
        raise ValueError(f"dim must be 1 or 2, got {dim!r}")
    if norm == "batch":  # the classes themselves (norm_layer("batch") is nn.BatchNorm2d)
        return nn.BatchNorm2d if dim == 2 else nn.BatchNorm1d
    if norm == "scratch":
        return ScratchBatchNorm2d if dim == 2 else ScratchBatchNorm1d
    layer = _GroupNorm if norm == "group" else (lambda num_features: nn.Identity())

    def build(num_features: int, **kwargs) -> nn.Module:
        # GroupNorm(1, 0) was built, and the identity took any count at all
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"norm_layer({norm!r}) takes a channel count (an int >= 1), got {num_features!r}")
        return layer(num_features, **kwargs)

    return build


def norm_has_bias(norm: str) -> bool:
    """Whether a conv followed by this norm should keep its bias.

    A bias before a normalization is cancelled by the mean subtraction (BN, GN), so it is wasted;
    with ``none`` nothing follows to shift the output, so the conv keeps it.
    """
    return check_norm(norm) == "none"
