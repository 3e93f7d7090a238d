"""Saving and resuming a training run: the :class:`Checkpointer`.

The files of a run directory and how they are written atomically belong to :mod:`resnet_lab.runs`;
this module decides *what* a training checkpoint holds (weights, optimizer, schedule, RNG, the
position in the epoch, the recipe and the data it was trained on) and *when* a resume is allowed:
only with the same recipe and data, from a consistent checkpoint set.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..runs import (
    RUN_FILES,
    RUN_OUTPUTS,
    RunLock,
    append_metrics,
    load_meta,
    load_state_dict_file,
    load_train_state,
    missing_run,
    read_metrics,
    recover_run_dir,
    run_without_meta,
    save_checkpoint,
    unwritable,
)
from .averaging import WeightAveraging
from .config import TrainConfig
from .device import get_rng_state, set_rng_state
from .distributed import rescale_resume_position
from .plots import plot_confusion, plot_curves

__all__ = ["Checkpointer", "Position", "check_resume", "recipe_values_differ", "run_facts"]


@dataclass
class Position:
    """Where training stands: completed epochs and completed steps of the current epoch."""

    epoch: int = 0
    step: int = 0
    # mid-epoch: the training sums of the epoch's steps so far (EpochStats.state_dict), or None
    partial: dict[str, float] | None = None
    # mid-epoch: the seconds the cut-short sessions spent in this epoch (kept where ``partial`` is not)
    seconds: float = 0.0


# TrainConfig fields that shape the trajectory (weights, schedule); the rest (device, out,
# progress, plots, compile, channels_last, bf16, checkpoint_segments, deterministic) can change on resume.
_RECIPE_FIELDS = ("epochs", "lr", "optimizer", "momentum", "nesterov", "weight_decay", "schedule", "warmup_epochs",
                  "label_smoothing", "grad_clip", "seed", "lr_scale", "max_steps_per_epoch", "ema", "lookahead",
                  "lookahead_alpha", "norm_lr_scale", "progressive_resize", "mixup", "cutmix", "eval_every", "sam")


# The recipe fields whose CLI flag is --FIELD-NAME VALUE (a refused resume names them with the run's values).
_FLAG_FIELDS = ("epochs", "lr", "optimizer", "momentum", "schedule", "weight_decay", "warmup_epochs", "label_smoothing",
                "grad_clip", "seed", "ema", "lookahead", "lookahead_alpha", "norm_lr_scale", "progressive_resize",
                "mixup", "cutmix", "eval_every", "sam")


# TrainConfig fields a resume may change (speed, memory format, reproducibility): recorded in
# model.json's "training" (the last start's) for the report, never compared.
_SETTING_FIELDS = ("bf16", "fp16", "channels_last", "compile", "deterministic")


def run_facts(config: TrainConfig, data, world_size: int) -> dict[str, dict[str, Any]]:
    """What a resumed run must share with the saved one: the recipe and the data; and the
    ``settings`` it may change, which only model.json records."""
    info = data.info
    batch = getattr(data.train, "batch_size", None)
    return {
        "recipe": {k: getattr(config, k) for k in _RECIPE_FIELDS},
        "data": {
            "dataset": getattr(info, "name", None), "classes": list(info.classes),
            "input_size": list(info.input_size), "mean": list(info.mean), "std": list(info.std),
            "global_batch_size": batch * world_size if batch else None,
            "num_train": getattr(data, "num_train", None),
            # the last partial batch kept or dropped: another count of steps per epoch (runs saved
            # before 2026-12-06 lack it, and are resumed without comparing it)
            "drop_last": getattr(data.train, "drop_last", None),
            **_augmentation(data.train),
            # a folder's held-out split: another share or seed would test on images the run trained on
            "val_fraction": getattr(info, "val_fraction", None), "split_seed": getattr(info, "split_seed", None),
            # an image folder's files: another folder with the same class names and counts, or files
            # added, removed or replaced, used to resume silently ("folder" only names it in the refusal)
            "files": _folder_fingerprint(data) if config.out else None,  # no run directory: nothing to resume
            "folder": os.path.abspath(info.source) if getattr(info, "name", None) == "folder" else None,
        },
        "settings": {k: getattr(config, k) for k in _SETTING_FIELDS},
    }


FINGERPRINT_BYTES = 4096  # of each image file: its header and the start of its pixels


def _folder_fingerprint(data) -> str | None:
    """A hash of an image folder's training and test files (path under the folder, class, size and
    first :data:`FINGERPRINT_BYTES` bytes), so the folder may move or be copied but not change; None
    for other datasets. Sizes alone did not do: random 8 x 8 PNGs all have one size. The scan
    already opened every file for its header, so this read costs little more."""
    if getattr(data.info, "name", None) != "folder":
        return None
    digest = hashlib.sha256()
    for loader in (data.train, data.test):
        for path, label in getattr(getattr(loader, "dataset", None), "samples", []):
            rel = os.path.relpath(path, data.info.source)
            digest.update(f"{rel}\0{label}\0{os.path.getsize(path)}\0".encode("utf-8", "surrogateescape"))
            try:
                with open(path, "rb") as f:
                    digest.update(f.read(FINGERPRINT_BYTES))
            except OSError:  # gone since the scan: the loader warns and replaces it; the hash marks it
                digest.update(b"\0unreadable")
    return digest.hexdigest()[:16]


def _augmentation(train) -> dict[str, Any]:
    """How the training batches were augmented: the in-memory loader's own settings, or an image
    folder's train transforms (the streaming loader has none of those attributes: folder runs saved
    before 2026-12-06 recorded None for each). A folder crops at random scale and aspect ratio
    (RandomResizedCrop), never by padding, so its ``crop_padding`` is None. ``flip``: whether the
    training images are mirrored at all (augmented with the flip allowed); with the flip off an
    augmented in-memory run records ``flip_mode`` None, as a folder run does (runs saved before
    recorded "random" and no ``flip``: see _old_flip_record)."""
    if hasattr(train, "augment"):
        flip = bool(train.augment and getattr(train, "flip", True))
        mode = getattr(train, "flip_mode", None)
        return {"augment": train.augment, "random_erasing": getattr(train, "random_erasing", None),
                "flip_mode": None if train.augment and not flip else mode, "flip": flip,
                "crop_padding": getattr(train, "padding", None) if train.augment else None}
    steps = getattr(getattr(getattr(train, "dataset", None), "transform", None), "transforms", None)
    if steps is None:  # a loader of the caller's: nothing to read
        return dict.fromkeys(("augment", "random_erasing", "flip_mode", "flip", "crop_padding"))
    by_name = {type(t).__name__: t for t in steps}  # torchvision's classes, named: no torchvision import here
    erasing = by_name.get("RandomErasing")
    return {"augment": "RandomResizedCrop" in by_name, "random_erasing": float(erasing.p) if erasing else 0.0,
            "flip_mode": "random" if "RandomHorizontalFlip" in by_name else None,
            "flip": "RandomHorizontalFlip" in by_name, "crop_padding": None}


# Folder runs saved before 2026-12-06 recorded None for these (see _augmentation): not recorded, so
# not compared on resume.
_UNRECORDED_FOLDER_FACTS = ("augment", "flip_mode", "random_erasing")


def _unrecorded(saved_data: dict[str, Any], key: str, now_data: dict[str, Any]) -> bool:
    return (saved_data.get("dataset") == "folder" and saved_data.get("augment") is None
            and key in _UNRECORDED_FOLDER_FACTS) or _old_flip_record(saved_data, key, now_data)


def _old_flip_record(saved_data: dict[str, Any], key: str, now_data: dict[str, Any]) -> bool:
    """An in-memory run saved before ``flip`` was recorded (2026-12-06) has ``flip_mode`` "random"
    with the flip off: the same command, which records None now, still resumes it (as before, its
    flip is not known, so not compared)."""
    return (key == "flip_mode" and "flip" not in saved_data and saved_data.get("dataset") != "folder"
            and saved_data.get("flip_mode") == "random" and now_data.get("flip_mode") is None
            and now_data.get("flip") is False and bool(now_data.get("augment")))


def _plain_sgd_either_way(key: str, saved: dict[str, Any], now: dict[str, Any]) -> bool:
    """Nesterov with momentum 0 on both sides: plain SGD either way (a run saved with --no-nesterov
    --momentum 0, which is refused now, resumes with --momentum 0 alone)."""
    return key == "nesterov" and not saved.get("momentum") and not now.get("momentum")


def _same_steps_either_way(key: str, saved: dict[str, Any], now: dict[str, Any]) -> bool:
    """drop_last changed where it changes no step: the same training images and global batch, and a
    last batch of 0 or 1 images (a 1-image batch is dropped either way: BN cannot use it)."""
    n, batch = saved.get("num_train"), saved.get("global_batch_size")
    return (key == "drop_last" and isinstance(n, int) and isinstance(batch, int) and batch > 0
            and (n, batch) == (now.get("num_train"), now.get("global_batch_size")) and n % batch in (0, 1))


def _check_writable(run_dir: Path) -> None:
    """Before the first step, not after the first epoch: a run directory we cannot write to."""
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise unwritable(run_dir)


def warm_restart_command(run_dir: str | Path, dataset: str | None) -> str:
    """The command that trains a finished (or torn) run further: a warm restart through finetune,
    on the run's own dataset when it is known."""
    data = f"--dataset {dataset}" + (" --data-dir DIR" if dataset == "folder" else "") if dataset else "--dataset DATASET"
    return f"resnet-lab finetune --from {run_dir} --strategy all {data} --epochs N --lr X --out NEW_DIR"


def check_resume(run_dir: Path, state: dict[str, Any], now: dict[str, dict[str, Any]], world_size: int = 1) -> None:
    """Refuse to resume when the checkpoint set is torn or the recipe or data differ from the run's
    (``world_size``: the processes resuming it, which share the run's global batch)."""
    meta = load_meta(run_dir)
    _check_same_position(run_dir, state, meta)
    saved = {"recipe": state.get("recipe"), "data": state.get("data")}
    if saved["data"] is None:  # runs saved before these facts were recorded: what model.json knows
        saved["data"] = {k: meta.get(k) for k in ("dataset", "classes", "input_size", "mean", "std")}
    differing = _differing(saved, now)
    if differing:
        diffs = [_difference(part, key, saved[part], now[part]) for part, key in differing]
        raise ValueError(
            f"cannot resume {run_dir} with different settings ({'; '.join(diffs)}). Resume with the command the run "
            f"was started with{_way_back(differing, saved, world_size)}; to train a finished run further, warm-restart "
            f"from it: {warm_restart_command(run_dir, saved['data'].get('dataset') or meta.get('dataset'))}"
        )


def _check_same_position(run_dir: Path, state: dict[str, Any], meta: dict[str, Any]) -> None:
    """model.json and train_state.pt name the same epoch and step (else an older resnet-lab was
    killed between the two writes)."""
    saved_pos = (int(state["epoch"]), int(state["step"]))
    meta_pos = (int(meta.get("epoch", saved_pos[0])), int(meta.get("step", saved_pos[1])))
    if meta_pos != saved_pos:
        raise ValueError(
            f"{run_dir} is inconsistent: model.json is at epoch {meta_pos[0]} step {meta_pos[1]} but train_state.pt "
            f"at epoch {saved_pos[0]} step {saved_pos[1]} (an older resnet-lab was killed while saving). The weights "
            f"still load for evaluate/predict, or continue with a warm restart: "
            f"{warm_restart_command(run_dir, meta.get('dataset'))}"
        )


def _differing(saved: dict[str, Any], now: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The (part, key) pairs of the recipe and data facts whose values differ in a way that matters
    (a fact the run did not record, plain SGD's unused nesterov and the same step count whatever
    drop_last says do not)."""
    return [(part, key) for part in ("recipe", "data") if saved[part] for key in saved[part]
            if key in now[part] and key != "folder" and recipe_values_differ(saved[part][key], now[part][key])
            and not (part == "data" and _unrecorded(saved["data"], key, now["data"]))
            and not (part == "recipe" and _plain_sgd_either_way(key, saved["recipe"], now["recipe"]))
            and not (part == "data" and _same_steps_either_way(key, saved["data"], now["data"]))]


def _way_back(differing: list[tuple[str, str]], saved: dict[str, Any], world_size: int) -> str:
    """The run's own values, as flags and as TrainConfig/DataConfig fields: the way back when the
    difference was not typed but made (as --scale-lr makes lr and warmup from the number of
    processes, another count on resume). Empty when nothing can be named."""
    flags = [f"--{key.replace('_', '-')} {saved[part][key]}" for part, key in differing
             if (part == "recipe" and key in _FLAG_FIELDS or (part, key) == ("data", "val_fraction"))
             and saved[part][key] is not None]
    plain_sgd = not saved["recipe"].get("momentum")  # its nesterov did nothing (and --no-nesterov is refused now)
    flags += ["--no-nesterov" if not saved["recipe"]["nesterov"] else "no --no-nesterov"
              for part, key in differing if (part, key) == ("recipe", "nesterov") and not plain_sgd]
    flags += [flag for part, key in differing if part == "data" and not (key == "num_train" and ("data", "files") in differing)
              for flag in [_data_flag(key, saved["data"], world_size)] if flag]
    # A caller of train() has no flags: the same values as TrainConfig (DataConfig) fields.
    fields = [f"{key}={saved[part][key]!r}" for part, key in differing
              if (part == "recipe" and (key in _FLAG_FIELDS or key == "nesterov" and not plain_sgd)
                  or (part, key) in (("data", "val_fraction"), ("data", "flip"), ("data", "drop_last")))
              and saved[part][key] is not None]
    python = ("; in Python: " if flags else "in Python: ") + ", ".join(fields) if fields else ""
    return f" (or give the run's values: {' '.join(flags)}{python})" if flags or fields else ""


def _difference(part: str, key: str, saved: dict[str, Any], now: dict[str, Any]) -> str:
    if (part, key) == ("data", "files"):  # two hashes would say nothing
        return (f"data files: the images in {now.get('folder')} are not those the run trained on in "
                f"{saved.get('folder')} (another folder, or files added, removed or replaced)")
    return f"{part} {key}: run has {saved[key]!r}, now {now[key]!r}"


def _data_flag(key: str, saved: dict[str, Any], world_size: int) -> str | None:
    """The flag that gives a data fact of a run (``saved[key]``) its value again (None: none does, or
    it is val_fraction, named with the recipe's); the training images' count names its flag only,
    since --subset of all of them would draw another order. ``world_size``: the processes resuming
    now, among which the run's global batch is shared (not the run's own count)."""
    value = saved[key]
    if key == "files":
        return f"--data-dir {saved.get('folder')} (the folder as it was when the run started)"
    if key == "global_batch_size" and value and value % world_size:
        return f"a process count that divides its global batch of {value} (not {world_size})"
    if key == "global_batch_size" and value:
        return f"--batch-size {value // world_size}" + (f" (per process, {world_size} processes)" if world_size > 1 else "")
    if key == "input_size" and value:
        return f"--image-size {value[-1]}"
    if key == "augment":
        return "no --no-augment" if value else "--no-augment"
    if key == "num_train":
        return f"--subset as the run had it ({value} images)"
    flag = {"crop_padding": "--crop-padding", "random_erasing": "--random-erasing", "flip_mode": "--flip",
            "dataset": "--dataset"}.get(key)
    return f"{flag} {value}" if flag and value is not None else None


def recipe_values_differ(saved: Any, now: Any) -> bool:
    """Whether a saved recipe value and the one asked for now differ (floats to rounding, lists
    element by element): what a resume compares."""
    if isinstance(saved, (list, tuple)) and isinstance(now, (list, tuple)):
        return len(saved) != len(now) or any(recipe_values_differ(a, b) for a, b in zip(saved, now))
    if isinstance(saved, float) or isinstance(now, float):
        return saved is None or now is None or not math.isclose(float(saved), float(now), rel_tol=1e-9, abs_tol=1e-12)
    return saved != now


_RECORD_START = '{"epoch": '  # how every line append_metrics writes begins (the epoch comes first)


def _metrics_leftover(path: Path) -> bool:
    """Whether ``path`` holds only what ``append_metrics`` could have left of a run that never saved:
    whole epoch records, one a line, the last one possibly cut short by a kill (down to nothing: a
    file that a kill or a full disk left empty). Blank lines, text before a record or a line that
    is not one are someone else's: append_metrics never writes them."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    *whole, last = text.split("\n")
    return (all(line.startswith(_RECORD_START) for line in whole)
            and (last.startswith(_RECORD_START) or _RECORD_START.startswith(last)))


def check_new_run_dir(run_dir: str | os.PathLike) -> None:
    """Refuse a folder a new run cannot start in: a file, a folder holding a run, or one holding
    files a run would overwrite. The CLI asks before it loads the data (an image folder is scanned
    whole), the trainer again when the run starts."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"--out {run_dir} is a file; a run is written into a directory: choose another --out")
    # metrics.jsonl alone is the leftover of a first save that failed (it is written before the
    # checkpoint set): not a run, so it is cleared as before, and the same command can start again
    found = [name for name in RUN_FILES if name != "metrics.jsonl" and (run_dir / name).exists()]
    if found:  # a run, even one without its training state, is never overwritten
        raise FileExistsError(
            f"{run_dir} already holds a run ({found[0]}); pass --resume to continue it, or choose "
            "another --out (in Python: resume=True, or another out)"
        )
    _check_no_foreign_outputs(run_dir)


def _check_no_foreign_outputs(run_dir: Path) -> None:
    """Refuse to start a run where it would overwrite files that are not a failed first save's.

    A first save appends ``metrics.jsonl`` (and rewrites ``metrics.csv`` from it) before it writes
    the checkpoint set; when it fails in between, those two are left without a run, and the same
    command may start again over them. Anything else of a run's names (the plots; a
    ``metrics.csv`` alone; a ``metrics.jsonl`` that is not what a first save leaves,
    :func:`_metrics_leftover`) is someone's file.
    """
    leftover = (run_dir / "metrics.jsonl").is_file() and _metrics_leftover(run_dir / "metrics.jsonl")
    for name in ("metrics.jsonl", *RUN_OUTPUTS):
        if (run_dir / name).exists() and not (leftover and name in ("metrics.jsonl", "metrics.csv")):
            raise FileExistsError(
                f"{run_dir / name} exists but {run_dir} holds no run (no model.json): a run would overwrite it; "
                "move it away or choose another --out"
            )


def _check_same_arch(run_dir: Path, meta: dict[str, Any], model: nn.Module) -> None:
    """Refuse, in one line naming what differs, a model whose tensors are not those the run saved (a
    Python resume with resnet20 for a resnet8 run, or norm='none' for 'batch'): torch's missing and
    unexpected keys were many lines, and the trainable-count check would blame freezing. Shapes, not
    create_model's arguments, are compared: the same model spelled otherwise (a default given or left
    out, checkpoint_segments) resumes. The norm is compared too (create_model fills it in, and
    load_meta corrects old records of it): torch's BN and ours ('scratch') have the same tensors."""
    path = run_dir / "model.safetensors"
    if not path.is_file():
        return
    try:
        with safe_open(str(path), framework="pt") as f:  # the header only: names and shapes
            saved = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (OSError, SafetensorError):  # a damaged file: loading it says so in its own words
        return
    now = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    arch, config = meta.get("arch") or {}, getattr(model, "model_config", None) or {}
    norms = arch.get("norm"), config.get("norm")  # None: not recorded (an old run, a model of one's own)
    other_norm = None not in norms and norms[0] != norms[1]
    if not differ and not other_norm:
        return
    shape = lambda d, k: "none" if k not in d else "x".join(map(str, d[k])) or "a scalar"
    names = [arch.get("name"), config.get("name")]
    what = [f"model.json: {names[0]}, this model: {names[1]}"] if None not in names and names[0] != names[1] else []
    what += [f"norm: model.json {norms[0]!r}, this model {norms[1]!r}"] if other_norm else []
    what += [f"{len(differ)} of its tensors differ, e.g. {differ[0]}: run {shape(saved, differ[0])}, now "
             f"{shape(now, differ[0])}"] if differ else ["the same tensors in other layers"]
    raise ValueError(f"{run_dir} was trained with another model ({'; '.join(what)}): resume with the model the run "
                     "was started with (model.json's 'arch' holds create_model's arguments)")


def _check_trainable(run_dir: Path, meta: dict[str, Any], saved: dict[str, Any],
                     optimizer: torch.optim.Optimizer) -> None:
    """Refuse, in one line, a model that trains other tensors than the run did (torch's own error:
    "loaded state dict contains a parameter group that doesn't match the size of optimizer's
    group"); the usual cause is whiten_first_conv, which freezes the first conv, done on one side only."""
    then = [len(g["params"]) for g in saved.get("param_groups", [])]
    now = [len(g["params"]) for g in optimizer.param_groups]
    if then == now:
        return
    whitened = meta.get("whiten")
    why = ("its first conv was whitened and frozen (model.json 'whiten'): call whiten_first_conv on the model "
           "before resuming, as the run's start did" if whitened and sum(then) < sum(now) else
           "it was trained without a whitened first conv: resume with the model unwhitened, its layers frozen "
           "as the run's start had them" if not whitened and sum(then) > sum(now) else
           "resume with the model as the run's start had it (the same layers frozen)")
    counts = (f"{sum(then)} trainable tensors, this model has {sum(now)}" if sum(then) != sum(now) else
              f"other trainable tensors than this model's ({sum(now)} trainable tensors either way, but in "
              "other optimizer groups: other layers frozen)")
    raise ValueError(f"{run_dir} was trained with {counts}: {why}")


class Checkpointer:
    """Starts, resumes and saves one training run in ``config.out`` (nothing when it is None).

    Every process restores the same state on resume; only the main process (rank 0) writes.

    Args:
        config: the run's :class:`TrainConfig` (``out``, ``resume``, ``plots``).
        model: the unwrapped model whose weights are saved.
        optimizer, scheduler: restored on resume and saved with every checkpoint.
        facts: :func:`run_facts`, saved and compared on resume.
        meta: the ``model.json`` entries (arch, classes, input size, mean/std...).
        steps_per_epoch, world_size: saved so a resume under another world size maps its position.
        device: where the RNG state and weights are restored to.
        is_main: whether this process writes.
        log: where messages go.
        scaler: the fp16 gradient scaler, whose scale is saved and restored with the optimizer.
        averaging: the run's EMA and lookahead weights: with an EMA, ``model.safetensors`` (and
            ``best.safetensors``) hold the EMA and ``train_state.pt`` the raw weights; lookahead's
            slow weights go into ``train_state.pt``.
    """

    def __init__(self, config: TrainConfig, model: nn.Module, optimizer, scheduler, *, facts: dict, meta: dict,
                 steps_per_epoch: int, world_size: int, device: torch.device, is_main: bool,
                 log: Callable[[str], None], scaler: torch.amp.GradScaler | None = None,
                 averaging: WeightAveraging | None = None) -> None:
        self.run_dir = Path(config.out) if config.out else None
        self.config, self.model, self.optimizer, self.scheduler = config, model, optimizer, scheduler
        self.scaler, self.averaging = scaler, averaging
        self.saved_model = averaging.reported if averaging is not None else model  # what model.safetensors holds
        self.facts, self.meta = facts, meta
        self.steps_per_epoch, self.world_size, self.device = steps_per_epoch, world_size, device
        self.writes = self.run_dir is not None and is_main
        self.lock = RunLock(self.run_dir or ".")
        self.log = log
        # the last evaluated epoch's test confusion matrix, saved with every checkpoint (with plots on)
        # so that a resume can redraw a confusion.png that a kill left older than the checkpoint
        self.confusion: dict[str, Any] | None = None
        self.saved_at: tuple[int, int] | None = None  # (epoch, step) of the last checkpoint this process wrote

    def start(self, history) -> Position:
        """Resume (``config.resume``) or begin a run; returns the position to train from. The
        writing process holds the run directory's lock from here to :meth:`close`: a second
        writer is refused before it changes anything."""
        if self.run_dir is None:
            return Position()
        try:
            return self._start(history)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Let the next writer in (the end of the run; the OS does it at exit too)."""
        self.lock.release()

    def _start(self, history) -> Position:
        if self.writes and self.run_dir.is_dir():
            self.lock.acquire()
            for what in recover_run_dir(self.run_dir):
                self.log(f"{self.run_dir}: {what}")
        if (self.config.resume or self.writes) and (lost := run_without_meta(self.run_dir)):
            raise lost  # neither way out of the two refusals below would work
        if self.config.resume:
            if not self.run_dir.exists():  # before the permission check: a missing folder is not a denied one
                raise missing_run(self.run_dir)
            if self.writes:
                _check_writable(self.run_dir)
            return self._resume(history)
        if self.writes:
            check_new_run_dir(self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _check_writable(self.run_dir)
            self.lock.acquire()  # two new runs started at once into a new folder: the second stops here
            for name in ("metrics.jsonl", "metrics.csv"):  # a failed first save's leftovers (checked above)
                (self.run_dir / name).unlink(missing_ok=True)
        return Position()

    def _resume(self, history) -> Position:
        run_dir = self.run_dir
        state = load_train_state(run_dir)
        check_resume(run_dir, state, self.facts, self.world_size)
        meta = load_meta(run_dir)  # read once for both checks, which run before the model is touched
        _check_same_arch(run_dir, meta, self.saved_model)  # before the counts: another model differs in them too
        _check_trainable(run_dir, meta, state["optimizer"], self.optimizer)
        self.saved_model.load_state_dict(load_state_dict_file(run_dir / "model.safetensors", map_location=self.device))
        if self.averaging is not None:
            self.averaging.load_state_dict(state.get("averaging") or {})
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        pos = Position(int(state["epoch"]), int(state["step"]), state.get("partial") or None)
        if int(state.get("steps_per_epoch", self.steps_per_epoch)) != self.steps_per_epoch:  # other world size/batch
            pos.step = rescale_resume_position(self.scheduler, state, self.steps_per_epoch)
        pos.seconds = float((pos.partial or {}).get("seconds", 0.0)) if pos.step else 0.0
        if self.world_size > 1 or "loss_sum" not in (pos.partial or {}):
            # one process's sums (only one process saves them): every rank would add them; a stop
            # saved under torchrun kept only the seconds (read above), for a resume of any size
            pos.partial = None
        # Only rank 0 reads (and trims) metrics.jsonl: concurrent rewrites by several ranks race.
        history.epochs = read_metrics(run_dir, upto=pos.epoch) if self.writes else []
        missing = sorted(set(range(1, pos.epoch + 1)) - {r["epoch"] for r in history.epochs})
        if self.writes and missing:  # the checkpoint counts them: the file was cut or edited
            self.log(f"{run_dir / 'metrics.jsonl'} lacks the records of epoch(s) {', '.join(map(str, missing))} that "
                     "the checkpoint covers (the file was cut or edited): training goes on; its curves have a gap")
        history.best_acc, history.best_epoch = float(state["best_acc"]), int(state["best_epoch"])
        self.confusion = state.get("confusion") or None  # absent from checkpoints before it was saved
        set_rng_state(state["rng"], self.device)
        return pos

    def save(self, pos: Position, history, *, best: bool = False) -> None:
        """Write the checkpoint set for ``pos`` (the RNG state is taken now, at a step boundary)."""
        if not self.writes:
            return
        metrics = {k: v for k, v in history.last.items() if isinstance(v, (int, float))}
        save_checkpoint(self.run_dir, self.saved_model, {**self.meta, "epoch": pos.epoch, "step": pos.step,
                                                         "metrics": metrics}, best=best,
                        train_state={
                            "epoch": pos.epoch, "step": pos.step, "optimizer": self.optimizer.state_dict(),
                            "scheduler": self.scheduler.state_dict(), "rng": get_rng_state(self.device),
                            "best_acc": history.best_acc, "best_epoch": history.best_epoch,
                            "steps_per_epoch": self.steps_per_epoch, "world_size": self.world_size, **self.facts,
                            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
                            "averaging": self.averaging.state_dict() if self.averaging is not None else {},
                            "partial": pos.partial if pos.step else None,
                            "confusion": self.confusion,
                        })
        self.saved_at = (int(pos.epoch), int(pos.step))  # committed: a stop from here on loses nothing of it

    def refresh_curves(self, history) -> None:
        """Redraw ``curves.png`` and ``confusion.png`` when they are missing or older than the last
        checkpoint (a kill during the last epoch's plots, which follow it): called when a finished
        run is resumed. The confusion matrix comes from the checkpoint (no evaluation); one saved
        before checkpoints kept it is left as it is."""
        if not (self.writes and self.config.plots and history.epochs):
            return
        saved = (self.run_dir / "model.json").stat().st_mtime_ns

        def why_stale(path: Path) -> str | None:
            if not path.exists():
                return "it was missing"
            return "it was older than the last checkpoint" if path.stat().st_mtime_ns < saved else None

        if why := why_stale(self.run_dir / "curves.png"):
            self._plot_curves(history.epochs)
            self.log(f"{self.run_dir / 'curves.png'}: redrawn ({why})")
        if self.confusion is not None and (why := why_stale(self.run_dir / "confusion.png")):
            self._plot_confusion(torch.as_tensor(self.confusion["matrix"]), int(self.confusion["epoch"]))
            self.log(f"{self.run_dir / 'confusion.png'}: redrawn ({why})")

    def _plot_confusion(self, confusion: torch.Tensor, epoch: int) -> None:
        plot_confusion(confusion, self.meta["classes"], self.run_dir / "confusion.png",
                       title=f"{self._name()}: test confusion (epoch {epoch})")

    def _plot_curves(self, records: list[dict]) -> None:
        plot_curves(records, self.run_dir / "curves.png", title=f"{self._name()} on {self.meta.get('dataset')}",
                    label_smoothing=self.config.label_smoothing)

    def _name(self) -> str:
        return (self.meta.get("arch") or {}).get("name", "model")

    def end_epoch(self, history, confusion: torch.Tensor | None, *, improved: bool) -> None:
        """After an epoch: its metrics line, the checkpoint, and the plots when they changed
        (``confusion`` is None for an epoch that was not evaluated)."""
        if not self.writes:
            return
        record = history.last
        append_metrics(self.run_dir, record)
        if confusion is not None:  # kept with plots off too: a later session with them draws confusion.png
            self.confusion = {"epoch": int(record["epoch"]), "matrix": confusion.detach().to("cpu", torch.int64, copy=True)}
        self.save(Position(record["epoch"], 0), history, best=improved)
        if self.config.plots and (improved or record["epoch"] == self.config.epochs):
            self._plot_curves(history.epochs)
            if confusion is not None:
                self._plot_confusion(confusion, int(record["epoch"]))
