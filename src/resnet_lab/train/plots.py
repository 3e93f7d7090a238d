"""Training curves and confusion matrices as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data import display_name
from ..figures import new_figure, save_png

__all__ = ["curves_figure", "plot_confusion", "plot_curves", "whole_epochs"]


def whole_epochs(fig):
    """Ticks at whole epochs on every x axis of ``fig`` (each is an epoch axis) and ``fig`` back: matplotlib's
    own ticks for two epochs were 1.0, 1.2, 1.4..., and an epoch is a count."""
    from matplotlib.ticker import MaxNLocator  # deferred: matplotlib loads with the first figure (figures.py)

    for ax in fig.axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def _series(history: Sequence[dict], key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
    """The epochs whose records hold ``key``, and ``key`` of each, times ``scale``: a run evaluated
    every few epochs (--eval-every) draws its test curve through the evaluated epochs, each at its
    own epoch, never shifted onto the skipped ones."""
    kept = [(h["epoch"], scale * h[key]) for h in history if h.get(key) is not None]
    return [e for e, _ in kept], [v for _, v in kept]


def _loss_labels(history: Sequence[dict], label_smoothing: float) -> dict[str, str]:
    """Legend labels of the loss curves, saying which loss each one is.

    With label smoothing the training loss is the smoothed objective, which stays well above the
    plain cross-entropy the test loss measures even on a perfect fit (its floor is the entropy of
    the smoothed targets), so the two are labelled apart and the plain training loss
    (``train_loss_plain``), when recorded, is drawn as the curve comparable with the test loss.
    """
    has_plain = any(h.get("train_loss_plain") is not None for h in history)
    if not label_smoothing and not has_plain:
        return {"train_loss": "train loss", "test_loss": "test loss"}
    smoothing = f"label smoothing {label_smoothing:g}" if label_smoothing else "with label smoothing"
    labels = {"train_loss": f"train loss ({smoothing}, the objective)"}
    if has_plain:
        labels["train_loss_plain"] = "train loss (plain cross-entropy)"
    labels["test_loss"] = "test loss (plain cross-entropy)"
    return labels


def curves_figure(history: Sequence[dict], title: str = "", label_smoothing: float = 0.0):
    """The figure :func:`plot_curves` saves: loss and accuracy per epoch, train vs test.

    Args:
        history: epoch records (``epoch``, ``train_loss``, ``test_loss``, ``train_acc``,
            ``test_acc``; optionally ``train_loss_plain``, the plain cross-entropy on the training
            batches of a run trained with label smoothing).
        title: the figure's title.
        label_smoothing: the smoothing the training loss was computed with (0 for none); it is
            named in the legend, since that loss is not comparable with the test loss.

    Returns:
        A matplotlib ``Figure`` (close it with ``matplotlib.pyplot.close``).
    """
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = new_figure(1, 2, figsize=(10, 3.8))
    styles = {"train_loss": "-", "train_loss_plain": "-.", "test_loss": "--"}
    for key, label in _loss_labels(history, label_smoothing).items():
        ax_loss.plot(*_series(history, key), styles[key], marker="o", ms=3, label=label)
    for key, label, style in (("train_acc", "train", "-"), ("test_acc", "test", "--")):
        ax_acc.plot(*_series(history, key, 100), style, marker="o", ms=3, label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    # the evaluated epochs' best: a record without the evaluation (test_acc absent or null, which
    # read_metrics accepts) is none, and a run never evaluated has no best to mark (it read "best 0.00%")
    tested = [h["test_acc"] for h in history if h.get("test_acc") is not None]
    if tested:
        best = max(tested)
        ax_acc.axhline(100 * best, color="gray", lw=0.6, ls=":")
        ax_acc.text(epochs[0], 100 * best, f" best {100 * best:.2f}%", va="bottom", fontsize=8, color="gray")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(display_name(title))  # a run folder's name may not be UTF-8 (see display_name)
    return whole_epochs(fig)


def plot_curves(
    history: Sequence[dict], path: str | os.PathLike, title: str = "", label_smoothing: float = 0.0
) -> Path:
    """Save :func:`curves_figure` as a PNG at ``path`` (atomically) and return the path.

    Args:
        history: epoch records (see :func:`curves_figure`).
        path: the PNG file.
        title: the figure's title.
        label_smoothing: the training loss's label smoothing, named in the legend.
    """
    return save_png(curves_figure(history, title, label_smoothing), path)


def plot_confusion(cm, classes: Sequence[str], path: str | os.PathLike, title: str = "") -> Path:
    """Row-normalized confusion matrix (true class rows) with counts in the cells. Class names that
    are not valid UTF-8 (folder names) are drawn as :func:`resnet_lab.data.display_name` shows them."""
    cm = np.asarray(cm, dtype=np.int64)
    classes = [display_name(str(c)) for c in classes]
    k = len(classes)
    rates = cm / np.maximum(cm.sum(1, keepdims=True), 1)
    size = max(4.5, 0.55 * k + 2)
    fig, ax = new_figure(figsize=(size, size))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), classes, fontsize=8)
    ax.set(xlabel="predicted", ylabel="true", title=display_name(title) or "confusion matrix (test)")
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    return save_png(fig, path)
