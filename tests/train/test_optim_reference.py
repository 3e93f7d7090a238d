"""optim.py against independent references: torch's SGD over hand-made groups, and the documented
contracts of param_groups and the schedules (optim.py's docstrings, docs/)."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from torch import nn

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


def _steps_match(ours: nn.Module, ref: nn.Module, opt: torch.optim.Optimizer, ref_opt: torch.optim.Optimizer,
                 steps: int = 3) -> None:
    """Give both models the same random gradients for ``steps`` steps and check that every parameter
    (frozen ones included) ends where the hand-built reference optimizer puts it."""
    ref.load_state_dict(ours.state_dict())
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        for p, q in zip(ours.parameters(), ref.parameters()):
            grad = torch.randn(p.shape, generator=g)
            p.grad, q.grad = (grad.clone(), grad.clone()) if p.requires_grad else (None, None)
        opt.step()
        ref_opt.step()
    for (name, p), q in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=name)


def test_adamw_decays_conv_and_linear_weights_only_as_torchs_adamw_over_the_documented_groups():
    """param_groups' docstring: decay on >= 2-D tensors only, lr_scale per group; AdamW applies it
    decoupled (Loshchilov & Hutter), as torch.optim.AdamW does with the groups written out by hand."""
    ours, ref = TinyNet(), TinyNet()
    opt = build_optimizer(ours, "adamw", lr=0.01, weight_decay=0.5, lr_scale={"fc.": 0.5})
    ref_opt = torch.optim.AdamW([
        {"params": [ref.conv.weight], "weight_decay": 0.5},
        {"params": [ref.bn.weight, ref.bn.bias], "weight_decay": 0.0},
        {"params": [ref.fc.weight], "weight_decay": 0.5, "lr": 0.005},
        {"params": [ref.fc.bias], "weight_decay": 0.0, "lr": 0.005},
    ], lr=0.01)
    _steps_match(ours, ref, opt, ref_opt)


class _Nested(nn.Module):
    """``fc`` at the top and inside ``block`` and ``head``: a prefix must match from the start of the name."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.block = nn.Module()
        self.block.fc = nn.Linear(3, 3)
        self.block.norm = nn.LayerNorm(3)
        self.head = nn.Module()
        self.head.fc = nn.Linear(3, 3)  # no key starts "head": rate 1
        self.frozen = nn.Linear(3, 3).requires_grad_(False)


def test_lr_scale_keys_are_name_prefixes_the_longest_wins_as_sgd_over_hand_built_groups():
    """param_groups' docstring: lr_scale keys are name prefixes ("fc" is not "block.fc"), the longest
    matching one wins, frozen parameters are left out, decay only on >= 2-D tensors."""
    ours, ref = _Nested(), _Nested()
    opt = build_optimizer(ours, "sgd", lr=0.1, momentum=0.9, weight_decay=0.05,
                          lr_scale={"block": 0.1, "block.fc": 3.0, "fc": 0.5})
    ref_opt = torch.optim.SGD([
        {"params": [ref.fc.weight], "lr": 0.05, "weight_decay": 0.05},
        {"params": [ref.fc.bias], "lr": 0.05, "weight_decay": 0.0},
        {"params": [ref.block.fc.weight], "lr": 0.3, "weight_decay": 0.05},
        {"params": [ref.block.fc.bias], "lr": 0.3, "weight_decay": 0.0},
        {"params": [ref.block.norm.weight, ref.block.norm.bias], "lr": 0.01, "weight_decay": 0.0},
        {"params": [ref.head.fc.weight], "weight_decay": 0.05},
        {"params": [ref.head.fc.bias], "weight_decay": 0.0},
    ], lr=0.1, momentum=0.9, nesterov=True)
    _steps_match(ours, ref, opt, ref_opt)
    # "norm" is inside block.norm's names but starts none of them: a prefix that matches nothing
    with pytest.raises(ValueError, match=r"lr_scale prefix 'norm' matches no parameter of the model"):
        build_optimizer(_Nested(), lr_scale={"norm": 2.0})


def test_onecycle_defaults_to_a_quarter_of_the_steps_of_warmup_as_torchs_linear_onecyclelr():
    """schedule_fn's docstring: onecycle ramps up over 25% of training by default, then decays linearly
    to 0. torch's OneCycleLR (anneal_strategy='linear', pct_start 0.25, from 1/w of the peak, to 0) is
    the same curve, except that ours holds the peak for one more step (step w, the first of the decay)."""
    total = 40
    warm = total // 4
    f = schedule_fn("onecycle", total)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=total, pct_start=0.25,
                                              anneal_strategy="linear", div_factor=warm,
                                              final_div_factor=float("inf"), cycle_momentum=False)
    want = _lrs_per_step(opt, ref, total)
    assert [f(t) for t in range(total + 1)] == pytest.approx(want[:warm] + want[warm - 1:], rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", ["cosine", "onecycle"])
def test_cosine_and_onecycle_stay_at_0_after_the_last_step_instead_of_rising_or_going_negative(name):
    """Both decay "to 0" (schedule_fn's docstring) and stay there: torch's CosineAnnealingLR climbs back
    after T_max, and a linear decay continued would turn the rate negative (gradient ascent)."""
    f = schedule_fn(name, 20, 4)
    assert [f(t) for t in range(20, 30)] == [0.0] * 10


def test_sgd_takes_the_momentum_and_nesterov_it_is_given_as_torchs_sgd():
    """build_optimizer's momentum and nesterov reach SGD: 0.5 without Nesterov steps as
    torch.optim.SGD(momentum=0.5) does (no decay: one group is the whole model)."""
    ours, ref = TinyNet(), TinyNet()
    opt = build_optimizer(ours, "sgd", lr=0.1, momentum=0.5, nesterov=False, weight_decay=0.0)
    _steps_match(ours, ref, opt, torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.5))
