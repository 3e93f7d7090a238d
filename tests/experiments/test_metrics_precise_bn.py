"""AUC, balanced accuracy and precise BN against independent float64 recomputations."""

import itertools

import pytest
import torch
from torch import nn

from resnet_lab.experiments import balanced_accuracy, precise_bn, roc_auc
from resnet_lab.nn import BatchNorm2d as ScratchBatchNorm2d


def _auc_by_pairs(scores, labels):
    """AUC by its definition: over all (positive, negative) pairs, 1 if the positive scores
    higher, 1/2 on ties (Hanley & McNeil 1982)."""
    pos = [s for s, y in zip(scores.tolist(), labels.tolist()) if y == 1]
    neg = [s for s, y in zip(scores.tolist(), labels.tolist()) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_roc_auc_matches_pairwise_definition_with_ties():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (80,), generator=g).float() / 5  # many ties
    labels = (torch.rand(80, generator=g) < 0.3).long()
    assert roc_auc(scores, labels) == pytest.approx(_auc_by_pairs(scores, labels), abs=1e-12)


def test_roc_auc_is_one_for_perfect_ranking_and_half_for_constant_scores():
    labels = torch.tensor([0, 0, 1, 1, 0, 1])
    assert roc_auc(labels.float(), labels) == 1.0
    assert roc_auc(torch.zeros(6), labels) == 0.5


def test_roc_auc_rejects_a_single_class():
    with pytest.raises(ValueError, match="both classes"):
        roc_auc(torch.rand(5), torch.zeros(5, dtype=torch.long))


def test_balanced_accuracy_is_mean_per_class_recall_counted_by_hand():
    labels = torch.tensor([0] * 8 + [1] * 2)
    pred = torch.tensor([0] * 7 + [1] + [1, 0])  # class 0: 7/8, class 1: 1/2
    assert balanced_accuracy(pred, labels) == pytest.approx((7 / 8 + 1 / 2) / 2)
    # Predicting the majority class everywhere: 90% accuracy but balanced accuracy 1/2.
    assert balanced_accuracy(torch.zeros(10, dtype=torch.long), labels) == pytest.approx(0.5)


def test_the_metrics_take_lists_and_numpy_arrays_as_tensors():
    """Their docs and the experiments call them with tensors; a list was an AttributeError ('list'
    has no attribute 'detach'). The reference: the hand values (AUC: 3 of 4 pairs ordered; recalls
    1/2 and 1) and the same call with tensors."""
    import numpy as np

    scores, labels = [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]
    for kind in (list, np.array):
        assert roc_auc(kind(scores), kind(labels)) == 0.75 == roc_auc(torch.tensor(scores), torch.tensor(labels))
        assert balanced_accuracy(kind([0, 1, 1, 1]), kind(labels)) == 0.75


@pytest.mark.parametrize("pred, labels", [([0.2, 0.9, 0.7], [0, 1, 1]), ([0, 1, 1], [0.0, 1.5, 1.0])])
def test_balanced_accuracy_refuses_values_that_are_not_class_indices(pred, labels):
    """Probabilities passed for predictions were cut to class 0 by .long(): 0.2, 0.9, 0.7 scored
    as 0, 0, 0, a balanced accuracy of 1/2 with no error."""
    with pytest.raises(ValueError, match=r"must be class indices \(whole numbers, e.g. logits.argmax\(1\)\), got"):
        balanced_accuracy(torch.tensor(pred), torch.tensor(labels))


@pytest.mark.parametrize("bn", [nn.BatchNorm2d, ScratchBatchNorm2d])
def test_precise_bn_sets_running_stats_to_equal_weight_batch_averages(bn):
    g = torch.Generator().manual_seed(1)
    batches = [torch.randn(4, 3, 5, 5, generator=g) * (i + 1) + i for i in range(6)]
    layer = bn(3)
    model = nn.Sequential(layer).eval()
    layer.running_mean.fill_(7.0)  # stale statistics, as after small-batch training
    used = precise_bn(model, [(x, None) for x in batches], num_batches=5)
    assert used == 5
    # Reference in float64: mean of per-batch channel means, mean of per-batch unbiased variances.
    xs = [x.double() for x in batches[:5]]
    means = torch.stack([x.mean(dim=(0, 2, 3)) for x in xs])
    variances = torch.stack([x.transpose(0, 1).reshape(3, -1).var(dim=1, unbiased=True) for x in xs])
    torch.testing.assert_close(layer.running_mean.double(), means.mean(0), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer.running_var.double(), variances.mean(0), rtol=1e-5, atol=1e-5)
    assert layer.momentum == 0.1 and not model.training  # settings restored


def test_precise_bn_rejects_an_empty_loader():
    with pytest.raises(ValueError, match="no batch"):
        precise_bn(nn.Sequential(nn.BatchNorm2d(2)), [], num_batches=3)


def test_precise_bn_leaves_eval_locked_layers_and_an_empty_loaders_model_as_they_were():
    # transfer.freeze locks a frozen part's BN in eval: it never runs with batch statistics, so
    # re-estimating it would wipe what it was trained with (to mean 0, var 1).
    from resnet_lab.transfer.freeze import _lock_eval

    frozen, trained = nn.BatchNorm2d(2), nn.BatchNorm2d(2)
    frozen.running_mean.fill_(2.0), frozen.running_var.fill_(5.0), frozen.num_batches_tracked.fill_(9)
    _lock_eval(frozen)
    model = nn.Sequential(frozen, trained).eval()
    batches = [(torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(i)), None) for i in range(3)]
    assert precise_bn(model, batches, num_batches=3) == 3
    assert frozen.running_mean.tolist() == [2.0, 2.0] and frozen.running_var.tolist() == [5.0, 5.0]
    assert int(frozen.num_batches_tracked) == 9 and int(trained.num_batches_tracked) == 3
    # no batch at all: the error, and the trained statistics kept
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    with pytest.raises(ValueError, match="no batch"):
        precise_bn(model, [], num_batches=3)
    assert all(torch.equal(v, before[k]) for k, v in trained.state_dict().items())


@pytest.mark.parametrize("scores, labels, match", [
    (torch.tensor([0.1, 0.4, 0.3, 0.2]), torch.tensor([0, 2, 2, 0]), r"labels must be 0 or 1, got the values \[0, 2\]"),
    (torch.tensor([0.1, 0.4, 0.3, 0.2]), torch.tensor([-1, 1, 1, -1]), r"labels must be 0 or 1"),
    (torch.tensor([0.1, float("nan"), 0.3, 0.2]), torch.tensor([0, 1, 1, 0]), r"1 NaN"),
])
def test_roc_auc_refuses_labels_other_than_0_1_and_nan_scores(scores, labels, match):
    # Before: {0, 2} counted 2 as positive (AUC 1.0) and a NaN ranked highest (AUC 1.0).
    with pytest.raises(ValueError, match=match):
        roc_auc(scores, labels)


def test_balanced_accuracy_refuses_classes_outside_num_classes_instead_of_dropping_them():
    labels, pred = torch.tensor([0, 0, 1, 1, 5, 5]), torch.tensor([0, 0, 1, 1, 0, 0])
    assert balanced_accuracy(pred, labels) == pytest.approx((1 + 1 + 0) / 3)  # class 5 counted, by hand
    with pytest.raises(ValueError, match=r"class indices must be in 0..1, got 5"):
        balanced_accuracy(pred, labels, num_classes=2)  # was 1.0: class 5 silently left out
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="num_classes must be a positive int"):
            balanced_accuracy(pred, labels, num_classes=bad)
    assert balanced_accuracy([0, 0], [0, 0], num_classes=1) == 1.0  # one class is a positive count
    with pytest.raises(ValueError, match="at least one sample"):
        balanced_accuracy(torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))


def test_balanced_accuracy_bounds_its_classes_exactly_and_counts_predicted_classes():
    # num_classes 2 allows 0 and 1: a prediction of class 2 is the first index outside
    with pytest.raises(ValueError, match=r"class indices must be in 0..1, got 2"):
        balanced_accuracy(torch.tensor([0, 2]), torch.tensor([0, 1]), num_classes=2)
    # inferred from labels and predictions (0..2); only class 0 has labels: its recall 1/2, by hand
    assert balanced_accuracy(torch.tensor([2, 0]), torch.tensor([0, 0])) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same length, got 2 and 3"):
        balanced_accuracy(torch.tensor([0, 1]), torch.tensor([0, 1, 1]))


@pytest.mark.parametrize("pred, labels", [([-1, 0], [1, 0]), ([1, 0], [-1, 0])])
def test_balanced_accuracy_refuses_a_negative_class_index_instead_of_counting_it_as_another_class(pred, labels):
    # A prediction of -1 for true class 1 lands in the (1, 0) cell of a flat 2x2 count (1 * 2 - 1):
    # a wrong answer, not an error, unless the index is refused first.
    with pytest.raises(ValueError, match=r"class indices must be in 0..1, got -1"):
        balanced_accuracy(torch.tensor(pred), torch.tensor(labels), num_classes=2)
