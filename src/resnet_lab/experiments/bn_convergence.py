"""Batch normalization speeds up training (Ioffe & Szegedy 2015, "Batch Normalization:
Accelerating Deep Network Training by Reducing Internal Covariate Shift", fig. 2 and sec. 4.2).

The same plain-20 network (He et al.'s CIFAR plain net, so no shortcut helps the un-normalized
version) with PyTorch's BN, with our from-scratch BN, and with no normalization, all from the same
initial weights, data order and learning rate. Speed is measured as in Ioffe & Szegedy's fig. 2
and table 2 ("steps to match Inception's accuracy"): the targets are where the un-normalized net
ends (its final smoothed training loss, its best test accuracy), and each run is timed in optimizer
steps (and seconds) and epochs until it first gets there. The targets thus adapt to the budget and
are always reached by the baseline.
Our BN computes the same function as PyTorch's, so those two curves should coincide.
"""

from __future__ import annotations

import math

from .report import Check, Report, plot_lines
from .runner import Context, RunSpec, cifar_net, ema, first_at_or_below

__all__ = ["CLAIM", "NAME", "run"]

NAME = "bn_convergence"
CLAIM = ("Batch normalization speeds up training; our from-scratch BN trains exactly like torch's "
         "(Ioffe & Szegedy 2015).")

BELOW_CHANCE = 0.1  # a target must be at least this far past chance (loss ln(C), accuracy 1/C)
SPEEDUP = 0.8  # BN must need at most this fraction of the steps without normalization
COINCIDE_ACC = 0.01  # final test accuracies of scratch and torch BN within 1 pp
COINCIDE_LOSS = 0.05  # mean |difference| of their smoothed loss curves

BUDGET = {
    "smoke": dict(depth=8, widths=(4, 8, 16), subset=256, epochs=1, max_steps=4, test=128, image_size=14,
                  batch=32),
    "full": dict(depth=20, widths=(16, 32, 64), subset=6000, epochs=3, max_steps=None, test=2000, image_size=None,
                 batch=128),
}
NORMS = {"torch BN": "batch", "scratch BN": "scratch", "no norm": "none"}


def run(ctx: Context) -> Report:
    """Train the same plain net with three normalizations; compare steps/epochs to targets."""
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

    # Targets: where the un-normalized baseline ends (Ioffe & Szegedy's "steps to match").
    base = results["no norm"]
    finite = [v for v in base.step_losses if math.isfinite(v)]
    # If the baseline never leaves chance level, "where it ends" is where everyone starts; the
    # target is then "clearly below chance" (and a baseline that never gets there never reaches it).
    num_classes = len(ctx.data(batch_size=b["batch"], **data).info.classes)
    chance_loss, chance_acc = math.log(num_classes), 1.0 / num_classes
    loss_target = min(ema(finite)[-1] if finite else math.inf, chance_loss - BELOW_CHANCE)
    acc_target = max(max((rec["test_acc"] for rec in base.epochs), default=0.0), chance_acc + BELOW_CHANCE)
    b = {**b, "loss_target": loss_target, "acc_target": acc_target}
    figures = {}
    for label, r in results.items():
        smooth = ema(r.step_losses)
        steps = first_at_or_below(smooth, b["loss_target"])
        epochs = next((float(rec["epoch"]) for rec in r.epochs if rec["test_acc"] >= b["acc_target"]), math.inf)
        sec_per_step = sum(rec["train_seconds"] for rec in r.epochs) / max(len(r.step_losses), 1)
        figures[label] = dict(steps=steps, seconds=steps * sec_per_step, epochs=epochs, smooth=smooth,
                              sec_per_epoch=sum(rec["train_seconds"] for rec in r.epochs) / max(len(r.epochs), 1))
    rows = [[label, figures[label]["steps"], figures[label]["seconds"], figures[label]["epochs"],
             100 * r.last.get("test_acc", 0.0), r.last.get("train_loss"), figures[label]["sec_per_epoch"]]
            for label, r in results.items()]

    bn, scratch, none = figures["torch BN"], figures["scratch BN"], figures["no norm"]
    n = min(len(bn["smooth"]), len(scratch["smooth"]))
    loss_gap = sum(abs(a - c) for a, c in zip(bn["smooth"][:n], scratch["smooth"][:n])) / max(n, 1)
    drift = next((i + 1 for i, (x, y) in enumerate(zip(results["torch BN"].step_losses, results["scratch BN"].step_losses))
                  if abs(x - y) > 1e-3), None)
    acc_gap = abs(results["torch BN"].last.get("test_acc", 0) - results["scratch BN"].last.get("test_acc", 0))
    faster = bn["steps"] < math.inf and (none["steps"] == math.inf or bn["steps"] <= SPEEDUP * none["steps"])
    checks = [
        Check("BN reaches the training loss no norm ends with in far fewer steps", faster,
              f"steps to smoothed training loss <= {b['loss_target']:.4f} (where no norm ends, at most chance "
              f"{chance_loss:.3f} - {BELOW_CHANCE}): torch BN {_n(bn['steps'])}, "
              f"no norm {_n(none['steps'])} (needs <= {SPEEDUP:.0%} of it)"
              + (f"; no norm diverged after {len(finite)} steps" if base.diverged else "")),
        Check("scratch-BN and torch-BN curves coincide", loss_gap <= COINCIDE_LOSS and acc_gap <= COINCIDE_ACC,
              f"mean |smoothed loss difference| {loss_gap:.4f} (<= {COINCIDE_LOSS}), final test accuracy "
              f"difference {100 * acc_gap:.2f} pp (<= {100 * COINCIDE_ACC:.0f} pp)"),
    ]
    findings = [
        f"epochs to {100 * b['acc_target']:.2f}% test accuracy (the best of no norm, at least chance + "
        f"{100 * BELOW_CHANCE:.0f} pp): " + ", ".join(
            f"{k} {_n(v['epochs'])}" for k, v in figures.items()),
        "scratch vs torch BN per-step training loss: "
        + (f"equal to 1e-3 up to step {drift - 1}, then the float rounding differences grow (as between any "
           "two BN kernels)" if drift else "equal to 1e-3 at every step"),
        "seconds per epoch: " + ", ".join(f"{k} {v['sec_per_epoch']:.1f}" for k, v in figures.items())
        + " (our BN is plain autograd over tensor ops, torch's is a fused kernel)",
    ]
    styles = {"torch BN": "-", "scratch BN": ":", "no norm": "--"}
    plot_lines({k: (list(range(1, len(v["smooth"]) + 1)), v["smooth"]) for k, v in figures.items()},
               ctx.out / "train_loss.png", title="Training loss per step (EMA 0.1)", xlabel="step",
               ylabel="cross-entropy", hline=b["loss_target"], styles=styles)
    plot_lines({k: (r.curve("test_acc")[0], [100 * a for a in r.curve("test_acc")[1]]) for k, r in results.items()},
               ctx.out / "test_acc.png", title="Test accuracy", xlabel="epoch", ylabel="test accuracy (%)",
               hline=100 * b["acc_target"], styles=styles)
    return Report(
        claim=CLAIM,
        setup={
            "data": f"Fashion-MNIST, {b['subset']} training images, first {b['test']} test images, no augmentation",
            "model": f"plain-{b['depth']} (no shortcuts), widths {b['widths']}, norm torch BN / scratch BN / none",
            "training": f"SGD momentum 0.9 (Nesterov), lr {lr} one-cycle for all three, weight decay 5e-4, "
                        f"batch {b['batch']}, {b['epochs']} epochs, same seed ({ctx.seed}) so same initial weights",
            "targets": f"where no norm ends, and at least {BELOW_CHANCE} past chance: smoothed training loss {b['loss_target']:.4f}; best test accuracy "
                       f"{100 * b['acc_target']:.2f}%",
        },
        columns=["run", "steps to loss target", "seconds to loss target", "epochs to acc target", "final test acc %",
                 "final train loss", "s/epoch"],
        rows=rows, checks=checks, findings=findings, plots=["train_loss.png", "test_acc.png"],
        data={"runs": {k: r.to_dict() for k, r in results.items()}, "loss_gap": loss_gap, "acc_gap": acc_gap},
        notes=["One learning rate for all three runs; BN would also allow a higher one (Ioffe & Szegedy sec. 3.3), "
               "which this experiment does not use."],
    )


def _n(v: float) -> str:
    return "never" if v == math.inf else f"{v:g}"
