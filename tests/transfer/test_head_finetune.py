"""The stacked head against torchvision's model, and `resnet-lab finetune` end to end."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
import torch.nn.functional as F

from resnet_lab import create_model
from resnet_lab.cli import main
from resnet_lab.runs import save_model
from resnet_lab.train import load_model
from resnet_lab.transfer import load_source, transfer_model
from support import randomize_bn


def test_head_output_is_the_new_linear_applied_to_the_unchanged_source_logits(tv_resnet18):
    tv, path = tv_resnet18
    model, plan = transfer_model(load_source(file=path, model="resnet18"), "head", num_classes=3)
    model.eval()
    assert plan.head == {"module": "fc", "num_classes": 3, "old_classes": 10}
    assert plan.trainable == 10 * 3 + 3  # only the new Linear(10 -> 3)
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"fc.head_weight", "fc.head_bias"}
    # Existing keys keep their names; the new layer adds two.
    assert set(model.state_dict()) == set(tv.state_dict()) | {"fc.head_weight", "fc.head_bias"}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        want = F.linear(tv(x), model.fc.head_weight, model.fc.head_bias)
        assert torch.allclose(model(x), want, atol=1e-5)


def test_finetune_cli_head_run_records_counts_and_loads_back_through_load_model(resnet8_run, tmp_path, capsys):
    out = tmp_path / "ft"
    code = main(["finetune", "--from", str(resnet8_run), "--strategy", "head", "--dataset", "fake",
                 "--epochs", "1", "--batch-size", "32", "--subset", "64", "--no-progress", "--device", "cpu", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr()
    assert "note: input size 6 px from the weights" in printed.err  # a note: stderr
    assert "summed" not in printed.out + printed.err
    meta = json.loads((out / "model.json").read_text())
    # fake data are RGB: the 1-channel weights were repeated over 3 channels, the mean/std too.
    assert meta["input_size"] == [3, 6, 6] and meta["mean"] == [0.25, 0.25, 0.25] and meta["std"] == [0.5] * 3
    assert meta["transfer"]["strategy"] == "head" and meta["transfer"]["head"]["num_classes"] == 10
    # Frozen: the whole 5-class source resnet8, its conv1 now seeing 3 channels: resnet8 has 75,290
    # parameters for 10 classes on RGB (counted by hand from He et al.'s CIFAR design), 5 * (64 + 1)
    # fewer for 5 classes. Trainable: the stacked Linear(5 -> 10).
    assert meta["params"] == {"trainable": 5 * 10 + 10, "frozen": 75_290 - 5 * (64 + 1)}
    model, _ = load_model(out)
    source, _ = load_model(resnet8_run)
    x = torch.randn(4, 3, 6, 6)
    with torch.no_grad():
        # The source on the gray-equivalent image (the channel sum / 3 == the repeated 1-channel
        # kernel applied to x), then the stacked Linear read back from the file.
        want = F.linear(source(x.mean(1, keepdim=True)), model.fc.head_weight, model.fc.head_bias)
        assert torch.allclose(model(x), want, atol=1e-4)


def test_finetune_all_with_freeze_epochs_trains_the_head_first_then_everything(resnet8_run, tmp_path):
    out = tmp_path / "all"
    code = main(["finetune", "--from", str(resnet8_run), "--strategy", "all", "--freeze-epochs", "1",
                 "--backbone-lr-scale", "0.1", "--dataset", "fake", "--image-size", "8", "--epochs", "1",
                 "--batch-size", "32", "--subset", "64", "--no-progress", "--device", "cpu", "--out", str(out)])
    assert code == 0
    phase = json.loads((out / "freeze_phase" / "model.json").read_text())
    main_meta = json.loads((out / "model.json").read_text())
    n = sum(p.numel() for p in load_model(out)[0].parameters())
    assert phase["params"] == {"trainable": 64 * 10 + 10, "frozen": n - 650}
    assert main_meta["params"] == {"trainable": n, "frozen": 0}
    assert main_meta["transfer"]["lr_scale"] == {"": 0.1, "fc.": 1.0}
    src = load_model(resnet8_run)[0].state_dict()
    phase_state = load_model(out / "freeze_phase")[0].state_dict()
    # the frozen phase trained the classifier alone: every other tensor, BN statistics included, is the
    # source's (conv1 aside: it was adapted to the fake data's 3 channels)
    frozen = [k for k in src if not k.startswith("fc.") and k != "conv1.weight"]
    assert any(k.endswith("running_mean") for k in frozen)
    for k in frozen:
        assert torch.equal(phase_state[k], src[k]), f"{k} changed in the frozen phase"
    assert not torch.equal(load_model(out)[0].state_dict()["layer1.0.conv1.weight"], src["layer1.0.conv1.weight"])


def test_finetune_rejects_options_of_another_strategy(resnet8_run, capsys):
    code = main(["finetune", "--from", str(resnet8_run), "--strategy", "head", "--unfreeze-from", "layer3",
                 "--dataset", "fake"])
    assert code == 2 and "--unfreeze-from applies to --strategy last" in capsys.readouterr().err


FT = ["--dataset", "fake", "--image-size", "8", "--batch-size", "32", "--subset", "64", "--no-progress", "--no-plots",
      "--device", "cpu"]


def _ctrl_c_at_step(n: int):
    """A step callback that stops the run as Ctrl-C does at its ``n``-th optimizer step (1-based)."""
    steps = []

    def stop(record):
        steps.append(record)
        if len(steps) == n:
            raise KeyboardInterrupt

    return stop


def _epochs(run) -> list[int]:
    return [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_stop_after_pauses_the_main_phase_and_the_frozen_phase_runs_whole(resnet8_run, tmp_path, capsys):
    """--stop-after counts epochs of --epochs (the main phase); it used to cut the frozen phase
    short and let the main phase start at once, and the resume then skipped the rest of it."""
    out = tmp_path / "ft"
    args = ["finetune", "--from", str(resnet8_run), "--strategy", "all", "--freeze-epochs", "2", "--epochs", "3",
            *FT, "--out", str(out)]
    assert main([*args, "--stop-after", "1"]) == 0
    assert "paused after epoch 1 of 3" in capsys.readouterr().out
    assert _epochs(out / "freeze_phase") == [1, 2] and _epochs(out) == [1]
    assert main([*args, "--resume"]) == 0
    assert _epochs(out / "freeze_phase") == [1, 2] and _epochs(out) == [1, 2, 3]


def test_warmup_and_progressive_resize_longer_than_the_frozen_phase_belong_to_the_main_phase(resnet8_run, tmp_path):
    out = tmp_path / "ft"
    assert main(["finetune", "--from", str(resnet8_run), "--strategy", "all", "--freeze-epochs", "1", "--epochs", "3",
                 "--warmup-epochs", "2", "--progressive-resize", "6", *FT, "--out", str(out)]) == 0
    phase = json.loads((out / "freeze_phase" / "model.json").read_text())["train_config"]
    main_phase = json.loads((out / "model.json").read_text())["train_config"]
    assert (phase["epochs"], phase["warmup_epochs"], phase["progressive_resize"]) == (1, 0, None)
    assert (main_phase["epochs"], main_phase["warmup_epochs"], main_phase["progressive_resize"]) == (3, 2, 6)


def test_resume_with_another_strategy_is_one_line_and_changes_nothing(resnet8_run, tmp_path, capsys):
    out = tmp_path / "ft"
    args = ["finetune", "--from", str(resnet8_run), "--epochs", "2", *FT, "--out", str(out)]
    assert main([*args, "--strategy", "last", "--stop-after", "1"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert main([*args, "--strategy", "all", "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "strategy 'last', not 'all'" in err and "resume with the command the run was started with" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_resume_from_other_weights_is_one_line_and_the_same_file_by_another_path_resumes(resnet8_run, tmp_path,
                                                                                        capsys, monkeypatch):
    out = tmp_path / "ft"
    args = ["finetune", "--epochs", "2", "--strategy", "last", *FT, "--out", str(out)]
    assert main([*args, "--from", str(resnet8_run), "--stop-after", "1"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    meta = {"classes": [f"old{i}" for i in range(5)], "input_size": [1, 6, 6], "mean": [0.25], "std": [0.5],
            "dataset": "tiny"}
    twin, wide = tmp_path / "twin", tmp_path / "wide"
    # the same architecture with other weights (would load, and mix two transfers in one run), and
    # another architecture (its state dict would not even load)
    save_model(twin, randomize_bn(create_model("resnet8", num_classes=5, in_channels=1), seed=2), meta)
    save_model(wide, randomize_bn(create_model("resnet20", num_classes=5, in_channels=1), seed=2), meta)
    for other in (twin, wide):
        capsys.readouterr()
        assert main([*args, "--from", str(other), "--resume"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err and "state_dict" not in err, err
        assert err == (f"error: {out} was fine-tuned from {resnet8_run / 'model.safetensors'}, not "
                       f"{other / 'model.safetensors'} (--from); resume with the command the run was started with")
        assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    monkeypatch.chdir(resnet8_run.parent)  # the source by a relative path: the same file, so it resumes
    assert main([*args, "--from", resnet8_run.name, "--resume"]) == 0
    assert json.loads((out / "model.json").read_text())["epoch"] == 2


def test_a_frozen_phase_saved_with_the_main_phases_warmup_resumes_with_it(resnet8_run, tmp_path, monkeypatch):
    """Earlier versions gave the frozen phase the main phase's --warmup-epochs; such a phase,
    interrupted, must resume with the value it was saved with, not be refused for a new one."""
    import importlib

    from trainspy import TrainSpy

    ft = importlib.import_module("resnet_lab.transfer.finetune")
    out = tmp_path / "ft"
    args = ["finetune", "--from", str(resnet8_run), "--strategy", "all", "--freeze-epochs", "2", "--epochs", "2",
            "--warmup-epochs", "1", *FT, "--out", str(out)]
    real_replace = ft.dataclasses.replace

    def as_before(config, **changes):  # the earlier version: the frozen phase inherits the warmup
        if changes.get("stop_after", 0) is None:  # only the frozen phase's replace sets stop_after=None
            changes.pop("warmup_epochs")
        return real_replace(config, **changes)

    with monkeypatch.context() as m:
        m.setattr(ft.dataclasses, "replace", as_before)
        TrainSpy(m, step_callbacks=(_ctrl_c_at_step(3),))  # 2 steps per epoch: frozen epoch 2, step 1
        assert main(args) == 130
    assert json.loads((out / "freeze_phase" / "model.json").read_text())["train_config"]["warmup_epochs"] == 1.0
    assert main([*args, "--resume"]) == 0
    assert _epochs(out / "freeze_phase") == [1, 2] and _epochs(out) == [1, 2]


def test_a_resume_after_the_frozen_phase_finished_goes_on_without_a_warm_restart_note(resnet8_run, tmp_path, capsys):
    args = ["finetune", "--from", str(resnet8_run), "--strategy", "all", "--freeze-epochs", "1", "--epochs", "2",
            "--deterministic", *FT]
    assert main([*args, "--out", str(tmp_path / "whole")]) == 0
    cut = tmp_path / "cut"  # stopped between the phases: the frozen one done, nothing of the main one saved
    assert main([*args, "--out", str(cut)]) == 0
    for p in cut.iterdir():
        if p.is_file():
            p.unlink()
    capsys.readouterr()
    assert main([*args, "--out", str(cut), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "already finished" not in out and "warm-restart" not in out, out
    whole, resumed = (json.loads((d / "metrics.jsonl").read_text().splitlines()[-1]) for d in (tmp_path / "whole", cut))
    assert {k: resumed[k] for k in ("epoch", "train_loss", "test_loss", "test_acc")} == \
        {k: whole[k] for k in ("epoch", "train_loss", "test_loss", "test_acc")}


def test_a_resume_in_the_frozen_phase_refuses_another_source_or_main_phase_and_names_the_flag(resnet8_run, tmp_path,
                                                                                               capsys, monkeypatch):
    """Interrupted in the frozen phase, nothing of the main phase is saved yet: another --from, or
    another main-phase --epochs / --backbone-lr-scale / --warmup-epochs, used to be taken silently
    (and model.json named the wrong source); another --freeze-epochs was refused naming --epochs."""
    from trainspy import TrainSpy

    out = tmp_path / "ft"
    args = ["finetune", "--strategy", "all", "--freeze-epochs", "2", "--epochs", "2", *FT, "--out", str(out)]
    with monkeypatch.context() as m:
        TrainSpy(m, step_callbacks=(_ctrl_c_at_step(3),))  # 2 steps per epoch: frozen epoch 2, step 1
        assert main([*args, "--from", str(resnet8_run)]) == 130
    meta = {"classes": [f"old{i}" for i in range(5)], "input_size": [1, 6, 6], "mean": [0.25], "std": [0.5],
            "dataset": "tiny"}
    twin = tmp_path / "twin"
    save_model(twin, randomize_bn(create_model("resnet8", num_classes=5, in_channels=1), seed=2), meta)
    before = {p.name: p.read_bytes() for p in (out / "freeze_phase").iterdir() if p.is_file()}
    refusals = {
        (f"--from={twin}",): f"was fine-tuned from {resnet8_run / 'model.safetensors'}, not {twin / 'model.safetensors'}",
        ("--epochs", "3"): "was started with --epochs 2 for its main phase, not 3;",
        ("--backbone-lr-scale", "0.5"): "was started with --backbone-lr-scale (not given) for its main phase, not 0.5;",
        ("--warmup-epochs", "1"): "was started with --warmup-epochs 0 for its main phase, not 1;",
        ("--freeze-epochs", "1"): f"{out} was fine-tuned with --freeze-epochs 2, not 1;",
    }
    for extra, message in refusals.items():
        source = [] if extra[0].startswith("--from") else ["--from", str(resnet8_run)]
        given = list(args)
        if extra[0] in given:  # another value of a flag of the command (a flag given twice is refused)
            given[given.index(extra[0]) + 1], extra = extra[1], ()
        capsys.readouterr()
        assert main([*given, *source, *extra, "--resume"]) == 2, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err and "resume with the command the run was started" in err, err
        assert {p.name: p.read_bytes() for p in (out / "freeze_phase").iterdir() if p.is_file()} == before
        assert not (out / "train_state.pt").exists()
    assert main([*args, "--from", str(resnet8_run), "--resume"]) == 0
    assert _epochs(out / "freeze_phase") == [1, 2] and _epochs(out) == [1, 2]
    assert json.loads((out / "model.json").read_text())["transfer"]["source"] == str(resnet8_run / "model.safetensors")


def test_a_frozen_phase_in_the_way_is_named_when_freeze_epochs_is_left_out(resnet8_run, tmp_path, monkeypatch, capsys):
    """Interrupted in its frozen phase, a run resumed without --freeze-epochs was "nothing to
    resume"; started again without --resume, it trained a main phase beside the orphaned frozen one."""
    from trainspy import TrainSpy

    out = tmp_path / "ft"
    args = ["finetune", "--from", str(resnet8_run), "--strategy", "all", "--epochs", "2", *FT, "--out", str(out)]
    with monkeypatch.context() as m:
        TrainSpy(m, step_callbacks=(_ctrl_c_at_step(1),))
        assert main([*args, "--freeze-epochs", "2"]) == 130
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {out} was started with a frozen phase ({out / 'freeze_phase'}) that has not handed over "
                   "to the main one: resume with --freeze-epochs 2\n")
    assert main(args) == 2
    assert f"holds the frozen phase of an earlier finetune ({out / 'freeze_phase'}): resume it with the same " \
           "command, --freeze-epochs 2 and --resume" in capsys.readouterr().err
    assert not (out / "model.json").exists()  # no main phase was started beside it
    assert main([*args, "--freeze-epochs", "2", "--resume"]) == 0
    assert _epochs(out / "freeze_phase") == [1, 2] and _epochs(out) == [1, 2]


def test_a_resume_in_the_main_phase_keeps_the_freeze_epochs_it_was_started_with(resnet8_run, tmp_path, capsys):
    """Once the main phase had begun, another --freeze-epochs was accepted without a word, and the
    top-level model.json did not say how long the frozen phase had been."""
    out = tmp_path / "ft"
    args = ["finetune", "--from", str(resnet8_run), "--strategy", "all", "--epochs", "3", *FT, "--out", str(out)]
    assert main([*args, "--freeze-epochs", "1", "--stop-after", "1"]) == 0
    assert json.loads((out / "model.json").read_text())["transfer"]["freeze_epochs"] == 1
    capsys.readouterr()
    assert main([*args, "--freeze-epochs", "2", "--resume"]) == 2
    assert "was fine-tuned with --freeze-epochs 1, not 2; resume with the command" in capsys.readouterr().err
    assert main([*args, "--freeze-epochs", "1", "--resume"]) == 0
    assert _epochs(out) == [1, 2, 3]


@pytest.mark.parametrize("hard", [False, True], ids=["ctrl-c", "second-ctrl-c"])
def test_a_stop_at_the_end_of_the_frozen_phase_says_to_resume_not_that_the_run_is_complete(
        resnet8_run, tmp_path, capsys, monkeypatch, hard):
    """A Ctrl-C while the frozen phase drew its last plots was told "the run is complete" (the phase
    was, the fine-tune's main phase had not begun); --resume then trained the main phase."""
    ft = importlib.import_module("resnet_lab.transfer.finetune")
    from resnet_lab.train import loop

    from resnet_lab.train.checkpoint import Checkpointer

    def stop_after_the_frozen_phase(record):  # after its last epoch is saved, as Ctrl-C in its plots
        raise KeyboardInterrupt

    real, real_end = ft.train, Checkpointer.end_epoch

    def train(model, data, config, **kwargs):
        frozen = config.out and config.out.endswith("freeze_phase")
        return real(model, data, config, callbacks=[stop_after_the_frozen_phase] if frozen else (), **kwargs)

    def end_epoch(self, history, confusion, *, improved):  # a second Ctrl-C in the plots, after the save
        real_end(self, history, confusion, improved=improved)
        if self.run_dir.name == "freeze_phase":
            raise loop._HardStop("signal 2")

    out = tmp_path / "ft"
    args = ["finetune", "--from", str(resnet8_run), "--strategy", "all", "--freeze-epochs", "1", "--epochs", "2",
            *FT, "--out", str(out)]
    with monkeypatch.context() as m:
        if hard:
            m.setattr(Checkpointer, "end_epoch", end_epoch)
        else:
            m.setattr(ft, "train", train)
        assert main(args) == 130
    said = capsys.readouterr()
    told = said.out + said.err
    assert ("after epoch 1 was saved" if hard else "interrupted after epoch 1 of 1") in told, told
    assert "the run is complete" not in told and "resume with the same command and --resume" in told, told
    assert main([*args, "--resume"]) == 0
    assert _epochs(out / "freeze_phase") == [1] and _epochs(out) == [1, 2]
