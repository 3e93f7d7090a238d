"""The cost of the readable batch norm: ``resnet_lab.nn.BatchNorm2d`` (tensor ops forward, a
hand-written closed-form backward) against ``torch.nn.BatchNorm2d`` (one fused native kernel each way).

Measured on one layer (forward+backward in training mode, and forward in eval mode) and on a whole
network (a resnet20 training step with ``norm="scratch"`` vs ``norm="batch"``).

Run alone: ``.venv/bin/python benchmarks/bench_bn.py [--quick]``.
"""

from __future__ import annotations

import argparse
import sys

import torch
from _common import (Run, Section, first_paragraph, fmt_ratio, markdown_table, paired_cost, run_standalone, train_step,
                     verdict)

from resnet_lab import create_model
from resnet_lab.nn import BatchNorm2d

__all__ = ["build"]

FULL = {"shape": (128, 64, 16, 16), "model_batch": 64, "target_s": 0.4, "repeats": 5}
QUICK = {"shape": (16, 16, 8, 8), "model_batch": 8, "target_s": 0.05, "repeats": 2}
TORCH, OURS = "torch.nn.BatchNorm2d", "resnet_lab.nn.BatchNorm2d (scratch)"
STEP_GOAL = 1.15  # a resnet20 step with norm="scratch" within this factor of norm="batch" (issue 14)


def _layer_contenders(shape: tuple[int, ...]) -> tuple[dict, dict]:
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    g = torch.randn(*shape)
    train, evals = {}, {}
    for name, cls in ((TORCH, torch.nn.BatchNorm2d), (OURS, BatchNorm2d)):
        bn = cls(shape[1])
        bn_eval = cls(shape[1]).eval()

        def fwd_bwd(bn=bn) -> None:
            x.grad = None
            bn(x).backward(g)

        def fwd_eval(bn=bn_eval) -> None:
            with torch.inference_mode():
                bn(x)

        train[name], evals[name] = fwd_bwd, fwd_eval
    return train, evals


def _model_contenders(batch: int) -> dict:
    torch.manual_seed(0)
    x = torch.randn(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))
    ref = create_model("resnet20", num_classes=10, in_channels=1, norm="batch")
    out = {}
    for name, norm in (("resnet20, norm='batch' (torch's BN)", "batch"), ("resnet20, norm='scratch' (ours)", "scratch")):
        m = create_model("resnet20", num_classes=10, in_channels=1, norm=norm)
        m.load_state_dict(ref.state_dict())
        out[name] = train_step(m, x, y)
    return out


def _cost_rows(res: dict, baseline: str) -> list[list[str]]:
    rows = []
    for name, m in res.items():
        if not m.ok:
            rows.append([name, "failed", "", m.error or ""])
            continue
        med, lo, hi = (v * 1e3 for v in (m.median(), min(m.seconds), max(m.seconds)))
        cost = "1.00x (reference)" if name == baseline else fmt_ratio(paired_cost(m, res[baseline]))
        rows.append([name, f"{med:.3f}", f"{lo:.3f}-{hi:.3f}", cost])
    return rows


def build(args: argparse.Namespace, command: str) -> Section:
    """Run the batch-norm benchmark and return its Markdown section.

    Args:
        args: ``quick``, ``repeats`` (None: the default), ``threads``.
        command: the command line recorded with the tables.
    """
    run = Run.start(args, FULL, QUICK, "batch-norm benchmark")
    cfg, repeats = run.cfg, run.repeats
    shape = "x".join(map(str, cfg["shape"]))
    train, evals = _layer_contenders(cfg["shape"])
    print(f"[bn] layer {shape}", flush=True)
    r_train = run.interleave("one layer, training", train, target_s=cfg["target_s"], warmup=3)
    r_eval = run.interleave("one layer, eval", evals, target_s=cfg["target_s"], warmup=3)
    print(f"[bn] resnet20 step, batch {cfg['model_batch']}", flush=True)
    models = _model_contenders(cfg["model_batch"])
    r_model = run.interleave("resnet20 step", models, target_s=cfg["target_s"] * 2, warmup=1)
    head = ["implementation", "ms per call (median)", "min-max", "time vs torch's (cost of readable version)"]
    body = (
        f"### One layer, input {shape} float32, {repeats} repeats\n\n"
        "Training mode, forward + backward:\n\n" + markdown_table(head, _cost_rows(r_train, TORCH))
        + "\nEval mode, forward only (running statistics):\n\n" + markdown_table(head, _cost_rows(r_eval, TORCH))
        + f"\n### Whole network: resnet20 training step (SGD), batch {cfg['model_batch']} x 1x28x28, {repeats} repeats\n\n"
        + markdown_table(["model", "ms per step (median)", "min-max", "time vs norm='batch'"],
                         _cost_rows(r_model, next(iter(models))))
        + "\nNotes: ours is a few tensor operations, arranged to make few passes over the activations and "
        "few new tensors: in training, four passes forward (`x - mean`, its square, the per-channel scale and "
        "shift, the last two in place) besides two reductions, and five backward in one hand-written "
        "closed-form function (docs/BATCHNORM.md), not autograd's op-by-op graph; in eval, a per-channel "
        "scale and an in-place shift. torch's is one native kernel forward and one backward. `norm='batch'` "
        "(torch's) is the default everywhere.\n"
    )
    summary = []
    # issue 14's goal for the step: within 1.15x of torch's BN; the single layer is reported
    for label, res, base, goal in (("BN layer fwd+bwd", r_train, TORCH, None),
                                   ("resnet20 training step", r_model, next(iter(models)), STEP_GOAL)):
        other = next(n for n in res if n != base)
        if res[base].ok and res[other].ok:
            cost = paired_cost(res[other], res[base])[0]
            summary.append((f"{label}: time with our scratch BN / torch's BN", f"{cost:.2f}x",
                            "report" if goal is None else f"<= {goal:.2f}x",
                            "-" if goal is None else verdict(cost, goal, higher_is_better=False)))
    return run.section("4. Our from-scratch BatchNorm2d vs torch's", command, body, summary)


if __name__ == "__main__":
    sys.exit(run_standalone(build, first_paragraph(__doc__),
                            repeats=(FULL["repeats"], QUICK["repeats"])))
