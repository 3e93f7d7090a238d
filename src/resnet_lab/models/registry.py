"""Model registry: ``create_model(name, ...)`` and ``list_models(pattern)``."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from typing import Callable

from torch import nn

from ..nn.norm import check_norm

__all__ = ["create_model", "list_models", "register_model", "model_family", "is_model"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}
_FAMILY: dict[str, str] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, *, family: str | None = None):
    """Decorator that registers a builder under its function name.

    A builder takes keyword arguments ``num_classes``, ``in_channels``, ``small_input``, ``norm``
    and its own extras, and returns a :class:`~resnet_lab.models.layers.ClassifierModel`.
    """
    def wrap(f):
        if f.__name__ in _MODELS:
            raise ValueError(f"model {f.__name__!r} is registered twice")
        _MODELS[f.__name__] = f
        _FAMILY[f.__name__] = family or f.__module__.rsplit(".", 1)[-1]
        return f

    return wrap(fn) if fn is not None else wrap


def _ensure_loaded() -> None:
    # Importing the family modules runs their @register_model decorators.
    from . import densenet, googlenet, resnet, vgg  # noqa: F401


def list_models(pattern: str | None = None) -> list[str]:
    """Registered model names, sorted, optionally filtered by a shell-style pattern (``resnet*``)."""
    _ensure_loaded()
    names = sorted(_MODELS, key=_natural_key)
    if pattern:
        pat = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
        names = [n for n in names if fnmatch.fnmatch(n, pat)]
    return names


def _natural_key(name: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def is_model(name: str) -> bool:
    _ensure_loaded()
    return name in _MODELS


def model_family(name: str) -> str:
    _ensure_loaded()
    return _FAMILY[_lookup(name).__name__]


def _lookup(name: str) -> Callable[..., nn.Module]:
    _ensure_loaded()
    if name in _MODELS:
        return _MODELS[name]
    close = difflib.get_close_matches(name, _MODELS.keys(), n=5, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"unknown model {name!r}.{hint} `resnet-lab models` (or resnet_lab.list_models()) lists all "
        f"{len(_MODELS)} names."
    )


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    small_input: bool = False,
    norm: str = "batch",
    **kwargs,
) -> nn.Module:
    """Build a registered model.

    Args:
        name: a name from :func:`list_models` (``resnet18``, ``resnet56``, ``densenet121``...).
        num_classes: outputs of the classifier.
        in_channels: 1 for grayscale, 3 for RGB.
        small_input: for 28-32 px images: 3x3 stride-1 stem without max-pool (ImageNet families;
            the CIFAR families are small-input by construction).
        norm: ``batch`` (torch BN), ``scratch`` (our BN), ``group`` (GroupNorm) or ``none``.
        **kwargs: extras of the family (``zero_init_residual``, ``drop_rate``...).

    The returned model carries ``model.model_config``: the name and arguments that rebuild it
    (what a run's ``model.json`` stores).
    """
    builder = _lookup(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if not isinstance(in_channels, int) or isinstance(in_channels, bool) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int (1 grayscale, 3 RGB), got {in_channels!r}")
    check_norm(norm)
    params = inspect.signature(builder).parameters
    accepts_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not accepts_var_kw:
        unknown = [k for k in kwargs if k not in params]
        if unknown:
            extras = sorted(k for k in params if k not in ("num_classes", "in_channels", "small_input", "norm"))
            raise TypeError(
                f"{name} got unexpected argument(s) {', '.join(map(repr, unknown))}; "
                f"it accepts num_classes, in_channels, small_input, norm"
                + (f" and {', '.join(extras)}" if extras else "")
            )
    model = builder(num_classes=num_classes, in_channels=in_channels, small_input=small_input, norm=norm, **kwargs)
    model.model_config = {
        "name": name,
        "num_classes": num_classes,
        "in_channels": in_channels,
        "small_input": small_input,
        "norm": norm,
        **kwargs,
    }
    return model
