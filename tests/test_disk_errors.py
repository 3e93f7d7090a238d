"""A full disk or a folder that turns read-only while a command writes: one line that names the
file the user asked for (never a temporary or staging name), what was kept and the way out, exit
code 2; nothing torn is left behind, and the same command (or --resume) goes on once there is room.
The failures are simulated: each writer is made to fail as the library it uses reports a full disk
(an OSError without a file name, safetensors' own error, a short write)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from safetensors import SafetensorError

from resnet_lab import runs

FULL = os.strerror(errno.ENOSPC)
READ_ONLY = os.strerror(errno.EROFS)


def _full(*_a, **_k):
    raise OSError(errno.ENOSPC, FULL)  # as f.write, matplotlib and PIL report it: no file name


def _safetensors_full(*_a, **_k):  # safetensors 0.8's own error, no RuntimeError
    raise SafetensorError(f"Error while serializing: I/O error: {FULL} (os error 28)")


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


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
