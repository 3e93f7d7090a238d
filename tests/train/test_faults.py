"""Faults a user or the machine causes during training: divergence, kills mid-save, torn files,
resuming with other settings, bad configuration. Each test names the fault and what must survive it."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from resnet_lab.train import TrainConfig, TrainingDiverged, train
from resnet_lab import runs as ckpt
from tinytrain import TinyNet, make_bundle


def _cfg(out, **kw):
    return TrainConfig(**{"epochs": 2, "lr": 0.05, "out": str(out), "progress": False, "plots": False,
                          "device": "cpu", **kw})


def _quiet(*_):
    pass


def _run(out, epochs=2, model=None, bundle=None, **kw):
    torch.manual_seed(0)
    return train(model or TinyNet(), bundle or make_bundle(), _cfg(out, epochs=epochs, **kw), log=_quiet)


def _interrupted(out, epochs=2, after_epoch=1, **kw):
    """A run of ``epochs`` epochs stopped (as by Ctrl-C) after ``after_epoch`` of them."""
    def stop(record):
        if record["epoch"] == after_epoch:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    h = train(TinyNet(), make_bundle(), _cfg(out, epochs=epochs, **kw), callbacks=[stop], log=_quiet)
    assert h.interrupted
    return h


def _all_finite(path: Path) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in load_file(path).values() if t.is_floating_point())


def test_the_interrupt_message_says_where_the_run_stopped(tmp_path):
    def stop_at(epoch, step=None):
        def cb(info):
            if info["epoch"] == epoch and (step is None or info.get("step") == step):
                raise KeyboardInterrupt
        return cb

    lines = []
    torch.manual_seed(0)  # at an epoch's end: 'after epoch 1 of 2', not 'in epoch 2 after 0 steps'
    train(TinyNet(), make_bundle(), _cfg(tmp_path / "a"), callbacks=[stop_at(1)], log=lines.append)
    torch.manual_seed(0)  # inside an epoch: its step
    train(TinyNet(), make_bundle(), _cfg(tmp_path / "b"), step_callbacks=[stop_at(1, 2)], log=lines.append)
    torch.manual_seed(0)  # after a single step: "1 step" (QA: "after 1 steps")
    train(TinyNet(), make_bundle(), _cfg(tmp_path / "c"), step_callbacks=[stop_at(1, 1)], log=lines.append)
    said = [line.strip().splitlines()[0] for line in lines if "interrupted" in line]
    assert said == [f"interrupted after epoch 1 of 2; state saved to {tmp_path / 'a'}.",
                    f"interrupted in epoch 1 after 2 steps; state saved to {tmp_path / 'b'}.",
                    f"interrupted in epoch 1 after 1 step; state saved to {tmp_path / 'c'}."]


def test_a_run_resumed_mid_epoch_counts_the_cut_short_sessions_seconds_in_its_wall_time(tmp_path):
    """The report adds each session's last elapsed_seconds; a session cut short mid-epoch writes no
    record, so its seconds come with the resume: the wall time never falls below the training time."""
    import time

    def slow_then_stop(info):
        time.sleep(0.3)  # the cut-short session's epoch: 0.9 s in 3 steps, then Ctrl-C
        if info["step"] == 3:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    torch.manual_seed(0)
    assert train(TinyNet(), make_bundle(), _cfg(out), step_callbacks=[slow_then_stop], log=_quiet).interrupted
    carried = torch.load(out / "train_state.pt", weights_only=True)["partial"]["seconds"]
    assert carried >= 0.9
    history = train(TinyNet(), make_bundle(), _cfg(out, resume=True), log=_quiet)
    first = history.epochs[0]
    assert first["session"] == 1 and first["train_seconds"] >= carried  # the epoch's training: both sessions'
    assert first["elapsed_seconds"] >= first["train_seconds"]  # and its wall time covers them both


def test_under_torchrun_a_resumed_epoch_drops_the_sums_but_keeps_the_cut_short_seconds(tmp_path, monkeypatch):
    """Several processes drop the saved sums of the epoch (only rank 0's were saved); its wall
    seconds still count (Checkpointer.start with world_size 2, the rest of the run as one process)."""
    import time

    from resnet_lab.train import checkpoint

    def slow_then_stop(info):
        time.sleep(0.3)
        if info["step"] == 3:
            raise KeyboardInterrupt

    out = tmp_path / "run"
    torch.manual_seed(0)
    train(TinyNet(), make_bundle(), _cfg(out), step_callbacks=[slow_then_stop], log=_quiet)
    carried = torch.load(out / "train_state.pt", weights_only=True)["partial"]["seconds"]
    real_start = checkpoint.Checkpointer.start

    def as_two_processes(self, history):
        self.world_size = 2
        return real_start(self, history)

    monkeypatch.setattr(checkpoint.Checkpointer, "start", as_two_processes)
    first = train(TinyNet(), make_bundle(), _cfg(out, resume=True), log=_quiet).epochs[0]
    assert first["train_seconds"] < carried <= first["elapsed_seconds"]  # the sums start again; the time does not


def test_a_stop_saved_under_torchrun_keeps_the_cut_short_seconds_but_not_rank_0s_sums(tmp_path, monkeypatch):
    """train()'s promise: a mid-epoch resume counts the cut-short session's seconds, under torchrun
    too. A stop saved by rank 0 of 2 saved no partial at all (its sums are one rank's), so the
    seconds were lost; they are kept now, and a resume (here as one process) starts the sums again."""
    import time

    from resnet_lab.train import loop

    def slow_then_stop(info):
        time.sleep(0.3)
        if info["step"] == 3:
            raise KeyboardInterrupt

    real_save = loop._save_interrupted

    def saved_as_rank_0_of_2(run, pos, history, *, hard):
        run.job = dataclasses.replace(run.job, world_size=2)
        real_save(run, pos, history, hard=hard)

    monkeypatch.setattr(loop, "_save_interrupted", saved_as_rank_0_of_2)
    out = tmp_path / "run"
    torch.manual_seed(0)
    train(TinyNet(), make_bundle(), _cfg(out), step_callbacks=[slow_then_stop], log=_quiet)
    partial = torch.load(out / "train_state.pt", weights_only=True)["partial"]
    assert partial is not None and set(partial) == {"seconds"} and partial["seconds"] >= 0.9
    monkeypatch.undo()
    first = train(TinyNet(), make_bundle(), _cfg(out, resume=True), log=_quiet).epochs[0]
    assert first["train_seconds"] < partial["seconds"] <= first["elapsed_seconds"]


# --- divergence ---------------------------------------------------------------------------------


def test_a_run_whose_bn_statistics_go_nan_stops_and_keeps_the_last_finite_checkpoint(tmp_path):
    out = tmp_path / "run"
    _interrupted(out, epochs=2, after_epoch=1)
    good = load_file(out / "model.safetensors")
    model = TinyNet()

    def poison(info):  # what a huge lr does: the loss stays finite while a running variance overflows
        if info["epoch"] == 2 and info["step"] == 3:
            model.bn.running_var.fill_(float("inf"))

    torch.manual_seed(0)
    with pytest.raises(TrainingDiverged, match=r"epoch 2.*bn.running_var.*last good checkpoint \(epoch 1\)"):
        train(model, make_bundle(), _cfg(out, resume=True), step_callbacks=[poison], log=_quiet)
    kept = load_file(out / "model.safetensors")
    assert kept.keys() == good.keys() and all(torch.equal(kept[k], good[k]) for k in good)
    assert json.loads((out / "model.json").read_text())["epoch"] == 1
    assert [r["epoch"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1]


def _fill_bn_after(model, buffer: str, value: float, step: int):
    """A step callback that fills ``model.bn.<buffer>`` with ``value`` after step ``step`` of epoch 1."""
    def fill(info):
        if info["epoch"] == 1 and info["step"] == step:
            getattr(model.bn, buffer).fill_(value)
    return fill


def test_an_epoch_that_eval_every_skips_is_still_checked_for_divergence(tmp_path):
    """With --eval-every the test loss of a skipped epoch is unknown: the weights, the BN statistics
    and the training loss are still checked before anything of the epoch is written."""
    out = tmp_path / "run"
    model = TinyNet()
    torch.manual_seed(0)
    with pytest.raises(TrainingDiverged, match=r"epoch 1 \(the training loss stayed finite but.*bn.running_var"):
        train(model, make_bundle(), _cfg(out, epochs=3, eval_every=2),
              step_callbacks=[_fill_bn_after(model, "running_var", float("inf"), step=3)], log=_quiet)
    assert not (out / "model.safetensors").exists() and not (out / "metrics.jsonl").exists()


def test_an_epoch_not_evaluated_whose_finite_model_overflows_in_eval_mode_is_not_saved(tmp_path):
    """Weights and BN statistics can all be finite and still so large that every eval-mode output
    overflows (a huge lr): an epoch without a test loss is judged by a few of its own images, run
    as `evaluate` would run them, before it is written."""
    def inflating(model):  # after epoch 1's last step (6 of 96 / 16): a finite mean no output survives
        return _fill_bn_after(model, "running_mean", -3e38, step=6)

    out, model = tmp_path / "run", TinyNet()
    torch.manual_seed(0)
    with pytest.raises(TrainingDiverged, match=r"epoch 1 \(the training loss stayed finite but the model in eval "
                                               r"mode gives non-finite outputs.*no checkpoint was written"):
        train(model, make_bundle(), _cfg(out, epochs=3, eval_every=3), step_callbacks=[inflating(model)], log=_quiet)
    assert not (out / "model.safetensors").exists() and not (out / "metrics.jsonl").exists()
    assert all(bool(torch.isfinite(t).all()) for t in model.state_dict().values() if t.is_floating_point())
    model = TinyNet()  # the same run evaluated every epoch: its test loss is what stops it
    torch.manual_seed(0)
    with pytest.raises(TrainingDiverged, match=r"epoch 1 \(test loss (nan|inf)"):
        train(model, make_bundle(), _cfg(tmp_path / "every", epochs=3), step_callbacks=[inflating(model)], log=_quiet)
    model = TinyNet()  # and without the fault, the run that skips evaluations trains on
    torch.manual_seed(0)
    history = train(model, make_bundle(), _cfg(tmp_path / "fine", epochs=3, eval_every=3), log=_quiet)
    assert [r["epoch"] for r in history.epochs] == [1, 2, 3]


def test_a_sam_run_that_diverges_at_the_end_of_an_epoch_names_sam_as_a_way_out(tmp_path):
    """The way out of a divergence names --sam wherever the divergence is caught: in a step (test_sam)
    and, as here, at the end of an epoch (BN statistics spoiled after its last step)."""
    model = TinyNet()
    spoil = _fill_bn_after(model, "running_mean", float("nan"), step=6)  # epoch 1's last step
    torch.manual_seed(0)
    with pytest.raises(TrainingDiverged, match=r"end of epoch 1 .*Lower --sam \(now 0.05\) or --lr, add --grad-clip 1"):
        train(model, make_bundle(), _cfg(tmp_path / "run", epochs=2, sam=0.05), step_callbacks=[spoil], log=_quiet)


def test_an_epoch_not_evaluated_whose_model_overflows_in_one_output_of_several_is_not_saved(tmp_path):
    """One class's logit at inf is enough to spoil the model's probabilities: channel 0's BN mean at
    -1e36 leaves its pooled feature finite (~1e36) and the other logits finite (weight 1), but class
    0's weight of 1e3 takes its logit past float32's 3.4e38."""
    out, model = tmp_path / "run", TinyNet()

    def inflate(info):  # after epoch 1's last step (6 of 96 / 16)
        if info["epoch"] == 1 and info["step"] == 6:
            with torch.no_grad():
                model.bn.running_mean[0] = -1e36
                model.fc.weight[:, 0] = torch.tensor([1e3, 1.0, 1.0])

    torch.manual_seed(0)
    with pytest.raises(TrainingDiverged, match="the model in eval mode gives non-finite outputs"):
        train(model, make_bundle(), _cfg(out, epochs=3, eval_every=3), step_callbacks=[inflate], log=_quiet)
    assert not (out / "model.safetensors").exists()
    with torch.no_grad():  # as the test set would see it: class 0 overflows, the others do not
        logits = model.eval()(make_bundle().test.x)
    assert torch.isinf(logits[:, 0]).all() and torch.isfinite(logits[:, 1:]).all()


def test_cli_run_with_a_huge_lr_exits_nonzero_and_never_saves_nonfinite_weights(tmp_path, capsys):
    from resnet_lab.cli import main

    out = tmp_path / "run"
    code = main(["train", "--model", "resnet8", "--dataset", "fake", "--image-size", "16", "--subset", "64",
                 "--epochs", "2", "--batch-size", "16", "--lr", "1e6", "--no-progress", "--out", str(out)])
    assert code != 0
    assert "diverged" in capsys.readouterr().err or "became" in capsys.readouterr().err
    for name in ("model.safetensors", "best.safetensors"):
        if (out / name).exists():
            assert _all_finite(out / name)


# --- resume must match the saved run ------------------------------------------------------------


@pytest.mark.parametrize("change, expected", [
    ({"epochs": 3}, "epochs: run has 2, now 3"),
    ({"lr": 0.01}, "lr: run has 0.05, now 0.01"),
    ({"optimizer": "adamw", "lr": 0.05}, "optimizer: run has 'sgd', now 'adamw'"),
    ({"schedule": "cosine"}, "schedule"),
    ({"weight_decay": 0.0}, "weight_decay"),
])
def test_resume_with_another_recipe_is_refused_with_the_difference_shown(tmp_path, change, expected):
    out = tmp_path / "run"
    history = _run(out, epochs=2, model=None, bundle=None)
    assert not history.interrupted
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="cannot resume") as e:
        _run(out, **{"epochs": 2, "resume": True, **change})
    assert expected in str(e.value) and "finetune --from" in str(e.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing rewritten


def test_a_refused_resume_names_the_runs_own_values_as_flags_and_they_resume_it(tmp_path):
    # As --scale-lr does under torchrun: lr and warmup were made from the process count, so the
    # same command in another count differs without a typed difference; the error gives the way back.
    out = tmp_path / "run"
    _interrupted(out, epochs=3, lr=0.1, warmup_epochs=0.5)
    with pytest.raises(ValueError, match=r"or give the run's values: --lr 0\.1 --warmup-epochs 0\.5; in Python: "
                                         r"lr=0\.1, warmup_epochs=0\.5\)") as e:
        _run(out, epochs=3, resume=True, lr=0.05, warmup_epochs=0.0)
    assert "--epochs 3" not in str(e.value)  # only what differs
    assert not _run(out, epochs=3, resume=True, lr=0.1, warmup_epochs=0.5).interrupted


def test_a_python_adamw_run_of_the_old_lr_default_is_told_its_lr_in_python_spelling_and_resumes_with_it(tmp_path):
    """An adamw run started from Python before lr=None meant adamw's own rate recorded lr 0.1; resumed
    with resume=True (lr now 1e-3) it was told only "--lr 0.1", a flag a notebook caller has not got."""
    out = tmp_path / "run"
    _interrupted(out, epochs=3, optimizer="adamw", lr=0.1)  # what lr=None gave adamw then
    assert TrainConfig(optimizer="adamw").lr != 0.1  # what it gives now: the resume differs
    with pytest.raises(ValueError, match=r"recipe lr: run has 0\.1, now .*or give the run's values: --lr 0\.1; "
                                         r"in Python: lr=0\.1\)"):
        _run(out, epochs=3, resume=True, optimizer="adamw", lr=None)
    assert not _run(out, epochs=3, resume=True, optimizer="adamw", lr=0.1).interrupted


@pytest.mark.parametrize("bundle_change, expected", [
    ({"classes": 4}, "classes"),
    ({"batch_size": 8}, "global_batch_size: run has 16, now 8"),
    ({"n_train": 80}, "num_train: run has 96, now 80"),
])
def test_resume_on_other_data_is_refused_and_leaves_the_run_untouched(tmp_path, bundle_change, expected):
    out = tmp_path / "run"
    _run(out, epochs=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    classes = bundle_change.get("classes", 3)
    with pytest.raises(ValueError, match="cannot resume") as e:
        _run(out, epochs=1, resume=True, model=TinyNet(classes), bundle=make_bundle(**bundle_change))
    assert expected in str(e.value)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_cli_resume_on_another_dataset_is_refused_and_model_json_keeps_its_classes(tmp_path, capsys):
    from resnet_lab.cli import main

    out = tmp_path / "run"
    common = ["--model", "resnet8", "--image-size", "16", "--batch-size", "16", "--no-progress", "--out", str(out)]
    assert main(["train", "--dataset", "fake", "--subset", "64", "--epochs", "1", *common]) == 0
    meta = (out / "model.json").read_text()
    assert main(["train", "--dataset", "fake", "--subset", "48", "--epochs", "2", *common, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and "num_train: run has 64, now 48" in err and "epochs: run has 1, now 2" in err
    assert (out / "model.json").read_text() == meta


def test_resume_with_the_same_settings_continues_and_matches_an_uninterrupted_run(tmp_path):
    straight, stitched = tmp_path / "straight", tmp_path / "stitched"
    _run(straight, epochs=3, deterministic=True)

    _interrupted(stitched, epochs=3, after_epoch=1, deterministic=True)
    _run(stitched, epochs=3, deterministic=True, resume=True)
    a, b = load_file(straight / "model.safetensors"), load_file(stitched / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- the checkpoint set is one atomic unit ------------------------------------------------------


class _Killed(BaseException):
    """Stands for kill -9: nothing after it runs (not even except Exception handlers)."""


def _second_checkpoint_killed(tmp_path, monkeypatch, *, fail_replace_at=None, fail_write_of=None):
    out = tmp_path / "run"
    _interrupted(out, epochs=2, after_epoch=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_replace, real_save = os.replace, torch.save
    calls = {"n": 0}

    def replace(src, dst):
        if fail_replace_at == 0 and str(dst).endswith(".checkpoint-pending.json"):  # just after the commit point
            real_replace(src, dst)
            raise _Killed
        if fail_replace_at is not None and ".checkpoint-pending" not in str(src) and str(src).endswith(".staged"):
            calls["n"] += 1
            if calls["n"] == fail_replace_at:
                raise _Killed
        return real_replace(src, dst)

    def save(obj, f, *a, **k):
        if fail_write_of == "train_state.pt":
            raise _Killed
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    monkeypatch.setattr(ckpt.torch, "save", save)
    with pytest.raises(_Killed):
        _run(out, epochs=2, resume=True)
    monkeypatch.undo()
    return out, before


@pytest.mark.parametrize("fail_replace_at", [0, 1, 2, 3])  # 0: a Ctrl-C as the manifest lands, before any rename
def test_a_kill_between_the_renames_of_a_checkpoint_is_rolled_forward_to_one_consistent_set(
        tmp_path, monkeypatch, fail_replace_at):
    out, _ = _second_checkpoint_killed(tmp_path, monkeypatch, fail_replace_at=fail_replace_at)
    assert (out / ".checkpoint-pending.json").exists()  # committed, not finished
    ckpt.recover_run_dir(out)
    state = ckpt.load_train_state(out)
    meta = json.loads((out / "model.json").read_text())
    assert state["epoch"] == meta["epoch"] == 2
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    # The weights are the ones trained for epoch 2: an uninterrupted 2-epoch run has the same.
    _run(tmp_path / "ref", epochs=2)
    ref = load_file(tmp_path / "ref" / "model.safetensors")
    got = load_file(out / "model.safetensors")
    assert all(torch.equal(ref[k], got[k]) for k in ref)


def test_a_kill_before_the_commit_point_keeps_the_old_set_and_the_next_start_removes_the_leftovers(
        tmp_path, monkeypatch):
    out, before = _second_checkpoint_killed(tmp_path, monkeypatch, fail_write_of="train_state.pt")
    for name in ("model.safetensors", "best.safetensors", "model.json", "train_state.pt"):
        assert (out / name).read_bytes() == before[name], name
    (out / ".model.safetensors.x1y2.tmp").write_bytes(b"\0" * 100)  # a killed atomic_write's leftover
    (out / ".best.safetensors.staged").write_bytes(b"\0" * 100)  # a killed write_file_set's leftover
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers
    h = _run(out, epochs=2, resume=True)  # the next start cleans up and finishes the run
    assert h.last["epoch"] == 2
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


def test_a_torn_checkpoint_set_from_an_older_writer_is_detected_on_resume(tmp_path):
    out = tmp_path / "run"
    _run(out, epochs=1)
    meta = json.loads((out / "model.json").read_text())
    meta["epoch"] = 2  # model.json renamed for epoch 2, train_state.pt still epoch 1
    (out / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"inconsistent: model.json is at epoch 2 .* train_state.pt at epoch 1"
                                         rf".* warm restart: resnet-lab finetune --from {out} --strategy all --dataset tiny"):
        _run(out, epochs=2, resume=True)


def test_run_files_are_readable_by_others_not_mode_0600(tmp_path):
    out = tmp_path / "run"
    old = os.umask(0o022)
    try:
        _run(out, epochs=1)
    finally:
        os.umask(old)
    for name in ("model.safetensors", "best.safetensors", "model.json", "train_state.pt"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


# --- torn and corrupt files ---------------------------------------------------------------------


def test_a_torn_last_metrics_line_does_not_block_resume(tmp_path):
    out = tmp_path / "run"
    _interrupted(out, epochs=2, after_epoch=1)
    with open(out / "metrics.jsonl", "a") as f:
        f.write('{"epoch": 2, "train_loss": 0.5, "test_lo')  # a killed append
    h = _run(out, epochs=2, resume=True)
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and h.last["epoch"] == 2


def test_a_corrupt_metrics_line_in_the_middle_is_an_error_naming_the_file(tmp_path):
    out = tmp_path / "run"
    _interrupted(out, epochs=3, after_epoch=2)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("garbage\n" + "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl line 1 is corrupt"):
        _run(out, epochs=3, resume=True)


@pytest.mark.parametrize("content", [b"", b"\x00" * 64, b"not a pickle at all"])
def test_a_corrupt_train_state_is_an_error_naming_the_file(tmp_path, content):
    out = tmp_path / "run"
    _run(out, epochs=1)
    (out / "train_state.pt").write_bytes(content)
    with pytest.raises(ValueError, match=r"train_state.pt cannot be read"):
        _run(out, epochs=2, resume=True)


@pytest.mark.parametrize("content", [b"", b"\x07" * 40, b'{"not": "safetensors"}'])
def test_a_corrupt_weights_file_is_an_error_naming_the_file(tmp_path, content):
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"model.safetensors is not a readable safetensors file"):
        ckpt.load_state_dict_file(path)


def test_corrupt_model_json_is_an_error_naming_the_file(tmp_path):
    out = tmp_path / "run"
    _run(out, epochs=1)
    (out / "model.json").write_text('{"arch": {"name": ')
    with pytest.raises(ValueError, match=r"model.json is not valid JSON"):
        ckpt.load_meta(out)


# --- bad configuration --------------------------------------------------------------------------


@pytest.mark.parametrize("kw, message", [
    ({"grad_clip": -1.0}, "grad_clip \\(--grad-clip\\) must be a finite number > 0"),
    ({"grad_clip": 0.0}, "grad_clip \\(--grad-clip\\) must be a finite number > 0"),
    ({"weight_decay": -5e-4}, "weight_decay \\(--weight-decay\\) must be a finite number >= 0"),
    ({"lr": float("inf")}, "lr \\(--lr\\) must be a finite number > 0"),
    ({"lr": float("nan")}, "lr \\(--lr\\) must be a finite number > 0"),
    ({"momentum": 1.5}, "momentum \\(--momentum\\) must be in"),
    ({"warmup_epochs": -1.0}, "warmup_epochs \\(--warmup-epochs\\) must be between"),
    ({"checkpoint_segments": -2}, "checkpoint_segments \\(--checkpoint-segments\\) must be an int >= 0"),
])
def test_train_config_refuses_values_that_would_silently_corrupt_training(kw, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kw)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batch_size_1_with_batch_norm_is_refused_with_the_reason(tmp_path, mode):
    """Also for a model handed over in eval mode (after an evaluate, say): training puts it in train mode."""
    model = TinyNet().train(mode == "train")
    with pytest.raises(ValueError, match="batch size 1 cannot train batch normalization.*--norm group"):
        _run(tmp_path / "run", epochs=1, model=model, bundle=make_bundle(batch_size=1))


@pytest.mark.parametrize("norm", ["group", "frozen batch"])
def test_batch_size_1_without_batch_norm_trains_every_sample(tmp_path, norm):
    """Also with a BN layer that freeze() locked in eval mode (a fine-tune's frozen backbone): it
    normalizes with its running statistics, so one sample is enough."""
    from resnet_lab.transfer import freeze

    model = TinyNet()
    if norm == "group":
        model.bn = torch.nn.GroupNorm(2, 8)
    else:
        assert freeze(model, ["fc.weight", "fc.bias"]).eval_norms == ["bn"]
    steps = []
    torch.manual_seed(0)
    train(model, make_bundle(n_train=12, batch_size=1), _cfg(tmp_path / "run", epochs=1),
          step_callbacks=[lambda info: steps.append(info["step"])], log=_quiet)
    assert steps == list(range(1, 13))


def _with_train_batches(sizes: list[int]):
    """make_bundle's data, its training loader replaced by unshuffled batches of these sizes (a
    plain list: no batch_size for train to check up front)."""
    bundle = make_bundle()
    x, y, ends = bundle.train.x, bundle.train.y, [sum(sizes[:i + 1]) for i in range(len(sizes))]
    bundle.train = [(x[end - n:end], y[end - n:end]) for n, end in zip(sizes, ends)]
    return bundle


def test_a_lone_last_sample_is_skipped_by_a_model_with_batch_norm():
    """A batch of one has no batch statistics (BatchNorm1d refuses it in training): the loop skips it."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 8), torch.nn.BatchNorm1d(8),
                                torch.nn.ReLU(), torch.nn.Linear(8, 3))
    steps = []
    train(model, _with_train_batches([16, 16, 1]), TrainConfig(epochs=2, lr=0.05, progress=False, plots=False, device="cpu"),
          step_callbacks=[lambda info: steps.append((info["epoch"], info["step"]))], log=_quiet)
    assert steps == [(1, 1), (1, 2), (2, 1), (2, 2)]


@pytest.mark.parametrize("n_train, drop_last, bn, steps_per_epoch",
                         [(33, False, True, 2), (34, False, True, 3), (33, True, True, 2), (33, False, False, 3)])
def test_a_loaders_lone_last_sample_is_not_counted_in_the_schedule(n_train, drop_last, bn, steps_per_epoch):
    """A user's own DataLoader (drop_last=False) whose last batch is one sample: under batch norm the
    loop skips it, so the schedule is sized without it and cosine ends at 0 on the last step, as
    torch's CosineAnnealingLR over the steps actually taken does. With drop_last=True the loader
    yields no lone sample, so none is taken off; without batch norm the lone sample trains, and counts."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 8),
                                torch.nn.BatchNorm1d(8) if bn else torch.nn.Identity(), torch.nn.ReLU(),
                                torch.nn.Linear(8, 3))
    bundle = make_bundle()
    data = torch.utils.data.TensorDataset(bundle.train.x[:n_train], bundle.train.y[:n_train])
    bundle.train = torch.utils.data.DataLoader(data, batch_size=16, drop_last=drop_last)
    steps = []
    h = train(model, bundle, TrainConfig(epochs=2, lr=0.1, schedule="cosine", progress=False, plots=False,
                                         device="cpu"),
              step_callbacks=[lambda info: steps.append(info["step"])], log=_quiet)
    assert steps == list(range(1, steps_per_epoch + 1)) * 2
    ref = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(ref, T_max=2 * steps_per_epoch)
    for _ in range(steps_per_epoch):
        ref.step()
        sched.step()
    assert h.epochs[0]["lr"] == pytest.approx(sched.get_last_lr()[0], abs=1e-12)
    assert h.last["lr"] == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("sizes", [[1, 1, 1], [1]])
def test_an_epoch_whose_batches_all_have_one_sample_is_refused_not_finished_without_a_step(tmp_path, sizes):
    with pytest.raises(ValueError, match="epoch 1 made no optimizer step: every batch had fewer than 2 samples"):
        _run(tmp_path / "run", epochs=1, bundle=_with_train_batches(sizes))
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_checkpoint_segments_on_a_model_without_support_is_an_error_not_a_no_op(tmp_path):
    with pytest.raises(ValueError, match="does not support gradient checkpointing"):
        _run(tmp_path / "run", epochs=1, checkpoint_segments=2)


def test_with_label_smoothing_the_epoch_record_also_has_the_plain_cross_entropy_that_test_loss_compares_with(
        tmp_path):
    import torch.nn.functional as F

    model = TinyNet()
    model.drop = torch.nn.Identity()
    bundle = make_bundle()
    # lr ~ 0: the weights stay put, so the plain loss can be recomputed independently afterwards.
    h = train(model, bundle, _cfg(tmp_path / "run", epochs=1, lr=1e-30, label_smoothing=0.2), log=_quiet)
    bundle.train.set_epoch(0)
    model.train()
    with torch.no_grad():
        logits = [(model(x), y) for x, y in bundle.train]
    plain = sum(float(F.cross_entropy(z, y, reduction="sum")) for z, y in logits) / bundle.num_train
    smoothed = sum(float(F.cross_entropy(z, y, reduction="sum", label_smoothing=0.2)) for z, y in logits)
    assert h.last["train_loss_plain"] == pytest.approx(plain, rel=1e-5)
    assert h.last["train_loss"] == pytest.approx(smoothed / bundle.num_train, rel=1e-5)
    assert abs(plain - smoothed / bundle.num_train) > 1e-3  # the two are different curves
    without = train(TinyNet(), make_bundle(), _cfg(tmp_path / "plain", epochs=1), log=_quiet)
    assert "train_loss_plain" not in without.last


def test_stop_after_pauses_the_schedule_and_resume_ends_where_an_uninterrupted_run_does(tmp_path):
    straight, paused = tmp_path / "straight", tmp_path / "paused"
    _run(straight, epochs=3, deterministic=True)
    h = _run(paused, epochs=3, deterministic=True, stop_after=1)
    assert [r["epoch"] for r in h.epochs] == [1] and not h.interrupted
    assert ckpt.load_train_state(paused)["epoch"] == 1
    _run(paused, epochs=3, deterministic=True, stop_after=1, resume=True)  # stop_after is no part of the recipe
    a, b = load_file(straight / "model.safetensors"), load_file(paused / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match=r"stop_after \(--stop-after\) must be between 1 and epochs"):
        TrainConfig(epochs=3, stop_after=4)


# --- a new run next to someone's files ------------------------------------------------------


@pytest.mark.parametrize("name,content", [
    ("curves.png", b"my plot"),
    ("confusion.png", b"my plot"),
    ("metrics.csv", b"a,b\n1,2\n"),
    ("metrics.jsonl", b'{"mine": 1}\n'),
    ("metrics.jsonl", b"\n"),  # blank lines, which append_metrics never writes: someone's
    ("metrics.jsonl", b"   "),
    ("metrics.jsonl", b'{"epoch": 1}\n\n{"epoch": 2}\n'),
    ("metrics.jsonl", b'{"epoch": 1, "note": "\xff"}\n'),  # not UTF-8: append_metrics never wrote it
])
def test_a_new_run_refuses_a_folder_holding_a_users_file_of_a_runs_name(tmp_path, name, content):
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_bytes(content)
    with pytest.raises(FileExistsError, match=rf"{name} exists but .*holds no run.*move it away or choose another --out"):
        _run(out)
    assert (out / name).read_bytes() == content and [p.name for p in out.iterdir()] == [name]


@pytest.mark.parametrize("cut", [None, 15, 4, 0])
def test_a_failed_first_saves_metrics_are_cleared_and_the_same_command_starts_again(tmp_path, cut):
    # a first save appends metrics.jsonl and rewrites metrics.csv before the checkpoint set; a kill in
    # the append leaves its line cut anywhere, down to an empty file (opened, nothing written yet)
    out = tmp_path / "run"
    out.mkdir()
    record = json.dumps({"epoch": 1, "train_loss": 2.3})
    (out / "metrics.jsonl").write_text(record + "\n" if cut is None else record[:cut])
    (out / "metrics.csv").write_text("epoch,train_loss\n1,2.3\n")
    _run(out, epochs=1)
    assert [r["epoch"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1]
    assert "2.3\n" not in (out / "metrics.csv").read_text()


def test_no_output_lands_on_a_runs_plots_or_table(tmp_path):
    out = tmp_path / "run"
    _run(out, epochs=1)
    for name in ("curves.png", "confusion.png", "metrics.csv"):
        (out / name).write_bytes(b"the run's")  # plots=False in _cfg: stand-ins
        with pytest.raises(FileExistsError, match=f"{name} belongs to the run"):
            ckpt.check_output_file(out / name, kind="plot", suffixes=(".png", ".csv"))


def test_resuming_into_a_folder_that_does_not_exist_says_so_not_permission_denied(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--out .*nope does not exist: nothing to resume \(start without --resume"):
        _run(tmp_path / "nope", resume=True)
    assert not (tmp_path / "nope").exists()


def test_finetune_resume_into_a_missing_folder_is_one_line_naming_it(tmp_path, capsys):
    from resnet_lab.cli import main

    src = tmp_path / "src"
    args = ["--dataset", "fake", "--image-size", "16", "--subset", "32", "--epochs", "1", "--batch-size", "16",
            "--no-progress"]
    assert main(["train", "--model", "resnet8", *args, "--out", str(src)]) == 0
    capsys.readouterr()
    assert main(["finetune", "--from", str(src), "--strategy", "all", *args, "--resume",
                 "--out", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {tmp_path / 'nope'} does not exist: nothing to resume") and err.count("\n") == 1


# --- one writer per run directory ------------------------------------------------------------


def test_a_second_writer_is_refused_before_it_touches_anything_and_the_first_finishes_whole(tmp_path):
    out = tmp_path / "run"
    refused = []

    def second_writer(record):
        if record["epoch"] == 1:
            (out / ".model.safetensors.x.tmp").write_bytes(b"the first run's save in progress (a stand-in)")
            for resume in (False, True):
                # fork_rng: the refused run seeds torch, which would change the first run's batches
                with torch.random.fork_rng(), pytest.raises(ckpt.RunInUseError,
                                                            match=r"is being written by another process.*another --out"):
                    _run(out, epochs=2, resume=resume)
                refused.append(resume)
            assert (out / ".model.safetensors.x.tmp").exists()  # no recovery by the refused one
            (out / ".model.safetensors.x.tmp").unlink()

    torch.manual_seed(0)
    train(TinyNet(), make_bundle(), _cfg(out, epochs=2), callbacks=[second_writer], log=_quiet)
    assert refused == [False, True]
    assert [r["epoch"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1, 2]
    _run(tmp_path / "ref", epochs=2)
    ref, got = load_file(tmp_path / "ref" / "model.safetensors"), load_file(out / "model.safetensors")
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    _run(out, epochs=2, resume=True)  # the lock went with the run: the next writer gets in


def test_a_reader_leaves_a_live_writers_committed_save_alone_and_finishes_a_dead_ones(tmp_path, monkeypatch):
    out, _ = _second_checkpoint_killed(tmp_path, monkeypatch, fail_replace_at=1)
    manifest = out / ".checkpoint-pending.json"
    with ckpt.RunLock(out):  # a writer is alive: its own renames are under way
        ckpt.settle_run_dir(out)
        assert manifest.exists()
    ckpt.settle_run_dir(out)  # the writer died: roll forward
    assert not manifest.exists()
    assert ckpt.load_train_state(out)["epoch"] == json.loads((out / "model.json").read_text())["epoch"] == 2


@pytest.mark.parametrize("lands", ["model.json replaced", "renames begun"])
def test_a_read_waits_out_a_saves_renames_and_is_redone_when_a_save_lands_during_it(tmp_path, lands):
    """"renames begun": the save committed during the read (its manifest appeared), its model.json not
    renamed yet; the read is redone once the renames end, as for a save that landed whole."""
    import threading

    out = tmp_path / "run"
    _run(out, epochs=1)
    manifest = out / ".checkpoint-pending.json"
    manifest.write_text('{"files": {}}\n')
    seen = []

    def read():
        seen.append(manifest.exists())
        if len(seen) == 1 and lands == "model.json replaced":  # model.json is a new file after a save
            text = (out / "model.json").read_text()
            (out / "model.json").unlink()
            (out / "model.json").write_text(text)
        elif len(seen) == 1:
            manifest.write_text('{"files": {}}\n')
            threading.Timer(0.2, manifest.unlink).start()
        return len(seen)

    with ckpt.RunLock(out):  # a live writer (this lock is another open file to the reader's check)
        threading.Timer(0.2, manifest.unlink).start()  # the writer's renames end
        assert ckpt._read_whole(out, read) == 2 and seen == [False, False]


def test_resume_finishes_a_committed_first_checkpoint_instead_of_refusing(tmp_path, monkeypatch, capsys):
    from resnet_lab.cli import main

    out = tmp_path / "run"
    args = ["train", "--model", "resnet8", "--dataset", "fake", "--image-size", "16", "--subset", "32",
            "--batch-size", "16", "--epochs", "2", "--no-progress", "--out", str(out)]
    real_replace = os.replace

    def replace(src, dst):  # killed after the first checkpoint's commit point, before model.json is in place
        if str(dst).endswith("model.json") and str(src).endswith(".staged"):
            raise _Killed
        return real_replace(src, dst)

    monkeypatch.setattr(ckpt.os, "replace", replace)
    with pytest.raises(_Killed):
        main(args)
    monkeypatch.undo()
    assert (out / ".checkpoint-pending.json").exists() and not (out / "model.json").exists()
    capsys.readouterr()
    assert main([*args, "--resume"]) == 0
    assert [r["epoch"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1, 2]


def test_resume_of_a_folder_without_a_checkpoint_says_nothing_to_resume(tmp_path, capsys):
    from resnet_lab.cli import main

    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"epoch": 1, "train_lo')  # a first save killed mid-append
    assert main(["train", "--model", "resnet8", "--dataset", "fake", "--image-size", "16", "--subset", "32",
                 "--batch-size", "16", "--epochs", "1", "--no-progress", "--out", str(out), "--resume"]) == 2
    assert capsys.readouterr().err == (f"error: {out} holds no checkpoint yet (no model.json): nothing to resume "
                                       "(start without --resume; in Python: resume=False)\n")


@pytest.mark.parametrize("kept, lacking", [([1], "1"), ([0], "2"), ([], "1, 2")])
def test_a_cut_metrics_file_is_named_on_resume_with_the_epochs_it_lacks(tmp_path, kept, lacking):
    """The checkpoint covers epochs 1 and 2: a file cut at its end lacks the last one too."""
    out = tmp_path / "run"
    _interrupted(out, epochs=3, after_epoch=2)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    (out / "metrics.jsonl").write_text("".join(lines[i] + "\n" for i in kept))  # the other records cut away
    said = []
    torch.manual_seed(0)
    train(TinyNet(), make_bundle(), _cfg(out, epochs=3, resume=True), log=said.append)
    assert any(f"lacks the records of epoch(s) {lacking} that the checkpoint covers" in s for s in said), said


@pytest.mark.parametrize("older_by_ns", [None, 1_000_000], ids=["from_1970", "by_a_millisecond"])
def test_resuming_a_finished_run_redraws_curves_a_kill_left_older_than_its_checkpoint(tmp_path, older_by_ns):
    """Older by any amount: a kill during the last epoch's plots leaves the previous epoch's curves,
    drawn moments before model.json was written (the 1970 file alone let a tolerance through)."""
    out = tmp_path / "run"
    _run(out, epochs=1, plots=True)
    stale = b"drawn before the last checkpoint"
    (out / "curves.png").write_bytes(stale)
    when = 1 if older_by_ns is None else (out / "model.json").stat().st_mtime_ns - older_by_ns
    os.utime(out / "curves.png", ns=(when, when))
    said = []
    train(TinyNet(), make_bundle(), _cfg(out, epochs=1, resume=True, plots=True), log=said.append)
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [s for s in said if "redrawn" in s] == [f"{out / 'curves.png'}: redrawn (it was older than the last checkpoint)"]
    said.clear()
    train(TinyNet(), make_bundle(), _cfg(out, epochs=1, resume=True, plots=True), log=said.append)
    assert not any("redrawn" in s for s in said)  # up to date: left alone


def test_resuming_a_finished_run_with_plots_off_draws_no_plot(tmp_path):
    """README: --no-plots draws neither curves.png nor confusion.png; a resume of a finished run
    (which redraws missing or stale plots when they are on) draws none either."""
    out = tmp_path / "run"
    _run(out, epochs=1)
    _run(out, epochs=1, resume=True)
    assert not (out / "curves.png").exists() and not (out / "confusion.png").exists()


def test_resuming_a_finished_run_redraws_a_stale_confusion_plot_from_the_checkpoint_without_evaluating(tmp_path):
    """The last evaluated epoch's confusion matrix rides in train_state.pt: it is the saved model's
    own (recounted here from its predictions), and a resume redraws the same picture from it."""
    out = tmp_path / "run"
    _run(out, epochs=2, plots=True)
    saved = ckpt.load_train_state(out)["confusion"]
    model = TinyNet()
    model.load_state_dict(load_file(out / "model.safetensors"))
    model.eval()
    recount = torch.zeros(3, 3, dtype=torch.int64)
    with torch.no_grad():
        for x, y in make_bundle().test:
            for t, p in zip(y.tolist(), model(x).argmax(1).tolist()):
                recount[t, p] += 1
    assert saved["epoch"] == 2 and saved["matrix"].tolist() == recount.tolist() and recount.sum() == 40

    original = (out / "confusion.png").read_bytes()
    (out / "confusion.png").unlink()  # killed between the checkpoint and the plot
    said = []
    train(TinyNet(), make_bundle(), _cfg(out, epochs=2, resume=True, plots=True), log=said.append)
    assert (out / "confusion.png").read_bytes() == original
    # QA 2026-12-06: it said "it was older than the last checkpoint" of a file that was not there
    assert [s for s in said if "redrawn" in s] == [f"{out / 'confusion.png'}: redrawn (it was missing)"]


def test_without_plots_the_confusion_matrix_is_kept_and_an_older_checkpoint_without_it_resumes(tmp_path):
    out = tmp_path / "run"
    _run(out, epochs=1)  # plots off: the matrix is kept all the same, for a later session that draws
    state = ckpt.load_train_state(out)
    assert state["confusion"]["epoch"] == 1 and int(state["confusion"]["matrix"].sum()) == make_bundle().num_test
    del state["confusion"]  # a checkpoint written before the matrix was kept
    torch.save(state, out / "train_state.pt")
    said = []
    train(TinyNet(), make_bundle(), _cfg(out, epochs=1, resume=True, plots=True), log=said.append)
    assert not (out / "confusion.png").exists() and (out / "curves.png").exists()
    assert [s for s in said if "redrawn" in s] == [f"{out / 'curves.png'}: redrawn (it was missing)"]


@pytest.mark.parametrize("out_given", [True, False])
def test_the_first_ctrl_c_promises_a_save_only_when_there_is_somewhere_to_save(capsys, out_given):
    import signal

    from resnet_lab.train import loop

    stop = loop._GracefulStop(saves=out_given)
    stop._handler(signal.SIGINT, None)
    err = capsys.readouterr().err
    assert ("and saving" in err) == out_given and "Ctrl-C again to stop at once" in err


def test_under_torchrun_only_rank_0_announces_the_stop_but_every_rank_stops(capsys, monkeypatch):
    import signal

    from resnet_lab.train import loop

    for rank, world in ((0, 1), (1, 2), (0, 2)):  # what torchrun's environment says, as DistContext reads it
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", str(world))
        out = []
        # the loop's own wiring: announces=run.job.is_main
        stop = loop._GracefulStop(saves=True, announces=loop.DistContext.current().is_main)
        stop._handler(signal.SIGINT, None)
        out.append(capsys.readouterr().err)
        assert ("stopping after the current step" in out[0]) == (rank == 0), (rank, out)
        with pytest.raises(KeyboardInterrupt):
            stop.check()


def _ctrl_c_at(epoch: int, step: int):
    """A step or epoch callback that sends this process a real SIGINT (as Ctrl-C does) at ``epoch``'s
    ``step`` (an epoch's record, which has no step, counts as any step)."""
    def ctrl_c(info):
        if info["epoch"] == epoch and info.get("step", step) == step:
            os.kill(os.getpid(), signal.SIGINT)
    return ctrl_c


@pytest.mark.parametrize("during, saved_at", [("step", (0, 2)), ("epoch", (1, 0))])
def test_a_ctrl_c_stops_at_the_next_step_boundary_and_saves_that_position(tmp_path, during, saved_at):
    """README: Ctrl-C stops at the next step boundary and saves the exact position. One that comes
    while step 2's callbacks run saves epoch 1 at step 2; one while epoch 1 ends (its evaluation,
    checkpoint and callbacks) saves the end of epoch 1, before any step of epoch 2."""
    out = tmp_path / "run"
    torch.manual_seed(0)
    hooks = {"step_callbacks" if during == "step" else "callbacks": [_ctrl_c_at(epoch=1, step=2)]}
    history = train(TinyNet(), make_bundle(), _cfg(out, epochs=3), log=_quiet, **hooks)
    assert history.interrupted
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert (int(state["epoch"]), int(state["step"])) == saved_at


def test_a_ctrl_c_without_out_promises_no_save_and_train_gives_the_callers_handlers_back(capsys):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    said = []
    torch.manual_seed(0)
    history = train(TinyNet(), make_bundle(), TrainConfig(epochs=2, lr=0.05, progress=False, plots=False,
                                                          device="cpu"),
                    step_callbacks=[_ctrl_c_at(epoch=1, step=2)], log=said.append)
    err = capsys.readouterr().err
    assert history.interrupted and "stopping after the current step (Ctrl-C again" in err and "saving" not in err
    assert [line.strip() for line in said if "interrupted" in line] == ["interrupted (no --out, nothing saved)"]
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_ctrl_c_after_a_step_that_left_nan_weights_saves_nothing_and_keeps_the_last_checkpoint(tmp_path):
    """A soft stop saves the position it reached, but never non-finite weights (module docstring:
    the last good checkpoint stays): here a NaN lands in the weights at epoch 2's step 2."""
    out, model, said = tmp_path / "run", TinyNet(), []

    def nan_then_stop(info):
        if info["epoch"] == 2 and info["step"] == 2:
            with torch.no_grad():
                model.conv.weight[0].fill_(float("nan"))
            raise KeyboardInterrupt

    torch.manual_seed(0)
    assert train(model, make_bundle(), _cfg(out, epochs=3), step_callbacks=[nan_then_stop], log=said.append).interrupted
    state = torch.load(out / "train_state.pt", weights_only=True)
    assert (int(state["epoch"]), int(state["step"])) == (1, 0) and _all_finite(out / "model.safetensors")
    assert any("nothing of epoch 2 was saved (the last checkpoint is kept" in line for line in said), said


@pytest.mark.parametrize("epoch_of_second_stop", [1, 2])
def test_a_second_ctrl_c_says_what_was_kept_and_how_to_go_on(tmp_path, epoch_of_second_stop):
    from resnet_lab.train import loop

    out = tmp_path / "run"

    def hard_stop(info):
        if info["epoch"] == epoch_of_second_stop and info["step"] == 2:
            raise loop._HardStop("signal 2")

    said = []
    torch.manual_seed(0)
    train(TinyNet(), make_bundle(), _cfg(out, epochs=2), step_callbacks=[hard_stop], log=said.append)
    line = next(s for s in said if "stopped at once" in s)
    if epoch_of_second_stop == 1:
        assert "no checkpoint was written yet: run the same command again" in line and not (out / "train_state.pt").exists()
    else:
        assert "the last checkpoint is kept; resume with the same command and --resume" in line


def test_a_read_only_copy_with_a_dead_writers_manifest_is_read_at_once(tmp_path, monkeypatch):
    out = tmp_path / "run"
    _run(out, epochs=1)
    (out / ".checkpoint-pending.json").write_text('{"files": {}}\n')  # recovery cannot run: read-only

    def no_waiting(seconds):
        raise AssertionError("waited for a manifest that no live writer will remove")

    monkeypatch.setattr(ckpt.time, "sleep", no_waiting)
    assert ckpt._read_whole(out, lambda: "read", wait_s=3600) == "read"


def test_a_runs_lock_is_let_go_when_its_start_fails_after_taking_it(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "tensorboard").write_text("a file where the log folder goes")  # open_tensorboard fails
    pytest.importorskip("tensorboard")
    with pytest.raises(OSError) as failed:
        _run(out, epochs=1, tensorboard=True)
    # the traceback (kept, as a REPL or notebook keeps the last one) still holds the failed run
    assert failed.tb is not None and not ckpt._writer_active(out)
    (out / "tensorboard").unlink()
    _run(out, epochs=1)  # not "being written by another process"


def test_a_second_ctrl_c_in_finetunes_main_phase_points_to_resume_which_keeps_the_frozen_phase(tmp_path):
    from resnet_lab.train import loop

    out = tmp_path / "ft"
    _run(out / "freeze_phase", epochs=1)  # the finished frozen phase, as finetune --freeze-epochs leaves it

    def hard_stop(info):
        if info["epoch"] == 1 and info["step"] == 2:
            raise loop._HardStop("signal 2")

    said = []
    torch.manual_seed(0)
    train(TinyNet(), make_bundle(), _cfg(out, epochs=2), step_callbacks=[hard_stop], log=said.append)
    line = next(s for s in said if "stopped at once" in s)
    assert "the same command with --resume (resume=True) keeps the finished phase" in line


def test_a_killed_writers_forked_children_do_not_keep_its_lock(tmp_path):
    """An image folder's DataLoader workers are forked children of the writer: they share its open
    folder, so its flock outlived a killed writer until they exited. They now close their copies."""
    out = tmp_path / "run"
    out.mkdir()
    writer = subprocess.Popen([sys.executable, "-c", (
        "import os, sys, time\n"
        "from resnet_lab.runs import RunLock\n"
        "lock = RunLock(sys.argv[1]).acquire()\n"
        "child = os.fork()\n"
        "if child == 0:  # a worker: lives on after the writer dies, until the test closes stdin\n"
        "    sys.stdin.read()\n"
        "    os._exit(0)\n"
        "print(child, flush=True)\n"
        "time.sleep(600)\n"), str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = int(writer.stdout.readline())
    try:
        assert ckpt._writer_active(out)  # the writer holds it
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
        os.kill(child, 0)  # the worker is still alive ...
        assert not ckpt._writer_active(out)  # ... and the folder is free at once
        with ckpt.RunLock(out):
            pass
    finally:
        writer.stdin.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_a_resume_with_another_eval_every_or_nesterov_is_refused_with_the_runs_flags(tmp_path):
    # --eval-every decides which epochs are judged and can become best: another value on resume
    # changed the run silently. --optimizer and --no-nesterov are now named as flags too.
    out = tmp_path / "run"
    _interrupted(out, epochs=3, eval_every=1)
    with pytest.raises(ValueError, match=r"recipe eval_every: run has 1, now 3.*or give the run's values: --eval-every 1"):
        _run(out, epochs=3, resume=True, eval_every=3)
    with pytest.raises(ValueError, match=r"or give the run's values: --lr 0\.05 --optimizer sgd; in Python: "
                                         r"lr=0\.05, optimizer='sgd'\)"):
        _run(out, epochs=3, resume=True, optimizer="adamw", lr=0.001)
    with pytest.raises(ValueError, match=r"recipe nesterov: run has True, now False.*no --no-nesterov; in Python: "
                                         r"nesterov=True\)"):
        _run(out, epochs=3, resume=True, nesterov=False)
    assert not _run(out, epochs=3, resume=True).interrupted


@pytest.mark.parametrize("passed", [1, 2])
def test_a_stop_after_the_run_has_passed_says_the_run_trains_on_to_its_end(tmp_path, passed):
    # The same command given again continues the run (documented); it used to do so without a word,
    # so a user who meant another pause saw the whole run train.
    out, said = tmp_path / "run", []
    _run(out, epochs=4, stop_after=2)
    torch.manual_seed(0)
    h = train(TinyNet(), make_bundle(), _cfg(out, epochs=4, resume=True, stop_after=passed), log=said.append)
    assert [r["epoch"] for r in h.epochs] == [1, 2, 3, 4]
    assert any(f"--stop-after {passed} was reached in an earlier session ({out} is at epoch 2 of 4): training on to "
               "the end; give a later --stop-after" in line for line in said), said
    out2, said = tmp_path / "later", []
    _run(out2, epochs=4, stop_after=2)
    torch.manual_seed(0)
    h = train(TinyNet(), make_bundle(), _cfg(out2, epochs=4, resume=True, stop_after=3), log=said.append)
    assert [r["epoch"] for r in h.epochs] == [1, 2, 3] and not any("earlier session" in line for line in said)


def test_a_stop_after_of_the_runs_last_epoch_finishes_the_run_without_a_pause(tmp_path):
    """stop_after may equal epochs (TrainConfig allows 1 to epochs): the run then simply ends; a
    "paused ... continue with --resume" line would send the user to a resume that has nothing left."""
    said = []
    torch.manual_seed(0)
    h = train(TinyNet(), make_bundle(), _cfg(tmp_path / "run", epochs=2, stop_after=2), log=said.append)
    assert [r["epoch"] for r in h.epochs] == [1, 2] and not h.interrupted
    assert not any("paused" in line or "--resume" in line for line in said), said


def test_under_torchrun_the_forwarded_echo_of_a_ctrl_c_is_not_a_second_one(monkeypatch):
    """A Ctrl-C reaches a torchrun worker twice, from the terminal and forwarded by torchrun: the
    echo was taken for "Ctrl-C again" and 3 of 5 stops saved nothing. Under torchrun the same
    signal within ECHO_SECONDS is the echo; later, or in one process, it stops at once."""
    import signal as sig

    from resnet_lab.train import loop

    now = [100.0]
    monkeypatch.setattr(loop.time, "monotonic", lambda: now[0])
    stop = loop._GracefulStop(saves=True, announces=False, distributed=True)
    stop._handler(sig.SIGINT, None)
    now[0] += 0.3
    stop._handler(sig.SIGINT, None)  # the echo: still a graceful stop
    assert stop.requested == sig.SIGINT
    now[0] += loop._GracefulStop.ECHO_SECONDS
    with pytest.raises(loop._HardStop):
        stop._handler(sig.SIGINT, None)  # a real second Ctrl-C
    single = loop._GracefulStop(saves=True, announces=False)
    single._handler(sig.SIGINT, None)
    with pytest.raises(loop._HardStop):
        single._handler(sig.SIGINT, None)  # one process: a second Ctrl-C stops at once, as before
    other = loop._GracefulStop(saves=True, announces=False, distributed=True)
    other._handler(sig.SIGTERM, None)
    with pytest.raises(loop._HardStop):
        other._handler(sig.SIGINT, None)  # another signal is no echo


def test_batch_size_1_is_refused_for_local_bn_but_not_for_sync_bn_over_several_processes():
    """--sync-bn takes the statistics over the global batch: 2 processes x 1 sample is a batch of 2,
    which one process allows, and --sync-bn is offered for exactly such small per-device batches."""
    from resnet_lab.models import create_model
    from resnet_lab.nn import convert_sync_batchnorm
    from resnet_lab.train import loop

    local = create_model("resnet8", num_classes=3)
    with pytest.raises(ValueError, match="batch size 1 cannot train batch normalization"):
        loop._check_batch_norm_batch_size(local, 1, world_size=2)  # local BN: one sample per process
    synced = convert_sync_batchnorm(create_model("resnet8", num_classes=3), torch.device("cpu"))
    assert loop._check_batch_norm_batch_size(synced, 1, world_size=2) is False  # nothing to skip either
    with pytest.raises(ValueError, match="batch size 1 cannot train batch normalization"):
        loop._check_batch_norm_batch_size(synced, 1, world_size=1)  # alone, sync BN has one sample
    assert loop._check_batch_norm_batch_size(synced, 2, world_size=1) is True
    synced.fc = torch.nn.Sequential(torch.nn.BatchNorm1d(64), synced.fc)  # one local BN left: one sample again
    with pytest.raises(ValueError, match="batch size 1 cannot train batch normalization"):
        loop._check_batch_norm_batch_size(synced, 1, world_size=2)


def test_under_torchrun_an_empty_share_is_named_as_one_not_as_an_empty_set(monkeypatch):
    """A test set of 1 image over 2 processes said "the test set is empty: give each class more
    images"; 3 training images over 2 processes said "lower --batch-size", which cannot help."""
    from tinytrain import TinyNet, make_bundle

    from resnet_lab.train import TrainConfig, loop

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    data = make_bundle()
    data.test.x, data.test.y = data.test.x[:0], data.test.y[:0]
    data.num_test = 1  # all ranks together: rank 1's share is empty
    with pytest.raises(ValueError, match=r"the 1 test image\(s\) are fewer than the 2 processes, so rank 1 gets none"):
        loop.check_model_fits_data(TinyNet(), data, TrainConfig(device="cpu"))
    data = make_bundle(n_train=3, batch_size=16)
    with pytest.raises(ValueError, match=r"3 training image\(s\) over 2 processes leave each fewer than one batch; "
                                         r"use fewer processes"):
        loop._steps_per_epoch(data, TrainConfig(device="cpu"))


def test_a_run_that_has_not_saved_yet_is_named_as_such_not_as_no_run(tmp_path, capsys):
    """export/evaluate of a run directory whose training had not reached its first checkpoint said
    "no model.json found ... Pass a run directory written by `resnet-lab train`" of a directory that
    a train was writing."""
    from resnet_lab.cli import main

    out = tmp_path / "run"
    out.mkdir()
    with ckpt.RunLock(out):  # a training run started there
        for argv in (["export", str(out), "--out", str(tmp_path / "m.onnx")], ["evaluate", str(out)]):
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert f"{out} holds no checkpoint yet: a run is writing it and saves the first at the end" in err
    assert main(["evaluate", str(out)]) == 2  # no writer: a folder that is no run
    assert "no model.json found" in capsys.readouterr().err
    (out / "freeze_phase").mkdir()
    (out / "freeze_phase" / "model.json").write_text("{}")  # a finetune killed before its main phase saved
    assert main(["evaluate", str(out)]) == 2
    assert f"{out} holds only the frozen phase of a finetune (freeze_phase/)" in capsys.readouterr().err


@pytest.mark.parametrize("stopped_after", [1, 2])
def test_a_second_ctrl_c_just_after_an_epochs_checkpoint_says_it_was_saved(tmp_path, monkeypatch, stopped_after):
    """A second Ctrl-C while an epoch's plots were drawn (its checkpoint already committed) said
    "nothing of epoch N was saved", and the next --resume went on from epoch N + 1."""
    from resnet_lab.train import loop
    from resnet_lab.train.checkpoint import Checkpointer

    real = Checkpointer.end_epoch

    def end_epoch(self, history, confusion, *, improved):
        real(self, history, confusion, improved=improved)
        if history.last["epoch"] == stopped_after:
            raise loop._HardStop("signal 2")  # in the plots, after the save

    monkeypatch.setattr(Checkpointer, "end_epoch", end_epoch)
    said, out = [], tmp_path / "run"
    torch.manual_seed(0)
    train(TinyNet(), make_bundle(), _cfg(out, epochs=2), log=said.append)
    line = next(s for s in said if "stopped at once" in s)
    assert f"after epoch {stopped_after} was saved" in line
    assert ("the run is complete" in line) == (stopped_after == 2) and "nothing of" not in line
    assert json.loads((out / "model.json").read_text())["epoch"] == stopped_after


def test_a_ctrl_c_after_the_last_epoch_says_the_run_is_complete(tmp_path):
    def stop_at_the_end(record):
        if record["epoch"] == 2:
            raise KeyboardInterrupt  # as Ctrl-C during the last plots: the stop is taken after the epoch

    said = []
    torch.manual_seed(0)
    train(TinyNet(), make_bundle(), _cfg(tmp_path / "run", epochs=2), callbacks=[stop_at_the_end], log=said.append)
    line = next(s for s in said if "interrupted" in s)
    assert "after epoch 2 of 2" in line and "the run is complete" in line and "resume with the same command" not in line


def test_cli_resume_on_other_batches_names_the_flags_that_give_the_runs_values(tmp_path, capsys):
    """The recipe's flags were named with the run's values; the data's (--batch-size, --image-size,
    --no-augment, --random-erasing, --subset) were refused as "global_batch_size", "input_size"...
    with no flag to give."""
    from resnet_lab.cli import main

    out = tmp_path / "run"
    common = ["--model", "resnet8", "--dataset", "fake", "--subset", "64", "--epochs", "2", "--no-progress",
              "--out", str(out)]
    assert main(["train", *common, "--image-size", "16", "--batch-size", "16", "--stop-after", "1"]) == 0
    assert main(["train", *common, "--image-size", "12", "--batch-size", "8", "--random-erasing", "0.3",
                 "--crop-padding", "1", "--resume"]) == 2
    err = capsys.readouterr().err
    for flag in ("--batch-size 16", "--image-size 16", "--random-erasing 0.0", "--crop-padding 2"):
        assert flag in err.split("or give the run's values: ")[1], (flag, err)
    assert main(["train", *common, "--image-size", "16", "--batch-size", "16", "--no-augment", "--resume"]) == 2
    assert "no --no-augment" in capsys.readouterr().err.split("or give the run's values: ")[1]
    assert main(["train", *common, "--image-size", "16", "--batch-size", "16", "--resume"]) == 0


def test_reading_a_run_removes_the_temporary_files_a_killed_save_left(tmp_path):
    """A kill during a save's staging or the plots left .model.safetensors.staged or a plot's .tmp;
    evaluate and export read the run (load_model settles it first) but kept them: only a resume
    removed them, though the README says the next load does."""
    out = tmp_path / "run"
    _run(out, epochs=1)
    stray = [out / ".model.safetensors.staged", out / ".curves.png.k2j4.tmp"]
    for p in stray:
        p.write_bytes(b"cut short")
    ckpt.settle_run_dir(out)  # what load_model, evaluate and export do before reading
    assert not any(p.exists() for p in stray) and (out / "model.safetensors").is_file()
    for p in stray:
        p.write_bytes(b"cut short")
    with ckpt.RunLock(out):  # a live writer's files are in use: left alone
        ckpt.settle_run_dir(out)
        assert all(p.exists() for p in stray)


def _png_folder(root: Path, seed: int, per_class: int = 6) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return root


def test_cli_resume_on_another_image_folder_with_the_same_names_and_counts_is_refused(tmp_path, capsys):
    """QA resumed a folder run with --data-dir at another folder of the same class names, file names
    and counts: epoch 2 trained and was tested on other images, and "best" compared two test sets.
    The same folder moved elsewhere still resumes (paths are taken under the folder)."""
    from resnet_lab.cli import main

    first, other = _png_folder(tmp_path / "first", seed=0), _png_folder(tmp_path / "other", seed=1)
    out = tmp_path / "run"
    common = ["--model", "resnet8", "--dataset", "folder", "--epochs", "2", "--batch-size", "4", "--workers", "0",
              "--val-fraction", "0.25", "--no-progress", "--out", str(out)]
    assert main(["train", *common, "--data-dir", str(first), "--stop-after", "1"]) == 0
    capsys.readouterr()
    assert main(["train", *common, "--data-dir", str(other), "--resume"]) == 2
    err = capsys.readouterr().err
    assert f"the images in {other} are not those the run trained on in {first}" in err, err
    assert f"--data-dir {first} (the folder as it was" in err.split("or give the run's values: ")[1], err
    (first / "a" / "5.png").unlink()  # a file removed: the count changes too, and --subset is no way back
    assert main(["train", *common, "--data-dir", str(first), "--resume"]) == 2
    err = capsys.readouterr().err
    assert "are not those the run trained on" in err and "--subset" not in err, err
    _png_folder(tmp_path / "moved", seed=0)  # the first folder's files, elsewhere
    assert main(["train", *common, "--data-dir", str(tmp_path / "moved"), "--resume"]) == 0


def test_a_folder_run_is_evaluated_and_reported_on_its_own_folder_without_data_dir(tmp_path, capsys):
    """`evaluate RUN` on a folder run said "dataset 'folder' needs data_dir" and report left out its test
    sections: model.json did not record the folder. Reference: the same commands with --data-dir."""
    from resnet_lab.analysis import report_html
    from resnet_lab.cli import main

    folder, out = _png_folder(tmp_path / "imgs", seed=0), tmp_path / "run"
    assert main(["train", "--model", "resnet8", "--dataset", "folder", "--data-dir", str(folder), "--epochs", "1",
                 "--batch-size", "4", "--workers", "0", "--val-fraction", "0.25", "--no-progress", "--out", str(out)]) == 0
    assert json.loads((out / "model.json").read_text())["training"]["folder"] == str(folder.resolve())
    assert "for 1 epoch, 2 steps each" in capsys.readouterr().out  # 8 training images in batches of 4: not "1 epochs"
    assert main(["evaluate", str(out), "--json"]) == 0
    alone = capsys.readouterr()
    assert main(["evaluate", str(out), "--json", "--data-dir", str(folder)]) == 0
    assert json.loads(alone.out) == json.loads(capsys.readouterr().out)
    assert f"testing on the folder {out} trained on, {folder.resolve()}" in alone.err
    page = report_html([out], device="cpu", mistakes=0)
    assert f"the test images were read from {folder.resolve()}" in page
    folder.rename(tmp_path / "moved")  # gone from where it was: said so, and the flag is needed again
    assert main(["evaluate", str(out)]) == 2
    assert f"trained on the image folder {folder.resolve()}, which is gone: give its new place with --data-dir" \
        in capsys.readouterr().err


def test_cli_resume_of_a_folder_run_with_its_augmentation_changed_is_refused(tmp_path, capsys):
    """A folder run records its augmentation (since 2026-12-06); only the runs saved before, which
    recorded None, resume unchecked. The reference: what the run was started with (augmented, the
    default) against --no-augment."""
    from resnet_lab.cli import main

    folder = _png_folder(tmp_path / "imgs", seed=0)
    common = ["--model", "resnet8", "--dataset", "folder", "--data-dir", str(folder), "--epochs", "2", "--batch-size",
              "4", "--workers", "0", "--val-fraction", "0.25", "--no-progress", "--out", str(tmp_path / "run")]
    assert main(["train", *common, "--stop-after", "1"]) == 0
    capsys.readouterr()
    assert main(["train", *common, "--no-augment", "--resume"]) == 2
    err = capsys.readouterr().err
    assert "data augment: run has True, now False" in err and "no --no-augment" in err, err


def test_the_folder_fingerprint_is_taken_only_for_a_run_directory(tmp_path):
    """It reads 4 KiB of every image; without --out there is nothing to resume, so it is not taken."""
    from resnet_lab.data import DataConfig, load_data
    from resnet_lab.train.checkpoint import run_facts

    data = load_data(DataConfig("folder", data_dir=str(_png_folder(tmp_path / "imgs", seed=0)), batch_size=4,
                                val_fraction=0.25, num_workers=0))
    assert run_facts(TrainConfig(out=None), data, 1)["data"]["files"] is None
    assert len(run_facts(TrainConfig(out=str(tmp_path / "run")), data, 1)["data"]["files"]) == 16


# Every TrainConfig field that shapes the trajectory, with another value for it. The README lists what
# a resume may change instead ("--device, --bf16/--fp16, --channels-last, --compile, --checkpoint-segments,
# --deterministic") and the rest only says where and how the run is written or stopped.
_MAY_CHANGE = {"device", "bf16", "fp16", "channels_last", "compile", "checkpoint_segments", "deterministic",
               "out", "resume", "progress", "plots", "tensorboard", "stop_after"}
_OTHER_VALUE = {
    "epochs": {"epochs": 4}, "lr": {"lr": 0.01}, "optimizer": {"optimizer": "adamw"}, "momentum": {"momentum": 0.5},
    "nesterov": {"nesterov": False}, "weight_decay": {"weight_decay": 0.0}, "schedule": {"schedule": "cosine"},
    "warmup_epochs": {"warmup_epochs": 0.5}, "label_smoothing": {"label_smoothing": 0.1},
    "grad_clip": {"grad_clip": 1.0}, "seed": {"seed": 1}, "lr_scale": {"lr_scale": {"fc": 2.0}},
    "max_steps_per_epoch": {"max_steps_per_epoch": 3}, "ema": {"ema": 0.9}, "lookahead": {"lookahead": 2},
    "lookahead_alpha": {"lookahead": 2, "lookahead_alpha": 0.8}, "norm_lr_scale": {"norm_lr_scale": 2.0},
    "progressive_resize": {"progressive_resize": 4}, "mixup": {"mixup": 0.2}, "cutmix": {"cutmix": 1.0},
    "sam": {"sam": 0.05}, "eval_every": {"eval_every": 2},
}


def test_a_resume_that_changes_any_field_of_the_recipe_is_refused_naming_it_and_its_flag(tmp_path, capsys):
    """README: "--resume continues the run with exactly the settings it was started with"; only the
    arithmetic's settings may change. label_smoothing, grad_clip, seed, lr_scale and
    max_steps_per_epoch were compared by no test: a resume with another of them would have trained on
    silently. The way back names the run's value with the field's flag wherever `train` has one."""
    from resnet_lab.cli import build_parser  # deferred: only this test reads the CLI's flags

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(_OTHER_VALUE) == fields - _MAY_CHANGE  # a new field: decide which side it is on
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    train_help = capsys.readouterr().out
    out = tmp_path / "run"
    _interrupted(out, epochs=3)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    saved = TrainConfig(**{"epochs": 3, "lr": 0.05})
    for field, change in _OTHER_VALUE.items():
        with pytest.raises(ValueError, match="cannot resume") as e:
            _run(out, resume=True, **{"epochs": 3, **change})
        assert f"recipe {field}: run has {getattr(saved, field)!r}, now {change[field]!r}" in str(e.value), field
        flag = "--" + field.replace("_", "-")
        if f"{flag} " in train_help and getattr(saved, field) is not None:
            assert f"{flag} {getattr(saved, field)}" in str(e.value), field
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing rewritten
    assert not _run(out, epochs=3, resume=True).interrupted  # and the run's own recipe resumes


def test_a_refused_resume_of_a_folder_run_warm_restarts_with_its_data_dir(tmp_path):
    """The warm restart a refusal offers is a command to run: for an image-folder run it needs
    --data-dir (finetune --dataset folder is refused without it), as README's folder example has it."""
    bundle = make_bundle()
    bundle.info.name, bundle.info.source = "folder", str(tmp_path)  # the facts of an image-folder run
    out = tmp_path / "run"
    _run(out, epochs=2, bundle=bundle, stop_after=1)
    with pytest.raises(ValueError, match="cannot resume") as e:
        _run(out, epochs=3, bundle=bundle, resume=True)
    assert f"finetune --from {out} --strategy all --dataset folder --data-dir DIR --epochs N" in str(e.value)


def test_a_checkpoint_set_whose_files_name_other_steps_of_one_epoch_is_refused_as_inconsistent(tmp_path):
    """model.json and train_state.pt at the same epoch but another step (an older resnet-lab killed
    between the two writes of a mid-epoch save) are not one checkpoint: refused naming both positions,
    as for different epochs, and nothing is written."""
    out = tmp_path / "run"
    torch.manual_seed(0)

    def stop(info):
        if info["epoch"] == 1 and info["step"] == 3:
            raise KeyboardInterrupt

    assert train(TinyNet(), make_bundle(), _cfg(out), step_callbacks=[stop], log=_quiet).interrupted
    meta = json.loads((out / "model.json").read_text())
    assert (meta["epoch"], meta["step"]) == (0, 3)  # the reference: where the run stopped
    (out / "model.json").write_text(json.dumps({**meta, "step": 0}))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match=rf"{out} is inconsistent: model.json is at epoch 0 step 0 but "
                                         rf"train_state.pt at epoch 0 step 3"):
        _run(out, resume=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_resumed_run_carries_on_with_the_gradient_scalers_scale(tmp_path, monkeypatch):
    """fp16 runs on CUDA only; the scaler's save and restore is the same on any device, so an
    enabled CPU scaler stands in for it (growing every 2 steps: its scale says how many steps it
    has seen). A stop and a resume must end where the straight run ends, scale included."""
    real = torch.amp.GradScaler

    def enabled(device, enabled=False, **_):  # what train() builds, switched on
        return real(device, init_scale=2.0 ** 4, growth_interval=2, enabled=True)

    monkeypatch.setattr(torch.amp, "GradScaler", enabled)
    straight, paused = tmp_path / "straight", tmp_path / "paused"
    _run(straight, epochs=2)
    _run(paused, epochs=2, stop_after=1)
    _run(paused, epochs=2, resume=True)
    scales = [torch.load(run / "train_state.pt", weights_only=True)["scaler"]["scale"] for run in (straight, paused)]
    steps = 2 * 96 // 16  # two epochs of make_bundle's 96 images in batches of 16, no overflow at this scale
    assert scales[0] == scales[1] == 2.0 ** (4 + steps // 2)


@pytest.mark.parametrize("n_bad, named", [(3, "0.weight, 1.weight, 2.weight;"),
                                          (4, "0.weight, 1.weight, 2.weight and 1 more;")])
def test_a_divergence_names_at_most_three_non_finite_tensors_and_counts_the_rest(n_bad, named):
    """The documented message (_check_finite): three names, then "and N more" for the others."""
    from resnet_lab.train.loop import _check_finite

    model = torch.nn.Sequential(*[torch.nn.Linear(1, 1, bias=False) for _ in range(5)])
    with torch.no_grad():
        for layer in model[:n_bad]:
            layer.weight.fill_(float("nan"))
    scheduler = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(model.parameters(), lr=0.1), lambda s: 1.0)
    with pytest.raises(TrainingDiverged, match=f"stayed finite but non-finite values in {named}"):
        _check_finite(model, 1.0, 0, scheduler, None, "Lower --lr.")
