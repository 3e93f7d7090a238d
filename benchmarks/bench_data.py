"""The in-memory data path against torchvision's DataLoader + per-sample transforms on Fashion-MNIST,
and whether training waits on data.

Both sides augment alike: zero-pad 4 px, random 28x28 crop, random horizontal flip, normalize with
the training split's mean/std. Ours: :func:`resnet_lab.data.load_data` (``InMemoryLoader``: the
uint8 dataset as one tensor, batch-wise crop/flip with tensor ops). torchvision's: a map-style
Dataset over the *same* uint8 array that builds a PIL image per sample, as
``torchvision.datasets.FashionMNIST`` does, then ``RandomCrop(28, padding=4)``,
``RandomHorizontalFlip``, ``ToTensor``, ``Normalize`` per sample, batched by
``torch.utils.data.DataLoader`` (nothing is downloaded).

Run alone: ``.venv/bin/python benchmarks/bench_data.py [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from typing import Iterable, Iterator

import numpy as np
import torch
from _common import (
    Run, Section, fmt_rate, markdown_table, paired_ratio, rate_rows, first_paragraph, run_standalone, spread, verdict,
)
from PIL import Image
from torchvision import transforms as T

from resnet_lab import create_model
from resnet_lab.data import InMemoryLoader, load_data
from resnet_lab.train import TrainConfig, train

__all__ = ["PILFashionMNIST", "TimedLoader", "build", "torchvision_loader"]

FULL = {"batch": 128, "target_s": 1.0, "repeats": 5, "train_steps": 4, "skip_steps": 1, "workers": (0, 2)}
QUICK = {"batch": 128, "target_s": 0.2, "repeats": 2, "train_steps": 3, "skip_steps": 1, "workers": (0, 2)}
OURS = "ours: in-memory (load_data)"
OURS_1T = "ours, loader ops on 1 thread (diagnostic)"
TARGET = 5.0
# DataLoader workers refill their prefetch queue after their contender stops pulling; let them
# finish before the next contender is timed, or their CPU time is charged to it (2 cores).
SETTLE_S = 0.5


class PILFashionMNIST(torch.utils.data.Dataset):
    """Fashion-MNIST the way ``torchvision.datasets.FashionMNIST`` serves it: a PIL image per sample.

    Args:
        images: uint8 (N, 28, 28) array (the same one the in-memory loader holds).
        labels: int (N,) array.
        transform: per-sample transform applied to the PIL image.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = Image.fromarray(self.images[i], mode="L")
        return self.transform(img), int(self.labels[i])


def torchvision_loader(images: np.ndarray, labels: np.ndarray, mean, std, batch_size: int, workers: int):
    """The reference pipeline: DataLoader over :class:`PILFashionMNIST` with torchvision transforms.

    Args:
        images, labels: the uint8 (N, 28, 28) images and their labels.
        mean, std: normalization (one value each, the training split's).
        batch_size: samples per batch.
        workers: DataLoader worker processes (kept alive between epochs when > 0).
    """
    tf = T.Compose([T.RandomCrop(28, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    return torch.utils.data.DataLoader(
        PILFashionMNIST(images, labels, tf), batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=workers, persistent_workers=workers > 0,
    )


def _cycle(loader: Iterable) -> Iterator:
    while True:  # one endless stream across epochs (workers and epoch set-up are not re-timed per call)
        yield from loader


class TimedLoader:
    """Hands the trainer ``steps`` batches from an endless stream, timing each fetch.

    Args:
        stream: an iterator of ``(x, y)`` batches.
        steps: batches per "epoch" (``len``).

    After an iteration, ``starts[i]`` is when fetch ``i`` began, ``fetch[i]`` how long it took and
    ``end`` when the trainer asked for the batch after the last one (the end of the last step).
    """

    def __init__(self, stream: Iterator, steps: int) -> None:
        self.stream, self.steps = stream, steps
        self.starts: list[float] = []
        self.fetch: list[float] = []
        self.end = float("nan")

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        self.starts, self.fetch = [], []
        for _ in range(self.steps):
            t0 = time.perf_counter()
            batch = next(self.stream)
            self.starts.append(t0)
            self.fetch.append(time.perf_counter() - t0)
            yield batch
        self.end = time.perf_counter()

    def window(self, skip: int) -> tuple[float, float]:
        """``(seconds fetching, seconds in total)`` over the steps after the first ``skip``."""
        return sum(self.fetch[skip:]), self.end - self.starts[skip]


def _streams(bundle, images, labels, mean, std, cfg) -> dict[str, Iterator]:
    streams = {OURS: _cycle(bundle.train)}
    for w in cfg["workers"]:
        streams[f"torchvision DataLoader, {w} workers"] = _cycle(
            torchvision_loader(images, labels, mean, std, cfg["batch"], w))
    return streams


def _one_thread(stream: Iterator):
    # Diagnostic, not a library option: the in-memory loader's per-batch work is a handful of
    # sub-millisecond ops; on a shared machine a 2-thread parallel region waits whenever either of
    # its threads is descheduled, so this row shows what the same loader gives on one thread.
    def call():
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return next(stream)
        finally:
            torch.set_num_threads(n)

    return call


def _throughput(streams: dict[str, Iterator], cfg, run: Run) -> tuple[str, list]:
    calls = {n: (lambda s=s: next(s)) for n, s in streams.items()}
    calls[OURS_1T] = _one_thread(streams[OURS])
    res = run.interleave("batch production", calls, target_s=cfg["target_s"], warmup=3, settle_s=SETTLE_S)
    base = f"torchvision DataLoader, {cfg['workers'][0]} workers"
    rows = rate_rows(res, cfg["batch"], base)
    summary = []
    dls = [m for n, m in res.items() if n not in (OURS, OURS_1T) and m.ok]
    if res[OURS].ok and dls:
        fastest = max(dls, key=lambda m: -m.median())
        r = paired_ratio(res[OURS], fastest)
        summary.append((f"data: in-memory / fastest DataLoader ({fastest.name.split(', ')[1]}), images/s",
                        f"{r[0]:.1f}x ({r[1]:.1f}-{r[2]:.1f})", f">= {TARGET:g}", verdict(r[0], TARGET)))
        if res[OURS_1T].ok:
            r1 = paired_ratio(res[OURS_1T], fastest)
            summary.append(("data: in-memory with its ops on 1 thread (diagnostic) / fastest DataLoader",
                            f"{r1[0]:.1f}x ({r1[1]:.1f}-{r1[2]:.1f})", f">= {TARGET:g}", verdict(r1[0], TARGET)))
    table = markdown_table(["data path", "images/s (median)", "min-max", f"speed vs {base}"], rows)
    return table, summary


def _training_wait(bundle, streams: dict[str, Iterator], cfg, run: Run) -> tuple[str, list]:
    small_test = InMemoryLoader(bundle.test.images[:256], bundle.test.labels[:256], batch_size=128,
                                mean=bundle.info.mean, std=bundle.info.std)
    torch.manual_seed(0)
    model0 = create_model("resnet20", num_classes=10, in_channels=1)
    models = {n: create_model("resnet20", num_classes=10, in_channels=1) for n in streams}
    for m in models.values():
        m.load_state_dict(model0.state_dict())
    config = TrainConfig(epochs=1, max_steps_per_epoch=cfg["train_steps"], progress=False, plots=False,
                         device="cpu")
    fetch = {n: [] for n in streams}  # per repeat: fraction of step time spent fetching
    rate = {n: [] for n in streams}  # per repeat: training images/s
    names = list(streams)
    # The streams are already running (workers started, loaders warm); the first skip_steps steps
    # of each call (allocator warm-up) are not counted.
    with run.measure("training") as meter:
        for r in range(run.repeats):
            for name in (names if r % 2 == 0 else names[::-1]):
                meter.sleep(SETTLE_S)
                loader = TimedLoader(streams[name], cfg["train_steps"])
                data = dataclasses.replace(bundle, train=loader, test=small_test)
                train(models[name], data, config, log=lambda s: None)
                f, total = loader.window(cfg["skip_steps"])
                fetch[name].append(f / total)
                rate[name].append((cfg["train_steps"] - cfg["skip_steps"]) * cfg["batch"] / total)
            print(f"  train repeat {r + 1}/{run.repeats}: "
                  + ", ".join(f"{n} fetch {100 * fetch[n][-1]:.1f}%" for n in names), file=sys.stderr, flush=True)
    rows = []
    for n in names:
        fm, flo, fhi = spread([100 * v for v in fetch[n]])
        rm, rlo, rhi = spread(rate[n])
        ratio = statistics.median([a / b for a, b in zip(rate[OURS], rate[n])])
        rows.append([n, f"{fm:.1f}% ({flo:.1f}-{fhi:.1f})", fmt_rate(rm), f"{fmt_rate(rlo)}-{fmt_rate(rhi)}",
                     "1.00x" if n == OURS else f"{ratio:.2f}x"])
    table = markdown_table(
        ["data path feeding resnet_lab.train", "time fetching batches (median, min-max)", "training images/s",
         "min-max", "ours' training speed vs this"], rows)
    summary = [("training waits on data (in-memory path): share of step time fetching",
                f"{statistics.median(fetch[OURS]) * 100:.1f}%", "~0%", "-")]
    return table, summary


def _threads_note(threads: int, cores: int) -> str:
    """Why the diagnostic row exists, in words true of the run's ``--threads`` and the machine's cores."""
    if threads == 1:
        return ("its batches take well under a millisecond; at --threads 1 it runs as the in-memory row does (one "
                "thread either way), so the two differ only by noise.\n")
    return (f"its batches take well under a millisecond, and with {threads} threads every one of its operators is a "
            f"parallel region that stalls whenever another process holds one of the {cores} cores.\n")


def build(args: argparse.Namespace, command: str) -> Section:
    """Run the data benchmarks and return their Markdown section.

    Args:
        args: ``quick``, ``repeats`` (None: the default), ``threads``.
        command: the command line recorded with the tables.
    """
    # Busy threads: at least one all along (the 0-worker DataLoader is one Python thread; the others
    # use --threads, or 2 worker processes, children whose CPU time counts, while the main thread
    # waits). At most --threads plus the workers run at once: the load the benchmark may cause itself.
    run = Run.start(args, FULL, QUICK, "data benchmark", threads=1, own_load=args.threads + max(FULL["workers"]))
    cfg, repeats = run.cfg, run.repeats
    bundle = load_data("fashion-mnist", batch_size=cfg["batch"], device="cpu", augment=True)
    images = bundle.train.images[:, 0].numpy()  # (N, 28, 28) uint8: the very array ours holds
    labels = bundle.train.labels.numpy()
    mean, std = bundle.info.mean, bundle.info.std
    print(f"[data] batch production, batch {cfg['batch']}", flush=True)
    streams = _streams(bundle, images, labels, mean, std, cfg)
    t1, s1 = _throughput(streams, cfg, run)
    print(f"[data] resnet20 training, {cfg['train_steps']} steps per repeat", flush=True)
    t2, s2 = _training_wait(bundle, streams, cfg, run)
    for stream in streams.values():  # shut the DataLoader workers down
        stream.close()
    body = (
        f"### Producing augmented batches of {cfg['batch']} (Fashion-MNIST train split, "
        f"{bundle.num_train:,} images), {repeats} repeats\n\n" + t1
        + f"\nDataLoader workers keep running between calls (`persistent_workers`) and prefetch up to "
        f"2 batches each between repeats, which flatters the worker rows a little; each timed repeat starts "
        f"after a {SETTLE_S:g} s pause so that refilling is not charged to the next contender. The "
        "diagnostic row runs the same in-memory loader with `torch.set_num_threads(1)` around each `next()`: "
        + _threads_note(args.threads, os.cpu_count() or 1)
        + f"\n### Is training waiting on data? resnet20 (1x28x28, batch {cfg['batch']}) in `resnet_lab.train`, "
        f"eager fp32, {cfg['train_steps']} steps per call of which the first {cfg['skip_steps']} are not "
        f"counted, {repeats} repeats\n\n" + t2
        + "\n\"Time fetching\" is the wall time the training loop spends inside `next()` on the loader, over "
        f"the whole step time. With DataLoader workers on a {os.cpu_count() or 1}-core machine the fetch can look "
        "cheap while the worker processes take CPU from the training step itself: compare the training images/s.\n"
    )
    return run.section("3. Data path: in-memory loader vs torchvision DataLoader", command, body, s1 + s2)


if __name__ == "__main__":
    sys.exit(run_standalone(build, first_paragraph(__doc__),
                            repeats=(FULL["repeats"], QUICK["repeats"])))
