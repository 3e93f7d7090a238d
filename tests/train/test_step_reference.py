"""train's step against torch's own pieces run by hand on the same batches: ``torch.optim.SGD``
after ``torch.nn.utils.clip_grad_norm_`` (the global L2 norm of all gradients, clipped before the
step), and ``max_steps_per_epoch`` taking exactly that many batches of each epoch."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from tinytrain import dropout_free_net, make_bundle, plain_sgd_run, trained_with_plain_sgd

LR, MOMENTUM, EPOCHS = 0.1, 0.9, 2


def _by_hand(clip: float | None = None, steps: int | None = None, records: list | None = None,
             bf16: bool = False) -> torch.nn.Module:
    """torch.optim.SGD over every parameter, the gradient clipped by torch's clip_grad_norm_, the
    first ``steps`` batches of each epoch (all when None); ``bf16``: the forward under torch's own
    CPU bfloat16 autocast, the loss of its logits in float32. ``records``: gets each epoch's figures
    as the documented record has them, summed in float64 (training loss and accuracy over the
    epoch's batches as they were trained, test loss and accuracy in eval mode after it)."""
    net = dropout_free_net().train()
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    bundle = make_bundle()
    for epoch in range(EPOCHS):
        bundle.train.set_epoch(epoch)
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in itertools.islice(bundle.train, steps):
            optimizer.zero_grad()
            with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
            optimizer.step()
            loss_sum += loss.item() * len(y)
            correct, seen = correct + int((logits.argmax(1) == y).sum()), seen + len(y)
        if records is not None:
            records.append({"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
                            **_tested_by_hand(net, bundle.test), "lr": LR})
    return net


def _tested_by_hand(net: torch.nn.Module, test) -> dict[str, float]:
    """Test loss (float64 cross-entropy summed over images, over their count) and accuracy in eval mode."""
    net.eval()
    with torch.no_grad():
        pairs = [(net(x).double(), y) for x, y in test]
    net.train()
    n = sum(len(y) for _, y in pairs)
    return {"test_loss": sum(F.cross_entropy(o, y, reduction="sum").item() for o, y in pairs) / n,
            "test_acc": sum(int((o.argmax(1) == y).sum()) for o, y in pairs) / n}


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


def test_each_epochs_record_has_the_figures_of_a_plain_torch_loop_and_the_best_is_its_most_accurate_epoch():
    """The record's training loss and accuracy cover every batch of the epoch as it was trained
    (the loss weighted by batch size), the test figures are the eval-mode model's over the whole test
    set, and the best epoch is the first with the highest test accuracy: all against a hand-written
    loop that sums in float64."""
    _, history = plain_sgd_run(LR, MOMENTUM, EPOCHS)
    expected: list[dict] = []
    _by_hand(records=expected)
    for got, want in zip(history.epochs, expected, strict=True):
        assert {k: got[k] for k in want} == pytest.approx(want, rel=1e-5, abs=1e-7)
    accs = [r["test_acc"] for r in expected]
    assert (history.best_epoch, history.best_acc) == (accs.index(max(accs)) + 1, pytest.approx(max(accs)))


def test_bf16_trains_every_step_under_torchs_bfloat16_autocast():
    """--bf16 is mixed precision for the training steps too, not only for evaluation: the weights
    are those of a plain loop whose forward runs under torch.autocast(bfloat16), and not those of
    the float32 loop."""
    trained = trained_with_plain_sgd(LR, MOMENTUM, EPOCHS, bf16=True)
    _assert_same_weights(trained, _by_hand(bf16=True))
    assert not torch.allclose(trained.fc.weight, _by_hand().fc.weight, rtol=1e-4, atol=1e-5)
