"""What experiments print and write says what happened: counts in the singular when they are one,
notes that hold for every outcome, and an interrupt that says what it left behind."""

import json

import pytest

from resnet_lab.cli import main
from resnet_lab.experiments import run_experiment
from resnet_lab.experiments.runner import Context, RunSpec, cifar_net


def test_a_run_of_one_step_logs_1_step(tmp_path):
    lines = []
    ctx = Context("wording", "smoke", tmp_path, device="cpu", log=lines.append)
    data = ctx.data("fake", batch_size=16, subset=16, image_size=8, in_channels=1)
    ctx.train(RunSpec("plain-8", cifar_net(8, residual=False), batch_size=16, epochs=1), data)
    ctx.train(RunSpec("plain-8 x2", cifar_net(8, residual=False), batch_size=16, epochs=2), data)
    assert " 1 step, " in lines[0] and " 2 steps, " in lines[1], lines


def test_bn_imbalance_notes_a_chance_balanced_accuracy_true_whichever_class_was_called(tmp_path):
    """The note said "0.5 = every test image called negative" beside a table whose positive recall
    was 1.0 (every image called positive); and the smoke setup said "1 epochs"."""
    results = run_experiment("bn_imbalance", budget="smoke", out=tmp_path / "b", device="cpu", log=lambda s: None)
    (finding,) = [f for f in results["findings"] if "argmax" in f]
    assert finding.endswith("(0.5 = every test image called one class)")
    assert "called negative" not in finding
    assert ", 1 epoch, " in results["setup"]["training"] and "1 epochs" not in json.dumps(results["setup"])


@pytest.mark.parametrize("given", [True, False], ids=["--out", "default folder"])
def test_an_interrupted_experiment_says_its_folder_is_half_written_and_how_to_run_it_again(
        tmp_path, monkeypatch, capsys, given):
    """Ctrl-C printed only "interrupted": the folder the experiment was writing is half-written, and
    the same command with the same --out is then refused (the folder is not empty)."""
    import resnet_lab.experiments.registry as registry

    out = tmp_path / "exp"

    def interrupted(module, name, budget, folder, *args):  # stopped after the first run was written
        (folder / "plain-20").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "_run", interrupted)
    monkeypatch.chdir(tmp_path)
    argv = ["experiment", "degradation"] + (["--out", str(out)] if given else [])
    assert main(argv) == 130
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("interrupted: ") and "half-written" in line
    if given:
        assert f"--out {out}" in line and "another --out" in line and f"delete {out}" in line
    else:
        assert line == ("interrupted: its folder runs/experiments/degradation is half-written (no verdict): delete "
                        "it; a run without --out takes a new folder")


def test_an_interrupted_experiment_names_the_folder_it_claimed_not_the_newest(tmp_path, monkeypatch, capsys):
    """QA 2026-12-06: with finished results in NAME-2 and NAME emptied, a run claimed NAME and was
    interrupted; the line said "runs/experiments/NAME (or NAME-N, the newest)", which sent the user to
    delete NAME-2's results. And an interrupt before anything was written called the folder half-written."""
    import resnet_lab.experiments.registry as registry

    monkeypatch.chdir(tmp_path)
    finished = tmp_path / "runs/experiments/degradation-2"
    finished.mkdir(parents=True)
    (finished / "results.json").write_text("{}")
    (tmp_path / "runs/experiments/degradation").mkdir()  # emptied by the user: the first free folder

    def before_anything(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(registry, "_run", before_anything)
    assert main(["experiment", "degradation"]) == 130
    assert capsys.readouterr().err.strip() == ("interrupted: runs/experiments/degradation holds nothing yet (no "
                                               "verdict): the same command runs it again")
    assert (finished / "results.json").exists()
