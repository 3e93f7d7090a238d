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
