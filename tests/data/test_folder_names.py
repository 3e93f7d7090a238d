"""Class folders whose names are not valid UTF-8 (b"b\\xe9", a Latin-1 name on a UTF-8 system):
Python gives them lone surrogates (os.fsdecode: "b\\udce9"), which matplotlib and a strict UTF-8
stdout refuse. The class keeps its real name; figures and printed text show it readably."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from resnet_lab.cli import main
from resnet_lab.data import display_name
from resnet_lab.train.plots import curves_figure, plot_confusion

RAW = b"b\xe9"  # "bé" in Latin-1: not valid UTF-8
NAME = os.fsdecode(RAW)  # "b\udce9"
SHOWN = RAW.decode("utf-8", "replace")  # what a UTF-8 terminal shows: "b\ufffd"


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "shots"
    try:
        os.makedirs(os.path.join(os.fsencode(root), RAW))
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    rng = np.random.default_rng(0)
    for cls in (b"a", RAW):
        d = os.path.join(os.fsencode(root), cls)
        os.makedirs(d, exist_ok=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(os.path.join(d, b"%d.png" % i))
    return root


def test_display_name_replaces_only_the_undecodable_bytes_as_a_utf8_terminal_would():
    assert display_name(NAME) == SHOWN == "b\ufffd"
    assert display_name("Ankle boot") == "Ankle boot" and display_name("ÿblue dög") == "ÿblue dög"
    assert display_name("x\ud800").encode("utf-8")  # a surrogate that is no escaped byte (from JSON) too


def test_figures_draw_an_undecodable_class_name(tmp_path):
    png = plot_confusion(np.eye(2, dtype=np.int64), ["a", NAME], tmp_path / "confusion.png", title=f"run {NAME}")
    assert Image.open(png).size[0] > 0
    fig = curves_figure([{"epoch": 1, "train_loss": 1.0, "test_loss": 1.0, "train_acc": 0.5, "test_acc": 0.5}],
                        title=f"{NAME} on folder")
    fig.savefig(io.BytesIO(), format="png")


def strict_stdout(monkeypatch):
    """stdout as a UTF-8 locale gives it (errors="strict"): a lone surrogate cannot be printed."""
    out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)
    monkeypatch.setattr("sys.stdout", out)
    return lambda: out.buffer.getvalue().decode("utf-8")


def test_training_on_such_a_folder_completes_resumes_and_keeps_the_real_name(folder, tmp_path, monkeypatch):
    out = tmp_path / "run"
    common = ["--model", "resnet8_fast", "--dataset", "folder", "--data-dir", str(folder), "--batch-size", "4",
              "--workers", "0", "--image-size", "8", "--out", str(out), "--no-progress"]
    common += ["--epochs", "2"]
    assert main(["train", "--stop-after", "1", *common]) == 0
    assert (out / "confusion.png").is_file() and (out / "curves.png").is_file()
    assert main(["train", "--resume", *common]) == 0
    (out / "confusion.png").unlink()
    assert main(["train", "--resume", *common]) == 0  # a finished run: its missing plot is redrawn
    assert (out / "confusion.png").is_file()
    assert json.loads((out / "model.json").read_text())["classes"] == ["a", NAME]  # identity kept
    printed = strict_stdout(monkeypatch)
    assert main(["evaluate", str(out), "--data-dir", str(folder)]) == 0
    image = os.fsdecode(os.path.join(os.fsencode(folder), RAW, b"0.png"))
    assert main(["predict", str(out), image, "--top-k", "2"]) == 0
    text = printed()
    assert f"  {SHOWN} " in text  # evaluate's per-class line
    assert text.splitlines()[-1].startswith(f"{display_name(image)}: ") and f"{SHOWN} " in text.splitlines()[-1]
    assert main(["report", str(out), "--data-dir", str(folder), "--out", str(tmp_path / "r.html")]) == 0
    assert SHOWN in (tmp_path / "r.html").read_text(encoding="utf-8")
