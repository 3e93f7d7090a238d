"""Synchronized batch norm: the statistics of the global batch across all processes.

A synchronized BN differs from :class:`resnet_lab.nn.BatchNorm2d` in one step only, the batch
statistics (:func:`resnet_lab.nn.functional.batch_statistics`): here the per-channel mean and
variance are computed over the samples of every rank with two differentiable all-reduces, then
normalization and the running-statistics update are the very same functions as for one process.

:func:`convert_sync_batchnorm` turns every BatchNorm of a model, torch's *and* ours, into a
synchronized one: torch's fused ``nn.SyncBatchNorm`` on GPUs, :class:`SyncBatchNorm` elsewhere
(torch's refuses CPU tensors; ours runs on gloo). Parameters and buffers are shared, not copied,
so state-dict keys are unchanged and checkpoints load into the model without sync BN.
"""

from __future__ import annotations

import types
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .batchnorm import BatchNorm1d, BatchNorm2d, BatchNormBase
from .functional import check_arguments, normalize, update_running_stats

__all__ = ["SyncBatchNorm", "convert_sync_batchnorm", "sync_batch_statistics"]

# torch's native SyncBatchNorm only runs on these device types (it raises on CPU).
_NATIVE_SYNC_BN_DEVICES = ("cuda", "xpu", "hpu")
_BN_CLASSES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, BatchNorm1d, BatchNorm2d)


class _AllReduceSum(torch.autograd.Function):
    """Differentiable sum over ranks: every rank's output is the sum, so the gradient of the total
    loss with respect to each rank's input is the sum over ranks of the output gradients."""

    @staticmethod
    def forward(ctx, x: Tensor, group: Any) -> Tensor:
        ctx.group = group
        x = x.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(x, op=dist.ReduceOp.SUM, group=group)
        return x

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return _AllReduceSum.apply(grad, ctx.group), None


def sync_batch_statistics(x: Tensor, group: Any) -> tuple[Tensor, Tensor, int]:
    """Per-channel mean and biased variance of the global batch (the batch of every rank in ``group``).

    The same two-pass formula as :func:`~resnet_lab.nn.functional.batch_statistics` on one
    process (sum and count, then the sum of squared deviations from the global mean), in at least
    float32, so one process and several agree to float rounding. Gradients flow through both
    all-reduces, as in torch's SyncBatchNorm.

    Returns:
        ``(mean, var, n)``: (C,) tensors and the number of values per channel over all ranks.
    """
    c = x.shape[1]
    dims = [0] + list(range(2, x.dim()))
    xs = x.to(torch.promote_types(x.dtype, torch.float32))  # bf16 sums over a global batch lose digits
    count = torch.full((1,), x.numel() // c, dtype=xs.dtype, device=x.device)
    packed = _AllReduceSum.apply(torch.cat([xs.sum(dims), count]), group)  # (C + 1,): sums, n
    n = int(packed[c].detach())
    if n == 1:  # as torch: one value per channel has no variance
        raise ValueError(f"Expected more than 1 value per channel when training, got {n} over all ranks")
    if n == 0:
        # Every rank's batch is empty (each rank sees the same n, so all skip the second
        # all-reduce): no statistics, and the running ones stay as they are (n = 0). Finite
        # stand-ins normalize the empty input, so the parameter gradients are 0, as in torch.
        return torch.zeros(c, dtype=xs.dtype, device=x.device), torch.ones(c, dtype=xs.dtype, device=x.device), 0
    mean = packed[:c] / n  # (C,)
    shape = [1, c] + [1] * (x.dim() - 2)  # (1, C, 1, 1)
    var = _AllReduceSum.apply(((xs - mean.reshape(shape)) ** 2).sum(dims), group) / n  # biased, (C,)
    return mean, var, n


class SyncBatchNorm(BatchNormBase):
    """Batch norm whose training statistics are those of the global batch across all ranks.

    Same parameters, buffers and conventions as :class:`torch.nn.BatchNorm2d` and
    :class:`resnet_lab.nn.BatchNorm2d`, for any input (N, C, ...). Without a process group, or in
    eval mode, it is exactly our plain batch norm. Unlike torch's SyncBatchNorm it runs on CPU
    (gloo) as well as on GPUs.

    Args:
        num_features: C, the channel dimension (dim 1).
        eps, momentum, affine, track_running_stats, bias: as :class:`resnet_lab.nn.BatchNorm2d`.
        process_group: the group to synchronize over (default: all ranks).
    """

    _expected_dims = (2, 64)  # any (N, C, ...), as torch's SyncBatchNorm

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        process_group: Any = None,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)
        self.process_group = process_group

    def _group_size(self) -> int:
        if not (dist.is_available() and dist.is_initialized()):
            return 1
        return dist.get_world_size(self.process_group or dist.group.WORLD)

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self._group_size() > 1):
            return super().forward(x)  # eval or one process: plain batch norm, torch's rules included
        x = self._check_input(x)
        # the plain path's checks (dtype, eps, parameters), but for the batch size: the global one counts
        check_arguments(x, self.running_mean, self.running_var, self.weight, self.bias, True,
                        0.0 if self.momentum is None else self.momentum, self.eps, per_process_batch=False)
        factor = self._momentum_factor()
        mean, var, n = sync_batch_statistics(x, self.process_group or dist.group.WORLD)  # the one step that differs
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            update_running_stats(self.running_mean, self.running_var, mean, var, n, factor)
        self._count_batch()  # after the statistics were gathered: a failed gather counts nothing
        return normalize(x, mean, var, self.weight, self.bias, self.eps)


def _sync_layer(bn: nn.Module, native: bool, process_group: Any) -> nn.Module:
    cls = nn.SyncBatchNorm if native else SyncBatchNorm
    new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, process_group)
    # Share the very same Parameter and buffer objects: nothing is copied or re-initialized, the
    # names (hence state-dict keys) are those of the original layer.
    if bn.affine:
        new.weight, new.bias = bn.weight, bn.bias
    new.running_mean, new.running_var = bn.running_mean, bn.running_var
    new.num_batches_tracked = bn.num_batches_tracked
    new.train(bn.training)
    if "train" in bn.__dict__:  # a per-layer train() override (a frozen BN locked in eval) stays
        new.train = types.MethodType(bn.__dict__["train"].__func__, new)
    if hasattr(bn, "qconfig"):
        new.qconfig = bn.qconfig
    return new


def convert_sync_batchnorm(
    module: nn.Module, device: str | torch.device | None = None, process_group: Any = None
) -> nn.Module:
    """Replace every BatchNorm layer (torch's 1d/2d/3d and ``resnet_lab.nn`` 1d/2d) in place.

    Args:
        module: the model (or a single BN layer, in which case the new layer is returned).
        device: where the model trains; picks the implementation (default: the device of the
            model's first parameter, CPU if it has none).
        process_group: synchronize over this group only (default: all ranks).

    Returns:
        ``module`` with its layers replaced (or the new layer when ``module`` itself is a BN).
    """
    if device is None:
        first = next(module.parameters(), None)
        device = first.device if first is not None else torch.device("cpu")
    native = torch.device(device).type in _NATIVE_SYNC_BN_DEVICES
    if isinstance(module, _BN_CLASSES):
        return _sync_layer(module, native, process_group)
    for name, child in module.named_children():
        if isinstance(child, _BN_CLASSES):
            setattr(module, name, _sync_layer(child, native, process_group))
        else:
            convert_sync_batchnorm(child, device, process_group)
    return module
