"""Edges of the Checkpointer a first mutation probe left open: what an old run's missing records
still compare, a folder that lost its model.json, and a failed first save followed by a start that
failed too.

References: the documented contract (README: a resume on other data is refused; a run whose
model.json was deleted can be neither resumed nor overwritten, and says so; a failed first save's
leftovers let the same command start again) and train_state.pt read back with
torch.load(weights_only=True)."""

from __future__ import annotations

import json

import pytest
import torch

from resnet_lab.runs import read_metrics
from resnet_lab.train import TrainConfig, train
from support import run_files
from tinytrain import TinyNet, make_bundle


def _train(out, bundle=None, **kw):
    torch.manual_seed(0)
    config = TrainConfig(**{"epochs": 2, "lr": 0.05, "out": str(out), "progress": False, "plots": False,
                            "device": "cpu", **kw})
    return train(TinyNet(), bundle or make_bundle(), config, log=lambda *_: None)


def test_a_run_saved_before_its_data_was_recorded_is_refused_on_other_normalization(tmp_path):
    """train_state.pt of an old run has no "data" nor "steps_per_epoch": model.json's dataset,
    classes, input size, mean and std stand in, so a resume with another std is still refused; the
    run's own data resumes it."""
    out = tmp_path / "run"
    _train(out, stop_after=1)
    state = torch.load(out / "train_state.pt", weights_only=True)
    for key in ("data", "steps_per_epoch", "world_size"):  # as saved before these were recorded
        del state[key]
    torch.save(state, out / "train_state.pt")
    assert json.loads((out / "model.json").read_text())["std"] == [1.0]  # what stands in for it
    other = make_bundle()
    other.info.std = (2.0,)
    before = run_files(out)
    with pytest.raises(ValueError, match=r"cannot resume .*data std: run has \[1\.0\], now \[2\.0\]"):
        _train(out, bundle=other, resume=True)
    assert run_files(out) == before
    assert _train(out, resume=True).last["epoch"] == 2


def test_a_mid_epoch_checkpoint_whose_model_json_records_no_step_resumes(tmp_path):
    """Writers before the checkpoint set was one unit recorded the step in train_state.pt only: a
    model.json without "step" does not contradict a mid-epoch train_state.pt; only a recorded other
    position is a torn set."""
    out = tmp_path / "run"

    def ctrl_c(at):
        if at["step"] == 2:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    config = TrainConfig(epochs=2, lr=0.05, out=str(out), progress=False, plots=False, device="cpu")
    assert train(TinyNet(), make_bundle(), config, step_callbacks=[ctrl_c], log=lambda *_: None).interrupted
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert (state["epoch"], state["step"]) == (0, 2)  # the premise: saved mid-epoch
    meta = json.loads((out / "model.json").read_text())
    del meta["step"]
    (out / "model.json").write_text(json.dumps(meta))
    assert [r["epoch"] for r in _train(out, resume=True, stop_after=1).epochs] == [1]
    assert torch.load(out / "train_state.pt", weights_only=True)["epoch"] == 1


def test_an_epoch_checkpoint_whose_model_json_records_no_position_resumes(tmp_path):
    """The rule of the test above for the epoch too: only a recorded other position is a torn set,
    so a model.json after epoch 1 without "epoch" and "step" resumes from train_state.pt's epoch 1
    (a missing epoch read as 0 would call the set torn)."""
    out = tmp_path / "run"
    _train(out, stop_after=1)
    meta = json.loads((out / "model.json").read_text())
    del meta["epoch"], meta["step"]
    (out / "model.json").write_text(json.dumps(meta))
    assert [r["epoch"] for r in _train(out, resume=True).epochs] == [1, 2]


@pytest.mark.parametrize("kept", [("train_state.pt", "model.safetensors"), ("best.safetensors",),
                                  ("train_state.pt",)])
def test_a_new_run_into_a_folder_that_lost_its_model_json_names_the_ways_out_that_work(tmp_path, kept):
    """Not "pass --resume" (a resume cannot rebuild the model without model.json): put it back,
    another out, or delete the folder; nothing in it is touched."""
    out = tmp_path / "run"
    _train(out, epochs=1)
    for path in out.iterdir():
        if path.name not in kept:
            path.unlink()
    before = run_files(out)
    with pytest.raises(FileExistsError, match=rf"holds part of a run \({kept[0]}.*no model\.json.*put its model\.json "
                                              "back.*another out.*delete") as e:
        _train(out, epochs=1)
    assert "resume=True" not in str(e.value) and "--resume" not in str(e.value)
    assert run_files(out) == before


def test_a_start_that_fails_after_a_failed_first_save_leaves_the_folder_startable(tmp_path):
    """A failed first save leaves metrics.jsonl and metrics.csv; the next start clears both, so when
    it fails too before saving (here: in its first step), the same command still starts a third time."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "train_loss": 2.3}) + "\n")
    (out / "metrics.csv").write_text("epoch,train_loss\n1,2.3\n")

    def fail(_):
        raise RuntimeError("fails in its first step")

    torch.manual_seed(0)
    with pytest.raises(RuntimeError, match="first step"):
        train(TinyNet(), make_bundle(), TrainConfig(epochs=1, lr=0.05, out=str(out), progress=False, plots=False,
                                                    device="cpu"), step_callbacks=[fail], log=lambda *_: None)
    assert not (out / "metrics.csv").exists() and not (out / "metrics.jsonl").exists()
    assert _train(out, epochs=1).last["epoch"] == 1
    assert [r["epoch"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1]


def test_only_the_last_line_of_metrics_may_be_torn(tmp_path):
    """A kill cuts the last append only: a bad line before it, even the one just before, is named."""
    whole = [json.dumps({"epoch": e, "train_loss": 1.0}) for e in (1, 2)]
    (tmp_path / "metrics.jsonl").write_text("\n".join([*whole, '{"epoch": 3, "tra']))
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2]
    (tmp_path / "metrics.jsonl").write_text("\n".join([whole[0], '{"epoch": 2, "tra', whole[1]]) + "\n")
    with pytest.raises(ValueError, match=r"metrics\.jsonl line 2 is corrupt .*delete that line"):
        read_metrics(tmp_path)


def test_a_refused_resume_gives_the_runs_values_as_flags_but_none_for_a_value_it_left_unset(tmp_path):
    """The way back names the run's values as flags and as TrainConfig fields (--lr 0.05, lr=0.05);
    a value the run left unset (no --grad-clip) has no flag that gives it: it is named among the
    differences only, never as "--grad-clip None", which the CLI would refuse."""
    out = tmp_path / "run"
    _train(out, stop_after=1)
    with pytest.raises(ValueError, match=r"recipe lr: run has 0\.05, now 0\.1; recipe grad_clip: run has None, "
                                         r"now 1\.0") as e:
        _train(out, resume=True, lr=0.1, grad_clip=1.0)
    assert "(or give the run's values: --lr 0.05; in Python: lr=0.05)" in str(e.value)
    assert "--grad-clip None" not in str(e.value) and "grad_clip=None" not in str(e.value)


def test_a_folder_with_a_model_json_alone_holds_a_run_and_is_not_started_over(tmp_path):
    """model.json alone (the weights moved away) is a run's: a new run there is refused, as with
    any other of a run's files, rather than writing over it."""
    from resnet_lab.train.checkpoint import check_new_run_dir

    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(FileExistsError, match=r"already holds a run \(model\.json\); pass --resume"):
        check_new_run_dir(tmp_path)


@pytest.mark.parametrize("name", ["curves.png", "confusion.png"])
def test_a_failed_first_saves_leftovers_do_not_make_a_users_plot_overwritable(tmp_path, name):
    """A failed first save leaves metrics.jsonl (and metrics.csv), which a new start may clear; a
    plot beside them is not such a leftover, and is refused by name."""
    from resnet_lab.train.checkpoint import check_new_run_dir

    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1, "train_loss": 2.3}\n')
    check_new_run_dir(tmp_path)  # the leftover alone: the same command starts again
    (tmp_path / name).write_bytes(b"\x89PNG")
    with pytest.raises(FileExistsError, match=rf"{name} exists but .* holds no run"):
        check_new_run_dir(tmp_path)
