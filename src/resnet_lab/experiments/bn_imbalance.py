"""Does batch normalization hurt a binary task with a 99:1 class ratio?

What the seed claimed (issue 5, from the texts this project is built on): only the sentence "BN
hurts a binary task with a 99:1 class ratio", with the request to design a fair test (balanced
accuracy or AUC, the same network with and without BN) and to report what we find. It names no
source, no metric, no network, no batch size and no mechanism, and it is not a result of the BN
paper. The mechanism argued in forums and blog posts, which this test gives a chance to show: with
1% positives most training batches hold no positive at all, so BN's batch statistics, and the
running averages used at test time, describe the negatives only, and the minority class suffers.

A fair test: the same network with and without BN, same data, learning rate, epochs and seeds,
judged by metrics that do not reward predicting "negative" for everything: ROC AUC
(threshold-free) and balanced accuracy (mean per-class recall), on a test set with both classes.
Several seeds, each with its own draw of the ~60 positives, because with so few positives one run
is noise; BN "hurts" only when the no-norm net is better by more than the seed spread.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch

from ..data import InMemoryLoader
from .metrics import balanced_accuracy, roc_auc
from .report import Check, Report, Spread, exceeds, plot_lines, rule_text
from .._text import seeds_text
from .runner import Context, RunResult, RunSpec, cifar_net, count

__all__ = ["CLAIM", "NAME", "SEED_CLAIM", "claim_checks", "run"]

NAME = "bn_imbalance"
CLAIM = ("Batch normalization hurts a binary task with a 99:1 class ratio (tested with AUC and balanced accuracy, "
         "same network with and without BN).")
SEED_CLAIM = ("The seed states only \"BN hurts a binary task with a 99:1 class ratio\" and asks for a fair test "
              "(balanced accuracy or AUC, the same network with and without BN); it gives no source, metric, network, "
              "batch size or mechanism, and it is not a result of Ioffe & Szegedy. The mechanism tested here (batch "
              "statistics dominated by the majority class) is the usual forum argument, not the seed's words.")

NEGATIVE, POSITIVE = 0, 6  # Fashion-MNIST "T-shirt/top" (majority) vs "Shirt" (1%): a hard, similar pair
RATIO = 99

BUDGET = {
    "smoke": dict(negatives=198, seeds=2, depth=8, widths=(4, 8, 16), epochs=1, max_steps=3, batch=32, image_size=14),
    "full": dict(negatives=5940, seeds=5, depth=14, widths=(16, 32, 64), epochs=3, max_steps=None, batch=64,
                 image_size=None),
}
LR = 0.02
MARGIN = 0.005  # the smallest AUC / balanced-accuracy loss that counts as "hurts"


def _imbalanced(ctx: Context, b: dict, seed: int):
    """The two-class bundle with the training positives cut to 1 per ``RATIO`` negatives."""
    full = ctx.data(batch_size=b["batch"], classes=[NEGATIVE, POSITIVE], image_size=b["image_size"])
    train = full.train
    g = torch.Generator().manual_seed(seed)
    labels = train.labels.cpu()
    neg = torch.nonzero(labels == 0).flatten()
    pos = torch.nonzero(labels == 1).flatten()
    n_neg = min(b["negatives"], len(neg))
    n_pos = max(2, n_neg // RATIO)
    idx = torch.cat([neg[torch.randperm(len(neg), generator=g)[:n_neg]],
                     pos[torch.randperm(len(pos), generator=g)[:n_pos]]])
    loader = InMemoryLoader(train.images[idx.to(train.images.device)], labels[idx], batch_size=b["batch"],
                            mean=train.mean, std=train.std, shuffle=True, drop_last=True, seed=seed,
                            device=train.device)
    bundle = type(full)(info=full.info, train=loader, test=full.test, num_train=len(idx), num_test=full.num_test)
    return bundle, n_neg, n_pos


@torch.no_grad()
def _scores(model, loader, device) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    probs, ys = [], []
    for x, y in loader:
        probs.append(torch.softmax(model(x.to(device)).float(), 1).cpu())
        ys.append(y.cpu())
    return torch.cat(probs), torch.cat(ys)


def claim_checks(metrics: Mapping[str, Mapping[str, Sequence[float]]], seeds: int) -> list[Check]:
    """The claim's two checks: BN lowers the AUC, BN lowers the balanced accuracy, each by more
    than the seed spread (the sum of the two seed sds) and by more than ``MARGIN``.

    Args:
        metrics: ``{"BN" | "no norm": {"auc": [one per seed], "bacc": [...]}}`` (a NaN fails the check).
        seeds: the number of seeds.
    """
    checks = []
    for key, name in (("auc", "ROC AUC"), ("bacc", "balanced accuracy (prior-corrected threshold)")):
        bn, no = Spread.of(metrics["BN"][key]), Spread.of(metrics["no norm"][key])
        checks.append(Check(f"BN lowers the {name}", exceeds(no, bn, MARGIN),
                            f"no norm {no.fmt(4)} vs BN {bn.fmt(4)} (mean ± sd over {seeds} seeds); "
                            + rule_text("exceeds", no, bn, MARGIN, digits=4)))
    return checks


def _evaluate(r: RunResult, data, prevalence: float, device) -> dict[str, float]:
    """AUC, prior-corrected balanced accuracy, positive recall and argmax balanced accuracy of one
    run; a diverged run counts at chance (0.5; recall 0)."""
    if r.diverged:
        return {"auc": 0.5, "bacc": 0.5, "pos_recall": 0.0, "argmax_bacc": 0.5}
    probs, y = _scores(r.model, data.test, device)
    # Argmax under a 99:1 prior calls (almost) everything negative: balanced accuracy 0.5 for any
    # model. The prior-corrected decision, positive when p(pos) exceeds the training prevalence, is
    # the Bayes rule for equal class weights (Saerens et al. 2002).
    pred = (probs[:, 1] > prevalence).long()
    return {"auc": roc_auc(probs[:, 1], y), "bacc": balanced_accuracy(pred, y, 2),
            "pos_recall": float((pred[y == 1] == 1).double().mean()),
            "argmax_bacc": balanced_accuracy(probs.argmax(1), y, 2)}


def run(ctx: Context) -> Report:
    """Train BN and no-norm nets on a 99:1 task over several seeds; compare AUC and balanced accuracy."""
    b = BUDGET[ctx.budget]
    seeds = ctx.seeds(b["seeds"])
    _, n_neg, n_pos = _imbalanced(ctx, b, seeds[0])  # the counts are the same for every seed
    prevalence = n_pos / (n_pos + n_neg)
    keys = ("auc", "bacc", "pos_recall", "argmax_bacc")
    metrics: dict[str, dict[str, list[float]]] = {}
    runs = {}
    for label, norm in (("BN", "batch"), ("no norm", "none")):
        spec = RunSpec(label, cifar_net(b["depth"], norm=norm, widths=b["widths"]), batch_size=b["batch"],
                       epochs=b["epochs"], lr=LR, max_steps_per_epoch=b["max_steps"], info={"norm": norm})
        results = ctx.train_seeds(spec, seeds, data=lambda seed: _imbalanced(ctx, b, seed)[0])
        metrics[label] = {k: [] for k in keys}
        for r in results.runs:
            m = _evaluate(r, _imbalanced(ctx, b, r.info["seed"])[0], prevalence, ctx.device)
            r.info.update(auc=m["auc"], balanced_accuracy=m["bacc"], positive_recall=m["pos_recall"])
            for k in keys:
                metrics[label][k].append(m[k])
        results.drop_models()
        runs.update({r.label: r.to_dict() for r in results.runs})

    checks = claim_checks(metrics, len(seeds))
    rows = [[label, *(Spread.of(m[k]) for k in keys[:3])] for label, m in metrics.items()]
    rows += [[f"{lab} seed {s}", *(metrics[lab][k][i] for k in keys[:3])] for lab in metrics
             for i, s in enumerate(seeds)]
    plot_lines({lab: (seeds, metrics[lab]["auc"]) for lab in metrics}, ctx.out / "auc_per_seed.png",
               title="Test ROC AUC per seed (99:1 training data)", xlabel="seed", ylabel="ROC AUC",
               styles={"BN": "-", "no norm": "--"})
    return Report(
        claim=CLAIM,
        setup={
            "the seed's claim": SEED_CLAIM,
            "task": f"Fashion-MNIST T-shirt/top (negative) vs Shirt (positive); training: {n_neg} negatives, "
                    f"{n_pos} positives ({RATIO}:1, resampled per seed); test: all test images of both classes "
                    "(balanced; AUC and balanced accuracy do not depend on the test ratio)",
            "decision": "positive when p(positive) > training prevalence (prior-corrected threshold) for balanced "
                        "accuracy and recall; AUC needs no threshold",
            "model": f"CIFAR ResNet-{b['depth']}, widths {b['widths']}, BN (torch) or no normalization "
                     "(conv biases on)",
            "training": f"SGD momentum 0.9 (Nesterov), lr {LR} one-cycle, weight decay 5e-4, batch {b['batch']} "
                        f"(~{b['batch'] / (RATIO + 1):.2f} positives per batch), {count(b['epochs'], 'epoch')}, plain "
                        "cross-entropy (no reweighting), " + seeds_text(seeds)
                        + "; a diverged seed counts at chance (AUC and balanced accuracy 0.5)",
        },
        columns=["run", "ROC AUC", "balanced accuracy", "positive recall"],
        rows=rows, checks=checks, plots=["auc_per_seed.png"],
        findings=["balanced accuracy with the plain argmax decision: " + "; ".join(
            f"{lab} {Spread.of(m['argmax_bacc']).fmt(4)}" for lab, m in metrics.items())
            # 0.5 whichever class a model calls everything: under the 99:1 prior mostly negative, but a
            # short run may call everything positive (the table's recall 1.0)
            + " (0.5 = every test image called one class)"],
        data={"metrics": metrics, "runs": runs, "seed_claim": SEED_CLAIM},
        notes=[f"What the seed claimed: {SEED_CLAIM}",
               "Verdict 'not confirmed' means BN was not measurably worse here (equal within the seed spread, or "
               "better); it does not show that BN never hurts imbalanced tasks."],
    )
