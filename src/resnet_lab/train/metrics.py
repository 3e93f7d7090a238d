"""Classification metrics computed on tensors (no per-sample Python)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["confusion_matrix", "per_class_accuracy", "balanced_accuracy"]


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """(K, K) int64 counts; rows are true classes, columns predicted classes."""
    idx = target.to(torch.int64) * num_classes + pred.to(torch.int64)
    return torch.bincount(idx.flatten(), minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(cm: Tensor) -> Tensor:
    """Recall of each class (diagonal over row sums); NaN for a class with no samples."""
    cm = cm.to(torch.float64)
    return cm.diagonal() / cm.sum(1)


def balanced_accuracy(cm: Tensor) -> float:
    """Mean per-class recall over the classes that occur."""
    acc = per_class_accuracy(cm)
    return float(acc[~torch.isnan(acc)].mean())
