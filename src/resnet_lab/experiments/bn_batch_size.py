"""BN degrades at tiny batches; GroupNorm does not (Wu & He 2018, "Group Normalization", fig. 1:
ResNet-50 on ImageNet at 2 images per GPU, BN 34.7% vs GN 24.1% error). And whether precise BN
(re-estimating the running statistics over many training batches after training, Wu & Johnson
2021) repairs BN's small-batch evaluation.

The same CIFAR ResNet with BN or GN, trained on the same images for the same number of epochs at
batch sizes from 2 to 128, learning rate scaled linearly with the batch size (Goyal et al. 2017).
"""

from __future__ import annotations

import copy
from typing import Mapping, Sequence

from ..train import evaluate
from .precise_bn import precise_bn
from .report import Check, Report, plot_lines
from .runner import Context, RunSpec, cifar_net

__all__ = ["CLAIM", "NAME", "claim_checks", "run"]

NAME = "bn_batch_size"
CLAIM = ("Batch norm degrades at tiny batches (2-8) while GroupNorm does not (Wu & He 2018); "
         "precise BN statistics as a remedy.")

MARGIN = 0.02  # a test-error increase over the large-batch error above this counts as degradation
PRECISE_HELPS = 0.005  # precise BN must cut the error by at least this to count as helping

BUDGET = {
    "smoke": dict(batches=(2, 16), depth=8, widths=(4, 8, 16), subset=64, epochs=1, max_steps=3, test=128,
                  image_size=14),
    "full": dict(batches=(2, 4, 8, 32, 128), depth=20, widths=(16, 32, 64), subset=5000, epochs=3, max_steps=None,
                 test=2000, image_size=None),
}
BASE_LR, BASE_BATCH = 0.1, 64  # lr = BASE_LR * batch / BASE_BATCH


def claim_checks(err: Mapping[tuple[str, int], float], batches: Sequence[int]) -> list[Check]:
    """The claim's three checks from the test errors.

    Args:
        err: ``{(norm, batch size): test error as a fraction}`` with norm ``BN`` or ``GN``, for
            every batch size.
        batches: the batch sizes; the smallest is the tiny batch, those >= 16 (else the largest)
            the large-batch reference.
    """
    small, large = min(batches), [bs for bs in batches if bs >= 16] or [max(batches)]

    def best(label: str) -> float:
        return min(err[(label, bs)] for bs in large)

    def gap(label: str) -> float:
        return err[(label, small)] - best(label)

    return [
        Check(f"BN's test error rises at batch {small}", gap("BN") > MARGIN,
              f"BN error {100 * err[('BN', small)]:.2f}% at batch {small} vs {100 * best('BN'):.2f}% at best of "
              f"batch {large} (+{100 * gap('BN'):.2f} pp; degradation above {100 * MARGIN:.0f} pp)"),
        Check(f"GN's test error does not rise at batch {small}", gap("GN") <= MARGIN,
              f"GN error {100 * err[('GN', small)]:.2f}% at batch {small} vs {100 * best('GN'):.2f}% at best of "
              f"batch {large} ({100 * gap('GN'):+.2f} pp; allowed up to {100 * MARGIN:.0f} pp)"),
        Check(f"GN beats BN at batch {small}", err[("GN", small)] < err[("BN", small)],
              f"{100 * err[('GN', small)]:.2f}% vs {100 * err[('BN', small)]:.2f}%"),
    ]


def run(ctx: Context) -> Report:
    """Train BN and GN nets at several batch sizes; re-estimate BN statistics; compare test errors."""
    b = BUDGET[ctx.budget]
    data = dict(subset=b["subset"], test_samples=b["test"], image_size=b["image_size"])
    # Precise BN averages over every batch of the training subset, 128 images each (at most 64 batches).
    stats_data = ctx.data(batch_size=min(128, b["subset"]), **data)
    err: dict[tuple[str, int], float] = {}
    runs = {}
    for norm, label in (("batch", "BN"), ("group", "GN")):
        for bs in b["batches"]:
            spec = RunSpec(f"{label} batch {bs}", cifar_net(b["depth"], norm=norm, widths=b["widths"]), batch_size=bs,
                           epochs=b["epochs"], lr=BASE_LR * bs / BASE_BATCH, max_steps_per_epoch=b["max_steps"],
                           data=data, seed=ctx.seed, info={"norm": norm, "batch": bs})
            r = ctx.train(spec)
            err[(label, bs)] = 1.0 - r.last.get("test_acc", 0.0)
            if norm == "batch" and r.model is not None and not r.diverged:
                model = copy.deepcopy(r.model)
                used = precise_bn(model, stats_data.train, num_batches=64, device=ctx.device)
                ev = evaluate(model, stats_data.test, num_classes=len(stats_data.info.classes), device=ctx.device)
                err[("BN + precise", bs)] = 1.0 - ev["acc"]
                r.info["precise_bn_batches"] = used
            runs[spec.label] = r.to_dict()
            r.model = None

    small = min(b["batches"])
    checks = claim_checks(err, b["batches"])
    helps = {bs: err[("BN", bs)] - err[("BN + precise", bs)] for bs in b["batches"] if ("BN + precise", bs) in err}
    findings = [
        "precise BN (running statistics re-estimated over the training subset after training, batches of 128): "
        + "; ".join(f"batch {bs}: {100 * err[('BN', bs)]:.2f}% -> {100 * err[('BN + precise', bs)]:.2f}%"
                    for bs in helps),
        f"precise BN helps at batch {small}: "
        + ("yes" if helps.get(small, 0) >= PRECISE_HELPS else "no")
        + f" ({100 * helps.get(small, float('nan')):+.2f} pp error reduction; counts as help from "
          f"{100 * PRECISE_HELPS:.1f} pp)",
    ]
    rows = [[bs, BASE_LR * bs / BASE_BATCH, 100 * err[("BN", bs)], 100 * err.get(("BN + precise", bs), float("nan")),
             100 * err[("GN", bs)]] for bs in b["batches"]]
    series = {label: (list(b["batches"]), [100 * err[(label, bs)] for bs in b["batches"]])
              for label in ("BN", "BN + precise", "GN") if all((label, bs) in err for bs in b["batches"])}
    plot_lines(series, ctx.out / "error_vs_batch.png", title="Test error vs batch size (same epochs)",
               xlabel="batch size", ylabel="test error (%)", logx=True,
               styles={"BN": "-", "BN + precise": ":", "GN": "--"})
    return Report(
        claim=CLAIM,
        setup={
            "data": f"Fashion-MNIST, {b['subset']} training images, first {b['test']} test images, no augmentation",
            "model": f"CIFAR ResNet-{b['depth']}, widths {b['widths']}, BN (torch) or GN "
                     "(32 groups or fewer with >= 2 channels each)",
            "training": f"SGD momentum 0.9 (Nesterov), one-cycle, lr {BASE_LR} x batch / {BASE_BATCH}, "
                        f"weight decay 5e-4, {b['epochs']} epochs at every batch size, seed {ctx.seed}",
            "batch sizes": ", ".join(map(str, b["batches"])),
        },
        columns=["batch", "lr", "BN test error %", "BN + precise BN %", "GN test error %"],
        rows=rows, checks=checks, findings=findings, plots=["error_vs_batch.png"],
        data={"errors": {f"{k[0]} @ {k[1]}": v for k, v in err.items()}, "runs": runs},
        notes=["Same number of epochs at every batch size, so small batches take many more (smaller) steps; "
               "this is Wu & He's protocol, not a same-number-of-steps comparison."],
    )
