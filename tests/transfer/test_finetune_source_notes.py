"""QA 2026-12-06: finetune from a run that stopped before its last epoch said nothing (evaluate notes
it), and a transferred model whose class count does not fit the data was told to call
create_model, which throws the pretrained weights away."""

from __future__ import annotations

import pytest
import torch

from resnet_lab import cli
from resnet_lab.data import DataConfig, load_data
from resnet_lab.models import create_model
from resnet_lab.train import TrainConfig, train
from resnet_lab.transfer import finetune, load_source, transfer_model


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory):
    run = tmp_path_factory.mktemp("src") / "unfinished"
    data = load_data("fake", subset=64, batch_size=32, image_size=16)
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, in_channels=3)
    train(model, data, TrainConfig(epochs=2, stop_after=1, out=str(run), progress=False, plots=False))
    return run


def _evaluate_note(run, capsys) -> str:
    """The reference: what `resnet-lab evaluate RUN` says of the same run."""
    cli.main(["evaluate", str(run), "--dataset", "fake", "--image-size", "16"])
    return next(line for line in capsys.readouterr().err.splitlines() if "unfinished" in line)


def test_the_source_of_an_unfinished_run_carries_evaluates_note(unfinished, capsys):
    want = _evaluate_note(unfinished, capsys)
    # the run stopped after epoch 1 of 2 (stop_after=1 of epochs=2): the words, written out by hand
    assert want == (f"note: {unfinished} is unfinished: it stopped after epoch 1 of 2; continue it with the command "
                    "that started it and --resume (in Python: the same call with resume=True)")
    assert want[len("note: "):] in load_source(unfinished).notes


def test_finetune_on_the_command_line_prints_it(unfinished, tmp_path, capsys):
    want = _evaluate_note(unfinished, capsys)
    code = cli.main(["finetune", "--from", str(unfinished), "--strategy", "last", "--dataset", "fake",
                     "--image-size", "16", "--subset", "64", "--batch-size", "32", "--epochs", "1", "--no-progress",
                     "--out", str(tmp_path / "ft")])
    assert code == 0 and want in capsys.readouterr().err.splitlines()


def test_a_finished_run_has_no_such_note(unfinished, tmp_path):
    run = tmp_path / "done"
    data = load_data("fake", subset=64, batch_size=32, image_size=16)
    train(create_model("resnet8", num_classes=10, in_channels=3), data,
          TrainConfig(epochs=1, out=str(run), progress=False, plots=False))
    assert not any("unfinished" in n for n in load_source(run).notes)


@pytest.mark.parametrize("strategy", ["all", "last", "head"])
@pytest.mark.parametrize("outputs, classes", [(3, 5), (5, 3)])  # too few outputs, and too many
def test_a_class_count_that_does_not_fit_names_transfer_model(unfinished, strategy, outputs, classes):
    model, plan = transfer_model(load_source(unfinished), strategy, num_classes=outputs)
    data = load_data(DataConfig("fake", classes=list(range(classes)), subset=50, image_size=16, batch_size=25))
    with pytest.raises(ValueError) as e:
        finetune(model, data, TrainConfig(epochs=1, lr=0.01, progress=False), plan)
    assert str(e.value) == (f"the model has {outputs} outputs but the data has {classes} classes: transfer_model("
                            f"source, {strategy!r}, num_classes={classes}) keeps the pretrained weights")


def test_a_run_still_being_trained_is_said_to_be_training_not_to_be_resumed(unfinished, capsys):
    """QA 2026-12-06: evaluate of a run another process was training said "continue it with ...
    --resume", which that process's lock would refuse."""
    from resnet_lab.runs import RunLock

    with RunLock(unfinished):  # a trainer holds the run (another RunLock counts as another writer)
        cli.main(["evaluate", str(unfinished), "--dataset", "fake", "--image-size", "16"])
        note = next(line for line in capsys.readouterr().err.splitlines() if str(unfinished) in line)
        assert note == (f"note: {unfinished} is still being trained by another process: its weights are those "
                        "saved so far (the last checkpoint was after epoch 1 of 2)")
        assert note[len("note: "):] in load_source(unfinished).notes
        for given in (unfinished / "model.safetensors", unfinished / "best.safetensors"):  # a file of the run too
            cli.main(["evaluate", str(given), "--dataset", "fake", "--image-size", "16"])
            err = capsys.readouterr().err
            assert f"note: {unfinished} is still being trained by another process" in err and "--resume" not in err
        cli.main(["evaluate", str(unfinished), "--best", "--dataset", "fake", "--image-size", "16"])
        assert "its best.safetensors holds the best weights so far" in capsys.readouterr().err  # not "saved so far"
    assert "--resume" in _evaluate_note(unfinished, capsys)  # released: stopped, and resumable again


def test_a_weights_file_of_a_run_being_trained_is_said_of_the_run_and_best_weights_as_the_best_so_far(tmp_path):
    """QA: "note: live/best.safetensors is still being trained by another process: its weights are those
    saved so far (the last checkpoint was after epoch 9 of 40)": the run folder is being trained, not
    the file, and best.safetensors holds the best epoch's weights, not the last checkpoint's. The
    references: the words written out by hand, and the best epoch the trainer saved in train_state.pt."""
    from resnet_lab.runs import RunLock, load_meta, unfinished_note

    run = tmp_path / "live"
    data = load_data("fake", subset=64, batch_size=32, image_size=16)
    torch.manual_seed(0)
    train(create_model("resnet8", num_classes=10, in_channels=3), data,
          TrainConfig(epochs=5, stop_after=3, lr=0.5, out=str(run), progress=False, plots=False))
    best = int(torch.load(run / "train_state.pt", weights_only=False)["best_epoch"])
    meta = load_meta(run)
    with RunLock(run):  # a trainer holds the run
        assert unfinished_note(run / "model.safetensors", meta) == (
            f"{run} is still being trained by another process: {run / 'model.safetensors'} holds the weights saved "
            "so far (the last checkpoint was after epoch 3 of 5)")
        assert unfinished_note(run / "best.safetensors", meta) == (
            f"{run} is still being trained by another process: {run / 'best.safetensors'} holds the best weights "
            f"so far, those of epoch {best} (the last checkpoint was after epoch 3 of 5)")
        assert unfinished_note(run, meta, best=True) == (  # evaluate RUN --best
            f"{run} is still being trained by another process: its best.safetensors holds the best weights "
            f"so far, those of epoch {best} (the last checkpoint was after epoch 3 of 5)")
        (run / "metrics.jsonl").unlink()  # which epoch was best is then not known
        assert unfinished_note(run / "best.safetensors", meta) == (
            f"{run} is still being trained by another process: {run / 'best.safetensors'} holds the best weights "
            "so far, those of the best evaluated epoch (the last checkpoint was after epoch 3 of 5)")


@pytest.mark.parametrize("edit", [{"name": "nonsense"}, {"num_classes": 0}, {"norm": "sparkle"}])
def test_a_hand_edited_arch_is_blamed_on_model_json_by_finetune_and_resume(unfinished, tmp_path, capsys, edit):
    """QA 2026-12-06: evaluate, predict, export and report named model.json for an arch that builds no
    model; finetune printed create_model's words alone, and a resume blamed the user's --model."""
    import json
    import shutil

    from resnet_lab.runs import load_model

    run = tmp_path / "edited"
    shutil.copytree(unfinished, run)
    meta = json.loads((run / "model.json").read_text())
    meta["arch"].update(edit)
    (run / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError) as want:  # the reference: what load_model (evaluate, predict...) says
        load_model(run)
    assert str(want.value).startswith(f"{run / 'model.json'}: ")  # load_meta's field check, or the build's
    with pytest.raises(ValueError) as got:
        load_source(run)
    assert str(got.value) == str(want.value)
    common = ["--dataset", "fake", "--image-size", "16", "--subset", "64", "--batch-size", "32", "--no-progress"]
    assert cli.main(["finetune", "--from", str(run), "--strategy", "all", "--epochs", "1", *common,
                     "--out", str(tmp_path / "ft")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {want.value}"
    assert cli.main(["train", "--model", "resnet8", "--epochs", "2", *common, "--out", str(run), "--resume"]) == 2
    assert capsys.readouterr().err.strip() == f"error: {want.value}"
