"""The seed machinery of the experiments: spreads and their rules against hand computations, the
runner's seed loop and He et al.'s constant warm-up against independently built models, and the
float64 agreement of our BN with torch's that bn_convergence checks."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from resnet_lab.experiments.bn_convergence import LeNet, float64_agreement
from resnet_lab.experiments.report import Spread, exceeds, indistinguishable, within
from resnet_lab.experiments.runner import Context, RunSpec, _EpochOffset, cifar_net
from resnet_lab.data import InMemoryLoader


def test_spread_mean_sd_and_range_match_a_hand_computation():
    s = Spread.of([1, 2, 4])
    assert s.mean == pytest.approx(7 / 3) and s.lo == 1 and s.hi == 4 and s.n == 3
    # sample sd: squared deviations 16/9, 1/9, 25/9 over n - 1 = 2
    assert s.sd == pytest.approx(math.sqrt((16 / 9 + 1 / 9 + 25 / 9) / 2))
    assert Spread.of([5.0]).sd == 0.0 and str(Spread.of([5.0])) == "5"
    assert str(Spread.of([0.2, 0.4])) == "0.30 ± 0.14"  # two significant digits of the sd
    assert str(Spread.of([3, math.inf])) == "3 / never"  # a seed that never got there is shown as such
    with pytest.raises(ValueError, match="at least one value"):
        Spread.of([])


def test_rules_compare_the_difference_of_means_with_the_sum_of_the_seed_sds():
    low, high = Spread.of([0, 1, 2]), Spread.of([3, 4, 5])  # sd 1 each
    assert exceeds(high, low) and not exceeds(high, low, margin=3.5)
    assert not exceeds(Spread.of([2, 3, 4]), low)  # difference 2 = sd sum 2: not beyond it
    assert within(Spread.of([1, 1, 1]), Spread.of([0.5] * 3), 0.6)
    assert not within(Spread.of([1, 1, 1]), Spread.of([0.5] * 3), 0.4)
    assert not within(Spread.of([0, 1, 2]), Spread.of([1, 1, 1]), 0.5)  # equal means, but sd 1 > 0.5
    assert indistinguishable(Spread.of([1, 2, 3]), Spread.of([2, 3, 4]))
    assert not indistinguishable(Spread.of([1, 1.1, 1.2]), Spread.of([2, 2.1, 2.2]))
    nan = Spread.of([1, math.nan])
    assert not (exceeds(nan, low) or exceeds(high, nan) or within(nan, low, 9) or indistinguishable(nan, nan))


def _fake_context(tmp_path) -> tuple[Context, object]:
    ctx = Context("seeds", "smoke", tmp_path, device="cpu", log=lambda s: None)
    return ctx, ctx.data("fake", batch_size=8, subset=64, image_size=8, in_channels=1)


def test_train_seeds_trains_once_per_seed_from_that_seeds_initial_weights(tmp_path):
    ctx, data = _fake_context(tmp_path)
    built: list[dict] = []
    factory = cifar_net(8, widths=(2, 4, 8))

    def build(nc: int, ic: int) -> nn.Module:
        model = factory(nc, ic)
        built.append({k: v.clone() for k, v in model.state_dict().items()})
        return model

    results = ctx.train_seeds(RunSpec("net", build, batch_size=8, epochs=1, max_steps_per_epoch=2), ctx.seeds(2), data)
    assert [r.label for r in results.runs] == ["net seed 0", "net seed 1"] and results.seeds == [0, 1]
    for seed, state in zip((0, 1), built):
        torch.manual_seed(seed)
        ref = factory(10, 1).state_dict()  # built independently after seeding
        assert all(torch.equal(state[k], ref[k]) for k in ref)
    assert not torch.equal(built[0]["conv1.weight"], built[1]["conv1.weight"])
    acc = results.final("train_acc")
    assert acc.n == 2 and acc.values == tuple(r.last["train_acc"] for r in results.runs)
    assert results.final("train_acc", failed=0.1).n == 2


def test_warmup_trains_its_steps_at_the_warmup_rate_then_the_run_at_its_own(tmp_path):
    ctx, data = _fake_context(tmp_path)
    models: list[nn.Module] = []
    factory = cifar_net(8, widths=(2, 4, 8))
    snapshots: list[torch.Tensor] = []

    def build(nc: int, ic: int) -> nn.Module:
        models.append(factory(nc, ic))
        snapshots.append(models[0].fc.weight.detach().clone())
        return models[0]

    spec = RunSpec("warm", build, batch_size=8, epochs=1, lr=0.1, schedule="constant", weight_decay=0.0,
                   max_steps_per_epoch=2, warmup_lr=1e-9, warmup_steps=2,
                   step_callbacks=[lambda s: snapshots.append(models[0].fc.weight.detach().clone())])
    r = ctx.train(spec, data)
    assert len(r.step_losses) == 4 and r.info["warmup"]["steps"] == 2 and r.info["warmup"]["lr"] == 1e-9
    moved = [float((w - snapshots[0]).abs().max()) for w in snapshots[1:]]
    assert max(moved[:2]) < 1e-6  # two steps at lr 1e-9 leave the weights where they were
    assert moved[2] > 1e-4  # the first step at lr 0.1 moves them


def test_the_run_after_a_warmup_draws_the_order_of_the_following_epochs():
    images = torch.arange(24, dtype=torch.uint8).view(24, 1, 1, 1).expand(24, 1, 4, 4).contiguous()
    loader = InMemoryLoader(images, torch.arange(24), batch_size=4, mean=(0.0,), std=(1.0,), shuffle=True, seed=3)
    view = _EpochOffset(loader, 2)
    view.set_epoch(0)
    seen = [y.tolist() for _, y in view]
    loader.set_epoch(2)
    assert seen == [y.tolist() for _, y in loader] and len(view) == len(loader) and view.batch_size == 4
    loader.set_epoch(0)
    assert seen != [y.tolist() for _, y in loader]  # not the warm-up's own order


def test_float64_scratch_bn_and_torch_bn_take_the_same_training_steps():
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 10, (8,), generator=g))
               for _ in range(3)]
    f = float64_agreement(8, (2, 4, 8), batches, lr=0.1)
    assert f["steps"] == 3 and f["max_change"] > 1e-3  # the steps moved the weights
    assert f["max_loss_diff"] <= 1e-9 and f["max_state_diff"] <= 1e-9


@pytest.mark.parametrize("norm, params", [("scratch", 44_878), ("batch", 44_878), ("none", 44_426)])
def test_lenet_has_d2l_bn_lenet_parameter_count(norm, params):
    # by hand: conv 6x1x5x5+6, conv 16x6x5x5+16, linear 256x120+120, 120x84+84, 84x10+10 = 44,426,
    # plus 2 x (6 + 16 + 120 + 84) = 452 BN scales and shifts
    model = LeNet(10, 1, norm=norm)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("field, value", [("optimizer", "adamw"), ("momentum", 0.5), ("warmup_epochs", 0.5),
                                          ("grad_clip", 0.5), ("lr_scale", {"fc": 0.5}), ("schedule", "cosine"),
                                          ("weight_decay", 0.0), ("lr", 0.05), ("epochs", 2)])
def test_each_run_spec_field_reaches_the_trainers_config(tmp_path, monkeypatch, field, value):
    """A RunSpec field the runner dropped would leave every experiment run at the default; each
    must arrive in the TrainConfig the trainer gets (whose tests show what each one does)."""
    from trainspy import TrainSpy

    spy = TrainSpy(monkeypatch)
    ctx, data = _fake_context(tmp_path)
    base = dict(batch_size=8, epochs=1, max_steps_per_epoch=1)
    for spec in (RunSpec("plain", cifar_net(8, widths=(2, 4, 8)), **base),
                 RunSpec("changed", cifar_net(8, widths=(2, 4, 8)), **{**base, field: value})):
        ctx.train(spec, data)
    plain, changed = (call.config for call in spy.calls[-2:])
    assert getattr(changed, field) == value != getattr(plain, field)
    differing = {f for f in ("optimizer", "momentum", "warmup_epochs", "grad_clip", "lr_scale", "schedule",
                             "weight_decay", "lr", "epochs") if getattr(plain, f) != getattr(changed, f)}
    assert differing == {field}


@pytest.mark.parametrize("steps", [3, 5, 7])
def test_warmup_trains_exactly_its_steps_when_they_do_not_split_evenly_into_epochs(tmp_path, steps):
    """2 steps an epoch: 3 warm-up steps used to run 2 epochs of 2 (4 steps), 5 ran 6, 7 ran 8."""
    ctx, data = _fake_context(tmp_path)
    spec = RunSpec("warm", cifar_net(8, widths=(2, 4, 8)), batch_size=8, epochs=1, max_steps_per_epoch=2,
                   warmup_lr=0.01, warmup_steps=steps)
    r = ctx.train(spec, data)
    assert r.info["warmup"]["steps"] == steps and len(r.step_losses) == steps + 2


@pytest.mark.parametrize("bad", [-5, -1, 2.5, True])
def test_runspec_refuses_warmup_steps_that_are_not_a_count(bad):
    with pytest.raises(ValueError, match=f"warmup_steps must be an int >= 0.*got {bad!r}"):
        RunSpec("warm", warmup_steps=bad)
