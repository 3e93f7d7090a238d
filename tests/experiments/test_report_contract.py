"""The shared writer's contract beyond the common cases: the rules at their boundaries and on a seed
that never got there, the evidence each rule prints, and the parts of report.md a reader relies on
(ticked checks, findings, notes, the smoke footer). References: the formulas of the rules in
``experiments.report`` and docs/EXPERIMENTS.md, computed by hand on values exact in binary."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from resnet_lab.experiments import Check, Report, verdict_from_checks, write_report
from resnet_lab.experiments.report import Spread, exceeds, indistinguishable, rule_text, within


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


def test_indistinguishable_holds_when_the_difference_equals_the_summed_sds():
    # docs/EXPERIMENTS.md: "coincide" when |difference| <= the sum of the sds; equal one-seed
    # figures (sds 0, difference 0) coincide, and so do means 1 apart with sds 0.5 + 0.5
    assert indistinguishable(Spread.of([5.0]), Spread.of([5.0]))
    assert indistinguishable(Spread.of([1.5, 2.5]), Spread.of([0.5, 1.5]))  # sds sqrt(0.5) each: 1 < 1.41
    assert indistinguishable(Spread.of([2.0, 2.0]), Spread.of([1.0, 1.0])) is False  # sds 0: 1 > 0
    assert indistinguishable(Spread.of([2.0]), Spread.of([1.5, 1.0, 2.0]))  # sd 0.5: |0.5| <= 0.5


def test_a_small_mean_is_shown_to_the_decimal_of_its_sd():
    # mean 0.005, sd sqrt(2 * 0.001^2) = 0.0014142: the sd in two significant digits (4 decimals),
    # the mean to the same decimal, by hand
    assert str(Spread.of([0.004, 0.006])) == "0.0050 ± 0.0014"
    assert str(Spread.of([0.04, 0.06])) == "0.050 ± 0.014"


def test_a_figure_with_a_seed_that_never_got_there_shows_each_seed_in_evidence_too():
    # fmt (the evidence's form) falls back to str's per-seed form when the sd is not finite
    assert Spread.of([3.0, math.inf]).fmt() == "3 / never"
    assert Spread.of([0.5, math.nan]).fmt(1) == "0.5 / n/a"


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


def test_report_md_draws_a_well_formed_table_formats_its_cells_and_shows_every_plot(tmp_path):
    report = Report(claim="X beats Y", setup={"bn": True, "lr": 1 / 3}, columns=["run", "loss", "steps"],
                    rows=[["X", 2.299, math.inf], ["Y", -math.inf, math.nan], ["Z", None, False]],
                    checks=[Check("X is faster", True, "1 vs 2")], plots=["loss.png", "steps.png"])
    write_report(tmp_path, "demo", report, budget="full", seconds=1.0)
    lines = (tmp_path / "report.md").read_text().splitlines()
    # a markdown table's separator has one cell per header (else it renders as text)
    header = lines.index("| run | loss | steps |")
    assert lines[header + 1] == "|---|---|---|"
    # cells as a reader reads them: four significant digits, inf as never, -inf as -inf (a curve that
    # fell without bound did get there), NaN as n/a, None as -, booleans as yes/no; setup values alike
    assert lines[header + 2:header + 5] == ["| X | 2.299 | never |", "| Y | -inf | n/a |", "| Z | - | no |"]
    assert "- bn: yes" in lines and "- lr: 0.3333" in lines
    # README: report.md holds the plots, the main one first
    assert lines[lines.index("## Plots") + 2:] == ["![loss.png](loss.png)", "![steps.png](steps.png)"]


def test_results_json_holds_tensors_and_arrays_as_numbers_and_the_default_command(tmp_path):
    report = _report([Check("X is faster", True, "1 vs 2")])
    report.data = {"losses": torch.tensor([0.5, 0.25]), "steps": np.array([3, 4]), "auc": torch.tensor(0.75)}
    write_report(tmp_path, "demo", report, budget="full", seconds=1.0)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["data"] == {"losses": [0.5, 0.25], "steps": [3, 4], "auc": 0.75}  # exact in binary
    # write_report's docstring: without a command, the CLI call that runs it again
    command = f"resnet-lab experiment demo --budget full --out {tmp_path}"
    assert on_disk["command"] == command and f"- command: `{command}`" in (tmp_path / "report.md").read_text()
