"""Degradation: deeper plain networks train worse than shallower ones; residual networks do not.

He et al. 2015, "Deep Residual Learning for Image Recognition", fig. 6: on CIFAR-10 plain-56 has
higher *training* error than plain-20 throughout training (so it is not overfitting), while
ResNet-56 trains to lower error than ResNet-20. Here: the same four CIFAR networks (3x3 convs,
16-32-64 channels, option-A shortcuts) on Fashion-MNIST, same optimizer and schedule for all.
"""

from __future__ import annotations

from .report import Check, Report, plot_lines
from .runner import Context, RunSpec, cifar_net

__all__ = ["CLAIM", "NAME", "run"]

NAME = "degradation"
CLAIM = ("Deeper plain networks train worse than shallower ones, residual networks do not "
         "(He et al. 2015, fig. 6: plain-20/56 vs ResNet-20/56).")

# Differences in training error smaller than this are treated as "no difference".
MARGIN = 0.01

BUDGET = {
    # depths (shallow, deep), widths, training subset, epochs, step cap, test samples
    "smoke": dict(depths=(8, 14), widths=(4, 8, 16), subset=256, epochs=1, max_steps=3, test=128, image_size=14),
    "full": dict(depths=(20, 56), widths=(16, 32, 64), subset=8000, epochs=4, max_steps=None, test=2000,
                 image_size=None),
}


def run(ctx: Context) -> Report:
    """Train plain and residual nets of two depths; compare final training errors."""
    b = BUDGET[ctx.budget]
    data = dict(subset=b["subset"], test_samples=b["test"], image_size=b["image_size"])
    shallow, deep = b["depths"]
    specs = [
        RunSpec(f"{kind}-{depth}", cifar_net(depth, residual=kind == "resnet", widths=b["widths"]),
                batch_size=128 if not ctx.smoke else 32, epochs=b["epochs"], lr=0.1,
                max_steps_per_epoch=b["max_steps"], data=data, seed=ctx.seed,
                info={"kind": kind, "depth": depth})
        for kind in ("plain", "resnet") for depth in (shallow, deep)
    ]
    results = {s.label: ctx.train(s) for s in specs}

    def err(label: str, key: str = "train_acc") -> float:
        return 1.0 - results[label].last.get(key, 0.0)

    rows = [[label, r.info["depth"], r.params, 100 * err(label), 100 * err(label, "test_acc"),
             r.last.get("train_loss"), r.seconds] for label, r in results.items()]
    ps, pd, rs, rd = (f"plain-{shallow}", f"plain-{deep}", f"resnet-{shallow}", f"resnet-{deep}")
    checks = [
        Check(f"{pd} has a higher training error than {ps}", err(pd) > err(ps) + MARGIN,
              f"final-epoch training error {100 * err(pd):.2f}% vs {100 * err(ps):.2f}% "
              f"(needs > {100 * MARGIN:.0f} pp more)"),
        Check(f"{rd} does not train worse than {rs}", err(rd) <= err(rs) + MARGIN,
              f"final-epoch training error {100 * err(rd):.2f}% vs {100 * err(rs):.2f}% "
              f"(allowed up to {100 * MARGIN:.0f} pp more)"),
    ]
    findings = [f"{rd} vs {pd}: training error {100 * err(rd):.2f}% vs {100 * err(pd):.2f}%, "
                f"test error {100 * err(rd, 'test_acc'):.2f}% vs {100 * err(pd, 'test_acc'):.2f}%"]

    styles = {ps: "--", pd: "--", rs: "-", rd: "-"}
    plot_lines({k: (r.curve("train_acc")[0], [100 * (1 - a) for a in r.curve("train_acc")[1]])
                for k, r in results.items()}, ctx.out / "train_error.png", title="Training error (running, per epoch)",
               xlabel="epoch", ylabel="training error (%)", styles=styles)
    plot_lines({k: (r.curve("test_acc")[0], [100 * (1 - a) for a in r.curve("test_acc")[1]])
                for k, r in results.items()}, ctx.out / "test_error.png", title="Test error", xlabel="epoch",
               ylabel="test error (%)", styles=styles)
    window = max(1, min(len(r.step_losses) for r in results.values()) // 20)
    plot_lines({k: (list(range(1, len(r.step_losses) + 1)), _smooth(r.step_losses, window))
                for k, r in results.items()},
               ctx.out / "train_loss_steps.png", title=f"Training loss per step (moving average of {window})",
               xlabel="step", ylabel="cross-entropy", styles=styles)

    return Report(
        claim=CLAIM,
        setup={
            "data": f"Fashion-MNIST, {b['subset']} training images (stratified), first {b['test']} test images, "
                    f"no augmentation (the claim is about optimization)",
            "models": f"CIFAR ResNet/plain nets of depth {shallow} and {deep}, widths {b['widths']}, BN, "
                      "option-A shortcuts",
            "training": f"SGD momentum 0.9 (Nesterov), lr 0.1 one-cycle, weight decay 5e-4, batch "
                        f"{specs[0].batch_size}, {b['epochs']} epochs, seed {ctx.seed}",
            "training error": "running average over the last epoch (as the paper's curves)",
        },
        columns=["run", "depth", "params", "train error %", "test error %", "train loss", "seconds"],
        rows=rows, checks=checks, plots=["train_error.png", "test_error.png", "train_loss_steps.png"],
        data={"runs": {k: r.to_dict() for k, r in results.items()}}, findings=findings,
        notes=[f"{b['epochs']} epochs on {b['subset']} images is far shorter than the paper's 64k iterations; "
               "the comparison is of the early phase of training."] if not ctx.smoke else [],
    )


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out
