"""BatchNorm1d and BatchNorm2d written from scratch, drop-in compatible with ``torch.nn``.

State lives in the same registered parameters and buffers as torch's (``weight``, ``bias``,
``running_mean``, ``running_var``, ``num_batches_tracked``), so a state dict moves between
``resnet_lab.nn.BatchNorm2d`` and ``torch.nn.BatchNorm2d`` in both directions. The math is the
pure function :func:`resnet_lab.nn.functional.batch_norm`; this module only keeps state and picks
train or eval behaviour from ``self.training`` (never from whether autograd is on), by torch's
rules (``torch.nn.modules.batchnorm._BatchNorm.forward``).

The forward pass is two function calls on tensors, each dispatching ``__torch_function__``:
``torch.fx`` (hence torchvision's ``create_feature_extractor``) records each as one node instead
of tracing into shape checks it cannot evaluate, and ``torch.jit.script`` compiles them. In
training, autograd records statistics and normalization as one node, whose backward is batch
norm's closed-form gradient (``resnet_lab.nn.functional._BatchNormTrain``; docs/BATCHNORM.md has
the derivation).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.overrides import handle_torch_function, has_torch_function_unary, has_torch_function_variadic

from .functional import batch_norm

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNormBase", "ChannelCountError"]


class ChannelCountError(ValueError, RuntimeError):
    """An input whose channel count is not the layer's. A ``RuntimeError`` as torch's BN raises
    (its kernel finds the mismatch), and a ``ValueError`` as this module's earlier versions raised."""


def _checked_input(x: Tensor, min_dim: int, max_dim: int, num_features: int) -> Tensor:
    """Raise torch's error for a wrong number of dims and ours for a wrong channel count.

    Returns ``x`` itself so that a traced graph keeps the check: fx drops calls whose result is
    unused (dead-code elimination in ``create_feature_extractor``).
    """
    if has_torch_function_unary(x):
        return handle_torch_function(_checked_input, (x,), x, min_dim, max_dim, num_features)
    if x.dim() < min_dim or x.dim() > max_dim:
        want = " or ".join([f"{d}D" for d in range(min_dim, max_dim + 1)])
        raise ValueError(f"expected {want} input (got {x.dim()}D input)")
    if x.shape[1] != num_features:
        raise ChannelCountError(
            f"batch norm over {num_features} channels got an input with {x.shape[1]} channels "
            f"(shape {x.size()}); the channel dimension is dim 1"
        )
    return x


def _running_weight(num_batches_tracked: Tensor | None, momentum: float | None, counting: bool) -> float:
    """This step's running-average weight: the momentum, or ``1 / (num_batches_tracked + 1)`` for
    the cumulative average (momentum ``None``) of a batch that ``counting`` will count once it has
    been taken (:func:`_forward` counts it after the call: a refused batch leaves the count alone)."""
    factor = 0.0 if momentum is None else momentum
    if counting and num_batches_tracked is not None and momentum is None:
        factor = 1.0 / (float(num_batches_tracked) + 1.0)
    return factor


def _forward(
    x: Tensor,
    running_mean: Tensor | None,
    running_var: Tensor | None,
    num_batches_tracked: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    training: bool,
    track_running_stats: bool,
    momentum: float | None,
    eps: float,
) -> Tensor:
    """torch's ``_BatchNorm.forward`` as a function of the module's state."""
    if has_torch_function_variadic(x, running_mean, running_var, num_batches_tracked, weight, bias):
        return handle_torch_function(
            _forward, (x, running_mean, running_var, num_batches_tracked, weight, bias), x, running_mean,
            running_var, num_batches_tracked, weight, bias, training, track_running_stats, momentum, eps,
        )
    counting = training and track_running_stats
    factor = _running_weight(num_batches_tracked, momentum, counting)
    # Batch statistics in training, and in eval when there are no buffers.
    use_batch_stats = training or (running_mean is None and running_var is None)
    # Pass the buffers only where they are read (eval) or updated (training with tracking on), so
    # that switching track_running_stats off after construction freezes them, as in torch.
    keep = not training or track_running_stats
    out = batch_norm(
        x,
        running_mean if keep else None,
        running_var if keep else None,
        weight,
        bias,
        training=use_batch_stats,
        momentum=factor,
        eps=eps,
    )
    if counting and num_batches_tracked is not None:  # after the call: a refused batch is not counted (torch counts it)
        num_batches_tracked.add_(1)
    return out


def _layer_forward(x: Tensor, layer: "BatchNormBase") -> Tensor:
    """``layer``'s forward on ``x`` with the layer's mode and state read now: the call a traced
    graph records (the layer becomes a ``get_attr`` node, so its ``training`` is not frozen in)."""
    if has_torch_function_unary(x):
        return handle_torch_function(_layer_forward, (x,), x, layer)
    return _forward(
        x, layer.running_mean, layer.running_var, layer.num_batches_tracked, layer.weight, layer.bias,
        layer.training, layer.track_running_stats, layer.momentum, layer.eps,
    )


class BatchNormBase(nn.Module):
    """Shared state and logic of the 1d and 2d variants (and of the distributed SyncBatchNorm).

    Args:
        num_features: C, the channel (feature) dimension, dim 1 of the input.
        eps: added to the variance inside the square root. Default 1e-5, as torch.
        momentum: weight of the new batch statistic in the running average (torch's 0.1; the
            paper's and d2l's "0.9" is the same thing seen from the other side). ``None`` gives
            the cumulative moving average: the running statistics are the plain mean over all
            batches seen so far (factor ``1 / num_batches_tracked``).
        affine: learn a per-channel scale ``weight`` (gamma, init 1) and shift ``bias`` (beta, 0).
        track_running_stats: keep running statistics for eval. If False, batch statistics are
            used in train *and* eval, and the buffers are ``None``, exactly as in torch. Set to
            False after construction, it freezes the buffers: training no longer updates them,
            eval still normalizes with them (torch's rule).
        device, dtype: where and in which dtype to create parameters and buffers.
        bias: with ``affine``, learn the shift ``bias`` too; False keeps only ``weight`` (gamma)
            and ``bias`` is ``None``, as ``torch.nn.BatchNorm2d(C, bias=False)``.
    """

    _version = 2  # same as torch: state dicts carry num_batches_tracked
    # The input dims the layer accepts, consecutive (BatchNorm1d: 2 or 3; BatchNorm2d: 4). A
    # constant, like torch's __constants__, so that torch.jit.script compiles it in.
    _expected_dims: tuple[int, ...] = (2, 3, 4, 5)
    __constants__ = ["track_running_stats", "momentum", "eps", "num_features", "affine", "_expected_dims"]

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
        *,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(num_features, bool) or not hasattr(num_features, "__index__"):  # torch's empty() takes ints,
            # numpy ints and one-element int tensors; "4" and None failed at our '<=' in Python's words
            raise TypeError(f"num_features must be an int (the channel count), got {num_features!r}")
        if num_features <= 0:
            raise ValueError(f"num_features must be positive, got {num_features}")
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.empty(num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.empty(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer(
                "num_batches_tracked",
                torch.tensor(0, dtype=torch.long, device=device),
            )
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def _check_input(self, x: Tensor) -> Tensor:
        """``x`` if its dims and channel count fit this layer; torch's ValueError otherwise."""
        return _checked_input(x, self._expected_dims[0], self._expected_dims[-1], self.num_features)

    def _momentum_factor(self) -> float:
        """This step's running-average weight; :meth:`_count_batch` counts the batch once taken."""
        return _running_weight(self.num_batches_tracked, self.momentum, self.training and self.track_running_stats)

    def _count_batch(self) -> None:
        """Count a batch taken in training with running statistics (after it was, never before)."""
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)

    def forward(self, x: Tensor) -> Tensor:
        x = self._check_input(x)
        if not torch.jit.is_scripting() and has_torch_function_unary(x):
            # torch.fx: one call that reads the mode and the state from the layer when the graph
            # runs, so a graph traced in training follows .eval() as torch's BN (an fx leaf) does.
            return handle_torch_function(_layer_forward, (x,), x, self)
        return _forward(
            x,
            self.running_mean,
            self.running_var,
            self.num_batches_tracked,
            self.weight,
            self.bias,
            self.training,
            self.track_running_stats,
            self.momentum,
            self.eps,
        )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        # Old torch checkpoints (version < 2, or no version) have no num_batches_tracked. Like
        # torch, keep the current counter for them (0 on a fresh layer); a version-2 state dict
        # without it stays a missing key, so strict loading reports it as torch does.
        key = prefix + "num_batches_tracked"
        version = local_metadata.get("version", None)
        if (version is None or version < 2) and self.track_running_stats and key not in state_dict:
            current = self.num_batches_tracked
            keep = current is not None and current.device.type != "meta"
            state_dict[key] = current if keep else torch.tensor(0, dtype=torch.long)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, bias={self.bias is not None}, "
            f"track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(BatchNormBase):
    """Batch normalization over (N, C) (per feature) or (N, C, L) (per channel over N and L)."""

    _expected_dims = (2, 3)


class BatchNorm2d(BatchNormBase):
    """Batch normalization over (N, C, H, W), per channel over N, H and W."""

    _expected_dims = (4,)
