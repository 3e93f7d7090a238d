"""The training loop: plain functions (:func:`train_one_epoch`, :func:`evaluate`) wired by :func:`train`.

``train`` reads top to bottom: set up (device, model, optimizer, schedule), start or resume the run
through the :class:`~resnet_lab.train.checkpoint.Checkpointer`, then for each epoch train, evaluate
in eval mode (running BN statistics), check that nothing diverged, log and checkpoint. Ctrl-C and
SIGTERM stop at the next step boundary and save the exact position; a non-finite loss, gradient
norm, test loss, weight or BN statistic stops the run with an error before anything diverged is
written, and the last good checkpoint stays.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import signal
import sys
import threading
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from .._text import count
from ..data.loaders import InMemoryLoader, StreamingLoader
from ..data.transforms import tta_offsets, tta_views
from ..models import check_input_size, is_model
from ..models.registry import check_module, check_num_classes, weights_dtype
from ..nn import BatchNormBase, SyncBatchNorm
from ..runs import arch_outputs
from .averaging import WeightAveraging
from .bars import bar_disable
from .checkpoint import Checkpointer, Position, run_facts, warm_restart_command
from .config import TrainConfig
from .device import amp_dtype, autocast, check_fp16, resolve_device, unwrap, warn_emulated_bf16
from .distributed import DistContext, dist_env
from .metrics import confusion_matrix, per_class_accuracy
from .mixing import Mix, mix_batch, mix_rng
from .optim import build_optimizer, build_scheduler, warmup_steps
from .progressive import check_progressive_resize, progressive_side, resize_batch
from .sam import sam_gradient
from .tensorboard import open_tensorboard

__all__ = ["EpochStats", "History", "TrainingDiverged", "evaluate", "resolve_device", "train", "train_one_epoch"]


class TrainingDiverged(RuntimeError):
    """The loss, a gradient norm, the test loss, a weight or a BN statistic became NaN or infinite."""


@dataclass
class History:
    """What :func:`train` returns: one record per epoch and how the run ended."""

    epochs: list[dict] = field(default_factory=list)
    best_acc: float = 0.0
    best_epoch: int = 0
    run_dir: str | None = None
    interrupted: bool = False
    seconds: float = 0.0
    session: int = 1  # 1 for a new run, one more on every resume: each record says which one wrote it

    @property
    def last(self) -> dict:
        return self.epochs[-1] if self.epochs else {}

    def add(self, record: dict) -> bool:
        """Append an epoch's record; returns whether its test accuracy is the best so far."""
        self.epochs.append(record)
        # Not evaluated: never the best. The first evaluated epoch is, whatever its accuracy (even
        # 0%, so best.safetensors always exists once something was evaluated).
        improved = "test_acc" in record and (not self.best_epoch or record["test_acc"] > self.best_acc)
        if improved:
            self.best_acc, self.best_epoch = record["test_acc"], record["epoch"]
        return improved


class _HardStop(KeyboardInterrupt):
    """A second Ctrl-C: raised wherever the loop is, possibly inside an optimizer step."""


class _GracefulStop:
    """Ctrl-C and SIGTERM ask the loop to stop at the next step boundary (never in the middle of
    a step or a checkpoint write); a second Ctrl-C stops at once."""

    # Under torchrun a Ctrl-C reaches each worker twice: from the terminal (the whole process
    # group) and forwarded by torchrun a moment later. The same signal again within this many
    # seconds is that echo, not a second Ctrl-C (3 of 5 such stops used to save nothing).
    ECHO_SECONDS = 2.0

    def __init__(self, saves: bool = True, announces: bool = True, distributed: bool = False) -> None:
        self.requested: int | None = None
        self.saves = saves  # whether the stop saves anything (a run with an output directory)
        self.announces = announces  # whether this process says so (under torchrun: rank 0, as for all progress)
        self.distributed = distributed
        self._at = 0.0

    @classmethod
    def for_run(cls, run: "_Run") -> "_GracefulStop":
        """Saving when the run has a directory, said by the main process, echo-aware under torchrun."""
        return cls(saves=run.config.out is not None, announces=run.job.is_main, distributed=run.job.world_size > 1)

    def _handler(self, signum, frame):
        if self.requested is not None:
            echo = self.distributed and signum == self.requested and time.monotonic() - self._at < self.ECHO_SECONDS
            if echo:
                return
            raise _HardStop(f"signal {signum}")
        self.requested, self._at = signum, time.monotonic()
        if self.announces:
            saving = " and saving" if self.saves else ""
            sys.stderr.write(f"\nstopping after the current step{saving} (Ctrl-C again to stop at once)\n")

    def check(self) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt(f"signal {self.requested}")

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        old_int = signal.signal(signal.SIGINT, self._handler)
        old_term = signal.signal(signal.SIGTERM, self._handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, old_term)
            signal.signal(signal.SIGINT, old_int)


class _FiniteGuard:
    """Watches losses and gradient norms for NaN/inf on the device. The host looks only where that
    costs nothing: every step on a CPU, and on a GPU only when asked (every few steps), so the
    device's queue is never drained once per step."""

    def __init__(self, device: torch.device) -> None:
        self.ok = torch.ones((), dtype=torch.bool, device=device)
        self.every_step = device.type == "cpu"

    def watch(self, value: Tensor, describe: Callable[[], str]) -> None:
        self.ok &= torch.isfinite(value.detach()).all()
        if self.every_step:
            self.check(describe)

    def check(self, describe: Callable[[], str]) -> None:
        if not bool(self.ok):
            raise TrainingDiverged(describe())


@dataclass
class EpochStats:
    """Sums over one epoch's training batches (on the device: no host sync per step)."""

    loss_sum: Tensor  # of the optimized loss (with label smoothing, if any)
    plain_sum: Tensor  # of the plain cross-entropy, comparable with the test loss
    correct: Tensor
    seen: Tensor
    seconds: float = 0.0
    # A few images of the epoch's last batch, as the model got them: an epoch that is not evaluated
    # runs them in eval mode before it is saved (weights and BN statistics can be finite, yet so
    # large that every eval-mode output overflows). Not saved: a resumed epoch takes its own.
    probe: Tensor | None = None

    @classmethod
    def zeros(cls, device: torch.device) -> "EpochStats":
        zero = torch.zeros((), dtype=torch.float64, device=device)
        return cls(zero.clone(), zero.clone(), zero.long(), zero.long())

    @torch.no_grad()
    def add(self, loss: Tensor, logits: Tensor, y: Tensor, label_smoothing: float, mix: Mix | None = None) -> None:
        """One batch; with ``mix`` (mixup/CutMix) the plain loss is blended as the objective is, and
        a prediction counts as correct when it names the label with the larger share."""
        self.loss_sum += loss.detach().double() * y.numel()
        if label_smoothing:
            self.plain_sum += _mixed(lambda t: F.cross_entropy(logits.detach().float(), t, reduction="sum"), y,
                                     mix).double()
        self.correct += (logits.argmax(1) == (mix.major(y) if mix else y)).sum()
        self.seen += y.numel()

    def state_dict(self) -> dict[str, float]:
        """The sums as plain numbers, for a checkpoint taken mid-epoch."""
        return {"loss_sum": float(self.loss_sum), "plain_sum": float(self.plain_sum), "correct": int(self.correct),
                "seen": int(self.seen), "seconds": float(self.seconds)}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, float], device: torch.device) -> "EpochStats":
        """The sums of a part of an epoch saved by :meth:`state_dict`, to go on adding to."""
        stats = cls.zeros(device)
        stats.loss_sum += float(state["loss_sum"])
        stats.plain_sum += float(state["plain_sum"])
        stats.correct += int(state["correct"])
        stats.seen += int(state["seen"])
        stats.seconds = float(state["seconds"])
        return stats

    def postfix(self, lr: float, seconds: float) -> dict[str, str]:
        """The progress bar's figures (a host sync: call every few steps, not every step)."""
        seen = int(self.seen)
        return {"loss": f"{float(self.loss_sum) / seen:.4f}", "acc": f"{100 * int(self.correct) / seen:.2f}%",
                "lr": f"{lr:.4g}", "img_s": f"{seen / seconds:.0f}"}


def evaluate(
    model: nn.Module | Sequence[nn.Module],
    loader: Iterable,
    *,
    num_classes: int,
    device: str | torch.device = "cpu",
    bf16: bool = False,
    fp16: bool = False,
    channels_last: bool = False,
    tta: bool = False,
    tta_shift: int = 0,
    fill: Sequence[float] | None = None,
    tta_pattern: str = "cross",
) -> dict[str, Any]:
    """Loss, accuracy and confusion matrix of ``model`` in eval mode over ``loader``.

    ``model`` may be a list of models (an ensemble): their softmax probabilities are averaged.
    With ``tta`` (test-time augmentation), each image and its left-right mirror are classified
    and their probabilities averaged; only for data whose classes survive mirroring (the training
    flip already assumes it). With ``tta_shift`` > 0, each of those views is also classified moved
    ``tta_shift`` pixels up, down, left and right, the uncovered pixels set to ``fill`` (per
    channel; pass ``-mean / std``, a black pixel, for normalized images), and all views count
    equally (:func:`resnet_lab.data.transforms.tta_views`); meant for models trained with a pad-crop
    of at least that many pixels. ``tta_pattern="diamond"`` moves them every way within
    ``tta_shift`` pixels instead (:func:`resnet_lab.data.transforms.tta_offsets`: 26 views at 2 px).
    Whenever probabilities are averaged, the loss is the negative log of the averaged probability of
    the true class, computed in log space (a probability below float32's range stays finite). The
    flags (``bf16``, ``fp16``, ``channels_last``, ``tta``) must be True or False; ``fp16`` needs a
    CUDA device, as in train; on an x86 CPU without AVX512-BF16 or AMX, ``bf16`` warns that it is
    emulated there and slower than float32, as train does. Train/eval modes are restored afterwards.
    """
    device = resolve_device(device)  # "auto" and a clear message for "gpu", as train
    _check_evaluate_args(num_classes, device, bf16=bf16, fp16=fp16, channels_last=channels_last, tta=tta,
                         tta_shift=tta_shift, tta_pattern=tta_pattern)
    warn_emulated_bf16(device, bf16)
    return _evaluate(model, loader, num_classes=num_classes, device=device, bf16=bf16, fp16=fp16,
                     channels_last=channels_last, tta=tta, tta_shift=tta_shift, fill=fill, tta_pattern=tta_pattern)


@torch.no_grad()
def _evaluate(model: nn.Module | Sequence[nn.Module], loader: Iterable, *, num_classes: int, device: torch.device,
              bf16: bool, fp16: bool, channels_last: bool, tta: bool = False, tta_shift: int = 0,
              fill: Sequence[float] | None = None, tta_pattern: str = "cross") -> dict[str, Any]:
    """:func:`evaluate` with its arguments checked and ``device`` resolved, and no warning: train
    evaluates every epoch with the bf16 it warned of once, as it started."""
    models = list(model) if isinstance(model, (list, tuple)) else [model]
    if not models:
        raise ValueError("evaluate needs at least one model")
    for m in models:
        check_module(m, "evaluate")
    modes = [(sub, sub.training) for m in models for sub in m.modules()]  # each module's own (a BN put in eval
    for m in models:                                                       # inside a training model stays so)
        m.eval()
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    cm = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
    n = 0
    try:
        for i, batch in enumerate(loader):
            x, y = check_batch(batch, models[0], "evaluate")  # kinds and shapes only: no host sync
            if i == 0:  # a hand-made loader's label 3 of 3 classes was torch's "Target 3 is out of bounds"
                check_label_range(y, num_classes, f"num_classes={num_classes}")
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True).long()
            inputs = tta_views(x, flip=tta, shift=tta_shift, fill=fill, pattern=tta_pattern)
            if channels_last:
                inputs = [v.contiguous(memory_format=torch.channels_last) for v in inputs]
            with autocast(device, amp_dtype(bf16, fp16)):
                outputs = [m(v).float() for m in models for v in inputs]
            if outputs[0].shape[-1] != num_classes:
                raise ValueError(f"the model has {outputs[0].shape[-1]} outputs but num_classes is {num_classes}: pass "
                                 "the number of classes the model was built for")
            loss, predicted = _averaged_loss(outputs, y)
            total_loss += loss
            cm += confusion_matrix(predicted, y, num_classes)
            n += y.numel()
    finally:
        for sub, mode in modes:
            sub.training = mode
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


def _check_evaluate_args(num_classes: int, device: torch.device, *, tta_shift: int, tta_pattern: str,
                         **flags: bool) -> None:
    """evaluate()'s arguments, each error naming its argument (a truthy "no" was taken for True,
    num_classes=True and tta_shift=2.5 failed deep in torch)."""
    for name, flag in flags.items():
        if not isinstance(flag, bool):  # "no" is truthy: tta="no" would average the mirror views
            raise TypeError(f"{name} must be True or False, got {flag!r}")
    check_num_classes(num_classes)  # as create_model and transfer_model refuse it
    if isinstance(tta_shift, bool) or not isinstance(tta_shift, numbers.Integral):
        raise TypeError(f"tta_shift must be an int >= 0 (pixels each view moves; 0 turns it off), got {tta_shift!r}")
    tta_offsets(tta_shift, tta_pattern)  # a negative shift or an unknown pattern fails before any model runs
    amp_dtype(flags["bf16"], flags["fp16"])  # both: refused here, not per batch
    check_fp16(device, flags["fp16"])  # as train refuses --fp16 on a CPU


def check_batch(batch: Any, model: nn.Module, caller: str) -> tuple[Tensor, Tensor]:
    """A caller's ``(images, labels)`` batch, checked before the model sees it, else a one-line error
    naming the bad part and the way out (torch's own were "expected target dtype to be Long or Byte",
    "expected scalar type Double but found Float", "too many values to unpack"). Labels of any
    integer dtype are taken (evaluate turns them to int64)."""
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        got = f"a {type(batch).__name__} of {len(batch)}" if isinstance(batch, (tuple, list)) else type(batch).__name__
        raise TypeError(f"{caller} needs batches of (images, labels), got {got}: yield two tensors per batch")
    x, y = batch
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
        raise TypeError(f"{caller} needs batches of two tensors (images, labels), got ({type(x).__name__}, "
                        f"{type(y).__name__}): torch.as_tensor(...) them")
    _check_images(x, model, caller)
    _check_labels(y, x.shape[0], caller)
    return x, y


def _check_images(x: Tensor, model: nn.Module, caller: str) -> None:
    """check_batch's images: the weights' dtype, and for create_model's models (N, C, H, W) with their channels."""
    weights = weights_dtype(model, x.dtype)
    if x.dtype != weights:
        way = "x.float()" if weights == torch.float32 else f"x.to({weights}) or model.float()"
        scale = " (and divide 0-255 pixels by 255)" if not x.is_floating_point() else ""
        raise TypeError(f"{caller} got {x.dtype} images for a model with {weights} weights: {way}{scale}")
    if x.dim() == 0:
        raise ValueError(f"{caller} needs a batch of inputs, got a 0-d tensor: stack the images along a first axis")
    arch = getattr(unwrap(model), "model_config", None) or {}  # create_model's: an image model
    if arch and x.dim() != 4:  # (N, H, W) grayscale was torch's "expected input[1, 4, 8, 8] to have 1 channels"
        raise ValueError(f"{caller} needs images of shape (N, C, H, W), got {tuple(x.shape)}"
                         + (": add the channel axis, x.unsqueeze(1)" if x.dim() == 3 else ""))
    if arch.get("in_channels") is not None and x.shape[1] != arch["in_channels"]:
        raise ValueError(f"{caller} got images of {x.shape[1]} channels, shape {tuple(x.shape)}, for a model that "
                         f"takes {arch['in_channels']}: load the data with in_channels={arch['in_channels']}")


def _check_labels(y: Tensor, n: int, caller: str) -> None:
    """check_batch's labels: integer class indices, one for each of the ``n`` images."""
    if y.dtype == torch.bool or y.is_floating_point() or y.is_complex():
        raise TypeError(f"{caller} needs integer class indices as labels, got {y.dtype}: y.long()")
    if tuple(y.shape) != (n,):
        raise ValueError(f"{caller} needs one label per image, shape ({n},), got {tuple(y.shape)}"
                         + (": y.flatten()" if y.numel() == n else ""))


def check_label_range(y: Tensor, num_classes: int, source: str) -> None:
    """Labels are class indices 0 .. num_classes - 1 (``source``: where num_classes came from, for the message)."""
    low, high = (int(y.min()), int(y.max())) if y.numel() else (0, 0)
    if low < 0 or high >= num_classes:
        raise ValueError(f"label {low if low < 0 else high} is not a class index for {source}: labels must be 0 to "
                         f"{num_classes - 1}")


def _averaged_loss(outputs: list[Tensor], y: Tensor) -> tuple[Tensor, Tensor]:
    """The summed loss (float64) and the predicted classes of one batch from the logits of every
    model and view: cross-entropy of a single output; otherwise the negative log of the averaged
    probability of the true class, averaged in log space (logsumexp of the log-softmaxes minus
    log k), so that a probability that rounds to 0 in float32 (an overconfident model) gives a
    large finite loss, not inf. The prediction is the argmax of the averaged probabilities."""
    if len(outputs) == 1:
        (logits,) = outputs
        return F.cross_entropy(logits, y, reduction="sum").double(), logits.argmax(1)
    log_probs = torch.stack([o.log_softmax(1) for o in outputs]).logsumexp(0) - math.log(len(outputs))
    predicted = torch.stack([o.softmax(1) for o in outputs]).mean(0).argmax(1)
    return F.nll_loss(log_probs, y, reduction="sum").double(), predicted


def _fmt_time(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _mixed(loss_of: Callable[[Tensor], Tensor], y: Tensor, mix: Mix | None) -> Tensor:
    """``loss_of(y)``, or with mixup/CutMix the blend of the losses against both labels."""
    return loss_of(y) if mix is None else mix.lam * loss_of(y) + (1.0 - mix.lam) * loss_of(mix.y_b)


def _loss(logits, y: Tensor, label_smoothing: float) -> Tensor:
    """Cross-entropy; a model with auxiliary classifiers (GoogLeNet's ``(logits, aux2, aux1)``
    in training) adds them with weight 0.3 each, as Szegedy et al. 2014 did."""
    if isinstance(logits, tuple):
        main, *aux = logits
        return _loss(main, y, label_smoothing) + 0.3 * sum(_loss(a, y, label_smoothing) for a in aux if a is not None)
    return F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)


def _forward_loss(model: nn.Module, x: Tensor, y: Tensor, mix: Mix | None, config: TrainConfig,
                  device: torch.device) -> tuple[Any, Tensor]:
    """The model's output for a training batch and its loss, under the run's autocast."""
    with autocast(device, amp_dtype(config.bf16, config.fp16)):
        logits = model(x)
        return logits, _mixed(lambda t: _loss(logits, t, config.label_smoothing), y, mix)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    scheduler,
    config: TrainConfig,
    *,
    device: torch.device,
    epoch: int,
    steps: int,
    start_step: int = 0,
    skip_single: bool = True,
    on_step: Callable[[int, Tensor], None] | None = None,
    progress: bool = True,
    scaler: torch.amp.GradScaler | None = None,
    averaging: WeightAveraging | None = None,
    stats: EpochStats | None = None,
) -> EpochStats:
    """One pass over ``loader``: ``steps`` optimizer steps, from ``start_step`` when resuming.

    Args:
        model: called on each batch, in training mode.
        loader: yields ``(x, y)``; with ``load_state_dict`` it jumps to ``start_step``, otherwise the
            first batches are replayed without training.
        optimizer, scheduler: stepped once per batch (``scheduler`` per step, not per epoch).
        config: ``bf16``/``fp16``, ``channels_last``, ``label_smoothing``, ``grad_clip``, ``epochs``.
        device: where the batches go.
        epoch: 0-based, for messages and the loader's position.
        steps: optimizer steps per epoch.
        start_step: steps of this epoch already done.
        skip_single: skip a batch of one sample (batch norm has no statistics for it).
        on_step: called after every step with ``(step, loss)``; may raise KeyboardInterrupt to stop.
        progress: show a bar with loss, accuracy, learning rate and images/s (on a terminal only).
        scaler: the fp16 gradient scaler (default: a disabled one, which changes nothing).
        averaging: EMA and lookahead weights, updated after every optimizer step.
        stats: the sums to add this pass's batches to (those of the steps before ``start_step``,
            when resuming mid-epoch); updated in place, also when a stop interrupts the pass.
    """
    model.train()
    t0 = time.perf_counter()
    stats = stats if stats is not None else EpochStats.zeros(device)
    try:
        _epoch_steps(model, loader, optimizer, scheduler, config, device, epoch, steps, start_step, skip_single,
                     on_step, progress, scaler, averaging, stats)
    finally:  # an interrupted pass keeps its time too, for the images/s of the resumed epoch
        stats.seconds += time.perf_counter() - t0
    return stats


def _epoch_steps(model, loader, optimizer, scheduler, config, device, epoch, steps, start_step, skip_single, on_step,
                 progress, scaler, averaging, stats: EpochStats) -> None:
    """The loop of :func:`train_one_epoch` (its arguments), adding each batch to ``stats``."""
    t0 = time.perf_counter()
    guard = _FiniteGuard(device)
    scaler = scaler or torch.amp.GradScaler(device.type, enabled=False)
    step = start_step
    if start_step and hasattr(loader, "load_state_dict"):  # jump straight to the saved batch
        loader.load_state_dict({"epoch": epoch, "position": start_step})
    bar = tqdm(total=steps, initial=step, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
               disable=bar_disable(progress), unit="batch", dynamic_ncols=True, mininterval=0.5)
    # at=None: the step being taken (1-based); after it is counted, the check names it as ``at=step``
    where = lambda at=None: (f"at epoch {epoch + 1}, step {step + 1 if at is None else at} "  # noqa: E731
                             f"(lr {_base_lr(scheduler):.4g}); no checkpoint of this epoch is written. "
                             f"{_diverged_hint(config.grad_clip, config.sam)}")
    for i, batch in enumerate(loader, start=start_step if hasattr(loader, "load_state_dict") else 0):
        if step >= steps:
            break
        if i < start_step:  # resuming mid-epoch without a loader position: replay
            continue
        x, y = _training_batch(batch, model, device, first=step == start_step)
        if skip_single and x.shape[0] < 2:  # a lone last sample has no batch statistics
            continue
        mix = (mix_batch(x, y, mixup=config.mixup, cutmix=config.cutmix, rng=mix_rng(config.seed, epoch, step))
               if config.mixup or config.cutmix else None)
        x = _training_input(mix.x if mix else x, config, epoch)
        logits, loss = _forward_loss(model, x, y, mix, config, device)
        if isinstance(logits, tuple):  # GoogLeNet with aux heads: (logits, aux2, aux1)
            logits = logits[0]
        guard.watch(loss, lambda: f"loss became {loss.item()} {where()}")
        again = (lambda: _forward_loss(model, x, y, mix, config, device)[1]) if config.sam else None
        _backward_and_step(loss, model, optimizer, scaler, config.grad_clip, guard, where, sam=config.sam,
                           loss_at_ascent=again)
        _step_schedule(scheduler, scaler)
        if averaging is not None:  # before on_step, which may stop the run: the saved state includes this step
            averaging.after_step()
        step += 1
        stats.add(loss, logits, y, config.label_smoothing, mix)
        stats.probe = x[:_PROBE_IMAGES].detach()
        if on_step is not None:
            on_step(step, loss)
        bar.update(1)
        if step % 10 == 0 or step == steps:  # the only host syncs: for the bar, and the guard with it
            guard.check(lambda: f"loss or gradient norm became non-finite in a step up to the one {where(step)}")
            elapsed = stats.seconds + time.perf_counter() - t0  # with the part of the epoch before a resume
            bar.set_postfix(stats.postfix(_base_lr(scheduler), elapsed), refresh=False)
    bar.close()
    if step == start_step < steps:
        raise ValueError(f"epoch {epoch + 1} made no optimizer step: every batch had fewer than 2 samples; use a "
                         "larger --batch-size or more data")


def _training_batch(batch: Any, model: nn.Module, device: torch.device, first: bool) -> tuple[Tensor, Tensor]:
    """A loader's batch checked (a user's own loader: kinds and shapes, no host sync) and on ``device``,
    labels as int64; on a pass's ``first`` batch the label range too (it needs a host sync), for
    models that say their outputs (train checked those against the data's classes)."""
    x, y = check_batch(batch, model, "train")
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True).long()
    classes = arch_outputs(getattr(unwrap(model), "model_config", None) or {}) if first else None
    if classes:
        check_label_range(y, classes, f"a model with {classes} outputs")
    return x, y


def _base_lr(scheduler) -> float:
    """The schedule's rate now (``--lr`` at its peak), not a scaled group's: the groups are sorted by
    their ``lr_scale``, so the first one may be the norm layers' at ``--norm-lr-scale`` times it."""
    first = scheduler.optimizer.param_groups[0]
    return scheduler.get_last_lr()[0] / first.get("lr_scale", 1.0)


_PROBE_IMAGES = 16  # see EpochStats.probe


@torch.no_grad()
def _eval_overflows(model: nn.Module, x: Tensor, config: TrainConfig, device: torch.device) -> bool:
    """Whether ``model`` in eval mode (running BN statistics) gives a non-finite output for ``x``."""
    was_training = model.training
    model.eval()
    try:
        with autocast(device, amp_dtype(config.bf16, config.fp16)):
            out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        return not bool(torch.isfinite(out.float()).all())
    finally:
        model.train(was_training)


def _training_input(x: Tensor, config: TrainConfig, epoch: int) -> Tensor:
    """A training batch as the model gets it: at progressive resizing's size for ``epoch`` (the
    batch's own size is the full one), in the asked memory format."""
    if config.progressive_resize:
        x = resize_batch(x, progressive_side(config.progressive_resize, min(x.shape[-2:]), epoch, config.epochs))
    if config.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _backward_and_step(loss: Tensor, model: nn.Module, optimizer: torch.optim.Optimizer,
                       scaler: torch.amp.GradScaler, grad_clip: float | None, guard: _FiniteGuard,
                       where: Callable[[], str], sam: float = 0.0,
                       loss_at_ascent: Callable[[], Tensor] | None = None) -> None:
    """Backward, optional clipping of the global gradient norm, and the optimizer step; the
    scaler is a pass-through unless fp16, where it also skips a step whose gradients overflowed.
    With ``sam`` (SAM's rho), the step takes SAM's gradient instead: that of ``loss_at_ascent()``,
    the batch's loss recomputed at the weights moved ``sam`` uphill (train/sam.py)."""
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if sam:
        second: list[Tensor] = []
        norm = sam_gradient(model, sam, lambda: second.append(loss_at_ascent()) or second[0],
                            backward=lambda again: scaler.scale(again).backward())
        guard.watch(norm, lambda: f"gradient norm became {norm.item()} {where()}")
        # before the step: a blow-up at the ascent's weights would otherwise be written into every weight
        guard.watch(second[0], lambda: f"the loss at SAM's ascent (--sam {sam:g}) became {second[0].item()} {where()}")
    if grad_clip:
        scaler.unscale_(optimizer)
        norm = nn.utils.clip_grad_norm_(unwrap(model).parameters(), grad_clip)
        if not scaler.is_enabled():
            # Clipping a non-finite norm would write NaN into every weight: stop before the step.
            guard.watch(norm, lambda: f"gradient norm became {norm.item()} {where()}")
    scaler.step(optimizer)
    scaler.update()


def _step_schedule(scheduler, scaler: torch.amp.GradScaler) -> None:
    """Move the schedule on by one batch, also past an fp16 step the scaler skipped, so that the run
    keeps its length in steps. torch then warns that ``lr_scheduler.step()`` came before
    ``optimizer.step()``, as if the calls were in the wrong order; they are not, and since fp16 runs
    often skip their first steps while the scale settles, that warning is silenced for fp16 only."""
    if not scaler.is_enabled():
        scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
        scheduler.step()


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
    """Train ``model`` on ``data`` (a :class:`resnet_lab.data.DataBundle`: ``train``/``test`` loaders
    and ``info`` with classes, input size, mean, std) as ``config`` says.

    Args:
        meta: extra entries for ``model.json``.
        callbacks: called after every epoch with its record (raise KeyboardInterrupt to stop as Ctrl-C).
        step_callbacks: called after every optimizer step with ``{"epoch", "step", "loss"}``.
        log: where summary lines go (default: through tqdm, so bars stay intact).

    Returns:
        The :class:`History`; after Ctrl-C/SIGTERM with ``interrupted=True`` and the position saved. With
        ``config.ema``, ``model`` ends holding the EMA (what was evaluated and saved), unless interrupted.
    """
    run = _setup_run(model, data, config, meta, log or tqdm.write)
    history = History(run_dir=config.out)
    pos = _start(run, history)
    if pos is None:  # a resume of a finished run
        return history
    board, t_start = None, time.perf_counter()
    try:  # from here on, whatever happens, the run directory's lock is let go
        run.say(_start_line(run.base, run.device, config, run.steps, pos))
        board = open_tensorboard(config, run.base, run.facts, start_epoch=pos.epoch, is_main=run.job.is_main)
        t_start = time.perf_counter()
        with _GracefulStop.for_run(run).installed() as stop:
            on_step = _step_hook(pos, step_callbacks, stop)
            # A resume mid-epoch brings the seconds the cut-short sessions spent in this epoch (they
            # wrote no record): counted in this session's elapsed_seconds, the sessions add up to
            # the run's wall time (under torchrun too, where the epoch's sums start again).
            carried = pos.seconds  # 0 unless resumed mid-epoch (Checkpointer.start)
            for epoch in range(pos.epoch, config.epochs):
                record = _run_epoch(run, epoch, pos, on_step, history, board, t_start - carried)
                pos.epoch, pos.step = epoch + 1, 0
                for cb in callbacks:
                    cb(record)
                stop.check()
                if pos.epoch == config.stop_after and pos.epoch < config.epochs:
                    run.say(_pause_line(history, pos.epoch, config.epochs))
                    break
        if run.averaging is not None:
            run.averaging.finish()  # the caller's model ends as the one reported and saved
    except KeyboardInterrupt as e:
        history.interrupted = True
        _save_interrupted(run, pos, history, hard=isinstance(e, _HardStop))
    finally:
        _close(run, board, history)
    history.seconds = time.perf_counter() - t_start
    return history


# model.json's transfer.phase of a finetune's first phase (transfer.finetune writes it).
FROZEN_PHASE = "frozen backbone"

# How a paused or interrupted run goes on, said to CLI users and Python callers alike.
RESUME_HINT = "the same command and --resume (in Python: resume=True)"


def _pause_line(history: History, epoch: int, epochs: int) -> str:
    """What a ``stop_after`` pause says, the only line at the stop (the CLI adds none): where the run
    stands and how it goes on."""
    best = (f"best test accuracy {100 * history.best_acc:.2f}% so far" if history.best_epoch
            else "no epoch evaluated yet")  # eval_every: not a best of 0.00%
    return f"paused after epoch {epoch} of {epochs}: {best}; continue with {RESUME_HINT}"


@dataclass
class _Run:
    """What every epoch of one training run shares, built once by :func:`_setup_run`."""

    config: TrainConfig
    data: Any
    fwd: nn.Module  # what the batches go through: the model, compiled when asked
    base: nn.Module  # the unwrapped model: the parameters, what is saved
    device: torch.device
    job: DistContext
    steps: int
    has_bn: bool
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    averaging: WeightAveraging | None  # EMA and lookahead weights, when asked
    facts: dict
    ckpt: Checkpointer
    say: Callable[[str], None]  # log on the main process, silent on the others
    epoch_stats: EpochStats | None = None  # the current epoch's sums so far, saved by an interrupt
    caller: _CallerState | None = None  # the caller's process-wide settings, restored at the end (_close)
    made_out: bool = False  # this start created the run directory (_begin): removed again if it is left empty


def check_model_fits_data(model: nn.Module, data, config: TrainConfig, meta: dict | None = None) -> None:
    """Before any step: the arguments are what train() takes, the model's outputs and input channels
    fit the data (for models that record them, as create_model's do), and a run with ``out`` can be
    loaded back (its model.json needs the model's architecture)."""
    check_module(model, "train")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}: TrainConfig(epochs=..., lr=...)")
    config.check()  # again: a field set after the config was made (config.epochs = 0) is checked too
    if not all(hasattr(data, a) for a in ("train", "test", "info")):
        raise TypeError(f"data must be a DataBundle (train, test, info) from resnet_lab.data.load_data, got "
                        f"{type(data).__name__}")
    env = dist_env()
    if hasattr(data.test, "__len__") and len(data.test) == 0 and env.world_size > 1 and getattr(data, "num_test", 0):
        # this rank's share is empty, not the test set (it used to say "give each class more images")
        raise ValueError(f"the {data.num_test} test image(s) are fewer than the {env.world_size} processes, so rank "
                         f"{env.rank} gets none to evaluate: use fewer processes "
                         "(--nproc-per-node) or more test images")
    if hasattr(data.test, "__len__") and len(data.test) == 0:  # else an epoch trains, then its evaluation fails
        raise ValueError("the test set is empty, so no epoch can be evaluated: give each class more images (the "
                         "held-out split takes a share of each class, none of a class with one image) or a val/ "
                         "folder")
    arch = getattr(unwrap(model), "model_config", None)
    if not arch and config.out and not (meta or {}).get("arch"):
        raise ValueError("the model has no model_config, so the run in out could not be loaded back: build it "
                         "with create_model, give meta={'arch': ...}, or leave out unset")
    if isinstance(data.train, (InMemoryLoader, StreamingLoader)):  # load_data's batches are float32
        _check_float32(model)
    check_model_fits_info(model, data.info, config.progressive_resize)


def _check_float32(model: nn.Module) -> None:
    """A model with float64 or bfloat16 weights failed at its first step on load_data's float32
    batches ("Input type (torch.FloatTensor) and weight type (torch.DoubleTensor) should be the same")."""
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point() and p.dtype != torch.float32), None)
    if dtype is not None:
        raise TypeError(f"train needs a float32 model, got {dtype} weights: call model.float() first (mixed "
                        "precision keeps float32 weights: bf16=True, or fp16=True on CUDA)")


def check_model_fits_info(model: nn.Module, info, progressive_resize: int | None = None) -> None:
    """The model's outputs, input channels and smallest input fit the data described by ``info``
    (a DataBundle's), for models that record their architecture (``model_config``, as
    create_model's do); others pass unchecked."""
    arch = getattr(unwrap(model), "model_config", None)
    if not arch:
        return
    classes, channels = len(info.classes), int(info.input_size[0])
    outputs = arch_outputs(arch)
    if outputs is not None and outputs != classes:
        raise ValueError(f"the model has {outputs} outputs but the data has {classes} classes: "
                         f"create_model(..., num_classes={classes})")
    if arch.get("in_channels") is not None and arch["in_channels"] != channels:
        raise ValueError(f"the model takes {arch['in_channels']} input channels but the data has {channels}: "
                         f"load_data(..., in_channels={arch['in_channels']}) or create_model(..., in_channels={channels})")
    if is_model(arch.get("name", "")):
        rest, (c, _, _) = {k: v for k, v in arch.items() if k != "name"}, info.input_size
        check_input_size(arch["name"], tuple(int(s) for s in info.input_size), **rest)
        if progressive_resize:  # the first epochs' smaller images
            side = int(progressive_resize)
            check_input_size(arch["name"], (int(c), side, side), flag="--progressive-resize", **rest)


# The variable cuBLAS reads for its deterministic workspace; deterministic=True on CUDA sets it while train runs.
CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"


@dataclass
class _CallerState:
    """The process-wide settings train changes, as the caller had them: torch's deterministic mode
    (on, warn only), cuDNN's benchmark flag, ``CUBLAS_WORKSPACE_CONFIG`` (None: unset), the CPU's
    global RNG state and, where CUDA was initialized, every GPU's (``cuda_rng``); else the seed a
    GPU would start from on first use (``seed``: CUDA seeds lazily with the caller's last seed)."""

    determinism: tuple[bool, bool, bool]
    cublas: str | None
    cpu_rng: Tensor
    cuda_rng: list[Tensor] | None
    seed: int


def _caller_state() -> _CallerState:
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    return _CallerState((torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark),
                        os.environ.get(CUBLAS_ENV), torch.get_rng_state(), cuda_rng, torch.initial_seed())


def _restore_caller(state: _CallerState, quiet: bool = False) -> None:
    """Put ``state`` back; ``quiet``: on the way out of an error or Ctrl-C, whose report must not
    be replaced by this one's (a Ctrl-C inside torch's lazy imports leaves them half loaded)."""
    try:
        if state.cublas is None:
            os.environ.pop(CUBLAS_ENV, None)
        else:
            os.environ[CUBLAS_ENV] = state.cublas
        torch.set_rng_state(state.cpu_rng)
        if state.cuda_rng is not None:
            torch.cuda.set_rng_state_all(state.cuda_rng)
        elif torch.cuda.is_available() and torch.cuda.is_initialized():  # first used by this run
            torch.cuda.manual_seed_all(state.seed)  # as the caller's first use would have found them
        torch.use_deterministic_algorithms(state.determinism[0], warn_only=state.determinism[1])
        torch.backends.cudnn.benchmark = state.determinism[2]
    except Exception:
        if not quiet:
            raise


def _setup_run(model: nn.Module, data, config: TrainConfig, meta: dict | None, log: Callable[[str], None]) -> _Run:
    """:func:`_build_run`, remembering the process-wide settings a run changes (the seed, what
    ``deterministic`` switches), to put them back when the run ends (or now, if it cannot start)."""
    caller = _caller_state()
    try:
        run = _build_run(model, data, config, meta, log)
    except BaseException:
        _restore_caller(caller, quiet=True)
        raise
    run.caller = caller
    if run.job.is_main:
        warn_emulated_bf16(run.device, config.bf16)
    return run


def _close(run: _Run, board, history: History) -> None:
    """Let go of what a run holds: its TensorBoard writer, its run directory's lock, the seeded RNG
    and the deterministic mode it switched on (the caller's come back), and the run directory itself
    when this start made it and nothing was saved into it."""
    try:
        if board is not None:
            board.close(history)
    finally:
        run.ckpt.close()
        _restore_caller(run.caller, quiet=True)  # in a finally: never over an error in flight
        if run.made_out:  # a run that failed before its first save (no image decodes): no empty --out behind
            with contextlib.suppress(OSError):  # not empty (or gone): left as it is
                run.ckpt.run_dir.rmdir()


def _build_run(model: nn.Module, data, config: TrainConfig, meta: dict | None, log: Callable[[str], None]) -> _Run:
    """Device, model, optimizer, schedule, gradient scaler and Checkpointer of a run."""
    check_model_fits_data(model, data, config, meta)
    job, device = DistContext.current(), resolve_device(config.device)
    base = _prepare_model(model, config, device)
    has_bn = _check_batch_norm_batch_size(base, getattr(data.train, "batch_size", None), job.world_size)
    steps = _steps_per_epoch(data, config, skip_single=has_bn)
    _check_lookahead_steps(config, steps, meta)
    check_progressive_resize(config.progressive_resize, data.info.input_size)
    optimizer = build_optimizer(base, config.optimizer, config.lr, config.momentum, config.nesterov,
                                config.weight_decay, config.lr_scale, config.norm_lr_scale)
    scheduler = build_scheduler(optimizer, config.schedule, config.epochs * steps, warmup_steps(config.warmup_epochs, steps))
    scaler = torch.amp.GradScaler(device.type, enabled=config.fp16)  # a pass-through unless fp16
    averaging = (WeightAveraging(base, ema=config.ema, lookahead=config.lookahead,
                                 lookahead_alpha=config.lookahead_alpha) if config.ema or config.lookahead else None)
    facts = run_facts(config, data, job.world_size)
    ckpt = Checkpointer(config, base, optimizer, scheduler, facts=facts, meta=_run_meta(base, data.info, facts, meta),
                        steps_per_epoch=steps, world_size=job.world_size, device=device, is_main=job.is_main, log=log,
                        scaler=scaler, averaging=averaging)
    fwd = torch.compile(model) if config.compile else model
    return _Run(config, data, fwd, base, device, job, steps, has_bn, optimizer, scheduler, scaler, averaging, facts,
                ckpt, log if job.is_main else (lambda s: None))


def _check_lookahead_steps(config: TrainConfig, steps: int, meta: dict | None) -> None:
    """Refuse a lookahead k the run never reaches: its slow weights would never sync, which is the
    same run as without lookahead. A finetune's frozen-backbone phase is measured by the main phase
    that follows it (its model.json records that phase's epochs): --lookahead is asked of the whole
    fine-tune, and a short frozen phase alone must not refuse it, nor let a too-short main phase pass."""
    epochs, what = config.epochs, "this run"
    if _phase_of_more(meta) and (meta["transfer"].get("main_phase") or {}).get("epochs"):
        epochs, what = int(meta["transfer"]["main_phase"]["epochs"]), "this fine-tune's main phase"
    total = epochs * steps
    if config.lookahead > total:
        raise ValueError(f"lookahead (--lookahead {config.lookahead}) syncs every {config.lookahead} optimizer steps, "
                         f"but {what} takes {total} ({count(epochs, 'epoch')} of {count(steps, 'step')}): it "
                         f"would never sync, the same as no lookahead; give --lookahead {total} or fewer (5 is the "
                         "paper's), or leave it off")


def _run_epoch(run: _Run, epoch: int, pos: Position, on_step, history: History, board, t_start: float) -> dict:
    """Train one epoch, evaluate, log it and checkpoint it; returns the epoch's record."""
    config, data = run.config, run.data
    if hasattr(data.train, "set_epoch"):
        data.train.set_epoch(epoch)
    # resumed mid-epoch: go on adding to the sums of the steps before the stop, so that the epoch's
    # training loss and accuracy cover all of it
    run.epoch_stats = (EpochStats.from_state_dict(pos.partial, run.device) if pos.step and pos.partial
                       else EpochStats.zeros(run.device))
    pos.partial = None
    stats = train_one_epoch(run.fwd, data.train, run.optimizer, run.scheduler, config, device=run.device, epoch=epoch,
                            steps=run.steps, start_step=pos.step, skip_single=run.has_bn, on_step=on_step,
                            progress=config.progress and run.job.is_main, scaler=run.scaler, averaging=run.averaging,
                            stats=run.epoch_stats)
    shown = run.ckpt.saved_model  # the EMA when on: evaluated, saved and reported instead of the raw weights
    if shown is not run.base:
        run.job.share_buffers(shown)  # the EMA of rank 0's statistics is what is saved
    evaluated = shown if shown is not run.base else run.fwd if run.job.world_size == 1 else run.base
    record, confusion = _epoch_record(evaluated, run.base, data, config, run.device, run.job, stats, epoch,
                                      run.scheduler, t_start, history)
    improved = history.add(record)
    board.log_epoch(record)  # before the checkpoint: a resume purges what it does not cover
    run.say(_epoch_line(record, config, history))
    run.ckpt.end_epoch(history, confusion, improved=improved)
    return record


def _step_hook(pos: Position, step_callbacks: Iterable[Callable[[dict], None]], stop: _GracefulStop):
    """After each step: record the position, call the user's step callbacks, honour a stop request."""
    def on_step(step: int, loss: Tensor) -> None:
        pos.step = step
        for cb in step_callbacks:
            cb({"epoch": pos.epoch + 1, "step": step, "loss": loss.detach()})
        stop.check()

    return on_step


def _start(run: _Run, history: History) -> Position | None:
    """:func:`_begin`, putting the caller's RNG and deterministic mode back when no training follows
    (a refused resume, a run that already finished)."""
    try:
        pos = _begin(run, history)
    except BaseException:
        _restore_caller(run.caller, quiet=True)
        raise
    if pos is None:
        _restore_caller(run.caller)
    return pos


def _begin(run: _Run, history: History) -> Position | None:
    """Begin or resume: the position to train from, or None for a run that already finished (the
    caller's model then holds what the run saved, its EMA when it has one, as after training)."""
    config = run.config
    run.made_out = run.ckpt.writes and not run.ckpt.run_dir.exists()
    pos = run.ckpt.start(history)
    if config.resume and history.epochs:  # elapsed_seconds starts again at 0: the session tells the report
        history.session = int(history.last.get("session", 1)) + 1
    if config.resume and config.stop_after is not None and config.stop_after <= pos.epoch < config.epochs:
        # The command that made the pause, given again, continues the run (as documented); say so,
        # since a user who meant another pause would otherwise see the run train to its end.
        run.say(f"--stop-after {config.stop_after} was reached in an earlier session ({config.out} is at epoch "
                f"{pos.epoch} of {config.epochs}): training on to the end; give a later --stop-after to pause "
                "again (it counts epochs of the whole run)")
    if pos.epoch < config.epochs:
        return pos
    try:
        run.ckpt.refresh_curves(history)
    finally:
        run.ckpt.close()
    run.say(f"{config.out} already finished {count(pos.epoch, 'epoch')}; to train further, warm-restart from it: "
            f"{warm_restart_command(config.out, getattr(run.data.info, 'name', None))}")
    if run.averaging is not None:
        run.averaging.finish()
    return None


def _save_interrupted(run: _Run, pos: Position, history: History, *, hard: bool) -> None:
    """A soft stop lands between steps, so ``pos`` counts completed ones and the state is exact; a
    hard stop (a second Ctrl-C) may land inside an optimizer step, so nothing is saved then."""
    ckpt, base, say = run.ckpt, run.base, run.say
    # One process's sums are the epoch's; under torchrun each rank has its own, and rank 0's alone
    # would be wrong, so a resumed distributed epoch reports the steps after the resume; its
    # seconds are kept either way (the sessions add up to the run's wall time).
    if run.epoch_stats is not None and pos.step:
        partial = run.epoch_stats.state_dict()
        pos.partial = partial if run.job.world_size == 1 else {"seconds": partial["seconds"]}
    if ckpt.run_dir is None:
        say("\ninterrupted (no --out, nothing saved)")
    elif hard and ckpt.saved_at == (pos.epoch + 1, 0):  # its checkpoint was written; pos moves on after it
        say(f"\nstopped at once, after epoch {pos.epoch + 1} was saved; "
            + ("the run is complete" if pos.epoch + 1 == run.config.epochs and not _phase_of_more(ckpt.meta) else
               f"resume with {RESUME_HINT}"))
    elif hard or _nonfinite_tensors(base):
        kept = (f"the last checkpoint is kept; resume with {RESUME_HINT}"
                if (ckpt.run_dir / "train_state.pt").exists() else
                "no checkpoint of this phase yet; the same command with --resume (resume=True) keeps the finished phase"
                if any(ckpt.run_dir.glob("*/train_state.pt")) else  # finetune's frozen phase, in a sub-folder
                "no checkpoint was written yet: run the same command again to start over")
        say(f"\nstopped at once; nothing of epoch {pos.epoch + 1} was saved ({kept})")
    else:
        ckpt.save(pos, history)
        where = (f"after epoch {pos.epoch} of {run.config.epochs}" if pos.step == 0 and pos.epoch
                 else f"in epoch {pos.epoch + 1} after {count(pos.step, 'step')}")
        # stopped while the last plots were drawn; a finetune's frozen phase has its main phase to come
        done = pos.epoch == run.config.epochs and pos.step == 0 and not _phase_of_more(ckpt.meta)
        say(f"\ninterrupted {where}; state saved to {ckpt.run_dir}.\n" + (
            "the run is complete (a --resume redraws its plots if they are behind)" if done else
            f"resume with {RESUME_HINT}"))


def _phase_of_more(meta: dict | None) -> bool:
    """Whether the run of this model.json ``meta`` is a phase that another follows: a finetune's
    frozen-backbone phase, complete at its last epoch while the fine-tune is not."""
    return ((meta or {}).get("transfer") or {}).get("phase") == FROZEN_PHASE


def _prepare_model(model: nn.Module, config: TrainConfig, device: torch.device) -> nn.Module:
    """Seed, determinism, device, memory format and gradient checkpointing; returns the unwrapped model."""
    check_fp16(device, config.fp16)
    torch.manual_seed(config.seed)
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = False
            os.environ.setdefault(CUBLAS_ENV, ":4096:8")  # the caller's value or absence comes back (_close)
    base = unwrap(model).to(device)
    if config.channels_last:
        base.to(memory_format=torch.channels_last)
    if config.checkpoint_segments:
        if not hasattr(base, "set_grad_checkpointing"):
            raise ValueError(f"{type(base).__name__} does not support gradient checkpointing "
                             "(checkpoint_segments / --checkpoint-segments); leave it at 0")
        base.set_grad_checkpointing(config.checkpoint_segments)
    return base


def _steps_per_epoch(data, config: TrainConfig, skip_single: bool = False) -> int:
    steps = len(data.train) - (skip_single and _lone_last_batch(data.train))
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    world = dist_env().world_size
    if steps < 1 and world > 1 and getattr(data, "num_train", 0):
        raise ValueError(f"the training loader yields no full batch: {data.num_train} training image(s) over {world} "
                         f"processes leave each fewer than one batch; use fewer processes (--nproc-per-node), a "
                         "smaller --batch-size or more data")
    if steps < 1:
        raise ValueError(f"the training loader yields no full batch: {no_batch_way_out(data.train)}")
    return steps


def no_batch_way_out(loader, batch_of_one: bool = True) -> str:
    """What to do about a training loader without a batch: one image is a lone last batch, which the
    loaders skip at any --batch-size above 1, and batch norm refuses --batch-size 1 (no statistics).
    ``batch_of_one``: whether --batch-size 1 trains without batch norm (not in the lr range test)."""
    if getattr(loader, "num_samples", None) == 1:
        alone = ", or --batch-size 1 without batch norm (--norm group or none)" if batch_of_one else ""
        return ("its one training image is a lone image, which training skips: use 2 or more images (a larger "
                f"--subset, or more data){alone}")
    return "lower --batch-size or use more data"


def _lone_last_batch(loader) -> bool:
    """Whether a torch DataLoader ends on a batch of one sample, which the loop skips under batch norm
    (the library's own loaders drop it): the schedule must not count it, or it ends a step short."""
    if not isinstance(loader, torch.utils.data.DataLoader) or loader.batch_size is None or loader.drop_last:
        return False
    try:
        return len(loader.sampler) % loader.batch_size == 1
    except TypeError:  # a sampler without a length: len(loader) would have failed before this
        return False


_TRAINING_FACTS = ("global_batch_size", "num_train", "drop_last", "augment", "crop_padding", "flip_mode", "flip",
                   "random_erasing", "folder")


def _run_meta(base: nn.Module, info, facts: dict, meta: dict | None) -> dict[str, Any]:
    """The model.json entries of this run (the Checkpointer adds epoch, step and metrics)."""
    return {
        "arch": getattr(base, "model_config", None),
        "classes": list(info.classes),
        "input_size": list(info.input_size),
        "mean": list(info.mean),
        "std": list(info.std),
        "dataset": getattr(info, "name", None),
        "resize": getattr(info, "resize", None),  # how prediction resizes images (data.to_model_input)
        # the dataset's labels a run on some of its classes kept, which evaluate and report keep again
        **({"class_indices": list(info.class_indices)} if getattr(info, "class_indices", None) else {}),
        # a folder's held-out split (None: its val/ folder), which evaluate and report hold out again
        **({"split_seed": getattr(info, "split_seed", None), "val_fraction": getattr(info, "val_fraction", None)}
           if getattr(info, "name", None) == "folder" else {}),
        "params": {"trainable": sum(p.numel() for p in base.parameters() if p.requires_grad),
                   "frozen": sum(p.numel() for p in base.parameters() if not p.requires_grad)},
        "train_config": facts["recipe"],
        # how the batches were made and shared (the last start's, for a run resumed under another world size)
        "training": {"world_size": dist_env().world_size,
                     "sync_bn": any(isinstance(m, (SyncBatchNorm, nn.SyncBatchNorm)) for m in base.modules()),
                     **{k: facts["data"][k] for k in _TRAINING_FACTS}, **facts["settings"]},
        **(meta or {}),
    }


def _start_line(base: nn.Module, device: torch.device, config: TrainConfig, steps: int, pos: Position) -> str:
    name = base.model_config["name"] if getattr(base, "model_config", None) else type(base).__name__
    if config.resume:
        where = f"epoch {pos.epoch + 1}, step {pos.step}" if pos.step else f"epoch {pos.epoch + 1}"
        return f"resuming {config.out} at {where}"
    params = sum(p.numel() for p in base.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in base.parameters() if not p.requires_grad)
    return (f"training {name} on {device} for {count(config.epochs, 'epoch')}, {count(steps, 'step')} each; "
            f"{params:,} trainable / {frozen:,} frozen parameters")


def _epoch_record(model: nn.Module, base: nn.Module, data, config: TrainConfig, device: torch.device,
                  job: DistContext, stats: EpochStats, epoch: int, scheduler, t_start: float,
                  history: History) -> tuple[dict, Tensor]:
    """Evaluate, combine the processes' figures, refuse a diverged model, and build the epoch's record."""
    loss_sum, plain_sum, correct, seen = job.sum(stats.loss_sum, stats.plain_sum, stats.correct, stats.seen)
    seen = max(int(seen), 1)
    ev = None
    if config.evaluates(epoch + 1):  # the same answer in every process: they evaluate together
        job.share_buffers(base)  # every process evaluates its test shard with rank 0's (saved) statistics
        ev = job.evaluation(_evaluate(model, data.test, num_classes=len(data.info.classes), device=device,
                                      bf16=config.bf16, fp16=config.fp16, channels_last=config.channels_last))
    overflows = False
    if ev is None:  # no test loss to judge by: the saved model must at least give finite outputs
        mine = stats.probe is not None and _eval_overflows(model, stats.probe, config, device)
        (flag,) = job.sum(torch.tensor(float(mine), dtype=torch.float64, device=device))
        overflows = float(flag) > 0  # in every process alike, so that all stop together
    # Never let a diverged model be written (or reported as done): the last good checkpoint stays.
    _check_finite(base, ev["loss"] if ev else float(loss_sum) / seen, epoch, scheduler, config.out,
                  _diverged_hint(config.grad_clip, config.sam), loss_name="test loss" if ev else "training loss",
                  eval_overflows=overflows)
    record = {
        "epoch": epoch + 1,
        "train_loss": float(loss_sum) / seen,
        "train_acc": int(correct) / seen,
        **({"test_loss": ev["loss"], "test_acc": ev["acc"]} if ev else {}),
        "lr": _base_lr(scheduler),
        "train_seconds": stats.seconds,
        "images_per_second": seen / max(stats.seconds, 1e-9),  # all processes together
        "elapsed_seconds": time.perf_counter() - t_start,  # since this session (process) started
        "session": history.session,
    }
    if config.label_smoothing:  # comparable with test_loss (curves.png plots both)
        record["train_loss_plain"] = float(plain_sum) / seen
    return record, ev["confusion"] if ev else None


def _epoch_line(record: dict, config: TrainConfig, history: History) -> str:
    left = (config.epochs - record["epoch"]) * record["train_seconds"]
    test = (f"test loss {record['test_loss']:.4f} acc {100 * record['test_acc']:.2f}%" if "test_acc" in record
            else f"test not evaluated (every {config.eval_every})")
    best = f"best {100 * history.best_acc:.2f}%" if history.best_epoch else "best -"  # nothing evaluated yet
    return (f"epoch {record['epoch']:>3}/{config.epochs}  train loss {record['train_loss']:.4f} "
            f"acc {100 * record['train_acc']:.2f}%  {test}  {record['images_per_second']:.0f} img/s  "
            f"{record['train_seconds']:.1f}s  {best}  left ~{_fmt_time(left)}")


def _nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of floating-point parameters and buffers (BN running statistics) holding NaN or inf."""
    return [name for name, t in [*model.named_parameters(), *model.named_buffers()]
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def _diverged_hint(grad_clip: float | None, sam: float = 0.0) -> str:
    """The way out of a diverged run, for the flags it was given."""
    clip = "add --grad-clip 1" if grad_clip is None else f"lower --grad-clip (now {grad_clip:g})"
    if sam:
        return f"Lower --sam (now {sam:g}) or --lr, {clip}, or check the data."
    return f"Lower --lr, {clip}, or check the data."


def _check_finite(model: nn.Module, loss: float, epoch: int, scheduler, run_dir: str | None,
                  hint: str, loss_name: str = "test loss", eval_overflows: bool = False) -> None:
    """Raise :class:`TrainingDiverged` when the epoch ended with a non-finite loss (``loss_name``: the
    test loss, or the training loss of an epoch not evaluated), weights or BN statistics, or (an epoch
    not evaluated) a model whose eval-mode outputs overflow; called before anything of the epoch is
    written. ``hint``: the way out (:func:`_diverged_hint` of the run's flags)."""
    bad = _nonfinite_tensors(model)
    if math.isfinite(loss) and not bad and not eval_overflows:
        return
    what = f"{loss_name} {loss}" if not math.isfinite(loss) else f"the {loss_name} stayed finite but"
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        what += f"{',' if not math.isfinite(loss) else ''} non-finite values in {shown}"
    elif eval_overflows:
        what += (f"{',' if not math.isfinite(loss) else ''} the model in eval mode gives non-finite outputs "
                 "(weights or BN running statistics grew too large)")
    kept = (f"the last good checkpoint (epoch {epoch}) is kept in {run_dir}" if run_dir and epoch
            else "no checkpoint was written")
    raise TrainingDiverged(
        f"training diverged at the end of epoch {epoch + 1} ({what}; lr {_base_lr(scheduler):.4g}); {kept}. " + hint
    )


def _check_batch_norm_batch_size(model: nn.Module, batch_size: int | None, world_size: int = 1) -> bool:
    """Whether ``model`` has batch norm layers that train on this process's batch alone; refuse
    batch size 1 for them. SyncBatchNorm under several processes takes its statistics over the
    global batch, so one sample per process is fine there (--sync-bn's purpose: small per-device
    batches)."""
    was_training = model.training
    model.train()  # frozen BN layers (transfer) stay in eval through their own train()
    training = [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, BatchNormBase))
                and m.training]
    model.train(was_training)
    synced = world_size > 1 and all(isinstance(m, (nn.SyncBatchNorm, SyncBatchNorm)) for m in training)
    has_bn = bool(training) and not synced
    if has_bn and batch_size == 1:
        raise ValueError("batch size 1 cannot train batch normalization: one sample has no batch statistics "
                         "(its output would be all zeros). Use --batch-size 2 or more, or --norm group / none"
                         + (", or --sync-bn (statistics over every process's sample)" if world_size > 1 else ""))
    return has_bn
