"""Ablate the fast-training options one at a time on a fixed budget, several seeds each.

Every variant is the base recipe (the first `make demo` command, `demo_b128`, at a shorter, fixed number of epochs) plus
or minus one option; each runs with ``--seeds`` seeds through the CLI, as a user would type it.
The table gives the final test accuracy (mean ± sd over seeds), the change against the base with
the same seed (paired: the runs of one seed share the initial weights and the data order), the
median training seconds of an epoch after the first (steady state) and of the first epoch, which
also pays any one-off cost (``--compile`` compiles the model during it).

Accuracy is a function of the seed alone: with one OpenMP thread per run, a CPU run computes the
same numbers whatever else the machine does, so ``--jobs 2`` (two single-thread runs side by side on
a 2-core machine) changes the times, not the accuracies. The seconds column is then relative only
(both runs shared the memory bus) and says so; a quiet ``--jobs 1`` run gives absolute times. The
whole ablation is metered like every benchmark (load before and after, the CPU time the runs got):
when other processes ran, the block still gives the accuracies but says the seconds are no figure.

A variant *helps* when its mean paired change exceeds the paired changes' sd (and *hurts* when it
falls below minus that sd); otherwise its effect is inside the seed-to-seed spread at this budget.

    python benchmarks/ablate_recipe.py --list
    python benchmarks/ablate_recipe.py --epochs 2 --seeds 3 --jobs 2 --write
    python benchmarks/ablate_recipe.py --dry-run          # fake data, tiny images: checks the script

A dry run trains every variant, as the real recipe does (bf16 and channels_last included), on 320
generated 24-px images for 2 epochs, in a temporary folder unless ``--out`` names one (never one that
holds a real ablation's runs). A variant that cannot run at the epochs given (``progressive`` needs
2) is refused before anything trains, or, in a dry run, left out with a note. ``--write`` puts the table into docs/RESULTS.md as the block of its epoch budget
and variant set: a later run of the same command replaces it, another set stands beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from _common import (BUSY_MARK, MAX_EPOCHS, MAX_SEEDS, QuietMeter, add_quiet_args, at_most, check_doc, check_folder,
                     fail, machine_line, now_utc, setup_threads, thread_count, wait_for_quiet, write_doc)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "RESULTS.md"
CLI = [sys.executable, "-m", "resnet_lab"]
MAX_JOBS = 64  # --jobs: runs side by side

# The first `make demo` recipe (`demo_b128` in fashion_mnist.py) without its epoch count (the budget is --epochs); bf16 + channels_last make
# a step about 2x cheaper on a CPU with AVX512-BF16, so the ablation fits in a session.
BASE = ("--model resnet8_fast --dataset fashion-mnist --batch-size 128 --lr 0.1 --no-augment --label-smoothing 0.1 "
        "--bf16 --channels-last")
# The smoke test's stand-in: the base recipe on a few generated images (the script, not the figures),
# with what every variant needs: the flags the fp32 variants drop, 5 steps an epoch (lookahead's 5),
# images larger than progressive resizing's 20 px start, and DRY_EPOCHS (progressive's 2).
DRY_BASE = ("--model resnet8_fast --dataset fake --subset 320 --image-size 24 --batch-size 64 --lr 0.1 "
            "--no-augment --label-smoothing 0.1 --bf16 --channels-last")
DRY_EPOCHS = 2


@dataclass(frozen=True)
class Variant:
    """One option against the base: ``add`` appends flags, ``drop`` removes base flags first."""

    what: str
    add: str = ""
    drop: tuple[str, ...] = ()
    min_epochs: int = 1

    def args(self, base: str) -> list[str]:
        words = shlex.split(base)
        for flag in self.drop:
            if flag not in words:
                raise ValueError(f"variant drops {flag}, which the base recipe does not have")
            i = words.index(flag)
            takes_value = i + 1 < len(words) and not words[i + 1].startswith("--")
            del words[i:i + 1 + takes_value]
        return words + shlex.split(self.add)


VARIANTS: dict[str, Variant] = {
    "base": Variant("the base recipe"),
    "no_label_smoothing": Variant("label smoothing 0.1 -> 0", drop=("--label-smoothing",)),
    "ema": Variant("EMA of the weights, decay 0.99 per step (evaluated and saved)", add="--ema 0.99"),
    "lookahead": Variant("lookahead, 5 fast steps per slow update, alpha 0.5", add="--lookahead 5"),
    "norm_lr_x4": Variant("learning rate of BN gains and biases x4", add="--norm-lr-scale 4"),
    "whiten": Variant("patch-whitened first conv, frozen", add="--whiten"),
    "progressive": Variant("progressive resizing from 20 px to 28 px", add="--progressive-resize 20", min_epochs=2),
    "mixup": Variant("mixup, blend drawn per batch from Beta(0.2, 0.2)", add="--mixup 0.2"),
    "cutmix": Variant("CutMix, pasted share drawn per batch from Beta(1, 1)", add="--cutmix 1.0"),
    "augment": Variant("pad-crop + random flip", drop=("--no-augment",)),
    "augment_alternate": Variant("pad-crop + alternating flip", drop=("--no-augment",), add="--flip alternate"),
    "batch256": Variant("batch 256 at lr 0.2 (half the steps)", drop=("--batch-size", "--lr"),
                        add="--batch-size 256 --lr 0.2"),
    "fp32": Variant("float32 and NCHW (no bf16 autocast, no channels_last)", drop=("--bf16", "--channels-last")),
    "no_bf16": Variant("float32 (no bf16 autocast), channels_last kept", drop=("--bf16",)),
    "no_channels_last": Variant("NCHW (no channels_last), bf16 autocast kept", drop=("--channels-last",)),
    "compile": Variant("torch.compile the model (compiled during the first epoch)", add="--compile"),
}


def run_one(name: str, seed: int, epochs: int, base: str, out_root: Path, threads: int) -> dict:
    """Train one variant with one seed through the CLI (skipped when its run already finished).

    Args:
        name: a key of :data:`VARIANTS`.
        seed: the ``--seed`` of the run.
        epochs: the fixed budget.
        base: the base recipe's flags.
        out_root: runs go to ``out_root/name/seedN``.
        threads: OMP_NUM_THREADS of the run.
    """
    out = out_root / name / f"seed{seed}"
    metrics = out / "metrics.jsonl"
    argv = ["train", *VARIANTS[name].args(base), "--epochs", str(epochs), "--seed", str(seed),
            "--out", str(out), "--no-progress"]
    records = _records(metrics)
    # Trained by an earlier call of the very same command and threads (its seconds were not metered
    # by this one): reused. Anything else there (a --dry-run's fake-data run, other flags, a run
    # stopped half-way, one from before the record existed) is trained again.
    done = {"argv": argv, "threads": threads}
    reused = len(records) == epochs and _read_json(out / RUN_RECORD) == done
    if not reused:
        shutil.rmtree(out, ignore_errors=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.run([*CLI, *argv], cwd=ROOT, env=env, text=True, capture_output=True)
        if proc.returncode != 0:
            raise SystemExit(f"[{name} seed {seed}] exit {proc.returncode}: {proc.stderr.strip()[-400:]}")
        records = _records(metrics)
        (out / RUN_RECORD).write_text(json.dumps(done))
    print(f"[{name} seed {seed}] {100 * records[-1]['test_acc']:.2f}%", flush=True)
    seconds = [r["train_seconds"] for r in records]
    return {"variant": name, "seed": seed, "final_acc": records[-1]["test_acc"],
            # a 1-epoch run has no epoch after the first: None, "-" in the table (not the first epoch again)
            "epoch_seconds": statistics.median(seconds[1:]) if len(seconds) > 1 else None,
            "first_epoch_seconds": seconds[0],
            "command": "resnet-lab " + " ".join(argv[:-5] + ["--seed", "S"]), "reused": reused}


#: Beside each run: the command and threads that trained it, so that only the same run is reused.
RUN_RECORD = "ablation_command.json"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def summarize(runs: list[dict]) -> list[dict]:
    """Per variant: mean and sd of the final accuracy, the paired change against ``base`` (same
    seed) with its sd, the verdict, and the median over seeds of the steady seconds per epoch and of
    the first epoch's seconds."""
    by = {}
    for r in runs:
        by.setdefault(r["variant"], {})[r["seed"]] = r
    base = by.get("base", {})
    rows = []
    for name, seeds in by.items():
        accs = [seeds[s]["final_acc"] for s in sorted(seeds)]
        row = {"variant": name, "what": VARIANTS[name].what, "n": len(accs), "mean": statistics.fmean(accs),
               "sd": statistics.stdev(accs) if len(accs) > 1 else 0.0,
               "epoch_seconds": _median_or_none(seeds[s]["epoch_seconds"] for s in seeds),
               "first_epoch_seconds": statistics.median(seeds[s].get("first_epoch_seconds", seeds[s]["epoch_seconds"])
                                                        for s in seeds),
               "command": next(iter(seeds.values()))["command"]}
        paired = [seeds[s]["final_acc"] - base[s]["final_acc"] for s in sorted(seeds) if s in base]
        if name != "base" and paired:
            row["delta"] = statistics.fmean(paired)
            row["delta_sd"] = statistics.stdev(paired) if len(paired) > 1 else float("inf")
            row["verdict"] = verdict(row["delta"], row["delta_sd"])
        rows.append(row)
    return rows


def _median_or_none(values) -> float | None:
    """The median of the values that are not None (None when none is)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def verdict(delta: float, sd: float) -> str:
    """``helps`` / ``hurts`` when the mean paired change exceeds its sd, else inside the spread."""
    if delta > sd:
        return "helps"
    if delta < -sd:
        return "hurts"
    return "inside the seed spread"


def table(rows: list[dict], base_seconds: float | None) -> str:
    """The Markdown table; a steady-state column of "-" where no run had an epoch after the first."""
    out = ["| variant | what | final test acc (mean ± sd) | change vs base, same seed | verdict | "
           "s/epoch after the first (x base) | first epoch s |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        change = "-" if "delta" not in r else f"{100 * r['delta']:+.2f} ± {100 * r['delta_sd']:.2f} pp"
        out.append(f"| {r['variant']} | {r['what']} | {100 * r['mean']:.2f} ± {100 * r['sd']:.2f}% (n={r['n']}) | "
                   f"{change} | {r.get('verdict', '-')} | {_steady(r['epoch_seconds'], base_seconds)} | "
                   f"{r['first_epoch_seconds']:.1f} |")
    return "\n".join(out)


def _steady(seconds: float | None, base_seconds: float | None) -> str:
    """The steady-state cell: seconds and the ratio to base's, or "-" (a 1-epoch budget has no such epoch)."""
    if seconds is None:
        return "- (1 epoch: none after the first)"
    return f"{seconds:.1f} ({seconds / base_seconds:.2f}x)" if base_seconds else f"{seconds:.1f}"


def report(rows: list[dict], args: argparse.Namespace, started: str, quiet, wall: float, reused: int = 0) -> str:
    """The markdown block: command, machine, the quietness of the whole ablation, the table.

    Args:
        quiet: the :class:`_common.Quietness` of the whole ablation (all its runs).
        reused: runs an earlier call trained (their seconds are not this call's to vouch for).
    """
    base = next(r for r in rows if r["variant"] == "base")
    reasons = quiet.check()
    loads = (f"load average {quiet.load_before:.2f} before, {quiet.load_after:.2f} after; runs' CPU "
             f"{quiet.cpu_s:.0f} s in {quiet.wall_s:.0f} s wall, the rest of the machine {quiet.others_cpu_s:.0f} s")
    if reused:  # the meter saw none of these runs' time
        timing = (f"**{BUSY_MARK}** for the seconds: {reused} of the runs were trained by an earlier call and "
                  "reused, unmetered by this one; the accuracies do not depend on the load (fixed seed and threads)")
    elif reasons:  # the quietness rule of _common: others ran beside the runs
        timing = (f"**{BUSY_MARK}** for the seconds: other processes ran beside the runs ({'; '.join(reasons)}); "
                  "the accuracies do not depend on the load (fixed seed and threads)")
    elif args.jobs == 1:
        timing = "one run at a time on a quiet machine: the seconds are this machine's"
    else:
        timing = (f"{args.jobs} runs side by side: the seconds are relative only; the accuracies do not depend "
                  "on the load (fixed seed and threads)")
    return (f"### Fast-training options, one at a time: {args.epochs} epoch(s), {args.seeds} seeds\n\n"
            f"```\n{' '.join(['python benchmarks/ablate_recipe.py', *getattr(args, 'argv', sys.argv[1:])])}\n```\n\n"
            f"Base: `{base['command']}`. Machine: {machine_line()}. "
            f"Started {started}; {loads}; {timing}; "
            f"{wall / 60:.0f} min in all.\n\n{table(rows, base['epoch_seconds'])}\n")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("variants", nargs="*", help=f"any of {', '.join(VARIANTS)} (default: all)")
    p.add_argument("--list", action="store_true")
    p.add_argument("--epochs", type=at_most(MAX_EPOCHS), default=None,
                   help=f"the fixed budget (default 2, --dry-run {DRY_EPOCHS})")
    p.add_argument("--seeds", type=at_most(MAX_SEEDS), default=None, help="seeds per variant (default 3, --dry-run 2)")
    p.add_argument("--jobs", type=at_most(MAX_JOBS), default=1, help="runs side by side (each with --threads threads)")
    p.add_argument("--threads", type=thread_count, default=1, help="OMP_NUM_THREADS of each run (default 1)")
    p.add_argument("--out", default=None,
                   help="where the runs and ablation.json go (default runs/ablation; --dry-run: a temporary folder)")
    p.add_argument("--write", action="store_true", help="write the block into docs/RESULTS.md")
    p.add_argument("--dry-run", action="store_true",
                   help=f"fake data, tiny images, {DRY_EPOCHS} epochs, 2 seeds unless --epochs, --seeds say; writes no doc")
    # No --allow-busy: a busy ablation is still written, since its accuracies hold (its block then
    # says its seconds are no figure).
    add_quiet_args(p, allow_busy=False)
    return p


def _settle(a: argparse.Namespace) -> None:
    """The budget and the folder: explicit values win over the defaults of a run or a dry run; what a
    dry run cannot do, or would destroy, is refused before anything trains."""
    a.epochs = a.epochs or (DRY_EPOCHS if a.dry_run else 2)
    a.seeds = a.seeds or (2 if a.dry_run else 3)
    if a.out is not None:  # "" would train in the repository root (the runs' working folder)
        check_folder(a.out, "--out")
    if not a.dry_run:
        if a.write:
            check_doc(str(RESULTS), "--write's document")
        a.out = a.out if a.out is not None else str(ROOT / "runs" / "ablation")
        return
    if a.write:
        fail("--dry-run's fake-data figures are never written to docs/RESULTS.md, so --write would be ignored: "
             "leave one of them out")
    if a.out is not None and _real_runs(Path(a.out)):
        fail(f"--out {a.out} holds a real ablation ({_real_runs(Path(a.out))[0]}), which a dry run would replace: "
             "leave --out out (a temporary folder) or give another folder")


def _runnable(names: list[str], a: argparse.Namespace) -> list[str]:
    """The variants that can run at ``a.epochs``: one that cannot is refused before anything trains,
    or, in a dry run (a check of the script), left out with a one-line note."""
    short = [n for n in names if VARIANTS[n].min_epochs > a.epochs]
    for n in short:
        why = f"{n} needs at least {VARIANTS[n].min_epochs} epochs, and --epochs is {a.epochs}"
        if not a.dry_run:
            fail(f"{why}: give --epochs {VARIANTS[n].min_epochs} or more, or leave {n} out")
        print(f"note: {why}: left out of this dry run", file=sys.stderr, flush=True)
    return [n for n in names if n not in short]


def _real_runs(out: Path) -> list[Path]:
    """What under ``out`` a real ablation left: its ablation.json, or runs not trained on a dry run's fake data."""
    saved = _read_json(out / "ablation.json")
    commands = [str(r.get("command", "")) for r in saved.get("runs", []) if isinstance(r, dict)] if isinstance(
        saved, dict) else []
    found = [out / "ablation.json"] if any("--dataset " in c and "--dataset fake" not in c for c in commands) else []
    for run in sorted(out.glob("*/seed*")):
        done = _read_json(run / RUN_RECORD)
        dry = isinstance(done, dict) and "fake" in done.get("argv", [])
        if not dry and run.is_dir() and any(run.iterdir()):
            found.append(run)
    return found


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    a.argv = list(sys.argv[1:] if argv is None else argv)  # the command the block records
    unknown = [n for n in a.variants if n not in VARIANTS]
    if unknown:  # --list too: it listed them and exited 0, the typo unsaid
        fail(f"unknown variant(s) {', '.join(unknown)}; expected any of {', '.join(VARIANTS)} (see --list)")
    if a.list:
        for k, v in VARIANTS.items():
            print(f"{k:<20} {v.what}")
        return 0
    names = a.variants or list(VARIANTS)
    if "base" not in names:
        names = ["base", *names]
    _settle(a)
    names = _runnable(names, a)
    key = block_key(a.epochs, a.variants) if a.write else None  # the block is chosen before the runs
    with contextlib.ExitStack() as stack:
        if a.out is None:  # a dry run's own folder, gone when it ends
            a.out = stack.enter_context(tempfile.TemporaryDirectory(prefix="ablation-dry-run-"))
        return _ablate(a, names, key)


def _ablate(a: argparse.Namespace, names: list[str], key: str | None) -> int:
    """Train every variant with every seed, print the block, keep ablation.json, write the block under ``key``."""
    base = DRY_BASE if a.dry_run else BASE
    setup_threads(a.threads)  # the block's machine line names the runs' threads (and probes GEMM at them)
    wait_for_quiet(a)
    started, t0 = now_utc(), time.perf_counter()
    meter = QuietMeter("ablation", a.jobs * a.threads)
    jobs = [(n, s) for s in range(a.seeds) for n in names]
    with ThreadPoolExecutor(max_workers=a.jobs) as pool:
        runs = list(pool.map(lambda job: run_one(*job, a.epochs, base, Path(a.out), a.threads), jobs))
    quiet = meter.stop()
    rows = summarize(runs)
    reused = sum(r.get("reused", False) for r in runs)
    block = report(rows, a, started, quiet, time.perf_counter() - t0, reused=reused)
    print(block)
    try:
        (Path(a.out) / "ablation.json").write_text(json.dumps({"runs": runs, "rows": rows}, indent=2))
    except OSError as e:  # the table is printed above; the runs' own files hold the rest
        print(f"error: could not write {Path(a.out) / 'ablation.json'} ({e.strerror or e}); the table is printed "
              "above", file=sys.stderr)
        return 1
    if key is not None and not write_doc(str(RESULTS), key, block, shown=True):
        return 1
    return 0


def _variant_set(variants) -> str:
    """The variants a command ran, as one text: ``all`` (none named, or every one), else the sorted names with base."""
    chosen = set(variants)
    if not chosen or chosen >= set(VARIANTS):
        return "all"
    return "-".join(sorted(chosen | {"base"}))


def _ablation_blocks(doc: Path) -> dict[str, str]:
    """The ablation blocks of ``doc``: key -> the command its code block records."""
    text = doc.read_text() if doc.is_file() else ""
    found = re.finditer(r"<!-- bench:(ablation-[\w-]+) -->\n.*?```\n(.*?)\n```.*?<!-- /bench:\1 -->", text, re.S)
    return {m.group(1): m.group(2) for m in found}


def block_key(epochs: int, variants=(), doc: Path | None = None) -> str:
    """The RESULTS.md block of an ablation at ``epochs`` epochs of ``variants`` (none: all): one per budget
    and variant set, so a longer ablation, or one of other variants, stands beside the others instead
    of replacing them. A block in ``doc`` whose recorded command ran the same budget and set keeps its
    key (``ablation-2-epochs``, ``ablation-5-epochs``: named before the set was part of the key)."""
    want = _variant_set(variants)
    for key, command in _ablation_blocks(RESULTS if doc is None else doc).items():
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # a command this parser no longer reads matches nothing
                ns = build_parser().parse_args(shlex.split(command)[2:])
        except SystemExit:
            continue
        if (ns.epochs or 2) == epochs and _variant_set(ns.variants) == want:
            return key
    return f"ablation-{epochs}-epochs-{want}"


if __name__ == "__main__":
    sys.exit(main())
