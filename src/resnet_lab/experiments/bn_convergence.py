"""Batch normalization speeds up training (Ioffe & Szegedy 2015, "Batch Normalization:
Accelerating Deep Network Training by Reducing Internal Covariate Shift", fig. 2 and sec. 4.2).

The same plain-20 network (He et al.'s CIFAR plain net, so no shortcut helps the un-normalized
version) with PyTorch's BN, with our from-scratch BN, and with no normalization, all from the same
initial weights, data order and learning rate. Speed is measured as in Ioffe & Szegedy's table 2
("steps to reach a given accuracy"), against fixed absolute targets stated below and chosen before
the run, independent of any run's outcome: optimizer steps (and seconds) until the smoothed training
loss first reaches ``LOSS_TARGET``, and epochs until test accuracy first reaches ``ACC_TARGET``. A
net that never gets there within the budget counts as infinitely slow.
Our BN computes the same function as PyTorch's; in float32 the rounding differences of two kernels
compound over training, so "coincide" is judged by the largest per-epoch test-accuracy gap, with a
tolerance fixed in advance (``COINCIDE_ACC``).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from .report import Check, Report, plot_lines
from .runner import Context, RunSpec, cifar_net, ema, first_at_or_below

__all__ = ["ACC_TARGET", "CLAIM", "COINCIDE_ACC", "LOSS_TARGET", "NAME", "claim_checks", "run"]

NAME = "bn_convergence"
CLAIM = ("Batch normalization speeds up training; our from-scratch BN trains like torch's "
         "(Ioffe & Szegedy 2015).")

# Fixed, absolute targets (set before the full run; not derived from any run's figures).
LOSS_TARGET = 1.0  # smoothed (EMA 0.1) training cross-entropy; chance on 10 classes is ln 10 = 2.303
ACC_TARGET = 0.70  # test accuracy; chance is 10%
COINCIDE_ACC = 0.02  # largest per-epoch test-accuracy gap between scratch and torch BN: 2 pp

BUDGET = {
    "smoke": dict(depth=8, widths=(4, 8, 16), subset=256, epochs=1, max_steps=4, test=128, image_size=14,
                  batch=32),
    "full": dict(depth=20, widths=(16, 32, 64), subset=6000, epochs=3, max_steps=None, test=2000, image_size=None,
                 batch=128),
}
NORMS = {"torch BN": "batch", "scratch BN": "scratch", "no norm": "none"}


def run(ctx: Context) -> Report:
    """Train the same plain net with three normalizations; compare steps/epochs to fixed targets."""
    b = BUDGET[ctx.budget]
    data = dict(subset=b["subset"], test_samples=b["test"], image_size=b["image_size"])
    # A learning rate the un-normalized net survives: at 0.05 it diverged (NaN at step 67 of the
    # first full run), which says BN allows higher rates but leaves no speed to compare.
    lr = 0.02
    results = {}
    for label, norm in NORMS.items():
        spec = RunSpec(label, cifar_net(b["depth"], residual=False, norm=norm, widths=b["widths"]),
                       batch_size=b["batch"], epochs=b["epochs"], lr=lr, max_steps_per_epoch=b["max_steps"], data=data,
                       seed=ctx.seed, info={"norm": norm})
        results[label] = ctx.train(spec)

    figures = {}
    for label, r in results.items():
        smooth = ema(r.step_losses)
        # NaN (divergence) compares False, so a diverged run never reaches the target.
        steps = first_at_or_below(smooth, LOSS_TARGET)
        epochs = next((float(rec["epoch"]) for rec in r.epochs if rec["test_acc"] >= ACC_TARGET), math.inf)
        sec_per_step = sum(rec["train_seconds"] for rec in r.epochs) / max(len(r.step_losses), 1)
        figures[label] = dict(steps=steps, seconds=steps * sec_per_step, epochs=epochs, smooth=smooth,
                              sec_per_epoch=sum(rec["train_seconds"] for rec in r.epochs) / max(len(r.epochs), 1))
    rows = [[label, _n(figures[label]["steps"]), _n(figures[label]["seconds"]), _n(figures[label]["epochs"]),
             100 * r.last.get("test_acc", 0.0), r.last.get("train_loss"), figures[label]["sec_per_epoch"]]
            for label, r in results.items()]

    bn, scratch = figures["torch BN"], figures["scratch BN"]
    n = min(len(bn["smooth"]), len(scratch["smooth"]))
    loss_gap = sum(abs(a - c) for a, c in zip(bn["smooth"][:n], scratch["smooth"][:n])) / max(n, 1)
    drift = next((i + 1 for i, (x, y) in enumerate(zip(results["torch BN"].step_losses, results["scratch BN"].step_losses))
                  if abs(x - y) > 1e-3), None)
    acc_gaps = [abs(x["test_acc"] - y["test_acc"]) for x, y in zip(results["torch BN"].epochs, results["scratch BN"].epochs)]
    acc_gap = max(acc_gaps, default=math.inf)
    checks = claim_checks({k: v["steps"] for k, v in figures.items()}, {k: v["epochs"] for k, v in figures.items()},
                          acc_gaps, no_norm_diverged=results["no norm"].diverged)
    findings = [
        "scratch BN steps to the loss target / epochs to the accuracy target: "
        f"{_n(scratch['steps'])} / {_n(scratch['epochs'])}",
        f"mean |smoothed training loss difference| scratch vs torch BN: {loss_gap:.4f}",
        "scratch vs torch BN per-step training loss: "
        + (f"equal to 1e-3 up to step {drift - 1}, then the float rounding differences grow (as between any "
           "two BN kernels)" if drift else "equal to 1e-3 at every step"),
        "seconds per epoch: " + ", ".join(f"{k} {v['sec_per_epoch']:.1f}" for k, v in figures.items())
        + " (our BN is plain autograd over tensor ops, torch's is a fused kernel)",
    ]
    styles = {"torch BN": "-", "scratch BN": ":", "no norm": "--"}
    plot_lines({k: (list(range(1, len(v["smooth"]) + 1)), v["smooth"]) for k, v in figures.items()},
               ctx.out / "train_loss.png", title="Training loss per step (EMA 0.1)", xlabel="step",
               ylabel="cross-entropy", hline=LOSS_TARGET, styles=styles)
    plot_lines({k: (r.curve("test_acc")[0], [100 * a for a in r.curve("test_acc")[1]]) for k, r in results.items()},
               ctx.out / "test_acc.png", title="Test accuracy", xlabel="epoch", ylabel="test accuracy (%)",
               hline=100 * ACC_TARGET, styles=styles)
    return Report(
        claim=CLAIM,
        setup={
            "data": f"Fashion-MNIST, {b['subset']} training images, first {b['test']} test images, no augmentation",
            "model": f"plain-{b['depth']} (no shortcuts), widths {b['widths']}, norm torch BN / scratch BN / none",
            "training": f"SGD momentum 0.9 (Nesterov), lr {lr} one-cycle for all three, weight decay 5e-4, "
                        f"batch {b['batch']}, {b['epochs']} epochs, same seed ({ctx.seed}) so same initial weights",
            "targets": f"fixed in advance: smoothed training loss <= {LOSS_TARGET}; test accuracy >= "
                       f"{100 * ACC_TARGET:.0f}%; scratch vs torch BN per-epoch test accuracy within "
                       f"{100 * COINCIDE_ACC:.0f} pp",
        },
        columns=["run", "steps to loss target", "seconds to loss target", "epochs to acc target", "final test acc %",
                 "final train loss", "s/epoch"],
        rows=rows, checks=checks, findings=findings, plots=["train_loss.png", "test_acc.png"],
        data={"runs": {k: r.to_dict() for k, r in results.items()}, "loss_gap": loss_gap, "acc_gap": acc_gap,
              "acc_gaps": acc_gaps, "targets": {"loss": LOSS_TARGET, "acc": ACC_TARGET, "coincide_acc": COINCIDE_ACC}},
        notes=["One learning rate for all three runs; BN would also allow a higher one (Ioffe & Szegedy sec. 3.3), "
               "which this experiment does not use."],
    )


def claim_checks(steps: Mapping[str, float], epochs: Mapping[str, float], acc_gaps: Sequence[float],
                 no_norm_diverged: bool = False) -> list[Check]:
    """The claim's two checks from the measured speeds and the scratch-vs-torch BN gaps.

    Args:
        steps: ``{"torch BN": ..., "no norm": ...}`` optimizer steps until the smoothed training
            loss reached ``LOSS_TARGET`` (``math.inf``: never).
        epochs: the same for the epochs until test accuracy reached ``ACC_TARGET``.
        acc_gaps: per-epoch ``|test accuracy of scratch BN - of torch BN|``.
        no_norm_diverged: the un-normalized run diverged (said in the evidence).
    """
    acc_gap = max(acc_gaps, default=math.inf)
    # Faster on both measures; a net that never reaches a target is infinitely slow, and two nets
    # that both never reach it are not "faster" either way.
    faster = (steps["torch BN"] < steps["no norm"]) and (epochs["torch BN"] < epochs["no norm"])
    return [
        Check("BN reaches the fixed targets sooner than no norm", faster,
              f"steps to smoothed training loss <= {LOSS_TARGET}: torch BN {_n(steps['torch BN'])}, no norm "
              f"{_n(steps['no norm'])}; epochs to test accuracy >= {100 * ACC_TARGET:.0f}%: torch BN "
              f"{_n(epochs['torch BN'])}, no norm {_n(epochs['no norm'])} (never = not reached in the budget)"
              + ("; no norm diverged" if no_norm_diverged else "")),
        Check("scratch-BN and torch-BN curves coincide", acc_gap <= COINCIDE_ACC,
              f"largest per-epoch test accuracy gap {100 * acc_gap:.2f} pp over {len(acc_gaps)} epochs "
              f"(<= {100 * COINCIDE_ACC:.0f} pp)"),
    ]


def _n(v: float) -> str:
    return "never" if v == math.inf else f"{v:g}"
