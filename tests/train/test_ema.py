"""TrainConfig.ema / --ema: an exponential moving average of the weights is what each epoch
evaluates, what model.safetensors and best.safetensors hold and what the run reports.

The reference is the recurrence written out in float64 over the raw weights recorded after every
optimizer step, with TensorFlow's warm-up ``min(decay, (1 + t) / (10 + t))``; the reported figures
are checked by evaluating the saved file with a freshly built model.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import resnet_lab.nn as rl_nn
from resnet_lab.train import TrainConfig, evaluate, train
from resnet_lab.train.averaging import WeightEma, ema_decay

from support import randomize_bn
from tinytrain import TinyNet, make_bundle

DECAY = 0.9


def _cfg(out=None, **kw) -> TrainConfig:
    base = dict(epochs=2, lr=0.05, progress=False, plots=False, deterministic=True, device="cpu",
                out=str(out) if out else None)
    return TrainConfig(**{**base, **kw})


def _fresh() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


def _float64_ema(initial: dict, raws: list[dict], decay: float) -> dict:
    """The EMA by its definition: e <- d_t e + (1 - d_t) raw_t with d_t = min(decay, (1 + t) / (10 + t))
    for floating-point tensors; integer tensors (num_batches_tracked) take the raw value."""
    ema = {k: v.double() if v.is_floating_point() else v.clone() for k, v in initial.items()}
    for t, raw in enumerate(raws):
        d = min(decay, (1 + t) / (10 + t))
        for k, v in raw.items():
            ema[k] = d * ema[k] + (1 - d) * v.double() if v.is_floating_point() else v.clone()
    return ema


def _assert_equals_float64(state: dict, expected: dict) -> None:
    """``state`` holds :func:`_float64_ema`'s floating-point tensors (to float32 precision) and its
    integer ones exactly (num_batches_tracked: copied, not averaged)."""
    for k, v in expected.items():
        if v.is_floating_point():
            torch.testing.assert_close(state[k].double(), v, rtol=1e-5, atol=1e-6, msg=k)
        else:
            assert torch.equal(state[k], v), k


def _train_recording(out, scratch_bn: bool = False, **kw) -> tuple[TinyNet, dict, list[dict], object]:
    """Train, recording the raw weights (parameters and buffers) after every optimizer step."""
    model = _fresh()
    if scratch_bn:
        model.bn = rl_nn.BatchNorm2d(8)  # resnet-lab's own batch norm: the same state-dict keys
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    raws: list[dict] = []
    hist = train(model, make_bundle(), _cfg(out, ema=DECAY, **kw),
                 step_callbacks=[lambda info: raws.append({k: v.clone() for k, v in model.state_dict().items()})])
    return model, initial, raws, hist


@pytest.mark.parametrize("scratch_bn", [False, True], ids=["torch_bn", "scratch_bn"])
def test_ema_weights_equal_a_float64_recurrence_over_the_recorded_raw_weights(tmp_path, scratch_bn):
    model, initial, raws, _ = _train_recording(tmp_path, scratch_bn)
    assert len(raws) == 12  # 2 epochs of 6 steps
    expected = _float64_ema(initial, raws, DECAY)
    saved = load_file(tmp_path / "model.safetensors")
    _assert_equals_float64(saved, expected)
    _assert_equals_float64(model.state_dict(), expected)
    assert not torch.allclose(saved["bn.running_mean"], raws[-1]["bn.running_mean"])  # BN statistics averaged
    # train_state.pt keeps the raw weights for an exact resume
    raw = torch.load(tmp_path / "train_state.pt", weights_only=True)["averaging"]["raw"]
    for k, v in raws[-1].items():
        assert torch.equal(raw[k], v), k


def test_the_average_is_kept_in_a_frozen_copy_and_the_trained_model_stays_trainable():
    """WeightEma's docstring: "kept in a frozen copy of the model": no parameter of the average asks
    autograd for a gradient (a pass through it would build a graph for nothing), the source's all do."""
    model = _fresh()
    ema = WeightEma(model, DECAY)
    assert not any(p.requires_grad for p in ema.model.parameters())
    assert all(p.requires_grad for p in model.parameters())


def test_the_average_starts_from_the_models_weights_at_construction():
    """WeightEma's docstring: "its current weights start the average". After a training run the start
    weighs almost nothing (0.1 x 0.18 x ... over the warm-up), so one update shows it: d_0 = 0.1 of the
    start and 0.9 of the weights that step left, for the weights and BN statistics alike."""
    model = randomize_bn(_fresh())
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    ema = WeightEma(model, DECAY)
    with torch.no_grad():
        for v in model.state_dict().values():
            v.add_(1)
    ema.update()
    _assert_equals_float64(ema.model.state_dict(), _float64_ema(initial, [model.state_dict()], DECAY))


def test_past_the_warm_up_every_update_uses_the_full_decay():
    """docs/RECIPES.md: d = min(DECAY, (1 + t) / (10 + t)): at 0.5 the warm-up ends after
    (10 x 0.5 - 1) / 0.5 = 8 updates and d stays 0.5 from there. The training runs above stop
    inside the warm-up (12 updates at 0.9), so only this shows the cap. Weights and BN statistics
    move by a different random amount at each of 20 updates; num_batches_tracked counts."""
    model = randomize_bn(_fresh())
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    ema, raws, g = WeightEma(model, 0.5), [], torch.Generator().manual_seed(1)
    for _ in range(20):
        with torch.no_grad():
            for v in model.state_dict().values():
                v.add_(torch.randn(v.shape, generator=g) if v.is_floating_point() else 1)
        raws.append({k: v.clone() for k, v in model.state_dict().items()})
        ema.update()
    _assert_equals_float64(ema.model.state_dict(), _float64_ema(initial, raws, 0.5))


def test_the_warm_up_ends_after_the_documented_number_of_updates():
    """docs/RECIPES.md and ema_decay's docstring: full decay after (10 d - 1) / (1 - d) updates, 890
    at 0.99 and 8990 at 0.999 (hand-solved from (1 + t) / (10 + t) >= d); below it, the smaller
    warm-up value; and the decay never exceeds the one asked for however long the run."""
    for decay, reached in ((0.99, 890), (0.999, 8990)):
        assert ema_decay(decay, reached - 1) == pytest.approx(reached / (reached + 9)) and \
            ema_decay(decay, reached - 1) < decay
        assert ema_decay(decay, reached) == pytest.approx(decay)
        assert ema_decay(decay, 10**7) == decay
    assert ema_decay(0.99, 0) == pytest.approx(0.1)  # the first update: 1 / 10


def test_the_average_follows_a_buffer_that_a_layer_assigns_anew_instead_of_updating_in_place():
    """WeightEma reads the model's tensors at every update: a layer that puts a new tensor in its
    buffer's slot (``self.running_mean = ...``, as hand-written norms do) is still averaged."""
    model = _fresh()
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    ema, raws = WeightEma(model, DECAY), []
    for _ in range(3):
        model.bn.running_mean = model.bn.running_mean + 1.0  # a new tensor, registered as the buffer
        raws.append({k: v.clone() for k, v in model.state_dict().items()})
        ema.update()
    expected = _float64_ema(initial, raws, DECAY)["bn.running_mean"]
    torch.testing.assert_close(ema.model.bn.running_mean.double(), expected, rtol=1e-6, atol=1e-7)


def test_reported_test_accuracy_and_best_file_are_those_of_the_ema(tmp_path):
    _, _, raws, hist = _train_recording(tmp_path, epochs=3)
    data = make_bundle()
    for name, record in (("model.safetensors", hist.last), ("best.safetensors", hist.epochs[hist.best_epoch - 1])):
        net = TinyNet()
        net.load_state_dict(load_file(tmp_path / name))
        ev = evaluate(net, data.test, num_classes=3)
        assert ev["acc"] == record["test_acc"] and ev["loss"] == pytest.approx(record["test_loss"], rel=1e-6), name
    raw_net = TinyNet()
    raw_net.load_state_dict(raws[-1])
    assert evaluate(raw_net, data.test, num_classes=3)["loss"] != pytest.approx(hist.last["test_loss"], rel=1e-6)
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["train_config"]["ema"] == DECAY


def test_without_ema_the_saved_weights_are_the_raw_ones_and_no_average_is_kept(tmp_path):
    model = _fresh()
    train(model, make_bundle(), _cfg(tmp_path))
    saved = load_file(tmp_path / "model.safetensors")
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert torch.load(tmp_path / "train_state.pt", weights_only=True)["averaging"] == {}


def _stop_at(epoch: int, step: int):
    def cb(info):
        if info["epoch"] == epoch and info["step"] == step:
            raise KeyboardInterrupt
    return cb


@pytest.mark.parametrize("options", [{"ema": 0.8}, {"lookahead": 4, "lookahead_alpha": 0.6},
                                     {"ema": 0.8, "lookahead": 4}, {"ema": 0.8, "mixup": 0.4, "cutmix": 1.0},
                                     {"sam": 0.1, "ema": 0.8}],
                         ids=["ema", "lookahead", "both", "mixup_cutmix", "sam_ema"])
def test_resume_after_interrupt_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, options):
    full = _fresh()
    train(full, make_bundle(), _cfg(tmp_path / "full", epochs=3, **options))
    interrupted = _fresh()
    # step 3 of epoch 2 (step 9 of the run) lies between lookahead's syncs at steps 8 and 12
    hist = train(interrupted, make_bundle(), _cfg(tmp_path / "run", epochs=3, **options),
                 step_callbacks=[_stop_at(2, 3)])
    assert hist.interrupted
    torch.manual_seed(999)  # the resume must not depend on the global RNG or the model's weights at call time
    resumed = TinyNet()
    hist2 = train(resumed, make_bundle(), _cfg(tmp_path / "run", epochs=3, resume=True, **options))
    assert [r["epoch"] for r in hist2.epochs] == [1, 2, 3]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    a_state = torch.load(tmp_path / "full" / "train_state.pt", weights_only=True)["averaging"]
    b_state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)["averaging"]
    assert a_state.keys() == b_state.keys() and a_state
    for part in ("raw", "slow"):
        for k, v in a_state.get(part, {}).items():
            assert torch.equal(v, b_state[part][k]), f"{part} {k}"


def test_a_finished_run_given_to_train_again_leaves_the_model_holding_its_saved_ema(tmp_path):
    # train() promises the caller's model ends holding the EMA; finetune's main phase builds on that
    # when a run is resumed after its frozen phase had finished.
    from resnet_lab.runs import load_state_dict_file

    train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=2, ema=0.8))
    again = TinyNet()
    hist = train(again, make_bundle(), _cfg(tmp_path, epochs=2, ema=0.8, resume=True))
    assert not hist.interrupted
    saved = load_state_dict_file(tmp_path / "model.safetensors")
    for k, v in again.state_dict().items():
        assert torch.equal(v, saved[k]), k


@pytest.mark.parametrize("field, value", [("ema", 0.5), ("lookahead", 2), ("lookahead_alpha", 0.8),
                                          ("norm_lr_scale", 2.0), ("progressive_resize", 4),
                                          ("mixup", 0.2), ("cutmix", 1.0), ("sam", 0.05)])
def test_resume_with_a_different_recipe_option_is_refused_naming_it(tmp_path, field, value):
    train(_fresh(), make_bundle(), _cfg(tmp_path, stop_after=1, ema=0.9, lookahead=3))
    changed = {"ema": 0.9, "lookahead": 3, field: value}
    with pytest.raises(ValueError, match=f"cannot resume .*recipe {field}:"):
        train(_fresh(), make_bundle(), _cfg(tmp_path, resume=True, **changed))


@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan")])
def test_ema_outside_0_1_is_refused_naming_the_flag(value):
    with pytest.raises(ValueError, match=r"ema \(--ema\) must be a decay in \[0, 1\)"):
        TrainConfig(ema=value)


@pytest.mark.parametrize("options, missing", [({"ema": 0.9}, "raw"), ({"lookahead": 2}, "slow"),
                                              ({"ema": 0.9, "lookahead": 2}, "raw or slow")])
def test_a_run_saved_before_the_recipe_recorded_ema_is_not_resumed_with_averages_it_never_kept(tmp_path, options,
                                                                                               missing):
    """A run from a resnet-lab whose recipe had no ema/lookahead fields is not refused by the recipe
    comparison (a field it did not record is not compared); resumed with --ema or --lookahead, its
    checkpoint holds neither the raw nor the slow weights: a one-line refusal naming them and the
    way out, not a KeyError, and the command it was started with still resumes it."""
    train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=2, stop_after=1))
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    for key in ("ema", "lookahead", "lookahead_alpha"):
        del state["recipe"][key]  # as a resnet-lab before these options saved it
    torch.save(state, tmp_path / "train_state.pt")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(ValueError) as e:
        train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=2, resume=True, **options))
    assert str(e.value) == (f"the checkpoint holds no {missing} weights (it was saved without ema / lookahead); "
                            "resume with the options the run was started with")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    hist = train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=2, resume=True))
    assert [r["epoch"] for r in hist.epochs] == [1, 2]
