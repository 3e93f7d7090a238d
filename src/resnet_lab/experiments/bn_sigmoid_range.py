"""Normalizing a sigmoid's inputs keeps them in its near-linear range; BN's gamma and beta give the
range back (Ioffe & Szegedy 2015, sec. 3: "normalizing the inputs of a sigmoid would constrain them
to the linear regime of the nonlinearity. To address this, we make sure that the transformation
inserted in the network can represent the identity transform", by the learned scale gamma and
shift beta).

The paper's MNIST network (sec. 4.1: three fully connected hidden layers of 100 sigmoid units, BN
before each sigmoid), on Fashion-MNIST, in three versions from the same seeds: BN with learnable
gamma/beta (the paper's), BN with gamma/beta frozen at 1/0 (normalization alone), and no
normalization (a reference, not part of the verdict). An
:class:`~resnet_lab.analysis.ActivationStatsRecorder` records, every ``every`` steps, the share of
each sigmoid's inputs with ``|x| < 1``, where the sigmoid's slope stays above 78% of its slope at 0
(a standard normal puts 68.3% there).

Checks (thresholds fixed in advance; a difference counts when the difference of the means over
seeds exceeds the sum of the two seed standard deviations, :func:`~resnet_lab.experiments.report.exceeds`):

1. with gamma/beta frozen, at least ``LINEAR_SHARE`` of the sigmoid inputs are in ``|x| < 1`` at the
   end of training (median over layers, every seed);
2. learnable gamma/beta lower that share by more than ``SHARE_MARGIN`` (the network moves its inputs
   out of the linear range);
3. learnable gamma/beta give a higher test accuracy, by more than ``ACC_MARGIN`` (the range given
   back is used).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from torch import nn

from ..analysis.activations import ActivationStatsRecorder, plot_activation_stats
from .bn_input_stats import effect_check, seed_band, train_recorded
from .report import Check, Report, Spread, plot_lines
from .._text import every_steps, seeds_text
from .runner import Context, RunResult, RunSpec, SeedResults, count
from .vanishing_gradients import DeepMLP

__all__ = ["ACC_MARGIN", "CLAIM", "CONFIGS", "LINEAR_SHARE", "NAME", "SHARE_MARGIN", "claim_checks", "run",
           "sigmoid_bn_mlp"]

NAME = "bn_sigmoid_range"
CLAIM = ("Normalizing a sigmoid's inputs keeps them in its near-linear range (|x| < 1); BN's learnable gamma/beta "
         "move them out of it again, and that gains accuracy (Ioffe & Szegedy 2015, sec. 3).")

LINEAR_SHARE = 0.6  # share of |x| < 1 that counts as "in the near-linear range" (N(0, 1): 0.683)
SHARE_MARGIN = 0.05  # the smallest drop of that share that counts as "moved out": 5 pp
ACC_MARGIN = 0.005  # the smallest accuracy gain that counts: 0.5 pp
LEARNABLE, FROZEN, NO_NORM = "BN, learnable gamma/beta", "BN, gamma/beta frozen at 1/0", "no norm"
CONFIGS = {LEARNABLE: dict(norm=True, affine=True), FROZEN: dict(norm=True, affine=False),
           NO_NORM: dict(norm=False, affine=False)}

BUDGET = {
    "smoke": dict(hidden=3, width=16, subset=256, epochs=1, max_steps=4, batch=32, test=128, seeds=1, every=1),
    # The paper's net (3 x 100 sigmoid units, batch 60); 5 epochs of Fashion-MNIST = 5,000 steps
    # (the paper ran 50,000 on MNIST: a CPU budget).
    "full": dict(hidden=3, width=100, subset=None, epochs=5, max_steps=None, batch=60, test=None, seeds=3,
                 every=50),
}
LR = 0.1


def sigmoid_bn_mlp(hidden: int, width: int, *, norm: bool, affine: bool, in_features: int):
    """A factory ``(num_classes, in_channels) -> model``: ``hidden`` blocks of Linear -> [BN] ->
    sigmoid (Glorot init) and an output Linear (:class:`~resnet_lab.experiments.vanishing_gradients.DeepMLP`),
    with BN's gamma/beta frozen at 1/0 when ``affine`` is False.

    Args:
        hidden: hidden layers.
        width: units per hidden layer.
        norm: BatchNorm1d before every sigmoid.
        affine: gamma/beta are learned (False: kept at their initial 1 and 0).
        in_features: flattened input size (C x H x W).
    """

    def build(num_classes: int, in_channels: int) -> nn.Module:
        model = DeepMLP(in_features, num_classes, depth=hidden + 1, width=width, activation="sigmoid", norm=norm)
        if norm and not affine:
            for m in model.modules():
                if isinstance(m, nn.BatchNorm1d):
                    m.weight.requires_grad_(False)  # frozen parameters are left out of the optimizer
                    m.bias.requires_grad_(False)
        return model

    return build


def claim_checks(share: Mapping[str, Sequence[float]], acc: Mapping[str, Sequence[float]]) -> list[Check]:
    """The claim's three checks.

    Args:
        share: ``{config: [per seed]}``: median over layers of the share of sigmoid inputs with
            ``|x| < 1`` at the end of training, for :data:`LEARNABLE` and :data:`FROZEN`.
        acc: ``{config: [per seed]}``: final test accuracy (0-1).
    """
    worst = min(share[FROZEN], default=math.nan)
    return [
        Check("normalized sigmoid inputs (gamma/beta frozen at 1/0) sit in the near-linear range |x| < 1",
              worst >= LINEAR_SHARE,  # NaN compares False
              f"lowest share over seeds {100 * worst:.1f}% (median over layers, end of training; needs >= "
              f"{100 * LINEAR_SHARE:.0f}%; a standard normal has 68.3%)"),
        effect_check("learnable gamma/beta move them out of it (a lower share in |x| < 1)", share[FROZEN],
                     share[LEARNABLE], ("frozen", "learnable"), margin=SHARE_MARGIN, scale=100, unit="%", digits=1),
        effect_check("learnable gamma/beta give a higher test accuracy than frozen ones", acc[LEARNABLE], acc[FROZEN],
                     ("learnable", "frozen"), margin=ACC_MARGIN, scale=100, unit="%", digits=2),
    ]


def _train_all(ctx: Context, b: dict) -> tuple[dict[str, SeedResults], dict[str, ActivationStatsRecorder]]:
    """Every configuration at every seed: ``({label: its runs}, {label: the first seed's recorder})``."""
    data = ctx.data(batch_size=b["batch"], subset=b["subset"], test_samples=b["test"])
    c, h, w = data.info.input_size
    runs: dict[str, list[RunResult]] = {label: [] for label in CONFIGS}
    first: dict[str, ActivationStatsRecorder] = {}
    for seed in ctx.seeds(b["seeds"]):
        for label, cfg in CONFIGS.items():
            spec = RunSpec(f"{label} seed {seed}", batch_size=b["batch"], epochs=b["epochs"], lr=LR,
                           max_steps_per_epoch=b["max_steps"], seed=seed, info={**cfg, "seed": seed})
            build = sigmoid_bn_mlp(b["hidden"], b["width"], in_features=c * h * w, **cfg)
            result, rec = train_recorded(ctx, spec, data, build, b["every"])
            result.info["gamma_beta"] = _gamma_beta(result.model)
            result.model = None
            runs[label].append(result)
            first.setdefault(label, rec)
    return {label: SeedResults(label, r) for label, r in runs.items()}, first


def _gamma_beta(model: nn.Module) -> dict[str, float]:
    """Mean absolute gamma and beta over the BN layers (empty without BN); no "|" (a table cell)."""
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    if not bns:
        return {}
    gammas = [float(m.weight.detach().abs().mean()) for m in bns]
    betas = [float(m.bias.detach().abs().mean()) for m in bns]
    return {"mean abs gamma": sum(gammas) / len(gammas), "mean abs beta": sum(betas) / len(betas)}


def _plots(ctx: Context, runs: dict[str, SeedResults], first: dict[str, ActivationStatsRecorder]) -> list[str]:
    styles = {LEARNABLE: "-", FROZEN: "--", NO_NORM: ":"}
    series, bands = {}, {}
    for label, res in runs.items():
        mean, bands[label] = seed_band(res, lambda r: [100 * v for v in r.info["drift"]["within"]])
        series[label] = (first[label].steps[:len(mean)], mean)
    plot_lines(series, ctx.out / "linear_share.png", title="Sigmoid inputs with |x| < 1, mean ± sd over seeds",
               xlabel="training step", ylabel="share, median over layers (%)", styles=styles, bands=bands, hline=68.3)
    series, bands = {}, {}
    for label, res in runs.items():
        epochs, mean, sd = res.mean_curve("test_acc")
        series[label] = (epochs, [100 * m for m in mean])
        bands[label] = ([100 * (m - s) for m, s in zip(mean, sd)], [100 * (m + s) for m, s in zip(mean, sd)])
    plot_lines(series, ctx.out / "test_acc.png", title="Test accuracy, mean ± sd over seeds", xlabel="epoch",
               ylabel="test accuracy (%)", styles=styles, bands=bands)
    plot_activation_stats(first, ctx.out / "activation_stats.png",
                          title=f"Sigmoid inputs by layer and step (seed {ctx.seed})")
    return ["linear_share.png", "test_acc.png", "activation_stats.png"]


def _rows(runs: dict[str, SeedResults], share: dict, acc: dict) -> list[list]:
    rows = []
    for label, res in runs.items():
        gb = [r.info["gamma_beta"] for r in res.runs]
        params = ", ".join(f"{k} {Spread.of(g[k] for g in gb).fmt(3)}" for k in gb[0]) if gb[0] else "-"
        rows.append([label, Spread.of(share[label]).scaled(100).fmt(1), Spread.of(acc[label]).scaled(100).fmt(2),
                     params])
    rows += [[r.label, 100 * share[label][i], 100 * acc[label][i], "-"]
             for label, res in runs.items() for i, r in enumerate(res.runs)]
    return rows


def run(ctx: Context) -> Report:
    """Train the sigmoid MLP with learnable, frozen and no BN over seeds; compare range share and accuracy."""
    b = BUDGET[ctx.budget]
    runs, first = _train_all(ctx, b)
    share = {label: [r.info["drift"]["within"][-1] for r in res.runs] for label, res in runs.items()}
    acc = {label: list(res.final("test_acc").values) for label, res in runs.items()}
    return Report(
        claim=CLAIM,
        setup={
            "data": f"Fashion-MNIST, {b['subset'] or 'all 60000'} training images (flattened), "
                    f"{'first ' + str(b['test']) if b['test'] else 'all'} test images, no augmentation",
            "model": f"{b['hidden']} fully connected hidden layers of {b['width']} sigmoid units (Ioffe & Szegedy "
                     "sec. 4.1's MNIST net), Glorot init; BN (torch BatchNorm1d) before each sigmoid with gamma/beta "
                     "learned or frozen at 1/0, or no normalization (then with Linear biases; with BN they have none)",
            "training": f"SGD momentum 0.9 (Nesterov), lr {LR} one-cycle, weight decay 5e-4 on weights only, batch "
                        f"{b['batch']}, {count(b['epochs'], 'epoch')}; {seeds_text(ctx.seeds(b['seeds']))}",
            "recorded": f"share of each sigmoid's inputs with |x| < 1, {every_steps(b['every'])} (training "
                        "mode, batch statistics); the median over layers at the last record",
            "rule": "a difference counts when the difference of the means exceeds the sum of the two seed sds and "
                    f"a margin fixed in advance ({100 * SHARE_MARGIN:g} pp of share, {100 * ACC_MARGIN:g} pp of "
                    "accuracy)",
        },
        columns=["run", "share in -1 < x < 1 (%)", "test acc %", "BN parameters at the end"],
        rows=_rows(runs, share, acc), checks=claim_checks(share, acc), plots=_plots(ctx, runs, first),
        findings=[f"no norm (reference): share |x| < 1 {Spread.of(share[NO_NORM]).scaled(100).fmt(1)}%, test "
                  f"accuracy {Spread.of(acc[NO_NORM]).scaled(100).fmt(2)}% (Glorot init keeps the inputs small at "
                  "the start; the claim is about what normalization imposes, not about the un-normalized net)"],
        data={"share": share, "acc": acc, "runs": {label: res.to_dict() for label, res in runs.items()}},
    )
