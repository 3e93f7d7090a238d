"""The shared writer: ``results.json``, ``report.md`` and the comparison plots of an experiment.

An experiment hands back a :class:`Report`: the claim, the setup, a table of measured figures and a
list of :class:`Check` s, each a yes/no question answered from those figures with the numbers in
its text. :func:`verdict_from_checks` turns the checks into the verdict, so no module can state an
outcome without the numbers behind it.

Every figure of a full budget is measured over several seeds and kept as a :class:`Spread` (mean,
standard deviation, min-max); the table shows it as ``mean ± sd``. A check compares two spreads
with one of three rules, each stated in its evidence: :func:`exceeds` (an effect: the difference of
means is larger than the sum of the two standard deviations, and than a margin fixed in advance),
:func:`within` (no worse: even one standard deviation up each, the difference stays inside a
tolerance) and :func:`indistinguishable` (the difference of means is inside the sum of the two
standard deviations). A NaN figure (a run that diverged where no value stands for it) fails every rule.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from .._text import count
from ..figures import new_figure, save_png
from ..runs import atomic_write_text

__all__ = [
    "VERDICTS",
    "Check",
    "Report",
    "Spread",
    "exceeds",
    "indistinguishable",
    "machine_description",
    "plot_lines",
    "rule_text",
    "verdict_from_checks",
    "verdict_text",
    "within",
    "write_report",
]

VERDICTS = ("confirmed", "not confirmed", "mixed")


def verdict_text(verdict: str, budget: str, fake_data: bool = False) -> str:
    """The verdict as people read it: at the smoke budget (seconds, one or two seeds) the checks run
    on figures too small to mean anything, and on random images (``fake_data``: Fashion-MNIST was
    not found) they say nothing about the claim, so the word is then marked as no evidence."""
    if fake_data:
        return f"{verdict} (random images, Fashion-MNIST was not found: not evidence)"
    return f"{verdict} (smoke budget: a check of the pipeline, not evidence)" if budget == "smoke" else verdict


@dataclass
class Check:
    """One part of a claim, tested on the measured figures.

    Args:
        question: what is tested, e.g. "plain-56 trains worse than plain-20".
        passed: the answer, computed from the figures.
        evidence: the numbers behind the answer, e.g. "train error 12.1% vs 8.3% (margin 1.0 pp)".
    """

    question: str
    passed: bool
    evidence: str


@dataclass(frozen=True)
class Spread:
    """One figure measured over seeds: its values, mean, standard deviation and range.

    Args:
        values: one value per seed (a NaN makes the mean NaN, so every rule fails on it).
    """

    values: tuple[float, ...]

    @classmethod
    def of(cls, values) -> "Spread":
        """The spread of ``values`` (any iterable of numbers).

        Args:
            values: one value per seed; at least one.
        """
        vals = tuple(float(v) for v in values)
        if not vals:
            raise ValueError("a spread needs at least one value (one per seed); got none")
        return cls(vals)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def sd(self) -> float:
        """Sample standard deviation (n - 1); 0 for one value; NaN when a value is not finite."""
        if not all(math.isfinite(v) for v in self.values):
            return math.nan
        return statistics.stdev(self.values) if self.n > 1 else 0.0

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    def scaled(self, factor: float) -> "Spread":
        """The same figure in other units (fractions to percent: ``scaled(100)``).

        Args:
            factor: multiplies every value.
        """
        return Spread(tuple(v * factor for v in self.values))

    def fmt(self, digits: int = 2) -> str:
        """``mean ± sd`` with ``digits`` decimals (``mean`` alone for one seed).

        Args:
            digits: decimals of both numbers.
        """
        if not math.isfinite(self.sd):
            return str(self)
        return f"{self.mean:.{digits}f}" + (f" ± {self.sd:.{digits}f}" if self.n > 1 else "")

    def __str__(self) -> str:
        sd = self.sd
        if not math.isfinite(sd):  # a seed that never got there (inf) or diverged (NaN): show each seed
            return " / ".join(_fmt(v) for v in self.values)
        if self.n == 1 or sd == 0:
            return _fmt(self.mean) + ("" if self.n == 1 else f" ± {_fmt(sd)}")
        if abs(self.mean) < 1e-3 or abs(self.mean) >= 1e5:
            return f"{self.mean:.3g} ± {sd:.2g}"
        digits = min(6, max(0, 1 - math.floor(math.log10(sd))))  # two significant digits of the sd
        return self.fmt(digits)

    def to_dict(self) -> dict[str, Any]:
        return {"mean": self.mean, "sd": self.sd, "min": self.lo, "max": self.hi, "n": self.n,
                "values": list(self.values)}


def _finite(*xs: float) -> bool:
    return all(not math.isnan(x) for x in xs)


def exceeds(a: Spread, b: Spread, margin: float = 0.0) -> bool:
    """An effect beyond the seed-to-seed spread: ``mean(a) - mean(b) > max(margin, sd(a) + sd(b))``.

    Args:
        a, b: the two figures over seeds.
        margin: the smallest difference that counts, fixed in advance.
    """
    diff, noise = a.mean - b.mean, a.sd + b.sd
    return _finite(diff, noise) and diff > max(margin, noise)


def within(a: Spread, b: Spread, tolerance: float) -> bool:
    """No worse beyond a tolerance, even at the edge of the spread:
    ``mean(a) - mean(b) + sd(a) + sd(b) <= tolerance`` (a noisy ``a`` fails, as it should: an
    absence of effect is shown only by figures tighter than the tolerance).

    Args:
        a, b: the two figures over seeds; ``a`` is the one that must not be higher.
        tolerance: how much higher ``a`` may be, fixed in advance.
    """
    diff, noise = a.mean - b.mean, a.sd + b.sd
    return _finite(diff, noise) and diff + noise <= tolerance


def indistinguishable(a: Spread, b: Spread) -> bool:
    """The two figures fall inside each other's seed spread: ``|mean(a) - mean(b)| <= sd(a) + sd(b)``.

    Args:
        a, b: the two figures over seeds.
    """
    diff, noise = a.mean - b.mean, a.sd + b.sd
    return _finite(diff, noise) and abs(diff) <= noise


def rule_text(rule: str, a: Spread, b: Spread, bound: float = 0.0, *, scale: float = 1.0, unit: str = "",
              digits: int = 2) -> str:
    """The numbers behind one rule, for a check's evidence.

    Args:
        rule: ``exceeds``, ``within`` or ``indistinguishable``.
        a, b: the figures compared, in the order the rule takes them.
        bound: the margin (``exceeds``) or tolerance (``within``).
        scale: display factor (100 for percent).
        unit: display unit (" pp").
        digits: decimals.
    """
    diff, noise = scale * (a.mean - b.mean), scale * (a.sd + b.sd)
    f = f".{digits}f"
    if rule == "exceeds":
        return (f"difference of means {diff:+{f}}{unit} must exceed both the margin {scale * bound:{f}}{unit} and "
                f"the sum of the two seed sds {noise:{f}}{unit}")
    if rule == "within":
        return (f"difference of means {diff:+{f}}{unit} plus the sum of the two seed sds {noise:{f}}{unit} = "
                f"{diff + noise:+{f}}{unit} must be <= {scale * bound:{f}}{unit}")
    if rule == "indistinguishable":
        return f"|difference of means| {abs(diff):{f}}{unit} must be <= the sum of the two seed sds {noise:{f}}{unit}"
    raise ValueError(f"unknown rule {rule!r}: expected exceeds, within or indistinguishable")


def verdict_from_checks(checks: Sequence[Check]) -> str:
    """``confirmed`` when every check passed, ``not confirmed`` when none did, else ``mixed``.

    Args:
        checks: the parts of the claim; at least one.
    """
    if not checks:
        raise ValueError("a verdict needs at least one check; the experiment produced none")
    passed = sum(bool(c.passed) for c in checks)
    if passed == len(checks):
        return "confirmed"
    return "not confirmed" if passed == 0 else "mixed"


@dataclass
class Report:
    """What an experiment's ``run`` returns; :func:`write_report` writes it.

    Args:
        claim: the claim tested, with its source.
        setup: ``{item: value}`` lines describing what was run (models, data, budget...).
        columns: headers of the measured-figures table.
        rows: the table, one list per row (numbers are formatted by the writer).
        checks: the parts of the claim; the verdict is computed from them.
        plots: file names (inside the output folder) of the plots drawn, the main one first.
        data: raw results for ``results.json`` (per-run histories, per-step values...).
        notes: caveats worth reading next to the verdict (budget, substitutions, data used).
        findings: measured side results that are not part of the verdict.
    """

    claim: str
    setup: dict[str, Any]
    columns: list[str]
    rows: list[list[Any]]
    checks: list[Check]
    plots: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        return verdict_from_checks(self.checks)


def machine_description() -> str:
    """CPU model and core count (or the GPU name) in one line, for reports."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} ({count(torch.get_num_threads(), 'thread')})"
    if torch.cuda.is_available():
        desc += f"; GPU {torch.cuda.get_device_name(0)}"
    return desc


def _fmt(v: Any) -> str:
    if isinstance(v, Spread):
        return str(v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "never" if v > 0 else "-inf"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.3g}"
        return f"{v:.4g}"
    if v is None:
        return "-"
    return str(v)


def _jsonable(obj: Any) -> Any:
    """Tensors, tuples, spreads and non-finite floats made JSON-safe (inf/nan become strings)."""
    if isinstance(obj, Spread):
        return _jsonable(obj.to_dict())
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if hasattr(obj, "tolist"):
        return _jsonable(obj.tolist())
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


def write_report(out: str | os.PathLike, name: str, report: Report, *, budget: str, seconds: float,
                 command: str | None = None, fake_data: bool = False) -> dict[str, Any]:
    """Write ``report.md`` and then ``results.json`` into ``out``; return the results dict. Both or
    neither: stopped before ``results.json`` is in place, the report written is removed again.

    Args:
        out: the experiment's output folder (plots are already in it).
        name: the experiment name.
        report: what the experiment measured.
        budget: ``smoke`` or ``full``.
        seconds: wall time of the experiment.
        command: the command line that reproduces it (default: the CLI call).
        fake_data: the runs trained on random images (Fashion-MNIST was not found): the verdict is
            marked as no evidence and ``results.json`` says so.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    verdict = report.verdict
    command = command or f"resnet-lab experiment {name} --budget {budget} --out {out}"
    results = {
        "name": name,
        "claim": report.claim,
        "budget": budget,
        "verdict": verdict,
        "fake_data": fake_data,
        "checks": [asdict(c) for c in report.checks],
        "setup": report.setup,
        "table": {"columns": report.columns, "rows": report.rows},
        "findings": report.findings,
        "notes": report.notes,
        "plots": report.plots,
        "seconds": seconds,
        "machine": machine_description(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command,
        "data": report.data,
    }
    lines = [f"# {name}: {verdict_text(verdict, budget, fake_data)}", "", f"**Claim.** {report.claim}", "", "## Setup", ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in report.setup.items()]
    lines += [f"- budget: {budget}; wall time {seconds:.0f} s; {results['date']}",
              f"- machine: {results['machine']}", f"- command: `{command}`", "", "## Measured", ""]
    lines.append("| " + " | ".join(report.columns) + " |")
    lines.append("|" + "---|" * len(report.columns))
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in report.rows]
    lines += ["", f"## Verdict: {verdict_text(verdict, budget, fake_data)}", ""]
    lines += [f"- [{'x' if c.passed else ' '}] {c.question}: {c.evidence}" for c in report.checks]
    if report.findings:
        lines += ["", "## Other findings", ""] + [f"- {f}" for f in report.findings]
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report.notes]
    if report.plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in report.plots]
    if budget == "smoke":
        lines += ["", "_Smoke budget: this checks the pipeline, not the claim; run `--budget full` for a verdict "
                      "worth reading._"]
    # report.md first, results.json last: results.json marks a finished experiment (a rerun over it is
    # refused), so a stop (Ctrl-C, a full disk) between the two leaves no verdict in either file.
    try:
        atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
        atomic_write_text(out / "results.json", json.dumps(_jsonable(results), indent=1))
    except BaseException:
        if not (out / "results.json").exists():
            (out / "report.md").unlink(missing_ok=True)
        raise
    return results


def plot_lines(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    path: str | os.PathLike,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logy: bool = False,
    logx: bool = False,
    logx_base: float = 2,
    xticks: Sequence[float] | None = None,
    hline: float | None = None,
    styles: Mapping[str, str] | None = None,
    bands: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> Path:
    """One line per entry ``{label: (xs, ys)}`` on one axis, saved as a small PNG.

    Args:
        series: the curves.
        path: the PNG to write.
        title, xlabel, ylabel: axis texts.
        logy: log-scale y axis (gradient norms).
        logx: log-scale x axis (batch sizes, labelled images per class).
        logx_base: the base of that log x axis (2 for batch sizes).
        xticks: the only x positions to label, with their values (default: matplotlib's choice).
        hline: a dashed reference line (e.g. the target accuracy).
        styles: matplotlib format strings per label (e.g. ``"--"`` for plain nets).
        bands: ``{label: (lower, upper)}`` per x, shaded in the line's colour: the seed spread
            (mean - sd, mean + sd) around a mean curve.
    """
    fig, ax = new_figure(figsize=(6.4, 4.0))
    for label, (xs, ys) in series.items():
        ys = [float("nan") if (y is None or (logy and y <= 0)) else y for y in ys]
        (line,) = ax.plot(list(xs), ys, (styles or {}).get(label, "-"), label=label,
                          marker="o" if len(ys) <= 30 else None, ms=3)
        if bands and label in bands:
            lower, upper = bands[label]
            ax.fill_between(list(xs)[:len(lower)], list(lower), list(upper), color=line.get_color(), alpha=0.2,
                            lw=0)
    if hline is not None:
        ax.axhline(hline, color="gray", ls=":", lw=1)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log", base=logx_base)
    if xticks is not None:
        ax.set_xticks(list(xticks), [f"{x:g}" for x in xticks])
        ax.minorticks_off()  # a log axis would label minor ticks between them too (6x10^0)
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path, dpi=80)
