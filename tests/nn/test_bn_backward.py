"""The hand-written batch-norm backward (``resnet_lab.nn.functional._BatchNormTrain``).

Checked three independent ways: against finite differences (``gradcheck`` and ``gradgradcheck`` in
float64), against ``torch.nn.BatchNorm1d/2d`` (one native kernel), and against autograd run on
the batch-norm formula written out in plain tensor ops here (``_autograd_reference``), first and
second derivatives.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

import resnet_lab.nn as rnn
from resnet_lab.nn.functional import _BatchNormTrain

EPS = 1e-5
# Differences from torch are summation order only: a few units in the last place of the tensor's scale.
TOL = {torch.float32: 1e-6, torch.float64: 1e-13}

# (ours, torch's, input shape): (N, C), (N, C, L), (N, C, H, W)
LAYOUTS = {
    "1d-NC": (rnn.BatchNorm1d, nn.BatchNorm1d, (8, 4)),
    "1d-NCL": (rnn.BatchNorm1d, nn.BatchNorm1d, (4, 3, 5)),
    "2d": (rnn.BatchNorm2d, nn.BatchNorm2d, (6, 4, 5, 3)),
}
layouts = pytest.mark.parametrize("layout", list(LAYOUTS))
# which of gamma and beta the layer has, as the module arguments of torch's layers
AFFINE = {"affine": {}, "no-affine": {"affine": False}, "no-bias": {"bias": False}}
affines = pytest.mark.parametrize("affine", list(AFFINE))
dtypes = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])


def _autograd_reference(x: Tensor, weight: Tensor | None, bias: Tensor | None, eps: float = EPS) -> Tensor:
    """Batch norm with batch statistics (Ioffe & Szegedy 2015, Algorithm 1) in plain differentiable
    ops, written independently of the library, for autograd to differentiate."""
    dims = [0] + list(range(2, x.dim()))
    mean = x.mean(dims, keepdim=True)  # (1, C, 1, 1)
    var = x.var(dims, unbiased=False, keepdim=True)  # (1, C, 1, 1)
    y = (x - mean) / torch.sqrt(var + eps)
    shape = mean.shape
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def _inputs(layout: str, affine: str, dtype: torch.dtype, seed: int = 0) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """(x, weight, bias) leaves requiring grad: x off-centre and scaled, gamma and beta non-trivial."""
    shape, kw = LAYOUTS[layout][2], AFFINE[affine]
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 2
    w = torch.rand(c, generator=g, dtype=torch.float64) + 0.5 if kw.get("affine", True) else None
    b = torch.randn(c, generator=g, dtype=torch.float64) if kw.get("affine", True) and kw.get("bias", True) else None
    return tuple(None if t is None else t.to(dtype).requires_grad_() for t in (x, w, b))


def _upstream(y: Tensor, seed: int = 1) -> Tensor:
    return torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(y.dtype)


def _grads(y: Tensor, wrt: list[Tensor | None], **kw) -> list[Tensor]:
    """d(y . upstream)/d each tensor of ``wrt`` that is not None."""
    return list(torch.autograd.grad(y, [t for t in wrt if t is not None], _upstream(y), **kw))


def _assert_close(got: list[Tensor], want: list[Tensor], dtype: torch.dtype) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.dtype == b.dtype == dtype
        scale = float(b.abs().max())
        torch.testing.assert_close(a, b, atol=TOL[dtype] * scale, rtol=TOL[dtype])


def _function_output(x: Tensor, w: Tensor | None, b: Tensor | None) -> Tensor:
    return _BatchNormTrain.apply(x, w, b, EPS)[0]


@layouts
@affines
def test_backward_passes_gradcheck_against_finite_differences_float64(layout, affine):
    x, w, b = _inputs(layout, affine, torch.float64)
    inputs = [t for t in (x, w, b) if t is not None]
    assert torch.autograd.gradcheck(lambda *args: _call(args, w, b), inputs)


@layouts
@affines
def test_double_backward_passes_gradgradcheck_against_finite_differences_float64(layout, affine):
    x, w, b = _inputs(layout, affine, torch.float64)
    inputs = [t for t in (x, w, b) if t is not None]
    assert torch.autograd.gradgradcheck(lambda *args: _call(args, w, b), inputs)


def _call(args: tuple[Tensor, ...], w: Tensor | None, b: Tensor | None) -> Tensor:
    """The Function's output, with ``args`` standing for x and whichever of weight and bias exist
    (gradcheck perturbs the tensors it is given)."""
    it = iter(args)
    x = next(it)
    return _function_output(x, None if w is None else next(it), None if b is None else next(it))


@layouts
@affines
@dtypes
def test_input_weight_and_bias_gradients_equal_torch_batchnorm(layout, affine, dtype):
    ours_cls, torch_cls, shape = LAYOUTS[layout]
    x, w, b = _inputs(layout, affine, dtype)
    ours, ref = ours_cls(shape[1], dtype=dtype, **AFFINE[affine]), torch_cls(shape[1], dtype=dtype, **AFFINE[affine])
    with torch.no_grad():
        for bn in (ours, ref):
            for name, value in (("weight", w), ("bias", b)):
                if value is not None:
                    getattr(bn, name).copy_(value)
    got, want = [], []
    for bn, out in ((ours, got), (ref, want)):
        xx = x.detach().clone().requires_grad_()
        out.extend(_grads(bn(xx), [xx, bn.weight, bn.bias]))
    assert len(want) == 1 + (w is not None) + (b is not None)
    _assert_close(got, want, dtype)


@layouts
@affines
@dtypes
def test_gradients_equal_autograd_through_the_plain_formula(layout, affine, dtype):
    x, w, b = _inputs(layout, affine, dtype)
    got = _grads(_function_output(x, w, b), [x, w, b])
    want = _grads(_autograd_reference(x, w, b), [x, w, b])
    _assert_close(got, want, dtype)


@layouts
@affines
def test_second_derivatives_equal_autograd_through_the_plain_formula_float64(layout, affine):
    x, w, b = _inputs(layout, affine, torch.float64)

    def grads_of_grads(fn) -> list[Tensor]:
        first = _grads(fn(x, w, b), [x, w, b], create_graph=True)  # [dx, dweight, dbias]
        loss = sum((g * torch.linspace(-1, 2, g.numel(), dtype=g.dtype).reshape(g.shape)).sum() for g in first)
        wrt = [t for t in (x, w, b) if t is not None]
        return [torch.zeros_like(t) if g is None else g
                for t, g in zip(wrt, torch.autograd.grad(loss, wrt, allow_unused=True))]

    _assert_close(grads_of_grads(_function_output), grads_of_grads(_autograd_reference), torch.float64)


@pytest.mark.parametrize("frozen", ["input", "parameters"])
def test_gradients_asked_for_equal_torch_when_the_input_or_the_parameters_are_frozen(frozen):
    x, w, b = _inputs("2d", "affine", torch.float32)
    (x if frozen == "input" else w).requires_grad_(False)
    if frozen == "parameters":
        b.requires_grad_(False)
    wrt = [t for t in (x, w, b) if t.requires_grad]
    got = _grads(_function_output(x, w, b), wrt)
    want = _grads(nn.functional.batch_norm(x, None, None, w, b, training=True, eps=EPS), wrt)
    _assert_close(got, want, torch.float32)


def test_training_records_one_autograd_node_for_statistics_and_normalization():
    # The point of the hand-written backward: no graph of elementwise ops behind the output.
    bn = rnn.BatchNorm2d(4)
    x = torch.randn(3, 4, 5, 5, requires_grad=True)
    y = bn(x)
    assert type(y.grad_fn).__name__ == "_BatchNormTrainJvpBackward"  # the eager class
    assert {type(f).__name__ for f, _ in y.grad_fn.next_functions} == {"AccumulateGrad"}  # x, weight, bias
    bn.eval()
    assert not type(bn(x).grad_fn).__name__.startswith("_BatchNormTrain")  # eval: running statistics, plain ops


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")
def test_scripted_layer_falls_back_to_autograd_and_its_gradients_equal_torch():
    eager, ref = rnn.BatchNorm2d(4), nn.BatchNorm2d(4)
    with torch.no_grad():
        for bn in (eager, ref):
            bn.weight.copy_(torch.linspace(0.5, 2, 4))
            bn.bias.copy_(torch.linspace(-1, 1, 4))
    scripted = torch.jit.script(copy.deepcopy(eager))
    x, _, _ = _inputs("2d", "no-affine", torch.float32)
    got, want = [], []
    for bn, out in ((scripted, got), (ref, want)):
        xx = x.detach().clone().requires_grad_()
        out.extend(_grads(bn(xx), [xx, bn.weight, bn.bias]))
    _assert_close(got, want, torch.float32)


def test_torch_compile_traces_the_function_and_gives_torchs_outputs_gradients_and_buffers():
    # aot_eager: dynamo and AOTAutograd trace the Function (forward and hand-written backward) without
    # needing a C compiler for inductor's kernels.
    torch._dynamo.reset()
    ours, ref = rnn.BatchNorm2d(4), nn.BatchNorm2d(4)
    with torch.no_grad():
        for bn in (ours, ref):
            bn.weight.copy_(torch.tensor([0.5, 1.0, 1.5, 2.0]))
            bn.bias.copy_(torch.tensor([-1.0, 0.0, 0.5, 1.0]))
    compiled = torch.compile(ours, backend="aot_eager", fullgraph=True)
    g = torch.Generator().manual_seed(5)
    for step in range(2):
        x = (torch.randn(6, 4, 5, 5, generator=g) * 3 + step).requires_grad_(True)
        x_ref = x.detach().clone().requires_grad_(True)
        y, y_ref = compiled(x), ref(x_ref)
        _assert_close(_grads(y, [x, ours.weight, ours.bias]), _grads(y_ref, [x_ref, ref.weight, ref.bias]),
                      torch.float32)
        _assert_close([y.detach()], [y_ref.detach()], torch.float32)
    _assert_close([ours.running_mean, ours.running_var], [ref.running_mean, ref.running_var], torch.float32)
    ours.eval(), ref.eval()
    x = torch.randn(6, 4, 5, 5, generator=g)
    with torch.no_grad():
        _assert_close([torch.compile(ours, backend="aot_eager")(x)], [ref(x)], torch.float32)
