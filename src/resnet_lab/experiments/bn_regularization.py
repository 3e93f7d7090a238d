"""Batch normalization reduces the need for dropout and L2 regularization (Ioffe & Szegedy 2015,
sec. 3.4: "Batch Normalization regularizes the model and reduces the need for Dropout"; sec. 4.2.1:
BN-Inception trains with dropout removed and the L2 weight decay cut five-fold).

A 2 x 2 design on a network small enough to overfit a small training set quickly: LeNet-5 (as in
d2l's BN chapter on Fashion-MNIST, with ReLU and max-pooling), with or without BN after every conv
and hidden fully connected layer, and with or without the classic regularizers (dropout 0.5 after
the hidden fully connected layers, Srivastava et al. 2014, plus weight decay 5e-4), several seeds
each, on a fixed subset of the training set without augmentation. Measured: test accuracy, and the
train-test gap with both accuracies taken from the final model in eval mode (the trainer's running
training accuracy is measured with dropout on, which would flatter the regularized nets).

Checks (a difference counts when the difference of the means over seeds exceeds the sum of the two
seed standard deviations, :func:`~resnet_lab.experiments.report.exceeds`, and a margin fixed in
advance: ``GAP_MARGIN`` for the gap, ``ACC_MARGIN`` for accuracies; gains are paired by seed):

1. without dropout and L2, BN narrows the train-test gap, compared by size (BN regularizes);
2. dropout + L2 add less test accuracy to the BN net than to the net without BN (less need);
3. BN alone is more accurate than dropout + L2 alone (it can stand in for them).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from torch import nn

from ..nn import norm_has_bias, norm_layer
from ..train import evaluate
from .bn_input_stats import effect_check
from .report import Check, Report, Spread, plot_lines
from .._text import seeds_text
from .runner import Context, RunResult, RunSpec, SeedResults, count, first_test_samples

__all__ = ["ACC_MARGIN", "CLAIM", "DROPOUT", "GAP_MARGIN", "NAME", "WEIGHT_DECAY", "LeNet", "claim_checks", "run"]

NAME = "bn_regularization"
CLAIM = ("Batch normalization reduces the need for dropout and L2 regularization (Ioffe & Szegedy 2015, sec. 3.4 "
         "and 4.2.1).")

DROPOUT = 0.5  # after each hidden fully connected layer (Srivastava et al. 2014)
WEIGHT_DECAY = 5e-4  # on conv/linear weights
LR = 0.05
GAP_MARGIN = 0.01  # the smallest narrowing of the train-test gap that counts: 1 pp
ACC_MARGIN = 0.005  # the smallest difference in test accuracy (or in its gain) that counts: 0.5 pp
BN, NO_NORM = "BN", "no norm"
PLAIN, REG = "no dropout/L2", "dropout + L2"
NORMS = {BN: "batch", NO_NORM: "none"}
REGS = {PLAIN: (0.0, 0.0), REG: (DROPOUT, WEIGHT_DECAY)}

BUDGET = {
    "smoke": dict(subset=256, epochs=1, max_steps=4, batch=32, test=128, seeds=1),
    # 4,000 images, 20 epochs without augmentation: enough for LeNet to overfit (train accuracy near 100%).
    "full": dict(subset=4000, epochs=20, max_steps=None, batch=64, test=5000, seeds=5),
}


class LeNet(nn.Module):
    """LeNet-5 (LeCun et al. 1998) for 28 x 28 images, the layout of d2l's BN chapter with ReLU and
    max-pooling: conv 6@5x5 (pad 2), pool, conv 16@5x5, pool, fc 120, fc 84, fc classes; a norm after
    every conv and hidden fc, dropout after every hidden fc's activation.

    Args:
        num_classes: outputs.
        in_channels: input channels.
        norm: ``batch``, ``scratch``, ``group`` or ``none`` (see :func:`resnet_lab.nn.norm_layer`).
        dropout: dropout probability after the hidden fully connected layers (0: none).
        image_size: input height and width.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, *, norm: str = "batch", dropout: float = 0.0,
                 image_size: int = 28) -> None:
        super().__init__()
        conv_norm, fc_norm, bias = norm_layer(norm, dim=2), norm_layer(norm, dim=1), norm_has_bias(norm)
        side = (image_size // 2 - 4) // 2  # pad-2 conv keeps the size, pool halves, 5x5 conv takes 4, pool halves
        if side < 1:
            raise ValueError(f"LeNet needs images of at least 12 x 12 pixels, got image_size={image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2, bias=bias), conv_norm(6), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, bias=bias), conv_norm(16), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * side * side, 120, bias=bias), fc_norm(120), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(120, 84, bias=bias), fc_norm(84), nn.ReLU(), nn.Dropout(dropout),
            nn.Linear(84, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))  # (B, C, H, W) -> (B, num_classes)


def claim_checks(test_acc: Mapping[str, Mapping[str, Sequence[float]]],
                 gap: Mapping[str, Mapping[str, Sequence[float]]]) -> list[Check]:
    """The claim's three checks from the 2 x 2 design.

    Args:
        test_acc: ``{"BN" | "no norm": {"no dropout/L2" | "dropout + L2": [per seed]}}``, 0-1, the
            seeds in the same order in every cell (gains are paired by seed).
        gap: the same layout: train accuracy minus test accuracy, both in eval mode.
    """

    def gains(net: str) -> list[float]:
        return [r - p for r, p in zip(test_acc[net][REG], test_acc[net][PLAIN])]

    return [
        # by size: a test accuracy above the training accuracy is a gap too, not a narrower one
        effect_check("without dropout and L2, BN narrows the train-test accuracy gap", [abs(g) for g in gap[NO_NORM][PLAIN]],
                     [abs(g) for g in gap[BN][PLAIN]], ("|gap| no norm", "|gap| BN"), margin=GAP_MARGIN, scale=100,
                     unit=" pp", digits=2),
        effect_check("dropout + L2 add less test accuracy to the BN net than to the net without BN", gains(NO_NORM),
                     gains(BN), ("gain without BN", "gain with BN"), margin=ACC_MARGIN, scale=100, unit=" pp",
                     digits=2),
        effect_check("BN alone is more accurate than dropout + L2 alone", test_acc[BN][PLAIN], test_acc[NO_NORM][REG],
                     ("BN alone", "dropout + L2 alone"), margin=ACC_MARGIN, scale=100, unit="%", digits=2),
    ]


def _train_acc_eval(ctx: Context, result: RunResult, data) -> float:
    """Training-set accuracy of the final model in eval mode (dropout off, BN running statistics);
    NaN for a run that diverged, so no check can pass on it."""
    if result.diverged or result.model is None:
        return math.nan
    return evaluate(result.model, first_test_samples(data.train, None), num_classes=len(data.info.classes),
                    device=ctx.device)["acc"]


def _train_all(ctx: Context, b: dict) -> dict[tuple[str, str], SeedResults]:
    """Every cell of the design over the seeds: ``{(net, regularization): its runs}``."""
    data = ctx.data(batch_size=b["batch"], subset=b["subset"], test_samples=b["test"])
    cells = {}
    for net, norm in NORMS.items():
        for reg, (dropout, wd) in REGS.items():
            spec = RunSpec(f"{net}, {reg}", lambda nc, ic, n=norm, p=dropout: LeNet(nc, ic, norm=n, dropout=p),
                           batch_size=b["batch"], epochs=b["epochs"], lr=LR, weight_decay=wd,
                           max_steps_per_epoch=b["max_steps"],
                           info={"norm": norm, "dropout": dropout, "weight_decay": wd})
            res = ctx.train_seeds(spec, ctx.seeds(b["seeds"]), data)
            for r in res.runs:
                r.info["train_acc_eval"] = _train_acc_eval(ctx, r, data)
            res.drop_models()
            cells[net, reg] = res
    return cells


def _plots(ctx: Context, test_acc, gap, cells: dict[tuple[str, str], SeedResults]) -> list[str]:
    styles = {BN: "-", NO_NORM: "--"}
    xlabel = f"regularization: 0 = none, 1 = dropout {DROPOUT} + weight decay {WEIGHT_DECAY:g}"
    for name, figure, title, ylabel in (("test_acc.png", test_acc, "Test accuracy", "test accuracy (%)"),
                                        ("gap.png", gap, "Train - test accuracy (eval mode)", "gap (pp)")):
        spreads = {net: [Spread.of(figure[net][reg]).scaled(100) for reg in REGS] for net in NORMS}
        plot_lines({net: ([0, 1], [s.mean for s in sp]) for net, sp in spreads.items()}, ctx.out / name,
                   title=f"{title}, mean ± sd over seeds", xlabel=xlabel, ylabel=ylabel, xticks=[0, 1],
                   styles=styles, bands={net: ([s.mean - s.sd for s in sp], [s.mean + s.sd for s in sp])
                                         for net, sp in spreads.items()})
    series, bands = {}, {}
    for (net, reg), res in cells.items():
        epochs, mean, sd = res.mean_curve("test_acc")
        series[res.label] = (epochs, [100 * m for m in mean])
        bands[res.label] = ([100 * (m - s) for m, s in zip(mean, sd)], [100 * (m + s) for m, s in zip(mean, sd)])
    plot_lines(series, ctx.out / "test_acc_epochs.png", title="Test accuracy per epoch, mean ± sd over seeds",
               xlabel="epoch", ylabel="test accuracy (%)", bands=bands,
               styles={f"{BN}, {PLAIN}": "-", f"{BN}, {REG}": "-.", f"{NO_NORM}, {PLAIN}": "--",
                       f"{NO_NORM}, {REG}": ":"})
    return ["test_acc.png", "gap.png", "test_acc_epochs.png"]


def run(ctx: Context) -> Report:
    """Train the 2 x 2 design (BN on/off x dropout + L2 on/off) over seeds; compare accuracy and gap."""
    b = BUDGET[ctx.budget]
    cells = _train_all(ctx, b)
    test_acc = {net: {reg: list(cells[net, reg].final("test_acc").values) for reg in REGS} for net in NORMS}
    train_acc = {net: {reg: [r.info["train_acc_eval"] for r in cells[net, reg].runs] for reg in REGS}
                 for net in NORMS}
    gap = {net: {reg: [a - t for a, t in zip(train_acc[net][reg], test_acc[net][reg])] for reg in REGS}
           for net in NORMS}

    def cell(values: Sequence[float]) -> str:
        return Spread.of(values).scaled(100).fmt(2)

    rows = [[net, reg, cell(test_acc[net][reg]), cell(train_acc[net][reg]), cell(gap[net][reg])]
            for net in NORMS for reg in REGS]
    rows += [[r.label, reg, 100 * test_acc[net][reg][i], 100 * train_acc[net][reg][i], 100 * gap[net][reg][i]]
             for net in NORMS for reg in REGS for i, r in enumerate(cells[net, reg].runs)]
    return Report(
        claim=CLAIM,
        setup={
            "data": f"Fashion-MNIST, {b['subset']} training images (one fixed draw), first {b['test']} test images, "
                    "no augmentation",
            "model": "LeNet-5 (conv 6-16, fc 120-84, ReLU, max-pool), torch BN after every conv and hidden fc or no "
                     "normalization (then with biases in its convs and fcs; with BN they have none)",
            "design": f"BN on/off x regularization on/off; regularization = dropout {DROPOUT} after the hidden fc "
                      f"layers + weight decay {WEIGHT_DECAY:g} (off: no dropout, no weight decay)",
            "training": f"SGD momentum 0.9 (Nesterov), lr {LR} one-cycle for all four, batch {b['batch']}, "
                        f"{count(b['epochs'], 'epoch')}; {seeds_text(ctx.seeds(b['seeds']))} (weights and order)",
            "measured": "test accuracy and train accuracy of the final model in eval mode; gap = train - test",
            "rule": "a difference counts when the difference of the means exceeds the sum of the two seed sds and "
                    f"a margin fixed in advance ({100 * GAP_MARGIN:g} pp of gap, {100 * ACC_MARGIN:g} pp of accuracy)",
        },
        columns=["run", "regularization", "test acc %", "train acc % (eval)", "gap pp"],
        rows=rows, checks=claim_checks(test_acc, gap), plots=_plots(ctx, test_acc, gap, cells),
        data={"test_acc": test_acc, "train_acc_eval": train_acc, "gap": gap,
              "runs": {f"{net}, {reg}": res.to_dict() for (net, reg), res in cells.items()}},
        notes=["One learning rate for all four cells; BN would also allow a higher one, which would change its "
               "implicit regularization (the noise of SGD) too."],
    )
