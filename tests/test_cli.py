"""The CLI as a user runs it: sub-commands end to end on small data, errors, Ctrl-C and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
import torchvision
from PIL import Image

from resnet_lab.cli import main

FAST = ["--dataset", "fake", "--image-size", "16", "--batch-size", "32", "--no-progress"]


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


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
    # the same run twice is an ensemble whose averaged probabilities are the run's own
    code, stdout, _ = run(capsys, "evaluate", str(out), str(out), "--json")
    twice = json.loads(stdout)
    assert code == 0 and twice["runs"] == [str(out), str(out)]
    assert twice["accuracy"] == ev["accuracy"] and twice["loss"] == pytest.approx(ev["loss"], rel=1e-5)
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


def test_resume_of_a_finished_run_says_how_to_train_further(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", "--model", "resnet8", *FAST, "--epochs", "1", "--out", str(out))[0] == 0
    code, stdout, _ = run(capsys, "train", "--model", "resnet8", *FAST, "--epochs", "1", "--out", str(out), "--resume")
    assert code == 0 and "--epochs" in stdout
    code, _, err = run(capsys, "train", "--model", "resnet8", *FAST, "--epochs", "1", "--out", str(out))
    assert code == 2 and "--resume" in err


def test_sigterm_saves_the_position_and_resume_finishes_the_run(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "resnet_lab", "train", "--model", "resnet8", *FAST, "--epochs", "30",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines = []
    for line in proc.stdout:  # wait for the first finished epoch, then stop it like `kill` would
        lines.append(line)
        if line.startswith("epoch   1/30"):
            proc.send_signal(signal.SIGTERM)
            break
    rest, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, "".join(lines) + rest
    assert "--resume" in rest
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert 1 <= state["epoch"] < 30
    done = subprocess.run([*cmd[:-2], "--epochs", "2", "--out", str(out), "--resume"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    epochs = [json.loads(l)["epoch"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, max(epochs) + 1))
