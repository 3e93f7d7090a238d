"""Edges of the from-scratch BN against torch's own behaviour, found by a reference pass."""

from __future__ import annotations

import copy

import numpy as np
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


@pytest.mark.parametrize("cls", [nn.BatchNorm1d, rn.BatchNorm1d], ids=["torch", "scratch"])
def test_grad_transform_over_captured_buffers_is_refused_with_torchs_words_not_a_vmap_error(cls):
    """torch.func.grad over a training layer whose buffers are captured (not inputs of the function):
    torch refuses the in-place update as a mutation of a captured tensor; ours said vmap instead."""
    m = cls(5)
    m.running_mean.fill_(1.0)
    params = {k: v.detach() for k, v in m.named_parameters()}
    buffers = dict(m.named_buffers())
    x = torch.randn(4, 5)

    def loss(p):
        return torch.func.functional_call(m, {**p, **buffers}, (x,)).pow(3).sum()

    with pytest.raises(RuntimeError, match=r"During a grad \(vjp, jvp, grad, etc\) transform.*mutate a captured Tensor"):
        torch.func.grad(loss)(params)
    assert m.running_mean.tolist() == [1.0] * 5 and m.running_var.tolist() == [1.0] * 5


@pytest.mark.parametrize("momentum,named", [(None, "NoneType"), (torch.tensor([0.1]), "Tensor")], ids=["None", "1-d-tensor"])
def test_functional_momentum_that_is_no_scalar_is_torchs_type_error(momentum, named):
    # a 1-element 1-d tensor too: only a 0-dim one is a scalar (a (C,) one would broadcast per channel)
    args = (torch.randn(4, 3), torch.zeros(3), torch.ones(3))
    for fn in (torch.nn.functional.batch_norm, RF.batch_norm):
        with pytest.raises(TypeError, match=rf"batch_norm\(\): argument 'momentum'.* must be float, not {named}"):
            fn(*args, training=True, momentum=momentum)
    with pytest.raises(TypeError, match="must be float, not bool"):  # ours only, a slip torch reads as 1 (BATCHNORM.md)
        RF.batch_norm(*args, training=True, momentum=True)
    # ours only: torch takes a complex 0-dim tensor whose imaginary part is 0 and says "cannot be
    # converted to type double without overflow" for others; ours names momentum, before any update
    with pytest.raises(TypeError, match=r"argument 'momentum' must be float, not Tensor"):
        RF.batch_norm(*args, training=True, momentum=torch.tensor(0.1 + 0.5j))
    assert torch.equal(args[1], torch.zeros(3)) and torch.equal(args[2], torch.ones(3))


@pytest.mark.parametrize("momentum", [np.float32(0.25), np.int64(1), torch.tensor(0.25),
                                      torch.tensor(0.1, dtype=torch.bfloat16)],
                         ids=["numpy-float32", "numpy-int64", "0-dim-tensor", "0-dim-bf16-tensor"])
def test_momentum_as_a_numpy_scalar_or_a_0_dim_tensor_is_taken_like_torch(momentum):
    """torch's parser takes any real scalar for momentum (a numpy float32 from a config, a 0-dim
    tensor from a schedule); ours refused all but Python's int and float. torch reads it as a Python
    float: a bf16 tensor's 1 - momentum is not rounded to bf16 (0.8984375 for 0.9)."""
    x = torch.randn(6, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 + 1
    layers = [cls(3, momentum=momentum, dtype=torch.float64) for cls in (rn.BatchNorm1d, nn.BatchNorm1d)]
    buffers = [[torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)] for _ in range(2)]
    for layer, (mean, var), fn in zip(layers, buffers, (RF.batch_norm, torch.nn.functional.batch_norm)):
        layer(x)
        fn(x, mean, var, training=True, momentum=momentum)
    ours, ref = layers
    for got, want in [(ours.running_mean, ref.running_mean), (ours.running_var, ref.running_var)] + list(zip(*buffers)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("kwargs", [{}, {"bias": False}], ids=["default", "bias=False"])
def test_sync_batchnorm_takes_bias_as_torchs_does(kwargs):
    ours, theirs = rn.SyncBatchNorm(3, **kwargs), nn.SyncBatchNorm(3, **kwargs)
    assert (ours.bias is None) == (theirs.bias is None) == ("bias" in kwargs)
    assert ours.weight.shape == theirs.weight.shape
    assert ours.state_dict().keys() == theirs.state_dict().keys()


def test_convert_sync_batchnorm_of_a_model_without_parameters_picks_ours_for_the_cpu():
    # nothing to read the device from (affine=False): the CPU, where torch's SyncBatchNorm cannot run
    model = rn.convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(3, affine=False), nn.ReLU()))
    assert type(model[0]) is rn.SyncBatchNorm and model[0].running_mean.shape == (3,)


@pytest.mark.parametrize("x", [torch.randint(0, 5, (2, 3, 2, 2)), torch.rand(2, 3, 2, 2) > 0.5,
                               torch.randn(2, 3, 2, 2, dtype=torch.complex64)], ids=["long", "bool", "complex"])
def test_non_floating_input_is_refused_as_torch_refuses_it(x):
    """Without float parameters to catch the dtype, integer, bool and complex input was computed
    and cast back (0 and -1 for integers); torch raises NotImplementedError."""
    with pytest.raises(NotImplementedError):
        nn.BatchNorm2d(3, affine=False, track_running_stats=False)(x)
    ours = rn.BatchNorm2d(3, affine=False, track_running_stats=False)
    with pytest.raises(NotImplementedError, match=rf'"batch_norm" not implemented for {x.dtype}.*x.float\(\)'):
        ours(x)


def test_functional_arguments_torch_refuses_are_refused():
    x, mean, var = torch.randn(4, 3), torch.zeros(3), torch.ones(3)
    with pytest.raises(TypeError, match="argument 'training' must be bool, not str"):
        RF.batch_norm(x, mean, var, training="no")
    with pytest.raises(TypeError, match="argument 'weight' must be Tensor, not list"):
        RF.batch_norm(x, mean, var, [1.0, 1.0, 1.0], training=True)
    with pytest.raises(RuntimeError, match="running_mean is updated in place and cannot require grad"):
        RF.batch_norm(x, torch.zeros(3, requires_grad=True), var, training=True)
    with pytest.raises(RuntimeError, match=r"running_mean should be a 1-D tensor of 3 elements, got shape \[3, 1\]"):
        RF.batch_norm(x, torch.zeros(3, 1), torch.ones(3, 1), training=True)  # not a vmap error
    for count in (1, -1):
        with pytest.raises(ValueError, match=f"count must be 0 .* got {count}"):
            RF.update_running_stats(mean.clone(), var.clone(), mean, var, count, 0.1)
    assert torch.equal(mean, torch.zeros(3)) and torch.equal(var, torch.ones(3))



@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_zero_dim_running_statistics_of_one_channel_are_refused_like_torch(training):
    """torch refuses 0-dim buffers even where they hold the one channel's value (RuntimeError, "expected
    1 dims"); ours said so in training only by accident (a broadcast error) and took them in eval."""
    x = torch.randn(4, 1)
    with pytest.raises(RuntimeError):
        nn.functional.batch_norm(x, torch.zeros(()), torch.ones(()), training=training)
    with pytest.raises(RuntimeError, match=r"running_mean should be a 1-D tensor of 1 elements, got shape \[\]"):
        RF.batch_norm(x, torch.zeros(()), torch.ones(()), training=training)

def _as_if_two_ranks(monkeypatch, layer):
    """The global-batch path in one process: a world of one gloo rank that the layer takes for two
    (the all-reduces sum this rank alone)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        monkeypatch.setenv("MASTER_PORT", "29577")
        dist.init_process_group("gloo", rank=0, world_size=1)
    monkeypatch.setattr(type(layer), "_group_size", lambda self: 2)
    return layer


def test_sync_batchnorm_global_path_makes_the_plain_paths_checks_and_takes_any_rank(monkeypatch):
    import torch.distributed as dist

    try:
        for layer, x, error in ((rn.SyncBatchNorm(3, eps=0.0), torch.full((4, 3), 2.0), ValueError),
                                (rn.SyncBatchNorm(3), torch.randn(4, 3, dtype=torch.float64), RuntimeError),
                                (rn.SyncBatchNorm(3, affine=False, track_running_stats=False),
                                 torch.randint(0, 4, (4, 3)), NotImplementedError)):
            with pytest.raises(error):
                _as_if_two_ranks(monkeypatch, layer)(x)
        six = torch.randn(2, 3, 1, 1, 1, 2)  # torch's SyncBatchNorm takes any (N, C, ...)
        ours, theirs = rn.SyncBatchNorm(3), nn.BatchNorm3d(3)
        torch.testing.assert_close(ours(six), theirs(six.reshape(2, 3, 1, 1, 2)).reshape(six.shape))
        assert torch.isfinite(_as_if_two_ranks(monkeypatch, rn.SyncBatchNorm(3))(torch.randn(4, 3))).all()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.mark.parametrize("norm", ["group", "none"])  # batch and scratch give the classes, which check their own
@pytest.mark.parametrize("channels", [0, -3, "8", None, True])
def test_norm_layer_names_a_bad_channel_count(norm, channels):
    with pytest.raises(ValueError, match=rf"norm_layer\('{norm}'\) takes a channel count \(an int >= 1\), got"):
        rn.norm_layer(norm)(channels)


def _as_if_two_identical_ranks(monkeypatch, layer):
    """The global-batch path with no process group: the layer takes the world for two ranks, and
    every all-reduce doubles its tensor, as if the other rank held the same batch (and, backward,
    the same output gradient). The reference is torch's layer on the batch stacked twice."""
    import torch.distributed as dist

    monkeypatch.setattr(type(layer), "_group_size", lambda self: 2)
    monkeypatch.setattr(dist, "all_reduce", lambda t, op=None, group=None: t.mul_(2))
    return layer


@pytest.mark.parametrize("momentum", [0.3, None], ids=["m0.3", "cumulative"])
@pytest.mark.parametrize("shape", [(1, 3), (2, 3, 4)], ids=["one-sample-per-rank", "NCL"])
def test_sync_batchnorm_global_path_equals_torch_on_the_global_batch(monkeypatch, momentum, shape):
    """One sample per rank is a batch of two globally (torch's SyncBatchNorm takes it), and the
    running averages use the layer's momentum, or the cumulative average for None."""
    # eps 0.5 against variances of 1 to 9: the layer's eps, not the default, must normalize
    ours = rn.SyncBatchNorm(3, momentum=momentum, eps=0.5, dtype=torch.float64)
    ours = _as_if_two_identical_ranks(monkeypatch, ours)
    ref = nn.BatchNorm1d(3, momentum=momentum, eps=0.5, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    for step in range(3):
        x = (torch.randn(shape, generator=g, dtype=torch.float64) * (1 + step) + step).requires_grad_()
        both = torch.cat([x.detach(), x.detach()]).requires_grad_()
        up = torch.randn(shape, generator=g, dtype=torch.float64)
        y, y_ref = ours(x), ref(both)
        torch.testing.assert_close(y, y_ref[: shape[0]])
        (y * up).sum().backward()
        (y_ref * torch.cat([up, up])).sum().backward()
        torch.testing.assert_close(x.grad, both.grad[: shape[0]])
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), msg=name)
    torch.testing.assert_close(2 * ours.weight.grad, ref.weight.grad)  # this rank's share: DDP sums the two


def test_sync_batchnorm_global_path_sums_low_precision_input_in_float32_like_torch(monkeypatch):
    """bfloat16 input to a float32 layer (autocast's mix): the global sums are taken in float32, as
    torch's kernel takes them, so the running statistics are torch's to float32 rounding; sums in
    bfloat16 (8 bits) put the mean of values near 5 off by about 0.02."""
    ours = _as_if_two_identical_ranks(monkeypatch, rn.SyncBatchNorm(3, momentum=0.5))
    ref = nn.BatchNorm1d(3, momentum=0.5)
    x = (torch.randn(4, 3, 16, generator=torch.Generator().manual_seed(0)) * 3 + 5).to(torch.bfloat16)
    y, y_ref = ours(x), ref(torch.cat([x, x]))
    assert y.dtype == y_ref.dtype == torch.bfloat16
    torch.testing.assert_close(y, y_ref[:4])
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), rtol=1e-5, atol=1e-6, msg=name)


def test_sync_batchnorm_global_path_with_tracking_switched_off_later_freezes_the_buffers_like_torch(monkeypatch):
    """torch's rule (_BatchNorm.forward, SyncBatchNorm.forward): track_running_stats set False
    after construction leaves the running statistics and the counter as they were."""
    # momentum 0.3: with None an untracked step's weight is 0, which hides an update
    ours = _as_if_two_identical_ranks(monkeypatch, rn.SyncBatchNorm(3, momentum=0.3, dtype=torch.float64))
    ref = nn.BatchNorm1d(3, momentum=0.3, dtype=torch.float64)
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ours(x), ref(torch.cat([x, x]))  # one tracked step
    ours.track_running_stats = ref.track_running_stats = False
    torch.testing.assert_close(ours(3 * x + 1), ref(torch.cat([x, x]) * 3 + 1)[:2])
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        torch.testing.assert_close(getattr(ours, name), getattr(ref, name), msg=name)
    assert ref.num_batches_tracked.item() == 1


def test_sync_batchnorm_global_path_refuses_one_value_per_channel_over_all_ranks_as_torch(monkeypatch):
    x = torch.randn(1, 3)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        nn.BatchNorm1d(3, track_running_stats=False)(x)
    import torch.distributed as dist

    try:  # a world of one rank: the global batch is this one sample
        layer = _as_if_two_ranks(monkeypatch, rn.SyncBatchNorm(3, track_running_stats=False))
        with pytest.raises(ValueError, match="Expected more than 1 value per channel when training, got 1 over all"):
            layer(x)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_functional_batch_norm_refuses_input_without_a_channel_dim():
    with pytest.raises(ValueError, match=r"batch_norm expects input of shape \(N, C, ...\), got torch.Size\(\[5\]\)"):
        RF.batch_norm(torch.randn(5), torch.zeros(5), torch.ones(5), training=True)


def test_layer_and_factory_arguments_that_build_nothing_sensible_are_refused():
    with pytest.raises(ValueError, match="num_features must be positive, got 0"):
        rn.BatchNorm2d(0)
    with pytest.raises(ValueError, match="dim must be 1 or 2, got True"):  # True == 1 built BatchNorm1d
        rn.norm_layer("scratch", dim=True)


@pytest.mark.parametrize("layer", [rn.BatchNorm1d, rn.BatchNorm2d])
@pytest.mark.parametrize("given", ["4", None, 4.0, True])
def test_a_channel_count_that_is_not_an_integer_is_named(layer, given):
    """torch refuses these too (TypeError, its empty()'s 'tuple of ints'); ours said "'<=' not
    supported between instances of 'str' and 'int'" for "4" and None."""
    with pytest.raises(TypeError):
        getattr(nn, layer.__name__)(given)
    with pytest.raises(TypeError, match=rf"^num_features must be an int \(the channel count\), got {given!r}"):
        layer(given)


@pytest.mark.parametrize("given", [torch.tensor(4), np.int64(4)])
def test_a_channel_count_torch_takes_as_an_index_is_taken(given):
    assert rn.BatchNorm2d(given).weight.shape == nn.BatchNorm2d(given).weight.shape == (4,)


def test_group_count_is_the_documented_one_and_scratch_bn_counts_as_a_norm_layer():
    # group_count's docstring: Wu & He's 32 where it divides, else at least 2 channels per group
    assert [rn.group_count(c) for c in (64, 256, 16, 6, 1)] == [32, 32, 8, 3, 1]
    assert rn.norm.has_norm_layers(nn.Sequential(nn.Conv2d(3, 8, 3), rn.BatchNorm2d(8)))
    assert not rn.norm.has_norm_layers(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU()))
    # every kind NORM_LAYERS' comment names, each alone in a model
    for layer in (nn.InstanceNorm2d(8), nn.SyncBatchNorm(8), nn.GroupNorm(2, 8), nn.LayerNorm(8), nn.RMSNorm(8),
                  rn.SyncBatchNorm(8)):
        assert rn.norm.has_norm_layers(nn.Sequential(nn.Linear(8, 8), layer)), type(layer).__name__


def test_convert_sync_batchnorm_keeps_each_layers_eps_momentum_and_options():
    """A converted layer is the layer it replaces (the module's docstring): the same outputs and
    running statistics as the original, whose eps, momentum (None included), affine and tracking
    the new layer must take over; a lone BN comes back converted."""
    model = nn.Sequential(nn.BatchNorm1d(3, eps=0.5, momentum=0.7), rn.BatchNorm1d(3, momentum=None, affine=False),
                          nn.BatchNorm1d(3, eps=0.3, track_running_stats=False))
    ref = copy.deepcopy(model)
    rn.convert_sync_batchnorm(model, "cpu")
    assert [type(m) for m in model] == [rn.SyncBatchNorm] * 3
    g = torch.Generator().manual_seed(0)
    for _ in range(2):  # two steps: the cumulative average (momentum None) differs from 0.1 at the second
        x = torch.randn(6, 3, 4, generator=g) * 2 + 1
        torch.testing.assert_close(model(x), ref(x))
    torch.testing.assert_close(model.state_dict(), ref.state_dict())
    assert isinstance(rn.convert_sync_batchnorm(nn.BatchNorm2d(4), "cpu"), rn.SyncBatchNorm)
