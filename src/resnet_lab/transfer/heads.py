"""Heads: find the final Linear of a classifier, stack a new Linear on it, re-create it.

``--strategy head`` keeps the pretrained classifier exactly as it is and appends one new fully
connected layer (old classes -> new classes) on its output. The stacked layer lives *inside* the
old Linear's module (:class:`LinearWithHead`, a subclass of ``nn.Linear``), so every existing
state-dict key keeps its name (``fc.weight``, ``fc.bias``) and the new layer adds two
(``fc.head_weight``, ``fc.head_bias``). A run's ``model.json`` records the stacked head under
``transfer.head``; :func:`restore_head` rebuilds it so ``load_model`` reads the weights back.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LinearWithHead",
    "add_head",
    "classifier_linear_name",
    "fold_head",
    "head_param_names",
    "restore_head",
]


class LinearWithHead(nn.Linear):
    """A pretrained Linear with a new Linear stacked on its output: ``head(linear(x))``.

    ``weight`` and ``bias`` are the old layer's (same names, same shapes); ``head_weight``
    (new_classes, old_classes) and ``head_bias`` (new_classes) are the new layer's.

    Args:
        in_features: input width of the old layer.
        out_features: the old class count.
        new_classes: outputs of the stacked layer.
        bias: whether the old layer has a bias (the new one always has).
    """

    def __init__(self, in_features: int, out_features: int, new_classes: int, bias: bool = True,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if not isinstance(new_classes, int) or new_classes < 1:
            raise ValueError(f"new_classes must be a positive int, got {new_classes!r}")
        # nn.Linear's own initialization (Kaiming-uniform weight, fan-in bias), as a fresh head gets.
        fresh = nn.Linear(out_features, new_classes, device=device, dtype=dtype)
        self.head_weight = nn.Parameter(fresh.weight.detach())
        self.head_bias = nn.Parameter(fresh.bias.detach())
        self.new_classes = new_classes

    @classmethod
    def from_linear(cls, linear: nn.Linear, new_classes: int) -> "LinearWithHead":
        """Wrap a trained ``linear`` (its weights are copied, not shared) with a fresh head."""
        out = cls(linear.in_features, linear.out_features, new_classes, bias=linear.bias is not None,
                  device=linear.weight.device, dtype=linear.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(linear.weight)
            if linear.bias is not None:
                out.bias.copy_(linear.bias)
        return out

    def forward(self, x: Tensor) -> Tensor:  # (B, in) -> (B, old) -> (B, new)
        return F.linear(super().forward(x), self.head_weight, self.head_bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, new_classes={self.new_classes}"


def classifier_linear_name(model: nn.Module) -> str:
    """Module name of the classifier's final ``nn.Linear`` (``fc``, ``classifier``, ``classifier.6``).

    Raises:
        ValueError: the model has no ``get_classifier`` with a Linear in it.
    """
    get = getattr(model, "get_classifier", None)
    if get is None:
        raise ValueError(f"{type(model).__name__} has no get_classifier(): build it with resnet_lab.create_model")
    classifier = get()
    linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"the classifier of {type(model).__name__} ({type(classifier).__name__}) has no Linear layer")
    last = linears[-1]
    for name, m in model.named_modules():
        if m is last:
            return name
    raise ValueError("the classifier's Linear is not a sub-module of the model")


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attr, module)


def add_head(model: nn.Module, new_classes: int) -> str:
    """Stack a fresh ``Linear(old_classes, new_classes)`` on the model's classifier, in place.

    Args:
        model: a zoo model; its classifier's final Linear keeps its weights.
        new_classes: outputs of the new layer.

    Returns:
        The module name of the (now :class:`LinearWithHead`) classifier Linear.
    """
    name = classifier_linear_name(model)
    old = model.get_submodule(name)
    if isinstance(old, LinearWithHead):
        raise ValueError(f"{name} already has a stacked head ({old.new_classes} classes); fold it first (fold_head)")
    _set_module(model, name, LinearWithHead.from_linear(old, new_classes))
    model.num_classes = new_classes
    return name


def head_param_names(model: nn.Module) -> list[str]:
    """Full names of the stacked head's parameters (the only ones ``--strategy head`` trains)."""
    name = classifier_linear_name(model)
    if not isinstance(model.get_submodule(name), LinearWithHead):
        raise ValueError(f"{name} has no stacked head: call add_head first")
    return [f"{name}.head_weight", f"{name}.head_bias"]


def restore_head(model: nn.Module, meta: dict[str, Any]) -> nn.Module:
    """Re-create the stacked head that a run's ``model.json`` records (``transfer.head``).

    Called by ``load_model`` between ``create_model`` and ``load_state_dict``; a model.json
    without that entry leaves the model unchanged.

    Args:
        model: the model built from ``meta["arch"]``.
        meta: the run's model.json contents.
    """
    head = (meta.get("transfer") or {}).get("head")
    if head:
        add_head(model, int(head["num_classes"]))
    return model


def fold_head(state_dict: dict[str, Tensor], name: str) -> dict[str, Tensor]:
    """Merge a stacked head into one Linear: ``W = Wh @ W0``, ``b = Wh @ b0 + bh`` (exact, both
    are affine), so a head-transferred model can be the source of a further transfer.

    Args:
        state_dict: weights holding ``{name}.weight``, ``{name}.bias``, ``{name}.head_weight``,
            ``{name}.head_bias``.
        name: the classifier Linear's module name.
    """
    sd = dict(state_dict)
    w0, wh, bh = sd[f"{name}.weight"], sd.pop(f"{name}.head_weight"), sd.pop(f"{name}.head_bias")
    b0 = sd.get(f"{name}.bias")
    w = (wh.double() @ w0.double()).to(w0.dtype)
    b = bh.double() + (wh.double() @ b0.double() if b0 is not None else 0)
    sd[f"{name}.weight"] = w
    sd[f"{name}.bias"] = b.to(bh.dtype)
    return sd
