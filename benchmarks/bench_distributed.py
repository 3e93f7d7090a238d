"""Data-parallel scaling on this machine: training images/s with 1 process and with N (torchrun).

Each contender is a real ``resnet-lab train`` run (the CLI, on the ``fake`` dataset held in
memory, default augmentation): one process, or ``torchrun --nproc-per-node N`` with and without
``--sync-bn``. The figure is the trainer's own ``images_per_second`` (global images over rank 0's
training time of the epoch, evaluation excluded), median over the epochs after the first (which
carries the warm-up), then median over repeats. The contenders run interleaved, repeat by repeat,
in alternating order, so that the drift of a shared machine hits all of them alike.

Scaling efficiency = (images/s with N processes) / (N x images/s with 1 process of 1 thread): 1.0
is perfect weak scaling (same per-process batch, N times the global batch). On a CPU machine the
processes share the cores: with 2 cores, 1 process already uses both through intra-op threads,
so the fair question there is whether 2 processes x 1 thread beat 1 process x 2 threads.

Every run is checked for quietness (load average, and the CPU time its processes got against wall
time x their threads); a run measured while other processes ran is marked INVALID and the script
exits with status 1 unless ``--allow-busy``.

Run: ``.venv/bin/python benchmarks/bench_distributed.py [--nproc 2] [--repeats 3] [--quick]``;
prints a Markdown section (command, machine, date, quietness) to paste into docs/DISTRIBUTED.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import (
    BUSY_MARK, QUICK_MARK, QuietMeter, Quietness, add_quiet_args, busy_reasons, command_line, fail, machine_line,
    may_write, now_utc, wait_for_quiet,
)
from _common import MAX_EPOCHS, MAX_PROCESSES, MAX_REPEATS, at_most, first_paragraph, positive_int

from resnet_lab import model_info
from resnet_lab.data import FAKE_TRAIN_SAMPLES
from resnet_lab.train.device import resolve_device

VENV_BIN = Path(sys.executable).parent
# the sizes of a run, and of a --quick one; a size given on the command line wins over either
FULL = {"repeats": 3, "epochs": 6, "subset": FAKE_TRAIN_SAMPLES}  # the whole fake training split (512 images)
QUICK = {"repeats": 1, "epochs": 2, "subset": 512}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_args(a: argparse.Namespace, out: Path) -> list[str]:
    return ["train", "--model", a.model, "--dataset", "fake", "--subset", str(a.subset), "--epochs", str(a.epochs),
            "--batch-size", str(a.batch_size), "--device", a.device, "--no-progress", "--out", str(out)]


class RunFailed(RuntimeError):
    """A training run that exited with an error: its label, command, status and the last line it wrote."""

    def __init__(self, label: str, command: str, status: int, output: str) -> None:
        lines = [line.strip() for line in output.splitlines() if line.strip()]
        self.last = lines[-1] if lines else "(no output)"
        super().__init__(f"run '{label}' failed with exit status {status}: {self.last} (command: {command})")


def run_one(a: argparse.Namespace, nproc: int, threads: int, sync_bn: bool, workdir: Path, label: str,
            own_load: float) -> tuple[float, Quietness]:
    """One training run: the median images/s over epochs 2.. (global, as rank 0 reports) and the
    run's quietness (its processes are waited for, so their CPU time counts)."""
    meter = QuietMeter(label, nproc * threads, own_load=own_load)
    out = Path(tempfile.mkdtemp(dir=workdir)) / "run"
    args = _train_args(a, out) + (["--sync-bn"] if sync_bn else [])
    if nproc == 1:
        cmd = [sys.executable, "-m", "resnet_lab", *args]
    else:
        cmd = [str(VENV_BIN / "torchrun"), "--nnodes", "1", "--nproc-per-node", str(nproc), "--master-addr",
               "127.0.0.1", "--master-port", str(_free_port()), "-m", "resnet_lab", *args]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RunFailed(label, shlex.join(cmd), r.returncode, r.stderr or r.stdout)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    rates = [rec["images_per_second"] for rec in records[1:]] or [records[0]["images_per_second"]]
    return statistics.median(rates), meter.stop()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, with the sizes of --quick (or a full run) where none was given, and the model and
    device checked by resnet-lab itself: a bad one is refused in one line before anything runs."""
    p = argparse.ArgumentParser(description=first_paragraph(__doc__))
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch-size", type=positive_int, default=64, help="per process")
    p.add_argument("--subset", type=positive_int, default=None,
                   help=f"training images per epoch (default {FULL['subset']}, --quick {QUICK['subset']})")
    p.add_argument("--epochs", type=at_most(MAX_EPOCHS), default=None,
                   help=f"default {FULL['epochs']}, --quick {QUICK['epochs']}")
    p.add_argument("--nproc", type=at_most(MAX_PROCESSES), default=2, help="processes of the torchrun runs (default 2)")
    p.add_argument("--repeats", type=at_most(MAX_REPEATS), default=None,
                   help=f"default {FULL['repeats']}, --quick {QUICK['repeats']}")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 repeat, 2 epochs of 512 images unless --repeats, --epochs, --subset say")
    add_quiet_args(p)
    a = p.parse_args(argv)
    for name, value in (QUICK if a.quick else FULL).items():
        if getattr(a, name) is None:
            setattr(a, name, value)
    try:
        model_info(a.model)
        resolve_device(a.device)
    except (ValueError, RuntimeError) as e:  # the runs would fail one by one, each with a traceback
        fail(str(e))
    if a.batch_size * a.nproc > FAKE_TRAIN_SAMPLES:  # no --subset can hold one batch per process
        fail(f"--batch-size {a.batch_size} x {a.nproc} processes = {a.batch_size * a.nproc} images is more than the "
             f"{FAKE_TRAIN_SAMPLES} training images of the fake dataset the runs train on: give --batch-size "
             f"{FAKE_TRAIN_SAMPLES // a.nproc} or less, or a smaller --nproc")
    if a.subset > FAKE_TRAIN_SAMPLES:  # every run would fail with train's own refusal, one after another
        fail(f"--subset {a.subset} is more than the {FAKE_TRAIN_SAMPLES} training images of the fake dataset the runs "
             f"train on: give --subset {FAKE_TRAIN_SAMPLES} or less (more --epochs measure longer)")
    if a.subset < a.batch_size * a.nproc:  # a rank would get no full batch: its run fails, after the others ran
        fail(f"--subset {a.subset} is less than one batch per process ({a.batch_size} x {a.nproc} processes = "
             f"{a.batch_size * a.nproc} images): give --subset {a.batch_size * a.nproc} or more, or a smaller "
             "--batch-size")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    wait_for_quiet(a)
    cores = os.cpu_count() or 1
    n = a.nproc
    # (label, processes, threads per process, sync-bn); threads only matter on CPU.
    contenders = [
        ("1 process x 1 thread", 1, 1, False),
        (f"1 process x {cores} threads", 1, cores, False),
        (f"{n} processes x {max(1, cores // n)} thread(s)", n, max(1, cores // n), False),
        (f"{n} processes x {max(1, cores // n)} thread(s), --sync-bn", n, max(1, cores // n), True),
    ]
    started = now_utc()
    own_load = max(procs * threads for _, procs, threads, _ in contenders)  # the most threads one run uses
    rates: dict[str, list[float]] = {c[0]: [] for c in contenders}
    checks: list[Quietness] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeats):
            order = contenders if rep % 2 == 0 else contenders[::-1]
            for label, procs, threads, sync in order:
                try:
                    rate, quiet = run_one(a, procs, threads, sync, Path(tmp), f"{label}, repeat {rep + 1}", own_load)
                except RunFailed as e:  # one line, not a traceback; the other runs' figures mean nothing alone
                    print(f"error: {e}", file=sys.stderr, flush=True)
                    return 1
                rates[label].append(rate)
                checks.append(quiet)
                print(f"repeat {rep + 1}: {label}: {rate:.0f} img/s", file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in rates.items()}
    single1 = med[contenders[0][0]]
    single_all = med[contenders[1][0]]
    lines = ["| setup | images/s (median) | min-max | efficiency vs N x (1 process x 1 thread) | vs 1 process x all threads |",
             "| :--- | ---: | ---: | ---: | ---: |"]
    for label, procs, _, _ in contenders:
        eff = med[label] / (procs * single1)
        lines.append(f"| {label} | {med[label]:.0f} | {min(rates[label]):.0f}-{max(rates[label]):.0f} | "
                     f"{eff:.2f} | {med[label] / single_all:.2f}x |")
    print(f"### {a.model}, per-process batch {a.batch_size}, {a.device}\n")
    if a.quick:
        print(f"> **{QUICK_MARK}**: tiny sizes; these figures only show that the script runs.\n")
    if busy_reasons(checks):
        print(f"> **{BUSY_MARK}**: other processes ran during some runs (below); do not quote these figures.\n")
    print("\n".join(lines) + "\n")
    print(f"- command: `{command_line()}`")
    print(f"- machine: {machine_line()} (in this script; each run sets its own threads)")
    print(f"- date: {started}")
    print(f"- {a.repeats} repeats x {a.epochs} epochs of {a.subset} images; images/s per run = median over epochs 2..")
    for q in checks:
        print(f"- {q.describe()}")
    # docs/DISTRIBUTED.md's scaling section is pasted in by hand: this script only prints it
    return 0 if a.quick or may_write(checks, allow_busy=a.allow_busy, target=None,
                                     unwritten="it prints its section: nothing is written") else 1


if __name__ == "__main__":
    sys.exit(main())
