"""BN degrades at tiny batches; GroupNorm does not (Wu & He 2018, "Group Normalization", fig. 1:
ResNet-50 on ImageNet at 2 images per GPU, BN 34.7% vs GN 24.1% error). And whether precise BN
(re-estimating the running statistics over many training batches after training, Wu & Johnson
2021) repairs BN's small-batch evaluation.

Wu & He's protocol, at a CPU's scale: the same CIFAR ResNet with BN or GN, trained on the same
images for the same number of epochs at every batch size, the learning rate scaled linearly with
the batch size (Goyal et al. 2017: ``BASE_LR`` at ``BASE_BATCH``) after a linear warm-up over the
first epoch, then a cosine decay; several seeds per point. The batch sizes stop at 32, as Wu & He's
(32 images per GPU is their largest), so that the largest batch still takes hundreds of steps and
is trained properly: an undertrained large batch would make the curve say nothing about BN.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping, Sequence

from ..train import evaluate
from .precise_bn import precise_bn
from .report import Check, Report, Spread, exceeds, plot_lines, rule_text, within
from .runner import Context, RunSpec, SeedResults, cifar_net, count

__all__ = ["CLAIM", "NAME", "claim_checks", "run"]

NAME = "bn_batch_size"
CLAIM = ("Batch norm degrades at tiny batches (2-8) while GroupNorm does not (Wu & He 2018); "
         "precise BN statistics as a remedy.")

MARGIN = 0.02  # a test-error increase over the large-batch error above this counts as degradation
PRECISE_HELPS = 0.005  # precise BN must cut the error by at least this (and the seed spread) to help

BUDGET: dict[str, dict[str, Any]] = {
    "smoke": dict(batches=(2, 8), depth=8, widths=(4, 8, 16), subset=64, epochs=1, max_steps=3, test=128,
                  image_size=14, seeds=2),
    "full": dict(batches=(2, 4, 8, 16, 32), depth=20, widths=(16, 32, 64), subset=8000, epochs=3, max_steps=None,
                 test=2000, image_size=14, seeds=3),
}
BASE_LR, BASE_BATCH = 0.1, 32  # lr = BASE_LR * batch / BASE_BATCH (linear scaling rule)
WARMUP_EPOCHS = 1.0  # linear warm-up (Goyal et al. 2017), the same for every batch size


def claim_checks(err: Mapping[tuple[str, int], Sequence[float]], batches: Sequence[int]) -> list[Check]:
    """The claim's three checks from the test errors over seeds.

    Args:
        err: ``{(norm, batch size): [test error as a fraction, one per seed]}`` with norm ``BN``
            or ``GN``, for every batch size.
        batches: the batch sizes; the smallest is the tiny batch, those >= 16 (else the largest)
            the large-batch reference (the one with the lowest mean error).
    """
    small, large = min(batches), [bs for bs in batches if bs >= 16] or [max(batches)]
    e = {k: Spread.of(v) for k, v in err.items()}

    def best(label: str) -> int:
        return min(large, key=lambda bs: e[(label, bs)].mean)

    def pct(label: str, bs: int) -> str:
        return f"{e[(label, bs)].scaled(100).fmt()}%"

    bn, gn = (e[("BN", small)], e[("BN", best("BN"))]), (e[("GN", small)], e[("GN", best("GN"))])
    return [
        Check(f"BN's test error rises at batch {small}", exceeds(*bn, MARGIN),
              f"BN error {pct('BN', small)} at batch {small} vs {pct('BN', best('BN'))} at batch {best('BN')} (the "
              f"best of batch {large}; mean ± sd over {bn[0].n} seeds); "
              + rule_text("exceeds", *bn, MARGIN, scale=100, unit=" pp")),
        Check(f"GN's test error does not rise at batch {small}", within(*gn, MARGIN),
              f"GN error {pct('GN', small)} at batch {small} vs {pct('GN', best('GN'))} at batch {best('GN')} (the "
              f"best of batch {large}); " + rule_text("within", *gn, MARGIN, scale=100, unit=" pp")),
        Check(f"GN beats BN at batch {small}", exceeds(e[("BN", small)], e[("GN", small)]),
              f"GN {pct('GN', small)} vs BN {pct('BN', small)}; "
              + rule_text("exceeds", e[("BN", small)], e[("GN", small)], scale=100, unit=" pp")),
    ]


def run(ctx: Context) -> Report:
    """Train BN and GN nets at several batch sizes over seeds; re-estimate BN statistics; compare test errors."""
    b = BUDGET[ctx.budget]
    data = dict(subset=b["subset"], test_samples=b["test"], image_size=b["image_size"])
    # Precise BN averages over every batch of the training subset, 128 images each (at most 64 batches).
    stats_data = ctx.data(batch_size=min(128, b["subset"]), **data)
    seeds = ctx.seeds(b["seeds"])
    err: dict[tuple[str, int], list[float]] = {}
    runs = {}
    for norm, label in (("batch", "BN"), ("group", "GN")):
        for bs in b["batches"]:
            spec = RunSpec(f"{label} batch {bs}", cifar_net(b["depth"], norm=norm, widths=b["widths"]), batch_size=bs,
                           epochs=b["epochs"], lr=BASE_LR * bs / BASE_BATCH, schedule="cosine",
                           warmup_epochs=min(WARMUP_EPOCHS, b["epochs"]), max_steps_per_epoch=b["max_steps"],
                           data=data, info={"norm": norm, "batch": bs})
            r = ctx.train_seeds(spec, seeds)
            # A diverged seed counts at chance level (10 classes).
            err[(label, bs)] = [1.0 - a for a in r.final("test_acc", failed=0.1).values]
            if norm == "batch":
                err[("BN + precise", bs)] = _precise_errors(ctx, r, stats_data)
            r.drop_models()
            runs[spec.label] = r.to_dict()

    checks = claim_checks(err, b["batches"])
    e = {k: Spread.of(v) for k, v in err.items()}
    rows = [[bs, BASE_LR * bs / BASE_BATCH, _steps(runs[f"BN batch {bs}"]), e[("BN", bs)].scaled(100),
             e[("BN + precise", bs)].scaled(100), e[("GN", bs)].scaled(100)] for bs in b["batches"]]
    _plot(ctx, e, b["batches"])
    return Report(
        claim=CLAIM,
        setup=_setup(b, seeds),
        columns=["batch", "lr", "steps", "BN test error %", "BN + precise BN %", "GN test error %"],
        rows=rows, checks=checks, findings=_findings(e, b["batches"]), plots=["error_vs_batch.png"],
        data={"errors": {f"{k[0]} @ {k[1]}": v for k, v in err.items()}, "runs": runs},
        notes=[f"Same number of epochs ({b['epochs']}) on the same {b['subset']} images at every batch size, so small "
               "batches take many more (smaller) steps: Wu & He's protocol, not a same-number-of-steps comparison. "
               f"A CPU's scale: a subset of Fashion-MNIST at {b['image_size']} px and {count(b['epochs'], 'epoch')} instead of "
               "ImageNet for 100 epochs "
               "(the subset and epochs are the same for every batch size)."],
    )


def _precise_errors(ctx: Context, r: SeedResults, stats_data) -> list[float]:
    """Test error of each seed's BN model after precise BN (a diverged seed: chance level)."""
    errors = []
    for run_ in r.runs:
        if run_.model is None or run_.diverged:
            errors.append(0.9)
            continue
        model = copy.deepcopy(run_.model)
        run_.info["precise_bn_batches"] = precise_bn(model, stats_data.train, num_batches=64, device=ctx.device)
        ev = evaluate(model, stats_data.test, num_classes=len(stats_data.info.classes), device=ctx.device)
        errors.append(1.0 - ev["acc"])
    return errors


def _steps(r: Mapping[str, Any]) -> int:
    return len(r["runs"][0]["step_losses"])


def _findings(e: Mapping[tuple[str, int], Spread], batches: Sequence[int]) -> list[str]:
    small = min(batches)
    helps = exceeds(e[("BN", small)], e[("BN + precise", small)], PRECISE_HELPS)
    return [
        "precise BN (running statistics re-estimated over the training subset after training, batches of 128), "
        "test error %: " + "; ".join(f"batch {bs}: {e[('BN', bs)].scaled(100).fmt()} -> "
                                     f"{e[('BN + precise', bs)].scaled(100).fmt()}" for bs in batches),
        f"precise BN helps at batch {small}: {'yes' if helps else 'no'} ("
        + rule_text("exceeds", e[("BN", small)], e[("BN + precise", small)], PRECISE_HELPS, scale=100, unit=" pp") + ")",
        "per seed test error % at batch {}: ".format(small) + "; ".join(
            f"{label} " + " / ".join(f"{100 * v:.2f}" for v in e[(label, small)].values)
            for label in ("BN", "BN + precise", "GN")),
    ]


def _plot(ctx: Context, e: Mapping[tuple[str, int], Spread], batches: Sequence[int]) -> None:
    labels = ("BN", "BN + precise", "GN")
    plot_lines({label: (list(batches), [100 * e[(label, bs)].mean for bs in batches]) for label in labels},
               ctx.out / "error_vs_batch.png", title="Test error vs batch size (same epochs), mean ± sd over seeds",
               xlabel="batch size", ylabel="test error (%)", logx=True, xticks=list(batches),
               styles={"BN": "-", "BN + precise": ":", "GN": "--"},
               bands={label: ([100 * (e[(label, bs)].mean - e[(label, bs)].sd) for bs in batches],
                              [100 * (e[(label, bs)].mean + e[(label, bs)].sd) for bs in batches]) for label in labels})


def _setup(b: Mapping[str, Any], seeds: Sequence[int]) -> dict[str, str]:
    return {
        "data": f"Fashion-MNIST at {b['image_size']} px, the same {b['subset']} training images for every batch size, "
                f"first {b['test']} test images, no augmentation",
        "model": f"CIFAR ResNet-{b['depth']}, widths {b['widths']}, BN (torch) or GN "
                 "(32 groups or fewer with >= 2 channels each)",
        "training": f"SGD momentum 0.9 (Nesterov), weight decay 5e-4, {count(b['epochs'], 'epoch')} at every batch size; lr "
                    f"{BASE_LR} x batch / {BASE_BATCH} (linear scaling), linear warm-up over the first "
                    f"{WARMUP_EPOCHS:g} epoch, then cosine decay",
        "batch sizes": ", ".join(map(str, b["batches"])),
        "seeds": f"{', '.join(map(str, seeds))} (initial weights and data order); figures are mean ± sd over seeds",
    }
