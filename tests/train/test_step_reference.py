"""train's step against torch's own pieces run by hand on the same batches: ``torch.optim.SGD``
after ``torch.nn.utils.clip_grad_norm_`` (the global L2 norm of all gradients, clipped before the
step), and ``max_steps_per_epoch`` taking exactly that many batches of each epoch."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from tinytrain import dropout_free_net, make_bundle, trained_with_plain_sgd

LR, MOMENTUM, EPOCHS = 0.1, 0.9, 2


def _by_hand(clip: float | None = None, steps: int | None = None) -> torch.nn.Module:
    """torch.optim.SGD over every parameter, the gradient clipped by torch's clip_grad_norm_, the
    first ``steps`` batches of each epoch (all when None)."""
    net = dropout_free_net().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    loader = make_bundle().train
    for epoch in range(EPOCHS):
        loader.set_epoch(epoch)
        for x, y in itertools.islice(loader, steps):
            optimizer.zero_grad()
            F.cross_entropy(net(x), y).backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            optimizer.step()
    return net


def _assert_same_weights(trained: torch.nn.Module, expected: torch.nn.Module) -> None:
    for (name, a), b in zip(trained.state_dict().items(), expected.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_grad_clip_clips_the_global_norm_as_torchs_clip_grad_norm_before_each_step():
    clip = 0.05  # below the gradients' norm at most steps: clipping changes the run
    _assert_same_weights(trained_with_plain_sgd(LR, MOMENTUM, EPOCHS, grad_clip=clip), _by_hand(clip))
    unclipped = _by_hand()
    assert not torch.allclose(_by_hand(clip).fc.weight, unclipped.fc.weight, atol=1e-3)
    _assert_same_weights(trained_with_plain_sgd(LR, MOMENTUM, EPOCHS), unclipped)


@pytest.mark.parametrize("steps", [1, 3])
def test_max_steps_per_epoch_trains_exactly_the_first_that_many_batches_of_each_epoch(steps):
    trained = trained_with_plain_sgd(LR, MOMENTUM, EPOCHS, max_steps_per_epoch=steps)
    assert trained.bn.num_batches_tracked.item() == EPOCHS * steps
    _assert_same_weights(trained, _by_hand(steps=steps))
