"""Refusals of `finetune` and of the transfer API: one line, naming the bad value and a way out that works."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resnet_lab import create_model
from resnet_lab.cli import main
from resnet_lab.train import TrainConfig
from resnet_lab.transfer import finetune, load_source, transfer_model
from support import run_files

FT = ["--dataset", "fake", "--image-size", "8", "--batch-size", "32", "--subset", "64", "--no-progress",
      "--device", "cpu"]


@pytest.mark.parametrize("resume", [[], ["--resume"]])
def test_finetune_into_a_train_run_says_it_is_a_train_run_and_the_ways_out_work(resnet8_run, tmp_path, capsys, resume):
    """--out of a plain `train` run: with --resume it said "fine-tuned with strategy None, not 'last'", and
    without it train's refusal said to pass --resume, which led there."""
    run = tmp_path / "trained"
    trained = ["train", "--model", "resnet8", "--epochs", "2", *FT, "--out", str(run)]
    assert main([*trained, "--stop-after", "1"]) == 0  # paused: a resume has an epoch to train
    assert "transfer" not in json.loads((run / "model.json").read_text())
    before = run_files(run)
    capsys.readouterr()
    args = ["finetune", "--from", str(resnet8_run), "--strategy", "last", "--epochs", "1", *FT]
    assert main([*args, "--out", str(run), *resume]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err == (f"error: {run} holds a `resnet-lab train` run, not a finetune: give the finetune a new --out (the "
                   f"train run resumes with `resnet-lab train ... --out {run} --resume`)")
    assert run_files(run) == before
    # the ways out: the finetune elsewhere, the train run resumed by train
    assert main([*args, "--out", str(tmp_path / "ft")]) == 0
    assert json.loads((tmp_path / "ft" / "model.json").read_text())["transfer"]["strategy"] == "last"
    assert main([*trained, "--resume"]) == 0
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("name", ["layerz", "layer 2", "layer3.9"])
def test_an_unknown_unfreeze_from_is_one_line_before_the_data_is_loaded(resnet8_run, tmp_path, capsys, monkeypatch,
                                                                        name):
    """A misspelt module was refused only once the data was loaded (an image folder is scanned whole),
    after a note on the input size the weights gave."""
    import resnet_lab.cli as cli

    monkeypatch.setattr(cli, "load_data", lambda *a, **k: pytest.fail("the data was loaded"))
    out = tmp_path / "ft"
    args = ["finetune", "--from", str(resnet8_run), "--strategy", "last", "--unfreeze-from", name, "--epochs", "1"]
    assert main([*args, *[a for a in FT if a not in ("--image-size", "8")], "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: --unfreeze-from {name!r} is not a module with parameters of ") and "layer3" in err
    assert not out.exists()


@pytest.mark.parametrize("strategy", ["last", "head", "all"])
def test_an_empty_unfreeze_from_is_refused_in_one_line_by_the_cli_and_the_api(resnet8_run, tmp_path, capsys, strategy):
    """--unfreeze-from "" was taken as not given: --strategy last trained from the default layer3, and the
    other strategies skipped their "applies to --strategy last" refusal."""
    out = tmp_path / "ft"
    code = main(["finetune", "--from", str(resnet8_run), "--strategy", strategy, "--unfreeze-from", "", "--epochs", "1",
                 *FT, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("error: --unfreeze-from '' is not a module name") and "layer3" in err
    assert not out.exists()
    source = load_source(resnet8_run)
    with pytest.raises(ValueError, match=r"^--unfreeze-from '' is not a module name"):
        transfer_model(source, strategy, num_classes=3, unfreeze_from="")
    with pytest.raises(TypeError, match=r"unfreeze_from must be a module name such as 'layer3', got int 3"):
        transfer_model(source, strategy, num_classes=3, unfreeze_from=3)
    # a name still works, and only with "last"
    if strategy == "last":
        _, plan = transfer_model(source, strategy, num_classes=3, unfreeze_from="layer2")
        assert plan.unfreeze_from == "layer2"


@pytest.mark.parametrize("strategy", ["all", "last", "head"])
@pytest.mark.parametrize("bad", [-1, 0, 2.0, True, "3"])
def test_transfer_model_refuses_num_classes_as_create_model_does_for_every_strategy(resnet8_run, strategy, bad):
    """"head" named the argument of its stacked layer ("new_classes must be a positive int"), which the
    caller never passed; the reference is create_model's own refusal of the same value."""
    with pytest.raises(ValueError) as want:
        create_model("resnet8", num_classes=bad)
    with pytest.raises(ValueError) as got:
        transfer_model(load_source(resnet8_run), strategy, num_classes=bad)
    assert str(got.value) == str(want.value) and "num_classes" in str(got.value)


def test_transfer_model_takes_numpy_class_counts_as_ints(resnet8_run):
    _, plan = transfer_model(load_source(resnet8_run), "head", num_classes=np.int64(3))
    assert plan.head["num_classes"] == 3 and type(plan.head["num_classes"]) is int  # goes to model.json


@pytest.mark.parametrize("strategy", ["all", "last", "head"])
def test_transfer_model_refuses_class_names_that_do_not_match_num_classes(resnet8_run, strategy):
    """transfer_model's docstring: ``classes`` names the target classes, so one name per class; two names
    for three classes would be recorded in a model.json that could never load back."""
    with pytest.raises(ValueError, match=r"^classes names 2 classes but num_classes is 3: give one name per class$"):
        transfer_model(load_source(resnet8_run), strategy, num_classes=3, classes=["a", "b"])


@pytest.mark.parametrize("bad", [0, 2, 4])
def test_transfer_model_refuses_input_channels_other_than_gray_or_rgb(resnet8_run, bad):
    """in_channels 0 was taken as "the weights' own" without a word, and 2 or 4 (the gray kernel repeated)
    built a model no dataset feeds; the refusal names the value and the two that work."""
    with pytest.raises(ValueError, match=rf"^in_channels must be 1 \(grayscale\) or 3 \(RGB\), got {bad}$"):
        transfer_model(load_source(resnet8_run), "all", num_classes=3, in_channels=bad)


@pytest.mark.parametrize("plan", [None, "head", {"strategy": "head"}])
def test_finetune_without_the_plan_of_transfer_model_is_a_type_error(resnet8_run, tmp_path, plan):
    model, _ = transfer_model(load_source(resnet8_run), "head", num_classes=3)
    with pytest.raises(TypeError, match=rf"plan must be the TransferPlan that transfer_model\(\.\.\.\) returns with "
                                        rf"the model, got {type(plan).__name__}$"):
        finetune(model, None, TrainConfig(epochs=1, out=str(tmp_path / "ft")), plan)
    assert not (tmp_path / "ft").exists()
