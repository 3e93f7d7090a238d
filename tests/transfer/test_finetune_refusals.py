"""Refusals of `finetune` and of the transfer API: one line, naming the bad value and a way out that works."""

from __future__ import annotations

import json

import pytest

from resnet_lab.cli import main

FT = ["--dataset", "fake", "--image-size", "8", "--batch-size", "32", "--subset", "64", "--no-progress",
      "--device", "cpu"]


def _files(run):
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


@pytest.mark.parametrize("resume", [[], ["--resume"]])
def test_finetune_into_a_train_run_says_it_is_a_train_run_and_the_ways_out_work(resnet8_run, tmp_path, capsys, resume):
    """--out of a plain `train` run: with --resume it said "fine-tuned with strategy None, not 'last'", and
    without it train's refusal said to pass --resume, which led there."""
    run = tmp_path / "trained"
    trained = ["train", "--model", "resnet8", "--epochs", "2", *FT, "--out", str(run)]
    assert main([*trained, "--stop-after", "1"]) == 0  # paused: a resume has an epoch to train
    assert "transfer" not in json.loads((run / "model.json").read_text())
    before = _files(run)
    capsys.readouterr()
    args = ["finetune", "--from", str(resnet8_run), "--strategy", "last", "--epochs", "1", *FT]
    assert main([*args, "--out", str(run), *resume]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err == (f"error: {run} holds a `resnet-lab train` run, not a finetune: give the finetune a new --out (the "
                   f"train run resumes with `resnet-lab train ... --out {run} --resume`)")
    assert _files(run) == before
    # the ways out: the finetune elsewhere, the train run resumed by train
    assert main([*args, "--out", str(tmp_path / "ft")]) == 0
    assert json.loads((tmp_path / "ft" / "model.json").read_text())["transfer"]["strategy"] == "last"
    assert main([*trained, "--resume"]) == 0
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]
