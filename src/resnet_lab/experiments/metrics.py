"""Metrics for imbalanced tasks: ROC AUC and balanced accuracy (prevalence-independent)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..train.metrics import balanced_accuracy as recall_mean
from ..train.metrics import confusion_matrix

__all__ = ["balanced_accuracy", "roc_auc"]


def roc_auc(scores: Tensor, labels: Tensor) -> float:
    """Area under the ROC curve of ``scores`` for the positive class ``labels == 1``.

    Computed as the Mann-Whitney U statistic: the probability that a random positive scores above
    a random negative, ties counting one half (average ranks), in float64.

    Args:
        scores: (N,) higher means "more positive" (a tensor, list or numpy array).
        labels: (N,) 0/1.

    Raises:
        ValueError: shapes differ, a label is not 0 or 1, a score is NaN (it has no rank), or one
            class is absent (AUC undefined).
    """
    scores = torch.as_tensor(scores).detach().double().flatten().cpu()  # lists and numpy arrays too
    labels = torch.as_tensor(labels).detach().flatten().cpu()
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels must have the same length, got {scores.numel()} and {labels.numel()}")
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"labels must be 0 or 1, got the values {sorted(set(labels.tolist()))[:6]}")
    if bool(scores.isnan().any()):
        raise ValueError(f"scores hold {int(scores.isnan().sum())} NaN, which no ranking orders: AUC undefined")
    labels = labels.bool()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"AUC needs both classes, got {n_pos} positives and {n_neg} negatives")
    order = torch.argsort(scores)
    sorted_scores = scores[order]
    ranks = torch.empty_like(scores)
    ranks[order] = torch.arange(1, scores.numel() + 1, dtype=torch.float64)
    # Average the ranks of tied scores.
    _, inverse, counts = torch.unique_consecutive(sorted_scores, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    avg = ends - (counts.double() - 1) / 2
    ranks[order] = avg[inverse]
    u = float(ranks[labels].sum()) - n_pos * (n_pos + 1) / 2
    return u / (n_pos * n_neg)


def _class_indices(values, name: str) -> Tensor:
    """A tensor, list or array of class indices as a flat int64 CPU tensor; a value that is not a
    whole number (probabilities given as predictions) is refused, not cut to an index by ``long()``."""
    t = torch.as_tensor(values).detach().flatten().cpu()
    if t.is_floating_point() and not bool((t == t.round()).all()):
        bad = t[t != t.round()][0].item()
        raise ValueError(f"{name} must be class indices (whole numbers, e.g. logits.argmax(1)), got {bad}")
    return t.long()


def balanced_accuracy(pred: Tensor, labels: Tensor, num_classes: int | None = None) -> float:
    """Mean over classes present in ``labels`` of the per-class recall.

    Args:
        pred: (N,) predicted class indices (a tensor, list or numpy array; probabilities are refused).
        labels: (N,) true class indices.
        num_classes: number of classes (default: inferred); a label or prediction outside
            ``0..num_classes-1`` is an error, not a class left out.
    """
    pred, labels = _class_indices(pred, "pred"), _class_indices(labels, "labels")
    if pred.shape != labels.shape:
        raise ValueError(f"pred and labels must have the same length, got {pred.numel()} and {labels.numel()}")
    if labels.numel() == 0:
        raise ValueError("balanced_accuracy needs at least one sample")
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)
                                    or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int or None (inferred), got {num_classes!r}")
    k = num_classes if num_classes is not None else int(max(pred.max(), labels.max())) + 1
    low, high = int(min(pred.min(), labels.min())), int(max(pred.max(), labels.max()))
    if low < 0 or high >= k:
        raise ValueError(f"class indices must be in 0..{k - 1}, got {low if low < 0 else high}")
    return recall_mean(confusion_matrix(pred, labels, k))  # over the classes that occur in labels
