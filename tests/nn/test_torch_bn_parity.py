"""PyTorch's own BatchNorm checks (torch's test/test_nn.py BN cases), run side by side on
``torch.nn.BatchNorm1d/2d`` and ``resnet_lab.nn.BatchNorm1d/2d``.

Each test builds the two layers with the same arguments and parameters, feeds both the same input
and compares outputs, gradients and buffers with ``torch.testing.assert_close``: to 1e-12 in
float64 (the two differ only in summation order), to one rounding step in bfloat16/float16. The
reference is always torch's layer (or, where torch raises, torch's exception), never our code.
A test's name names the case, so a future difference shows up by name.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

import resnet_lab.nn as rnn
from resnet_lab import create_model
from support import randomize_bn

TOL = dict(atol=1e-12, rtol=1e-12)

# (ours, torch's, input shape): the layouts torch's BN accepts.
LAYOUTS = {
    "1d-NC": (rnn.BatchNorm1d, nn.BatchNorm1d, (8, 4)),
    "1d-NCL": (rnn.BatchNorm1d, nn.BatchNorm1d, (4, 3, 5)),
    "2d": (rnn.BatchNorm2d, nn.BatchNorm2d, (3, 4, 5, 3)),
}
layouts = pytest.mark.parametrize("layout", list(LAYOUTS))
dims = pytest.mark.parametrize("layout", ["1d-NCL", "2d"])


def _pair(layout: str, dtype: torch.dtype = torch.float64, **kw) -> tuple[nn.Module, nn.Module]:
    """(ours, torch's) with the same arguments and the same non-trivial gamma/beta."""
    ours_cls, torch_cls, shape = LAYOUTS[layout]
    ours, ref = ours_cls(shape[1], dtype=dtype, **kw), torch_cls(shape[1], dtype=dtype, **kw)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name in ("weight", "bias"):
            if getattr(ref, name) is not None:
                value = torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5
                getattr(ref, name).copy_(value), getattr(ours, name).copy_(value)
    return ours, ref


def _input(layout: str, seed: int = 1, dtype: torch.dtype = torch.float64, step: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + step)
    # scale and shift change per step so the running statistics have something to track
    return (torch.randn(LAYOUTS[layout][2], generator=g, dtype=torch.float64) * (1 + step) + 0.5 * step).to(dtype)


def _outputs_and_grads(bn: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """[output, d/dx, d/dweight, d/dbias] (those that exist) for a fixed non-uniform upstream."""
    x = x.detach().clone().requires_grad_()
    y = bn(x)
    upstream = torch.linspace(-1, 2, y.numel(), dtype=torch.float64).reshape(y.shape).to(y.dtype)
    wrt = [x] + [p for p in (bn.weight, bn.bias) if p is not None]
    return [y.detach()] + list(torch.autograd.grad(y, wrt, upstream))


def _assert_all_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    """Tensor by tensor: same dtype; integers equal; float64 to ``TOL``; bfloat16/float16 to one
    rounding step at the tensor's scale (both compute in float32 and round once at the end)."""
    assert len(got) == len(want)
    assert [t.dtype for t in got] == [t.dtype for t in want]
    for a, b in zip(got, want):
        if not b.is_floating_point():
            assert torch.equal(a, b)
        elif b.dtype in (torch.bfloat16, torch.float16):
            torch.testing.assert_close(a, b, atol=torch.finfo(b.dtype).eps * float(b.detach().abs().max()), rtol=0)
        else:
            torch.testing.assert_close(a, b, **TOL)


def _assert_same_step(ours: nn.Module, ref: nn.Module, x: torch.Tensor) -> None:
    """Same output and gradients (input, weight, bias) for input ``x``."""
    _assert_all_close(_outputs_and_grads(ours, x), _outputs_and_grads(ref, x))


def _assert_same_state(ours: nn.Module, ref: nn.Module, **tol) -> None:
    """Same state-dict keys in the same order, same values (num_batches_tracked exactly)."""
    a, b = ours.state_dict(), ref.state_dict()
    assert list(a) == list(b)
    for key in b:
        if key.endswith("num_batches_tracked"):
            assert a[key].dtype == b[key].dtype == torch.long and a[key].item() == b[key].item()
        else:
            torch.testing.assert_close(a[key], b[key], **(tol or TOL))


def _raised(fn) -> BaseException:
    with pytest.raises(Exception) as info:
        fn()
    return info.value


# --- modes and running statistics ------------------------------------------------------------


@layouts
def test_eval_mode_normalizes_with_running_stats_like_torch(layout):
    ours, ref = _pair(layout)
    g = torch.Generator().manual_seed(3)
    stats = (torch.randn(ours.num_features, generator=g, dtype=torch.float64),
             torch.rand(ours.num_features, generator=g, dtype=torch.float64) + 0.5)
    for bn in (ours, ref):
        bn.running_mean.copy_(stats[0]), bn.running_var.copy_(stats[1])
        bn.eval()
    _assert_same_step(ours, ref, _input(layout))
    _assert_same_state(ours, ref)  # eval leaves buffers and counter alone


@layouts
def test_update_stats_running_mean_and_var_after_several_steps_like_torch(layout):
    ours, ref = _pair(layout, momentum=0.3)
    for step in range(4):
        _assert_same_step(ours, ref, _input(layout, step=step))
    _assert_same_state(ours, ref)
    assert ours.num_batches_tracked.item() == 4
    ours.eval(), ref.eval()
    _assert_same_step(ours, ref, _input(layout, seed=9))


@layouts
def test_simple_average_momentum_none_is_the_cumulative_mean_like_torch(layout):
    ours, ref = _pair(layout, momentum=None)
    for step in range(4):
        _assert_same_step(ours, ref, _input(layout, step=step))
    _assert_same_state(ours, ref)
    ours.eval(), ref.eval()
    _assert_same_step(ours, ref, _input(layout, seed=9))


@pytest.mark.parametrize("momentum", [None, 0.3], ids=["cumulative", "m0.3"])
def test_layer_whose_batch_counter_was_removed_updates_its_statistics_like_torch(momentum):
    # num_batches_tracked set to None (code that strips the counter): torch's cumulative average
    # has no count to divide by and keeps the statistics (factor 0); a fixed momentum still applies.
    ours, ref = (randomize_bn(bn) for bn in _pair("2d", momentum=momentum))
    for bn in (ours, ref):
        bn.num_batches_tracked = None
    for step in range(2):
        _assert_same_step(ours, ref, _input("2d", step=step))
    _assert_same_state(ours, ref)
    assert ours.num_batches_tracked is None


@layouts
def test_affine_false_has_no_parameters_like_torch(layout):
    ours, ref = _pair(layout, affine=False)
    assert ours.weight is None and ours.bias is None and list(ours.parameters()) == []
    for _ in ("train", "eval"):
        _assert_same_step(ours, ref, _input(layout))
        ours.eval(), ref.eval()
    _assert_same_state(ours, ref)


@layouts
def test_track_running_stats_false_from_the_start_uses_batch_stats_in_train_and_eval_like_torch(layout):
    ours, ref = _pair(layout, track_running_stats=False)
    assert ours.running_mean is None and ours.running_var is None and ours.num_batches_tracked is None
    for _ in ("train", "eval"):
        _assert_same_step(ours, ref, _input(layout))
        ours.eval(), ref.eval()
    _assert_same_state(ours, ref)


@layouts
def test_track_running_stats_switched_off_later_freezes_the_buffers_like_torch(layout):
    # torch's test_batchnorm_buffer_update_when_stats_are_not_tracked, extended to eval
    ours, ref = _pair(layout)
    for step in range(2):
        _assert_same_step(ours, ref, _input(layout, step=step))
    frozen = copy.deepcopy(ours.state_dict())
    ours.track_running_stats = ref.track_running_stats = False
    for step in range(2, 4):  # training normalizes with batch statistics, updates nothing
        _assert_same_step(ours, ref, _input(layout, step=step))
    _assert_same_state(ours, ref)
    assert torch.equal(ours.running_mean, frozen["running_mean"])
    assert ours.num_batches_tracked.item() == frozen["num_batches_tracked"].item() == 2
    ours.eval(), ref.eval()  # eval still normalizes with the (frozen) buffers
    _assert_same_step(ours, ref, _input(layout, seed=9))


@pytest.mark.parametrize("layout,shape", [("1d-NC", (1, 4)), ("1d-NCL", (1, 3, 1)), ("2d", (1, 4, 1, 1))],
                         ids=["1d-NC", "1d-NCL", "2d"])
@pytest.mark.parametrize("track", [True, False], ids=["tracked", "untracked"])
def test_fewer_than_two_values_per_channel_raises_the_torch_error_in_training(layout, shape, track):
    ours_cls, torch_cls, _ = LAYOUTS[layout]
    ours, ref = ours_cls(shape[1], track_running_stats=track), torch_cls(shape[1], track_running_stats=track)
    x = torch.randn(shape)
    want, got = _raised(lambda: ref(x)), _raised(lambda: ours(x))
    assert type(got) is type(want) is ValueError and str(got) == str(want)
    ours.eval(), ref.eval()
    if track:  # eval with running statistics needs no batch statistics
        torch.testing.assert_close(ours(x), ref(x))
    else:  # without buffers eval uses batch statistics too, so it raises too
        assert str(_raised(lambda: ours(x))) == str(_raised(lambda: ref(x)))


@pytest.mark.parametrize("layout,shape", [("1d-NCL", (1, 3, 5)), ("2d", (1, 4, 5, 3))], ids=["1d-NCL", "2d"])
def test_one_sample_with_several_values_per_channel_trains_like_torch(layout, shape):
    """torch counts the values per channel (N times the spatial sizes), not the samples: one 5x3
    image is a batch of 15 values, normalized and folded into the running variance with n - 1 = 14."""
    ours, ref = _pair(layout, momentum=0.3)
    _assert_same_step(ours, ref, torch.randn(shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    _assert_same_state(ours, ref)


@pytest.mark.parametrize("layout,bad_shape", [("1d-NC", (2, 3, 4, 4)), ("1d-NC", (3,)), ("2d", (2, 4, 3))],
                         ids=["1d-got-4d", "1d-got-1d", "2d-got-3d"])
def test_wrong_number_of_dims_raises_the_torch_error(layout, bad_shape):
    ours_cls, torch_cls, shape = LAYOUTS[layout]
    x = torch.randn(bad_shape)
    want, got = _raised(lambda: torch_cls(shape[1])(x)), _raised(lambda: ours_cls(shape[1])(x))
    assert type(got) is type(want) is ValueError and str(got) == str(want)


# --- eps -------------------------------------------------------------------------------------


@pytest.mark.parametrize("eps", [1e-5, 1e-3, 0.5])
def test_eps_values_give_torch_outputs(eps):
    ours, ref = _pair("2d", eps=eps)
    x = _input("2d") * 1e-2  # small variance, so eps matters
    _assert_same_step(ours, ref, x)
    ours.eval(), ref.eval()
    _assert_same_step(ours, ref, x)


def test_eps_zero_raises_in_training_and_is_allowed_in_eval_like_torch():
    ours, ref = _pair("2d", eps=0.0)  # torch checks eps at forward, not at construction
    x = _input("2d")
    want, got = _raised(lambda: ref(x)), _raised(lambda: ours(x))
    assert type(got) is type(want) is ValueError and str(got) == str(want)
    ours.eval(), ref.eval()
    _assert_same_step(ours, ref, x)


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_negative_eps_raises_like_torch(mode):
    ours, ref = _pair("2d", eps=-1.0)
    getattr(ours, mode)(), getattr(ref, mode)()
    x = _input("2d")
    want, got = _raised(lambda: ref(x)), _raised(lambda: ours(x))
    assert type(got) is type(want) is ValueError and str(got) == str(want)


# --- state dicts -----------------------------------------------------------------------------


@layouts
def test_state_dicts_move_between_torch_and_ours_both_ways(layout):
    trained_ours, trained_ref = _pair(layout, momentum=0.2)
    for step in range(3):
        trained_ours(_input(layout, step=step)), trained_ref(_input(layout, step=step))
    fresh_ours, fresh_ref = _pair(layout)
    with torch.no_grad():
        fresh_ours.weight.zero_(), fresh_ref.weight.zero_()
    fresh_ours.load_state_dict(trained_ref.state_dict(), strict=True)  # torch -> ours
    fresh_ref.load_state_dict(trained_ours.state_dict(), strict=True)  # ours -> torch
    _assert_same_state(fresh_ours, trained_ref)
    _assert_same_state(trained_ours, fresh_ref)
    assert trained_ours.state_dict()._metadata[""]["version"] == trained_ref.state_dict()._metadata[""]["version"]


def _without_counter(version: int | None) -> OrderedDict:
    sd = nn.BatchNorm2d(4, dtype=torch.float64).state_dict()
    del sd["num_batches_tracked"]
    if version is None:
        del sd._metadata
    else:
        sd._metadata[""]["version"] = version
    return sd


@pytest.mark.parametrize("version", [None, 1], ids=["no-metadata", "version-1"])
def test_old_state_dict_without_num_batches_tracked_loads_strictly_and_keeps_the_counter_like_torch(version):
    ours, ref = _pair("2d")
    ours.num_batches_tracked.fill_(7), ref.num_batches_tracked.fill_(7)
    want = ref.load_state_dict(_without_counter(version), strict=True)
    got = ours.load_state_dict(_without_counter(version), strict=True)
    assert got == want
    _assert_same_state(ours, ref)
    assert ours.num_batches_tracked.item() == 7


def test_old_state_dict_loads_into_a_layer_built_on_meta_with_a_real_counter_like_torch():
    """A layer built on the meta device (no memory) and loaded with assign=True: an old state dict
    has no counter, so it becomes a real 0, not the meta placeholder, as in torch."""
    with torch.device("meta"):
        ours, ref = rnn.BatchNorm2d(4, dtype=torch.float64), nn.BatchNorm2d(4, dtype=torch.float64)
    for bn in (ours, ref):
        bn.load_state_dict(_without_counter(1), strict=True, assign=True)
    assert ours.num_batches_tracked.device == ref.num_batches_tracked.device == torch.device("cpu")
    _assert_same_state(ours, ref)

def test_state_dict_without_metadata_loads_its_counter_like_torch():
    """A plain dict (``{k: v for ...}``, as when stripping DDP's ``module.`` prefix) loses the
    version metadata but keeps num_batches_tracked: the counter it holds loads, as in torch (it
    weighs the next step of the cumulative average, momentum None)."""
    trained = randomize_bn(nn.BatchNorm2d(4, dtype=torch.float64))
    ours, ref = _pair("2d", momentum=None)
    for bn in (ours, ref):
        bn.load_state_dict(dict(trained.state_dict()), strict=True)
    _assert_same_state(ours, ref)
    _assert_same_step(ours, ref, _input("2d"))
    _assert_same_state(ours, ref)


def test_version_2_state_dict_without_num_batches_tracked_is_a_missing_key_like_torch():
    ours, ref = _pair("2d")
    want, got = _raised(lambda: ref.load_state_dict(_without_counter(2))), _raised(
        lambda: ours.load_state_dict(_without_counter(2)))
    assert type(got) is type(want) is RuntimeError and "num_batches_tracked" in str(got)
    want = ref.load_state_dict(_without_counter(2), strict=False)
    got = ours.load_state_dict(_without_counter(2), strict=False)
    assert got.missing_keys == want.missing_keys == ["num_batches_tracked"]
    assert got.unexpected_keys == want.unexpected_keys == []


def test_untracked_layer_rejects_running_stats_keys_like_torch():
    full = nn.BatchNorm2d(4, dtype=torch.float64).state_dict()
    ours, ref = _pair("2d", track_running_stats=False)
    assert str(_raised(lambda: ours.load_state_dict(full))) == str(_raised(lambda: ref.load_state_dict(full)))
    got, want = ours.load_state_dict(full, strict=False), ref.load_state_dict(full, strict=False)
    assert got == want


def test_untracked_layer_loads_an_old_state_dict_strictly_like_torch():
    # no version metadata (an old checkpoint, or a dict rebuilt key by key): only a layer with
    # running statistics gets a counter filled in; an untracked one has none to expect
    trained = nn.BatchNorm2d(4, dtype=torch.float64, track_running_stats=False)
    nn.init.uniform_(trained.weight, 2.0, 3.0), nn.init.uniform_(trained.bias, -1.0, 1.0)
    old = dict(trained.state_dict())
    ours, ref = _pair("2d", track_running_stats=False)
    assert ours.load_state_dict(old) == ref.load_state_dict(old)
    _assert_same_state(ours, ref)


# --- memory layouts --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_channels_last_input_gives_torch_values_and_layout(mode):
    ours, ref = _pair("2d")
    for step in range(2):
        ours(_input("2d", step=step)), ref(_input("2d", step=step))
    getattr(ours, mode)(), getattr(ref, mode)()
    x = _input("2d", seed=5).to(memory_format=torch.channels_last)
    got, want = _outputs_and_grads(ours, x), _outputs_and_grads(ref, x)
    _assert_all_close(got, want)
    # The output keeps the input's layout, as torch's; in training so does the input's gradient
    # (our hand-written backward). In eval ours follows the upstream gradient's layout (contiguous here).
    kept = 2 if mode == "train" else 1
    assert all(t.is_contiguous(memory_format=torch.channels_last) for t in got[:kept] + want[:kept])
    _assert_same_state(ours, ref)


@pytest.mark.parametrize(
    "layout,view",
    [("1d-NC", lambda t: t.t().contiguous().t()),  # (N, C) with stride (1, N)
     ("1d-NCL", lambda t: t.transpose(0, 2).contiguous().transpose(0, 2)),
     ("2d", lambda t: t.transpose(2, 3).contiguous().transpose(2, 3)),
     ("2d", lambda t: torch.cat([t, t], dim=3)[..., ::2])],  # strided slice
    ids=["1d-NC-transposed", "1d-NCL-transposed", "2d-transposed", "2d-sliced"],
)
def test_non_contiguous_input_gives_torch_values(layout, view):
    ours, ref = _pair(layout)
    x = view(_input(layout))
    assert not x.is_contiguous()
    _assert_same_step(ours, ref, x)
    _assert_same_state(ours, ref)
    ours.eval(), ref.eval()
    _assert_same_step(ours, ref, x)


# --- dtypes ----------------------------------------------------------------------------------


@dims
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_low_precision_input_with_float32_module_returns_the_input_dtype_like_torch(layout, dtype):
    ours, ref = _pair(layout, dtype=torch.float32)
    # Outputs and input grads in the input's dtype; float32 weight grads and running stats agree
    # to float32 summation order.
    f32 = dict(atol=1e-5, rtol=1e-5)
    for step in range(3):
        x = _input(layout, dtype=dtype, step=step)
        got, want = _outputs_and_grads(ours, x), _outputs_and_grads(ref, x)
        assert [t.dtype for t in want] == [dtype, dtype, torch.float32, torch.float32]
        _assert_all_close(got[:2], want[:2])
        for a, b in zip(got[2:], want[2:]):
            torch.testing.assert_close(a, b, **f32)
    _assert_same_state(ours, ref, **f32)
    assert ours.running_mean.dtype == torch.float32
    ours.eval(), ref.eval()
    x = _input(layout, dtype=dtype, seed=9)
    _assert_all_close([ours(x)], [ref(x)])


@dims
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64], ids=["bf16", "fp16", "fp64"])
def test_module_and_input_in_the_same_dtype_match_torch(layout, dtype):
    ours, ref = _pair(layout, dtype=dtype)
    for step in range(2):
        x = _input(layout, dtype=dtype, step=step)
        _assert_same_step(ours, ref, x)
        _assert_all_close(list(ours.state_dict().values()), list(ref.state_dict().values()))
    ours.eval(), ref.eval()
    _assert_same_step(ours, ref, _input(layout, dtype=dtype, seed=9))


# low-precision input takes float32 parameters only: not float64 ones, nor the other 16-bit type
@pytest.mark.parametrize("input_dtype,module_dtype", [(torch.float64, torch.float32), (torch.float32, torch.bfloat16),
                                                      (torch.float32, torch.float64), (torch.bfloat16, torch.float64),
                                                      (torch.float16, torch.bfloat16)],
                         ids=["fp64-into-fp32", "fp32-into-bf16", "fp32-into-fp64", "bf16-into-fp64", "fp16-into-bf16"])
@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no-affine"])  # no-affine: the buffers alone differ
def test_other_dtype_mixes_raise_like_torch(input_dtype, module_dtype, mode, affine):
    ours, ref = _pair("2d", dtype=module_dtype, affine=affine)
    getattr(ours, mode)(), getattr(ref, mode)()
    x = _input("2d", dtype=input_dtype)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    counted = int(ref.num_batches_tracked)
    want, got = _raised(lambda: ref(x)), _raised(lambda: ours(x))
    assert type(got) is type(want) is RuntimeError
    # the one deliberate difference: torch counts the batch before its checks, ours only a batch it
    # took (a refused batch skewed momentum=None's average); the buffers are torch's either way
    assert int(ref.num_batches_tracked) == counted + (mode == "train")
    assert all(torch.equal(v, before[k]) for k, v in ours.state_dict().items())
    ref.num_batches_tracked.fill_(counted)
    _assert_same_state(ours, ref)


@pytest.mark.parametrize("input_dtype", [torch.bfloat16, torch.float32], ids=["bf16-input", "fp32-input"])
def test_under_cpu_autocast_output_dtype_and_values_match_torch(input_dtype):
    ours, ref = _pair("2d", dtype=torch.float32)
    x = _input("2d", dtype=input_dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y_ours, y_ref = ours(x), ref(x)
    assert y_ours.dtype == y_ref.dtype == input_dtype
    if input_dtype == torch.float32:
        torch.testing.assert_close(y_ours, y_ref, atol=1e-5, rtol=1e-5)
    else:
        _assert_all_close([y_ours], [y_ref])
    _assert_same_state(ours, ref, atol=1e-6, rtol=1e-6)


# --- gradients -------------------------------------------------------------------------------


@dims
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_double_backward_passes_gradgradcheck_and_equals_torch(layout, mode):
    ours, ref = _pair(layout, track_running_stats=False) if mode == "train" else _pair(layout)
    getattr(ours, mode)(), getattr(ref, mode)()
    shape = LAYOUTS[layout][2]
    x = _input(layout).requires_grad_()

    def ours_fn(x, w, b):  # the parameters as inputs, for gradgradcheck
        return torch.func.functional_call(ours, {"weight": w, "bias": b}, (x,))

    # ours against finite differences of its own gradient (float64)...
    assert torch.autograd.gradgradcheck(ours_fn, (x, ours.weight, ours.bias))

    # ...and its second derivatives against torch's
    def grads_of_grads(bn):
        xx = x.detach().clone().requires_grad_()
        y = bn(xx)
        up = torch.linspace(-1, 2, y.numel(), dtype=torch.float64).reshape(shape)
        gx, gw = torch.autograd.grad(y, [xx, bn.weight], up, create_graph=True)
        return torch.autograd.grad((gx ** 2).sum() + (gw ** 2).sum(), [xx, bn.weight, bn.bias], allow_unused=True)

    for a, b in zip(grads_of_grads(ours), grads_of_grads(ref)):
        if b is None:
            assert a is None or torch.count_nonzero(a) == 0
        else:
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@layouts
@pytest.mark.parametrize("affine", [True, False])
def test_forward_mode_jvp_and_jacfwd_in_training_equal_torch(layout, affine):
    # torch.func's transforms refuse a layer that updates its buffers (torch's own BN too): the
    # functorch way is track_running_stats=False, which normalizes with batch statistics.
    ours, ref = _pair(layout, track_running_stats=False, affine=affine)
    x = _input(layout)
    tangent = _input(layout, seed=7)
    (y_o, t_o), (y_r, t_r) = torch.func.jvp(ours, (x,), (tangent,)), torch.func.jvp(ref, (x,), (tangent,))
    _assert_all_close([y_o, t_o], [y_r, t_r])
    _assert_all_close([torch.func.jacfwd(ours)(x)], [torch.func.jacfwd(ref)(x)])
    # forward over reverse: the Hessian of a scalar of the output
    hess = lambda bn: torch.func.hessian(lambda x: (bn(x) ** 3).sum())(x)  # noqa: E731
    torch.testing.assert_close(hess(ours), hess(ref), atol=1e-10, rtol=1e-10)
    if affine:  # tangents of gamma and beta
        params = {k: v.detach() for k, v in ref.named_parameters()}
        jac = lambda bn: torch.func.jacfwd(lambda p: torch.func.functional_call(bn, p, (x,)))(params)  # noqa: E731
        got, want = jac(ours), jac(ref)
        _assert_all_close([got[k] for k in want], [want[k] for k in want])


def test_forward_mode_jvp_normalizes_with_the_layers_eps_like_torch():
    # eps 0.5 against a batch variance of about 1: a tangent taken with the default eps is off
    ours, ref = _pair("2d", track_running_stats=False, eps=0.5)
    x, tangent = _input("2d"), _input("2d", seed=7)
    _assert_all_close(*[list(torch.func.jvp(bn, (x,), (tangent,))) for bn in (ours, ref)])


@layouts
def test_forward_ad_dual_tensor_updates_running_stats_like_torch(layout):
    # torch.autograd.forward_ad (not torch.func) allows the buffer update
    import torch.autograd.forward_ad as fwad

    ours, ref = _pair(layout)
    x, tangent = _input(layout), _input(layout, seed=7)
    got = []
    for bn in (ours, ref):
        with fwad.dual_level():
            y = bn(fwad.make_dual(x, tangent))
            got.append([fwad.unpack_dual(y).primal.clone(), fwad.unpack_dual(y).tangent.clone()])
    _assert_all_close(*got)
    _assert_same_state(ours, ref)


@layouts
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_vmap_normalizes_each_slice_as_its_own_batch_like_torch(layout, mode):
    ours, ref = _pair(layout, track_running_stats=False)
    getattr(ours, mode)(), getattr(ref, mode)()
    xs = torch.stack([_input(layout, step=s) for s in range(3)])  # three batches, different scales
    _assert_all_close([torch.func.vmap(ours)(xs)], [torch.func.vmap(ref)(xs)])


# --- bias=False, empty batches, resets, repr -------------------------------------------------


@layouts
def test_bias_false_keeps_weight_and_has_no_bias_like_torch(layout):
    ours, ref = _pair(layout, bias=False)
    assert ours.bias is None and ours.weight is not None
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()] == ["weight"]
    _assert_same_step(ours, ref, _input(layout))
    _assert_same_state(ours, ref)
    ours.eval(), ref.eval()
    _assert_same_step(ours, ref, _input(layout, seed=9))
    assert repr(ours) == repr(ref)


@pytest.mark.parametrize("layout,shape", [("1d-NC", (0, 4)), ("1d-NCL", (0, 3, 5)), ("2d", (0, 4, 5, 3))],
                         ids=["1d-NC", "1d-NCL", "2d"])
def test_empty_batch_gives_empty_output_and_counts_without_updating_stats_like_torch(layout, shape):
    # non-trivial running statistics: the defaults (mean 0) hide a momentum decay of the mean
    ours, ref = (randomize_bn(bn) for bn in _pair(layout))
    x = torch.zeros(shape, dtype=torch.float64)
    _assert_same_step(ours, ref, x)
    _assert_same_state(ours, ref)
    assert ours.num_batches_tracked.item() == 1235 and not ours.running_mean.isnan().any()
    ours.eval(), ref.eval()
    _assert_same_step(ours, ref, x)


def test_reset_running_stats_and_reset_parameters_like_torch():
    ours, ref = _pair("2d")
    for step in range(2):
        ours(_input("2d", step=step)), ref(_input("2d", step=step))
    ours.reset_running_stats(), ref.reset_running_stats()
    _assert_same_state(ours, ref)
    assert ours.num_batches_tracked.item() == 0 and torch.equal(ours.running_var, torch.ones(4, dtype=torch.float64))
    ours.reset_parameters(), ref.reset_parameters()
    _assert_same_state(ours, ref)
    plain, plain_ref = _pair("2d", affine=False)  # statistics without parameters reset all the same
    plain(_input("2d")), plain_ref(_input("2d"))
    plain.reset_running_stats(), plain_ref.reset_running_stats()
    _assert_same_state(plain, plain_ref)


@pytest.mark.parametrize("kwargs", [{}, {"eps": 1e-3, "momentum": None}, {"affine": False}, {"bias": False},
                                    {"track_running_stats": False}],
                         ids=["default", "eps-momentum-none", "affine-false", "bias-false", "untracked"])
@pytest.mark.parametrize("layout", ["1d-NC", "2d"])
def test_repr_and_extra_repr_equal_torch(layout, kwargs):
    ours, ref = _pair(layout, **kwargs)
    assert repr(ours) == repr(ref)
    assert ours.extra_repr() == ref.extra_repr()


# --- graph capture: torch.fx (torchvision feature extraction) and TorchScript ------------------


def test_create_feature_extractor_traces_a_scratch_bn_resnet_and_matches_its_layer2_output():
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, small_input=True, norm="scratch")
    extractor = create_feature_extractor(copy.deepcopy(model), {"layer2": "f"})
    seen = {}
    model.layer2.register_forward_hook(lambda module, inputs, out: seen.update(f=out))
    x = torch.randn(4, 3, 16, 16)
    for mode in ("train", "eval"):  # train: batch statistics, running stats updated in both
        getattr(model, mode)(), getattr(extractor, mode)()
        got = extractor(x)["f"]
        model(x)
        torch.testing.assert_close(got, seen["f"], atol=0, rtol=0)
    assert model.bn1.num_batches_tracked.item() == extractor.bn1.num_batches_tracked.item() == 1
    torch.testing.assert_close(extractor.bn1.running_mean, model.bn1.running_mean, atol=0, rtol=0)


@pytest.mark.parametrize("traced_in", ["train", "eval"])
def test_fx_graph_follows_the_mode_it_runs_in_not_the_one_it_was_traced_in(traced_in):
    # torch's BN is an fx leaf, so its graph reads .training when it runs; ours must too.
    graphs = {}
    for name, cls in (("ours", rnn.BatchNorm2d), ("torch", nn.BatchNorm2d)):
        torch.manual_seed(0)
        layer = cls(3)
        with torch.no_grad():
            layer.running_mean.fill_(0.5), layer.running_var.fill_(4.0)
        getattr(layer, traced_in)()
        graphs[name] = torch.fx.symbolic_trace(nn.Sequential(nn.Identity(), layer))
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(1)) * 2 + 1
    for mode in ("eval", "train", "eval"):
        outs = {name: getattr(g, mode)()(x) for name, g in graphs.items()}
        torch.testing.assert_close(outs["ours"], outs["torch"], atol=1e-5, rtol=1e-5)
    ours, ref = graphs["ours"].get_submodule("1"), graphs["torch"].get_submodule("1")
    assert ours.num_batches_tracked.item() == ref.num_batches_tracked.item() == 1
    torch.testing.assert_close(ours.running_var, ref.running_var, atol=1e-6, rtol=1e-6)


def test_symbolic_trace_records_functional_batch_norm_as_one_call_that_gives_torchs_values():
    # The module docstring's contract: batch_norm dispatches __torch_function__ as torch's does, so
    # fx records one call instead of tracing into its shape checks (which a Proxy cannot pass).
    def step(x, mean, var, weight, bias):
        return rnn.functional.batch_norm(x, mean, var, weight, bias, training=True, momentum=0.3, eps=1e-3)

    traced = torch.fx.symbolic_trace(step)
    assert [n.target for n in traced.graph.nodes if n.op == "call_function"] == [rnn.functional.batch_norm]
    ours, ref = (randomize_bn(bn) for bn in _pair("2d"))
    x = _input("2d")
    got = traced(x, ours.running_mean, ours.running_var, ours.weight, ours.bias)
    want = nn.functional.batch_norm(x, ref.running_mean, ref.running_var, ref.weight, ref.bias, training=True,
                                    momentum=0.3, eps=1e-3)
    torch.testing.assert_close(got, want, **TOL)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, **TOL)
    torch.testing.assert_close(ours.running_var, ref.running_var, **TOL)


def test_fx_traced_scratch_bn_keeps_its_input_checks():
    traced = torch.fx.symbolic_trace(nn.Sequential(nn.Identity(), rnn.BatchNorm2d(4)))
    with pytest.raises(ValueError, match="expected 4D input"):
        traced(torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="3 channels"):
        traced(torch.randn(2, 3, 3, 3))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"track_running_stats": False}, {"affine": False}],
                         ids=["default", "momentum-none", "untracked", "affine-false"])
def test_torch_jit_script_gives_the_eager_outputs_and_buffers_in_train_and_eval(kwargs):
    eager, ref = rnn.BatchNorm2d(8, **kwargs), nn.BatchNorm2d(8, **kwargs)
    scripted = torch.jit.script(copy.deepcopy(eager))
    g = torch.Generator().manual_seed(0)
    for mode in ("train", "train", "eval"):
        for bn in (eager, scripted, ref):
            getattr(bn, mode)()
        x = torch.randn(4, 8, 3, 3, generator=g) * 2 + 1
        y = scripted(x)
        torch.testing.assert_close(y, eager(x), atol=0, rtol=0)  # the same computation, compiled
        torch.testing.assert_close(y, ref(x), atol=1e-5, rtol=1e-5)  # float32 summation order
    assert list(scripted.state_dict()) == list(eager.state_dict())
    for a, b in zip(scripted.state_dict().values(), eager.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
