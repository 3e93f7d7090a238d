"""Weight averaging during training: an exponential moving average of the weights (EMA) and
lookahead's slow weights, both updated after every optimizer step and saved for exact resume.

* :class:`WeightEma` (Polyak averaging as timm's ``ModelEmaV3`` and airbench keep it): a copy of the
  model whose floating-point tensors follow ``ema <- d * ema + (1 - d) * raw`` after every step.
* :class:`Lookahead` (Zhang et al. 2019, "Lookahead Optimizer: k steps forward, 1 step back"): every
  ``k`` optimizer steps, ``slow <- slow + alpha * (fast - slow)`` and the fast weights restart there.
* :class:`WeightAveraging`: what a training run holds of the two (either, both or neither).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["Lookahead", "WeightAveraging", "WeightEma", "ema_decay"]


def ema_decay(decay: float, updates: int) -> float:
    """The decay of update number ``updates`` (0-based): ``min(decay, (1 + t) / (10 + t))``.

    The warm-up of TensorFlow's ``ExponentialMovingAverage(num_updates=...)`` (also timm's
    ``ModelEmaV3`` option): without it the average of a short run stays stuck near the random
    initial weights (at 0.999 they still weigh e^-1 after 1000 steps); with it the first updates
    follow the raw weights closely and the full decay is reached after ``(10 d - 1) / (1 - d)``
    updates (890 at 0.99, 8990 at 0.999).
    """
    return min(decay, (1 + updates) / (10 + updates))


class WeightEma:
    """An exponential moving average of ``model``'s weights, kept in a frozen copy of the model.

    Floating-point buffers (BN's ``running_mean``/``running_var``) are averaged like the weights,
    as timm's ``ModelEmaV2``/``V3`` and airbench do: BN statistics are measured with the raw
    weights, which move every step, so the average of the statistics over the same window is
    the better match for the averaged weights (copying them would pair the weights of the last
    hundreds of steps with the statistics of the last few dozen batches). Integer buffers
    (``num_batches_tracked``) are copied: a count has no average.

    Args:
        model: the model being trained (its current weights start the average).
        decay: the decay per optimizer step, in [0, 1); see :func:`ema_decay` for the warm-up.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = copy.deepcopy(model).requires_grad_(False)
        self.decay = decay
        self.updates = 0
        self.source = model

    @torch.no_grad()
    def update(self) -> None:
        """Move the average toward the model's current weights (call after each optimizer step)."""
        weight = 1 - ema_decay(self.decay, self.updates)
        # state_dict() gives detached views of the tensors: updating the copy's views updates the copy.
        # Taken anew each time, in case a layer replaced a buffer instead of updating it in place.
        averaged, raw = self.model.state_dict(), self.source.state_dict()
        floats = [k for k, v in raw.items() if v.is_floating_point()]
        if floats:  # one kernel per dtype and device, not one per tensor (as timm's ModelEmaV3)
            torch._foreach_lerp_([averaged[k] for k in floats], [raw[k] for k in floats], weight)
        for k, v in raw.items():
            if not v.is_floating_point():
                averaged[k].copy_(v)
        self.updates += 1


class Lookahead:
    """Lookahead's slow weights over ``model``'s parameters.

    Only parameters take part, as in the paper, where lookahead wraps the optimizer (which sees
    parameters only): BN running statistics stay with the fast network, which keeps measuring them
    batch by batch. The inner optimizer's state (momentum) is kept across a synchronization, the
    paper's default.

    Args:
        model: the model being trained (its current weights are the first slow weights).
        k: fast steps per slow update (>= 1).
        alpha: the slow weights' step toward the fast ones, in (0, 1) (1 is the plain optimizer).
    """

    def __init__(self, model: nn.Module, k: int, alpha: float) -> None:
        # Every parameter, frozen ones too: a frozen one never moves, so its sync changes nothing,
        # and one unfrozen later (finetune --freeze-epochs) is still covered.
        self.params = dict(model.named_parameters())
        self.slow = {name: p.detach().clone() for name, p in self.params.items()}
        self.k, self.alpha = k, alpha
        self.steps = 0

    @torch.no_grad()
    def step(self) -> None:
        """Count one fast step; every ``k``-th, move the slow weights and restart the fast ones there."""
        self.steps += 1
        if self.steps % self.k:
            return
        fast, slow = list(self.params.values()), [self.slow[name] for name in self.params]
        torch._foreach_lerp_(slow, fast, self.alpha)  # slow + alpha (fast - slow); exactly fast at alpha = 1
        torch._foreach_copy_(fast, slow)


def _cpu(tensors: dict[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}


class WeightAveraging:
    """The weight averages of one training run, as its :class:`TrainConfig` asks.

    Args:
        model: the (unwrapped) model being trained.
        ema: the EMA's decay per step (0: no EMA).
        lookahead: lookahead's ``k`` (0: no lookahead).
        lookahead_alpha: lookahead's ``alpha``.
    """

    def __init__(self, model: nn.Module, *, ema: float = 0.0, lookahead: int = 0, lookahead_alpha: float = 0.5) -> None:
        self.model = model
        # Lookahead first: the EMA then averages the weights the next step starts from.
        self.lookahead = Lookahead(model, lookahead, lookahead_alpha) if lookahead else None
        self.ema = WeightEma(model, ema) if ema else None

    def after_step(self) -> None:
        """Update the averages after an optimizer step."""
        if self.lookahead is not None:
            self.lookahead.step()
        if self.ema is not None:
            self.ema.update()

    @property
    def reported(self) -> nn.Module:
        """The model that is evaluated and saved as ``model.safetensors``: the EMA when on."""
        return self.ema.model if self.ema is not None else self.model

    @torch.no_grad()
    def finish(self) -> None:
        """At the end of training, leave the caller's model holding the reported weights (the EMA),
        as ``model.safetensors`` does; a run without ``--out`` would lose them otherwise."""
        if self.ema is not None:
            self.model.load_state_dict(self.ema.model.state_dict())

    def state_dict(self) -> dict[str, Any]:
        """What ``train_state.pt`` needs beyond ``model.safetensors`` to resume exactly: with an
        EMA (which is what ``model.safetensors`` then holds) the raw weights; lookahead's slow
        weights and both step counts."""
        state: dict[str, Any] = {}
        if self.ema is not None:
            state["ema_updates"] = self.ema.updates
            state["raw"] = _cpu(self.model.state_dict())
        if self.lookahead is not None:
            state["lookahead_steps"] = self.lookahead.steps
            state["slow"] = _cpu(self.lookahead.slow)
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s output (after ``model.safetensors`` went into :attr:`reported`)."""
        needed = [k for k, on in (("raw", self.ema), ("slow", self.lookahead)) if on is not None and k not in state]
        if needed:
            raise ValueError(f"the checkpoint holds no {' or '.join(needed)} weights (it was saved without "
                             "ema / lookahead); resume with the options the run was started with")
        if self.ema is not None:
            self.model.load_state_dict(state["raw"])
            self.ema.updates = int(state["ema_updates"])
        if self.lookahead is not None:
            for name, slow in self.lookahead.slow.items():
                slow.copy_(state["slow"][name])
            self.lookahead.steps = int(state["lookahead_steps"])
