"""Shared timing, quietness, statistics, machine description and Markdown helpers for the benchmarks.

Every benchmark script starts with ``from _common import ...``: Python puts a script's own folder
first on ``sys.path``, so the scripts (and ``run_all.py``, which imports them) find this module
without any path set-up; the tests add ``benchmarks/`` to the path once.

Every speed claim in docs/BENCHMARKS.md is a *ratio measured side by side*: the contenders of one
table run in the same process, interleaved repeat by repeat (the order alternates between repeats so
neither side always runs first), after a warm-up. Pairing cancels slow drift, not other processes
taking the CPU at random moments: a figure counts only when the machine was quiet while it was
taken (:class:`Quietness`, issue 14), and a script refuses to write the docs otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import functools
import math
import os
import platform
import re
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ContextManager, Iterable, Iterator, NoReturn, Sequence

import torch
import torch.nn.functional as F
import torchvision

from resnet_lab.train.device import amp_dtype, autocast

try:  # the optional `onnx` extra: the inference benchmark measures it when installed
    import onnxruntime
except ImportError:
    onnxruntime = None

__all__ = [
    "BUSY_MARK",
    "CPU_SHARE",
    "LOAD_MARGIN",
    "Measurement",
    "QUICK_MARK",
    "QuietMeter",
    "Quietness",
    "Run",
    "Section",
    "add_common_args",
    "add_quiet_args",
    "at_most",
    "bf16_hardware",
    "busy_reasons",
    "calibrate",
    "check_doc",
    "check_folder",
    "command_line",
    "compile_cache_note",
    "cpu_seconds",
    "describe_machine",
    "fail",
    "first_paragraph",
    "gemm_speed",
    "fmt_rate",
    "fmt_ratio",
    "interleave",
    "load_average",
    "machine_block",
    "machine_line",
    "markdown_table",
    "may_write",
    "now_utc",
    "paired_cost",
    "paired_ratio",
    "parse_proc_stat",
    "publish",
    "python_name",
    "rate_rows",
    "run_standalone",
    "setup_threads",
    "spread",
    "thread_count",
    "train_step",
    "unmarked_text",
    "unwritable",
    "update_doc",
    "write_doc",
    "verdict",
    "wait_for_quiet",
    "want_compile",
]

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS_MD = os.path.join(REPO, "docs", "BENCHMARKS.md")
MAX_WAIT_MIN = 60.0  # --wait-for-load gives up after this many minutes unless --max-wait-min says
# Upper bounds of the counts the scripts take: far above any real run, low enough that a typo (an
# extra digit, 10**23) is refused in one line instead of running until killed or overflowing torch.
MAX_THREADS = 1024
MAX_REPEATS = 1000
MAX_SEEDS = 100
MAX_EPOCHS = 1000
MAX_STEPS = 10_000
MAX_PROCESSES = 256


# ----------------------------------------------------------------------------- set-up


def fail(message: str) -> NoReturn:
    """Refuse bad input the project's way: one line ``error: MESSAGE`` on stderr, exit status 2.

    Args:
        message: names the bad value and the way out.
    """
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def check_host(host: str | None, where: str) -> None:
    """Refuse a ``--host`` name that cannot name a block of a document (see :func:`fail`).

    Args:
        host: the name given, or None (no ``--host``).
        where: what the name becomes, for the message (e.g. "a block of docs/RESULTS.md").
    """
    if host is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", host):
        fail(f"--host {host!r}: use letters, digits, '-' and '_' only (it names {where})")


def add_host_arg(parser: argparse.ArgumentParser, block: str, what: str) -> None:
    """Add ``--host NAME``: a second machine's figures go to a block of their own (:func:`host_key`),
    under a title that names the host (:func:`host_title`).

    Args:
        parser: the script's parser.
        block: the key of the script's block in its document (e.g. "peer").
        what: what the script writes, for the help (e.g. "the table").
    """
    parser.add_argument("--host", default=None, metavar="NAME",
                        help=f"write {what} to a separate block, '{block}-NAME', titled for the NAME host, beside "
                             f"another machine's '{block}' block instead of replacing it (letters, digits, - and _)")


def host_key(block: str, host: str | None) -> str:
    """The document block a script writes: its own, or for ``--host NAME`` "BLOCK-NAME" beside it
    (run_all keeps only ``[\\w-]+`` names)."""
    return block if host is None else f"{block}-{host}"


def host_title(title: str, host: str | None) -> str:
    """A section's title, naming the ``--host`` it was measured on (None: the title as it is)."""
    return title if host is None else f"{title}, on the {host} host"


def first_paragraph(doc: str | None) -> str:
    """A script's ``--help`` description: the first paragraph of its docstring, whole (its first line
    alone can stop mid-sentence)."""
    return " ".join((doc or "").strip().split("\n\n")[0].split())


def setup_threads(threads: int) -> None:
    """Use ``threads`` intra-op threads (the machine has 2 cores; every benchmark runs at 2).

    Args:
        threads: value for ``torch.set_num_threads``, 1 to :data:`MAX_THREADS`.

    Raises:
        ValueError: a count out of that range (torch overflows on a huge one).
    """
    if not 1 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be 1 to {MAX_THREADS} (this machine has {os.cpu_count()} cores), got {threads}")
    torch.set_num_threads(threads)


def error_line(e: BaseException) -> str:
    """An exception as one line for a table: its type and the first line of its message (200 characters)."""
    first = str(e).splitlines()[0][:200] if str(e) else ""
    return f"{type(e).__name__}: {first}"


def positive_float(text: str) -> float:
    """argparse type of a load average or a number of minutes: a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, got {text}")
    return value


def accuracy_fraction(text: str) -> float:
    """argparse type of a test accuracy to time (--target, --targets): a fraction in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction such as 0.94, got {text!r}") from None
    if not 0 < value <= 1:  # NaN fails this too
        hint = f" (for {value:g}% give {value / 100:g})" if 1 < value <= 100 else ""
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1]{hint}, got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type of a count (--batch-size, --subset): 0 or less is no count."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def at_most(limit: int, why: str = "") -> Callable[[str], int]:
    """argparse type of a count that also has an upper bound (--threads, --seeds, --repeats, --steps,
    --epochs, --nproc): :func:`positive_int` up to ``limit``, named with ``why`` in the refusal."""

    def count(text: str) -> int:
        value = positive_int(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"must be at most {limit:,}{why}, got {value:,}")
        return value

    count.__name__ = "count"
    return count


def thread_count(text: str) -> int:
    """argparse type of --threads: 1 to :data:`MAX_THREADS`."""
    return at_most(MAX_THREADS, f" (this machine has {os.cpu_count()} cores)")(text)


def add_quiet_args(parser: argparse.ArgumentParser, *, allow_busy: bool = True) -> argparse.ArgumentParser:
    """The flags of every script that measures: ``--allow-busy``, ``--wait-for-load``, ``--max-wait-min``.

    Args:
        parser: the script's parser; the flags are added to it and it is returned.
        allow_busy: add ``--allow-busy`` (False for a script that writes busy figures anyway, marked).
    """
    if allow_busy:
        parser.add_argument("--allow-busy", action="store_true",
                            help="accept figures taken while other processes ran: they are marked "
                                 f"'{BUSY_MARK}', written to the document where the script writes one, and the "
                                 "exit status is 0 (default: write nothing and exit with status 1)")
    parser.add_argument("--wait-for-load", type=positive_float, default=None, metavar="LOAD",
                        help="first wait until the 1-minute load average is below LOAD (a shared machine; "
                             "default: start at once)")
    parser.add_argument("--max-wait-min", type=positive_float, default=None, metavar="MIN",
                        help=f"with --wait-for-load: give up waiting after MIN minutes and run anyway (default "
                             f"{MAX_WAIT_MIN:g})")
    return parser


def add_common_args(parser: argparse.ArgumentParser, *, compile_flag: bool = True,
                    repeats: tuple[object, object] = (5, 2)) -> argparse.ArgumentParser:
    """The flags of the in-process benchmarks: ``--quick``, ``--repeats``, ``--threads``, ``--compile``,
    and those of :func:`add_quiet_args`.

    Args:
        parser: the script's parser; the flags are added to it and it is returned.
        compile_flag: add ``--compile`` (False for a script with no ``torch.compile`` contender, where
            the flag would change nothing).
        repeats: the default ``--repeats`` of a run and of a ``--quick`` one, as ``--help`` states them.
    """
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and repeat counts: checks that the script runs, figures are meaningless")
    full, quick = repeats
    parser.add_argument("--repeats", type=at_most(MAX_REPEATS), default=None,
                        help=f"timed repeats per contender (default {full}, --quick {quick}); medians are over these")
    parser.add_argument("--threads", type=thread_count, default=2, help="torch intra-op threads (default 2)")
    if compile_flag:
        parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                            help="measure torch.compile contenders (auto: on, off with --quick; compiling a "
                                 "training graph takes minutes on 2 cores)")
    return add_quiet_args(parser)


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


def wait_for_quiet(args: argparse.Namespace, poll_s: float = 10.0) -> None:
    """With ``--wait-for-load LOAD``, wait until the 1-minute load average is below LOAD (at most
    ``--max-wait-min`` minutes); without it, return at once.

    Args:
        args: parsed flags from :func:`add_quiet_args`.
        poll_s: seconds between looks.
    """
    max_wait = getattr(args, "max_wait_min", None)
    if args.wait_for_load is None:
        if max_wait is not None:
            fail(f"--max-wait-min {max_wait:g} bounds the wait of --wait-for-load, which was not given: add "
                 "--wait-for-load LOAD (e.g. 0.6), or drop --max-wait-min")
        return
    max_wait = MAX_WAIT_MIN if max_wait is None else max_wait
    deadline = time.perf_counter() + max_wait * 60
    while (load := load_average()[0]) >= args.wait_for_load:
        left = deadline - time.perf_counter()
        if left <= 0:
            print(f"{now_utc()}: gave up waiting after {max_wait:g} min (--max-wait-min): load average {load:.2f} is "
                  f"still >= {args.wait_for_load:g}; starting anyway (the quietness check still judges the figures)",
                  flush=True)
            return
        print(f"{now_utc()}: load average {load:.2f} >= {args.wait_for_load:g}, waiting", flush=True)
        time.sleep(min(poll_s, left))  # never past --max-wait-min
    print(f"{now_utc()}: load average {load:.2f} < {args.wait_for_load:g}; starting", flush=True)


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


@functools.lru_cache(maxsize=None)
def gemm_speed(threads: int, side: int = 1024, repeats: int = 5) -> str:
    """The machine's measured matrix-product speed at ``threads`` torch threads, as a short text.

    Two hosts that both report "AMD EPYC, avx512_bf16" ran the same bf16 recipe 1.6-2.1x apart
    (2026-12-02): the CPU's name and flags do not tell them apart, a 0.1-second probe does. The
    median of ``repeats`` ``side``-cubed products in float32, and in bfloat16 where the CPU
    computes it natively. Cached per thread count; informative only (the figures it goes with have
    their own quietness check).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        rates = []
        native_bf16 = bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})
        for dtype in (torch.float32, torch.bfloat16) if native_bf16 else (torch.float32,):
            a, b = torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype)
            out = torch.empty(side, side, dtype=dtype)
            torch.mm(a, b, out=out)  # warm-up
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                torch.mm(a, b, out=out)
                times.append(time.perf_counter() - t0)
            name = "fp32" if dtype == torch.float32 else "bf16"
            rates.append(f"{name} {2 * side ** 3 / statistics.median(times) / 1e9:.0f}")
    finally:
        torch.set_num_threads(before)
    return f"GEMM {side}^3 at {threads} thread(s): {', '.join(rates)} GFLOP/s"


def bf16_hardware(flags: set[str] | None = None) -> str:
    """What this CPU offers bfloat16 matrix products, as words for a note: AMX tiles, avx512_bf16
    dot-product instructions only, or neither (then bf16 is emulated).

    Args:
        flags: the CPU's flags (default: this machine's, from /proc/cpuinfo).
    """
    flags = _cpu_flags() if flags is None else flags
    if flags & {"amx_bf16", "amx_tile"}:
        return ("this CPU has AMX tiles (amx_bf16), which oneDNN uses for bfloat16 convolutions and matrix "
                "products" + (", besides avx512_bf16 dot-product instructions" if "avx512_bf16" in flags else ""))
    if "avx512_bf16" in flags:
        return "this CPU has avx512_bf16 dot-product instructions but no AMX tiles"
    return "this CPU has no native bfloat16 instructions (neither avx512_bf16 nor AMX): bfloat16 is emulated"


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
        "torchvision": torchvision.__version__,
        "threads": str(torch.get_num_threads()),
        "speed": gemm_speed(torch.get_num_threads()),
    }
    if onnxruntime is not None:
        info["onnxruntime"] = onnxruntime.__version__
    return info


def machine_line(machine: dict[str, str] | None = None) -> str:
    """One line naming the CPU, its cores and instruction sets, threads and library versions (issue 14:
    an AVX2-only machine runs the same recipe about 2x slower than an AVX-512 one).

    Args:
        machine: :func:`describe_machine` (computed when None).
    """
    m = machine or describe_machine()
    lib = f"torch {m['torch']}, torchvision {m['torchvision']}" + (
        f", onnxruntime {m['onnxruntime']}" if "onnxruntime" in m else "")
    return (f"{m['cpu']}, {m['cores']} cores ({m['isa']}; torch uses {m['torch cpu capability']}), "
            f"{m['threads']} torch threads" + (f", {m['speed']}" if "speed" in m else "")
            + f"; {lib}; Python {m['python']}")


def now_utc() -> str:
    """The current time, UTC, to the second."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def command_line(argv: Sequence[str] | None = None, executable: str | None = None) -> str:
    """How this process was started, as a shell command run from the repository root.

    The script is named relative to the root, whatever the working directory was; the interpreter
    too when it lives in the repository (``.venv/bin/python``), else by its file name (``python3``:
    another machine's own Python, as on a lent GPU machine).

    Args:
        argv: the arguments (default ``sys.argv``).
        executable: the interpreter (default ``sys.executable``).
    """
    argv = list(sys.argv if argv is None else argv)
    python = python_name(executable)
    if not argv or not argv[0]:
        return python
    script = os.path.abspath(argv[0])
    shown = os.path.relpath(script, REPO) if _inside_repo(script) else script
    return " ".join(shlex.quote(a) for a in [python, shown, *argv[1:]])


def _inside_repo(path: str) -> bool:
    return os.path.commonpath([REPO, os.path.abspath(path)]) == REPO


def python_name(executable: str | None = None) -> str:
    """The interpreter as a recorded command names it: relative to the repository root when it lives
    there (``.venv/bin/python``), else by its file name (``python3``), never a ``../..`` path into
    another folder of this machine.

    Args:
        executable: the interpreter (default ``sys.executable``).
    """
    exe = os.path.abspath(executable or sys.executable or "python")
    return os.path.relpath(exe, REPO) if _inside_repo(exe) else os.path.basename(exe)


def machine_block(command: str, started: str, checks: Sequence["Quietness"],
                  machine: dict[str, str] | None = None) -> str:
    """The lines that go with every table: command, machine, threads, date, and the quietness check.

    Args:
        command: the shell command that produced the table.
        started: when the measurement started (:func:`now_utc`).
        checks: the :class:`Quietness` of each measurement the table comes from.
        machine: :func:`describe_machine` (computed when None).
    """
    lines = [f"- command: `{command}`", f"- machine: {machine_line(machine)}", f"- date: {started}"]
    lines += [f"- {q.describe()}" for q in checks]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- quietness

# Issue 14: a figure counts only when nothing else ran beside it. Other processes show as a load
# average above the benchmark's own busy threads, and as the benchmark getting less CPU time than
# its threads x the wall time (its threads waited for a core).
LOAD_MARGIN = 0.5  # load above the benchmark's own threads by more than this: others were running
CPU_SHARE = 0.9  # CPU time under this share of wall time x threads: the threads were descheduled
OTHERS_IDLE_SHARE = 0.1  # other processes using under 10% of one core: the machine was ours
BUSY_MARK = "INVALID: busy machine"


def _proc_stat_fields(pid: str | int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the command name (field 3 onwards); empty if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # the command name (field 2) may hold spaces and parentheses: split after its last ')'
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return []


def _proc_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) a live process has used so far, from ``/proc/PID/stat`` (0 if gone)."""
    fields = _proc_stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK") if fields else 0.0  # utime, stime


def _live_children() -> list[int]:
    """This process's live children (DataLoader workers, a competitor, compile workers), from /proc."""
    me = str(os.getpid())
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return []
    return [int(p) for p in pids if (f := _proc_stat_fields(p)) and f[1] == me]  # field 4: the parent's pid


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its children: those waited for (from
    ``getrusage``, their own waited-for children included) and those still running (from /proc).

    The difference of two readings is right whichever way a child lives: started in between (0 at
    the first reading), or waited for in between (its /proc time at the first reading, its whole
    lifetime in ``getrusage`` at the second).
    """
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    live = sum(_proc_cpu_seconds(p) for p in _live_children())
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + live


def parse_proc_stat(text: str) -> float:
    """Busy CPU seconds of the whole machine since boot from ``/proc/stat``'s first line: all time but
    idle and iowait (steal, the hypervisor giving our cores to other machines, counts as busy).

    Args:
        text: the content of ``/proc/stat``.
    """
    values = [int(v) for v in text.splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user..steal; guest is inside user


def _machine_busy_seconds() -> float:
    try:
        with open("/proc/stat") as f:
            return parse_proc_stat(f.read())
    except (OSError, ValueError, IndexError):
        return float("nan")


@dataclass(frozen=True)
class Quietness:
    """What the machine did while one measurement ran, and whether its figures may be trusted.

    Attributes:
        label: what was measured (a section, a configuration, a contender).
        threads: threads the measurement keeps busy: its torch threads, plus any helper process it
            started on purpose (a competitor, DataLoader workers); ``cpu_s`` includes their CPU time.
        load_before, load_after: 1-minute load average at the start and at the end.
        wall_s: wall time of the measurement.
        cpu_s: CPU time the measurement got (this process and its children, see :func:`cpu_seconds`).
        own_load: the most threads this benchmark ever runs at once (default ``threads``): the load
            it may cause itself, before and after this measurement alike.
        idle_s: seconds the measurement slept on purpose (not expected to be busy).
        cores: the machine's cores (no process gets more CPU per second than this).
        others_cpu_s: CPU seconds the rest of the machine used meanwhile (all busy CPU time, from
            ``/proc/stat``, minus ``cpu_s``): evidence shown with the figures, not part of the rule.
    """

    label: str
    threads: float
    load_before: float
    load_after: float
    wall_s: float
    cpu_s: float
    own_load: float | None = None
    idle_s: float = 0.0
    cores: int = field(default_factory=lambda: os.cpu_count() or 1)
    others_cpu_s: float = float("nan")

    @property
    def allowed_load(self) -> float:
        """The highest load average that still counts as quiet: own threads + :data:`LOAD_MARGIN`."""
        return (self.threads if self.own_load is None else self.own_load) + LOAD_MARGIN

    @property
    def busy_threads(self) -> float:
        """Threads that can be busy at once: ``threads``, at most one per core."""
        return min(self.threads, self.cores)

    @property
    def expected_cpu_s(self) -> float:
        """The least CPU time a quiet machine gives: :data:`CPU_SHARE` x busy wall time x busy threads."""
        return CPU_SHARE * max(0.0, self.wall_s - self.idle_s) * self.busy_threads

    def check(self) -> list[str]:
        """Why the figures of this measurement are not to be trusted; empty when the machine was quiet."""
        reasons = []
        for when, load in (("at the start", self.load_before), ("at the end", self.load_after)):
            if math.isnan(load):
                reasons.append(f"load average {when} unknown (os.getloadavg failed): quietness cannot be checked")
            elif load > self.allowed_load + 1e-9:
                reasons.append(f"load average {load:.2f} {when} is above {self.allowed_load:.2f} (the benchmark's "
                               f"own {self.allowed_load - LOAD_MARGIN:g} threads + {LOAD_MARGIN}): other processes ran")
        busy_wall = max(self.wall_s - self.idle_s, 1e-9)
        # A short CPU share means the threads waited, for a core or by design (a PASSIVE OpenMP
        # thread sleeps while it waits; a single-threaded phase leaves the other idle). When
        # /proc/stat shows that the rest of the machine used almost nothing meanwhile, no core was
        # taken from us: the shortfall is the benchmark's own waiting, not another process.
        others_idle = not math.isnan(self.others_cpu_s) and self.others_cpu_s <= OTHERS_IDLE_SHARE * busy_wall
        if self.cpu_s < self.expected_cpu_s - 1e-9 and not others_idle:
            reasons.append(f"CPU time {self.cpu_s:.1f} s is {100 * self.cpu_s / (busy_wall * self.busy_threads):.0f}% "
                           f"of {busy_wall:.1f} s wall x {self.busy_threads:g} threads, under "
                           f"{100 * CPU_SHARE:.0f}%: its threads waited for a core")
        # The load average lags a minute behind and a one-thread benchmark on two cores keeps its
        # CPU share beside a one-core competitor: /proc/stat's count of the rest sees both.
        if not math.isnan(self.others_cpu_s) and self.others_cpu_s > LOAD_MARGIN * busy_wall:
            reasons.append(f"the rest of the machine used {self.others_cpu_s:.1f} s CPU in {busy_wall:.1f} s wall, more "
                           f"than {LOAD_MARGIN:g} of a core: other processes ran")
        return reasons

    @property
    def quiet(self) -> bool:
        return not self.check()

    def describe(self) -> str:
        """One line for the Markdown: the numbers the rule saw, and the verdict."""
        busy_wall = max(self.wall_s - self.idle_s, 1e-9)
        share = self.cpu_s / (busy_wall * self.busy_threads)
        idle = f" (+{self.idle_s:.1f} s asleep on purpose)" if self.idle_s else ""
        others = "" if math.isnan(self.others_cpu_s) else f"; the rest of the machine used {self.others_cpu_s:.1f} s CPU"
        verdict_ = "quiet" if self.quiet else f"**{BUSY_MARK}**"
        return (f"{self.label + ': ' if self.label else ''}{verdict_}: load average {self.load_before:.2f} at the "
                f"start, {self.load_after:.2f} at the end (quiet up to {self.allowed_load:.2f}); CPU {self.cpu_s:.1f} s "
                f"in {busy_wall:.1f} s wall{idle} = {100 * share:.0f}% of {self.busy_threads:g} thread(s) "
                f"(quiet from {100 * CPU_SHARE:.0f}%){others}")


class QuietMeter:
    """Measures a :class:`Quietness`: created at the start of the measurement, :meth:`stop` at its end.

    Args:
        label: what is measured.
        threads: threads the measurement keeps busy (see :class:`Quietness`).
        own_load: the most threads the whole benchmark runs at once (default ``threads``).
    """

    def __init__(self, label: str, threads: float, *, own_load: float | None = None) -> None:
        self.label, self.threads, self.own_load = label, threads, own_load
        self.idle_s = 0.0
        self.load_before = load_average()[0]
        self.machine0 = _machine_busy_seconds()
        self.cpu0 = cpu_seconds()
        self.t0 = time.perf_counter()

    def sleep(self, seconds: float) -> None:
        """Sleep on purpose (a settle pause): the time is left out of the CPU expectation."""
        time.sleep(seconds)
        self.idle_s += seconds

    def stop(self) -> Quietness:
        wall = time.perf_counter() - self.t0
        cpu = cpu_seconds() - self.cpu0
        others = _machine_busy_seconds() - self.machine0 - cpu  # NaN without /proc/stat
        others = others if math.isnan(others) else max(0.0, others)
        return Quietness(self.label, self.threads, self.load_before, load_average()[0], wall, cpu,
                         own_load=self.own_load, idle_s=self.idle_s, others_cpu_s=others)


def busy_reasons(checks: Iterable[Quietness]) -> list[str]:
    """Every reason, labelled with its measurement, why some of ``checks`` were not quiet."""
    return [f"{q.label}: {r}" if q.label else r for q in checks for r in q.check()]


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
    measured: Callable[[], ContextManager[QuietMeter | None]] = contextlib.nullcontext,
    log: Callable[[str], None] | None = None,
) -> dict[str, Measurement]:
    """Time every contender ``repeats`` times, interleaved, after ``warmup`` untimed calls each.

    Each contender's number of calls per repeat is calibrated once (to about ``target_s``), then
    repeat ``r`` runs all contenders in turn, in forward order on even ``r`` and reversed on odd
    ``r``, so drift in the machine's speed hits all of them alike. A contender that raises during
    warm-up is recorded with its error and left out of the timed repeats. The timed repeats run
    inside ``measured()`` (:meth:`Run.measure`: their quietness is what the figures stand on; warm-up
    and compilation, mostly one busy thread, are not part of it).

    Args:
        contenders: label -> zero-argument callable doing one unit of work (a step, a batch).
        repeats: timed repeats per contender (the medians are over these).
        warmup: untimed calls before timing (the first one's time is kept: compile time).
        target_s: approximate duration of one timed repeat.
        settle_s: pause before each timed repeat of each contender, so background work started by
            the previous one (DataLoader workers refilling their prefetch queue) is not charged to it.
        measured: a context manager around the timed repeats, yielding a :class:`QuietMeter` (whose
            ``sleep`` takes the settle pauses) or None.
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
            m.error = error_line(e)
            log(f"  {name}: failed in warm-up ({m.error})")
        out[name] = m
        log(f"  warm-up {name}: first call {m.first_call_s:.2f} s, {m.inner} call(s) per repeat")
    names = [n for n, m in out.items() if m.error is None]
    with measured() as meter:
        sleep = meter.sleep if meter is not None else time.sleep
        for r in range(repeats):
            order = names if r % 2 == 0 else names[::-1]
            for name in order:
                fn, m = contenders[name], out[name]
                if settle_s:
                    sleep(settle_s)
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


# ----------------------------------------------------------------------------- workloads


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, bf16: bool = False,
               fp16: bool = False, channels_last: bool = False, compile: bool = False, graph: bool = False):
    """A closure doing one SGD training step of ``model`` on ``(x, y)`` with the given options, as
    ``resnet_lab.train`` does it (``zero_grad(set_to_none=True)``, the loss in float32 under autocast,
    autocast on the batch's device, a GradScaler under fp16). On CUDA the closure only queues the
    work: the caller synchronizes around its timings.

    Args:
        model: the network, on ``x``'s device (moved to channels_last in place when asked).
        x, y: the batch.
        bf16: bfloat16 autocast for forward and loss (loss computed in float32, as the trainer).
        fp16: float16 autocast with a gradient scaler (CUDA GPUs without bfloat16; not with ``bf16``).
        channels_last: NHWC memory format for model and input.
        compile: ``torch.compile`` the model (compilation happens on the first call).
        graph: capture the whole step (forward, backward, SGD update) in one CUDA graph after three
            eager warm-up steps, and replay it: one launch per step instead of hundreds (CUDA only,
            not with ``fp16``, whose scaler decides on the CPU whether to step; not with ``compile``).

    Raises:
        RuntimeError: ``graph`` where it cannot apply.
    """
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    fwd = torch.compile(model) if compile else model
    dtype = amp_dtype(bf16, fp16)
    scaler = torch.amp.GradScaler(x.device.type, enabled=fp16)  # a pass-through unless fp16

    def step() -> None:
        with autocast(x.device, dtype):
            loss = F.cross_entropy(fwd(x).float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    if not graph:
        return step
    if x.device.type != "cuda":
        raise RuntimeError(f"a CUDA graph needs a CUDA device, not {x.device.type}")
    if fp16 or compile:
        raise RuntimeError("a whole-step CUDA graph is measured without fp16's GradScaler and without compile")
    replay: list[Callable[[], None]] = []

    def graphed() -> None:  # captured on the first call, the caller's warm-up, where a failure is reported
        if not replay:
            replay.append(_graphed(model, x, y, opt, dtype))
        replay[0]()

    return graphed


def _graphed(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
             dtype: torch.dtype | None) -> Callable[[], None]:
    """The training step captured whole in a CUDA graph (PyTorch's "whole network capture"): the
    gradients and the batch live at fixed addresses, and a replay redoes every kernel of the step."""

    def once() -> None:
        # autocast's weight cache would hold casts made outside the graph: off while capturing
        with torch.autocast("cuda", dtype=dtype or torch.bfloat16, enabled=dtype is not None, cache_enabled=False):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        opt.step()

    side = torch.cuda.Stream(x.device)
    side.wait_stream(torch.cuda.current_stream(x.device))
    with torch.cuda.stream(side):  # warm-up off the default stream, as the capture needs
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            once()
    torch.cuda.current_stream(x.device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)  # the captured backward allocates the gradients from the graph's pool
    with torch.cuda.graph(graph):
        once()
    return graph.replay


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


QUICK_MARK = "INVALID: --quick smoke run"


@dataclass
class Section:
    """One benchmark's contribution to docs/BENCHMARKS.md.

    Attributes:
        title: the ``##`` heading.
        body: Markdown (tables and notes), without the heading.
        summary: one-line headline figures for the summary table: ``(what, figure, target, verdict)``.
        checks: the :class:`Quietness` of every measurement behind the figures.
        quick: a ``--quick`` run (tiny sizes: the figures measure nothing).
    """

    title: str
    body: str
    summary: list[tuple[str, str, str, str]] = field(default_factory=list)
    checks: list[Quietness] = field(default_factory=list)
    quick: bool = False

    def markdown(self) -> str:
        marks = ""
        if self.quick:
            marks += f"> **{QUICK_MARK}**: tiny sizes; these figures only show that the script runs.\n"
        reasons = busy_reasons(self.checks)
        if reasons:
            marks += (f"> **{BUSY_MARK}**: other processes ran while these figures were taken; do not quote them.\n"
                      + "".join(f"> - {r}\n" for r in reasons))
        return f"## {self.title}\n\n" + (marks + "\n" if marks else "") + f"{self.body.rstrip()}\n"


def verdict(value: float, target: float, higher_is_better: bool = True) -> str:
    """``met`` / ``missed`` for a figure against its target."""
    if value != value:
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "**missed**"


@dataclass
class Run:
    """One in-process benchmark's run: its sizes (``FULL`` or ``QUICK``), repeat count, start time,
    and the quietness of each timed part. :meth:`start` opens it at the top of a ``build``,
    :meth:`interleave` / :meth:`measure` time its parts, and :meth:`section` closes it, so every
    benchmark records the same facts with its tables.

    Attributes:
        args: the parsed flags (``quick``, ``repeats``, ``threads``).
        cfg: the sizes in use.
        repeats: timed repeats (``--repeats`` or the sizes' default).
        started: :func:`now_utc` at the start.
        label: names the benchmark in the quietness lines.
        threads: threads its timed parts keep busy.
        own_load: the most threads it ever runs at once (None: ``threads``).
        checks: the :class:`Quietness` of each timed part so far.
    """

    args: argparse.Namespace
    cfg: dict
    repeats: int
    started: str
    label: str
    threads: float
    own_load: float | None = None
    checks: list[Quietness] = field(default_factory=list)

    @classmethod
    def start(cls, args: argparse.Namespace, full: dict, quick: dict, label: str, *, threads: float | None = None,
              own_load: float | None = None) -> Run:
        """Pick the sizes.

        Args:
            args: the parsed flags.
            full, quick: the sizes of a real run and of a ``--quick`` one (each with ``repeats``).
            label: names the benchmark in the quietness lines.
            threads: threads its timed parts keep busy (default ``--threads``).
            own_load: the most threads it ever runs at once (default ``threads``).
        """
        cfg = dict(quick if args.quick else full)
        return cls(args, cfg, args.repeats or cfg["repeats"], now_utc(), label,
                   args.threads if threads is None else threads, own_load)

    @contextlib.contextmanager
    def measure(self, what: str) -> Iterator[QuietMeter]:
        """Measure the quietness of the enclosed timed part (its record joins :attr:`checks`)."""
        meter = QuietMeter(f"{self.label}, {what}", self.threads, own_load=self.own_load)
        yield meter
        self.checks.append(meter.stop())

    def interleave(self, what: str, contenders: dict[str, Callable[[], object]], **kw) -> dict[str, Measurement]:
        """:func:`interleave` with its timed repeats measured as ``what``."""
        return interleave(contenders, repeats=self.repeats, measured=lambda: self.measure(what), **kw)

    def section(self, title: str, command: str, body: str, summary: Sequence[tuple[str, str, str, str]] = ()) -> Section:
        """The section: machine block with the quietness of every timed part, then ``body``."""
        head = machine_block(command, self.started, self.checks)
        return Section(title, head + "\n" + body, list(summary), checks=list(self.checks), quick=self.args.quick)


# ----------------------------------------------------------------------------- writing the docs


def _block_re(key: str) -> re.Pattern:
    return re.compile(rf"<!-- bench:{re.escape(key)} -->\n.*?<!-- /bench:{re.escape(key)} -->\n?", re.S)


def unmarked_text(path: str) -> str:
    """The text of the document ``path`` outside its ``<!-- bench:KEY -->`` blocks, stripped ('' when
    it is missing): what a ``head`` write of :func:`update_doc` would replace."""
    old = Path(path).read_text(encoding="utf-8") if os.path.isfile(path) else ""
    return re.sub(r"<!-- bench:([\w-]+) -->\n.*?<!-- /bench:\1 -->\n?", "", old, flags=re.S).strip()


def check_doc(path: str, flag: str) -> str:
    """Refuse, before anything is measured, a document that :func:`update_doc` could not write:
    an empty name (it would write ``.tmp`` in the working folder, then fail), a folder, a place
    where no file can be written (a read-only or virtual folder, a parent that is a file), or an
    existing file that cannot be read as UTF-8 text (its blocks could not be found to keep).

    Args:
        path: the document a script is to update.
        flag: the option that named it (for the message).

    Returns:
        ``path``.
    """
    default = os.path.relpath(BENCHMARKS_MD)
    name, given = flag.split()[0], not flag.endswith("(default)")  # run_all labels its default "--out (default)"
    leave = f", or leave {name} out" if given else ""
    if not path.strip():
        fail(f"{flag} {path!r} names no file: give a Markdown file (e.g. {default}){leave}")
    if os.path.isdir(path):
        fail(f"{flag} {path} is a folder: give {name} a Markdown file, e.g. {os.path.join(path, 'BENCHMARKS.md')}")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # the document records its command line, which would then not encode
        fail(f"{flag} {path!r} is not a UTF-8 name: give {name} a name in UTF-8")
    problem = unwritable(os.path.dirname(os.path.abspath(path)))
    if problem:
        fail(f"{flag} {path} cannot be written: {problem}; give {name} a file in a folder you can write{leave}")
    if os.path.isfile(path):
        try:
            Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            fail(f"{flag} {path} is not UTF-8 text (byte {e.start}: {e.reason}), so its blocks cannot be kept: give "
                 f"{name} a Markdown file, or a new name")
        except OSError as e:
            fail(f"{flag} {path} cannot be read ({e.strerror or e}): give {name} a Markdown file you can read, or a "
                 "new name")
    return path


def check_folder(path: str, flag: str) -> str:
    """Refuse, before anything runs, a folder a script could not create or write files in: an empty
    name (the working folder, unasked), an existing file, a read-only or virtual place.

    Args:
        path: the folder a script is to write into.
        flag: the option that named it (for the message).

    Returns:
        ``path``.
    """
    if not path.strip():
        fail(f"{flag} {path!r} names no folder: give one (it is created when missing), or leave {flag} out")
    if os.path.exists(path) and not os.path.isdir(path):
        fail(f"{flag} {path} is a file, not a folder: give a folder (it is created when missing)")
    problem = unwritable(os.path.abspath(path))
    if problem:
        fail(f"{flag} {path} cannot be written: {problem}; give a folder you can write")
    return path


def unwritable(folder: str) -> str | None:
    """Why no file can be written in ``folder`` (created when missing), or None when one can: a probe
    file is created and removed in its nearest existing ancestor (``os.access`` says yes to root even
    where writing fails, as in /proc)."""
    existing = folder
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return f"{existing} is a file, not a folder"
    try:
        fd, probe = tempfile.mkstemp(dir=existing, prefix=".write-probe-")
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        return f"no file can be created in {existing} ({e.strerror or e})"
    return None


def update_doc(path: str, key: str, text: str, *, head: bool = False) -> None:
    """Write ``text`` as the block ``key`` of the Markdown file ``path`` (atomically).

    Each script owns one block between ``<!-- bench:KEY -->`` and ``<!-- /bench:KEY -->``, so
    benchmarks run at different times each replace only their own figures.

    Args:
        path: the document (created when missing).
        key: the block's name.
        text: its new content.
        head: the block opens the document and owns everything outside other blocks (``run_all``:
            the title, the summary, the older unmarked text it generated); other blocks follow it.
            Otherwise the block replaces its earlier version in place, or is appended.
    """
    if not str(path).strip():  # "" would write ".tmp" in the working folder, then fail (check_doc says so first)
        raise ValueError("update_doc needs a document path, got an empty one")
    old = Path(path).read_text(encoding="utf-8") if os.path.exists(path) else ""
    block = f"<!-- bench:{key} -->\n{text.rstrip()}\n<!-- /bench:{key} -->\n"
    if head:
        others = [m.group(0) for m in re.finditer(r"<!-- bench:([\w-]+) -->\n.*?<!-- /bench:\1 -->\n?", old, re.S)
                  if m.group(1) != key]
        new = "\n".join([block] + [o if o.endswith("\n") else o + "\n" for o in others])
    elif _block_re(key).search(old):
        new = _block_re(key).sub(lambda _: block, old, count=1)
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(new)
        os.replace(tmp, path)
    except BaseException:  # a failed write leaves no half-written .tmp beside the document
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_doc(path: str, key: str, text: str, *, head: bool = False, shown: bool = False) -> bool:
    """:func:`update_doc`, and when the write fails at the end of a measurement (the folder went away,
    a full disk, the document is no longer UTF-8 text), one ``error:`` line instead of a traceback, with the text printed (unless ``shown``:
    already printed) so the figures are not lost. Returns whether the document was written.

    Args:
        path, key, text, head: as :func:`update_doc`.
        shown: ``text`` is already on stdout.
    """
    try:
        update_doc(path, key, text, head=head)
        return True
    except (OSError, ValueError) as e:  # ValueError: UnicodeDecodeError of a document that is no text
        if not shown:  # text a write could not encode is printed escaped, never lost to a second error
            print(text.encode("utf-8", "backslashreplace").decode("utf-8"), flush=True)
        why = ("the figures hold text that UTF-8 cannot encode" if isinstance(e, UnicodeEncodeError) else
               "not UTF-8 text" if isinstance(e, UnicodeError) else getattr(e, "strerror", None) or e)
        print(f"error: could not write {path} ({why}); the figures are printed above: keep them from "
              "there, or rerun with a document you can write", file=sys.stderr, flush=True)
        return False


def may_write(checks: Iterable[Quietness], *, allow_busy: bool, target: str | None,
              unwritten: str = "nothing is written") -> bool:
    """Whether figures measured under ``checks`` may be written; says why not on stderr.

    Args:
        checks: the quietness of every measurement behind the figures.
        allow_busy: ``--allow-busy``: write busy figures anyway (they carry :data:`BUSY_MARK`).
        target: the document to be written, or None when the figures are only printed.
        unwritten: with no ``target``, the caller's words for why nothing is written (``--allow-busy``
            says them), e.g. "this script writes no document: run_all.py does".
    """
    reasons = busy_reasons(checks)
    if not reasons:
        return True
    say = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    say(f"{BUSY_MARK}: other processes ran while these figures were taken:")
    for r in reasons:
        say(f"  - {r}")
    if allow_busy:
        say(f"--allow-busy: writing {target} anyway, marked '{BUSY_MARK}'" if target else
            f"--allow-busy: exit status 0 anyway; the figures above are marked '{BUSY_MARK}' ({unwritten})")
        return True
    what = f"refusing to update {target}" if target else "the figures above are not to be quoted"
    way = (f"--allow-busy to write them marked '{BUSY_MARK}'" if target else
           "--allow-busy to exit with status 0 anyway")
    say(f"{what}; rerun with nothing else on the machine (--wait-for-load 0.5 waits for it), or pass {way}")
    return False


def publish(section: Section, args: argparse.Namespace, *, doc: str | None = None, key: str = "") -> int:
    """Print ``section``; write it as block ``key`` of ``doc`` when its figures are valid. Returns the
    exit status: 0, or 1 when the machine was busy and ``--allow-busy`` was not given.

    A ``--quick`` run never writes the docs (its figures measure nothing) and never fails for a
    busy machine: it only checks that the script runs.

    Args:
        section: the benchmark's output.
        args: parsed flags with ``quick`` and ``allow_busy``.
        doc: the document to update (None: print only).
        key: the block of ``doc`` this script owns.
    """
    print(section.markdown(), flush=True)
    if args.quick:
        print(f"--quick: {'not written to ' + doc if doc else 'figures only show that the script runs'}",
              file=sys.stderr, flush=True)
        return 0
    if not may_write(section.checks, allow_busy=args.allow_busy, target=doc,
                     unwritten="this script writes no document: run_all.py does"):  # run_standalone's scripts
        return 1
    if doc is not None:
        if not write_doc(doc, key, section.markdown(), shown=True):
            return 1
        print(f"wrote the '{key}' block of {doc}", file=sys.stderr, flush=True)
    return 0


def run_standalone(build: Callable[[argparse.Namespace, str], Section], description: str,
                   argv: Sequence[str] | None = None, *, compile_flag: bool = False,
                   repeats: tuple[object, object] = (5, 2)) -> int:
    """``main`` of a benchmark script run on its own: parse flags, run, print the section (the docs
    are written by ``run_all.py``). Returns the exit status (see :func:`publish`).

    Args:
        build: ``build(args, command) -> Section``.
        description: the script's ``--help`` text.
        argv: command-line arguments (default ``sys.argv[1:]``).
        compile_flag: the script measures ``torch.compile`` contenders (:func:`want_compile`): offer
            ``--compile``.
        repeats: the script's default ``--repeats`` of a run and of a ``--quick`` one (its sizes' ``repeats``).
    """
    parser = add_common_args(argparse.ArgumentParser(description=description), compile_flag=compile_flag,
                             repeats=repeats)
    args = parser.parse_args(argv)
    setup_threads(args.threads)
    wait_for_quiet(args)
    return publish(build(args, command_line()), args)
