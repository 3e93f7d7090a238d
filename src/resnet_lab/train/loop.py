"""The training loop: plain functions (`train_one_epoch`, `evaluate`) wired by `train`.

Reads top to bottom: set up (device, optimizer, schedule, resume), then for each epoch train,
evaluate in eval mode (running BN statistics), log, plot and checkpoint. Ctrl-C and SIGTERM save
the exact position and return; a non-finite loss stops the run with the step named and the last
good checkpoint kept.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn import BatchNormBase
from .checkpoint import load_meta, load_state_dict_file, load_train_state, recover_run_dir, save_checkpoint
from .config import TrainConfig
from .distributed import (
    all_reduce_evaluation,
    all_reduce_train_metrics,
    broadcast_buffers,
    get_world_size,
    rescale_resume_position,
)
from .metrics import confusion_matrix, per_class_accuracy
from .optim import build_optimizer, build_scheduler

__all__ = ["History", "TrainingDiverged", "evaluate", "resolve_device", "train"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class History:
    """What :func:`train` returns: one record per epoch and how the run ended."""

    epochs: list[dict] = field(default_factory=list)
    best_acc: float = 0.0
    best_epoch: int = 0
    run_dir: str | None = None
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def last(self) -> dict:
        return self.epochs[-1] if self.epochs else {}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
    return dev


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DistributedDataParallel


class _GracefulStop:
    """Ctrl-C and SIGTERM ask the loop to stop at the next step boundary (never in the middle of
    a checkpoint write); a second Ctrl-C stops at once."""

    def __init__(self) -> None:
        self.requested: int | None = None

    def _handler(self, signum, frame):
        if self.requested is not None:
            raise KeyboardInterrupt(f"signal {signum}")
        self.requested = signum
        sys.stderr.write("\nstopping after the current step and saving (Ctrl-C again to stop at once)\n")

    def check(self) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt(f"signal {self.requested}")

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        self._old_int = signal.getsignal(signal.SIGINT)
        old_term = signal.signal(signal.SIGTERM, self._handler)
        signal.signal(signal.SIGINT, self._handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGINT, self._old_int)


def _rng_state(device: torch.device) -> dict[str, Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


@torch.no_grad()
def evaluate(
    model: nn.Module | Sequence[nn.Module],
    loader: Iterable,
    *,
    num_classes: int,
    device: str | torch.device = "cpu",
    bf16: bool = False,
    channels_last: bool = False,
    tta: bool = False,
) -> dict[str, Any]:
    """Loss, accuracy and confusion matrix of ``model`` in eval mode over ``loader``.

    ``model`` may be a list of models (an ensemble): their softmax probabilities are averaged.
    With ``tta`` (test-time augmentation), each image and its left-right mirror are classified
    and their probabilities averaged; only for data whose classes survive mirroring (the training
    flip already assumes it). Whenever probabilities are averaged, the loss is the negative log of
    the averaged probability of the true class. Train/eval modes are restored afterwards.
    """
    device = torch.device(device)
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise ValueError("evaluate needs at least one model")
    was_training = [m.training for m in models]
    for m in models:
        m.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    n = 0
    try:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            inputs = (x, x.flip(-1)) if tta else (x,)
            with _autocast(device, bf16):
                outputs = [m(v).float() for m in models for v in inputs]
            if len(outputs) == 1:
                (logits,) = outputs
                total_loss += F.cross_entropy(logits, y, reduction="sum").double()
            else:
                probs = torch.stack([o.softmax(1) for o in outputs]).mean(0)
                logits = probs.log()  # argmax and NLL of the averaged probabilities
                total_loss += F.nll_loss(logits, y, reduction="sum").double()
            cm += confusion_matrix(logits.argmax(1), y, num_classes)
            n += y.numel()
    finally:
        for m, mode in zip(models, was_training):
            m.train(mode)
    if n == 0:
        raise ValueError("evaluation loader yielded no samples")
    cm = cm.cpu()
    return {
        "loss": float(total_loss) / n,
        "acc": float(cm.diagonal().sum()) / n,
        "confusion": cm,
        "per_class_acc": per_class_accuracy(cm).tolist(),
        "n": n,
    }


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def train(
    model: nn.Module,
    data,
    config: TrainConfig,
    *,
    meta: dict[str, Any] | None = None,
    callbacks: Iterable[Callable[[dict], None]] = (),
    step_callbacks: Iterable[Callable[[dict], None]] = (),
    log: Callable[[str], None] | None = None,
) -> History:
    """Train ``model`` on ``data`` (a :class:`resnet_lab.data.DataBundle`) as ``config`` says.

    Args:
        model: any classifier (``create_model`` gives one with ``model_config`` for saving).
        data: has ``train`` and ``test`` loaders yielding ``(x, y)``, and ``info`` with
            ``classes``, ``input_size``, ``mean``, ``std`` (saved to ``model.json``).
        config: the :class:`TrainConfig`.
        meta: extra entries for ``model.json``.
        callbacks: called after every epoch with the epoch record (raise KeyboardInterrupt to
            stop the way Ctrl-C does).
        step_callbacks: called after every optimizer step with ``{"epoch", "step", "loss"}``.
        log: where summary lines go (default: print, through tqdm so bars stay intact).

    Returns:
        The :class:`History`. On Ctrl-C/SIGTERM the position is saved (with ``out``) and the
        history returned with ``interrupted=True``.
    """
    from tqdm.auto import tqdm

    log = log or (lambda s: tqdm.write(s))
    device = resolve_device(config.device)
    info = data.info
    num_classes = len(info.classes)
    run_dir = Path(config.out) if config.out else None
    rank = int(os.environ.get("RANK", "0"))
    is_main = rank == 0
    world_size = get_world_size()  # > 1 under torchrun, after setup_distributed

    torch.manual_seed(config.seed)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

    base = _unwrap(model)
    base.to(device)
    if config.channels_last:
        base.to(memory_format=torch.channels_last)
    if config.checkpoint_segments:
        if not hasattr(base, "set_grad_checkpointing"):
            raise ValueError(f"{type(base).__name__} does not support gradient checkpointing "
                             "(checkpoint_segments / --checkpoint-segments); leave it at 0")
        base.set_grad_checkpointing(config.checkpoint_segments)

    steps_per_epoch = len(data.train)
    if config.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, config.max_steps_per_epoch)
    if steps_per_epoch < 1:
        raise ValueError("the training loader yields no full batch: lower --batch-size or use more data")
    has_bn = _check_batch_norm_batch_size(base, getattr(data.train, "batch_size", None))
    run_facts = _run_facts(config, data, world_size)
    optimizer = build_optimizer(
        base, config.optimizer, config.lr, config.momentum, config.nesterov, config.weight_decay, config.lr_scale
    )
    scheduler = build_scheduler(
        optimizer, config.schedule, config.epochs * steps_per_epoch, int(config.warmup_epochs * steps_per_epoch)
    )
    n_trainable = sum(p.numel() for p in base.parameters() if p.requires_grad)
    n_frozen = sum(p.numel() for p in base.parameters() if not p.requires_grad)

    history = History(run_dir=str(run_dir) if run_dir else None)
    start_epoch, skip_steps = 0, 0
    if run_dir is not None and is_main:
        for what in recover_run_dir(run_dir):
            log(f"{run_dir}: {what}")
    if config.resume:
        state = load_train_state(run_dir)
        _check_resume(run_dir, state, run_facts)
        base.load_state_dict(load_state_dict_file(run_dir / "model.safetensors", map_location=device))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, skip_steps = int(state["epoch"]), int(state["step"])
        if int(state.get("steps_per_epoch", steps_per_epoch)) != steps_per_epoch:  # other world size/batch
            skip_steps = rescale_resume_position(scheduler, state, steps_per_epoch)
        # Only rank 0 reads (and trims) metrics.jsonl: concurrent rewrites by several ranks race.
        history.epochs = _read_metrics(run_dir, upto=start_epoch) if is_main else []
        history.best_acc, history.best_epoch = float(state["best_acc"]), int(state["best_epoch"])
        _set_rng_state(state["rng"], device)
        if start_epoch >= config.epochs:
            if is_main:
                log(f"{run_dir} already finished {start_epoch} epochs; raise --epochs to train further")
            return history
        where = f"epoch {start_epoch + 1}, step {skip_steps}" if skip_steps else f"epoch {start_epoch + 1}"
        if is_main:
            log(f"resuming {run_dir} at {where}")
    elif run_dir is not None and (run_dir / "train_state.pt").exists() and is_main:
        raise FileExistsError(
            f"{run_dir} already holds a run; pass --resume to continue it, or choose another --out"
        )
    if run_dir is not None and is_main and not config.resume:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)

    fwd = torch.compile(model) if config.compile else model
    meta_base = {
        "arch": getattr(base, "model_config", None),
        "classes": list(info.classes),
        "input_size": list(info.input_size),
        "mean": list(info.mean),
        "std": list(info.std),
        "dataset": getattr(info, "name", None),
        "resize": getattr(info, "resize", None),  # how prediction resizes images (data.to_model_input)
        "params": {"trainable": n_trainable, "frozen": n_frozen},
        "train_config": run_facts["recipe"],
        **(meta or {}),
    }
    if is_main:
        log(
            f"training {meta_base['arch']['name'] if meta_base['arch'] else type(base).__name__} on {device} "
            f"for {config.epochs} epochs, {steps_per_epoch} steps each; "
            f"{n_trainable:,} trainable / {n_frozen:,} frozen parameters"
        )

    def checkpoint(epoch_done: int, step: int, rng: dict[str, Tensor], best: bool = False) -> None:
        if run_dir is None or not is_main:
            return
        record = history.last
        metrics = {k: v for k, v in record.items() if isinstance(v, (int, float))}
        save_checkpoint(run_dir, base, {**meta_base, "epoch": epoch_done, "step": step, "metrics": metrics}, best=best,
                        train_state={
                            "epoch": epoch_done, "step": step, "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "rng": rng,
                            "best_acc": history.best_acc, "best_epoch": history.best_epoch,
                            "steps_per_epoch": steps_per_epoch, "world_size": world_size, **run_facts,
                        })

    t_start = time.perf_counter()
    # The resume position: completed epochs, completed steps of the current one, and the global
    # RNG state at that point (dropout); the loaders draw from their own (seed, epoch) generators.
    pos = (start_epoch, skip_steps, _rng_state(device))
    try:
        with _GracefulStop().installed() as stop:
            for epoch in range(start_epoch, config.epochs):
                if hasattr(data.train, "set_epoch"):
                    data.train.set_epoch(epoch)
                model.train()
                t0 = time.perf_counter()
                loss_sum = torch.zeros((), dtype=torch.float64, device=device)
                plain_sum = torch.zeros((), dtype=torch.float64, device=device)  # cross-entropy without smoothing
                correct = torch.zeros((), dtype=torch.int64, device=device)
                seen, step = 0, 0
                if skip_steps and hasattr(data.train, "load_state_dict"):
                    # Resuming mid-epoch: loaders with a position jump straight to the saved batch
                    # (their order and augmentation are functions of (seed, epoch, position)).
                    data.train.load_state_dict({"epoch": epoch, "position": skip_steps})
                    step = skip_steps
                bar = tqdm(total=steps_per_epoch, initial=step, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                           disable=not (config.progress and is_main), unit="batch", dynamic_ncols=True, mininterval=0.5)
                for x, y in data.train:
                    if step >= steps_per_epoch:
                        break
                    if step < skip_steps:  # resuming mid-epoch without a loader position: replay
                        step += 1
                        bar.update(1)
                        continue
                    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                    if has_bn and x.shape[0] < 2:  # a lone last sample has no batch statistics: skip it
                        continue
                    if config.channels_last:
                        x = x.contiguous(memory_format=torch.channels_last)
                    with _autocast(device, config.bf16):
                        logits = fwd(x)
                        loss = _loss(logits, y, config.label_smoothing)
                        if isinstance(logits, tuple):  # GoogLeNet with aux heads: (logits, aux2, aux1)
                            logits = logits[0]
                    if not torch.isfinite(loss):
                        raise _diverged(f"loss became {loss.item()}", epoch, step, scheduler, run_dir)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if config.grad_clip:
                        # Clipping a non-finite norm would write NaN into every weight; stop instead.
                        norm = nn.utils.clip_grad_norm_(base.parameters(), config.grad_clip)
                        if not torch.isfinite(norm):
                            raise _diverged(f"gradient norm became {norm.item()}", epoch, step, scheduler, run_dir)
                    optimizer.step()
                    scheduler.step()
                    step += 1
                    pos = (epoch, step, _rng_state(device))
                    stop.check()
                    loss_sum += loss.detach().double() * y.numel()
                    if config.label_smoothing:
                        with torch.no_grad():
                            plain_sum += F.cross_entropy(logits.detach().float(), y, reduction="sum").double()
                    correct += (logits.argmax(1) == y).sum()
                    seen += y.numel()
                    for cb in step_callbacks:
                        cb({"epoch": epoch + 1, "step": step, "loss": loss.detach()})
                    bar.update(1)
                    if step % 10 == 0 or step == steps_per_epoch:
                        rate = seen / max(time.perf_counter() - t0, 1e-9)
                        bar.set_postfix(loss=f"{float(loss_sum) / seen:.4f}", acc=f"{100 * int(correct) / seen:.2f}%",
                                        lr=f"{scheduler.get_last_lr()[0]:.4g}", img_s=f"{rate:.0f}", refresh=False)
                bar.close()
                if seen == 0 and skip_steps < steps_per_epoch:
                    raise ValueError(f"epoch {epoch + 1} made no optimizer step: every batch had fewer than 2 "
                                     "samples; use a larger --batch-size or more data")
                skip_steps = 0
                if world_size > 1:  # rank 0 reports the global batch's figures
                    loss_sum, correct, seen = all_reduce_train_metrics(loss_sum, correct, seen)
                    if config.label_smoothing:
                        plain_sum = all_reduce_train_metrics(plain_sum, torch.zeros_like(correct), 0)[0]
                train_seconds = time.perf_counter() - t0
                if world_size > 1:  # every rank evaluates its test shard with rank 0's (saved) BN statistics
                    broadcast_buffers(base)
                ev = evaluate(model if world_size == 1 else base, data.test, num_classes=num_classes, device=device,
                              bf16=config.bf16, channels_last=config.channels_last)
                if world_size > 1:
                    ev = all_reduce_evaluation(ev)
                record = {
                    "epoch": epoch + 1,
                    "train_loss": float(loss_sum) / max(seen, 1),
                    "train_acc": int(correct) / max(seen, 1),
                    "test_loss": ev["loss"],
                    "test_acc": ev["acc"],
                    "lr": scheduler.get_last_lr()[0],
                    "train_seconds": train_seconds,
                    "images_per_second": seen / max(train_seconds, 1e-9),
                    "elapsed_seconds": time.perf_counter() - t_start,
                }
                if config.label_smoothing:  # comparable with test_loss (curves.png plots both)
                    record["train_loss_plain"] = float(plain_sum) / max(seen, 1)
                # Never let a diverged model overwrite a good checkpoint (or be reported as done).
                _check_finite(base, ev["loss"], epoch, steps_per_epoch, scheduler, run_dir, history.best_epoch)
                history.epochs.append(record)
                improved = ev["acc"] > history.best_acc
                if improved:
                    history.best_acc, history.best_epoch = ev["acc"], epoch + 1
                if is_main:
                    left = (config.epochs - epoch - 1) * (time.perf_counter() - t0)
                    log(
                        f"epoch {epoch + 1:>3}/{config.epochs}  train loss {record['train_loss']:.4f} "
                        f"acc {100 * record['train_acc']:.2f}%  test loss {ev['loss']:.4f} acc {100 * ev['acc']:.2f}%  "
                        f"{record['images_per_second']:.0f} img/s  {train_seconds:.1f}s  "
                        f"best {100 * history.best_acc:.2f}%  left ~{_fmt_time(left)}"
                    )
                if run_dir is not None and is_main:
                    _append_metrics(run_dir, record)
                    pos = (epoch + 1, 0, _rng_state(device))
                    checkpoint(*pos, best=improved)
                    if config.plots and (improved or epoch + 1 == config.epochs):
                        _plot(run_dir, history, ev["confusion"], info.classes, meta_base)
                for cb in callbacks:
                    cb(record)
                stop.check()
    except KeyboardInterrupt:
        history.interrupted = True
        if run_dir is not None and is_main and not _nonfinite_tensors(base):
            # An interrupt inside a step loses only that step: `pos` counts completed ones.
            checkpoint(*pos)
            log(f"\ninterrupted in epoch {pos[0] + 1} after {pos[1]} steps; state saved to {run_dir}.\n"
                f"resume with the same command and --resume")
        elif is_main:  # other ranks: rank 0 saves for the whole job
            log("\ninterrupted (no --out, nothing saved)")
    history.seconds = time.perf_counter() - t_start
    return history


def _loss(logits, y: Tensor, label_smoothing: float) -> Tensor:
    """Cross-entropy; a model with auxiliary classifiers (GoogLeNet's ``(logits, aux2, aux1)``
    in training) adds them with weight 0.3 each, as Szegedy et al. 2014 did."""
    if isinstance(logits, tuple):
        main, *aux = logits
        return _loss(main, y, label_smoothing) + 0.3 * sum(_loss(a, y, label_smoothing) for a in aux if a is not None)
    return F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)


def _diverged(what: str, epoch: int, step: int, scheduler, run_dir: Path | None) -> TrainingDiverged:
    kept = f"; the last good checkpoint (epoch {epoch}) is in {run_dir}" if run_dir and epoch else ""
    return TrainingDiverged(
        f"{what} at epoch {epoch + 1}, step {step + 1} (lr {scheduler.get_last_lr()[0]:.4g}){kept}. "
        "Lower --lr, add --grad-clip, or check the data."
    )


def _nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of floating-point parameters and buffers (BN running statistics) holding NaN or inf."""
    return [name for name, t in [*model.named_parameters(), *model.named_buffers()]
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _check_finite(model: nn.Module, test_loss: float, epoch: int, steps: int, scheduler, run_dir: Path | None,
                  best_epoch: int) -> None:
    """Raise :class:`TrainingDiverged` when the epoch ended with a non-finite test loss, weights or
    BN statistics; called before anything of the epoch is written."""
    bad = _nonfinite_tensors(model)
    if math.isfinite(test_loss) and not bad:
        return
    what = f"test loss {test_loss}" if not math.isfinite(test_loss) else "the test loss stayed finite but"
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        what += f"{',' if not math.isfinite(test_loss) else ''} non-finite values in {shown}"
    kept = (f"the last good checkpoint (epoch {epoch}) is kept in {run_dir}" if run_dir and epoch
            else "no checkpoint was written")
    raise TrainingDiverged(
        f"training diverged at the end of epoch {epoch + 1} ({what}; lr {scheduler.get_last_lr()[0]:.4g}); {kept}. "
        "Lower --lr, add --grad-clip, or check the data."
    )


def _check_batch_norm_batch_size(model: nn.Module, batch_size: int | None) -> bool:
    """Whether ``model`` has batch norm layers that train; refuse batch size 1 for them."""
    was_training = model.training
    model.train()  # frozen BN layers (transfer) stay in eval through their own train()
    has_bn = any(isinstance(m, (nn.modules.batchnorm._BatchNorm, BatchNormBase)) and m.training
                 for m in model.modules())
    model.train(was_training)
    if has_bn and batch_size == 1:
        raise ValueError("batch size 1 cannot train batch normalization: one sample has no batch statistics "
                         "(its output would be all zeros). Use --batch-size 2 or more, or --norm group / none")
    return has_bn


# TrainConfig fields that shape the trajectory (weights, schedule); the rest (device, out,
# progress, plots, compile, channels_last, bf16, checkpoint_segments, deterministic) can change on resume.
_RECIPE_FIELDS = ("epochs", "lr", "optimizer", "momentum", "nesterov", "weight_decay", "schedule", "warmup_epochs",
                  "label_smoothing", "grad_clip", "seed", "lr_scale", "max_steps_per_epoch")


def _run_facts(config: TrainConfig, data, world_size: int) -> dict[str, dict]:
    """What a resumed run must share with the saved one: the recipe and the data."""
    info = data.info
    batch = getattr(data.train, "batch_size", None)
    return {
        "recipe": {k: getattr(config, k) for k in _RECIPE_FIELDS},
        "data": {
            "dataset": getattr(info, "name", None), "classes": list(info.classes),
            "input_size": list(info.input_size), "mean": list(info.mean), "std": list(info.std),
            "global_batch_size": batch * world_size if batch else None,
            "num_train": getattr(data, "num_train", None),
            "augment": getattr(data.train, "augment", None),
            "random_erasing": getattr(data.train, "random_erasing", None),
        },
    }


def _check_resume(run_dir: Path, state: dict, now: dict[str, dict]) -> None:
    """Refuse to resume when the checkpoint set is torn or the recipe or data differ from the run's."""
    meta = load_meta(run_dir)
    saved_pos = (int(state["epoch"]), int(state["step"]))
    meta_pos = (int(meta.get("epoch", saved_pos[0])), int(meta.get("step", saved_pos[1])))
    if meta_pos != saved_pos:
        raise ValueError(
            f"{run_dir} is inconsistent: model.json is at epoch {meta_pos[0]} step {meta_pos[1]} but train_state.pt "
            f"at epoch {saved_pos[0]} step {saved_pos[1]} (an older resnet-lab was killed while saving). The weights "
            "still load for evaluate/predict, or continue with a warm restart: resnet-lab finetune --from "
            f"{run_dir} --strategy all --out NEW_DIR"
        )
    saved = {"recipe": state.get("recipe"), "data": state.get("data")}
    if saved["data"] is None:  # runs saved before these facts were recorded: what model.json knows
        saved["data"] = {k: meta.get(k) for k in ("classes", "input_size", "mean", "std")}
        saved["data"]["dataset"] = meta.get("dataset")
    diffs = [f"{part} {key}: run has {saved[part][key]!r}, now {now[part][key]!r}"
             for part in ("recipe", "data") if saved[part]
             for key in saved[part] if key in now[part] and _differs(saved[part][key], now[part][key])]
    if diffs:
        raise ValueError(
            f"cannot resume {run_dir} with different settings ({'; '.join(diffs)}). Resume with the command the run "
            f"was started with; to train a finished run further, warm-restart from it: resnet-lab finetune --from "
            f"{run_dir} --strategy all --epochs N --lr X --out NEW_DIR"
        )


def _differs(saved, now) -> bool:
    if isinstance(saved, (list, tuple)) and isinstance(now, (list, tuple)):
        return len(saved) != len(now) or any(_differs(a, b) for a, b in zip(saved, now))
    if isinstance(saved, float) or isinstance(now, float):
        return saved is None or now is None or not math.isclose(float(saved), float(now), rel_tol=1e-9, abs_tol=1e-12)
    return saved != now


def _append_metrics(run_dir: Path, record: dict) -> None:
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def _read_metrics(run_dir: Path, upto: int) -> list[dict]:
    """Records of the epochs that the checkpoint covers; later lines (from a crash) are dropped, and so
    is a torn last line (a killed append)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    lines = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or not isinstance(record.get("epoch"), int):
                raise ValueError("no integer 'epoch'")
        except ValueError as e:
            if i == len(lines):
                break  # the append a kill cut short: the checkpoint does not count that epoch anyway
            raise ValueError(f"{path} line {i} is corrupt ({e}); delete that line (or the file) and resume") from e
        records.append(record)
    records = [r for r in records if r["epoch"] <= upto]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def _plot(run_dir: Path, history: History, cm: Tensor, classes, meta: dict) -> None:
    from .plots import plot_confusion, plot_curves

    name = meta["arch"]["name"] if meta.get("arch") else "model"
    smoothing = (meta.get("train_config") or {}).get("label_smoothing", 0.0)
    plot_curves(history.epochs, run_dir / "curves.png", title=f"{name} on {meta.get('dataset')}",
                label_smoothing=smoothing)
    plot_confusion(cm, classes, run_dir / "confusion.png", title=f"{name}: test confusion (epoch {history.last['epoch']})")
