"""The run directory: weights as safetensors, metadata as JSON, training state as tensors only.

A run directory holds (DESIGN.md "Runs and checkpoints")::

    model.safetensors   weights of the last completed epoch (or of the interrupt)
    best.safetensors    weights of the best test accuracy so far
    model.json          architecture (create_model arguments), classes, input size, mean/std,
                        epoch, metrics
    train_state.pt      optimizer, scheduler, RNG and loader position; tensors and plain Python
                        containers only, so ``torch.load(..., weights_only=True)`` reads it
    metrics.jsonl       one JSON line per epoch
    metrics.csv         the same records as a table (one row per epoch), rewritten from metrics.jsonl
                        whenever it changes, so the two always agree
    curves.png, confusion.png

Every file is written to a temporary name in the same directory and renamed into place, so a
crash or Ctrl-C in the middle of a save never leaves a half-written file behind.

A checkpoint is several files (weights, best weights, model.json, train_state.pt) that must agree
on the epoch. :func:`write_file_set` makes the set one atomic unit with a redo log: every new file
is first written in full under a staging name, then a small manifest naming them is written
atomically (the commit point), then the staged files are renamed into place and the manifest is
removed. A kill before the commit point leaves the old set untouched; a kill after it leaves a
manifest that :func:`recover_run_dir` (called whenever a run is resumed or loaded) rolls forward.
Either way the set is never a mix of two checkpoints.

One process writes a run directory at a time: the trainer holds an exclusive advisory lock on the
directory (:class:`RunLock`) from start to end, and a second writer is refused before it touches
anything (recovery included). A reader (:func:`load_model`) rolls a killed writer's save forward
only when no writer holds the run; while one does, it waits out a save's renames and reads again
when a save landed during its read, so it never mixes two saves.
"""

from __future__ import annotations

import csv
import io
import json
import errno
import os
import re
import tempfile
import time
import weakref
from contextlib import suppress
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file
from torch import nn

from .data.config import check_device_present
from .data.folder import holds_out
from .models import create_model, list_models, meta_device, model_info

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; one writer per run directory is then the user's care
    fcntl = None  # type: ignore[assignment]
from .weights import WeightsHashError, get_weights, is_weights_name, load_safetensors, sha256_of

__all__ = [
    "FORMAT",
    "RUN_FILES",
    "RUN_OUTPUTS",
    "RunInUseError",
    "RunLock",
    "arch_outputs",
    "check_distinct_runs",
    "check_output_file",
    "is_one_of",
    "atomic_write",
    "atomic_write_text",
    "find_model_json",
    "check_meta",
    "check_metrics_record",
    "load_meta",
    "trained_folder",
    "weights_path",
    "load_model",
    "load_state_dict_file",
    "is_safetensors",
    "append_metrics",
    "check_arch",
    "load_train_state",
    "missing_run",
    "read_json",
    "read_metrics",
    "recover_run_dir",
    "resolve_source",
    "save_checkpoint",
    "save_model",
    "save_state_dict",
    "settle_run_dir",
    "stopped_words",
    "unfinished_at",
    "unfinished_note",
    "write_error",
    "write_file_set",
]

FORMAT = "resnet-lab/1"

# The files whose presence makes a directory a run: a new run must not overwrite them, and no
# other output (an ONNX file, a report, a plot) may land on one.
RUN_FILES = ("train_state.pt", "model.json", "model.safetensors", "best.safetensors", "metrics.jsonl")
# What else a run writes: its table and plots. No other output may land on them either, and a new
# run does not start in a directory that holds them without a run.
RUN_OUTPUTS = ("metrics.csv", "curves.png", "confusion.png")


def unwritable(folder: str | os.PathLike, path: str | os.PathLike | None = None) -> OSError:
    """The error for a ``folder`` that ``os.access`` says cannot be written (naming ``path``, the
    file meant to go there): a read-only file system when it is one, else a permission error."""
    try:
        read_only = bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): the permission error it most likely is
        read_only = False
    code = errno.EROFS if read_only else errno.EACCES
    return (OSError if read_only else PermissionError)(code, os.strerror(code), str(path or folder))


# The mark every output file of a command carries (an ONNX file's producer_name, a PNG's Software
# text, a JPEG's comment, an HTML page's generator): an existing file is replaced only if it has it.
OUTPUT_MARK = "resnet-lab"


def is_own_output(path: str | os.PathLike) -> bool:
    """Whether the file at ``path`` was written by resnet-lab (carries :data:`OUTPUT_MARK`), so a
    command may replace it: ``.onnx``, ``.html``/``.htm`` and pictures; anything else, no."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".onnx":
            import onnx  # deferred: the optional onnx extra, present wherever ONNX files are written

            return onnx.load(str(path), load_external_data=False).producer_name == OUTPUT_MARK
        if suffix in (".html", ".htm"):
            with open(path, "rb") as f:
                return f'<meta name="generator" content="{OUTPUT_MARK}'.encode() in f.read(4096)
        from PIL import Image  # deferred: only pictures need it

        with Image.open(path) as img:
            mark = img.info.get("Software") or img.info.get("comment") or ""
        if isinstance(mark, bytes):
            mark = mark.decode("utf-8", "replace")
        return str(mark).startswith(OUTPUT_MARK)
    except Exception:  # unreadable, or not what its name says: not ours
        return False


def is_one_of(path: str | os.PathLike, others: Sequence[str | os.PathLike]) -> bool:
    """Whether the existing file ``path`` is one of ``others`` (the same file, however named)."""
    path = Path(path)
    return path.is_file() and any(Path(o).exists() and path.samefile(o) for o in others)


def check_output_file(out: str | os.PathLike, *, kind: str, suffixes: tuple[str, ...],
                      inputs: tuple[str | os.PathLike, ...] = ()) -> Path:
    """Refuse an output path that would destroy something, before any work is done: one of the
    command's ``inputs``, a file of a run directory, or an existing file that resnet-lab did not
    write (:func:`is_own_output`); and a name that does not end in one of ``suffixes`` (lower case,
    with the dot), so that an earlier output is recognized by its name and mark and can be written
    again (``r20.onnx`` twice).

    Raises:
        FileExistsError: an existing file that must not be overwritten, named with the way out.
        ValueError: a name without the suffix.
    """
    path = Path(out)
    if path.is_dir():  # the writers say so, with a file name to use
        return path
    folder = next((p for p in path.parents if p.exists()), Path("."))
    if not folder.is_dir():  # found after the work, by the writer, until this was checked here
        raise NotADirectoryError(f"cannot write {path}: {folder} is a file, not a folder: choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):  # before the work, not after it
        raise unwritable(folder, path)
    if not path.is_file():
        if path.suffix.lower() not in suffixes:
            raise ValueError(f"{path} does not end in {' or '.join(suffixes)}: name the {kind} file so, e.g. "
                             f"{path.with_suffix(suffixes[0])}")
        return path
    if is_one_of(path, inputs):
        raise FileExistsError(f"{path} is one of this command's inputs; writing the {kind} there would destroy "
                              "it: choose another output path")
    if path.name in RUN_FILES + RUN_OUTPUTS and (path.parent / "model.json").exists():
        raise FileExistsError(f"{path} belongs to the run in {path.parent}; writing the {kind} there would destroy "
                              "it: choose another output path")
    if path.suffix.lower() not in suffixes:
        raise FileExistsError(f"{path} exists and does not end in {' or '.join(suffixes)}, so it is no earlier "
                              f"{kind} output: choose another output path, or delete it first")
    if not is_own_output(path):
        raise FileExistsError(f"{path} exists and was not written by resnet-lab, so it is no earlier {kind} output: "
                              "choose another output path, or delete it first")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_FILE_MODE = 0o666 & ~_umask()  # what open() would give: others on a shared --out can read runs


# A failed write as a library words it: Rust's "(os error 28)" (safetensors), Python's "[Errno 28]"
_ERRNO_IN_TEXT = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]")
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG)


def _disk_full(folder: Path) -> bool:
    """Whether the file system of ``folder`` has no block left (for a failed write that says no errno)."""
    try:
        return os.statvfs(folder).f_bavail == 0
    except (OSError, AttributeError):  # gone, or no statvfs (Windows)
        return False


def write_error(e: BaseException, target: str | os.PathLike, temps: Sequence[str] = ()) -> OSError | None:
    """The error to raise for ``e``, raised while writing ``target`` (through one of the temporary
    files ``temps``): an OSError with the errno the write failed with, named by ``target``, so that
    the message names the file the user asked for and the CLI can add the way out. A full disk is
    reported without a file name by ``f.write``, matplotlib and PIL, by safetensors as its own
    error ("... (os error 28)"), by torch.save as a RuntimeError and by numpy as a short write
    ("2304 requested and 0 written"): each is recognized (the last two by the disk being full).
    ``e`` itself when it names another file; None when ``e`` is no failed write."""
    temps = tuple(map(str, temps))
    if isinstance(e, OSError) and e.errno is not None:
        if e.filename is not None and str(e.filename) not in temps:
            return e  # about another file (an input), which it names
        code = e.errno
    elif isinstance(e, (OSError, RuntimeError, SafetensorError)):
        found = _ERRNO_IN_TEXT.search(str(e))
        code = int(found.group(1) or found.group(2)) if found else next(
            (c for c in _WRITE_ERRNOS if os.strerror(c) in str(e)), None)
        if code is None and _disk_full(Path(target).parent):
            code = errno.ENOSPC
        if code is None:
            return None
    else:
        return None
    return OSError(code, os.strerror(code), str(target))  # PermissionError for EACCES, as the OS's own


def _raise_named(e: BaseException, target: str | os.PathLike, temps: Sequence[str]) -> None:
    """Raise :func:`write_error`'s error for ``e`` (from it), or ``e`` itself when it is none other."""
    error = write_error(e, target, temps)
    if error is None or error is e:
        raise e
    raise error from e


# numpy's (and so onnx's) words for a write the disk cut short: an OSError with no errno
_SHORT_WRITE = re.compile(r"\d+ requested and \d+ written")


def _write_staged(tmp: str, write: Callable[[str], None], target: Path) -> None:
    """Run ``write(tmp)``, make the file durable and give it the normal file mode (mkstemp's is 0600).
    A failed write is an OSError naming ``target`` (:func:`write_error`), never ``tmp``."""
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _FILE_MODE)
    except (OSError, RuntimeError, SafetensorError) as e:
        # besides a recognized failed write, in its own words: a SafetensorError that is no I/O error (the
        # tensors: our bug), an OSError that is no short write (PIL: "cannot write mode CMYK as PNG")
        if (write_error(e, target, (tmp,)) is not None or isinstance(e, SafetensorError)
                or (isinstance(e, OSError) and not _SHORT_WRITE.search(str(e)))):
            _raise_named(e, target, (tmp,))
        # torch.save reports a failed write as a RuntimeError, numpy as a short write, with nothing more
        # to recognize them by when the disk is not full (a quota)
        last = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise OSError(f"cannot write {target}: {last}; free some disk space, check the permissions, or choose "
                      "another --out") from e


def _fsync_dir(path: Path) -> None:
    # Renames are durable only once the directory itself is synced (POSIX); not possible everywhere.
    with suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically rename the temporary file to ``path``."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory: give a file name inside it")
    blocking = next((p for p in reversed(path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:  # mkdir would say only "File exists" of it
        raise NotADirectoryError(f"cannot write {path}: {blocking} is a file, not a folder: choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # named by the user's path, not the temporary one nobody asked for
        raise type(e)(e.errno, e.strerror, str(path)) from e
    os.close(fd)
    try:
        _write_staged(tmp, write, path)
        os.replace(tmp, path)
    except BaseException as e:
        with suppress(OSError):  # a folder turned read-only keeps it: the write's error is the one to tell
            Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            _raise_named(e, path, (tmp,))
        raise
    return path


_MANIFEST = ".checkpoint-pending.json"
_STAGED_SUFFIX = ".staged"


class RunInUseError(RuntimeError):
    """Another process is writing the run directory."""


class RunLock:
    """The exclusive lock of the one process that writes a run directory: an advisory ``flock`` on
    the directory itself, so that taking it leaves no file behind.

    ``acquire()`` raises :class:`RunInUseError` when another process holds it; ``release()`` (also
    at process exit, by the OS) lets the next one in.

    A ``flock`` belongs to the open file, which a forked child shares: the lock would last until the
    last of the holder's children (an image folder's DataLoader workers) exited too, so a killed
    run's folder stayed refused until its workers noticed. Every forked child closes its copies at
    once (:func:`_close_locks_in_child`; closing, not unlocking, which would free the parent's lock).
    """

    _held: "weakref.WeakSet[RunLock]" = weakref.WeakSet()

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        if fcntl is None or self._fd is not None:
            return self
        fd = os.open(self.run_dir, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunInUseError(f"{self.run_dir} is being written by another process (a train, finetune or "
                                "experiment with this --out): wait for it to finish, or choose another --out") from None
        self._fd = fd
        RunLock._held.add(self)
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
            RunLock._held.discard(self)

    def __del__(self) -> None:  # a run abandoned by an exception between start and its end
        self.release()

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _close_locks_in_child() -> None:
    """In a forked child: close the inherited file descriptors of the parent's locks, so that the
    lock ends with the parent (the parent's own descriptors keep it while the parent lives)."""
    for lock in list(RunLock._held):  # held locks only: release() drops a lock from the set
        with suppress(OSError):
            os.close(lock._fd)
        lock._fd = None
    RunLock._held.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_locks_in_child)


def _writer_active(run_dir: Path) -> bool:
    """Whether another process (or another RunLock of this one) holds ``run_dir``'s lock."""
    if fcntl is None:
        return False
    try:
        with RunLock(run_dir):
            return False
    except RunInUseError:
        return True
    except OSError:  # unreadable: nobody can tell; read as if no writer
        return False


def _model_json_stamp(run_dir: Path) -> tuple[int, int] | None:
    # every checkpoint set replaces model.json with a new file: a new inode
    with suppress(OSError):
        st = (run_dir / "model.json").stat()
        return st.st_ino, st.st_mtime_ns
    return None


def _read_whole(run_dir: Path, read: Callable[[], Any], wait_s: float = 60.0) -> Any:
    """``read()`` the files of one checkpoint set, never of two: wait while a save is being renamed
    into place (its manifest exists), and read again when one landed during the read."""
    deadline = time.monotonic() + wait_s
    while True:
        # only a live writer's renames end; a dead writer's manifest in a read-only copy stays
        while (run_dir / _MANIFEST).exists() and time.monotonic() < deadline and _writer_active(run_dir):
            time.sleep(0.02)
        before = _model_json_stamp(run_dir)
        result = read()
        settled = not (run_dir / _MANIFEST).exists() or not _writer_active(run_dir)
        if (settled and _model_json_stamp(run_dir) == before) or time.monotonic() > deadline:
            return result


def settle_run_dir(run_dir: str | os.PathLike) -> None:
    """Before reading a run: roll a killed writer's committed save forward, unless a writer is
    active (its renames are then under way). A read-only copy is read as it is."""
    run_dir = Path(run_dir)
    if not ((run_dir / _MANIFEST).exists() or _leftovers(run_dir)) or _writer_active(run_dir):
        return
    with suppress(OSError, RunInUseError):  # read-only, or a writer started just now: read what is there
        with RunLock(run_dir):
            recover_run_dir(run_dir)


def write_file_set(run_dir: str | os.PathLike, writers: dict[str, Callable[[str], None]]) -> None:
    """Replace the files ``writers`` names (``{file name: write(tmp_path)}``) in ``run_dir`` as one
    atomic unit: after a crash at any point, either all of them are the new ones (after
    :func:`recover_run_dir`) or all are the old ones. A failed write (a full disk, a folder turned
    read-only) is an OSError naming the file of the set it was writing, never a staging name; the
    old set is then left as it was."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    staged: dict[str, str] = {}
    manifest = run_dir / _MANIFEST
    try:
        for name, write in writers.items():
            tmp = run_dir / f".{name}{_STAGED_SUFFIX}"
            staged[name] = tmp.name
            _write_staged(str(tmp), write, run_dir / name)
        _fsync_dir(run_dir)
        try:
            atomic_write_text(manifest, json.dumps({"files": staged}) + "\n")  # the commit point
        except OSError as e:  # the set is not saved: name its first file, not the manifest nobody asked for
            _raise_named(e, run_dir / next(iter(writers)), (str(manifest),))
    except BaseException:
        if not manifest.exists():  # not committed (a kill just after the manifest's rename is)
            for tmp_name in staged.values():
                with suppress(OSError):  # read-only by now: the next start removes them (recover_run_dir)
                    (run_dir / tmp_name).unlink(missing_ok=True)
        raise
    _fsync_dir(run_dir)
    _apply_manifest(run_dir)


def _apply_manifest(run_dir: Path) -> None:
    manifest = run_dir / _MANIFEST
    files = read_json(manifest)["files"]
    for name, tmp_name in files.items():
        if (run_dir / tmp_name).exists():  # already renamed when an earlier roll-forward was cut short
            try:
                os.replace(run_dir / tmp_name, run_dir / name)
            except OSError as e:  # committed: the next start or load rolls it forward
                _raise_named(e, run_dir / name, (str(run_dir / tmp_name),))
    _fsync_dir(run_dir)
    manifest.unlink()


def _leftovers(run_dir: Path) -> list[Path]:
    """The staged and temporary files a killed save left (a live writer's are in use)."""
    if not run_dir.is_dir():
        return []
    return [p for p in run_dir.iterdir() if p.name.startswith(".") and p.suffix in (".tmp", _STAGED_SUFFIX)]


def recover_run_dir(run_dir: str | os.PathLike) -> list[str]:
    """Bring a run directory left by a killed writer back to one consistent checkpoint.

    A committed but unfinished checkpoint (its manifest exists) is rolled forward; staged and
    temporary files of an uncommitted one are removed. Returns what was done, for the log.
    """
    run_dir = Path(run_dir)
    done: list[str] = []
    if not run_dir.is_dir():
        return done
    if (run_dir / _MANIFEST).exists():
        _apply_manifest(run_dir)
        done.append("completed a checkpoint that a killed process had committed but not finished")
    leftovers = _leftovers(run_dir)
    for p in leftovers:
        p.unlink(missing_ok=True)
    if leftovers:
        done.append(f"removed {len(leftovers)} temporary file(s) of an interrupted save")
    return done


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file and a rename: a reader sees the
    old file or the new one, never a part. Returns the path."""
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def _cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous tensors without shared storage; clone breaks any sharing.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def _safetensors_writer(state: dict[str, torch.Tensor], metadata: dict | None = None) -> Callable[[str], None]:
    meta = {"format": FORMAT, **({k: str(v) for k, v in metadata.items()} if metadata else {})}
    return lambda tmp: save_file(state, tmp, metadata=meta)


def _text_writer(text: str) -> Callable[[str], None]:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return write


def save_state_dict(path: str | os.PathLike, state: dict[str, torch.Tensor] | nn.Module, metadata: dict | None = None) -> Path:
    """Write weights to a ``.safetensors`` file atomically."""
    if isinstance(state, nn.Module):
        state = _cpu_state_dict(state)
    return atomic_write(path, _safetensors_writer(state, metadata))


def arch_outputs(arch: dict[str, Any]) -> int | None:
    """The outputs of the model an ``arch`` (``model.model_config``) builds: its stacked head's
    classes when it has one, else ``num_classes``; None when it does not say."""
    return arch.get("stacked_head") or arch.get("num_classes")


def _model_meta(model: nn.Module, meta: dict[str, Any]) -> dict[str, Any]:
    """``meta`` with the model's ``arch``, checked against the model: a model.json that does not
    describe its weights could never be loaded."""
    config = getattr(model, "model_config", None)
    if meta.get("arch") is None:
        if config is None:
            raise ValueError("meta has no 'arch' and the model has no model_config: build it with create_model")
        meta = {**meta, "arch": config}
    elif config is not None and meta["arch"].get("name") != config.get("name"):
        raise ValueError(f"meta's arch ({meta['arch'].get('name')}) does not describe the model "
                         f"({config.get('name')}): leave 'arch' out of meta, or pass the model's model_config")
    classes, outputs = meta.get("classes"), arch_outputs(config or meta["arch"])
    if classes is not None and outputs is not None and len(classes) != outputs:
        raise ValueError(f"meta names {len(classes)} classes but the model has {outputs} outputs: give one class "
                         "name per output")
    return {"format": FORMAT, **meta}


def save_checkpoint(
    run_dir: str | os.PathLike,
    model: nn.Module,
    meta: dict[str, Any],
    *,
    best: bool = False,
    train_state: dict[str, Any] | None = None,
) -> None:
    """Write ``model.safetensors``, ``model.json`` and, when given, ``best.safetensors`` and
    ``train_state.pt`` as one atomic set (see :func:`write_file_set`).

    ``meta`` must carry ``arch`` (the ``create_model`` arguments, as ``model.model_config``) unless
    the model has ``model_config``; everything else (classes, input_size, mean, std, epoch,
    metrics) is stored as given.
    """
    meta = _model_meta(model, meta)
    state = _cpu_state_dict(model)
    writers: dict[str, Callable[[str], None]] = {"model.safetensors": _safetensors_writer(state)}
    if best:
        writers["best.safetensors"] = _safetensors_writer(state)
    writers["model.json"] = _text_writer(json.dumps(meta, indent=2, default=_json_default) + "\n")
    if train_state is not None:
        writers["train_state.pt"] = lambda tmp: torch.save(train_state, tmp)
    write_file_set(run_dir, writers)


def save_model(run_dir: str | os.PathLike, model: nn.Module, meta: dict[str, Any], *, best: bool = False) -> None:
    """Write ``model.safetensors`` (and ``best.safetensors`` when ``best``) and ``model.json``."""
    save_checkpoint(run_dir, model, meta, best=best)


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


_WEIGHTS_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".tar")  # .tar: model_best.pth.tar


def _load_failure(e: Exception) -> tuple[str, str]:
    """torch.load's failure in a few words, and the way out: its message spans many lines, carries
    terminal colour codes and suggests ``weights_only=False``, which would run whatever code the file
    holds. Its "Weights only load failed" also covers bytes that are no checkpoint at all."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    if "Unsupported global" in text:  # a real pickle that names classes: objects besides tensors
        return ("it holds Python objects besides tensors, which are never unpickled here",
                "Only tensor checkpoints are accepted; re-save it as torch.save(model.state_dict(), path) or as "
                ".safetensors.")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    first = "" if "Weights only load failed" in text or not lines or lines[0].isdigit() else lines[0][:200]
    return (f"not a torch checkpoint, or a truncated or damaged one: {type(e).__name__}{': ' + first if first else ''}",
            "If it was copied or downloaded, copy it again; a checkpoint is what torch.save(model.state_dict(), "
            "path) writes, or a .safetensors file.")


def _corrupt_weights_hint(path: Path) -> str:
    """The way out of a broken weights file: in a run directory, the run's other weights file when it
    is there (best.safetensors for a broken model.safetensors, and the other way round), named by its
    path, which every command that reads a run takes; only evaluate has --best."""
    other = {"model.safetensors": "best.safetensors", "best.safetensors": "model.safetensors"}.get(path.name)
    if other is None or not (path.parent / other).is_file():
        return "If it was copied or downloaded, copy it again; otherwise train again."
    if other == "best.safetensors":
        return (f"The run's best.safetensors may still be good: give {path.parent / other} instead "
                "(evaluate: add --best; Python: which='best'); otherwise train again.")
    return (f"The run's model.safetensors (its last epoch) may still be good: give {path.parent / other} instead "
            "(evaluate: drop --best; Python: which='model'); otherwise train again.")


def is_safetensors(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a safetensors file by its suffix, in any case (``W.SAFETENSORS`` too:
    read as a torch pickle it was called damaged)."""
    return Path(path).suffix.lower() == ".safetensors"


def load_state_dict_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read weights from ``.safetensors``, or ``.pth``/``.pt`` with ``weights_only=True``.

    ``.pth`` files are never unpickled beyond tensors; a file holding ``{"state_dict": ...}`` or
    ``{"model": ...}`` (common training checkpoints) is unwrapped.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory, not a weights file: pass the run directory itself "
                                "or a .safetensors/.pth file")
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if not os.access(path, os.R_OK):  # unreadable is not corrupt: say which it is
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    if path.suffix.lower() not in _WEIGHTS_SUFFIXES:  # model.json, a picture, ...: not a guess at pickles
        hint = (f"pass the run directory {path.parent}" if (path.parent / "model.json").exists()
                else "pass a .safetensors, .pth or .pt file")
        raise ValueError(f"{path} is not a weights file ({path.suffix or 'no suffix'}): {hint}")
    if is_safetensors(path):
        try:  # a bad map_location is torch's RuntimeError naming it, not caught here: the caller's, not the file's
            return load_safetensors(path, map_location)
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable safetensors file ({e}): it is truncated or corrupt. "
                             f"{_corrupt_weights_hint(path)}") from e
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends
        reason, way_out = _load_failure(e)
        raise ValueError(f"{path} could not be read with torch.load(weights_only=True) ({reason}). {way_out}") from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return obj


def find_model_json(source: str | os.PathLike) -> Path:
    """The ``model.json`` that describes a run directory or a weights file inside one."""
    source = Path(source)
    if not source.exists():  # a mistyped path: say so, not which model.json files are missing
        raise FileNotFoundError(f"{source} does not exist. Pass a run directory written by `resnet-lab train` "
                                "(its --out), a .safetensors file with its model.json beside it, or shipped "
                                "weights as MODEL:TAG (docs/WEIGHTS.md lists them).")
    candidates = [source / "model.json"] if source.is_dir() else [source.with_suffix(".json"), source.parent / "model.json"]
    for c in candidates:
        if c.is_file():
            return c
    if source.is_file() and source.suffix.lower() == ".onnx":  # an export where its run belongs
        raise FileNotFoundError(f"{source} is an ONNX file (an export), not a run: `resnet-lab predict --onnx {source} "
                                "IMAGE...` runs it (in Python: resnet_lab.deploy.OnnxPredictor); the other commands "
                                "take the run directory it was exported from")
    if source.is_dir() and (source / FROZEN_DIR / "model.json").is_file():  # finetune's first phase only
        raise FileNotFoundError(f"{source} holds only the frozen phase of a finetune (freeze_phase/): the main phase "
                                f"has not saved yet; evaluate {source / 'freeze_phase'}, or finish the finetune with "
                                "its command and --resume")
    if source.is_dir() and _writer_active(source):  # a run started there and has not saved yet
        raise FileNotFoundError(f"{source} holds no checkpoint yet: a run is writing it and saves the first at the "
                                "end of its first epoch; try again then")
    raise FileNotFoundError(
        f"no model.json found for {source} (looked at {', '.join(map(str, candidates))}). Pass a run "
        "directory written by `resnet-lab train`, or a .safetensors file that has its model.json beside it."
    )


def read_json(path: str | os.PathLike) -> Any:
    """Parse a JSON file; a corrupt one is a ValueError that names the file."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}): the file is corrupt; restore it or train again") from e


def split_seed_of(meta: dict[str, Any]) -> int | None:
    """The seed of the held-out test split a run of a folder without val/ was trained beside: what
    its ``model.json`` records (None: a val/ folder, no seed involved), or for runs saved before it
    did, the training seed (which drew the split then). Evaluating with another would score images
    the run trained on."""
    if "split_seed" in meta:
        return None if meta["split_seed"] is None else int(meta["split_seed"])
    return int((meta.get("train_config") or {}).get("seed", 0))


def same_test_data(meta: dict[str, Any], dataset: str, data_dir: str | os.PathLike | None) -> dict[str, Any]:
    """The DataConfig fields that make ``dataset`` (in ``data_dir``) give the test images a run was
    tested on, when it is the run's own dataset: its classes (a run on some of them) and a folder's
    held-out split (:func:`held_out_split`). Empty for another dataset."""
    if dataset != meta.get("dataset"):
        return {}
    indices = meta.get("class_indices")
    return {**({"classes": tuple(int(c) for c in indices)} if indices else {}), **held_out_split(meta, data_dir)}


def trained_folder(meta: dict[str, Any]) -> str | None:
    """The image folder a folder run trained on (absolute, recorded since 2026-12-05), when it is
    still there: where evaluate and report look when no --data-dir is given. None otherwise."""
    folder = (meta.get("training") or {}).get("folder") if meta.get("dataset") == "folder" else None
    return folder if isinstance(folder, str) and os.path.isdir(folder) else None


def held_out_split(meta: dict[str, Any], data_dir: str | os.PathLike | None) -> dict[str, Any]:
    """The DataConfig fields that hold out again, from the image folder ``data_dir``, the test images
    of a run of an image folder without val/ (``split_seed``, ``val_fraction``; runs saved before
    ``model.json`` recorded them drew the split with their training seed and the default share).
    Empty for other datasets and for a ``data_dir`` with a val/ folder, which is its test split (a
    split seed there is refused: it would pick nothing)."""
    if meta.get("dataset") != "folder" or not holds_out(data_dir):
        return {}
    fields: dict[str, Any] = {"split_seed": split_seed_of(meta) or 0}
    if meta.get("val_fraction"):
        fields["val_fraction"] = float(meta["val_fraction"])
    return fields


def check_meta(meta: dict[str, Any], source: str | os.PathLike, keys: tuple[str, ...], purpose: str) -> None:
    """Refuse a ``model.json`` without ``keys`` (edited, or not written by a run) in one line naming
    what is missing and what needs it, instead of a KeyError deep in the command. ``source`` is what
    the user gave (shipped weights are resolved only to name the file in the error)."""
    missing = [k for k in keys if meta.get(k) is None]
    if missing:
        raise ValueError(f"{find_model_json(resolve_source(source))} has no {', '.join(map(repr, missing))}, which {purpose} needs: it "
                         "was edited, or not written by resnet-lab train; restore it, or train the run again")


def _numbers(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def _outputs_and_channels(meta: dict[str, Any]) -> tuple[Any, Any]:
    """What ``meta`` says the model outputs (a stacked head's classes, also as older runs recorded
    it) and how many channels its input has; None where it does not say."""
    arch, transfer = meta["arch"], meta.get("transfer")
    head = transfer.get("head") if isinstance(transfer, dict) else None
    outputs = head.get("num_classes") if isinstance(head, dict) and "stacked_head" not in arch else arch_outputs(arch)
    size = meta.get("input_size")
    return outputs, (size[0] if _numbers(size) else arch.get("in_channels"))


def _field_problem(meta: dict[str, Any]) -> tuple[str, str, Any] | None:
    """The first field of ``meta`` whose value cannot be what a run wrote: (field, what it must be, value)."""
    arch, size, classes = meta["arch"], meta.get("input_size"), meta.get("classes")
    outputs, channels = _outputs_and_channels(meta)
    checks = [
        ("arch.name", "a model name (a string)", arch.get("name"), isinstance(arch.get("name"), str)),
        ("arch.num_classes", "a positive integer", arch.get("num_classes"),
         arch.get("num_classes") is None or (type(arch["num_classes"]) is int and arch["num_classes"] > 0)),
        ("input_size", "[channels, height, width] as 3 positive integers", size,
         size is None or (_numbers(size) and len(size) == 3 and all(type(v) is int and v > 0 for v in size))),
        ("classes", f"a list of {outputs or 'the'} class names (strings), one per output", classes,
         classes is None or (isinstance(classes, list) and all(isinstance(c, str) for c in classes)
                             and (outputs is None or len(classes) == outputs))),
    ]
    counts = "1 number" if channels == 1 else f"1 or {channels} numbers (one per channel)"
    for key in ("mean", "std"):
        value = meta.get(key)
        checks.append((key, f"a list of {counts}{', each > 0' if key == 'std' else ''}", value,
                       value is None or (_numbers(value) and (channels is None or len(value) in (1, channels))
                                         and (key == "mean" or min(value) > 0))))
    for key, kind in (("resize", str), ("dataset", str), ("train_config", dict), ("training", dict)):
        checks.append((key, f"a {'string' if kind is str else 'JSON object'}", meta.get(key),
                       meta.get(key) is None or isinstance(meta[key], kind)))
    return next(((k, want, v) for k, want, v, ok in checks if not ok), None)


def _check_fields(meta: dict[str, Any], path: Path) -> None:
    """A hand-edited ``model.json`` with a field of the wrong type is refused here, naming the file and the
    field; it used to fail later with messages such as "'>=' not supported between 'int' and 'str'"."""
    problem = _field_problem(meta)
    if problem:
        key, want, value = problem
        raise ValueError(f"{path}: {key!r} must be {want}, got {json.dumps(value)[:80]}: the file was edited, or not "
                         "written by resnet-lab; restore it, or train the run again")


def load_meta(source: str | os.PathLike) -> dict[str, Any]:
    """The ``model.json`` of a run directory or of a weights file (beside it, or a shipped one's), as
    a dict; a ValueError when it does not describe a resnet-lab model (no ``arch.name``)."""
    path = find_model_json(source)
    meta = read_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("arch"), dict) or "name" not in meta["arch"]:
        raise ValueError(f"{path} has no 'arch.name': not a resnet-lab model.json")
    _check_fields(meta, path)
    arch = meta["arch"]
    if arch.get("small_input") is False and arch["name"] in list_models() and model_info(arch["name"]).small_input:
        arch["small_input"] = True  # runs saved before 2026-12-03 recorded the argument, not the stem it built
    if arch.get("norm") in ("batch", "scratch", "group") and arch["name"] in ("vgg11", "vgg13", "vgg16", "vgg19"):
        # the paper's VGGs have no norm layer: create_model records "none"; runs saved before 2026-12-03
        # recorded the flag (its default "batch" too), which the resume's norm check would refuse
        arch["norm"] = "none"
    return meta


def weights_path(source: Path, which: str = "model") -> Path:
    """The weights file that ``source`` (a run directory or a weights file) names: in a run, its
    ``model.safetensors`` (last epoch) or ``best.safetensors``; a missing one is refused with the
    way out that each command takes (the other file's path)."""
    if which not in ("model", "best"):  # "bogus" was looked for as bogus.safetensors
        raise ValueError(f"which must be 'model' (the last epoch) or 'best' (the best evaluated epoch), got {which!r}")
    if source.is_dir():
        path = source / f"{which}.safetensors"
        if not path.is_file():
            if which == "best" and (source / "model.safetensors").is_file():  # a run, not evaluated yet
                raise FileNotFoundError(f"{source} has no best.safetensors yet: no epoch of it was evaluated (it "
                                        "stopped before the first evaluation); drop --best for its last epoch, "
                                        "or train on with --resume")
            if which == "model" and (source / "model.json").is_file():  # a run whose last weights are gone
                best = (source / "best.safetensors").is_file()
                raise FileNotFoundError(f"{source} has a model.json but no model.safetensors (its last epoch's weights)"
                                        + (f"; its best.safetensors is there: give {source / 'best.safetensors'} "
                                           "instead (evaluate: add --best; Python: which='best')" if best else
                                           ": put the file back, or train again"))
            raise FileNotFoundError(f"{source} has no {which}.safetensors: is it a resnet-lab run directory?")
        return path
    if not source.exists():
        raise FileNotFoundError(f"no such run directory or weights file: {source}")
    if which != "model":  # a weights file is one set of weights: best/last is a choice inside a run
        raise ValueError(f"{source} is a weights file, so there is no {which}.safetensors to choose (--best): "
                         f"give the run directory, or drop --best")
    return source


def _verify_beside(path: Path) -> None:
    """A weights file given by path whose entry beside it (``NAME.json``) records a sha256 (shipped
    weights, or a copy of them) is checked as by name: by path it used to load a damaged file. A
    directory whose model.json is such an entry is checked the same way for its model.safetensors."""
    if path.is_dir():
        path = path / "model.safetensors"
    entry = path.with_suffix(".json")
    if not is_safetensors(path) or not path.is_file() or not entry.is_file():
        return
    try:
        expected = (json.loads(entry.read_text()).get("weights") or {}).get("sha256")
    except (OSError, ValueError, AttributeError):
        return  # not an entry: load_meta says what is wrong with it
    if expected and sha256_of(path) != expected:
        raise WeightsHashError(f"{path} has another sha256 than its entry {entry.name} records ({expected}): the file "
                               "is damaged or was replaced, so it is refused; restore it (reinstall resnet-lab for "
                               "shipped weights)")


def resolve_source(source: str | os.PathLike) -> Path:
    """Where the weights of ``source`` are: the path itself, or for shipped weights named
    ``MODEL:TAG`` (``resnet20:fashion-mnist``, see :mod:`resnet_lab.weights`) their file, after
    its sha256 is checked. An existing path wins over a name.

    Raises:
        ValueError: ``MODEL:TAG`` names no shipped weights, or the file's sha256 is wrong.
    """
    path = Path(source)
    if path.exists() or not is_weights_name(str(source)):
        _verify_beside(path)
        return path
    try:
        weights = get_weights(str(source))
    except ValueError as e:  # here a path would do too: say so
        raise ValueError(f"{e} (or give a run directory or .safetensors file)") from None
    return weights.verify()


def _weights_identity(source: str | os.PathLike, which: str) -> str:
    """The weights file ``source`` loads, as one string however it is spelt: the real path (a trailing
    slash, ``./``, a symlink resolved), a run directory's ``which`` file, shipped ``MODEL:TAG``'s file."""
    path = Path(source)
    if not path.exists() and is_weights_name(str(source)):
        try:
            path = get_weights(str(source)).path
        except ValueError:  # no such weights: load_model says so
            return str(source)
    real = Path(os.path.realpath(path))
    return str(real / f"{which}.safetensors" if real.is_dir() else real)


def check_distinct_runs(sources: Sequence[str | os.PathLike], which: str = "model") -> None:
    """Refuse a run given twice, however spelt (``runs/a`` and ``./runs/a/``, a symlink to it, shipped
    weights by name and by path): evaluate took it for an ensemble of 2, the report showed it twice side
    by side. A copy of a run in another folder is another run. ``which``: the weights a run directory
    stands for (``model`` or ``best``)."""
    seen: dict[str, str] = {}
    for source in map(str, sources):
        key = _weights_identity(source, which)
        if key in seen:
            first = seen[key]
            same = f"{source} is given twice" if first == source else \
                f"{first} and {source} are the same run ({key}), given twice"
            raise ValueError(f"{same}: give each run once")
        seen[key] = source


def _arch_error(source: str | os.PathLike, e: Exception) -> ValueError:
    return ValueError(f"{find_model_json(source)}: its 'arch' builds no model: {e}")


def check_arch(meta: dict[str, Any], source: str | os.PathLike) -> None:
    """Refuse, naming the file, a model.json whose ``arch`` builds no model (a hand edit): a resume
    blamed the user's --model for it, finetune printed create_model's error without the file. The
    model is built on the meta device: shapes only, no memory, no time."""
    arch = dict(meta.get("arch") or {})
    try:
        with meta_device():
            create_model(arch.pop("name", None), **arch)
    except (ValueError, TypeError) as e:
        raise _arch_error(source, e) from e


def load_model(source: str | os.PathLike, device: str | torch.device = "cpu", *, which: str = "model") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a run directory or ``.safetensors`` file; returns ``(model, meta)``.

    Args:
        source: run directory, a weights file with a ``model.json`` beside it, or the name of
            shipped weights, ``MODEL:TAG`` (:func:`resolve_source`).
        device: where to put the model: a name as train takes (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``)
            or a ``torch.device``; an unknown name or one missing here is refused before any file is read.
        which: in a run directory, ``model`` (last epoch) or ``best``; a weights file or shipped
            weights accept only ``model``.

    The model is returned in eval mode.
    """
    if not isinstance(source, (str, os.PathLike)):  # load_model(3) was pathlib's "expected str, bytes or os.PathLike"
        raise TypeError(f"load_model takes a run directory, a .safetensors file or shipped weights MODEL:TAG as a "
                        f"str or path, got {type(source).__name__} {source!r}")
    # before any file is read: "gpu" was torch's list of every backend, raised by model.to() at the end
    device = check_device_present(device)
    if which == "best" and not Path(source).exists() and is_weights_name(str(source)):  # named as typed, not its file
        raise ValueError(f"{source} names shipped weights, one set of them: there is no best epoch to choose (--best; "
                         "in Python: which='best'); drop --best")
    source = resolve_source(source)
    run_dir = source if source.is_dir() else source.parent
    settle_run_dir(run_dir)
    # model.json and the weights of one save, even while a training run writes the directory
    meta, state = _read_whole(run_dir, lambda: (load_meta(source), load_state_dict_file(weights_path(source, which))))
    arch = dict(meta["arch"])
    head = (meta.get("transfer") or {}).get("head")
    if head and "stacked_head" not in arch:  # runs saved before model.json's arch recorded the head
        arch["stacked_head"] = int(head["num_classes"])
    try:
        model = create_model(arch.pop("name"), **arch)
    except (ValueError, TypeError) as e:  # an edited arch: name the file, not only the argument
        raise _arch_error(source, e) from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:  # torch's message is many lines and names no file
        odd = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e))
        raise ValueError(f"the weights in {weights_path(source, which)} do not fit the model that "
                         f"{run_dir / 'model.json'} describes ({odd[:200]}); were they copied from another run? "
                         "Put the run's own weights back, or load them with the model.json they were saved with") from e
    return model.to(device).eval(), meta


def missing_run(out: str | os.PathLike) -> FileNotFoundError:
    """The error of ``--resume`` into a folder that does not exist (the CLI and the trainer both say it)."""
    return FileNotFoundError(f"--out {out} does not exist: nothing to resume (start without --resume, or give the "
                             "run's folder; in Python: resume=False, or the run's out)")


def run_without_meta(run_dir: str | os.PathLike) -> FileExistsError | None:
    """The error for a folder that holds run files (train_state.pt, weights) but no ``model.json``
    (deleted by hand): --resume cannot rebuild the model without it and a new run must not overwrite
    the rest, so both refusals name the ways out that work; None when the folder is no such thing."""
    run_dir = Path(run_dir)
    found = [name for name in RUN_FILES if name not in ("model.json", "metrics.jsonl") and (run_dir / name).exists()]
    if not found or (run_dir / "model.json").exists():
        return None
    return FileExistsError(f"{run_dir} holds part of a run ({', '.join(found)}) but no model.json: it can be neither "
                           "resumed nor overwritten; put its model.json back, or choose another --out (in Python: "
                           f"another out), or delete {run_dir} to start over there")


def load_train_state(run_dir: str | os.PathLike) -> dict[str, Any]:
    """A run's ``train_state.pt`` (optimizer, schedule, position, RNG states: what ``--resume`` needs),
    read with ``weights_only=True``; a clear error when it is missing, unreadable or corrupt."""
    path = Path(run_dir) / "train_state.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: nothing to resume (start without --resume)")
    if not os.access(path, os.R_OK):  # unreadable is not corrupt
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, random bytes, or a pickle that weights_only refuses
        raise ValueError(
            f"{path} cannot be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'empty'}): the "
            "training state is corrupt, so the run cannot resume. Its weights may still load "
            "(evaluate/predict/finetune --from the run); or train again without --resume."
        ) from e
    missing = [k for k in ("epoch", "step", "optimizer", "scheduler", "rng") if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: not a resnet-lab training state; train again without --resume")
    return state


def append_metrics(run_dir: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append one epoch's record to ``metrics.jsonl`` (one JSON object per line) and rewrite
    ``metrics.csv`` from it. When either fails (a full disk), the append is taken back: the file is
    cut to its old length (removed if it was new), so no torn or empty file stays, and the error
    names the file that could not be written."""
    path = Path(run_dir) / "metrics.jsonl"
    size = path.stat().st_size if path.is_file() else None
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        _write_metrics_csv(run_dir, read_metrics(run_dir))
    except Exception as e:  # a Ctrl-C's torn last line is left: read_metrics passes over it
        with suppress(OSError):  # a full disk lets a file shrink; a read-only one keeps what it has
            if size is None:
                path.unlink(missing_ok=True)
            else:
                os.truncate(path, size)
        if isinstance(e, OSError):  # f.write names no file
            _raise_named(e, path, ())
        raise


_CSV_ORDER = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "train_seconds", "images_per_second",
              "elapsed_seconds", "session", "train_loss_plain")


def _write_metrics_csv(run_dir: str | os.PathLike, records: list[dict[str, Any]]) -> None:
    """``metrics.csv``: ``records`` as a table, one row per epoch, the union of their keys as
    columns (blank where a record lacks one). Always written whole from metrics.jsonl's records
    (a few kB), never appended, so it cannot drift from them: a resume's trim reaches it too."""
    # a fixed order (docs/TENSORBOARD.md), whatever the first record holds: an epoch --eval-every
    # skips has no test figures, and its keys would otherwise come first
    seen = dict.fromkeys(key for record in records for key in record)
    columns = [k for k in _CSV_ORDER if k in seen] + [k for k in seen if k not in _CSV_ORDER]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    atomic_write_text(Path(run_dir) / "metrics.csv", text.getvalue())


def unfinished_at(meta: dict[str, Any], done: Any = None) -> tuple[int, int, int] | None:
    """``(epochs done, epochs planned, steps into the next)`` of a run that stopped before its last
    epoch (--stop-after, Ctrl-C, a kill), from its checkpoint record in ``model.json`` (``done``: the
    epoch to assume when it records none); None for a finished run, or one whose model.json does not
    record its plan (shipped weights). evaluate, finetune and report judge a run by it."""
    planned = (meta.get("train_config") or {}).get("epochs")
    done = meta.get("epoch", done)
    if not _whole(planned) or not _whole(done):
        return None
    step = meta.get("step") or 0
    step = int(step) if _whole(step) else 0
    return (done, planned, step) if done < planned or step else None


# Where finetune --freeze-epochs trains its head-only phase, a run of its own inside the run folder
FROZEN_DIR = "freeze_phase"


def unfinished_note(run: str | os.PathLike, meta: dict[str, Any], best: bool = False) -> str | None:
    """The one-line note (without "note: ") that ``run`` stopped before its last epoch, or None; a run
    whose lock a trainer holds has not stopped: the note says it is still training (--resume would be
    refused). ``best``: the run folder's best weights were used (evaluate RUN --best)."""
    at = unfinished_at(meta)
    is_folder = Path(run).is_dir()
    folder = Path(run) if is_folder else Path(run).parent  # RUN, or RUN/best.safetensors
    if at and (folder / "model.json").is_file() and _writer_active(folder):
        done, planned, step = at
        where = f"in epoch {done + 1} of {planned} (step {step})" if step else f"after epoch {done} of {planned}"
        best = best if is_folder else Path(run).name == "best.safetensors"
        if is_folder and not best:
            return (f"{run} is still being trained by another process: its weights are those saved so far (the last "
                    f"checkpoint was {where})")
        epoch = _best_epoch(folder) if best else None
        what = ("the weights saved so far" if not best else
                f"the best weights so far, those of {f'epoch {epoch}' if epoch else 'the best evaluated epoch'}")
        holder = "its best.safetensors holds" if is_folder else f"{run} holds"
        return (f"{folder} is still being trained by another process: {holder} {what} (the last checkpoint was "
                f"{where})")
    return f"{run} is unfinished: it {stopped_words(*at)}" if at else None


def _best_epoch(run_dir: Path) -> int | None:
    """The epoch whose weights best.safetensors holds, as the trainer picks it (the first with the
    highest test accuracy), read from metrics.jsonl; None when that cannot be read."""
    try:
        evaluated = [r for r in read_metrics(run_dir) if r.get("test_acc") is not None]
    except (OSError, ValueError):
        return None
    return max(evaluated, key=lambda r: r["test_acc"])["epoch"] if evaluated else None  # max keeps the first


def stopped_words(done: int, planned: int, step: int) -> str:
    """Where a run that stopped before its last epoch stopped (``done`` epochs of ``planned``, ``step``
    steps into the next) and how to go on, for the CLI's and the Python API's user alike: evaluate's
    note and report's heading say it in these words."""
    where = f"in epoch {done + 1} of {planned} (after step {step})" if step else f"after epoch {done} of {planned}"
    return (f"stopped {where}; continue it with the command that started it and --resume "
            "(in Python: the same call with resume=True)")


# The numbers of an epoch record (train/loop.py's _epoch_record); each may be absent (test_* of an
# epoch --eval-every skips, train_loss_plain without label smoothing) or null, never a string or a bool.
METRICS_NUMBERS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "train_seconds", "images_per_second",
                   "elapsed_seconds", "session", "train_loss_plain")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_metrics_record(record: dict[str, Any], where: str, way_out: str) -> None:
    """Refuse an epoch record (of metrics.jsonl, or model.json's ``metrics``) whose number is a string
    or a bool, in one line naming ``where`` it is, the field and ``way_out``; a hand-edited value
    failed later as "'>' not supported between instances of 'str' and 'float'"."""
    for key in ("epoch", *METRICS_NUMBERS):
        value = record.get(key)
        ok = _whole(value) if key == "epoch" else value is None or (
            isinstance(value, (int, float)) and not isinstance(value, bool))
        if not ok:
            want = "a whole number" if key == "epoch" else "a number (or null)"
            raise ValueError(f"{where}: {key!r} must be {want}, got {json.dumps(value)[:80]}: it was edited, or not "
                             f"written by resnet-lab; {way_out}")


def read_metrics(run_dir: str | os.PathLike, upto: int | None = None) -> list[dict[str, Any]]:
    """The epoch records of ``metrics.jsonl``, tolerating a torn last line (a killed append).

    Args:
        run_dir: the run directory.
        upto: keep only epochs <= this, and rewrite the file to them (a resume drops the records
            of epochs that its checkpoint does not cover); None reads without rewriting.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    lines = [(i, line) for i, line in enumerate(text, 1) if line.strip()]  # i: the line number an editor shows
    records = []
    for n, (i, line) in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not _whole(record.get("epoch")):
                raise ValueError("no integer 'epoch'")
        except ValueError as e:
            if n == len(lines):
                break  # the append a kill cut short: the checkpoint does not count that epoch anyway
            raise ValueError(f"{path} line {i} is corrupt ({e}); delete that line (or the file) and resume") from e
        check_metrics_record(record, f"{path} line {i}", "fix that line or delete it")
        records.append(record)
    if upto is not None:
        records = [r for r in records if r["epoch"] <= upto]
        # under a temporary name, then renamed: a kill during the rewrite must not leave the history empty
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in records))
        _write_metrics_csv(run_dir, records)
    return records
