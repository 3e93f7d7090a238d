"""Heads: find the final Linear of a classifier, stack a new Linear on it, fold it back.

``--strategy head`` keeps the pretrained classifier exactly as it is and appends one new fully
connected layer (old classes -> new classes) on its output. The stacked layer lives *inside* the
old Linear's module (:class:`~resnet_lab.models.LinearWithHead`, a model layer), so every existing
state-dict key keeps its name (``fc.weight``, ``fc.bias``) and the new layer adds two
(``fc.head_weight``, ``fc.head_bias``). :func:`add_head` records it in ``model.model_config`` as
``stacked_head``, so a run's ``arch`` rebuilds it through ``create_model``.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..models import LinearWithHead, is_model, model_info, stack_head

__all__ = [
    "LinearWithHead",
    "add_head",
    "classifier_linear_name",
    "fold_head",
    "head_param_names",
]


def classifier_linear_name(model: nn.Module) -> str:
    """Module name of the classifier's final ``nn.Linear`` (``fc``, ``classifier``, ``classifier.6``).

    A model from :func:`~resnet_lab.models.create_model` names it in its registry entry
    (``model_info(name).classifier``); any other model with a ``get_classifier()`` is searched.

    Raises:
        ValueError: the model has no ``get_classifier`` with a Linear in it.
    """
    name = (getattr(model, "model_config", None) or {}).get("name")
    if isinstance(name, str) and is_model(name):
        return model_info(name).classifier
    get = getattr(model, "get_classifier", None)
    if get is None:
        raise ValueError(f"{type(model).__name__} has no get_classifier(): build it with resnet_lab.create_model")
    classifier = get()
    linears = [m for m in classifier.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"the classifier of {type(model).__name__} ({type(classifier).__name__}) has no Linear layer")
    last = linears[-1]
    for module_name, m in model.named_modules():
        if m is last:
            return module_name
    raise ValueError("the classifier's Linear is not a sub-module of the model")


def add_head(model: nn.Module, new_classes: int) -> str:
    """Stack a fresh ``Linear(old_classes, new_classes)`` on the model's classifier, in place.

    ``model.model_config`` (if the model has one) records it as ``stacked_head``, so the saved
    ``arch`` rebuilds the model with the head: ``create_model(**arch)``.

    Args:
        model: a zoo model; its classifier's final Linear keeps its weights.
        new_classes: outputs of the new layer.

    Returns:
        The module name of the (now :class:`LinearWithHead`) classifier Linear.
    """
    name = classifier_linear_name(model)
    stack_head(model, name, new_classes)
    config = getattr(model, "model_config", None)
    if config is not None:
        model.model_config = {**config, "stacked_head": new_classes}
    return name


def head_param_names(model: nn.Module) -> list[str]:
    """Full names of the stacked head's parameters (the only ones ``--strategy head`` trains)."""
    name = classifier_linear_name(model)
    if not isinstance(model.get_submodule(name), LinearWithHead):
        raise ValueError(f"{name} has no stacked head: call add_head first")
    return [f"{name}.head_weight", f"{name}.head_bias"]


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
