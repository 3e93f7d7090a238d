"""The learning-rate range test (Smith 2015, "Cyclical Learning Rates for Training Neural Networks",
sec. 3.3; fastai's ``lr_find``): train a few steps while the learning rate grows geometrically, watch
the loss, and suggest a learning rate from where it falls fastest.

:func:`lr_find` takes at most ``steps`` optimizer steps of :func:`~resnet_lab.train.loop.train_one_epoch`
(the trainer's own forward, loss, label smoothing, gradient clipping, bf16/fp16 and channels_last) with the
optimizer :func:`~resnet_lab.train.optim.build_optimizer` makes for training (weight decay on conv and
linear weights only, ``lr_scale`` per parameter group). The learning rate of step ``i`` is
``start_lr * (end_lr / start_lr) ** (i / (steps - 1))``; the loss is smoothed with fastai's debiased
exponential moving average (beta 0.98) and the test stops once the smoothed loss exceeds 4 times its
minimum, or a loss is not finite. Afterwards the model's parameters and buffers (BN running
statistics and ``num_batches_tracked`` included), gradients, train/eval modes, the global RNG and the
loader's position are exactly what they were. The suggestions are fastai's ``valley`` and ``steep``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import numbers
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .._text import count
from ..figures import check_png_path, new_figure, save_png
from ..models.registry import check_module
from .bars import bar_disable
from .config import TrainConfig
from .device import check_fp16, get_rng_state, resolve_device, set_rng_state, unwrap, warn_emulated_bf16
from .loop import TrainingDiverged, check_model_fits_info, no_batch_way_out, train_one_epoch
from .optim import build_optimizer

if TYPE_CHECKING:  # matplotlib loads when a figure is drawn
    from matplotlib.figure import Figure

__all__ = ["LRFindInterrupted", "LRFindResult", "lr_find", "lr_find_figure", "plot_lr_find", "steep", "valley"]

BETA = 0.98  # fastai's AvgSmoothLoss: weight of the running average
DIVERGE = 4.0  # fastai's LRFinder: stop when the smoothed loss exceeds 4x its minimum so far
SKIP_END = 5  # fastai leaves the last 5 points (the divergence) out of the suggestions
MIN_POINTS = 5  # fewer recorded losses show no valley: no suggestion rather than an end of the range


@dataclass
class LRFindResult:
    """What :func:`lr_find` measured and suggests.

    Attributes:
        lrs: the learning rate of each step taken (a parameter group with ``lr_scale`` s had s times it).
        losses: each step's training loss, computed before that step's update (as fastai records it).
        smoothed: the debiased exponential moving average of ``losses``.
        valley: fastai's ``valley`` suggestion (about halfway down the longest descent), or None when
            no loss was recorded.
        steep: the learning rate where the smoothed loss falls fastest per unit of log learning rate
            (fastai's ``steep``), or None with fewer than 2 points.
        stopped: the loss diverged (smoothed above 4x its minimum, or not finite) before ``steps``.
        steps: the steps asked for.
        beta: the running average's weight that made ``smoothed`` (the plot's legend names it).
    """

    lrs: list[float]
    losses: list[float]
    smoothed: list[float]
    valley: float | None
    steep: float | None
    stopped: bool
    steps: int
    beta: float = BETA
    interrupted: bool = False


class LRFindInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) during the test: the model is back as it was, and ``result`` holds the
    steps recorded until then, with suggestions as for a test of that many steps."""

    def __init__(self, result: LRFindResult) -> None:
        super().__init__(f"lr range test interrupted after {len(result.lrs)} of {result.steps} steps")
        self.result = result


class _Diverged(KeyboardInterrupt):
    """Raised from the step hook to end the epoch early (train_one_epoch's way to stop)."""


class _Recorder:
    """Losses, their debiased moving average (fastai's AvgSmoothLoss) and the divergence rule."""

    def __init__(self, beta: float, diverge: float) -> None:
        self.beta, self.diverge = beta, diverge
        self.losses: list[float] = []
        self.smoothed: list[float] = []
        self.average = 0.0

    def add(self, loss: float) -> bool:
        """Record ``loss``; returns whether the test should stop here (the point is kept, as fastai does)."""
        if not math.isfinite(loss):  # not recorded: it would poison the average
            return True
        self.average = self.beta * self.average + (1 - self.beta) * loss
        self.losses.append(loss)
        self.smoothed.append(self.average / (1 - self.beta ** len(self.losses)))  # debias the zero start
        return self.smoothed[-1] > self.diverge * min(self.smoothed)


def _number(name: str, value, integral: bool = False):
    """``value`` as a float (an int for ``integral``), numpy's scalars included; a string, a bool or
    a tensor is refused naming the argument (a tensor made the recorded rates tensors)."""
    kind = numbers.Integral if integral else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {'an int' if integral else 'a number'}, got {value!r}"
                        + (" (a tensor: pass .item())" if isinstance(value, torch.Tensor) else ""))
    return int(value) if integral else float(value)


def _check_range(start_lr: float, end_lr: float, steps: int, beta: float, diverge: float) -> None:
    if not (math.isfinite(start_lr) and start_lr > 0):
        raise ValueError(f"start_lr (--start-lr) must be a finite number > 0, got {start_lr} (1e-7 is fastai's default)")
    if not (math.isfinite(end_lr) and end_lr > start_lr):
        raise ValueError(f"end_lr (--end-lr) must be finite and above start_lr ({start_lr:g}), got {end_lr} "
                         "(10 is fastai's default)")
    if not math.isfinite(end_lr / start_lr):  # the rates' factor would overflow to inf on the way
        raise ValueError(f"--start-lr {start_lr:g} to --end-lr {end_lr:g} spans more than a float can hold "
                         "(a factor above 1e308): narrow the range (fastai's is 1e-7 to 10)")
    if steps < 2:
        raise ValueError(f"steps (--steps) must be an int >= 2 (100 is fastai's default), got {steps!r}")
    if not 0 <= beta < 1:
        raise ValueError(f"beta must be in [0, 1) (0.98 is fastai's), got {beta}")
    if not (math.isfinite(diverge) and diverge > 1):
        raise ValueError(f"diverge must be a finite number > 1 (4 is fastai's), got {diverge}")


def _seed(seed: int, device: torch.device) -> None:
    """Seed the generators whose states :func:`_state_kept` restores (the CPU's and ``device``'s)."""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        with torch.cuda.device(device):
            torch.cuda.manual_seed(seed)


@contextmanager
def _state_kept(model: nn.Module, loader, device: torch.device) -> Iterator[None]:
    """Put back, on leaving (errors and Ctrl-C included), the model's parameters and buffers (values,
    device and memory format, the same tensor objects), gradients, every module's train/eval mode, the
    global RNG and the loader's position."""
    tensors = [*model.parameters(), *model.buffers()]
    saved = [t.detach().clone() for t in tensors]  # clone keeps the device and the memory format
    grads = [(p, None if p.grad is None else p.grad.detach().clone()) for p in model.parameters()]
    modes = [(m, m.training) for m in model.modules()]
    rng = get_rng_state(device)
    position = loader.state_dict() if hasattr(loader, "state_dict") else None
    resuming = getattr(loader, "resuming", True)  # a loader of ours says whether its next pass resumes
    try:
        yield
    finally:
        for p, _ in grads:
            p.grad = None  # before .data moves back: a gradient must live where its parameter does
        for t, value in zip(tensors, saved):
            t.data = value  # the same Parameter/buffer objects, so optimizers and hooks still hold them
        for p, grad in grads:
            p.grad = grad
        for m, mode in modes:
            m.training = mode
        set_rng_state(rng, device)
        if position is not None and resuming:
            loader.load_state_dict(position)
        elif position is not None:  # a pass left part-way before the test: the next one starts whole
            loader.set_epoch(position["epoch"])


def _run(model: nn.Module, loader, config: TrainConfig, device: torch.device, start_lr: float, end_lr: float,
         steps: int, record: _Recorder) -> tuple[list[float], bool, bool]:
    """The steps themselves; returns the learning rates of the recorded steps, whether the loss
    diverged and whether Ctrl-C (or SIGTERM) ended the test."""
    if len(loader) < 1:
        raise ValueError(f"the training loader yields no batch: {no_batch_way_out(loader, batch_of_one=False)}")
    base = unwrap(model)
    lr_factor = lambda t: (end_lr / start_lr) ** (t / (steps - 1))  # noqa: E731  (geometric; 1 at step 0)
    optimizer = build_optimizer(base, config.optimizer, start_lr, config.momentum, config.nesterov,
                                config.weight_decay, config.lr_scale, config.norm_lr_scale)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    scaler = torch.amp.GradScaler(device.type, enabled=config.fp16)  # a pass-through unless fp16, as in train
    bar = tqdm(total=steps, desc="lr range test", leave=False, disable=bar_disable(config.progress), unit="step",
               dynamic_ncols=True, mininterval=0.5)
    taken = itertools.count()  # steps so far, over all passes

    def on_step(step: int, loss: torch.Tensor) -> None:
        value = float(loss.detach())  # one host sync per step: the stop rule needs the value now
        stop = record.add(value)
        bar.update(1)
        bar.set_postfix({"lr": f"{start_lr * lr_factor(next(taken)):.3g}", "loss": f"{value:.4g}"}, refresh=False)
        if stop:
            raise _Diverged

    stopped, interrupted, epoch = False, False, 0
    try:
        while len(record.losses) < steps:  # as many passes over the loader as the steps need
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
            train_one_epoch(model, loader, optimizer, scheduler, config, device=device, epoch=epoch,
                            steps=min(steps - len(record.losses), len(loader)), on_step=on_step, progress=False,
                            scaler=scaler)
            epoch += 1
    except (_Diverged, TrainingDiverged):  # TrainingDiverged: a non-finite loss or gradient norm
        stopped = True
    except KeyboardInterrupt:  # the user's: the steps so far are kept (lr_find raises LRFindInterrupted)
        interrupted = True
    except ValueError as e:
        if "made no optimizer step" not in str(e):
            raise
        # said of the test, which has no epochs to the user
        raise ValueError("the range test made no optimizer step: every batch had fewer than 2 samples; use a "
                         "larger --batch-size or more data") from e
    finally:
        bar.close()
    return [start_lr * lr_factor(i) for i in range(len(record.losses))], stopped, interrupted


def lr_find(
    model: nn.Module,
    data,
    config: TrainConfig | None = None,
    *,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    steps: int = 100,
    beta: float = BETA,
    diverge: float = DIVERGE,
) -> LRFindResult:
    """Run the learning-rate range test on ``model`` and leave the model exactly as it was.

    Args:
        model: trained in training mode on ``config.device`` (where it is put back afterwards, as it was).
        data: a :class:`resnet_lab.data.DataBundle` (its ``train`` loader is used) or a loader yielding
            ``(x, y)``, with ``len``; it is read for as many passes as ``steps`` needs.
        config: the training recipe the test should match: ``optimizer``, ``momentum``, ``nesterov``,
            ``weight_decay``, ``lr_scale``, ``norm_lr_scale``, ``label_smoothing``, ``grad_clip``, ``sam``, ``bf16``/``fp16``,
            ``channels_last``, ``seed`` (dropout draws), ``device``, ``progress``; ``lr``, the schedule and
            the run-directory fields do not matter here, and ``ema``, ``lookahead``,
            ``progressive_resize``, ``mixup``, ``cutmix`` and ``checkpoint_segments`` are not
            applied (the test takes plain steps at full size: a model that fits in memory only
            with checkpointing may not fit here). Default ``TrainConfig()``.
        start_lr, end_lr: the first and the last learning rate (fastai's 1e-7 and 10).
        steps: optimizer steps at most (fastai's 100).
        beta: weight of the smoothed loss's running average (fastai's 0.98).
        diverge: stop once the smoothed loss exceeds this multiple of its minimum (fastai's 4).

    Returns:
        The :class:`LRFindResult`: learning rates, losses, smoothed losses and the suggestions.

    Raises:
        LRFindInterrupted: Ctrl-C (or SIGTERM) during the test, after the model is put back; its
            ``result`` holds the steps measured until then.
    """
    check_module(model, "lr_find")
    start_lr, end_lr = _number("start_lr", start_lr), _number("end_lr", end_lr)
    steps, beta, diverge = _number("steps", steps, integral=True), _number("beta", beta), _number("diverge", diverge)
    config = TrainConfig() if config is None else config
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}: TrainConfig(optimizer=..., ...)")
    # Plain steps at full size, as documented: progressive resizing and mixing would change the
    # images and the losses the test reads (EMA and lookahead act outside the steps it runs).
    config = dataclasses.replace(config, progressive_resize=None, mixup=0.0, cutmix=0.0)
    _check_range(start_lr, end_lr, steps, beta, diverge)
    if hasattr(data, "info"):  # a DataBundle: the same checks as train's, before any step
        check_model_fits_info(model, data.info)
    loader = getattr(data, "train", data)
    if not (hasattr(loader, "__len__") and hasattr(loader, "__iter__")):  # a generator has no length to plan by
        raise TypeError(f"data must be a DataBundle (load_data(...)) or a loader with len(), got "
                        f"{type(loader).__name__}")
    device = resolve_device(config.device)
    check_fp16(device, config.fp16)
    warn_emulated_bf16(device, config.bf16)
    base, record = unwrap(model), _Recorder(beta, diverge)
    with _state_kept(base, loader, device):
        _seed(config.seed, device)
        base.to(device)
        if config.channels_last:
            base.to(memory_format=torch.channels_last)
        lrs, stopped, interrupted = _run(model, loader, config, device, start_lr, end_lr, steps, record)
    # an interrupted record too short for fastai's window is the start of the range, not a valley
    valley_lr, steep_lr = _suggest(lrs, record.smoothed, steps, stopped or interrupted)
    result = LRFindResult(lrs=lrs, losses=record.losses, smoothed=record.smoothed, valley=valley_lr,
                          steep=steep_lr, stopped=stopped, steps=steps, beta=beta, interrupted=interrupted)
    if interrupted:  # after the state is back: the caller still learns of the Ctrl-C, with what was measured
        raise LRFindInterrupted(result)
    return result


def _suggest(lrs: Sequence[float], smoothed: Sequence[float], steps: int,
             stopped: bool = False) -> tuple[float | None, float | None]:
    """fastai's suggestions over the smoothed losses without the first tenth of the steps and the last 5
    points. A record too short for that is used whole when the test ran every step (a short test,
    fastai would fail there) and has at least ``MIN_POINTS`` losses; when the loss diverged that
    early, or fewer steps were asked, there is no valley to read, so no suggestion."""
    lo, hi = steps // 10, len(smoothed) - SKIP_END
    if hi - lo < MIN_POINTS:  # a window of 2 to 4 points names its first or last rate, not a valley
        if stopped or len(smoothed) < MIN_POINTS:
            return None, None
        lo, hi = 0, len(smoothed)
    lrs, losses = list(lrs[lo:hi]), list(smoothed[lo:hi])
    return (valley(lrs, losses) if losses else None), (steep(lrs, losses) if len(losses) >= 2 else None)


def _check_curve(lrs: Sequence[float], losses: Sequence[float], least: int) -> None:
    if len(lrs) != len(losses):
        raise ValueError(f"a curve needs one loss per learning rate, got {len(lrs)} rates and {len(losses)} losses")
    if len(losses) < least:
        raise ValueError(f"a suggestion needs at least {least} point{'s' if least > 1 else ''}, got {len(losses)}")
    if not all(math.isfinite(v) for v in losses):
        raise ValueError("a loss of the curve is not finite: leave the diverged points out, as lr_find records them")


def valley(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``valley``: the learning rate about halfway down the longest valley of ``losses``.

    The valley ends at the point with the longest decreasing subsequence before it; as fastai counts,
    it starts that length before its end, and the suggestion lies a third plus a sixth of the way in.
    O(n^2) in the number of points, as fastai's.

    Raises:
        ValueError: no point, lists of different lengths, or a loss that is not finite.
    """
    _check_curve(lrs, losses, 1)
    n = len(losses)
    longest = [1] * n  # longest decreasing subsequence ending at each point
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
            if longest[end] < longest[i]:  # inside the j loop, as in fastai: the start it records
                end, start = i, i - longest[i]  # may be the length reached at this j, not the final one
    third = (end - start) / 3
    # start is -1 for a descent from the first point (fastai's count); never index from the end
    return float(lrs[max(0, start + int(third) + int(third / 2))])


def steep(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """fastai's ``steep``: the learning rate at the start of the steepest fall of ``losses`` against log lr.

    Raises:
        ValueError: fewer than 2 points, lists of different lengths, a loss that is not finite, or
            rates that do not grow.
    """
    _check_curve(lrs, losses, 2)
    if any(not b > a > 0 for a, b in zip(lrs, lrs[1:])):
        raise ValueError("steep needs learning rates > 0 that grow from point to point, as a range test records them")
    slopes = [(losses[i + 1] - losses[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i])) for i in range(len(losses) - 1)]
    return float(lrs[min(range(len(slopes)), key=slopes.__getitem__)])


def lr_find_figure(result: LRFindResult, title: str = "") -> "Figure":
    """Loss against learning rate (log x): the raw and the smoothed loss, and marks at the suggestions.

    Args:
        result: what :func:`lr_find` returned.
        title: what was tested (default "learning-rate range test"); the steps taken and how the
            test ended follow it.
    """
    fig, ax = new_figure(figsize=(6.4, 4.0))
    ax.plot(result.lrs, result.losses, color="0.7", lw=0.8, label="loss")
    ax.plot(result.lrs, result.smoothed, color="C0", lw=1.6, label=f"smoothed loss (beta {result.beta:g})")
    for name, lr, marker, color in (("valley", result.valley, "o", "C3"), ("steep", result.steep, "s", "C2")):
        if lr is not None and result.lrs:  # at the recorded point nearest the rate (a result made by hand
            near = min(range(len(result.lrs)), key=lambda i: abs(math.log(result.lrs[i] / lr)))  # may not hold it)
            ax.plot([lr], [result.smoothed[near]], marker, color=color, ms=8, label=f"{name}: {lr:.2e}")
    ax.set_xscale("log")
    if result.smoothed:  # the y range of the smoothed curve before the stop: the raw tail can be huge
        shown = result.smoothed[:-1] if result.stopped and len(result.smoothed) > 1 else result.smoothed
        lo, hi = min(shown), max(shown)
        margin = 0.05 * (hi - lo) or 0.05 * abs(hi) or 0.05
        ax.set_ylim(lo - margin, hi + margin)
    steps = len(result.lrs)
    end = (f"diverged at lr {result.lrs[-1]:.2g}, step {steps}" if result.stopped and steps else
           "the first loss was not finite" if result.stopped else
           f"interrupted after {steps} of {result.steps} steps" if result.interrupted else count(steps, "step"))
    ax.set(xlabel="learning rate", ylabel="training loss", title=f"{title or 'learning-rate range test'}: {end}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_lr_find(result: LRFindResult, path: str | os.PathLike, title: str = "") -> Path:
    """Save :func:`lr_find_figure` as a PNG at ``path`` (atomically) and return the path; a path
    that holds another file (a run's, or one resnet-lab did not write) is refused."""
    return save_png(lr_find_figure(result, title), check_png_path(path))
