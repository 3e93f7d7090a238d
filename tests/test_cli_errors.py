"""Every fault a user can cause ends in one line on stderr that names the file and the way out,
exit code 2, never a traceback; and it loses nothing that was saved before."""

from __future__ import annotations

import argparse
import errno
import json
import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image

from resnet_lab import DataConfig, TrainConfig, cli, create_model, load_data, train
from resnet_lab.data.config import check_data_dir
from resnet_lab.cli import _parse, build_parser, main
from resnet_lab import runs as ckpt

from support import TINY_TRAIN, tiny_trained_run, write_fmnist

TRAIN = TINY_TRAIN


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_trained_run(tmp_path_factory.mktemp("cli_errors"), epochs=2)


def _one_line_error(capsys, must_name: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert must_name in err, err
    return err


def _commands(run, image, out):
    return {
        "evaluate": ["evaluate", str(run)],
        "evaluate --best": ["evaluate", str(run), "--best"],
        "predict": ["predict", str(run), str(image)],
        "export": ["export", str(run), "--out", str(out / "m.onnx")],
        "export --fuse-bn": ["export", str(run), "--fuse-bn", "--out", str(out / "m.onnx")],
        "finetune --from": ["finetune", "--from", str(run), "--strategy", "last", *TRAIN[2:], "--epochs", "1",
                            "--out", str(out / "ft")],
        "train --resume": ["train", *TRAIN, "--epochs", "2", "--out", str(run), "--resume"],
    }


@pytest.mark.parametrize("command", list(_commands("r", "i", Path("o"))))
@pytest.mark.parametrize("content", [b"", b"\x13" * 200], ids=["empty", "random"])
def test_a_corrupt_weights_file_is_one_line_naming_it_for_every_command_that_reads_one(
        trained, tmp_path, capsys, command, content):
    src, image = trained
    run = tmp_path / "run"
    shutil.copytree(src, run)
    which = "best.safetensors" if command == "evaluate --best" else "model.safetensors"
    (run / which).write_bytes(content)
    args = _commands(run, image, tmp_path)[command]
    assert main(args) == 2
    _one_line_error(capsys, which)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04garbage"], ids=["empty", "random"])
def test_a_corrupt_train_state_on_resume_is_one_line_naming_it(trained, tmp_path, capsys, content):
    src, _ = trained
    run = tmp_path / "run"
    shutil.copytree(src, run)
    (run / "train_state.pt").write_bytes(content)
    assert main(["train", *TRAIN, "--epochs", "2", "--out", str(run), "--resume"]) == 2
    _one_line_error(capsys, "train_state.pt")


def test_an_out_path_below_a_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", *TRAIN, "--epochs", "1", "--out", str(blocker / "run")]) == 2
    _one_line_error(capsys, str(blocker))


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(trained, tmp_path, capsys,
                                                                               monkeypatch):
    src, _ = trained
    run = tmp_path / "run"
    assert main(["train", *TRAIN, "--epochs", "1", "--out", str(run)]) == 0
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.suffix in (".safetensors", ".pt", ".json")}

    def full(state, path, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device", path)

    monkeypatch.setattr(ckpt, "save_file", full)
    shutil.rmtree(run)
    assert main(["train", *TRAIN, "--epochs", "1", "--out", str(run)]) == 2
    err = _one_line_error(capsys, "No space left on device")
    assert "free some disk space" in err
    assert not (run / "train_state.pt").exists()  # nothing half-written was left as a run
    assert before  # the first run saved a full set


def test_export_onto_a_directory_is_one_line_with_a_file_name_to_use(trained, tmp_path, capsys):
    run, _ = trained
    assert main(["export", str(run), "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, "is a directory")


def test_an_unexpected_exception_is_still_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    import resnet_lab.cli as cli

    def boom(args):
        raise KeyError("surprise")

    monkeypatch.setitem(cli.COMMANDS, "models", boom)
    assert main(["models"]) == 3
    _one_line_error(capsys, "RESNET_LAB_DEBUG")
    monkeypatch.setenv("RESNET_LAB_DEBUG", "1")
    assert main(["models"]) == 3  # the documented status, the traceback shown too
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "KeyError: 'surprise'" in err
    for off in ("0", "false", "", "no", "off", " Off "):  # "0" turned tracebacks on
        monkeypatch.setenv("RESNET_LAB_DEBUG", off)
        assert main(["models"]) == 3
        assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, message", [
    ("--grad-clip", "-1", "grad_clip"),
    ("--weight-decay", "-0.1", "weight_decay"),
    ("--lr", "inf", "lr (--lr) must be a finite number"),
    ("--batch-size", "1", "batch size 1"),
    ("--lookahead-alpha", "0.8", "--lookahead-alpha 0.8 only acts with lookahead on"),
    ("--lookahead-alpha", "0.5", "--lookahead-alpha 0.5 only acts with lookahead on"),  # its default value, too
])
def test_values_that_would_corrupt_training_are_refused_before_anything_is_written(tmp_path, capsys, flag, value,
                                                                                  message):
    out = tmp_path / "run"
    args = [a for a in TRAIN]
    if flag == "--batch-size":
        args[args.index("--batch-size") + 1] = value
    else:
        args += [flag, value]
    assert main(["train", *args, "--epochs", "1", "--out", str(out)]) == 2
    _one_line_error(capsys, message)
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize("flags, message, saved", [  # saved: what the run was built with (TRAIN: resnet8, a CIFAR
    # family, small-input by construction; norm and zero_init_residual at create_model's defaults, batch and False)
    (["--model", "resnet20"], "--model resnet20 differs from the run in", "(name: resnet8)"),
    (["--norm", "group"], "--norm group differs from the run in", "(norm: batch)"),
    (["--small-input", "no"], "--small-input no differs from the run in", "(small_input: True)"),
    (["--zero-init-residual"], "--zero-init-residual differs from the run in", "(zero_init_residual: False)"),
])
def test_resume_refuses_model_flags_that_differ_from_the_run_instead_of_ignoring_them(trained, tmp_path, capsys,
                                                                                     flags, message, saved):
    """--resume rebuilds the model from model.json; a model flag that disagrees would be silently dropped."""
    src, _ = trained
    run = tmp_path / "run"
    shutil.copytree(src, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    args = [a for a in TRAIN]
    for flag, value in zip(flags[::2], flags[1::2] + [None]):
        if flag in args:
            args[args.index(flag) + 1] = value
        else:
            args += [flag] + ([value] if value is not None else [])
    assert main(["train", *args, "--epochs", "2", "--out", str(run), "--resume"]) == 2
    err = _one_line_error(capsys, f"{message} {run} {saved}; ")
    assert "resume with the command the run was started with" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    if flags[0] != "--model":  # the way out for a flag model.json settles (an old plain-VGG run's --norm batch:
        # review of 2026-12-06, "resume with the command ..." was that very command): leaving it out resumes
        assert err.endswith(f", or leave {flags[0]} out")
        assert main(["train", *TRAIN, "--epochs", "2", "--out", str(run), "--resume"]) == 0



def test_resume_with_the_model_flags_the_run_was_started_with_continues(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TRAIN, "--epochs", "2", "--stop-after", "1", "--out", str(run)]) == 0
    assert main(["train", *TRAIN, "--norm", "batch", "--small-input", "yes", "--epochs", "2", "--out", str(run),
                 "--resume"]) == 0
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_resume_loads_the_data_with_the_channels_the_run_was_built_for(tmp_path, capsys):
    """A run the Python API started on one-channel fake images (the dataset's own are RGB) goes on from the
    CLI: --resume rebuilds the model from model.json and loads the images with its in_channels."""
    run = tmp_path / "run"
    argv = ["--model", "resnet8", "--dataset", "fake", "--image-size", "8", "--subset", "32", "--batch-size", "16"]
    data = load_data("fake", image_size=8, subset=32, batch_size=16, in_channels=1, device="cpu")
    model = create_model("resnet8", num_classes=len(data.info.classes), in_channels=1)
    train(model, data, TrainConfig(epochs=2, stop_after=1, out=str(run), progress=False, plots=False, device="cpu"))
    assert main(["train", *argv, "--epochs", "2", "--out", str(run), "--resume", "--no-progress"]) == 0, \
        capsys.readouterr().err
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


@pytest.mark.parametrize("argv, message", [
    (["train", "--model", "resnet8", "--small-input", "no"], "resnet8 has one stem, made for 28-32 px images (not the "
                                                            "ImageNet 7x7 stride-2 stem), so --small-input no would"),
    (["summary", "resnet8_fast", "--small-input", "no"], "resnet8_fast has one stem, made for 28-32 px images"),
    (["train", "--model", "vgg11", "--norm", "batch"], "vgg11 has no normalization layers, so --norm batch"),
    (["train", "--model", "vgg11", "--norm", "group"], "vgg11 has no normalization layers, so norm='group' (--norm "
                                                       "group) would change nothing: use vgg11_bn"),
    (["lr-find", "--model", "vgg13", "--norm", "scratch"], "vgg13 has no normalization layers"),
    (["summary", "vgg11", "--norm", "group"], "use vgg11_bn"),
    (["train", "--model", "plain20", "--zero-init-residual"],
     "--zero-init-residual: plain20 has no residual branches; leave it out"),
    (["train", "--model", "densenet40", "--zero-init-residual"], "--zero-init-residual: densenet40 has no residual"),
    (["train", "--model", "vgg11_bn", "--zero-init-residual"], "--zero-init-residual: vgg11_bn has no residual"),
    (["lr-find", "--model", "googlenet", "--zero-init-residual"], "--zero-init-residual: googlenet has no residual"),
])
def test_model_flags_the_model_would_ignore_are_refused(tmp_path, capsys, argv, message):
    data = {"train": ["--dataset", "fake", "--image-size", "16", "--subset", "32", "--batch-size", "16", "--no-progress"],
            "lr-find": ["--dataset", "fake", "--image-size", "16"], "summary": []}[argv[0]]
    out = ["--out", str(tmp_path / "out")] if argv[0] == "train" else []
    assert main([*argv, *data, *out]) == 2
    _one_line_error(capsys, message)
    assert not (tmp_path / "out").exists()


def test_norm_none_on_a_plain_vgg_names_what_it_is_and_builds_the_same_model(capsys):
    # accepted as small_input=True is on a CIFAR family: the value that names what is built
    assert main(["summary", "vgg11", "--input-size", "3", "32", "32", "--json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["summary", "vgg11", "--input-size", "3", "32", "32", "--json", "--norm", "none"]) == 0
    assert json.loads(capsys.readouterr().out) == plain


def test_best_on_a_weights_file_is_refused_not_ignored(trained, capsys):
    run, _ = trained
    assert main(["evaluate", str(run / "model.safetensors"), "--best"]) == 2
    _one_line_error(capsys, "is a weights file, so there is no best.safetensors to choose (--best)")
    assert main(["evaluate", str(run / "model.safetensors")]) == 0  # the file alone is fine
    assert main(["evaluate", str(run), "--best"]) == 0  # and --best in a run directory


def test_best_of_a_run_not_evaluated_yet_says_so_and_the_way_out(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TRAIN, "--epochs", "3", "--stop-after", "1", "--out", str(run)]) == 0
    (run / "best.safetensors").unlink()  # as a run interrupted before its first evaluation is
    capsys.readouterr()
    assert main(["evaluate", str(run), "--best"]) == 2
    _one_line_error(capsys, f"{run} has no best.safetensors yet: no epoch of it was evaluated (it stopped before the "
                            "first evaluation); drop --best for its last epoch, or train on with --resume")
    assert main(["evaluate", str(run)]) == 0
    assert "is unfinished: it stopped after epoch 1 of 3" in capsys.readouterr().err  # a note, after the figures
    (run / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")  # no weights at all: the old question
    assert main(["evaluate", str(run), "--best"]) == 2
    _one_line_error(capsys, f"{run} has no best.safetensors: is it a resnet-lab run directory?")


def test_predict_onnx_refuses_a_device_it_would_not_use(trained, tmp_path, capsys):
    run, image = trained
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", str(run), "--out", str(onnx_file)]) == 0
    capsys.readouterr()
    assert main(["predict", "--onnx", str(onnx_file), str(image), "--device", "cuda:7"]) == 2
    _one_line_error(capsys, "--onnx runs on onnxruntime's CPU provider, not --device cuda:7")
    for device in ("cpu", "auto"):  # auto picks the CPU, where onnxruntime runs: nothing to refuse
        assert main(["predict", "--onnx", str(onnx_file), str(image), "--device", device]) == 0


@pytest.mark.parametrize("norm", ["group", "none"])
def test_sync_bn_on_a_model_without_batch_norm_is_refused(tmp_path, capsys, norm):
    out = tmp_path / "run"
    assert main(["train", *TRAIN, "--epochs", "1", "--norm", norm, "--sync-bn", "--out", str(out)]) == 2
    _one_line_error(capsys, f"--sync-bn: resnet8 with norm {norm} has no BatchNorm layer to synchronize")
    assert not out.exists()
    # with BatchNorm (torch's or ours) it is accepted (in one process: a note that it needs torchrun)
    assert main(["train", *TRAIN, "--epochs", "1", "--norm", "scratch", "--sync-bn"]) == 0


@pytest.mark.parametrize("command", ["models", "experiment"])
def test_sigterm_outside_training_is_interrupted_exit_130_not_a_silent_143(monkeypatch, capsys, command):
    """Training saves its position on SIGTERM; elsewhere in a command (an experiment's data loading,
    probes, plots) SIGTERM used to kill the process with 143 and no word."""
    import os
    import signal
    import time

    import resnet_lab.cli as cli

    def killed(args):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(500):  # the handler raises at the next bytecode; the loop is only a backstop
            time.sleep(0.01)
        return 0

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setitem(cli.COMMANDS, command, killed)
    argv = ["models"] if command == "models" else ["experiment", "degradation"]
    assert main(argv) == 130
    assert capsys.readouterr().err.strip() == "interrupted"
    assert signal.getsignal(signal.SIGTERM) is before  # the command's handler is gone afterwards


def test_sigterm_to_a_torchrun_rank_outside_training_says_torchrun_stopped_it(monkeypatch, capsys):
    """QA 2026-12-06: when one rank refused a bad flag, torchrun's SIGTERM made the other print a
    bare "interrupted", as if the user had pressed Ctrl-C."""
    import os
    import signal
    import time

    import resnet_lab.cli as cli

    def killed(args):
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(500):
            time.sleep(0.01)
        return 0

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setitem(cli.COMMANDS, "train", killed)
    assert main(["train", *TRAIN, "--epochs", "1"]) == 130
    assert capsys.readouterr().err.strip() == ("rank 1: stopped by torchrun (SIGTERM): another process failed (its "
                                               "error says why) or the job was interrupted")
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: the plain word, as before
    assert main(["train", *TRAIN, "--epochs", "1"]) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


@pytest.mark.parametrize("removed", ["train_state.pt", "nothing"])
def test_a_new_run_never_overwrites_a_run_even_one_without_its_training_state(trained, tmp_path, capsys, removed):
    src, _ = trained
    run = tmp_path / "run"
    shutil.copytree(src, run)
    (run / removed).unlink(missing_ok=True)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["train", *TRAIN[2:], "--model", "resnet20", "--epochs", "1", "--out", str(run)]) == 2  # not resnet8
    err = _one_line_error(capsys, "already holds a run")
    assert err.endswith("pass --resume to continue it, or choose another --out (in Python: resume=True, or another out)")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_that_lost_its_model_json_gets_one_refusal_with_ways_out_that_work(trained, tmp_path, capsys, resume):
    """QA 2026-12-06: without model.json a new run said "pass --resume" and --resume said "start
    without --resume": each refusal pointed at the other."""
    src, _ = trained
    run = tmp_path / "run"
    shutil.copytree(src, run)
    (run / "model.json").unlink()
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["train", *TRAIN, "--epochs", "2", "--out", str(run), *(["--resume"] if resume else [])]) == 2
    err = _one_line_error(capsys, f"{run} holds part of a run (train_state.pt, model.safetensors")
    assert err.endswith(f"but no model.json: it can be neither resumed nor overwritten; put its model.json back, or "
                        f"choose another --out (in Python: another out), or delete {run} to start over there")
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    for name, data in before.items():  # each way out works: the file put back resumes, another --out starts
        (run / name).write_bytes(data)
    (run / "model.json").write_bytes((src / "model.json").read_bytes())
    assert main(["train", *TRAIN, "--epochs", "2", "--out", str(run), "--resume"]) == 0
    assert main(["train", *TRAIN, "--epochs", "1", "--out", str(tmp_path / "other")]) == 0


def test_python_resume_into_a_run_without_model_json_is_the_same_refusal_not_a_writer_that_is_not_there(trained,
                                                                                                   tmp_path):
    from resnet_lab import create_model, train
    from resnet_lab.data import load_data
    from resnet_lab.train import TrainConfig

    src, _ = trained
    run = tmp_path / "run"
    shutil.copytree(src, run)
    (run / "model.json").unlink()
    meta = json.loads((src / "model.json").read_text())
    data = load_data("fake", image_size=meta["input_size"][-1], batch_size=8, subset=16)
    for resume in (True, False):
        with pytest.raises(FileExistsError, match=r"holds part of a run .* but no model.json: it can be neither"):
            train(create_model("resnet8", num_classes=10, in_channels=meta["input_size"][0]), data,
                  TrainConfig(epochs=2, out=str(run), resume=resume, progress=False))


def test_out_naming_a_file_is_refused_and_the_file_kept(tmp_path, capsys):
    image = tmp_path / "gray.png"
    Image.new("L", (8, 8), 7).save(image)
    data = image.read_bytes()
    assert main(["train", *TRAIN, "--epochs", "1", "--out", str(image)]) == 2
    _one_line_error(capsys, f"--out {image} is a file; a run is written into a directory")
    assert image.read_bytes() == data


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", ["export onto the checkpoint", "export onto its source file", "export onto an image",
                                  "report onto model.json", "lr-find onto best.safetensors", "cam onto its image"])
def test_an_output_never_lands_on_an_input_a_run_file_or_a_file_of_another_kind(trained, tmp_path, capsys, case):
    src, image = trained
    run = tmp_path / "run"
    shutil.copytree(src, run)
    pic = tmp_path / "shirt.png"
    shutil.copy(image, pic)
    weights = tmp_path / "alone.safetensors"
    shutil.copy(run / "model.safetensors", weights)
    shutil.copy(run / "model.json", tmp_path / "alone.json")
    argv, message = {
        "export onto the checkpoint": (["export", str(run), "--out", str(run / "model.safetensors")],
                                       "belongs to the run in"),
        "export onto its source file": (["export", str(weights), "--out", str(weights)], "is one of this command's inputs"),
        "export onto an image": (["export", str(run), "--out", str(pic)], "exists and does not end in .onnx, so it is no earlier ONNX output"),
        "report onto model.json": (["report", str(run), "--out", str(run / "model.json"), "--mistakes", "0"],
                                   "belongs to the run in"),
        "lr-find onto best.safetensors": (["lr-find", *TRAIN[:6], "--steps", "3", "--out", str(run / "best.safetensors")],
                                          "belongs to the run in"),
        "cam onto its image": (["predict", str(run), str(pic), "--cam", str(pic)], "is one of the input images"),
    }[case]
    before = _files(tmp_path)
    assert main(argv) == 2
    _one_line_error(capsys, message)
    assert _files(tmp_path) == before


def test_outputs_of_the_same_kind_are_rewritten_as_before(trained, tmp_path, capsys):
    run, _ = trained
    out = tmp_path / "m.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert main(["export", str(run), "--fuse-bn", "--out", str(out)]) == 0  # a second export replaces the first
    assert main(["lr-find", *TRAIN[:6], "--steps", "3", "--out", str(tmp_path)]) == 2
    _one_line_error(capsys, f"e.g. {tmp_path / 'lr_find.png'}")


@pytest.mark.parametrize("opset", ["0", "-1", "99"])
def test_export_refuses_an_opset_torch_cannot_write(trained, tmp_path, capsys, opset):
    run, _ = trained
    assert main(["export", str(run), "--opset", opset, "--out", str(tmp_path / "m.onnx")]) == 2
    _one_line_error(capsys, "opset (--opset) must be an ONNX opset this torch exports, 7 to")
    assert not (tmp_path / "m.onnx").exists()


def test_experiment_never_overwrites_earlier_results_or_a_run(trained, tmp_path, capsys, monkeypatch):
    import resnet_lab.cli as cli

    done = tmp_path / "done"
    done.mkdir()
    (done / "results.json").write_text('{"verdict": "confirmed"}')
    assert main(["experiment", "degradation", "--out", str(done)]) == 2
    _one_line_error(capsys, "holds the results of an earlier experiment (results.json)")
    assert (done / "results.json").read_text() == '{"verdict": "confirmed"}'
    run, _ = trained
    before = _files(run)
    assert main(["experiment", "degradation", "--out", str(run)]) == 2
    _one_line_error(capsys, "holds a training run (model.json)")
    assert _files(run) == before
    assert main(["experiment", "degradation", "--out", ""]) == 2
    _one_line_error(capsys, "--out is an empty string")
    # without --out: the default folder, or the next free one beside it that no other process holds
    seen = []
    monkeypatch.setattr(cli, "run_experiment", lambda name, **kw: seen.append(kw["out"]) or {"verdict": "mixed"})
    assert main(["experiment", "degradation"]) == 0 and seen == [None]  # run_experiment claims the default
    from resnet_lab.experiments.registry import claim_experiment_dir
    from resnet_lab.runs import RunLock

    def claimed() -> str:
        out, lock = claim_experiment_dir(None, "degradation")
        lock.release()
        return str(out)

    monkeypatch.chdir(tmp_path)
    assert claimed() == "runs/experiments/degradation"
    (tmp_path / "runs/experiments/degradation/results.json").write_text("{}")
    assert claimed() == "runs/experiments/degradation-2"
    (tmp_path / "runs/experiments/degradation-2/report.md").write_text("cut short")  # an interrupted run's
    assert claimed() == "runs/experiments/degradation-3"
    # Another experiment started at the same moment holds -3, still empty: this one takes -4 (both
    # used to write into the same folder, the second over the first).
    with RunLock(tmp_path / "runs/experiments/degradation-3"):
        assert claimed() == "runs/experiments/degradation-4"
    held = tmp_path / "held"
    held.mkdir()
    with RunLock(held), pytest.raises(ckpt.RunInUseError, match="is being written by another process"):
        claim_experiment_dir(held, "degradation")


@pytest.mark.parametrize("held", ["a run one folder down", "an earlier report", "a plot"])
def test_experiment_out_holding_anything_it_would_write_over_is_refused(trained, tmp_path, capsys, held):
    run, _ = trained
    out = tmp_path / "mine"
    out.mkdir()
    if held == "a run one folder down":  # the transfer experiment trains into out/source
        shutil.copytree(run, out / "source")
    else:
        (out / {"an earlier report": "report.md", "a plot": "train_error.png"}[held]).write_text("mine")
    (out / ".hidden").write_text("ignored")
    before = _files(out)
    assert main(["experiment", "transfer", "--out", str(out)]) == 2
    _one_line_error(capsys, f"--out {out} is not empty (it holds {out}/")
    assert _files(out) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".DS_Store").write_text("")  # hidden files aside, an empty folder is fine
    from resnet_lab.experiments.registry import check_experiment_out

    check_experiment_out(empty)


def test_model_json_or_a_picture_given_as_weights_is_one_line_naming_the_way_out(trained, tmp_path, capsys):
    run, image = trained
    assert main(["evaluate", str(run / "model.json")]) == 2
    _one_line_error(capsys, f"{run / 'model.json'} is not a weights file (.json): pass the run directory {run}")
    assert main(["finetune", "--from-file", str(image), "--model", "resnet8", "--strategy", "head", *TRAIN[2:],
                 "--epochs", "1"]) == 2
    _one_line_error(capsys, "is not a weights file (.png): pass a .safetensors, .pth or .pt file")


def test_an_unreadable_weights_file_is_a_permission_error_not_corruption(trained, tmp_path, capsys, monkeypatch):
    import os

    run, _ = trained
    weights = run / "model.safetensors"
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == weights else real(p, mode, *a, **k))
    assert main(["evaluate", str(run)]) == 2
    err = _one_line_error(capsys, f"{weights}: Permission denied; check the permissions")
    assert "corrupt" not in err


def test_an_unreadable_training_state_is_a_permission_error_not_corruption(tmp_path, capsys, monkeypatch):
    import os

    run = tmp_path / "run"
    assert main(["train", *TRAIN, "--epochs", "2", "--stop-after", "1", "--out", str(run)]) == 0
    state = run / "train_state.pt"
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == state else real(p, mode, *a, **k))
    assert main(["train", *TRAIN, "--epochs", "2", "--out", str(run), "--resume"]) == 2
    err = _one_line_error(capsys, f"{state}: Permission denied; check the permissions")
    assert "corrupt" not in err


@pytest.mark.parametrize("denied", ["W_OK", "X_OK"])  # no file can be made in a folder without either
@pytest.mark.parametrize("resume", [False, True])
def test_an_unwritable_out_is_refused_before_training(tmp_path, capsys, monkeypatch, denied, resume):
    import importlib
    import os

    loop = importlib.import_module("resnet_lab.train.loop")
    out = tmp_path / "ro"
    if resume:  # a run cut short after its first epoch, its folder since made read-only
        assert main(["train", *TRAIN, "--epochs", "2", "--stop-after", "1", "--out", str(out)]) == 0
        capsys.readouterr()
    else:
        out.mkdir()
    before = sorted((f.name, f.stat().st_mtime_ns) for f in out.iterdir())
    real = os.access
    # root may write anywhere: stand in for a folder the user cannot write to
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: False if Path(p) == out and mode & getattr(os, denied)
                        else real(p, mode, *a, **k))
    steps = []
    real_epoch = loop._run_epoch
    monkeypatch.setattr(loop, "_run_epoch", lambda *a, **k: steps.append(1) or real_epoch(*a, **k))
    assert main(["train", *TRAIN, "--epochs", "2" if resume else "1", "--out", str(out),
                 *(["--resume"] if resume else [])]) == 2
    _one_line_error(capsys, f"{out}: Permission denied")
    assert steps == [] and sorted((f.name, f.stat().st_mtime_ns) for f in out.iterdir()) == before


@pytest.mark.parametrize("command", ["train", "train --resume", "report"])
def test_an_out_on_a_read_only_file_system_says_so_not_permission_denied(trained, tmp_path, capsys, monkeypatch,
                                                                        command):
    import os
    from types import SimpleNamespace

    run, _ = trained
    mount = tmp_path / "mnt"  # stands for a read-only bind mount: access() says no, statvfs says why
    shutil.copytree(run, mount / "run")
    real_access, real_statvfs = os.access, os.statvfs
    inside = lambda p: Path(p) == mount or mount in Path(p).parents  # noqa: E731
    monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: (not mode & os.W_OK) and real_access(p, mode)
                        if inside(p) else real_access(p, mode, *a, **k))
    monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_flag=os.ST_RDONLY) if inside(p) else real_statvfs(p))
    argv, named, way_out = {  # each command's own way out: train has no --cam, a run to resume is kept
        "train": (["train", *TRAIN, "--epochs", "1", "--out", str(mount / "new")], mount / "new",
                  "the file system is read-only: choose another --out, or run the same command again once it is "
                  "writable"),
        "train --resume": (["train", *TRAIN, "--epochs", "3", "--out", str(mount / "run"), "--resume"], mount / "run",
                           "the file system is read-only (the last checkpoint is kept): continue with the same "
                           "command and --resume once the folder is writable again"),
        "report": (["report", str(run), "--out", str(mount / "r.html"), "--mistakes", "0"], mount / "r.html",
                   "the file system is read-only: choose another output path (--out)"),
    }[command]
    before = _files(mount)
    assert main(argv) == 2
    _one_line_error(capsys, f"{named}: Read-only file system; {way_out}")
    assert _files(mount) == before


@pytest.mark.parametrize("device", ["gpu", "bogus", "", "meta"])
@pytest.mark.parametrize("command", ["train", "experiment"])
def test_an_unknown_device_is_one_line_listing_the_devices_and_makes_nothing(tmp_path, capsys, device, command):
    out = tmp_path / "out"
    argv = ([*TRAIN, "--epochs", "1"] if command == "train" else ["degradation"])
    assert main([command, *argv, "--device", device, "--out", str(out)]) == 2
    _one_line_error(capsys, "use auto, cpu, cuda, cuda:N or mps")
    assert not out.exists()


def test_a_crop_padding_beyond_half_the_image_is_refused_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TRAIN, "--epochs", "1", "--crop-padding", "9", "--out", str(out)]) == 2  # 16 px images
    _one_line_error(capsys, "crop_padding 9 (--crop-padding) must be between 0 and half the image side (8 px of 16)")
    assert not out.exists()
    assert main(["train", *TRAIN, "--epochs", "1", "--crop-padding", "8"]) == 0  # half the side is still allowed


def test_the_crop_padding_hint_names_the_padding_the_default_uses(tmp_path, capsys):
    from resnet_lab.data import DataConfig, load_data

    # 28 px: side / 8 is 3.5, and the default rounds it to 4 (what a run without the flag trains with)
    fake = dict(name="fake", image_size=28, subset=16, batch_size=8)
    assert load_data(DataConfig(**fake)).train.padding == 4
    assert main(["train", *TRAIN[:4], "--image-size", "28", *TRAIN[6:], "--epochs", "1", "--crop-padding", "15",
                 "--out", str(tmp_path / "run")]) == 2
    _one_line_error(capsys, "(side / 8, 4 px, is the usual and the default)")


@pytest.mark.parametrize("clip, hint", [([], "Lower --lr, add --grad-clip 1, or check the data."),
                                        (["--grad-clip", "1"], "Lower --lr, lower --grad-clip (now 1), or check the data.")])
def test_a_diverged_run_says_the_way_out_for_its_own_flags(tmp_path, capsys, clip, hint):
    out = tmp_path / "run"
    assert main(["train", *TRAIN, "--epochs", "1", "--lr", "1e9", "--schedule", "constant", *clip,
                 "--out", str(out)]) == 2
    err = _one_line_error(capsys, hint)
    assert "diverged" in err or "became" in err
    assert not (out / "model.safetensors").exists()


@pytest.mark.parametrize("argv, message", [
    (["train", *TRAIN, "--epochs", "1", "--out", ""], "--out is an empty string"),
    (["train", *TRAIN, "--epochs", "1", "--data-dir", ""], "--data-dir is an empty string"),
    (["evaluate", ""], "RUN is an empty string"),
    (["train", *TRAIN, "--epochs", "1", "--data-dir", "  "], "--data-dir is blank ('  ', whitespace only)"),
    (["experiment", ""], "unknown experiment ''"),
    (["experiment", "degradaton"], "did you mean degradation?"),
    (["summary", "resnet20", "--num-classes", "0"], "--num-classes must be at least 1, got 0; leave it out for "
                                                    "the model's own (10)"),
    (["train", *TRAIN, "--epochs", "1", "--workers", "-1"], "num_workers (--workers) must be an int >= 0"),
])
def test_empty_zero_and_mistyped_values_are_refused_not_taken_as_defaults(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    _one_line_error(capsys, message)
    assert list(tmp_path.iterdir()) == []  # nothing written where the empty --out would have defaulted


def test_predict_with_both_a_run_and_onnx_says_to_give_one(trained, tmp_path, capsys):
    run, image = trained
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", str(run), "--out", str(onnx_file)]) == 0
    capsys.readouterr()
    assert main(["predict", str(run), str(image), "--onnx", str(onnx_file)]) == 2
    _one_line_error(capsys, f"give the model once: the run {run} or --onnx {onnx_file}, not both")


def test_a_warning_during_a_command_is_one_line_without_our_source_path(tmp_path, capsys):
    """A batch larger than the data warns (one batch of what there is); it read as a Python
    warning with loaders.py's path and line before."""
    import subprocess
    import sys

    args = list(TRAIN)
    args[args.index("--batch-size") + 1] = "1000"  # a flag is given once
    proc = subprocess.run([sys.executable, "-m", "resnet_lab", "train", *args, "--epochs", "1"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    warning = [line for line in proc.stderr.splitlines() if "global batch of 1000" in line]
    assert len(warning) == 1 and warning[0].startswith("warning: only 64 samples"), proc.stderr
    assert "loaders.py" not in proc.stderr and "UserWarning" not in proc.stderr


def test_evaluate_at_another_image_size_than_the_model_was_trained_at_says_so(trained, capsys):
    run, _ = trained
    assert main(["evaluate", str(run), "--image-size", "12"]) == 0
    assert f"note: --image-size 12 differs from the 16 px {run} was trained at" in capsys.readouterr().err
    assert main(["evaluate", str(run), "--image-size", "16"]) == 0
    assert "note:" not in capsys.readouterr().err


@pytest.mark.parametrize("size, message", [("0", "must be at least 4 px, got 0"), ("3", "must be at least 4 px, got 3"),
                                           ("100000", "must be at most 8192 px, got 100000")])
def test_evaluate_with_an_image_size_no_model_can_take_names_that_flag_alone_before_loading(trained, capsys, size,
                                                                                          message):
    # --image-size 0 was blamed on --tta-shift 0 (never given), and each refusal came after a note on the size
    run, _ = trained
    assert main(["evaluate", str(run), "--image-size", size]) == 2
    err = _one_line_error(capsys, f"image_size (--image-size) {message}")
    assert "--tta-shift" not in err


def test_an_allocation_that_cannot_fit_is_one_line_giving_the_size_asked_in_gib(capsys, monkeypatch):
    # 3 x 10^14 floats through torch's real CPU allocator: no machine has the 1.2 PB, and it refuses at once
    import torch

    def command(args):
        torch.empty(3 * 10**14)

    monkeypatch.setitem(cli.COMMANDS, "models", command)
    assert main(["models"]) == 2
    err = _one_line_error(capsys, f"out of memory ({3 * 10**14 * 4 / 2**30:.1f} GiB asked): lower --batch-size, "
                                  "--image-size (or summary's --input-size)")
    assert "alloc_cpu" not in err and "enforce fail" not in err


def test_summary_sizes_a_model_or_an_input_no_machine_holds_without_allocating_it(capsys):
    """summary builds on the meta device: its memory estimate is there to say what will not fit. A
    class count past torch's sizes (2^63 bytes) is still one line naming --num-classes."""
    import torch

    from resnet_lab import create_model

    classes = 10**12  # the classifier alone: 64 features x 10^12 float32 weights, 238 TiB
    assert main(["summary", "resnet20", "--num-classes", str(classes), "--json"]) == 0
    per_class = 64 + 1  # a weight row and a bias
    ten = sum(p.numel() for p in create_model("resnet20", num_classes=10).parameters())  # the reference count
    assert json.loads(capsys.readouterr().out)["total_params"] == ten - 10 * per_class + classes * per_class
    assert main(["summary", "resnet8", "--input-size", "3", "10000000", "10000000", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input_bytes"] == 3 * 10**14 * torch.finfo(torch.float32).bits // 8
    assert main(["summary", "resnet20", "--num-classes", str(2**63 - 1)]) == 2
    err = _one_line_error(capsys, "out of memory (more than 2^63 bytes asked): ")
    assert f"lower --num-classes (now {2**63 - 1}), --batch-size" in err
    assert "Exception raised from" not in err and "frame #" not in err


def test_an_out_of_memory_error_is_one_line_with_exit_2_naming_what_to_lower(capsys, monkeypatch):
    """README: every error a user can cause (a batch too large for the GPU, or for the host) is one
    line with exit code 2, not the unexpected error's 3."""
    import torch

    def gpu(args):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.1 GiB total)")

    def host(args):
        raise MemoryError()

    for command, asked in ((gpu, " (20.00 GiB asked)"), (host, "")):
        monkeypatch.setitem(cli.COMMANDS, "models", command)
        assert main(["models"]) == 2
        assert capsys.readouterr().err == (f"error: out of memory{asked}: lower --batch-size, --image-size (or "
                                           "summary's --input-size), or pick a smaller model\n")


def test_a_broken_pipe_that_is_not_the_output_ending_is_an_error_not_a_silent_success(capsys, monkeypatch):
    """A reader leaving stdout is handled where stdout is written (the command goes on, exit 0 at its
    end); any other broken pipe (a pipe to another process) is a failure: it exited 0 saying nothing."""
    def command(args):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setitem(cli.COMMANDS, "models", command)
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Broken pipe" in err and len(err.splitlines()) == 1


def test_a_class_count_past_torchs_sizes_is_refused_before_any_allocation(capsys):
    assert main(["summary", "resnet20", "--num-classes", str(10**23)]) == 2
    _one_line_error(capsys, f"num_classes must be a positive int (the classifier's outputs) of at most {2**63 - 1}, "
                            f"got {10**23}")


def test_a_run_whose_first_save_failed_starts_again_with_the_same_command(tmp_path, capsys, monkeypatch):
    """metrics.jsonl is written before the checkpoint set: a full disk in between leaves it alone,
    which is no run to protect (and none to resume)."""
    import errno
    import importlib

    ckpt = importlib.import_module("resnet_lab.train.checkpoint")
    real = ckpt.save_checkpoint

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "model.safetensors"))

    out = tmp_path / "run"
    monkeypatch.setattr(ckpt, "save_checkpoint", full)
    assert main(["train", *TRAIN, "--epochs", "1", "--out", str(out)]) == 2
    _one_line_error(capsys, "No space left on device")
    assert [p.name for p in out.iterdir() if p.is_file()] and not (out / "model.json").exists()
    monkeypatch.setattr(ckpt, "save_checkpoint", real)
    assert main(["train", *TRAIN, "--epochs", "1", "--out", str(out)]) == 0
    assert (out / "model.json").exists() and len((out / "metrics.jsonl").read_text().splitlines()) == 1


@pytest.mark.parametrize("command", ["export", "lr-find", "report"])
def test_an_output_named_without_its_suffix_is_refused_on_the_first_write_too(trained, tmp_path, capsys, command):
    """Written once without a suffix, the file could not be told from a stranger's the next time."""
    run, _ = trained
    out = tmp_path / "result"
    argv = {"export": ["export", str(run)], "lr-find": ["lr-find", *TRAIN[:6], "--steps", "3"],
            "report": ["report", str(run), "--mistakes", "0"]}[command]
    suffix = {"export": ".onnx", "lr-find": ".png", "report": ".html"}[command]
    assert main([*argv, "--out", str(out)]) == 2
    _one_line_error(capsys, f"{out} does not end in {suffix}")
    assert not out.exists()
    assert main([*argv, "--out", str(out.with_suffix(suffix))]) == 0
    assert main([*argv, "--out", str(out.with_suffix(suffix))]) == 0  # and again, over its own earlier output


def test_predict_onnx_leaves_a_missing_or_directory_image_to_the_image_reader(trained, tmp_path, capsys):
    """Only a run (a folder with model.json), a .safetensors file or shipped weights count as a
    second model; a missing picture whose name has a colon, or a folder, is a bad image."""
    run, image = trained
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", str(run), "--out", str(onnx_file)]) == 0
    capsys.readouterr()
    assert main(["predict", "--onnx", str(onnx_file), str(tmp_path / "shot 12:31.png"), str(image)]) == 2
    err = _one_line_error(capsys, "shot 12:31.png")
    assert "give the model once" not in err
    assert main(["predict", "--onnx", str(onnx_file), str(tmp_path), str(image)]) == 2
    assert "give the model once" not in _one_line_error(capsys, str(tmp_path))
    assert main(["predict", "resnet20:fashion-mnist", str(image), "--onnx", str(onnx_file)]) == 2
    _one_line_error(capsys, "give the model once: the run resnet20:fashion-mnist")


def test_the_one_line_warning_format_is_set_only_by_the_main_thread_and_always_put_back(capsys):
    import threading
    import warnings

    before = warnings.formatwarning
    seen = []
    thread = threading.Thread(target=lambda: seen.append(main(["models", "resnet8"])))
    thread.start()
    thread.join()
    assert seen == [0] and warnings.formatwarning is before
    assert main(["models", "resnet8"]) == 0 and warnings.formatwarning is before


@pytest.mark.parametrize("extra,named", [
    (["--momentum", "0.5"], "--momentum 0.5"),
    (["--no-nesterov"], "--no-nesterov"),
    (["--momentum", "0", "--no-nesterov"], "--momentum 0, --no-nesterov"),
])
@pytest.mark.parametrize("command", ["train", "lr-find"])
def test_sgds_momentum_options_with_adamw_are_refused_not_ignored(tmp_path, capsys, extra, named, command):
    # AdamW's moments are its betas: the same run with and without these flags trained identically
    args = [command, *TRAIN, "--optimizer", "adamw", *extra, "--out", str(tmp_path / "o")]
    if command == "lr-find":
        args = [command, *TRAIN[:6], "--batch-size", "16", "--optimizer", "adamw", *extra, "--steps", "3",
                "--out", str(tmp_path / "o.png")]
    assert main(args) == 2
    err = _one_line_error(capsys, f"({named}) are SGD's and do nothing with adamw")
    assert "--optimizer sgd" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("seed", ["99999999999999999999", "-99999999999999999999"])
@pytest.mark.parametrize("command", ["train", "experiment"])
def test_a_seed_torch_cannot_take_is_one_line_naming_the_flag_and_the_range(tmp_path, capsys, seed, command):
    import torch

    with pytest.raises(ValueError, match="Overflow"):  # what torch says of it: no flag, no range
        torch.manual_seed(int(seed))
    args = (["train", *TRAIN, "--epochs", "1"] if command == "train" else ["experiment", "degradation"])
    assert main([*args, f"--seed={seed}", "--out", str(tmp_path / "o")]) == 2
    _one_line_error(capsys, f"seed (--seed) must be an integer from {-(2 ** 63)} to ")
    assert not (tmp_path / "o").exists()


def test_images_too_small_for_the_model_are_one_line_naming_the_size_flag_before_anything_is_written(
        tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["train", "--model", "vgg11_bn", "--small-input", "no", "--dataset", "fake", "--image-size", "28",
                 "--subset", "32", "--batch-size", "16", "--epochs", "1", "--no-progress", "--out", str(out)]) == 2
    _one_line_error(capsys, "vgg11_bn cannot take 28x28 px images")
    assert not out.exists()
    assert main(["summary", "vgg11_bn", "--small-input", "no", "--input-size", "1", "28", "28"]) == 2
    _one_line_error(capsys, "(--input-size)")
    assert main(["summary", "vgg11_bn", "--input-size", "1", "28", "28"]) == 0  # auto: the small stem, as train


def test_an_unwritable_output_is_named_by_the_users_path_not_a_temporary_one(trained, tmp_path, capsys, monkeypatch):
    run, _ = trained
    (tmp_path / "afile.txt").write_text("mine")
    assert main(["export", str(run), "--out", str(tmp_path / "afile.txt" / "m.onnx")]) == 2
    _one_line_error(capsys, "afile.txt is a file, not a folder: choose another path")
    assert (tmp_path / "afile.txt").read_text() == "mine"

    def denied(prefix, suffix, dir):  # what a read-only folder does to a non-root user
        raise PermissionError(errno.EACCES, "Permission denied", f"{dir}/{prefix}x1y2{suffix}")

    monkeypatch.setattr(ckpt.tempfile, "mkstemp", denied)
    out = tmp_path / "ro" / "m.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 2
    err = _one_line_error(capsys, f"{out}: Permission denied")
    assert ".tmp" not in err


def test_lr_find_names_an_unwritable_plot_path_before_the_range_test(tmp_path, capsys, monkeypatch):
    from resnet_lab import runs

    ran = []
    monkeypatch.setattr("resnet_lab.cli.lr_find", lambda *a, **k: ran.append(1))
    real_access = runs.os.access
    ro = tmp_path / "ro"
    ro.mkdir()
    # root may write anywhere: stand in for a folder the user cannot write to
    monkeypatch.setattr(runs.os, "access", lambda p, mode: False if Path(p) == ro else real_access(p, mode))
    assert main(["lr-find", *TRAIN[:6], "--batch-size", "16", "--steps", "3", "--out", str(ro / "lr.png")]) == 2
    _one_line_error(capsys, f"{ro / 'lr.png'}: Permission denied")
    assert ran == []


def test_lr_find_with_batches_too_small_to_step_says_so_of_the_range_test(capsys):
    assert main(["lr-find", *TRAIN[:6], "--batch-size", "1", "--steps", "3"]) == 2
    shown = capsys.readouterr().err.split("\r")[-1]  # what a terminal shows once the bar has cleared itself
    assert shown.startswith("error: the range test made no optimizer step: every batch had fewer than 2 samples")
    assert "epoch" not in shown and shown.count("\n") == 1


@pytest.mark.parametrize("command", ["train", "lr-find"])
def test_one_training_image_says_so_not_to_lower_the_batch_size(tmp_path, capsys, command):
    """--subset 1 said "lower --batch-size or use more data": at --batch-size 1 batch norm is refused, and
    any smaller batch of that one image is the lone image training skips."""
    out = ["--out", str(tmp_path / ("o" if command == "train" else "lr.png"))]
    assert main([command, *TRAIN[:6], "--subset", "1", "--batch-size", "16", "--no-progress", *out]) == 2
    err = _one_line_error(capsys, "one training image")
    assert "2 or more images" in err and "lower --batch-size" not in err
    # --batch-size 1 trains without batch norm; the range test steps on 2 or more samples whatever the norm
    assert ("--batch-size 1 without batch norm" in err) == (command == "train")
    assert list(tmp_path.iterdir()) == []


def test_too_small_images_of_progressive_resizing_and_lr_find_are_refused_before_any_step(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["train", "--model", "vgg11", "--small-input", "yes", "--dataset", "fake", "--image-size", "32",
                 "--progressive-resize", "8", "--subset", "32", "--batch-size", "16", "--epochs", "2",
                 "--no-progress", "--out", str(out)]) == 2
    err = _one_line_error(capsys, "vgg11 cannot take 8x8 px images")
    assert "give it larger images (--progressive-resize)" in err
    assert not out.exists() or not any(out.iterdir())
    assert main(["lr-find", "--model", "densenet121", "--small-input", "no", "--dataset", "fake", "--image-size",
                 "28", "--batch-size", "4", "--steps", "2"]) == 2
    _one_line_error(capsys, "densenet121 cannot take 28x28 px images")


@pytest.mark.parametrize("what", ["run directory", "weights name", "upper-case weights file"])
def test_predict_with_a_model_and_no_image_says_no_image_was_given(trained, capsys, what, tmp_path):
    run, _ = trained
    model = {"run directory": str(run), "weights name": "resnet20:fashion-mnist",
             "upper-case weights file": str(tmp_path / "MODEL.SAFETENSORS")}[what]
    if what == "upper-case weights file":  # a weights file as the loader reads it, whatever its suffix's case
        shutil.copy(run / "model.safetensors", model)
    assert main(["predict", model]) == 2
    _one_line_error(capsys, f"no image given: add the image files after {model}, e.g. resnet-lab predict {model} "
                            "shoe.png")


def test_an_image_file_named_like_shipped_weights_is_still_an_image(trained, tmp_path, capsys, monkeypatch):
    """`img:001.png` has the form MODEL:TAG (weights.is_weights_name says so), but it is a file that exists:
    an image, so the refusal is the missing model before it, not a missing image after it."""
    from resnet_lab.weights import is_weights_name

    monkeypatch.chdir(tmp_path)
    shutil.copy(trained[1], "img:001.png")
    assert is_weights_name("img:001.png")
    assert main(["predict", "img:001.png"]) == 2
    _one_line_error(capsys, "give a run directory (or --onnx FILE) before the images")


def test_an_output_path_that_cannot_exist_says_to_check_the_path(trained, tmp_path, capsys, monkeypatch):
    run, _ = trained

    def no_such_place(path, write):
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))

    monkeypatch.setattr("resnet_lab.deploy.export.atomic_write", no_such_place)  # as under /proc
    assert main(["export", str(run), "--out", str(tmp_path / "m.onnx")]) == 2
    err = _one_line_error(capsys, "m.onnx: No such file or directory; check the path")
    assert err.endswith("(an output's folder must be one that can be created)")


def test_a_pickled_pth_is_one_line_without_the_advice_to_unpickle_it(tmp_path, capsys):
    import argparse

    import torch

    pickled, junk, garbage, cut = (tmp_path / f"{n}.pth" for n in ("pickled", "junk", "garbage", "cut"))
    torch.save({"conv1.weight": torch.zeros(1), "extra": argparse.Namespace(a=1)}, pickled)
    junk.write_bytes(b"hello, this is no checkpoint " * 8)
    garbage.write_bytes(b"not a checkpoint")  # torch calls this a weights-only failure too: no objects in it
    torch.save({"conv1.weight": torch.zeros(100000)}, cut)
    cut.write_bytes(cut.read_bytes()[:20000])  # truncated
    damaged = "not a torch checkpoint, or a truncated or damaged one"
    for path, reason in ((pickled, "it holds Python objects besides tensors, which are never unpickled here"),
                         (junk, damaged), (garbage, damaged), (cut, damaged)):
        assert main(["finetune", "--from-file", str(path), "--model", "resnet8", "--strategy", "all", *TRAIN[2:],
                     "--epochs", "1", "--out", str(tmp_path / "ft")]) == 2
        err = _one_line_error(capsys, f"{path} could not be read with torch.load(weights_only=True) ({reason}")
        assert "weights_only` set to `False`" not in err and "\x1b" not in err
        assert ("re-save it as" in err) == (path == pickled) and ("copy it again" in err) == (path != pickled)
    assert not (tmp_path / "ft").exists()


def test_a_bad_finetune_lr_names_the_defaults_of_both_commands(trained, tmp_path, capsys):
    run, _ = trained
    assert main(["finetune", "--from", str(run), "--strategy", "all", *TRAIN[2:], "--lr", "-1",
                 "--out", str(tmp_path / "ft")]) == 2
    _one_line_error(capsys, "lr (--lr) must be a finite number > 0, got -1.0 (when not given: 0.1 for sgd in train, 0.01 in "
                            "finetune, 1e-3 for adamw)")


def test_evaluate_on_a_test_set_smaller_than_a_training_batch_gives_no_training_warning(trained, tmp_path, capsys):
    run, _ = trained
    assert main(["evaluate", str(run), "--batch-size", "8"]) == 0
    out = capsys.readouterr()
    assert "warning" not in out.err and "accuracy" in out.out
    folder = tmp_path / "pets"
    for cls in ("cat", "dog"):
        (folder / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (12, 12), (40 * i, 100 if cls == "cat" else 200, 0)).save(folder / cls / f"{i}.png")
    ft = ["--model", "resnet8", "--dataset", "folder", "--data-dir", str(folder), "--image-size", "8", "--epochs",
          "1", "--batch-size", "4", "--workers", "0", "--no-progress", "--out", str(tmp_path / "r")]
    assert main(["train", *ft]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "r"), "--data-dir", str(folder), "--workers", "0"]) == 0
    out = capsys.readouterr()
    assert "only" not in out.err and "global batch" not in out.err, out.err
    assert "accuracy" in out.out


@pytest.mark.parametrize("size", [["1", "-28", "28"], ["1", "0", "28"]])
def test_summary_with_an_empty_or_negative_side_names_the_flag(capsys, size):
    assert main(["summary", "resnet8", "--input-size", *size]) == 2
    _one_line_error(capsys, f"--input-size must give a height and width of at least 1 px, got {' '.join(size)}")


@pytest.mark.parametrize("argv, message", [
    (["--input-size", "0", "32", "32"], "--input-size must give at least 1 channel (C: 1 grayscale, 3 RGB), got 0 32 32"),
    (["--depth", "0"], "--depth must be at least 1 (1: the top-level modules), got 0"),
])
def test_summary_errors_name_the_flag_not_the_python_argument(capsys, argv, message):
    assert main(["summary", "resnet20", *argv]) == 2
    _one_line_error(capsys, message)


@pytest.mark.filterwarnings("ignore:the test split of")
def test_a_folder_whose_test_split_is_empty_is_refused_before_training(tmp_path, capsys):
    folder = tmp_path / "one_each"
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        Image.new("RGB", (12, 12), (200 if cls == "a" else 20, 0, 0)).save(folder / cls / "0.png")
    out = tmp_path / "run"
    assert main(["train", "--model", "resnet8", "--dataset", "folder", "--data-dir", str(folder), "--image-size", "8",
                 "--epochs", "3", "--batch-size", "2", "--workers", "0", "--no-progress", "--out", str(out)]) == 2
    err = _one_line_error(capsys, "the test set is empty, so no epoch can be evaluated")
    assert "val/ folder" in err
    assert not out.exists() or not any(out.iterdir())


def test_export_fuse_bn_prints_what_it_folded_and_what_it_kept(trained, tmp_path, capsys):
    run, _ = trained
    capsys.readouterr()
    assert main(["export", str(run), "--fuse-bn", "--out", str(tmp_path / "f.onnx")]) == 0
    out = capsys.readouterr().out.splitlines()
    # resnet8: every BN follows a conv that nothing else reads (fuse_bn_with_report's count)
    from resnet_lab.deploy import fuse_bn_with_report
    from resnet_lab.runs import load_model

    _, report = fuse_bn_with_report(load_model(run)[0].eval())
    assert out[:-1] == report.summary().splitlines() and out[0].startswith(f"folded {len(report.folded)} of ")
    assert out[-1] == f"wrote {tmp_path / 'f.onnx'}"
    assert main(["export", str(run), "--out", str(tmp_path / "u.onnx")]) == 0
    assert capsys.readouterr().out.splitlines() == [f"wrote {tmp_path / 'u.onnx'}"]  # no folding, no summary
    group = tmp_path / "group"
    assert main(["train", *TRAIN, "--norm", "group", "--epochs", "1", "--out", str(group)]) == 0
    capsys.readouterr()
    assert main(["export", str(group), "--fuse-bn", "--out", str(tmp_path / "g.onnx")]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("nothing to fold: the model has no batch-norm layer")


@pytest.mark.parametrize("missing, extra, what", [
    ("onnx", [], "ONNX export needs the onnx package: pip install 'resnet-lab[onnx]'"),
    ("onnxscript", ["--opset", "21"], "the dynamo ONNX exporter (opset 21) needs the onnxscript package: "
                                      "pip install 'resnet-lab[onnx]'"),
])
def test_export_without_the_onnx_extra_names_the_extra_in_one_line(trained, tmp_path, capsys, monkeypatch,
                                                                    missing, extra, what):
    import sys

    run, _ = trained
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed: importing it raises ImportError
    capsys.readouterr()
    assert main(["export", str(run), *extra, "--out", str(tmp_path / "m.onnx")]) == 2
    _one_line_error(capsys, what)
    assert not (tmp_path / "m.onnx").exists()


def test_options_may_go_between_the_runs_and_images_of_predict_evaluate_and_report(trained, tmp_path, capsys):
    # `predict RUN --top-k 3 IMAGE` ended in "unrecognized arguments: IMAGE"
    run, image = trained
    assert main(["predict", str(run), str(image), "--top-k", "3", "--json"]) == 0
    want = json.loads(capsys.readouterr().out)
    for argv in (["predict", str(run), "--top-k", "3", str(image), "--json"],
                 ["predict", str(run), "--json", str(image), "--top-k", "3"]):
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out) == want
    assert main(["predict", str(run), str(image), "--top-k", "2", str(image), "--json"]) == 0
    assert [p["path"] for p in json.loads(capsys.readouterr().out)] == [str(image)] * 2
    assert main(["evaluate", str(run), "--json"]) == 0
    one = json.loads(capsys.readouterr().out)
    copy = shutil.copytree(run, tmp_path / "copy")  # another run (the same one twice is refused)
    assert main(["evaluate", str(run), "--device", "cpu", str(copy), "--json"]) == 0  # an ensemble of the two
    assert json.loads(capsys.readouterr().out)["accuracy"] == one["accuracy"]
    with pytest.raises(SystemExit) as e:  # an unknown option: still argparse's error, exit 2
        main(["predict", str(run), "--no-such-flag", str(image)])
    assert e.value.code == 2 and "unrecognized arguments: --no-such-flag" in capsys.readouterr().err


# One run given twice, spelt two ways (paths relative to the folder holding the run as r/, the link link/).
_SAME_RUN = {"as typed": ("r", "r"), "trailing slash": ("r", "r/"), "./": ("./r", "r"), "symlink": ("r", "link"),
             "its weights file": ("r/model.safetensors", "r"),
             "shipped weights": ("resnet20:fashion-mnist", "resnet20:fashion-mnist")}


@pytest.mark.parametrize("spelt", list(_SAME_RUN))
@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_the_same_run_given_twice_is_refused_naming_it(trained, tmp_path, monkeypatch, capsys, command, spelt):
    """evaluate took it for an ensemble of 2 (whose average is the run itself), the report showed it
    side by side with itself; a copy in another folder is another run (see test_cli.py)."""
    shutil.copytree(trained[0], tmp_path / "r")
    (tmp_path / "link").symlink_to(tmp_path / "r")
    monkeypatch.chdir(tmp_path)
    first, second = _SAME_RUN[spelt]
    out = ["--out", "page.html"] if command == "report" else []
    assert main([command, first, second, *out]) == 2
    err = _one_line_error(capsys, f"{second} {'is given' if first == second else 'are the same run'}")
    assert first in err and err.endswith("given twice: give each run once")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "r"]  # no page written


def test_evaluate_best_takes_a_run_and_its_best_file_for_one_run_given_twice(trained, tmp_path, monkeypatch, capsys):
    """With --best a run directory stands for its best.safetensors (check_distinct_runs's ``which``): RUN and
    RUN/best.safetensors are one set of weights given twice, refused as such before any model loads."""
    shutil.copytree(trained[0], tmp_path / "r")
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "r", "r/best.safetensors", "--best"]) == 2
    assert _one_line_error(capsys, "r and r/best.safetensors are the same run").endswith("given twice: give each run once")


@pytest.mark.parametrize("bad, message", [(["r", "r"], "r is given twice"),
                                          (["r", "--mistakes", "999"], "mistakes (--mistakes) must be a whole number")])
def test_report_refuses_its_arguments_before_the_missing_data_dir_note(trained, tmp_path, monkeypatch, capsys, bad,
                                                                      message):
    """The note that --data-dir does not exist came first, then the error: two lines for one mistake."""
    shutil.copytree(trained[0], tmp_path / "r")
    monkeypatch.chdir(tmp_path)
    assert main(["report", *bad, "--data-dir", "nowhere", "--out", "page.html"]) == 2
    assert message in _one_line_error(capsys, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


LR_FIND = ["--model", "resnet8", "--dataset", "fake", "--image-size", "16", "--batch-size", "16"]


@pytest.mark.parametrize("argv, names", [
    (["train", *TRAIN, "--stop-after", "0", "--epochs", "1"], "stop_after (--stop-after) must be between 1"),
    (["train", *TRAIN, "--epochs", "0"], "epochs (--epochs) must be >= 1"),
    (["train", *TRAIN, "--label-smoothing", "1"], "label_smoothing (--label-smoothing) must be in [0, 1)"),
    (["lr-find", *LR_FIND, "--steps", "1"], "steps (--steps) must be an int >= 2"),
    (["lr-find", *LR_FIND, "--start-lr", "0"], "start_lr (--start-lr) must be a finite number > 0"),
])
def test_errors_of_recipe_values_name_the_flag(argv, names, capsys):
    assert main(argv) == 2
    _one_line_error(capsys, names)


def test_predict_top_k_error_names_the_flag(trained, capsys):
    run, image = trained
    assert main(["predict", str(run), str(image), "--top-k", "0"]) == 2
    _one_line_error(capsys, "top_k (--top-k) must be an int >= 1, got 0")


@pytest.mark.parametrize("size", ["0", "-3"])
def test_evaluate_batch_size_below_one_names_the_flag_in_the_clis_words(trained, capsys, size):
    """Not DataConfig's eval_batch_size "(or None for batch_size)": the Python API's wording."""
    assert main(["evaluate", str(trained[0]), "--batch-size", size]) == 2
    err = _one_line_error(capsys, f"--batch-size must be at least 1 test image per batch, got {size}: leave it out for "
                                  f"{build_parser().parse_args(['evaluate', 'r']).batch_size}")
    assert "eval_batch_size" not in err and "None" not in err


def test_every_command_but_train_under_torchrun_is_refused_before_any_work(monkeypatch, capsys, trained, tmp_path):
    """evaluate, report and export ran the whole job once per rank (doubled output, both ranks
    writing one file); experiment failed with its own lock's "another process"."""
    run, image = trained
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.chdir(tmp_path)
    for argv in (["lr-find", *LR_FIND, "--steps", "6"], ["evaluate", str(run)], ["predict", str(run), str(image)],
                 ["export", str(run), "--out", "m.onnx"], ["report", str(run), "--out", "r.html"],
                 ["experiment", "degradation", "--out", "exp"],
                 ["finetune", "--from", str(run), "--strategy", "head", *TRAIN[2:]]):
        assert main(argv) == 2, argv
        _one_line_error(capsys, f"resnet-lab {argv[0]} runs in one process; start it without torchrun")
    assert not list(tmp_path.iterdir())  # nothing written


def test_evaluate_dataset_empty_is_refused_not_taken_as_the_runs(trained, capsys):
    run, _ = trained
    assert main(["evaluate", str(run), "--dataset", ""]) == 2
    _one_line_error(capsys, "--dataset is an empty string: give a dataset name (an unset shell variable?)")


def test_report_with_a_data_dir_that_does_not_exist_warns_on_stderr(tmp_path, capsys):
    run = tmp_path / "run"  # a fake-data run relabelled as CIFAR-10: data the report must look for
    assert main(["train", *TRAIN, "--epochs", "1", "--out", str(run)]) == 0
    meta = json.loads((run / "model.json").read_text())
    (run / "model.json").write_text(json.dumps({**meta, "dataset": "cifar10"}))
    capsys.readouterr()
    assert main(["report", str(run), "--data-dir", str(tmp_path / "typo"), "--out", str(tmp_path / "r.html")]) == 0
    err = capsys.readouterr().err
    assert f"warning: --data-dir {tmp_path / 'typo'} does not exist" in err


def _parse_error(capsys, argv: list[str]) -> list[str]:
    """The lines on stderr of a command line that argparse refuses (exit 2, as argparse exits)."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err.splitlines()


def test_an_unknown_flag_is_answered_in_the_name_of_its_command_with_a_pointer_to_its_help(capsys):
    """argparse printed the whole usage block of the command (a screenful for train) before its error."""
    assert _parse_error(capsys, ["summary", "resnet8", "--image-size", "32"]) == [
        "resnet-lab summary: error: unrecognized arguments: --image-size 32; did you mean --input-size?",
        "see `resnet-lab summary --help` for its options"]


@pytest.mark.parametrize("argv, first", [
    (["train", "--model", "resnet8", "--dataset", "fake", "--epoch", "3"],
     "resnet-lab train: error: unrecognized arguments: --epoch 3; did you mean --epochs?"),
    (["train", "--model", "resnet8", "--epoch=3", "--dataset", "fake"],
     "resnet-lab train: error: unrecognized arguments: --epoch=3; did you mean --epochs?"),
    (["train", "--model", "resnet8", "--dataset", "fake", "--epoch", "3", "--bachsize", "8"],
     "resnet-lab train: error: unrecognized arguments: --epoch 3 --bachsize 8; did you mean --epochs (for --epoch), "
     "--batch-size (for --bachsize)?"),
    (["trian", "--model", "resnet8"], "resnet-lab: error: unknown command 'trian'; did you mean train?"),
    (["lr_find"], "resnet-lab: error: unknown command 'lr_find'; did you mean lr-find?"),
    (["frobnicate"], "resnet-lab: error: unknown command 'frobnicate'; the commands: models, summary, train, lr-find, "
     "finetune, experiment, evaluate, predict, export, report"),
    # a top-level flag: it said "the following arguments are required: COMMAND"
    (["--verison"], "resnet-lab: error: unrecognized arguments: --verison; did you mean --version?"),
    # one dash for a long option (other tools' habit): it got no hint; a negative number is no option
    (["train", "--model", "resnet8", "--dataset", "fake", "-lr", "0.1"],
     "resnet-lab train: error: unrecognized arguments: -lr 0.1; did you mean --lr?"),
    (["train", "--model", "resnet8", "--dataset", "fake", "-epochs=3"],
     "resnet-lab train: error: unrecognized arguments: -epochs=3; did you mean --epochs?"),
    (["train", "--model", "resnet8", "--dataset", "fake", "-1e-3"],
     "resnet-lab train: error: unrecognized arguments: -1e-3"),
])
def test_an_unknown_flag_or_command_is_answered_with_the_closest_one(capsys, argv, first):
    lines = _parse_error(capsys, argv)
    command = "resnet-lab train" if argv[0] == "train" else "resnet-lab"
    assert lines == [first, f"see `{command} --help` for its {'options' if argv[0] == 'train' else 'commands'}"]


@pytest.mark.parametrize("argv", [["train", "--dataset", "fake"],  # --model missing
                                  ["train", "--model", "resnet8", "--dataset", "fake", "--epochs", "two"],
                                  ["train", "--model", "resnet8", "--dataset", "fake", "--optimizer", "sgdd"],
                                  ["summary"], []])
def test_every_parse_error_is_one_line_and_the_pointer_to_help(capsys, argv):
    lines = _parse_error(capsys, argv)
    assert len(lines) == 2 and "usage:" not in "\n".join(lines), lines
    assert lines[0].startswith(f"resnet-lab{' ' + argv[0] if argv else ''}: error: ")
    assert lines[1].startswith(f"see `resnet-lab{' ' + argv[0] if argv else ''} --help` for its ")


def test_help_is_still_argparses_whole_usage(capsys):
    for argv, parser in ((["train", "--help"], build_parser().command_parsers["train"]), (["--help"], build_parser())):
        with pytest.raises(SystemExit) as e:
            main(argv)
        out = capsys.readouterr().out
        assert e.value.code == 0 and out.startswith("usage: resnet-lab") and out == parser.format_help()


def test_experiment_list_with_a_name_is_refused_not_the_name_ignored(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", "--list", "degradation"]) == 2
    _one_line_error(capsys, "--list lists every experiment and runs none: drop --list to run degradation")
    assert main(["experiment", "--list"]) == 0 and "degradation" in capsys.readouterr().out
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flags, named", [(["--budget", "full", "--out", "zz"], "--budget, --out are"),
                                          (["--seed", "5"], "--seed is"), (["--list", "--device", "cpu"], "--device is"),
                                          (["--budget", "smoke"], "--budget is"), (["--seed", "0"], "--seed is"),
                                          (["--device", "auto"], "--device is")])  # given at their default values too
def test_experiment_options_without_a_name_are_refused_not_ignored(capsys, tmp_path, monkeypatch, flags, named):
    monkeypatch.chdir(tmp_path)
    assert main(["experiment", *flags]) == 2
    _one_line_error(capsys, f"{named} for running an experiment, and none is named: add the experiment's name")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "zz").exists()
    assert main(["experiment"]) == 0 and "degradation" in capsys.readouterr().out  # the bare listing stays


@pytest.mark.parametrize("seed", [True, 1.0, "3"])
def test_run_experiment_refuses_a_seed_that_is_not_an_int_before_making_a_folder(tmp_path, seed):
    """True ran seeds 1 and 2 and recorded `--seed True`, a command the CLI refuses; "3" was a raw TypeError."""
    from resnet_lab.experiments import run_experiment

    # shown as given: "got 3" read as if the number 3 were out of range
    with pytest.raises(ValueError, match=f"seed \\(--seed\\) must be an integer from .*got {seed!r}$"):
        run_experiment("degradation", out=tmp_path / "x", seed=seed, log=lambda s: None)
    with pytest.raises(ValueError, match="gpu"):
        run_experiment("degradation", out=tmp_path / "x", device="gpu", log=lambda s: None)
    assert not (tmp_path / "x").exists()  # neither left an empty folder behind


# An --out where no new run can start: what is there, and the refusal (the trainer's words) it gets.
_TAKEN_OUT = {"a file": "is a file; a run is written into a directory: choose another --out",
              "a run": "already holds a run (", "part of a run": "holds part of a run ("}
_TAKEN_BY_TRAIN = "holds a `resnet-lab train` run, not a finetune: give the finetune a new --out"  # finetune's words


@pytest.mark.parametrize("taken", list(_TAKEN_OUT))
@pytest.mark.parametrize("command", ["train", "finetune"])
def test_an_out_where_no_new_run_can_start_is_refused_before_the_data_is_loaded(trained, tmp_path, monkeypatch,
                                                                              capsys, command, taken):
    """train and finetune refused it only when the run started, after the data (an image folder is
    scanned whole)."""
    out = tmp_path / "out"
    if taken == "a file":
        out.write_text("notes")
    else:
        shutil.copytree(trained[0], out)
        if taken == "part of a run":
            (out / "model.json").unlink()
    before = sorted(p.name for p in out.iterdir()) if out.is_dir() else out.read_text()

    def no_data(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(cli, "load_data", no_data)
    argv = {"train": ["train", *TRAIN], "finetune": ["finetune", "--from", str(trained[0]), "--strategy", "last",
                                                      *TRAIN[2:]]}[command]
    assert main([*argv, "--epochs", "1", "--out", str(out)]) == 2
    _one_line_error(capsys, f"{out} {_TAKEN_BY_TRAIN if (command, taken) == ('finetune', 'a run') else _TAKEN_OUT[taken]}")
    assert (sorted(p.name for p in out.iterdir()) if out.is_dir() else out.read_text()) == before


def _data_dir_commands(run: str) -> dict[str, list[str]]:
    """Every command that takes --data-dir, given a Fashion-MNIST one (train: the fake dataset's flags swapped)."""
    fmnist = ["--dataset", "fashion-mnist"]
    return {"train": ["train", "--model", "resnet8", *fmnist, "--epochs", "1", "--out", "new"],
            "lr-find": ["lr-find", "--model", "resnet8", *fmnist, "--steps", "4"],
            "finetune": ["finetune", "--from", run, "--strategy", "last", *fmnist, "--out", "new"],
            "evaluate": ["evaluate", run, *fmnist], "report": ["report", run, "--out", "page.html"],
            "experiment": ["experiment", "degradation", "--out", "new"]}


@pytest.mark.parametrize("command", list(_data_dir_commands("r")))
def test_a_data_dir_that_is_a_file_is_refused_in_one_line_by_every_command(trained, tmp_path, monkeypatch, capsys,
                                                                         command):
    """Refused up front: evaluate and finetune (after loading the run) printed the not-found message, whose
    way out was a --download into FILE/FashionMNIST/raw, which cannot work."""
    monkeypatch.chdir(tmp_path)
    Path("data.zip").write_text("x")
    assert main([*_data_dir_commands(str(trained[0]))[command], "--data-dir", "data.zip"]) == 2
    _one_line_error(capsys, "(--data-dir) data.zip is a file, not a folder: give the folder that holds the dataset")
    assert [p.name for p in tmp_path.iterdir()] == ["data.zip"]  # nothing written


@pytest.mark.parametrize("where, what", [("no such folder", "does not exist"), ("a file", "is a file, not a folder")])
def test_experiment_data_dir_that_is_no_folder_is_refused_before_any_run(capsys, tmp_path, monkeypatch, where, what):
    """A mistyped --data-dir ran the whole experiment on the data found elsewhere, saying so only in
    report.md: a root that is not there holds no dataset, whereas one it lacks is still looked for elsewhere."""
    monkeypatch.chdir(tmp_path)
    data_dir = tmp_path / "datasets"
    if where == "a file":
        data_dir.write_text("x")
    assert main(["experiment", "degradation", "--data-dir", str(data_dir), "--out", str(tmp_path / "e")]) == 2
    _one_line_error(capsys, f"(--data-dir) {data_dir} {what}: give the folder that holds the dataset")
    assert sorted(p.name for p in tmp_path.iterdir()) == (["datasets"] if where == "a file" else [])


def test_a_prefix_of_a_flag_is_not_taken_for_it(capsys):
    """argparse's abbreviations took `finetune --norm 0.5` for --norm-lr-scale 0.5 (and `--norm
    group` failed as a bad float): an unknown flag is now an error, never a guess."""
    for argv in (["finetune", "--from", "r", "--strategy", "all", "--dataset", "fake", "--norm", "0.5"],
                 ["train", "--model", "resnet8", "--dataset", "fake", "--epo", "1"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and f"error: unrecognized arguments: {' '.join(argv[-2:])}" in err


def test_finetune_from_a_json_points_at_the_weights_beside_it_and_that_command_works(trained, tmp_path, capsys):
    """--from RUN/model.json (or a shipped entry's .json) used to say "use --from-file FILE --model
    NAME", a command that is itself refused (a .json holds no weights)."""
    from resnet_lab.weights import get_weights

    run, _ = trained
    entry = get_weights("resnet8_fast:fashion-mnist").meta_path
    for given, beside in ((run / "model.json", run), (entry, entry.with_suffix(".safetensors"))):
        args = ["finetune", "--strategy", "head", *TRAIN[2:], "--epochs", "1", "--out", str(tmp_path / "ft")]
        assert main([*args[:1], "--from", str(given), *args[1:]]) == 2
        _one_line_error(capsys, f"--from {given} is the description, not the weights: give --from {beside}")
        assert not (tmp_path / "ft").exists()
    assert main(["finetune", "--from", str(run), "--strategy", "head", *TRAIN[2:], "--epochs", "1",
                 "--out", str(tmp_path / "ft")]) == 0


def test_a_missing_submodule_names_the_package_to_reinstall(monkeypatch, capsys):
    def missing(args):  # a broken install: the package is there, a compiled part of it is not
        raise ModuleNotFoundError("No module named 'PIL._imaging'", name="PIL._imaging")

    monkeypatch.setitem(cli.COMMANDS, "models", missing)
    assert main(["models"]) == 2
    assert capsys.readouterr().err == ("error: No module named 'PIL._imaging': PIL is a dependency of resnet-lab that "
                                       "this Python environment lacks; reinstall resnet-lab's dependencies (pip "
                                       "install resnet-lab, or make setup in a checkout)\n")


def test_a_missing_dependency_is_named_with_the_way_out(monkeypatch, capsys):
    """Python's bare "No module named 'matplotlib'" (a declared dependency uninstalled) said nothing
    of what to do; an optional extra's own message is left as it is."""
    import resnet_lab.cli as cli

    def missing(args):
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    monkeypatch.setitem(cli.COMMANDS, "models", missing)
    assert main(["models"]) == 2
    _one_line_error(capsys, "No module named 'matplotlib': matplotlib is a dependency of resnet-lab that this "
                            "Python environment lacks; reinstall resnet-lab's dependencies")

    def extra(args):
        raise ModuleNotFoundError("--tensorboard needs the tensorboard package: pip install x", name="tensorboard")

    monkeypatch.setitem(cli.COMMANDS, "models", extra)
    assert main(["models"]) == 2
    assert "dependency of resnet-lab" not in _one_line_error(capsys, "needs the tensorboard package")


def test_predict_cam_without_the_extra_is_refused_before_any_prediction(trained, tmp_path, monkeypatch, capsys):
    import sys

    run, image = trained
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # the cam extra not installed
    assert main(["predict", str(run), str(image), "--cam", str(tmp_path / "cam.png")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not (tmp_path / "cam.png").exists()
    assert captured.err.startswith("error: Grad-CAM needs the optional extra: pip install 'resnet-lab[cam]'")


def test_finetune_resume_into_a_folder_that_does_not_exist_is_refused_before_loading(tmp_path, monkeypatch, capsys):
    """With --freeze-epochs the frozen phase started afresh in a folder --resume named by mistake
    (train, and finetune without a frozen phase, refused it)."""
    import resnet_lab.cli as cli

    loaded = []
    monkeypatch.setattr(cli, "load_source", lambda *a, **k: loaded.append(a))
    out = tmp_path / "missing"
    assert main(["finetune", "--from", "resnet8_fast:fashion-mnist", "--strategy", "all", "--freeze-epochs", "1",
                 *TRAIN[2:], "--epochs", "1", "--out", str(out), "--resume"]) == 2
    _one_line_error(capsys, f"--out {out} does not exist: nothing to resume")
    assert not out.exists() and not loaded


def test_json_outputs_hold_null_where_a_model_with_non_finite_weights_gives_nan(trained, tmp_path, capsys):
    """evaluate --json wrote "loss": NaN and predict --json NaN probabilities: not JSON."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    run, image = trained
    broken = tmp_path / "nan"
    shutil.copytree(run, broken)
    state = load_file(broken / "model.safetensors")
    state["fc.weight"][0, 0] = float("nan")
    save_file(state, broken / "model.safetensors")
    capsys.readouterr()
    assert main(["evaluate", str(broken), "--json"]) == 0
    assert json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(c))["loss"] is None
    assert main(["predict", str(broken), str(image), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out, parse_constant=lambda c: pytest.fail(c))
    assert all(p is None for _, p in result["top"])


def test_stop_after_without_out_and_a_huge_image_size_are_refused_in_one_line(capsys):
    assert main(["train", *TRAIN, "--epochs", "2", "--stop-after", "1"]) == 2
    _one_line_error(capsys, "without out (--out DIR) nothing is saved to resume")
    assert main(["train", *TRAIN[:4], "--image-size", "99999999999999999999", *TRAIN[6:]]) == 2
    _one_line_error(capsys, "image_size (--image-size) must be at most 8192 px")


def test_a_reader_that_leaves_the_pipe_does_not_end_a_training_run(tmp_path, monkeypatch):
    """`resnet-lab train ... | head -2` stopped the run after its first epoch with exit status 0 and
    no message: the BrokenPipeError of an epoch line ended the command."""
    import io
    import json
    import sys

    class Head(io.StringIO):  # the reader leaves after two lines
        def write(self, text):
            if self.getvalue().count("\n") >= 2:
                raise BrokenPipeError(32, "Broken pipe")
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", Head())
    out = tmp_path / "run"
    assert main(["train", *TRAIN, "--epochs", "3", "--out", str(out)]) == 0
    assert json.loads((out / "model.json").read_text())["epoch"] == 3


def test_an_error_line_to_a_stderr_reader_that_left_still_exits_2(tmp_path, monkeypatch):
    """QA 2026-12-06: `resnet-lab evaluate ... 2>&1 >/dev/null | head -1` exited 1 about half the
    time: printing the error line raised BrokenPipeError inside main's handler. In-process: a stderr
    whose reader left; in a real process: stderr a pipe with no reader at all (deterministic)."""
    import io
    import os
    import subprocess
    import sys

    class Gone(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(sys, "stderr", Gone())
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    monkeypatch.undo()
    read, write = os.pipe()
    os.close(read)
    try:
        code = subprocess.run([sys.executable, "-m", "resnet_lab", "evaluate", str(tmp_path / "missing")],
                              stdout=subprocess.DEVNULL, stderr=write, env={**os.environ, "OMP_NUM_THREADS": "1"},
                              timeout=300).returncode
    finally:
        os.close(write)
    assert code == 2


@pytest.mark.parametrize("shift", ["16", "100"])  # 16: the whole side, the first shift that leaves nothing
def test_a_tta_shift_as_large_as_the_image_names_the_flag(trained, capsys, shift):
    run, _ = trained
    assert main(["evaluate", str(run), "--tta-shift", shift]) == 2
    _one_line_error(capsys, f"--tta-shift {shift} moves the 16 px test images out of their frame")


@pytest.mark.parametrize("denied", ["W_OK", "X_OK"])  # no file can be made in a folder without either
def test_finetune_into_a_folder_it_cannot_write_is_refused_before_loading(tmp_path, capsys, monkeypatch, denied):
    import os

    import resnet_lab.cli as cli

    loaded = []
    monkeypatch.setattr(cli, "load_source", lambda *a, **k: loaded.append(a))
    ro = tmp_path / "ro"
    ro.mkdir()
    real_access = os.access
    # root may write anywhere: stand in for a folder the user cannot write to
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == ro and mode & getattr(os, denied)
                        else real_access(p, mode))
    assert main(["finetune", "--from", "resnet8_fast:fashion-mnist", "--strategy", "head", *TRAIN[2:],
                 "--epochs", "1", "--out", str(ro / "ft")]) == 2
    _one_line_error(capsys, f"{ro / 'ft'}: Permission denied")
    assert not loaded


_EDITS = {  # a hand edit of model.json -> the field the refusal must name
    "name is a number": (lambda m: m["arch"].update(name=5), "'arch.name' must be a model name"),
    "num_classes as text": (lambda m: m["arch"].update(num_classes="10"), "'arch.num_classes' must be a positive integer"),
    "classes as text": (lambda m: m.update(classes="abc"), "'classes' must be a list of 10 class names"),
    "too few classes": (lambda m: m.update(classes=["a", "b"]), "'classes' must be a list of 10 class names"),
    "mean as text": (lambda m: m.update(mean="0.3"), "'mean' must be a list of 1 or 3 numbers (one per channel)"),
    "mean for 2 channels": (lambda m: m.update(mean=[0.1, 0.2]), "'mean' must be a list of 1 or 3 numbers"),
    "std zero": (lambda m: m.update(std=[0]), "'std' must be a list of 1 or 3 numbers (one per channel), each > 0"),
    "input_size as text": (lambda m: m.update(input_size="28"), "'input_size' must be [channels, height, width]"),
    "input_size without channels": (lambda m: m.update(input_size=[28, 28]), "'input_size' must be [channels, height, width]"),
    "resize a number": (lambda m: m.update(resize=7), "'resize' must be a string"),
    "train_config a list": (lambda m: m.update(train_config=[]), "'train_config' must be a JSON object"),
    "in_channels as text": (lambda m: m["arch"].update(in_channels="1"), "its 'arch' builds no model: in_channels"),
    "unknown norm": (lambda m: m["arch"].update(norm="foo"), "its 'arch' builds no model: unknown norm 'foo'"),
}


@pytest.mark.parametrize("edit", sorted(_EDITS))
def test_a_hand_edited_model_json_is_refused_naming_the_file_and_the_field(trained, tmp_path, capsys, edit):
    """Each of these used to fail with an error naming neither (for input_size as text: "'>=' not
    supported between instances of 'int' and 'str'", for mean as text: "could not convert string to
    float: '.'"), and a wrong resize or train_config went unnoticed by evaluate."""
    run, image = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    meta = json.loads((copy / "model.json").read_text())
    change, field = _EDITS[edit]
    change(meta)
    (copy / "model.json").write_text(json.dumps(meta))
    for command in (["evaluate", str(copy)], ["predict", str(copy), str(image)]):
        assert main(command) == 2
        err = _one_line_error(capsys, field)
        assert str(copy / "model.json") in err and "Traceback" not in err


@pytest.mark.parametrize("argv, first", [
    (["train", "--model", "resnet8", "--epochs", "3", "--dataset", "fake", "--epochs", "5"],
     "resnet-lab train: error: --epochs is given twice (3, then 5): give it once"),
    (["train", "--model", "resnet8", "--epochs=3", "--dataset", "fake", "--epochs", "5"],
     "resnet-lab train: error: --epochs is given twice (3, then 5): give it once"),
    (["train", "--model", "resnet8", "--lr", "0.1", "--dataset", "fake", "--lr=0.1"],  # the same value: still once
     "resnet-lab train: error: --lr is given twice (0.1, then 0.1): give it once"),
    (["summary", "resnet8", "--input-size", "3", "32", "32", "--input-size", "1", "28", "28"],
     "resnet-lab summary: error: --input-size is given twice (3 32 32, then 1 28 28): give it once"),
    (["predict", "runs/r", "a.png", "--top-k", "-1", "--top-k", "2"],
     "resnet-lab predict: error: --top-k is given twice (-1, then 2): give it once"),
    (["summary", "--depth", "2", "resnet8", "--depth", "3"],  # the positional after a value is not part of it
     "resnet-lab summary: error: --depth is given twice (2, then 3): give it once"),
    (["train", "--model", "resnet8", "--epochs", "--epochs", "5"],  # the first one without its value
     "resnet-lab train: error: --epochs is given twice (alone, then 5): give it once"),
])
def test_a_flag_given_twice_is_refused_naming_both_values(capsys, argv, first):
    """`--epochs 3 ... --epochs 5` trained 5 epochs without a word; it is one of the two, or a typo."""
    assert _parse_error(capsys, argv) == [first, f"see `resnet-lab {argv[0]} --help` for its options"]


def test_a_switch_given_twice_and_a_flag_value_after_double_dash_are_not_refused(capsys):
    """A switch says the same thing twice (nothing is lost); after `--` a word is a value, not a flag."""
    assert _parse(["train", "--model", "m", "--dataset", "fake", "--bf16", "--bf16"]).bf16
    assert _parse(["predict", "--top-k", "2", "r", "--", "--top-k"]).images == ["--top-k"]
    # summary's --small-input takes an optional yes/no; alone it is a switch, and was refused twice
    assert _parse(["summary", "--small-input", "--small-input", "resnet8"]).small_input in (True, "yes")
    for twice in (["--small-input", "yes", "--small-input", "no"], ["--small-input=yes", "--small-input=no"]):
        with pytest.raises(SystemExit):  # a value, given as the next word or after =, is no switch
            _parse(["summary", "resnet8", *twice])
        assert "--small-input is given twice (yes, then no)" in capsys.readouterr().err


# --- evaluate: which weights file to try, the run's own dataset, an unfinished run ------------------


def test_a_broken_weights_file_points_to_the_runs_other_one(trained, tmp_path, capsys):
    """best.safetensors broken under --best: the way out is model.safetensors (drop --best), not the
    broken file itself; model.safetensors broken: add --best."""
    src, _ = trained
    run = tmp_path / "run"
    shutil.copytree(src, run)
    (run / "best.safetensors").write_bytes(b"\x13" * 200)
    assert main(["evaluate", str(run), "--best"]) == 2
    err = _one_line_error(capsys, "best.safetensors is not a readable safetensors file")
    assert (f"model.safetensors (its last epoch) may still be good: give {run / 'model.safetensors'} instead "
            "(evaluate: drop --best; Python: which='model')") in err and "evaluate --best" not in err
    assert main(["evaluate", str(run)]) == 0  # the ways out work
    assert main(["evaluate", str(run / "model.safetensors")]) == 0
    capsys.readouterr()
    shutil.copy(src / "best.safetensors", run / "best.safetensors")
    (run / "model.safetensors").write_bytes(b"\x13" * 200)
    assert main(["evaluate", str(run)]) == 2
    _one_line_error(capsys, f"The run's best.safetensors may still be good: give {run / 'best.safetensors'} instead "
                            "(evaluate: add --best; Python: which='best')")
    assert main(["evaluate", str(run), "--best"]) == 0
    assert main(["evaluate", str(run / "best.safetensors")]) == 0


@pytest.mark.parametrize("fault", ["broken", "missing"])
@pytest.mark.parametrize("command", ["predict", "export", "report", "finetune --from"])
def test_a_broken_or_missing_model_safetensors_names_best_safetensors_by_path_for_commands_without_best(
        trained, tmp_path, capsys, command, fault):
    """Only evaluate has --best: predict, export, report and finetune were told to "add --best", which their
    parser refuses. The hint names RUN/best.safetensors, which each of them takes."""
    src, image = trained
    run = tmp_path / "run"
    shutil.copytree(src, run)
    if fault == "broken":
        (run / "model.safetensors").write_bytes(b"\x13" * 200)
    else:
        (run / "model.safetensors").unlink()
    out = tmp_path / "out"
    out.mkdir()
    args = {**_commands(run, image, out), "report": ["report", str(run), "--out", str(out / "r.html")]}[command]
    assert main(args) == 2
    err = _one_line_error(capsys, f"give {run / 'best.safetensors'} instead (evaluate: add --best; Python: "
                                  "which='best')")
    assert "add --best (" not in err
    with pytest.raises(SystemExit):  # why the hint must not send these commands to --best
        _parse([*args, "--best"])
    capsys.readouterr()
    assert main([str(run / "best.safetensors") if a == str(run) else a for a in args]) == 0, capsys.readouterr().err


def test_a_run_without_model_safetensors_names_it_and_offers_best(trained, tmp_path, capsys):
    src, _ = trained
    run = tmp_path / "run"
    shutil.copytree(src, run)
    (run / "model.safetensors").unlink()
    assert main(["evaluate", str(run)]) == 2
    _one_line_error(capsys, f"{run} has a model.json but no model.safetensors (its last epoch's weights); its "
                            f"best.safetensors is there: give {run / 'best.safetensors'} instead (evaluate: add --best; "
                            "Python: which='best')")
    assert main(["evaluate", str(run), "--best"]) == 0
    assert main(["evaluate", str(run / "best.safetensors")]) == 0
    capsys.readouterr()
    (run / "best.safetensors").unlink()
    assert main(["evaluate", str(run)]) == 2
    _one_line_error(capsys, "no model.safetensors (its last epoch's weights): put the file back, or train again")


def test_evaluate_on_another_datasets_classes_says_to_drop_dataset(trained, tmp_path, capsys):
    """A run of Fashion-MNIST (its model.json as such a run writes it) evaluated with --dataset fake."""
    from resnet_lab.data import FASHION_MNIST_CLASSES

    src, _ = trained
    run = tmp_path / "run"
    shutil.copytree(src, run)
    meta = json.loads((run / "model.json").read_text())
    assert len(meta["classes"]) == len(FASHION_MNIST_CLASSES)
    meta.update(dataset="fashion-mnist", classes=list(FASHION_MNIST_CLASSES))
    (run / "model.json").write_text(json.dumps(meta))
    assert main(["evaluate", str(run), "--dataset", "fake"]) == 2
    err = _one_line_error(capsys, "differ from the model's ['T-shirt/top'")
    assert err.endswith(": drop --dataset to test on the run's own fashion-mnist")
    assert main(["evaluate", str(src), "--dataset", "fake"]) == 0  # the run's own: no error
    assert capsys.readouterr().err == ""


def test_evaluate_notes_an_unfinished_run_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TRAIN, "--epochs", "3", "--stop-after", "1", "--out", str(run)]) == 0
    meta = json.loads((run / "model.json").read_text())
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["n"] > 0  # stdout stays JSON
    assert out.err == (f"note: {run} is unfinished: it stopped after epoch {meta['epoch']} of "
                       f"{meta['train_config']['epochs']}; continue it with the command that started it and --resume (in Python: the same call with resume=True)\n")
    assert (meta["epoch"], meta["train_config"]["epochs"]) == (1, 3)  # as --stop-after 1 of --epochs 3 asked


def test_best_of_shipped_weights_names_them_as_typed_not_their_file_inside_the_package(capsys):
    """QA 2026-12-06: `evaluate resnet8_fast:fashion-mnist --best` named
    .../site-packages/resnet_lab/weights/resnet8_fast-fashion-mnist.safetensors and told the user to
    give the run directory, which shipped weights do not have."""
    from resnet_lab.runs import load_model
    from resnet_lab.weights import list_weights

    name = next(iter(list_weights()))
    assert main(["evaluate", name, "--best"]) == 2
    err = _one_line_error(capsys, f"{name} names shipped weights")
    assert err == (f"error: {name} names shipped weights, one set of them: there is no best epoch to choose (--best; in "
                   "Python: which='best'); drop --best")
    with pytest.raises(ValueError, match=f"^{name} names shipped weights"):
        load_model(name, which="best")
    assert load_model(name)[1]["arch"]  # without --best the same name loads


def test_torchs_cpp_extension_log_line_is_not_shown_by_a_command_and_its_level_comes_back(monkeypatch, caplog):
    """--compile on a CPU with a CUDA toolkit: inductor logs 'No CUDA runtime is found' at WARNING."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level

    def compiles(args):
        log.warning("No CUDA runtime is found, using CUDA_HOME='/usr/local'")
        return 0

    monkeypatch.setitem(cli.COMMANDS, "models", compiles)
    with caplog.at_level(logging.WARNING):
        assert cli.main(["models"]) == 0
    assert "No CUDA runtime" not in caplog.text
    assert log.level == level


@pytest.mark.parametrize("value", ["0", "1", "0.0", "1.0"])
def test_random_erasing_takes_both_ends_of_the_probability_range_as_data_config_does(value):
    """0 (off, the default and its help's word) and 1 (every image) are probabilities: DataConfig takes
    them, and the flag must too."""
    assert DataConfig("fake", random_erasing=float(value)).random_erasing == float(value)
    assert _parse(["train", *TRAIN, "--random-erasing", value]).random_erasing == float(value)


def test_json_null_stands_for_exactly_the_values_json_cannot_hold():
    """NaN and both infinities are not JSON (json.dumps with allow_nan=False refuses each): null."""
    for value in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError):
            json.dumps(value, allow_nan=False)
        assert cli._finite(value) is None
    assert cli._finite(0.25) == 0.25 and cli._finite(-1e308) == -1e308


def test_a_warnings_line_breaks_become_one_space_and_its_own_spaces_stay():
    """Only a line break and the indentation around it become one space: a file name's two spaces or a
    tab are the file's (hand-written expectation)."""
    message = "  /data/my  photos/a.png:\n      unreadable\tskipped  \n"
    assert cli._one_line_warning(message, UserWarning, "loaders.py", 1) == \
        "warning: /data/my  photos/a.png: unreadable\tskipped\n"


@pytest.mark.parametrize("dataset, searched", [("folder", False), ("fashion-mnist", True)])
def test_a_data_dir_file_offers_the_usual_places_only_for_datasets_that_have_them(tmp_path, monkeypatch, capsys,
                                                                                  dataset, searched):
    """An image folder has no usual places to search: its refusal must not offer leaving --data-dir out
    (the library's own message for each case is the reference)."""
    monkeypatch.chdir(tmp_path)
    Path("data.zip").write_text("x")
    with pytest.raises(NotADirectoryError) as expected:
        check_data_dir("data.zip", searched=searched)
    assert main(["train", "--model", "resnet8", "--dataset", dataset, "--data-dir", "data.zip"]) == 2
    assert capsys.readouterr().err == f"error: {expected.value}\n"


def test_an_ensemble_of_runs_on_different_datasets_is_refused_naming_both(trained, tmp_path, capsys):
    """Same classes, input size and normalization, another dataset: which test set would it be scored on?"""
    run, _ = trained
    other = tmp_path / "other"
    shutil.copytree(run, other)
    meta = json.loads((other / "model.json").read_text())
    (other / "model.json").write_text(json.dumps({**meta, "dataset": "cifar10"}))
    assert main(["evaluate", str(run), str(other)]) == 2
    _one_line_error(capsys, f"cannot ensemble {run} and {other}: their dataset differ (fake vs cifar10)")


def test_out_of_memory_names_num_classes_only_where_the_command_has_it():
    """summary's --num-classes sizes the classifier, so its out-of-memory line names it with its value;
    a command without the flag names the others (256e12 bytes / 2**30 = 238418.58 GiB, by hand)."""
    e = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 256000000000000 bytes.")
    others = "--batch-size, --image-size (or summary's --input-size), or pick a smaller model"
    assert cli._out_of_memory(e, argparse.Namespace(num_classes=10**12)) == \
        f"out of memory (238418.6 GiB asked): lower --num-classes (now 1000000000000), {others}"
    assert cli._out_of_memory(e, argparse.Namespace(command="train")) == f"out of memory (238418.6 GiB asked): lower {others}"


def test_a_bad_small_input_value_of_train_is_argparses_invalid_choice(capsys):
    """Only summary has a positional (the model) that may follow the bare flag; in train a word after
    --small-input is its value, and a wrong one is named as argparse names any bad choice."""
    probe = argparse.ArgumentParser(prog="resnet-lab train")  # argparse's own words for a bad choice
    probe.add_argument("--small-input", choices=["auto", "yes", "no"])
    with pytest.raises(SystemExit):
        probe.parse_args(["--small-input", "maybe"])
    expected = capsys.readouterr().err.splitlines()[-1]
    assert _parse_error(capsys, ["train", *TRAIN, "--small-input", "maybe"])[0] == expected


def test_a_full_disk_in_finetunes_frozen_phase_names_that_phases_own_checkpoint(tmp_path):
    """A file of the frozen phase (OUT/freeze_phase/...) belongs to that phase's folder, not to OUT: its
    own last checkpoint is kept and --resume continues it (the hint _run_write_hint gives a run folder
    holding train_state.pt)."""
    out = tmp_path / "ft"
    (out / ckpt.FROZEN_DIR).mkdir(parents=True)
    (out / ckpt.FROZEN_DIR / "train_state.pt").write_bytes(b"x")
    e = OSError(errno.ENOSPC, "No space left on device", str(out / ckpt.FROZEN_DIR / "model.safetensors"))
    line = cli._describe_os_error(e, argparse.Namespace(command="finetune", out=str(out)))
    assert line == (f"{out / ckpt.FROZEN_DIR / 'model.safetensors'}: No space left on device; the last checkpoint is "
                    "kept: free some disk space, then continue with the same command and --resume")


def test_an_ensemble_of_other_seeds_on_a_dataset_with_its_own_test_split_is_evaluated(tmp_path, capsys):
    """Only a folder without val/ holds out images by a seed; runs of other seeds on a dataset with its
    own test split (Fashion-MNIST) are scored together on all of it."""
    data = write_fmnist(tmp_path / "fm", n=32, seed=0)
    common = ["--model", "resnet8", "--dataset", "fashion-mnist", "--data-dir", str(data), "--image-size", "8",
              "--batch-size", "16", "--epochs", "1", "--no-progress", "--no-plots", "--device", "cpu"]
    runs = [str(tmp_path / f"seed{seed}") for seed in (0, 1)]
    assert main(["train", *common, "--out", runs[0]]) == 0
    shutil.copytree(runs[0], runs[1])  # as --seed 1 records itself (model.json names no split seed here)
    meta = json.loads((Path(runs[1]) / "model.json").read_text())
    assert "split_seed" not in meta
    meta["train_config"]["seed"] = 1
    (Path(runs[1]) / "model.json").write_text(json.dumps(meta))
    capsys.readouterr()
    assert main(["evaluate", *runs, "--data-dir", str(data), "--json"]) == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["n"] == 32  # every test image write_fmnist wrote
