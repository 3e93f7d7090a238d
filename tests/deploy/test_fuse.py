"""fuse_bn: the folded model computes what the unfolded one did, and only BN-after-conv is folded.

References: the unfolded model itself run by PyTorch (outputs), torchvision's ResNet (independent
model code), the layer counts of the papers (DenseNet's BN-ReLU-Conv composite, pre-activation
units), and a data-flow check by forward hooks that does not use torch.fx.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

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
    # conv -> max-pool -> BN in the stem: randomize_bn's scales are positive, so it folds across the pool
    "resnet8_prepool": lambda norm: zoo("resnet8_prepool", norm),
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


class MisorderedTupleNet(MisorderedUntraceableNet):
    """Returns ``(output, features)`` as a model with an auxiliary output may: the features (the
    stem's output, pooled) are the same whatever is folded, so only the first element shows the wrong fold."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return super().forward(x), self.stem(x).mean((2, 3))


@pytest.mark.parametrize("build", [MisorderedUntraceableNet, MisorderedTupleNet], ids=["tensor", "tuple"])
def test_fallback_heuristic_that_changes_the_output_raises_instead_of_returning_a_wrong_model(build):
    model = randomize_bn(build(), seed=7).eval()
    with pytest.raises(RuntimeError, match="changed its output"):
        fuse_bn(model, example_input=torch.randn(2, 3, 8, 8))
    assert isinstance(model.bn1, nn.BatchNorm2d)  # left as it was



@pytest.mark.parametrize("dtype, shift, low, high", [(torch.float32, 0.01, 0.005, 0.05), (torch.bfloat16, 0.1, 0.1, 0.5)],
                         ids=["float32", "bfloat16"])
def test_a_misordered_fold_that_moves_the_output_by_a_few_percent_is_refused_too(dtype, shift, low, high):
    # The check's tolerance is 1e-3 of the output's scale (5e-2 in bfloat16, whose rounding alone is
    # ~1e-2): a wrong pairing whose BN is nearly the identity (a shift of 0.01 only; 0.1 in bfloat16)
    # moves the output by a few percent (a tenth or more), which is no rounding error.
    model = MisorderedUntraceableNet().eval().to(dtype)
    with torch.no_grad():
        model.bn1.bias.fill_(shift)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).to(dtype)
    guess = copy.deepcopy(model)  # the heuristic's pairing, folded by torch's own function
    guess.conv1, guess.bn1 = fuse_conv_bn_eval(guess.conv1, guess.bn1), nn.Identity()
    with torch.no_grad():
        assert low < rel_err(guess(x).double(), model(x).double()) < high  # the premise: wrong, but not by much
    with pytest.raises(RuntimeError, match="changed its output"):
        fuse_bn(model, example_input=x)

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


# --- edges the mutation probe found unguarded --------------------------------------------------


def test_a_bn_without_affine_parameters_folds_as_scale_one_and_shift_zero():
    # affine=False: gamma 1, beta 0 (torch's BatchNorm). The reference: the unfolded model.
    model = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4, affine=False),
                                       nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, affine=False)), seed=10).eval().double()
    err, fused, report = fold_and_compare(model, torch.randn(2, 3, 8, 8, dtype=torch.float64))
    assert report.folded == [("0", "1"), ("2", "3")] and err < 1e-10


@pytest.mark.parametrize("conv, bn, shape", [
    (nn.Conv1d, nn.BatchNorm1d, (2, 3, 9)),
    (nn.Conv3d, nn.BatchNorm3d, (2, 3, 5, 6, 4)),
], ids=["conv1d-bn1d", "conv3d-bn3d"])
def test_conv1d_and_conv3d_followed_by_their_bn_fold_exactly(conv, bn, shape):
    # docs/DEPLOY.md: a BN folds into a Conv1d/2d/3d of its width. The reference: the unfolded model.
    model = randomize_bn(nn.Sequential(conv(3, 4, 3, bias=False), bn(4), nn.ReLU(), conv(4, 5, 1), bn(5)),
                         seed=14).eval().double()
    err, fused, report = fold_and_compare(model, torch.randn(shape, dtype=torch.float64))
    assert report.folded == [("0", "1"), ("3", "4")] and err < 1e-10 and count_bn(fused) == 0


def test_the_bias_a_fold_creates_is_as_trainable_as_the_convs_weight():
    # a conv without bias gets one; a frozen model must not come back with trainable biases
    for frozen in (False, True):
        model = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4))).eval()
        model.requires_grad_(not frozen)
        fused = fuse_bn(model)
        assert fused[0].bias is not None and fused[0].bias.requires_grad is (not frozen)


class LinearOnWidthThenBN2d(nn.Module):
    """A Linear on the last dim (W) feeding a BatchNorm2d over dim 1 (C) of the same size: the
    widths match, but the BN does not normalize the Linear's outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.fc(x))


class SharedBN(nn.Module):
    """One BN module after two convs: folding it into either would remove it from the other."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv1(x)) + torch.relu(self.bn(torch.relu(self.conv2(x))))


class SharedConv(nn.Module):
    """One conv called twice, a BN after its first call only: the fold would change the second call."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(torch.relu(self.bn(self.conv(x))))


class AliasedBN(nn.Module):
    """The BN registered under two names, forward calling the second: replacing the first name by
    an Identity would leave the BN in place after a conv that already holds it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.norm = self.bn

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(self.conv(x))


@pytest.mark.parametrize("build, channels, kept, reason", [
    (LinearOnWidthThenBN2d, 4, "bn", "a BatchNorm2d after the Linear fc: only a BatchNorm1d, which normalizes a "
                                     "Linear's features, folds into it"),
    (SharedBN, 3, "bn", "called 2 times in forward(): shared module"),
    (SharedConv, 4, "bn", "its conv conv is called 2 times (shared)"),
    (AliasedBN, 3, "bn", "module registered under several names (shared)"),
], ids=["linear-then-bn2d", "bn-called-twice", "conv-called-twice", "bn-under-two-names"])
def test_a_bn_whose_fold_would_change_another_path_is_kept_with_its_reason(build, channels, kept, reason):
    # docs/DEPLOY.md, "What decides a fold": same width, neither module called twice or registered
    # under two names. The reference: the unfolded model's output.
    model = randomize_bn(build(), seed=11).eval().double()
    err, fused, report = fold_and_compare(model, torch.randn(2, channels, 6, 4, dtype=torch.float64))
    assert report.folded == [] and report.unfolded == [(kept, reason)]
    assert err < 1e-12 and count_bn(fused) == 1


class ConvPoolBN(nn.Module):
    """conv -> max-pool -> BN, as resnet8_prepool's stem; ``also_read``: the pooled map is read
    un-normalized by a second path too."""

    def __init__(self, also_read: bool = False) -> None:
        super().__init__()
        self.conv, self.pool, self.bn = nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(3, 2, padding=1), nn.BatchNorm2d(4)
        self.also_read = also_read

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool(self.conv(x))
        return self.bn(pooled) + pooled if self.also_read else self.bn(pooled)


def test_a_bn_after_a_max_pool_folds_into_the_conv_only_when_every_scale_is_non_negative():
    # max(s x + t) = s max(x) + t for s >= 0 (docs/DEPLOY.md); a negative s turns the max into a min.
    # The reference: the unfolded model's output, in float64.
    x = torch.randn(2, 3, 9, 7, dtype=torch.float64)
    model = randomize_bn(ConvPoolBN(), seed=12).eval().double()
    with torch.no_grad():
        model.bn.weight[1] = 0.0  # a zero scale commutes too: max(t) = t
    err, fused, report = fold_and_compare(model, x)
    assert err < 1e-12 and count_bn(fused) == 0
    assert report.folded == [("conv", "bn")] and report.across_pool == {"bn": "pool"}
    assert "1 of them across a max-pool, which commutes with a BN whose scales are all >= 0 (bn after pool)" in (
        report.summary())
    with torch.no_grad():
        model.bn.weight[2] = -0.7
    err, fused, report = fold_and_compare(model, x)
    assert err < 1e-12 and count_bn(fused) == 1 and report.folded == []
    assert report.unfolded == [("bn", "input is MaxPool2d pool, and 1 of its 4 scales gamma / sqrt(var + eps) are "
                                      "negative: max-pooling commutes only with a non-negative scale")]
    assert "across a max-pool" not in report.summary()
    model = randomize_bn(ConvPoolBN(also_read=True), seed=12).eval().double()
    err, fused, report = fold_and_compare(model, x)
    assert err < 1e-12 and report.unfolded == [("bn", "input is MaxPool2d pool, whose output also feeds another op")]


@pytest.mark.parametrize("layer, pool, bn, shape", [
    (nn.Linear(6, 6), nn.MaxPool1d(3, 1, padding=1), nn.BatchNorm1d(6), (5, 6)),  # pools (N, F) across features
    (nn.Conv2d(3, 4, 1), nn.MaxPool3d((3, 1, 1), 1, padding=(1, 0, 0)), nn.BatchNorm2d(4), (4, 3, 5, 5)),  # across C
], ids=["linear-pool1d", "conv2d-pool3d"])
def test_a_bn_after_a_max_pool_that_mixes_channels_is_kept(layer, pool, bn, shape):
    # Moving a per-channel scale before a max over several channels changes the function: the
    # reference is the unfolded model.
    model = randomize_bn(nn.Sequential(layer, pool, bn), seed=13).eval().double()
    err, fused, report = fold_and_compare(model, torch.randn(shape, dtype=torch.float64))
    assert err < 1e-12 and report.folded == [] and count_bn(fused) == 1
    assert report.unfolded[0][1].startswith(f"input is {type(pool).__name__} 1, not a Conv/Linear output")


def test_a_bn1d_over_another_dim_than_the_linears_outputs_is_kept_naming_both_widths():
    # (N, 7, 6) -> Linear(6, 5) -> (N, 7, 5): BatchNorm1d(7) normalizes dim 1, not the 5 outputs
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.bn = nn.Linear(6, 5), nn.BatchNorm1d(7)

        def forward(self, x: Tensor) -> Tensor:
            return self.bn(self.fc(x))

    model = randomize_bn(Net(), seed=3).eval().double()
    err, fused, report = fold_and_compare(model, torch.randn(2, 7, 6, dtype=torch.float64))
    assert report.folded == [] and report.unfolded == [("bn", "width mismatch with fc (5 outputs, 7 BN features)")]
    assert err < 1e-12 and count_bn(fused) == 1


def test_a_bn_forward_never_calls_and_one_on_the_model_input_are_kept_and_say_why():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bn_in, self.conv = nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3)
            self.bn, self.spare = nn.BatchNorm2d(4), nn.BatchNorm2d(4)

        def forward(self, x: Tensor) -> Tensor:
            return self.bn(self.conv(self.bn_in(x)))

    _, report = fuse_bn_with_report(randomize_bn(Net()).eval())
    assert report.folded == [("conv", "bn")]
    assert dict(report.unfolded) == {
        "bn_in": "input is the model input, not a Conv/Linear output (e.g. BN-ReLU-conv order)",
        "spare": "not called by forward()"}


def test_the_summary_counts_every_bn_and_lists_four_names_per_reason_then_how_many_more():
    # 6 BNs without running statistics (kept, one reason) and one that folds: "folded 1 of 7"
    layers: list[nn.Module] = [nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)]
    for _ in range(6):
        layers += [nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3, track_running_stats=False)]
    _, report = fuse_bn_with_report(nn.Sequential(*layers).eval())
    lines = report.summary().splitlines()
    assert lines[0] == "folded 1 of 7 batch-norm layers into the preceding conv/linear (fx)"
    assert lines[1] == ("  kept 6: no running statistics (track_running_stats=False): uses batch statistics in eval "
                        "(3, 5, 7, 9 and 2 more)") and len(lines) == 2
    # only kept BNs: still "folded 0 of 1", not "no batch-norm layer"
    none = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3, track_running_stats=False)).eval()
    assert fuse_bn_with_report(none)[1].summary().splitlines()[0].startswith("folded 0 of 1 batch-norm layers")
    # the module-order fallback says so, with the reason torch.fx gave
    untraceable = randomize_bn(ConvLinearNet(branch=True)).eval()
    _, report = fuse_bn_with_report(untraceable, example_input=torch.randn(2, 3, 8, 8))
    lines = report.summary().splitlines()
    assert lines[0] == "folded 3 of 3 batch-norm layers into the preceding conv/linear (module-order)"
    assert lines[1].startswith(f"  torch.fx could not trace the model ({report.fx_error}); used the module-order")


class PreactUntraceable(nn.Module):
    """bn1 registered (and run) before conv1, the pre-activation order, in a model fx cannot trace;
    bn2 runs after conv2, but conv3 (of another width) is registered between them."""

    def __init__(self) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1)
        self.conv2, self.conv3, self.bn2 = nn.Conv2d(4, 6, 1), nn.Conv2d(6, 8, 1), nn.BatchNorm2d(6)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(torch.relu(self.bn1(x)))
        if bool(x.sum() > -1e30):  # data-dependent Python branch: fx cannot trace it
            x = torch.relu(x)
        return self.conv3(torch.relu(self.bn2(self.conv2(x))))


class InputBNUntraceable(nn.Module):
    """bn_in, registered first, normalizes the model input; the last module registered is a conv of
    its width (3): "right before" the first child is nothing, not the last one."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_in, self.conv1, self.bn1 = nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.head = nn.Conv2d(4, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn1(self.conv1(self.bn_in(x)))
        if bool(x.sum() > -1e30):  # data-dependent Python branch: fx cannot trace it
            x = torch.relu(x)
        return self.head(x)


class NormByNameUntraceable(nn.Module):
    """Both convs registered before both norms, as a model that names its layers by role may: norm1
    follows conv2 (another width) and pairs with conv1 by name; norm2 runs after norm1, and its
    namesake conv2 is of another width (6 outputs, 4 features), so it pairs with nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 1)
        self.norm1, self.norm2 = nn.BatchNorm2d(4), nn.BatchNorm2d(4)

    def forward(self, x: Tensor) -> Tensor:
        x = self.norm1(self.conv1(x))
        if bool(x.sum() > -1e30):  # data-dependent Python branch: fx cannot trace it
            x = torch.relu(x)
        return self.conv2(self.norm2(x))


@pytest.mark.parametrize("build, channels, pair, kept", [
    (PreactUntraceable, 4, ("conv2", "bn2"), "bn1"),
    (InputBNUntraceable, 3, ("conv1", "bn1"), "bn_in"),
    (NormByNameUntraceable, 3, ("conv1", "norm1"), "norm2"),
], ids=["bn-before-conv-and-after-another-width", "first-child-bn", "normK-by-name-only-of-its-width"])
def test_the_module_order_fallback_pairs_neither_a_bn_before_its_conv_nor_one_after_another_width(
        build, channels, pair, kept):
    # docs/DEPLOY.md: right after a Conv/Linear *of its width*, or convK registered *before* bnK
    # (normK too, as torchvision's DenseNet names them), of its width as well
    model = randomize_bn(build(), seed=12).eval().double()
    x = torch.randn(2, channels, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        ref = model(x)
    fused, report = fuse_bn_with_report(model, example_input=x)
    assert report.method == "module-order" and report.folded == [pair]
    assert report.unfolded == [(kept, "no Conv/Linear registered right before it (module-order heuristic)")]
    with torch.no_grad():
        assert rel_err(fused(x), ref) < 1e-12


def test_a_model_with_one_bn_left_in_training_mode_is_refused_and_the_bn_named():
    model = zoo("resnet20").eval()
    model.layer2[1].bn2.train()  # model.training is False: the BN's own mode counts
    with pytest.raises(RuntimeError, match=r"1 BN layer\(s\) are in training mode \(first: 'layer2.1.bn2'\)"):
        fuse_bn(model)


class SizedUntraceable(ConvLinearNet):
    """ConvLinearNet that takes only (1, 32, 32) input, as model_config says (a model trained at that
    size with a size check); fx cannot trace it."""

    model_config = {"name": "sized", "in_channels": 1, "small_input": True}

    def __init__(self) -> None:
        super().__init__(branch=True)
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        if tuple(x.shape[1:]) != (1, 32, 32):
            raise ValueError(f"expected (N, 1, 32, 32), got {tuple(x.shape)}")
        return super().forward(x)


def test_the_fallbacks_check_uses_the_example_input_given_else_one_shaped_from_model_config():
    # docs/DEPLOY.md: "checked on an example input (example_input=, or a random batch shaped from
    # model.model_config)"; small_input: 32 px
    model = randomize_bn(SizedUntraceable(), seed=13).eval()
    x = torch.randn(2, 1, 32, 32)
    for fused in (fuse_bn(model), fuse_bn(model, example_input=x)):
        with torch.no_grad():
            assert rel_err(fused(x), model(x)) < 1e-5 and count_bn(fused) == 0
    plain = randomize_bn(ConvLinearNet(branch=True)).eval()  # the example given is the one tried
    with pytest.raises(RuntimeError, match=r"failed on an example input of shape \(2, 5, 8, 8\).*Pass example_input="):
        fuse_bn(plain, example_input=torch.randn(2, 5, 8, 8))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False], ids=["conv-bias", "no-bias"])
def test_a_fold_is_torchs_fuse_conv_bn_eval_done_in_float64_and_cast_to_the_layers_dtype(dtype, bias):
    """The module's contract: the fold's arithmetic is done in float64 and cast back. Reference:
    torch.nn.utils.fusion.fuse_conv_bn_eval on float64 copies, then cast. Statistics drawn in float64
    (not float32 values widened), variances near the non-default eps, so eps counts, and scales of
    either sign (support.randomize_bn draws positive ones only)."""
    g = torch.Generator().manual_seed(9)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, bias=bias), nn.BatchNorm2d(16, eps=1e-3)).eval().to(dtype)
    with torch.no_grad():
        for buf, value in ((model[1].running_mean, torch.randn(16, generator=g, dtype=torch.float64)),
                           (model[1].running_var, torch.rand(16, generator=g, dtype=torch.float64) * 1e-2),
                           (model[1].weight, torch.randn(16, generator=g, dtype=torch.float64)),  # negative scales too
                           (model[1].bias, torch.randn(16, generator=g, dtype=torch.float64))):
            buf.copy_(value)
    want = fuse_conv_bn_eval(copy.deepcopy(model[0]).double(), copy.deepcopy(model[1]).double())
    fused = fuse_bn(model)
    assert isinstance(fused[1], nn.Identity) and fused[0].weight.dtype == dtype
    exact = dict(rtol=0.0, atol=0.0) if dtype == torch.float32 else dict(rtol=1e-13, atol=1e-13)  # rsqrt vs 1/sqrt
    torch.testing.assert_close(fused[0].weight, want.weight.to(dtype), **exact)
    torch.testing.assert_close(fused[0].bias, want.bias.to(dtype), **exact)


# --- edges the second mutation pass found unguarded ---------------------------------------------


def test_a_right_module_order_fold_in_bfloat16_passes_its_check_within_bfloat16_rounding():
    # the other side of the bfloat16 tolerance above: folding in float64 then rounding to bfloat16
    # differs from the unfolded bfloat16 model by its rounding (~1e-2 of the output), no more.
    # The reference: the unfolded model in float64.
    model = randomize_bn(ConvLinearNet(branch=True), seed=6).eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(x.double())
    fused, report = fuse_bn_with_report(model.bfloat16(), example_input=x.bfloat16())
    assert report.method == "module-order" and len(report.folded) == 3 and count_bn(fused) == 0
    with torch.no_grad():
        assert rel_err(fused(x.bfloat16()).double(), ref) < 3e-2


class AliasedConvPoolBN(ConvPoolBN):
    """ConvPoolBN whose conv is registered under a second name: the BN after its pool is kept."""

    def __init__(self) -> None:
        super().__init__()
        self.alias = self.conv


def test_a_bn_after_a_max_pool_kept_for_a_shared_conv_is_not_reported_as_folded_across_it():
    # FuseReport's docstring: across_pool names *folded* BNs that read a max-pool; a pair the fx plan
    # found but that was kept (the conv registered twice) must not stay in it, nor in the summary.
    model = randomize_bn(AliasedConvPoolBN(), seed=12).eval().double()
    err, fused, report = fold_and_compare(model, torch.randn(2, 3, 9, 7, dtype=torch.float64))
    assert report.folded == [] and report.unfolded == [("bn", "module registered under several names (shared)")]
    assert report.across_pool == {} and "max-pool" not in report.summary()
    assert err < 1e-12 and count_bn(fused) == 1
