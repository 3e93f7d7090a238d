"""Sharpness-aware minimization (Foret et al. 2021, "Sharpness-Aware Minimization for Efficiently
Improving Generalization").

SAM asks for weights whose whole neighbourhood has a low loss, not just the point itself. Each step
takes two gradients on the same batch:

1. ``g = grad L(w)``, the usual one;
2. the weights move uphill by ``e = rho * g / ||g||`` (the steepest ascent of length ``rho``, to
   first order the worst point of the ball), and ``g_sam = grad L(w + e)`` is taken there;
3. the weights go back to ``w`` and the optimizer steps with ``g_sam``.

So a step costs two forward and backward passes. ``||g||`` is the norm over every parameter that
trains (frozen ones have no gradient and stay put). Batch normalization normalizes both passes
with the batch's own statistics, but only the first pass moves the running statistics: the second
is a probe, and letting it count would average each batch in twice, the second time at weights the
model never keeps. Zhou et al. 2024 ("Sharpness-Aware Minimization Efficiently Selects Flatter
Minima Late in Training") found that SAM in the last few epochs alone gives most of its gain, which
is how the recipes here use it: in the warm restart that ends a run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["sam_gradient", "ascent_at", "in_ascent"]

_ascents = threading.local()  # how many ascent_at blocks this thread is inside


def in_ascent() -> bool:
    """Whether the running forward pass is SAM's probe at the perturbed weights (inside
    :func:`ascent_at`): not a training step of its own, so recorders of per-step statistics skip it."""
    return getattr(_ascents, "depth", 0) > 0


@contextmanager
def ascent_at(model: nn.Module, rho: float) -> Iterator[Tensor]:
    """Within the block, ``model``'s trainable weights sit at ``w + rho * g / ||g||``, where ``g`` is
    the gradient they hold on entry, and its buffers (BN running statistics, their batch counts)
    are frozen; on exit the weights and buffers are exactly what they were. Yields ``||g||``."""
    params = [p for p in model.parameters() if p.grad is not None]
    buffers = [b for b in model.buffers()]
    with torch.no_grad():
        kept = [p.detach().clone() for p in params]
        kept_buffers = [b.detach().clone() for b in buffers]
        # at least float32 (bf16/fp16 gradients upcast), float64 gradients in float64
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(
            p.grad.to(torch.promote_types(p.grad.dtype, torch.float32))) for p in params])) \
            if params else torch.zeros(())
        scale = rho / (norm + 1e-12)
        for p in params:
            p.add_(p.grad * scale.to(p.grad.dtype))
    _ascents.depth = getattr(_ascents, "depth", 0) + 1
    try:
        yield norm
    finally:
        _ascents.depth -= 1
        with torch.no_grad():
            for p, w in zip(params, kept):
                p.copy_(w)
            for b, v in zip(buffers, kept_buffers):
                b.copy_(v)


def sam_gradient(model: nn.Module, rho: float, loss_at_ascent: Callable[[], Tensor],
                 backward: Callable[[Tensor], None] = lambda loss: loss.backward()) -> Tensor:
    """Replace the gradients ``model`` holds (those of the loss at its weights ``w``) by SAM's: the
    gradient of ``loss_at_ascent()`` (the same batch's loss, computed anew) at ``w + e``, the weights
    back at ``w`` afterwards. ``backward`` runs the backward pass (a GradScaler's scaling, say).
    Returns ``||g||``, the norm of the gradient at ``w`` that set the ascent's direction."""
    with ascent_at(model, rho) as norm:
        for p in model.parameters():
            p.grad = None
        backward(loss_at_ascent())
    return norm
