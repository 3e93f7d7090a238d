"""Experiments that test the claims about depth, residuals and batch normalization.

Each experiment is a module that declares its runs (``NAME``, ``CLAIM``, ``run(ctx)``); the shared
runner (:class:`Context`) trains them with the library trainer and the shared writer
(:func:`write_report`) writes ``results.json``, the plots and ``report.md`` with a verdict computed
from the measured figures. See docs/EXPERIMENTS.md for the full runs.
"""

from .metrics import balanced_accuracy, roc_auc
from .precise_bn import precise_bn
from .registry import EXPERIMENT_MODULES, get_experiment, list_experiments, run_experiment
from .report import (
    VERDICTS,
    Check,
    Report,
    Spread,
    exceeds,
    indistinguishable,
    plot_lines,
    rule_text,
    verdict_from_checks,
    within,
    write_report,
)
from .runner import BUDGETS, Context, RunResult, RunSpec, SeedResults, cifar_net, ema, first_at_or_below

__all__ = [
    "BUDGETS",
    "EXPERIMENT_MODULES",
    "VERDICTS",
    "Check",
    "Context",
    "Report",
    "RunResult",
    "RunSpec",
    "SeedResults",
    "Spread",
    "balanced_accuracy",
    "cifar_net",
    "ema",
    "exceeds",
    "first_at_or_below",
    "get_experiment",
    "indistinguishable",
    "list_experiments",
    "plot_lines",
    "precise_bn",
    "roc_auc",
    "rule_text",
    "run_experiment",
    "verdict_from_checks",
    "within",
    "write_report",
]
