"""TrainConfig.sam (--sam RHO): sharpness-aware minimization (Foret et al. 2021), against a loop
written by hand in float64 over the paper's update: the gradient g at w, the ascent
e = rho * g / ||g||, the gradient at w + e on the same batch, then the optimizer's step from w with
it. Batch normalization's running statistics move with the first pass only."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_lab.train import TrainConfig, train
from resnet_lab.train.sam import ascent_at, in_ascent, sam_gradient

from tinytrain import TinyNet, dropout_free_net, make_bundle, trained_with_plain_sgd

LR, MOMENTUM, EPOCHS, RHO = 0.05, 0.9, 2, 0.1


def _net() -> TinyNet:
    return dropout_free_net()


def _trained(**kw) -> TinyNet:
    return trained_with_plain_sgd(LR, MOMENTUM, EPOCHS, **kw)


def _by_hand(rho: float) -> nn.Module:
    """SAM in float64 with SGD's momentum written out: v = m v + g_sam, w -= lr v."""
    net = _net().double()
    params = list(net.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    loader = make_bundle().train
    net.train()
    for epoch in range(EPOCHS):
        loader.set_epoch(epoch)
        for x, y in loader:
            x = x.double()
            grads = torch.autograd.grad(F.cross_entropy(net(x), y), params)  # moves the running statistics
            probe = copy.deepcopy(net)  # the ascent's pass runs on a copy: its statistics are thrown away
            norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
            with torch.no_grad():
                for q, g in zip(probe.parameters(), grads):
                    q += rho * g / norm
            sam_grads = torch.autograd.grad(F.cross_entropy(probe(x), y), list(probe.parameters()))
            with torch.no_grad():
                for p, v, g in zip(params, velocity, sam_grads):
                    v.mul_(MOMENTUM).add_(g)
                    p.sub_(LR * v)
    return net


def test_sam_equals_a_float64_hand_written_loop_and_differs_from_plain_sgd():
    trained = _trained(sam=RHO)
    expected = _by_hand(RHO)
    for (name, x), y in zip(trained.state_dict().items(), expected.state_dict().values()):
        if x.is_floating_point():  # weights and the BN running statistics of the first passes only
            torch.testing.assert_close(x.double(), y, rtol=1e-5, atol=1e-6, msg=name)
        else:
            assert torch.equal(x, y), name  # num_batches_tracked counts each step once
    assert trained.bn.num_batches_tracked.item() == 2 * 6
    plain = _trained()
    assert not torch.allclose(trained.fc.weight, plain.fc.weight, atol=1e-4)  # against the same run without it
    torch.testing.assert_close(plain.fc.weight.double(), _by_hand(0.0).fc.weight, rtol=1e-5, atol=1e-6)


def test_the_ascent_moves_the_training_weights_rho_along_the_gradient_and_restores_everything_exactly():
    net = _net()
    net.conv.weight.requires_grad_(False)  # frozen: no gradient, not moved
    x = _with_gradient(net)
    before = copy.deepcopy(net.state_dict())
    trainable = [p for p in net.parameters() if p.requires_grad]
    grads = [p.grad.clone() for p in trainable]
    assert not in_ascent()
    with ascent_at(net, 0.25) as norm:
        assert in_ascent()  # the probe's pass: per-step recorders skip it
        moved = [p.detach() - before[name] for name, p in net.named_parameters() if p.requires_grad]
        assert torch.equal(net.conv.weight, before["conv.weight"])
        torch.testing.assert_close(torch.sqrt(sum((m ** 2).sum() for m in moved)), torch.tensor(0.25))
        for m, g in zip(moved, grads):  # along +g (uphill), scaled by rho / ||g||
            torch.testing.assert_close(m, 0.25 * g / norm, rtol=1e-5, atol=1e-7)
        net(x)  # a training pass in the block moves the running statistics...
        assert not torch.equal(net.bn.running_mean, before["bn.running_mean"])
    _assert_unchanged(net, before)  # ...which leave with the block, as the ascent does
    assert not in_ascent()


@pytest.mark.parametrize("value", [-0.05, float("nan"), float("inf")])
def test_sam_negative_or_not_finite_is_refused_naming_the_flag(value):
    with pytest.raises(ValueError, match=r"sam \(--sam\) must be a finite number >= 0"):
        TrainConfig(sam=value)


def test_sam_with_fp16_is_refused_with_the_way_out():
    with pytest.raises(ValueError, match=r"sam \(--sam\) does not combine with fp16 \(--fp16\): use --bf16"):
        TrainConfig(sam=0.05, fp16=True)
    assert TrainConfig(sam=0.05, bf16=True).sam == 0.05


def test_a_blow_up_at_the_ascent_stops_before_the_step_and_names_sam():
    """rho 1e30 made the second pass's loss NaN; it was not checked, the step wrote NaN into every
    weight, and the next step's check blamed the learning rate, one step late."""
    from resnet_lab.train import TrainingDiverged

    net = _net()
    with pytest.raises(TrainingDiverged, match=r"the loss at SAM's ascent \(--sam 1e\+30\) became nan at epoch 1, "
                                               r"step 1 .*Lower --sam \(now 1e\+30\) or --lr"):
        train(net, make_bundle(), TrainConfig(epochs=1, sam=1e30, progress=False, plots=False, device="cpu"))
    assert all(torch.isfinite(p).all() for p in net.parameters())  # the step was not taken


def _with_gradient(net: nn.Module) -> torch.Tensor:
    """Give ``net`` the gradient of one training batch's loss (in ``net``'s dtype); returns the batch."""
    x, y = next(iter(make_bundle().train))
    x = x.to(next(net.parameters()).dtype)
    F.cross_entropy(net(x), y).backward()
    return x


def _assert_unchanged(net: nn.Module, before: dict) -> None:
    for name, value in net.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_the_ascent_is_measured_in_the_gradients_own_precision_when_finer_than_float32():
    """A float64 model's gradient norm was taken in float32 (3e-4 off a float64 reference step)."""
    net = _net().double()
    _with_gradient(net)
    grads = [p.grad.clone() for p in net.parameters()]
    want = torch.sqrt(sum((g ** 2).sum() for g in grads))
    with ascent_at(net, 0.1) as norm:
        assert norm.dtype == torch.float64 and torch.equal(norm, torch.linalg.vector_norm(torch.stack(
            [torch.linalg.vector_norm(g) for g in grads])))
    torch.testing.assert_close(norm, want, rtol=1e-12, atol=0)


def test_the_ascent_of_a_bfloat16_model_is_measured_in_float32():
    """bf16 gradients are upcast for the norm (sam.py: "at least float32"): a bf16 norm would be off
    by up to 2^-9 of itself, and so would the ascent's length."""
    net = _net().bfloat16()
    _with_gradient(net)
    want = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in net.parameters()))
    with ascent_at(net, 0.1) as norm:
        assert norm.dtype == torch.float32
    torch.testing.assert_close(norm.double(), want, rtol=1e-6, atol=0)


def test_a_trainable_parameter_the_loss_never_reached_stays_put():
    """A parameter outside the loss's graph (a head the loss does not use) holds no gradient: it has no
    direction to move, so it stays where it is and the norm is over the others, as for frozen ones."""
    net = _net()
    net.unused = nn.Linear(2, 2)
    _with_gradient(net)
    assert net.unused.weight.grad is None
    before = copy.deepcopy(net.unused.state_dict())
    want = torch.sqrt(sum((p.grad ** 2).sum() for p in net.parameters() if p.grad is not None))
    with ascent_at(net, 0.1) as norm:
        _assert_unchanged(net.unused, before)
        torch.testing.assert_close(norm, want)


@pytest.mark.parametrize("grads", ["zero", "none"])
def test_without_a_gradient_to_follow_the_ascent_moves_nothing(grads):
    """At a zero gradient (a loss at its minimum), or with no gradient at all, rho * g / ||g|| has no
    direction: the weights stay at w (not NaN from 0 / 0) and ||g|| is 0."""
    net = _net()
    if grads == "zero":
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
    before = copy.deepcopy(net.state_dict())
    with ascent_at(net, 0.1) as norm:
        assert float(norm) == 0.0
        _assert_unchanged(net, before)


def test_an_error_inside_the_ascent_still_restores_the_weights_and_statistics():
    """ascent_at's promise, "on exit the weights and buffers are exactly what they were", holds when the
    block raises too (a second Ctrl-C or an out-of-memory error during the probe's pass): the caller's
    model is not left at the perturbed weights."""
    net = _net()
    x = _with_gradient(net)
    before = copy.deepcopy(net.state_dict())
    with pytest.raises(KeyboardInterrupt):
        with ascent_at(net, 0.25):
            net(x)  # moves the running statistics, as the probe's pass would
            raise KeyboardInterrupt
    assert not in_ascent()
    _assert_unchanged(net, before)


def test_sam_gradient_returns_the_norm_at_w_and_leaves_the_gradient_at_w_plus_e_as_a_float64_recomputation():
    """sam_gradient's docstring, by hand in float64 on one batch: g = grad L(w), e = rho g / ||g||, the
    gradients left are grad L(w + e), the weights are back at w, and it returns ||g|| (what the trainer
    watches for a non-finite gradient: a norm of 0 would let an overflow at w pass as "the loss at
    SAM's ascent", blaming --sam)."""
    net = _net()
    x, y = next(iter(make_bundle().train))
    ref = copy.deepcopy(net).double()
    params = list(ref.parameters())
    g = torch.autograd.grad(F.cross_entropy(ref(x.double()), y), params)
    want_norm = torch.sqrt(sum((gi ** 2).sum() for gi in g))
    with torch.no_grad():
        for p, gi in zip(params, g):
            p += RHO * gi / want_norm
    want = torch.autograd.grad(F.cross_entropy(ref(x.double()), y), params)
    F.cross_entropy(net(x), y).backward()
    weights = [p.detach().clone() for p in net.parameters()]
    norm = sam_gradient(net, RHO, lambda: F.cross_entropy(net(x), y))
    torch.testing.assert_close(norm.double(), want_norm, rtol=1e-5, atol=0)
    for (name, p), w, gi in zip(net.named_parameters(), weights, want):
        assert torch.equal(p.detach(), w), name
        torch.testing.assert_close(p.grad.double(), gi, rtol=1e-4, atol=1e-6, msg=name)
