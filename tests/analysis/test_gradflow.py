"""resnet_lab.analysis.gradflow against float64 autograd recomputations and plain .grad reads."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from support import hooked_modules
from torch import nn

from resnet_lab.analysis import GradientFlowRecorder, gradflow, gradient_norms, plot_gradient_flow
from resnet_lab.analysis.gradflow import weight_layers_in_forward_order


class _BranchyNet(nn.Module):
    """Registration order (head, skip, conv2, conv1) differs from forward order on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 4)
        self.skip = nn.Conv2d(3, 6, 1, bias=False)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)

    def forward(self, x):
        h = F.relu(self.bn(self.conv1(x)))
        h = self.conv2(h) + self.skip(x)
        return self.head(F.adaptive_avg_pool2d(h, 1).flatten(1))


FORWARD_ORDER = ["conv1", "conv2", "skip", "head"]


def _reference_norms_float64(model: _BranchyNet, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    # The same network written out functionally in float64, differentiated by autograd.grad.
    p = {k: v.detach().double().requires_grad_() for k, v in model.named_parameters()}
    x = x.double()
    h = F.conv2d(x, p["conv1.weight"], p["conv1.bias"], padding=1)
    h = F.batch_norm(h, None, None, p["bn.weight"], p["bn.bias"], training=True)
    h = F.relu(h)
    h = F.conv2d(h, p["conv2.weight"], p["conv2.bias"], padding=1) + F.conv2d(x, p["skip.weight"])
    out = F.linear(h.mean(dim=(2, 3)), p["head.weight"], p["head.bias"])
    loss = F.cross_entropy(out, y)
    names = [f"{n}.weight" for n in FORWARD_ORDER]
    grads = torch.autograd.grad(loss, [p[n] for n in names])
    return {n: g.norm().item() for n, g in zip(FORWARD_ORDER, grads)}


def test_gradient_norms_equal_float64_autograd_recomputation_in_forward_order():
    torch.manual_seed(0)
    model = _BranchyNet().double().train()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    got = gradient_norms(model, x.double(), y)
    assert [n for n, _ in got] == FORWARD_ORDER
    ref = _reference_norms_float64(model, x, y)
    for name, value in got:
        assert value == pytest.approx(ref[name], rel=1e-10, abs=1e-14)
    assert all(p.grad is None for p in model.parameters()), "gradient_norms must not touch .grad"


def test_gradient_norms_in_float32_close_to_float64_reference():
    torch.manual_seed(1)
    model = _BranchyNet().train()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([3, 2, 1, 0])
    ref = _reference_norms_float64(model, x, y)
    for name, value in gradient_norms(model, x, y):
        assert value == pytest.approx(ref[name], rel=1e-4)


def test_gradient_norms_and_the_recorder_report_zero_for_frozen_layers():
    """A frozen layer (no .grad) reads 0 in both tools; the others are their .grad norms, read directly."""
    torch.manual_seed(2)
    model = _BranchyNet().double()
    model.conv1.requires_grad_(False)
    x, y = torch.randn(2, 3, 8, 8, dtype=torch.float64), torch.tensor([0, 1])
    got = dict(gradient_norms(model, x, y))
    assert got["conv1"] == 0.0 and got["head"] > 0
    rec = GradientFlowRecorder(model)
    F.cross_entropy(model(x), y).backward()
    want = [0.0] + [getattr(model, n).weight.grad.norm().item() for n in FORWARD_ORDER[1:]]
    assert [v for _, v in rec.record()] == pytest.approx(want, rel=1e-12) and want[-1] > 0


def test_recorder_follows_forward_order_and_matches_grad_norms_each_step():
    torch.manual_seed(3)
    model = _BranchyNet().train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    rec = GradientFlowRecorder(model)
    expected = []
    for step in range(3):
        x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 4, (4,))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        expected.append([getattr(model, n).weight.grad.norm().item() for n in FORWARD_ORDER])
        rec.record(step * 10)
        opt.step()
    assert rec.layer_names == FORWARD_ORDER
    assert rec.steps == [0, 10, 20]
    for got, want in zip(rec.history, expected):
        assert got == pytest.approx(want, rel=1e-6)
    assert [n for n, _ in rec.norms(0)] == FORWARD_ORDER


def test_recorder_without_a_forward_pass_explains_what_to_do():
    rec = GradientFlowRecorder(_BranchyNet())
    with pytest.raises(RuntimeError, match="record\\(\\) after loss.backward"):
        rec.record()


def test_plot_gradient_flow_writes_a_png_with_several_curves(tmp_path):
    init = [("conv1", 1e-3), ("conv2", 1e-2), ("skip", 0.0), ("head", 1.0)]
    later = [("conv1", 2e-3), ("conv2", 3e-2), ("skip", 1e-1), ("head", 0.5)]
    other_model = [(f"l{i}", 10.0 ** -i) for i in range(7)]
    out = plot_gradient_flow({"init": init, "after 100 steps": later, "plain-20": other_model},
                             tmp_path / "sub" / "flow.png", title="gradient flow")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    single = plot_gradient_flow(init, tmp_path / "one.png")
    assert single.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_gradient_flow_rejects_empty_records(tmp_path):
    for empty in ({"init": []}, {}, []):
        with pytest.raises(ValueError, match="non-empty"):
            plot_gradient_flow(empty, tmp_path / "x.png")
    # one real curve beside an empty one: the empty one is named (the records do hold a non-empty curve)
    with pytest.raises(ValueError, match=r"^curve 'later' of the records is empty: leave it out, or give its "
                                         r"\[\(layer_name, norm\), \.\.\.\]$"):
        plot_gradient_flow({"init": [("conv1", 1.0)], "later": []}, tmp_path / "x.png")


def _drawn_axes(monkeypatch, tmp_path, records, **kw):
    """The axes plot_gradient_flow draws, caught before the PNG is rendered (the layout pass, which
    renders all text, is skipped too: it moves the axes, not what they show)."""
    figures = []
    monkeypatch.setattr(gradflow, "save_png", lambda fig, path, dpi: figures.append(fig) or path)
    monkeypatch.setattr(Figure, "tight_layout", lambda fig, *args, **kw: None)
    plot_gradient_flow(records, tmp_path / "flow.png", **kw)
    (ax,) = figures[0].axes
    return ax


def test_plot_gradient_flow_draws_what_its_docstring_promises(monkeypatch, tmp_path):
    """Log y axis, one labelled curve per entry, a zero norm (a layer without gradient) as a gap,
    the layer names on the ticks only when every curve has the same layers (and at most 60)."""
    init = [("conv1", 1e-3), ("skip", 0.0), ("head", 1.0)]
    later = [("conv1", 2e-3), ("skip", 1e-1), ("head", 0.5)]
    ax = _drawn_axes(monkeypatch, tmp_path, {"init": init, "later": later}, title="flow of resnet8")
    assert ax.get_yscale() == "log" and ax.get_title() == "flow of resnet8"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["init", "later"]
    ys = [list(line.get_ydata()) for line in ax.get_lines()]
    assert ys[0][0] == 1e-3 and math.isnan(ys[0][1]) and ys[0][2] == 1.0 and ys[1] == [2e-3, 1e-1, 0.5]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["conv1", "skip", "head"]
    single = _drawn_axes(monkeypatch, tmp_path, init)  # one unlabelled curve: no legend
    assert single.get_legend() is None and [list(line.get_xdata()) for line in single.get_lines()] == [[0, 1, 2]]
    other = [("conv1", 1.0), ("conv2", 1.0), ("head", 1.0)]
    deep = [(f"l{i}", 1.0) for i in range(61)]
    for records, names in (({"a": init, "b": other}, {"conv1", "conv2", "skip", "head"}), (deep, {n for n, _ in deep})):
        ticks = {t.get_text() for t in _drawn_axes(monkeypatch, tmp_path, records).get_xticklabels()}
        assert not ticks & names, ticks  # numbered ticks, not names that would belong to one curve only
    sixty = deep[:60]  # the largest count that still gets its names
    assert [t.get_text() for t in _drawn_axes(monkeypatch, tmp_path, sixty).get_xticklabels()] == [n for n, _ in sixty]


def test_forward_order_in_training_mode_leaves_the_bn_running_statistics_as_they_were():
    from resnet_lab.models import create_model

    model = create_model("resnet8").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    order = weight_layers_in_forward_order(model, torch.randn(4, 3, 16, 16) * 3 + 1)
    assert [n for n, _ in order][:2] == ["conv1", "layer1.0.conv1"] and model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), [k for k in before if not torch.equal(before[k], after[k])]


def test_gradient_norms_under_no_grad_and_for_aux_outputs_and_an_empty_recorder_say_what_to_do():
    from resnet_lab.models import create_model

    model = nn.Sequential(nn.Linear(3, 2))
    with torch.no_grad(), pytest.raises(RuntimeError, match=r"needs autograd.*call it outside that block"):
        gradient_norms(model, torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))
    # GoogLeNet in training mode with aux heads returns (logits, aux2, aux1): the default loss is the
    # main logits' cross-entropy, the same gradients as a loss_fn that picks them out
    net = create_model("googlenet", aux_logits=True, num_classes=3, small_input=True).train()
    x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 2])
    torch.manual_seed(0)
    got = gradient_norms(net, x, y)
    torch.manual_seed(0)
    want = gradient_norms(net, x, y, loss_fn=lambda out, t: F.cross_entropy(out.logits, t))
    assert got == want and len(got) > 10
    rec = GradientFlowRecorder(model)
    with pytest.raises(ValueError, match=r"no record yet: call record\(\) after loss.backward\(\)"):
        rec.norms()


def test_recorders_ride_along_training_with_ema_and_sam_one_record_per_optimizer_step():
    """An EMA deep-copies the model with the recorders' hooks on it: the copy's layers fired a hook
    that did not know them (KeyError at the first evaluation). SAM's probe pass at the perturbed
    weights was counted as a training step of its own (twice the steps, half of them at weights the
    model never keeps)."""
    from tinytrain import TinyNet, make_bundle

    from resnet_lab.analysis import ActivationStatsRecorder
    from resnet_lab.train import TrainConfig, train

    for options in ({"ema": 0.9}, {"sam": 0.05}, {}):
        torch.manual_seed(0)
        model = TinyNet()
        flow = GradientFlowRecorder(model)
        steps = []
        with ActivationStatsRecorder(model, layer_types=(nn.BatchNorm2d,), where="output") as acts:
            train(model, make_bundle(), TrainConfig(epochs=1, progress=False, plots=False, device="cpu", **options),
                  step_callbacks=[lambda s: (flow.record(s["step"]), steps.append(s["step"]))])
        assert flow.layer_names == ["conv", "fc"] and len(flow.history) == len(steps) == 6, options
        assert len(acts.steps) == 6, options  # one per optimizer step, the probe passes left out


def test_every_tool_takes_its_hooks_off_the_model():
    """weight_layers_in_forward_order and gradient_norms hook one pass; the recorder keeps its hooks
    until its first record() (or close()). A hook left behind runs at every later forward pass."""
    torch.manual_seed(4)
    model = _BranchyNet()
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([0, 1])
    assert [n for n, _ in weight_layers_in_forward_order(model, x)] == FORWARD_ORDER
    assert hooked_modules(model) == []
    assert [n for n, _ in gradient_norms(model, x, y)] == FORWARD_ORDER
    assert hooked_modules(model) == []
    rec = GradientFlowRecorder(model)
    assert hooked_modules(model) == ["head", "skip", "conv2", "conv1"]
    rec.close()
    assert hooked_modules(model) == []
    rec = GradientFlowRecorder(model)
    F.cross_entropy(model(x), y).backward()
    rec.record()
    assert hooked_modules(model) == []


def test_records_without_a_step_are_numbered_and_norms_takes_negative_indices():
    """record() labels a record with the number of records so far and returns this step's norms;
    norms() is the last record and norms(-k) the k-th from the end, as for a list; an index past the
    end is refused. Reference: the .grad norms read directly."""
    torch.manual_seed(5)
    model = _BranchyNet()
    rec, expected = GradientFlowRecorder(model), []
    for _ in range(3):
        model.zero_grad()
        F.cross_entropy(model(torch.randn(2, 3, 8, 8)), torch.tensor([1, 2])).backward()
        expected.append([getattr(model, n).weight.grad.norm().item() for n in FORWARD_ORDER])
        returned = rec.record()
        assert [n for n, _ in returned] == FORWARD_ORDER and [v for _, v in returned] == pytest.approx(expected[-1])
    assert rec.steps == [0, 1, 2]
    for index, want in ((None, expected[2]), (-1, expected[2]), (-3, expected[0]), (1, expected[1])):
        got = rec.norms() if index is None else rec.norms(index)  # no index: the last record, as documented
        assert [v for _, v in got] == pytest.approx(want, rel=1e-6), index
    for index in (3, -4):
        with pytest.raises(IndexError, match=rf"record {index} asked, but there are 3 \(0..2\)"):
            rec.norms(index)


def test_a_model_without_the_layer_types_names_them_and_layer_types_picks_other_layers():
    """A net of no conv/linear has nothing to measure by default: the error names the types and the
    way out; with layer_types=(nn.BatchNorm1d,) the weight of the affine one is measured, checked by
    autograd.grad, and the one without a weight (affine=False) is left out."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.BatchNorm1d(4, affine=False), nn.BatchNorm1d(4)).train()
    nn.init.normal_(model[1].weight)
    x, y = torch.randn(8, 4), torch.randint(0, 4, (8,))
    with pytest.raises(ValueError, match=r"no layer of type Conv1d, Conv2d, Conv3d, Linear ran .*pass layer_types="):
        gradient_norms(model, x, y)
    ((name, value),) = gradient_norms(model, x, y, layer_types=(nn.BatchNorm1d,))
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y), [model[1].weight])
    assert name == "1" and value == pytest.approx(grad.norm().item(), rel=1e-6) and value > 0


def test_gradient_norms_names_a_bad_batch_and_takes_integer_labels_of_any_dtype():
    """Float labels, a label past the outputs and float64 images were torch's errors; int32 labels failed."""
    torch.manual_seed(4)
    model = _BranchyNet().train()
    x, y = torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    for args, error, message in [((x, y.float()), TypeError, r"gradient_norms needs integer class indices"),
                                 ((x, y + 6), ValueError, r"label 9 is not a class index for a model with 4 outputs: "
                                                          r"labels must be 0 to 3"),
                                 ((x.double(), y), TypeError, r"gradient_norms got torch.float64 images for a model "
                                                              r"with torch.float32 weights: x.float\(\)")]:
        with pytest.raises(error, match=message):
            gradient_norms(model, *args)
    assert gradient_norms(model, x, y.int()) == gradient_norms(model, x, y)
