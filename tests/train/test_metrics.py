"""train.metrics against counts made by hand: confusion rows are the true class and columns the
predicted one (docs/REPORT.md), per-class accuracy is each row's diagonal share (NaN for a class
without samples), balanced accuracy their mean over the classes that occur."""

from __future__ import annotations

import math

import pytest
import torch

from resnet_lab.train.metrics import balanced_accuracy, confusion_matrix, per_class_accuracy

# 4 classes; class 3 is neither true nor predicted, class 2 is predicted but never true
TARGET = torch.tensor([0, 0, 0, 1, 1, 0, 1])
PRED = torch.tensor([0, 1, 2, 1, 0, 0, 1])


def test_the_confusion_matrix_counts_each_true_and_predicted_pair():
    want = [[0] * 4 for _ in range(4)]
    for t, p in zip(TARGET.tolist(), PRED.tolist()):
        want[t][p] += 1
    cm = confusion_matrix(PRED, TARGET, 4)
    assert cm.dtype == torch.int64 and cm.tolist() == want == [[2, 1, 1, 0], [1, 2, 0, 0], [0] * 4, [0] * 4]


def test_per_class_accuracy_is_each_rows_diagonal_share_and_nan_without_samples():
    acc = per_class_accuracy(confusion_matrix(PRED, TARGET, 4)).tolist()
    assert acc[:2] == [2 / 4, 2 / 3] and math.isnan(acc[2]) and math.isnan(acc[3])


def test_balanced_accuracy_averages_the_classes_that_occur_only():
    assert balanced_accuracy(confusion_matrix(PRED, TARGET, 4)) == pytest.approx((2 / 4 + 2 / 3) / 2, rel=1e-12)
