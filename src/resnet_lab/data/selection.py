"""Which samples a run sees: class filters, per-class and stratified subsets, held-out splits.

Every draw is seeded from the run's seed through its own stream (:func:`_selection_seed`), apart
from the epoch orders, so the subset chosen and the first epoch's order are not correlated.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["check_classes", "hold_out", "keep_classes", "select_per_class", "select_subset", "select_training"]


def _selection_seed(seed: int) -> int:
    return (int(seed) * 1_000_003 + 0x5E1EC7) % (2**63 - 1)


def _class_ranks(labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's rank within its class under a seeded shuffle, and the shuffle itself."""
    n = labels.numel()
    perm = torch.randperm(n, generator=generator)
    lp = labels[perm]
    order = torch.argsort(lp, stable=True)  # shuffled positions grouped by class
    counts = torch.bincount(lp)
    starts = torch.cumsum(counts, 0) - counts
    ranks = torch.empty(n, dtype=torch.long)
    ranks[perm[order]] = torch.arange(n) - starts[lp[order]]
    pos = torch.empty(n, dtype=torch.long)
    pos[perm] = torch.arange(n)
    return ranks, pos


def select_subset(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices (ascending) of ``n`` samples chosen at random, stratified: classes are taken in
    turn, so every class gets ``n // k`` or one more while it has samples left.

    Args:
        labels: (N,) int labels.
        n: how many to keep (all if ``n >= N``).
        seed: the selection's seed.
    """
    if n < 1:
        raise ValueError(f"subset must be at least 1, got {n}")
    if n >= labels.numel():
        return torch.arange(labels.numel())
    ranks, pos = _class_ranks(labels, torch.Generator().manual_seed(_selection_seed(seed)))
    key = ranks * labels.numel() + pos  # round-robin over classes, random class order per round
    return torch.sort(torch.argsort(key)[:n]).values


def select_per_class(labels: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Indices (ascending) of ``k`` random samples of each class (all of a class with fewer).

    Args:
        labels: (N,) int labels.
        k: samples per class.
        seed: the selection's seed.
    """
    if k < 1:
        raise ValueError(f"per_class must be at least 1, got {k}")
    ranks, _ = _class_ranks(labels, torch.Generator().manual_seed(_selection_seed(seed)))
    return torch.nonzero(ranks < k).flatten()


def select_training(
    labels: torch.Tensor, subset: int | None, per_class: int | None, seed: int, what: str,
    names: Sequence[str] | None = None, keep: Sequence[int] | None = None,
) -> torch.Tensor | None:
    """Indices of the training samples kept by ``per_class`` then ``subset`` (None: all).

    Args:
        labels: (N,) int labels of the training split.
        subset, per_class, seed: as in :class:`~resnet_lab.data.DataConfig`.
        what: the data's name for the error message (e.g. "fake", "image folder DIR").
        names: the class names, index = label, for the error message.
        keep: the caller's labels of ``labels``' classes when ``classes`` relabeled them
            (:func:`keep_classes`): the error message names the label the caller gave.

    Raises:
        ValueError: ``per_class`` is more than some class has, or ``subset`` more than the samples
            left after ``per_class``.
    """
    idx = None
    if per_class is not None:
        _check_per_class(labels, per_class, what, names, keep)
        idx = select_per_class(labels, per_class, seed)
    if subset is not None:
        n = labels.numel() if idx is None else idx.numel()
        if subset > n:
            # select_subset would quietly keep all n: a run "on N images" must not train on fewer.
            after = f" after per_class={per_class}" if per_class is not None else ""
            raise ValueError(
                f"--subset {subset} is more than the {n} training images of {what}{after}; "
                f"drop --subset to train on all {n}, or pass a smaller N"
            )
        inner = select_subset(labels if idx is None else labels[idx], subset, seed)
        idx = inner if idx is None else idx[inner]
    return idx


def _check_per_class(
    labels: torch.Tensor, per_class: int, what: str, names: Sequence[str] | None, keep: Sequence[int] | None,
) -> None:
    """Refuse a ``per_class`` some class cannot give: select_per_class would quietly keep all of a
    smaller class, and a run "on k images per class" must not train on fewer (as for subset)."""
    counts = torch.bincount(labels)
    present = torch.nonzero(counts).flatten()
    if not present.numel():
        return
    label = int(present[counts[present].argmin()])
    low = int(counts[label])
    if per_class > low:
        shown = keep[label] if keep is not None else label  # the caller's label, not the index after classes=
        name = f"{names[label]!r} (label {shown})" if names is not None and label < len(names) else f"{shown}"
        raise ValueError(f"per_class {per_class} is more than the {low} training images of class {name} of {what}, "
                         f"its smallest class; pass per_class={low} or less, or drop per_class to train on every image")


def check_classes(classes: Sequence[int] | None, names: list[str]) -> list[int] | None:
    """``classes`` as a list of ints after checking them against the dataset's class ``names``.

    Raises:
        ValueError: labels out of range, repeated, none, or a single one.
    """
    if classes is None:
        return None
    classes = [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < len(names)]
    if bad or len(set(classes)) != len(classes) or not classes:
        raise ValueError(
            f"classes={classes}: expected distinct labels in 0..{len(names) - 1} ({len(names)} classes), "
            f"e.g. classes=[0, 1, 2, 3, 4]"
        )
    if len(classes) < 2:
        # One class trains to a meaningless 100%: every prediction is right.
        raise ValueError(
            f"classes={classes} keeps only one class ({names[classes[0]]!r}); a classifier needs at least 2, "
            f"e.g. classes=[{classes[0]}, {(classes[0] + 1) % len(names)}]"
        )
    return classes


def keep_classes(labels: torch.Tensor, keep: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Which samples have a label in ``keep``, and their new labels (position in ``keep``).

    Args:
        labels: (N,) int labels.
        keep: the original labels to keep, in their new order.

    Returns:
        ``(mask, new_labels)``: bool (N,), and int64 of the kept samples only.
    """
    lut = torch.full((int(labels.max()) + 1 if labels.numel() else 1,), -1, dtype=torch.long)
    for new, old in enumerate(keep):
        if old < lut.numel():
            lut[old] = new
    relabeled = lut[labels]
    mask = relabeled >= 0
    return mask, relabeled[mask]


def hold_out(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Boolean mask of the samples held out as a test split: ``round(fraction * count)`` of each
    class, chosen at random (seeded), at least one for classes of two or more, never a whole class.

    Args:
        labels: (N,) int labels.
        fraction: in (0, 1).
        seed: the run's seed.
    """
    ranks, _ = _class_ranks(labels, torch.Generator().manual_seed(_selection_seed(seed) + 1))
    counts = torch.bincount(labels)
    n_val = torch.clamp(torch.round(counts.double() * fraction).long(), min=1)
    n_val = torch.minimum(n_val, counts - 1)
    return ranks < n_val[labels]
