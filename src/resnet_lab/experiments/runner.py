"""The shared runner: an experiment declares :class:`RunSpec` s, :meth:`Context.train` trains them.

Every run goes through the library's own trainer (:func:`resnet_lab.train.train`) with progress
bars off and prints one line; the per-epoch records, the per-step training losses and the wall
time come back as a :class:`RunResult`. :meth:`Context.train_seeds` trains one spec once per seed
and returns a :class:`SeedResults`, whose figures are :class:`~resnet_lab.experiments.report.Spread`
s (mean, sd, min-max over seeds): every full budget measures each configuration that way. Data are
loaded once per experiment and shared between runs (:meth:`Context.data`); when Fashion-MNIST is
not installed the runner falls back to the ``fake`` dataset and says so in the report's notes.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import statistics
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from .._text import count
from ..data import FAKE_PER_CLASS, FAKE_TRAIN_SAMPLES, DataNotFoundError, InMemoryLoader, load_data
from ..models.resnet import CifarResNet
from ..train import TrainConfig, TrainingDiverged, resolve_device, train
from .report import Spread

__all__ = ["BUDGETS", "Context", "RunResult", "RunSpec", "SeedResults", "cifar_net", "count", "ema",
           "first_at_or_below", "first_test_samples"]

BUDGETS = ("smoke", "full")

ModelFactory = Callable[[int, int], nn.Module]  # (num_classes, in_channels) -> model


def cifar_net(depth: int, *, residual: bool = True, norm: str = "batch",
              widths: Sequence[int] = (16, 32, 64), zero_init_residual: bool = False) -> ModelFactory:
    """A factory for the CIFAR ResNet of He et al. 2015 (sec. 4.2) or its plain twin.

    Args:
        depth: 6n+2.
        residual: option-A identity shortcuts; False builds the plain net of the same depth.
        norm: ``batch``, ``scratch``, ``group`` or ``none``.
        widths: channels of the three stages; the paper's 16-32-64, narrower for CPU budgets.
        zero_init_residual: start every residual block as the identity (the last norm's scale at
            zero, Goyal et al. 2017); plain nets have no shortcut to carry the signal, so it is
            refused for them.
    """
    if zero_init_residual and not residual:
        raise ValueError("zero_init_residual=True would cut a plain net (no shortcut carries the signal); "
                         "use it with residual=True only")

    def build(num_classes: int, in_channels: int) -> nn.Module:
        return CifarResNet(depth, num_classes=num_classes, in_channels=in_channels, norm=norm,
                           shortcut="A" if residual else "none", widths=tuple(widths),
                           zero_init_residual=zero_init_residual)

    return build


@dataclass
class RunSpec:
    """One training run of an experiment.

    Args:
        label: the run's name in tables and legends ("plain-56").
        model: a factory ``(num_classes, in_channels) -> nn.Module`` (see :func:`cifar_net`); None
            when the caller hands :meth:`Context.train` a model it built.
        batch_size: training batch size.
        epochs: passes over the (subset of the) training set.
        lr: peak learning rate.
        optimizer: ``sgd`` or ``adamw``.
        momentum: SGD momentum (Nesterov when > 0); 0 for plain SGD (d2l's recipes).
        schedule: ``onecycle``, ``cosine``, ``step`` or ``constant``.
        warmup_epochs: linear warm-up of the schedule (Goyal et al. 2017; ``onecycle`` ramps up
            over its first quarter by itself when 0).
        warmup_lr, warmup_steps: He et al.'s constant warm-up (2015 sec. 4.2, 2016 sec. 4): train
            ``warmup_steps`` steps at the constant rate ``warmup_lr`` first, then the run proper
            (its schedule starts afresh, as the paper "goes back to 0.1"; the optimizer's momentum
            starts afresh too). 0 steps: no such phase.
        weight_decay: on conv/linear weights.
        max_steps_per_epoch: cap on steps per epoch (None: the whole subset).
        grad_clip: clip the global gradient norm to this value (None: no clipping).
        lr_scale: ``{parameter-name prefix: learning-rate factor}`` (discriminative rates).
        data: keyword arguments for :meth:`Context.data` (dataset, subset, image_size...).
        seed: weights and data order; the same seed gives the same initial weights to runs whose
            models have the same parameter shapes (scratch vs torch BN).
        step_callbacks: extra per-step callbacks, e.g. a gradient-flow recorder.
        info: extra values copied into the result (depth, norm...).
        out: write the run as `resnet-lab train --out` does (model.json with its classes, recipe and
            batches, weights, metrics.jsonl), so `evaluate` and `report` take it; None: nothing is
            written. One run only (the seeds of ``train_seeds`` would share it).
    """

    label: str
    model: ModelFactory | None = None
    batch_size: int = 128
    epochs: int = 1
    lr: float = 0.1
    optimizer: str = "sgd"
    momentum: float = 0.9
    schedule: str = "onecycle"
    warmup_epochs: float = 0.0
    warmup_lr: float = 0.01
    warmup_steps: int = 0
    weight_decay: float = 5e-4
    max_steps_per_epoch: int | None = None
    grad_clip: float | None = None
    lr_scale: dict[str, float] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    step_callbacks: list[Callable[[dict], None]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    out: str | os.PathLike | None = None

    def __post_init__(self) -> None:
        if isinstance(self.warmup_steps, bool) or not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"RunSpec {self.label!r}: warmup_steps must be an int >= 0 (0: no constant warm-up), "
                             f"got {self.warmup_steps!r}")


@dataclass
class RunResult:
    """What one run measured.

    Attributes:
        label: the spec's label.
        epochs: the trainer's per-epoch records (train/test loss and accuracy, seconds...).
        step_losses: training loss after every optimizer step.
        seconds: wall time of the run, data loading excluded.
        params: trainable parameters.
        diverged: the loss became NaN/inf (the records stop there).
        model: the trained model (not serialized).
        info: the spec's info plus anything the experiment adds (``seed``; ``warmup``: the
            constant warm-up phase's steps, rate and running training error, when there was one).
    """

    label: str
    epochs: list[dict]
    step_losses: list[float]
    seconds: float
    params: int
    diverged: bool = False
    model: nn.Module | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def last(self) -> dict:
        return self.epochs[-1] if self.epochs else {}

    def curve(self, key: str) -> tuple[list[int], list[float]]:
        """``(epochs, values)`` of one per-epoch metric."""
        return [r["epoch"] for r in self.epochs], [r[key] for r in self.epochs]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (the model is left out)."""
        return {k: v for k, v in self.__dict__.items() if k != "model"}


@dataclass
class SeedResults:
    """One configuration trained once per seed (:meth:`Context.train_seeds`).

    Attributes:
        label: the configuration's label (each run's label adds ``seed N``).
        runs: one result per seed, in seed order.
    """

    label: str
    runs: list[RunResult]

    @property
    def seeds(self) -> list[int]:
        return [r.info.get("seed") for r in self.runs]

    @property
    def diverged(self) -> int:
        """How many seeds diverged."""
        return sum(r.diverged for r in self.runs)

    def spread(self, figure: Callable[[RunResult], float]) -> Spread:
        """The spread over seeds of one figure of a run.

        Args:
            figure: computes the figure from one seed's result.
        """
        return Spread.of(figure(r) for r in self.runs)

    def final(self, key: str, *, failed: float = math.nan) -> Spread:
        """The spread of one metric of the last epoch record (``train_acc``, ``test_acc``...).

        Args:
            key: the record's key.
            failed: the value of a seed that diverged or completed no epoch (e.g. chance-level
                accuracy, so that a run that blew up counts as one that learned nothing).
        """
        return self.spread(lambda r: failed if r.diverged or key not in r.last else float(r.last[key]))

    def mean_curve(self, key: str) -> tuple[list[int], list[float], list[float]]:
        """``(epochs, mean, sd)`` of a per-epoch metric over the seeds, up to the shortest run."""
        n = min(len(r.epochs) for r in self.runs)
        epochs = [rec["epoch"] for rec in self.runs[0].epochs[:n]]
        return _mean_sd([r.curve(key)[1][:n] for r in self.runs], start=epochs)

    def mean_steps(self, values: Callable[[RunResult], Sequence[float]] = lambda r: r.step_losses
                   ) -> tuple[list[int], list[float], list[float]]:
        """``(steps, mean, sd)`` over the seeds of a per-step curve (default: the training loss),
        up to the shortest run.

        Args:
            values: the per-step curve of one run (e.g. a smoothed loss).
        """
        curves = [list(values(r)) for r in self.runs]
        n = min(len(c) for c in curves)
        return _mean_sd([c[:n] for c in curves], start=list(range(1, n + 1)))

    def drop_models(self) -> None:
        """Free the trained models (large nets; results.json never holds them)."""
        for r in self.runs:
            r.model = None

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "seeds": self.seeds, "runs": [r.to_dict() for r in self.runs]}


def _mean_sd(curves: Sequence[Sequence[float]], start: list[int]) -> tuple[list[int], list[float], list[float]]:
    """Point-wise mean and sample sd of equally long curves; the sd is 0 for one curve and where a
    value is not finite (a diverged seed's NaN step: ``statistics.stdev`` would raise)."""
    cols = list(zip(*curves))
    means = [statistics.fmean(c) for c in cols]
    sds = [statistics.stdev(c) if len(c) > 1 and all(math.isfinite(v) for v in c) else 0.0 for c in cols]
    return start[:len(cols)], means, sds


def ema(values: Sequence[float], alpha: float = 0.1) -> list[float]:
    """Exponential moving average (bias-corrected, as Adam) of a noisy per-step curve.

    Args:
        values: the per-step values.
        alpha: weight of the newest value.
    """
    out, m = [], 0.0
    for i, v in enumerate(values, 1):
        m = (1 - alpha) * m + alpha * v
        out.append(m / (1 - (1 - alpha) ** i))
    return out


def first_at_or_below(values: Sequence[float], target: float) -> float:
    """1-based index of the first value ``<= target``; ``inf`` when none is.

    Args:
        values: a curve (e.g. a smoothed loss per step).
        target: the threshold.
    """
    for i, v in enumerate(values, 1):
        if v <= target:
            return float(i)
    return math.inf


def first_test_samples(test, n: int | None, batch_size: int = 500):
    """The first ``n`` test samples as a loader with a large eval batch (evaluation is cheap that
    way; the test split is in a fixed order, so every run sees the same samples).

    Args:
        test: a test loader; one that is not in memory is returned as it is.
        n: how many samples (None or more than there are: all).
        batch_size: the evaluation batch.
    """
    if not isinstance(test, InMemoryLoader):
        return test
    n = test.num_samples if n is None else min(n, test.num_samples)
    return InMemoryLoader(test.images[:n], test.labels[:n], batch_size=batch_size, mean=test.mean,
                          std=test.std, device=test.device)


class _EpochOffset:
    """A training loader seen ``offset`` epochs on: epoch ``e`` of the trainer is the loader's
    epoch ``e + offset`` (its own seeded order); everything else is the loader's."""

    def __init__(self, loader, offset: int) -> None:
        self._loader, self._offset = loader, int(offset)

    def set_epoch(self, epoch: int) -> None:
        self._loader.set_epoch(epoch + self._offset)

    def __len__(self) -> int:
        return len(self._loader)

    def __iter__(self):
        return iter(self._loader)

    def __getattr__(self, name: str):
        if name.startswith("_"):  # not set yet (copy, pickle): no delegation, no recursion
            raise AttributeError(name)
        return getattr(self._loader, name)


class Context:
    """What an experiment's ``run(ctx)`` gets: budget, output folder, device, data and trainer.

    Args:
        name: the experiment name.
        budget: ``smoke`` or ``full``.
        out: the output folder (created).
        data_dir: where to look for datasets first.
        device: ``auto``, ``cpu``, ``cuda``...
        seed: base seed.
        log: where the one-line-per-run messages go.
    """

    def __init__(self, name: str, budget: str, out: str | os.PathLike, *, data_dir: str | None = None,
                 device: str = "auto", seed: int = 0, log: Callable[[str], None] = print) -> None:
        if budget not in BUDGETS:
            raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
        self.name, self.budget, self.seed = name, budget, int(seed)
        self.device = resolve_device(device)  # before the folder is made: a bad device leaves none behind
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.data_dir = data_dir
        self.log = log
        self.notes: list[str] = []
        self.fake_data = False  # set when Fashion-MNIST was missing and the runs used random images
        self.step_caps: set[tuple[int, int]] = set()  # (steps run, steps an epoch has) of runs the budget cut short
        self._cache: dict[Any, Any] = {}

    @property
    def smoke(self) -> bool:
        return self.budget == "smoke"

    def note(self, text: str) -> None:
        """Add a caveat to the report's notes (once) and log it.

        Args:
            text: the caveat, one sentence.
        """
        if text not in self.notes:
            self.notes.append(text)
            self.log(f"[{self.name}] {text}")

    def data(self, dataset: str = "fashion-mnist", *, batch_size: int = 128, test_samples: int | None = None,
             **kw: Any):
        """A :class:`resnet_lab.data.DataBundle`, loaded once per set of arguments.

        Args:
            dataset: ``fashion-mnist``, ``cifar10``... Falls back to ``fake`` (1 channel, same
                image size) when the files are missing, with a note in the report; ``subset`` and
                ``per_class`` are then cut to what the small fake set has.
            batch_size: training batch size.
            test_samples: evaluate on the first N test samples only (None: all).
            **kw: passed to :func:`resnet_lab.data.load_data` (subset, image_size, augment,
                classes, per_class, mean/std...); ``augment`` defaults to False here and ``seed``
                (the subset or per-class draw and the order) to the context's.
        """
        kw.setdefault("augment", False)
        kw.setdefault("seed", self.seed)
        key = (dataset, batch_size, test_samples, tuple(sorted((k, repr(v)) for k, v in kw.items())))
        if key in self._cache:
            bundle = self._cache[key]
            bundle.train.set_epoch(0)
            return bundle
        try:
            bundle = self._load(dataset, batch_size, kw)
        except DataNotFoundError:
            if dataset != "fashion-mnist":
                raise
            self.note("Fashion-MNIST was not found, so the runs used the `fake` dataset (random images): "
                      "the figures say nothing about the claim")
            self.fake_data = True
            kw = {**kw, "in_channels": 1}
            kw.setdefault("image_size", 28)
            if kw.get("subset"):  # the fake set is small; a full budget's subset would not fit
                kw["subset"] = min(kw["subset"], FAKE_TRAIN_SAMPLES)
            if kw.get("per_class"):  # nor would a full budget's per_class (100, 1000: it has ~51 a class)
                kw["per_class"] = min(kw["per_class"], FAKE_PER_CLASS)
            bundle = load_data("fake", batch_size=batch_size, device=self.device, **kw)
        bundle.test = first_test_samples(bundle.test, test_samples)
        self._cache[key] = bundle
        return bundle

    def _load(self, dataset: str, batch_size: int, kw: dict[str, Any]):
        """Load from ``--data-dir`` first: an experiment's data dir is a root for several datasets
        (CIFAR beside Fashion-MNIST), so one it lacks is looked for where the library looks without
        it, and the report says where it came from."""
        load = functools.partial(load_data, dataset, batch_size=batch_size, device=self.device, **kw)
        if self.data_dir is None:
            return load()
        try:
            return load(data_dir=self.data_dir)
        except DataNotFoundError:
            bundle = load()
            self.note(f"{dataset} is not in --data-dir {self.data_dir}; it was read from {bundle.info.source}")
            return bundle

    def seeds(self, n: int) -> list[int]:
        """``n`` seeds from the context's base seed on: ``[seed, seed + 1, ...]``.

        Args:
            n: how many (at least 1).
        """
        if n < 1:
            raise ValueError(f"an experiment needs at least one seed, got {n}")
        return list(range(self.seed, self.seed + n))

    def train_seeds(self, spec: RunSpec, seeds: Iterable[int], data=None) -> SeedResults:
        """Train ``spec`` once per seed (weights, data order; the data subset stays the same unless
        ``data`` draws one per seed) and return the runs together.

        Args:
            spec: the run; its ``seed`` is replaced by each seed in turn and its label gets
                ``seed N``.
            seeds: the seeds (see :meth:`seeds`).
            data: one bundle for every seed, a callable ``seed -> bundle`` (a subset drawn per
                seed), or None (``ctx.data`` from the spec).
        """
        runs = []
        for seed in seeds:
            one = replace(spec, label=f"{spec.label} seed {seed}", seed=seed, info={**spec.info, "seed": seed},
                          step_callbacks=list(spec.step_callbacks))
            runs.append(self.train(one, data(seed) if callable(data) else data))
        return SeedResults(spec.label, runs)

    def train(self, spec: RunSpec, data=None, *, model: nn.Module | None = None) -> RunResult:
        """Train one run with the library trainer (progress off); print one line; return the result.

        Args:
            spec: the run.
            data: the bundle to use (default: ``ctx.data(batch_size=spec.batch_size, **spec.data)``).
            model: a model the caller built (e.g. from pretrained weights, whose learning-rate
                factors go in ``spec.lr_scale``); default: ``spec.model`` built after seeding
                with ``spec.seed``, so runs of one seed and shape start alike.
        """
        data = data if data is not None else self.data(batch_size=spec.batch_size, **spec.data)
        if spec.max_steps_per_epoch and hasattr(data.train, "__len__") and spec.max_steps_per_epoch < len(data.train):
            self.step_caps.add((int(spec.max_steps_per_epoch), len(data.train)))  # the setup says so
        if model is None:
            if spec.model is None:
                raise ValueError(f"run {spec.label!r} has no model: give RunSpec(model=...) or train(spec, model=...)")
            torch.manual_seed(spec.seed)
            c, _, _ = data.info.input_size
            model = spec.model(len(data.info.classes), c)
        info = dict(spec.info)
        t0 = time.perf_counter()
        records, losses, diverged = [], [], False
        main_data = data
        if spec.warmup_steps > 0:
            warm_config = self._warmup_config(spec, data)
            warm, losses, diverged = self._fit(spec, model, data, warm_config)
            info["warmup"] = {"steps": len(losses), "lr": spec.warmup_lr,
                              "train_error": 1.0 - warm[-1]["train_acc"] if warm else math.nan}
            # The run proper draws its batches in the order of the epochs after the warm-up's,
            # instead of replaying the warm-up's batches.
            main_data = copy.copy(data)
            main_data.train = _EpochOffset(data.train, warm_config.epochs)
        if not diverged:
            records, main_losses, diverged = self._fit(spec, model, main_data, self._config(spec))
            losses += main_losses
        seconds = time.perf_counter() - t0
        params = sum(p.numel() for p in model.parameters() if p.requires_grad)
        result = RunResult(spec.label, records, losses, seconds, params, diverged, model, info)
        last = result.last
        summary = (f"train loss {last['train_loss']:.4f} acc {100 * last['train_acc']:.2f}%  "
                   f"test acc {100 * last['test_acc']:.2f}%" if last else "no epoch completed")
        self.log(f"[{self.name}] {spec.label:<24} {count(len(losses), 'step')}, {seconds:.1f}s  {summary}"
                 + ("  DIVERGED" if diverged else ""))
        return result

    def _config(self, spec: RunSpec, **override: Any) -> TrainConfig:
        """The trainer's configuration of a run (``override`` replaces fields, e.g. for its warm-up)."""
        fields = dict(
            epochs=spec.epochs, lr=spec.lr, optimizer=spec.optimizer, momentum=spec.momentum, schedule=spec.schedule,
            warmup_epochs=spec.warmup_epochs, weight_decay=spec.weight_decay,
            max_steps_per_epoch=spec.max_steps_per_epoch, grad_clip=spec.grad_clip, lr_scale=dict(spec.lr_scale),
            progress=False, plots=False, out=None if spec.out is None else str(spec.out), device=str(self.device),
            seed=spec.seed,
        )
        return TrainConfig(**{**fields, **override})

    def _warmup_config(self, spec: RunSpec, data) -> TrainConfig:
        """The constant warm-up phase: exactly ``warmup_steps`` steps at ``warmup_lr``, over as few
        (partial) epochs of equal length as the training set allows (the trainer caps every epoch
        alike: 3 steps at 2 an epoch take 3 epochs of 1, not 2 of 2). Evaluated once, at its end."""
        n = spec.warmup_steps
        per_epoch = min(len(data.train), spec.max_steps_per_epoch or len(data.train))
        epochs = next(e for e in range(math.ceil(n / max(1, per_epoch)), n + 1) if n % e == 0)
        return self._config(spec, epochs=epochs, lr=spec.warmup_lr, schedule="constant", warmup_epochs=0.0,
                            max_steps_per_epoch=n // epochs, eval_every=epochs, out=None)  # spec.out: the run proper

    def _fit(self, spec: RunSpec, model: nn.Module, data, config: TrainConfig) -> tuple[list[dict], list[float], bool]:
        """One call of the trainer: ``(per-epoch records, per-step losses, diverged)``."""
        if hasattr(data.train, "set_epoch"):
            data.train.set_epoch(0)
        records: list[dict] = []
        losses: list[float] = []
        try:
            history = train(model, data, config, callbacks=[records.append],
                            step_callbacks=[lambda s: losses.append(float(s["loss"])), *spec.step_callbacks],
                            log=lambda s: None)
            if history.interrupted:
                # The trainer turns Ctrl-C/SIGTERM into a return (the right thing for one run);
                # an experiment of many runs must stop too, not start the next run.
                raise KeyboardInterrupt(f"{self.name}: {spec.label} interrupted")
        except TrainingDiverged:
            losses.append(math.nan)
            return records, losses, True
        return records, losses, False
