"""Progressive resizing (fast.ai's, and David Page's DAWNBench CIFAR-10 runs): early epochs train on
smaller images, which are cheaper and learn the coarse features; the side grows linearly to the
data's full size, reached at 75% of training, and the last quarter trains at full size, the size
evaluation always uses.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor

__all__ = ["FULL_SIZE_AT", "MIN_SIDE", "check_progressive_resize", "progressive_side", "resize_batch"]

FULL_SIZE_AT = 0.75  # share of the epochs after which training sees the full size
MIN_SIDE = 4  # below this, a few stride-2 stages leave nothing of the image


def progressive_side(start: int, full: int, epoch: int, epochs: int) -> int:
    """The shorter side of the training images in ``epoch`` (0-based) of ``epochs``.

    Linear in the share of training done before the epoch, ``epoch / epochs``: ``start`` at 0,
    ``full`` from ``FULL_SIZE_AT`` on, rounded to whole pixels.
    """
    progress = min(1.0, epoch / epochs / FULL_SIZE_AT)
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
