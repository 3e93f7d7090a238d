"""Mixed precision: --bf16 and --fp16 share one code path (autocast + a gradient scaler that is a
pass-through unless fp16); fp16 is for GPUs and a CPU refuses it. The scaler's wiring is shown on
the CPU with torch's own GradScaler: an overflowing scale skips the step and backs off."""

from __future__ import annotations

import warnings

import pytest
import torch

from resnet_lab.cli import main
from resnet_lab.train import TrainConfig, evaluate, train, train_one_epoch
from resnet_lab.train.optim import build_optimizer, build_scheduler
from tinytrain import TinyNet, make_bundle


def test_fp16_on_a_cpu_is_refused_with_the_way_out(tmp_path, capsys):
    with pytest.raises(ValueError, match=r"--fp16 .* this is on cpu: use --bf16"):
        train(TinyNet(), make_bundle(), TrainConfig(epochs=1, fp16=True, device="cpu", progress=False))
    code = main(["train", "--model", "resnet8", "--dataset", "fake", "--image-size", "8", "--subset", "32",
                 "--batch-size", "16", "--epochs", "1", "--no-progress", "--device", "cpu", "--fp16",
                 "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "use --bf16" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_bf16_and_fp16_together_are_refused():
    with pytest.raises(ValueError, match="exclude each other"):
        TrainConfig(bf16=True, fp16=True)


def _one_epoch(scaler, steps=1):
    torch.manual_seed(0)
    model, data = TinyNet(), make_bundle()
    config = TrainConfig(epochs=1, lr=0.05, fp16=scaler.is_enabled(), device="cpu", progress=False)
    optimizer = build_optimizer(model, "sgd", 0.05, 0.9, True, 0.0)
    scheduler = build_scheduler(optimizer, "constant", steps)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train_one_epoch(model, data.train, optimizer, scheduler, config, device=torch.device("cpu"), epoch=0,
                    steps=steps, progress=False, scaler=scaler)
    return before, model.state_dict()


def test_an_enabled_scaler_skips_a_step_whose_scaled_gradients_overflow_and_backs_off():
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 127, enabled=True)  # scaled grads overflow float32
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before, after = _one_epoch(scaler)
    # The schedule still moves on, without torch's warning that the calls came in the wrong order.
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
    weights = [k for k in before if k.endswith("weight")]
    assert all(torch.equal(before[k], after[k]) for k in weights)  # the step was skipped
    assert scaler.get_scale() == 2.0 ** 126  # torch's backoff factor 0.5


def test_a_disabled_scaler_changes_nothing_and_the_step_happens():
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    before, after = _one_epoch(scaler)
    assert not torch.equal(before["conv.weight"], after["conv.weight"])


def test_torch_warns_about_a_schedule_stepped_past_a_skipped_step_which_the_loop_silences():
    """The reference for the test above: a step the scaler skips (here for an inf gradient set by
    hand) followed by a bare scheduler.step() draws torch's call-order warning."""
    torch.manual_seed(0)
    model = TinyNet()
    optimizer = build_optimizer(model, "sgd", 0.05, 0.9, True, 0.0)
    scheduler = build_scheduler(optimizer, "constant", 1)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    x, y = next(iter(make_bundle().train))
    scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
    next(model.parameters()).grad[0] = float("inf")  # an overflowing gradient, as fp16 gives
    scaler.step(optimizer)
    assert not getattr(optimizer, "_opt_called", False)  # the scaler skipped optimizer.step()
    with pytest.warns(UserWarning, match=r"lr_scheduler.step\(\)` before `optimizer.step\(\)"):
        scheduler.step()


@pytest.mark.parametrize("command", ["train", "lr-find", "finetune"])
def test_fp16_on_a_cpu_is_refused_before_anything_is_loaded_or_printed(tmp_path, capsys, monkeypatch, command):
    """QA 2026-12-06: finetune --fp16 loaded the source and the data and printed four lines before
    the refusal; train and lr-find scanned the data first (a whole image folder)."""
    import resnet_lab.cli as cli

    monkeypatch.setattr(cli, "load_data", lambda *a, **k: pytest.fail("the data was loaded before the refusal"))
    monkeypatch.setattr(cli, "load_source", lambda *a, **k: pytest.fail("the source was loaded before the refusal"))
    data = ["--dataset", "fake", "--image-size", "8", "--subset", "32", "--batch-size", "16", "--no-progress",
            "--device", "cpu", "--fp16"]
    argv = {"train": ["train", "--model", "resnet8", *data, "--epochs", "1", "--out", str(tmp_path / "run")],
            "lr-find": ["lr-find", "--model", "resnet8", *data, "--out", str(tmp_path / "lr.png")],
            "finetune": ["finetune", "--from", "resnet8_fast:fashion-mnist", "--strategy", "last", *data, "--epochs",
                         "1", "--out", str(tmp_path / "ft")]}[command]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: --fp16 ") and "use --bf16" in captured.err
    assert len(captured.err.strip().splitlines()) == 1


def test_evaluate_with_bf16_runs_the_model_under_torchs_bfloat16_autocast():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    x, y = 4 * torch.randn(32, 1, 6, 6), torch.randint(0, 3, (32,))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        want = torch.nn.functional.cross_entropy(model(x).float(), y)
    ev = evaluate(model, [(x[:20], y[:20]), (x[20:], y[20:])], num_classes=3, bf16=True)
    assert ev["loss"] == pytest.approx(float(want), rel=1e-6)
    assert ev["loss"] != pytest.approx(evaluate(model, [(x, y)], num_classes=3)["loss"], rel=1e-5)  # bf16 did round
