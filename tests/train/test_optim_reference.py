"""optim.py against independent references: torch's SGD over hand-made groups, and the documented
contracts of param_groups and the schedules (optim.py's docstrings, docs/)."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from resnet_lab.train import build_optimizer, build_scheduler
from resnet_lab.train.optim import schedule_fn, warmup_steps

from tinytrain import TinyNet



def _lrs_per_step(optimizer, scheduler, steps: int) -> list[float]:
    """Every group's rate at each of ``steps`` optimizer steps (the scheduler stepped after each), step
    by step in one list."""
    seen = []
    for _ in range(steps):
        seen += [g["lr"] for g in optimizer.param_groups]
        optimizer.step()
        scheduler.step()
    return seen


@pytest.mark.parametrize("name", ["cosine", "step"])
def test_build_scheduler_without_warmup_steps_every_group_as_torchs_own_scheduler(name):
    """No warmup: cosine is torch's CosineAnnealingLR to 0 over the run, step is MultiStepLR at 50% and
    75% with gamma 0.1 (the ResNet paper's drops); each lr_scale group keeps its own peak."""
    total = 40
    ours, ref = TinyNet(), TinyNet()
    opt = build_optimizer(ours, lr=0.1, lr_scale={"fc.": 0.5})
    ref_opt = build_optimizer(ref, lr=0.1, lr_scale={"fc.": 0.5})
    ref_sched = (torch.optim.lr_scheduler.CosineAnnealingLR(ref_opt, T_max=total, eta_min=0.0) if name == "cosine"
                 else torch.optim.lr_scheduler.MultiStepLR(ref_opt, milestones=[20, 30], gamma=0.1))
    got = _lrs_per_step(opt, build_scheduler(opt, name, total), total)
    want = _lrs_per_step(ref_opt, ref_sched, total)
    assert len({round(lr, 12) for lr in got[:len(opt.param_groups)]}) == 2  # two peaks: 0.1 and the fc's 0.05
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("name", ["cosine", "step", "constant", "onecycle"])
def test_build_scheduler_warms_up_linearly_over_the_steps_it_is_given(name):
    """The warmup that train passes in reaches the scheduler: torch's LinearLR from 1/w to 1 over the
    first w steps (factor (t + 1) / w), the peak at step w."""
    warm, total = 4, 20
    ours, ref = TinyNet(), TinyNet()
    opt, ref_opt = build_optimizer(ours, lr=0.1), build_optimizer(ref, lr=0.1)
    got = _lrs_per_step(opt, build_scheduler(opt, name, total, warmup_steps=warm), warm + 1)
    ramp = torch.optim.lr_scheduler.LinearLR(ref_opt, start_factor=1 / warm, end_factor=1.0, total_iters=warm - 1)
    want = _lrs_per_step(ref_opt, ramp, warm) + [0.1] * len(opt.param_groups)  # then the peak, before any decay
    assert got == pytest.approx(want, rel=1e-9)


def test_warmup_steps_counts_whole_steps_and_one_for_a_warmup_shorter_than_a_step():
    """warmup_steps' docstring: the steps of warmup_epochs rounded down, at least one when it is set at
    all (0 would make onecycle take its default quarter), none when it is 0."""
    assert warmup_steps(0.0, 50) == 0
    assert warmup_steps(0.01, 50) == 1  # half a step
    assert warmup_steps(2.0, 50) == 100
    assert warmup_steps(0.5, 3) == 1  # 1.5 steps
    # the epochs as the user wrote them, times the steps, exactly (0.29 * 100 is 28.999999999999996 in floats)
    for epochs in ("0.29", "0.57", "0.58", "1.13", "2.3"):
        assert warmup_steps(float(epochs), 100) == int(Fraction(epochs) * 100), epochs
    f = schedule_fn("onecycle", 100, warmup_steps(0.01, 50))
    assert f(0) == 1.0  # the peak at once, not a ramp over 25 steps (the default when 0)


def test_an_unknown_schedule_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match=r"unknown schedule 'linear': expected one of cosine, onecycle, step, constant"):
        schedule_fn("linear", 100)
def test_a_model_with_every_parameter_frozen_is_refused_by_name_not_by_torchs_empty_list_error():
    """param_groups' docstring: frozen parameters are left out; with all of them frozen there is nothing
    to train, which must say so (torch's own "optimizer got an empty parameter list" names no cause)."""
    model = TinyNet().requires_grad_(False)
    for name in ("sgd", "adamw"):
        with pytest.raises(ValueError, match=r"no trainable parameters \(everything is frozen\).*requires_grad"):
            build_optimizer(model, name)
