"""fuse_bn: the folded model computes what the unfolded one did, and only BN-after-conv is folded.

References: the unfolded model itself run by PyTorch (outputs), torchvision's ResNet (independent
model code), the layer counts of the papers (DenseNet's BN-ReLU-Conv composite, pre-activation
units), and a data-flow check by forward hooks that does not use torch.fx.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import Tensor, nn

import resnet_lab
from resnet_lab import nn as rnn
from resnet_lab.deploy import count_bn, fuse_bn, fuse_bn_with_report
from support import randomize_bn

BN = (nn.BatchNorm1d, nn.BatchNorm2d, rnn.BatchNorm1d, rnn.BatchNorm2d)


def rel_err(a: Tensor, b: Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def fold_and_compare(model: nn.Module, x: Tensor):
    """Fold ``model``'s batch norms (a copy) and return ``(relative error of its output on x, the
    folded model, the report)``."""
    with torch.no_grad():
        ref = model(x)
    fused, report = fuse_bn_with_report(model)
    with torch.no_grad():
        out = fused(x)
    return rel_err(out, ref), fused, report


def bns_fed_by_a_conv(model: nn.Module, x: Tensor) -> list[str]:
    """Names of BN modules whose input *is* the output tensor of a Conv/Linear module (forward hooks)."""
    produced: dict[int, str] = {}
    fed: list[str] = []
    keep: list[Tensor] = []  # keep tensors alive so ids are not reused
    handles = []
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            def out_hook(mod, inp, out, name=name):
                produced[id(out)] = name
                keep.append(out)
            handles.append(m.register_forward_hook(out_hook))
        elif isinstance(m, BN):
            def in_hook(mod, inp, name=name):
                if id(inp[0]) in produced:
                    fed.append(name)
            handles.append(m.register_forward_pre_hook(in_hook))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return fed


def zoo(name: str, norm: str = "batch", **kw) -> nn.Module:
    if not resnet_lab.models.is_model(name):
        pytest.skip(f"{name} is not registered")
    return resnet_lab.create_model(name, num_classes=10, in_channels=3, small_input=True, norm=norm, **kw)


# Every BN of these follows its conv directly (conv-BN-ReLU): all fold.
FULLY_FOLDABLE = {
    "resnet18": lambda norm: zoo("resnet18", norm),
    "resnet50": lambda norm: zoo("resnet50", norm),
    "resnet20": lambda norm: zoo("resnet20", norm),
    "vgg11_bn": lambda norm: zoo("vgg11_bn", norm, hidden_dim=32, pool_size=1),
    "googlenet": lambda norm: zoo("googlenet", norm),
}


@pytest.mark.parametrize("name", list(FULLY_FOLDABLE))
def test_fused_zoo_model_matches_unfolded_in_float64_and_leaves_no_bn(name):
    model = randomize_bn(FULLY_FOLDABLE[name]("batch")).eval().double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    err, fused, report = fold_and_compare(model, x)
    assert err < 1e-10
    assert count_bn(fused) == 0 and report.unfolded == []
    assert len(report.folded) == count_bn(model)
    assert type(fused) is type(model)  # module changed in place, not replaced by an fx GraphModule


@pytest.mark.parametrize("name", ["resnet18", "resnet20", "googlenet"])
def test_fused_zoo_model_with_scratch_bn_matches_unfolded_in_float32(name):
    model = randomize_bn(FULLY_FOLDABLE[name]("scratch"), seed=1).eval()
    assert any(isinstance(m, rnn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        ref = model(x)
    fused = fuse_bn(model)
    with torch.no_grad():
        out = fused(x)
    assert rel_err(out, ref) < 1e-5
    assert count_bn(fused) == 0


def test_fused_torchvision_resnet18_matches_unfolded_in_float32():
    # torchvision's code is independent of ours: the fx analysis must not depend on our names.
    model = randomize_bn(torchvision.models.resnet18(num_classes=10), seed=2).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    fused = fuse_bn(model)
    with torch.no_grad():
        out = fused(x)
    assert rel_err(out, ref) < 1e-5
    assert count_bn(fused) == 0
    assert sum(isinstance(m, nn.Identity) for m in fused.modules()) == 20  # 17 conv-bn + 3 downsample


@pytest.mark.parametrize("norm, dtype, tol", [("batch", torch.float64, 1e-10), ("scratch", torch.float32, 1e-5)])
def test_densenet121_folds_only_bn_after_conv_and_keeps_bn_relu_conv(norm, dtype, tol):
    model = randomize_bn(zoo("densenet121", norm), seed=3).eval().to(dtype)
    x = torch.randn(1, 3, 16, 16, dtype=dtype)
    err, fused, report = fold_and_compare(model, x)
    assert err < tol
    # Huang et al. 2017, Table 1: blocks of 6, 12, 24, 16 BN-ReLU-Conv layers. norm1 of each layer,
    # the norm of 3 transitions and norm5 see a concatenation: kept; norm0 and each norm2 follow a conv.
    layers = 6 + 12 + 24 + 16
    assert count_bn(fused) == layers + 3 + 1
    assert len(report.folded) == 1 + layers
    assert all(n.endswith(("norm1", "transition1.norm", "transition2.norm", "transition3.norm", "norm5")) for n in report.unfolded_names)
    assert bns_fed_by_a_conv(fused, x) == []  # what remains is not fed by a conv


def test_preact_resnet110_keeps_bn_before_conv_and_reports_it():
    model = randomize_bn(zoo("preact_resnet110"), seed=4).eval().double()
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    err, fused, report = fold_and_compare(model, x)
    assert err < 1e-10
    # He et al. 2016 (Identity Mappings), full pre-activation unit: BN-ReLU-conv-BN-ReLU-conv.
    # bn2 follows conv1 and folds; bn1 sees the sum (or the stem conv that also feeds the identity
    # shortcut) and stays, as does the final BN after the last sum. 110 = 6 * 18 + 2: 54 blocks.
    assert count_bn(fused) == 54 + 1
    assert sorted(report.unfolded_names) == sorted(
        [f"layer{s}.{b}.bn1" for s in (1, 2, 3) for b in range(18)] + ["bn_final"]
    )
    assert all(bn.endswith("bn2") for _, bn in report.folded)
    # the only kept BN fed by a conv is the first block's: the stem conv output is also the shortcut
    assert bns_fed_by_a_conv(fused, x) == ["layer1.0.bn1"]


def test_wide_resnet_with_scratch_bn_folds_first_bn1_when_the_shortcut_is_a_projection():
    model = randomize_bn(zoo("wrn16_4", "scratch"), seed=8).eval()
    x = torch.randn(2, 3, 16, 16)
    err, fused, report = fold_and_compare(model, x)
    assert err < 1e-5
    # Zagoruyko & Komodakis 2016: the first block of each stage widens (16 -> 64 -> 128 -> 256), so its
    # shortcut is a 1x1 conv of the *pre-activated* input: the stem conv feeds only layer1.0.bn1,
    # which therefore folds. The other bn1 follow a sum and stay, with the final BN.
    assert sorted(report.unfolded_names) == sorted(
        ["layer1.1.bn1", "layer2.0.bn1", "layer2.1.bn1", "layer3.0.bn1", "layer3.1.bn1", "bn_final"]
    )
    assert ("conv1", "layer1.0.bn1") in report.folded
    assert bns_fed_by_a_conv(fused, x) == []


def test_fused_model_keeps_forward_features_and_head():
    model = randomize_bn(zoo("resnet20"), seed=5).eval()
    x = torch.randn(2, 3, 16, 16)
    fused = fuse_bn(model)
    with torch.no_grad():
        assert rel_err(fused.forward_features(x), model.forward_features(x)) < 1e-5
        feats = model.forward_features(x)
        assert rel_err(fused.forward_head(feats, pre_logits=True), model.forward_head(feats, pre_logits=True)) < 1e-6
    assert fused.get_classifier() is fused.fc


def test_fuse_does_not_change_the_input_model_unless_inplace():
    model = randomize_bn(zoo("resnet20")).eval()
    n = count_bn(model)
    fuse_bn(model)
    assert count_bn(model) == n
    same = fuse_bn(model, inplace=True)
    assert same is model and count_bn(model) == 0


@pytest.mark.parametrize("sync", ["torch", "ours"])
def test_synchronized_batch_norms_fold_like_plain_ones_and_are_counted(sync):
    # A model converted for torchrun (SyncBatchNorm) and saved: in eval mode each layer is the
    # same affine map. They were neither counted nor folded ("folded 0 of 0").
    model = randomize_bn(zoo("resnet20"), seed=3).eval()
    n = count_bn(model)
    synced = (nn.SyncBatchNorm.convert_sync_batchnorm(model) if sync == "torch"
              else rnn.convert_sync_batchnorm(model, "cpu"))
    kind = nn.SyncBatchNorm if sync == "torch" else rnn.SyncBatchNorm
    assert sum(isinstance(m, kind) for m in synced.modules()) == n == count_bn(synced)
    x = torch.randn(2, 3, 16, 16)
    err, fused, report = fold_and_compare(synced, x)
    assert err < 1e-5
    assert len(report.folded) == n and report.unfolded == [] and count_bn(fused) == 0
    with pytest.raises(RuntimeError, match=r"model\.eval\(\)"):
        fuse_bn(synced.train())


def test_training_mode_model_raises_clear_error():
    model = zoo("resnet20").train()
    with pytest.raises(RuntimeError, match=r"model\.eval\(\)"):
        fuse_bn(model)


# --- hand-built nets: Linear -> BatchNorm1d, and the fallback when torch.fx cannot trace ---------


class ConvLinearNet(nn.Module):
    def __init__(self, bn2d=nn.BatchNorm2d, bn1d=nn.BatchNorm1d, branch: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=True)  # a conv with its own bias
        self.bn1 = bn2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = bn2d(8)
        self.fc1 = nn.Linear(8, 16)
        self.bn3 = bn1d(16)
        self.fc2 = nn.Linear(16, 4)
        self.branch = branch

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        if self.branch and bool(x.sum() > -1e30):  # data-dependent Python branch: fx cannot trace it
            x = x * 1.0
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return self.fc2(torch.relu(self.bn3(self.fc1(x))))


@pytest.mark.parametrize("branch", [False, True], ids=["fx", "module-order"])
@pytest.mark.parametrize("scratch", [False, True], ids=["torch-bn", "scratch-bn"])
def test_conv_and_linear_followed_by_bn_fold_exactly_with_fx_and_fallback(branch, scratch):
    kw = dict(bn2d=rnn.BatchNorm2d, bn1d=rnn.BatchNorm1d) if scratch else {}
    model = randomize_bn(ConvLinearNet(branch=branch, **kw), seed=6).eval().double()
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
    fused, report = fuse_bn_with_report(model, example_input=x)
    assert report.method == ("module-order" if branch else "fx")
    assert sorted(report.folded) == [("conv1", "bn1"), ("conv2", "bn2"), ("fc1", "bn3")]
    with torch.no_grad():
        assert rel_err(fused(x), ref) < 1e-10
    assert count_bn(fused) == 0


class MisorderedUntraceableNet(nn.Module):
    """Registers conv before bn, but runs bn BEFORE conv: a module-order guess would be wrong."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        if bool(x.sum() > -1e30):
            x = torch.relu(x)
        return self.conv1(torch.relu(self.bn1(x)))


def test_fallback_heuristic_that_changes_the_output_raises_instead_of_returning_a_wrong_model():
    model = randomize_bn(MisorderedUntraceableNet(), seed=7).eval()
    with pytest.raises(RuntimeError, match="changed its output"):
        fuse_bn(model, example_input=torch.randn(2, 3, 8, 8))
    assert isinstance(model.bn1, nn.BatchNorm2d)  # left as it was


def test_bn_without_running_stats_is_kept_and_reported():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    fused, report = fuse_bn_with_report(model)
    assert report.folded == [] and report.unfolded_names == ["1"]
    assert "running statistics" in report.unfolded[0][1]
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        assert torch.allclose(fused(x), model(x))


def test_a_linear_bn1d_fold_is_right_on_2d_input_and_refuses_3d_input_where_it_would_be_wrong():
    # A Linear acts on the last dim, BatchNorm1d on dim 1: on (N, L, F) input with L == F the
    # widths match but the fold is not the same function, and no module says which input comes.
    model = randomize_bn(nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8)), seed=8).eval().double()
    fused, report = fuse_bn_with_report(model)
    assert report.folded == [("0", "1")]
    flat = torch.randn(5, 8, dtype=torch.float64)
    with torch.no_grad():
        assert rel_err(fused(flat), model(flat)) < 1e-12
        with pytest.raises(ValueError, match=r"\(N, C\) input only, got shape \(5, 8, 8\)"):
            fused(torch.randn(5, 8, 8, dtype=torch.float64))
        model(torch.randn(5, 8, 8, dtype=torch.float64))  # the unfolded model takes it


def test_a_conv_whose_weight_is_tied_to_another_module_is_not_folded():
    # Folding writes the weight in place, which would change the module it is tied to as well.
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
            self.conv2, self.bn2 = nn.Conv2d(3, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
            self.conv3 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
            self.conv3.weight = self.conv1.weight

        def forward(self, x: Tensor) -> Tensor:
            x = self.conv3(torch.relu(self.bn1(self.conv1(x))))
            return self.bn2(self.conv2(x))

    model = randomize_bn(Tied(), seed=9).eval().double()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    fused, report = fuse_bn_with_report(model)
    assert report.folded == [("conv2", "bn2")]
    assert dict(report.unfolded)["bn1"] == "the weights of conv1 are tied to another module's"
    with torch.no_grad():
        assert rel_err(fused(x), model(x)) < 1e-12
    assert fused.conv3.weight is fused.conv1.weight


def test_the_fallbacks_own_example_input_leaves_the_callers_global_rng_as_it_was():
    """Without example_input the module-order check drew its batch from the global RNG."""
    model = randomize_bn(ConvLinearNet(branch=True), seed=6).eval()
    torch.manual_seed(3)
    want = torch.rand(4)
    torch.manual_seed(3)
    fused, report = fuse_bn_with_report(model)
    assert report.method == "module-order" and len(report.folded) == 3
    assert torch.equal(torch.rand(4), want)
