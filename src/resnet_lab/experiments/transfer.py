"""Transfer: from-scratch training vs the three transfer strategies, with few target labels.

A ResNet is pretrained on Fashion-MNIST classes 0-4 (T-shirt, Trouser, Pullover, Dress, Coat).
The target task is classes 5-9 (Sandal, Shirt, Sneaker, Bag, Ankle boot) with only k labelled
training images per class; every run is evaluated on all target test images. Compared: training
from scratch, ``all`` (every layer at one rate; ``all-discr``: the backbone at a tenth of the
head's rate), ``last`` (the last stage and the classifier) and ``head`` (a new Linear on the frozen
pretrained classifier). The
pretrained network goes through the library path a user takes: it is saved as a run directory and
read back with :func:`resnet_lab.transfer.load_source`.

The seed text's expectation: ``all`` is the most accurate, ``head``/``last`` are the cheapest, and
transfer beats scratch most when data are scarce (Yosinski et al. 2014; Kornblith et al. 2019).

Every strategy is trained with the same seeds at each k, and a seed fixes the labelled images, the
initialization of new layers and the order, so two strategies are compared seed by seed: an
accuracy difference counts when the mean of the per-seed differences exceeds their sd.
"""

from __future__ import annotations

import statistics
from types import SimpleNamespace
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from ..models import create_model
from ..train import evaluate
from ..transfer import WeightSource, is_running_norm, load_source, transfer_model
from .report import Check, Report, Spread, exceeds, plot_lines, rule_text
from .runner import Context, RunResult, RunSpec, count, first_test_samples

__all__ = ["CLAIM", "NAME", "claim_checks", "run"]

NAME = "transfer"
CLAIM = ("Fine-tuning all layers is the most accurate transfer, training only the last stage or a new head "
         "is the cheapest, and transfer beats training from scratch most when target labels are few "
         "(Yosinski et al. 2014; Kornblith et al. 2019).")

SOURCE_CLASSES = [0, 1, 2, 3, 4]
TARGET_CLASSES = [5, 6, 7, 8, 9]
STRATEGIES = ("scratch", "all", "last", "head")
# The runs: the four strategies plus `all` with discriminative learning rates (the backbone at a
# tenth of the head's rate, as fastai's fine_tune), the option `--backbone-lr-scale` gives.
VARIANTS = ("scratch", "all", "all-discr", "last", "head")

BUDGET: dict[str, dict[str, Any]] = {
    # model; pretraining (subset of the source images, epochs); target k values; training images
    # seen per target run (whole passes over its 5k images, spread over `epochs` epochs); target
    # batch size; test samples evaluated after each epoch (the final figure uses all target test
    # images, or `full_test`); seeds of the per-class selection for each k; image side.
    "smoke": dict(model="resnet8", pre_subset=200, pre_epochs=1, ks=(5, 20), seen=40, batch=16, epochs=1,
                  test_slice=100, seeds={5: 2, 20: 2}, full_test=250, image_size=14),
    "full": dict(model="resnet8", pre_subset=None, pre_epochs=1, ks=(10, 100, 1000),
                 seen={10: 1500, 100: 4000, 1000: 10000}, batch=32, epochs=3, test_slice=300,
                 seeds={10: 3, 100: 3, 1000: 3}, full_test=None, image_size=None),
}
LR = {"scratch": 0.1, "all": 0.05, "all-discr": 0.05, "last": 0.05, "head": 0.05}
BACKBONE_LR_SCALE = 0.1  # `all-discr`: the backbone at a tenth of the head's rate


class _Passes:
    """A training loader whose epoch is ``passes`` passes over the inner loader, so a run on a
    few images does not evaluate after every one of its one-batch epochs."""

    def __init__(self, loader, passes: int) -> None:
        self.loader, self.passes, self.epoch = loader, max(1, int(passes)), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.loader) * self.passes

    def __iter__(self):
        for r in range(self.passes):
            self.loader.set_epoch(self.epoch * self.passes + r)
            yield from self.loader


def _pretrain(ctx: Context, b: dict) -> tuple[Any, Any]:
    """Train the source network on classes 0-4 into the run directory ``source/``; returns the
    :class:`~resnet_lab.transfer.WeightSource` read back from it and the run's result. The trainer
    writes the directory as `resnet-lab train` does (the kept classes, recipe, batches, metrics), so
    `resnet-lab evaluate` and `report` take it like any run."""
    data = ctx.data(classes=SOURCE_CLASSES, subset=b["pre_subset"], batch_size=128 if not ctx.smoke else 32,
                    test_samples=b["test_slice"], image_size=b["image_size"])
    run_dir = ctx.out / "source"
    spec = RunSpec("pretrain (classes 0-4)",
                   lambda n, c: create_model(b["model"], num_classes=n, in_channels=c),
                   batch_size=data.train.batch_size, epochs=b["pre_epochs"], lr=0.1, seed=ctx.seed, out=run_dir)
    result = ctx.train(spec, data=data)
    return load_source(run_dir), result


def _target(ctx: Context, b: dict, k: int, seed: int, source: WeightSource):
    """The target bundle (classes 5-9, k per class drawn with ``seed``), normalized as the source
    was: its mean/std travelled with the weights (same dataset, same channels)."""
    stats = {} if source.mean is None else {"mean": source.mean, "std": source.std}
    return ctx.data(classes=TARGET_CLASSES, per_class=k, batch_size=min(b["batch"], max(2, 5 * k // 2)),
                    test_samples=b["full_test"], image_size=b["image_size"], seed=seed, **stats)


def _frozen_unchanged(model, source_state: dict) -> bool | None:
    """Whether every frozen tensor (parameters and the buffers of eval-locked norms) still equals
    the pretrained one; None when nothing is frozen."""
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    for name, m in model.named_modules():
        if is_running_norm(m) and "train" in m.__dict__:  # locked in eval mode by freeze()
            frozen += [f"{name}.{b}" for b, _ in m.named_buffers()]
    if not frozen:
        return None
    state = model.state_dict()
    return all(n in source_state and torch.equal(state[n].cpu(), source_state[n].cpu()) for n in frozen)


def run(ctx: Context) -> Report:
    """Pretrain on classes 0-4, then train scratch/all/last/head on classes 5-9 for each k, over seeds."""
    b = BUDGET[ctx.budget]
    source, pre = _pretrain(ctx, b)
    runs: list[dict[str, Any]] = []
    for k in b["ks"]:
        seeds = ctx.seeds(b["seeds"][k])
        targets = {seed: _target_data(ctx, b, k, seed, source) for seed in seeds}
        for strategy in VARIANTS:
            results = _train(ctx, f"{strategy} k={k}", strategy, targets, source, b)
            for r in results.runs:
                bundle, data, passes = targets[r.info["seed"]]
                runs.append(_record(ctx, r, bundle, data, passes * b["epochs"], source, k=k, seed=r.info["seed"]))
            results.drop_models()
    return _report(ctx, b, pre, runs)


def _target_data(ctx: Context, b: dict, k: int, seed: int, source: WeightSource) -> tuple[Any, Any, int]:
    """``(bundle, data, passes)``: the target bundle of one seed, and the training view of it whose
    epoch is ``passes`` passes over the k-per-class images, evaluated on a slice of the test set."""
    bundle = _target(ctx, b, k, seed, source)
    seen = b["seen"] if isinstance(b["seen"], int) else b["seen"][k]
    passes = max(1, round(seen / max(1, bundle.num_train) / b["epochs"]))
    data = SimpleNamespace(info=bundle.info, train=_Passes(bundle.train, passes),
                           test=first_test_samples(bundle.test, b["test_slice"]), num_train=bundle.num_train,
                           num_test=bundle.num_test)
    return bundle, data, passes


def _record(ctx: Context, result: RunResult, bundle, data, passes: int, source: WeightSource, *, k: int,
            seed: int) -> dict[str, Any]:
    """What one target run measured: the final accuracy on all target test images of ``bundle``
    (the run itself evaluated on ``data.test``, a slice), its parameters, steps and speed."""
    final = evaluate(result.model, bundle.test, num_classes=len(bundle.info.classes), device=ctx.device)
    total = sum(p.numel() for p in result.model.parameters())
    steps = len(result.step_losses)
    train_s = sum(r["train_seconds"] for r in result.epochs)
    images = steps * data.train.loader.batch_size
    ctx.log(f"[{ctx.name}] {result.label:<24} final accuracy on {final['n']} target test images "
            f"{100 * final['acc']:.2f}%")
    return {
        "strategy": result.info["strategy"], "k": k, "seed": seed, "acc": final["acc"], "n_test": final["n"],
        "trainable": result.params, "frozen": total - result.params, "steps": steps,
        "passes": passes, "n_train": bundle.num_train, "train_seconds": train_s,
        "seconds_per_epoch": train_s / max(1, passes), "images": images,
        "ms_per_image": 1000 * train_s / max(1, images),
        "frozen_unchanged": _frozen_unchanged(result.model, source.state_dict),
        "curve": result.epochs,
    }


def _target_model(strategy: str, info, source: WeightSource, b: dict) -> tuple[nn.Module, dict[str, float]]:
    """The model of one target run and its learning-rate factors: a fresh one for ``scratch``,
    else the pretrained one as the strategy freezes it (``all-discr``: ``all`` with the backbone
    at ``BACKBONE_LR_SCALE``)."""
    n, c = len(info.classes), info.input_size[0]
    if strategy == "scratch":
        return create_model(b["model"], num_classes=n, in_channels=c), {}
    discr = strategy == "all-discr"
    model, plan = transfer_model(source, "all" if discr else strategy, num_classes=n, in_channels=c,
                                 classes=list(info.classes), backbone_lr_scale=BACKBONE_LR_SCALE if discr else None)
    return model, plan.lr_scale


def _train(ctx: Context, label: str, strategy: str, targets: Mapping[int, tuple], source: WeightSource, b: dict):
    """One strategy at one k, once per seed, through the runner; the runner seeds before building
    the model, so the runs of one seed start alike."""
    info = next(iter(targets.values()))[0].info
    _, lr_scale = _target_model(strategy, info, source, b)  # the factors depend on the strategy only
    spec = RunSpec(label, lambda n, c: _target_model(strategy, info, source, b)[0], epochs=b["epochs"],
                   lr=LR[strategy], lr_scale=lr_scale, info={"strategy": strategy})
    return ctx.train_seeds(spec, list(targets), data=lambda seed: targets[seed][1])


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


def _acc(runs: Sequence[Mapping[str, Any]], strategy: str, k: int) -> float:
    """Mean final accuracy of the runs of ``strategy`` at ``k`` (over seeds)."""
    return _mean([r["acc"] for r in runs if r["strategy"] == strategy and r["k"] == k])


def _ms_per_image(runs: Sequence[Mapping[str, Any]], strategy: str) -> float:
    # Pooled over every run of the strategy (all k): single short runs are noisy on a shared CPU.
    mine = [r for r in runs if r["strategy"] == strategy]
    return 1000 * sum(r["train_seconds"] for r in mine) / max(1, sum(r["images"] for r in mine))


def _paired(runs: Sequence[Mapping[str, Any]], a: str, b: str, k: int) -> Spread:
    """Per-seed accuracy differences ``a - b`` at ``k`` (runs of one seed share the labelled images)."""
    acc = {(r["strategy"], r.get("seed", 0)): r["acc"] for r in runs if r["k"] == k}
    seeds = sorted({s for (st, s) in acc if st == a} & {s for (st, s) in acc if st == b})
    return Spread.of(acc[(a, s)] - acc[(b, s)] for s in seeds)


def claim_checks(runs: Sequence[Mapping[str, Any]], ks: Sequence[int]) -> list[Check]:
    """The claim's four checks from the target runs.

    Args:
        runs: one record per run with ``strategy`` (one of ``VARIANTS``), ``k``, ``seed``, ``acc``
            (final accuracy), ``trainable`` (parameters), ``train_seconds`` and ``images``
            (training images seen).
        ks: the labelled images per class, smallest first.
    """
    ks = list(ks)
    zero = Spread.of([0.0])
    lead = {k: {s: _paired(runs, "all", s, k) for s in STRATEGIES if s != "all"} for k in ks}
    ok = all(exceeds(d, zero) for k in ks for d in lead[k].values())
    checks = [Check(
        "`all` is the most accurate strategy at every k", ok,
        "; ".join(f"k={k}: all minus " + ", ".join(f"{s} {d.scaled(100).fmt()} pp" for s, d in lead[k].items())
                  for k in ks)
        + " (per-seed differences, mean ± sd; each mean must exceed its sd and 0)")]
    params = {s: next(r["trainable"] for r in runs if r["strategy"] == s) for s in STRATEGIES}
    checks.append(Check(
        "`head` and `last` train the fewest parameters",
        max(params["head"], params["last"]) < min(params["all"], params["scratch"]),
        ", ".join(f"{s} {int(params[s]):,}" for s in STRATEGIES) + " trainable parameters"))
    speed = {s: _ms_per_image(runs, s) for s in STRATEGIES}
    checks.append(Check(
        "`head` and `last` take the least training time per image (all runs of a strategy pooled)",
        max(speed["head"], speed["last"]) < min(speed["all"], speed["scratch"]),
        ", ".join(f"{s} {speed[s]:.2f} ms" for s in STRATEGIES) + " per training image"))
    # `all` against scratch at every k, fixed before the runs: picking the best of the variants
    # afterwards would compare different strategies across k and lean towards passing
    gain = {k: _paired(runs, "all", "scratch", k) for k in ks}
    most = exceeds(gain[ks[0]], zero) and all(exceeds(gain[ks[0]], gain[k]) for k in ks[1:])
    checks.append(Check(
        "transfer (`all`) beats scratch, and by the most at the smallest k", most,
        ", ".join(f"k={k}: all - scratch = {gain[k].scaled(100).fmt()} pp" for k in ks)
        + f" (per-seed differences); at k={ks[0]}: " + rule_text("exceeds", gain[ks[0]], zero, scale=100, unit=" pp")
        + "; and against each larger k: "
        + "; ".join(rule_text("exceeds", gain[ks[0]], gain[k], scale=100, unit=" pp") for k in ks[1:])))
    return checks


def _report(ctx: Context, b: dict, pre, runs: list[dict]) -> Report:
    ks = list(b["ks"])

    def acc(strategy: str, k: int) -> float:
        return _acc(runs, strategy, k)

    rows = []
    for k in ks:
        for s in VARIANTS:
            mine = [r for r in runs if r["strategy"] == s and r["k"] == k]
            rows.append([k, s, 100 * acc(s, k), " / ".join(f"{100 * r['acc']:.1f}" for r in mine) if len(mine) > 1 else "",
                         mine[0]["trainable"], mine[0]["frozen"], _mean([r["seconds_per_epoch"] for r in mine]),
                         _mean([r["ms_per_image"] for r in mine]), mine[0]["steps"]])

    plot_lines({s: (ks, [100 * acc(s, k) for k in ks]) for s in VARIANTS}, ctx.out / "accuracy_vs_k.png",
               title="Target accuracy (classes 5-9) vs labelled images per class", xlabel="k (images per class)",
               ylabel="test accuracy (%)", logx=True, logx_base=10, xticks=ks, styles={"scratch": "k--"})

    checks = claim_checks(runs, ks)

    unchanged = [r["frozen_unchanged"] for r in runs if r["frozen_unchanged"] is not None]
    findings = [
        f"pretraining on classes 0-4: {100 * pre.last.get('test_acc', float('nan')):.2f}% on "
        f"{b['test_slice'] or 'all'} source test images after {count(b['pre_epochs'], 'epoch')}, {pre.seconds:.0f} s",
        f"frozen tensors (parameters and eval-locked BN statistics) bit-identical to the pretrained ones after "
        f"training in {sum(unchanged)} of {len(unchanged)} `last`/`head` runs",
    ]
    for k in ks:
        order = sorted(VARIANTS, key=lambda s: -acc(s, k))
        findings.append(f"k={k}: " + " > ".join(f"{s} {100 * acc(s, k):.1f}%" for s in order))
    findings.append("discriminative learning rates (backbone x" + f"{BACKBONE_LR_SCALE}) vs one rate for `all`: "
                    + ", ".join(f"k={k}: {100 * (acc('all-discr', k) - acc('all', k)):+.1f} pp" for k in ks))
    notes = []
    if not ctx.smoke:
        notes.append("seeds (per-class selection, initialization and order) per k: "
                     + ", ".join(f"k={k}: {b['seeds'][k]}" for k in ks)
                     + "; the accuracy column is their mean, the per-seed column shows the spread")
        seen = b["seen"]
        notes.append(f"a budget for a shared 2-core CPU: ResNet-8 (75k parameters), {b['pre_epochs']} pretraining "
                     f"epoch over all 30000 source images, each target run sees about "
                     f"{'/'.join(str(seen[k]) for k in ks)} images at k={'/'.join(map(str, ks))}; longer training "
                     "would raise every figure")
    return Report(
        claim=CLAIM,
        setup={
            "source task": f"Fashion-MNIST classes 0-4, {b['pre_subset'] or 'all 30000'} training images, "
                           f"{count(b['pre_epochs'], 'epoch')}, SGD lr 0.1 one-cycle, batch {128 if not ctx.smoke else 32}",
            "target task": "classes 5-9 with k training images per class, evaluated on all target test images"
                           + ("" if b["full_test"] is None else f" (smoke: first {b['full_test']})"),
            "model": f"{b['model']} (CIFAR ResNet, He et al. 2015), no augmentation"
                     + (f", images resized to {b['image_size']} px" if b["image_size"] else ", 28 px"),
            "strategies": f"scratch (lr {LR['scratch']}), all (lr {LR['all']}), all-discr (lr {LR['all-discr']}, "
                          f"backbone x{BACKBONE_LR_SCALE}), "
                          f"last (layer3 + fc, lr {LR['last']}), head (new Linear 5->5 on the frozen classifier, "
                          f"lr {LR['head']}); SGD Nesterov, one-cycle, weight decay 5e-4, {count(b['epochs'], 'epoch')}",
            "normalization": "the source's mean/std for every target run (they travel with the weights)",
        },
        columns=["k", "strategy", "accuracy %", "per seed %", "trainable", "frozen", "s / epoch", "ms / image",
                 "steps"],
        rows=rows, checks=checks, plots=["accuracy_vs_k.png"], findings=findings, notes=notes,
        data={"runs": runs, "pretrain": pre.to_dict()},
    )
