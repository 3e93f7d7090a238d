"""Precise BN: re-estimate batch-norm running statistics after training.

During training, BN keeps exponential moving averages of *per-batch* statistics (momentum 0.1,
i.e. the last ~10 batches dominate). With tiny batches each estimate is noisy, and the weights
move under them, so the running averages can be a poor estimate of the population statistics that
evaluation needs. "Precise BN" (Wu & Johnson 2021, "Rethinking 'Batch' in BatchNorm", sec. 3;
used in Goyal et al.'s and Detectron's training) freezes the weights and averages the statistics
over many batches with equal weight. Using batches larger than the training batch also makes the
upstream layers' batch normalization behave closer to its population version.
"""

from __future__ import annotations

from itertools import islice
from typing import Iterable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm as TorchBN

from ..nn.batchnorm import BatchNormBase as ScratchBN

__all__ = ["batch_norm_layers", "precise_bn"]


def batch_norm_layers(model: nn.Module) -> list[nn.Module]:
    """The batch-norm layers of ``model`` that keep running statistics (torch's and ours).

    Args:
        model: any network.
    """
    return [m for m in model.modules()
            if isinstance(m, (TorchBN, ScratchBN)) and m.track_running_stats and m.running_mean is not None]


@torch.no_grad()
def precise_bn(model: nn.Module, loader: Iterable, num_batches: int, device: str | torch.device | None = None) -> int:
    """Replace every BN layer's running mean/var by the equal-weight average over ``num_batches``
    batches of ``loader`` (weights untouched); return the number of batches used.

    Each layer's running mean becomes the mean of the per-batch means, and its running variance the
    mean of the per-batch unbiased variances (PyTorch's cumulative average, ``momentum=None``).
    The model's train/eval mode and the layers' momentum are restored afterwards. The batches run
    through the model in training mode, dropout included (as fvcore's precise BN does). A layer
    that stays in eval under ``model.train()`` (a frozen part of a transferred network) keeps its
    statistics; and if no batch comes, every layer keeps its statistics.

    Args:
        model: the trained network.
        loader: yields ``(x, y)`` or ``x`` batches of training data (no augmentation needed).
        num_batches: how many batches to average over (fewer if the loader ends first).
        device: where to send the batches (default: where the model's first parameter is).

    Raises:
        ValueError: ``num_batches < 1`` or the loader yields nothing.
    """
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1, got {num_batches}")
    was_training = model.training
    model.train()  # eval-locked layers stay in eval: they are not re-estimated
    layers = [m for m in batch_norm_layers(model) if m.training]
    if not layers:
        model.train(was_training)
        return 0
    if device is None:
        device = next(model.parameters()).device
    momenta = [m.momentum for m in layers]
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone()) for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch counts the same
    used = 0
    try:
        for batch in islice(loader, num_batches):
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            model(x.to(device))
            used += 1
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        if used == 0:  # nothing came (or the first batch failed): the trained statistics stay
            for m, (mean, var, count) in zip(layers, saved):
                m.running_mean.copy_(mean), m.running_var.copy_(var), m.num_batches_tracked.copy_(count)
        model.train(was_training)
    if used == 0:
        raise ValueError("precise_bn: the loader yielded no batch; pass a training loader with data")
    return used
