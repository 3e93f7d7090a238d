"""Each experiment's checks, on made-up results whose answers are known by construction.

The smoke runs (test_smoke.py) show that the pipeline writes a report; whether the checks say
"confirmed" for figures that confirm the claim, "not confirmed" for figures that contradict it and
"mixed" in between is shown here, one hand-made set of figures per case, with the thresholds the
modules document (margins, targets, chance level).
"""

from __future__ import annotations

import math

import pytest

from resnet_lab.experiments import verdict_from_checks
from resnet_lab.experiments import bn_batch_size, bn_convergence, bn_imbalance, degradation, transfer, very_deep
from resnet_lab.experiments import vanishing_gradients


def answers(checks) -> list[bool]:
    assert all(c.evidence for c in checks)  # every answer comes with its numbers
    return [bool(c.passed) for c in checks]


# --- degradation: plain-deep trains worse than plain-shallow (by > 1 pp); resnet-deep does not ---


@pytest.mark.parametrize("errors, want, verdict", [
    ({"plain-20": 0.10, "plain-56": 0.20, "resnet-20": 0.10, "resnet-56": 0.08}, [True, True], "confirmed"),
    # plain-56 only 0.5 pp worse: inside the 1 pp margin, so no degradation shown
    ({"plain-20": 0.10, "plain-56": 0.105, "resnet-20": 0.10, "resnet-56": 0.08}, [False, True], "mixed"),
    # resnet-56 0.5 pp worse: inside the margin, still "does not train worse"
    ({"plain-20": 0.10, "plain-56": 0.20, "resnet-20": 0.10, "resnet-56": 0.105}, [True, True], "confirmed"),
    ({"plain-20": 0.20, "plain-56": 0.10, "resnet-20": 0.10, "resnet-56": 0.20}, [False, False], "not confirmed"),
])
def test_degradation_checks(errors, want, verdict):
    checks = degradation.claim_checks(errors, 20, 56, "CIFAR-10")
    assert answers(checks) == want and verdict_from_checks(checks) == verdict
    assert checks[0].question.startswith("CIFAR-10: plain-56")
    assert "20.00% vs 10.00%" in checks[0].evidence or not want[0]


# --- bn_convergence: BN reaches both fixed targets sooner; scratch BN within 2 pp of torch BN ---


@pytest.mark.parametrize("steps, epochs, gaps, want, verdict", [
    ({"torch BN": 50, "no norm": 200}, {"torch BN": 1, "no norm": 3}, [0.01, 0.015], [True, True], "confirmed"),
    ({"torch BN": 50, "no norm": math.inf}, {"torch BN": 1, "no norm": math.inf}, [0.03], [True, False], "mixed"),
    # sooner in steps but not in epochs: not faster on both measures
    ({"torch BN": 50, "no norm": 200}, {"torch BN": 3, "no norm": 3}, [0.0], [False, True], "mixed"),
    # neither ever reaches the target: not faster either way; no epochs compared: no coincidence shown
    ({"torch BN": math.inf, "no norm": math.inf}, {"torch BN": math.inf, "no norm": math.inf}, [], [False, False],
     "not confirmed"),
])
def test_bn_convergence_checks(steps, epochs, gaps, want, verdict):
    checks = bn_convergence.claim_checks(steps, epochs, gaps, no_norm_diverged=steps["no norm"] == math.inf)
    assert answers(checks) == want and verdict_from_checks(checks) == verdict
    if steps["no norm"] == math.inf:
        assert "no norm never" in checks[0].evidence and "no norm diverged" in checks[0].evidence


# --- vanishing_gradients: sigmoid ratio < 1e-2 (vanished); the other three > 1e-1 (alive) ---

ALIVE = {"sigmoid + BN": (0.5, 0.8), "ReLU": (0.3, 0.6), "sigmoid + residual": (0.9, 1.1)}


@pytest.mark.parametrize("ratios, want, verdict", [
    ({"sigmoid": (1e-4, 1e-3), **ALIVE}, [True, True, True, True], "confirmed"),
    # ReLU's gradient alive at init but vanished after training
    ({"sigmoid": (1e-4, 1e-3), **ALIVE, "ReLU": (0.3, 0.05)}, [True, True, False, True], "mixed"),
    ({"sigmoid": (0.5, 0.5), **{k: (0.01, 0.01) for k in ALIVE}}, [False] * 4, "not confirmed"),
])
def test_vanishing_gradients_checks(ratios, want, verdict):
    checks = vanishing_gradients.claim_checks(ratios)
    assert answers(checks) == want and verdict_from_checks(checks) == verdict


def test_vanishing_gradients_says_when_a_net_diverged():
    checks = vanishing_gradients.claim_checks({"sigmoid": (1e-4, 1e-3), **ALIVE}, {"ReLU": True})
    assert "diverged" in checks[2].evidence and "diverged" not in checks[1].evidence


# --- bn_batch_size: BN's error rises > 2 pp at the smallest batch, GN's does not, GN beats BN ---


def _errors(bn: dict[int, float], gn: dict[int, float]) -> dict[tuple[str, int], float]:
    return {**{("BN", b): e for b, e in bn.items()}, **{("GN", b): e for b, e in gn.items()}}


@pytest.mark.parametrize("bn, gn, want, verdict", [
    ({2: 0.30, 4: 0.20, 16: 0.10, 32: 0.12}, {2: 0.11, 4: 0.10, 16: 0.10, 32: 0.105}, [True, True, True], "confirmed"),
    # both rise at batch 2; GN still better than BN
    ({2: 0.30, 4: 0.20, 16: 0.10, 32: 0.12}, {2: 0.16, 4: 0.12, 16: 0.10, 32: 0.11}, [True, False, True], "mixed"),
    # BN flat (batch 4 is not a large batch: only >= 16 count), GN degrades and is worse
    ({2: 0.10, 4: 0.01, 16: 0.10, 32: 0.10}, {2: 0.30, 4: 0.10, 16: 0.10, 32: 0.10}, [False, False, False],
     "not confirmed"),
])
def test_bn_batch_size_checks(bn, gn, want, verdict):
    checks = bn_batch_size.claim_checks(_errors(bn, gn), [2, 4, 16, 32])
    assert answers(checks) == want and verdict_from_checks(checks) == verdict
    assert all("batch 2" in c.question for c in checks)


def test_bn_batch_size_compares_with_the_largest_batch_when_none_reaches_16():
    # batches (2, 8): the reference is batch 8; BN 3 pp worse at 2, GN 1 pp.
    checks = bn_batch_size.claim_checks(_errors({2: 0.13, 8: 0.10}, {2: 0.11, 8: 0.10}), [2, 8])
    assert answers(checks) == [True, True, True]
    assert "batch [8]" in checks[0].evidence


# --- very_deep: the residual net's last-window loss is > 0.2 below ln(classes); the plain net's not ---

CHANCE = math.log(10)  # 2.303; "trains" needs the mean of the last 2 losses < 2.103


@pytest.mark.parametrize("resnet, plain, plain_diverged, want, verdict", [
    ([2.3, 2.3, 1.5, 1.4], [2.3, 2.3, 2.3, 2.3], False, [True, True], "confirmed"),
    ([2.3, 2.3, 1.5, 1.4], [2.3, math.nan], True, [True, True], "confirmed"),  # diverged: did not train
    ([2.3, 2.3, 1.5, 1.4], [2.3, 2.3, 1.9, 1.8], False, [True, False], "mixed"),
    ([2.3, 2.3, 2.2, 2.2], [2.3, 2.3, 1.9, 1.8], False, [False, False], "not confirmed"),  # 0.1 below: not enough
])
def test_very_deep_checks(resnet, plain, plain_diverged, want, verdict):
    checks = very_deep.claim_checks({"resnet-1202": resnet, "plain-1202": plain},
                                    {"resnet-1202": False, "plain-1202": plain_diverged},
                                    ["resnet-1202", "plain-1202"], steps=4, window=2, num_classes=10)
    assert answers(checks) == want and verdict_from_checks(checks) == verdict
    assert f"{CHANCE:.3f}" in checks[0].evidence


def test_very_deep_third_net_must_train_too():
    losses = {"resnet-20": [2.3, 2.3, 1.5, 1.4], "plain-20": [2.3] * 4, "preact-resnet1001": [2.3, 2.3, 2.3, 2.2]}
    checks = very_deep.claim_checks(losses, {}, list(losses), steps=4, window=2, num_classes=10)
    assert answers(checks) == [True, True, False] and verdict_from_checks(checks) == "mixed"


# --- bn_imbalance: no norm beats BN by > 2 standard errors and > 0.005, in AUC and in balanced accuracy ---


def _metrics(bn_auc, no_auc, bn_bacc, no_bacc) -> dict:
    return {"BN": {"auc": bn_auc, "bacc": bn_bacc}, "no norm": {"auc": no_auc, "bacc": no_bacc}}


@pytest.mark.parametrize("metrics, want, verdict", [
    (_metrics([0.70, 0.71, 0.69], [0.80, 0.81, 0.79], [0.60, 0.61, 0.59], [0.70, 0.71, 0.69]), [True, True],
     "confirmed"),
    # AUC: 0.10 better without BN; balanced accuracy: 0.01 better but the seeds spread by 0.1
    (_metrics([0.70, 0.71, 0.69], [0.80, 0.81, 0.79], [0.5, 0.6, 0.7], [0.51, 0.61, 0.71]), [True, False], "mixed"),
    # better by 0.004 on every seed: beyond the noise but under the 0.005 floor
    (_metrics([0.700, 0.710], [0.704, 0.714], [0.6, 0.6], [0.604, 0.604]), [False, False], "not confirmed"),
    # BN better: not confirmed; a diverged seed (NaN) is left out
    (_metrics([0.80, 0.81, math.nan], [0.70, 0.71, 0.72], [0.7, 0.7, 0.7], [0.6, 0.6, 0.6]), [False, False],
     "not confirmed"),
])
def test_bn_imbalance_checks(metrics, want, verdict):
    checks = bn_imbalance.claim_checks(metrics, seeds=len(metrics["BN"]["auc"]))
    assert answers(checks) == want and verdict_from_checks(checks) == verdict


# --- transfer: `all` most accurate; head/last fewest parameters and fastest; transfer gains most at small k ---


def _runs(acc: dict[str, tuple[float, float]], trainable: dict[str, int], ms: dict[str, float]) -> list[dict]:
    """One run per strategy and k (5, 20) with the given accuracies, parameter counts and ms per image."""
    return [{"strategy": s, "k": k, "acc": acc[s][i], "trainable": trainable[s], "train_seconds": ms[s] * 0.1,
             "images": 100} for s in transfer.VARIANTS for i, k in enumerate((5, 20))]


GOOD_ACC = {"scratch": (0.30, 0.60), "all": (0.70, 0.80), "all-discr": (0.69, 0.79), "last": (0.65, 0.75),
            "head": (0.60, 0.65)}
GOOD_PARAMS = {"scratch": 75_000, "all": 75_000, "all-discr": 75_000, "last": 55_000, "head": 30}
GOOD_MS = {"scratch": 2.0, "all": 2.0, "all-discr": 2.0, "last": 1.0, "head": 0.5}


@pytest.mark.parametrize("acc, params, ms, want, verdict", [
    (GOOD_ACC, GOOD_PARAMS, GOOD_MS, [True, True, True, True], "confirmed"),
    # `last` beats `all` by 0.3 pp at k=5: a tie within the 0.5 pp margin still counts for `all`
    ({**GOOD_ACC, "last": (0.703, 0.75)}, GOOD_PARAMS, GOOD_MS, [True, True, True, True], "confirmed"),
    # `last` beats `all` by 2 pp at k=20, and transfer gains more at k=20 than at k=5
    ({**GOOD_ACC, "scratch": (0.60, 0.40), "last": (0.65, 0.82)}, GOOD_PARAMS, GOOD_MS, [False, True, True, False],
     "mixed"),
    ({"scratch": (0.9, 0.9), "all": (0.5, 0.5), "all-discr": (0.5, 0.5), "last": (0.7, 0.7), "head": (0.6, 0.6)},
     {**GOOD_PARAMS, "head": 80_000}, {**GOOD_MS, "last": 3.0}, [False, False, False, False], "not confirmed"),
])
def test_transfer_checks(acc, params, ms, want, verdict):
    checks = transfer.claim_checks(_runs(acc, params, ms), [5, 20])
    assert answers(checks) == want and verdict_from_checks(checks) == verdict
