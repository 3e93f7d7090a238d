"""`degradation` runs on CIFAR-10 too when its files are found (data_dir or $RESNET_LAB_DATA), and
says it skipped CIFAR-10, and how to provide it, when they are not. The fake CIFAR-10 is written in
torchvision's python-pickle layout (the format torchvision's CIFAR10 reads), as in
tests/data/test_folder_and_cifar.py."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from resnet_lab.experiments import run_experiment

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar_batch(n: int, seed: int) -> dict:
    # torchvision's layout: uint8 rows of 3072 = 3 planes of 32x32, labels as a list under b"labels"
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"x", b"labels": list(rng.integers(0, 10, n)),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"f"] * n}


def write_fake_cifar10(root: Path, per_batch: int = 60) -> Path:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i in range(5):
        (d / f"data_batch_{i + 1}").write_bytes(pickle.dumps(_cifar_batch(per_batch, i), protocol=2))
    (d / "test_batch").write_bytes(pickle.dumps(_cifar_batch(per_batch, 5), protocol=2))
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in NAMES]}, protocol=2))
    return root


@pytest.mark.parametrize("via", ["data_dir", "env"])
def test_degradation_smoke_also_runs_cifar10_when_its_files_are_found(via, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    root = write_fake_cifar10(tmp_path / "data")
    if via == "env":
        monkeypatch.setenv("RESNET_LAB_DATA", str(root))
    else:
        monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    out = tmp_path / "out"
    run_experiment("degradation", budget="smoke", out=out, data_dir=str(root) if via == "data_dir" else None,
                   device="cpu", log=lambda s: None)
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["datasets"] == ["Fashion-MNIST", "CIFAR-10"]
    assert set(res["data"]["runs_by_dataset"]) == {"fashion-mnist", "cifar10"}
    assert {row[0] for row in res["table"]["rows"]} == {"Fashion-MNIST", "CIFAR-10"}
    assert sum(c["question"].startswith("CIFAR-10:") for c in res["checks"]) == 2
    assert "cifar10_train_error.png" in res["plots"] and (out / "cifar10_train_error.png").is_file()
    assert not any("skipped" in n for n in res["notes"])
    # the CIFAR-10 nets really see 3-channel input: their first 3x3 conv (4 filters at the smoke
    # budget) has 2 x 9 x 4 = 72 more weights than the 1-channel Fashion-MNIST nets
    # (each label holds one run per seed)
    by = res["data"]["runs_by_dataset"]
    for label in by["fashion-mnist"]:
        for cifar, fashion in zip(by["cifar10"][label]["runs"], by["fashion-mnist"][label]["runs"], strict=True):
            assert cifar["params"] - fashion["params"] == 2 * 9 * 4


def test_degradation_says_cifar10_was_skipped_and_how_to_provide_it_when_absent(tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RESNET_LAB_DATA", str(tmp_path / "empty"))
    out = tmp_path / "out"
    run_experiment("degradation", budget="smoke", out=out, data_dir=str(tmp_path), device="cpu", log=lambda s: None)
    res = json.loads((out / "results.json").read_text())
    assert res["data"]["datasets"] == ["Fashion-MNIST"]
    note = next(n for n in res["notes"] if "CIFAR-10 was skipped" in n)
    assert "cifar-10-batches-py" in note and "RESNET_LAB_DATA" in note
    # what was not found where, a whole clause: not the heading of a list the note leaves out
    assert "(cifar10 not found" in note and "Get it one of these ways" not in note
    # the download hint names a command that has --download (experiment has not)
    assert "`resnet-lab train --model resnet20 --dataset cifar10 --download --epochs 1`" in note
    assert note in (out / "report.md").read_text()
