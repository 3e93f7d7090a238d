"""Shared timing, statistics, machine description and Markdown helpers for the benchmarks.

Every speed claim in docs/BENCHMARKS.md is a *ratio measured side by side*: the contenders of one
table run in the same process, interleaved repeat by repeat (the order alternates between repeats so
neither side always runs first), after a warm-up. A machine shared with other jobs changes speed
from second to second; pairing the contenders inside each repeat and taking the median of the
per-repeat ratios cancels most of that drift (airbench reports mean and spread over many runs for
the same reason).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

__all__ = [
    "Measurement",
    "Section",
    "add_common_args",
    "calibrate",
    "describe_machine",
    "fmt_rate",
    "fmt_ratio",
    "interleave",
    "load_average",
    "compile_cache_note",
    "machine_block",
    "markdown_table",
    "paired_cost",
    "paired_ratio",
    "setup_threads",
    "spread",
    "want_compile",
]


# ----------------------------------------------------------------------------- set-up


def setup_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads (the machine has 2 cores; every benchmark runs at 2).

    Args:
        threads: value for ``torch.set_num_threads``.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    torch.set_num_threads(threads)


def add_common_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags every benchmark script shares: ``--quick``, ``--repeats``, ``--threads``.

    Args:
        parser: the script's parser; the flags are added to it and it is returned.
    """
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and repeat counts: checks that the script runs, figures are meaningless")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per contender (default 5, --quick 2); medians are over these")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                        help="measure torch.compile contenders (auto: on, off with --quick; compiling a "
                             "training graph takes minutes on 2 cores)")
    return parser


def want_compile(args: argparse.Namespace) -> bool:
    """Whether to measure the ``torch.compile`` contenders (``--compile``; auto: not with ``--quick``).

    Args:
        args: parsed flags with ``compile`` and ``quick`` (missing ``compile`` counts as auto).
    """
    choice = getattr(args, "compile", "auto")
    return choice == "on" or (choice == "auto" and not args.quick)


def compile_cache_note() -> str:
    """Inductor's FX-graph cache hits/misses so far in this process (a hit means compile time was
    shortened by an earlier run's on-disk cache)."""
    try:
        from torch._dynamo.utils import counters

        c = counters["inductor"]
        return (f"inductor FX-graph cache so far in this process: {c['fxgraph_cache_hit']} hit(s), "
                f"{c['fxgraph_cache_miss']} miss(es); a hit means an earlier run's compilation was reused")
    except Exception:  # private counters moved: say nothing rather than fail the benchmark
        return "inductor cache state unknown"


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (``os.getloadavg``)."""
    try:
        return os.getloadavg()
    except OSError:  # not available on this platform
        return (float("nan"),) * 3


def _lscpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def describe_machine() -> dict[str, str]:
    """What a reader needs to judge the figures: CPU model, cores, ISA, library versions, threads."""
    flags = _cpu_flags()
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f in flags]
    info = {
        "cpu": _lscpu_model(),
        "cores": str(os.cpu_count()),
        "isa": ", ".join(isa) or "unknown",
        "torch cpu capability": torch.backends.cpu.get_cpu_capability(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
    }
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def now_utc() -> str:
    """The current time, UTC, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def command_line() -> str:
    """How this process was started, as a shell command relative to the repository root."""
    args = [os.path.relpath(sys.argv[0])] + sys.argv[1:] if sys.argv and sys.argv[0] else ["python"]
    return ".venv/bin/python " + " ".join(shlex.quote(a) for a in args)


def machine_block(command: str, started: str, load_before: Sequence[float], load_after: Sequence[float],
                  machine: dict[str, str] | None = None) -> str:
    """The lines that go with every table: command, machine, threads, date and load average.

    Args:
        command: the shell command that produced the table.
        started: when the measurement started (:func:`now_utc`).
        load_before, load_after: :func:`load_average` at the start and the end of the section.
        machine: :func:`describe_machine` (computed when None).
    """
    m = machine or describe_machine()
    lib = f"torch {m['torch']}" + (f", torchvision {m['torchvision']}" if "torchvision" in m else "") + (
        f", onnxruntime {m['onnxruntime']}" if "onnxruntime" in m else "")
    la = lambda v: " / ".join(f"{x:.2f}" for x in v)  # noqa: E731
    return (
        f"- command: `{command}`\n"
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['isa']}; torch uses {m['torch cpu capability']}), "
        f"{m['threads']} torch threads; {lib}; Python {m['python']}\n"
        f"- date: {started}; load average (1/5/15 min) {la(load_before)} at start, {la(load_after)} at end\n"
    )


# ----------------------------------------------------------------------------- timing


@dataclass
class Measurement:
    """Seconds per call of one contender, one value per repeat.

    Attributes:
        name: the contender's label.
        seconds: per-call time of each timed repeat (each repeat averages ``inner`` calls).
        inner: calls per repeat.
        first_call_s: the first warm-up call (includes any compilation or allocation).
        error: why the contender could not run (then ``seconds`` is empty).
    """

    name: str
    seconds: list[float] = field(default_factory=list)
    inner: int = 1
    first_call_s: float = float("nan")
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.seconds)

    def median(self) -> float:
        return statistics.median(self.seconds)

    def rates(self, items_per_call: float) -> list[float]:
        """Items per second of each repeat."""
        return [items_per_call / s for s in self.seconds]


def calibrate(fn: Callable[[], object], target_s: float, max_inner: int = 1000) -> int:
    """How many calls of ``fn`` fill about ``target_s`` seconds (at least 1).

    Times calls one by one until a tenth of ``target_s`` (and at least 3 calls, or one call
    longer than a third of it) has passed, and sizes the repeat from the *median* call, so one
    unusually fast call (a batch a DataLoader worker had prefetched) or one stalled by another
    process cannot skew the count.

    Args:
        fn: the measured call (already warmed up).
        target_s: wanted duration of one timed repeat.
        max_inner: cap on the count.
    """
    times: list[float] = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        if elapsed >= target_s / 10 and (len(times) >= 3 or elapsed >= target_s / 3):
            break
    return int(max(1, min(max_inner, round(target_s / max(statistics.median(times), 1e-9)))))


def interleave(
    contenders: dict[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 2,
    target_s: float = 0.5,
    settle_s: float = 0.0,
    log: Callable[[str], None] | None = None,
) -> dict[str, Measurement]:
    """Time every contender ``repeats`` times, interleaved, after ``warmup`` untimed calls each.

    Each contender's number of calls per repeat is calibrated once (to about ``target_s``), then
    repeat ``r`` runs all contenders in turn, in forward order on even ``r`` and reversed on odd
    ``r``, so drift in the machine's speed hits all of them alike. A contender that raises during
    warm-up is recorded with its error and left out of the timed repeats.

    Args:
        contenders: label -> zero-argument callable doing one unit of work (a step, a batch).
        repeats: timed repeats per contender (the medians are over these).
        warmup: untimed calls before timing (the first one's time is kept: compile time).
        target_s: approximate duration of one timed repeat.
        settle_s: pause before each timed repeat of each contender, so background work started by
            the previous one (DataLoader workers refilling their prefetch queue) is not charged to it.
        log: progress lines (default: to stderr).
    """
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    out: dict[str, Measurement] = {}
    for name, fn in contenders.items():
        m = Measurement(name)
        try:
            t0 = time.perf_counter()
            fn()
            m.first_call_s = time.perf_counter() - t0
            for _ in range(max(0, warmup - 1)):
                fn()
            m.inner = calibrate(fn, target_s)
        except Exception as e:  # a contender that cannot run on this machine is reported, not fatal
            m.error = f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"
            log(f"  {name}: failed in warm-up ({m.error})")
        out[name] = m
        log(f"  warm-up {name}: first call {m.first_call_s:.2f} s, {m.inner} call(s) per repeat")
    names = [n for n, m in out.items() if m.error is None]
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        for name in order:
            fn, m = contenders[name], out[name]
            if settle_s:
                time.sleep(settle_s)
            t0 = time.perf_counter()
            for _ in range(m.inner):
                fn()
            m.seconds.append((time.perf_counter() - t0) / m.inner)
        log(f"  repeat {r + 1}/{repeats}: " + ", ".join(f"{n} {out[n].seconds[-1] * 1e3:.1f} ms" for n in names))
    return out


# ----------------------------------------------------------------------------- statistics


def spread(values: Sequence[float]) -> tuple[float, float, float]:
    """``(median, min, max)`` of ``values``."""
    return statistics.median(values), min(values), max(values)


def paired_ratio(num: Measurement, den: Measurement) -> tuple[float, float, float]:
    """Speed of ``num`` relative to ``den`` (>1: ``num`` is faster), repeat by repeat.

    Returns ``(median, min, max)`` of ``den.seconds[r] / num.seconds[r]`` over the repeats, the
    pairing that cancels the machine's drift between repeats.
    """
    ratios = [d / n for n, d in zip(num.seconds, den.seconds)]
    return spread(ratios)


def paired_cost(num: Measurement, den: Measurement) -> tuple[float, float, float]:
    """Time of ``num`` relative to ``den`` (>1: ``num`` is slower), repeat by repeat: ``(median,
    min, max)`` of ``num.seconds[r] / den.seconds[r]``."""
    return spread([n / d for n, d in zip(num.seconds, den.seconds)])


# ----------------------------------------------------------------------------- Markdown


def fmt_rate(v: float) -> str:
    """A throughput with 3 significant figures."""
    if v != v:  # NaN
        return "n/a"
    if v >= 100:
        return f"{v:,.0f}"
    return f"{v:.3g}"


def fmt_ratio(r: tuple[float, float, float]) -> str:
    """``1.23x (1.10-1.31)``: the median ratio and its min-max over the repeats."""
    med, lo, hi = r
    return f"**{med:.2f}x** ({lo:.2f}-{hi:.2f})"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table (first column left-aligned, the rest right-aligned)."""
    align = [":---"] + ["---:"] * (len(headers) - 1)
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def rate_rows(results: dict[str, Measurement], items_per_call: float, baseline: str,
              unit_scale: float = 1.0) -> list[list[str]]:
    """Rows ``label | median rate | min-max | ratio vs baseline`` for a throughput table.

    Args:
        results: from :func:`interleave`.
        items_per_call: images (or FLOPs) per call, to turn seconds into a rate.
        baseline: the label every ratio is relative to.
        unit_scale: divide rates by this (e.g. 1e9 for GFLOP/s).
    """
    base = results[baseline]
    rows = []
    for name, m in results.items():
        if not m.ok:
            rows.append([name, "failed", "", m.error or ""])
            continue
        med, lo, hi = spread([r / unit_scale for r in m.rates(items_per_call)])
        ratio = "1.00x (baseline)" if name == baseline else (fmt_ratio(paired_ratio(m, base)) if base.ok else "n/a")
        rows.append([name, fmt_rate(med), f"{fmt_rate(lo)}-{fmt_rate(hi)}", ratio])
    return rows


@dataclass
class Section:
    """One benchmark's contribution to docs/BENCHMARKS.md.

    Attributes:
        title: the ``##`` heading.
        body: Markdown (tables and notes), without the heading.
        summary: one-line headline figures for the summary table: ``(what, figure, target, verdict)``.
    """

    title: str
    body: str
    summary: list[tuple[str, str, str, str]] = field(default_factory=list)

    def markdown(self) -> str:
        return f"## {self.title}\n\n{self.body.rstrip()}\n"


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    """``met`` / ``missed`` for a figure against its target."""
    if value != value:
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "**missed**"


def run_standalone(build: Callable[[argparse.Namespace, str], Section], description: str) -> None:
    """``main`` of a benchmark script run on its own: parse flags, run, print the section.

    Args:
        build: ``build(args, command) -> Section``.
        description: the script's ``--help`` text.
    """
    parser = add_common_args(argparse.ArgumentParser(description=description))
    args = parser.parse_args()
    setup_threads(args.threads)
    print(build(args, command_line()).markdown())
