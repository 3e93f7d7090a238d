"""Gradient flow: the norm of each layer's weight gradient, from input to output.

The tool behind the vanishing-gradient experiment: in a deep plain network without normalization
the gradient norms shrink (or explode) geometrically towards the input (Glorot & Bengio 2010;
He et al. 2016, Sec. 4.1), while identity shortcuts and batch normalization keep them level.
Layers are listed in *forward* order (the order they first run), which for models with branches
(shortcuts, Inception) is the honest notion of "depth", unlike registration order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..figures import check_png_path, new_figure, save_png
from ..models.registry import check_module
from ..train.loop import check_batch, check_label_range

__all__ = ["GradientFlowRecorder", "gradient_norms", "plot_gradient_flow", "weight_layers_in_forward_order"]

# Layers whose weight gradient is tracked: the ones that carry the depth of the network.
WEIGHT_LAYERS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)

LayerNorms = list[tuple[str, float]]


def _track_forward_order(model: nn.Module, layer_types: tuple[type[nn.Module], ...]):
    """Forward hooks that append ``(name, module)`` to a list the first time each layer with a
    weight runs. Returns the list (filled during the next forward pass) and the hook handles."""
    order: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()
    names = {m: n for n, m in model.named_modules() if isinstance(m, layer_types)}

    def hook(m: nn.Module, args, out) -> None:
        # a copy of a hooked layer (an EMA's deepcopy of the model carries the hooks) is not this model's
        if m in names and id(m) not in seen and getattr(m, "weight", None) is not None:
            seen.add(id(m))
            order.append((names[m], m))

    return order, [m.register_forward_hook(hook) for m in names]


def weight_layers_in_forward_order(
    model: nn.Module,
    x: Tensor,
    layer_types: tuple[type[nn.Module], ...] = WEIGHT_LAYERS,
) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs of ``layer_types`` in the order a forward pass of ``x`` first
    calls them; layers that never run are left out.

    Args:
        model: the network (its mode is left as it is; in training mode the pass runs as training
            runs it, aux heads included, and the BN running statistics it moves are put back).
        x: a batch to run (under ``no_grad``).
        layer_types: module classes to list.
    """
    order, handles = _track_forward_order(model, layer_types)
    buffers = {name: b.clone() for name, b in model.named_buffers()}  # BN running statistics, batch counts
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        with torch.no_grad():
            for name, b in model.named_buffers():
                if name in buffers:
                    b.copy_(buffers[name])
    return order


def gradient_norms(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    layer_types: tuple[type[nn.Module], ...] = WEIGHT_LAYERS,
) -> LayerNorms:
    """L2 norm of ``d loss / d weight`` for each conv/linear layer, in forward order.

    One forward and one backward pass; the gradients come from :func:`torch.autograd.grad`, so the
    model's ``.grad`` fields are not touched. The model runs in its current mode: call
    ``model.train()`` first to see the gradients training sees (BN with batch statistics); that
    forward pass is a real one, so in training mode it also moves BN's running statistics by one
    batch, as a training step would.

    Args:
        model: the network.
        x: input batch.
        y: targets for ``loss_fn``.
        loss_fn: ``loss_fn(model(x), y)`` -> scalar loss; cross-entropy by default (of the main
            logits, for a model whose training output also carries aux logits).
        layer_types: module classes whose ``weight`` is measured.
    """
    if not torch.is_grad_enabled():
        raise RuntimeError("gradient_norms needs autograd, but it is off here (torch.no_grad() or "
                           "torch.inference_mode()): call it outside that block")
    check_module(model, "gradient_norms")
    classes = loss_fn is F.cross_entropy  # class-index targets; another loss decides what its targets are
    if classes:
        x, y = check_batch((x, y), model, "gradient_norms")
        y = y.long()
    order, handles = _track_forward_order(model, layer_types)
    try:
        out = model(x)
        # GoogLeNet with aux heads in training mode returns (logits, aux2, aux1): the main
        # classifier's loss, unless the caller's loss_fn takes the whole output.
        logits = out.logits if classes and hasattr(out, "logits") else out
        if classes:
            check_label_range(y, logits.shape[-1], f"a model with {logits.shape[-1]} outputs")
        loss = loss_fn(logits, y)
    finally:
        for h in handles:
            h.remove()
    if not order:
        raise ValueError(
            f"no layer of type {', '.join(t.__name__ for t in layer_types)} ran in the forward "
            f"pass of {type(model).__name__}; pass layer_types= to choose which layers to measure"
        )
    # Frozen layers (transfer learning) have no gradient: they report 0, as in the recorder.
    trainable = [m.weight for _, m in order if m.weight.requires_grad]
    grads = iter(torch.autograd.grad(loss, trainable, allow_unused=True) if trainable else [])
    out: LayerNorms = []
    for name, m in order:
        g = next(grads) if m.weight.requires_grad else None
        out.append((name, 0.0 if g is None else float(g.detach().norm())))
    return out


class GradientFlowRecorder:
    """Record per-layer weight-gradient norms over training steps.

    Call :meth:`record` after each ``loss.backward()`` (before ``optimizer.zero_grad()``); each call
    appends one step. Layers are in forward order, found from hooks during the first forward pass
    after construction (so construct the recorder before the first training step).

    Example::

        rec = GradientFlowRecorder(model)
        for step, (x, y) in enumerate(loader):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(); loss.backward()
            rec.record(step)
            opt.step()
        plot_gradient_flow({"step 0": rec.norms(0), "last": rec.norms(-1)}, "flow.png")

    Args:
        model: the network being trained.
        layer_types: module classes whose ``weight.grad`` is recorded.
    """

    def __init__(self, model: nn.Module, layer_types: tuple[type[nn.Module], ...] = WEIGHT_LAYERS) -> None:
        check_module(model, "GradientFlowRecorder")
        self.model = model
        self.layer_types = layer_types
        self.steps: list[int] = []
        self.history: list[list[float]] = []  # history[i][j]: step i, layer j (forward order)
        self._order, self._handles = _track_forward_order(model, layer_types)

    @property
    def layer_names(self) -> list[str]:
        """Tracked layer names in forward order."""
        return [n for n, _ in self._order]

    def record(self, step: int | None = None) -> LayerNorms:
        """Store the current ``weight.grad`` norm of every tracked layer (0 where it has none).

        Args:
            step: the training step to label this record with; default: the number of records so far.
        """
        if not self._order:
            raise RuntimeError(
                "GradientFlowRecorder has seen no forward pass of a tracked layer; create it before "
                "the first forward pass and call record() after loss.backward()"
            )
        # The hooks stay only until the layer order is known: one full forward pass suffices.
        self._detach_hooks()
        norms = [0.0 if m.weight.grad is None else float(m.weight.grad.detach().norm()) for _, m in self._order]
        self.steps.append(len(self.steps) if step is None else int(step))
        self.history.append(norms)
        return list(zip(self.layer_names, norms))

    def norms(self, index: int = -1) -> LayerNorms:
        """``(layer, norm)`` pairs of one record (``index`` into the records, -1 = the last)."""
        if not self.history:
            raise ValueError("GradientFlowRecorder has no record yet: call record() after loss.backward()")
        if not -len(self.history) <= index < len(self.history):
            raise IndexError(f"record {index} asked, but there are {len(self.history)} (0..{len(self.history) - 1})")
        return list(zip(self.layer_names, self.history[index]))

    def _detach_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def close(self) -> None:
        """Remove the forward hooks (done automatically at the first :meth:`record`)."""
        self._detach_hooks()


def plot_gradient_flow(
    records: Mapping[str, Sequence[tuple[str, float]]] | Sequence[tuple[str, float]],
    path: str | Path,
    title: str = "Gradient flow",
) -> Path:
    """Draw per-layer weight-gradient norms (log scale) against layer depth, one curve per entry.

    Args:
        records: ``{label: [(layer_name, norm), ...]}`` (e.g. ``"init"`` and ``"after 100 steps"``,
            or one entry per model), or a single ``[(layer_name, norm), ...]`` list.
            Every curve needs a layer: an empty one is refused, naming its label.
        path: where to write the PNG (a name ending in ``.png``; another suffix is refused).
        title: the figure title.

    Returns the path written. Curves of different lengths share the axis "layer index (input ->
    output)"; layer names label the ticks when all curves have the same layers.
    """
    if not isinstance(records, Mapping):
        records = {"": records}
    empty = [label for label, curve in records.items() if len(curve) == 0]
    if len(empty) == len(records):  # no records, or none with a layer
        raise ValueError("records must hold at least one non-empty [(layer_name, norm), ...] curve")
    if empty:  # the message above would be false here: another curve has layers
        raise ValueError(f"curve {empty[0]!r} of the records is empty: leave it out, or give its "
                         "[(layer_name, norm), ...]")
    path = check_png_path(path)
    fig, ax = new_figure(figsize=(10, 5))
    for label, curve in records.items():
        # Zero norms (unused layers) cannot go on a log axis; show them as gaps.
        ys = [v if v > 0 else float("nan") for _, v in curve]
        ax.plot(range(len(ys)), ys, marker="o", markersize=3, label=label or None)
    ax.set_yscale("log")
    ax.set_xlabel("layer (forward order: input -> output)")
    ax.set_ylabel("||dL/dW||")
    ax.set_title(title)
    curves = list(records.values())
    same_layers = all([n for n, _ in c] == [n for n, _ in curves[0]] for c in curves)
    if same_layers and len(curves[0]) <= 60:
        ax.set_xticks(range(len(curves[0])))
        ax.set_xticklabels([n for n, _ in curves[0]], rotation=90, fontsize=7)
    if any(records.keys()):
        ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    return save_png(fig, path, dpi=100)
