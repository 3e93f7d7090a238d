"""TrainConfig.lookahead / lookahead_alpha (--lookahead K, --lookahead-alpha A): Zhang et al. 2019's
"k steps forward, 1 step back", against a hand-written loop over torch.optim.SGD: every k steps
``slow += alpha * (fast - slow)`` and the fast weights restart from the slow ones (parameters only;
BN running statistics and SGD's momentum stay as the fast steps left them)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_lab.train import TrainConfig
from resnet_lab.train.averaging import Lookahead, WeightAveraging

from tinytrain import TinyNet, dropout_free_net, make_bundle, trained_with_plain_sgd

LR, MOMENTUM, EPOCHS = 0.05, 0.9, 2


def _net() -> TinyNet:
    return dropout_free_net()


def _trained(**kw) -> TinyNet:
    return trained_with_plain_sgd(LR, MOMENTUM, EPOCHS, **kw)


def _by_hand(k: int | None, alpha: float, ema: float = 0.0) -> TinyNet:
    """The hand loop; with ``ema`` the returned net holds the float64 average
    ``e <- d_t e + (1 - d_t) w`` (d_t = min(ema, (1 + t) / (10 + t)), integer buffers copied) of the
    weights each step leaves, after that step's synchronization (docs/RECIPES.md)."""
    net = _net()
    opt = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM)
    slow = [p.detach().clone() for p in net.parameters()]
    average = {n: v.double() if v.is_floating_point() else v.clone() for n, v in net.state_dict().items()}
    loader, t = make_bundle().train, 0
    net.train()
    for epoch in range(EPOCHS):
        loader.set_epoch(epoch)
        for x, y in loader:
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
            t += 1
            if k and t % k == 0:
                with torch.no_grad():
                    for p, s in zip(net.parameters(), slow):
                        s += alpha * (p - s)
                        p.copy_(s)
            d = min(ema, t / (9 + t))  # update number t - 1 (0-based): (1 + (t - 1)) / (10 + (t - 1))
            for n, v in net.state_dict().items():
                average[n] = d * average[n] + (1 - d) * v.double() if v.is_floating_point() else v.clone()
    if ema:
        net.load_state_dict({n: v.float() if v.is_floating_point() else v for n, v in average.items()})
    return net


def _assert_same(a: nn.Module, b: nn.Module) -> None:
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("k, alpha", [(5, 0.5), (3, 0.8), (1, 0.5)])
def test_lookahead_equals_a_hand_written_loop_over_torch_sgd(k, alpha):
    trained = _trained(lookahead=k, lookahead_alpha=alpha)
    _assert_same(trained, _by_hand(k, alpha))  # 12 steps: syncs after step 5 and 10 (k=5), every 3rd (k=3), each (k=1)
    plain = _by_hand(None, alpha)
    assert not torch.allclose(trained.fc.weight, plain.fc.weight, atol=1e-4)  # against the same run without it


def test_with_ema_the_average_takes_the_weights_after_each_steps_synchronization():
    """docs/RECIPES.md: "With --ema too, the EMA averages the weights after each step's
    synchronization." Every 3rd step the average takes the slow weights the fast ones restart
    from, not the fast weights before the sync."""
    trained = _trained(lookahead=3, lookahead_alpha=0.5, ema=0.9)  # ends holding the EMA (finish)
    _assert_same(trained, _by_hand(3, 0.5, ema=0.9))
    assert not torch.allclose(trained.fc.weight, _by_hand(3, 0.5).fc.weight, atol=1e-4)  # the average, not the raw


def test_lookahead_alpha_1_is_the_inner_optimizer_alone():
    """With alpha = 1 the slow weights jump to the fast ones: the hand-written loop's run is the
    plain optimizer's, so the option would change nothing and is refused with the way out."""
    _assert_same(_by_hand(3, 1.0), _by_hand(None, 1.0))
    with pytest.raises(ValueError, match=r"lookahead_alpha \(--lookahead-alpha\) must be in \(0, 1\), got 1.0 .*"
                                         r"1 would be the plain optimizer: leave lookahead off"):
        TrainConfig(lookahead=3, lookahead_alpha=1.0)


def test_lookahead_k_beyond_the_runs_steps_is_refused_at_train_start():
    """A k larger than the run's optimizer steps never syncs: the run would be the plain one."""
    steps = len(make_bundle().train) * EPOCHS  # counted from the loader: 6 batches an epoch
    _assert_same(_by_hand(steps + 1, 0.5), _by_hand(None, 0.5))  # why: nothing changes
    with pytest.raises(ValueError, match=rf"lookahead \(--lookahead {steps + 1}\) syncs every {steps + 1} optimizer "
                                         rf"steps, but this run takes {steps} \({EPOCHS} epochs of 6 steps\): it would "
                                         rf"never sync, .*give --lookahead {steps} or fewer"):
        _trained(lookahead=steps + 1)
    _assert_same(_trained(lookahead=steps), _by_hand(steps, 0.5))  # one sync, at the very end: taken


@pytest.mark.parametrize("kw, match", [({"lookahead": -1}, r"lookahead \(--lookahead\) must be an int >= 0"),
                                       ({"lookahead": 2.5}, r"lookahead \(--lookahead\) must be an int >= 0"),
                                       ({"lookahead_alpha": 0.0}, r"lookahead_alpha \(--lookahead-alpha\) must be in"),
                                       ({"lookahead_alpha": 1.5}, r"lookahead_alpha \(--lookahead-alpha\) must be in"),
                                       ({"lookahead": 5, "lookahead_alpha": 1.0},
                                        r"lookahead_alpha \(--lookahead-alpha\) must be in \(0, 1\)")])
def test_lookahead_refuses_a_negative_k_and_alpha_outside_0_1(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kw)


def test_lookahead_alpha_without_lookahead_is_refused_not_ignored():
    """Without lookahead on, the slow step has nothing to act on: a set alpha is an error, not a no-op."""
    with pytest.raises(ValueError, match=r"only acts with lookahead on: add --lookahead K"):
        TrainConfig(lookahead_alpha=0.8)
    assert TrainConfig(lookahead=5, lookahead_alpha=0.8).lookahead_alpha == 0.8
    assert TrainConfig().lookahead_alpha == 0.5  # the default counts as unset


def test_weight_averaging_without_an_alpha_takes_the_configs_default():
    """WeightAveraging(lookahead=k) alone steps the slow weights by TrainConfig's alpha (the paper's
    0.5): k = 2 fast steps of +1 each leave every weight at w0 + alpha * 2 after the sync."""
    net = _net()
    start = [p.detach().clone() for p in net.parameters()]
    averaging = WeightAveraging(net, lookahead=2)
    for _ in range(2):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(1.0)
        averaging.after_step()
    for p, w in zip(net.parameters(), start):
        torch.testing.assert_close(p.detach(), w + TrainConfig().lookahead_alpha * 2.0)


def test_a_parameter_frozen_when_lookahead_starts_and_unfrozen_later_is_synced_too():
    """Lookahead keeps slow weights for frozen parameters too, so that one unfrozen later (finetune's
    --freeze-epochs) takes part: moved by 2 after unfreezing, it syncs to start + alpha * 2."""
    net = _net()
    net.conv.weight.requires_grad_(False)
    start = net.conv.weight.detach().clone()
    lookahead = Lookahead(net, k=1, alpha=0.5)
    net.conv.weight.requires_grad_(True)
    with torch.no_grad():
        net.conv.weight.add_(2.0)
    lookahead.step()
    torch.testing.assert_close(net.conv.weight.detach(), start + 1.0)


def test_the_saved_averages_are_a_snapshot_that_later_steps_leave_as_they_were():
    """WeightAveraging.state_dict() copies (as train_state.pt needs): the raw and slow weights it
    returns stay those of the moment it was called, compared with clones taken then."""
    model = _net()
    averaging = WeightAveraging(model, ema=0.9, lookahead=2)
    state = averaging.state_dict()
    taken = {part: {k: v.clone() for k, v in state[part].items()} for part in ("raw", "slow")}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    averaging.after_step()
    averaging.after_step()  # a synchronization: the slow weights move
    assert all(torch.equal(state[part][k], v) for part in taken for k, v in taken[part].items())
