"""Start-up time: what a `resnet-lab` command costs before it does any work.

Each contender runs in a fresh Python process (imports cannot be timed twice in one), the contenders
alternating repeat by repeat; the table gives the median wall time of each, and what importing
torchvision first would add (until 2026-12-03 every command imported it, which pulls in
``torch._dynamo``; now only image folders, downloads and torchvision weights do).

Run alone: ``.venv/bin/python benchmarks/bench_startup.py [--quick] [--repeats N]``; a quiet run
writes the ``startup`` block of docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from _common import (BENCHMARKS_MD, QuietMeter, Section, add_quiet_args, check_doc, command_line, describe_machine,
                     gemm_speed, machine_block, markdown_table, now_utc, publish, wait_for_quiet)
from _common import MAX_REPEATS, at_most, first_paragraph

__all__ = ["CONTENDERS", "build", "main", "measure"]

# the contenders' labels, and the Python code each runs in a fresh interpreter (`python -c CODE`)
BASE = "import resnet_lab.cli (every command pays this)"
OLD = "import torchvision, then resnet_lab.cli (the import until 2026-12-03)"
DYNAMO = "import resnet_lab.cli and torch._dynamo (training: torch's optimizers import it)"
CONTENDERS: dict[str, str] = {
    "python, import torch": "import torch",
    BASE: "import resnet_lab.cli",
    OLD: "import torchvision, resnet_lab.cli",
    DYNAMO: "import resnet_lab.cli, torch._dynamo",
    "resnet-lab --help (whole command)": "import sys; from resnet_lab.cli import main; sys.argv[1:] = ['--help']; main()",
}


def run_once(code: str) -> float:
    """Wall seconds of ``python -c code`` in a fresh process, from start to exit."""
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:  # argparse's --help exits 0 as well
        raise RuntimeError(f"`python -c {code!r}` failed with exit code {done.returncode}: {done.stderr[-500:]}")
    return seconds


def measure(repeats: int, contenders: dict[str, str] = CONTENDERS) -> tuple[dict[str, list[float]], list]:
    """Seconds of every contender per repeat (the order reversed every other repeat, one process at a
    time), and the quietness of each repeat."""
    seconds: dict[str, list[float]] = {k: [] for k in contenders}
    checks = []
    for r in range(repeats):
        meter = QuietMeter(f"start-up repeat {r + 1}", 1)
        for label in (list(contenders) if r % 2 == 0 else list(contenders)[::-1]):
            seconds[label].append(run_once(contenders[label]))
        checks.append(meter.stop())
        print(f"  repeat {r + 1}/{repeats}: " + ", ".join(f"{k.split(' (')[0]} {v[-1]:.2f} s" for k, v in seconds.items()),
              file=sys.stderr, flush=True)
    return seconds, checks


def table(seconds: dict[str, list[float]], med: dict[str, float]) -> str:
    """Median (``med``) and min-max seconds per contender, and each against the CLI's import."""
    rows = [[label, f"{med[label]:.2f}", f"{min(v):.2f}-{max(v):.2f}", f"{med[label] / med[BASE]:.2f}x"]
            for label, v in seconds.items()]
    return markdown_table(["contender", "seconds (median)", "min-max", "vs import resnet_lab.cli"], rows)


def build(args: argparse.Namespace, command: str) -> Section:
    """Measure and return the Markdown section.

    Args:
        args: parsed flags (``quick``, ``repeats``).
        command: the command line recorded with the table.
    """
    repeats = args.repeats or (1 if args.quick else 7)
    started = now_utc()
    seconds, checks = measure(repeats)
    med = {k: statistics.median(v) for k, v in seconds.items()}
    body = (
        f"### Fresh processes, {repeats} repeat(s), contenders alternating\n\n" + table(seconds, med)
        + f"\nImporting torchvision first would add {med[OLD] - med[BASE]:.2f} s (median against median) to every "
        "command; it is imported only where it is used: image-folder transforms, downloads and torchvision "
        f"weights. Training still pays {med[DYNAMO] - med[BASE]:.2f} s for `torch._dynamo`, which torch's "
        "optimizers import on their first step (most of what torchvision's import cost); the other commands "
        "do not.\n"
    )
    # process start-up is single-threaded: the machine line's threads and its GEMM probe say 1 alike
    machine = {**describe_machine(), "threads": "1", "speed": gemm_speed(1)}
    return Section("10. Start-up time", machine_block(command, started, checks, machine) + "\n" + body,
                   checks=checks, quick=args.quick)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit status (1: busy machine, nothing written).

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
    """
    p = argparse.ArgumentParser(description=first_paragraph(__doc__))
    p.add_argument("--quick", action="store_true", help="one repeat: checks the script runs (writes nothing)")
    p.add_argument("--repeats", type=at_most(MAX_REPEATS), default=None, help="processes per contender (default 7, --quick 1)")
    p.add_argument("--doc", default=BENCHMARKS_MD, help="the document whose 'startup' block is written (when quiet)")
    add_quiet_args(p)
    args = p.parse_args(argv)
    if not args.quick:  # --quick writes nothing: a smoke run from a read-only checkout is fine
        check_doc(args.doc, "--doc")  # before the measurement, not after it
    wait_for_quiet(args)
    return publish(build(args, command_line()), args, doc=args.doc, key="startup")


if __name__ == "__main__":
    sys.exit(main())
