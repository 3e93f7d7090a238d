"""Optimizers with sensible parameter groups, and learning-rate schedules as per-step lambdas."""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch
from torch import nn

from ..nn.norm import NORM_LAYERS

__all__ = ["NORM_LAYERS", "SCHEDULES", "OPTIMIZERS", "build_optimizer", "build_scheduler", "norm_parameters",
           "param_groups", "schedule_fn", "warmup_steps"]

SCHEDULES = ("cosine", "onecycle", "step", "constant")
OPTIMIZERS = ("sgd", "adamw")

# NORM_LAYERS (from resnet_lab.nn.norm): the layers whose weights and biases norm_lr_scale scales.


def norm_parameters(model: nn.Module) -> set[int]:
    """The ``id`` of every parameter of a normalization layer (:data:`NORM_LAYERS`) in ``model``."""
    return {id(p) for m in model.modules() if isinstance(m, NORM_LAYERS) for p in m.parameters(recurse=False)}


def param_groups(model: nn.Module, weight_decay: float, lr_scale: dict[str, float] | None = None,
                 norm_lr_scale: float = 1.0) -> list[dict]:
    """Split trainable parameters into decayed and non-decayed groups.

    Only tensors with 2+ dimensions (conv and linear weights) get weight decay; norm weights,
    norm biases and layer biases do not (decaying BN's gamma fights the normalization; see
    Goyal et al. 2017 and nanoGPT). Frozen parameters (``requires_grad=False``) are left out
    entirely: no gradient, no optimizer state, no decay.

    Args:
        model: the model.
        weight_decay: decay for the >=2-D tensors.
        lr_scale: optional ``{name_prefix: factor}`` for discriminative learning rates; the
            longest matching prefix wins, unmatched parameters get factor 1.
        norm_lr_scale: a further factor for the normalization layers' weights and biases
            (airbench and hlb-CIFAR10 train BN's biases at a much higher rate than the convs).
    """
    lr_scale = lr_scale or {}
    names = [name for name, _ in model.named_parameters()]
    unmatched = [k for k in lr_scale if not any(name.startswith(k) for name in names)]
    if unmatched:  # a typo ("layr3.") would silently train that part at the full rate
        tops = sorted({name.split(".")[0] for name in names})
        raise ValueError(f"lr_scale prefix {unmatched[0]!r} matches no parameter of the model; its parameters "
                         f"start with: {', '.join(tops)}")
    norm_ids = norm_parameters(model) if norm_lr_scale != 1.0 else set()
    if norm_lr_scale != 1.0 and not any(id(p) in norm_ids for p in model.parameters() if p.requires_grad):
        # scaling nothing would silently train exactly as without the option
        raise ValueError(f"norm_lr_scale (--norm-lr-scale) {norm_lr_scale:g} matches no parameter of the model: "
                         f"no trainable parameter belongs to a normalization layer ({'none has one' if not norm_ids else 'they are frozen'}); "
                         f"leave it out")
    groups: dict[tuple[float, bool], list[nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        matches = [k for k in lr_scale if name.startswith(k)]
        scale = lr_scale[max(matches, key=len)] if matches else 1.0
        if id(p) in norm_ids:
            scale *= norm_lr_scale
        groups.setdefault((scale, p.ndim >= 2), []).append(p)
    out = []
    for (scale, decay), params in sorted(groups.items(), key=lambda kv: (-kv[0][0], not kv[0][1])):
        out.append({"params": params, "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale})
    if not out:
        raise ValueError("the model has no trainable parameters (everything is frozen): unfreeze the layers to train "
                         "(requires_grad_(True)) before building the optimizer")
    return out


def build_optimizer(
    model: nn.Module,
    name: str = "sgd",
    lr: float = 0.1,
    momentum: float = 0.9,
    nesterov: bool = True,
    weight_decay: float = 5e-4,
    lr_scale: dict[str, float] | None = None,
    norm_lr_scale: float = 1.0,
) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or AdamW over :func:`param_groups`."""
    groups = param_groups(model, weight_decay, lr_scale, norm_lr_scale)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}: expected one of {', '.join(OPTIMIZERS)}")


def schedule_fn(name: str, total_steps: int, warmup_steps: int = 0, milestones: Iterable[float] = (0.5, 0.75), gamma: float = 0.1) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at optimizer step ``t`` (0-based).

    * ``cosine``: linear warmup then half-cosine to 0 (Loshchilov & Hutter 2017).
    * ``onecycle``: linear ramp up over ``warmup_steps`` (default 25% of training) and linear
      decay to 0 (Smith & Topin 2019, the linear variant that airbench uses).
    * ``step``: the ResNet paper's schedule: divide by 10 at 50% and 75% of training (He et al.
      2015 drop at 32k and 48k of 64k iterations), with optional warmup.
    * ``constant``: warmup then flat.
    """
    if name not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r}: expected one of {', '.join(SCHEDULES)}")
    total_steps = max(1, total_steps)
    if name == "onecycle" and warmup_steps <= 0:
        warmup_steps = max(1, int(0.25 * total_steps))
    marks = sorted(int(m * total_steps) for m in milestones)

    def f(t: int) -> float:
        if warmup_steps > 0 and t < warmup_steps:
            return (t + 1) / warmup_steps
        if name == "constant":
            return 1.0
        if name == "step":
            return gamma ** sum(t >= m for m in marks)
        progress = (t - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        if name == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        return 1.0 - progress  # onecycle

    return f


def warmup_steps(warmup_epochs: float, steps_per_epoch: int) -> int:
    """The steps of ``warmup_epochs``, whole steps rounded down (a resumed run recomputes them: the
    same count every time): at least one when it is set at all, so a warmup shorter than a step is
    not read as 0 (which onecycle takes as its default 25%). The product is rounded to 6 decimals
    first: 0.29 epochs of 100 steps is 28.999999999999996 in floating point, and meant 29."""
    steps = math.floor(round(warmup_epochs * steps_per_epoch, 6))
    return max(steps, 1) if warmup_epochs > 0 else 0


def build_scheduler(optimizer: torch.optim.Optimizer, name: str, total_steps: int, warmup_steps: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` (call ``step()`` after every optimizer step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_fn(name, total_steps, warmup_steps))
