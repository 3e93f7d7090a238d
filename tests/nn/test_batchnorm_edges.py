"""Edges of the from-scratch BN against torch's own behaviour, found by a reference pass."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import vmap

import resnet_lab.nn as rn
import resnet_lab.nn.functional as RF


@pytest.mark.parametrize("cls", [nn.BatchNorm1d, rn.BatchNorm1d], ids=["torch", "scratch"])
def test_vmap_in_training_is_refused_with_torchs_words_and_the_buffers_untouched(cls):
    """Ours failed with a broadcast error after running_mean had already been scaled by 0.9."""
    m = cls(5)
    m.running_mean.fill_(1.0)
    with pytest.raises(RuntimeError, match="Batch norm got a batched tensor as input while the running_mean or "
                                           "running_var, which will be updated in place, were not batched"):
        vmap(m)(torch.randn(3, 4, 5))
    assert m.running_mean.tolist() == [1.0] * 5 and m.running_var.tolist() == [1.0] * 5


def test_functional_momentum_none_is_torchs_type_error():
    args = (torch.randn(4, 3), torch.zeros(3), torch.ones(3))
    for fn in (torch.nn.functional.batch_norm, RF.batch_norm):
        with pytest.raises(TypeError, match=r"batch_norm\(\): argument 'momentum'.* must be float, not NoneType"):
            fn(*args, training=True, momentum=None)


def test_sync_batchnorm_takes_bias_false_as_torchs_does():
    ours, theirs = rn.SyncBatchNorm(3, bias=False), nn.SyncBatchNorm(3, bias=False)
    assert ours.bias is None and theirs.bias is None and ours.weight.shape == theirs.weight.shape
    assert ours.state_dict().keys() == theirs.state_dict().keys()
