"""The shared writer's contract beyond the common cases: the rules at their boundaries and on a seed
that never got there, the evidence each rule prints, and the parts of report.md a reader relies on
(ticked checks, findings, notes, the smoke footer). References: the formulas of the rules in
``experiments.report`` and docs/EXPERIMENTS.md, computed by hand on values exact in binary."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from resnet_lab.experiments import Check, Report, report as report_module, verdict_from_checks, write_report
from resnet_lab.experiments.report import (Spread, exceeds, indistinguishable, machine_description, plot_lines,
                                           rule_text, within)


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
    # docs/EXPERIMENTS.md: the verdict where people read it is marked at the smoke budget, the
    # "## Verdict" heading as much as the title
    word = "mixed (smoke budget: a check of the pipeline, not evidence)" if budget == "smoke" else "mixed"
    assert lines[0] == f"# demo: {word}" and f"## Verdict: {word}" in lines


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


@pytest.mark.parametrize("values", [[1e5, 3e5], [12.0, 14.0, 19.0], [0.004, 0.006], [2e-4, 5e-4]])
def test_a_spread_shows_its_sd_to_two_significant_digits_and_its_mean_to_that_decimal_at_any_scale(values):
    # the sd rounded to two significant digits (Python's "g" rounding, the reference), the mean to
    # within half a unit of the sd's last digit; a large figure used to be at risk of six digits of sd
    s = Spread.of(values)
    mean_text, sd_text = str(s).split(" ± ")
    assert float(sd_text) == float(f"{s.sd:.2g}")
    assert abs(float(mean_text) - s.mean) <= 0.5 * 10 ** (math.floor(math.log10(s.sd)) - 1)


def test_indistinguishable_evidence_shows_the_size_of_the_difference_whichever_figure_is_higher():
    # means 1 and 2.5 (a below b), sds 0 and sqrt(0.5) = 0.7071: |difference| 1.5, both in percent points
    text = rule_text("indistinguishable", Spread.of([1.0, 1.0]), Spread.of([2.0, 3.0]), scale=100, unit=" pp")
    assert text == "|difference of means| 150.00 pp must be <= the sum of the two seed sds 70.71 pp"


def test_rule_text_refuses_a_rule_it_does_not_know_naming_the_three_it_does():
    with pytest.raises(ValueError, match=r"unknown rule 'exceed': expected exceeds, within or indistinguishable"):
        rule_text("exceed", Spread.of([1.0]), Spread.of([0.0]))


def test_the_machine_line_names_the_cpu_model_the_core_count_and_torch():
    # references: the kernel's /proc/cpuinfo (read here on its own), os.cpu_count and torch itself
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.exists() else []
    desc = machine_description()
    assert f", {os.cpu_count()} logical cores, torch {torch.__version__} (" in desc
    if names:
        assert desc.startswith(f"{names[0]}, ")


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures plot_lines hands to save_png, kept instead of rendered (matplotlib's own objects
    are the reference for what is drawn)."""
    figures = []
    monkeypatch.setattr(report_module, "save_png", lambda fig, path, dpi: figures.append(fig) or Path(path))
    return figures


def test_plot_lines_draws_every_option_its_docstring_lists(drawn, tmp_path):
    xs = [1, 2, 4]
    plot_lines({"resnet": (xs, [1.0, 0.5, 0.0]), "plain": (xs, [2.0, None, 1.0])}, tmp_path / "p.png",
               title="loss", xlabel="batch", ylabel="error", logy=True, logx=True, xticks=xs, hline=0.25,
               styles={"plain": "--"}, bands={"resnet": ([0.5, 0.25, 0.1], [1.5, 0.75, 0.2])})
    (ax,) = drawn[0].axes
    curves = {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}
    # on a log y axis a value <= 0 has no place and is left out, as None is
    np.testing.assert_array_equal(curves["resnet"].get_ydata(), [1.0, 0.5, np.nan])
    np.testing.assert_array_equal(curves["plain"].get_ydata(), [2.0, np.nan, 1.0])
    assert (curves["plain"].get_linestyle(), curves["resnet"].get_linestyle()) == ("--", "-")
    assert ax.get_yscale() == ax.get_xscale() == "log" and ax.xaxis.get_transform().base == 2
    assert list(ax.get_xticks()) == xs and [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4"]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("loss", "batch", "error")
    # the dashed reference line, across the axis at y = 0.25
    assert [list(line.get_ydata()) for line in ax.get_lines() if line.get_linestyle() == ":"] == [[0.25, 0.25]]
    # the band: the region between lower and upper at each x
    (band,) = ax.collections
    corners = {tuple(v) for v in band.get_paths()[0].vertices}
    assert corners == {(1, 0.5), (2, 0.25), (4, 0.1), (4, 0.2), (2, 0.75), (1, 1.5)}
