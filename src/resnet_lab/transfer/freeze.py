"""Freezing for real: no gradient, no optimizer state, no decay, and frozen BatchNorm in eval mode.

Freezing a parameter (``requires_grad=False``) keeps it out of the optimizer and its weight decay
(:func:`resnet_lab.train.param_groups` skips it), but it does not stop a BatchNorm layer from
updating its running mean and variance: the trainer calls ``model.train()`` every epoch, and a BN
layer in training mode normalizes with the batch statistics of the *new* data and drifts its
running averages towards them. The frozen backbone then computes different features at test time
than the ones the head was trained on (the bug most fine-tuning users hit; see the Keras
fine-tuning guide, "BatchNormalization layers ... should be kept in inference mode"). So every
frozen norm layer with running statistics gets an instance-level ``train`` that always means
``eval``: ``model.train()`` reaches it through ``Module.train``'s recursion and leaves it in eval
mode. Nothing is renamed and no hook is stored, so state dicts stay exactly as they were.

The point from which a network trains (``--unfreeze-from``) is a module name; everything
registered from that module on (the parameter order of the zoo is the forward order) trains.
"""

from __future__ import annotations

import types
from dataclasses import dataclass, field
from typing import Iterable

from torch import Tensor, nn

from ..models.registry import count_params

__all__ = [
    "FreezeReport",
    "count_params",
    "default_unfreeze_point",
    "freeze",
    "is_running_norm",
    "params_from",
    "stage_names",
    "unfreeze",
]


@dataclass
class FreezeReport:
    """What :func:`freeze` did.

    Attributes:
        trainable: number of trainable parameter values.
        frozen: number of frozen parameter values.
        eval_norms: names of the norm layers locked in eval mode.
        trainable_names: names of the parameters that train.
    """

    trainable: int
    frozen: int
    eval_norms: list[str] = field(default_factory=list)
    trainable_names: list[str] = field(default_factory=list)


def is_running_norm(module: nn.Module) -> bool:
    """True for a norm layer that keeps running statistics (torch's BN, our scratch BN)."""
    return isinstance(getattr(module, "running_mean", None), Tensor) and isinstance(
        getattr(module, "running_var", None), Tensor
    )


def _eval_only_train(self: nn.Module, mode: bool = True) -> nn.Module:
    # Bound to frozen norm layers in place of Module.train: whatever the parent asks, the layer
    # stays in eval mode, so it normalizes with (and never updates) its pretrained running stats.
    return nn.Module.train(self, False)


def _lock_eval(module: nn.Module) -> None:
    module.train = types.MethodType(_eval_only_train, module)
    nn.Module.train(module, False)


def _unlock(module: nn.Module, mode: bool) -> None:
    if "train" in module.__dict__:
        del module.__dict__["train"]
        nn.Module.train(module, mode)


def freeze(model: nn.Module, trainable: Iterable[str]) -> FreezeReport:
    """Freeze every parameter of ``model`` except those named in ``trainable``.

    Frozen parameters get ``requires_grad=False`` (so the trainer's optimizer never sees them);
    every norm layer with running statistics whose own parameters are all frozen is locked in
    eval mode, even through later ``model.train()`` calls. A norm layer without affine parameters
    is locked when all parameters of the module that holds it are frozen.

    Args:
        model: the model, changed in place.
        trainable: full parameter names (as in ``model.named_parameters()``) that keep training.

    Returns:
        A :class:`FreezeReport`.

    Raises:
        ValueError: a name in ``trainable`` is not a parameter of ``model``.
    """
    if isinstance(trainable, str):  # "fc.weight" was read letter by letter
        raise TypeError(f"trainable must be a list of parameter names, e.g. [{trainable!r}], got the string "
                        f"{trainable!r}")
    keep = set(trainable)
    names = {n for n, _ in model.named_parameters()}
    unknown = sorted(keep - names)
    if unknown:
        raise ValueError(
            f"cannot keep {unknown[:5]} trainable: no such parameter in {type(model).__name__} "
            f"(it has e.g. {sorted(names)[:5]})"
        )
    unfreeze(model, mode=model.training)
    for name, p in model.named_parameters():
        p.requires_grad_(name in keep)
    modules = dict(model.named_modules())
    locked = []
    for mname, m in modules.items():
        if not is_running_norm(m):
            continue
        own = list(m.parameters(recurse=False))
        if own:
            frozen = not any(p.requires_grad for p in own)
        else:
            parent = modules.get(mname.rpartition(".")[0], model)
            frozen = not any(p.requires_grad for p in parent.parameters())
        if frozen:
            _lock_eval(m)
            locked.append(mname)
    n_train, n_frozen = count_params(model)
    return FreezeReport(n_train, n_frozen, locked, [n for n, p in model.named_parameters() if p.requires_grad])


def unfreeze(model: nn.Module, mode: bool | None = None) -> None:
    """Make every parameter trainable and give every locked norm layer its normal ``train`` back.

    Args:
        model: the model, changed in place.
        mode: the train/eval mode the unlocked norm layers take (default: ``model.training``).
    """
    if mode is not None and not isinstance(mode, bool):  # "eval" is truthy: it put the norms in train mode
        raise TypeError(f"mode must be True (train), False (eval) or None (the model's own mode), got {mode!r}")
    mode = model.training if mode is None else mode
    for p in model.parameters():
        p.requires_grad_(True)
    for m in model.modules():
        _unlock(m, mode)


def _has_params(m: nn.Module) -> bool:
    return next(m.parameters(), None) is not None


def _param_leaves(m: nn.Module) -> int:
    """Number of modules under ``m`` (itself included) that hold parameters directly."""
    return sum(1 for sub in m.modules() if next(sub.parameters(recurse=False), None) is not None)


def _classifier_name(model: nn.Module) -> str | None:
    attr = getattr(model, "classifier_attr", None)
    return attr if isinstance(attr, str) and hasattr(model, attr) else None


def stage_names(model: nn.Module) -> list[str]:
    """The modules that ``--unfreeze-from`` may name, in forward order.

    The model's top-level children with parameters, with a ``features`` container (DenseNet, VGG)
    opened up one level; the classifier comes last.
    """
    out = []
    for name, child in model.named_children():
        if not _has_params(child):
            continue
        if name == "features" and isinstance(child, nn.Sequential):
            out += [f"features.{n}" for n, c in child.named_children() if _has_params(c)]
        else:
            out.append(name)
    return out


def default_unfreeze_point(model: nn.Module) -> str:
    """The first module of the last stage: where ``--strategy last`` starts training by default.

    The last stage is the last composite module (one with several parameterized layers:
    ``layer4`` of a ResNet, ``layer3`` of a CIFAR ResNet, ``features.denseblock4`` of a DenseNet,
    ``inception5b`` of GoogLeNet) before the classifier; single layers after it (a final
    BatchNorm) train too, since training follows module order. Models without composite stages
    (VGG's flat ``features``) train from their last convolution.
    """
    head = _classifier_name(model)
    # GoogLeNet's auxiliary classifiers hang off inception4a/4d; they are not a stage.
    candidates = [n for n in stage_names(model) if n != head and not n.startswith("aux")]
    modules = dict(model.named_modules())
    composite = [n for n in candidates if _param_leaves(modules[n]) > 1]
    if composite:
        return composite[-1]
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if convs:
        return convs[-1]
    if head:
        return head
    raise ValueError(f"cannot find a last stage in {type(model).__name__}; pass --unfreeze-from NAME")


def params_from(model: nn.Module, module_name: str) -> list[str]:
    """Names of the parameters registered from module ``module_name`` on (it and all later ones).

    Args:
        model: the model.
        module_name: a module name, e.g. ``layer3``, ``features.denseblock4`` or ``layer4.1``.

    Raises:
        ValueError: no such module, or it has no parameters; the message lists valid names.
    """
    modules = dict(model.named_modules())
    # "" is the model itself in named_modules(): its first parameter was looked up as ".conv1.weight"
    if not module_name or module_name not in modules or not _has_params(modules[module_name]):
        choices = stage_names(model)
        raise ValueError(
            f"--unfreeze-from {module_name!r} is not a module with parameters of {type(model).__name__}; "
            f"expected one of {', '.join(choices)} (or a sub-module such as {choices[-2] if len(choices) > 1 else choices[0]}.0)"
        )
    first = next(n for n, _ in modules[module_name].named_parameters())
    first = f"{module_name}.{first}"
    names = [n for n, _ in model.named_parameters()]
    return names[names.index(first):]
