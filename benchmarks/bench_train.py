"""Training throughput: our resnet18/resnet50 against torchvision's, then ours with the speed options.

One training step = forward, cross-entropy, backward, SGD step (momentum 0.9, weight decay 5e-4)
on a fixed random batch, as in ``resnet_lab.train`` (``zero_grad(set_to_none=True)``, bf16 through
``torch.autocast`` with the loss in float32). Our model starts from torchvision's weights (the
state-dict keys match), so both compute the same numbers.

Run alone: ``.venv/bin/python benchmarks/bench_train.py [--quick]``.
"""

from __future__ import annotations

import argparse
import copy
import sys

import torch
import torchvision
from _common import (
    Run, Section, bf16_hardware, compile_cache_note, first_paragraph, markdown_table, paired_ratio, rate_rows, run_standalone,
    train_step, verdict, want_compile,
)

from resnet_lab import create_model

__all__ = ["build"]

# arch -> batch; resnet50 at batch 16 keeps the whole run near 10 minutes on 2 shared cores
FULL = {"image_size": 64, "archs": {"resnet18": 32, "resnet50": 16}, "compile_archs": ("resnet18",),
        "target_s": 1.0, "repeats": 7}
QUICK = {"image_size": 32, "archs": {"resnet18": 8}, "compile_archs": ("resnet18",), "target_s": 0.2, "repeats": 2}
NUM_CLASSES = 1000


def _contenders(arch: str, batch: int, cfg: dict, with_compile: bool) -> dict:
    torch.manual_seed(0)
    tv = getattr(torchvision.models, arch)(num_classes=NUM_CLASSES)
    ours = create_model(arch, num_classes=NUM_CLASSES)
    ours.load_state_dict(tv.state_dict())  # same weights: same arithmetic on both sides
    x = torch.randn(batch, 3, cfg["image_size"], cfg["image_size"])
    y = torch.randint(0, NUM_CLASSES, (batch,))
    c = {
        "torchvision eager fp32": train_step(tv, x, y),
        "ours eager fp32": train_step(copy.deepcopy(ours), x, y),
        "ours + channels_last": train_step(copy.deepcopy(ours), x, y, channels_last=True),
        "ours + bf16 autocast": train_step(copy.deepcopy(ours), x, y, bf16=True),
        "ours + channels_last + bf16": train_step(copy.deepcopy(ours), x, y, channels_last=True, bf16=True),
    }
    if with_compile:
        c["ours + compile"] = train_step(copy.deepcopy(ours), x, y, compile=True)
        c["ours + channels_last + bf16 + compile"] = train_step(
            copy.deepcopy(ours), x, y, channels_last=True, bf16=True, compile=True)
    return c


def build(args: argparse.Namespace, command: str) -> Section:
    """Run the training benchmark and return its Markdown section.

    Args:
        args: ``quick``, ``repeats`` (None: the default), ``threads``.
        command: the command line recorded with the tables.
    """
    run = Run.start(args, FULL, QUICK, "training benchmark")
    cfg, repeats = run.cfg, run.repeats
    parts, summary = [], []
    for arch, batch in cfg["archs"].items():
        with_compile = want_compile(args) and arch in cfg["compile_archs"]
        print(f"[train] {arch} {batch}x3x{cfg['image_size']}x{cfg['image_size']}", flush=True)
        res = run.interleave(arch, _contenders(arch, batch, cfg, with_compile), target_s=cfg["target_s"], warmup=1)
        base, ours = res["torchvision eager fp32"], res["ours eager fp32"]
        rows = rate_rows(res, batch, "torchvision eager fp32")
        parts.append(f"### {arch}, batch {batch} x 3x{cfg['image_size']}x{cfg['image_size']}, "
                     f"SGD, {repeats} repeats\n\n")
        parts.append(markdown_table(["contender", "images/s (median)", "min-max", "speed vs torchvision eager"],
                                    rows))
        comp = [m for n, m in res.items() if "compile" in n]
        if comp:
            parts.append("\nCompile time (first call, including the first step; the inductor on-disk cache "
                         "may shorten it on later runs): " + ", ".join(
                             f"{m.name}: {m.first_call_s:.0f} s" if m.ok else f"{m.name}: failed ({m.error})"
                             for m in comp) + f" ({compile_cache_note()}). The table is steady state, "
                         "after compilation.\n")
        elif not want_compile(args):
            parts.append("\ntorch.compile contenders not measured in this run (`--compile off`, or `--quick`).\n")
        else:
            parts.append("\ntorch.compile contenders measured on "
                         f"{', '.join(cfg['compile_archs'])} only: compiling a training graph takes minutes "
                         "on 2 cores and the run must stay under ~10 minutes.\n")
        if base.ok and ours.ok:
            same = paired_ratio(ours, base)
            summary.append((f"train {arch}: ours / torchvision, both eager fp32",
                            f"{same[0]:.2f}x ({same[1]:.2f}-{same[2]:.2f})", ">= 1.0",
                            verdict(same[0], 1.0)))
            cands = [(paired_ratio(m, base), n) for n, m in res.items() if n.startswith("ours") and m.ok]
            best_r, best_n = max(cands)
            summary.append((f"train {arch}: ours best options ({best_n.removeprefix('ours + ')}) / "
                            "torchvision eager", f"{best_r[0]:.2f}x ({best_r[1]:.2f}-{best_r[2]:.2f})", "report", "-"))
            parts.append(
                f"\nOurs vs torchvision at the same options: {same[0]:.2f}x (repeat-to-repeat range "
                f"{same[1]:.2f}-{same[2]:.2f}). Best of ours: *{best_n}* at {best_r[0]:.2f}x torchvision eager.\n")
        parts.append("\n")
    notes = (
        "Notes: our resnet18/50 are the same architecture as torchvision's with the same module names "
        "and the same torch kernels, so a ratio near 1.00 is the expected outcome; the ratio's "
        "repeat-to-repeat range shows how much of any difference is noise on a shared machine. "
        "bf16 autocast casts activations and weights to bfloat16 around every convolution and matmul; "
        f"{bf16_hardware()}. channels_last (NHWC) is the layout "
        "oneDNN's CPU convolutions prefer. "
        "Whether each option pays for itself here is what the table says, not an assumption.\n"
    )
    return run.section("1. Training throughput: ours vs torchvision", command, "".join(parts) + notes, summary)


if __name__ == "__main__":
    sys.exit(run_standalone(build, first_paragraph(__doc__), compile_flag=True,
                            repeats=(FULL["repeats"], QUICK["repeats"])))
