"""GPU: the in-memory loader on the device, the training step's speed options, and time to 94% / 95%
on Fashion-MNIST (issue 14, section 6).

Three measurements on one CUDA device, in one process (the recipe runs as `resnet-lab train`
subprocesses):

a) **Data**: one epoch of :func:`resnet_lab.data.load_data` with ``device=cuda`` (the uint8 dataset
   lives on the GPU; crop, flip and normalization run there batch-wise) against the pipeline of
   ``bench_data.py`` (a DataLoader over PIL images with torchvision's per-sample transforms), whose
   batches are then copied to the GPU. Images/s; each epoch ends with ``torch.cuda.synchronize``.
b) **Training step**: ResNet-20 on Fashion-MNIST-shaped batches of 512, SGD, as ``resnet_lab.train``
   steps (``_common.train_step``): fp32, bf16 autocast (fp16 with a GradScaler on a GPU without
   bfloat16), channels_last, ``torch.compile``, each alone, and their combinations. Contenders are
   interleaved repeat by repeat after warm-up calls; each timed call runs 10 steps (1 with
   ``--dry-run``) between two synchronizations; medians of ``--repeats`` repeats, ratios paired repeat
   by repeat. On a CUDA
   device with bfloat16, also bf16 + channels_last with the whole step captured in one CUDA graph
   (the first H200 run found the eager step bound by kernel launches, not by the GPU).
c) **Time to accuracy**: the ``--recipe`` (a `resnet-lab train` command line) once per seed; the whole
   command's wall time, and from its metrics.jsonl the first epoch at 94% and at 95% test accuracy.

A part that breaks is reported in the section, the others are still measured, and the script
then exits with status 1 without writing the docs.

``--dry-run`` runs all three on the CPU at tiny sizes (a few steps, a one-epoch recipe), to check the
script without a GPU: its figures measure nothing and it never writes the docs. Without ``--dry-run``
the script needs CUDA; ``--write`` puts the section into docs/BENCHMARKS.md, or the ``--doc`` it names
(block ``gpu``, replaced whole, so only with all three ``--parts``; ``--doc`` without ``--write`` is
refused), and only when the CPU side of the machine was quiet
(``_common.Quietness``; ``--allow-busy`` to override).

    .venv/bin/python benchmarks/gpu.py                     # on a CUDA machine: print the section
    .venv/bin/python benchmarks/gpu.py --write             # ... and write it into docs/BENCHMARKS.md
    .venv/bin/python benchmarks/gpu.py --dry-run --dataset fake    # check the script on a CPU
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
from _common import (
    BENCHMARKS_MD, Run, Section, add_quiet_args, check_doc, command_line, compile_cache_note, error_line, fail,
    fmt_rate,
    machine_block, markdown_table, may_write, paired_ratio, rate_rows, setup_threads, train_step,
    wait_for_quiet, want_compile,
)
from _common import MAX_REPEATS, MAX_SEEDS, accuracy_fraction, at_most, thread_count, write_doc
from bench_data import torchvision_loader
from peer_torchvision import time_to

from resnet_lab import create_model, model_info
from resnet_lab.cli import _data_config, _train_config, build_parser
from resnet_lab.data import DataNotFoundError, find_fashion_mnist, load_data

__all__ = ["amp_flag", "main", "recipe_command", "seed_summary"]

ROOT = Path(__file__).resolve().parents[1]
TITLE = "9. GPU"  # "## 6." and "## 8." are taken in docs/BENCHMARKS.md
KEY = "gpu"
NO_CUDA = "no CUDA device: run with --dry-run to check the script on a CPU"
TARGETS = (0.94, 0.95)
# --no-plots: on a GPU an epoch takes 1-3 s (the table of 2026-12: 20 epochs in 43-55 s, whole commands),
# and drawing curves.png and confusion.png after an improved epoch took 0.5 s of CPU (measured on a CPU
# host, 2026-12-07), which the next epoch's time to accuracy counts: a plot is not part of the recipe.
RECIPE = ("--model resnet20_fast --epochs 20 --batch-size 512 --lr 0.4 --label-smoothing 0.1 --bf16 "
          "--channels-last --no-plots")
# The dry run's recipe: one epoch of 64 small fake images, to show the plumbing works within seconds.
DRY_RECIPE = "--model resnet8_fast --epochs 1 --batch-size 32 --lr 0.1 --subset 64 --image-size 16"
# The flags the script sets itself for every seed (a recipe that gave them would be overridden).
OWN_FLAGS = ("--dataset", "--data-dir", "--device", "--seed", "--out", "--resume")
FULL = {"batch": 512, "steps": 10, "warmup": 3, "target_s": 1.0, "repeats": 5, "workers": 8, "seeds": 3}
DRY = {"batch": 8, "steps": 1, "warmup": 1, "target_s": 0.0, "repeats": 2, "workers": 0, "seeds": 1}
OURS = "ours: load_data(device=...), in memory"
FAILED = "failed"  # a part's summary figure when it broke (the section is printed, never written)
FP32 = "fp32"


# ----------------------------------------------------------------------------- set-up


def amp_flag(device: torch.device) -> str:
    """``"bf16"``, or ``"fp16"`` on a CUDA GPU without bfloat16 (T4, V100): the autocast the device gets.

    Args:
        device: where the benchmark runs.
    """
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16"
    return "bf16"


def _amp_label(amp: str) -> str:
    return "bf16 autocast" if amp == "bf16" else "fp16 autocast + GradScaler"


def recipe_command(recipe: str, *, dataset: str, data_dir: str | None, device: torch.device, seed: int,
                   out: str, amp: str) -> list[str]:
    """The `resnet-lab train` arguments of one seed: the recipe, then the script's own flags.

    ``--bf16`` becomes ``--fp16`` where the device has no bfloat16 (``amp``). The arguments are
    checked by resnet-lab's own parser before anything runs.

    Args:
        recipe: `resnet-lab train` flags without those the script sets (:data:`OWN_FLAGS`).
        dataset, data_dir: the data (``data_dir`` None: resnet-lab's own search).
        device: the training device.
        seed: the run's ``--seed``.
        out: the run directory.
        amp: :func:`amp_flag`.

    Raises:
        ValueError: the recipe gives a flag the script sets itself, names no model of resnet-lab, or
            holds a value `resnet-lab train` refuses (its own message).
    """
    flags = shlex.split(recipe)
    own = [f for f in flags if f.split("=")[0] in OWN_FLAGS]
    if own:
        raise ValueError(f"--recipe must leave out {', '.join(own)}: the script sets {', '.join(OWN_FLAGS)} itself "
                         "(--dataset and --data-dir are its own options)")
    if amp == "fp16":
        flags = ["--fp16" if f == "--bf16" else f for f in flags]
    flags += ["--dataset", dataset, *(["--data-dir", data_dir] if data_dir else []), "--device", str(device),
              "--seed", str(seed), "--out", out, "--no-progress"]
    ns = build_parser().parse_args(["train", *flags])  # a bad recipe fails here, with argparse's message
    model_info(ns.model)  # and an unknown model here (ValueError), not after the other parts were measured
    _train_config(ns, out)  # and values train refuses (--epochs 0, --lr 0: ValueError) here too
    _data_config(ns)
    return ["train", *flags]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _data(args: argparse.Namespace, batch: int, device: torch.device):
    # The fake dataset at Fashion-MNIST's shape (1x28x28), so the same model and per-sample pipeline apply.
    shape = {"image_size": 28, "in_channels": 1} if args.dataset == "fake" else {}
    return load_data(args.dataset, data_dir=args.data_dir, batch_size=batch, device=device, augment=True, **shape)


# ----------------------------------------------------------------------------- a) the data path


def _epoch(loader: Iterable, device: torch.device, copy_to_device: bool) -> Callable[[], None]:
    def call() -> None:
        for x, y in loader:
            if copy_to_device:  # what a training loop does with a CPU pipeline's batches
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        _sync(device)  # the epoch ends when the device has produced (or received) its last batch

    return call


def data_part(args: argparse.Namespace, run: Run, device: torch.device, amp: str) -> tuple[str, list]:
    """One epoch of the in-memory loader on ``device`` against the torchvision pipeline (images/s);
    ``amp`` is unused (every part takes the same arguments)."""
    cfg = run.cfg
    bundle = _data(args, cfg["batch"], device)
    ours = bundle.train
    images, labels = ours.images[:, 0].cpu().numpy(), ours.labels.cpu().numpy()  # (N, 28, 28) uint8: the same
    tv = torchvision_loader(images, labels, bundle.info.mean, bundle.info.std, cfg["batch"], cfg["workers"])
    tv_name = f"torchvision DataLoader, {cfg['workers']} workers, then .to({device.type})"
    per_epoch = len(ours) * cfg["batch"]
    if len(tv) * cfg["batch"] != per_epoch:
        raise RuntimeError(f"the two pipelines serve different epochs: {len(ours)} and {len(tv)} batches")
    print(f"[gpu] a) data: one epoch of {per_epoch:,} images, batch {cfg['batch']}", file=sys.stderr, flush=True)
    res = run.interleave("data", {OURS: _epoch(ours, device, False), tv_name: _epoch(tv, device, True)},
                         target_s=cfg["target_s"], warmup=1)
    del tv  # shuts the persistent workers down
    rows = rate_rows(res, per_epoch, tv_name)
    table = markdown_table(["data path, one epoch", "images/s (median)", "min-max", "speed vs torchvision"], rows)
    summary = []
    if res[OURS].ok and res[tv_name].ok:
        r = paired_ratio(res[OURS], res[tv_name])
        summary.append((f"GPU data: in-memory on {device.type} / torchvision DataLoader ({cfg['workers']} workers)",
                        f"{r[0]:.1f}x ({r[1]:.1f}-{r[2]:.1f})", "report", "-"))
    body = (f"### a) Data: one epoch of augmented batches of {cfg['batch']} ({bundle.num_train:,} training images, "
            f"pad-crop + flip + normalize), {run.repeats} repeats\n\n{table}\n"
            f"Ours keeps the uint8 images on the {device.type} and augments whole batches there. The "
            "torchvision side builds a PIL image per sample, applies `RandomCrop(28, padding=4)`, "
            "`RandomHorizontalFlip`, `ToTensor`, `Normalize`, batches them in its workers (persistent; "
            "not pinned) and copies each batch to the device. Each epoch ends with a device synchronization.\n")
    return body, summary


# ----------------------------------------------------------------------------- b) the training step


def _options(amp: str, with_compile: bool, with_graph: bool = False) -> dict[str, dict]:
    """Contender label -> ``train_step`` options: fp32, each option alone, then the combinations; with
    ``with_graph`` also the best eager combination captured whole in a CUDA graph (one launch per step:
    the first H200 run found the step bound by kernel launches)."""
    a = _amp_label(amp)
    opts = {FP32: {}, a: {amp: True}, "channels_last": {"channels_last": True}}
    if with_compile:
        opts["compile"] = {"compile": True}
    opts[f"{a} + channels_last"] = {amp: True, "channels_last": True}
    if with_compile:
        opts[f"{a} + channels_last + compile"] = {amp: True, "channels_last": True, "compile": True}
    if with_graph:
        opts[f"{a} + channels_last + CUDA graph"] = {amp: True, "channels_last": True, "graph": True}
    return opts


def _steps(step: Callable[[], None], steps: int, device: torch.device) -> Callable[[], None]:
    def call() -> None:
        for _ in range(steps):
            step()
        _sync(device)  # the call ends when the device has finished its last step

    return call


def step_part(args: argparse.Namespace, run: Run, device: torch.device, amp: str) -> tuple[str, list]:
    """ResNet-20 training steps at batch 512 with each speed option, side by side."""
    cfg = run.cfg
    x, y = next(iter(_data(args, cfg["batch"], device).train))  # a real augmented batch, on the device
    torch.manual_seed(0)
    base = create_model("resnet20", num_classes=10, in_channels=1).to(device)
    with_compile = want_compile(args)
    opts = _options(amp, with_compile, with_graph=device.type == "cuda" and amp == "bf16")
    print(f"[gpu] b) resnet20 training step, batch {cfg['batch']}: {', '.join(opts)}", file=sys.stderr, flush=True)
    contenders = {n: _steps(train_step(copy.deepcopy(base), x, y, **kw), cfg["steps"], device) for n, kw in opts.items()}
    res = run.interleave("training step", contenders, target_s=cfg["target_s"], warmup=cfg["warmup"])
    rows = rate_rows(res, cfg["steps"] * cfg["batch"], FP32)
    for row, m in zip(rows, res.values()):
        row.insert(1, fmt_rate(cfg["steps"] / m.median()) if m.ok else "")
    table = markdown_table(["options", "steps/s (median)", "images/s (median)", "min-max", "speed vs fp32"], rows)
    summary, notes = [], []
    ok = {n: m for n, m in res.items() if m.ok and n != FP32}
    if res[FP32].ok and ok:
        best_n, best_m = max(ok.items(), key=lambda kv: paired_ratio(kv[1], res[FP32])[0])
        r = paired_ratio(best_m, res[FP32])
        summary.append((f"GPU resnet20 step, batch {cfg['batch']}: best options ({best_n}) / fp32",
                        f"{r[0]:.2f}x ({r[1]:.2f}-{r[2]:.2f})", "report", "-"))
        notes.append(f"Fastest: *{best_n}*, {r[0]:.2f}x fp32.")
    comp = [m for n, m in res.items() if "compile" in n]
    if comp:
        notes.append("Compile time (first call, its steps included): " + ", ".join(
            f"{m.name}: {m.first_call_s:.0f} s" if m.ok else f"{m.name}: failed ({m.error})" for m in comp)
            + f" ({compile_cache_note()}); the table is steady state.")
    else:
        notes.append("torch.compile not measured in this run (`--compile off`, or `--dry-run`).")
    body = (f"### b) ResNet-20 training step, batch {cfg['batch']} x 1x28x28, SGD, {cfg['steps']} step(s) per timed "
            f"call, {cfg['warmup']} warm-up call(s), {run.repeats} repeats\n\n{table}\n" + " ".join(notes) + "\n")
    return body, summary


# ----------------------------------------------------------------------------- c) time to accuracy


def seed_summary(records: list[dict], wall_s: float, targets: Iterable[float]) -> dict:
    """One seed's figures from its metrics.jsonl records and the whole command's wall time.

    Args:
        records: one dict per epoch (``epoch``, ``test_acc``, ``elapsed_seconds``).
        wall_s: the command's wall time, process start to exit.
        targets: test accuracies to time.

    Returns:
        ``final``, ``best`` (test accuracy), ``epochs``, ``wall_s``, and ``reached``: target ->
        ``(epoch, training-loop seconds)`` of the first epoch at the target, or None.
    """
    reached = {}
    for t in targets:
        s = time_to(records, t)
        reached[t] = None if s is None else (next(r["epoch"] for r in records if r["test_acc"] >= t), s)
    return {"final": records[-1]["test_acc"], "best": max(r["test_acc"] for r in records), "epochs": len(records),
            "wall_s": wall_s, "reached": reached}


def _run_seed(argv: list[str], run: Run, seed: int) -> tuple[list[dict], float]:
    print(f"[gpu] c) seed {seed}: resnet-lab {shlex.join(argv)}", file=sys.stderr, flush=True)
    with run.measure(f"recipe, seed {seed}"):
        t0 = time.perf_counter()
        # the child's log goes to stderr: stdout carries only the Markdown section
        proc = subprocess.run([sys.executable, "-m", "resnet_lab", *argv], cwd=ROOT, stdout=sys.stderr)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"seed {seed}: resnet-lab train failed with exit code {proc.returncode}")
    out = Path(argv[argv.index("--out") + 1])
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()], wall


def _pct(t: float) -> str:
    return f"{100 * t:g}%"


def recipe_part(args: argparse.Namespace, run: Run, device: torch.device, amp: str) -> tuple[str, list]:
    """The recipe once per seed: per-seed rows and the mean."""
    targets = tuple(args.targets)
    seeds = list(range(args.seeds or run.cfg["seeds"]))
    results = []
    with tempfile.TemporaryDirectory(prefix="gpu-bench-") as tmp:
        for seed in seeds:
            argv = recipe_command(args.recipe, dataset=args.dataset, data_dir=args.data_dir, device=device,
                                  seed=seed, out=os.path.join(tmp, f"seed{seed}"), amp=amp)
            records, wall = _run_seed(argv, run, seed)
            results.append(seed_summary(records, wall, targets))
        shown = ("resnet-lab " + shlex.join(argv).replace(tmp, "$TMP").replace(f"--seed {seeds[-1]}", "--seed S")
                 .replace(f"$TMP/seed{seeds[-1]}", "$TMP/seedS"))
    cell = lambda hit: "not reached" if hit is None else f"{hit[1]:.1f} s (epoch {hit[0]})"  # noqa: E731
    rows = [[f"seed {s}", f"{100 * r['final']:.2f}%", f"{100 * r['best']:.2f}%",
             *[cell(r["reached"][t]) for t in targets], f"{r['wall_s']:.1f} s"] for s, r in zip(seeds, results)]
    mean_row, summary = [f"mean of {len(seeds)}", f"{100 * statistics.mean(r['final'] for r in results):.2f}%",
                         f"{100 * statistics.mean(r['best'] for r in results):.2f}%"], []
    for t in targets:
        hits = [r["reached"][t][1] for r in results if r["reached"][t] is not None]
        m = f"{statistics.mean(hits):.1f} s ({len(hits)}/{len(seeds)} reached)" if hits else "not reached"
        mean_row.append(m)
        summary.append((f"GPU time to {_pct(t)} {args.dataset} test accuracy (training loop, mean of seeds)", m,
                        "report", "-"))
    mean_row.append(f"{statistics.mean(r['wall_s'] for r in results):.1f} s")
    rows.append([f"**{c}**" for c in mean_row])
    table = markdown_table(["run", "final test acc", "best epoch's", *[f"time to {_pct(t)}" for t in targets],
                            "whole command"], rows)
    body = (f"### c) Time to {' and '.join(_pct(t) for t in targets)} test accuracy on {args.dataset}, "
            f"{len(seeds)} seed(s)\n\n```\n{shown}\n```\n\n"
            f"(S: each seed, 0 to {seeds[-1]}; `$TMP`: a temporary folder the script makes and removes.)\n\n{table}\n"
            "Time to accuracy counts the training loop from its first step to the end of the evaluation of the "
            "first epoch at that accuracy (metrics.jsonl, `elapsed_seconds`); the whole command adds process "
            "start, data loading, checkpoints and plots. The mean of a target's time is over the seeds that "
            "reached it.\n")
    return body, summary


# ----------------------------------------------------------------------------- the section


def gpu_line(device: torch.device) -> str:
    """The device the figures come from: GPU name, memory and CUDA version (or the CPU of a dry run)."""
    if device.type != "cuda":
        return f"- device: {device} (dry run: no GPU)"
    p = torch.cuda.get_device_properties(device)
    return (f"- GPU: {torch.cuda.get_device_name(device)}, {p.total_memory / 2**30:.0f} GiB, compute capability "
            f"{p.major}.{p.minor}, bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}; CUDA "
            f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}; torch {torch.__version__}")


PARTS = {"data": data_part, "step": step_part, "recipe": recipe_part}


def build(args: argparse.Namespace, command: str, device: torch.device) -> Section:
    """Run the parts asked for (``--parts``) and return the section."""
    run = Run.start(args, FULL, DRY, "GPU benchmark", threads=1,
                    own_load=1 + (DRY if args.dry_run else FULL)["workers"])
    amp = amp_flag(device)
    parts, summary = [], []
    for name in args.parts:
        try:
            body, figures = PARTS[name](args, run, device, amp)
        except Exception as e:  # a lent GPU's minutes are few: one broken part leaves the others measured
            why = error_line(e)
            print(f"[gpu] {name}: failed ({why})", file=sys.stderr, flush=True)
            body, figures = f"### {name}: failed\n\n`{why}`\n", [(f"GPU {name} part", FAILED, "report", "-")]
        parts.append(body)
        summary.extend(figures)
    mark = ("> **INVALID: --dry-run on the CPU**: tiny sizes; these figures only show that the script runs.\n\n"
            if args.dry_run else "")
    head = gpu_line(device) + "\n" + machine_block(command, run.started, run.checks)
    summary_table = markdown_table(["figure", "measured", "target", "verdict"], [list(s) for s in summary])
    return Section(TITLE, mark + head + "\n" + summary_table + "\n" + "\n".join(parts), summary,
                   checks=list(run.checks))


def failed_parts(section: Section) -> list[str]:
    """The parts of ``section`` that broke (their summary row says :data:`FAILED`)."""
    return [what for what, figure, _, _ in section.summary if figure == FAILED]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default=None, help="a CUDA device (default cuda; not with --dry-run, on the CPU)")
    p.add_argument("--dry-run", action="store_true",
                   help="on the CPU, tiny sizes, a few steps, a one-epoch recipe; writes nothing")
    p.add_argument("--dataset", choices=("fashion-mnist", "fake"), default="fashion-mnist",
                   help="fake: random 1x28x28 images, to check the script without the data (default fashion-mnist)")
    p.add_argument("--data-dir", default=None, help="where Fashion-MNIST is (default: resnet-lab's own search)")
    p.add_argument("--parts", nargs="+", choices=("data", "step", "recipe"), default=["data", "step", "recipe"],
                   help="what to measure (default all three)")
    p.add_argument("--recipe", default=None,
                   help=f"`resnet-lab train` flags for the time to accuracy, without {', '.join(OWN_FLAGS)}; "
                        f"give them with '=': --recipe='--model ...' (default: '{RECIPE}'; --dry-run: "
                        f"'{DRY_RECIPE}')")
    p.add_argument("--seeds", type=at_most(MAX_SEEDS), default=None,
                   help=f"runs of the recipe, seeds 0..N-1 (default {FULL['seeds']}, --dry-run {DRY['seeds']})")
    p.add_argument("--targets", type=accuracy_fraction, nargs="+", default=list(TARGETS),
                   help="test accuracies to time, as fractions (default 0.94 0.95)")
    p.add_argument("--repeats", type=at_most(MAX_REPEATS), default=None,
                   help=f"timed repeats per contender (default {FULL['repeats']}, --dry-run {DRY['repeats']})")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="measure the torch.compile contenders (auto: on, off with --dry-run)")
    p.add_argument("--threads", type=thread_count, default=None,
                   help="torch intra-op threads of this process (default: torch's; the GPU does the work)")
    p.add_argument("--write", action="store_true",
                   help="write the section into --doc (CUDA only; never from --dry-run)")
    p.add_argument("--doc", default=None, help="the document --write updates (default docs/BENCHMARKS.md)")
    add_quiet_args(p)
    args = p.parse_args(argv)
    args.quick = args.dry_run  # the sizes of Run.start and the default of want_compile
    if args.recipe is None:
        args.recipe = DRY_RECIPE if args.dry_run else RECIPE
    if args.seeds is not None and args.seeds < 1:
        p.error(f"--seeds must be at least 1, got {args.seeds}")
    if args.doc is not None and not args.write:  # it was taken, and the figures only printed
        fail(f"--doc {args.doc} is the document --write updates, and --write was not given: add --write, or leave "
             "--doc out (the section is printed)")
    args.doc = BENCHMARKS_MD if args.doc is None else args.doc
    if args.write:
        check_doc(args.doc, "--doc")  # before the GPU's minutes are spent, not after
    if args.write and not args.dry_run and set(args.parts) != set(PARTS):
        # the block is written whole: a subset would drop the other parts' figures from it
        fail(f"--write with --parts {' '.join(args.parts)} would replace the whole '{KEY}' block of {args.doc}, "
             f"dropping the other parts' figures: measure all of {' '.join(PARTS)} to write it, or leave --write out "
             "(the section is printed)")
    if args.dry_run and args.device is not None:
        fail(f"--dry-run runs on the CPU, so --device {args.device} would be ignored: leave one of them out")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure, print the section, write it with ``--write``; returns the exit status.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
    """
    args = parse_args(argv)
    try:
        device = torch.device("cpu") if args.dry_run else torch.device(args.device or "cuda")
    except RuntimeError:
        fail(f"--device {args.device} is no device: give cuda or cuda:N (or --dry-run to check the script on a CPU)")
    if not args.dry_run and device.type != "cuda":  # cpu, mps: not what this script measures
        fail(f"--device {args.device} is not a CUDA device: give cuda or cuda:N (or --dry-run to check the script on "
             "a CPU)")
    if not args.dry_run and not torch.cuda.is_available():
        fail(NO_CUDA)
    if not args.dry_run and device.index is not None and device.index >= torch.cuda.device_count():
        fail(f"--device {args.device}: this machine has {torch.cuda.device_count()} CUDA device(s), cuda:0 to "
             f"cuda:{torch.cuda.device_count() - 1}; give one of them")  # before any part runs
    if args.threads is not None:
        setup_threads(args.threads)
    if args.dataset == "fashion-mnist":  # missing data is refused once, whole, before any part runs
        try:
            find_fashion_mnist(args.data_dir)
        except DataNotFoundError as e:
            fail(str(e))
    try:  # a bad recipe is refused before anything is measured
        recipe_command(args.recipe, dataset=args.dataset, data_dir=args.data_dir, device=device, seed=0,
                       out="-", amp=amp_flag(device))
    except ValueError as e:
        fail(str(e))
    wait_for_quiet(args)
    return finish(build(args, command_line(), device), args)


def finish(section: Section, args: argparse.Namespace) -> int:
    """Print the section, write it with ``--write``; the exit status: 1 when a part failed, or when
    the machine was busy and ``--allow-busy`` was not given (written or not: figures that are not to
    be quoted fail the run, as in the other scripts); a ``--dry-run`` never fails for a busy machine.

    Args:
        section: what :func:`build` measured.
        args: the parsed flags.
    """
    print(section.markdown(), flush=True)
    broken = failed_parts(section)
    if broken:
        print(f"error: {', '.join(broken)} failed (the reason is in its part above); nothing written to {args.doc}",
              file=sys.stderr)
        return 1
    if args.dry_run:
        if args.write:
            print(f"--dry-run: not written to {args.doc}", file=sys.stderr)
        return 0
    if not may_write(section.checks, allow_busy=args.allow_busy, target=args.doc if args.write else None,
                     unwritten="nothing is written without --write"):
        return 1
    if not args.write:
        return 0
    if not write_doc(args.doc, KEY, section.markdown(), shown=True):
        return 1
    print(f"wrote the '{KEY}' block of {args.doc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
