"""Vanishing gradients: with sigmoid and no normalization the gradient reaching the early layers
of a deep plain network is orders of magnitude smaller than at the top; batch normalization, ReLU
or identity shortcuts keep it alive.

Sources: Glorot & Bengio 2010 ("Understanding the difficulty of training deep feedforward neural
networks", fig. 7: back-propagated gradients shrink towards the input with sigmoid/tanh); Ioffe &
Szegedy 2015 sec. 3.3 (BN keeps saturating nonlinearities in their non-saturated regime); He et
al. 2016 ("Identity Mappings in Deep Residual Networks", eq. 5: a shortcut adds an identity term to
every layer's Jacobian). The networks are deep fully connected nets built here, so the activation
is the only thing that changes between them: sigmoid (Glorot init), sigmoid + BN, ReLU (He init),
and sigmoid with identity shortcuts. Each net is measured from several initializations (seeds); a
check holds only when every seed's ratio lies beyond its threshold (the worst seed decides), so
the whole seed range is on the claimed side.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from .._text import seeds_text
from ..analysis.gradflow import GradientFlowRecorder, gradient_norms, plot_gradient_flow
from .report import Check, Report, Spread, plot_lines
from .runner import Context, RunSpec, SeedResults, count

__all__ = ["CHANCE_MARGIN", "CLAIM", "NAME", "DeepMLP", "claim_checks", "collapsed_seeds", "run"]

NAME = "vanishing_gradients"
CLAIM = ("With sigmoid and no BN, gradients vanish in the early layers of a deep plain net; BN, ReLU or "
         "residual connections keep them alive (Glorot & Bengio 2010; Ioffe & Szegedy 2015; He et al. 2016).")

VANISHED = 1e-2  # first-layer / last-layer gradient norm below this: vanished
ALIVE = 1e-1  # above this: alive
CHANCE_MARGIN = 0.02  # a final test accuracy below 1/classes + 2 pp: the training collapsed to chance

BUDGET = {
    "smoke": dict(depth=10, width=32, subset=512, epochs=1, max_steps=5, batch=64, test=256, seeds=2),
    "full": dict(depth=20, width=128, subset=30000, epochs=3, max_steps=None, batch=128, test=2000, seeds=3),
}
CONFIGS = {
    "sigmoid": dict(activation="sigmoid", norm=False, residual=False),
    "sigmoid + BN": dict(activation="sigmoid", norm=True, residual=False),
    "ReLU": dict(activation="relu", norm=False, residual=False),
    "sigmoid + residual": dict(activation="sigmoid", norm=False, residual=True),
}


class _Block(nn.Module):
    def __init__(self, in_f: int, out_f: int, activation: str, norm: bool, residual: bool,
                 branch_scale: float = 1.0) -> None:
        super().__init__()
        self.linear = nn.Linear(in_f, out_f, bias=not norm)
        self.norm = nn.BatchNorm1d(out_f) if norm else nn.Identity()
        self.act = nn.Sigmoid() if activation == "sigmoid" else nn.ReLU()
        self.residual = residual and in_f == out_f
        # Glorot & Bengio's normalized init for sigmoid (their eq. 16); He et al. 2015's for ReLU.
        if activation == "sigmoid":
            nn.init.xavier_uniform_(self.linear.weight)
        else:
            nn.init.kaiming_normal_(self.linear.weight, nonlinearity="relu")
        if self.residual:
            # Without normalization every branch adds its variance to the sum; scaling the branches
            # by 1/sqrt(blocks) keeps the output O(1) at any depth (Hanin & Rolnick 2018; Fixup,
            # Zhang et al. 2019). Unscaled, 18 sigmoid branches diverged at lr 0.05.
            with torch.no_grad():
                self.linear.weight.mul_(branch_scale)
        if self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        if self.residual:
            # Pre-activation form (He et al. 2016, eq. 1-2 with fig. 4e ordering): the sum stays an
            # exact identity path, and the zero-mean weights keep the added term centred, where
            # x + sigmoid(.) would add ~0.5 per layer and blow up the logits.
            return x + self.linear(self.act(self.norm(x)))
        return self.act(self.norm(self.linear(x)))


class DeepMLP(nn.Module):
    """A deep fully connected classifier: ``depth`` Linear layers (``depth - 1`` blocks of
    Linear -> [BN] -> activation, then the output Linear), optional identity shortcuts around the
    width-preserving blocks.

    Args:
        in_features: flattened input size.
        num_classes: outputs.
        depth: number of Linear layers (>= 2).
        width: hidden width.
        activation: ``sigmoid`` or ``relu``.
        norm: BatchNorm1d after every hidden Linear.
        residual: ``x + W act(x)`` for every width-preserving hidden block (pre-activation shortcut):
            all after the first, and the first too when ``in_features == width``; the branch weights
            scaled by ``1/sqrt(number of such blocks)`` at init.
    """

    def __init__(self, in_features: int, num_classes: int, *, depth: int, width: int, activation: str = "sigmoid",
                 norm: bool = False, residual: bool = False) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth counts Linear layers and must be >= 2, got {depth}")
        if activation not in ("sigmoid", "relu"):
            raise ValueError(f"activation must be 'sigmoid' or 'relu', got {activation!r}")
        dims = [in_features] + [width] * (depth - 1)
        scale = 1.0 / math.sqrt(max(sum(a == b for a, b in zip(dims[:-1], dims[1:])), 1))  # per residual branch
        self.blocks = nn.Sequential(*(_Block(a, b, activation, norm, residual, scale)
                                      for a, b in zip(dims[:-1], dims[1:])))
        self.head = nn.Linear(width, num_classes)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(x.flatten(1)))


def claim_checks(ratios: Mapping[str, tuple[Sequence[float], Sequence[float]]],
                 diverged: Mapping[str, bool] | None = None,
                 collapsed: Mapping[str, Sequence[int]] | None = None) -> list[Check]:
    """The claim's four checks from the first-layer / last-layer gradient-norm ratios of every seed.

    Args:
        ratios: ``{net: ([ratio at initialization per seed], [ratio after training per seed])}``
            for the nets of ``CONFIGS`` (``sigmoid``, ``sigmoid + BN``, ``ReLU``,
            ``sigmoid + residual``). A NaN fails the check.
        diverged: ``{net: True}`` for a net whose training diverged in some seed (said in the evidence).
        collapsed: ``{net: [seed, ...]}``: seeds whose training ended at chance accuracy without a NaN
            (a ReLU net at this rate can die); their small ratio still fails the check, and the
            evidence says why, since it is a failure of training rather than of the initialization.
    """
    diverged, collapsed = diverged or {}, collapsed or {}

    def spread(values: Sequence[float]) -> str:
        finite = [v for v in values if not math.isnan(v)]
        nans = f" and NaN in {len(values) - len(finite)} seed(s)" if len(finite) < len(values) else ""
        if not finite:
            return "NaN" if len(values) == 1 else f"NaN in all {len(values)} seeds"
        return (f"{min(finite):.2e}..{max(finite):.2e}" if len(finite) > 1 else f"{finite[0]:.2e}") + nans

    init, trained = ratios["sigmoid"]
    n = len(init)
    checks = [Check("sigmoid without BN: the first layer's gradient has vanished",
                    all(v < VANISHED for v in [*init, *trained]),  # all(): a NaN (false both ways) fails
                    f"first/last layer gradient norm {spread(init)} at init, {spread(trained)} after training "
                    f"(range over {n} seeds; every seed must be below {VANISHED:g})")]
    for label in ("sigmoid + BN", "ReLU", "sigmoid + residual"):
        init, trained = ratios[label]
        checks.append(Check(f"{label}: the first layer's gradient stays alive",
                            all(v > ALIVE for v in [*init, *trained]),  # min() would skip a NaN seed
                            f"first/last ratio {spread(init)} at init, {spread(trained)} after training (range over "
                            f"{len(init)} seeds; every seed must be above {ALIVE:g})"
                            + ("; training diverged (NaN loss)" if diverged.get(label) else "")
                            + (f"; training ended at chance accuracy in {seeds_text(collapsed[label])} (a dead or "
                               "untrained net: the ratio alone decides the check)" if collapsed.get(label) else "")))
    return checks


def collapsed_seeds(result: SeedResults, num_classes: int) -> list[int]:
    """The seeds whose training ended at chance test accuracy (below 1/classes + ``CHANCE_MARGIN``)
    without diverging: a dead network, which the evidence names apart from a vanished initialization."""
    return [r.info.get("seed") for r in result.runs
            if not r.diverged and r.last.get("test_acc", 1.0) < 1 / num_classes + CHANCE_MARGIN]


def _ratio(norms: list[tuple[str, float]]) -> float:
    first, last = norms[0][1], norms[-1][1]
    return first / last if last > 0 else math.nan


def run(ctx: Context) -> Report:
    """Per-layer gradient norms at initialization and after training, for four deep nets, over seeds."""
    b = BUDGET[ctx.budget]
    data = ctx.data(batch_size=b["batch"], subset=b["subset"], test_samples=b["test"])
    c, h, w = data.info.input_size
    probe_x, probe_y = next(iter(data.train))  # one fixed batch for the before/after snapshots
    data.train.set_epoch(0)
    seeds = ctx.seeds(b["seeds"])

    flows, results, over_steps = {}, {}, {}
    for label, cfg in CONFIGS.items():
        inits, recorders = [], []

        def build(nc: int, ic: int, cfg=cfg, inits=inits, recorders=recorders) -> nn.Module:
            # Called by the runner after seeding with each seed: measure at initialization, then
            # record the per-layer gradient norms of every training step.
            model = DeepMLP(c * h * w, nc, depth=b["depth"], width=b["width"], **cfg).train()
            inits.append(gradient_norms(model, probe_x, probe_y))
            recorders.append(GradientFlowRecorder(model))
            return model

        spec = RunSpec(label, build, batch_size=b["batch"], epochs=b["epochs"], lr=0.05,
                       max_steps_per_epoch=b["max_steps"], step_callbacks=[lambda s, r=recorders: r[-1].record()],
                       info=cfg)
        result = ctx.train_seeds(spec, seeds, data)
        afters = []
        for run_, recorder in zip(result.runs, recorders):
            recorder.close()
            afters.append(gradient_norms(run_.model.train(), probe_x, probe_y))
        result.drop_models()
        flows[label] = {"init": inits, "trained": afters}
        results[label] = result
        over_steps[label] = [row[0] for row in recorders[0].history]
    return _report(ctx, b, seeds, flows, results, over_steps, len(data.info.classes))


def _report(ctx: Context, b: Mapping, seeds: Sequence[int], flows: Mapping, results: Mapping,
            over_steps: Mapping, num_classes: int) -> Report:
    """Table, checks and plots from the per-seed gradient norms (the plots show the first seed)."""
    rows = []
    for label, f in flows.items():
        r = results[label]
        rows.append([label, Spread.of(x[0][1] for x in f["init"]), Spread.of(x[-1][1] for x in f["init"]),
                     Spread.of(map(_ratio, f["init"])), Spread.of(map(_ratio, f["trained"])), r.final("train_loss"),
                     r.final("test_acc").scaled(100)])
    checks = claim_checks({label: ([_ratio(x) for x in f["init"]], [_ratio(x) for x in f["trained"]])
                           for label, f in flows.items()}, {label: r.diverged > 0 for label, r in results.items()},
                          {label: collapsed_seeds(r, num_classes) for label, r in results.items()})

    plot_gradient_flow({k: v["init"][0] for k, v in flows.items()}, ctx.out / "gradflow_init.png",
                       title=f"Per-layer gradient norm at initialization ({b['depth']} layers, width {b['width']}; "
                             f"seed {seeds[0]})")
    steps = len(results["sigmoid"].runs[0].step_losses)
    plot_gradient_flow({k: v["trained"][0] for k, v in flows.items()}, ctx.out / "gradflow_trained.png",
                       title=f"Per-layer gradient norm after {steps} steps (seed {seeds[0]})")
    plot_lines({k: (list(range(1, len(v) + 1)), v) for k, v in over_steps.items()}, ctx.out / "first_layer_steps.png",
               title=f"First-layer gradient norm during training (seed {seeds[0]})", xlabel="step",
               ylabel="||dL/dW1||", logy=True)
    return Report(
        claim=CLAIM,
        setup={
            "data": f"Fashion-MNIST, {b['subset']} training images (flattened), first {b['test']} test images",
            "models": f"fully connected, {b['depth']} Linear layers, width {b['width']}; sigmoid (Glorot init), "
                      "sigmoid + BN, ReLU (He init), sigmoid + identity shortcuts",
            "training": f"SGD momentum 0.9 (Nesterov), lr 0.05 one-cycle, batch {b['batch']}, {count(b['epochs'], 'epoch')}",
            "seeds": f"{', '.join(map(str, seeds))} (initialization and data order); figures are mean ± sd over "
                     "seeds, checks need every seed beyond the threshold",
            "measure": "||dL/dW|| per Linear layer on one fixed training batch (train mode); "
                       "ratio = first layer / output layer",
        },
        columns=["net", "first-layer grad (init)", "output-layer grad (init)", "first/last (init)",
                 "first/last (trained)", "final train loss", "test acc %"],
        rows=rows, checks=checks, plots=["gradflow_init.png", "gradflow_trained.png", "first_layer_steps.png"],
        data={"flows": flows, "first_layer_per_step": over_steps,
              "runs": {k: r.to_dict() for k, r in results.items()}},
    )
