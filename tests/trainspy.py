"""Test support: watch what the CLI hands to the library and what the trainer then does.

:class:`TrainSpy` replaces ``resnet_lab.train.train`` (under every name a resnet_lab module
holds it by, so it keeps working whether a caller imports it at the top or inside a function)
with a wrapper that records each call: the model, the data and the config it got, and, while the
real trainer runs, the training inputs and outputs, the per-step callbacks' records and, for
every optimizer step, the learning rates, the parameters before and after and their gradients
(as the optimizer sees them and, optionally, as backward produced them, before any clipping).
:func:`patch_everywhere` does the same replacement for any other library function.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import pytest
import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

import resnet_lab.train as rl_train


def patch_everywhere(monkeypatch: pytest.MonkeyPatch, real: Callable, replacement: Callable) -> None:
    """Replace ``real`` by ``replacement`` in every loaded ``resnet_lab`` module that holds it."""
    name = real.__name__
    for mod_name, mod in list(sys.modules.items()):
        if mod_name.startswith("resnet_lab") and mod is not None and getattr(mod, name, None) is real:
            monkeypatch.setattr(mod, name, replacement)


@dataclass
class Step:
    """One optimizer step: learning rate of each param group, and per parameter (in the order
    of ``TrainCall.params``) its value before and after the step and its gradient at the step."""

    lrs: list[float]
    before: list[Tensor]
    grads: list[Tensor | None]
    raw_grads: list[Tensor | None] = field(default_factory=list)
    after: list[Tensor] = field(default_factory=list)


@dataclass
class TrainCall:
    """What one ``train(model, data, config)`` call received and did."""

    model: nn.Module
    data: Any
    config: Any
    initial_state: dict[str, Tensor]
    params: list[nn.Parameter] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None
    steps: list[Step] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)  # what step callbacks got
    inputs: list[Tensor] = field(default_factory=list)  # training-mode forward inputs
    outputs: list[Tensor] = field(default_factory=list)  # training-mode forward outputs
    labels: list[Tensor | None] = field(default_factory=list)  # each step's labels (in-memory loaders)
    deterministic_during: list[bool] = field(default_factory=list)
    saved_bytes: list[int] = field(default_factory=list)  # kept for backward, per training forward
    history: Any = None

    def group_of(self, p: Tensor) -> dict:
        assert self.optimizer is not None
        return next(g for g in self.optimizer.param_groups if any(q is p for q in g["params"]))


class TrainSpy:
    """Record every ``resnet_lab.train.train`` call.

    Args:
        monkeypatch: pytest's fixture (the replacement is undone after the test).
        run: call the real trainer (False: return an empty History at once; for tests of what
            the trainer is given).
        raw_grads: also record each parameter's gradient as backward produced it.
        saved_bytes: also count the bytes autograd saves for backward in each training forward.
        step_callbacks: extra per-step callbacks to pass to the trainer.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *, run: bool = True, raw_grads: bool = False,
                 saved_bytes: bool = False, step_callbacks: tuple[Callable[[dict], None], ...] = ()) -> None:
        self.real = rl_train.train
        self.run, self.raw_grads, self.saved_bytes, self.extra_callbacks = run, raw_grads, saved_bytes, step_callbacks
        self.calls: list[TrainCall] = []
        patch_everywhere(monkeypatch, self.real, self._train)

    @property
    def last(self) -> TrainCall:
        assert self.calls, "train() was not called"
        return self.calls[-1]

    def _train(self, model, data, config, **kw):
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        call = TrainCall(model, data, config, {k: v.detach().clone() for k, v in model.state_dict().items()},
                         params=[p for _, p in named], names=[n for n, _ in named])
        self.calls.append(call)
        if not self.run:
            return rl_train.History()
        raw: dict[int, Tensor] = {}

        def pre_step(opt, args, kwargs):
            if call.optimizer is None:
                call.optimizer = opt
            if opt is not call.optimizer:
                return
            call.steps.append(Step(
                lrs=[g["lr"] for g in opt.param_groups],
                before=[p.detach().clone() for p in call.params],
                grads=[None if p.grad is None else p.grad.detach().clone() for p in call.params],
                raw_grads=[raw.get(i) for i in range(len(call.params))],
            ))
            raw.clear()

        def post_step(opt, args, kwargs):
            if opt is call.optimizer:
                call.steps[-1].after = [p.detach().clone() for p in call.params]

        def on_input(module, args):
            if module.training:
                call.inputs.append(args[0].detach().clone())

        def on_output(module, args, out):
            if module.training:
                out = out[0] if isinstance(out, tuple) else out
                call.outputs.append(out.detach().clone())

        def on_step(record):
            call.records.append(dict(record))
            idx = getattr(call.data.train, "last_indices", None)
            call.labels.append(None if idx is None else call.data.train.labels[idx].clone())
            call.deterministic_during.append(torch.are_deterministic_algorithms_enabled())

        handles = [register_optimizer_step_pre_hook(pre_step), register_optimizer_step_post_hook(post_step),
                   model.register_forward_pre_hook(on_input), model.register_forward_hook(on_output)]
        if self.saved_bytes:
            handles += self._count_saved_bytes(model, call)
        if self.raw_grads:
            for i, p in enumerate(call.params):
                handles.append(p.register_hook(lambda g, i=i: raw.__setitem__(i, g.detach().clone())))
        callbacks = [*kw.pop("step_callbacks", ()), on_step, *self.extra_callbacks]
        try:
            call.history = self.real(model, data, config, step_callbacks=callbacks, **kw)
        finally:
            for h in handles:
                h.remove()
        return call.history

    @staticmethod
    def _count_saved_bytes(model: nn.Module, call: TrainCall) -> list:
        """Hooks that count, per training forward, the bytes of the tensors autograd saves for
        backward (``saved_tensors_hooks`` around the model's forward)."""
        active: list = []

        def pack(t: Tensor) -> Tensor:
            active[0][1][0] += t.numel() * t.element_size()
            return t

        def enter(module, args):
            if module.training and torch.is_grad_enabled():
                hooks = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
                active.append((hooks, [0]))
                hooks.__enter__()

        def leave(module, args, out):
            if active:
                hooks, count = active.pop()
                hooks.__exit__(None, None, None)
                call.saved_bytes.append(count[0])

        return [model.register_forward_pre_hook(enter), model.register_forward_hook(leave)]


class CallSpy:
    """Record the arguments of every call of a library function (and still call it)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, real: Callable) -> None:
        self.real = real
        self.calls: list[tuple[tuple, dict]] = []
        self.results: list[Any] = []
        patch_everywhere(monkeypatch, real, self._call)

    def _call(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        result = self.real(*args, **kwargs)
        self.results.append(result)
        return result
