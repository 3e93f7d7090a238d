"""Model summary: one row per layer with output shape, parameters and MACs (torchinfo-style).

MACs come from :class:`torch.utils.flop_counter.FlopCounterMode` (MACs = FLOPs / 2). It counts
convolutions, linear layers and matrix products, and not batch norm, activations, pooling or
additions; that is the convention of the figures torchvision publishes for its models
(``weights.meta["_ops"]``, e.g. 1.814 GMACs for resnet18 at 224x224), and the one the papers use.

Per-layer MACs are the growth of the counter's total between a module's forward pre-hook and its
forward hook, so they are exact per call. Operations that run outside any listed module (a
functional matmul in a container's ``forward``) are in the total but in no row.

Tip: a model built on the ``meta`` device (``with resnet_lab.models.meta_device(): model = ...``) is
summarized in milliseconds, since shapes and MACs need no arithmetic; pass ``device="meta"``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from ..data.config import check_device_name, pick_device
from ..models.registry import check_module, count_params, weights_dtype
from ..nn import BatchNorm1d as ScratchBatchNorm1d
from ..nn import BatchNorm2d as ScratchBatchNorm2d

__all__ = ["LayerRow", "ModelSummary", "count_params", "summarize"]


@dataclass
class LayerRow:
    """One row of the table: one call of one module.

    Args:
        name: the module's qualified name in the model (``layer1.0.conv1``).
        type: the module's class name.
        depth: nesting depth; children of the model are at depth 1.
        output_shape: shape of each tensor the call returned (one entry for a plain tensor).
        params: parameters of the module (and its children, for a collapsed container); 0 on a
            second call of the same module, so the column sums to the model's total.
        macs: multiply-accumulates of this call.
        trainable: whether any of the row's parameters requires grad (False for 0 parameters).
    """

    name: str
    type: str
    depth: int
    output_shape: list[list[int]]
    params: int
    macs: int
    trainable: bool


@dataclass
class ModelSummary:
    """The result of :func:`summarize`; print :meth:`to_text`, serialize :meth:`to_dict`.

    Args:
        model_name: class name of the model.
        input_shape: full input shape including the batch dimension.
        rows: the table rows in call order.
        total_params: every parameter of the model, counted once even if shared.
        trainable_params: those with ``requires_grad``.
        total_macs: all multiply-accumulates of one forward pass of the batch.
        input_bytes: size of the input tensor.
        activation_bytes: sum of the output tensor sizes of all leaf modules in one forward pass
            (torchsummary's "forward pass size"; an upper bound when layers work in place).
        param_bytes: size of all parameters.
        buffer_bytes: size of all buffers (running statistics).
    """

    model_name: str
    input_shape: list[int]
    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    total_macs: int
    input_bytes: int
    activation_bytes: int
    param_bytes: int
    buffer_bytes: int
    batch_size: int = field(default=1)

    @property
    def non_trainable_params(self) -> int:
        return self.total_params - self.trainable_params

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict: the totals and the rows."""
        d = asdict(self)
        d["non_trainable_params"] = self.non_trainable_params
        return d

    def to_text(self, max_name_width: int = 48) -> str:
        """An aligned table (layer, output shape, params, MACs) followed by a totals block."""
        headers = ("Layer (type)", "Output shape", "Params", "MACs")
        body = []
        for r in self.rows:
            indent = "  " * max(r.depth - 1, 0)
            label = f"{indent}{r.name or '(model)'} ({r.type})"
            if len(label) > max_name_width:
                label = label[: max_name_width - 3] + "..."
            shape = ", ".join(str(s) for s in r.output_shape) if r.output_shape else "-"
            body.append((label, shape, f"{r.params:,}", _human(r.macs) if r.macs else "-"))
        widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(headers)]
        fmt = f"{{:<{widths[0]}}}  {{:<{widths[1]}}}  {{:>{widths[2]}}}  {{:>{widths[3]}}}"
        rule_len = sum(widths) + 6
        lines = ["=" * rule_len, fmt.format(*headers), "=" * rule_len]
        lines += [fmt.format(*row) for row in body]
        mb = 1024**2
        total_size = self.input_bytes + self.activation_bytes + self.param_bytes + self.buffer_bytes
        lines += [
            "=" * rule_len,
            f"Total params:          {self.total_params:,} ({self.total_params / 1e6:.2f} M)",
            f"Trainable params:      {self.trainable_params:,}",
            f"Non-trainable params:  {self.non_trainable_params:,}",
            f"Total MACs:            {_human(self.total_macs)} (input {tuple(self.input_shape)})",
            "-" * rule_len,
            f"Input size (MB):       {self.input_bytes / mb:.2f}",
            f"Activations (MB):      {self.activation_bytes / mb:.2f}  (leaf outputs, one forward pass)",
            f"Params size (MB):      {self.param_bytes / mb:.2f}",
            f"Buffers size (MB):     {self.buffer_bytes / mb:.2f}",
            f"Estimated total (MB):  {total_size / mb:.2f}",
            "=" * rule_len,
        ]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _human(macs: int) -> str:
    if macs >= 1e9:
        return f"{macs / 1e9:.3f} G"
    if macs >= 1e6:
        return f"{macs / 1e6:.2f} M"
    if macs >= 1e3:
        return f"{macs / 1e3:.2f} K"
    return str(macs)


def _tensors(out: Any) -> Iterator[Tensor]:
    """Every tensor in a module output (tensor, tuple/list/namedtuple, dict), in order."""
    if isinstance(out, Tensor):
        yield out
    elif isinstance(out, (tuple, list)):
        for o in out:
            yield from _tensors(o)
    elif isinstance(out, dict):
        for o in out.values():
            yield from _tensors(o)


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def summarize(
    model: nn.Module,
    input_size: tuple[int, ...] = (3, 224, 224),
    *,
    batch_size: int = 1,
    depth: int | None = None,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> ModelSummary:
    """Run one forward pass of a random batch and tabulate layers, parameters and MACs.

    The model runs in eval mode under ``torch.no_grad()`` (so BN uses running statistics and
    GoogLeNet skips its auxiliary heads, as at inference); every module's own train/eval mode is
    restored afterwards (a BN the caller put in eval inside a training model stays in eval).

    Args:
        model: the network.
        input_size: one sample's shape without the batch dimension, e.g. ``(3, 224, 224)``.
        batch_size: samples in the batch; MACs and activation sizes scale with it.
        depth: ``None`` lists every leaf module, and a container holding parameters of its own
            (a layer-scale ``gamma``) as a row of those alone. An int ``d`` collapses each module at
            depth ``d`` into one row (its subtree's parameters and MACs); leaves above ``d`` stay as
            rows. Either way each parameter is in one row (a tied weight, a reused module: the
            first), so the rows sum to the total (less any module the forward pass never calls,
            like GoogLeNet's eval-time-idle auxiliary heads).
        device: where the input is created; must be where the model's parameters are. ``None``
            uses the model's own device. ``"meta"`` (with a model built on meta) needs no compute.
        dtype: input dtype, a floating-point ``torch.dtype`` (another is a ``TypeError``); ``None``
            uses the dtype of the model's first floating-point parameter (float32 for a model without any).
    """
    device = _check_summary_args(model, input_size, batch_size, depth, device)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        # torch.int64 failed in torch.randn ("normal_kernel_cpu" not implemented), "float32" as a TypeError
        raise TypeError(f"dtype must be a floating-point torch.dtype such as torch.float32 (or None for the "
                        f"model's), got {dtype!r}")
    row_modules, leaves = _row_modules(model, depth)
    recorder = _Recorder(row_modules, leaves, own_only=depth is None)
    handles = []
    for m in {*row_modules, *leaves}:
        handles.append(m.register_forward_pre_hook(recorder.pre_hook))
        handles.append(m.register_forward_hook(recorder.post_hook))
    if dtype is None:
        dtype = weights_dtype(model, torch.float32)
    # a generator of its own: the caller's global RNG is not drawn from (the counts never depend on the values)
    if torch.device(device).type == "meta":  # shapes only: a 1 PB input is summarized, not allocated on the CPU first
        x = torch.empty(batch_size, *input_size, dtype=dtype, device=device)
    else:
        x = torch.randn(batch_size, *input_size, dtype=dtype, generator=torch.Generator().manual_seed(0)).to(device)
    modes = [(m, m.training) for m in model.modules()]  # each module's own (a BN put in eval in a training model)
    try:
        model.eval()
        with torch.no_grad(), recorder.counter:
            try:
                model(x)
            except (RuntimeError, ValueError) as e:  # torch's message (a BN's "expected 4D input") names neither
                # input_size nor dtype
                raise ValueError(f"the model cannot run on the summary's input {tuple(x.shape)} ({x.dtype}): {e}; "
                                 "input_size is (C, H, W) without the batch dim, and dtype must be the model's") from e
    finally:
        for m, mode in modes:
            m.training = mode
        for h in handles:
            h.remove()
    counter, rows, activation_bytes = recorder.counter, recorder.rows, recorder.activation_bytes

    trainable, frozen = count_params(model)
    return ModelSummary(
        model_name=type(model).__name__,
        input_shape=list(x.shape),
        rows=rows,
        total_params=trainable + frozen,
        trainable_params=trainable,
        total_macs=counter.get_total_flops() // 2,
        input_bytes=x.numel() * x.element_size(),
        activation_bytes=activation_bytes,
        param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()),
        buffer_bytes=sum(b.numel() * b.element_size() for b in model.buffers()),
        batch_size=batch_size,
    )


def _check_summary_args(model: nn.Module, input_size: tuple[int, ...], batch_size: int, depth: int | None,
                        device: str | torch.device | None) -> torch.device:
    """Refuse bad arguments with the value named; returns the device the input is made on."""
    check_module(model, "summarize")  # summarize("resnet8"): build it with create_model first
    if not _is_count(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if depth is not None and (not _is_count(depth) or depth < 1):
        raise ValueError(f"depth must be None (all leaf layers) or an int >= 1, got {depth!r}")
    sizes = input_size if isinstance(input_size, (tuple, list)) else None
    if not sizes or not all(_is_count(s) and s >= 1 for s in sizes):  # "3,32,32", (3, 8.5, 8)
        raise ValueError(f"input_size must be positive int sizes without the batch dim, e.g. (3, 224, 224); got "
                         f"{input_size!r}")
    model_device = _model_device(model)
    # a name torch does not know ("gpu") was torch's list of every backend: say which names work
    device = model_device if device is None else pick_device(check_device_name(device))
    if device.type != model_device.type:
        raise ValueError(
            f"the model's parameters are on {model_device} but device={device}; "
            f"call model.to({str(device)!r}) first or pass device={str(model_device)!r}"
        )
    return device


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _row_modules(model: nn.Module, depth: int | None) -> tuple[dict[nn.Module, tuple[str, int]], set[nn.Module]]:
    """Which modules get a row: leaves (at most ``depth`` deep) and every module exactly ``depth``
    deep, with their names and depths; and the set of leaves (their outputs are the activations).
    Without ``depth``, a container that holds parameters of its own (a layer-scale ``gamma``) gets a
    row too, for those alone (:class:`_Recorder`): they were in no row, so the rows missed the total."""
    row_modules: dict[nn.Module, tuple[str, int]] = {}
    leaves: set[nn.Module] = set()
    for name, m in model.named_modules():
        d = 0 if name == "" else name.count(".") + 1
        is_leaf = next(m.children(), None) is None
        if is_leaf:
            leaves.add(m)
        own = depth is None and not is_leaf and next(m.parameters(recurse=False), None) is not None
        if (depth is None and is_leaf) or own or (depth is not None and (d == depth or (is_leaf and d < depth))):
            row_modules[m] = (name, d)
    return row_modules, leaves


def _type_name(m: nn.Module) -> str:
    """A row's type: the class name, without a leading underscore (``_GroupNorm``, the norm="group"
    layer, reads GroupNorm), and our from-scratch BN as ``ScratchBatchNorm2d``, which would otherwise
    read as torch's ``BatchNorm2d`` and leave a ``--norm scratch`` model indistinguishable."""
    name = type(m).__name__.lstrip("_")
    return f"Scratch{name}" if type(m) in (ScratchBatchNorm1d, ScratchBatchNorm2d) else name


class _Recorder:
    """Forward hooks that turn one pass into rows: each row module's MACs (the FLOP counter's
    growth between its pre- and post-hook), output shapes and, on its first call, parameters."""

    def __init__(self, row_modules: dict[nn.Module, tuple[str, int]], leaves: set[nn.Module],
                 own_only: bool = False) -> None:
        """``own_only``: a container's row is of its own parameters alone (``depth=None``)."""
        self.row_modules, self.leaves, self.own_only = row_modules, leaves, own_only
        self.counter = FlopCounterMode(display=False)
        self.rows: list[LayerRow] = []
        self.activation_bytes = 0
        self._starts: dict[int, list[tuple[int, int]]] = {}
        self._seen: set[int] = set()  # parameters already in a row: a reused module or a tied weight counts once

    def pre_hook(self, m: nn.Module, args: Any) -> None:
        if m in self.row_modules:
            self._starts.setdefault(id(m), []).append((self.counter.get_total_flops(), len(self.rows)))

    def post_hook(self, m: nn.Module, args: Any, out: Any) -> None:
        tensors = list(_tensors(out))
        if m in self.leaves:
            self.activation_bytes += sum(t.numel() * t.element_size() for t in tensors)
        if m not in self.row_modules:
            return
        name, d = self.row_modules[m]
        start, first_row = self._starts[id(m)].pop()
        macs = (self.counter.get_total_flops() - start) // 2
        own = self.own_only and m not in self.leaves
        if own:  # a container's row of its own parameters: its children's rows hold the rest, MACs too
            macs -= sum(r.macs for r in self.rows[first_row:])
        params = [p for p in m.parameters(recurse=not own) if id(p) not in self._seen]
        self._seen.update(id(p) for p in params)
        self.rows.append(LayerRow(
            name=name, type=_type_name(m), depth=d, output_shape=[list(t.shape) for t in tensors],
            params=sum(p.numel() for p in params), macs=macs, trainable=any(p.requires_grad for p in params),
        ))
