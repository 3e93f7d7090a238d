"""Inspect networks: layer/parameter/MAC summaries and per-layer gradient flow."""

from .gradflow import GradientFlowRecorder, gradient_norms, plot_gradient_flow, weight_layers_in_forward_order
from .summary import LayerRow, ModelSummary, count_params, summarize

__all__ = [
    "GradientFlowRecorder",
    "LayerRow",
    "ModelSummary",
    "count_params",
    "gradient_norms",
    "plot_gradient_flow",
    "summarize",
    "weight_layers_in_forward_order",
]
