"""Batch normalization as pure functions (Ioffe & Szegedy 2015, Algorithm 1 and 2).

Three steps, each its own function, composed by :func:`batch_norm`:

1. :func:`batch_statistics`: the per-channel mean and (biased) variance of the batch;
2. :func:`normalize`: ``(x - mean) / sqrt(var + eps) * weight + bias``;
3. :func:`update_running_stats`: fold the batch statistics into the running ones.

A synchronized batch norm replaces only step 1 (statistics over every process's batch). Nothing
here holds state: the module in :mod:`resnet_lab.nn.batchnorm` owns the buffers and passes them
in. Conventions are PyTorch's, not the paper's or d2l's:

* ``momentum`` is the weight of the *new* batch statistic (PyTorch's 0.1, i.e. 0.9 decay);
* the running variance is updated with the *unbiased* batch variance (divided by ``n - 1``),
  while the batch itself is normalized with the *biased* one (divided by ``n``);
* ``eps`` is added to the variance inside the square root;
* statistics and normalization are computed in at least float32, and the output has the input's
  dtype: bfloat16/float16 input with float32 parameters (mixed precision, autocast) works as in
  torch; any other mix of dtypes is refused, as torch refuses it.

In training, :func:`batch_norm` runs steps 1 and 2 inside :class:`_BatchNormTrain`, whose backward
is the closed-form gradient of batch norm (derived in its docstring): autograd then records one
node instead of every elementwise op of the forward. Its forward computes steps 1 and 2 with
``x - mean`` kept from the variance for ``y`` (``_normalize_batch``), and the scripted path below
calls the same function, so both give the same values.

Speed comes from counting passes over the activations and new tensors, not operations:
per-channel values (C of them) are free, while each elementwise operation on the N*H*W*C
activations reads and writes them all, and a new tensor of megabytes costs more again. So
``(x - mean) / sqrt(var + eps) * weight + bias`` in eval is a product with a per-channel scale into
one new tensor and a per-channel shift added in place (two passes, where four operations made four
tensors); the training forward makes four passes and two new tensors besides its two reductions
(six and six before), and the backward five passes and two new tensors (seven and six).

The functions compile with ``torch.jit.script`` (which cannot call an autograd Function: scripted
code takes the plain path and lets autograd differentiate it), and :func:`batch_norm` dispatches
``__torch_function__`` like ``torch.nn.functional.batch_norm``, so ``torch.fx`` records it as
one call instead of tracing into its shape-dependent checks.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor
from torch.overrides import handle_torch_function, has_torch_function_variadic

__all__ = [
    "batch_norm",
    "batch_statistics",
    "check_batch_size",
    "normalize",
    "update_running_stats",
    "values_per_channel",
]


def _stat_shape(x: Tensor) -> list[int]:
    # [1, C] for (N, C); [1, C, 1] for (N, C, L); [1, C, 1, 1] for (N, C, H, W)
    shape = [1] * x.dim()
    shape[1] = x.shape[1]
    return shape


def _stat_dims(x: Tensor) -> list[int]:
    # every dim but the channel dim 1: what the per-channel statistics sum over
    return [0] + list(range(2, x.dim()))


def _stat_dtype(x: Tensor) -> torch.dtype:
    # Sums over a batch in bfloat16/float16 lose too many digits: compute in float32 at least.
    return torch.promote_types(x.dtype, torch.float32)


def values_per_channel(x: Tensor) -> int:
    """n, the number of values each channel's statistics average over: N times the spatial sizes.

    Args:
        x: input of shape (N, C, ...).
    """
    size = x.size()
    n = size[0]
    for d in size[2:]:
        n *= d
    return n


def check_batch_size(x: Tensor) -> None:
    """Raise the same ValueError as torch when a channel has a single value in training."""
    size = x.size()
    if values_per_channel(x) == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {size}")


def _check_dtypes(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                  weight: Tensor | None, bias: Tensor | None) -> None:
    # RuntimeError, the type torch raises for these mixes, so code that catches torch's still works
    for t in [running_mean, running_var, weight, bias]:
        if t is not None and t.dtype != x.dtype:
            # bfloat16/float16 input may run with float32 parameters (mixed precision), as in torch
            mixed = (x.dtype == torch.bfloat16 or x.dtype == torch.float16) and t.dtype == torch.float32
            if not mixed:
                raise RuntimeError(
                    f"batch_norm got {x.dtype} input with {t.dtype} parameters or running statistics; "
                    f"convert one to the other's dtype (module.to(dtype) or x.to(dtype)): only "
                    f"bfloat16/float16 input may run with float32 parameters, as in torch"
                )


def _check_buffers(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None,
                   weight: Tensor | None, bias: Tensor | None, training: bool) -> None:
    # torch's errors, types and messages: a lone buffer, eval without buffers, a wrong size
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        if t is not None and not isinstance(t, Tensor):  # a list failed later as "has no attribute numel"
            raise TypeError(f"batch_norm(): argument '{name}' must be Tensor, not {type(t).__name__}")
    if training and (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    if not training:
        for name, t in (("running_mean", running_mean), ("running_var", running_var)):
            if t is None:
                raise RuntimeError(f"{name} must be defined in evaluation mode")
    channels = x.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        if t is not None and t.numel() != channels:
            raise RuntimeError(f"{name} should contain {channels} elements not {t.numel()}")
        if t is not None and t.dim() != 1:  # (C, 1) failed in the update, reported as a vmap problem
            raise RuntimeError(f"{name} should be a 1-D tensor of {channels} elements, got shape {list(t.shape)}")
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if training and t is not None and t.requires_grad:  # updated in place, outside autograd
            raise RuntimeError(f"{name} is updated in place and cannot require grad: pass a buffer "
                               "(requires_grad=False)")
        if not training and t is not None and t.requires_grad and torch.is_grad_enabled():  # torch refuses it too
            raise RuntimeError(f"batch norm is not differentiable with respect to {name}, which requires grad: "
                               "pass a buffer (requires_grad=False)")


def _is_real_scalar(value: object) -> bool:
    # What torch's parser takes for a float argument: Python and numpy reals (a numpy float32 from a
    # config) and 0-dim real tensors (a scheduled momentum); bool stays refused, as before.
    if isinstance(value, bool):
        return False
    if isinstance(value, Tensor):
        return value.dim() == 0 and value.dtype != torch.bool and not value.is_complex()
    return isinstance(value, numbers.Real)


def check_arguments(x: Tensor, running_mean: Tensor | None, running_var: Tensor | None, weight: Tensor | None,
                    bias: Tensor | None, training: bool, momentum: float, eps: float,
                    per_process_batch: bool = True) -> None:
    """torch's checks and messages (``torch.nn.functional.batch_norm`` and its kernel), made before
    anything is computed or updated; ``per_process_batch``: refuse one value per channel in this
    process's batch (SyncBatchNorm counts the global batch instead)."""
    if not x.is_floating_point():  # torch: '"batch_norm" not implemented for 'Long''
        raise NotImplementedError(f'"batch_norm" not implemented for {x.dtype}: batch norm takes floating-point '
                                  "input; convert it (x.float())")
    if not isinstance(training, bool):  # "no" is truthy: it trained
        raise TypeError(f"batch_norm(): argument 'training' must be bool, not {type(training).__name__}")
    _check_buffers(x, running_mean, running_var, weight, bias, training)
    if training and per_process_batch:
        check_batch_size(x)
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if not torch.jit.is_scripting():  # TorchScript has typed momentum already (and knows no numbers.Real)
        if not _is_real_scalar(momentum):  # torch's words; None was a raw "-"
            raise TypeError(f"batch_norm(): argument 'momentum' must be float, not {type(momentum).__name__}")
    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    _check_dtypes(x, running_mean, running_var, weight, bias)


def batch_statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and biased variance over every dim but 1 (Algorithm 1, lines 1-2).

    Args:
        x: input of shape (N, C, ...).

    Returns:
        ``(mean, var)``, each of shape (C,), in float32 (float64 for float64 input). ``var``
        divides by n (what normalizes the batch); :func:`update_running_stats` makes it unbiased.
    """
    mean, var, _ = _centred_statistics(x.to(_stat_dtype(x)))
    return mean, var


def _centred_statistics(xs: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    # mean, biased var and the centred input x - mean, which the training forward reuses
    dims = _stat_dims(xs)
    mean = xs.mean(dims)  # (C,)
    # Two passes, mean((x - mean)^2): no cancellation when the mean is large against the spread.
    xc = xs - mean.reshape(_stat_shape(xs))  # (N, C, H, W)
    var = (xc * xc).mean(dims)  # (C,)
    return mean, var, xc


def _normalize_batch(xs: Tensor, weight: Tensor | None, bias: Tensor | None,
                     eps: float) -> tuple[Tensor, Tensor, Tensor]:
    # Algorithm 1 in training: (y, mean, var), y = (x - mean) * scale + bias with the batch's
    # statistics, reusing x - mean from the variance (four passes over the activations in all)
    mean, var, xc = _centred_statistics(xs)
    scale = _scale(var, weight, eps).reshape(_stat_shape(xs))
    # xc is a temporary of ours: when no graph is recorded (inside _BatchNormTrain) y takes its memory
    y = xc * scale if torch.is_grad_enabled() else xc.mul_(scale)
    if bias is not None:
        y = y.add_(bias.reshape(_stat_shape(xs)))
    return y, mean, var


def _scale(var: Tensor, weight: Tensor | None, eps: float) -> Tensor:
    # gamma / sqrt(var + eps), per channel: the factor every centred value is multiplied by
    inv_std = torch.rsqrt(var + eps)
    return inv_std if weight is None else weight * inv_std


def normalize(
    x: Tensor,
    mean: Tensor,
    var: Tensor,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
    eps: float = 1e-5,
) -> Tensor:
    """``(x - mean) / sqrt(var + eps) * weight + bias`` per channel (Algorithm 1, lines 3-4).

    Everything but ``x`` is per channel, so the four operations fold into ``x * scale + shift``
    with ``scale = weight / sqrt(var + eps)`` and ``shift = bias - mean * scale`` (as torch's CPU
    kernel computes it): one new tensor and two passes over the activations instead of four of
    each. The C per-channel values cost nothing; each pass over the N*H*W*C values costs.

    Args:
        x: input of shape (N, C, ...).
        mean, var: (C,) statistics: the batch's (training) or the running ones (eval).
        weight, bias: (C,) gamma and beta, or ``None`` to skip the scale or the shift.
        eps: added to the variance inside the square root.

    Returns:
        Tensor of ``x``'s shape and dtype (computed in at least float32).
    """
    shape = _stat_shape(x)
    scale = _scale(var, weight, eps)  # (C,)
    shift = -mean * scale if bias is None else bias - mean * scale  # (C,)
    # one new tensor: the product; the shift is added in place (a second new tensor costs more
    # than a pass over one that is already in the cache)
    return (x.to(_stat_dtype(x)) * scale.reshape(shape)).add_(shift.reshape(shape)).to(x.dtype)


def update_running_stats(
    running_mean: Tensor,
    running_var: Tensor,
    mean: Tensor,
    var: Tensor,
    count: int,
    momentum: float,
) -> None:
    """Fold a batch's statistics into the running ones, in place, outside autograd.

    ``running = (1 - momentum) * running + momentum * batch``, with the variance made unbiased
    (times ``count / (count - 1)``), as torch does. An empty batch (``count`` 0) has no
    statistics: the running ones stay as they are, as in torch.

    Args:
        running_mean, running_var: (C,) buffers, updated in place.
        mean, var: (C,) batch mean and biased variance (:func:`batch_statistics`).
        count: n, the values per channel the statistics came from (> 1, or 0).
        momentum: weight of the new statistic (torch's convention).
    """
    if count == 0:
        return
    momentum = float(momentum)  # a numpy scalar or a 0-dim tensor, taken as torch takes them
    if count < 2:  # n / (n - 1) has no value at 1 and flips the sign below it
        raise ValueError(f"count must be 0 (an empty batch) or at least 2 values per channel, got {count}")
    with torch.no_grad():
        unbiased = var.detach() * (count / (count - 1))
        # Both new values first, then the writes (the same arithmetic as mul_ then add_): a batch
        # that cannot be folded in (a vmapped one) leaves both buffers as they were.
        new_mean = torch.add(running_mean * (1 - momentum), mean.detach().to(running_mean.dtype), alpha=momentum)
        new_var = torch.add(running_var * (1 - momentum), unbiased.to(running_var.dtype), alpha=momentum)
        if torch.jit.is_scripting():  # TorchScript has no try (nor vmap)
            running_mean.copy_(new_mean)
        else:
            _write_running_mean(running_mean, new_mean)
        running_var.copy_(new_var)


def _write_running_mean(running_mean: Tensor, new_mean: Tensor) -> None:
    try:
        running_mean.copy_(new_mean)
    except RuntimeError as e:  # torch's own words for the case (its kernel raises them up front)
        if "vmap" not in str(e):  # e.g. torch.func.grad over captured buffers: torch's error says why
            raise
        raise RuntimeError(
            "Batch norm got a batched tensor as input while the running_mean or running_var, which will "
            "be updated in place, were not batched. If you are using vmap, use "
            "torch.func.replace_all_batch_norm_modules_(model) or track_running_stats=False"
        ) from e


class _BatchNormTrain(torch.autograd.Function):
    r"""Batch statistics and normalization (Algorithm 1) with a hand-written backward.

    ``forward(x, weight, bias, eps) -> (y, mean, var)``: ``y`` normalized with the statistics of
    :func:`batch_statistics`, which come out too (for the running averages; they carry no
    gradient). ``x`` is already in float32 or float64 (:func:`batch_norm` converts it).

    The backward, per channel, with n values per channel, ``x_hat = (x - mean) * inv_std``,
    ``inv_std = 1 / sqrt(var + eps)`` and ``y = gamma * x_hat + beta`` (Ioffe & Szegedy 2015,
    section 3; all per-channel quantities of shape (1, C, 1, 1), sums over every dim but 1)::

        dbeta  = sum(dy)
        dgamma = sum(dy * x_hat)
        dy_hat = dy * gamma                      # gradient at x_hat
        dx     = (1/n) * inv_std * (n * dy_hat - sum(dy_hat) - x_hat * sum(dy_hat * x_hat))

    Where dx comes from: each x_i reaches every x_hat_j of its channel three ways. Directly,
    ``inv_std * dy_hat_i``; through the mean (``dmean/dx_i = 1/n``), ``-inv_std * sum(dy_hat) / n``;
    through the variance (``dvar/dx_i = 2 (x_i - mean) / n``; the mean's own shift cancels since
    ``sum(x - mean) = 0``) and ``dinv_std/dvar = -inv_std^3 / 2``, the sum over j of
    ``dy_hat_j * (x_j - mean) * (-inv_std^3 (x_i - mean) / n)`` = ``-inv_std * x_hat_i *
    sum(dy_hat * x_hat) / n``. Since gamma is constant within a channel,
    ``sum(dy_hat) = gamma * dbeta`` and ``sum(dy_hat * x_hat) = gamma * dgamma``: the two sums the
    parameter gradients need are the only reductions of the backward, and::

        dx = gamma * inv_std * (dy - dbeta / n - x_hat * dgamma / n)

    In code, with the centred ``xc = x - mean`` (``x_hat = xc * inv_std``, never stored) and
    ``scale = gamma * inv_std``: ``dgamma = inv_std * sum(dy * xc)``, and ``dx = scale * dy +
    (-scale * dbeta / n) + xc * (-scale * inv_std * dgamma / n)``, with per-channel factors and in
    ``xc``'s memory.

    Double backward (``create_graph=True``) differentiates this backward with autograd. It is
    written with differentiable tensor ops, and in that case recomputes the statistics from ``x``
    so that their dependence on ``x`` is recorded too.

    Forward-mode AD (``torch.func.jvp``, ``jacfwd``; :class:`_BatchNormTrainJvp`) pushes tangents
    ``tx``, ``tgamma``, ``tbeta`` through the same steps forward: ``tmean = mean(tx)``, ``tvar = 2 mean(xc * tx)`` (the
    mean's tangent cancels, as in the backward), so ``tinv_std = -inv_std^2 * mean(x_hat * tx)``,
    ``tx_hat = inv_std * (tx - tmean - x_hat * mean(x_hat * tx))`` and ``ty = gamma * tx_hat +
    tgamma * x_hat + tbeta``.
    ``vmap`` runs the forward on each vmapped slice (``generate_vmap_rule``): every slice is a batch
    with its own statistics.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float) -> tuple[Tensor, Tensor, Tensor]:
        return _normalize_batch(x, weight, bias, eps)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        x, weight, _, eps = inputs
        _, mean, var = output
        ctx.mark_non_differentiable(mean, var)
        ctx.save_for_backward(x, weight, mean, var)
        ctx.eps = eps

    @staticmethod
    def backward(ctx, dy: Tensor, _dmean: Tensor, _dvar: Tensor) -> tuple[Tensor | None, ...]:
        x, weight, mean, var = ctx.saved_tensors
        graph = torch.is_grad_enabled()
        if graph:
            # create_graph=True: autograd records this method, and the saved statistics are
            # constants to it; recompute them from x so their terms reach the second derivative.
            mean, var = batch_statistics(x)
        shape, dims, n = _stat_shape(x), _stat_dims(x), values_per_channel(x)
        inv_std = torch.rsqrt(var + ctx.eps)  # (C,)
        if n == 0:  # an empty batch's statistics are NaN; its parameter gradients are 0, as in torch
            inv_std = torch.zeros_like(inv_std)
        xc = x - mean.reshape(shape)  # (N, C, H, W); x_hat = xc * inv_std, never stored
        dbeta = dy.sum(dims)  # (C,)
        dgamma = (dy * xc).sum(dims) * inv_std  # (C,): sum(dy * x_hat)
        dx = dweight = dbias = None
        if ctx.needs_input_grad[0]:
            scale = inv_std if weight is None else weight * inv_std  # gamma * inv_std, (C,)
            # dx = xc * (-scale * inv_std * dgamma / n) + scale * dy - scale * dbeta / n, in xc's
            # memory unless autograd records this. Tensor / n: an empty batch (n = 0) gives an
            # empty dx, as in torch, not ZeroDivisionError.
            k = (-scale * inv_std * dgamma / n).reshape(shape)
            dx = xc * k if graph else xc.mul_(k)
            dx = dx.addcmul_(dy, scale.reshape(shape)).add_((-scale * dbeta / n).reshape(shape))
        # Sums in float32 for bfloat16/float16 parameters: autograd rounds each gradient to its
        # input's dtype once, as torch's kernel does.
        if ctx.needs_input_grad[1]:
            dweight = dgamma
        if ctx.needs_input_grad[2]:
            dbias = dbeta
        return dx, dweight, dbias, None


class _BatchNormTrainJvp(_BatchNormTrain):
    """:class:`_BatchNormTrain` with its forward-mode rule (``jvp``), for eager code: Dynamo
    (``torch.compile``) cannot trace a Function that defines one, so compiled code takes the
    parent class."""

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        _BatchNormTrain.setup_context(ctx, inputs, output)
        x, weight, _, _ = inputs
        _, mean, var = output
        ctx.save_for_forward(x, weight, mean, var)

    @staticmethod
    def jvp(ctx, tx: Tensor | None, tweight: Tensor | None, tbias: Tensor | None,
            _teps: None) -> tuple[Tensor, None, None]:
        x, weight, mean, var = ctx.saved_tensors
        shape, dims = _stat_shape(x), _stat_dims(x)
        inv_std = torch.rsqrt(var + ctx.eps).reshape(shape)
        x_hat = (x - mean.reshape(shape)) * inv_std
        ty = torch.zeros_like(x)
        if tx is not None:
            t_hat = inv_std * (tx - tx.mean(dims).reshape(shape)
                               - x_hat * (x_hat * tx).mean(dims).reshape(shape))
            ty = ty + (t_hat if weight is None else weight.reshape(shape) * t_hat)
        if tweight is not None:
            ty = ty + tweight.reshape(shape) * x_hat
        if tbias is not None:
            ty = ty + tbias.reshape(shape)
        return ty, None, None

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
    """Normalize ``x`` per channel (dim 1) and apply the affine transform; same signature, checks
    and errors as ``torch.nn.functional.batch_norm``.

    Args:
        x: input of shape (N, C), (N, C, L) or (N, C, H, W).
        running_mean, running_var: (C,) buffers, updated in place when ``training``; both
            ``None`` to keep no running statistics (training only: eval needs them, as in torch).
        weight, bias: (C,) gamma and beta, or ``None`` for no affine transform.
        training: normalize with the batch statistics and update the running ones.
        momentum: weight of the new batch statistic in the running average (PyTorch's convention).
        eps: added to the variance for numerical stability; > 0 in training, >= 0 in eval.
    """
    if has_torch_function_variadic(x, running_mean, running_var, weight, bias):
        return handle_torch_function(
            batch_norm, (x, running_mean, running_var, weight, bias), x, running_mean, running_var,
            weight=weight, bias=bias, training=training, momentum=momentum, eps=eps,
        )
    if x.dim() < 2:
        raise ValueError(f"batch_norm expects input of shape (N, C, ...), got {x.size()}")
    check_arguments(x, running_mean, running_var, weight, bias, training, momentum, eps)
    # One conversion for both uses of x, so that a bfloat16/float16 input's gradient is summed in
    # float32 and rounded once, as torch's kernel does.
    xs = x.to(_stat_dtype(x))
    # (eval has both buffers, checked above; TorchScript needs the None tests to refine the types)
    if not training and running_mean is not None and running_var is not None:
        return normalize(xs, running_mean, running_var, weight, bias, eps).to(x.dtype)  # eval: Algorithm 2
    if torch.jit.is_scripting():  # TorchScript cannot call an autograd Function: autograd records the ops
        y, mean, var = _normalize_batch(xs, weight, bias, eps)
    else:
        function = _BatchNormTrain if torch.compiler.is_compiling() else _BatchNormTrainJvp
        y, mean, var = function.apply(xs, weight, bias, eps)
    if training and running_mean is not None and running_var is not None:
        update_running_stats(running_mean, running_var, mean, var, values_per_channel(x), momentum)
    return y.to(x.dtype)
