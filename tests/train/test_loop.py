import contextlib
import copy
import importlib
import io
import sys
import json
import math
import os

import pytest
import torch
from tqdm.auto import tqdm

from resnet_lab.train import TrainConfig, TrainingDiverged, build_optimizer, evaluate, train
from resnet_lab.train.bars import bar_disable, on_terminal
from resnet_lab.train.optim import schedule_fn

from support import TerminalStream
from tinytrain import TinyNet, make_bundle


def _cfg(tmp_path=None, **kw):
    base = dict(epochs=3, lr=0.05, progress=False, plots=False, deterministic=True, device="cpu",
                out=str(tmp_path) if tmp_path else None)
    base.update(kw)
    return TrainConfig(**base)


def _fresh():
    torch.manual_seed(0)
    return TinyNet()


def _stop_after(n_epochs=None, n_steps=None):
    def cb(info):
        if n_epochs is not None and info["epoch"] == n_epochs and "step" not in info:
            raise KeyboardInterrupt
        if n_steps is not None and info.get("step") == n_steps and info["epoch"] == 2:
            raise KeyboardInterrupt
    return cb


@pytest.mark.parametrize("where", ["epoch_boundary", "mid_epoch"])
def test_resume_after_interrupt_gives_identical_weights_to_uninterrupted_run(tmp_path, where):
    full = _fresh()
    train(full, make_bundle(), _cfg(tmp_path / "full"))

    interrupted = _fresh()
    cb = _stop_after(n_epochs=1) if where == "epoch_boundary" else _stop_after(n_steps=3)
    kwargs = {"callbacks": [cb]} if where == "epoch_boundary" else {"step_callbacks": [cb]}
    hist = train(interrupted, make_bundle(), _cfg(tmp_path / "run"), **kwargs)
    assert hist.interrupted
    torch.manual_seed(999)  # resume must not depend on the global RNG at call time
    resumed = TinyNet()
    hist2 = train(resumed, make_bundle(), _cfg(tmp_path / "run", resume=True))
    assert not hist2.interrupted and [r["epoch"] for r in hist2.epochs] == [1, 2, 3]
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2, 3]


def test_a_resumed_run_keeps_the_best_epoch_of_the_sessions_before_it(tmp_path):
    """The best epoch, its accuracy and best.safetensors of a run paused after epoch 2 and resumed
    are the uninterrupted run's, also where the first epoch after the resume is worse than an
    earlier one (a resume that forgot the best so far made that epoch "the best" and overwrote
    best.safetensors with it). lr 2.0 on the tiny task: test accuracy falls after epoch 1."""
    from safetensors.torch import load_file

    from resnet_lab.runs import load_train_state, read_metrics

    cfg = dict(epochs=4, lr=2.0)
    full = train(_fresh(), make_bundle(), _cfg(tmp_path / "full", **cfg))
    accs = [r["test_acc"] for r in read_metrics(tmp_path / "full")]
    best = max(range(len(accs)), key=lambda i: (accs[i], -i)) + 1  # the first epoch of the highest accuracy
    assert best <= 2 and accs[2] < accs[best - 1]  # the premise: the epoch after the pause is worse
    assert (full.best_epoch, full.best_acc) == (best, accs[best - 1])

    assert train(_fresh(), make_bundle(), _cfg(tmp_path / "run", **cfg), callbacks=[_stop_after(n_epochs=2)]).interrupted
    resumed = train(TinyNet(), make_bundle(), _cfg(tmp_path / "run", resume=True, **cfg))
    assert [r["test_acc"] for r in read_metrics(tmp_path / "run")] == accs  # the same trajectory
    # docs/REPORT.md: each record names the session that wrote it (the wall time adds up per session)
    assert [r["session"] for r in read_metrics(tmp_path / "run")] == [1, 1, 2, 2] and resumed.session == 2
    assert (resumed.best_epoch, resumed.best_acc) == (best, accs[best - 1])
    state = load_train_state(tmp_path / "run")
    assert (state["best_epoch"], state["best_acc"]) == (best, accs[best - 1])
    want, got = load_file(tmp_path / "full" / "best.safetensors"), load_file(tmp_path / "run" / "best.safetensors")
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    last = load_file(tmp_path / "run" / "model.safetensors")
    assert not all(torch.equal(last[k], got[k]) for k in got)  # best is not simply the last epoch


@pytest.mark.parametrize("step", [3, 6], ids=["mid_epoch", "after_the_last_step"])
def test_an_epoch_resumed_mid_way_reports_the_training_figures_of_all_its_steps(tmp_path, step):
    # The reference: the uninterrupted run's record of the same epoch (same batches, same weights;
    # 6 steps an epoch). Label smoothing, so that the plain loss is recorded too.
    full = train(_fresh(), make_bundle(), _cfg(tmp_path / "full", label_smoothing=0.1))
    hist = train(_fresh(), make_bundle(), _cfg(tmp_path / "run", label_smoothing=0.1),
                 step_callbacks=[_stop_after(n_steps=step)])
    assert hist.interrupted
    resumed = train(TinyNet(), make_bundle(), _cfg(tmp_path / "run", resume=True, label_smoothing=0.1))
    for key in ("train_loss", "train_acc", "train_loss_plain"):
        assert resumed.epochs[1][key] == full.epochs[1][key], key
    assert resumed.epochs[1]["train_acc"] > 0 and resumed.epochs[1]["images_per_second"] > 0


def test_read_metrics_rewrites_the_history_atomically(tmp_path, monkeypatch):
    # A resume trims metrics.jsonl to its checkpoint; a kill during that rewrite must leave the old
    # file, not an empty one. Simulated: the rename that commits the new file never happens.
    import os

    from resnet_lab import runs

    train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=2))
    before = (tmp_path / "metrics.jsonl").read_text()
    real = os.replace

    def killed(src, dst, *a, **kw):
        if str(dst).endswith("metrics.jsonl"):
            raise KeyboardInterrupt("killed")
        return real(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        runs.read_metrics(tmp_path, upto=1)
    assert (tmp_path / "metrics.jsonl").read_text() == before


def test_run_directory_has_the_documented_files_and_train_state_loads_weights_only(tmp_path):
    train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=2, plots=True))
    for name in ("model.safetensors", "best.safetensors", "model.json", "train_state.pt", "metrics.jsonl",
                 "curves.png", "confusion.png"):
        assert (tmp_path / name).is_file(), name
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 0
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["classes"] == ["c0", "c1", "c2"] and meta["input_size"] == [1, 6, 6] and meta["epoch"] == 2
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))


def test_existing_run_without_resume_is_refused_and_left_intact(tmp_path):
    train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=1))
    before = (tmp_path / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=1))
    assert (tmp_path / "model.safetensors").read_bytes() == before


def test_nan_loss_stops_with_the_step_named_and_keeps_last_good_checkpoint(tmp_path):
    saved = {}

    def remember(record):
        saved[record["epoch"]] = (tmp_path / "model.safetensors").read_bytes()

    def poison(info):
        if info["epoch"] == 2 and info["step"] == 2:
            with torch.no_grad():
                model.fc.weight.fill_(float("nan"))

    model = _fresh()
    with pytest.raises(TrainingDiverged, match=r"epoch 2, step 3"):
        train(model, make_bundle(), _cfg(tmp_path), callbacks=[remember], step_callbacks=[poison])
    assert (tmp_path / "model.safetensors").read_bytes() == saved[1]


def test_the_finite_guard_that_looks_every_few_steps_remembers_a_non_finite_value_before_finite_ones():
    """On a GPU the guard reads the device only every few steps: a NaN loss of an fp16 step the
    scaler skipped (the weights stay finite, so later losses are finite) must still stop the run."""
    from resnet_lab.train.loop import _FiniteGuard

    guard = _FiniteGuard(torch.device("cpu"))
    guard.every_step = False  # as on a GPU
    for value in (1.0, float("nan"), 2.0, 3.0):
        guard.watch(torch.tensor(value), lambda: "never described here")
    with pytest.raises(TrainingDiverged, match="^loss became non-finite$"):
        guard.check(lambda: "loss became non-finite")


def test_the_guard_that_looks_every_few_steps_also_looks_at_an_epochs_last_step_and_names_it(monkeypatch):
    """On a GPU the guard reads the device every 10 steps and at the epoch's last: a NaN loss at
    step 6 of 6 stops the run there, as a non-finite step (not later as a diverged epoch), and the
    message names that step once (it said "before step 6 at epoch 1, step 7")."""
    from resnet_lab.train import loop

    class EveryFewSteps(loop._FiniteGuard):
        def __init__(self, device):
            super().__init__(device)
            self.every_step = False  # as on a GPU

    def poison(info):  # after step 5 of 6: step 6's loss is NaN
        if info["step"] == 5:
            with torch.no_grad():
                model.fc.weight.fill_(float("nan"))

    monkeypatch.setattr(loop, "_FiniteGuard", EveryFewSteps)
    model = _fresh()
    with pytest.raises(TrainingDiverged) as stopped:
        train(model, make_bundle(), _cfg(epochs=1), step_callbacks=[poison])
    assert str(stopped.value).startswith("loss or gradient norm became non-finite in a step up to the one at epoch 1, "
                                         "step 6 (lr "), str(stopped.value)


def test_only_weights_with_two_or_more_dims_decay_and_frozen_params_are_left_out():
    model = _fresh()
    model.conv.weight.requires_grad_(False)
    opt = build_optimizer(model, "sgd", lr=0.1, weight_decay=0.01)
    in_opt = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    expected = {id(p): (0.01 if p.ndim >= 2 else 0.0) for p in model.parameters() if p.requires_grad}
    assert in_opt == expected
    assert id(model.conv.weight) not in in_opt


def test_adamw_steps_as_torchs_adamw_with_its_defaults_and_decay_on_weights_only():
    """config.py: "AdamW has its own moment estimates (betas 0.9, 0.999)": torch's AdamW with its
    defaults over the hand-made groups (decay on >= 2-D tensors only) is the reference, over several
    steps so that the moments' decay rates show (one step's m / sqrt(v) is sign(g) whatever the betas)."""
    ours, ref = _fresh(), _fresh()
    opt = build_optimizer(ours, "adamw", lr=0.01, weight_decay=0.1)
    _assert_steps_alike(ours, opt, ref, torch.optim.AdamW(_decay_on_weights(ref, 0.1), lr=0.01), steps=20)


def _decay_on_weights(model, weight_decay):
    """The parameter groups by hand: decay on the >= 2-D tensors (conv and linear weights) only."""
    params = list(model.parameters())
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def _assert_steps_alike(ours, opt, ref, ref_opt, steps):
    """Give both models the same made-up gradients for ``steps`` steps; their weights stay equal."""
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        grads = [torch.randn(p.shape, generator=g) * (1 + i) for i, p in enumerate(ref.parameters())]
        for model, optimizer in ((ours, opt), (ref, ref_opt)):
            for p, grad in zip(model.parameters(), grads):
                p.grad = grad.clone()
            optimizer.step()
    for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("kw", [{}, {"momentum": 0.5}, {"momentum": 0.5, "nesterov": False}],
                         ids=["defaults", "momentum", "no_nesterov"])
def test_sgd_steps_as_torchs_sgd_with_the_asked_momentum_and_the_configs_defaults(kw):
    """build_optimizer's own defaults are TrainConfig's (lr 0.1, momentum 0.9, Nesterov, decay 5e-4
    on weights only); a momentum or nesterov asked for reaches torch's SGD (a momentum fixed at 0.9
    and a default nesterov=False passed every test). Several steps: momentum shows from the second."""
    config = TrainConfig()
    ours, ref = _fresh(), _fresh()
    opt = build_optimizer(ours, **kw)
    ref_opt = torch.optim.SGD(_decay_on_weights(ref, config.weight_decay), lr=config.lr,
                              **{"momentum": config.momentum, "nesterov": config.nesterov, **kw})
    _assert_steps_alike(ours, opt, ref, ref_opt, steps=5)


@pytest.mark.parametrize("name", ["cosine", "onecycle", "step", "constant"])
def test_schedules_follow_their_closed_forms(name):
    total, warm = 100, 10
    f = schedule_fn(name, total, warm)
    for t in (0, 5, 9):
        assert f(t) == pytest.approx((t + 1) / warm)
    for t in (10, 37, 50, 74, 75, 99):
        p = (t - warm) / (total - warm)
        want = {"cosine": 0.5 * (1 + math.cos(math.pi * p)), "onecycle": 1 - p,
                "step": 0.1 ** ((t >= 50) + (t >= 75)), "constant": 1.0}[name]
        assert f(t) == pytest.approx(want)


def test_onecycle_without_warmup_ramps_up_over_the_first_quarter():
    """config.py and docs/DISTRIBUTED.md: onecycle "ramps up over its first quarter" when no warmup is
    given: 100 steps rise over 25 to the peak, then fall linearly to 0 over the other 75."""
    f = schedule_fn("onecycle", 100)
    assert [f(t) for t in range(100)] == pytest.approx(
        [(t + 1) / 25 if t < 25 else 1 - (t - 25) / 75 for t in range(100)], rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("name", ["cosine", "onecycle"])
def test_a_schedule_stays_at_0_after_its_last_step(name):
    """cosine and onecycle decay "to 0": past total_steps (a scheduler stepped more times than it was
    built for) the rate stays at 0; it must not climb back (cosine) or turn negative (onecycle: an
    ascent)."""
    f = schedule_fn(name, 100, 10)
    assert [f(t) for t in (100, 101, 150)] == pytest.approx([0.0] * 3, abs=1e-15)


@pytest.mark.parametrize("schedule", ["cosine", "onecycle"])
def test_train_sets_each_steps_lr_from_the_warmup_and_the_schedule_over_the_whole_run(schedule):
    """train's own wiring, step by step: warmup_epochs=1 ramps the rate linearly over the first
    epoch's 6 steps, then the schedule decays it over the other 12 of the run's 18, reaching 0 at
    the end (the last epoch's record). Recomputed by hand from the papers' forms, not schedule_fn."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    seen = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append(opt.param_groups[0]["lr"]))
    try:
        history = train(_fresh(), make_bundle(), _cfg(epochs=3, lr=0.1, schedule=schedule, warmup_epochs=1.0))
    finally:
        handle.remove()
    steps, warm = 18, 6  # 96 images in batches of 16, 3 epochs; one epoch of warmup
    decay = {"cosine": lambda p: 0.5 * (1 + math.cos(math.pi * p)), "onecycle": lambda p: 1 - p}[schedule]
    want = [0.1 * (t + 1) / warm if t < warm else 0.1 * decay((t - warm) / (steps - warm)) for t in range(steps)]
    assert seen == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert history.epochs[-1]["lr"] == pytest.approx(0.0, abs=1e-15)  # after the last step: the end


def test_evaluate_uses_running_statistics_and_restores_train_mode():
    model, data = _fresh(), make_bundle()
    train(model, data, _cfg(epochs=1))
    model.train()
    ev = evaluate(model, data.test, num_classes=3)
    assert model.training
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in data.test])
    y = torch.cat([y for _, y in data.test])
    assert ev["acc"] == pytest.approx(float((logits.argmax(1) == y).double().mean()))
    assert ev["loss"] == pytest.approx(float(torch.nn.functional.cross_entropy(logits.double(), y)), rel=1e-6)
    assert int(ev["confusion"].sum()) == len(y)


def test_evaluate_restores_each_modules_mode_when_the_loader_fails_part_way():
    """docs: train/eval modes are restored afterwards, after an error too (a loader that breaks on its
    second batch): the model is back in training mode, and a BN its owner put in eval stays in eval."""
    model = _fresh().train()
    model.bn.eval()

    def breaking():
        yield torch.randn(4, 1, 6, 6), torch.tensor([0, 1, 2, 0])
        raise OSError("unreadable image")

    with pytest.raises(OSError, match="unreadable image"):
        evaluate(model, breaking(), num_classes=3)
    assert [(name, m.training) for name, m in model.named_modules()] == [
        ("", True), ("conv", True), ("bn", False), ("drop", True), ("fc", True)]


def test_training_learns_the_separable_toy_task():
    model, data = _fresh(), make_bundle()
    hist = train(model, data, _cfg(epochs=15, lr=0.3))
    assert hist.epochs[-1]["test_acc"] > 0.9 and hist.epochs[-1]["train_loss"] < hist.epochs[0]["train_loss"]


def test_resume_without_out_is_a_clear_error():
    with pytest.raises(ValueError, match="--out"):
        TrainConfig(resume=True)


def test_mid_epoch_resume_with_the_in_memory_loader_matches_uninterrupted_run(tmp_path):
    from resnet_lab.data import load_data

    def data():
        return load_data("fake", batch_size=32, image_size=8, in_channels=1, seed=3)

    def model():
        torch.manual_seed(0)
        from resnet_lab import create_model
        return create_model("resnet8", num_classes=10, in_channels=1)

    full = model()
    train(full, data(), _cfg(tmp_path / "full", epochs=2))
    part = model()
    hist = train(part, data(), _cfg(tmp_path / "run", epochs=2), step_callbacks=[_stop_after(n_steps=5)])
    assert hist.interrupted
    resumed = model()
    train(resumed, data(), _cfg(tmp_path / "run", epochs=2, resume=True))
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("kw", [{"grad_clip": 1.0}, {"sam": 0.05}])
def test_an_infinite_gradient_with_clipping_or_sam_stops_instead_of_writing_nan_weights(tmp_path, kw):
    """With clipping, or with SAM (whose ascent is scaled by the gradient's norm): the norm is named."""
    def blow_up(module, grad_in, grad_out):  # an inf gradient enters the conv, as in a 1000-layer plain net
        return (torch.full_like(grad_in[0], float("inf")),) if grad_in[0] is not None else grad_in

    model = _fresh()
    model.bn.register_full_backward_hook(blow_up)
    with pytest.raises(TrainingDiverged, match=r"gradient norm became .* at epoch 1, step 1"):
        train(model, make_bundle(), _cfg(tmp_path, **kw))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_googlenet_with_aux_heads_trains_on_the_papers_weighted_loss():
    from resnet_lab import create_model
    from resnet_lab.train.loop import _loss

    torch.manual_seed(0)
    model = create_model("googlenet", num_classes=3, aux_logits=True, small_input=True).train()
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    out = model(x)
    ce = torch.nn.functional.cross_entropy
    assert torch.allclose(_loss(out, y, 0.0), ce(out[0], y) + 0.3 * (ce(out[1], y) + ce(out[2], y)))


def test_flip_tta_averages_the_probabilities_of_each_image_and_its_mirror():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 3, 5))
    model[1].running_mean.uniform_(-1, 1)  # eval mode must use these
    x = torch.randn(40, 1, 8, 5)  # non-square: the mirror is along the last (width) axis
    y = torch.randint(0, 5, (40,))
    batches = [(x[:16], y[:16]), (x[16:], y[16:])]
    ev = evaluate(model, batches, num_classes=5, tta=True)
    # float64 reference on a copy of the model
    ref = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        p = (ref(x.double()).softmax(1) + ref(torch.flip(x.double(), dims=[3])).softmax(1)) / 2
        q = ref(x.double()).log_softmax(1)
    assert ev["acc"] == pytest.approx(float((p.argmax(1) == y).double().mean()))
    assert ev["loss"] == pytest.approx(float(-p[torch.arange(40), y].log().mean()), rel=1e-5)
    plain = evaluate(model, batches, num_classes=5)
    assert plain["loss"] == pytest.approx(float(-q[torch.arange(40), y].mean()), rel=1e-5)
    assert plain["loss"] != pytest.approx(ev["loss"], rel=1e-3)  # the mirror really was used


def test_shift_tta_averages_ten_views_each_moved_one_pixel_with_the_black_pixel_fill():
    torch.manual_seed(2)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 4, 5))
    x, y = torch.randn(30, 1, 8, 6), torch.randint(0, 5, (30,))
    batches = [(x[:11], y[:11]), (x[11:], y[11:])]
    ev = evaluate(model, batches, num_classes=5, tta=True, tta_shift=1, fill=[-0.8])

    def moved(v, dy, dx):  # float64 reference: constant-pad by one pixel, then crop the shifted window
        padded = torch.nn.functional.pad(v, (1, 1, 1, 1), value=-0.8)
        return padded[..., 1 - dy:1 - dy + 8, 1 - dx:1 - dx + 6]

    ref = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        views = [moved(b, dy, dx) for b in (x.double(), x.double().flip(-1))
                 for dy, dx in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))]
        p = torch.stack([ref(v).softmax(1) for v in views]).mean(0)
    assert ev["acc"] == pytest.approx(float((p.argmax(1) == y).double().mean()))
    assert ev["loss"] == pytest.approx(float(-p[torch.arange(30), y].log().mean()), rel=1e-5)
    flip_only = evaluate(model, batches, num_classes=5, tta=True)
    assert flip_only["loss"] != pytest.approx(ev["loss"], rel=1e-3)  # the shifted views really were used
    with pytest.raises(ValueError, match="tta_shift must be 0 .* got -2"):
        evaluate(model, batches, num_classes=5, tta_shift=-2)
    with pytest.raises(ValueError, match="tta pattern must be one of cross, diamond, got 'square'"):
        evaluate(model, batches, num_classes=5, tta=True, tta_shift=1, tta_pattern="square")


def test_an_ensemble_averages_the_probabilities_of_its_models():
    torch.manual_seed(1)
    models = [torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4)) for _ in range(3)]
    x, y = torch.randn(30, 1, 3, 4), torch.randint(0, 4, (30,))
    for tta in (False, True):
        ev = evaluate(models, [(x[:7], y[:7]), (x[7:], y[7:])], num_classes=4, tta=tta)
        with torch.no_grad():
            views = [x.double(), x.double().flip(-1)] if tta else [x.double()]
            p = torch.stack([copy.deepcopy(m).double()(v).softmax(1) for m in models for v in views]).mean(0)
        assert ev["acc"] == pytest.approx(float((p.argmax(1) == y).double().mean()))
        assert ev["loss"] == pytest.approx(float(-p[torch.arange(30), y].log().mean()), rel=1e-5)
        assert int(ev["confusion"].sum()) == 30
    with pytest.raises(ValueError, match="at least one model"):
        evaluate([], [(x, y)], num_classes=4)


def _constant_model(logits: list[float]) -> torch.nn.Module:
    """A model that gives every image the same ``logits``."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, len(logits)))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor(logits))
    return model


def test_an_ensemble_predicts_the_class_of_the_highest_averaged_probability_not_of_the_averaged_logits():
    """Hand-computed: softmax([0, 3, -9]) = [.047, .953, 0] and softmax([0, -9, 3.5]) = [.029, 0, .971]
    average to [.038, .476, .486], so class 2; their averaged logits [0, -3, -2.75] would name class 0."""
    models = [_constant_model([0.0, 3.0, -9.0]), _constant_model([0.0, -9.0, 3.5])]
    x, y = torch.randn(5, 1, 3, 4), torch.full((5,), 2)
    assert [evaluate(m, [(x, y)], num_classes=3)["acc"] for m in models] == [0.0, 1.0]
    ev = evaluate(models, [(x, y)], num_classes=3)
    assert ev["acc"] == 1.0 and ev["confusion"][2, 2] == 5


def test_evaluate_returns_rows_of_true_classes_per_class_recall_and_the_loss_averaged_over_images():
    """Hand-computed: a model naming class 2 for every image, on labels 0, 0, 1, 2, 2, 2 in batches of
    1 and 5: the confusion matrix's rows are the true classes (metrics.confusion_matrix, docs/REPORT.md),
    per-class accuracy is each row's recall, and the loss is the mean over the 6 images, not over the 2
    batches."""
    logits = [0.0, 1.0, 3.0]
    x, y = torch.randn(6, 1, 3, 4), torch.tensor([0, 0, 1, 2, 2, 2])
    ev = evaluate(_constant_model(logits), [(x[:1], y[:1]), (x[1:], y[1:])], num_classes=3)
    assert ev["confusion"].tolist() == [[0, 0, 2], [0, 0, 1], [0, 0, 3]]
    assert ev["per_class_acc"] == [0.0, 0.0, 1.0]
    assert ev["acc"] == 0.5 and ev["n"] == 6
    nll = [math.log(sum(math.exp(v) for v in logits)) - logits[c] for c in y.tolist()]
    assert ev["loss"] == pytest.approx(sum(nll) / 6, rel=1e-6)


def test_evaluate_on_a_loader_that_yields_nothing_is_a_clear_error():
    with pytest.raises(ValueError, match="evaluation loader yielded no samples"):
        evaluate(_constant_model([0.0, 1.0, 2.0]), [], num_classes=3)


@pytest.mark.parametrize("epoch, seconds, left", [(1, 90.0, "left ~3:00"), (2, 90.0, "left ~1:30"),
                                                  (3, 90.0, "left ~0:00"), (1, 1830.5, "left ~1:01:01")])
def test_the_epoch_line_says_the_time_left_for_the_epochs_still_to_train(epoch, seconds, left):
    """Each epoch still to come takes as long as this one's training did: 90 s each, out of 3; two
    epochs of 1830.5 s left are 3661 s, an hour, a minute and a second (h:mm:ss past an hour)."""
    from resnet_lab.train.loop import History, _epoch_line

    record = {"epoch": epoch, "train_loss": 0.5, "train_acc": 0.8, "images_per_second": 100.0,
              "train_seconds": seconds}
    assert _epoch_line(record, _cfg(epochs=3, eval_every=3), History()).endswith(left)


def test_an_epochs_images_per_second_is_its_training_images_over_its_training_seconds():
    history = train(TinyNet(), make_bundle(n_train=96, batch_size=16), _cfg(epochs=2), log=lambda s: None)
    for record in history.epochs:  # 6 full batches of 16 an epoch
        assert record["images_per_second"] * record["train_seconds"] == pytest.approx(96)


def test_the_first_evaluated_epoch_is_the_best_even_at_zero_accuracy(tmp_path):
    """best.safetensors must exist once an epoch was evaluated: a run at 0% (a fine-tune on
    unseen classes can start there) used to never write it, and evaluate --best then failed."""
    from resnet_lab.train.loop import History
    from tinytrain import TinyLoader

    h = History()
    assert h.add({"epoch": 1, "train_loss": 1.0}) is False  # not evaluated: never the best
    assert h.add({"epoch": 2, "test_acc": 0.0}) is True and (h.best_epoch, h.best_acc) == (2, 0.0)
    assert h.add({"epoch": 3, "test_acc": 0.0}) is False and h.best_epoch == 2  # a tie keeps the earlier
    assert h.add({"epoch": 4, "test_acc": 0.5}) is True and h.best_epoch == 4

    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():
        model.fc.bias.copy_(torch.tensor([0.0, 0.0, -1e4]))  # class 2 is never predicted
    data = make_bundle()
    x, _ = next(iter(data.test))
    data.test = TinyLoader(x, torch.full((len(x),), 2), 16, False)  # ... and is every test label
    history = train(model, data, TrainConfig(epochs=1, lr=1e-9, device="cpu", progress=False, out=str(tmp_path)))
    assert history.best_acc == 0.0 and history.best_epoch == 1
    assert (tmp_path / "best.safetensors").is_file()


def _fake(**kw):
    from resnet_lab.data import load_data

    return load_data("fake", image_size=8, subset=32, batch_size=16, **kw)


def _quick(tmp_path=None, **kw):
    return TrainConfig(epochs=1, device="cpu", progress=False, plots=False, max_steps_per_epoch=1,
                       out=str(tmp_path) if tmp_path else None, **kw)


@pytest.mark.parametrize("case, error, message", [
    ("outputs", ValueError, "the model has 20 outputs but the data has 10 classes: create_model(..., num_classes=10)"),
    ("channels", ValueError, "the model takes 3 input channels but the data has 1"),
    ("config", TypeError, "config must be a TrainConfig, got dict"),
    ("data", TypeError, "data must be a DataBundle"),
    ("no arch", ValueError, "the model has no model_config, so the run in out could not be loaded back"),
])
def test_train_refuses_a_model_that_does_not_fit_the_data_before_any_step(tmp_path, case, error, message):
    """Each of these trained before and failed later (a run that never loads back, predict refusing
    20 outputs for 10 names) or deep inside torch (a conv's channel error, 'Target 9 is out of bounds')."""
    from resnet_lab.models import create_model

    model, data, config = create_model("resnet8", num_classes=10), _fake(), _quick(tmp_path / "run")
    if case == "outputs":
        model = create_model("resnet8", num_classes=20)
    elif case == "channels":
        data = _fake(in_channels=1)
    elif case == "config":
        config = {"epochs": 1}
    elif case == "data":
        data = "fake"
    else:
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10))
    with pytest.raises(error) as e:
        train(model, data, config)
    assert message in str(e.value)
    assert not (tmp_path / "run").exists()


def test_a_model_without_model_config_still_trains_without_a_run_directory():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(192, 10))
    assert train(model, _fake(), _quick()).epochs


def test_evaluate_refuses_a_num_classes_other_than_the_models_outputs():
    from resnet_lab.models import create_model

    with pytest.raises(ValueError, match="the model has 10 outputs but num_classes is 20"):
        evaluate(create_model("resnet8", num_classes=10), _fake().test, num_classes=20)


def test_save_model_refuses_a_meta_that_does_not_describe_the_model(tmp_path):
    from resnet_lab.models import create_model
    from resnet_lab.runs import load_model, save_model

    r8 = create_model("resnet8", num_classes=10)
    meta = {"arch": r8.model_config, "classes": [str(i) for i in range(10)], "input_size": [3, 8, 8],
            "mean": [0.5] * 3, "std": [0.25] * 3}
    with pytest.raises(ValueError, match=r"meta's arch \(resnet8\) does not describe the model \(resnet20\)"):
        save_model(tmp_path / "a", create_model("resnet20", num_classes=10), meta)
    with pytest.raises(ValueError, match="meta names 1 classes but the model has 10 outputs"):
        save_model(tmp_path / "b", r8, {**meta, "classes": ["a"]})
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    save_model(tmp_path / "c", r8, meta)  # the model's own meta: saved, and loads back
    assert load_model(tmp_path / "c")[1]["arch"]["name"] == "resnet8"


@pytest.mark.parametrize("kw, message", [
    ({"epochs": 1.5}, "TrainConfig.epochs must be an int, got 1.5"),
    ({"lr": "0.1"}, "TrainConfig.lr must be a number or None, got '0.1'"),
    ({"deterministic": "no"}, "TrainConfig.deterministic must be True or False, got 'no'"),
    ({"lr_scale": 0.1}, "TrainConfig.lr_scale must be a dict, got 0.1"),
])
def test_train_config_fields_of_the_wrong_kind_are_type_errors(kw, message):
    with pytest.raises(TypeError) as e:
        TrainConfig(**kw)
    assert str(e.value) == message


def test_create_model_refuses_a_string_for_small_input():
    from resnet_lab.models import create_model

    with pytest.raises(TypeError, match="small_input must be True or False, got 'no'"):
        create_model("resnet18", small_input="no")


def test_an_lr_scale_prefix_that_matches_no_parameter_is_refused_naming_the_modules():
    from resnet_lab.models import create_model

    model = create_model("resnet8", num_classes=10)
    with pytest.raises(ValueError, match=r"lr_scale prefix 'layr3\.' matches no parameter of the model; its "
                                         r"parameters start with: bn1, conv1, fc, layer1, layer2, layer3"):
        build_optimizer(model, lr_scale={"layer3.": 0.5, "layr3.": 0.0})
    groups = build_optimizer(model, lr_scale={"layer3.": 0.5}).param_groups
    assert {g["lr_scale"] for g in groups} == {0.5, 1.0}


def test_evaluate_takes_auto_and_names_the_devices_for_an_unknown_one():
    from resnet_lab.models import create_model

    model, test = create_model("resnet8", num_classes=10), _fake().test
    assert evaluate(model, test, num_classes=10, device="auto")["n"] == evaluate(model, test, num_classes=10)["n"]
    with pytest.raises(ValueError, match=r"unknown device 'gpu' \(--device\): use auto, cpu, cuda, cuda:N or mps"):
        evaluate(model, test, num_classes=10, device="gpu")


@pytest.mark.parametrize("kw, error, match", [
    ({"out": ""}, ValueError, r"out \(--out\) is an empty string: give a run directory, or None to write nothing"),
    ({"out": 5}, TypeError, r"out \(--out\) must be a path .*got 5"),
    ({"device": "gpu"}, ValueError, r"unknown device 'gpu' \(--device\): use auto, cpu, cuda, cuda:N or mps"),
    ({"lr_scale": {"fc": "x"}}, ValueError, r"lr_scale factors must be finite and >= 0, got \{'fc': 'x'\}"),
])
def test_train_config_refuses_nonsense_when_made(kw, error, match):
    """out="" quietly wrote nothing, out=5 and device="gpu" failed only when train() ran, and a
    string factor was Python's "must be real number, not str"."""
    with pytest.raises(error, match=match):
        TrainConfig(**kw)
    assert TrainConfig(device="cuda:0").device == "cuda:0"  # the name: whether it exists is checked by train()


@pytest.mark.parametrize("which", ["bogus", None, "last"])
def test_load_model_refuses_a_which_other_than_model_or_best(tmp_path, which):
    """"bogus" was looked for as bogus.safetensors ("is it a resnet-lab run directory?"), and on a
    weights file the message talked about the CLI's --best."""
    from resnet_lab.models import create_model
    from resnet_lab.runs import load_model, save_model

    r8 = create_model("resnet8", num_classes=10)
    save_model(tmp_path / "r", r8, {"classes": [str(i) for i in range(10)], "input_size": [3, 8, 8],
                                    "mean": [0.5] * 3, "std": [0.25] * 3})
    for source in (tmp_path / "r", tmp_path / "r" / "model.safetensors"):
        with pytest.raises(ValueError, match=rf"which must be 'model' \(the last epoch\) or 'best' .*got {which!r}"):
            load_model(source, which=which)
    assert load_model(tmp_path / "r", which="model")[0].model_config["name"] == "resnet8"


@pytest.mark.parametrize("before", [(False, False), (True, False), (True, True)])
def test_deterministic_mode_is_the_callers_again_after_train_returns_or_fails(tmp_path, before):
    """deterministic=True switched torch's process-wide deterministic algorithms on and left them on
    after train() (later code in the process ran slower or warned); a run that could not start left
    them on too."""
    saved = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    seen = []
    try:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        train(_fresh(), make_bundle(), _cfg(epochs=1),
              callbacks=[lambda r: seen.append(torch.are_deterministic_algorithms_enabled())])
        assert seen == [True]  # on while it ran
        assert (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) == before
        with pytest.raises(ValueError, match="no full batch"):  # refused in setup, after the model was prepared
            train(_fresh(), make_bundle(n_train=8), _cfg(epochs=1))
        assert (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) == before
        train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=1))
        train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=1, resume=True))  # finished already: no training
        assert (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) == before
        with pytest.raises(ValueError, match="--lr"):  # a resume refused for another recipe
            train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=2, lr=0.5, resume=True))
        assert (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) == before
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])


def test_ctrl_c_during_setup_is_not_replaced_by_a_failing_restore(monkeypatch):
    """A Ctrl-C inside torch's lazy imports (during setup) left them half loaded; putting the
    deterministic mode back then raised "module 'sympy' has no attribute 'logic'", which the CLI
    reported as an unexpected error instead of "interrupted"."""
    loop = importlib.import_module("resnet_lab.train.loop")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    def half_loaded(*args, **kwargs):
        raise AttributeError("module 'sympy' has no attribute 'logic'")

    monkeypatch.setattr(loop, "_build_run", interrupted)
    monkeypatch.setattr(torch, "use_deterministic_algorithms", half_loaded)
    with pytest.raises(KeyboardInterrupt):
        train(_fresh(), make_bundle(), _cfg(epochs=1))


def test_models_built_after_train_in_a_loop_start_where_they_would_without_train():
    """train() seeded the caller's global RNG with config.seed and left it so: every model built
    after a train() call in a loop got the same initial weights."""
    torch.manual_seed(7)
    reference = [TinyNet().state_dict() for _ in range(3)]  # built one after another, nothing between
    torch.manual_seed(7)
    built = []
    for _ in range(3):
        model = TinyNet()
        built.append(copy.deepcopy(model.state_dict()))
        train(model, make_bundle(), _cfg(epochs=1))
    for ref, got in zip(reference, built):
        assert all(torch.equal(ref[k], got[k]) for k in ref)
    assert not torch.equal(built[1]["conv.weight"], built[2]["conv.weight"])


CUBLAS = "CUBLAS_WORKSPACE_CONFIG"


def _raise(error):
    def cb(info):
        raise error
    return cb


@pytest.mark.parametrize("how", ["returns", "callback error", "ctrl-c in a callback", "refused at setup",
                                 "finished resume"])
def test_the_callers_rng_state_is_back_after_train(tmp_path, how):
    """The run's own seed must not replace the caller's global RNG, however train() ends."""
    kw = {}
    if how == "callback error":
        kw["step_callbacks"] = [_raise(RuntimeError("boom"))]
    elif how == "ctrl-c in a callback":
        kw["callbacks"] = [_raise(KeyboardInterrupt())]
    elif how == "finished resume":
        train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=1))
    config = _cfg(tmp_path if how == "finished resume" else None, epochs=1, resume=how == "finished resume",
                  checkpoint_segments=2 if how == "refused at setup" else 0)  # refused after the seeding
    model = TinyNet()
    torch.manual_seed(1234)
    torch.rand(5)  # a state no manual_seed gives
    before = torch.get_rng_state()
    if how in ("callback error", "refused at setup"):
        with pytest.raises(RuntimeError if how == "callback error" else ValueError,
                           match="boom" if how == "callback error" else "gradient checkpointing"):
            train(model, make_bundle(), config, **kw)
    else:
        hist = train(model, make_bundle(), config, **kw)
        assert hist.interrupted is (how == "ctrl-c in a callback")
    assert torch.equal(torch.get_rng_state(), before)


def test_a_model_handed_over_in_eval_mode_trains_as_one_in_train_mode():
    """An evaluated model is in eval mode; train must still train it in train mode (batch statistics,
    dropout), as the same model handed over in train mode."""
    in_train, in_eval = _fresh(), _fresh().eval()
    for model in (in_train, in_eval):
        train(model, make_bundle(), _cfg(epochs=1), log=lambda s: None)
    for (k, a), b in zip(in_train.state_dict().items(), in_eval.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_bf16_runs_epochs_are_evaluated_under_the_same_autocast():
    """docs/REPORT.md: a --bf16 run's own evaluation ran under the same autocast (evaluate's bf16)."""
    model, data = _fresh(), make_bundle()
    history = train(model, data, _cfg(epochs=1, bf16=True), log=lambda s: None)
    ev = {bf16: evaluate(model, data.test, num_classes=3, bf16=bf16)["loss"] for bf16 in (True, False)}
    assert history.last["test_loss"] == pytest.approx(ev[True], rel=1e-9)
    assert history.last["test_loss"] != pytest.approx(ev[False], rel=1e-6)


class _GradModeSpy(TinyNet):
    """TinyNet that records, for each forward pass, whether it ran in training mode and with autograd on."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append((self.training, torch.is_grad_enabled()))
        return super().forward(x)


def test_train_and_evaluate_run_their_evaluations_without_autograd():
    """An evaluation records no graph (torch.no_grad): train's per-epoch evaluation once ran with
    autograd on (a refactor left its internal evaluate undecorated), keeping every batch's graph and
    warning "Converting a tensor with requires_grad=True to a scalar"."""
    model, data = _GradModeSpy(), make_bundle()
    train(model, data, _cfg(epochs=1), log=lambda s: None)
    assert {(False, False)} == {c for c in model.calls if not c[0]}  # evaluation batches: eval mode, no grad
    assert any(c == (True, True) for c in model.calls)  # the training steps record the graph
    model.calls.clear()
    evaluate(model, data.test, num_classes=3)
    assert model.calls and set(model.calls) == {(False, False)}


def test_train_gives_the_same_weights_whatever_the_callers_rng_state():
    """Restoring the caller's RNG afterwards keeps the run itself seeded by config.seed alone
    (TinyNet's dropout draws from the global RNG while it trains)."""
    results = []
    for caller_seed in (1, 2):
        model = _fresh()
        torch.manual_seed(caller_seed)
        train(model, make_bundle(), _cfg(epochs=2))
        results.append(model.state_dict())
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])


@pytest.mark.parametrize("before", [None, ":16:8"])
def test_deterministic_on_cuda_puts_the_callers_cublas_workspace_setting_back(monkeypatch, before):
    """deterministic=True on CUDA set CUBLAS_WORKSPACE_CONFIG (setdefault) and left it set after
    train(); it turns cuDNN's benchmark off, and the caller's setting comes back too. No GPU here: the CUDA branch of the model's preparation runs on a model that stays
    where it is, then what train does at its end puts the caller's setting back."""
    loop = importlib.import_module("resnet_lab.train.loop")

    class Staying(TinyNet):
        def to(self, *args, **kwargs):  # the CUDA branch without a GPU
            return self

    if before is None:
        monkeypatch.delenv(CUBLAS, raising=False)
    else:
        monkeypatch.setenv(CUBLAS, before)
    saved = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    bench = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = True  # the caller's choice, which deterministic turns off while it runs
        caller = loop._caller_state()
        loop._prepare_model(Staying(), _cfg(epochs=1), torch.device("cuda"))
        assert os.environ.get(CUBLAS) == (before or ":4096:8")  # set while the run runs
        assert not torch.backends.cudnn.benchmark
        loop._restore_caller(caller)
        assert os.environ.get(CUBLAS) == before and torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.benchmark = bench


@pytest.mark.parametrize("initialized_before", [True, False])
def test_the_gpus_rng_comes_back_as_the_caller_had_it_or_would_find_it(monkeypatch, initialized_before):
    """No GPU here: torch.cuda's calls are recorded. CUDA in use before train: every GPU's state is
    put back; first used by the run: seeded as the caller's first use would have found it (CUDA
    seeds lazily with the last torch.manual_seed), not left where the run's seed took it."""
    loop = importlib.import_module("resnet_lab.train.loop")
    initialized, calls = [initialized_before], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: initialized[0])
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: ["the caller's"])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: calls.append(("set", states)))
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(("seed", seed)))
    torch.manual_seed(321)
    caller = loop._caller_state()
    torch.manual_seed(0)  # the run's seed
    initialized[0] = True  # the run used a GPU
    calls.clear()  # torch.manual_seed seeds CUDA too: only the restore's calls count
    loop._restore_caller(caller)
    assert calls == ([("set", ["the caller's"])] if initialized_before else [("seed", 321)])


def test_train_puts_the_cublas_workspace_setting_back_when_it_returns_or_fails(monkeypatch):
    """The restore is wired into train's end, on a normal return and on an error alike (a callback
    stands in for the CUDA branch, which sets the variable on a GPU)."""
    monkeypatch.delenv(CUBLAS, raising=False)

    def sets(info):
        os.environ[CUBLAS] = ":4096:8"

    train(_fresh(), make_bundle(), _cfg(epochs=1), step_callbacks=[sets])
    assert CUBLAS not in os.environ
    with pytest.raises(RuntimeError, match="boom"):
        train(_fresh(), make_bundle(), _cfg(epochs=1), step_callbacks=[sets, _raise(RuntimeError("boom"))])
    assert CUBLAS not in os.environ


def test_progress_bars_draw_on_a_terminal_only():
    """tqdm's carriage-return redraws filled a log (`resnet-lab train ... 2> log`) with junk: off a
    terminal no bar is drawn; on one it still is, unless progress is off."""
    for stream, progress, drawn in ((TerminalStream(), True, True), (io.StringIO(), True, False),
                                    (TerminalStream(), False, False)):
        with tqdm(total=3, disable=bar_disable(progress), file=stream) as bar:
            assert bar.disable is not drawn, (progress, type(stream))
            bar.update(3)
        assert ("3/3" in stream.getvalue()) is drawn, (progress, type(stream))
    assert on_terminal(TerminalStream()) and not on_terminal(io.StringIO()) and not on_terminal(object())


def test_on_terminal_asks_stderr_by_default_and_a_closed_stream_is_no_terminal(monkeypatch):
    """Bars draw on stderr (tqdm's default file), so the default stream is stderr, not stdout; a
    closed stream's isatty raises ValueError (io's own), which is no terminal either."""
    monkeypatch.setattr(sys, "stderr", TerminalStream())
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert on_terminal()
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    monkeypatch.setattr(sys, "stdout", TerminalStream())
    assert not on_terminal()
    closed = io.StringIO()
    closed.close()
    with pytest.raises(ValueError):
        closed.isatty()
    assert not on_terminal(closed)


def test_progress_bars_draw_in_ipython_whose_output_is_no_terminal(monkeypatch):
    """Jupyter without ipywidgets, qtconsole and Spyder give tqdm.auto plain tqdm, which on their
    non-terminal stream disabled itself under disable=None: the bar shown there before was gone."""
    import types

    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: object()))
    stream = io.StringIO()
    with tqdm(total=3, disable=bar_disable(True), file=stream) as bar:
        bar.update(3)
    assert "3/3" in stream.getvalue() and bar_disable(False) is True
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))  # imported, no shell
    assert bar_disable(True) is None


def test_train_draws_its_bar_on_a_terminal_and_none_into_a_file(capsys):
    config = TrainConfig(epochs=1, lr=0.05, progress=True, plots=False, device="cpu")
    terminal = TerminalStream()
    with contextlib.redirect_stderr(terminal):
        train(TinyNet(), make_bundle(), config, log=lambda s: None)
    assert "epoch 1/1" in terminal.getvalue() and "\r" in terminal.getvalue()
    train(TinyNet(), make_bundle(), config, log=lambda s: None)  # stderr captured: not a terminal
    assert "\r" not in capsys.readouterr().err


@pytest.mark.parametrize("eval_every", [1, 3])
def test_a_pause_of_stop_after_says_where_the_run_stands_in_one_line(tmp_path, eval_every):
    """With eval_every 3 neither epoch before the pause was evaluated: no best accuracy (not 0.00%)."""
    lines = []
    config = TrainConfig(epochs=3, lr=0.05, stop_after=2, out=str(tmp_path / "run"), progress=False, plots=False,
                         device="cpu", eval_every=eval_every)
    history = train(TinyNet(), make_bundle(), config, log=lines.append)
    told = [line for line in lines if "after epoch 2" in line]
    best = f"best test accuracy {100 * history.best_acc:.2f}% so far" if eval_every == 1 else "no epoch evaluated yet"
    assert told == [f"paused after epoch 2 of 3: {best}; continue with the same command and --resume (in Python: "
                    "resume=True)"]


def test_an_epoch_evaluated_at_zero_accuracy_is_a_best_of_0_00_percent_in_the_lines_not_none():
    """History's contract: the first evaluated epoch is the best whatever its accuracy, so once one
    was evaluated at 0% the epoch line and a pause say 0.00%, not "best -" / "no epoch evaluated"."""
    from resnet_lab.train.loop import History, _epoch_line, _pause_line

    history = History()
    record = {"epoch": 1, "train_loss": 1.1, "train_acc": 0.3, "test_loss": 1.2, "test_acc": 0.0,
              "images_per_second": 100.0, "train_seconds": 1.0}
    history.add(record)
    assert "  best 0.00%  " in _epoch_line(record, _cfg(epochs=3), history)
    assert _pause_line(history, 1, 3).startswith("paused after epoch 1 of 3: best test accuracy 0.00% so far;")
