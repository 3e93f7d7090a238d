"""The three claims of issue 15 (seed 004's BN chapter): their checks on made-up results whose verdict
is known by construction, the seed-spread rule, and a smoke run of each."""

from __future__ import annotations

import json
import math

import pytest

from resnet_lab.experiments import VERDICTS, run_experiment, verdict_from_checks
from resnet_lab.experiments import bn_input_stats, bn_regularization, bn_sigmoid_range
from resnet_lab.experiments.bn_input_stats import effect_check

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def answers(checks) -> list[bool]:
    assert all(c.question and c.evidence for c in checks)  # every answer comes with its numbers
    return [bool(c.passed) for c in checks]


# --- the shared rule (report.exceeds: difference of means > sum of the two seed sds), in the evidence -----


def test_effect_check_passes_beyond_the_summed_seed_sds_and_shows_the_numbers():
    # a: mean 1.2, sd 0.2; b: mean 0.6, sd 0.1 -> difference 0.6 > 0.3
    assert effect_check("a > b", [1.0, 1.2, 1.4], [0.5, 0.6, 0.7], ("a", "b")).passed
    # b: mean 1.0 -> difference 0.2 < 0.3: inside the seed spread
    check = effect_check("a > b", [1.0, 1.2, 1.4], [0.9, 1.0, 1.1], ("a", "b"))
    assert not check.passed and "a 1.200 ± 0.200 vs b 1.000 ± 0.100 (mean ± sd over 3 seeds)" in check.evidence
    assert "+0.200" in check.evidence and "0.300" in check.evidence
    assert not effect_check("a > b", [1.0, math.nan, 1.4], [0.0] * 3, ("a", "b")).passed  # a diverged run
    assert not effect_check("a > b", [0.5], [0.5], ("a", "b")).passed  # no difference never passes


def test_effect_check_on_percentages_gives_the_difference_in_percentage_points():
    check = effect_check("x > y", [0.9], [0.8], ("x", "y"), scale=100, unit="%", digits=1)
    assert "x 90.0% vs y 80.0% (mean ± sd over 1 seed)" in check.evidence and "+10.0 pp" in check.evidence


# --- bn_input_stats: BN's drift smaller than no norm's (mean and std); BN near (0, 1) ---------------

BN_NEAR = {"mean": [0.01, 0.02, 0.015], "log_std": [0.02, 0.03, 0.025]}
NO_NORM_FAR = {"mean": [0.3, 0.35, 0.4], "log_std": [0.8, 0.9, 1.0]}


@pytest.mark.parametrize("bn, none, want, verdict", [
    (BN_NEAR, NO_NORM_FAR, [True, True, True], "confirmed"),
    # no norm's means: one seed far, two near: mean 0.18 but sd 0.27, the difference is seed noise
    (BN_NEAR, {**NO_NORM_FAR, "mean": [0.02, 0.5, 0.03]}, [False, True, True], "mixed"),
    # BN's std a factor 1.35 from 1 (ln 0.3 > ln 1.25): closer than no norm, but not "near"
    ({**BN_NEAR, "log_std": [0.3, 0.3, 0.31]}, NO_NORM_FAR, [True, True, False], "mixed"),
    (NO_NORM_FAR, BN_NEAR, [False, False, False], "not confirmed"),
])
def test_bn_input_stats_checks(bn, none, want, verdict):
    checks = bn_input_stats.claim_checks({"BN": bn, "no norm": none})
    assert answers(checks) == want and verdict_from_checks(checks) == verdict


@pytest.mark.parametrize("key, index", [("mean", 0), ("log_std", 1)])
@pytest.mark.parametrize("no_norm, passed", [
    ([0.079, 0.08, 0.081], True),  # 0.07 above BN's 0.01, seeds 0.001 apart: beyond the 0.05 margin
    ([0.039, 0.04, 0.041], False),  # 0.03 above: the seeds agree, but under the margin
])
def test_bn_input_stats_a_drift_difference_counts_beyond_the_margin(key, index, no_norm, passed):
    bn = {"mean": [0.009, 0.01, 0.011], "log_std": [0.009, 0.01, 0.011]}
    checks = bn_input_stats.claim_checks({"BN": bn, "no norm": {**NO_NORM_FAR, key: no_norm}})
    assert checks[index].passed == passed and "margin 0.050" in checks[index].evidence


@pytest.mark.parametrize("bn_mean, near", [
    ([0.01, 0.25, 0.02], False),  # one seed's median |mean| 0.25 > 0.2: not near 0 "in every seed"
    ([0.15, 0.19, 0.18], True),  # every seed at most 0.2
])
def test_bn_input_stats_near_zero_needs_every_seeds_mean_within_a_fifth(bn_mean, near):
    checks = bn_input_stats.claim_checks({"BN": {**BN_NEAR, "mean": bn_mean},
                                          "no norm": {"mean": [0.9, 1.0, 1.1], "log_std": NO_NORM_FAR["log_std"]}})
    assert answers(checks) == [True, True, near]
    assert f"worst seed: median |mean| {max(bn_mean):.3f} (<= 0.2)" in checks[2].evidence


@pytest.mark.parametrize("key, values, near", [
    ("mean", [0.2, 0.1, 0.1], True),  # "at most 0.2": a seed exactly at the bar is near
    ("log_std", [math.log(1.25), 0.02, 0.02], True),  # std exactly a factor 1.25 from 1: near
    ("log_std", [0.02, 0.3, 0.02], False),  # the worst seed decides, wherever it sits
])
def test_bn_input_stats_near_one_is_judged_on_the_worst_seed_with_the_bar_included(key, values, near):
    checks = bn_input_stats.claim_checks({"BN": {**BN_NEAR, key: values},
                                          "no norm": {"mean": [0.9, 1.0, 1.1], "log_std": NO_NORM_FAR["log_std"]}})
    assert answers(checks) == [True, True, near]


# --- bn_sigmoid_range: frozen share >= 60%; learnable share lower; learnable more accurate ---------

L, F = bn_sigmoid_range.LEARNABLE, bn_sigmoid_range.FROZEN


@pytest.mark.parametrize("share, acc, want, verdict", [
    ({F: [0.68, 0.67, 0.69], L: [0.45, 0.50, 0.48]}, {L: [0.88, 0.885, 0.87], F: [0.84, 0.845, 0.85]},
     [True, True, True], "confirmed"),
    # gamma/beta learned but left the inputs where normalization put them; accuracy still higher
    ({F: [0.68, 0.67, 0.69], L: [0.67, 0.68, 0.69]}, {L: [0.88, 0.885, 0.87], F: [0.84, 0.845, 0.85]},
     [True, False, True], "mixed"),
    # a frozen share of 50% is not "in the near-linear range"; learnable no better
    ({F: [0.50, 0.52, 0.51], L: [0.60, 0.61, 0.62]}, {L: [0.84, 0.845, 0.85], F: [0.84, 0.845, 0.85]},
     [False, False, False], "not confirmed"),
])
def test_bn_sigmoid_range_checks(share, acc, want, verdict):
    checks = bn_sigmoid_range.claim_checks(share, acc)
    assert answers(checks) == want and verdict_from_checks(checks) == verdict


def test_bn_sigmoid_range_a_steady_gain_below_the_half_point_margin_does_not_count():
    # +0.3 pp in every seed: beyond the summed sds (0.2 pp) but below the 0.5 pp fixed in advance
    checks = bn_sigmoid_range.claim_checks({F: [0.68] * 3, L: [0.4] * 3},
                                           {L: [0.851, 0.852, 0.853], F: [0.848, 0.849, 0.850]})
    assert answers(checks) == [True, True, False] and "margin 0.50 pp" in checks[2].evidence


def test_bn_sigmoid_range_a_diverged_learnable_run_fails_the_accuracy_check():
    checks = bn_sigmoid_range.claim_checks({F: [0.68] * 3, L: [0.4] * 3}, {L: [0.9, math.nan, 0.9], F: [0.8] * 3})
    assert answers(checks) == [True, True, False] and "nan" in checks[2].evidence


@pytest.mark.parametrize("learnable, passed", [
    ([0.599, 0.60, 0.601], True),  # 8 pp lower in every seed: beyond the 5 pp margin
    ([0.649, 0.65, 0.651], False),  # 3 pp lower: the seeds agree, but under the margin
])
def test_bn_sigmoid_range_a_share_drop_counts_beyond_five_points(learnable, passed):
    checks = bn_sigmoid_range.claim_checks({F: [0.679, 0.68, 0.681], L: learnable}, {L: [0.9] * 3, F: [0.8] * 3})
    assert checks[1].passed == passed and "margin 5.0 pp" in checks[1].evidence


def test_bn_sigmoid_range_every_frozen_seed_must_be_in_the_linear_range():
    # two seeds at 68-70%, one at 58%: the lowest seed decides "at least 60% in every seed"
    checks = bn_sigmoid_range.claim_checks({F: [0.58, 0.68, 0.70], L: [0.4] * 3}, {L: [0.9] * 3, F: [0.8] * 3})
    assert answers(checks) == [False, True, True] and "lowest share over seeds 58.0%" in checks[0].evidence


# --- bn_regularization: BN narrows the gap; dropout + L2 add less with BN; BN alone beats them alone --

BN, NO, PLAIN, REG = bn_regularization.BN, bn_regularization.NO_NORM, bn_regularization.PLAIN, bn_regularization.REG
ACC_CONFIRMS = {BN: {PLAIN: [0.88, 0.885, 0.89], REG: [0.885, 0.88, 0.89]},
                NO: {PLAIN: [0.84, 0.845, 0.85], REG: [0.86, 0.865, 0.87]}}
GAP_CONFIRMS = {BN: {PLAIN: [0.08, 0.09, 0.085], REG: [0.05, 0.05, 0.05]},
                NO: {PLAIN: [0.15, 0.16, 0.155], REG: [0.10, 0.10, 0.10]}}


@pytest.mark.parametrize("acc, gap, want, verdict", [
    (ACC_CONFIRMS, GAP_CONFIRMS, [True, True, True], "confirmed"),
    # dropout + L2 help the BN net as much as the other (+2 pp each): no less need
    ({**ACC_CONFIRMS, BN: {PLAIN: [0.88, 0.885, 0.89], REG: [0.90, 0.905, 0.91]}}, GAP_CONFIRMS,
     [True, False, True], "mixed"),
    # BN no better than no norm in any way
    ({BN: ACC_CONFIRMS[NO], NO: ACC_CONFIRMS[NO]}, {BN: GAP_CONFIRMS[NO], NO: GAP_CONFIRMS[NO]},
     [False, False, False], "not confirmed"),
])
def test_bn_regularization_checks(acc, gap, want, verdict):
    checks = bn_regularization.claim_checks(acc, gap)
    assert answers(checks) == want and verdict_from_checks(checks) == verdict


def test_bn_regularization_gains_are_paired_by_seed_so_a_shared_seed_effect_cancels():
    # Seeds move both no-norm cells together (0.80/0.85/0.90): unpaired, their sd (0.05) would hide a
    # steady +2 pp gain; paired, every seed gains exactly 2 pp, against 0 with BN.
    acc = {BN: {PLAIN: [0.95, 0.95, 0.95], REG: [0.95, 0.95, 0.95]},
           NO: {PLAIN: [0.80, 0.85, 0.90], REG: [0.82, 0.87, 0.92]}}
    checks = bn_regularization.claim_checks(acc, GAP_CONFIRMS)
    assert checks[1].passed and "gain without BN 2.00 ± 0.00 pp vs gain with BN 0.00 ± 0.00 pp" in checks[1].evidence


def test_bn_regularization_gap_is_compared_by_size_so_test_above_train_is_no_narrowing():
    # A BN net whose test accuracy is 4 pp above its training accuracy has a gap of 4 pp, wider than
    # the 0.5 pp of the net without BN; compared signed (-4 < 0.5), it used to count as narrowing.
    gap = {BN: {PLAIN: [-0.04, -0.041, -0.039], REG: [0.0, 0.0, 0.0]}, NO: {PLAIN: [0.005, 0.004, 0.006], REG: [0.0] * 3}}
    checks = bn_regularization.claim_checks(ACC_CONFIRMS, gap)
    assert not checks[0].passed and "|gap| no norm 0.50 ± 0.10 pp vs |gap| BN 4.00 ± 0.10 pp" in checks[0].evidence


def test_bn_regularization_bn_alone_is_compared_with_the_regularized_net_not_the_plain_one():
    # BN alone (86%) beats the plain net without BN (84%) by 2 pp but not dropout + L2 alone (87%):
    # check 3 asks whether BN can stand in for the regularizers, so it fails.
    acc = {BN: {PLAIN: [0.859, 0.86, 0.861], REG: [0.859, 0.86, 0.861]},
           NO: {PLAIN: [0.839, 0.84, 0.841], REG: [0.869, 0.87, 0.871]}}
    checks = bn_regularization.claim_checks(acc, GAP_CONFIRMS)
    assert answers(checks) == [True, True, False]
    assert "BN alone 86.00 ± 0.10% vs dropout + L2 alone 87.00 ± 0.10%" in checks[2].evidence


def _seeds(mean: float, d: float = 0.001) -> list[float]:
    return [mean - d, mean, mean + d]


# The margins fixed in advance (docstring: 1 pp of gap, 0.5 pp of accuracy or gain), each probed just
# above and just below with seeds 0.1 pp apart, so the margin and not the spread decides.
@pytest.mark.parametrize("index, acc, gap, passed, margin", [
    # |gap| 15% without BN, 13.5% / 14.2% with it: 1.5 pp / 0.8 pp narrower
    (0, ACC_CONFIRMS, {BN: {PLAIN: _seeds(0.135), REG: _seeds(0.05)}, NO: {PLAIN: _seeds(0.15), REG: _seeds(0.10)}},
     True, "margin 1.00 pp"),
    (0, ACC_CONFIRMS, {BN: {PLAIN: _seeds(0.142), REG: _seeds(0.05)}, NO: {PLAIN: _seeds(0.15), REG: _seeds(0.10)}},
     False, "margin 1.00 pp"),
    # dropout + L2 add 0.8 pp / 0.3 pp without BN (0.7-0.9 / 0.2-0.4 by seed), 0 (-0.1-0.1) with it
    (1, {BN: {PLAIN: [0.95] * 3, REG: _seeds(0.95)}, NO: {PLAIN: [0.84, 0.845, 0.85], REG: [0.847, 0.853, 0.859]}},
     GAP_CONFIRMS, True, "margin 0.50 pp"),
    (1, {BN: {PLAIN: [0.95] * 3, REG: _seeds(0.95)}, NO: {PLAIN: [0.84, 0.845, 0.85], REG: [0.842, 0.848, 0.854]}},
     GAP_CONFIRMS, False, "margin 0.50 pp"),
    # BN alone 85.8% / 85.3% vs dropout + L2 alone 85%
    (2, {BN: {PLAIN: _seeds(0.858), REG: _seeds(0.858)}, NO: {PLAIN: _seeds(0.83), REG: _seeds(0.85)}},
     GAP_CONFIRMS, True, "margin 0.50 pp"),
    (2, {BN: {PLAIN: _seeds(0.853), REG: _seeds(0.853)}, NO: {PLAIN: _seeds(0.83), REG: _seeds(0.85)}},
     GAP_CONFIRMS, False, "margin 0.50 pp"),
])
def test_bn_regularization_margins_fixed_in_advance_decide_when_the_seeds_agree(index, acc, gap, passed, margin):
    check = bn_regularization.claim_checks(acc, gap)[index]
    assert check.passed == passed and margin in check.evidence and "sum of the two seed sds 0.20 pp" in check.evidence


# --- smoke runs ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["bn_input_stats", "bn_sigmoid_range", "bn_regularization"])
def test_smoke_run_writes_results_plots_and_a_report_with_a_verdict(name, tmp_path):
    out = tmp_path / name
    results = run_experiment(name, budget="smoke", out=out, device="cpu", log=lambda s: None)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["verdict"] == results["verdict"] and on_disk["verdict"] in VERDICTS
    assert len(on_disk["checks"]) == 3 and all(isinstance(c["passed"], bool) for c in on_disk["checks"])
    assert on_disk["plots"] and all((out / p).read_bytes()[:8] == PNG_MAGIC for p in on_disk["plots"])
    md = (out / "report.md").read_text()
    assert f"# {name}: {on_disk['verdict']}" in md and all(c["question"] in md for c in on_disk["checks"])
    # Every line of the measured table has as many cells as there are columns (no stray "|" in a cell).
    table = [line for line in md.split("## Measured")[1].split("## Verdict")[0].splitlines() if line.startswith("|")]
    assert len(table) >= 4 and {line.count("|") for line in table} == {len(on_disk["table"]["columns"]) + 1}
