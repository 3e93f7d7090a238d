"""resnet_lab.data.selection against its docstrings and docs/DATA.md "Selecting data", with the
expected counts recomputed here in plain Python."""

from __future__ import annotations

import pytest
import torch

from resnet_lab.data.selection import hold_out, keep_classes, select_per_class, select_subset, select_training


def held_out_counts(counts: list[int], fraction: float) -> list[int]:
    """hold_out's documented rule: round(fraction * count) of each class, at least one for classes
    of two or more, never a whole class (Python's round, half to even like torch's)."""
    return [min(max(round(c * fraction), 1), c - 1) if c > 1 else 0 for c in counts]


def labels_of(counts: list[int]) -> torch.Tensor:
    """Labels with ``counts[k]`` samples of class k, interleaved (not sorted by class)."""
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(123))]


@pytest.mark.parametrize("counts, fraction", [([4, 2, 3, 1, 10], 0.4), ([2, 10, 15, 7], 0.1), ([5, 9], 0.5)])
def test_hold_out_takes_round_fraction_of_each_class_at_least_one_never_all(counts, fraction):
    labels = labels_of(counts)
    for seed in (0, 1):
        mask = hold_out(labels, fraction, seed)
        assert torch.bincount(labels[mask], minlength=len(counts)).tolist() == held_out_counts(counts, fraction)


def test_subset_indices_are_ascending_distinct_and_stratified():
    # docstring: indices (ascending); classes are taken in turn, so every class gets n // k or one
    # more while it has samples left: a class short of the most-drawn one by 2+ must be exhausted
    counts = [30, 3, 20, 12]
    labels = labels_of(counts)
    for n in (9, 14, 40):
        idx = select_subset(labels, n, seed=4)
        assert idx.tolist() == sorted(set(idx.tolist())) and len(idx) == n
        got = torch.bincount(labels[idx], minlength=4).tolist()
        assert all(g == c or g >= max(got) - 1 for g, c in zip(got, counts)), got


@pytest.mark.parametrize("k", [0, -2])
def test_subset_and_per_class_below_one_are_refused(k):
    labels = labels_of([3, 3])
    with pytest.raises(ValueError, match=f"at least 1, got {k}"):
        select_subset(labels, k)
    with pytest.raises(ValueError, match=f"at least 1, got {k}"):
        select_per_class(labels, k)


def test_select_training_takes_the_subset_out_of_the_per_class_draw_and_allows_all_of_it():
    # per_class then subset (docstring); a subset of exactly the images left is no error (docs:
    # "at most the number of training images (after classes/per_class)")
    labels = labels_of([9, 7, 8])
    per = set(select_per_class(labels, 5, seed=2).tolist())
    for subset in (6, 15):
        idx = select_training(labels, subset=subset, per_class=5, seed=2, what="test data")
        assert len(idx) == subset and set(idx.tolist()) <= per
        assert torch.bincount(labels[idx], minlength=3).tolist() == [subset // 3] * 3
    assert len(select_training(labels, subset=24, per_class=None, seed=0, what="test data")) == 24


def test_keep_classes_relabels_in_the_given_order_and_skips_labels_the_split_lacks():
    # a val split may lack the training split's last class: keep=[2, 0] on labels with no 2
    labels = torch.tensor([0, 1, 1, 0])
    mask, new = keep_classes(labels, [2, 0])
    assert mask.tolist() == [True, False, False, True] and new.tolist() == [1, 1]
    mask, new = keep_classes(torch.tensor([2, 1, 0, 2]), [2, 0])
    assert mask.tolist() == [True, False, True, True] and new.tolist() == [0, 1, 0]
    mask, new = keep_classes(torch.tensor([], dtype=torch.long), [2, 0])  # an empty split keeps nothing
    assert mask.shape == (0,) and new.shape == (0,)


@pytest.mark.parametrize("draw", [
    lambda labels, seed: select_per_class(labels, 3, seed),
    lambda labels, seed: select_subset(labels, 10, seed),
    lambda labels, seed: torch.nonzero(hold_out(labels, 0.3, seed)).flatten(),
], ids=["per_class", "subset", "hold_out"])
def test_each_draw_follows_its_seed(draw):
    # docs/DATA.md: seed decides the "subset draw", split_seed "which images are held out": one seed
    # picks the same samples every time, other seeds pick others (the counts above stay as documented)
    labels = labels_of([9, 7, 8])
    picks = [draw(labels, seed).tolist() for seed in (0, 0, 1, 2)]
    assert picks[0] == picks[1]
    assert picks[2] != picks[0] and picks[3] != picks[0]


def test_per_class_is_checked_against_the_classes_the_split_has_not_a_label_it_lacks():
    # select_training's docstring: refused when per_class "is more than some class has"; a label no
    # training image has (none of class 1 here) is no class of the split: all 2 of classes 0 and 2
    labels = torch.tensor([2, 0, 2, 0])
    assert select_training(labels, subset=None, per_class=2, seed=0, what="test data").tolist() == [0, 1, 2, 3]


def test_a_subset_of_at_least_every_sample_is_every_sample_once():
    # docstring: "all if n >= N", so a larger n gives the N indices, not n
    labels = labels_of([3, 2])
    assert select_subset(labels, 5).tolist() == select_subset(labels, 9).tolist() == [0, 1, 2, 3, 4]


def test_the_extra_sample_of_a_partial_round_goes_to_a_random_class_even_for_labels_sorted_by_class():
    # an image folder lists its classes in turn (labels sorted); "chosen at random": n=1 of two equal
    # classes must not always be class 0 (the lowest index), over seeds each class is picked
    labels = torch.tensor([0] * 5 + [1] * 5)
    picked = {int(labels[select_subset(labels, 1, seed)]) for seed in range(16)}
    assert picked == {0, 1}


def test_per_class_is_checked_against_the_smallest_class_present_named_by_the_callers_label():
    # counts by hand: class 0 has 3, class 1 none (a label this split lacks), class 2 has 2
    labels = torch.tensor([0, 2, 0, 2, 0])
    idx = select_training(labels, subset=None, per_class=2, seed=0, what="test data")
    assert torch.bincount(labels[idx], minlength=3).tolist() == [2, 0, 2]
    with pytest.raises(ValueError, match=r"^per_class 3 is more than the 2 training images of class 'c' \(label 9\) "
                                         r"of test data, its smallest class; pass per_class=2 or less"):
        select_training(labels, subset=None, per_class=3, seed=0, what="test data", names=["a", "b", "c"],
                        keep=[5, 7, 9])
    with pytest.raises(ValueError, match=r"training images of class 2 of test data"):  # no name for label 2
        select_training(labels, subset=None, per_class=3, seed=0, what="test data", names=["a"])


def test_per_class_of_an_empty_split_keeps_nothing():
    empty = torch.tensor([], dtype=torch.long)
    assert select_training(empty, subset=None, per_class=1, seed=0, what="test data").tolist() == []


def test_the_held_out_split_is_drawn_from_its_own_stream_not_the_per_class_one():
    # module docstring: every draw through its own stream; held out 3 of each class of 10 (0.3) and
    # per_class=3 with the same seed must not be the very same samples
    labels = labels_of([10, 10, 10])
    for seed in (0, 1):
        held = torch.nonzero(hold_out(labels, 0.3, seed)).flatten().tolist()
        assert len(held) == 9 and held != select_per_class(labels, 3, seed).tolist()
