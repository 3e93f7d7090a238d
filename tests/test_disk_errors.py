"""A full disk or a folder that turns read-only while a command writes: one line that names the
file the user asked for (never a temporary or staging name), what was kept and the way out, exit
code 2; nothing torn is left behind, and the same command (or --resume) goes on once there is room.
The failures are simulated: each writer is made to fail as the library it uses reports a full disk
(an OSError without a file name, safetensors' own error, a short write)."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import matplotlib.figure
import pytest
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file

from resnet_lab import runs
from resnet_lab.cli import main

from support import TINY_TRAIN, tiny_trained_run

TRAIN = TINY_TRAIN
FULL = os.strerror(errno.ENOSPC)
READ_ONLY = os.strerror(errno.EROFS)


def _full(*_a, **_k):
    raise OSError(errno.ENOSPC, FULL)  # as f.write, matplotlib and PIL report it: no file name


def _safetensors_full(*_a, **_k):  # safetensors 0.8's own error, no RuntimeError
    raise SafetensorError(f"Error while serializing: I/O error: {FULL} (os error 28)")


def _fail_on(monkeypatch, cls, method: str, name_part: str) -> None:
    """Make ``cls.method(self, fp, ...)`` fail as on a full disk when ``fp`` is a path holding ``name_part``."""
    real = getattr(cls, method)

    def failing(self, fp, *a, **k):
        if isinstance(fp, (str, os.PathLike)) and name_part in str(fp):
            _full()
        return real(self, fp, *a, **k)

    monkeypatch.setattr(cls, method, failing)


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return tiny_trained_run(tmp_path_factory.mktemp("disk"), epochs=1)


# --- the writing helpers ------------------------------------------------------------------------


def test_a_write_that_names_no_file_is_named_by_its_target_and_the_old_file_stays(tmp_path):
    path = tmp_path / "plot.png"
    path.write_bytes(b"old")
    with pytest.raises(OSError) as caught:
        runs.atomic_write(path, _full)
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(path))
    assert _files(tmp_path) == {"plot.png": b"old"}  # no temporary file left


@pytest.mark.parametrize("fails", ["safetensors", "staged name", "short write", "torch.save"])
def test_a_checkpoint_set_that_cannot_be_written_names_the_file_of_the_set_and_keeps_the_old_one(
        tmp_path, monkeypatch, fails):
    run = tmp_path / "run"
    runs.write_file_set(run, {"model.safetensors": lambda t: Path(t).write_bytes(b"old weights"),
                              "model.json": lambda t: Path(t).write_text("{}")})
    before = _files(run)

    def write(tmp):
        Path(tmp).write_bytes(b"part")
        if fails == "safetensors":
            _safetensors_full()
        if fails == "staged name":  # a folder turned read-only: the OS names the staging file
            raise OSError(errno.EROFS, READ_ONLY, tmp)
        if fails == "short write":  # numpy's tofile (the dynamo exporter's weights): no errno at all
            raise OSError("2304 requested and 0 written")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    real_statvfs = os.statvfs
    # the short write and torch's RuntimeError carry no errno: a disk with no block left tells
    monkeypatch.setattr(os, "statvfs", lambda p: SimpleNamespace(f_bavail=0, f_flag=0) if Path(p) == run
                        else real_statvfs(p))
    with pytest.raises(OSError) as caught:
        runs.write_file_set(run, {"model.safetensors": write, "model.json": lambda t: Path(t).write_text("{}")})
    code = errno.EROFS if fails == "staged name" else errno.ENOSPC
    assert (caught.value.errno, caught.value.filename) == (code, str(run / "model.safetensors"))
    assert _files(run) == before  # the old set, and no staged file


def test_a_failed_write_on_a_disk_that_is_not_full_still_names_the_target(tmp_path):
    def write(tmp):
        raise OSError("2304 requested and 0 written")

    with pytest.raises(OSError, match=rf"cannot write {tmp_path / 'm.onnx'}: 2304 requested and 0 written; free "):
        runs.atomic_write(tmp_path / "m.onnx", write)


def test_a_writers_own_oserror_that_is_no_disk_failure_goes_out_in_its_own_words(tmp_path):
    """PIL refuses an image mode with an OSError that has no errno: not a disk to free."""
    def write(tmp):
        Image.new("CMYK", (2, 2)).save(tmp, format="PNG")

    with pytest.raises(OSError, match=r"^cannot write mode CMYK as PNG$"):
        runs.atomic_write(tmp_path / "x.png", write)
    assert list(tmp_path.iterdir()) == []


def test_a_cleanup_that_the_read_only_folder_refuses_does_not_hide_the_writes_error(tmp_path, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    real_unlink = Path.unlink

    def unlink(self, missing_ok=False):
        if self.name.startswith("."):
            raise OSError(errno.EROFS, READ_ONLY, str(self))
        return real_unlink(self, missing_ok=missing_ok)

    def write(tmp):
        Path(tmp).write_bytes(b"part")
        raise OSError(errno.EROFS, READ_ONLY, tmp)

    monkeypatch.setattr(Path, "unlink", unlink)
    with pytest.raises(OSError) as caught:
        runs.write_file_set(run, {"model.safetensors": write})
    assert caught.value.filename == str(run / "model.safetensors")
    with pytest.raises(OSError) as caught:
        runs.atomic_write(run / "curves.png", write)
    assert caught.value.filename == str(run / "curves.png")


class _TornAppend:
    """metrics.jsonl opened for appending on a disk with room for a few bytes of the record."""

    def __init__(self, path, mode, **kw):
        self.file = open(path, mode, **kw)

    def write(self, text):
        self.file.write(text[:7])
        self.file.flush()
        _full()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def _torn_metrics(monkeypatch):
    real_open = open
    monkeypatch.setattr(runs, "open", lambda path, mode="r", **kw: _TornAppend(path, mode, **kw)
                        if Path(path).name == "metrics.jsonl" and "a" in mode else real_open(path, mode, **kw),
                        raising=False)


@pytest.mark.parametrize("first", [True, False])
def test_a_metrics_append_that_fails_is_taken_back_whole(tmp_path, monkeypatch, first):
    path = tmp_path / "metrics.jsonl"
    if not first:
        runs.append_metrics(tmp_path, {"epoch": 1, "train_loss": 2.0})
    before = _files(tmp_path)
    _torn_metrics(monkeypatch)
    with pytest.raises(OSError) as caught:
        runs.append_metrics(tmp_path, {"epoch": 2 - first, "train_loss": 1.0})
    assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, str(path))
    assert _files(tmp_path) == before  # no torn line, and on the first epoch no empty file


def test_a_metrics_table_that_cannot_be_written_takes_the_records_line_back_too(tmp_path, monkeypatch):
    runs.append_metrics(tmp_path, {"epoch": 1, "train_loss": 2.0})
    before = _files(tmp_path)
    monkeypatch.setattr(runs, "atomic_write_text", lambda path, text: _full())
    with pytest.raises(OSError):
        runs.append_metrics(tmp_path, {"epoch": 2, "train_loss": 1.0})
    assert _files(tmp_path) == before  # metrics.jsonl and metrics.csv still agree


# --- train: the checkpoint, the records, the plots ----------------------------------------------


def test_a_full_disk_at_the_first_checkpoint_says_nothing_was_saved_and_the_same_command_starts_again(
        tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["train", *TRAIN, "--epochs", "1", "--out", str(out)]
    monkeypatch.setattr(runs, "save_file", _safetensors_full)
    assert main(argv) == 2
    err = _one_line(capsys)
    assert err.startswith(f"error: {out / 'model.safetensors'}: {FULL}; nothing was saved yet: free some disk space")
    assert "run the same command again" in err and "unexpected" not in err
    monkeypatch.undo()
    assert main(argv) == 0
    assert json.loads((out / "model.json").read_text())["epoch"] == 1


def test_a_full_disk_at_a_later_checkpoint_keeps_the_last_one_and_resume_goes_on(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["train", *TRAIN, "--epochs", "2", "--out", str(out)]
    real = runs.save_file

    def full_after_the_first(state, path, metadata=None):
        if (Path(path).parent / "model.json").exists():
            _safetensors_full()
        real(state, path, metadata=metadata)

    monkeypatch.setattr(runs, "save_file", full_after_the_first)
    assert main(argv) == 2
    err = _one_line(capsys)
    assert err == (f"error: {out / 'model.safetensors'}: {FULL}; the last checkpoint is kept: free some disk space, "
                   "then continue with the same command and --resume")
    assert json.loads((out / "model.json").read_text())["epoch"] == 1
    load_file(out / "model.safetensors")  # whole
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_full_disk_during_the_first_metrics_append_leaves_nothing_that_blocks_the_same_command(
        tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    argv = ["train", *TRAIN, "--epochs", "1", "--out", str(out)]
    _torn_metrics(monkeypatch)
    assert main(argv) == 2
    err = _one_line(capsys)
    assert err.startswith(f"error: {out / 'metrics.jsonl'}: {FULL}; nothing was saved yet: free some disk space")
    assert not out.exists() or not any(out.iterdir())  # a folder the run made is removed with it
    monkeypatch.undo()
    assert main(argv) == 0


def test_a_full_disk_while_drawing_the_confusion_matrix_names_it_and_the_kept_checkpoint(tmp_path, capsys,
                                                                                          monkeypatch):
    out = tmp_path / "run"
    _fail_on(monkeypatch, matplotlib.figure.Figure, "savefig", ".confusion.png.")
    drawn = [a for a in TRAIN if a != "--no-plots"]
    assert main(["train", *drawn, "--epochs", "1", "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"error: {out / 'confusion.png'}: {FULL}; the last checkpoint is kept")
    assert "--resume" in err and not any(p.name.startswith(".") for p in out.iterdir())


def test_a_folder_that_turns_read_only_mid_run_names_the_checkpoint_file_and_points_to_resume(
        tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real = runs.save_file

    def read_only_after_the_first(state, path, metadata=None):
        if (Path(path).parent / "model.json").exists():
            raise OSError(errno.EROFS, READ_ONLY, path)  # what the OS says: the staging name
        real(state, path, metadata=metadata)

    monkeypatch.setattr(runs, "save_file", read_only_after_the_first)
    assert main(["train", *TRAIN, "--epochs", "2", "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert err == (f"error: {out / 'model.safetensors'}: {READ_ONLY}; the file system is read-only (the last "
                   "checkpoint is kept): continue with the same command and --resume once the folder is writable "
                   "again")


def test_finetune_whose_main_phase_cannot_save_says_the_frozen_phase_is_kept(trained, tmp_path, capsys,
                                                                             monkeypatch):
    src, _ = trained
    out = tmp_path / "ft"
    real = runs.save_file

    def full_outside_the_frozen_phase(state, path, metadata=None):
        if Path(path).parent == out:
            _safetensors_full()
        real(state, path, metadata=metadata)

    monkeypatch.setattr(runs, "save_file", full_outside_the_frozen_phase)
    assert main(["finetune", "--from", str(src), "--strategy", "all", "--freeze-epochs", "1", *TRAIN[2:],
                 "--epochs", "2", "--out", str(out)]) == 2
    err = _one_line(capsys)
    assert err.startswith(f"error: {out / 'model.safetensors'}: {FULL}; no checkpoint of this phase yet, the frozen "
                          "phase's is kept: free some disk space, then give the same command with --resume")


# --- the other commands' outputs ----------------------------------------------------------------


def test_report_lr_find_and_cam_name_their_output_on_a_full_disk(trained, tmp_path, capsys, monkeypatch):
    run, image = trained
    # only the output files: the report draws its figures into memory
    _fail_on(monkeypatch, matplotlib.figure.Figure, "savefig", ".lr.png.")
    _fail_on(monkeypatch, Image.Image, "save", ".img_cam.png.")
    real_open = open
    monkeypatch.setattr(runs, "open", lambda path, mode="r", **kw: _full() if "w" in mode and ".r.html." in str(path)
                        else real_open(path, mode, **kw), raising=False)
    report, plot, cams = tmp_path / "r.html", tmp_path / "lr.png", tmp_path / "cams"
    cams.mkdir()
    for argv, named, option in (
            (["report", str(run), "--out", str(report)], report, "--out"),
            (["lr-find", *TRAIN[:6], "--batch-size", "16", "--steps", "3", "--out", str(plot)], plot, "--out"),
            (["predict", str(run), str(image), "--cam", str(cams)], cams / "img_cam.png", "--cam")):
        assert main(argv) == 2, argv
        assert _one_line(capsys) == (f"error: {named}: {FULL}; free some disk space or choose another output path "
                                     f"({option})")
    assert list(tmp_path.glob("**/.*")) == []


def test_export_on_a_full_disk_is_not_blamed_on_the_exporter_and_keeps_the_earlier_file(trained, tmp_path, capsys,
                                                                                        monkeypatch):
    run, _ = trained
    out = tmp_path / "e.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    before = out.read_bytes()
    monkeypatch.setattr(torch.onnx, "export", _full)
    for opset in ("17", "18"):
        capsys.readouterr()
        assert main(["export", str(run), "--out", str(out), "--opset", opset]) == 2
        assert _one_line(capsys) == (f"error: {out}: {FULL}; free some disk space or choose another output path "
                                     f"(--out); the earlier e.onnx is left as it was")
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["e.onnx"]


@pytest.mark.parametrize("code, way_out", [
    (errno.EROFS, "the file system is read-only: choose another output path (--out); the earlier e.onnx is left as it "
                  "was"),
    (errno.EACCES, "check the permissions (of an output: or choose another output path (--out))"),
], ids=["read-only", "permission"])
def test_export_that_cannot_write_names_the_way_out_and_keeps_the_earlier_file(trained, tmp_path, capsys,
                                                                               monkeypatch, code, way_out):
    """README: a folder that turns read-only is a line naming the way out, the earlier output left as
    it was; a permission refused names the output option too."""
    run, _ = trained
    out = tmp_path / "e.onnx"
    assert main(["export", str(run), "--out", str(out)]) == 0
    before = out.read_bytes()

    def refused(*_a, **_k):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(torch.onnx, "export", refused)
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {out}: {os.strerror(code)}; {way_out}\n"
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["e.onnx"]


def test_a_failed_move_names_both_files(trained, tmp_path, capsys, monkeypatch):
    import resnet_lab.cli as cli

    src, dst = tmp_path / "cache" / "train.gz.part", tmp_path / "cache" / "train.gz"

    def download(*a, **k):  # a download's last step, a rename, as os.rename reports its failure
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(src), None, str(dst))

    monkeypatch.setattr(cli, "load_data", download)
    run, _ = trained
    shutil.copytree(run, tmp_path / "run")
    assert main(["evaluate", str(tmp_path / "run")]) == 2
    assert capsys.readouterr().err == f"error: {src} -> {dst}: {os.strerror(errno.EXDEV)}\n"


def test_a_full_disk_while_downloading_data_for_evaluate_names_no_output_option(trained, tmp_path, capsys,
                                                                                monkeypatch):
    import resnet_lab.cli as cli

    def download(*a, **k):
        raise OSError(errno.ENOSPC, FULL, str(tmp_path / "cache" / "train.gz"))

    monkeypatch.setattr(cli, "load_data", download)
    run, _ = trained
    shutil.copytree(run, tmp_path / "run")
    assert main(["evaluate", str(tmp_path / "run")]) == 2
    assert _one_line(capsys) == f"error: {tmp_path / 'cache' / 'train.gz'}: {FULL}; free some disk space or choose another path"


def test_an_experiment_on_a_full_disk_says_the_same_command_needs_a_new_or_empty_out(tmp_path, capsys, monkeypatch):
    """What it wrote before the disk filled stays in --out, which a new experiment refuses: the way out
    is a new or empty --out (or deleting it), not freeing space alone."""
    out = tmp_path / "ex"
    _fail_on(monkeypatch, matplotlib.figure.Figure, "savefig", ".png.")
    argv = ["experiment", "bn_regularization", "--budget", "smoke", "--out", str(out)]
    assert main(argv) == 2
    err = _one_line(capsys)
    assert err.endswith(f"{FULL}; free some disk space, then run it again with a new or empty --out, or delete "
                        f"{out} first"), err
    monkeypatch.undo()
    if any(out.iterdir()):  # the way out it names works: a rerun into the same folder is refused ...
        assert main(argv) == 2 and "not empty" in _one_line(capsys)
        shutil.rmtree(out)
    assert main(argv) == 0  # ... and after deleting it, the same command runs
