"""The CLI as a user runs it: sub-commands end to end on small data, errors, Ctrl-C and resume."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import torch
import torchvision
from PIL import Image
from safetensors.torch import load_file, save_file

from resnet_lab.cli import main
from resnet_lab.data import load_data
from resnet_lab.runs import load_model
from trainspy import TrainSpy

FAST = ["--dataset", "fake", "--image-size", "16", "--batch-size", "32", "--no-progress", "--no-plots"]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_models_without_a_match_is_bad_input_exit_2(capsys):
    code, out, err = run(capsys, "models", "nosuch")
    assert code == 2 and out == "" and err.strip() == ("error: no model matches 'nosuch'; `resnet-lab models` lists "
                                                         "all")


@pytest.mark.parametrize("typed, meant", [("resent", "resnet8"), ("DENSNET", "densenet121"), ("vgg*bnx", "vgg11_bn")])
def test_models_without_a_match_offers_the_closest_names(capsys, typed, meant):
    # the name meant is one `models` lists for its own pattern: a hint that names it leads somewhere
    assert meant in run(capsys, "models", meant)[1]
    code, out, err = run(capsys, "models", typed)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: no model matches {typed!r}; did you mean ") and meant in err.split("?")[0]


def test_models_pattern_ignores_letter_case(capsys):
    assert run(capsys, "models", "wrn")[0] == 0
    lower = run(capsys, "models", "wrn")[1]
    assert "wrn" in lower
    assert run(capsys, "models", "WRN") == (0, lower, "")
    assert run(capsys, "models", "ResNet2*")[1] == run(capsys, "models", "resnet2*")[1]


def test_models_lists_names_with_paper_parameter_counts(capsys):
    code, out, _ = run(capsys, "models", "resnet*")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["resnet20"][-1] == "0.27M"  # He et al. 2015, Table 6
    assert rows["resnet110"][-1] == "1.73M"  # "1.7M"
    # torchvision's resnet18 at 1000 classes: an independent count
    assert rows["resnet18"][-1] == f"{sum(p.numel() for p in torchvision.models.resnet18().parameters()) / 1e6:.2f}M"


def test_summary_of_one_channel_resnet18_counts_the_same_params_as_torchvision(capsys):
    code, out, _ = run(capsys, "summary", "resnet18", "--input-size", "1", "224", "224", "--num-classes", "10", "--json")
    assert code == 0
    d = json.loads(out)
    tv = torchvision.models.resnet18(num_classes=10)
    tv.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)
    assert d["total_params"] == sum(p.numel() for p in tv.parameters())


def test_unknown_model_error_names_close_matches(capsys):
    code, _, err = run(capsys, "train", "--model", "resnet19", *FAST, "--epochs", "1")
    assert code == 2 and "resnet18" in err and "resnet-lab models" in err


def test_random_erasing_flag_is_checked_and_trains(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--model", "resnet8", *FAST, "--random-erasing", "2", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--random-erasing" in err and "got 2" in err
    assert not (tmp_path / "bad").exists()  # refused before anything is written
    out = tmp_path / "run"
    code, stdout, _ = run(capsys, "train", "--model", "resnet8", *FAST, "--epochs", "1", "--random-erasing", "0.5",
                          "--out", str(out))
    assert code == 0 and (out / "model.safetensors").exists()


def test_train_evaluate_predict_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, _ = run(capsys, "train", "--model", "resnet8", *FAST, "--epochs", "2", "--out", str(out))
    assert code == 0 and "best test accuracy" in stdout
    meta = json.loads((out / "model.json").read_text())
    assert meta["epoch"] == 2 and meta["arch"]["name"] == "resnet8"

    code, stdout, _ = run(capsys, "evaluate", str(out), "--json")
    assert code == 0
    ev = json.loads(stdout)
    assert ev["accuracy"] == pytest.approx(meta["metrics"]["test_acc"])
    assert len(ev["per_class_accuracy"]) == 10 and ev["tta"] is False
    code, stdout, _ = run(capsys, "evaluate", str(out), "--json", "--tta")
    tta = json.loads(stdout)
    assert code == 0 and tta["tta"] is True and tta["n"] == ev["n"] and tta["loss"] != ev["loss"]
    # an ensemble of two distinct runs (a copy of the run in another folder, its weights moved) is the
    # mean of their softmax probabilities; the loss, the negative log of its true-class probability
    mate = _moved_copy(out, tmp_path / "mate")
    code, stdout, _ = run(capsys, "evaluate", str(out), str(mate), "--json")
    pair = json.loads(stdout)
    assert code == 0 and pair["runs"] == [str(out), str(mate)]
    assert _ensemble_reference([out], meta) == pytest.approx((ev["accuracy"], ev["loss"]), rel=1e-5)  # its data
    acc, loss = _ensemble_reference([out, mate], meta)
    assert pair["accuracy"] == acc and pair["loss"] == pytest.approx(loss, rel=1e-5)
    assert pair["loss"] != ev["loss"]  # the copy's weights count
    other = tmp_path / "other"  # a different input size cannot be ensembled with it
    assert run(capsys, "train", "--model", "resnet8", *FAST[:2], "--image-size", "12", "--batch-size", "32",
               "--no-progress", "--epochs", "1", "--subset", "64", "--out", str(other))[0] == 0
    code, _, err = run(capsys, "evaluate", str(out), str(other))
    assert code == 2 and "input_size differ" in err and "one at a time" in err

    img = tmp_path / "x.png"
    Image.new("RGBA", (40, 23), (200, 10, 10, 128)).save(img)  # odd size and mode: converted as trained
    code, stdout, _ = run(capsys, "predict", str(out), str(img), "--top-k", "3", "--json")
    assert code == 0
    (res,) = json.loads(stdout)
    assert len(res["top"]) == 3 and all(c in meta["classes"] for c, _ in res["top"])
    probs = [p for _, p in res["top"]]
    assert probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6


def _moved_copy(run_dir, to):
    """A copy of the run ``run_dir`` at ``to`` whose conv and linear weights are moved by seeded noise:
    another run with the same model.json (classes, input size, normalization)."""
    shutil.copytree(run_dir, to)
    state = load_file(to / "model.safetensors")
    g = torch.Generator().manual_seed(1)
    moved = {k: v + 0.3 * v.std() * torch.randn(v.shape, generator=g) if v.dim() > 1 else v for k, v in state.items()}
    save_file(moved, to / "model.safetensors")
    return to


def _ensemble_reference(runs, meta):
    """Accuracy and loss of the mean of the runs' softmax probabilities over the fake test set (float64),
    the test images normalized as the first run was trained."""
    models = [load_model(r)[0].double() for r in runs]
    data = load_data("fake", image_size=16, mean=tuple(meta["mean"]), std=tuple(meta["std"]), batch_size=32)
    right, nll, n = 0, 0.0, 0
    with torch.no_grad():
        for x, y in data.test:
            probs = torch.stack([m(x.double()).softmax(1) for m in models]).mean(0)
            right += int((probs.argmax(1) == y).sum())
            nll += float(-probs.gather(1, y[:, None]).log().sum())
            n += len(y)
    return right / n, nll / n


def test_resume_of_a_finished_run_says_how_to_train_further(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", "--model", "resnet8", *FAST, "--epochs", "1", "--out", str(out))[0] == 0
    before = (out / "model.safetensors").read_bytes()
    code, stdout, _ = run(capsys, "train", "--model", "resnet8", *FAST, "--epochs", "1", "--out", str(out), "--resume")
    assert code == 0 and "already finished 1 epoch;" in stdout
    hint = stdout[stdout.index("resnet-lab finetune"):].splitlines()[0].split()
    assert hint[:8] == ["resnet-lab", "finetune", "--from", str(out), "--strategy", "all", "--dataset", "fake"]
    assert (out / "model.safetensors").read_bytes() == before  # nothing more was trained
    # the hint, with its placeholders filled in, is a command that runs
    filled = {"N": "1", "X": "0.01", "NEW_DIR": str(tmp_path / "more")}
    code, _, err = run(capsys, *[filled.get(a, a) for a in hint[1:]], *FAST[FAST.index("--image-size"):])
    assert code == 0, err
    assert (tmp_path / "more" / "model.safetensors").is_file()
    code, _, err = run(capsys, "train", "--model", "resnet8", *FAST, "--epochs", "1", "--out", str(out))
    assert code == 2 and "--resume" in err


def test_sigterm_saves_the_position_and_resume_finishes_the_run(tmp_path, capsys, monkeypatch):
    """SIGTERM in the middle of epoch 1 (at the 2nd of its 4 steps): the run stops at a step
    boundary with exit code 130, saves that position, and --resume finishes it with the weights
    of a run that was never interrupted (--deterministic: bit-exact)."""
    args = ["train", "--model", "resnet8", *FAST[:2], "--image-size", "8", "--subset", "64", "--batch-size", "16",
            "--epochs", "2", "--no-progress", "--deterministic", "--device", "cpu"]
    was = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        assert run(capsys, *args, "--out", str(tmp_path / "full"))[0] == 0

        def sigterm(record):
            if (record["epoch"], record["step"]) == (1, 2):
                # The trainer's handler must be in place, or this signal would end the test process.
                assert signal.getsignal(signal.SIGTERM) not in (signal.SIG_DFL, signal.SIG_IGN, None)
                os.kill(os.getpid(), signal.SIGTERM)

        out = tmp_path / "run"
        with monkeypatch.context() as m:
            TrainSpy(m, step_callbacks=(sigterm,))
            code, stdout, stderr = run(capsys, *args, "--out", str(out))
        assert code == 130 and "--resume" in stdout + stderr
        state = torch.load(out / "train_state.pt", weights_only=True)
        assert int(state["epoch"]) == 0 and int(state["step"]) in (2, 3)  # inside epoch 1 (4 steps)
        assert not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text().strip()

        code, stdout, _ = run(capsys, *args, "--out", str(out), "--resume")
        assert code == 0 and "resuming" in stdout
    finally:
        torch.use_deterministic_algorithms(was[0], warn_only=was[1])
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    full, resumed = load_file(tmp_path / "full" / "model.safetensors"), load_file(out / "model.safetensors")
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)


def test_evaluate_uses_the_runs_own_normalization_and_reproduces_its_recorded_test_loss(tmp_path, capsys):
    # Trained on a subset, whose mean/std differ from the whole training split's: evaluate must
    # normalize as the run did, so it reproduces the test loss the trainer recorded.
    out = tmp_path / "run"
    assert run(capsys, "train", "--model", "resnet8", *FAST, "--subset", "64", "--epochs", "1", "--seed", "3",
               "--out", str(out))[0] == 0
    recorded = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    code, stdout, _ = run(capsys, "evaluate", str(out), "--json")
    result = json.loads(stdout)
    assert code == 0
    assert result["loss"] == pytest.approx(recorded["test_loss"], rel=1e-5)
    assert result["accuracy"] == pytest.approx(recorded["test_acc"], abs=1e-9)



def test_version_prints_the_installed_package_version_and_torch(capsys):
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0  # the installed distribution's metadata is the reference
    assert capsys.readouterr().out.strip() == f"resnet-lab {version('resnet-lab')} (torch {torch.__version__})"


@pytest.mark.parametrize("argv", [["evaluate", "{p}"], ["predict", "{p}", "shirt.png"], ["export", "{p}", "--out", "{p}.onnx"]])
def test_a_mistyped_run_path_is_named_as_missing_in_one_line(capsys, tmp_path, argv):
    missing = tmp_path / "runs" / "r2O"  # a typo of r20
    code, _, err = run(capsys, *[a.format(p=missing) for a in argv])
    assert code != 0 and err.strip() == (
        f"error: {missing} does not exist. Pass a run directory written by `resnet-lab train` (its --out), a "
        ".safetensors file with its model.json beside it, or shipped weights as MODEL:TAG (docs/WEIGHTS.md lists them).")
    assert not (tmp_path / "runs").exists()  # nothing created on the way out
