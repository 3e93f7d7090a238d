"""Batch-norm folding: merge an eval-mode BN into the Conv2d / Linear that feeds it.

In eval mode a BatchNorm is a fixed per-channel affine map (Ioffe & Szegedy 2015, Algorithm 2)::

    y = gamma * (x - mean) / sqrt(var + eps) + beta = s * x + (beta - s * mean),  s = gamma / sqrt(var + eps)

When ``x = W * u + b`` is a convolution (or linear layer) whose output goes *only* to that BN, the
composition is again a convolution with weight ``s[:, None, None, None] * W`` and bias
``s * (b - mean) + beta``, so the BN can be removed at inference time at no cost in accuracy.

What folds is decided by data flow, not by names: the model is traced with :mod:`torch.fx` and a BN
is folded only when its input is the output of a Conv/Linear module that has no other user. This is
why the BN-ReLU-Conv order of pre-activation ResNets (He et al. 2016, "Identity Mappings") and of
DenseNet layers (Huang et al. 2017) leaves some BNs in place: a BN that *precedes* a conv through a
ReLU is not an affine map of the conv's output, and a conv whose output also feeds a shortcut cannot
absorb a BN that only one of its users sees. :class:`FuseReport` lists both kinds. A max-pool between
the conv and the BN is looked through when every scale of the BN is >= 0 (it then commutes with the pool).

When a model does not trace (Python control flow on tensor values), a module-order heuristic is
used instead (a BN registered right after a Conv/Linear of matching width, or ``convK``/``bnK``
pairs), and the result is checked numerically against the unfolded model on an example input.

The analysis runs on the graph; the change is applied to the module itself (the conv gets the new
weight and bias, the BN becomes ``nn.Identity``), so the model keeps its class and its methods
(``forward_features``, ``get_classifier``...). Folding is exact up to floating-point rounding: the
arithmetic is done in float64 and cast back to the layer's dtype.
"""

from __future__ import annotations

import copy
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import Tensor, nn

from ..models.registry import check_module
from ..nn import BatchNorm1d as ScratchBatchNorm1d
from ..nn import BatchNorm2d as ScratchBatchNorm2d
from ..nn import SyncBatchNorm as ScratchSyncBatchNorm

__all__ = ["BN_TYPES", "FOLDABLE_TYPES", "FoldedAfterLinear", "FuseReport", "count_bn", "fuse_bn", "fuse_bn_with_report", "plan_bn_folding"]

log = logging.getLogger(__name__)

#: Batch-norm classes that are folded: torch's and ours (same parameters and buffers). The
#: synchronized ones too: in eval mode a SyncBatchNorm is the same fixed affine map.
BN_TYPES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.SyncBatchNorm,
    ScratchBatchNorm1d,
    ScratchBatchNorm2d,
    ScratchSyncBatchNorm,
)
#: Layers a following BN can be folded into: an affine map with the output channel on dim 0 of the weight.
FOLDABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class FuseReport:
    """What :func:`fuse_bn` folded and what it left in place.

    Args:
        folded: ``(layer_name, bn_name)`` pairs, in graph order: ``bn_name`` was folded into
            ``layer_name`` and replaced by ``nn.Identity``.
        unfolded: ``(bn_name, reason)`` for every batch-norm module that is still there.
        method: ``"fx"`` (data flow from a torch.fx trace) or ``"module-order"`` (the heuristic
            used when the model does not trace; its result was checked numerically).
        fx_error: why tracing failed, when ``method`` is ``"module-order"``.
        across_pool: ``{bn_name: pool_name}`` for folded BNs that read a max-pool of the layer's
            output: every scale of the BN is >= 0, so it commutes with the pool.
    """

    folded: list[tuple[str, str]] = field(default_factory=list)
    unfolded: list[tuple[str, str]] = field(default_factory=list)
    method: str = "fx"
    fx_error: str | None = None
    across_pool: dict[str, str] = field(default_factory=dict)

    @property
    def unfolded_names(self) -> list[str]:
        return [name for name, _ in self.unfolded]

    def summary(self) -> str:
        """A few human-readable lines (what the CLI prints)."""
        total = len(self.folded) + len(self.unfolded)
        if total == 0:
            return "nothing to fold: the model has no batch-norm layer (GroupNorm or no norm, for instance)"
        lines = [f"folded {len(self.folded)} of {total} batch-norm layers into the preceding conv/linear ({self.method})"]
        if self.fx_error:
            lines.append(f"  torch.fx could not trace the model ({self.fx_error}); used the module-order heuristic, verified numerically")
        folded = {bn for _, bn in self.folded}
        across = [f"{bn} after {pool}" for bn, pool in self.across_pool.items() if bn in folded]
        if across:
            lines.append(f"  {len(across)} of them across a max-pool, which commutes with a BN whose scales are all >= 0 "
                         f"({', '.join(across)})")
        reasons: dict[str, list[str]] = {}
        for name, reason in self.unfolded:
            reasons.setdefault(reason, []).append(name)
        for reason, names in reasons.items():
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            lines.append(f"  kept {len(names)}: {reason} ({shown})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


def count_bn(model: nn.Module) -> int:
    """Number of batch-norm modules (torch's or ours) in ``model``."""
    return sum(isinstance(m, BN_TYPES) for m in model.modules())


# ----------------------------------------------------------------------------------------------
# Analysis


class _LeafBNTracer(torch.fx.Tracer):
    # torch.nn modules are leaves by default; our BN is not (it lives outside torch.nn) and its
    # input checks branch on shapes, so it must be a leaf too for the graph to show conv -> bn.
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, BN_TYPES) or super().is_leaf_module(m, qualname)


def _bn_blocker(bn: nn.Module) -> str | None:
    """Why ``bn`` cannot be folded whatever precedes it, or None."""
    if bn.running_mean is None or bn.running_var is None:
        return "no running statistics (track_running_stats=False): uses batch statistics in eval"
    return None


def _width(layer: nn.Module) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def _mismatch(layer: nn.Module, bn: nn.Module, name: str) -> str | None:
    """Why ``bn`` does not fold into ``layer`` (called ``name``) although it reads its output, or None."""
    if isinstance(layer, nn.Linear) and not isinstance(bn, (nn.BatchNorm1d, ScratchBatchNorm1d)):
        return (f"a {type(bn).__name__} after the Linear {name}: only a BatchNorm1d, which normalizes a Linear's "
                "features, folds into it")
    if _width(layer) != bn.num_features:
        return f"width mismatch with {name} ({_width(layer)} outputs, {bn.num_features} BN features)"
    return None


def _compatible(layer: nn.Module, bn: nn.Module) -> bool:
    return _mismatch(layer, bn, "") is None


def _plan_fx(model: nn.Module) -> tuple[list[tuple[str, str]], dict[str, str], dict[str, str]]:
    """Fold pairs, the reasons for the rest and the pairs' max-pools in between, from the data flow
    of a torch.fx trace."""
    graph = _LeafBNTracer().trace(model)
    modules = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs: list[tuple[str, str]] = []
    reasons: dict[str, str] = {}
    across: dict[str, str] = {}
    for node in graph.nodes:
        if node.op != "call_module" or not isinstance(modules.get(node.target), BN_TYPES):
            continue
        bn_name, bn = node.target, modules[node.target]
        blocker = _bn_blocker(bn)
        if blocker:
            reasons[bn_name] = blocker
            continue
        if calls[bn_name] > 1:
            reasons[bn_name] = f"called {calls[bn_name]} times in forward(): shared module"
            continue
        src = node.args[0] if node.args else None
        if len(node.args) != 1 or node.kwargs:
            reasons[bn_name] = f"input is {_describe(src, modules)}, not a Conv/Linear output (e.g. BN-ReLU-conv order)"
            continue
        read = src
        src, pool_reason = _through_max_pool(read, bn, modules)
        if pool_reason:
            reasons[bn_name] = pool_reason
            continue
        src_mod = _called_module(src, modules)
        if not isinstance(src_mod, FOLDABLE_TYPES):
            reasons[bn_name] = f"input is {_describe(src, modules)}, not a Conv/Linear output (e.g. BN-ReLU-conv order)"
            continue
        if len(src.users) > 1:
            reasons[bn_name] = "the conv output also feeds another op (e.g. a shortcut), so it must stay un-normalized there"
            continue
        if calls[src.target] > 1:
            reasons[bn_name] = f"its conv {src.target} is called {calls[src.target]} times (shared)"
            continue
        if mismatch := _mismatch(src_mod, bn, src.target):
            reasons[bn_name] = mismatch
            continue
        pairs.append((src.target, bn_name))
        if read is not src:
            across[bn_name] = read.target
    paired = {b for _, b in pairs}
    for name, m in model.named_modules():
        if isinstance(m, BN_TYPES) and name not in reasons and name not in paired:
            reasons[name] = "not called by forward()"
    return pairs, reasons, across


def _called_module(node, modules: dict[str, nn.Module]) -> nn.Module | None:
    """The module a graph node calls, or None for any other node (a function, the input, a constant)."""
    return modules.get(node.target) if isinstance(node, torch.fx.Node) and node.op == "call_module" else None


def _bn_scale(bn: nn.Module) -> Tensor:
    """The per-channel factor of an eval-mode BN: gamma / sqrt(running_var + eps)."""
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(bn.running_var, dtype=torch.float64)
    return gamma / torch.sqrt(bn.running_var.double() + bn.eps)


#: The max-pool over the spatial dims of each conv's output, which a BN after it may be moved before.
_POOL_OF = {nn.Conv1d: nn.MaxPool1d, nn.Conv2d: nn.MaxPool2d, nn.Conv3d: nn.MaxPool3d}


def _through_max_pool(src, bn: nn.Module, modules: dict[str, nn.Module]):
    """``(node, None)``: the node whose output ``bn`` normalizes, looking through a max-pool in
    between; ``(src, reason)`` when a max-pool is in between and the BN cannot move before it.

    A BN with scale s >= 0 on every channel commutes with max-pooling, max(s x + t) = s max(x) + t
    (its padding is -inf, never a maximum), so a conv -> max-pool -> BN stem (``resnet8_prepool``)
    folds like conv -> BN; a negative s turns the max into a min.
    """
    pool = _called_module(src, modules)
    if not isinstance(pool, tuple(_POOL_OF.values())) or not src.args:
        return src, None
    # only a pool over the conv's own spatial dims keeps channels apart: after a Linear, or a
    # MaxPool3d after a Conv2d (which takes N as channels and C as depth), it would mix them
    # (subclasses count, as for FOLDABLE_TYPES)
    conv = _called_module(src.args[0], modules)
    if not any(isinstance(conv, c) and isinstance(pool, p) for c, p in _POOL_OF.items()):
        return src, None
    what = f"{type(pool).__name__} {src.target}"
    if pool.return_indices or len(src.args) != 1 or src.kwargs:  # (output, indices), or a call it cannot read
        return src, f"input is {what}, not a Conv/Linear output (e.g. BN-ReLU-conv order)"
    if len(src.users) > 1:
        return src, f"input is {what}, whose output also feeds another op"
    negative = int((_bn_scale(bn) < 0).sum())
    if negative:
        return src, (f"input is {what}, and {negative} of its {bn.num_features} scales gamma / sqrt(var + eps) "
                     "are negative: max-pooling commutes only with a non-negative scale")
    return src.args[0], None


def _describe(src, modules: dict[str, nn.Module]) -> str:
    if not isinstance(src, torch.fx.Node):
        return repr(src)
    if src.op == "call_module":
        return f"{type(modules[src.target]).__name__} {src.target}"
    if src.op == "placeholder":
        return "the model input"
    target = getattr(src.target, "__name__", str(src.target))
    return f"the result of {target}"


def _plan_module_order(model: nn.Module) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Fold pairs guessed from registration order and names (used when fx cannot trace).

    A BN is paired with the Conv/Linear registered immediately before it in the same parent
    (``conv1, bn1``; ``Sequential(Conv, BN)``; torchvision's ``downsample.0/.1``), or with the
    ``convK`` registered *before* a ``bnK``. A BN registered before its conv (``bn1, conv1``: the
    pre-activation order) is not paired.
    """
    pairs: list[tuple[str, str]] = []
    reasons: dict[str, str] = {}
    for parent_name, parent in model.named_modules():
        prefix = f"{parent_name}." if parent_name else ""
        children = list(parent.named_children())
        for i, (name, bn) in enumerate(children):
            if not isinstance(bn, BN_TYPES):
                continue
            full = prefix + name
            blocker = _bn_blocker(bn)
            if blocker:
                reasons[full] = blocker
                continue
            match = None
            if i > 0 and isinstance(children[i - 1][1], FOLDABLE_TYPES) and _compatible(children[i - 1][1], bn):
                match = children[i - 1][0]
            else:
                m = re.fullmatch(r"(?:bn|norm)(\d+)", name)
                if m:
                    for j in range(i):
                        cname, cmod = children[j]
                        if cname == f"conv{m.group(1)}" and isinstance(cmod, FOLDABLE_TYPES) and _compatible(cmod, bn):
                            match = cname
            if match is None:
                reasons[full] = "no Conv/Linear registered right before it (module-order heuristic)"
            else:
                pairs.append((prefix + match, full))
    return pairs, reasons


def plan_bn_folding(model: nn.Module) -> FuseReport:
    """Decide which BNs of ``model`` fold into which layers, without changing anything.

    Args:
        model: any ``nn.Module``; the zoo's models all trace with torch.fx.
    """
    try:
        pairs, reasons, across = _plan_fx(model)
        report = FuseReport(method="fx", across_pool=across)
    except Exception as e:  # fx raises many types (TraceError, TypeError, RuntimeError...)
        pairs, reasons = _plan_module_order(model)
        report = FuseReport(method="module-order", fx_error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    report.folded = pairs
    # every BN of the model, in module order, that is not folded
    folded = {bn for _, bn in pairs}
    report.unfolded = [(n, reasons.get(n, "not paired")) for n, m in model.named_modules() if isinstance(m, BN_TYPES) and n not in folded]
    return report


# ----------------------------------------------------------------------------------------------
# Folding


@torch.no_grad()
def _fold_into(layer: nn.Module, bn: nn.Module) -> None:
    """Overwrite ``layer``'s weight and bias with those of ``bn(layer(x))`` (eval mode)."""
    w = layer.weight
    dtype = w.dtype
    mean = bn.running_mean.double()
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    scale = _bn_scale(bn)  # (C_out,)
    bias = layer.bias.double() if layer.bias is not None else torch.zeros_like(mean)
    new_w = w.double() * scale.reshape((-1,) + (1,) * (w.dim() - 1))  # output channel is dim 0
    new_b = (bias - mean) * scale + beta
    w.copy_(new_w.to(dtype))
    if layer.bias is None:
        layer.bias = nn.Parameter(new_b.to(device=w.device, dtype=dtype), requires_grad=w.requires_grad)
    else:
        layer.bias.copy_(new_b.to(dtype))


class FoldedAfterLinear(nn.Identity):
    """Where a BatchNorm1d folded into the Linear before it was: the identity for (N, C) input.

    The fold is right only when the Linear's output is (N, C): a Linear acts on the last dim, a
    BatchNorm1d on dim 1, so on (N, L, F) input the two differ, and nothing in a module tells which
    input it will get. A 3-D input is refused here instead of giving wrong outputs.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 2:
            raise ValueError(
                f"a BatchNorm1d folded into the Linear before it takes (N, C) input only, got shape "
                f"{tuple(x.shape)}: on (N, L, C) input the BN normalizes dim 1, not the Linear's outputs; "
                "fuse_bn this model only for 2-D use, or do not fold it"
            )
        return x


def _apply(model: nn.Module, pairs: list[tuple[str, str]]) -> None:
    for layer_name, bn_name in pairs:
        layer = model.get_submodule(layer_name)
        bn = model.get_submodule(bn_name)
        _fold_into(layer, bn)
        parent_name, _, attr = bn_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, FoldedAfterLinear() if isinstance(layer, nn.Linear) else nn.Identity())


def _check_eval(model: nn.Module) -> None:
    training = [n or type(model).__name__ for n, m in model.named_modules() if isinstance(m, BN_TYPES) and m.training]
    if training:
        raise RuntimeError(
            f"fuse_bn needs eval-mode batch norm (folding uses the running statistics), but "
            f"{len(training)} BN layer(s) are in training mode (first: {training[0]!r}). "
            "Call model.eval() before fuse_bn."
        )


def _repeated(named: Iterable[tuple[str, object]]) -> set[int]:
    """ids of the objects listed under more than one name: modules registered twice (shared), or
    parameters that two modules hold (tied weights, which an in-place fold would change in both)."""
    counts = Counter(id(obj) for _, obj in named)
    return {k for k, n in counts.items() if n > 1}


def _example_input(model: nn.Module) -> Tensor:
    """A random batch for the check, from a generator of its own (the caller's global RNG is left as it was)."""
    config = getattr(model, "model_config", None) or {}
    first = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Conv1d))), None)
    p = next(model.parameters())
    if isinstance(first, nn.Linear):
        shape: tuple[int, ...] = (2, first.in_features)
    elif isinstance(first, nn.Conv1d):
        shape = (2, first.in_channels, 64)
    else:
        channels = config.get("in_channels", first.in_channels if first is not None else 3)
        size = 32 if config.get("small_input") else 64
        shape = (2, channels, size, size)
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype=p.dtype, device=p.device)


def fuse_bn_with_report(
    model: nn.Module, inplace: bool = False, *, example_input: Tensor | None = None
) -> tuple[nn.Module, FuseReport]:
    """Fold every BN that directly follows a Conv/Linear; return ``(fused_model, report)``.

    Args:
        model: a model in eval mode (at least every BN in it).
        inplace: change ``model`` itself instead of a deep copy.
        example_input: a batch the model accepts; only used to verify the module-order heuristic
            when torch.fx cannot trace the model (default: random, shape from ``model_config`` or
            the first conv, 32 px for small-input models, else 64 px).
    """
    check_module(model, "fuse_bn")
    _check_eval(model)
    if not isinstance(inplace, bool):  # "no" is truthy: it would change the caller's model
        raise TypeError(f"inplace must be True or False, got {inplace!r}")
    work = model if inplace else copy.deepcopy(model)
    report = plan_bn_folding(work)
    shared = _repeated(work.named_modules(remove_duplicate=False))
    tied = _repeated(work.named_parameters(remove_duplicate=False))
    keep = []
    for layer_name, bn_name in report.folded:
        layer = work.get_submodule(layer_name)
        if id(layer) in shared or id(work.get_submodule(bn_name)) in shared:
            report.unfolded.append((bn_name, "module registered under several names (shared)"))
        elif any(id(p) in tied for p in layer.parameters(recurse=False)):
            report.unfolded.append((bn_name, f"the weights of {layer_name} are tied to another module's"))
        else:
            keep.append((layer_name, bn_name))
    report.folded = keep
    # a pair kept here folds across no pool either (FuseReport.across_pool names folded BNs only)
    folded_bns = {bn for _, bn in keep}
    report.across_pool = {bn: pool for bn, pool in report.across_pool.items() if bn in folded_bns}
    if report.method == "fx":
        _apply(work, report.folded)
    else:
        _apply_verified(work, report, example_input)
    log.info("%s", report.summary())
    return work, report


def _apply_verified(work: nn.Module, report: FuseReport, example_input: Tensor | None) -> None:
    # The heuristic can be wrong for code it has not seen, so check it on a trial copy first.
    x = example_input if example_input is not None else _example_input(work)
    trial = copy.deepcopy(work)
    with torch.no_grad():
        try:
            ref = work(x)
        except Exception as e:
            raise RuntimeError(
                f"torch.fx could not trace {type(work).__name__} ({report.fx_error}) and the module-order "
                f"heuristic cannot be verified: the model failed on an example input of shape "
                f"{tuple(x.shape)} ({type(e).__name__}: {e}). Pass example_input= with a batch it accepts."
            ) from e
        _apply(trial, report.folded)
        out = trial(x)
    ref_t = ref if isinstance(ref, Tensor) else ref[0]
    out_t = out if isinstance(out, Tensor) else out[0]
    err = (out_t - ref_t).abs().max().item()
    scale = ref_t.abs().max().item() + 1e-12
    tol = 1e-3 if ref_t.dtype in (torch.float32, torch.float64) else 5e-2
    if not err <= tol * scale:
        raise RuntimeError(
            f"torch.fx could not trace {type(work).__name__} ({report.fx_error}) and folding by module "
            f"order changed its output (max abs error {err:.3g}, output scale {scale:.3g}): the "
            "registration order of its layers does not match the order they run in. Make the model "
            "traceable by torch.fx (no Python branching on tensor values in forward) to fold it."
        )
    _apply(work, report.folded)


def fuse_bn(model: nn.Module, inplace: bool = False, *, example_input: Tensor | None = None) -> nn.Module:
    """Return ``model`` with every eval-mode BN that directly follows a Conv/Linear folded into it.

    The folded BNs become ``nn.Identity``; the model keeps its class and methods. BNs that cannot
    be folded (pre-activation order, a conv output shared with a shortcut, no running statistics)
    stay; the report of what was folded is logged at INFO level (use :func:`fuse_bn_with_report`
    to get it as an object).

    Args:
        model: a model in eval mode; a BN in training mode raises ``RuntimeError``.
        inplace: change ``model`` itself instead of a deep copy.
        example_input: see :func:`fuse_bn_with_report`.
    """
    return fuse_bn_with_report(model, inplace, example_input=example_input)[0]
