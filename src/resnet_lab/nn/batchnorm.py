"""BatchNorm1d and BatchNorm2d written from scratch, drop-in compatible with ``torch.nn``.

State lives in the same registered parameters and buffers as torch's (``weight``, ``bias``,
``running_mean``, ``running_var``, ``num_batches_tracked``), so a state dict moves between
``resnet_lab.nn.BatchNorm2d`` and ``torch.nn.BatchNorm2d`` in both directions. The math is the
pure function :func:`resnet_lab.nn.functional.batch_norm`; this module only keeps state and picks
train or eval behaviour from ``self.training`` (never from whether autograd is on).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .functional import batch_norm

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNormBase"]


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
            used in train *and* eval, and the buffers are ``None``, exactly as in torch.
    """

    _version = 2  # same as torch: state dicts carry num_batches_tracked
    _expected_dims: tuple[int, ...] = ()

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
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
            self.bias = nn.Parameter(torch.empty(num_features, **factory))
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
            nn.init.zeros_(self.bias)

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() not in self._expected_dims:
            want = " or ".join(f"{d}D" for d in self._expected_dims)
            raise ValueError(f"expected {want} input (got {x.dim()}D input)")

    def _check_input(self, x: Tensor) -> None:
        self._check_input_dim(x)
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"{type(self).__name__}({self.num_features}) got an input with {x.shape[1]} "
                f"channels (shape {tuple(x.shape)}); the channel dimension is dim 1"
            )

    def _momentum_factor(self) -> float:
        """Count the batch (in training) and return this step's running-average weight."""
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        return factor

    def forward(self, x: Tensor) -> Tensor:
        self._check_input(x)
        factor = self._momentum_factor()
        # Without running statistics (buffers are None) the function uses batch statistics in
        # eval too, as torch does.
        return batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=self.training,
            momentum=factor,
            eps=self.eps,
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
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )


class BatchNorm1d(BatchNormBase):
    """Batch normalization over (N, C) (per feature) or (N, C, L) (per channel over N and L)."""

    _expected_dims = (2, 3)


class BatchNorm2d(BatchNormBase):
    """Batch normalization over (N, C, H, W), per channel over N, H and W."""

    _expected_dims = (4,)
