"""What a run's model.json is read as (resnet_lab.runs): the held-out split of a folder run, the folder
it trained on, where an unfinished run stopped, the corrections of old records and the refusals of
missing fields. References: the functions' docstrings, and hand-written model.json records."""

from __future__ import annotations

import contextlib
import csv
import json

import pytest
import torch

from resnet_lab import create_model
from resnet_lab.runs import (RunLock, append_metrics, check_meta, held_out_split, load_meta, read_metrics,
                             split_seed_of, trained_folder, unfinished_at, unfinished_note, weights_path)


def test_split_seed_is_the_recorded_one_or_for_older_runs_the_training_seed():
    assert split_seed_of({"split_seed": 7, "train_config": {"seed": 3}}) == 7
    assert split_seed_of({"split_seed": None, "train_config": {"seed": 3}}) is None  # a val/ folder: no seed
    assert split_seed_of({"train_config": {"seed": 3}}) == 3  # saved before split_seed was: the seed drew it
    assert split_seed_of({}) == 0


def test_held_out_split_of_a_folder_run_takes_its_seed_and_share(tmp_path):
    (tmp_path / "a").mkdir()  # a folder without val/: its test split is held out of it
    meta = {"dataset": "folder", "split_seed": 4, "val_fraction": 0.25}
    assert held_out_split(meta, tmp_path) == {"split_seed": 4, "val_fraction": 0.25}
    assert held_out_split({"dataset": "folder", "train_config": {"seed": 2}}, tmp_path) == {"split_seed": 2}
    assert held_out_split({**meta, "dataset": "cifar10"}, tmp_path) == {}


def test_trained_folder_is_a_folder_runs_own_folder_while_it_is_there(tmp_path):
    folder = tmp_path / "imgs"
    meta = {"dataset": "folder", "training": {"folder": str(folder)}}
    assert trained_folder(meta) is None  # not there (moved, deleted)
    folder.mkdir()
    assert trained_folder(meta) == str(folder)
    assert trained_folder({**meta, "dataset": "cifar10"}) is None  # another dataset has no folder of its own


def test_unfinished_at_says_epochs_done_planned_and_steps_into_the_next():
    assert unfinished_at({"epoch": 1, "step": 4, "train_config": {"epochs": 3}}) == (1, 3, 4)
    assert unfinished_at({"epoch": 3, "step": 0, "train_config": {"epochs": 3}}) is None  # finished
    assert unfinished_at({"train_config": {"epochs": 3}}, done=2) == (2, 3, 0)  # no record: the epoch given
    assert unfinished_at({"epoch": 1}) is None  # no plan recorded (shipped weights)


def test_check_meta_refuses_a_field_that_is_null_as_well_as_one_that_is_missing(tmp_path):
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(ValueError, match=r"has no 'classes', which predict needs"):
        check_meta({"classes": None, "mean": [0.5]}, tmp_path, ("classes", "mean"), "predict")
    check_meta({"classes": ["a"], "mean": [0.5]}, tmp_path, ("classes", "mean"), "predict")


def test_old_records_of_the_stem_and_of_a_vgg_norm_load_as_what_was_built(tmp_path):
    """Runs saved before 2026-12-03 recorded create_model's arguments: small_input False for a model
    whose registry entry builds the small stem, and norm "batch" for the paper's VGGs, which have none."""
    for name, arch, key, built in (("resnet20", {"small_input": False}, "small_input", True),
                                   ("vgg11", {"norm": "batch"}, "norm", "none"),
                                   ("vgg13", {"norm": "group"}, "norm", "none")):
        run = tmp_path / name
        run.mkdir()
        (run / "model.json").write_text(json.dumps({"arch": {"name": name, "num_classes": 10, **arch}}))
        with torch.device("meta"):
            model = create_model(name, num_classes=10)
        assert model.model_config[key] == built  # the reference: what create_model records
        assert load_meta(run)["arch"][key] == built


def test_weights_path_of_a_weights_file_refuses_best(tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(b"")
    assert weights_path(path) == path
    with pytest.raises(ValueError, match="is a weights file, so there is no best.safetensors to choose"):
        weights_path(path, "best")


def _load_meta_error(tmp_path, fields: dict) -> str | None:
    """load_meta's refusal of a hand-written model.json of a 3-class resnet8 with ``fields``; None if taken."""
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    meta = {"arch": {"name": "resnet8", "num_classes": 3}, "classes": ["a", "b", "c"], "input_size": [3, 32, 32],
            "mean": [0.5] * 3, "std": [0.25] * 3, **fields}
    (run / "model.json").write_text(json.dumps(meta))
    try:
        load_meta(run)
    except ValueError as e:
        return str(e)
    return None


@pytest.mark.parametrize("good, bad, says", [
    ({"arch": {"name": "resnet8", "num_classes": 1}, "classes": ["a"]},
     {"arch": {"name": "resnet8", "num_classes": 0}, "classes": []}, "'arch.num_classes' must be a positive integer"),
    ({"input_size": [3, 1, 1]}, {"input_size": [3, 0, 32]}, "'input_size' must be [channels, height, width]"),
    ({"input_size": [3, 32, 32]}, {"input_size": [3, 32, 32, 1]}, "'input_size' must be [channels, height, width]"),
    ({"classes": ["a", "b", "c"]}, {"classes": ["a", "b", "c", "d"]}, "'classes' must be a list of 3 class names"),
    ({"mean": [0.0], "std": [0.25]}, {"mean": [0.5, 0.5]}, "'mean' must be a list of 1 or 3 numbers (one per channel)"),
    ({"mean": [-0.5, 0.0, 0.5]}, {"std": [0.25, 0.0, 0.25]}, "'std' must be a list of 1 or 3 numbers (one per channel), each > 0"),
    ({"input_size": [1, 28, 28], "mean": [0.5], "std": [0.25]}, {"input_size": [1, 28, 28], "mean": [0.5] * 3, "std": [0.25]},
     "'mean' must be a list of 1 number"),  # the channels are input_size's first number
    ({"training": {}}, {"training": []}, "'training' must be a JSON object"),
    # a transfer head recorded beside the arch (runs saved before the arch held it): its classes are the outputs
    ({"transfer": {"head": {"num_classes": 2}}, "classes": ["a", "b"]},
     {"transfer": {"head": {"num_classes": 2}}, "classes": ["a", "b", "c"]}, "'classes' must be a list of 2 class names"),
])
def test_each_field_check_of_model_json_takes_the_edge_a_run_can_write_and_refuses_one_past_it(tmp_path, good, bad,
                                                                                                  says):
    """A run writes positive sizes and class counts, one class name per output, one mean/std value per
    channel of input_size (or one for all) and std > 0; the refusal names the file and the field."""
    assert _load_meta_error(tmp_path, good) is None
    error = _load_meta_error(tmp_path, bad)
    assert error is not None and says in error and str(tmp_path / "run" / "model.json") in error


def _write_metrics(run, records) -> None:
    run.mkdir(exist_ok=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


@pytest.mark.parametrize("value", [True, "0.5"])
def test_an_epoch_record_whose_number_is_a_bool_or_a_string_is_refused_naming_line_and_field(tmp_path, value):
    """json.loads reads true as a bool, which Python would take for 1: a hand edit, not a figure."""
    _write_metrics(tmp_path, [{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": value}, {"epoch": 3}])
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2: 'test_acc' must be a number \(or null\)"):
        read_metrics(tmp_path)


def test_a_torn_last_line_of_metrics_jsonl_is_passed_over_as_a_killed_append(tmp_path):
    """read_metrics's docstring: a killed append leaves a torn last line, which is not an epoch record."""
    _write_metrics(tmp_path, [{"epoch": 1, "test_acc": 0.5}])
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "test_a')
    assert read_metrics(tmp_path) == [{"epoch": 1, "test_acc": 0.5}]


@pytest.mark.parametrize("accuracies", [[0.5, 0.7, 0.7], [None, 0.7, "absent"]], ids=["tie", "eval-every 2"])
def test_the_best_weights_of_a_run_in_training_are_named_by_the_first_epoch_of_the_highest_accuracy(tmp_path,
                                                                                                    accuracies):
    """The trainer replaces best.safetensors only on a higher test accuracy, so a tie keeps the first;
    an epoch --eval-every skips has no test figures (absent or null: METRICS_NUMBERS) and is no candidate."""
    run = tmp_path / "run"
    _write_metrics(run, [{"epoch": e, **({} if acc == "absent" else {"test_acc": acc})}
                         for e, acc in enumerate(accuracies, 1)])
    (run / "model.json").write_text("{}")
    meta = {"epoch": 3, "step": 0, "train_config": {"epochs": 5}}
    with RunLock(run):  # a trainer at work: the note says so, and which epoch the best weights are
        note = unfinished_note(run / "best.safetensors", meta)
    assert "best weights so far, those of epoch 2 (the last checkpoint was after epoch 3 of 5)" in note


@pytest.mark.parametrize("training", [False, True], ids=["stopped", "in training"])
def test_a_run_saved_mid_epoch_is_placed_in_the_epoch_after_those_it_finished(tmp_path, training):
    """epoch 1 done and 4 steps into the next (unfinished_at's docstring): the run is in epoch 2 of 3,
    whether it stopped there or a trainer is still at work."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.json").write_text("{}")
    meta = {"epoch": 1, "step": 4, "train_config": {"epochs": 3}}
    with RunLock(run) if training else contextlib.nullcontext():
        note = unfinished_note(run, meta)
    assert ("in epoch 2 of 3 (step 4)" if training else "in epoch 2 of 3 (after step 4)") in note


def test_a_resumes_trim_of_metrics_jsonl_reaches_metrics_csv(tmp_path):
    """metrics.csv is rewritten whole from metrics.jsonl whenever it changes, so the two always agree
    (the module's docstring); a resume keeps the epochs its checkpoint covers."""
    for epoch in (1, 2, 3):
        append_metrics(tmp_path, {"epoch": epoch, "test_acc": epoch / 10})
    assert [r["epoch"] for r in read_metrics(tmp_path, upto=2)] == [1, 2]
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["epoch"], r["test_acc"]) for r in rows] == [("1", "0.1"), ("2", "0.2")]
    assert [json.loads(line)["epoch"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == [1, 2]
