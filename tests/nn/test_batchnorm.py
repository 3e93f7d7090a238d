"""Our from-scratch BatchNorm1d/2d against torch.nn.BatchNorm1d/2d, the reference implementation.

float64 comparisons use a 1e-12 tolerance (the two differ only in summation order). float32
agrees to within ``F32_ATOL``/``F32_RTOL`` below. Achieved (torch 2.14 CPU): outputs and input
gradients within 5e-7 absolute on these shapes (1.5e-6 at (32, 64, 16, 16)); weight/bias
gradients, sums over n = N*H*W values that partly cancel, within 4.3e-6 absolute (n = 120; the
test allows n * float32 eps); running statistics within 2.4e-7. torch's kernel sums in a different order
(and computes the variance in one fused pass; ours is mean((x - mean)^2)).
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

import resnet_lab.nn as rnn
from resnet_lab.nn.functional import batch_norm

F64_TOL = 1e-12
F32_ATOL = 2e-6
F32_RTOL = 1e-5

# (ours, torch's, input shape) over all the layouts torch accepts.
CASES = [
    (rnn.BatchNorm1d, nn.BatchNorm1d, (8, 5)),  # (N, C): per feature
    (rnn.BatchNorm1d, nn.BatchNorm1d, (4, 3, 7)),  # (N, C, L)
    (rnn.BatchNorm2d, nn.BatchNorm2d, (4, 3, 5, 6)),  # (N, C, H, W)
    (rnn.BatchNorm2d, nn.BatchNorm2d, (2, 16, 3, 3)),
]
CASE_IDS = ["1d-NC", "1d-NCL", "2d-NCHW", "2d-wide"]


def _pair(ours_cls, torch_cls, shape, dtype=torch.float64, **kw):
    torch.manual_seed(0)
    ours = ours_cls(shape[1], dtype=dtype, **kw)
    ref = torch_cls(shape[1], dtype=dtype, **kw)
    if ref.affine:  # non-trivial gamma/beta so the affine part is tested, identical in both
        with torch.no_grad():
            ref.weight.uniform_(0.5, 1.5)
            ref.bias.uniform_(-0.5, 0.5)
            ours.weight.copy_(ref.weight)
            ours.bias.copy_(ref.bias)
    return ours, ref


def _batches(shape, n, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    # Varying scale and shift per batch so the running statistics have something to track.
    return [torch.randn(shape, generator=g, dtype=dtype) * (1 + i) + 0.5 * i for i in range(n)]


def _assert_buffers_equal(ours, ref, atol=F64_TOL, rtol=F64_TOL):
    torch.testing.assert_close(ours.running_mean, ref.running_mean, atol=atol, rtol=rtol)
    torch.testing.assert_close(ours.running_var, ref.running_var, atol=atol, rtol=rtol)
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item()
    assert ours.num_batches_tracked.dtype == ref.num_batches_tracked.dtype == torch.long


@pytest.mark.parametrize("ours_cls,torch_cls,shape", CASES, ids=CASE_IDS)
def test_train_output_and_input_weight_bias_grads_match_torch_float64(ours_cls, torch_cls, shape):
    ours, ref = _pair(ours_cls, torch_cls, shape)
    x = _batches(shape, 1)[0]
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = ours(xa), ref(xb)
    torch.testing.assert_close(ya, yb, atol=F64_TOL, rtol=F64_TOL)
    upstream = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    ga = torch.autograd.grad(ya, [xa, ours.weight, ours.bias], upstream)
    gb = torch.autograd.grad(yb, [xb, ref.weight, ref.bias], upstream)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, atol=F64_TOL, rtol=F64_TOL)


@pytest.mark.parametrize("momentum", [0.1, 0.3, None], ids=["m0.1", "m0.3", "cumulative"])
@pytest.mark.parametrize("ours_cls,torch_cls,shape", CASES, ids=CASE_IDS)
def test_running_stats_after_several_steps_then_eval_outputs_match_torch(ours_cls, torch_cls, shape, momentum):
    ours, ref = _pair(ours_cls, torch_cls, shape, momentum=momentum)
    for x in _batches(shape, 4):
        torch.testing.assert_close(ours(x), ref(x), atol=F64_TOL, rtol=F64_TOL)
    _assert_buffers_equal(ours, ref)
    ours.eval(), ref.eval()
    x = _batches(shape, 1, seed=99)[0]
    torch.testing.assert_close(ours(x), ref(x), atol=F64_TOL, rtol=F64_TOL)
    _assert_buffers_equal(ours, ref)  # eval leaves the buffers alone, in both
    assert ours.num_batches_tracked.item() == 4


@pytest.mark.parametrize("ours_cls,torch_cls,shape", CASES, ids=CASE_IDS)
def test_affine_false_matches_torch_and_has_no_parameters(ours_cls, torch_cls, shape):
    ours, ref = _pair(ours_cls, torch_cls, shape, affine=False)
    assert ours.weight is None and ours.bias is None and list(ours.parameters()) == []
    x = _batches(shape, 1)[0].requires_grad_()
    torch.testing.assert_close(ours(x), ref(x), atol=F64_TOL, rtol=F64_TOL)
    gx_ours = torch.autograd.grad(ours(x).sum() + (ours(x) ** 2).sum(), x)[0]
    gx_ref = torch.autograd.grad(ref(x).sum() + (ref(x) ** 2).sum(), x)[0]
    torch.testing.assert_close(gx_ours, gx_ref, atol=F64_TOL, rtol=F64_TOL)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x), atol=F64_TOL, rtol=F64_TOL)


@pytest.mark.parametrize("ours_cls,torch_cls,shape", CASES, ids=CASE_IDS)
def test_without_running_stats_batch_stats_are_used_in_train_and_eval_like_torch(ours_cls, torch_cls, shape):
    ours, ref = _pair(ours_cls, torch_cls, shape, track_running_stats=False)
    assert ours.running_mean is None and ours.running_var is None and ours.num_batches_tracked is None
    assert set(ours.state_dict()) == set(ref.state_dict())
    for mode in ("train", "eval"):
        getattr(ours, mode)(), getattr(ref, mode)()
        for x in _batches(shape, 2, seed=3):
            torch.testing.assert_close(ours(x), ref(x), atol=F64_TOL, rtol=F64_TOL)


def test_empty_batch_leaves_running_stats_untouched_like_torch():
    ours, ref = _pair(rnn.BatchNorm2d, nn.BatchNorm2d, (0, 3, 4, 4))
    x = torch.randn(0, 3, 4, 4, dtype=torch.float64)
    assert ours(x).shape == ref(x).shape == (0, 3, 4, 4)
    _assert_buffers_equal(ours, ref)
    assert not ours.running_mean.isnan().any()


@pytest.mark.parametrize("eps", [1e-5, 1e-3, 0.5])
def test_eps_matches_torch(eps):
    shape = (3, 4, 2, 2)
    ours, ref = _pair(rnn.BatchNorm2d, nn.BatchNorm2d, shape, eps=eps)
    x = _batches(shape, 1)[0] * 1e-2  # small variance so eps matters
    torch.testing.assert_close(ours(x), ref(x), atol=F64_TOL, rtol=F64_TOL)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x), atol=F64_TOL, rtol=F64_TOL)


@pytest.mark.parametrize("ours_cls,torch_cls,shape", CASES, ids=CASE_IDS)
def test_state_dict_moves_between_ours_and_torch_both_ways(ours_cls, torch_cls, shape):
    trained_ours, trained_ref = _pair(ours_cls, torch_cls, shape, momentum=0.2)
    for x in _batches(shape, 3):
        trained_ours(x), trained_ref(x)
    with torch.no_grad():  # make the two distinguishable from a fresh layer
        trained_ours.weight.mul_(2), trained_ref.weight.mul_(3)
    x = _batches(shape, 1, seed=5)[0]

    fresh_ref = torch_cls(shape[1], dtype=torch.float64)
    fresh_ref.load_state_dict(trained_ours.state_dict(), strict=True)  # ours -> torch
    fresh_ours = ours_cls(shape[1], dtype=torch.float64)
    fresh_ours.load_state_dict(trained_ref.state_dict(), strict=True)  # torch -> ours
    assert list(trained_ours.state_dict()) == list(trained_ref.state_dict())

    for a, b in ((trained_ours, fresh_ref), (fresh_ours, trained_ref)):
        a.eval(), b.eval()
        torch.testing.assert_close(a(x), b(x), atol=F64_TOL, rtol=F64_TOL)
        _assert_buffers_equal(a, b)


def test_state_dict_without_num_batches_tracked_loads_like_torch():
    # Checkpoints from before torch's BN version 2 (no version metadata) lack the counter: torch
    # loads them strictly and keeps its current counter; a version-2 dict lacking it is an error.
    old = {k: v for k, v in nn.BatchNorm2d(3).state_dict().items() if k != "num_batches_tracked"}
    ours, ref = rnn.BatchNorm2d(3), nn.BatchNorm2d(3)
    ours.num_batches_tracked.fill_(7), ref.num_batches_tracked.fill_(7)
    ours.load_state_dict(dict(old), strict=True)
    ref.load_state_dict(dict(old), strict=True)
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item() == 7

    v2 = nn.BatchNorm2d(3).state_dict()  # carries _metadata version 2
    del v2["num_batches_tracked"]
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        nn.BatchNorm2d(3).load_state_dict(v2, strict=True)
    with pytest.raises(RuntimeError, match="num_batches_tracked"):
        rnn.BatchNorm2d(3).load_state_dict(v2, strict=True)


@pytest.mark.parametrize(
    "ours_cls,torch_cls,shape",
    [(rnn.BatchNorm1d, nn.BatchNorm1d, (1, 4)), (rnn.BatchNorm2d, nn.BatchNorm2d, (1, 4, 1, 1))],
    ids=["1d", "2d"],
)
def test_one_value_per_channel_raises_torch_error_in_training_and_works_in_eval(ours_cls, torch_cls, shape):
    ours, ref = _pair(ours_cls, torch_cls, shape)
    x = torch.randn(shape, dtype=torch.float64)
    with pytest.raises(ValueError) as want:
        ref(x)
    with pytest.raises(ValueError) as got:
        ours(x)
    assert str(got.value) == str(want.value)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x), atol=F64_TOL, rtol=F64_TOL)


@pytest.mark.parametrize(
    "ours_cls,torch_cls,bad_shape",
    [(rnn.BatchNorm1d, nn.BatchNorm1d, (2, 3, 4, 4)), (rnn.BatchNorm1d, nn.BatchNorm1d, (3,)),
     (rnn.BatchNorm2d, nn.BatchNorm2d, (2, 3, 4)), (rnn.BatchNorm2d, nn.BatchNorm2d, (2, 3, 4, 4, 4))],
    ids=["1d-got-4d", "1d-got-1d", "2d-got-3d", "2d-got-5d"],
)
def test_wrong_input_dims_raise_the_same_error_as_torch(ours_cls, torch_cls, bad_shape):
    x = torch.randn(bad_shape)
    with pytest.raises(ValueError) as want:
        torch_cls(3)(x)
    with pytest.raises(ValueError) as got:
        ours_cls(3)(x)
    assert str(got.value) == str(want.value)


def test_wrong_channel_count_is_an_error_naming_the_channels():
    with pytest.raises(ValueError, match="4 channels"):
        rnn.BatchNorm2d(3)(torch.randn(2, 4, 3, 3))


@pytest.mark.parametrize("ours_cls,torch_cls,shape", [(rnn.BatchNorm2d, nn.BatchNorm2d, (2, 4, 3, 3)),
                                                      (rnn.BatchNorm1d, nn.BatchNorm1d, (2, 4))])
def test_wrong_channel_count_raises_torch_error_type(ours_cls, torch_cls, shape):
    # Code written against torch's layer catches RuntimeError; it must catch ours too.
    x = torch.randn(*shape)
    with pytest.raises(RuntimeError):
        torch_cls(3)(x)
    with pytest.raises(RuntimeError, match="batch norm over 3 channels got an input with 4 channels"):
        ours_cls(3)(x)


# (running_mean, running_var, weight, bias, training) that torch.nn.functional.batch_norm refuses
_C = 4
_REFUSED = {
    "one buffer in training": (torch.full((_C,), 5.0), None, None, None, True),
    "other buffer in training": (None, torch.full((_C,), 5.0), None, None, True),
    "no buffers in eval": (None, None, None, None, False),
    "one buffer in eval": (torch.full((_C,), 5.0), None, None, None, False),
    "short running_mean": (torch.full((3,), 5.0), torch.full((3,), 5.0), None, None, True),
    "long running_var": (torch.full((_C,), 5.0), torch.full((5,), 5.0), None, None, True),
    "short running_mean in eval": (torch.full((3,), 5.0), torch.full((3,), 5.0), None, None, False),
    "short weight": (torch.full((_C,), 5.0), torch.full((_C,), 5.0), torch.ones(3), None, True),
    "long bias without buffers": (None, None, torch.ones(_C), torch.ones(5), True),
}


@pytest.mark.parametrize("case", list(_REFUSED))
def test_functional_batch_norm_refuses_what_torch_refuses_before_touching_the_buffers(case):
    x = torch.randn(3, _C, 2, 2)

    def run(fn):
        args = [None if t is None else t.clone() for t in _REFUSED[case][:4]]
        with pytest.raises(Exception) as info:
            fn(x, *args[:2], args[2], args[3], training=_REFUSED[case][4], momentum=0.5)
        return info.value, args

    (want, _), (got, buffers) = run(nn.functional.batch_norm), run(batch_norm)
    assert type(got) is type(want) and str(got) == str(want)
    for t in buffers[:2]:  # the running statistics are as they were
        assert t is None or torch.equal(t, torch.full_like(t, 5.0))


@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 4), (2, 2, 3, 3)], ids=["NC", "NCL", "NCHW"])
def test_functional_batch_norm_passes_gradcheck_in_train_mode(shape):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(shape, dtype=torch.float64, generator=g, requires_grad=True)
    w = (torch.rand(shape[1], dtype=torch.float64, generator=g) + 0.5).requires_grad_()
    b = torch.randn(shape[1], dtype=torch.float64, generator=g, requires_grad=True)
    rm, rv = torch.zeros(shape[1], dtype=torch.float64), torch.ones(shape[1], dtype=torch.float64)
    fn = lambda x, w, b: batch_norm(x, rm, rv, w, b, training=True, momentum=0.1, eps=1e-5)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, w, b))
    assert torch.autograd.gradgradcheck(fn, (x, w, b))


@pytest.mark.parametrize("ours_cls,torch_cls,shape", CASES, ids=CASE_IDS)
def test_float32_outputs_grads_and_running_stats_close_to_torch(ours_cls, torch_cls, shape):
    ours, ref = _pair(ours_cls, torch_cls, shape, dtype=torch.float32)
    tol = dict(atol=F32_ATOL, rtol=F32_RTOL)
    for x in _batches(shape, 3, dtype=torch.float32):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        ya, yb = ours(xa), ref(xb)
        torch.testing.assert_close(ya, yb, **tol)
        up = torch.ones_like(ya) + torch.arange(ya.numel(), dtype=ya.dtype).reshape(ya.shape) / ya.numel()
        ga = torch.autograd.grad(ya, [xa, ours.weight, ours.bias], up)
        gb = torch.autograd.grad(yb, [xb, ref.weight, ref.bias], up)
        torch.testing.assert_close(ga[0], gb[0], **tol)
        # weight/bias grads are sums of n = N*H*W terms of size ~1 that partly cancel: float32
        # summation-order error grows like n * machine eps.
        n = x.numel() // x.shape[1]
        sum_tol = dict(atol=max(F32_ATOL, n * torch.finfo(torch.float32).eps), rtol=F32_RTOL)
        for a, b in zip(ga[1:], gb[1:]):
            torch.testing.assert_close(a, b, **sum_tol)
    _assert_buffers_equal(ours, ref, **tol)
    ours.eval(), ref.eval()
    torch.testing.assert_close(ours(x), ref(x), **tol)



def test_float32_statistics_of_a_large_offset_stay_near_float64_like_torchs():
    """The variance is mean((x - mean)^2) in two passes (functional._centred_statistics): with an
    offset of 1000 against a spread of 1, float32 E[x^2] - mean^2 is off by about 10% here, while
    ours and torch's layer stay within float32 rounding of float64 torch."""
    x = torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(0)) + 1000.0
    ref64 = nn.BatchNorm2d(3, dtype=torch.float64)
    want = ref64(x.double())
    _, var = rnn.functional.batch_statistics(x)
    torch.testing.assert_close(var.double(), x.double().var((0, 2, 3), unbiased=False), atol=0, rtol=1e-5)
    for layer in (rnn.BatchNorm2d(3), nn.BatchNorm2d(3)):
        torch.testing.assert_close(layer(x).double(), want, atol=2e-4, rtol=0)
        torch.testing.assert_close(layer.running_var.double(), ref64.running_var, atol=0, rtol=1e-6)


# --- the norm= factory -------------------------------------------------------------------------


def test_group_norm_factory_uses_wu_and_he_32_groups_and_keeps_narrow_layers_grouped():
    wide = rnn.norm_layer("group")(256)
    assert isinstance(wide, nn.GroupNorm) and wide.num_groups == 32  # Wu & He 2018 default
    narrow = rnn.norm_layer("group")(16)
    assert isinstance(narrow, nn.GroupNorm) and narrow.num_channels == 16
    assert 16 % narrow.num_groups == 0
    assert 1 < narrow.num_groups < 16  # neither LayerNorm (1 group) nor InstanceNorm (16 groups)
    x = torch.randn(2, 16, 4, 4)
    torch.testing.assert_close(narrow(x), nn.functional.group_norm(x, narrow.num_groups, narrow.weight, narrow.bias))



def test_group_norm_factory_passes_eps_on_like_torchs_group_norm():
    layer = rnn.norm_layer("group")(16, eps=0.1)  # a variance of about 0.09: eps weighs
    ref = nn.GroupNorm(rnn.group_count(16), 16, eps=0.1)
    assert layer.eps == 0.1
    x = torch.randn(2, 16, 3, 3, generator=torch.Generator().manual_seed(0)) * 0.3
    torch.testing.assert_close(layer(x), ref(x))

def test_norm_factory_builds_torch_scratch_and_identity_layers():
    assert type(rnn.norm_layer("batch")(8)) is nn.BatchNorm2d
    assert type(rnn.norm_layer("batch", dim=1)(8)) is nn.BatchNorm1d
    assert type(rnn.norm_layer("scratch")(8)) is rnn.BatchNorm2d
    assert type(rnn.norm_layer("scratch", dim=1)(8)) is rnn.BatchNorm1d
    assert isinstance(rnn.norm_layer("none")(8), nn.Identity)
    assert rnn.norm_has_bias("none") and not rnn.norm_has_bias("batch") and not rnn.norm_has_bias("group")


def test_unknown_norm_error_lists_the_choices():
    with pytest.raises(ValueError) as err:
        rnn.norm_layer("layer")
    msg = str(err.value)
    assert "'layer'" in msg
    for choice in ("batch", "scratch", "group", "none"):  # the names DESIGN.md documents
        assert choice in msg
    with pytest.raises(ValueError, match="unknown norm 'Batch'"):  # a typo is not a norm without a bias
        rnn.norm_has_bias("Batch")


def test_scratch_bn_in_a_conv_net_trains_identically_to_torch_bn_float64():
    # End to end: the same tiny net with each BN, same init, 3 SGD steps -> same weights and stats.
    def net(norm):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(2, 4, 3, bias=False), rnn.norm_layer(norm)(4), nn.ReLU(),
                             nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).double()

    nets = [net("batch"), net("scratch")]
    opts = [torch.optim.SGD(n.parameters(), lr=0.1, momentum=0.9) for n in nets]
    for x in _batches((4, 2, 6, 6), 3):
        y = torch.tensor([0, 1, 2, 0])
        for n, o in zip(nets, opts):
            o.zero_grad()
            nn.functional.cross_entropy(n(x), y).backward()
            o.step()
    for (ka, a), (kb, b) in itertools.zip_longest(nets[0].state_dict().items(), nets[1].state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


# --- the three steps of the functional API -------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=["fp64", "bf16"])
def test_batch_statistics_normalize_and_update_each_match_torch_functional(dtype):
    # batch_statistics = torch.var_mean (biased) in float32 at least; update_running_stats = the
    # buffers torch.nn.functional.batch_norm leaves; normalize = its eval output with those stats.
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(5, 3, 4, 2, generator=g, dtype=torch.float64) * 3 + 1).to(dtype)
    w, b = torch.rand(3, generator=g, dtype=torch.float64) + 0.5, torch.randn(3, generator=g, dtype=torch.float64)
    stat = torch.promote_types(dtype, torch.float32)
    tol = dict(atol=1e-12, rtol=1e-12) if dtype == torch.float64 else dict(atol=1e-5, rtol=1e-5)

    mean, var = rnn.functional.batch_statistics(x)
    want_var, want_mean = torch.var_mean(x.to(stat), dim=(0, 2, 3), correction=0)
    assert mean.dtype == var.dtype == stat and mean.shape == var.shape == (3,)
    torch.testing.assert_close(mean, want_mean, **tol)
    torch.testing.assert_close(var, want_var, **tol)

    rm, rv = torch.full((3,), 0.5, dtype=stat), torch.full((3,), 2.0, dtype=stat)
    want_rm, want_rv = rm.clone(), rv.clone()
    nn.functional.batch_norm(x, want_rm, want_rv, training=True, momentum=0.3)
    rnn.functional.update_running_stats(rm, rv, mean, var, rnn.functional.values_per_channel(x), momentum=0.3)
    torch.testing.assert_close(rm, want_rm, **tol)
    torch.testing.assert_close(rv, want_rv, **tol)

    y = rnn.functional.normalize(x, mean, var, w.to(stat), b.to(stat), eps=1e-3)
    want = nn.functional.batch_norm(x, mean, var, w.to(stat), b.to(stat), training=False, eps=1e-3)
    assert y.dtype == want.dtype == dtype
    torch.testing.assert_close(y, want, **(tol if dtype == torch.float64 else {}))
    # no scale, no shift, the default eps: torch's 1e-5, as normalize's signature and docstring say
    torch.testing.assert_close(rnn.functional.normalize(x, mean, var), nn.functional.batch_norm(x, mean, var),
                               **(tol if dtype == torch.float64 else {}))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_normalize_of_low_precision_arguments_computes_in_float32(dtype):
    # x = w = 1 + 2^-7, b = -(1 + 2^-6), mean 0, var 1, eps 0: x * w = 1 + 2^-6 + 2^-14 rounds to
    # 1 + 2^-6 in bf16 and fp16 (2^-14 is under half an ulp at 1), so the exact answer 2^-14 (the
    # float64 recomputation, representable in both dtypes) survives only a float32 product.
    x = torch.full((2, 1), 1 + 2 ** -7, dtype=dtype)
    mean, var = torch.zeros(1, dtype=dtype), torch.ones(1, dtype=dtype)
    w, b = torch.full((1,), 1 + 2 ** -7, dtype=dtype), torch.full((1,), -(1 + 2 ** -6), dtype=dtype)
    want = (x.double() - mean.double()) / var.double().sqrt() * w.double() + b.double()
    assert want.tolist() == [[2 ** -14]] * 2
    y = rnn.functional.normalize(x, mean, var, w, b, eps=0.0)
    assert y.dtype == dtype and y.double().tolist() == want.tolist()
