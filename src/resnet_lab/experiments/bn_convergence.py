"""Batch normalization speeds up training (Ioffe & Szegedy 2015, "Batch Normalization:
Accelerating Deep Network Training by Reducing Internal Covariate Shift", fig. 2 and sec. 4.2),
and our from-scratch BN trains like torch's.

Four parts, each a check:

1. **Same steps in float64.** The plain-20 with torch's BN and with ours, from the same weights, on
   the same batches, for a few SGD steps in float64: the losses and the weights must agree to
   ``F64_TOLERANCE``, at the fixed rate ``F64_LR``. (In float32 two BN kernels round differently,
   and a 20-layer net amplifies the difference until the runs are two different samples of
   training: coincidence is defined only where rounding is negligible. In this plain-20 on real
   images it is negligible only for a few steps, even in float64: the first step's gradients agree to
   1e-12 (relative), and the difference then grows 10-50x per step at lr 0.002, 0.02 and 0.3 alike,
   to O(1) by step 7-11 (measured), so 20 steps compared the net's amplification of rounding, not the
   layers. The check runs 3 steps at the fixed rate ``F64_LR``, where two correct implementations
   agree to about 1e-11.)
2. **Same distribution in float32.** Torch BN and scratch BN trained with several seeds: their
   final test accuracies and their steps to the loss target fall inside each other's seed spread.
3. **Speed-up where the baseline learns.** The plain-20 with torch BN and without normalization,
   each at its own learning rate chosen by a small sweep (as Ioffe & Szegedy tuned their
   baseline), several seeds each: optimizer steps until the smoothed training loss first reaches
   ``LOSS_TARGET`` (a target fixed in advance), and their ratio.
4. **The seed's own example** (d2l, "Batch Normalization" chapter): LeNet-5 with sigmoid on
   Fashion-MNIST with and without BN after every conv/linear layer, at d2l's settings (plain SGD,
   lr 1.0 with BN and 0.9 without, batch 256, inputs in [0, 1], Xavier init): steps to
   ``LENET_LOSS_TARGET``.

A run that never reaches a target within the budget is counted at the budget's step count plus one
(censored), so its mean is a lower bound and a speed-up against it is a lower bound too.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.resnet import CifarResNet
from ..nn import BatchNorm1d as ScratchBatchNorm1d
from ..nn import BatchNorm2d as ScratchBatchNorm2d
from .report import Check, Report, Spread, exceeds, indistinguishable, plot_lines, rule_text
from .runner import Context, RunResult, RunSpec, SeedResults, cifar_net, count, ema, first_at_or_below

__all__ = ["CLAIM", "F64_TOLERANCE", "LENET_LOSS_TARGET", "LOSS_TARGET", "LeNet", "NAME", "claim_checks",
           "float64_agreement", "run", "steps_to_target"]

NAME = "bn_convergence"
CLAIM = ("Batch normalization speeds up training; our from-scratch BN trains like torch's "
         "(Ioffe & Szegedy 2015; d2l's BN chapter: LeNet with and without BN on Fashion-MNIST).")

# Fixed in advance, not derived from any run's figures.
LOSS_TARGET = 1.0  # smoothed (EMA 0.1) training cross-entropy of the plain-20; chance is ln 10 = 2.303
LENET_LOSS_TARGET = 0.6  # the same for LeNet (d2l's LeNet ends its 10 epochs near 0.47 without BN)
ACC_TARGET = 0.70  # test accuracy, reported (epochs to it), not checked
F64_TOLERANCE = 1e-9  # largest |difference| of losses and of weights, scratch vs torch BN, in float64
F64_LR = 0.02  # the float64 check's rate, fixed (not the sweep's pick)

BUDGET: dict[str, dict[str, Any]] = {
    "smoke": dict(depth=8, widths=(4, 8, 16), subset=256, epochs=1, max_steps=4, test=128, image_size=14, batch=32,
                  seeds=2, lrs=(0.02, 0.1), sweep_steps=3, f64_steps=2, f64_batch=8,
                  lenet=dict(subset=256, epochs=1, max_steps=3, batch=32, test=128)),
    "full": dict(depth=20, widths=(16, 32, 64), subset=6000, epochs=3, max_steps=None, test=2000, image_size=None,
                 batch=128, seeds=3, lrs=(0.003, 0.01, 0.03, 0.1, 0.3), sweep_steps=46, f64_steps=3, f64_batch=32,
                 lenet=dict(subset=None, epochs=10, max_steps=None, batch=256, test=None)),
}
NORMS = {"torch BN": "batch", "scratch BN": "scratch", "no norm": "none"}
LENET_LR = {"LeNet + BN": 1.0, "LeNet": 0.9}  # d2l: 1.0 for its BN LeNet, 0.9 for LeNet


class LeNet(nn.Module):
    """LeNet-5 as d2l's BN chapter builds it: conv5(6) - [BN] - sigmoid - avgpool2 - conv5(16) -
    [BN] - sigmoid - avgpool2 - linear(120) - [BN] - sigmoid - linear(84) - [BN] - sigmoid -
    linear(classes), Xavier-uniform weights (d2l's ``init_cnn``).

    Args:
        num_classes: outputs.
        in_channels: input channels.
        norm: ``scratch`` (our BN, as d2l's from-scratch one), ``batch`` (torch's) or ``none``.
        image_size: input side (28 for Fashion-MNIST).
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, *, norm: str = "scratch",
                 image_size: int = 28) -> None:
        super().__init__()
        if norm not in ("scratch", "batch", "none"):
            raise ValueError(f"LeNet norm must be 'scratch', 'batch' or 'none', got {norm!r}")
        bn2d = {"scratch": ScratchBatchNorm2d, "batch": nn.BatchNorm2d}.get(norm)
        bn1d = {"scratch": ScratchBatchNorm1d, "batch": nn.BatchNorm1d}.get(norm)
        side = ((image_size - 4) // 2 - 4) // 2  # two 5x5 convs without padding, two 2x2 pools

        def block(layer: nn.Module, bn, width: int, pool: bool) -> list[nn.Module]:
            return [layer, *([bn(width)] if bn else []), nn.Sigmoid(), *([nn.AvgPool2d(2, 2)] if pool else [])]

        self.net = nn.Sequential(
            *block(nn.Conv2d(in_channels, 6, 5), bn2d, 6, True), *block(nn.Conv2d(6, 16, 5), bn2d, 16, True),
            nn.Flatten(), *block(nn.Linear(16 * side * side, 120), bn1d, 120, False),
            *block(nn.Linear(120, 84), bn1d, 84, False), nn.Linear(84, num_classes))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def steps_to_target(losses: Sequence[float], target: float, censor: int) -> float:
    """Optimizer steps until the smoothed (EMA 0.1) loss first reaches ``target``; ``censor`` when
    it never does (a diverged run, whose NaN compares false, never does).

    Args:
        losses: per-step training losses.
        target: the loss target.
        censor: the value of "never": the budget's step count plus one.
    """
    steps = first_at_or_below(ema(losses), target)
    return steps if math.isfinite(steps) else float(censor)


@torch.no_grad()
def _max_state_diff(a: nn.Module, b: nn.Module) -> float:
    sb = b.state_dict()
    return max(float((v.double() - sb[k].double()).abs().max()) for k, v in a.state_dict().items() if v.numel())


def float64_agreement(depth: int, widths: Sequence[int], batches: Sequence[tuple[Tensor, Tensor]], lr: float,
                      seed: int = 0) -> dict[str, float]:
    """Train the plain net with torch's BN and with ours from the same weights on the same batches,
    in float64, one SGD step (momentum 0.9, Nesterov, weight decay 5e-4) per batch; the largest
    differences of the per-step losses and of the final weights and running statistics, and how far
    training moved them (``max_change``: the steps did something).

    Args:
        depth, widths: the CIFAR plain net.
        batches: ``(x, y)`` training batches, one per step.
        lr: the learning rate.
        seed: the initial weights (torch's net's, copied into ours).
    """
    nets = []
    for norm in ("batch", "scratch"):
        torch.manual_seed(seed)
        nets.append(CifarResNet(depth, num_classes=10, in_channels=batches[0][0].shape[1], norm=norm, shortcut="none",
                                widths=tuple(widths)).double().train())
    nets[1].load_state_dict(nets[0].state_dict())  # the same weights, whatever the init's draw order
    start = copy.deepcopy(nets[0])
    opts = [torch.optim.SGD(n.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4) for n in nets]
    loss_diff = 0.0
    for x, y in batches:
        losses = []
        for net, opt in zip(nets, opts):
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(net(x.double()), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        loss_diff = max(loss_diff, abs(losses[0] - losses[1]))
    return {"steps": len(batches), "max_loss_diff": loss_diff, "max_state_diff": _max_state_diff(*nets),
            "max_change": _max_state_diff(nets[0], start)}


def claim_checks(f64: Mapping[str, float], test_acc: Mapping[str, Sequence[float]],
                 steps: Mapping[str, Sequence[float]], lenet_steps: Mapping[str, Sequence[float]],
                 censor: Mapping[str, int]) -> list[Check]:
    """The claim's four checks.

    Args:
        f64: :func:`float64_agreement`'s figures.
        test_acc: ``{"torch BN" | "scratch BN": [final test accuracy per seed]}``.
        steps: ``{"torch BN" | "scratch BN" | "no norm": [steps to LOSS_TARGET per seed]}`` (censored).
        lenet_steps: ``{"LeNet + BN" | "LeNet": [steps to LENET_LOSS_TARGET per seed]}`` (censored).
        censor: ``{"plain": ..., "lenet": ...}`` the value that means "never reached".
    """
    s = {k: Spread.of(v) for k, v in steps.items()}
    acc = {k: Spread.of(v) for k, v in test_acc.items()}
    ls = {k: Spread.of(v) for k, v in lenet_steps.items()}
    worst = max(f64["max_loss_diff"], f64["max_state_diff"])
    # Runs that never reached the loss target all read `censor`: equal, but nothing to compare
    bn_never = sum(v >= censor["plain"] for k in ("scratch BN", "torch BN") for v in steps[k])
    same_dist = (indistinguishable(acc["scratch BN"], acc["torch BN"])
                 and indistinguishable(s["scratch BN"], s["torch BN"]) and not bn_never)
    return [
        Check("float64: scratch BN and torch BN take the same steps", worst <= F64_TOLERANCE,
              f"{f64['steps']:g} SGD steps from the same weights on the same batches: largest loss difference "
              f"{f64['max_loss_diff']:.2e}, largest weight/statistics difference {f64['max_state_diff']:.2e} "
              f"(must be <= {F64_TOLERANCE:g}); training moved them by up to {f64.get('max_change', math.nan):.2e}"),
        Check("float32: scratch-BN and torch-BN runs fall inside each other's seed spread", same_dist,
              f"final test accuracy {acc['scratch BN'].scaled(100).fmt()}% vs {acc['torch BN'].scaled(100).fmt()}%: "
              + rule_text("indistinguishable", acc["scratch BN"], acc["torch BN"], scale=100, unit=" pp")
              + f"; steps to loss {LOSS_TARGET} {s['scratch BN'].fmt(1)} vs {s['torch BN'].fmt(1)}: "
              + rule_text("indistinguishable", s["scratch BN"], s["torch BN"], digits=1)
              + (f"; but {bn_never} of the BN runs never reached the loss target, so their steps say nothing"
                 if bn_never else "")),
        _sooner("BN reaches the loss target sooner than no norm, each at its own best learning rate",
                s["torch BN"], s["no norm"], LOSS_TARGET, censor["plain"]),
        _sooner("d2l's LeNet: with BN it reaches the loss target sooner than without",
                ls["LeNet + BN"], ls["LeNet"], LENET_LOSS_TARGET, censor["lenet"]),
    ]


def _sooner(question: str, fast: Spread, slow: Spread, target: float, censor: int) -> Check:
    """``fast`` needs fewer steps than ``slow`` beyond the seed spread; the ratio of the means."""
    never = sum(v >= censor for v in slow.values)
    fast_never = sum(v >= censor for v in fast.values)
    ratio = slow.mean / fast.mean if fast.mean > 0 else math.nan
    if fast_never:  # a ratio of censored values is no speed-up, nor a bound on one
        speed = f"no speed-up: {fast_never} of {fast.n} faster runs never reached it either"
    else:
        speed = f"speed-up {ratio:.2f}x" + (f" (a lower bound: {never} of {slow.n} slower runs never reached it)"
                                            if never else "")
    return Check(question, exceeds(slow, fast) and not fast_never,
                 f"steps to smoothed training loss <= {target}: {fast.fmt(1)} vs {slow.fmt(1)} (mean ± sd over "
                 f"{fast.n} seeds; never = {censor}); {speed}; " + rule_text("exceeds", slow, fast, digits=1))


def run(ctx: Context) -> Report:
    """Float64 agreement, float32 seeds, the speed-up at each net's best rate, and d2l's LeNet."""
    b = BUDGET[ctx.budget]
    data = ctx.data(batch_size=b["batch"], subset=b["subset"], test_samples=b["test"], image_size=b["image_size"])
    seeds = ctx.seeds(b["seeds"])
    sweep = {label: _sweep(ctx, b, data, label) for label in ("torch BN", "no norm")}
    lr = {"torch BN": _best(sweep["torch BN"]), "scratch BN": _best(sweep["torch BN"]), "no norm": _best(sweep["no norm"])}
    results = {label: ctx.train_seeds(_spec(b, label, lr[label]), seeds, data) for label in NORMS}
    for r in results.values():
        r.drop_models()
    batches = _f64_batches(ctx, b)
    f64 = float64_agreement(b["depth"], b["widths"], batches, F64_LR, seed=ctx.seed)
    ctx.log(f"[{NAME}] float64, {f64['steps']} steps: loss diff {f64['max_loss_diff']:.2e}, "
            f"state diff {f64['max_state_diff']:.2e}")
    lenet, lenet_censor = _lenet(ctx, b, seeds)
    censor = _censor(results)
    steps = {k: [steps_to_target(r.step_losses, LOSS_TARGET, censor) for r in v.runs] for k, v in results.items()}
    lsteps = {k: [steps_to_target(r.step_losses, LENET_LOSS_TARGET, lenet_censor) for r in v.runs]
              for k, v in lenet.items()}
    acc = {k: list(v.final("test_acc", failed=0.1).values) for k, v in results.items()}
    checks = claim_checks(f64, acc, steps, lsteps, {"plain": censor, "lenet": lenet_censor})
    plots = _plots(ctx, results, lenet, sweep, lr)
    return Report(
        claim=CLAIM, setup=_setup(b, lr, seeds),
        columns=["run", "lr", "steps to loss target", "epochs to acc target", "final test acc %", "final train loss",
                 "s/epoch"],
        rows=_rows(results, lr, steps, censor) + _rows(lenet, LENET_LR, lsteps, lenet_censor),
        checks=checks, findings=_findings(sweep, results, lenet, steps, lsteps), plots=plots,
        data={"runs": {k: r.to_dict() for k, r in results.items()}, "lenet": {k: r.to_dict() for k, r in lenet.items()},
              "sweep": sweep, "lr": lr, "float64": f64, "steps_to_target": steps, "lenet_steps_to_target": lsteps,
              "targets": {"loss": LOSS_TARGET, "lenet_loss": LENET_LOSS_TARGET, "acc": ACC_TARGET,
                          "float64": F64_TOLERANCE}},
        notes=_notes(ctx, b),
    )


def _spec(b: Mapping[str, Any], net: str, lr: float, **over: Any) -> RunSpec:
    """The plain net with normalization ``net`` (a key of ``NORMS``) at ``lr``; ``over`` replaces fields."""
    norm = NORMS[net]
    return replace(RunSpec(net, cifar_net(b["depth"], residual=False, norm=norm, widths=b["widths"]),
                           batch_size=b["batch"], epochs=b["epochs"], lr=lr, max_steps_per_epoch=b["max_steps"],
                           info={"norm": norm, "lr": lr}), **over)


def _sweep(ctx: Context, b: Mapping[str, Any], data, label: str) -> dict[float, float]:
    """``{lr: final smoothed training loss}`` of short one-seed runs (inf when diverged)."""
    out = {}
    for lr in b["lrs"]:
        spec = _spec(b, label, lr, label=f"{label} sweep lr {lr:g}", epochs=1, max_steps_per_epoch=b["sweep_steps"],
                     seed=ctx.seed)
        r = ctx.train(spec, data)
        out[lr] = math.inf if r.diverged or not r.step_losses else ema(r.step_losses)[-1]
        r.model = None
    return out


def _best(sweep: Mapping[float, float]) -> float:
    """The rate with the lowest final smoothed loss (ties: the smaller rate)."""
    return min(sorted(sweep), key=lambda lr: sweep[lr])


def _f64_batches(ctx: Context, b: Mapping[str, Any]) -> list[tuple[Tensor, Tensor]]:
    data = ctx.data(batch_size=b["f64_batch"], subset=b["subset"], test_samples=b["test"], image_size=b["image_size"])
    data.train.set_epoch(0)
    batches = []
    for x, y in data.train:
        batches.append((x.cpu(), y.cpu()))
        if len(batches) == b["f64_steps"]:
            break
    return batches


def _lenet(ctx: Context, b: Mapping[str, Any], seeds: Sequence[int]) -> tuple[dict[str, SeedResults], int]:
    """d2l's LeNet with (our) BN and without, at d2l's settings; inputs in [0, 1] as d2l's ToTensor."""
    lb = b["lenet"]
    data = ctx.data(batch_size=lb["batch"], subset=lb["subset"], test_samples=lb["test"], mean=(0.0,), std=(1.0,))
    side = data.info.input_size[1]
    out = {}
    for label, lr in LENET_LR.items():
        norm = "scratch" if "BN" in label else "none"
        spec = RunSpec(label, lambda nc, ic, norm=norm: LeNet(nc, ic, norm=norm, image_size=side), batch_size=lb["batch"],
                       epochs=lb["epochs"], lr=lr, momentum=0.0, schedule="constant", weight_decay=0.0,
                       max_steps_per_epoch=lb["max_steps"], info={"norm": norm, "lr": lr})
        out[label] = ctx.train_seeds(spec, seeds, data)
        out[label].drop_models()
    return out, _censor(out)


def _censor(results: Mapping[str, SeedResults]) -> int:
    """The budget's step count plus one: "never reached" (diverged runs stop early, so the longest run)."""
    return max(len(r.step_losses) for v in results.values() for r in v.runs) + 1


def _epochs_to_acc(r: RunResult) -> float:
    return next((float(rec["epoch"]) for rec in r.epochs if rec["test_acc"] >= ACC_TARGET), math.inf)


def _seconds_per_epoch(r: RunResult) -> float:
    """The training seconds (the steps, without the evaluations) of an epoch, on average: the
    table's s/epoch and the findings' figure."""
    return sum(e["train_seconds"] for e in r.epochs) / max(1, len(r.epochs))


def _rows(results: Mapping[str, SeedResults], lr: Mapping[str, float], steps: Mapping[str, Sequence[float]],
          censor: int) -> list[list[Any]]:
    return [[label, lr[label], Spread.of(steps[label]), r.spread(_epochs_to_acc), r.final("test_acc").scaled(100),
             r.final("train_loss"), r.spread(_seconds_per_epoch)]
            for label, r in results.items()]


def _findings(sweep, results, lenet, steps, lsteps) -> list[str]:
    bn, no = Spread.of(steps["torch BN"]), Spread.of(steps["no norm"])
    return [
        "learning-rate sweep (one seed, final smoothed training loss; inf = diverged): " + "; ".join(
            f"{label}: " + ", ".join(f"{lr:g} -> {v:.3f}" for lr, v in s.items()) for label, s in sweep.items()),
        f"speed-up of BN, steps to loss {LOSS_TARGET}: {no.mean / bn.mean:.2f}x (no norm {no.fmt(1)} / torch BN "
        f"{bn.fmt(1)})",
        "epochs to test accuracy >= {:.0f}%: ".format(100 * ACC_TARGET) + ", ".join(
            f"{k} {r.spread(_epochs_to_acc)}" for k, r in results.items()) + " (inf = not reached)",
        "LeNet final test accuracy %: " + ", ".join(f"{k} {r.final('test_acc').scaled(100)}" for k, r in lenet.items())
        + "; steps to loss {}: ".format(LENET_LOSS_TARGET) + ", ".join(f"{k} {Spread.of(v)}" for k, v in lsteps.items()),
        "training seconds per epoch (the table's s/epoch: the steps alone, without the evaluations): "
        + ", ".join(f"{k} {r.spread(_seconds_per_epoch)}" for k, r in results.items())
        + " (ours is a hand-written autograd function over tensor ops, torch's a fused kernel)",
    ]


def _plots(ctx: Context, results, lenet, sweep, lr) -> list[str]:
    styles = {"torch BN": "-", "scratch BN": ":", "no norm": "--", "LeNet + BN": "-", "LeNet": "--"}

    def loss_plot(group: Mapping[str, SeedResults], name: str, title: str, target: float) -> None:
        curves = {k: r.mean_steps(lambda x: ema(x.step_losses)) for k, r in group.items()}
        plot_lines({k: (x, m) for k, (x, m, _) in curves.items()}, ctx.out / name, title=title, xlabel="step",
                   ylabel="cross-entropy (EMA 0.1)", hline=target, styles=styles,
                   bands={k: ([a - s for a, s in zip(m, sd)], [a + s for a, s in zip(m, sd)])
                          for k, (_, m, sd) in curves.items()})

    loss_plot(results, "train_loss.png", "plain net: training loss per step, mean ± sd over seeds", LOSS_TARGET)
    loss_plot(lenet, "lenet_loss.png", "d2l's LeNet: training loss per step, mean ± sd over seeds", LENET_LOSS_TARGET)
    acc = {k: r.mean_curve("test_acc") for k, r in results.items()}
    plot_lines({k: (x, [100 * a for a in m]) for k, (x, m, _) in acc.items()}, ctx.out / "test_acc.png",
               title="Test accuracy, mean ± sd over seeds", xlabel="epoch", ylabel="test accuracy (%)",
               hline=100 * ACC_TARGET, styles=styles,
               bands={k: ([100 * (a - s) for a, s in zip(m, sd)], [100 * (a + s) for a, s in zip(m, sd)])
                      for k, (_, m, sd) in acc.items()})
    plot_lines({k: (list(v), [min(x, 5.0) for x in v.values()]) for k, v in sweep.items()}, ctx.out / "lr_sweep.png",
               title="Learning-rate sweep: final smoothed loss (diverged: 5)", xlabel="learning rate",
               ylabel="cross-entropy (EMA 0.1)", logx=True, logx_base=10, styles={"no norm": "--"})
    return ["train_loss.png", "test_acc.png", "lenet_loss.png", "lr_sweep.png"]


def _setup(b: Mapping[str, Any], lr: Mapping[str, float], seeds: Sequence[int]) -> dict[str, str]:
    lb = b["lenet"]
    return {
        "data": f"Fashion-MNIST, {b['subset']} training images, first {b['test']} test images, no augmentation",
        "model": f"plain-{b['depth']} (no shortcuts), widths {b['widths']}, norm torch BN / scratch BN / none",
        "learning rates": f"swept over {', '.join(map(str, b['lrs']))} with one seed and {b['sweep_steps']} steps "
                          f"per net; chosen: torch BN {lr['torch BN']:g} (scratch BN the same), no norm "
                          f"{lr['no norm']:g}",
        "training": f"SGD momentum 0.9 (Nesterov), one-cycle, weight decay 5e-4, batch {b['batch']}, "
                    f"{count(b['epochs'], 'epoch')}",
        "seeds": f"{', '.join(map(str, seeds))}; a seed gives torch and scratch BN the same initial weights and order",
        "float64": f"{b['f64_steps']} steps at batch {b['f64_batch']}, lr {F64_LR:g}, both BNs from the "
                   f"same weights (tolerance {F64_TOLERANCE:g})",
        "LeNet (d2l)": f"LeNet-5, sigmoid, BN (ours) after every conv/linear layer or none, Xavier init, inputs in "
                       f"[0, 1]; plain SGD (no momentum, no weight decay), constant lr {LENET_LR['LeNet + BN']} with "
                       f"BN and {LENET_LR['LeNet']} without, batch {lb['batch']}, {count(lb['epochs'], 'epoch')} on "
                       f"{lb['subset'] or 'all 60000'} training images",
        "targets": f"fixed in advance: smoothed (EMA 0.1) training loss <= {LOSS_TARGET} (plain net), "
                   f"<= {LENET_LOSS_TARGET} (LeNet); never reached = the budget's steps + 1",
    }


def _notes(ctx: Context, b: Mapping[str, Any]) -> list[str]:
    if ctx.smoke:
        return []
    return [f"The plain net's runs are {count(b['epochs'], 'epoch')} on {b['subset']} images, far shorter than the BN "
            "paper's; the speed-up is of this early phase.",
            "LeNet uses one architecture with and without BN (d2l's BN LeNet, 5x5 convs without padding); d2l's own "
            "LeNet chapter pads the first conv."]
