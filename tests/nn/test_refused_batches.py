"""A batch the layer refuses leaves it as it was (QA 2026-12-06): the count went up before the
checks, so with momentum=None the next batch was averaged as if it were the second. torch's layer
counts first too; the reference is torch's layer fed only the batches that were taken. And running
statistics that require grad are refused in eval as torch refuses them (not only in training)."""

from __future__ import annotations

import pytest
import torch

import resnet_lab.nn as rn
import resnet_lab.nn.functional as RF


@pytest.mark.parametrize("momentum", [None, 0.1])
@pytest.mark.parametrize("bad", [
    torch.randn(1, 2),                        # one value per channel in training
    torch.randn(4, 2, dtype=torch.float64),   # float64 into a float32 layer
    torch.ones(4, 2, dtype=torch.int64),      # not floating point
])
def test_a_refused_batch_is_not_counted(momentum, bad):
    ours, ref = rn.BatchNorm1d(2, momentum=momentum), torch.nn.BatchNorm1d(2, momentum=momentum)
    with pytest.raises((ValueError, RuntimeError, NotImplementedError)):
        ours(bad)
    assert int(ours.num_batches_tracked) == 0
    good = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    ours(good), ref(good)
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 1
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)


def test_running_statistics_that_require_grad_are_refused_in_eval_as_torch_refuses_them():
    x, stat, ones = torch.randn(4, 3, 5, 5), torch.zeros(3, requires_grad=True), torch.ones(3)
    with pytest.raises(RuntimeError, match="not differentiable with respect to") as want:
        torch.nn.functional.batch_norm(x, stat, ones, training=False)
    with pytest.raises(type(want.value), match=r"not differentiable with respect to running_mean, which requires "
                                               r"grad: pass a buffer \(requires_grad=False\)"):
        RF.batch_norm(x, stat, ones, training=False)
    with torch.no_grad():  # no graph: torch takes it, and so do we, with the same result
        torch.testing.assert_close(RF.batch_norm(x, stat, ones, training=False),
                                   torch.nn.functional.batch_norm(x, stat, ones, training=False))
