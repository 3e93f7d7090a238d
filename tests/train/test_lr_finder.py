"""The learning-rate range test (resnet_lab.train.lr_find and `resnet-lab lr-find`).

References, independent of the code under test: the geometric sequence's closed form, the learning
rate each torch optimizer step really used (an optimizer step hook), the float64 debiased moving
average written out (fastai's AvgSmoothLoss), fastai's divergence rule (smoothed > 4 x its minimum),
the untouched model's cross-entropy on the first batch computed with torch, hand-worked suggestion
curves, and bit-exact ``torch.equal`` of every tensor the model held before the test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import inspect
import math
from types import SimpleNamespace

import matplotlib.figure
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torch.optim.optimizer import register_optimizer_step_pre_hook

import resnet_lab.data as rl_data
from resnet_lab.cli import main
from resnet_lab.data import load_data
from resnet_lab.models import create_model
from resnet_lab.train import LRFindResult, TrainConfig, lr_find, lr_find_figure
from resnet_lab.train.lr_finder import steep, valley

from support import FakeTorchvisionCifar10, TerminalStream, write_image_folder
from tinytrain import TinyNet, make_bundle
from trainspy import CallSpy, TrainSpy, patch_everywhere

# `import resnet_lab.train.lr_finder` would resolve resnet_lab.train to the re-exported function train.
lr_finder = importlib.import_module("resnet_lab.train.lr_finder")

CPU = TrainConfig(device="cpu", progress=False)


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class _NaNAt:
    """A loader whose batch number ``at`` (0-based, counted over all passes) is all NaN."""

    def __init__(self, loader, at: int) -> None:
        self.loader, self.at, self.seen = loader, at, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in self.loader:
            self.seen += 1
            yield (torch.full_like(x, math.nan) if self.seen - 1 == self.at else x), y


@pytest.fixture(scope="module")
def diverged() -> tuple[LRFindResult, int]:
    """TinyNet's range test up to lr 1e4, where its loss diverges (returns the result and the steps asked)."""
    torch.manual_seed(0)
    return lr_find(TinyNet(), make_bundle(), CPU, start_lr=1e-7, end_lr=1e4, steps=100), 100


# --- the model is left exactly as it was ----------------------------------------------------------


def _tiny():
    torch.manual_seed(0)
    model, data = TinyNet(), make_bundle()
    model.fc.eval()  # mixed modes: each module's own must come back
    model.fc.weight.grad = torch.full_like(model.fc.weight, 0.25)  # a gradient the caller left
    return model, data


def _resnet8():
    data = load_data("fake", image_size=8, batch_size=16, device="cpu")
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=len(data.info.classes), in_channels=3, small_input=True)
    model.eval()
    data.train.load_state_dict({"epoch": 3, "position": 5})  # mid-epoch: the position must come back
    return model, data


@pytest.mark.parametrize("make", [_tiny, _resnet8], ids=["tinynet", "resnet8"])
def test_lr_find_leaves_weights_bn_statistics_grads_modes_rng_and_loader_exactly_as_they_were(make):
    model, data = make()
    torch.manual_seed(1234)
    torch.rand(3)  # a caller's RNG somewhere in its stream
    before, rng = _snapshot(model), torch.get_rng_state()
    objects = {k: id(v) for k, v in [*model.named_parameters(), *model.named_buffers()]}
    grads = {k: None if p.grad is None else p.grad.clone() for k, p in model.named_parameters()}
    modes = {k: m.training for k, m in model.named_modules()}
    position = data.train.state_dict() if hasattr(data.train, "state_dict") else None
    tracked = []  # BN's step counter during the test: proves the test really trained in between
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    hook = bn.register_forward_hook(lambda m, i, o: tracked.append(int(m.num_batches_tracked)))

    result = lr_find(model, data, CPU, start_lr=1e-4, end_lr=1.0, steps=12)
    hook.remove()

    assert len(result.losses) == 12 and tracked[-1] > tracked[0] and len(set(result.losses)) > 1
    after = model.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():  # weights, running_mean/var, num_batches_tracked: bit for bit
        assert torch.equal(after[k], v) and after[k].dtype == v.dtype and after[k].device == v.device, k
    assert {k: id(v) for k, v in [*model.named_parameters(), *model.named_buffers()]} == objects
    for k, p in model.named_parameters():
        assert (p.grad is None and grads[k] is None) or torch.equal(p.grad, grads[k]), k
    assert {k: m.training for k, m in model.named_modules()} == modes
    assert torch.equal(torch.get_rng_state(), rng)
    if position is not None:
        assert data.train.state_dict() == position and data.train.resuming  # the pending resume too


def test_after_lr_find_a_loader_left_part_way_still_starts_its_next_pass_whole():
    """A pass the caller broke off is not continued by the next one (data.loaders); lr_find put the
    broken-off position back as a resume, so the next pass after it covered part of the split."""
    data = load_data("fake", batch_size=32, subset=256, device="cpu")
    whole = [y.clone() for _, y in data.train]
    for _ in zip(range(3), data.train):  # three batches, then the caller stops
        pass
    lr_find(create_model("resnet8", num_classes=10, in_channels=3), data, CPU, start_lr=1e-4, end_lr=1.0, steps=5)
    assert not data.train.resuming
    after = [y for _, y in data.train]
    assert len(after) == len(whole) == 8 and torch.equal(torch.cat(after).sort().values, torch.cat(whole).sort().values)


def test_a_non_finite_loss_stops_the_test_and_the_model_comes_back_unharmed():
    torch.manual_seed(0)
    model, data = TinyNet(), make_bundle()
    before = _snapshot(model)
    result = lr_find(model, _NaNAt(data.train, 4), CPU, start_lr=1e-4, end_lr=1.0, steps=12)
    assert result.stopped and len(result.losses) == 4  # the NaN step is not recorded
    assert all(math.isfinite(v) for v in result.losses + result.smoothed)
    for k, v in before.items():
        assert torch.equal(model.state_dict()[k], v), k


def test_lr_find_gives_the_same_result_whatever_the_callers_rng():
    runs = []
    for caller_seed in (1, 2):
        torch.manual_seed(0)
        model = TinyNet()  # same weights; TinyNet's dropout draws from the global RNG during the test
        torch.manual_seed(caller_seed)
        runs.append(lr_find(model, make_bundle(), CPU, start_lr=1e-4, end_lr=1.0, steps=8).losses)
    assert runs[0] == runs[1]


# --- what is measured -----------------------------------------------------------------------------


def test_lr_sequence_is_geometric_from_start_to_end_and_is_what_each_optimizer_step_used():
    start, end, steps = 1e-5, 1e-1, 15
    torch.manual_seed(0)
    model = TinyNet()
    config = dataclasses.replace(CPU, weight_decay=1e-3, lr_scale={"fc": 0.5})
    applied = []
    handle = register_optimizer_step_pre_hook(
        lambda opt, args, kwargs: applied.append([(g["lr"], g["lr_scale"], g["weight_decay"],
                                                   {p.ndim for p in g["params"]}) for g in opt.param_groups]))
    try:
        result = lr_find(model, make_bundle(), config, start_lr=start, end_lr=end, steps=steps)
    finally:
        handle.remove()
    closed = [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]
    assert result.lrs == pytest.approx(closed, rel=1e-12) and not result.stopped
    assert result.lrs[0] == pytest.approx(start, rel=1e-12) and result.lrs[-1] == pytest.approx(end, rel=1e-12)
    assert len(applied) == steps
    for i, groups in enumerate(applied):  # the library's param groups: lr_scale and decay as in training
        assert {scale for _, scale, _, _ in groups} == {1.0, 0.5}
        for lr, scale, decay, ndims in groups:
            assert lr == pytest.approx(closed[i] * scale, rel=1e-12)
            if min(ndims) >= 2:  # conv and linear weights
                assert decay == 1e-3
            else:  # BN weights and biases, the linear bias: never decayed
                assert max(ndims) < 2 and decay == 0.0


def test_norm_lr_scale_multiplies_the_norm_layers_rate_in_the_range_test_as_in_training():
    start, end, steps = 1e-4, 1e-2, 4
    torch.manual_seed(0)
    model = TinyNet()
    norm_params = {id(model.bn.weight), id(model.bn.bias)}
    seen = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: seen.append(
        [(g["lr"], {id(p) for p in g["params"]}) for g in opt.param_groups]))
    try:
        lr_find(model, make_bundle(), dataclasses.replace(CPU, norm_lr_scale=3.0), start_lr=start, end_lr=end,
                steps=steps)
    finally:
        handle.remove()
    closed = [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]
    assert len(seen) == steps
    for i, groups in enumerate(seen):
        for lr, ids in groups:  # the BN weight and bias at 3x the step's rate, everything else at 1x
            want = 3.0 if ids <= norm_params else 1.0
            assert not (ids & norm_params) or ids <= norm_params
            assert lr == pytest.approx(closed[i] * want, rel=1e-12)
        assert any(ids <= norm_params for _, ids in groups)


def test_smoothed_loss_is_the_debiased_moving_average_of_the_losses(diverged):
    result, _ = diverged
    average, expected = 0.0, []
    for k, loss in enumerate(np.asarray(result.losses, dtype=np.float64), start=1):
        average = 0.98 * average + 0.02 * loss
        expected.append(average / (1 - 0.98 ** k))
    assert result.smoothed == pytest.approx(expected, rel=1e-12)


def test_first_loss_is_the_untouched_models_training_loss_on_the_first_batch():
    torch.manual_seed(0)
    model, data = TinyNet(), make_bundle()
    reference = TinyNet()
    reference.load_state_dict(model.state_dict())
    data.train.set_epoch(0)
    x, y = next(iter(data.train))
    seeded = dataclasses.replace(CPU, seed=3)  # not the default: config.seed itself draws the dropout
    torch.manual_seed(seeded.seed)  # the test seeds dropout with config.seed, as train() does
    expected = F.cross_entropy(reference.train()(x), y).item()
    result = lr_find(model, data, seeded, start_lr=1e-4, end_lr=1.0, steps=4)
    assert result.losses[0] == pytest.approx(expected, rel=1e-6)


def test_stops_once_the_smoothed_loss_exceeds_four_times_its_minimum(diverged):
    result, steps = diverged
    s = result.smoothed
    assert result.stopped and len(s) < steps and result.steps == steps  # the steps asked for, not taken
    assert s[-1] > 4 * min(s)  # the last point broke the rule (recorded, as fastai does) ...
    assert all(s[k] <= 4 * min(s[:k + 1]) for k in range(len(s) - 1))  # ... and none before it


def test_end_lr_within_reach_runs_every_step():
    torch.manual_seed(0)
    result = lr_find(TinyNet(), make_bundle(), CPU, start_lr=1e-6, end_lr=1e-2, steps=30)  # 30 > one pass (6)
    assert not result.stopped and len(result.losses) == len(result.lrs) == 30


def test_suggestions_lie_in_the_tested_range_and_the_valley_below_the_divergence(diverged):
    result, _ = diverged
    assert result.valley in result.lrs and result.steep in result.lrs
    assert result.lrs[0] <= result.valley <= result.lrs[-1] and result.lrs[0] <= result.steep <= result.lrs[-1]
    assert result.valley < result.lrs[-1]  # the lr at which the loss diverged
    i = result.lrs.index(result.valley)
    assert min(result.smoothed[i:]) < result.smoothed[i]  # on the descent: the loss still falls after it


def test_valley_is_a_third_plus_a_sixth_into_the_longest_descent_as_fastai_counts():
    lrs = list(np.geomspace(1e-6, 1.0, 50))
    # 10 flat points, a strict descent over indices 10..39 (30 points), then a rise.
    losses = [1.0] * 10 + list(np.linspace(2.0, 0.5, 30)) + list(np.linspace(0.6, 3.0, 10))
    # fastai: the valley ends at index 39 with 30 points; its start is counted as 39 - 30 = 9;
    # the suggestion is 9 + int(30 / 3) + int(10 / 2) = 24.
    assert valley(lrs, losses) == lrs[24]
    # A descent from the very first point: start -1, so -1 + int(60 / 3) + int(20 / 2) = 29.
    lrs = list(np.geomspace(1e-6, 1.0, 80))
    assert valley(lrs, list(np.linspace(3.0, 1.0, 60)) + list(np.linspace(1.1, 4.0, 20))) == lrs[29]


def test_steep_is_the_start_of_the_steepest_fall_per_unit_of_log_lr():
    # Per log lr: -1/ln 10 = -0.43, -0.1/ln 1.1 = -1.05 (steepest), -0.9/ln(100/11) = -0.41.
    assert steep([1e-3, 1e-2, 1.1e-2, 1e-1], [3.0, 2.0, 1.9, 1.0]) == 1e-2
    lrs = list(np.geomspace(1e-4, 1.0, 8))
    assert steep(lrs, [5.0, 4.9, 4.7, 3.0, 2.9, 2.8, 2.9, 3.5]) == lrs[2]


def test_lr_find_refuses_a_bad_range_naming_the_value():
    for kwargs, words in (({"start_lr": 0.0}, "start_lr"), ({"end_lr": 1e-8}, "end_lr"), ({"steps": 1}, "steps"),
                          ({"beta": 1.0}, "beta"), ({"diverge": 1.0}, "diverge")):
        with pytest.raises(ValueError, match=words):
            lr_find(TinyNet(), make_bundle(), CPU, **kwargs)


# --- the plot -------------------------------------------------------------------------------------


def test_plot_has_a_log_lr_axis_both_curves_and_a_mark_at_each_suggestion():
    lrs = [1e-4, 1e-3, 1e-2, 1e-1]
    result = LRFindResult(lrs=lrs, losses=[2.0, 1.5, 1.0, 9.0], smoothed=[2.0, 1.7, 1.3, 4.5], valley=1e-3,
                          steep=1e-2, stopped=True, steps=10)
    fig = lr_find_figure(result)
    try:
        ax = fig.axes[0]
        assert ax.get_xscale() == "log"
        lines = {line.get_label(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()}
        assert lines["loss"] == (lrs, result.losses) and lines["smoothed loss (beta 0.98)"] == (lrs, result.smoothed)
        assert lines["valley: 1.00e-03"] == ([1e-3], [1.7]) and lines["steep: 1.00e-02"] == ([1e-2], [1.3])
        # scaled to the curve before the divergence, not its tail, with matplotlib's own 5% margins
        # (1.3 - 0.035, 2.0 + 0.035), as its autoscale would put them around that curve alone
        reference = matplotlib.figure.Figure().add_subplot()
        reference.plot(lrs[:-1], result.smoothed[:-1])
        assert ax.get_ylim() == pytest.approx(reference.get_ylim(), rel=1e-12)
        assert ax.get_ylim() == pytest.approx((1.265, 2.035), rel=1e-12)
    finally:
        plt.close(fig)


def test_plot_names_the_beta_that_smoothed_the_loss():
    result = lr_find(TinyNet(), make_bundle(), CPU, steps=6, beta=0.5)
    assert result.beta == 0.5
    fig = lr_find_figure(result)
    try:
        labels = [line.get_label() for line in fig.axes[0].get_lines()]
        assert "smoothed loss (beta 0.5)" in labels and "smoothed loss (beta 0.98)" not in labels
    finally:
        plt.close(fig)


# --- the command line -----------------------------------------------------------------------------

BASE = ["--model", "resnet8", "--dataset", "fake", "--image-size", "8", "--batch-size", "16", "--device", "cpu"]


def test_cli_lr_find_tests_the_asked_range_writes_the_png_and_prints_the_suggestion(capsys, monkeypatch, tmp_path):
    spy = CallSpy(monkeypatch, lr_finder.lr_find)
    png = tmp_path / "lr.png"
    code = main(["lr-find", *BASE, "--start-lr", "1e-4", "--end-lr", "0.5", "--steps", "12", "--out", str(png)])
    out = capsys.readouterr().out
    assert code == 0
    (_, kwargs), result = spy.calls[-1], spy.results[-1]
    assert kwargs == {"start_lr": 1e-4, "end_lr": 0.5, "steps": 12}
    assert result.lrs[0] == pytest.approx(1e-4) and len(result.lrs) <= 12
    if not result.stopped:
        assert len(result.lrs) == 12 and result.lrs[-1] == pytest.approx(0.5)
    assert f"suggested lr: {result.valley:.2e}" in out and f"--lr {result.valley:.2g}" in out
    assert f"steepest fall at {result.steep:.2e}" in out
    assert f"wrote {png}" in out
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size[0] > 100


def test_cli_lr_find_without_out_writes_nothing_and_still_suggests(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["lr-find", *BASE, "--start-lr", "1e-4", "--end-lr", "0.5", "--steps", "6"]) == 0
    assert "suggested lr:" in capsys.readouterr().out and not list(tmp_path.iterdir())


def test_cli_lr_find_refuses_a_bad_range_in_one_line(capsys):
    assert main(["lr-find", *BASE, "--start-lr", "1", "--end-lr", "0.1", "--steps", "6"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: end_lr (--end-lr) must be") and len(err.strip().splitlines()) == 1


# The flags lr-find shares with train, each compared with the same flag given to train.
SHARED = [
    ["--model", "resnet20"], ["--norm", "group"], ["--model", "resnet18", "--small-input", "no"], ["--zero-init-residual"],
    ["--dataset", "folder", "--data-dir", "FOLDER"], ["--dataset", "cifar10", "--data-dir", "CIFAR", "--download"],
    ["--image-size", "12"],
    ["--dataset", "folder", "--data-dir", "FOLDER", "--workers", "1"], ["--batch-size", "8"], ["--optimizer", "adamw"],
    ["--momentum", "0.5"], ["--no-nesterov"],
    ["--weight-decay", "0.01"], ["--label-smoothing", "0.1"], ["--grad-clip", "1.0"], ["--no-augment"],
    ["--seed", "3"], ["--device", "auto"], ["--channels-last"], ["--bf16"], ["--norm-lr-scale", "4"],
    ["--random-erasing", "0.5"], ["--flip", "alternate"], ["--crop-padding", "1"], ["--subset", "32"],
    ["--sam", "0.05"], ["--whiten"],
]


def _with(base: list[str], flags: list[str]) -> list[str]:
    """``base`` with ``flags``; a flag already in ``base`` takes the new value."""
    args = list(base)
    for i, flag in enumerate(flags):
        if not flag.startswith("--"):
            continue
        value = flags[i + 1:i + 2] if i + 1 < len(flags) and not flags[i + 1].startswith("--") else []
        if flag in args and value:
            args[args.index(flag) + 1] = value[0]
        elif flag not in args:
            args += [flag, *value]
    return args


def _fake_lr_find(monkeypatch) -> list[SimpleNamespace]:
    """lr_find replaced by one that records what it is given (model, config, keywords) and returns a
    two-step result at once; returns the list of its calls."""
    calls = []

    def fake_lr_find(model, data, config, **kwargs):
        calls.append(SimpleNamespace(model=model, config=config, kwargs=kwargs))
        return LRFindResult(lrs=[1e-3, 1e-2], losses=[2.0, 1.0], smoothed=[2.0, 1.5], valley=1e-3, steep=1e-3,
                            stopped=False, steps=2)

    patch_everywhere(monkeypatch, lr_finder.lr_find, fake_lr_find)
    return calls


def test_cli_lr_find_without_range_flags_tests_fastais_range_as_the_library_does(capsys, monkeypatch):
    """README: lr-find has fastai's defaults, 1e-7 to 10 over 100 steps, which are lr_find's own."""
    calls = _fake_lr_find(monkeypatch)
    assert main(["lr-find", *BASE]) == 0
    own = {k: p.default for k, p in inspect.signature(lr_find).parameters.items() if k in calls[-1].kwargs}
    assert calls[-1].kwargs == own == {"start_lr": 1e-7, "end_lr": 10.0, "steps": 100}
    assert "lr 1e-07 to 10 in 100 steps" in capsys.readouterr().out


@pytest.mark.parametrize("flags", SHARED, ids=lambda f: f[-2] if f[0] == "--model" and len(f) > 2 else f[0])
def test_lr_find_hands_model_data_and_step_flags_to_the_library_as_train_does(capsys, monkeypatch, tmp_path, flags):
    """lr-find shares train's model, data and step flags; each must reach the model, the data loader
    and the TrainConfig exactly as it does for train (whose tests show each one's effect)."""
    train_spy, data_spy = TrainSpy(monkeypatch, run=False), CallSpy(monkeypatch, rl_data.load_data)
    lr_calls = _fake_lr_find(monkeypatch)
    if "--download" in flags:  # torchvision's CIFAR-10 download, offline
        monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeTorchvisionCifar10)
        monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    flags = [str(write_image_folder(tmp_path / "pics", ("ants", "bees"), 12)) if f == "FOLDER" else str(tmp_path / "cifar") if f == "CIFAR" else f
             for f in flags]
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"lr"}  # the range test sets the lr itself

    def request(call, data_call) -> dict:
        config = {k: v for k, v in dataclasses.asdict(call.config).items() if k in fields}
        data = dataclasses.asdict(data_call[0][0])
        weights = sum(float(p.detach().double().sum()) for p in call.model.parameters())
        return {"config": config, "data": data, "arch": call.model.model_config, "weights": weights}

    changes = {}
    for command, calls, extra in (("train", train_spy.calls, ["--epochs", "1", "--no-progress"]),
                                  ("lr-find", lr_calls, [])):
        seen = []
        for argv in (BASE, _with(BASE, flags)):
            assert main([command, *argv, *extra]) == 0
            seen.append(request(calls[-1], data_spy.calls[-1]))
        changes[command] = {part: {k: v for k, v in seen[1][part].items() if seen[0][part].get(k) != v}
                            if isinstance(seen[1][part], dict) else seen[1][part] != seen[0][part]
                            for part in seen[0]}
    capsys.readouterr()
    train_changes = {k: v for k, v in changes["train"].items() if v}
    assert train_changes, f"{flags} changed nothing for train"
    assert {k: v for k, v in changes["lr-find"].items() if v} == train_changes


def test_a_test_that_diverges_at_once_suggests_nothing_rather_than_a_rate_that_diverged(capsys):
    """From 1e6 the loss explodes within a few steps: fastai's window is empty, and the old fallback
    (the whole record) suggested the very rate that diverged."""
    code = main(["lr-find", *BASE, "--start-lr", "1e6", "--end-lr", "1e7", "--steps", "20", "--no-augment"])
    out = capsys.readouterr().out
    assert code == 0 and "the loss diverged after" in out
    assert "suggested lr" not in out and "no suggestion: the loss diverged after" in out and "lower --start-lr" in out


def test_lr_find_takes_plain_full_size_unmixed_steps_whatever_the_recipe_says():
    # progressive_resize and mixup were applied: the test saw 16 px images and blended labels.
    data = load_data("fake", batch_size=16, subset=64, image_size=32, augment=False)
    seen = []
    model = create_model("resnet8", num_classes=len(data.info.classes))
    hook = model.register_forward_pre_hook(lambda m, args: seen.append(tuple(args[0].shape[-2:])))
    try:
        plain = lr_find(model, data, CPU, start_lr=1e-4, end_lr=0.1, steps=6)
        recipe = dataclasses.replace(CPU, epochs=10, progressive_resize=16, mixup=0.4, cutmix=1.0)
        with_recipe = lr_find(model, data, recipe, start_lr=1e-4, end_lr=0.1, steps=6)
    finally:
        hook.remove()
    assert set(seen) == {(32, 32)}
    assert with_recipe.losses == plain.losses  # the same seed, the same plain steps


def test_lr_find_checks_the_model_against_the_data_as_train_does():
    data = make_bundle()
    with pytest.raises(TypeError, match="config must be a TrainConfig, got dict"):
        lr_find(TinyNet(), data, {"device": "cpu"})
    gray = load_data("fake", batch_size=16, subset=32, image_size=16, in_channels=1)
    with pytest.raises(ValueError, match=r"the model has 3 outputs but the data has 10 classes"):
        lr_find(create_model("resnet8", num_classes=3, in_channels=1), gray, CPU, steps=6)
    with pytest.raises(ValueError, match=r"the model takes 3 input channels but the data has 1"):
        lr_find(create_model("resnet8", num_classes=10), gray, CPU, steps=6)


@pytest.mark.parametrize("steps", [2, 3, 4])
def test_too_few_steps_give_no_suggestion_instead_of_an_end_of_the_range(steps, capsys):
    result = lr_find(TinyNet(), make_bundle(), CPU, start_lr=1e-4, end_lr=1e-3, steps=steps)
    assert not result.stopped and len(result.lrs) == steps
    assert result.valley is None and result.steep is None
    assert valley([1e-3, 1e-2], [5.0, 4.0]) == 1e-3  # fastai's start of -1 no longer wraps to the last rate
    assert main(["lr-find", *BASE, "--start-lr", "1e-4", "--end-lr", "1e-3", "--steps", str(steps)]) == 0
    out = capsys.readouterr().out
    assert f"no suggestion: {steps} steps are too few to show a valley; use more --steps" in out
    assert "suggested lr" not in out


def test_a_first_loss_that_is_not_finite_is_blamed_on_the_data_or_model_not_the_rate(capsys, monkeypatch):
    # The first loss comes before any update: "lower --start-lr" could not help.
    import resnet_lab.cli as cli

    real = cli.lr_find

    def nan_model(model, *args, **kwargs):
        with torch.no_grad():
            next(model.parameters()).fill_(float("nan"))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(cli, "lr_find", nan_model)
    assert main(["lr-find", *BASE, "--steps", "10"]) == 0
    out = capsys.readouterr().out
    assert "the first loss was not finite" in out
    assert "no suggestion: the first loss, before any update, was not finite; check the data and the model" in out
    result = LRFindResult(lrs=[], losses=[], smoothed=[], valley=None, steep=None, stopped=True, steps=10)
    fig = lr_find_figure(result)
    try:
        assert fig.axes[0].get_title() == "learning-rate range test: the first loss was not finite"
    finally:
        plt.close(fig)


def test_lr_find_no_progress_hides_the_bar_and_reaches_the_config(capsys, monkeypatch):
    seen = []
    real = lr_finder.lr_find

    def spy(model, data, config, **kwargs):
        seen.append(config.progress)
        return real(model, data, config, **kwargs)

    patch_everywhere(monkeypatch, lr_finder.lr_find, spy)
    argv = ["lr-find", *BASE, "--start-lr", "1e-4", "--end-lr", "0.5", "--steps", "6"]
    streams = []
    for extra in ([], ["--no-progress"]):
        streams.append(TerminalStream())  # bars draw on a terminal only
        with contextlib.redirect_stderr(streams[-1]):
            assert main([*argv, *extra]) == 0
    bar, quiet = (s.getvalue() for s in streams)
    assert seen == [True, False] and "lr range test" in bar and "lr range test" not in quiet
    assert main(argv) == 0  # stderr captured, no terminal: no bar either
    assert "lr range test" not in capsys.readouterr().err


def test_lr_find_fp16_on_a_cpu_is_refused_as_train_refuses_it(capsys):
    assert main(["lr-find", *BASE, "--steps", "6", "--fp16"]) == 2
    lr_err = capsys.readouterr().err.strip()
    assert main(["train", *BASE, "--epochs", "1", "--no-progress", "--fp16"]) == 2
    assert lr_err == capsys.readouterr().err.strip() and "fp16" in lr_err and len(lr_err.splitlines()) == 1


def _interrupt_after(monkeypatch, n: int) -> None:
    """Ctrl-C once ``n`` losses are recorded (the user's KeyboardInterrupt, not the divergence stop)."""
    real = lr_finder._Recorder.add

    def add(self, loss):
        if len(self.losses) == n:
            raise KeyboardInterrupt
        return real(self, loss)

    monkeypatch.setattr(lr_finder._Recorder, "add", add)


def test_ctrl_c_keeps_what_was_measured_and_the_model_as_it_was(monkeypatch, capsys, tmp_path):
    """Ctrl-C threw the whole record away ("interrupted", no plot, no suggestion): now the library
    raises LRFindInterrupted carrying the steps so far, and the CLI prints and plots them."""
    torch.manual_seed(0)
    model = TinyNet()
    before = _snapshot(model)
    _interrupt_after(monkeypatch, 30)
    with pytest.raises(lr_finder.LRFindInterrupted) as stop:
        lr_find(model, make_bundle(), CPU, start_lr=1e-4, end_lr=1.0, steps=100)
    assert isinstance(stop.value, KeyboardInterrupt)  # a caller that catches Ctrl-C still does
    result = stop.value.result
    assert result.interrupted and not result.stopped and len(result.lrs) == len(result.losses) == 30
    assert result.lrs[1] == pytest.approx(1e-4 * 1e4 ** (1 / 99)) and result.valley in result.lrs
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    png = tmp_path / "lr.png"
    assert main(["lr-find", *BASE, "--steps", "100", "--out", str(png)]) == 130
    captured = capsys.readouterr()
    assert "interrupted after 30 steps, at lr" in captured.out and "suggested lr:" in captured.out
    assert f"wrote {png}" in captured.out and png.is_file()
    assert captured.err.strip().endswith("interrupted after 30 of 100 steps")


@pytest.mark.parametrize("taken", [0, 3], ids=["before a step", "after 3 steps"])
def test_an_interrupted_test_does_not_replace_an_earlier_plot_at_out(monkeypatch, capsys, tmp_path, taken):
    """QA: a Ctrl-C in the first steps (or a SIGTERM before the first) replaced a whole test's plot
    at the same --out with one of 3 (or no) steps. The earlier plot is kept, byte for byte, and the
    steps so far go beside it, as NAME.interrupted.png."""
    png, beside = tmp_path / "lr.png", tmp_path / "lr.interrupted.png"
    assert main(["lr-find", *BASE, "--steps", "8", "--out", str(png)]) == 0
    earlier = png.read_bytes()
    capsys.readouterr()
    with monkeypatch.context() as m:
        _interrupt_after(m, taken)
        assert main(["lr-find", *BASE, "--steps", "100", "--out", str(png)]) == 130
    out = capsys.readouterr().out
    assert png.read_bytes() == earlier and beside.is_file()
    assert f"wrote {beside} (interrupted: the earlier plot {png} is kept)" in out
    assert main(["lr-find", *BASE, "--steps", "8", "--out", str(beside)]) == 0  # ours: replaced as any plot of ours
    # a file there that is not ours is refused as everywhere, and the earlier plot still kept
    beside.write_bytes(b"not a plot of ours")
    with monkeypatch.context() as m:
        _interrupt_after(m, taken)
        assert main(["lr-find", *BASE, "--steps", "100", "--out", str(png)]) == 130
    out = capsys.readouterr().out
    assert png.read_bytes() == earlier and beside.read_bytes() == b"not a plot of ours"
    assert f"not plotted: the earlier plot {png} is kept, and {beside} exists and was not written by resnet-lab" in out


def test_an_interrupted_test_without_an_earlier_plot_writes_its_steps_at_out(monkeypatch, capsys, tmp_path):
    png = tmp_path / "lr.png"
    _interrupt_after(monkeypatch, 3)
    assert main(["lr-find", *BASE, "--steps", "100", "--out", str(png)]) == 130
    assert f"wrote {png}\n" in capsys.readouterr().out and png.is_file()
    assert not (tmp_path / "lr.interrupted.png").exists()


def test_a_single_step_is_counted_in_the_singular(monkeypatch, capsys):
    """QA: "interrupted after 1 steps"; the counts go through _text.count as everywhere else."""
    _interrupt_after(monkeypatch, 1)
    assert main(["lr-find", *BASE, "--steps", "100"]) == 130
    out = capsys.readouterr().out
    assert "interrupted after 1 step, at lr" in out and "no suggestion: 1 step is too few to show a valley" in out


def test_a_short_test_that_ran_every_step_suggests_from_its_whole_record_not_its_first_rate():
    """With 7 to 9 steps fastai's window (the first tenth and the last 5 left out) kept 2 to 4
    points, so on a straight falling curve the valley was the first rate tested."""
    for n in (7, 8, 9):
        lrs = [1e-4 * 10 ** (3 * i / (n - 1)) for i in range(n)]
        falling = [3.0 - 0.2 * i for i in range(n)]
        suggested, fastest = lr_finder._suggest(lrs, falling, n)
        assert suggested == valley(lrs, falling) != lrs[0] and fastest == steep(lrs, falling)
        assert lr_finder._suggest(lrs, falling, n, stopped=True) == (None, None)  # a divergence that early: none


def test_suggestions_leave_out_the_first_tenth_of_the_steps():
    """docs/LR_FINDER.md: the suggestions leave out the first tenth of the steps (and the last 5
    points). Here the steepest fall lies in the first tenth: the suggestions come from after it."""
    n = 100
    lrs = list(np.geomspace(1e-6, 1.0, n))  # equal steps of log lr: the steepest fall is the largest drop
    losses = ([10.0 - 0.7 * i for i in range(10)]  # indices 0-9, falling 0.7 a step
              + [3.0 - 0.01 * (i - 10) - (0.3 if i >= 51 else 0.0) for i in range(10, 95)]  # 0.31 at 50 -> 51
              + [3.0 + 0.5 * i for i in range(5)])  # the divergence, indices 95-99
    suggested, fastest = lr_finder._suggest(lrs, losses, n)
    assert fastest == lrs[50]  # the largest drop outside the first tenth and the last 5 points
    # valley over indices 10..94, a descent throughout: 85 points, fastai's start -1 (local), a
    # third of 85 is 28.3: local -1 + 28 + 14 = 41, index 51.
    assert suggested == lrs[51]


def test_after_an_early_stop_the_left_out_tenth_is_of_the_steps_asked_not_of_those_taken():
    """fastai leaves out num_it // 10 points whatever the record's length: a test of 100 steps that
    diverged after 60 still skips 10 points, not 6. The steepest fall sits at points 6-9 here."""
    n, taken = 100, 60
    lrs = list(np.geomspace(1e-6, 1.0, n))[:taken]
    losses = ([10.0 - 0.1 * i for i in range(6)] + [9.5 - 0.7 * (i - 5) for i in range(6, 10)]  # 0.7 a step at 6-9
              + [6.0 - 0.01 * (i - 10) - (0.3 if i >= 31 else 0.0) for i in range(10, 55)]  # 0.31 at 30 -> 31
              + [6.0 + 2.0 * i for i in range(5)])  # the divergence, points 55-59
    assert lr_finder._suggest(lrs, losses, n, stopped=True)[1] == lrs[30]


def test_lr_find_names_bad_argument_kinds_and_takes_numpy_scalars():
    data = make_bundle()
    for kwargs, message in (({"start_lr": "1e-7"}, "start_lr must be a number, got '1e-7'"),
                            ({"end_lr": torch.tensor(1.0)}, r"end_lr must be a number, got tensor\(1.\) \(a tensor: "
                                                            r"pass .item\(\)\)"),
                            ({"steps": 5.0}, "steps must be an int, got 5.0"),
                            ({"start_lr": True}, "start_lr must be a number, got True")):  # not the rate 1.0
        with pytest.raises(TypeError, match=message):
            lr_find(TinyNet(), data, CPU, **kwargs)
    with pytest.raises(TypeError, match="data must be a DataBundle .* or a loader with len"):
        lr_find(TinyNet(), iter(data.train), CPU)
    with pytest.raises(TypeError, match=r"lr_find needs a torch.nn.Module \(e.g. create_model\('resnet8'\)\), got NoneType"):
        lr_find(None, data, CPU)
    with pytest.raises(ValueError, match=r"spans more than a float can hold .*narrow the range"):
        lr_find(TinyNet(), data, CPU, start_lr=1e-300, end_lr=1e300, steps=10)
    result = lr_find(TinyNet(), data, CPU, start_lr=np.float64(1e-4), end_lr=np.float32(1e-2), steps=np.int64(6))
    assert all(type(lr) is float for lr in result.lrs) and len(result.lrs) == 6


def test_valley_and_steep_refuse_curves_they_cannot_read_and_the_plot_marks_a_rate_between_points():
    for call, message in ((lambda: valley([], []), "at least 1 point"), (lambda: steep([1.0], [1.0]), "at least 2"),
                          (lambda: valley([1.0, 2.0], [1.0]), "2 rates and 1 losses"),
                          (lambda: steep([1e-3, 1e-3, 1e-2], [3.0, 2.0, 1.0]), "grow from point to point"),
                          (lambda: valley([1e-3, 1e-2], [1.0, float("nan")]), "not finite")):
        with pytest.raises(ValueError, match=message):
            call()
    # the fewest points each reads (docs: "no point", "fewer than 2 points" are refused): its first rate
    assert valley([1e-3], [2.0]) == 1e-3 and steep([1e-3, 1e-2], [2.0, 1.0]) == 1e-3
    result = LRFindResult(lrs=[1e-3, 1e-2, 1e-1], losses=[3.0, 2.0, 1.0], smoothed=[3.0, 2.0, 1.0], valley=5e-3,
                          steep=1e-2, stopped=False, steps=3)
    fig = lr_find_figure(result, title="resnet8 on fake")
    try:
        (mark,) = [ln for ln in fig.axes[0].lines if ln.get_label().startswith("valley")]
        assert mark.get_ydata()[0] == 2.0  # the point nearest 5e-3 on a log axis: 1e-2
        assert fig.axes[0].get_title() == "resnet8 on fake: 3 steps"  # how it ended follows the given title
    finally:
        plt.close(fig)


def test_an_out_inside_a_file_is_refused_before_the_test(monkeypatch, capsys, tmp_path):
    spy = CallSpy(monkeypatch, lr_finder.lr_find)
    (tmp_path / "lf.png").write_bytes(b"")
    assert main(["lr-find", *BASE, "--steps", "6", "--out", str(tmp_path / "lf.png" / "x.png")]) == 2
    blocking = tmp_path / "lf.png"
    assert f"cannot write {blocking / 'x.png'}: {blocking} is a file, not a folder: choose another path" in \
        capsys.readouterr().err
    assert not spy.calls


def test_a_test_interrupted_too_early_for_the_window_suggests_nothing(monkeypatch):
    """Ctrl-C after 7 of 100 steps (rates up to about 3e-7) suggested 1.75e-07: the start of the
    range, not a valley."""
    _interrupt_after(monkeypatch, 7)
    with pytest.raises(lr_finder.LRFindInterrupted) as stop:
        lr_find(TinyNet(), make_bundle(), CPU, steps=100)
    assert len(stop.value.result.lrs) == 7 and stop.value.result.valley is None and stop.value.result.steep is None


def test_valley_counts_only_strict_descents_and_keeps_the_first_of_equally_long_ones():
    """fastai's valley (``losses[i] < losses[j]`` and ``lds[max_end] < lds[i]``), worked by hand."""
    lrs = list(np.geomspace(1e-5, 1e-1, 8))
    # A plateau is no descent: 5, 4 (x4: one step), 3 gives the longest strict run, 3 points, ending
    # at index 5 and counted from 5 - 3 = 2; a third of 3 is 1: 2 + 1 + 0 = 3. Counting the plateau
    # (<=) would make it 6 points from -1: -1 + 2 + 1 = 2.
    assert valley(lrs, [5.0, 4.0, 4.0, 4.0, 4.0, 3.0, 6.0, 7.0]) == lrs[3]
    # Two descents of 3 points (indices 0-2 and 3-5): the first one is the valley, from -1: -1 + 1 + 0 = 0
    # (the second would give 2 + 1 + 0 = 3).
    assert valley(lrs[:6], [3.0, 2.0, 1.0, 9.0, 8.0, 7.0]) == lrs[0]


def test_a_window_of_exactly_five_points_is_fastais_not_the_whole_record():
    """11 steps: the first tenth (1 point) and the last 5 leave indices 1-5, as fastai reads them; only
    a window of 2 to 4 points falls back to the whole record."""
    lrs = list(np.geomspace(1e-4, 1e-1, 11))
    losses = [5.0, 3.0, 2.9, 2.6, 2.5, 2.4, 1.0, 0.9, 0.8, 0.7, 0.6]
    # Equal log steps: in 1..5 the largest drop (0.3) starts at lrs[2], the steep; the window is one
    # strict descent of 5 points, counted from -1: -1 + int(5/3) + int(5/6) = 0, lrs[1]. The whole
    # record would give the 2.0 drop at lrs[0] and a valley of 11 points: -1 + 3 + 1, lrs[3].
    assert lr_finder._suggest(lrs, losses, 11) == (lrs[1], lrs[2])


def test_beta_zero_is_no_smoothing_and_end_lr_equal_to_start_lr_is_refused():
    """docs: beta in [0, 1) (0: each smoothed point is its loss); end_lr must lie above start_lr."""
    result = lr_find(TinyNet(), make_bundle(), CPU, start_lr=1e-4, end_lr=1e-2, steps=6, beta=0.0)
    assert len(result.losses) == 6 and result.smoothed == pytest.approx(result.losses, rel=1e-12)
    with pytest.raises(ValueError, match=r"end_lr \(--end-lr\) must be finite and above start_lr \(0.001\), got 0.001"):
        lr_find(TinyNet(), make_bundle(), CPU, start_lr=1e-3, end_lr=1e-3, steps=6)


def test_channels_last_steps_in_channels_last_and_the_model_comes_back_contiguous():
    """--channels-last reaches the steps (torch's own memory-format query on the weights a
    convolution uses) and the model's own format comes back afterwards."""
    model, data = _resnet8()
    conv = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][1]  # 16 input channels
    seen = []
    hook = conv.register_forward_pre_hook(
        lambda m, i: seen.append(m.weight.is_contiguous(memory_format=torch.channels_last)))
    try:
        lr_find(model, data, dataclasses.replace(CPU, channels_last=True), start_lr=1e-4, end_lr=1e-2, steps=3)
    finally:
        hook.remove()
    assert len(seen) == 3 and all(seen)
    assert conv.weight.is_contiguous() and not conv.weight.is_contiguous(memory_format=torch.channels_last)


def test_a_non_finite_loss_stops_the_test_where_the_guard_looks_only_every_few_steps(monkeypatch):
    """On a GPU the trainer's finite check reads the device only every 10 steps: the NaN loss of
    step 5 reaches the recorder, which must stop there without recording it (docs: not recorded)."""
    loop = importlib.import_module("resnet_lab.train.loop")
    real_init = loop._FiniteGuard.__init__

    def as_on_a_gpu(self, device):
        real_init(self, device)
        self.every_step = False

    monkeypatch.setattr(loop._FiniteGuard, "__init__", as_on_a_gpu)
    torch.manual_seed(0)
    result = lr_find(TinyNet(), _NaNAt(make_bundle().train, 4), CPU, start_lr=1e-4, end_lr=1.0, steps=12)
    assert result.stopped and len(result.losses) == len(result.lrs) == 4
    assert all(math.isfinite(v) for v in result.losses + result.smoothed)


def _part_way(data, epoch: int) -> None:
    """Read ``data.train``'s epoch ``epoch`` for 3 batches, then stop, as a caller peeking at it would."""
    data.train.set_epoch(epoch)
    for _ in zip(range(3), data.train):
        pass


def test_after_lr_find_a_loader_left_part_way_yields_exactly_what_it_would_have_without_the_test():
    """The loader's position comes back (the module docstring): the caller's next pass is its epoch's
    whole pass, the same batches in the same order as from a twin loader that saw no range test."""
    data, twin = (load_data("fake", batch_size=32, subset=256, device="cpu") for _ in range(2))
    _part_way(data, 3)
    _part_way(twin, 3)
    lr_find(create_model("resnet8", num_classes=10, in_channels=3), data, CPU, start_lr=1e-4, end_lr=1.0, steps=5)
    for (x, y), (x_want, y_want) in zip(data.train, twin.train, strict=True):
        assert torch.equal(y, y_want) and torch.equal(x, x_want)


class _Stateful:
    """A loader with ``state_dict``/``load_state_dict`` (as torchdata's StatefulDataLoader) and no
    ``resuming``: its state is the epoch and the batches read of it."""

    def __init__(self, loader) -> None:
        self.loader, self.epoch, self.position = loader, 0, 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        self.loader.set_epoch(self.epoch)
        for batch in self.loader:
            self.position += 1
            yield batch

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.position = epoch, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]


def test_a_stateful_loader_of_another_library_gets_its_state_back():
    loader = _Stateful(make_bundle().train)
    loader.load_state_dict({"epoch": 2, "position": 1})
    lr_find(TinyNet(), loader, CPU, start_lr=1e-4, end_lr=1.0, steps=8)  # 6 batches a pass: two passes
    assert loader.state_dict() == {"epoch": 2, "position": 1}


def test_the_test_stops_only_once_the_smoothed_loss_is_strictly_above_4x_its_minimum():
    """fastai's LRFinder: ``if self.smooth_loss > 4 * self.best_loss: raise CancelFitException``.
    beta 0 makes the smoothed loss the loss itself."""
    record = lr_finder._Recorder(beta=0.0, diverge=4.0)
    assert [record.add(v) for v in (2.0, 0.5, 2.0)] == [False, False, False]  # 2.0 is 4x 0.5: not above
    assert record.add(2.0 + 1e-9) and record.losses == [2.0, 0.5, 2.0, 2.0 + 1e-9]  # kept, as fastai does


class _AtMostPasses:
    """A loader that fails the test on a pass beyond ``passes`` (counted by set_epoch and iter),
    so a finder that loops over an empty or finished loader fails here instead of hanging."""

    def __init__(self, loader, passes: int) -> None:
        self.loader, self.passes, self.epochs, self.iters = loader, passes, [], 0

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        self.epochs.append(epoch)
        assert len(self.epochs) <= self.passes, f"pass {len(self.epochs)} of a loader that needs {self.passes}"
        self.loader.set_epoch(epoch)

    def __iter__(self):
        self.iters += 1
        assert self.iters <= self.passes, f"pass {self.iters} of a loader that needs {self.passes}"
        return iter(self.loader)


def test_an_empty_loader_is_refused_at_once_not_read_again_and_again():
    loader = _AtMostPasses(make_bundle(n_train=8, batch_size=16).train, passes=1)  # drop-last: 0 batches
    with pytest.raises(ValueError, match="the training loader yields no batch: lower --batch-size or use more data"):
        lr_find(TinyNet(), loader, CPU, steps=6)
    assert (loader.epochs, loader.iters) == ([], 0)


def test_the_test_reads_exactly_the_passes_its_steps_need():
    """docs: the loader is read for as many passes as ``steps`` needs: 12 steps of a 6-batch loader are 2,
    epochs 0 and 1 (each pass its own shuffle, as in training)."""
    loader = _AtMostPasses(make_bundle(n_train=96, batch_size=16).train, passes=2)
    result = lr_find(TinyNet(), loader, CPU, start_lr=1e-5, end_lr=1e-3, steps=12)
    assert len(result.losses) == 12 and (loader.epochs, loader.iters) == ([0, 1], 2)
