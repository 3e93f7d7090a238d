"""Batch normalization keeps the inputs of each layer near mean 0 and variance 1 through training
(Ioffe & Szegedy 2015, "Batch Normalization: Accelerating Deep Network Training by Reducing
Internal Covariate Shift", sec. 2-3 and fig. 1b-c, where the input distribution of a sigmoid drifts
over training without BN and stays put with it).

The same plain CIFAR-style network (He et al. 2015's plain net, no shortcuts, so every ReLU's input
is the output of the layer's norm: BN after gamma/beta, or the conv's output without BN) trained
with and without BN, from the same seeds, data order and learning rate. An
:class:`~resnet_lab.analysis.ActivationStatsRecorder` records the mean and standard deviation of
every ReLU's input every ``every`` training steps. How far a network drifts from (0, 1) is the
median over layers of ``|mean|`` and of ``|ln std|`` at the end of training (``|ln std|``: 0 at
std 1, ln 2 = 0.69 for twice or half the unit scale).

Seeds: every configuration runs with several seeds (weights and data order); a comparison passes
only when the difference of the means exceeds the sum of the two seed standard deviations and a
margin fixed in advance (``MARGIN``; :func:`~resnet_lab.experiments.report.exceeds`, the rule of every
experiment). With one seed (the smoke budget) the spread is 0: a smoke verdict checks the pipeline
only.
"""

from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import torch

from ..analysis.activations import ActivationStatsRecorder, plot_activation_stats
from .report import Check, Report, Spread, exceeds, plot_lines, rule_text
from .._text import every_steps, seeds_text
from .runner import Context, ModelFactory, RunResult, RunSpec, SeedResults, cifar_net, count

__all__ = ["CLAIM", "MARGIN", "NAME", "NEAR_LOG_STD", "NEAR_MEAN", "claim_checks", "effect_check", "run", "seed_band",
           "train_recorded"]

NAME = "bn_input_stats"
CLAIM = ("Batch normalization keeps the inputs of each layer's nonlinearity near mean 0 and variance 1 through "
         "training; without it they drift (Ioffe & Szegedy 2015, sec. 2-3, fig. 1b-c).")

# Fixed before the full run.
NEAR_MEAN = 0.2  # "near mean 0": median over layers of |mean| at most this, in every seed
NEAR_LOG_STD = math.log(1.25)  # "near variance 1": std within a factor 1.25 of 1 (median over layers), every seed
MARGIN = 0.05  # the smallest difference in median |mean| or median |ln std| (about 5% in scale) that counts

BUDGET = {
    "smoke": dict(depth=8, widths=(4, 8, 16), subset=256, epochs=1, max_steps=4, batch=32, test=128, image_size=14,
                  seeds=1, every=1),
    "full": dict(depth=20, widths=(16, 32, 64), subset=10000, epochs=3, max_steps=None, batch=128, test=2000,
                 image_size=None, seeds=3, every=5),
}
NORMS = {"BN": "batch", "no norm": "none"}
LR = 0.02  # one rate both nets survive (bn_convergence: the plain-20 without BN diverged at 0.05)


# --- seeds: a check on an effect, a band around a mean curve ------------------------------------


def effect_check(question: str, larger: Sequence[float], smaller: Sequence[float], labels: tuple[str, str], *,
                 margin: float = 0.0, scale: float = 1.0, unit: str = "", digits: int = 3) -> Check:
    """A check that ``larger`` exceeds ``smaller`` by more than ``margin`` and beyond the seed
    spread (:func:`~resnet_lab.experiments.report.exceeds`), with both figures and the rule in its
    evidence.

    Args:
        question: what is tested.
        larger: per-seed values expected to be larger.
        smaller: per-seed values expected to be smaller.
        labels: their names in the evidence.
        margin: the smallest difference of means that counts, fixed in advance (unscaled).
        scale: multiply values for display (100 for percentages).
        unit: appended to displayed values ("%": differences are then in " pp").
        digits: decimals shown.
    """
    a, b = Spread.of(larger), Spread.of(smaller)
    n = max(a.n, b.n)
    shown = f"{labels[0]} {a.scaled(scale).fmt(digits)}{unit} vs {labels[1]} {b.scaled(scale).fmt(digits)}{unit}"
    rule = rule_text("exceeds", a, b, margin, scale=scale, unit=" pp" if unit == "%" else unit, digits=digits)
    return Check(question, exceeds(a, b, margin), f"{shown} (mean ± sd over {n} seed{'s' if n != 1 else ''}); {rule}")


def seed_band(results: SeedResults, values: Callable[[RunResult], Sequence[float]]
              ) -> tuple[list[float], tuple[list[float], list[float]]]:
    """The mean over seeds of a curve and its band (mean - sd, mean + sd), for ``plot_lines``.

    Args:
        results: one configuration's runs.
        values: the curve of one run (e.g. a per-record statistic kept in its ``info``).
    """
    _, mean, sd = results.mean_steps(values)
    return mean, ([m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)])


# --- training with the recorder -----------------------------------------------------------------


def train_recorded(ctx: Context, spec: RunSpec, data, build: ModelFactory,
                   every: int) -> tuple[RunResult, ActivationStatsRecorder]:
    """Train ``spec`` with an activation-statistics recorder on its model.

    The model is built here (after seeding with ``spec.seed``, as :meth:`Context.train` does) so
    the recorder's hooks are on it from the first step. The result's ``info`` gets the recorder's
    ``drift`` history (:meth:`~resnet_lab.analysis.ActivationStatsRecorder.drift_history`) and its
    ``activations`` (every statistic, for results.json).

    Args:
        ctx: the experiment context.
        spec: the run (its ``model`` is ignored).
        data: the data bundle.
        build: ``(num_classes, in_channels) -> model``.
        every: record one training step in ``every``.
    """
    torch.manual_seed(spec.seed)
    model = build(len(data.info.classes), data.info.input_size[0])
    with ActivationStatsRecorder(model, every=every) as rec:
        result = ctx.train(spec, data, model=model)
    result.info.update(drift=rec.drift_history(), activations=rec.to_dict())
    return result, rec


# --- the experiment ---------------------------------------------------------------------------


def claim_checks(drift: Mapping[str, Mapping[str, Sequence[float]]]) -> list[Check]:
    """The claim's three checks from the end-of-training drift of each network.

    Args:
        drift: ``{"BN" | "no norm": {"mean": [per seed], "log_std": [per seed]}}``: the median over
            layers of ``|mean|`` and of ``|ln std|`` of the ReLU inputs at the last record.
    """
    bn, none = drift["BN"], drift["no norm"]
    worst_mean, worst_std = max(bn["mean"], default=math.nan), max(bn["log_std"], default=math.nan)
    near = worst_mean <= NEAR_MEAN and worst_std <= NEAR_LOG_STD  # NaN compares False
    return [
        effect_check("BN keeps the layer inputs' means closer to 0 than no norm (median |mean| over layers)",
                     none["mean"], bn["mean"], ("no norm", "BN"), margin=MARGIN),
        effect_check("BN keeps their standard deviations closer to 1 than no norm (median |ln std| over layers)",
                     none["log_std"], bn["log_std"], ("no norm", "BN"), margin=MARGIN),
        Check("with BN they stay near (0, 1) to the end", near,
              f"worst seed: median |mean| {worst_mean:.3f} (<= {NEAR_MEAN}), median |ln std| {worst_std:.3f} "
              f"(<= ln 1.25 = {NEAR_LOG_STD:.3f}, std within a factor 1.25 of 1)"),
    ]


def _train_all(ctx: Context, b: dict) -> tuple[dict[str, SeedResults], dict[str, ActivationStatsRecorder]]:
    """Every network at every seed: ``({label: its runs}, {label: the first seed's recorder})``."""
    data = ctx.data(batch_size=b["batch"], subset=b["subset"], test_samples=b["test"], image_size=b["image_size"])
    runs: dict[str, list[RunResult]] = {label: [] for label in NORMS}
    first: dict[str, ActivationStatsRecorder] = {}
    for seed in ctx.seeds(b["seeds"]):
        for label, norm in NORMS.items():
            spec = RunSpec(f"{label} seed {seed}", batch_size=b["batch"], epochs=b["epochs"], lr=LR,
                           max_steps_per_epoch=b["max_steps"], seed=seed, info={"norm": norm, "seed": seed})
            build = cifar_net(b["depth"], residual=False, norm=norm, widths=b["widths"])
            result, rec = train_recorded(ctx, spec, data, build, b["every"])
            result.model = None
            runs[label].append(result)
            first.setdefault(label, rec)
    return {label: SeedResults(label, r) for label, r in runs.items()}, first


def _drift(results: SeedResults, index: int) -> dict[str, list[float]]:
    """Per seed: median |mean| and median |ln std| at one record (0: init, -1: end)."""
    return {k: [r.info["drift"][k][index] for r in results.runs] for k in ("mean", "log_std")}


def _rows(runs: dict[str, SeedResults], init: dict, end: dict) -> list[list]:
    rows = []
    for label, res in runs.items():
        cells = [init[label]["mean"], init[label]["log_std"], end[label]["mean"], end[label]["log_std"]]
        rows.append([label, *(Spread.of(c).fmt(3) for c in cells), res.final("test_acc").scaled(100).fmt(2)])
    for label, res in runs.items():
        rows += [[r.label, init[label]["mean"][i], init[label]["log_std"][i], end[label]["mean"][i],
                  end[label]["log_std"][i], 100 * r.last.get("test_acc", math.nan)] for i, r in enumerate(res.runs)]
    return rows


def _plots(ctx: Context, runs: dict[str, SeedResults], first: dict[str, ActivationStatsRecorder]) -> list[str]:
    plot_activation_stats(first, ctx.out / "activation_stats.png",
                          title=f"ReLU inputs by layer and step (seed {ctx.seed})")
    series, bands, styles = {}, {}, {}
    for label, res in runs.items():
        for key, name, style in (("mean", "median |mean|", ("-", "--")), ("log_std", "median |ln std|", (":", "-."))):
            mean, band = seed_band(res, lambda r, k=key: r.info["drift"][k])
            series[f"{label}: {name}"] = (first[label].steps[:len(mean)], mean)
            bands[f"{label}: {name}"] = band
            styles[f"{label}: {name}"] = style[0] if label == "BN" else style[1]
    plot_lines(series, ctx.out / "drift.png", title="Distance of the ReLU inputs from (0, 1), mean ± sd over seeds",
               xlabel="training step", ylabel="median over layers", styles=styles, bands=bands)
    return ["activation_stats.png", "drift.png"]


def _findings(runs: dict[str, SeedResults], init: dict, end: dict) -> list[str]:
    peak = {label: max(max(r.info["drift"]["log_std"]) for r in res.runs) for label, res in runs.items()}

    def change(label: str, key: str) -> float:
        return Spread.of(end[label][key]).mean - Spread.of(init[label][key]).mean

    diverged = [r.label for res in runs.values() for r in res.runs if r.diverged]
    return (["largest median |ln std| over training: " + ", ".join(f"{k} {v:.3f}" for k, v in peak.items()),
             "change from the first to the last record (mean over seeds), median |mean| / median |ln std|: "
             + ", ".join(f"{k} {change(k, 'mean'):+.3f} / {change(k, 'log_std'):+.3f}" for k in runs),
             "without BN part of the distance is there at initialization (the init columns): He-normal weights "
             "(He et al. 2015) set the scale of the conv outputs from the fan-out, not from the data"]
            + ([f"diverged: {', '.join(diverged)}"] if diverged else []))


def run(ctx: Context) -> Report:
    """Train the plain net with and without BN over seeds; record its ReLU inputs; compare the drift."""
    b = BUDGET[ctx.budget]
    runs, first = _train_all(ctx, b)
    init = {label: _drift(res, 0) for label, res in runs.items()}
    end = {label: _drift(res, -1) for label, res in runs.items()}
    return Report(
        claim=CLAIM,
        setup={
            "data": f"Fashion-MNIST, {b['subset']} training images, first {b['test']} test images, no augmentation",
            "model": f"plain-{b['depth']} (He et al. 2015's CIFAR plain net, no shortcuts), widths {b['widths']}, "
                     "torch BN or no normalization (convs keep their bias)",
            "training": f"SGD momentum 0.9 (Nesterov), lr {LR} one-cycle for both, weight decay 5e-4, batch "
                        f"{b['batch']}, {count(b['epochs'], 'epoch')}; {seeds_text(ctx.seeds(b['seeds']))} "
                        "(weights and order; one training subset)",
            "recorded": f"mean and std (over batch, channels, positions) of every ReLU's input, "
                        f"{every_steps(b['every'])}, in training mode (BN with batch statistics)",
            "rule": "a difference counts when the difference of the means exceeds the sum of the two seed sds and "
                    f"{MARGIN} (fixed in advance)",
        },
        # No "|" in a markdown table's cells: abs() instead.
        columns=["run", "init median abs(mean)", "init median abs(ln std)", "end median abs(mean)",
                 "end median abs(ln std)", "test acc %"],
        rows=_rows(runs, init, end), checks=claim_checks(end), plots=_plots(ctx, runs, first),
        findings=_findings(runs, init, end),
        data={"drift_init": init, "drift_end": end, "runs": {label: res.to_dict() for label, res in runs.items()}},
        notes=["Statistics pool all channels of a layer; BN normalizes each channel, so a layer whose channels "
               "sit at different means can pool to (0, 1) only if they are centred overall (the pooled variance "
               "adds the spread of the channel means)."],
    )
