"""Degradation: deeper plain networks train worse than shallower ones; residual networks do not.

He et al. 2015, "Deep Residual Learning for Image Recognition", fig. 6: on CIFAR-10 plain-56 has
higher *training* error than plain-20 throughout training (so it is not overfitting), while
ResNet-56 trains to lower error than ResNet-20. Here: the same four CIFAR networks (3x3 convs,
16-32-64 channels, option-A shortcuts) on Fashion-MNIST, same optimizer and schedule for all; and
on CIFAR-10 too (3 channels, 32 px, same budget structure) when its files are found
(``data_dir``, ``$RESNET_LAB_DATA`` or the download cache), else the report says it was skipped.
"""

from __future__ import annotations

from typing import Mapping

from ..data import DataNotFoundError
from .report import Check, Report, plot_lines
from .runner import Context, RunResult, RunSpec, cifar_net

__all__ = ["CLAIM", "DATASETS", "NAME", "claim_checks", "run"]

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
# name in resnet_lab.data -> (label in the report, file prefix of its plots, image size override)
# CIFAR-10 keeps its native 32 px (the paper's setting) at every budget.
DATASETS = {"fashion-mnist": ("Fashion-MNIST", "", None), "cifar10": ("CIFAR-10", "cifar10_", 32)}


def run(ctx: Context) -> Report:
    """Train plain and residual nets of two depths on each dataset found; compare final training errors."""
    b = BUDGET[ctx.budget]
    shallow, deep = b["depths"]
    batch = 128 if not ctx.smoke else 32
    rows, checks, findings, plots, notes, ran = [], [], [], [], [], []
    all_runs: dict[str, dict] = {}
    for dataset, (title, prefix, size) in DATASETS.items():
        data = dict(subset=b["subset"], test_samples=b["test"], image_size=size or b["image_size"])
        try:
            bundle = ctx.data(dataset, batch_size=batch, **data)
        except DataNotFoundError as e:
            # Fashion-MNIST never raises here (the context falls back to `fake` with a note).
            first = str(e).splitlines()[0]
            notes.append(f"{title} was skipped: its files were not found ({first}). To include it, put "
                         "torchvision's `cifar-10-batches-py/` folder in --data-dir DIR or in $RESNET_LAB_DATA "
                         "(or run once with --download where there is network).")
            ctx.log(f"[{ctx.name}] {title} skipped: not found")
            continue
        ran.append(title)
        specs = [
            RunSpec(f"{kind}-{depth}", cifar_net(depth, residual=kind == "resnet", widths=b["widths"]),
                    batch_size=batch, epochs=b["epochs"], lr=0.1, max_steps_per_epoch=b["max_steps"], data=data,
                    seed=ctx.seed, info={"kind": kind, "depth": depth, "dataset": dataset})
            for kind in ("plain", "resnet") for depth in (shallow, deep)
        ]
        results = {s.label: ctx.train(s, data=bundle) for s in specs}
        all_runs[dataset] = {k: r.to_dict() for k, r in results.items()}
        c, r_, f, p = _compare(ctx, results, shallow, deep, title, prefix)
        rows += [[title, *row] for row in r_]
        checks += c
        findings += f
        plots += p

    return Report(
        claim=CLAIM,
        setup={
            "datasets run": ", ".join(ran),
            "data": f"{b['subset']} training images (stratified), first {b['test']} test images, no augmentation "
                    f"(the claim is about optimization); Fashion-MNIST at "
                    f"{b['image_size'] or 28} px, CIFAR-10 at 32 px (3 channels)",
            "models": f"CIFAR ResNet/plain nets of depth {shallow} and {deep}, widths {b['widths']}, BN, "
                      "option-A shortcuts",
            "training": f"SGD momentum 0.9 (Nesterov), lr 0.1 one-cycle, weight decay 5e-4, batch "
                        f"{batch}, {b['epochs']} epochs, seed {ctx.seed}, same for every dataset",
            "training error": "running average over the last epoch (as the paper's curves)",
        },
        columns=["dataset", "run", "depth", "params", "train error %", "test error %", "train loss", "seconds"],
        rows=rows, checks=checks, plots=plots,
        data={"datasets": ran, "runs": all_runs.get("fashion-mnist", {}), "runs_by_dataset": all_runs},
        findings=[f"datasets run: {', '.join(ran)}"] + findings,
        notes=notes + ([f"{b['epochs']} epochs on {b['subset']} images is far shorter than the paper's 64k "
                        "iterations; the comparison is of the early phase of training."] if not ctx.smoke else []),
    )


def claim_checks(train_error: Mapping[str, float], shallow: int, deep: int, title: str) -> list[Check]:
    """The claim's two checks for one dataset, from each run's final-epoch training error.

    Args:
        train_error: ``{label: training error as a fraction}`` for the labels ``plain-{depth}``
            and ``resnet-{depth}`` of both depths.
        shallow, deep: the two depths.
        title: the dataset's name, for the questions.
    """
    ps, pd, rs, rd = (f"plain-{shallow}", f"plain-{deep}", f"resnet-{shallow}", f"resnet-{deep}")
    err = train_error
    return [
        Check(f"{title}: {pd} has a higher training error than {ps}", err[pd] > err[ps] + MARGIN,
              f"final-epoch training error {100 * err[pd]:.2f}% vs {100 * err[ps]:.2f}% "
              f"(needs > {100 * MARGIN:.0f} pp more)"),
        Check(f"{title}: {rd} does not train worse than {rs}", err[rd] <= err[rs] + MARGIN,
              f"final-epoch training error {100 * err[rd]:.2f}% vs {100 * err[rs]:.2f}% "
              f"(allowed up to {100 * MARGIN:.0f} pp more)"),
    ]


def _compare(ctx: Context, results: dict[str, RunResult], shallow: int, deep: int, title: str,
             prefix: str) -> tuple[list[Check], list[list], list[str], list[str]]:
    """Checks, table rows, findings and plots for one dataset's four runs."""

    def err(label: str, key: str = "train_acc") -> float:
        return 1.0 - results[label].last.get(key, 0.0)

    rows = [[label, r.info["depth"], r.params, 100 * err(label), 100 * err(label, "test_acc"),
             r.last.get("train_loss"), r.seconds] for label, r in results.items()]
    ps, pd, rs, rd = (f"plain-{shallow}", f"plain-{deep}", f"resnet-{shallow}", f"resnet-{deep}")
    checks = claim_checks({label: err(label) for label in results}, shallow, deep, title)
    findings = [f"{title}, {rd} vs {pd}: training error {100 * err(rd):.2f}% vs {100 * err(pd):.2f}%, "
                f"test error {100 * err(rd, 'test_acc'):.2f}% vs {100 * err(pd, 'test_acc'):.2f}%"]

    styles = {ps: "--", pd: "--", rs: "-", rd: "-"}
    plot_lines({k: (r.curve("train_acc")[0], [100 * (1 - a) for a in r.curve("train_acc")[1]])
                for k, r in results.items()}, ctx.out / f"{prefix}train_error.png",
               title=f"{title}: training error (running, per epoch)", xlabel="epoch", ylabel="training error (%)",
               styles=styles)
    plot_lines({k: (r.curve("test_acc")[0], [100 * (1 - a) for a in r.curve("test_acc")[1]])
                for k, r in results.items()}, ctx.out / f"{prefix}test_error.png", title=f"{title}: test error",
               xlabel="epoch", ylabel="test error (%)", styles=styles)
    window = max(1, min(len(r.step_losses) for r in results.values()) // 20)
    plot_lines({k: (list(range(1, len(r.step_losses) + 1)), _smooth(r.step_losses, window))
                for k, r in results.items()},
               ctx.out / f"{prefix}train_loss_steps.png",
               title=f"{title}: training loss per step (moving average of {window})",
               xlabel="step", ylabel="cross-entropy", styles=styles)
    plots = [f"{prefix}train_error.png", f"{prefix}test_error.png", f"{prefix}train_loss_steps.png"]
    return checks, rows, findings, plots


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out
