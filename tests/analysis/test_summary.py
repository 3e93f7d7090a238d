"""resnet_lab.analysis.summary against published MACs, torchvision models and hand formulas.

The 224x224 checks build the networks on the ``meta`` device: FlopCounterMode needs only shapes,
so resnet50 or vgg16 are counted in milliseconds without allocating or computing anything.
"""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from support import hooked_modules
from torch import nn

from resnet_lab.analysis import count_params, summarize

# torchvision's published GMACs at 3x224x224 (weights.meta["_ops"], shown as "GFLOPS" in its docs).
PUBLISHED_GMACS = {
    "resnet18": 1.814,
    "resnet50": 4.089,
    "vgg16": 15.47,
    "densenet121": 2.834,
    "googlenet": 1.50,
}


def _leaf_output_bytes(model: nn.Module, x: torch.Tensor) -> int:
    """Bytes of every leaf module's output in an eval forward pass of ``x``, recomputed with plain
    forward hooks (a second, independent bookkeeping of ``activation_bytes``)."""
    sizes = []
    hooks = [m.register_forward_hook(lambda m, a, o: sizes.append(o.numel() * o.element_size()))
             for m in model.modules() if next(m.children(), None) is None]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return sum(sizes)


def _torchvision_on_meta(name: str) -> nn.Module:
    kw = {"init_weights": False} if name == "googlenet" else {}
    with torch.device("meta"):
        return torchvision.models.get_model(name, weights=None, **kw)


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_torchvision_model_macs_match_published_gmacs_within_1_percent(name):
    s = summarize(_torchvision_on_meta(name), (3, 224, 224), device="meta")
    assert s.total_macs / 1e9 == pytest.approx(PUBLISHED_GMACS[name], rel=0.01)


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_torchvision_meta_ops_field_agrees_with_our_count(name):
    # The same published figure, read from the installed torchvision instead of copied by hand.
    meta_ops = torchvision.models.get_model_weights(name).DEFAULT.meta["_ops"]
    s = summarize(_torchvision_on_meta(name), (3, 224, 224), device="meta")
    assert s.total_macs / 1e9 == pytest.approx(meta_ops, rel=0.01)


@pytest.mark.parametrize("name", sorted(PUBLISHED_GMACS))
def test_our_registered_model_macs_and_params_match_torchvision(name):
    from resnet_lab import create_model, list_models

    try:
        registered = name in list_models()
    except ImportError as e:  # a family module still being written
        pytest.skip(f"model registry not importable yet: {e}")
    if not registered:
        pytest.skip(f"{name} is not registered (yet)")
    with torch.device("meta"):
        ours = create_model(name)
    s = summarize(ours, (3, 224, 224), device="meta")
    ref = summarize(_torchvision_on_meta(name), (3, 224, 224), device="meta")
    assert s.total_macs / 1e9 == pytest.approx(PUBLISHED_GMACS[name], rel=0.01)
    assert s.total_macs == ref.total_macs
    # torchvision's googlenet has aux heads when built without weights; ours may not: compare
    # parameters of the layers that run at inference (the rows), which is what matters here.
    assert sum(r.params for r in s.rows) == sum(r.params for r in ref.rows)


def test_macs_equal_hand_formula_for_conv_and_linear_layers():
    # MACs of a conv = C_out * (C_in / groups) * kH * kW * H_out * W_out per sample; linear = in*out.
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 16x16 -> 8x8
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=4),  # grouped: C_in/groups = 2
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 5),
    )
    batch = 2
    s = summarize(model, (3, 16, 16), batch_size=batch)
    conv1 = 8 * 3 * 3 * 3 * 8 * 8
    conv2 = 8 * 2 * 3 * 3 * 8 * 8
    fc = 8 * 5
    assert [r.macs for r in s.rows] == [batch * conv1, 0, 0, batch * conv2, 0, 0, batch * fc]
    assert s.total_macs == batch * (conv1 + conv2 + fc)
    assert [r.output_shape for r in s.rows][0] == [[batch, 8, 8, 8]]
    assert s.rows[-1].output_shape == [[batch, 5]]


def test_a_row_is_trainable_when_any_of_its_parameters_is_and_a_row_without_any_is_not():
    """LayerRow.trainable: whether any of the row's parameters requires grad (False for 0 parameters).
    The reference: each module's own parameters' requires_grad, read here."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5), nn.Linear(5, 2))
    model[0].weight.requires_grad_(False)  # partly frozen: its bias still trains
    model[4].requires_grad_(False)  # wholly frozen
    s = summarize(model, (3, 8, 8))
    want = [any(p.requires_grad for p in m.parameters()) for m in model]
    assert want == [True, False, False, True, False]
    assert [r.params for r in s.rows] == [sum(p.numel() for p in m.parameters()) for m in model]
    assert [r.trainable for r in s.rows] == want


def test_params_and_shapes_match_torchvision_resnet18_on_cpu_and_meta_agrees():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    model.layer4.requires_grad_(False)
    model.train()
    s = summarize(model, (3, 32, 32), batch_size=2)
    assert model.training, "summarize must restore the training mode"
    ref_total = sum(p.numel() for p in model.parameters())
    ref_frozen = sum(p.numel() for p in model.layer4.parameters())
    assert (s.total_params, s.trainable_params, s.non_trainable_params) == (ref_total, ref_total - ref_frozen, ref_frozen)
    assert count_params(model) == (ref_total - ref_frozen, ref_frozen)
    assert sum(r.params for r in s.rows) == ref_total  # leaf rows partition the parameters
    assert s.rows[0].name == "conv1" and s.rows[0].output_shape == [[2, 64, 16, 16]]
    assert s.rows[-1].name == "fc" and s.rows[-1].output_shape == [[2, 10]]
    assert s.param_bytes == 4 * ref_total
    assert s.activation_bytes == _leaf_output_bytes(model, torch.randn(2, 3, 32, 32))
    # The meta device gives the same counts without computing.
    with torch.device("meta"):
        meta_model = torchvision.models.resnet18(num_classes=10)
    m = summarize(meta_model, (3, 32, 32), batch_size=2, device="meta")
    assert (m.total_macs, m.total_params, m.activation_bytes) == (s.total_macs, s.total_params, s.activation_bytes)


def test_depth_collapses_containers_and_rows_still_sum_to_totals():
    model = _torchvision_on_meta("resnet50")
    s = summarize(model, (3, 224, 224), depth=1, device="meta")
    names = [r.name for r in s.rows]
    assert names == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    layer3 = s.rows[names.index("layer3")]
    assert layer3.params == sum(p.numel() for p in model.layer3.parameters())
    assert layer3.output_shape == [[1, 1024, 14, 14]]
    assert sum(r.params for r in s.rows) == s.total_params
    assert sum(r.macs for r in s.rows) == s.total_macs


def test_to_text_is_an_aligned_table_with_totals_and_to_dict_is_json():
    s = summarize(_torchvision_on_meta("resnet18"), (3, 224, 224), device="meta")
    text = s.to_text()
    assert "11,689,512" in text  # torchvision resnet18 parameter count
    assert "1.814 G" in text
    table = text.split("\n")
    header = next(line for line in table if line.startswith("Layer (type)"))
    # Right-aligned numeric columns end at the same column in every row.
    row_lines = [line for line in table if "(Conv2d)" in line]
    assert len({len(line) for line in row_lines}) == 1
    assert len(row_lines[0]) == len(header)
    d = json.loads(json.dumps(s.to_dict()))
    assert d["total_params"] == 11_689_512 and d["total_macs"] == s.total_macs
    assert d["rows"][0]["name"] == "conv1"


def test_float64_model_gets_a_float64_input_and_byte_counts_follow_the_dtype():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).double()
    s = summarize(model, (1, 6, 6), batch_size=2)
    assert s.param_bytes == 8 * sum(p.numel() for p in model.parameters())
    assert s.activation_bytes == 8 * 2 * (2 * 4 * 4 + 2 * 4 * 4 + 3)  # conv, flatten, linear outputs
    assert s.input_bytes == 8 * 2 * 36


def test_model_on_other_device_than_requested_raises_with_hint():
    with pytest.raises(ValueError, match=r"model.to\('meta'\)"):
        summarize(nn.Linear(2, 2), (2,), device="meta")


@pytest.mark.parametrize("kw, error, match", [
    ({"dtype": torch.int64}, TypeError, r"dtype must be a floating-point torch.dtype .*got torch.int64"),
    ({"dtype": "float32"}, TypeError, r"dtype must be a floating-point torch.dtype .*got 'float32'"),
    ({"device": "gpu"}, ValueError, r"unknown device 'gpu': use auto, cpu, cuda, cuda:N or mps"),
    ({"device": 0}, TypeError, r"device \(--device\) must be a device name \(str\) or torch.device"),
])
def test_a_dtype_or_device_of_the_wrong_kind_is_named(kw, error, match):
    """dtype=torch.int64 was torch.randn's '"normal_kernel_cpu" not implemented for 'Long''; device="gpu"
    torch's list of every backend it knows. Each names the argument now, and the model is untouched."""
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=match):
        summarize(model, (2,), **kw)
    assert model.training and hooked_modules(model) == []
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert summarize(model, (2,), dtype=torch.float32, device="cpu").total_params == 10  # 6 Linear + 4 BN


def _resnet_lab_gray(norm: str) -> nn.Module:
    from resnet_lab import create_model

    return create_model("resnet8", num_classes=3, in_channels=1, norm=norm)


@pytest.mark.parametrize("make", [lambda: torchvision.models.resnet18(), lambda: _resnet_lab_gray("batch"),
                                  lambda: _resnet_lab_gray("scratch")],
                         ids=["torchvision", "torch-bn", "scratch-bn"])
def test_an_input_size_or_dtype_the_model_cannot_take_names_the_arguments_and_leaves_no_hooks(make):
    """A gray model's first conv takes (1, 32, 32) as one unbatched image, so the BN after it raised
    its bare ValueError "expected 4D input (got 3D input)", naming no argument."""
    model = make().train()
    with pytest.raises(ValueError, match=r"summary's input \(1, 32, 32\).*input_size is \(C, H, W\) without the batch dim"):
        summarize(model, (32, 32))  # C missing: torch's error alone names neither argument
    with pytest.raises(ValueError, match=r"torch.float64.*dtype must be the model's"):
        summarize(model, (3, 32, 32), dtype=torch.float64)
    assert model.training  # the mode is restored and every hook removed
    assert hooked_modules(model) == []


def test_a_tied_weight_and_a_containers_own_parameter_are_each_in_one_row():
    """The rows sum to the model's total, as the docs promise: a weight shared by two Linears was in
    both rows (144 against 80), and a container's own parameter (a layer-scale gamma) in none (122
    against 126). Reference: sum(p.numel() for p in model.parameters())."""

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 8)
            self.b.weight = self.a.weight

        def forward(self, x):
            return self.b(self.a(x))

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.gamma = nn.Conv2d(3, 4, 3), nn.Parameter(torch.ones(4, 1, 1))

        def forward(self, x):
            return self.conv(x) * self.gamma

    scaled = nn.Sequential(Scaled(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    for model, size in ((Tied(), (8,)), (scaled, (3, 8, 8))):
        s = summarize(model, size)
        assert sum(r.params for r in s.rows) == s.total_params == sum(p.numel() for p in model.parameters())
        assert sum(r.macs for r in s.rows) == s.total_macs
    rows = {r.name: r for r in summarize(scaled, (3, 8, 8)).rows}
    assert (rows["0"].params, rows["0"].macs, rows["0.conv"].params) == (4, 0, 112)  # gamma alone; the conv's MACs stay its own


@pytest.mark.parametrize("fails", [False, True], ids=["returns", "input refused"])
def test_each_modules_own_mode_is_restored_not_just_the_top_levels(fails):
    """summarize restored model.train(was_training) alone, which put a BN the caller had set to
    eval inside a training model back in training (its running statistics then moved in a loop)."""
    model = torchvision.models.resnet18().train()
    model.bn1.eval()
    model.layer2[0].eval()  # a whole block, its submodules too
    before = [(name, m.training) for name, m in model.named_modules()]
    assert sum(not mode for _, mode in before) > 2  # the reference has modules in both modes
    if fails:
        with pytest.raises(ValueError, match="input_size"):
            summarize(model, (32, 32))
    else:
        summarize(model, (3, 32, 32))
    assert [(name, m.training) for name, m in model.named_modules()] == before


def test_the_callers_global_rng_is_not_drawn_from():
    """A notebook's seeded draws go on as they would without the summary between them."""
    model = torchvision.models.resnet18(num_classes=10)
    torch.manual_seed(3)
    expected = torch.rand(4)
    torch.manual_seed(3)
    summarize(model, (3, 32, 32))
    assert torch.equal(torch.rand(4), expected)
    with torch.device("meta"):
        meta_model = torchvision.models.resnet18(num_classes=10)
    assert summarize(meta_model, (3, 32, 32), device="meta").total_params == count_params(model)[0]


def test_each_text_row_shows_its_hand_counted_macs_indented_by_depth_and_long_labels_are_cut():
    """The MACs column of every row, not only the total, in G (3 decimals), M, K (2) or plain;
    a row one level deeper is indented by two spaces. Reference: the conv/linear hand formulas."""
    with torch.device("meta"):
        model = nn.Sequential(
            nn.Conv2d(64, 256, 3, padding=1),  # 256 * 64 * 9 * 112 * 112 = 1,849,688,064
            nn.Conv2d(256, 4, 1),  # 4 * 256 * 112 * 112 = 12,845,056
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Sequential(nn.Linear(4, 300), nn.Linear(300, 2)),  # 1,200 and 600
        )
    s = summarize(model, (64, 112, 112), device="meta")
    assert [r.macs for r in s.rows] == [1_849_688_064, 12_845_056, 0, 0, 1_200, 600]
    want = {"0 (Conv2d)": "1.850 G", "1 (Conv2d)": "12.85 M", "2 (AdaptiveAvgPool2d)": "-", "3 (Flatten)": "-",
            "  4.0 (Linear)": "1.20 K", "  4.1 (Linear)": "600"}
    lines = s.to_text().split("\n")
    for label, macs in want.items():
        (line,) = [line for line in lines if line.startswith(label + " ")]
        assert line.endswith(" " + macs), (label, line)
    cut = s.to_text(max_name_width=10).split("\n")  # "  4.0 (Linear)" is 14 characters: 7 kept, "..." added
    assert any(line.startswith("  4.0 (...  ") for line in cut)
    assert any(line.startswith("0 (Conv2d)  ") for line in cut)  # exactly 10: left whole


def test_a_module_returning_a_tuple_or_a_dict_has_every_tensors_shape_and_bytes():
    """torch's LSTM returns (output, (h, c)): three shapes, documented by torch; a dict output
    counts each value. Activation bytes are those of every tensor a leaf returned."""

    class Heads(nn.Module):
        def forward(self, x):
            return {"last": x[:, -1], "all": x}

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.heads = nn.LSTM(4, 6, batch_first=True), Heads()

        def forward(self, x):
            return self.heads(self.lstm(x)[0])

    s = summarize(Net(), (5, 4), batch_size=2)
    rows = {r.name: r.output_shape for r in s.rows}
    assert rows == {"lstm": [[2, 5, 6], [1, 2, 6], [1, 2, 6]], "heads": [[2, 6], [2, 5, 6]]}
    assert s.activation_bytes == 4 * ((2 * 5 * 6 + 2 * 2 * 6) + (2 * 6 + 2 * 5 * 6))


def test_the_input_follows_the_models_device_and_dtype_when_left_out():
    """device=None: the model's own device, read from a buffer when there is no parameter;
    dtype=None: float32 for a model without a floating-point parameter (the docstring's contract)."""
    with torch.device("meta"):
        on_meta = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten())
        buffers_only = nn.Sequential(nn.BatchNorm2d(3, affine=False), nn.Flatten())
    assert summarize(on_meta, (3, 6, 6)).total_macs == 4 * 3 * 9 * 4 * 4
    assert summarize(buffers_only, (3, 4, 4)).rows[-1].output_shape == [[1, 48]]
    s = summarize(nn.Sequential(nn.ReLU(), nn.Flatten()), (2, 3), batch_size=5)
    assert (s.input_bytes, s.activation_bytes) == (4 * 5 * 6, 2 * 4 * 5 * 6)


def test_the_batch_is_in_the_input_shape_and_buffer_bytes_count_the_running_statistics():
    """input_shape includes the batch dim (documented); a BatchNorm2d(8) holds running mean and var
    (8 float32 each) and num_batches_tracked (one int64): 72 bytes, counted by hand."""
    s = summarize(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)), (3, 8, 8), batch_size=2)
    assert (s.input_shape, s.batch_size, s.buffer_bytes) == ([2, 3, 8, 8], 2, 8 * 4 * 2 + 8)
    assert "(input (2, 3, 8, 8))" in s.to_text()
    assert s.to_dict()["batch_size"] == 2


def test_depth_2_keeps_the_shallower_leaves_and_activation_bytes_do_not_depend_on_depth():
    """"leaves above d stay as rows": at depth 2 resnet18's stem and head (depth 1) are rows
    beside its blocks (depth 2); activation bytes are the leaves' outputs whatever the depth."""
    with torch.device("meta"):
        model = torchvision.models.resnet18(num_classes=10)
        x = torch.randn(1, 3, 64, 64)
    leaves = _leaf_output_bytes(model, x)
    s = summarize(model, (3, 64, 64), depth=2, device="meta")
    blocks = [f"layer{i}.{j}" for i in (1, 2, 3, 4) for j in (0, 1)]
    assert [r.name for r in s.rows] == ["conv1", "bn1", "relu", "maxpool", *blocks, "avgpool", "fc"]
    assert sum(r.params for r in s.rows) == sum(p.numel() for p in model.parameters())
    for depth in (1, 2, None):
        assert summarize(model, (3, 64, 64), depth=depth, device="meta").activation_bytes == leaves, depth


@pytest.mark.parametrize(("norm", "shown"), [("group", "GroupNorm"), ("scratch", "ScratchBatchNorm2d")])
def test_row_types_read_groupnorm_and_scratchbatchnorm2d(norm, shown):
    """norm="group" is a private _GroupNorm subclass (shown without the underscore); norm="scratch"
    is our BatchNorm2d, which must not read as torch's BatchNorm2d."""
    from resnet_lab import create_model
    from resnet_lab.nn import BatchNorm2d as ScratchBatchNorm2d

    model = create_model("resnet8", norm=norm)
    norm_type = {"group": nn.GroupNorm, "scratch": ScratchBatchNorm2d}[norm]
    types = [r.type for r in summarize(model, (3, 16, 16)).rows]
    assert types.count(shown) == sum(isinstance(m, norm_type) for m in model.modules()) > 0
    assert not any(t.startswith("_") or t == "BatchNorm2d" for t in types)


def test_a_module_called_twice_has_a_row_per_call_with_that_calls_macs_and_its_params_once():
    """"0 on a second call of the same module" and per-call MACs (the hand conv formula), so the
    rows still sum to the totals."""

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.mid = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            return self.conv(self.mid(self.conv(x)))

    s = summarize(Twice(), (4, 5, 5))
    conv, mid = 4 * 4 * 9 * 5 * 5, 4 * 4 * 5 * 5
    assert [(r.name, r.params, r.macs) for r in s.rows] == [("conv", 4 * 4 * 9 + 4, conv), ("mid", 4 * 4 + 4, mid),
                                                              ("conv", 0, conv)]
    assert (sum(r.macs for r in s.rows), sum(r.params for r in s.rows)) == (s.total_macs, s.total_params)


def _column_end(header: str, title: str) -> int:
    """Where a right-aligned column ends: just after its title in the header line."""
    return header.index(title) + len(title)


def test_the_totals_block_shows_each_count_and_size_in_mib_counted_by_hand():
    """Every line of the totals block against hand counts (torchsummary's convention: MB = 1024**2
    bytes). A 1x1 conv to 65536 channels and a BN whose gamma is frozen, on meta: parameters
    2 * 65536 each (the BN's beta trains), buffers 2 * 65536 float32 plus one int64."""
    with torch.device("meta"):
        model = nn.Sequential(nn.Conv2d(1, 65536, 1), nn.BatchNorm2d(65536), nn.ReLU())
    model[1].weight.requires_grad_(False)
    s = summarize(model, (1, 32, 32), batch_size=64, device="meta")
    total, frozen = 4 * 65536, 65536
    in_bytes, act_bytes = 64 * 1024 * 4, 3 * 64 * 65536 * 1024 * 4  # conv, BN and ReLU outputs
    par_bytes, buf_bytes = 4 * total, 2 * 65536 * 4 + 8
    macs = 64 * 65536 * 1024  # C_out * C_in * 1 * 1 * H * W per sample: 4,294,967,296
    mib = 1024**2
    assert (s.model_name, s.to_dict()["non_trainable_params"]) == ("Sequential", frozen)
    lines = s.to_text().split("\n")
    for want in [f"Total params:          {total:,} (0.26 M)",
                 f"Trainable params:      {total - frozen:,}",
                 f"Non-trainable params:  {frozen:,}",
                 "Total MACs:            4.295 G (input (64, 1, 32, 32))",
                 f"Input size (MB):       {in_bytes / mib:.2f}",
                 f"Activations (MB):      {act_bytes / mib:.2f}  (leaf outputs, one forward pass)",
                 f"Params size (MB):      {par_bytes / mib:.2f}",
                 f"Buffers size (MB):     {buf_bytes / mib:.2f}",
                 f"Estimated total (MB):  {(in_bytes + act_bytes + par_bytes + buf_bytes) / mib:.2f}"]:
        assert want in lines, want
    assert s.total_macs == macs
    # The Params column is right-aligned under its title ("0" for the ReLU ends where "131,072" does),
    # and each rule spans the header: the four columns and three two-space gaps.
    header = next(line for line in lines if line.startswith("Layer (type)"))
    end = _column_end(header, "Params")
    rows = [line for line in lines if line.startswith(("0 (", "1 (", "2 ("))]
    assert [line[:end].split()[-1] for line in rows] == ["131,072", "131,072", "0"]
    assert lines[0] == "=" * len(header)
    # A label one character over max_name_width is cut; one at it is not.
    cut = s.to_text(max_name_width=len("1 (BatchNorm2d)") - 1).split("\n")
    assert any(line.startswith("1 (BatchNor...  ") for line in cut)


def test_macs_at_exactly_one_thousand_million_and_billion_take_the_larger_unit():
    """_human's thresholds are inclusive: 1,000 MACs read 1.00 K, not 1000. Hand counts: a Linear
    does in * out MACs per input row; b's second call sees 1000 rows."""

    class Sizes(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(1000, 1), nn.Linear(1000, 1000)

        def forward(self, x):  # (B, 1000, 1000)
            return self.a(x[:, 0]), self.b(x[:, 0]), self.b(x)

    with torch.device("meta"):
        model = Sizes()
    s = summarize(model, (1000, 1000), device="meta")
    assert [r.macs for r in s.rows] == [10**3, 10**6, 10**9]
    lines = s.to_text().split("\n")
    header = next(line for line in lines if line.startswith("Layer (type)"))
    shown = [line[:_column_end(header, "MACs")].split()[-2:] for line in lines if line.startswith(("a (", "b ("))]
    assert shown == [["1.00", "K"], ["1.00", "M"], ["1.000", "G"]]


def test_a_leaf_model_an_empty_table_and_an_output_without_tensors_still_print():
    """The model itself as the only row (torch names it ""), a forward that calls none of its
    children (no rows: the column widths come from the headers alone), and a module returning
    None (no shape: "-")."""

    class Idle(nn.Module):
        def __init__(self):
            super().__init__()
            self.unused = nn.Linear(4, 2)

        def forward(self, x):
            return 2 * x

    class Sink(nn.Module):
        def forward(self, x):
            return None

    class Logs(nn.Module):
        def __init__(self):
            super().__init__()
            self.sink = Sink()

        def forward(self, x):
            self.sink(x)
            return x

    def first_row(s):
        return s.to_text().split("\n")[3].split()

    assert first_row(summarize(nn.Linear(4, 2), (4,))) == ["(model)", "(Linear)", "[1,", "2]", "10", "8"]
    idle = summarize(Idle(), (4,))
    assert idle.rows == [] and "Total params:          10 (0.00 M)" in idle.to_text()
    logs = summarize(Logs(), (4,))
    assert logs.rows[0].output_shape == [] and first_row(logs) == ["sink", "(Sink)", "-", "0", "-"]


def test_a_module_returning_a_list_has_each_tensors_shape():
    """A list output, as a tuple's: each tensor's shape (torch.chunk returns a tuple; wrapped in a list here)."""

    class Halves(nn.Module):
        def forward(self, x):
            return list(x.chunk(2, dim=1))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.halves = Halves()

        def forward(self, x):
            return self.halves(x)[0]

    s = summarize(Net(), (6,), batch_size=3)
    assert s.rows[0].output_shape == [[3, 3], [3, 3]] and s.activation_bytes == 4 * 2 * 3 * 3


def test_the_pass_runs_in_eval_mode_without_autograd_as_documented():
    """"runs in eval mode under torch.no_grad()": read from inside the forward pass."""
    seen = []
    model = nn.Linear(2, 2).train()
    model.register_forward_hook(lambda m, a, o: seen.append((m.training, torch.is_grad_enabled(), o.requires_grad)))
    summarize(model, (2,))
    assert seen == [(False, False, False)] and model.training and torch.is_grad_enabled()


def test_a_containers_own_row_holds_its_own_parameters_not_those_of_a_child_never_called():
    """A layer-scale container with an auxiliary head its forward never calls: the container's row
    is its gamma alone, and the rows miss only the uncalled head (the docstring's "less any module
    the forward pass never calls"). Reference: torch's numel of each parameter."""

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.aux = nn.Conv2d(3, 4, 3), nn.Linear(10, 10)
            self.gamma = nn.Parameter(torch.ones(4, 1, 1))

        def forward(self, x):
            return self.conv(x) * self.gamma

    model = Scaled()
    s = summarize(model, (3, 8, 8))
    rows = {r.name: r.params for r in s.rows}
    assert rows == {"conv": sum(p.numel() for p in model.conv.parameters()), "": model.gamma.numel()}
    assert sum(rows.values()) == s.total_params - sum(p.numel() for p in model.aux.parameters())


def test_our_batchnorm1d_reads_scratchbatchnorm1d():
    """The 1d scratch BN must not read as torch's BatchNorm1d either."""
    from resnet_lab.nn import BatchNorm1d as ScratchBatchNorm1d

    s = summarize(nn.Sequential(nn.Linear(4, 3), ScratchBatchNorm1d(3)), (4,), batch_size=2)
    assert [r.type for r in s.rows] == ["Linear", "ScratchBatchNorm1d"]
