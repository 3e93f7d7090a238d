"""Batch normalization as a pure function (Ioffe & Szegedy 2015, Algorithm 1 and 2).

The function holds no state: the module in :mod:`resnet_lab.nn.batchnorm` owns the buffers and
passes them in. Conventions are PyTorch's, not the paper's or d2l's:

* ``momentum`` is the weight of the *new* batch statistic (PyTorch's 0.1, i.e. 0.9 decay);
* the running variance is updated with the *unbiased* batch variance (divided by ``n - 1``),
  while the batch itself is normalized with the *biased* one (divided by ``n``);
* ``eps`` is added to the variance inside the square root.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["batch_norm", "check_batch_size"]


def _stat_shape(x: Tensor) -> tuple[int, ...]:
    # (1, C) for (N, C); (1, C, 1) for (N, C, L); (1, C, 1, 1) for (N, C, H, W)
    return (1, x.shape[1]) + (1,) * (x.dim() - 2)


def check_batch_size(x: Tensor) -> None:
    """Raise the same ValueError as torch when a channel has a single value in training."""
    values_per_channel = x.numel() // x.shape[1] if x.dim() >= 2 and x.shape[1] > 0 else 0
    if values_per_channel == 1:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got input size {x.size()}"
        )


def batch_norm(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Normalize ``x`` per channel (dim 1) and apply the affine transform.

    Args:
        x: input of shape (N, C), (N, C, L) or (N, C, H, W).
        running_mean, running_var: (C,) buffers, updated in place when ``training``; ``None`` to
            keep no running statistics (then batch statistics are used in eval too, as in torch).
        weight, bias: (C,) gamma and beta, or ``None`` for no affine transform.
        training: normalize with the batch statistics and update the running ones.
        momentum: weight of the new batch statistic in the running average (PyTorch's convention).
        eps: added to the variance for numerical stability.
    """
    if x.dim() < 2:
        raise ValueError(f"batch_norm expects input of shape (N, C, ...), got {tuple(x.shape)}")
    shape = _stat_shape(x)
    use_batch_stats = training or running_mean is None or running_var is None
    if use_batch_stats:
        check_batch_size(x)
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dim=dims, keepdim=True)  # (1, C, 1, 1)
        var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)  # biased: what normalizes the batch
        n = x.numel() // x.shape[1] if x.shape[1] else 0
        # An empty batch (N = 0) has no statistics: torch leaves the running ones untouched.
        if training and running_mean is not None and running_var is not None and n > 0:
            with torch.no_grad():
                running_mean.mul_(1 - momentum).add_(mean.reshape(-1).to(running_mean.dtype), alpha=momentum)
                unbiased = var.reshape(-1) * (n / (n - 1))
                running_var.mul_(1 - momentum).add_(unbiased.to(running_var.dtype), alpha=momentum)
    else:
        mean = running_mean.reshape(shape)
        var = running_var.reshape(shape)
    x_hat = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        x_hat = x_hat * weight.reshape(shape)
    if bias is not None:
        x_hat = x_hat + bias.reshape(shape)
    return x_hat
