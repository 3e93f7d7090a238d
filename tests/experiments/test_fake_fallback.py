"""An experiment without Fashion-MNIST runs on the `fake` set: a full budget's sizes (subset, and
the transfer experiment's k = 100 and 1000 per class) are cut to what that small set has, so the
fallback loads instead of being refused."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from resnet_lab.data import sources
from resnet_lab.data.sources import DataNotFoundError, fake_arrays
from resnet_lab.experiments import transfer
from resnet_lab.experiments.runner import Context


@pytest.fixture
def no_fashion_mnist(monkeypatch):
    def missing(data_dir=None):
        raise DataNotFoundError("Fashion-MNIST is not here (test)")
    monkeypatch.setattr(sources, "find_fashion_mnist", missing)


@pytest.mark.parametrize("k", transfer.BUDGET["full"]["ks"])
def test_the_full_transfer_budgets_per_class_loads_on_the_fake_fallback(tmp_path, no_fashion_mnist, k):
    ctx = Context("transfer", "full", tmp_path, device="cpu", log=lambda s: None)
    b = {**transfer.BUDGET["full"], "image_size": 8}  # small images: the sizes are what is checked
    data = transfer._target(ctx, b, k, seed=0, source=SimpleNamespace(mean=None, std=None))
    assert ctx.fake_data
    # The reference: the fake set's own labels, counted by hand for the kept classes 5-9.
    counts = torch.bincount(fake_arrays(8, 1, 0).train_y)[transfer.TARGET_CLASSES]
    expected = min(k, int(counts.min()))
    got = torch.bincount(data.train.labels)
    assert got.tolist() == [expected] * len(transfer.TARGET_CLASSES)


def test_the_fake_fallback_has_fashion_mnists_shape_unless_told_another_size(tmp_path, no_fashion_mnist):
    """Context.data: the fallback has 1 channel and Fashion-MNIST's 28 x 28 images, so the
    experiment's models fit it as they would the real set."""
    ctx = Context("x", "smoke", tmp_path, device="cpu", log=lambda s: None)
    assert ctx.data(batch_size=16, subset=16).info.input_size == (1, 28, 28) and ctx.fake_data


def test_context_data_caps_per_class_on_the_fake_fallback(tmp_path, no_fashion_mnist):
    ctx = Context("x", "full", tmp_path, device="cpu", log=lambda s: None)
    data = ctx.data(per_class=100, image_size=8)
    counts = torch.bincount(fake_arrays(8, 1, ctx.seed).train_y)  # all ten classes
    assert data.num_train == int(counts.min()) * len(counts)


def test_context_data_caps_a_full_budgets_subset_on_the_fake_fallback(tmp_path, no_fashion_mnist):
    ctx = Context("x", "full", tmp_path, device="cpu", log=lambda s: None)
    data = ctx.data(subset=10_000, image_size=8)  # more than the fake set holds: all of it, not an error
    assert data.num_train == len(fake_arrays(8, 1, ctx.seed).train_y)
