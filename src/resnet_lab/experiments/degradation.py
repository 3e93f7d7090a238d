"""Degradation: deeper plain networks train worse than shallower ones; residual networks do not.

He et al. 2015, "Deep Residual Learning for Image Recognition", fig. 6: on CIFAR-10 plain-56 has
higher *training* error than plain-20 throughout training (so it is not overfitting), while
ResNet-56 trains to lower error than ResNet-20. Here: the same four CIFAR networks (3x3 convs,
16-32-64 channels, option-A shortcuts) on Fashion-MNIST, same optimizer and schedule for all; and
on CIFAR-10 too (3 channels, 32 px, same budget structure) when its files are found
(``data_dir``, ``$RESNET_LAB_DATA`` or the download cache), else the report says it was skipped.

Every net is trained with several seeds and the checks compare means against the seed spread.
Why the protocol has a warm-up and zero-initialized residual branches: without them ResNet-56
starts with a residual stream ~1.9x and a gradient ~2x larger than ResNet-20's (each of its 27
blocks adds a unit-variance BN branch to the stream, against 9), so lr 0.1 hits it twice as hard
in the first steps, and one machine's float rounding was enough to send it from 12% to 23%
training error at this budget (issue 15). He et al. warm up at 0.01 before going to 0.1 for their
deepest nets (sec. 4.2); zero-initializing the last BN scale of each residual branch (Goyal et al.
2017) makes every residual net start as the identity, at the same scale whatever its depth. The
report measures both figures at initialization (``init_gradient``).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from ..data import DataNotFoundError
from .report import Check, Report, Spread, exceeds, plot_lines, rule_text, within
from .runner import Context, ModelFactory, RunSpec, SeedResults, cifar_net, count

__all__ = ["CLAIM", "DATASETS", "NAME", "claim_checks", "init_gradient", "run"]

NAME = "degradation"
CLAIM = ("Deeper plain networks train worse than shallower ones, residual networks do not "
         "(He et al. 2015, fig. 6: plain-20/56 vs ResNet-20/56).")

# Differences in training error smaller than this are treated as "no difference": the deep plain
# net must be worse by more than this (and than the seed spread); the deep residual net may be
# worse by at most this, even one seed sd up on each side.
MARGIN = 0.01

BUDGET = {
    # depths (shallow, deep), widths, training subset, epochs, step cap, test samples, seeds, and
    # He et al.'s constant warm-up (steps at WARMUP_LR before the one-cycle to LR)
    "smoke": dict(depths=(8, 14), widths=(4, 8, 16), subset=256, epochs=1, max_steps=3, test=128, image_size=14,
                  seeds=2, warmup=1),
    "full": dict(depths=(20, 56), widths=(16, 32, 64), subset=8000, epochs=4, max_steps=None, test=2000,
                 image_size=None, seeds=3, warmup=40),
}
LR, WARMUP_LR = 0.1, 0.01
# name in resnet_lab.data -> (label in the report, file prefix of its plots, image size override)
# CIFAR-10 keeps its native 32 px (the paper's setting) at every budget.
DATASETS = {"fashion-mnist": ("Fashion-MNIST", "", None), "cifar10": ("CIFAR-10", "cifar10_", 32)}


def run(ctx: Context) -> Report:
    """Train plain and residual nets of two depths on each dataset found, over seeds; compare
    final training errors."""
    b = BUDGET[ctx.budget]
    shallow, deep = b["depths"]
    batch = 128 if not ctx.smoke else 32
    seeds = ctx.seeds(b["seeds"])
    rows, checks, findings, plots, notes, ran = [], [], [], [], [], []
    all_runs: dict[str, dict] = {}
    for dataset, (title, prefix, size) in DATASETS.items():
        data = dict(subset=b["subset"], test_samples=b["test"], image_size=size or b["image_size"])
        try:
            bundle = ctx.data(dataset, batch_size=batch, **data)
        except DataNotFoundError as e:
            # Fashion-MNIST never raises here (the context falls back to `fake` with a note).
            first = str(e).splitlines()[0].split(". Get it")[0]  # what was not found where; the ways come next
            notes.append(f"{title} was skipped: its files were not found ({first}). To include it, put "
                         "torchvision's `cifar-10-batches-py/` folder in --data-dir DIR or in $RESNET_LAB_DATA "
                         "(or, where there is network, fetch it once into the cache the library reads: "
                         "`resnet-lab train --model resnet20 --dataset cifar10 --download --epochs 1`; "
                         "`experiment` itself has no --download).")
            ctx.log(f"[{ctx.name}] {title} skipped: not found")
            continue
        ran.append(title)
        specs = _specs(b, batch, data, dataset)
        results = {s.label: ctx.train_seeds(s, seeds, bundle) for s in specs}
        for r in results.values():
            r.drop_models()
        all_runs[dataset] = {k: r.to_dict() for k, r in results.items()}
        probe = {s.label: init_gradient(s.model, bundle, seeds) for s in specs}
        probe.update({f"{s.label} without zero-init": init_gradient(_factory(s.info, b, zero_init=False), bundle, seeds)
                      for s in specs if s.info["kind"] == "resnet"})
        c, r_, f, p = _compare(ctx, results, shallow, deep, title, prefix, len(bundle.info.classes))
        rows += [[title, *row] for row in r_]
        checks += c
        findings += f + [_probe_finding(title, probe)]
        plots += p

    return Report(
        claim=CLAIM,
        setup=_setup(b, shallow, deep, batch, seeds),
        columns=["dataset", "run", "depth", "params", "train error %", "test error %", "train loss", "diverged",
                 "seconds"],
        rows=rows, checks=checks, plots=plots,
        data={"datasets": ran, "runs": all_runs.get("fashion-mnist", {}), "runs_by_dataset": all_runs},
        findings=[f"datasets run: {', '.join(ran)}"] + findings,
        notes=notes + ([f"{count(b['epochs'], 'epoch')} on {b['subset']} images is far shorter than the paper's 64k "
                        "iterations; the comparison is of the early phase of training."] if not ctx.smoke else []),
    )


def _factory(info: Mapping, b: Mapping, *, zero_init: bool) -> ModelFactory:
    return cifar_net(info["depth"], residual=info["kind"] == "resnet", widths=b["widths"], zero_init_residual=zero_init)


def _specs(b: Mapping, batch: int, data: dict, dataset: str) -> list[RunSpec]:
    """The four nets, trained alike: He et al.'s constant warm-up at ``WARMUP_LR``, then one-cycle
    to ``LR``; the residual nets start with zero-initialized last BN scales (plain nets cannot:
    a zeroed branch would cut them)."""
    specs = []
    for kind in ("plain", "resnet"):
        for depth in b["depths"]:
            info = {"kind": kind, "depth": depth, "dataset": dataset}
            specs.append(RunSpec(f"{kind}-{depth}", _factory(info, b, zero_init=kind == "resnet"), batch_size=batch,
                                 epochs=b["epochs"], lr=LR, warmup_lr=WARMUP_LR, warmup_steps=b["warmup"],
                                 max_steps_per_epoch=b["max_steps"], data=data, info=info))
    return specs


def _setup(b: Mapping, shallow: int, deep: int, batch: int, seeds: Sequence[int]) -> dict[str, str]:
    return {
        "data": f"{b['subset']} training images (stratified), first {b['test']} test images, no augmentation "
                f"(the claim is about optimization); Fashion-MNIST at "
                f"{b['image_size'] or 28} px, CIFAR-10 at 32 px (3 channels)",
        "models": f"CIFAR ResNet/plain nets of depth {shallow} and {deep}, widths {b['widths']}, BN, "
                  "option-A shortcuts; residual nets with the last BN scale of each block at zero "
                  "(zero_init_residual, Goyal et al. 2017)",
        "training": f"SGD momentum 0.9 (Nesterov), weight decay 5e-4, batch {batch}: {count(b['warmup'], 'step')} at lr "
                    f"{WARMUP_LR} (He et al. 2015's warm-up), then {count(b['epochs'], 'epoch')} of one-cycle to lr {LR} "
                    "(its first quarter a linear ramp); same for every net and dataset",
        "seeds": f"{', '.join(map(str, seeds))} (initial weights and data order; the same training subset); "
                 "figures are mean ± sd over seeds",
        "training error": "running average over the last epoch (as the paper's curves); a diverged seed counts "
                          "at chance level",
    }


def claim_checks(train_error: Mapping[str, Sequence[float]], shallow: int, deep: int, title: str) -> list[Check]:
    """The claim's two checks for one dataset, from each run's final-epoch training error per seed.

    Args:
        train_error: ``{label: [training error as a fraction, one per seed]}`` for the labels
            ``plain-{depth}`` and ``resnet-{depth}`` of both depths.
        shallow, deep: the two depths.
        title: the dataset's name, for the questions.
    """
    ps, pd, rs, rd = (f"plain-{shallow}", f"plain-{deep}", f"resnet-{shallow}", f"resnet-{deep}")
    err = {k: Spread.of(v) for k, v in train_error.items()}

    def both(a: str, c: str) -> str:
        return f"final-epoch training error {err[a].scaled(100).fmt()}% vs {err[c].scaled(100).fmt()}% " \
               f"(mean ± sd over {err[a].n} seeds)"

    return [
        Check(f"{title}: {pd} has a higher training error than {ps}", exceeds(err[pd], err[ps], MARGIN),
              f"{both(pd, ps)}; " + rule_text("exceeds", err[pd], err[ps], MARGIN, scale=100, unit=" pp")),
        Check(f"{title}: {rd} does not train worse than {rs}", within(err[rd], err[rs], MARGIN),
              f"{both(rd, rs)}; " + rule_text("within", err[rd], err[rs], MARGIN, scale=100, unit=" pp")),
    ]


def init_gradient(factory: ModelFactory, bundle, seeds: Sequence[int]) -> dict[str, Spread]:
    """The scale of a net at initialization, on the first training batch (training mode), per seed:
    the RMS of the residual stream entering the pooling, and the global norm of the gradient of the
    loss. Tells how hard the first steps at a given learning rate hit it.

    Args:
        factory: builds the net ``(num_classes, in_channels)`` (a CIFAR net: ``forward_features``).
        bundle: the data; its first training batch of epoch 0 is used.
        seeds: the initializations to measure.
    """
    bundle.train.set_epoch(0)
    x, y = next(iter(bundle.train))
    stream, grad = [], []
    for seed in seeds:
        torch.manual_seed(seed)
        model = factory(len(bundle.info.classes), bundle.info.input_size[0]).train()
        feats = model.forward_features(x)
        F.cross_entropy(model.forward_head(feats), y).backward()
        stream.append(float(feats.detach().pow(2).mean().sqrt()))
        grad.append(float(torch.sqrt(sum((p.grad.detach() ** 2).sum() for p in model.parameters()
                                         if p.grad is not None))))
    bundle.train.set_epoch(0)
    return {"stream_rms": Spread.of(stream), "grad_norm": Spread.of(grad)}


def _probe_finding(title: str, probe: Mapping[str, Mapping[str, Spread]]) -> str:
    return (f"{title}, at initialization (first training batch): "
            + "; ".join(f"{label}: stream RMS {v['stream_rms'].fmt()}, gradient norm {v['grad_norm'].fmt()}"
                        for label, v in probe.items()))


def _error(r: SeedResults, key: str, classes: int) -> Spread:
    """Final-epoch error over seeds; a diverged seed counts at chance level."""
    return Spread.of(1.0 - a for a in r.final(key, failed=1.0 / classes).values)


def _compare(ctx: Context, results: dict[str, SeedResults], shallow: int, deep: int, title: str,
             prefix: str, classes: int) -> tuple[list[Check], list[list], list[str], list[str]]:
    """Checks, table rows, findings and plots for one dataset's four nets (over seeds)."""
    train_err = {label: _error(r, "train_acc", classes) for label, r in results.items()}
    test_err = {label: _error(r, "test_acc", classes) for label, r in results.items()}
    rows = [[label, r.runs[0].info["depth"], r.runs[0].params, train_err[label].scaled(100),
             test_err[label].scaled(100), r.final("train_loss"), f"{r.diverged} of {len(r.runs)}",
             r.spread(lambda x: x.seconds)] for label, r in results.items()]
    ps, pd, rs, rd = (f"plain-{shallow}", f"plain-{deep}", f"resnet-{shallow}", f"resnet-{deep}")
    checks = claim_checks({label: list(e.values) for label, e in train_err.items()}, shallow, deep, title)
    findings = [f"{title}, {rd} vs {pd}: training error {train_err[rd].scaled(100).fmt()}% vs "
                f"{train_err[pd].scaled(100).fmt()}%, test error {test_err[rd].scaled(100).fmt()}% vs "
                f"{test_err[pd].scaled(100).fmt()}%",
                f"{title}, per seed training error %: " + "; ".join(
                    f"{label} " + " / ".join(f"{100 * v:.2f}" for v in e.values) for label, e in train_err.items())]
    return checks, rows, findings, _plots(ctx, results, (ps, pd, rs, rd), title, prefix)


def _plots(ctx: Context, results: dict[str, SeedResults], labels: Sequence[str], title: str, prefix: str) -> list[str]:
    """Mean curves over seeds with a band of ± one sd: training and test error per epoch, loss per step."""
    ps, pd, rs, rd = labels
    styles = {ps: "--", pd: "--", rs: "-", rd: "-"}
    for key, name, what in (("train_acc", "train_error", "training error (running, per epoch)"),
                            ("test_acc", "test_error", "test error")):
        curves = {k: r.mean_curve(key) for k, r in results.items()}
        bands = {k: ([100 * (1 - m - s) for m, s in zip(mean, sd)], [100 * (1 - m + s) for m, s in zip(mean, sd)])
                 for k, (_, mean, sd) in curves.items()}
        plot_lines({k: (x, [100 * (1 - m) for m in mean]) for k, (x, mean, _) in curves.items()},
                   ctx.out / f"{prefix}{name}.png", title=f"{title}: {what}, mean ± sd over seeds", xlabel="epoch",
                   ylabel=f"{what.split(' (')[0]} (%)", styles=styles, bands=bands)
    steps = {k: r.mean_steps() for k, r in results.items()}
    window = max(1, min(len(x) for x, _, _ in steps.values()) // 20)
    plot_lines({k: (x, _smooth(mean, window)) for k, (x, mean, _) in steps.items()},
               ctx.out / f"{prefix}train_loss_steps.png",
               title=f"{title}: training loss per step, mean over seeds (moving average of {window})",
               xlabel="step (warm-up included)", ylabel="cross-entropy", styles=styles)
    return [f"{prefix}train_error.png", f"{prefix}test_error.png", f"{prefix}train_loss_steps.png"]


def _smooth(values: list[float], window: int) -> list[float]:
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out
