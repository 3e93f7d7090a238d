"""TensorBoard logs (TrainConfig.tensorboard / --tensorboard) and metrics.csv, read back the way a
user's TensorBoard reads them: tensorboard's own EventAccumulator. The reference for every figure
is the run's metrics.jsonl (written by another path, runs.append_metrics) or the trained model."""

import csv
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import resnet_lab.train.checkpoint as checkpoint_module
from resnet_lab.cli import main
from resnet_lab.runs import load_model, save_checkpoint
from resnet_lab.train import TrainConfig, train
from resnet_lab.train.tensorboard import SCALAR_TAGS, TensorBoardMissing, open_tensorboard

from tinytrain import TinyNet, make_bundle

try:
    from tensorboard.backend.event_processing.event_accumulator import STORE_EVERYTHING_SIZE_GUIDANCE, EventAccumulator
    from tensorboard.plugins.hparams import metadata as hparams_metadata
    from tensorboard.plugins.hparams import plugin_data_pb2
except ImportError:  # the optional extra is absent: the tests that read logs skip, the error test still runs
    EventAccumulator = None

needs_tensorboard = pytest.mark.skipif(EventAccumulator is None,
                                       reason="tensorboard is not installed: pip install 'resnet-lab[tensorboard]'")

# docs/TENSORBOARD.md's table "What is written", literally: TensorBoard tag -> metrics.jsonl key. The
# reference for which record value each tag holds (the module's own SCALAR_TAGS is what is tested).
DOCUMENTED_TAGS = {
    "loss/train": "train_loss",
    "loss/test": "test_loss",
    "loss/train_plain": "train_loss_plain",
    "accuracy/train": "train_acc",
    "accuracy/test": "test_acc",
    "lr": "lr",
    "speed/images_per_second": "images_per_second",
}

TINY_CLI = ["--dataset", "fake", "--image-size", "8", "--subset", "32", "--batch-size", "16", "--epochs", "1",
            "--no-progress", "--device", "cpu"]


def _cfg(out, **kw):
    base = dict(epochs=2, lr=0.05, progress=False, plots=False, deterministic=True, device="cpu", out=str(out))
    return TrainConfig(**{**base, **kw})


def _fresh():
    torch.manual_seed(0)
    return TinyNet()


def _read(log_dir) -> "EventAccumulator":
    acc = EventAccumulator(str(log_dir), size_guidance=STORE_EVERYTHING_SIZE_GUIDANCE)
    acc.Reload()
    return acc


def _records(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _assert_scalars_equal_records(acc, records: list[dict]) -> None:
    """Every documented scalar tag holds each epoch once, with the value of the record's key that
    docs/TENSORBOARD.md names for it (TensorBoard stores float32); no other scalar tag is written."""
    assert set(acc.Tags()["scalars"]) == {t for t, k in DOCUMENTED_TAGS.items() if k in records[0]}
    for tag, key in DOCUMENTED_TAGS.items():
        if key not in records[0]:
            assert tag not in acc.Tags()["scalars"], tag
            continue
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [r["epoch"] for r in records], tag
        assert [e.value for e in events] == [float(np.float32(r[key])) for r in records], tag


def test_documented_tags_are_the_table_of_docs_tensorboard_md():
    """DOCUMENTED_TAGS is the doc's table: each row pairs its tags, in order, with the first keys of
    its second column (`loss/train`, `loss/test` | `train_loss`, `test_loss`)."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "TENSORBOARD.md").read_text()
    table = doc.split("| tag | from the epoch's `metrics.jsonl` record |", 1)[1].split("\n\n", 1)[0]
    documented = {}
    for row in table.strip().splitlines()[1:]:  # after the | --- | --- | line
        tags, keys = (re.findall(r"`([^`]+)`", cell) for cell in row.strip("|").split("|")[:2])
        documented.update(zip(tags, keys))
    assert documented == DOCUMENTED_TAGS
    assert {v: k for k, v in SCALAR_TAGS.items()}.keys() == DOCUMENTED_TAGS.keys()


def _hparams(log_dir) -> dict:
    content = _read(log_dir).PluginTagToContent(hparams_metadata.PLUGIN_NAME)[hparams_metadata.SESSION_START_INFO_TAG]
    start = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}


@needs_tensorboard
def test_tensorboard_scalars_equal_metrics_jsonl_and_hparams_hold_the_recipe_and_final_figures(tmp_path):
    model = _fresh()
    history = train(model, make_bundle(), _cfg(tmp_path, label_smoothing=0.1, tensorboard=True))
    records = _records(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2] and "train_loss_plain" in records[0]
    _assert_scalars_equal_records(_read(tmp_path / "tensorboard"), records)

    hp = _hparams(tmp_path / "tensorboard" / "hparams")
    assert hp["model"] == "tinynet" and hp["dataset"] == "tiny" and hp["optimizer"] == "sgd"
    assert hp["lr"] == 0.05 and hp["label_smoothing"] == 0.1 and hp["epochs"] == 2 and hp["seed"] == 0
    assert hp["num_classes"] == 3 and hp["input_size"] == "1x6x6" and hp["global_batch_size"] == 16
    final = _read(tmp_path / "tensorboard" / "hparams")
    figures = {tag: final.Scalars(tag)[-1].value for tag in final.Tags()["scalars"]}
    assert figures["hparam/test_acc"] == float(np.float32(records[-1]["test_acc"]))
    assert figures["hparam/best_test_acc"] == float(np.float32(max(r["test_acc"] for r in records)))
    assert figures["hparam/best_epoch"] == history.best_epoch and figures["hparam/epochs"] == 2


@needs_tensorboard
def test_tensorboard_histograms_are_the_bn_running_statistics_of_each_epoch(tmp_path):
    model = _fresh()
    train(model, make_bundle(), _cfg(tmp_path, tensorboard=True))
    acc = _read(tmp_path / "tensorboard")
    assert {t for t in acc.Tags()["histograms"]} == {"bn_running_mean/bn", "bn_running_var/bn"}
    for stat in ("running_mean", "running_var"):
        events = acc.Histograms(f"bn_{stat}/bn")
        assert [e.step for e in events] == [1, 2]
        final, buffer = events[-1].histogram_value, getattr(model.bn, stat).double()  # the trained model's
        assert final.num == 8
        assert final.min == pytest.approx(float(buffer.min()), rel=1e-6)
        assert final.max == pytest.approx(float(buffer.max()), rel=1e-6)
        assert final.sum == pytest.approx(float(buffer.sum()), rel=1e-5, abs=1e-6)


@needs_tensorboard
def test_a_batch_norm_without_running_statistics_draws_no_histogram(tmp_path):
    """torch's BatchNorm2d(track_running_stats=False) has running_mean None: nothing to draw, and no crash."""
    model = _fresh()
    model.stats_free = nn.BatchNorm2d(8, track_running_stats=False)
    assert model.stats_free.running_mean is None
    board = open_tensorboard(_cfg(tmp_path, tensorboard=True), model, {"recipe": {}, "data": {}}, start_epoch=0,
                             is_main=True)
    board.log_epoch({"epoch": 1, "train_loss": 0.5})
    board.writer.close()
    acc = _read(tmp_path / "tensorboard")
    assert set(acc.Tags()["histograms"]) == {"bn_running_mean/bn", "bn_running_var/bn"}
    assert [e.value for e in acc.Scalars("loss/train")] == [0.5]


@needs_tensorboard
def test_closing_after_an_epoch_without_evaluation_records_the_figures_it_has(tmp_path):
    """--eval-every: the last epoch of an interrupted run may have no test figures; its hparams
    record holds the training loss and the best so far, and no test figures."""
    from types import SimpleNamespace

    board = open_tensorboard(_cfg(tmp_path, tensorboard=True), _fresh(), {"recipe": {"lr": 0.05}, "data": {}},
                             start_epoch=0, is_main=True)
    board.close(SimpleNamespace(last={"epoch": 3, "train_loss": 0.25}, best_acc=0.5, best_epoch=2))
    scalars = _read(tmp_path / "tensorboard" / "hparams").Tags()["scalars"]
    assert {"hparam/train_loss", "hparam/best_test_acc", "hparam/best_epoch", "hparam/epochs"} <= set(scalars)
    assert not {"hparam/test_acc", "hparam/test_loss"} & set(scalars)


def test_a_session_opens_its_event_file_in_a_later_second_than_the_last_one(tmp_path, monkeypatch):
    """TensorBoard orders event files by name, whose first number is the writer's second (a fake
    clock: no real waiting); a gap of more than a second is another clock's and is not waited for."""
    import resnet_lab.train.tensorboard as tb

    for name in ("events.out.tfevents.1000.host.1.0", "events.out.tfevents.990.host.1.0",  # the latest counts
                 "events.out.tfevents.x.host.1.0"):  # no second in the name: not counted
        (tmp_path / name).write_bytes(b"")
    slept = []
    # a quarter second past: wait the rest; a whole second before: wait it; at or past the next second,
    # or more than a second behind (another clock): no wait
    for now in (1000.25, 998.0, 1001.5, 1001.0, 1000.0):
        monkeypatch.setattr(tb.time, "time", lambda: now)
        monkeypatch.setattr(tb.time, "sleep", slept.append)
        tb._wait_for_a_later_second(tmp_path)
    assert slept == [pytest.approx(0.75), 1.0]


def test_without_tensorboard_no_log_is_written_but_metrics_csv_is(tmp_path):
    train(_fresh(), make_bundle(), _cfg(tmp_path))
    assert not (tmp_path / "tensorboard").exists()
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    records = _records(tmp_path)
    assert list(rows[0]) == list(records[0])  # the columns, in the record's order
    assert [{k: float(v) for k, v in row.items()} for row in rows] == [
        {k: float(v) for k, v in r.items()} for r in records]


@needs_tensorboard
def test_resume_after_a_kill_past_the_checkpoint_gives_each_epoch_once_in_tensorboard_and_metrics_csv(
        tmp_path, monkeypatch):
    """Killed after epoch 2 was logged (TensorBoard, metrics.jsonl, metrics.csv) but before its
    checkpoint: the resume redoes epoch 2, and every log ends with epochs 1, 2, 3 once each."""
    def killed_at_epoch_2(run_dir, model, meta, **kw):
        if meta["epoch"] == 2:
            raise RuntimeError("killed")
        save_checkpoint(run_dir, model, meta, **kw)

    monkeypatch.setattr(checkpoint_module, "save_checkpoint", killed_at_epoch_2)
    with pytest.raises(RuntimeError, match="killed"):
        train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=3, tensorboard=True))
    assert [r["epoch"] for r in _records(tmp_path)] == [1, 2]  # epoch 2 logged beyond the checkpoint
    assert [e.step for e in _read(tmp_path / "tensorboard").Scalars("loss/train")] == [1, 2]
    monkeypatch.undo()

    history = train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=3, resume=True, tensorboard=True))
    records = _records(tmp_path)
    assert [r["epoch"] for r in records] == [1, 2, 3] and records == history.epochs
    acc = _read(tmp_path / "tensorboard")
    _assert_scalars_equal_records(acc, records)
    assert [e.step for e in acc.Histograms("bn_running_var/bn")] == [1, 2, 3]
    with open(tmp_path / "metrics.csv", newline="") as f:
        assert [int(row["epoch"]) for row in csv.DictReader(f)] == [1, 2, 3]
    assert _hparams(tmp_path / "tensorboard" / "hparams")["epochs"] == 3
    assert len(list((tmp_path / "tensorboard" / "hparams").glob("events.out.tfevents.*"))) == 1


def test_tensorboard_without_out_is_refused_with_the_way_out():
    with pytest.raises(ValueError, match=r"set out \(--out DIR\)"):
        TrainConfig(tensorboard=True)


def test_tensorboard_without_the_package_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed: import raises
    with pytest.raises(ImportError, match=r"pip install 'resnet-lab\[tensorboard\]'") as e:
        TrainConfig(out=str(tmp_path), tensorboard=True)
    assert isinstance(e.value, TensorBoardMissing)
    code = main(["train", "--model", "resnet8", *TINY_CLI, "--out", str(tmp_path / "run"), "--tensorboard"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: ") and "resnet-lab[tensorboard]" in err
    assert not (tmp_path / "run").exists()  # refused before anything was loaded or written


@needs_tensorboard
def test_only_the_main_process_writes(tmp_path):
    board = open_tensorboard(_cfg(tmp_path / "run", tensorboard=True), TinyNet(), {}, start_epoch=0, is_main=False)
    board.log_epoch({"epoch": 1, "train_loss": 1.0})
    board.close(None)
    assert not (tmp_path / "run").exists()


def _bn_layers(model: nn.Module) -> set[str]:
    return {name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}


@needs_tensorboard
def test_cli_train_and_finetune_with_tensorboard_log_every_epoch_and_bn_layer(tmp_path, capsys):
    for command, source in (("train", ["--model", "resnet8"]), ("finetune", ["--from", str(tmp_path / "train"),
                                                                               "--strategy", "all"])):
        out = tmp_path / command
        assert main([command, *source, *TINY_CLI, "--out", str(out), "--tensorboard"]) == 0, capsys.readouterr().err
        acc = _read(out / "tensorboard")
        _assert_scalars_equal_records(acc, _records(out))
        model, _ = load_model(out)
        assert {t.split("/", 1)[1] for t in acc.Tags()["histograms"]} == _bn_layers(model)
        assert (out / "tensorboard" / "hparams").is_dir()


def test_metrics_csv_columns_keep_the_documented_order_when_the_first_epoch_is_not_evaluated(tmp_path):
    train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=2, eval_every=2))
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    first = _records(tmp_path)[0]
    assert "test_acc" not in first  # the record order would put the test columns last
    documented = ["epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "train_seconds",
                  "images_per_second", "elapsed_seconds", "session"]  # docs/TENSORBOARD.md, metrics.csv
    assert list(rows[0])[:len(documented)] == documented
    assert rows[0]["test_acc"] == "" and rows[1]["test_acc"] != ""


@needs_tensorboard
def test_a_tensorboard_folder_with_files_resnet_lab_did_not_write_is_refused_and_kept(tmp_path):
    # A new run used to delete the whole RUN/tensorboard folder, the user's files in it too.
    (tmp_path / "tensorboard" / "mine").mkdir(parents=True)
    (tmp_path / "tensorboard" / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match=r"tensorboard holds files that resnet-lab did not write: move them"):
        train(_fresh(), make_bundle(), _cfg(tmp_path, epochs=1, tensorboard=True))
    assert (tmp_path / "tensorboard" / "mine" / "notes.txt").read_text() == "precious"
    as_file = tmp_path / "f"
    as_file.mkdir()
    (as_file / "tensorboard").write_text("mine")
    with pytest.raises(FileExistsError, match=r"tensorboard is a file, and --tensorboard writes a folder there"):
        train(_fresh(), make_bundle(), _cfg(as_file, epochs=1, tensorboard=True))
    assert (as_file / "tensorboard").read_text() == "mine"


def test_a_resume_accepts_an_unmarked_log_only_when_every_file_in_it_is_a_log(tmp_path):
    import resnet_lab.train.tensorboard as tb

    log = tmp_path / "tensorboard"
    log.mkdir()
    tb._check_log_dir(log, resuming=False)  # an empty folder is anybody's to write in
    (log / "events.out.tfevents.1700000000.host.1.0").write_bytes(b"")
    (log / "hparams").mkdir()
    tb._check_log_dir(log, resuming=True)  # an older run of ours, from before the mark
    (log / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=r"tensorboard holds files that resnet-lab did not write"):
        tb._check_log_dir(log, resuming=True)


def test_hparams_give_a_mapping_or_a_list_as_json_with_sorted_keys():
    from resnet_lab.train.tensorboard import run_hparams

    hp = run_hparams({"recipe": {"lr": 0.1, "milestones": [3, 6], "opt": {"nesterov": True, "momentum": 0.9}},
                      "data": {"dataset": "fake", "classes": ["a", "b"], "input_size": [1, 8, 8]}}, "resnet8")
    assert hp["opt"] == json.dumps({"momentum": 0.9, "nesterov": True}) and hp["milestones"] == "[3, 6]"
    assert (hp["model"], hp["lr"], hp["num_classes"], hp["input_size"]) == ("resnet8", 0.1, 2, "1x8x8")


@needs_tensorboard
def test_a_new_run_refuses_event_files_without_the_mark_which_only_a_resume_accepts(tmp_path):
    """Event files without the mark may be another tool's: a new run (which clears its old event files)
    refuses them and deletes nothing; only a resume takes them as an older run's of ours (docs)."""
    log = tmp_path / "tensorboard"
    log.mkdir()
    foreign = log / "events.out.tfevents.1700000000.host.1.0"
    foreign.write_bytes(b"someone else's events")
    with pytest.raises(FileExistsError, match=r"tensorboard holds files that resnet-lab did not write: move them"):
        open_tensorboard(_cfg(tmp_path, tensorboard=True), _fresh(), {"recipe": {}, "data": {}}, start_epoch=0,
                         is_main=True)
    assert foreign.read_bytes() == b"someone else's events"


@needs_tensorboard
def test_a_new_run_replaces_only_its_own_event_files_and_a_resume_accepts_a_log_without_the_mark(tmp_path):
    from resnet_lab.train.tensorboard import LOG_MARK

    train(_fresh(), make_bundle(), _cfg(tmp_path / "a", epochs=1, tensorboard=True))
    log = tmp_path / "a" / "tensorboard"
    assert (log / LOG_MARK).exists()
    # the mark makes the folder ours: a new session from epoch 0 clears the old events, keeps the rest
    (log / "readme.txt").write_text("kept")
    stale = sorted(log.glob("events.out.tfevents.*"))
    board = open_tensorboard(_cfg(tmp_path / "a", tensorboard=True), _fresh(), {"recipe": {}, "data": {}},
                             start_epoch=0, is_main=True)
    board.writer.close()
    assert not any(p.exists() for p in stale) and (log / "readme.txt").read_text() == "kept"
    assert not (log / "hparams").exists()
    # a run logged before the mark existed (event files and hparams/ only) still resumes
    train(_fresh(), make_bundle(), _cfg(tmp_path / "b", epochs=2, stop_after=1, tensorboard=True))
    (tmp_path / "b" / "tensorboard" / LOG_MARK).unlink()
    history = train(_fresh(), make_bundle(), _cfg(tmp_path / "b", epochs=2, resume=True, tensorboard=True))
    assert [e.step for e in _read(tmp_path / "b" / "tensorboard").Scalars("loss/train")] == [1, 2]
    assert len(history.epochs) == 2


def test_a_broken_tensorboard_install_and_finetune_are_refused_before_anything_is_loaded(tmp_path, monkeypatch,
                                                                                        capsys):
    """A tensorboard package that imports but cannot serve torch's writer (broken, too old) failed
    only when the writer was made, with torch's message and an empty run directory left behind; and
    finetune loaded its source weights and data before refusing --tensorboard."""
    import types

    import resnet_lab.cli as cli

    broken = types.ModuleType("tensorboard")  # imports, but has no __version__: torch's writer refuses it
    monkeypatch.setitem(sys.modules, "tensorboard", broken)
    for name in [m for m in sys.modules if m == "torch.utils.tensorboard" or m.startswith("torch.utils.tensorboard.")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(TensorBoardMissing, match=r"the installed tensorboard package does not load .*reinstall it"):
        TrainConfig(out=str(tmp_path / "r"), tensorboard=True)
    loaded = []
    monkeypatch.setattr(cli, "load_source", lambda *a, **k: loaded.append(a))
    for command in (["train", "--model", "resnet8"], ["finetune", "--from", "resnet8_fast:fashion-mnist",
                                                      "--strategy", "head"]):
        assert main([*command, *TINY_CLI, "--out", str(tmp_path / "run"), "--tensorboard"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "does not load" in err and "resnet-lab[tensorboard]" in err
        assert not (tmp_path / "run").exists()
    assert not loaded  # finetune refused before reading its source
