"""The shared writer: ``results.json``, ``report.md`` and the comparison plots of an experiment.

An experiment hands back a :class:`Report`: the claim, the setup, a table of measured figures and a
list of :class:`Check` s, each a yes/no question answered from those figures with the numbers in
its text. :func:`verdict_from_checks` turns the checks into the verdict, so no module can state an
outcome without the numbers behind it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from ..figures import new_figure, save_png
from ..runs import atomic_write_text

__all__ = [
    "VERDICTS",
    "Check",
    "Report",
    "machine_description",
    "plot_lines",
    "verdict_from_checks",
    "write_report",
]

VERDICTS = ("confirmed", "not confirmed", "mixed")


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
    desc = f"{cpu}, {os.cpu_count()} logical cores, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    if torch.cuda.is_available():
        desc += f"; GPU {torch.cuda.get_device_name(0)}"
    return desc


def _fmt(v: Any) -> str:
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
    """Tensors, tuples and non-finite floats made JSON-safe (inf/nan become strings)."""
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
                 command: str | None = None) -> dict[str, Any]:
    """Write ``results.json`` and ``report.md`` into ``out``; return the results dict.

    Args:
        out: the experiment's output folder (plots are already in it).
        name: the experiment name.
        report: what the experiment measured.
        budget: ``smoke`` or ``full``.
        seconds: wall time of the experiment.
        command: the command line that reproduces it (default: the CLI call).
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
    atomic_write_text(out / "results.json", json.dumps(_jsonable(results), indent=1))

    lines = [f"# {name}: {verdict}", "", f"**Claim.** {report.claim}", "", "## Setup", ""]
    lines += [f"- {k}: {_fmt(v)}" for k, v in report.setup.items()]
    lines += [f"- budget: {budget}; wall time {seconds:.0f} s; {results['date']}",
              f"- machine: {results['machine']}", f"- command: `{command}`", "", "## Measured", ""]
    lines.append("| " + " | ".join(report.columns) + " |")
    lines.append("|" + "---|" * len(report.columns))
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in report.rows]
    lines += ["", f"## Verdict: {verdict}", ""]
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
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
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
    """
    fig, ax = new_figure(figsize=(6.4, 4.0))
    for label, (xs, ys) in series.items():
        ys = [float("nan") if (y is None or (logy and y <= 0)) else y for y in ys]
        ax.plot(list(xs), ys, (styles or {}).get(label, "-"), label=label, marker="o" if len(ys) <= 30 else None,
                ms=3)
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
