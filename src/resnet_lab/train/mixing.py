"""Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019): train on blends of two images.

Each training batch is paired with a shuffled copy of itself. Mixup blends every image with its
partner, ``lam * x + (1 - lam) * x_partner``. CutMix pastes a rectangle of the partner over the
image instead, covering a share ``1 - lam`` of its area. In both, the loss is blended in the same
proportion: ``lam * CE(logits, y) + (1 - lam) * CE(logits, y_partner)``, which is the
cross-entropy against the blended one-hot targets.

``lam`` is drawn once per batch from Beta(alpha, alpha), as both papers and timm do: alpha 1 draws
it uniformly, a small alpha (0.2) keeps most batches close to one of the two images. With both
on, each batch uses one of the two, chosen with equal odds.

Every draw comes from a generator seeded by the run's seed, the epoch and the step, so a run
resumed mid-epoch mixes its remaining batches exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["Mix", "check_mix_alpha", "cutmix_box", "mix_batch", "mix_rng"]


@dataclass(frozen=True)
class Mix:
    """One mixed batch: the images, the partners' labels and the first images' share."""

    x: Tensor
    y_b: Tensor  # the label of each image's partner
    lam: float  # the share of each image's own label in its target (the area left, for CutMix)
    kind: str  # "mixup" or "cutmix"

    def major(self, y: Tensor) -> Tensor:
        """The label with the larger share of each target (the own label on a tie)."""
        return y if self.lam >= 0.5 else self.y_b


def check_mix_alpha(name: str, alpha: float) -> None:
    """A Beta concentration for ``--NAME``: finite and >= 0, where 0 turns the option off."""
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"{name} (--{name}) must be a Beta(alpha, alpha) concentration >= 0 (0.2 is typical for "
                         f"mixup, 1 for cutmix; 0 turns it off), got {alpha!r}")


def mix_rng(seed: int, epoch: int, step: int) -> random.Random:
    """The generator of one step's draws (``epoch``, ``step``: 0-based), the same on every resume."""
    return random.Random(f"mix-{seed}-{epoch}-{step}")  # str seeds hash with sha512: stable across runs


def cutmix_box(height: int, width: int, lam: float, rng: random.Random) -> tuple[int, int, int, int]:
    """CutMix's rectangle ``(top, bottom, left, right)``: sides ``sqrt(1 - lam)`` of the image's,
    centred at a uniform pixel and clipped to the image (so it may cover less than ``1 - lam``)."""
    ratio = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy, cx = rng.randrange(height), rng.randrange(width)
    top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h - cut_h // 2, height)
    left, right = max(cx - cut_w // 2, 0), min(cx + cut_w - cut_w // 2, width)
    return top, bottom, left, right


def mix_batch(x: Tensor, y: Tensor, *, mixup: float, cutmix: float, rng: random.Random) -> Mix:
    """Mix a batch ``x`` (N, C, H, W) with labels ``y`` (N,) by mixup or CutMix.

    Args:
        mixup, cutmix: the Beta concentrations; 0 turns one off, and at least one must be on.
        rng: the step's generator (:func:`mix_rng`); it picks the method, ``lam`` and the partners.
    """
    if not (mixup or cutmix):
        raise ValueError(f"mix_batch needs mixup or cutmix > 0 (a Beta concentration; 0 turns one off), got "
                         f"mixup={mixup!r}, cutmix={cutmix!r}; give one of them > 0, or skip mixing")
    kind = "mixup" if mixup and (not cutmix or rng.random() < 0.5) else "cutmix"
    alpha = mixup if kind == "mixup" else cutmix
    lam = rng.betavariate(alpha, alpha)
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(rng.getrandbits(63))).to(x.device)
    partner = x[perm]
    if kind == "mixup":
        mixed = x.mul(lam).add_(partner, alpha=1.0 - lam)
    else:
        h, w = x.shape[-2:]
        top, bottom, left, right = cutmix_box(h, w, lam, rng)
        mixed = x.clone()
        mixed[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (h * w)  # the share actually left after clipping
    return Mix(mixed, y[perm], lam, kind)
