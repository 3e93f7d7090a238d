"""TrainConfig.norm_lr_scale / --norm-lr-scale: the learning rate of every normalization layer's
weight and bias is multiplied by F, on top of any lr_scale prefix factor; nothing else changes.

References: lists of norm parameters written by hand or built from the module types, and the
first SGD step of the same run without the option."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import resnet_lab.nn as rl_nn
from resnet_lab import create_model
from resnet_lab.cli import main
from resnet_lab.train import TrainConfig, build_optimizer, train
from resnet_lab.train.optim import NORM_LAYERS

from tinytrain import TinyNet, make_bundle

LR, F_NORM = 0.1, 3.0


class AllNorms(nn.Module):
    """One of each normalization layer the option covers, among layers it does not."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, bias=True)
        self.bn = nn.BatchNorm2d(4)
        self.scratch = rl_nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.head = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2))


NORM_NAMES = {"bn.weight", "bn.bias", "scratch.weight", "scratch.bias", "gn.weight", "gn.bias",
              "head.1.weight", "head.1.bias"}


def _lr_of(optimizer: torch.optim.Optimizer, p: torch.Tensor) -> float:
    (group,) = [g for g in optimizer.param_groups if any(q is p for q in g["params"])]
    return group["lr"]


def test_norm_lr_scale_multiplies_the_lr_of_exactly_the_norm_layers_parameters_times_lr_scale():
    model = AllNorms()
    opt = build_optimizer(model, lr=LR, lr_scale={"head.": 0.5}, norm_lr_scale=F_NORM)
    for name, p in model.named_parameters():
        expected = LR * (F_NORM if name in NORM_NAMES else 1.0) * (0.5 if name.startswith("head.") else 1.0)
        assert _lr_of(opt, p) == pytest.approx(expected, rel=1e-12), name
    assert {p for g in opt.param_groups for p in g["params"]} == set(model.parameters())  # every parameter once


@pytest.mark.parametrize("norm", ["batch", "scratch", "group"])
def test_norm_lr_scale_covers_every_norm_of_a_zoo_model(norm):
    model = create_model("resnet8", num_classes=10, in_channels=1, small_input=True, norm=norm)
    kinds = {"batch": nn.BatchNorm2d, "scratch": rl_nn.BatchNormBase, "group": nn.GroupNorm}[norm]
    norm_params = {f"{m_name}.{p_name}" for m_name, m in model.named_modules() if isinstance(m, kinds)
                   for p_name, _ in m.named_parameters(recurse=False)}
    assert norm_params
    opt = build_optimizer(model, lr=LR, norm_lr_scale=F_NORM)
    for name, p in model.named_parameters():
        assert _lr_of(opt, p) == pytest.approx(LR * (F_NORM if name in norm_params else 1.0), rel=1e-12), name


def _first_step(norm_lr_scale: float) -> tuple[dict, dict]:
    torch.manual_seed(0)
    model = TinyNet()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    train(model, make_bundle(), TrainConfig(epochs=1, max_steps_per_epoch=1, lr=LR, schedule="constant",
                                            progress=False, plots=False, device="cpu", norm_lr_scale=norm_lr_scale))
    return before, {k: v.detach() - before[k] for k, v in model.named_parameters()}


def test_in_training_the_norm_parameters_move_f_times_as_far_on_the_first_step_and_the_rest_alike():
    before, plain = _first_step(1.0)
    before_scaled, scaled = _first_step(F_NORM)
    assert all(torch.equal(before[k], before_scaled[k]) for k in before)
    assert plain["bn.weight"].abs().sum() > 0 and plain["bn.bias"].abs().sum() > 0
    for name in plain:
        factor = F_NORM if name.startswith("bn.") else 1.0  # TinyNet's one norm layer
        # atol: the steps are differences of float32 weights near 1, exact to a few 1e-7
        torch.testing.assert_close(scaled[name], factor * plain[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("value", [-1.0, float("inf"), float("nan")])
def test_norm_lr_scale_negative_or_not_finite_is_refused_naming_the_flag(value):
    with pytest.raises(ValueError, match=r"norm_lr_scale \(--norm-lr-scale\) must be a finite number >= 0"):
        TrainConfig(norm_lr_scale=value)


@pytest.mark.parametrize("optimizer, schedule", [("sgd", "onecycle"), ("adamw", "step")])
def test_the_recorded_lr_is_the_schedules_not_the_scaled_norm_groups(optimizer, schedule):
    """metrics.jsonl, the curves, the bar and TensorBoard show ``--lr``'s schedule; the norm group,
    which sorts first among the groups, trains at F times it."""
    def records(scale):
        torch.manual_seed(0)
        config = TrainConfig(epochs=2, lr=LR, optimizer=optimizer, schedule=schedule, norm_lr_scale=scale,
                             progress=False, plots=False, device="cpu")
        return [r["lr"] for r in train(TinyNet(), make_bundle(), config, log=lambda *_: None).epochs]

    plain, scaled = records(1.0), records(F_NORM)
    assert plain == pytest.approx(scaled, rel=1e-12) and plain[0] > 0
    model = TinyNet()
    opt = build_optimizer(model, optimizer, lr=LR, norm_lr_scale=F_NORM)
    assert opt.param_groups[0]["lr"] == pytest.approx(F_NORM * LR)  # the norm group does come first


class NoNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 2)


def test_norm_lr_scale_on_a_model_without_trainable_norm_parameters_is_refused_not_ignored():
    # reference: with the option the groups would be exactly those without it (nothing to scale)
    plain = NoNorm()
    assert not any(isinstance(m, NORM_LAYERS) for m in plain.modules())
    with pytest.raises(ValueError, match=r"norm_lr_scale \(--norm-lr-scale\) 3 matches no parameter.*leave it out"):
        build_optimizer(plain, lr=LR, norm_lr_scale=F_NORM)
    frozen = AllNorms()
    for name, p in frozen.named_parameters():
        p.requires_grad_(name not in NORM_NAMES)  # only the norm layers are frozen
    with pytest.raises(ValueError, match="they are frozen"):
        build_optimizer(frozen, lr=LR, norm_lr_scale=F_NORM)
    build_optimizer(plain, lr=LR, norm_lr_scale=1.0)  # the default stays accepted


@pytest.mark.parametrize("argv", [
    ["lr-find", "--model", "resnet8", "--dataset", "fake", "--subset", "64", "--batch-size", "32", "--steps", "3",
     "--no-progress", "--norm", "none", "--norm-lr-scale", "2"],
    ["train", "--model", "resnet8", "--dataset", "fake", "--subset", "64", "--epochs", "1", "--batch-size", "32",
     "--no-progress", "--norm", "none", "--norm-lr-scale", "2"],
])
def test_cli_norm_lr_scale_without_norm_layers_is_a_one_line_error(argv, tmp_path, capsys):
    if argv[0] == "train":
        argv = argv + ["--out", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: norm_lr_scale (--norm-lr-scale) 2 matches no parameter"), err


def test_finetune_all_with_a_frozen_phase_scales_the_norm_layers_of_the_main_phase(tmp_path):
    """Review of 2026-12-06: the refusal of a norm_lr_scale that scales nothing fired in finetune
    --strategy all --freeze-epochs N, whose head-only phase has every norm layer frozen: the scale is
    the main phase's. The frozen phase runs, and the main phase's optimizer scales the norm layers
    (checked on the recorded train_config of each phase)."""
    import json

    src, out = tmp_path / "src", tmp_path / "ft"
    tiny = ["--dataset", "fake", "--subset", "64", "--image-size", "16", "--batch-size", "32", "--epochs", "1",
            "--no-progress"]
    assert main(["train", "--model", "resnet8", *tiny, "--out", str(src)]) == 0
    assert main(["finetune", "--from", str(src), "--strategy", "all", "--freeze-epochs", "1", "--norm-lr-scale", "2",
                 *tiny, "--out", str(out)]) == 0
    main_phase = json.loads((out / "model.json").read_text())["train_config"]
    frozen_phase = json.loads((out / "freeze_phase" / "model.json").read_text())["train_config"]
    assert main_phase["norm_lr_scale"] == 2.0 and frozen_phase["norm_lr_scale"] == 1.0
