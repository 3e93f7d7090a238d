"""Inspect networks and runs: layer/parameter/MAC summaries, per-layer gradient flow, activation
statistics, the HTML run report."""

from .activations import ActivationStatsRecorder, LayerStats, plot_activation_stats
from .gradflow import GradientFlowRecorder, gradient_norms, plot_gradient_flow, weight_layers_in_forward_order
from .report import machine_info, report_html, write_report
from .summary import LayerRow, ModelSummary, count_params, summarize

__all__ = [
    "ActivationStatsRecorder",
    "GradientFlowRecorder",
    "LayerRow",
    "LayerStats",
    "ModelSummary",
    "count_params",
    "gradient_norms",
    "machine_info",
    "plot_activation_stats",
    "plot_gradient_flow",
    "report_html",
    "summarize",
    "weight_layers_in_forward_order",
    "write_report",
]
