"""Training curves and confusion matrices as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from .checkpoint import atomic_write

__all__ = ["plot_curves", "plot_confusion"]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    plt = _plt()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    finally:
        plt.close(fig)


def plot_curves(history: Sequence[dict], path: str | os.PathLike, title: str = "") -> Path:
    """Loss and accuracy per epoch, train vs test, side by side."""
    plt = _plt()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label, style in (("train_loss", "train", "-"), ("test_loss", "test", "--")):
        ax_loss.plot(epochs, [h.get(key) for h in history], style, marker="o", ms=3, label=label)
    for key, label, style in (("train_acc", "train", "-"), ("test_acc", "test", "--")):
        ax_acc.plot(epochs, [100 * h[key] for h in history if key in h], style, marker="o", ms=3, label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    best = max((h.get("test_acc", 0) for h in history), default=0)
    ax_acc.axhline(100 * best, color="gray", lw=0.6, ls=":")
    ax_acc.text(epochs[0], 100 * best, f" best {100 * best:.2f}%", va="bottom", fontsize=8, color="gray")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_confusion(cm, classes: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Row-normalized confusion matrix (true class rows) with counts in the cells."""
    import numpy as np

    plt = _plt()
    cm = np.asarray(cm, dtype=np.int64)
    k = len(classes)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.5, 0.55 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix (test)")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    return _save(fig, path)
