"""Threads on a shared 2-core machine: a ResNet-20 training step (torch's BN, batch 128 x 1x28x28, SGD)
with 1 and 2 torch threads and ``OMP_WAIT_POLICY`` ACTIVE and PASSIVE (or libgomp's ``GOMP_SPINCOUNT``:
``--policies spin=N``), on an idle machine and contended by one busy process that this benchmark starts
itself (issue 14, item 2).

Why: with torch's default 2 OpenMP threads and one other busy process on 2 cores, each parallel
region waits for the thread that lost its core, and threads that spin while they wait burn the
time the other process needed; ``OMP_WAIT_POLICY=PASSIVE`` makes waiting threads sleep instead.
Between the two, libgomp (the OpenMP runtime of torch's Linux wheels) reads ``GOMP_SPINCOUNT``: how
many times a waiting thread polls before it sleeps (300,000, about 3 ms, when the policy is unset;
0 with PASSIVE). ``spin=N`` sets it to N with the policy unset: a short spin may keep most of the
idle speed of spinning and most of the contended speed of sleeping.
The table says which setting is never much slower idle and far faster contended: the candidate for
the CLI's default.

How: every configuration runs in a fresh Python process (this script again, in a child mode only
it can start), because OpenMP reads ``OMP_NUM_THREADS`` and ``OMP_WAIT_POLICY`` once, when torch
loads. A contended configuration starts one competitor (a 1-thread process multiplying matrices
without pause) and waits until it spins before timing. Each child times ``--steps`` steps after 2 untimed ones (1 with ``--quick``);
the configurations run in turn, the order reversed every other repeat, so drift hits all alike.

Quietness: each child measures its own timed steps (``_common.Quietness``). Its busy threads are
its torch threads plus the competitor it started (a child process, whose CPU time counts with its
own: a contended figure counts only when the pair together kept the cores busy); the load it may cause
itself is the most the benchmark ever runs at once, 2 threads + 1 competitor. A configuration
measured while anything else ran is marked INVALID and docs/BENCHMARKS.md is not written.

    .venv/bin/python benchmarks/bench_threads.py            # the measurement (about 10-15 minutes)
    .venv/bin/python benchmarks/bench_threads.py --quick    # smoke run: tiny sizes, figures meaningless
    .venv/bin/python benchmarks/bench_threads.py --host avx2  # another machine: a block beside the first
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
from _common import (
    BENCHMARKS_MD, QuietMeter, Quietness, Section, add_host_arg, add_quiet_args, check_doc, check_host, command_line,
    describe_machine, fail, host_key, host_title, machine_block, markdown_table, now_utc, publish, train_step, wait_for_quiet,
)
from _common import MAX_REPEATS, MAX_STEPS, at_most

from resnet_lab import create_model

__all__ = ["Config", "configs", "main", "results_table", "summarize"]

FULL = {"batch": 128, "warmup": 2, "steps": 8, "repeats": 2, "spin_size": 512}
QUICK = {"batch": 8, "warmup": 1, "steps": 2, "repeats": 1, "spin_size": 64}
POLICIES = ("ACTIVE", "PASSIVE")
UNSET = "unset"  # a policy choice: leave OMP_WAIT_POLICY out of the environment (the OpenMP runtime's default)
SPIN = "spin="  # a policy choice spin=N: OMP_WAIT_POLICY unset, GOMP_SPINCOUNT=N (libgomp's polls before sleeping)
RESULT = "RESULT "  # prefix of the child's one output line for the parent
CHILD_TIMEOUT_S = 30 * 60  # a contended 2-thread ACTIVE step can take 10x longer than an idle one
SPIN_LIMIT_S = 60 * 60  # the competitor exits on its own after this long, should nobody stop it
# Set in the environment of the processes this script starts: only they take the child flags, which a
# user's command line must not reach (--threads did nothing in the parent, --spin started an hour's spinner).
CHILD_ENV = "RESNET_LAB_BENCH_THREADS_CHILD"


@dataclass(frozen=True)
class Config:
    """One configuration: torch threads, OMP_WAIT_POLICY (or :data:`UNSET`, or ``spin=N``: unset with
    ``GOMP_SPINCOUNT=N``), contended or idle."""

    threads: int
    policy: str
    contended: bool

    @property
    def label(self) -> str:
        return f"{'contended' if self.contended else 'idle'}, {self.threads} thread(s), {self.policy}"

    @property
    def setting(self) -> str:
        """The waiting setting as the table shows it."""
        return f"GOMP_SPINCOUNT={self.policy[len(SPIN):]}" if self.policy.startswith(SPIN) else self.policy

    def env(self) -> dict[str, str]:
        """The child's environment: set before its torch loads, as OpenMP requires. A spin count of the
        caller's own environment is left out (it would override every policy's)."""
        env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
        env["OMP_NUM_THREADS"] = str(self.threads)
        env[CHILD_ENV] = "1"
        if self.policy.startswith(SPIN):
            env["GOMP_SPINCOUNT"] = self.policy[len(SPIN):]
        elif self.policy != UNSET:
            env["OMP_WAIT_POLICY"] = self.policy
        return env


def configs(policies: tuple[str, ...] = POLICIES, threads: tuple[int, ...] = (1, 2)) -> list[Config]:
    """Every configuration, idle ones first; the first is the baseline (1 thread, idle)."""
    return [Config(t, p, c) for c in (False, True) for t in threads for p in policies]


# ----------------------------------------------------------------------------- the child processes


def spin(size: int) -> int:
    """The competitor: one thread multiplying ``size`` x ``size`` matrices until it is stopped, its
    parent is gone, or :data:`SPIN_LIMIT_S` has passed."""
    torch.set_num_threads(1)
    a, b = torch.randn(size, size), torch.randn(size, size)
    parent, deadline = os.getppid(), time.monotonic() + SPIN_LIMIT_S
    print("spinning", flush=True)
    while os.getppid() == parent and time.monotonic() < deadline:  # never outlive the benchmark
        torch.mm(a, b)
    return 0


def _start_competitor(size: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", CHILD_ENV: "1"}
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--spin", "--spin-size", str(size)],
                            env=env, stdout=subprocess.PIPE, text=True)
    if proc.stdout.readline().strip() != "spinning":
        proc.kill()
        raise RuntimeError("the competitor process did not start spinning")
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def child(config: Config, size: dict, own_load: float) -> dict:
    """Time the training steps of one configuration in this process (started with its environment).

    Args:
        config: the configuration (its threads and policy are already in the environment).
        size: ``batch``, ``warmup``, ``steps``, ``spin_size``.
        own_load: the most threads the whole benchmark runs at once.

    Returns:
        ``{"seconds": [per-step seconds], "quiet": Quietness fields}``.
    """
    torch.set_num_threads(config.threads)
    torch.manual_seed(0)
    x, y = torch.randn(size["batch"], 1, 28, 28), torch.randint(0, 10, (size["batch"],))
    step = train_step(create_model("resnet20", num_classes=10, in_channels=1, norm="batch"), x, y)
    competitor = _start_competitor(size["spin_size"]) if config.contended else None
    try:
        for _ in range(size["warmup"]):
            step()
        # the competitor is a live child: its CPU time counts with ours (cpu_seconds reads it from /proc)
        meter = QuietMeter(config.label, config.threads + config.contended, own_load=own_load)
        seconds = []
        for _ in range(size["steps"]):
            t0 = time.perf_counter()
            step()
            seconds.append(time.perf_counter() - t0)
        quiet = meter.stop()  # the window ends with the last step, before the competitor stops
    finally:
        if competitor is not None:
            _stop(competitor)
    return {"seconds": seconds, "quiet": dataclasses.asdict(quiet)}


def _run_child(config: Config, args: argparse.Namespace, own_load: float) -> tuple[list[float], Quietness]:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", "--threads", str(config.threads),
           "--policy", config.policy, "--own-load", str(own_load)] + (["--contended"] if config.contended else []) + (
        ["--quick"] if args.quick else []) + (["--steps", str(args.steps)] if args.steps else [])
    proc = subprocess.run(cmd, env=config.env(), capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"configuration '{config.label}' failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    out = json.loads(lines[-1][len(RESULT):])
    return out["seconds"], Quietness(**out["quiet"])


# ----------------------------------------------------------------------------- the table


def summarize(seconds: dict[Config, list[list[float]]]) -> dict[Config, tuple[float, float, float]]:
    """Per configuration: ``(median step time, fastest step, slowest step)``, the median being the
    median over repeats of each repeat's median step (a repeat is one child process).

    Args:
        seconds: per configuration, the per-step seconds of each repeat.
    """
    return {c: (statistics.median(statistics.median(r) for r in reps), min(min(r) for r in reps),
                max(max(r) for r in reps)) for c, reps in seconds.items()}


def results_table(stats: dict[Config, tuple[float, float, float]], quiet: dict[Config, list[Quietness]]) -> str:
    """The Markdown table: median step time per configuration, and its time relative to the first
    configuration (1 thread, idle).

    Args:
        stats: from :func:`summarize`, in table order (the first is the baseline).
        quiet: each configuration's quietness records.
    """
    first = next(iter(stats))
    base = stats[first][0]
    rows = []
    for c, (med, lo, hi) in stats.items():
        ok = all(q.quiet for q in quiet.get(c, []))
        rows.append([c.label.split(",")[0], c.threads, c.setting, f"{med:.3f}", f"{lo:.3f}-{hi:.3f}",
                     "1.00x (baseline)" if c == first else f"**{med / base:.2f}x**", "yes" if ok else "**INVALID**"])
    return markdown_table(["machine", "torch threads", "OMP_WAIT_POLICY (or spin count)", "s per step (median)", "fastest-slowest",
                           "time vs 1 thread idle", "quiet"], rows)


def _measure(args: argparse.Namespace, todo: list[Config], own_load: float, size: dict):
    seconds: dict[Config, list[list[float]]] = {c: [] for c in todo}
    quiet: dict[Config, list[Quietness]] = {c: [] for c in todo}
    for r in range(size["repeats"]):
        for c in (todo if r % 2 == 0 else todo[::-1]):
            s, q = _run_child(c, args, own_load)
            seconds[c].append(s)
            quiet[c].append(q)
            print(f"  repeat {r + 1}/{size['repeats']}: {c.label}: median step {statistics.median(s):.3f} s "
                  f"({'quiet' if q.quiet else 'BUSY'})", file=sys.stderr, flush=True)
    return seconds, quiet


def build(args: argparse.Namespace, command: str) -> Section:
    """Run every configuration and return the Markdown section.

    Args:
        args: parsed flags (``quick``, ``repeats``, ``steps``, ``policies``, ``host``).
        command: the command line recorded with the table.
    """
    size = dict(QUICK if args.quick else FULL)
    size["repeats"] = args.repeats or size["repeats"]
    todo = configs(tuple(args.policies))
    own_load = max(c.threads for c in todo) + 1  # the most threads at once: a config's threads + the competitor
    started = now_utc()
    seconds, quiet = _measure(args, todo, own_load, size)
    stats = summarize(seconds)
    checks = [q for qs in quiet.values() for q in qs]
    machine = {**describe_machine(), "threads": "1 or 2 (per configuration)"}
    steps = args.steps or size["steps"]
    body = (
        f"### resnet20 training step (norm='batch', SGD), batch {size['batch']} x 1x28x28; each configuration in a "
        f"fresh process, {size['warmup']} untimed + {steps} timed steps, {size['repeats']} repeat(s)\n\n"
        + results_table(stats, quiet)
        + "\n'contended': the benchmark runs one competitor process beside the configuration, a single thread "
        f"multiplying {size['spin_size']}x{size['spin_size']} float32 matrices without pause (the other user of a "
        "shared 2-core machine). 'time vs 1 thread idle' is the median step time over that of the first row; "
        "'fastest-slowest' spans every timed step of every repeat. OMP_WAIT_POLICY=ACTIVE keeps waiting OpenMP "
        "threads spinning on their core, PASSIVE puts them to sleep; GOMP_SPINCOUNT=N (policy unset) lets them poll "
        "N times, then sleep (libgomp's default with the policy unset: 300,000). Both must be set before torch loads, "
        "hence a process per configuration.\n"
    )
    title = host_title("7. Threads and OMP_WAIT_POLICY, idle and contended", args.host)
    return Section(title, machine_block(command, started, checks, machine) + "\n" + body, checks=checks,
                   quick=args.quick)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    check_host(args.host, "a block of the --doc")
    twice = sorted({p for p in args.policies if args.policies.count(p) > 1})
    if twice:  # each would run twice per repeat, and the table would still say one repeat
        fail(f"--policies names {', '.join(twice)} more than once: give each policy once (--repeats N runs "
             "every configuration N times)")
    return args


def _policy(text: str) -> str:
    """A --policies value: ACTIVE, PASSIVE, unset or spin=N with N a whole number >= 0."""
    count = text[len(SPIN):] if text.startswith(SPIN) else None
    if text in (*POLICIES, UNSET) or (count is not None and count.isdigit()):
        return text
    raise argparse.ArgumentTypeError(f"{text!r} is not a policy: give ACTIVE, PASSIVE, {UNSET} or {SPIN}N with N a "
                                     f"whole number (e.g. {SPIN}10000)")


def build_parser(child: bool | None = None) -> argparse.ArgumentParser:
    """The flags; in a process this script started itself, its hidden ones too.

    Args:
        child: parse a child's command line (default: whether :data:`CHILD_ENV` is set to 1).
    """
    child = os.environ.get(CHILD_ENV) == "1" if child is None else child
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="batch 8, 1+2 steps, 1 repeat: checks the script runs")
    p.add_argument("--repeats", type=at_most(MAX_REPEATS), default=None,
                   help=f"processes per configuration (default {FULL['repeats']}, --quick {QUICK['repeats']})")
    p.add_argument("--steps", type=at_most(MAX_STEPS), default=None,
                   help=f"timed steps per process (default {FULL['steps']}, --quick {QUICK['steps']})")
    p.add_argument("--policies", nargs="+", default=list(POLICIES), type=_policy, metavar="POLICY",
                   help=f"OMP_WAIT_POLICY values to compare: ACTIVE, PASSIVE, '{UNSET}' (the runtime's default) or "
                        f"'{SPIN}N' (unset, with GOMP_SPINCOUNT=N) (default: ACTIVE PASSIVE)")
    p.add_argument("--doc", default=BENCHMARKS_MD, help="the document whose 'threads' block is written (when quiet)")
    add_host_arg(p, "threads", "the table")
    add_quiet_args(p)
    if not child:
        return p
    # the processes this script starts itself
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    p.add_argument("--policy", default=UNSET, help=argparse.SUPPRESS)
    p.add_argument("--contended", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--own-load", type=float, default=3.0, help=argparse.SUPPRESS)
    p.add_argument("--spin", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--spin-size", type=int, default=FULL["spin_size"], help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, with the hidden flags, one of its child processes); the exit status.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    if getattr(args, "spin", False):
        return spin(args.spin_size)
    if getattr(args, "child", False):
        size = dict(QUICK if args.quick else FULL)
        size["steps"] = args.steps or size["steps"]
        out = child(Config(args.threads, args.policy, args.contended), size, args.own_load)
        print(RESULT + json.dumps(out), flush=True)
        return 0
    if not args.quick:  # --quick writes nothing: a smoke run from a read-only checkout is fine
        check_doc(args.doc, "--doc")  # before the measurement, not after it
    wait_for_quiet(args)
    return publish(build(args, command_line()), args, doc=args.doc, key=host_key("threads", args.host))


if __name__ == "__main__":
    sys.exit(main())
