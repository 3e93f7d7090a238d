"""Progressive resizing (fast.ai's, and David Page's DAWNBench CIFAR-10 runs): early epochs train on
smaller images, which are cheaper and learn the coarse features; the side grows linearly to the
data's full size, reached at the epoch 75% of the way through training, and the epochs from there
on (always at least the last one) train at full size, the size evaluation always uses.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch.nn.functional as F
from torch import Tensor

__all__ = ["FULL_SIZE_AT", "MIN_SIDE", "check_progressive_resize", "progressive_side", "resize_batch"]

FULL_SIZE_AT = 0.75  # share of the epochs after which training sees the full size
MIN_SIDE = 4  # below this, a few stride-2 stages leave nothing of the image


def progressive_side(start: int, full: int, epoch: int, epochs: int) -> int:
    """The shorter side of the training images in ``epoch`` (0-based) of ``epochs`` (at least 2).

    Linear from ``start`` at epoch 0 to ``full`` at epoch ``ceil(FULL_SIZE_AT * (epochs - 1))``, full
    from there on, rounded to whole pixels. The last epoch is always at full size: a net whose last
    epoch saw smaller images meets the full-size test images with statistics of the smaller ones
    (BN running statistics and object scale; Touvron et al. 2019, "FixRes"), which a 2-epoch run
    showed as a 20 pp drop.
    """
    full_from = max(1, math.ceil(FULL_SIZE_AT * (epochs - 1)))
    progress = min(1.0, epoch / full_from)
    return round(start + (full - start) * progress)


def resize_batch(x: Tensor, side: int) -> Tensor:
    """``x`` (B, C, H, W) resized so that its shorter side is ``side`` (the aspect ratio kept):
    bilinear with antialiasing, so a smaller image is a blurred one, not an aliased one."""
    h, w = x.shape[-2:]
    short = min(h, w)
    if side == short:
        return x
    size = (round(h * side / short), round(w * side / short))
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def check_progressive_resize(start: int | None, input_size: Sequence[int]) -> None:
    """Refuse a start side that is not smaller than the data's shorter side ``min(H, W)``."""
    if start is None:
        return
    full = min(int(v) for v in input_size[-2:])
    if start >= full:
        raise ValueError(f"progressive_resize (--progressive-resize) must be smaller than the images' side "
                         f"({full} px), got {start}; pick a start side between {MIN_SIDE} and {full - 1}, or leave "
                         "it off")
