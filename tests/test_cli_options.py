"""Every command-line option does what its help says, shown against the same run without it.

Each test runs the real CLI (``resnet_lab.cli.main``) on tiny inputs (resnet8, the ``fake``
dataset at 8 px, 32 images, one epoch: two optimizer steps) and watches the trainer through
``trainspy.TrainSpy``: what it was given, the learning rate, parameters and gradients of every
optimizer step, the training inputs and outputs. The references are independent of the code
under test: torch.optim.SGD's documented update and torch's gradient clipping written out by
hand, the schedules' closed forms, the label-smoothing formula (Szegedy et al. 2016), the images
normalized by hand, float64 recomputations, onnxruntime. tests/test_option_coverage.py checks
that every option has a test here or elsewhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import re
import math
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn

import resnet_lab.data as rl_data
import resnet_lab.experiments.registry as registry
import resnet_lab.nn as rl_nn
import resnet_lab.train as rl_train
from resnet_lab import create_model
from resnet_lab.cli import main
from resnet_lab.experiments import VERDICTS, Check, Report, list_experiments

from support import FakeTorchvisionCifar10, TerminalStream, write_image_folder
from tinytrain import TinyNet, make_bundle
from trainspy import CallSpy, TrainSpy


# resnet8 on 32 fake images of 8 px, batch 16: two optimizer steps, evaluation on 128 images; no plots
# (drawing them took 88% of such a run; the tests of plots draw them).
TINY = ["--model", "resnet8", "--dataset", "fake", "--image-size", "8", "--subset", "32", "--batch-size", "16",
        "--epochs", "1", "--no-progress", "--no-plots", "--device", "cpu"]
CONSTANT = [*TINY, "--schedule", "constant"]  # lr = --lr at every step: SGD updates are easy to write out


def cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def with_flags(base: list[str], *flags: str) -> list[str]:
    """``base`` with ``flags`` added; a flag already in ``base`` gets the new value instead."""
    args, flags = list(base), list(flags)
    i = 0
    while i < len(flags):
        flag = flags[i]
        value = flags[i + 1] if i + 1 < len(flags) and not flags[i + 1].startswith("--") else None
        if flag in args and value is not None:
            args[args.index(flag) + 1] = value
        elif flag not in args:
            args += [flag] + ([value] if value is not None else [])
        i += 2 if value is not None else 1
    return args


def train_pair(capsys, spy: TrainSpy, base: list[str], *flags: str):
    """Train ``base`` and ``base`` + ``flags``; return the two recorded trainer calls."""
    assert cli(capsys, "train", *base)[0] == 0
    assert cli(capsys, "train", *with_flags(base, *flags))[0] == 0
    return spy.calls[-2], spy.calls[-1]


def sgd_mismatch(call, *, lr: float, momentum: float = 0.9, nesterov: bool = True, weight_decay: float = 5e-4) -> float:
    """Largest difference between the recorded parameters after each step and torch.optim.SGD's
    documented update (dampening 0; decay only on tensors with 2+ dimensions, as the trainer
    documents), written out here in float64 from the recorded parameters and gradients."""
    bufs: dict[int, torch.Tensor] = {}
    worst = 0.0
    for step in call.steps:
        for i, (p, g, after) in enumerate(zip(step.before, step.grads, step.after)):
            g = g.double() + (weight_decay if p.ndim >= 2 else 0.0) * p.double()
            bufs[i] = g.clone() if i not in bufs else momentum * bufs[i] + g
            d = (g + momentum * bufs[i] if nesterov else bufs[i]) if momentum else g
            want = p.double() - lr * d
            worst = max(worst, float((after.double() - want).abs().max()))
    return worst


SGD_TOL = 1e-6  # float32 rounding of a step; a wrong hyperparameter moves weights by > 1e-5


@pytest.fixture
def spy(monkeypatch) -> TrainSpy:
    return TrainSpy(monkeypatch)


@pytest.fixture
def dry_spy(monkeypatch) -> TrainSpy:
    """Records what the trainer is given without training."""
    return TrainSpy(monkeypatch, run=False)


@pytest.fixture
def keep_determinism():
    was, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    yield
    torch.use_deterministic_algorithms(was, warn_only=warn_only)


def without(args: list[str], flag: str) -> list[str]:
    """``args`` without ``flag`` and its value."""
    i = args.index(flag)
    return args[:i] + args[i + 2:]


FOLDER_TINY = without(TINY, "--subset")  # a folder of 2 x 10 images holds 18 training images


def make_folder(root: Path, per_class: int = 10, classes=("ants", "bees"), seed: int = 0) -> Path:
    return write_image_folder(root, classes, per_class, seed)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """A finished run: resnet8 with our scratch BN (so ONNX export has BN arithmetic to fold)."""
    out = tmp_path_factory.mktemp("runs") / "r8"
    assert main(["train", *TINY, "--norm", "scratch", "--out", str(out)]) == 0
    return out


# --- model --------------------------------------------------------------------------------------


def test_model_builds_the_named_depth(capsys, dry_spy):
    for name, depth in (("resnet8", 8), ("resnet20", 20)):
        assert cli(capsys, "train", *with_flags(TINY, "--model", name))[0] == 0
        layers = [m for m in dry_spy.last.model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        assert len(layers) == depth  # He et al. 2015: 6n+2 weighted layers (option-A shortcuts add none)


@pytest.mark.parametrize("norm, kind", [("batch", nn.BatchNorm2d), ("scratch", rl_nn.BatchNorm2d),
                                        ("group", nn.GroupNorm), ("none", None)])
def test_norm_puts_the_chosen_normalization_after_every_conv(capsys, dry_spy, norm, kind):
    assert cli(capsys, "train", *TINY, "--norm", norm)[0] == 0
    model = dry_spy.last.model
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, rl_nn.BatchNormBase, nn.GroupNorm))]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    if kind is None:
        assert norms == []
    else:
        assert len(norms) == len(convs) == 7 and all(isinstance(m, kind) for m in norms)


def test_small_input_picks_the_3x3_stride_1_stem_for_small_images(capsys, dry_spy):
    tv = torchvision.models.resnet18()
    for choice, small in (("auto", True), ("yes", True), ("no", False)):  # images are 8 px: auto means yes
        assert cli(capsys, "train", *with_flags(TINY, "--model", "resnet18"), "--small-input", choice)[0] == 0
        model = dry_spy.last.model
        if small:
            assert (model.conv1.kernel_size, model.conv1.stride) == ((3, 3), (1, 1))
            assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
        else:  # torchvision's ImageNet stem
            assert (model.conv1.kernel_size, model.conv1.stride) == (tv.conv1.kernel_size, tv.conv1.stride)
            assert any(isinstance(m, nn.MaxPool2d) for m in model.modules())


def test_zero_init_residual_zeroes_the_last_norm_of_every_residual_branch(capsys, dry_spy):
    assert cli(capsys, "train", *TINY)[0] == 0
    assert cli(capsys, "train", *TINY, "--zero-init-residual")[0] == 0
    plain, zeroed = dry_spy.calls[0].initial_state, dry_spy.calls[1].initial_state
    last = [k for k in zeroed if k.startswith("layer") and k.endswith("bn2.weight")]
    assert len(last) == 3  # one basic block per stage in resnet8
    assert all(torch.equal(zeroed[k], torch.zeros_like(zeroed[k])) for k in last)
    assert all(torch.equal(plain[k], torch.ones_like(plain[k])) for k in last)  # torch's default gamma


def test_zero_init_residual_with_norm_none_zeroes_the_last_conv_as_its_help_says(capsys, dry_spy):
    assert cli(capsys, "train", *TINY, "--norm", "none", "--zero-init-residual")[0] == 0
    zeroed = dry_spy.calls[0].initial_state
    last = [k for k in zeroed if k.startswith("layer") and k.endswith("conv2.weight")]
    assert len(last) == 3 and all(torch.equal(zeroed[k], torch.zeros_like(zeroed[k])) for k in last)
    for command in ("train", "lr-find"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "has no BN (--norm none)" in " ".join(capsys.readouterr().out.split())


def test_zero_init_residual_on_a_pre_activation_model_zeroes_the_last_conv_as_its_help_says(capsys, dry_spy):
    """Second review of 2026-12-06: the help said "the last BN of its branch" but for preact and
    wide blocks (which end in a conv) the last conv is zeroed; the help now says so."""
    tiny = [a if a != "resnet8" else "preact_resnet110" for a in TINY]
    assert cli(capsys, "train", *tiny, "--zero-init-residual")[0] == 0
    zeroed = dry_spy.calls[0].initial_state
    last = [k for k in zeroed if k.startswith("layer") and k.endswith("conv2.weight")]
    assert last and all(torch.equal(zeroed[k], torch.zeros_like(zeroed[k])) for k in last)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "pre-activation and wide blocks" in " ".join(capsys.readouterr().out.split())


# --- data ---------------------------------------------------------------------------------------


def test_dataset_and_data_dir_train_on_the_folders_classes(capsys, dry_spy, tmp_path):
    folder = make_folder(tmp_path / "pics")
    assert cli(capsys, "train", *TINY)[0] == 0
    assert len(dry_spy.last.data.info.classes) == 10 and dry_spy.last.model.fc.out_features == 10
    assert cli(capsys, "train", *with_flags(FOLDER_TINY, "--dataset", "folder"), "--data-dir", str(folder),
               "--workers", "0")[0] == 0
    assert list(dry_spy.last.data.info.classes) == ["ants", "bees"] and dry_spy.last.model.fc.out_features == 2
    assert dry_spy.last.data.num_train + dry_spy.last.data.num_test == 20


def test_workers_sets_the_decoding_processes_of_folder_loaders(capsys, dry_spy, tmp_path):
    folder = make_folder(tmp_path / "pics")
    args = [*with_flags(FOLDER_TINY, "--dataset", "folder"), "--data-dir", str(folder)]
    assert cli(capsys, "train", *args)[0] == 0
    assert dry_spy.last.data.train.num_workers == 2  # the documented default
    assert cli(capsys, "train", *args, "--workers", "0")[0] == 0
    assert dry_spy.last.data.train.num_workers == 0


def test_download_fetches_missing_cifar_into_data_dir_for_train_and_evaluate(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeTorchvisionCifar10)
    monkeypatch.setattr(FakeTorchvisionCifar10, "roots", [])
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    args = ["--model", "resnet8", "--dataset", "cifar10", "--data-dir", str(tmp_path / "d1"), "--batch-size", "8",
            "--epochs", "1", "--no-progress", "--device", "cpu", "--out", str(tmp_path / "run")]
    code, _, err = cli(capsys, "train", *args)
    assert code == 2 and "--download" in err and FakeTorchvisionCifar10.roots == []
    assert cli(capsys, "train", *args, "--download")[0] == 0
    assert FakeTorchvisionCifar10.roots == [(str(tmp_path / "d1"), True)]
    code, out, _ = cli(capsys, "evaluate", str(tmp_path / "run"), "--data-dir", str(tmp_path / "d2"), "--download",
                       "--batch-size", "8", "--json")
    assert code == 0 and json.loads(out)["n"] == 6  # the fetched test batch
    assert FakeTorchvisionCifar10.roots[-1] == (str(tmp_path / "d2"), True)


def test_image_size_resizes_the_training_images(capsys, spy):
    plain, resized = train_pair(capsys, spy, TINY, "--image-size", "12")
    assert plain.inputs[0].shape == (16, 3, 8, 8) and resized.inputs[0].shape == (16, 3, 12, 12)


def test_subset_trains_on_n_images_stratified_by_class(capsys, spy):
    full, subset = train_pair(capsys, spy, with_flags(TINY, "--subset", "40"), "--subset", "20")
    assert full.data.train.num_samples == 40 and subset.data.train.num_samples == 20
    assert torch.bincount(subset.data.train.labels, minlength=10).tolist() == [2] * 10
    assert len(subset.steps) == 20 // 16


def _normalized(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 (N, C, H, W) -> float64 normalized, by hand."""
    m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    return (images.double() / 255 - m) / s


def _matches_a_stored_image(call) -> list[bool]:
    """For each training input, whether it equals one of the stored images normalized by hand."""
    stored = _normalized(call.data.train.images, call.data.info.mean, call.data.info.std)
    x = torch.cat(call.inputs).double()
    dist = (x[:, None] - stored[None]).abs().flatten(2).amax(-1)  # (inputs, stored)
    return (dist.amin(1) < 1e-5).tolist()


def test_no_augment_feeds_the_stored_images_unchanged(capsys, spy):
    augmented, plain = train_pair(capsys, spy, TINY, "--no-augment")
    assert all(_matches_a_stored_image(plain))
    assert not all(_matches_a_stored_image(augmented))  # random crops and flips moved pixels


def _stored_and_mirrored(call) -> torch.Tensor:
    """The stored training images normalized by hand, then the same images mirrored left-right."""
    stored = _normalized(call.data.train.images, call.data.info.mean, call.data.info.std)
    return torch.cat([stored, stored.flip(-1)])


def _matches_a_stored_image_or_its_mirror(call) -> list[bool]:
    """For each training input, whether it equals a stored image or one mirrored left-right."""
    views = _stored_and_mirrored(call)
    x = torch.cat(call.inputs).double()
    dist = (x[:, None] - views[None]).abs().flatten(2).amax(-1)
    return (dist.amin(1) < 1e-5).tolist()


def test_crop_padding_zero_flips_without_shifting(capsys, spy):
    default, flip_only = train_pair(capsys, spy, TINY, "--crop-padding", "0")
    assert all(_matches_a_stored_image_or_its_mirror(flip_only))
    assert not all(_matches_a_stored_image(flip_only)), "the flip still runs"
    assert not all(_matches_a_stored_image_or_its_mirror(default)), "the default crop shifts pixels"
    assert (default.data.train.padding, flip_only.data.train.padding) == (1, 0)  # 8 px images: 8 / 8 = 1


def test_crop_padding_sets_the_largest_shift(capsys, spy):
    """--crop-padding 3 on 8 px images: some input is shifted by more than the default 1 px."""
    def shifted_by_more_than(call, k: int) -> bool:
        stored = _stored_and_mirrored(call)
        x = torch.cat(call.inputs).double()
        # a shift of at most k px leaves the central (8 - 2k)^2 window equal to some stored window
        def near(img):
            for dy in range(-k, k + 1):
                for dx in range(-k, k + 1):
                    a = img[..., max(0, dy):8 + min(0, dy), max(0, dx):8 + min(0, dx)]
                    b = stored[..., max(0, -dy):8 + min(0, -dy), max(0, -dx):8 + min(0, -dx)]
                    if ((a[None] - b).abs().flatten(1).amax(1) < 1e-5).any():
                        return True
            return False
        return not all(near(img) for img in x)
    default, wide = train_pair(capsys, spy, TINY, "--crop-padding", "3")
    assert not shifted_by_more_than(default, 1) and shifted_by_more_than(wide, 1)


def test_resume_with_another_crop_padding_is_refused(capsys, tmp_path):
    out = tmp_path / "run"
    assert cli(capsys, "train", *with_flags(TINY, "--epochs", "2", "--stop-after", "1", "--out", str(out)))[0] == 0
    code, _, err = cli(capsys, "train", *with_flags(TINY, "--epochs", "2", "--crop-padding", "0", "--out", str(out),
                                                    "--resume"))
    assert code == 2 and "cannot resume" in err and "crop_padding: run has 1, now 0" in err


def test_crop_padding_rejects_a_negative_shift_in_one_line(capsys):
    code, _, err = cli(capsys, "train", *TINY, "--crop-padding", "-1")
    assert code == 2 and err.startswith("error: crop_padding (--crop-padding) must be 0") and err.count("\n") == 1


def test_crop_padding_with_no_augment_would_do_nothing_and_is_refused(capsys):
    code, _, err = cli(capsys, "train", *TINY, "--crop-padding", "2", "--no-augment")
    assert code == 2 and "--no-augment" in err and "crop_padding 2" in err and err.count("\n") == 1


def _erased_rectangle(erased: torch.Tensor, plain: torch.Tensor) -> tuple[int, int] | None:
    """(height, width) of the region where ``erased`` differs from ``plain``, after checking
    that it is a filled rectangle set to 0 (the channel mean, after normalization) in every
    channel and that nothing outside it changed; None when nothing changed."""
    changed = (erased != plain).any(0)  # (H, W)
    if not changed.any():
        return None
    ys, xs = torch.nonzero(changed, as_tuple=True)
    box = torch.zeros_like(changed)
    box[ys.min():ys.max() + 1, xs.min():xs.max() + 1] = True
    assert (erased[:, box] == 0).all(), "the erased rectangle is not the mean everywhere"
    assert torch.equal(erased[:, ~box], plain[:, ~box]), "pixels outside the rectangle changed"
    return int(ys.max() - ys.min() + 1), int(xs.max() - xs.min() + 1)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory) -> Path:
    """A run to fine-tune from: resnet8 (torch BN) on 8 px fake data, 10 classes."""
    out = tmp_path_factory.mktemp("source") / "r8"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def finetune_args(source: Path, strategy: str = "all") -> list[str]:
    return ["--from", str(source), "--strategy", strategy, *TINY[2:]]


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_random_erasing_erases_one_rectangle_per_image_to_the_mean(capsys, spy, source_run, command):
    base = TINY if command == "train" else finetune_args(source_run)
    assert cli(capsys, command, *base)[0] == 0
    assert cli(capsys, command, *base, "--random-erasing", "1")[0] == 0
    plain, erased = spy.calls[-2], spy.calls[-1]
    boxes = [_erased_rectangle(e, p) for xe, xp in zip(erased.inputs, plain.inputs) for e, p in zip(xe, xp)]
    # With probability 1 every image is erased (Zhong et al. 2017), over the same crops and flips.
    assert len(boxes) == 32 and all(b is not None for b in boxes), boxes


# --- optimization -------------------------------------------------------------------------------


def test_epochs_sets_the_number_of_passes(capsys, spy):
    one, two = train_pair(capsys, spy, TINY, "--epochs", "2")
    assert [r["epoch"] for r in two.history.epochs] == [1, 2] and len(two.steps) == 2 * len(one.steps) == 4
    assert [r["epoch"] for r in two.records] == [1, 1, 2, 2]


def test_batch_size_sets_the_training_batch(capsys, spy):
    b16, b8 = train_pair(capsys, spy, TINY, "--batch-size", "8")
    assert {x.shape[0] for x in b8.inputs} == {8} and len(b8.steps) == 32 // 8
    assert {x.shape[0] for x in b16.inputs} == {16} and len(b16.steps) == 2


def test_lr_sets_the_rate_of_every_sgd_update(capsys, spy):
    default, chosen = train_pair(capsys, spy, CONSTANT, "--lr", "0.05")
    assert {lr for s in chosen.steps for lr in s.lrs} == {0.05}
    assert sgd_mismatch(chosen, lr=0.05) < SGD_TOL < sgd_mismatch(chosen, lr=0.1)
    assert sgd_mismatch(default, lr=0.1) < SGD_TOL  # the documented SGD default


def test_optimizer_adamw_keeps_adams_moments_and_defaults_to_lr_1e_3(capsys, spy):
    sgd, adamw = train_pair(capsys, spy, CONSTANT, "--optimizer", "adamw")
    assert isinstance(adamw.optimizer, torch.optim.AdamW) and isinstance(sgd.optimizer, torch.optim.SGD)
    p = adamw.params[0]
    assert {"exp_avg", "exp_avg_sq"} <= set(adamw.optimizer.state[p]) and "exp_avg" not in sgd.optimizer.state[sgd.params[0]]
    assert {lr for s in adamw.steps for lr in s.lrs} == {1e-3}
    # Loshchilov & Hutter's first AdamW step moves each weight by about lr (m/sqrt(v) = sign(g)).
    step = adamw.steps[0]
    moved = max(float((a - b).abs().max()) for a, b in zip(step.after, step.before))
    assert 0.5e-3 < moved < 1.5e-3


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_the_clis_default_lr_is_the_apis(capsys, dry_spy, optimizer):
    """train --optimizer X without --lr gives the trainer the rate TrainConfig(optimizer=X) has."""
    assert cli(capsys, "train", *TINY, "--optimizer", optimizer)[0] == 0
    assert dry_spy.last.config.lr == rl_train.TrainConfig(optimizer=optimizer).lr == {"sgd": 0.1, "adamw": 1e-3}[optimizer]


def test_flags_left_out_mean_the_apis_defaults_and_seed_reaches_the_trainer_and_the_data(capsys, dry_spy, monkeypatch):
    """A flag left out means what the field left out of TrainConfig / DataConfig means (10 epochs,
    batch 128, ... as the Python API documents them); --seed seeds both (the trainer records it, and
    evaluate rebuilds the fake test set from it)."""
    loads = CallSpy(monkeypatch, rl_data.load_data)
    assert cli(capsys, "train", "--model", "resnet8", "--dataset", "fake", "--image-size", "8", "--subset", "128",
               "--seed", "3", "--device", "cpu", "--no-progress")[0] == 0
    api = rl_train.TrainConfig(seed=3, device="cpu", progress=False)
    assert _changes(dataclasses.asdict(api), dataclasses.asdict(dry_spy.last.config)) == {}
    api_data = dataclasses.asdict(rl_data.DataConfig("fake", image_size=8, subset=128, seed=3))
    assert {k: v for k, v in _changes(api_data, _data_request(loads.calls[-1])).items() if k != "device"} == {}


def test_momentum_sets_the_momentum_of_every_sgd_update(capsys, spy):
    default, chosen = train_pair(capsys, spy, CONSTANT, "--momentum", "0.5")
    assert sgd_mismatch(chosen, lr=0.1, momentum=0.5) < SGD_TOL < sgd_mismatch(chosen, lr=0.1, momentum=0.9)
    assert sgd_mismatch(default, lr=0.1, momentum=0.9) < SGD_TOL


def test_no_nesterov_uses_plain_momentum(capsys, spy):
    nesterov, plain = train_pair(capsys, spy, CONSTANT, "--no-nesterov")
    assert sgd_mismatch(plain, lr=0.1, nesterov=False) < SGD_TOL < sgd_mismatch(plain, lr=0.1, nesterov=True)
    assert sgd_mismatch(nesterov, lr=0.1, nesterov=True) < SGD_TOL < sgd_mismatch(nesterov, lr=0.1, nesterov=False)


def test_weight_decay_decays_conv_and_linear_weights_only(capsys, spy):
    default, chosen = train_pair(capsys, spy, CONSTANT, "--weight-decay", "0.05")
    assert sgd_mismatch(chosen, lr=0.1, weight_decay=0.05) < SGD_TOL < sgd_mismatch(chosen, lr=0.1, weight_decay=5e-4)
    assert sgd_mismatch(default, lr=0.1, weight_decay=5e-4) < SGD_TOL


def _closed_form(schedule: str, t: int, total: int) -> float:
    """The peak-lr multiplier at step t (0-based) of ``total``, as the papers define it."""
    if schedule == "onecycle":  # Smith & Topin 2019, linear: up over the first quarter, down to 0
        warm = total // 4
        return (t + 1) / warm if t < warm else 1 - (t - warm) / (total - warm)
    if schedule == "cosine":  # Loshchilov & Hutter 2017, no restarts
        return 0.5 * (1 + math.cos(math.pi * t / total))
    if schedule == "step":  # He et al. 2015: /10 at 50% and again at 75% of training
        return 0.1 ** ((t >= total / 2) + (t >= 3 * total / 4))
    return 1.0


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "step", "constant"])
def test_schedule_sets_the_lr_of_each_step_to_its_closed_form(capsys, spy, schedule):
    # 8 steps: 2 epochs of 4 (batch 8)
    assert cli(capsys, "train", *with_flags(TINY, "--batch-size", "8", "--epochs", "2"), "--schedule", schedule)[0] == 0
    lrs = [s.lrs[0] for s in spy.last.steps]
    assert len(lrs) == 8
    assert lrs == pytest.approx([0.1 * _closed_form(schedule, t, 8) for t in range(8)], rel=1e-9, abs=1e-12)


def test_warmup_epochs_ramps_the_lr_linearly_over_that_many_epochs(capsys, spy):
    base = with_flags(CONSTANT, "--batch-size", "8", "--epochs", "2")  # 4 steps per epoch
    flat, warm = train_pair(capsys, spy, base, "--warmup-epochs", "1")
    assert [s.lrs[0] for s in flat.steps] == pytest.approx([0.1] * 8)
    assert [s.lrs[0] for s in warm.steps] == pytest.approx([0.1 * (t + 1) / 4 for t in range(4)] + [0.1] * 4)


def test_a_warmup_shorter_than_one_step_is_one_step_not_onecycles_default_quarter(capsys, spy):
    base = with_flags(TINY, "--batch-size", "8", "--epochs", "2")  # onecycle, 4 steps per epoch
    default, short = train_pair(capsys, spy, base, "--warmup-epochs", "0.1")  # 0.4 of a step
    assert [s.lrs[0] for s in default.steps] == pytest.approx([0.1 * _closed_form("onecycle", t, 8) for t in range(8)])
    # one warmup step at the peak, then the linear decay from the peak over the other 7
    want = [0.1] + [0.1 * (1 - (t - 1) / 7) for t in range(1, 8)]
    assert [s.lrs[0] for s in short.steps] == pytest.approx(want, abs=1e-12)


def test_label_smoothing_trains_on_the_smoothed_cross_entropy(capsys, spy):
    plain, smooth = train_pair(capsys, spy, TINY, "--label-smoothing", "0.2")
    for call, eps in ((plain, 0.0), (smooth, 0.2)):
        logp = call.outputs[0].double().log_softmax(1)  # the first step's logits
        y = call.labels[0]
        ce = -logp[torch.arange(len(y)), y].mean()
        # Szegedy et al. 2016: targets (1 - eps) one-hot + eps / K, so the loss is
        # (1 - eps) * CE + eps * mean over classes of -log p.
        want = (1 - eps) * ce + eps * (-logp.mean(1)).mean()
        assert float(call.records[0]["loss"]) == pytest.approx(float(want), rel=1e-5)
        if eps:
            assert float(call.records[0]["loss"]) != pytest.approx(float(ce), rel=1e-3)


def test_grad_clip_scales_the_global_gradient_norm_down_to_the_limit(capsys, monkeypatch):
    spy = TrainSpy(monkeypatch, raw_grads=True)
    free, clipped = train_pair(capsys, spy, CONSTANT, "--grad-clip", "0.01")
    for call, limit in ((free, None), (clipped, 0.01)):
        for step in call.steps:
            raw = torch.stack([g.double().norm() for g in step.raw_grads]).norm()  # as backward produced them
            # torch.nn.utils.clip_grad_norm_: scale by max_norm / (norm + 1e-6) when that is < 1.
            scale = min(1.0, limit / (float(raw) + 1e-6)) if limit else 1.0
            assert raw > 0.01  # so the limit does bite
            for g, r in zip(step.grads, step.raw_grads):
                torch.testing.assert_close(g.double(), r.double() * scale, rtol=1e-5, atol=1e-9)
        assert sgd_mismatch(call, lr=0.1) < SGD_TOL  # and the step used those gradients
    assert torch.stack([g.norm() for g in clipped.steps[0].grads]).norm() == pytest.approx(0.01, rel=1e-4)


def test_seed_fixes_the_initial_weights_and_the_data_order(capsys, spy):
    for seed in ("1", "1", "2"):
        assert cli(capsys, "train", *TINY, "--seed", seed)[0] == 0
    a, b, c = spy.calls
    assert all(torch.equal(a.initial_state[k], b.initial_state[k]) for k in a.initial_state)
    assert all(torch.equal(x, y) for x, y in zip(a.inputs, b.inputs))
    assert all(torch.equal(p, q) for p, q in zip(a.steps[-1].after, b.steps[-1].after))
    assert not torch.equal(a.initial_state["conv1.weight"], c.initial_state["conv1.weight"])
    assert not torch.equal(a.inputs[0], c.inputs[0])
    # and the weights are those create_model draws right after torch.manual_seed(seed), as the help says
    arch = dict(a.model.model_config)
    torch.manual_seed(1)
    reference = create_model(arch.pop("name"), **arch).state_dict()
    assert all(torch.equal(a.initial_state[k], reference[k]) for k in reference)


# --- speed and memory ---------------------------------------------------------------------------


def test_channels_last_trains_model_and_batches_in_nhwc(capsys, spy):
    nchw, nhwc = train_pair(capsys, spy, TINY, "--channels-last")
    w = nhwc.model.conv1.weight
    assert w.is_contiguous(memory_format=torch.channels_last) and not w.is_contiguous()
    assert nchw.model.conv1.weight.is_contiguous()
    x = nhwc.inputs[0]
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    assert nchw.inputs[0].is_contiguous()
    # The same computation in another layout: the first step's loss agrees to float rounding.
    assert float(nhwc.records[0]["loss"]) == pytest.approx(float(nchw.records[0]["loss"]), rel=1e-5)


def test_bf16_runs_the_training_forward_under_bfloat16_autocast(capsys, spy):
    fp32, bf16 = train_pair(capsys, spy, TINY, "--bf16")
    assert {o.dtype for o in fp32.outputs} == {torch.float32}
    assert {o.dtype for o in bf16.outputs} == {torch.bfloat16}  # the classifier's matmul ran in bf16
    assert bf16.model.fc.weight.dtype == torch.float32  # autocast: the weights stay fp32


class _Compiled(nn.Module):
    """What the fake torch.compile returns: the model, recording the mode of each call that goes
    through it (True: training)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self._orig_mod = model  # the name torch's OptimizedModule uses
        self.modes: list[bool] = []

    def forward(self, x):
        self.modes.append(self._orig_mod.training)
        return self._orig_mod(x)


def test_compile_trains_through_torch_compile(capsys, spy, monkeypatch):
    compiled: list[_Compiled] = []

    def fake_compile(model=None, **kwargs):  # real compilation takes minutes on a small CPU
        compiled.append(_Compiled(model))
        return compiled[-1]

    monkeypatch.setattr(torch, "compile", fake_compile)
    plain, with_compile = train_pair(capsys, spy, TINY, "--compile")
    assert len(compiled) == 1 and compiled[0]._orig_mod is with_compile.model
    assert compiled[0].modes.count(True) == len(with_compile.steps) == 2  # every training forward went through it


def test_deterministic_turns_on_deterministic_algorithms_while_training(capsys, spy, keep_determinism):
    torch.use_deterministic_algorithms(False)
    plain, det = train_pair(capsys, spy, TINY, "--deterministic")
    assert plain.deterministic_during == [False, False] and det.deterministic_during == [True, True]


def test_checkpoint_segments_saves_fewer_activations_during_training(capsys, monkeypatch):
    spy = TrainSpy(monkeypatch, saved_bytes=True)
    plain, ckpt = train_pair(capsys, spy, TINY, "--checkpoint-segments", "3")
    # Bytes autograd keeps for backward in one training forward: checkpointed segments keep only
    # their inputs and recompute the rest during backward (Chen et al. 2016).
    assert ckpt.saved_bytes[0] < 0.7 * plain.saved_bytes[0], (ckpt.saved_bytes, plain.saved_bytes)
    assert float(ckpt.records[0]["loss"]) == pytest.approx(float(plain.records[0]["loss"]), rel=1e-6)


# --- run directory and output -------------------------------------------------------------------


def test_out_writes_the_run_directory_and_nothing_is_written_without_it(capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert cli(capsys, "train", *TINY)[0] == 0
    assert list(tmp_path.iterdir()) == []
    assert cli(capsys, "train", *TINY, "--out", "run")[0] == 0
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"model.safetensors", "model.json", "train_state.pt", "metrics.jsonl"} <= names


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_eval_every_evaluates_every_nth_and_the_last_epoch_and_changes_nothing_else(capsys, tmp_path):
    base = with_flags(TINY, "--epochs", "5")
    assert cli(capsys, "train", *base, "--out", str(tmp_path / "every"))[0] == 0
    code, out, _ = cli(capsys, "train", *base, "--eval-every", "2", "--out", str(tmp_path / "sparse"))
    assert code == 0
    every, sparse = _metrics(tmp_path / "every"), _metrics(tmp_path / "sparse")
    assert [("test_acc" in r) for r in every] == [True] * 5
    assert [("test_acc" in r) for r in sparse] == [False, True, False, True, True]  # 2, 4 and the last
    first = next(line for line in out.splitlines() if line.startswith("epoch   1/5"))
    assert "test not evaluated (every 2)" in first and "best -" in first  # no best before an evaluation
    for a, b in zip(every, sparse):  # skipping an evaluation leaves the training itself unchanged
        assert (a["train_loss"], a["train_acc"]) == (b["train_loss"], b["train_acc"])
        if "test_acc" in b:
            assert (a["test_loss"], a["test_acc"]) == (b["test_loss"], b["test_acc"])
    a, b = load_file(tmp_path / "every" / "model.safetensors"), load_file(tmp_path / "sparse" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    best = json.loads((tmp_path / "sparse" / "model.json").read_text()).get("best_epoch")
    state = torch.load(tmp_path / "sparse" / "train_state.pt", weights_only=False)
    assert state["best_epoch"] in (2, 4, 5) and best in (None, state["best_epoch"])  # only an evaluated epoch


def test_a_run_split_by_stop_after_evaluates_and_keeps_the_best_epoch_as_the_whole_run_does(capsys, tmp_path):
    # A pause used to evaluate its epoch too: an extra test figure, and an epoch the whole run never
    # judged could become best.safetensors. The split run must end as the run in one session.
    args = [*with_flags(TINY, "--epochs", "4"), "--eval-every", "3", "--deterministic"]
    assert cli(capsys, "train", *args, "--out", str(tmp_path / "whole"))[0] == 0
    split = [*args, "--out", str(tmp_path / "r")]
    assert cli(capsys, "train", *split, "--stop-after", "2")[0] == 0
    assert [("test_acc" in r) for r in _metrics(tmp_path / "r")] == [False, False]
    assert not (tmp_path / "r" / "best.safetensors").exists()
    assert cli(capsys, "train", *split, "--resume")[0] == 0
    assert [("test_acc" in r) for r in _metrics(tmp_path / "r")] == [False, False, True, True]
    timing = ("train_seconds", "elapsed_seconds", "images_per_second", "session")
    strip = lambda rs: [{k: v for k, v in r.items() if k not in timing} for r in rs]  # noqa: E731
    assert strip(_metrics(tmp_path / "r")) == strip(_metrics(tmp_path / "whole"))
    for name in ("model.safetensors", "best.safetensors"):
        a, b = load_file(tmp_path / "r" / name), load_file(tmp_path / "whole" / name)
        assert all(torch.equal(a[k], b[k]) for k in a), name


@pytest.mark.parametrize("bad", ["0", "-2"])
def test_eval_every_below_1_is_refused_in_one_line_naming_the_flag(capsys, bad):
    code, _, err = cli(capsys, "train", *TINY, "--eval-every", bad)
    assert code != 0 and "--eval-every" in err and bad in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_no_progress_hides_the_progress_bar(capsys):
    without_flag = [a for a in TINY if a != "--no-progress"]
    for argv, drawn in ((without_flag, True), (TINY, False)):
        terminal = TerminalStream()  # bars draw on a terminal only
        with contextlib.redirect_stderr(terminal):
            assert cli(capsys, "train", *argv)[0] == 0
        bar = terminal.getvalue()
        assert ("epoch 1/1" in bar and "batch" in bar) is drawn, argv  # tqdm's bar on stderr


def test_no_plots_draws_neither_plot_changes_nothing_else_and_a_resume_without_it_draws_them(capsys, tmp_path):
    runs = {"drawn": tmp_path / "drawn", "none": tmp_path / "none"}
    base = with_flags([a for a in TINY if a != "--no-plots"], "--epochs", "2", "--deterministic")
    assert cli(capsys, "train", *base, "--out", str(runs["drawn"]))[0] == 0
    assert cli(capsys, "train", *base, "--no-plots", "--out", str(runs["none"]))[0] == 0
    for name in ("curves.png", "confusion.png"):
        assert (runs["drawn"] / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert not (runs["none"] / name).exists()
    drop = ("elapsed_seconds", "train_seconds", "images_per_second", "time")  # the clock's, not the run's
    assert [{k: v for k, v in r.items() if k not in drop} for r in _metrics(runs["none"])] == [
        {k: v for k, v in r.items() if k not in drop} for r in _metrics(runs["drawn"])]
    a, b = (load_file(runs[k] / "model.safetensors") for k in ("drawn", "none"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    code, out, err = cli(capsys, "train", *base, "--out", str(runs["none"]), "--resume")
    assert code == 0 and f"{runs['none'] / 'curves.png'}: redrawn (it was missing)" in out + err
    assert (runs["none"] / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_off_a_terminal_train_draws_no_bar_and_keeps_the_line_of_each_epoch(capsys):
    """`resnet-lab train ... 2> log` filled the log with the bar's carriage-return redraws."""
    code, out, err = cli(capsys, "train", *[a for a in TINY if a != "--no-progress"])  # stderr captured: no terminal
    assert code == 0 and "\r" not in err and "batch" not in err
    assert re.search(r"^epoch +1/1 +train loss", out, re.M)  # the summary line, as with --no-progress


@pytest.mark.parametrize("flag", ["--sync-bn", "--scale-lr"])
def test_sync_bn_and_scale_lr_in_one_process_say_they_need_torchrun(capsys, spy, flag):
    code, _, err = cli(capsys, "train", *TINY)
    assert code == 0 and "torchrun" not in err
    code, _, err = cli(capsys, "train", *TINY, flag)
    assert code == 0 and "only matter under torchrun" in err and flag in err
    assert spy.calls[0].config.lr == spy.calls[1].config.lr  # one process: the lr is not scaled


def test_device_names_where_the_model_trains(capsys, dry_spy):
    assert cli(capsys, "train", *TINY)[0] == 0
    assert {p.device.type for p in dry_spy.last.model.parameters()} == {"cpu"}


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "experiment"])
def test_device_cuda_runs_there_or_says_it_is_missing(capsys, trained_run, tmp_path, command):
    img = tmp_path / "x.png"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(img)
    args = {"train": ["train", *with_flags(TINY, "--device", "cuda")],
            "evaluate": ["evaluate", str(trained_run), "--device", "cuda"],
            "predict": ["predict", str(trained_run), str(img), "--device", "cuda"],
            "experiment": ["experiment", "bn_imbalance", "--device", "cuda", "--out", str(tmp_path / "e")]}[command]
    code, _, err = cli(capsys, *args)
    if torch.cuda.is_available():
        assert code == 0, err
    else:
        assert code == 2 and "cuda" in err.lower() and "--device cpu" in err, err
        assert "unexpected" not in err


# --- the same training flags through finetune ---------------------------------------------------


def _data_request(call) -> dict:
    """A recorded load_data call as ``{option: value}``, whether it was given a DataConfig or a
    dataset name and keywords."""
    args, kwargs = call
    kwargs = dict(kwargs)
    first = args[0] if args else kwargs.pop("config", kwargs.pop("name", None))
    if dataclasses.is_dataclass(first):
        request = {f.name: getattr(first, f.name) for f in dataclasses.fields(first)}
    else:
        request = {"name": first}
    request.update(kwargs)
    return request


def _changes(base: dict, other: dict) -> dict:
    return {k: v for k, v in other.items() if base.get(k) != v}


FLAG_CASES = [
    ["--epochs", "2"], ["--batch-size", "8"], ["--lr", "0.02"], ["--optimizer", "adamw"], ["--momentum", "0.5"],
    ["--no-nesterov"], ["--weight-decay", "0.01"], ["--schedule", "cosine"], ["--warmup-epochs", "0.5"],
    ["--label-smoothing", "0.1"], ["--grad-clip", "1.0"], ["--no-augment"], ["--random-erasing", "0.5"],
    ["--subset", "40"], ["--seed", "3"], ["--device", "auto"], ["--channels-last"], ["--bf16"], ["--compile"],
    ["--deterministic"], ["--checkpoint-segments", "2"], ["--out", "OUT"], ["--no-progress"], ["--no-plots"],
    ["--dataset", "folder", "--data-dir", "FOLDER"], ["--dataset", "cifar10", "--data-dir", "CIFAR", "--download", "--subset", "20"],
    ["--image-size", "12"], ["--dataset", "folder", "--data-dir", "FOLDER", "--workers", "1"], ["--eval-every", "2"],
    ["--crop-padding", "2"],
    ["--epochs", "2", "--stop-after", "1", "--out", "OUT"],  # a pause is for resuming: refused without --out
]


@pytest.mark.parametrize("flags", FLAG_CASES, ids=lambda f: f[0])
def test_finetune_hands_each_training_flag_to_the_trainer_as_train_does(capsys, monkeypatch, source_run, tmp_path,
                                                                        flags):
    """``finetune`` shares ``train``'s flags; each one must reach the trainer (TrainConfig) and the
    data loader (load_data) exactly as it does for ``train``, whose effects the tests above show."""
    spy = TrainSpy(monkeypatch, run=False)
    data_spy = CallSpy(monkeypatch, rl_data.load_data)
    folder = make_folder(tmp_path / "pics", per_class=20) if "FOLDER" in flags else None
    if "--download" in flags:  # torchvision's CIFAR-10 download, offline (see the --download test above)
        monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeTorchvisionCifar10)
        monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    flags = [str(tmp_path / "out") if f == "OUT" else str(folder) if f == "FOLDER" else
             str(tmp_path / "cifar") if f == "CIFAR" else f for f in flags]
    no_progress = [a for a in TINY if a not in ("--no-progress", "--no-plots")]  # flags the cases give
    changes = {}
    for command, base in (("train", no_progress), ("finetune", ["--from", str(source_run), "--strategy", "all",
                                                                  *no_progress[2:]])):
        assert cli(capsys, command, *base)[0] == 0
        assert cli(capsys, command, *with_flags(base, *flags))[0] == 0
        before, after = spy.calls[-2], spy.calls[-1]
        config = _changes(dataclasses.asdict(before.config), dataclasses.asdict(after.config))
        data = _changes(_data_request(data_spy.calls[-2]), _data_request(data_spy.calls[-1]))
        changes[command] = (config, data)
    assert changes["train"] != ({}, {}), f"{flags} changed nothing for train"
    assert changes["finetune"] == changes["train"]


def test_finetune_prints_its_notes_on_stderr_and_its_results_on_stdout(capsys, source_run, tmp_path):
    """finetune printed its notes on stdout, where the other commands print results only."""
    tiny = [a for a in TINY[2:] if a not in ("--image-size", "8")]  # the input size comes from the weights
    code, out, err = cli(capsys, "finetune", "--from", str(source_run), "--strategy", "head", *tiny)
    assert code == 0 and err.splitlines() == ["note: input size 8 px from the weights (--image-size changes it)"]
    assert out.startswith(f"transfer (head) from {source_run}") and "done: best test accuracy" in out
    weights = tmp_path / "r8.pth"  # a plain state dict, which says nothing of its preprocessing
    torch.save(load_file(source_run / "model.safetensors"), weights)
    code, out, err = cli(capsys, "finetune", "--from-file", str(weights), "--model", "resnet8", "--strategy", "head",
                         *TINY[2:])
    assert code == 0 and err.splitlines() == ["note: the file does not say its preprocessing: the target data's own "
                                              "mean/std are used"]
    assert "note:" not in out and "done: best test accuracy" in out


def test_finetune_seed_draws_the_new_layers_weights(capsys, dry_spy, source_run):
    """--seed seeds the new head's initialization: the same seed gives the same head, another seed
    another one, while the source's weights are the same in all three."""
    for seed in ("1", "1", "2"):
        assert cli(capsys, "finetune", *finetune_args(source_run, "head"), "--seed", seed)[0] == 0
    a, b, c = (call.initial_state for call in dry_spy.calls[-3:])
    assert torch.equal(a["fc.head_weight"], b["fc.head_weight"]) and torch.equal(a["fc.head_bias"], b["fc.head_bias"])
    assert not torch.equal(a["fc.head_weight"], c["fc.head_weight"])
    assert torch.equal(a["fc.weight"], c["fc.weight"]) and torch.equal(a["layer1.0.conv1.weight"], c["layer1.0.conv1.weight"])


def test_finetune_fp16_on_a_cpu_is_refused_as_train_refuses_it(capsys, source_run):
    errors = []
    for command, base in (("train", TINY), ("finetune", ["--from", str(source_run), "--strategy", "all", *TINY[2:]])):
        code, _, err = cli(capsys, command, *with_flags(base, "--device", "cpu"), "--fp16")
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1, err
        errors.append(err)
    assert errors[0] == errors[1] and "fp16" in errors[0]


@pytest.mark.parametrize("flag", ["--sync-bn", "--scale-lr"])
def test_finetune_has_no_torchrun_flags_since_it_runs_in_one_process(capsys, source_run, flag):
    """finetune refuses torchrun, so --sync-bn and --scale-lr could never act there: not accepted."""
    with pytest.raises(SystemExit) as exit_:
        cli(capsys, "finetune", *finetune_args(source_run), flag)
    assert exit_.value.code == 2 and f"unrecognized arguments: {flag}" in capsys.readouterr().err


# --- finetune's own flags -----------------------------------------------------------------------


def _changed_keys(call) -> set[str]:
    final = call.model.state_dict()
    return {k for k, v in call.initial_state.items() if not torch.equal(final[k], v)}


def test_finetune_strategy_last_trains_only_the_last_stage_and_the_classifier(capsys, spy, source_run):
    source = load_file(source_run / "model.safetensors")
    assert cli(capsys, "finetune", *finetune_args(source_run, "last"))[0] == 0
    call = spy.last
    final = call.model.state_dict()
    for k, v in source.items():
        if k.startswith(("layer3.", "fc.")):
            continue
        assert torch.equal(final[k], v), f"{k} changed although only layer3 and fc train"
    changed = _changed_keys(call)
    assert changed and all(k.startswith(("layer3.", "fc.")) for k in changed)
    assert {"layer3.0.conv1.weight", "layer3.0.bn1.running_mean", "fc.weight"} <= changed


def test_finetune_unfreeze_from_names_the_first_module_that_trains(capsys, spy, source_run):
    assert cli(capsys, "finetune", *finetune_args(source_run, "last"), "--unfreeze-from", "layer2")[0] == 0
    changed = _changed_keys(spy.last)
    assert {"layer2.0.conv1.weight", "layer3.0.conv1.weight", "fc.weight"} <= changed
    assert all(k.startswith(("layer2.", "layer3.", "fc.")) for k in changed)


def test_finetune_strategy_all_starts_from_the_source_and_trains_every_layer(capsys, spy, source_run):
    source = load_file(source_run / "model.safetensors")
    assert cli(capsys, "finetune", *finetune_args(source_run, "all"))[0] == 0
    call = spy.last
    assert all(torch.equal(call.initial_state[k], v) for k, v in source.items())  # --from: the run's weights
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "fc.weight"} <= _changed_keys(call)


def test_finetune_from_file_with_model_reads_a_bare_state_dict(capsys, spy, source_run, tmp_path):
    state = load_file(source_run / "model.safetensors")
    state = {k: v + 0.5 if v.is_floating_point() else v for k, v in state.items()}  # not the run's weights
    path = tmp_path / "weights.safetensors"
    save_file(state, str(path))
    code, _, err = cli(capsys, "finetune", "--from-file", str(path), "--strategy", "last", *TINY[2:])
    assert code == 2 and "--model" in err
    assert cli(capsys, "finetune", "--from-file", str(path), "--model", "resnet8", "--strategy", "last", *TINY[2:])[0] == 0
    final = spy.last.model.state_dict()
    frozen = [k for k in state if not k.startswith(("layer3.", "fc."))]
    assert frozen and all(torch.equal(final[k], state[k]) for k in frozen)


def test_finetune_backbone_lr_scale_sets_the_backbone_rate_to_that_fraction(capsys, spy, source_run):
    base = with_flags(finetune_args(source_run, "all"), "--schedule", "constant", "--lr", "0.02")
    assert cli(capsys, "finetune", *base)[0] == 0
    assert cli(capsys, "finetune", *base, "--backbone-lr-scale", "0.25")[0] == 0
    one_rate, scaled = spy.calls[-2], spy.calls[-1]
    assert {lr for s in one_rate.steps for lr in s.lrs} == {0.02}
    for name, p in zip(scaled.names, scaled.params):
        want = 0.02 if name.startswith("fc.") else 0.02 * 0.25
        assert scaled.group_of(p)["lr"] == pytest.approx(want), name


def test_finetune_resume_continues_an_interrupted_run(capsys, monkeypatch, source_run, tmp_path):
    def stop(record):
        if record["epoch"] == 1 and record["step"] == 1:
            raise KeyboardInterrupt

    args = [*with_flags(finetune_args(source_run, "last"), "--epochs", "2"), "--out", str(tmp_path / "ft")]
    with monkeypatch.context() as m:
        TrainSpy(m, step_callbacks=(stop,))
        assert cli(capsys, "finetune", *args)[0] == 130
    state = torch.load(tmp_path / "ft" / "train_state.pt", weights_only=True)
    assert (int(state["epoch"]), int(state["step"])) == (0, 1)
    code, out, _ = cli(capsys, "finetune", *args, "--resume")
    assert code == 0 and "resuming" in out
    lines = (tmp_path / "ft" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


# --- evaluate -----------------------------------------------------------------------------------


def evaluate_json(capsys, *argv: str) -> dict:
    code, out, err = cli(capsys, "evaluate", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_evaluate_best_uses_best_safetensors_instead_of_the_last_epoch(capsys, trained_run, tmp_path):
    other = tmp_path / "other"
    # Other weights on the same data (same seed, so the same subset and normalization): another lr.
    assert cli(capsys, "train", *TINY, "--norm", "scratch", "--lr", "0.5", "--out", str(other))[0] == 0
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    shutil.copy(other / "model.safetensors", run / "best.safetensors")  # a best epoch with other weights
    last, best, ref = evaluate_json(capsys, str(run)), evaluate_json(capsys, str(run), "--best"), evaluate_json(capsys, str(other))
    assert (best["accuracy"], best["loss"]) == (ref["accuracy"], ref["loss"])
    assert last["loss"] != best["loss"]
    assert last["loss"] == pytest.approx(json.loads((run / "model.json").read_text())["metrics"]["test_loss"], rel=1e-6)


def test_evaluate_tta_averages_each_image_with_its_mirror(capsys, monkeypatch, trained_run):
    ev_spy = CallSpy(monkeypatch, rl_train.evaluate)
    got = evaluate_json(capsys, str(trained_run), "--tta")
    loader = ev_spy.calls[-1][0][1]
    model, _ = rl_train.load_model(trained_run)
    model = model.double()
    with torch.no_grad():
        xs, ys = zip(*[(x.double(), y) for x, y in loader])
        x, y = torch.cat(xs), torch.cat(ys)
        p = (model(x).softmax(1) + model(x.flip(-1)).softmax(1)) / 2  # float64 reference
    assert got["tta"] is True and got["n"] == len(y) == 128
    assert got["accuracy"] == pytest.approx(float((p.argmax(1) == y).double().mean()))
    assert got["loss"] == pytest.approx(float(-p[torch.arange(len(y)), y].log().mean()), rel=1e-5)
    plain = evaluate_json(capsys, str(trained_run))
    assert plain["loss"] != pytest.approx(got["loss"], rel=1e-4)


def test_evaluate_tta_shift_adds_each_view_moved_up_down_left_and_right(capsys, monkeypatch, trained_run):
    ev_spy = CallSpy(monkeypatch, rl_train.evaluate)
    got = evaluate_json(capsys, str(trained_run), "--tta", "--tta-shift", "1")
    loader = ev_spy.calls[-1][0][1]
    model, meta = rl_train.load_model(trained_run)
    model = model.double()
    black = [-m / s for m, s in zip(meta["mean"], meta["std"])]  # a black pixel, normalized, per channel
    with torch.no_grad():
        xs, ys = zip(*[(x.double(), y) for x, y in loader])
        x, y = torch.cat(xs), torch.cat(ys)
        side = x.shape[-1]
        assert x.shape[1] == len(black) == 3
        padded = [torch.cat([torch.nn.functional.pad(v[:, c:c + 1], (1, 1, 1, 1), value=black[c]) for c in range(3)], 1)
                  for v in (x, x.flip(-1))]
        views = [p[..., 1 - dy:1 - dy + side, 1 - dx:1 - dx + side]
                 for p in padded for dy, dx in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))]
        p = torch.stack([model(v).softmax(1) for v in views]).mean(0)  # float64 reference, 10 views
    assert got["tta"] is True and got["tta_shift"] == 1 and got["n"] == len(y) == 128
    assert got["accuracy"] == pytest.approx(float((p.argmax(1) == y).double().mean()))
    assert got["loss"] == pytest.approx(float(-p[torch.arange(len(y)), y].log().mean()), rel=1e-5)
    flip_only = evaluate_json(capsys, str(trained_run), "--tta")
    assert flip_only["tta_shift"] == 0 and flip_only["loss"] != pytest.approx(got["loss"], rel=1e-4)
    code, out, _ = cli(capsys, "evaluate", str(trained_run), "--tta-shift", "1")
    assert code == 0 and "with 1 px shift TTA" in out  # without --tta: the 5 unmirrored views
    code, _, err = cli(capsys, "evaluate", str(trained_run), "--tta-shift", "-1")
    assert code != 0 and "--tta-shift must be 0 (off) or a positive number of pixels, got -1" in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback


def test_evaluate_tta_pattern_diamond_moves_the_views_every_way_within_the_shift(capsys, monkeypatch, trained_run):
    """--tta-pattern diamond --tta-shift 2: each view and each of its 12 moves with |dy| + |dx| <= 2
    (26 views with --tta), against a float64 recomputation that pads with the black pixel and crops;
    without --tta-shift it is refused, since it would change nothing."""
    ev_spy = CallSpy(monkeypatch, rl_train.evaluate)
    got = evaluate_json(capsys, str(trained_run), "--tta", "--tta-shift", "2", "--tta-pattern", "diamond")
    loader = ev_spy.calls[-1][0][1]
    model, meta = rl_train.load_model(trained_run)
    model = model.double()
    black = [-m / s for m, s in zip(meta["mean"], meta["std"])]
    moves = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if abs(dy) + abs(dx) <= 2]
    assert len(moves) == 13
    with torch.no_grad():
        xs, ys = zip(*[(x.double(), y) for x, y in loader])
        x, y = torch.cat(xs), torch.cat(ys)
        side = x.shape[-1]
        padded = [torch.cat([torch.nn.functional.pad(v[:, c:c + 1], (2, 2, 2, 2), value=black[c]) for c in range(3)], 1)
                  for v in (x, x.flip(-1))]
        views = [p[..., 2 - dy:2 - dy + side, 2 - dx:2 - dx + side] for p in padded for dy, dx in moves]
        p = torch.stack([model(v).softmax(1) for v in views]).mean(0)  # float64 reference, 26 views
    assert got["tta_shift"] == 2 and got["tta_pattern"] == "diamond" and got["n"] == len(y) == 128
    assert got["accuracy"] == pytest.approx(float((p.argmax(1) == y).double().mean()))
    assert got["loss"] == pytest.approx(float(-p[torch.arange(len(y)), y].log().mean()), rel=1e-5)
    cross = evaluate_json(capsys, str(trained_run), "--tta", "--tta-shift", "2")
    assert cross["tta_pattern"] == "cross" and cross["loss"] != pytest.approx(got["loss"], rel=1e-4)
    code, out, _ = cli(capsys, "evaluate", str(trained_run), "--tta", "--tta-shift", "2", "--tta-pattern", "diamond")
    assert code == 0 and "with flip and 2 px diamond shift TTA" in out
    code, _, err = cli(capsys, "evaluate", str(trained_run), "--tta", "--tta-pattern", "diamond")
    assert code != 0 and err.strip() == ("error: --tta-pattern diamond says how --tta-shift moves the views, and "
                                         "--tta-shift is 0 (off): add --tta-shift PX, or drop --tta-pattern")


def test_evaluate_an_ensemble_with_best_and_tta_averages_every_models_best_weights_over_both_views(
        capsys, monkeypatch, trained_run, tmp_path):
    """--best and --tta reach every member of an ensemble, not only the first."""
    other, third = tmp_path / "other", tmp_path / "third"
    assert cli(capsys, "train", *TINY, "--lr", "0.5", "--out", str(other))[0] == 0
    assert cli(capsys, "train", *TINY, "--lr", "0.02", "--out", str(third))[0] == 0
    runs = []
    for name, last, best in (("a", trained_run, other), ("b", other, third)):  # three weights in all
        run = tmp_path / name
        shutil.copytree(last, run)
        shutil.copy(best / "model.safetensors", run / "best.safetensors")
        runs.append(run)
    ev_spy = CallSpy(monkeypatch, rl_train.evaluate)
    got = evaluate_json(capsys, *map(str, runs), "--best", "--tta")
    loader = ev_spy.calls[-1][0][1]
    members = [rl_train.load_model(r)[0].double() for r in (other, third)]  # the two best weights
    with torch.no_grad():
        xs, ys = zip(*[(x.double(), y) for x, y in loader])
        x, y = torch.cat(xs), torch.cat(ys)
        p = torch.stack([m(v).softmax(1) for m in members for v in (x, x.flip(-1))]).mean(0)  # float64
    assert got["n"] == len(y) and got["tta"] is True
    assert got["accuracy"] == pytest.approx(float((p.argmax(1) == y).double().mean()))
    assert got["loss"] == pytest.approx(float(-p[torch.arange(len(y)), y].log().mean()), rel=1e-5)
    for flags in ([], ["--best"], ["--tta"]):  # each flag changes the ensemble's figures
        assert evaluate_json(capsys, *map(str, runs), *flags)["loss"] != pytest.approx(got["loss"], rel=1e-4)


def test_evaluate_batch_size_changes_the_batches_not_the_result(capsys, monkeypatch, trained_run):
    ev_spy = CallSpy(monkeypatch, rl_train.evaluate)
    default, small = evaluate_json(capsys, str(trained_run)), evaluate_json(capsys, str(trained_run), "--batch-size", "50")
    sizes = [[len(y) for _, y in call[0][1]] for call in ev_spy.calls]
    assert sizes == [[128], [50, 50, 28]]  # default 256 > 128 test images
    assert small["accuracy"] == default["accuracy"] and small["loss"] == pytest.approx(default["loss"], rel=1e-5)


def test_evaluate_image_size_resizes_the_test_images(capsys, monkeypatch, trained_run):
    ev_spy = CallSpy(monkeypatch, rl_train.evaluate)
    evaluate_json(capsys, str(trained_run))
    evaluate_json(capsys, str(trained_run), "--image-size", "12")
    shapes = [next(iter(call[0][1]))[0].shape[-2:] for call in ev_spy.calls]
    assert shapes == [(8, 8), (12, 12)]  # default: the size the run was trained at


def test_evaluate_dataset_data_dir_and_workers_choose_the_test_images(capsys, monkeypatch, tmp_path):
    data_spy = CallSpy(monkeypatch, rl_data.load_data)
    a = make_folder(tmp_path / "a")  # 10 per class: the seeded 10% split holds 1 per class out
    b = tmp_path / "b"  # train/ and val/: val is the test split
    make_folder(b / "train", per_class=4, seed=1)
    make_folder(b / "val", per_class=3, seed=2)
    run = tmp_path / "run"
    assert cli(capsys, "train", *with_flags(FOLDER_TINY, "--dataset", "folder"), "--data-dir", str(a),
               "--workers", "0", "--out", str(run))[0] == 0
    # (--batch-size 4: the loader also batches the few training images, and warns below one batch)
    assert evaluate_json(capsys, str(run), "--data-dir", str(a), "--workers", "0", "--batch-size", "4")["n"] == 2
    assert evaluate_json(capsys, str(run), "--data-dir", str(b), "--workers", "0", "--batch-size", "4")["n"] == 6
    assert _data_request(data_spy.calls[-1])["num_workers"] == 0 and data_spy.results[-1].test.num_workers == 0
    code, _, err = cli(capsys, "evaluate", str(run), "--dataset", "fake")  # the run's dataset is the default
    assert code == 2 and "classes" in err


def test_evaluate_on_a_folder_of_other_classes_names_both_lists_and_not_drop_dataset(capsys, tmp_path):
    """--dataset folder is the run's own dataset: dropping it would change nothing, so the error offers
    no such way out (it does for another dataset than the run's, test_cli_errors)."""
    a, b = make_folder(tmp_path / "a"), make_folder(tmp_path / "b", classes=("cats", "dogs"))
    run = tmp_path / "run"
    assert cli(capsys, "train", *with_flags(FOLDER_TINY, "--dataset", "folder"), "--data-dir", str(a),
               "--workers", "0", "--out", str(run))[0] == 0
    code, _, err = cli(capsys, "evaluate", str(run), "--dataset", "folder", "--data-dir", str(b), "--workers", "0")
    assert code == 2 and err == "error: the dataset's classes ['cats', 'dogs'] differ from the model's ['ants', 'bees']\n"


def test_evaluate_json_and_text_report_the_same_figures(capsys, trained_run):
    ev = evaluate_json(capsys, str(trained_run))
    code, out, _ = cli(capsys, "evaluate", str(trained_run))
    assert code == 0 and f"accuracy {100 * ev['accuracy']:.2f}%" in out and f"loss {ev['loss']:.4f}" in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out)
    assert len(ev["per_class_accuracy"]) == 10 and len(ev["confusion"]) == 10


def test_evaluate_text_gives_each_class_the_percent_of_its_confusion_row(capsys, trained_run):
    """Each class's line is 100 x (its correct predictions / its test images), read off the JSON's
    confusion matrix (rows: the true class), as a percent; without --tta-shift no view is moved, so
    the JSON names no pattern (null), not the default cross."""
    ev = evaluate_json(capsys, str(trained_run))
    assert (ev["tta"], ev["tta_shift"], ev["tta_pattern"]) == (False, 0, None)
    code, out, _ = cli(capsys, "evaluate", str(trained_run))
    shown = dict(line.rsplit(None, 1) for line in out.splitlines()[1:])
    want = {c: f"{100 * row[i] / sum(row):.2f}%" for i, (c, row) in enumerate(zip(ev["per_class_accuracy"],
                                                                                ev["confusion"]))}
    assert code == 0 and {c.strip(): p for c, p in shown.items()} == want
    assert len(set(want.values())) > 1  # the classes differ: a line holding another class's figure would show


def test_evaluate_text_of_an_ensemble_names_it_and_every_member(capsys, trained_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(trained_run, other)
    code, out, _ = cli(capsys, "evaluate", str(trained_run), str(other))
    assert code == 0 and out.splitlines()[0].startswith(f"ensemble of 2 ({trained_run}, {other}): accuracy ")


# --- predict and export -------------------------------------------------------------------------


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
    return path


def _reference_probs(run: Path, path: Path) -> tuple[list[str], np.ndarray]:
    """Class names and float64 softmax of the run's model on an image already of its input size,
    normalized by hand with the run's mean/std."""
    model, meta = rl_train.load_model(run)
    arr = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255  # (H, W, C)
    x = (arr - np.array(meta["mean"])) / np.array(meta["std"])
    with torch.no_grad():
        probs = model.double()(torch.from_numpy(x.transpose(2, 0, 1))[None]).softmax(1)[0].numpy()
    return meta["classes"], probs


def predict_json(capsys, *argv: str) -> list[dict]:
    code, out, err = cli(capsys, "predict", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_predict_top_k_returns_the_k_most_probable_classes(capsys, trained_run, image):
    classes, probs = _reference_probs(trained_run, image)
    order = np.argsort(-probs)
    for k in (1, 4):
        (res,) = predict_json(capsys, str(trained_run), str(image), "--top-k", str(k))
        assert [c for c, _ in res["top"]] == [classes[i] for i in order[:k]]
        assert [p for _, p in res["top"]] == pytest.approx(probs[order[:k]].tolist(), rel=1e-5)
    assert len(predict_json(capsys, str(trained_run), str(image))[0]["top"]) == 3  # the default


def test_predict_without_device_runs_on_the_cpu_as_its_help_says(capsys, trained_run, image, monkeypatch):
    """predict's --device is cpu when not given (train's and evaluate's are auto): a few images do not
    pay for a GPU's start-up."""
    devices = CallSpy(monkeypatch, rl_train.resolve_device)
    assert predict_json(capsys, str(trained_run), str(image))
    assert devices.calls and {str(args[0]) for args, _ in devices.calls} == {"cpu"}


def test_predict_json_and_text_name_the_same_classes(capsys, trained_run, image):
    (res,) = predict_json(capsys, str(trained_run), str(image))
    code, out, _ = cli(capsys, "predict", str(trained_run), str(image))
    assert code == 0
    assert out.strip() == f"{image}: " + ", ".join(f"{c} {100 * p:.1f}%" for c, p in res["top"])


@pytest.fixture(scope="module")
def onnx_files(trained_run, tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    files = {"plain": d / "plain.onnx", "fused": d / "fused.onnx", "opset13": d / "opset13.onnx"}
    assert main(["export", str(trained_run), "--out", str(files["plain"])]) == 0
    assert main(["export", str(trained_run), "--fuse-bn", "--out", str(files["fused"])]) == 0
    assert main(["export", str(trained_run), "--opset", "13", "--out", str(files["opset13"])]) == 0
    return files


def test_export_fuse_bn_folds_the_batchnorm_arithmetic_and_keeps_the_outputs(trained_run, onnx_files):
    # Our scratch BN exports as its arithmetic, x * scale + shift (the exporter folds the per-channel
    # factors into constants); folded into the convs, no multiplication is left.
    ops = {k: {n.op_type for n in onnx.load(str(f)).graph.node} for k, f in onnx_files.items()}
    assert "Mul" in ops["plain"]
    assert not ops["fused"] & {"Mul", "Sqrt", "Div", "Sub", "BatchNormalization"}
    model, _ = rl_train.load_model(trained_run)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.double()(x.double()).numpy()
    for f in onnx_files.values():
        sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
        (got,) = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_export_opset_sets_the_files_onnx_opset(onnx_files):
    def opset(f: Path) -> int:
        return next(o.version for o in onnx.load(str(f)).opset_import if o.domain in ("", "ai.onnx"))

    assert opset(onnx_files["plain"]) == 17 and opset(onnx_files["opset13"]) == 13


def test_predict_onnx_gives_the_pytorch_prediction(capsys, trained_run, onnx_files, image):
    (torch_res,) = predict_json(capsys, str(trained_run), str(image), "--top-k", "5")
    (onnx_res,) = predict_json(capsys, "--onnx", str(onnx_files["fused"]), str(image), "--top-k", "5")
    assert [c for c, _ in onnx_res["top"]] == [c for c, _ in torch_res["top"]]
    assert [p for _, p in onnx_res["top"]] == pytest.approx([p for _, p in torch_res["top"]], abs=1e-4)


# --- experiment ---------------------------------------------------------------------------------


@pytest.fixture
def probe_experiment(monkeypatch) -> dict:
    """An experiment that records the Context it is given and loads data through it."""
    seen: dict = {}

    def run(ctx):
        seen.update(budget=ctx.budget, out=ctx.out, data_dir=ctx.data_dir, device=ctx.device, seed=ctx.seed)
        if ctx.data_dir:
            seen["classes"] = list(ctx.data("folder", batch_size=2, num_workers=0).info.classes)
        return Report(claim=module.CLAIM, setup={}, columns=["x"], rows=[[1], [2]],
                      checks=[Check("the probe ran", True, "it did")])

    module = types.ModuleType("resnet_lab.experiments.option_probe")
    module.NAME, module.CLAIM, module.run = "option_probe", "Options reach the experiment.", run
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(registry, "EXPERIMENT_MODULES", (*registry.EXPERIMENT_MODULES, "option_probe"))
    return seen


def test_experiment_flags_reach_the_named_experiment(capsys, probe_experiment, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    code, out, _ = cli(capsys, "experiment", "option_probe")
    assert code == 0 and "verdict: confirmed (smoke budget: a check of the pipeline, not evidence)" in out
    assert probe_experiment["budget"] == "smoke" and probe_experiment["seed"] == 0 and probe_experiment["data_dir"] is None
    assert (tmp_path / "runs" / "experiments" / "option_probe" / "report.md").is_file()  # the default --out
    folder = make_folder(tmp_path / "pics")
    code, out, _ = cli(capsys, "experiment", "option_probe", "--budget", "full", "--out", str(tmp_path / "o"),
                       "--data-dir", str(folder), "--device", "cpu", "--seed", "7")
    assert code == 0 and re.search(r"verdict: confirmed \(\d+ s\); report in", out)  # a full run's stands bare
    assert out.count("verdict:") == 1, out  # said once, not again by the CLI
    assert {k: probe_experiment[k] for k in ("budget", "out", "data_dir", "device", "seed", "classes")} == {
        "budget": "full", "out": tmp_path / "o", "data_dir": str(folder), "device": torch.device("cpu"), "seed": 7,
        "classes": ["ants", "bees"]}
    assert (tmp_path / "o" / "report.md").is_file() and (tmp_path / "o" / "results.json").is_file()


def test_experiment_list_names_every_experiment_with_its_claim(capsys):
    code, out, _ = cli(capsys, "experiment", "--list")
    assert code == 0
    listed = [line.split()[0] for line in out.splitlines()]
    names = [importlib.import_module(f"resnet_lab.experiments.{m}").NAME for m in registry.EXPERIMENT_MODULES]
    assert listed == names and len(names) == 10
    for name, claim in list_experiments().items():
        assert claim in out, name


def test_experiment_smoke_budget_run_writes_results_and_prints_the_verdict(capsys, tmp_path):
    code, out, _ = cli(capsys, "experiment", "bn_imbalance", "--budget", "smoke", "--device", "cpu",
                       "--out", str(tmp_path))
    results = json.loads((tmp_path / "results.json").read_text())
    assert code == 0 and results["verdict"] in VERDICTS and f"verdict: {results['verdict']}" in out
    assert results["budget"] == "smoke" and (tmp_path / "report.md").is_file()


# --- summary ------------------------------------------------------------------------------------


def summary_json(capsys, *argv: str) -> dict:
    code, out, err = cli(capsys, "summary", *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_summary_counts_the_named_models_parameters(capsys):
    # resnet8 for 10 classes, counted by hand from He et al.'s CIFAR design (option-A shortcuts):
    # stem 3x3x3x16 + BN; stage widths 16, 32, 64, one block of two 3x3 convs + BNs each; fc 64 -> 10.
    conv = lambda cin, cout: cin * cout * 9  # noqa: E731
    want = conv(3, 16) + 32 + (conv(16, 16) * 2 + 64) + (conv(16, 32) + conv(32, 32) + 128) \
        + (conv(32, 64) + conv(64, 64) + 256) + 64 * 10 + 10
    assert summary_json(capsys, "resnet8")["total_params"] == want == 75290


def test_summary_depth_shows_that_many_module_levels(capsys):
    model = create_model("resnet8", num_classes=10)
    for depth in (1, 2):
        s = summary_json(capsys, "resnet8", "--depth", str(depth))
        assert max(r["depth"] for r in s["rows"]) == depth
        assert sum(r["params"] for r in s["rows"]) == s["total_params"]
    top = {r["name"] for r in summary_json(capsys, "resnet8", "--depth", "1")["rows"]}
    assert top <= {n for n, _ in model.named_children()} and {"conv1", "layer1", "layer3", "fc"} <= top


def test_summary_input_size_sets_the_input_shape(capsys):
    default, small = summary_json(capsys, "resnet8"), summary_json(capsys, "resnet8", "--input-size", "1", "16", "16")
    assert default["input_shape"] == [1, 3, 32, 32] and small["input_shape"] == [1, 1, 16, 16]
    assert default["total_params"] - small["total_params"] == 2 * 16 * 9  # conv1 sees 1 channel, not 3


def test_summary_num_classes_sets_the_classifier_width(capsys):
    default, seven = summary_json(capsys, "resnet8"), summary_json(capsys, "resnet8", "--num-classes", "7")
    assert default["total_params"] - seven["total_params"] == (64 + 1) * 3


def test_summary_small_input_uses_the_3x3_stem(capsys):
    # auto (the default) decides from --input-size as train decides from the images: small at 32 px,
    # so the table shows the network `train --model resnet18` builds on 32 px data
    args = ["resnet18", "--input-size", "3", "32", "32", "--num-classes", "10"]
    big, small = summary_json(capsys, *args, "--small-input", "no"), summary_json(capsys, *args, "--small-input")
    auto, yes = summary_json(capsys, *args), summary_json(capsys, *args, "--small-input", "yes")
    conv1 = {s: next(r for r in d["rows"] if r["name"] == "conv1") for s, d in (("big", big), ("small", small))}
    assert conv1["big"]["params"] == 3 * 64 * 7 * 7 and conv1["small"]["params"] == 3 * 64 * 3 * 3
    assert conv1["big"]["output_shape"] == [[1, 64, 16, 16]] and conv1["small"]["output_shape"] == [[1, 64, 32, 32]]
    assert auto == yes == small
    large = summary_json(capsys, "resnet18", "--input-size", "3", "96", "96")
    assert next(r for r in large["rows"] if r["name"] == "conv1")["params"] == 3 * 64 * 7 * 7  # > 64 px: ImageNet stem
    assert cli(capsys, "summary", "resnet20", "--small-input", "no")[0] == 2  # would change nothing
    # the flag alone before the model name: argparse took "resnet18" as its value (invalid choice)
    assert summary_json(capsys, "--small-input", "resnet18", "--input-size", "3", "32", "32", "--num-classes",
                        "10") == small
    # the bound of auto, as its help says: "yes when --input-size is <= 64 px"
    conv1 = {px: next(r for r in summary_json(capsys, "resnet18", "--input-size", "3", str(px), str(px))["rows"]
                      if r["name"] == "conv1")["params"] for px in (64, 65)}
    assert conv1 == {64: 3 * 64 * 3 * 3, 65: 3 * 64 * 7 * 7}


@pytest.mark.parametrize("norm, kind", [("batch", "BatchNorm2d"), ("scratch", "ScratchBatchNorm2d"),
                                        ("group", "GroupNorm")])
def test_summary_norm_builds_the_model_with_that_normalization(capsys, norm, kind):
    """The Type column names the layer built: scratch BN read BatchNorm2d as torch's does, and the
    group norm _GroupNorm (a private class)."""
    rows = summary_json(capsys, "resnet8", "--norm", norm)["rows"]
    norms = [r["type"] for r in rows if r["type"].endswith(("BatchNorm2d", "GroupNorm"))]
    assert len(norms) == 7 and all(t == kind for t in norms)
    none_rows = summary_json(capsys, "resnet8", "--norm", "none")["rows"]
    assert not [r for r in none_rows if r["type"].endswith(("BatchNorm2d", "GroupNorm"))]


def test_summary_json_and_text_show_the_same_totals(capsys):
    s = summary_json(capsys, "resnet8")
    code, out, _ = cli(capsys, "summary", "resnet8")
    assert code == 0 and f"Total params:          {s['total_params']:,}" in out


# --- TrainConfig fields without a flag of their own ---------------------------------------------


def _config(tmp_path=None, **kw) -> rl_train.TrainConfig:
    base = dict(epochs=1, lr=0.05, progress=False, plots=False, device="cpu", out=str(tmp_path) if tmp_path else None)
    return rl_train.TrainConfig(**{**base, **kw})


def _tiny() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


def test_config_plots_draws_curves_and_confusion_only_when_on(tmp_path):
    rl_train.train(_tiny(), make_bundle(), _config(tmp_path / "off"), log=lambda s: None)
    rl_train.train(_tiny(), make_bundle(), _config(tmp_path / "on", plots=True), log=lambda s: None)
    assert not list((tmp_path / "off").glob("*.png"))
    for name in ("curves.png", "confusion.png"):
        assert (tmp_path / "on" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_lr_scale_multiplies_the_rate_of_parameters_by_name_prefix(monkeypatch):
    spy = TrainSpy(monkeypatch)
    model = _tiny()
    rl_train.train(model, make_bundle(), _config(schedule="constant", lr_scale={"conv.": 0.1, "fc.": 2.0}),
                   log=lambda s: None)
    call = spy.last
    for name, p in zip(call.names, call.params):
        want = 0.05 * {"conv": 0.1, "fc": 2.0}.get(name.split(".")[0], 1.0)
        assert call.group_of(p)["lr"] == pytest.approx(want), name


def test_config_max_steps_per_epoch_caps_the_steps_of_each_epoch(monkeypatch):
    spy = TrainSpy(monkeypatch)
    rl_train.train(_tiny(), make_bundle(), _config(epochs=2), log=lambda s: None)  # 96 / 16 = 6 steps an epoch
    rl_train.train(_tiny(), make_bundle(), _config(epochs=2, max_steps_per_epoch=2), log=lambda s: None)
    full, capped = spy.calls
    assert [r["epoch"] for r in full.records] == [1] * 6 + [2] * 6
    assert [(r["epoch"], r["step"]) for r in capped.records] == [(1, 1), (1, 2), (2, 1), (2, 2)]


def test_config_progress_off_writes_no_bar():
    for progress in (True, False):
        terminal = TerminalStream()  # bars draw on a terminal only
        with contextlib.redirect_stderr(terminal):
            rl_train.train(_tiny(), make_bundle(), _config(progress=progress), log=lambda s: None)
        assert ("batch" in terminal.getvalue()) is progress


def _held_out(folder: Path, **kw) -> list[str]:
    return sorted(p for p, _ in rl_data.load_data("folder", data_dir=folder, batch_size=2, num_workers=0,
                                                  **kw).test.dataset.samples)


@pytest.mark.filterwarnings("ignore:only .* samples for a global batch:UserWarning")  # tiny folders, batch 128
def test_every_seed_of_a_folder_tests_on_the_same_held_out_images_and_evaluate_and_finetune_keep_them(
        capsys, tmp_path):
    """The hold-out of a folder without val/ used to follow --seed: an ensemble of two seeds, or a
    finetune with another seed, scored images a run had trained on (a QA run on pure noise: 17%
    alone, 67-75% as an ensemble)."""
    folder = make_folder(tmp_path / "pics", per_class=20)  # 10%: 2 of each class held out
    assert _held_out(folder, seed=0) == _held_out(folder, seed=1)  # the training seed moves nothing
    assert _held_out(folder, split_seed=1) != _held_out(folder)  # split_seed does
    runs = []
    for seed in ("0", "1"):
        runs.append(str(tmp_path / f"r{seed}"))
        assert cli(capsys, "train", *with_flags(FOLDER_TINY, "--dataset", "folder", "--seed", seed), "--data-dir",
                   str(folder), "--workers", "0", "--out", runs[-1])[0] == 0
        assert json.loads((Path(runs[-1]) / "model.json").read_text())["split_seed"] == 0
    assert evaluate_json(capsys, *runs, "--data-dir", str(folder), "--workers", "0", "--batch-size", "4")["n"] == 4
    # A run saved before model.json recorded the split drew it with its training seed: evaluate holds
    # out those images again, and an ensemble with a run that held out others is refused.
    old = tmp_path / "old"
    shutil.copytree(runs[1], old)
    meta = json.loads((old / "model.json").read_text())
    del meta["split_seed"]
    (old / "model.json").write_text(json.dumps(meta))
    code, _, err = cli(capsys, "evaluate", runs[0], str(old), "--data-dir", str(folder), "--workers", "0")
    assert code == 2 and "they hold out different test images of the folder (split seeds 0 and 1, shares 0.1 and " \
                         "0.1)" in err
    # the same split seed and another share hold out other images too (the loader says so): refused alike
    assert _held_out(folder, val_fraction=0.2) != _held_out(folder)
    shutil.copytree(runs[1], tmp_path / "share")
    meta = json.loads((tmp_path / "share" / "model.json").read_text())
    (tmp_path / "share" / "model.json").write_text(json.dumps({**meta, "val_fraction": 0.2}))
    code, _, err = cli(capsys, "evaluate", runs[0], str(tmp_path / "share"), "--data-dir", str(folder), "--workers", "0")
    assert code == 2 and "(split seeds 0 and 0, shares 0.1 and 0.2)" in err
    from resnet_lab.runs import load_meta, split_seed_of
    from resnet_lab.transfer import load_source, with_source_preprocessing

    assert split_seed_of(load_meta(old)) == 1
    source = load_source(str(old))
    assert source.split_seed == 1 and "state_dict" not in repr(source)
    config = with_source_preprocessing(rl_data.DataConfig("folder", data_dir=folder, num_workers=0), source)
    assert config.split_seed == 1 and _held_out(folder, split_seed=1) == sorted(
        p for p, _ in rl_data.load_data(config).test.dataset.samples)


def test_evaluate_json_gives_null_for_a_class_without_test_images_and_the_text_says_so(capsys, tmp_path):
    """json.dumps wrote NaN, which is not JSON: a strict parser refused the whole output."""
    data = tmp_path / "d"
    make_folder(data / "train", per_class=6, classes=("cat", "dog", "emu"))
    make_folder(data / "val", per_class=2, classes=("cat", "dog"), seed=1)
    run = tmp_path / "run"
    assert cli(capsys, "train", *with_flags(FOLDER_TINY, "--dataset", "folder", "--batch-size", "4"), "--data-dir",
               str(data), "--workers", "0", "--out", str(run))[0] == 0
    code, out, err = cli(capsys, "evaluate", str(run), "--data-dir", str(data), "--workers", "0", "--json")
    assert code == 0, err
    ev = json.loads(out, parse_constant=lambda c: pytest.fail(f"{c} is not JSON"))
    assert ev["per_class_accuracy"]["emu"] is None and ev["n"] == 4
    assert all(isinstance(ev["per_class_accuracy"][c], float) for c in ("cat", "dog"))
    # confusion[true][predicted], rows in the classes' order (docs/REPORT.md: rows are the true class),
    # counted here from predict_images on the test files: a transposed matrix survived
    from resnet_lab.deploy import predict_images

    classes = ["cat", "dog", "emu"]
    want = [[0] * 3 for _ in classes]
    for true in ("cat", "dog"):
        for r in predict_images(str(run), sorted((data / "val" / true).iterdir()), top_k=1):
            want[classes.index(true)][classes.index(r["top"][0][0])] += 1
    assert ev["confusion"] == want and [sum(row) for row in ev["confusion"]] == [2, 2, 0]
    code, out, _ = cli(capsys, "evaluate", str(run), "--data-dir", str(data), "--workers", "0")
    assert code == 0 and "  emu                       - (no test images)" in out and "nan" not in out


@pytest.mark.filterwarnings("ignore:only .* samples for a global batch:UserWarning")  # tiny folders, batch 128
def test_split_seed_on_a_folder_with_val_is_refused_and_old_runs_of_one_still_evaluate(tmp_path, capsys):
    """split_seed picks the held-out images of a folder without val/: on a folder with val/ it changed
    nothing, silently. A run of such a folder saved before model.json recorded split_seed (its
    training seed stood for it) is still evaluated and fine-tuned, the seed left out."""
    data = tmp_path / "split"
    make_folder(data / "train", per_class=4)
    make_folder(data / "val", per_class=2, seed=1)
    with pytest.raises(ValueError, match=rf"split_seed 2 picks the images held out of a folder without a val/ folder, "
                                         rf"and {re.escape(str(data))} has .*val.*: leave it out"):
        rl_data.load_data(rl_data.DataConfig("folder", data_dir=str(data), split_seed=2, num_workers=0))
    held = rl_data.load_data(rl_data.DataConfig("folder", data_dir=str(data), num_workers=0))
    assert held.num_test == 2 * 2  # the reference: the val/ folder's images, none held out
    run = tmp_path / "run"
    assert cli(capsys, "train", *with_flags(FOLDER_TINY, "--dataset", "folder", "--batch-size", "4", "--seed", "3"),
               "--data-dir", str(data), "--workers", "0", "--out", str(run))[0] == 0
    meta = json.loads((run / "model.json").read_text())
    del meta["split_seed"]  # as runs saved before recorded it: split_seed_of reads the training seed, 3
    (run / "model.json").write_text(json.dumps(meta))
    code, out, err = cli(capsys, "evaluate", str(run), "--data-dir", str(data), "--workers", "0", "--json")
    assert code == 0 and json.loads(out)["n"] == 4, err
    assert cli(capsys, "finetune", "--from", str(run), "--strategy", "all", "--dataset", "folder", "--data-dir", str(data), "--workers", "0",
               "--epochs", "1", "--batch-size", "4", "--no-progress", "--out", str(tmp_path / "ft"))[0] == 0


def _refused_on_a_split_folder(capsys, root: Path, share: str) -> Path:
    """A train/ + val/ folder under ``root``, on which ``--val-fraction SHARE`` is refused (its val/ is
    the test split: a share would change nothing). Returns the folder."""
    split = root / "split"
    make_folder(split / "train", per_class=4)
    make_folder(split / "val", per_class=2, seed=1)
    code, _, err = cli(capsys, "train", *with_flags(FOLDER_TINY, "--dataset", "folder"), "--data-dir", str(split),
                       "--workers", "0", "--val-fraction", share)
    assert code == 2 and f"{split} has a val/ folder, which is the test split: leave it out" in err
    return split


@pytest.mark.filterwarnings("ignore:only .* samples for a global batch:UserWarning")  # tiny folders, batch 128
def test_val_fraction_holds_out_that_share_and_evaluate_and_finetune_hold_out_the_same(capsys, tmp_path):
    folder = make_folder(tmp_path / "pics", per_class=20)
    run = tmp_path / "run"
    assert cli(capsys, "train", *with_flags(FOLDER_TINY, "--dataset", "folder", "--batch-size", "8"), "--data-dir",
               str(folder), "--workers", "0", "--val-fraction", "0.5", "--out", str(run))[0] == 0
    meta = json.loads((run / "model.json").read_text())
    assert (meta["split_seed"], meta["val_fraction"]) == (0, 0.5)
    held = _held_out(folder, val_fraction=0.5)
    assert len(held) == 20 and len(_held_out(folder)) == 4  # against the run without it: 2 of each class
    assert evaluate_json(capsys, str(run), "--data-dir", str(folder), "--workers", "0", "--batch-size", "4")["n"] == 20
    from resnet_lab.transfer import load_source, with_source_preprocessing

    config = with_source_preprocessing(rl_data.DataConfig("folder", data_dir=folder, num_workers=0),
                                       load_source(str(run)))
    assert config.val_fraction == 0.5 and sorted(p for p, _ in rl_data.load_data(config).test.dataset.samples) == held
    # a folder whose val/ is the test split: the share would change nothing, so it is refused
    split = _refused_on_a_split_folder(capsys, tmp_path, "0.5")
    # evaluating the run on such a folder uses its val/ (no share to hold out), and a test/ beside val/ is named
    make_folder(split / "test", per_class=3, seed=2)
    with pytest.warns(UserWarning, match=r"val/ is the test split; test/ is not used"):
        assert evaluate_json(capsys, str(run), "--data-dir", str(split), "--workers", "0", "--batch-size", "4")["n"] == 4


def test_a_run_on_some_classes_records_them_and_evaluate_and_report_keep_them(capsys, tmp_path):
    """A Python run with DataConfig(classes=[...]) (docs/TRANSFER.md's example) could not be
    evaluated or reported: the dataset was reloaded with all its classes."""
    from resnet_lab import create_model
    from resnet_lab.analysis import write_report
    from resnet_lab.data import DataConfig, load_data
    from resnet_lab.train import TrainConfig, train

    data = load_data(DataConfig("fake", classes=[7, 2, 5], in_channels=1, image_size=8, subset=48, batch_size=16))
    run = tmp_path / "run"
    torch.manual_seed(0)
    train(create_model("resnet8", num_classes=3, in_channels=1), data,
          TrainConfig(epochs=1, progress=False, plots=False, out=str(run), device="cpu"))
    capsys.readouterr()
    meta = json.loads((run / "model.json").read_text())
    assert meta["class_indices"] == [7, 2, 5] and meta["classes"] == [data.info.classes[i] for i in range(3)]
    ev = evaluate_json(capsys, str(run))
    assert ev["n"] == data.num_test and list(ev["per_class_accuracy"]) == meta["classes"]
    write_report([str(run)], tmp_path / "r.html")
    assert "accuracy" in (tmp_path / "r.html").read_text().lower()


def test_a_finetune_resumed_from_another_directory_names_the_same_source_by_another_path(
        capsys, monkeypatch, source_run, tmp_path):
    """model.json kept --from as typed, relative to where the run started: the same command from
    another directory (--from work/src for src) was refused as another source."""
    work = tmp_path / "work"
    shutil.copytree(source_run, work / "src")
    monkeypatch.chdir(work)

    def stop(record):
        if record["epoch"] == 1 and record["step"] == 1:
            raise KeyboardInterrupt

    args = with_flags(finetune_args(Path("src"), "last"), "--epochs", "2")
    with monkeypatch.context() as m:
        TrainSpy(m, step_callbacks=(stop,))
        assert cli(capsys, "finetune", *args, "--out", "ft")[0] == 130
    monkeypatch.chdir(tmp_path)
    moved = with_flags(finetune_args(Path("work/src"), "last"), "--epochs", "2")
    code, out, err = cli(capsys, "finetune", *moved, "--out", "work/ft", "--resume")
    assert code == 0 and "resuming" in out, err
    other = tmp_path / "other"
    shutil.copytree(source_run, other)
    code, _, err = cli(capsys, "finetune", *with_flags(finetune_args(other, "last"), "--epochs", "3"), "--out",
                       "work/ft", "--resume")
    assert code == 2 and "was fine-tuned from work/src/model.safetensors, not" in err  # another file: refused


def test_finetune_val_fraction_given_wins_over_the_folder_sources_share_and_says_so(capsys, tmp_path):
    folder = make_folder(tmp_path / "pics", per_class=20)
    run = tmp_path / "run"
    assert cli(capsys, "train", *with_flags(FOLDER_TINY, "--dataset", "folder", "--batch-size", "8"), "--data-dir",
               str(folder), "--workers", "0", "--val-fraction", "0.25", "--out", str(run))[0] == 0
    ft = tmp_path / "ft"
    code, out, err = cli(capsys, "finetune", "--from", str(run), "--strategy", "head", "--dataset", "folder",
                         "--data-dir", str(folder), "--workers", "0", "--epochs", "1", "--batch-size", "8",
                         "--no-progress", "--device", "cpu", "--val-fraction", "0.1", "--out", str(ft))
    assert code == 0, err
    note = f"note: {run} held out 0.25 of its folder; on that same folder --val-fraction 0.1 tests on other images"
    assert note in err and "note:" not in out  # a note, on stderr as every command's
    assert json.loads((ft / "model.json").read_text())["val_fraction"] == 0.1  # it used to stay 0.25, silently
    code, _, err = cli(capsys, "finetune", "--from", str(run), "--strategy", "head", "--dataset", "folder",
                       "--data-dir", str(folder), "--workers", "0", "--epochs", "1", "--batch-size", "8",
                       "--no-progress", "--device", "cpu", "--val-fraction", "0.25")
    assert code == 0 and "held out" not in err  # the source's own share: the same test images, nothing to note


def test_val_fraction_where_it_changes_nothing_is_refused_at_any_value_and_a_resume_keeps_it(capsys, tmp_path):
    """--val-fraction 0.1 (the default value) was accepted for fake data and for a folder with val/;
    a resume with another share, or without the flag, went on with a different split."""
    code, _, err = cli(capsys, "train", *TINY, "--val-fraction", "0.1")
    assert code == 2 and "--val-fraction 0.1 holds out a share of an image folder without val/; fake has its own" in err
    _refused_on_a_split_folder(capsys, tmp_path, "0.1")
    folder = make_folder(tmp_path / "pics", per_class=20)
    args = [*with_flags(FOLDER_TINY, "--dataset", "folder", "--batch-size", "8", "--epochs", "2"), "--data-dir",
            str(folder), "--workers", "0", "--out", str(tmp_path / "run")]
    assert cli(capsys, "train", *args, "--val-fraction", "0.25", "--stop-after", "1")[0] == 0
    for again in ([], ["--val-fraction", "0.3"]):
        code, _, err = cli(capsys, "train", *args, *again, "--resume")
        assert code == 2 and "data val_fraction: run has 0.25" in err and "--val-fraction 0.25" in err, again
    assert cli(capsys, "train", *args, "--val-fraction", "0.25", "--resume")[0] == 0


def test_a_pause_is_told_in_one_line(capsys, tmp_path):
    """--stop-after printed "stopped after epoch 1 of 2 as asked; continue with --resume" (train's) and
    then "paused after epoch 1 of 2: ..." (the CLI's): one is enough."""
    code, out, err = cli(capsys, "train", *with_flags(TINY, "--epochs", "2"), "--stop-after", "1",
                         "--out", str(tmp_path / "run"))
    told = [line for line in (out + err).splitlines() if "epoch 1 of 2" in line]
    assert code == 0 and len(told) == 1, told
    assert re.fullmatch(r"paused after epoch 1 of 2: best test accuracy \d+\.\d\d% so far; continue with the same "
                        r"command and --resume \(in Python: resume=True\)", told[0])


def test_train_ends_with_the_best_evaluated_accuracy_its_epoch_and_the_run(capsys, tmp_path):
    """The last line: the best test accuracy of metrics.jsonl as a percent, its epoch (the first of
    equal ones) and, with --out, the run folder; without --out none is named."""
    out = tmp_path / "run"
    code, stdout, _ = cli(capsys, "train", *with_flags(TINY, "--epochs", "2", "--lr", "0.5"), "--out", str(out))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    best = max(records, key=lambda r: r["test_acc"])  # max keeps the first of equal ones
    assert code == 0 and best["test_acc"] > 0
    last = re.fullmatch(r"done: best test accuracy (\d+\.\d\d)% \(epoch (\d+)\) in \d+s; run in (.+)",
                        stdout.splitlines()[-1])
    assert last and (last[1], int(last[2]), last[3]) == (f"{100 * best['test_acc']:.2f}", best["epoch"], str(out))
    code, stdout, _ = cli(capsys, "train", *TINY)
    assert code == 0 and re.fullmatch(r"done: best test accuracy \d+\.\d\d% \(epoch 1\) in \d+s",
                                      stdout.splitlines()[-1])


def test_a_pause_before_any_evaluation_says_so_instead_of_a_best_of_0(capsys, tmp_path):
    """--eval-every 2 --stop-after 1 printed "best test accuracy 0.00% so far" with nothing evaluated."""
    code, out, _ = cli(capsys, "train", *with_flags(TINY, "--epochs", "3"), "--eval-every", "2", "--stop-after", "1",
                       "--out", str(tmp_path / "run"))
    assert code == 0 and "paused after epoch 1 of 3: no epoch evaluated yet; continue with the same command" in out
    assert "0.00%" not in out


def test_seed_help_names_the_subset_sample_and_the_fake_dataset_which_the_seed_draws(capsys):
    """QA 2026-12-06: --seed's help named weights, data order and augmentation only, but the seed also
    draws the --subset sample and generates the fake dataset, test split included (runs of two seeds
    on fake are scored on different test sets). The reference: load_data's tensors for two seeds."""
    from resnet_lab.data import DataConfig, load_data

    fake = [load_data(DataConfig("fake", batch_size=32, seed=s)) for s in (0, 1)]
    assert not torch.equal(*(torch.cat([x for x, _ in f.test]) for f in fake))
    sample = [load_data(DataConfig("fake", subset=64, batch_size=32, seed=s)).train.images for s in (0, 1)]
    assert not torch.equal(*sample)
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "also of the --subset sample, and of the fake dataset itself (its test split included)" in text


def test_fuse_bn_help_says_torch_bn_is_folded_by_the_exporter_anyway(capsys):
    """QA 2026-12-06: export --fuse-bn on a torch-BN run writes the same graph as without it (the
    exporter folds a conv's BN in eval mode; DEPLOY.md says so), which its help did not say."""
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exporter folds a conv's BN anyway" in text and "--norm scratch" in text
