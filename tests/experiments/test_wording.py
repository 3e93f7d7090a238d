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


@pytest.mark.parametrize("file, when", [("report.md", "before"), ("report.md", "after"), ("results.json", "before"),
                                        ("results.json", "after")])
def test_an_experiment_stopped_while_writing_its_verdict_leaves_both_files_or_neither(
        tmp_path, monkeypatch, capsys, file, when):
    """QA: a Ctrl-C while report.md was written left results.json with a verdict and no report.md,
    said "half-written (no verdict)", and the rerun was refused as "the results of an earlier
    experiment". Now results.json, the mark of a finished experiment, is written last, the line tells
    which of the two states the folder is in, and the rerun goes as it says."""
    import types

    import resnet_lab.experiments.registry as registry
    import resnet_lab.experiments.report as report_module
    from resnet_lab.experiments import Check, Report

    def run(ctx):  # an experiment that drew a plot, then reports
        (ctx.out / "curve.png").write_bytes(b"png")
        return Report(claim="c", setup={}, columns=["a"], rows=[[1]], checks=[Check("q", True, "n")],
                      plots=["curve.png"])

    real = report_module.atomic_write_text

    def write(path, text):  # the Ctrl-C lands just before or just after the write of `file`
        if when == "before" and path.name == file:
            raise KeyboardInterrupt
        real(path, text)
        if when == "after" and path.name == file:
            raise KeyboardInterrupt

    monkeypatch.setattr(registry, "get_experiment", lambda name: types.SimpleNamespace(run=run))
    out = tmp_path / "ex3"
    with monkeypatch.context() as m:
        m.setattr(report_module, "atomic_write_text", write)
        assert main(["experiment", "transfer", "--out", str(out), "--device", "cpu"]) == 130
    (line,) = capsys.readouterr().err.strip().splitlines()
    finished = (out / "results.json").exists()
    assert finished == (out / "report.md").exists()  # both or neither
    assert finished == ((file, when) == ("results.json", "after"))  # a verdict only once it was all written
    if finished:
        assert line == (f"interrupted: the experiment had finished: its verdict is in {out / 'report.md'} and "
                        f"{out / 'results.json'}")
        assert json.loads((out / "results.json").read_text())["verdict"] == "confirmed"
        return
    assert line == (f"interrupted: --out {out} is half-written (no verdict): give another --out, or delete {out} "
                    "first, to run it again")
    # the rerun is refused as the line said, not as "the results of an earlier experiment"
    assert main(["experiment", "transfer", "--out", str(out), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "results.json" not in err
    assert main(["experiment", "transfer", "--out", str(tmp_path / "another"), "--device", "cpu"]) == 0
    assert (tmp_path / "another" / "results.json").is_file() and (tmp_path / "another" / "report.md").is_file()
