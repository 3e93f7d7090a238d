"""The shared writer's contract beyond the common cases: the rules at their boundaries and on a seed
that never got there, the evidence each rule prints, and the parts of report.md a reader relies on
(ticked checks, findings, notes, the smoke footer). References: the formulas of the rules in
``experiments.report`` and docs/EXPERIMENTS.md, computed by hand on values exact in binary."""

from __future__ import annotations

import math

import pytest

from resnet_lab.experiments import Check, Report, verdict_from_checks, write_report
from resnet_lab.experiments.report import Spread, exceeds, rule_text, within


def test_within_holds_at_the_tolerance_itself():
    # difference 0.5 + sds 0 = 0.5: "must be <= tolerance" includes the tolerance
    assert within(Spread.of([1.0, 1.0]), Spread.of([0.5, 0.5]), 0.5)
    assert not within(Spread.of([1.0, 1.0]), Spread.of([0.5, 0.5]), 0.25)


@pytest.mark.parametrize("margin", [0.0, 1.0])
def test_a_seed_that_never_got_there_gives_no_sd_so_no_effect_is_claimed_from_it(margin):
    # (5, never): the mean is inf and the sd NaN, so the difference cannot be weighed against the
    # seed spread; max(margin, NaN) is the margin in Python, which would let inf > margin pass.
    never = Spread.of([math.inf, 5.0])
    assert math.isnan(never.sd)
    assert not exceeds(never, Spread.of([1.0, 1.0]), margin)


def test_within_evidence_adds_the_sds_to_the_difference_it_compares():
    # means 2 and 1, sds 1 and 0: difference +1, sds' sum 1, their sum +2 against the tolerance 0.5
    text = rule_text("within", Spread.of([1.0, 2.0, 3.0]), Spread.of([1.0, 1.0, 1.0]), 0.5)
    assert text == ("difference of means +1.00 plus the sum of the two seed sds 1.00 = +2.00 must be <= 0.50")


def test_a_verdict_without_a_check_is_refused_not_confirmed():
    with pytest.raises(ValueError, match="at least one check"):
        verdict_from_checks([])


def test_a_tiny_figure_keeps_its_sd():
    # mean 2e-4, sample sd sqrt(2 * (1e-4)^2 / 1) = 1.414e-4: both shown, in significant digits
    assert str(Spread.of([1e-4, 3e-4])) == "0.0002 ± 0.00014"


def _report(checks: list[Check]) -> Report:
    return Report(claim="X beats Y", setup={}, columns=["run"], rows=[["X"]], checks=checks,
                  findings=["X took 3 s"], notes=["a caveat"])


@pytest.mark.parametrize("budget", ["smoke", "full"])
def test_report_md_ticks_the_checks_that_passed_and_keeps_findings_and_notes(tmp_path, budget):
    checks = [Check("X is faster", True, "1 vs 2"), Check("X is smaller", False, "3 vs 2")]
    write_report(tmp_path, "demo", _report(checks), budget=budget, seconds=1.0)
    lines = (tmp_path / "report.md").read_text().splitlines()
    assert "- [x] X is faster: 1 vs 2" in lines and "- [ ] X is smaller: 3 vs 2" in lines
    assert lines[lines.index("## Other findings") + 2] == "- X took 3 s"
    assert lines[lines.index("## Notes") + 2] == "- a caveat"
    # docs/EXPERIMENTS.md: a smoke verdict means nothing and the report says so; a full one stands alone
    footer = [line for line in lines if line.startswith("_Smoke budget")]
    assert len(footer) == (budget == "smoke")
