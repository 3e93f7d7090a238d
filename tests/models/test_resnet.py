"""The ResNet family against independent references: torchvision's models, the papers' parameter
counts, and float64 recomputations of blocks by hand."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from resnet_lab.models import create_model
from resnet_lab.models.resnet import (BasicBlock, Bottleneck, CifarResNet, PreActBasicBlock, PreActBottleneck,
                                     PreActResNet, ResNet, ZeroPadShortcut)
from support import init_differences, randomize_bn, std_off

IMAGENET = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------
# ImageNet ResNets vs torchvision
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", IMAGENET)
def test_torchvision_state_dict_loads_strictly_and_gives_identical_outputs(name):
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None)
    randomize_bn(ref)
    ours = create_model(name)
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert n_params(ours) == n_params(ref)
    ref.eval(), ours.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_zero_init_residual_zeroes_the_same_parameters_as_torchvision(name):
    ref = getattr(torchvision.models, name)(weights=None, zero_init_residual=True)
    ours = create_model(name, zero_init_residual=True)
    ref_zero = {k for k, v in ref.state_dict().items() if v.dtype.is_floating_point and not v.any()}
    ours_zero = {k for k, v in ours.state_dict().items() if v.dtype.is_floating_point and not v.any()}
    assert ours_zero == ref_zero


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_initial_weights_are_drawn_as_torchvisions_layer_by_layer(name):
    """The docstring's promise, "torchvision's initialisation": every tensor's spread (He-normal
    over fan_out for convs, torch's default for fc) or constant (BN 1/0) is torchvision's."""
    torch.manual_seed(0)
    ref = getattr(torchvision.models, name)(weights=None)
    torch.manual_seed(1)
    assert init_differences(create_model(name), ref) == {}


@pytest.mark.parametrize("name,kwargs", [("resnet20", {"shortcut": "B"}), ("plain20", {}), ("resnet8_fast", {}),
                                         ("preact_resnet164", {}), ("wrn16_4", {})])
def test_every_conv_of_the_cifar_families_is_he_normal_over_its_fan_out(name, kwargs):
    """He et al. 2015 ("Delving Deep into Rectifiers", eq. 14 for the backward pass): std
    sqrt(2 / (out_channels * k * k)), as torchvision; checked on the convs whose in and out
    channels differ too (fan_in there would give another std), which every family has."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, **kwargs)
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert any(m.in_channels != m.out_channels for _, m in convs)
    off = {n: why for n, m in convs
           if (why := std_off(m.weight, (2 / (m.out_channels * m.kernel_size[0] * m.kernel_size[1])) ** 0.5))}
    assert off == {}


@pytest.mark.parametrize("name,kwargs", [("resnet20", {"shortcut": "none"}), ("resnet20", {"shortcut": "B"}),
                                         ("resnet20", {})])
def test_zero_init_residual_on_a_net_without_shortcuts_is_refused_not_ignored(name, kwargs):
    # A plain net has nothing to zero: the option used to be recorded in the config and do nothing.
    torch.manual_seed(1)
    plain = create_model(name, **kwargs)
    if kwargs.get("shortcut") == "none":
        with pytest.raises(ValueError, match="zero_init_residual=True needs residual blocks"):
            create_model(name, zero_init_residual=True, **kwargs)
        return
    torch.manual_seed(1)
    zeroed = create_model(name, zero_init_residual=True, **kwargs)
    changed = [k for k, v in plain.state_dict().items() if not torch.equal(v, zeroed.state_dict()[k])]
    assert changed and all(k.endswith("bn2.weight") for k in changed)


def test_reset_classifier_takes_numpy_ints_as_create_model_does_and_refuses_bools():
    import numpy as np

    model = create_model("resnet20")
    model.reset_classifier(np.int64(5))
    assert type(model.num_classes) is int and model.fc.out_features == 5
    for bad in (True, -1, 2.0, "3"):
        with pytest.raises(ValueError, match=f"num_classes must be a non-negative int.*got {bad!r}"):
            model.reset_classifier(bad)
    vgg = create_model("vgg11_bn")
    vgg.reset_classifier(np.int16(3))
    assert vgg.classifier[-1].out_features == 3
    with pytest.raises(ValueError, match="got True"):
        vgg.reset_classifier(True)


def test_in_channels_1_sets_conv1_and_runs_grayscale():
    model = create_model("resnet18", in_channels=1, num_classes=7).eval()
    assert model.conv1.weight.shape == (64, 1, 7, 7)
    with torch.no_grad():
        assert model(torch.randn(2, 1, 64, 64)).shape == (2, 7)


def test_small_input_matches_torchvision_with_3x3_stem_and_no_maxpool():
    # The usual CIFAR adaptation of torchvision's ResNet, done by hand on torchvision's model.
    ref = torchvision.models.resnet18(weights=None, num_classes=10)
    ref.conv1 = nn.Conv2d(3, 64, 3, stride=1, padding=1, bias=False)
    ref.maxpool = nn.Identity()
    randomize_bn(ref)
    ours = create_model("resnet18", num_classes=10, small_input=True)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.eval(), ours.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)
        assert ours.forward_features(x).shape == (2, 512, 4, 4)  # 32 / 8


def test_forward_head_pre_logits_is_the_spatial_mean_and_reset_classifier_changes_outputs():
    model = create_model("resnet20", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats = model.forward_features(x)
        assert feats.shape == (2, 64, 8, 8)  # the paper's 32 -> 16 -> 8 maps, 64 channels
        torch.testing.assert_close(model.forward_head(feats, pre_logits=True), feats.mean((2, 3)))
        fc = model.get_classifier()
        torch.testing.assert_close(model(x), feats.mean((2, 3)) @ fc.weight.T + fc.bias)
        model.reset_classifier(5)
        assert model(x).shape == (2, 5)


def test_plain18_state_dict_is_resnet18_without_downsample_keys():
    res = set(create_model("resnet18").state_dict())
    plain = set(create_model("plain18").state_dict())
    assert plain == {k for k in res if ".downsample." not in k}


# ----------------------------------------------------------------------------------------------
# Published parameter counts (10 classes), to the papers' rounding: He et al. 2015 table 6;
# He et al. 2016 ("Identity Mappings"); Zagoruyko & Komodakis 2016 ("Wide Residual Networks").
# ----------------------------------------------------------------------------------------------

PUBLISHED_M = [
    ("resnet20", 0.27, 2),
    ("resnet32", 0.46, 2),
    ("resnet44", 0.66, 2),
    ("resnet56", 0.85, 2),
    ("resnet110", 1.7, 1),
    ("resnet1202", 19.4, 1),
    ("preact_resnet110", 1.7, 1),
    ("preact_resnet164", 1.7, 1),
    ("wrn16_4", 2.7, 1),
    ("wrn28_10", 36.5, 1),
    ("wrn40_4", 8.9, 1),
]


@pytest.mark.parametrize("name,millions,digits", PUBLISHED_M)
def test_parameter_count_matches_paper(name, millions, digits):
    assert round(n_params(create_model(name, num_classes=10)) / 1e6, digits) == millions


def test_preact_resnet1001_weight_count_matches_paper():
    # He et al. 2016 give 10.2M; that is the conv and fc weights: BN's per-channel scale
    # and shift add another 0.15M (10.33M in all), which the paper does not count here.
    model = create_model("preact_resnet1001", num_classes=10)
    weights = sum(p.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) for p in m.parameters())
    assert round(weights / 1e6, 1) == 10.2


def test_option_a_shortcut_is_parameter_free_and_b_adds_exactly_the_projections():
    a = n_params(create_model("resnet20", num_classes=10))
    # Paper, sec. 4.2: the residual nets have "exactly the same number of parameters" as the plain.
    assert a == n_params(create_model("plain20", num_classes=10))
    # Option B: a 1x1 conv + BN where the width doubles: 16->32 and 32->64.
    by_hand = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert n_params(create_model("resnet20", num_classes=10, shortcut="B")) - a == by_hand


def test_cifar_depths_are_6n_plus_2_and_preact_bottleneck_depth_is_9n_plus_2():
    def blocks(model):
        return [m for m in model.modules() if isinstance(m, (BasicBlock, PreActBasicBlock, PreActBottleneck))]

    assert len(blocks(create_model("resnet110"))) == (110 - 2) // 2
    assert len(blocks(create_model("preact_resnet164"))) == (164 - 2) // 3
    wrn = create_model("wrn28_10")
    assert len(blocks(wrn)) == (28 - 4) // 2
    assert wrn.num_features == 640  # 64 * k


# ----------------------------------------------------------------------------------------------
# Residual vs plain blocks, recomputed by hand in float64.
# ----------------------------------------------------------------------------------------------


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)


def _basic_branch(block, x):
    y = F.relu(_bn(F.conv2d(x, block.conv1.weight, stride=block.conv1.stride, padding=1), block.bn1))
    return _bn(F.conv2d(y, block.conv2.weight, padding=1), block.bn2)


def _zero_pad_subsample(x, out_ch):
    x = x[:, :, ::2, ::2]
    zeros = torch.zeros(x.shape[0], out_ch - x.shape[1], *x.shape[2:], dtype=x.dtype)
    return torch.cat([x, zeros], 1)


@pytest.mark.parametrize("stage,index", [("layer1", 1), ("layer2", 0), ("layer3", 1)])
def test_cifar_residual_block_is_relu_branch_plus_shortcut_and_plain_block_has_no_shortcut(stage, index):
    torch.manual_seed(0)
    res = create_model("resnet20", num_classes=10).double().eval()
    plain = create_model("plain20", num_classes=10).double().eval()
    randomize_bn(res)
    plain.load_state_dict(res.state_dict())  # same keys: option A has no parameters
    rb, pb = getattr(res, stage)[index], getattr(plain, stage)[index]
    x = torch.randn(2, rb.conv1.in_channels, 8, 8, dtype=torch.float64)
    out_ch = rb.conv2.out_channels
    shortcut = x if rb.conv1.stride == (1, 1) else _zero_pad_subsample(x, out_ch)
    with torch.no_grad():
        branch = _basic_branch(rb, x)
        torch.testing.assert_close(rb(x), F.relu(branch + shortcut))
        torch.testing.assert_close(pb(x), F.relu(branch))
        # Silence the residual branch: the residual block passes relu(shortcut), the plain one 0.
        for b in (rb, pb):
            b.bn2.weight.zero_(), b.bn2.bias.zero_()
        torch.testing.assert_close(rb(x), F.relu(shortcut))
        assert not pb(x).any()


def test_imagenet_plain_bottleneck_free_resnet_block_vs_plain_block_by_hand():
    torch.manual_seed(0)
    res = create_model("resnet18").double().eval()
    plain = create_model("plain18").double().eval()
    randomize_bn(res)
    plain.load_state_dict({k: v for k, v in res.state_dict().items() if ".downsample." not in k})
    rb, pb = res.layer1[0], plain.layer1[0]
    x = torch.randn(2, 64, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        branch = _basic_branch(rb, x)
        torch.testing.assert_close(rb(x), F.relu(branch + x))
        torch.testing.assert_close(pb(x), F.relu(branch))


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_a_stage_that_halves_the_map_without_widening_still_gets_a_subsampling_shortcut(shortcut):
    """A shortcut goes wherever input and output shapes differ, in resolution as in width: at widths
    16-16-16 the stride-2 block gets one, and option A's (out_ch >= in_ch, as documented) subsamples
    and pads no channel."""
    model = CifarResNet(8, widths=(16, 16, 16), shortcut=shortcut).double().eval()
    block = model.layer2[0]
    assert block.downsample is not None
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        if shortcut == "A":
            torch.testing.assert_close(block.downsample(x), x[:, :, ::2, ::2])
        assert model(torch.randn(2, 3, 32, 32, dtype=torch.float64)).shape == (2, 10)


# ----------------------------------------------------------------------------------------------
# Pre-activation blocks recomputed by hand in float64 (He et al. 2016, fig. 4e; Zagoruyko &
# Komodakis 2016, fig. 1d).
# ----------------------------------------------------------------------------------------------


def _bn_relu(x, bn):
    """relu(bn(x)) as the norm's mode computes it: running statistics in eval, the batch's in training."""
    if bn.training:
        return F.relu(F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps))
    return F.relu(_bn(x, bn))


@pytest.mark.parametrize("stage,index,stride", [("layer1", 0, 1), ("layer2", 0, 2), ("layer3", 1, 1)])
def test_preact_bottleneck_is_three_bn_relu_convs_with_the_stride_in_the_3x3(stage, index, stride):
    """He et al. 2016 (the authors' code, as the block's docstring says): BN-ReLU-1x1, BN-ReLU-3x3 with
    the stage's stride, BN-ReLU-1x1, plus the input, or where shapes change a 1x1 projection of the
    pre-activated input."""
    torch.manual_seed(0)
    block = getattr(randomize_bn(create_model("preact_resnet164")).double().eval(), stage)[index]
    x = torch.randn(2, block.conv1.in_channels, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        pre = _bn_relu(x, block.bn1)
        out = F.conv2d(pre, block.conv1.weight)
        out = F.conv2d(_bn_relu(out, block.bn2), block.conv2.weight, stride=stride, padding=1)
        out = F.conv2d(_bn_relu(out, block.bn3), block.conv3.weight)
        shortcut = x if block.downsample is None else F.conv2d(pre, block.downsample.weight, stride=stride)
        torch.testing.assert_close(block(x), out + shortcut)


def test_wide_block_drops_out_between_its_convs_in_training_only():
    """WRN's block (fig. 1d): BN-ReLU-conv3x3, BN-ReLU-dropout-conv3x3, plus the input; in training the
    masks F.dropout draws under the same seed, in eval none."""
    torch.manual_seed(0)
    block = randomize_bn(create_model("wrn16_4", drop_rate=0.3)).double().layer2[1]  # identity shortcut
    x = torch.randn(2, block.conv1.in_channels, 8, 8, dtype=torch.float64)

    def by_hand(training):
        h = F.conv2d(_bn_relu(x, block.bn1), block.conv1.weight, padding=1)
        h = F.dropout(_bn_relu(h, block.bn2), p=0.3, training=training)
        return F.conv2d(h, block.conv2.weight, padding=1) + x

    with torch.no_grad():
        for training in (True, False):
            block.train(training)
            torch.manual_seed(1)
            expected = by_hand(training)
            torch.manual_seed(1)
            torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("name", ["preact_resnet110", "wrn16_4"])
def test_preact_features_end_in_a_bn_relu_of_the_last_sum(name):
    """He et al. 2016, sec. 4.1: the last block's sum is not normalized yet, so a final BN-ReLU
    comes before the pooling."""
    torch.manual_seed(0)
    model = randomize_bn(create_model(name)).double().eval()
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        stages = model.layer3(model.layer2(model.layer1(model.conv1(x))))
        torch.testing.assert_close(model.forward_features(x), _bn_relu(stages, model.bn_final))


# ----------------------------------------------------------------------------------------------
# zero_init_residual: every residual block starts as the identity (Goyal et al. 2017).
# ----------------------------------------------------------------------------------------------


def _expected_at_zero_init(block, x):
    """What a block with a zero residual branch must output, computed without the block's
    forward: post-activation blocks relu(shortcut(x)), pre-activation blocks shortcut(x)."""
    ds = block.downsample
    if ds is None:
        shortcut = x
    elif isinstance(ds, nn.Sequential):  # 1x1 conv + norm (training-mode BN, as in the forward)
        y = F.conv2d(x, ds[0].weight, ds[0].bias, stride=ds[0].stride)
        shortcut = F.batch_norm(y, None, None, ds[1].weight, ds[1].bias, training=True, eps=ds[1].eps)
    elif isinstance(ds, nn.Conv2d):  # pre-activation projection of relu(bn1(x))
        pre = F.relu(F.batch_norm(x, None, None, block.bn1.weight, block.bn1.bias, training=True, eps=block.bn1.eps))
        shortcut = F.conv2d(pre, ds.weight, ds.bias, stride=ds.stride)
    else:  # option A
        shortcut = _zero_pad_subsample(x, block.conv2.out_channels)
    post = isinstance(block, (BasicBlock, Bottleneck))
    return F.relu(shortcut) if post else shortcut


@pytest.mark.parametrize(
    "name,norm,size",
    [
        ("resnet18", "batch", 32),
        ("resnet50", "batch", 32),
        ("resnet20", "batch", 16),
        ("resnet20", "group", 16),
        ("resnet20", "none", 16),
        ("preact_resnet110", "batch", 8),
        ("preact_resnet164", "batch", 8),
        ("wrn16_4", "batch", 8),
    ],
)
def test_zero_init_residual_makes_every_block_the_identity_at_init(name, norm, size):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, norm=norm, zero_init_residual=True).double().train()
    seen = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: seen.append((mod, inp[0].detach(), out.detach())))
        for m in model.modules()
        if isinstance(m, (BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck))
    ]
    with torch.no_grad():
        model(torch.randn(2, 3, size, size, dtype=torch.float64))
    for h in hooks:
        h.remove()
    assert seen
    for block, x, out in seen:
        torch.testing.assert_close(out, _expected_at_zero_init(block, x))


@pytest.mark.parametrize("name", ["resnet20", "preact_resnet110"])
def test_zero_init_last_silences_a_branch_whose_last_conv_keeps_a_bias(name):
    """With norm='none' the convs keep their biases, so zero_init_last must zero the last conv's bias
    as well for the branch to output zero (its docstring), whatever values training left in it."""
    torch.manual_seed(0)
    block = create_model(name, norm="none").layer1[1]
    with torch.no_grad():
        for p in block.parameters():
            p.normal_()
    block.zero_init_last()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(block(x), _expected_at_zero_init(block, x))


# ----------------------------------------------------------------------------------------------
# norm="scratch" models are drop-in for norm="batch" ones.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,size", [("resnet18", 32), ("resnet50", 32), ("plain20", 16), ("resnet20", 16),
                                       ("preact_resnet164", 8), ("wrn16_4", 8)])
def test_scratch_norm_model_loads_batch_norm_state_dict_and_matches_it_in_eval(name, size):
    torch.manual_seed(0)
    torch_bn = create_model(name, num_classes=10, norm="batch")
    randomize_bn(torch_bn)
    ours = create_model(name, num_classes=10, norm="scratch")
    sd = torch_bn.state_dict()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in sd.items()}
    ours.load_state_dict(sd, strict=True)
    torch_bn.eval(), ours.eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), torch_bn(x), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Gradient checkpointing changes memory, not results.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name,kwargs", [("resnet20", {}), ("wrn16_4", {"drop_rate": 0.3}),
                                         ("preact_resnet164", {}), ("plain20", {})])
def test_checkpointed_training_step_matches_plain_autograd_including_bn_running_stats(name, kwargs):
    torch.manual_seed(0)
    ref = create_model(name, num_classes=10, **kwargs).train()
    ckpt = create_model(name, num_classes=10, checkpoint_segments=3, **kwargs).train()
    ckpt.load_state_dict(ref.state_dict())
    x, y = torch.randn(2, 3, 8, 8), torch.tensor([1, 7])
    for model in (ref, ckpt):
        torch.manual_seed(1)  # same dropout masks; checkpoint replays the RNG state in backward
        F.cross_entropy(model(x), y).backward()
    for (k, p), q in zip(ref.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=k)
    # The recomputation in backward must not move the running averages a second time.
    ref_sd, ckpt_sd = ref.state_dict(), ckpt.state_dict()
    for k in ref_sd:
        torch.testing.assert_close(ckpt_sd[k], ref_sd[k], msg=k)
    assert all(v.item() == 1 for k, v in ckpt_sd.items() if k.endswith("num_batches_tracked"))


def test_bad_arguments_fail_with_the_bad_value_named():
    with pytest.raises(ValueError, match="'C'"):
        create_model("resnet20", shortcut="C")
    with pytest.raises(ValueError, match="-1"):
        create_model("resnet20", checkpoint_segments=-1)
    with pytest.raises(ValueError, match="1.5"):
        create_model("wrn16_4", drop_rate=1.5)
    # 6n+2 with n >= 1: depth 2 would build stages without blocks, -4 a negative count.
    for depth in (2, -4):
        with pytest.raises(ValueError, match=f"6n\\+2 with n >= 1.*got {depth}$"):
            CifarResNet(depth)


def test_preact_resnet_refuses_what_it_would_silently_drop():
    # A dropout rate the bottleneck has no place for, and a stage without a width (zip would cut it).
    with pytest.raises(ValueError, match="PreActBottleneck has no dropout, got drop_rate=0.3"):
        PreActResNet(PreActBottleneck, (1, 1, 1), drop_rate=0.3)
    with pytest.raises(ValueError, match=r"one entry per stage, got \[1, 1, 1\] and \[16, 32\]"):
        PreActResNet(PreActBasicBlock, (1, 1, 1), (16, 32))


@pytest.mark.parametrize("name, depth, widths", [("resnet8_fast", 8, (32, 64, 128)),
                                                 ("resnet8_prepool", 8, (32, 64, 128)),
                                                 ("resnet20_fast", 20, (32, 64, 128)),
                                                 ("resnet14_wide_fast", 14, (64, 128, 256))])
def test_fast_cifar_variants_count_what_their_layers_hold(name, depth, widths):
    """Parameters recounted by hand from the architecture: 3x3 stem, n basic blocks per stage
    (two bias-free 3x3 convs, each with BN weight+bias), a 1x1 conv + BN projection where the
    width changes, fc; and the stem max-pool halves the map (28 -> 14 -> 7 -> 4)."""

    n, c_in, classes = (depth - 2) // 6, 1, 10
    total = 9 * c_in * widths[0] + 2 * widths[0]
    prev = widths[0]
    for w in widths:
        for b in range(n):
            cin = prev if b == 0 else w
            total += 9 * cin * w + 2 * w + 9 * w * w + 2 * w
            if cin != w:
                total += cin * w + 2 * w
        prev = w
    total += widths[-1] * classes + classes
    model = create_model(name, num_classes=classes, in_channels=c_in)
    assert sum(p.numel() for p in model.parameters()) == total
    assert model.forward_features(torch.zeros(2, 1, 28, 28)).shape == (2, widths[-1], 4, 4)


@pytest.mark.parametrize("name, kwargs", [("resnet20", {"weights": "fashion-mnist"}),
                                          ("vgg11_bn", {"hidden_dim": 16, "pool_size": 1}),  # a small head (the full one: 480 MB)
                                          ("googlenet", {"aux_logits": True}), ("resnet20", {"stacked_head": 4})],
                         ids=["shipped_weights", "vgg", "googlenet_aux", "stacked_head"])
def test_a_reset_classifier_is_what_save_model_records_and_load_model_rebuilds(tmp_path, name, kwargs):
    """The path create_model's error recommends for another class count: the saved arch describes
    the new classifier, so the run loads back with the same outputs (before, model_config kept the
    old count: save_model refused the classes, and with no classes the file did not load)."""
    from resnet_lab.runs import load_model, save_model

    model = create_model(name, **kwargs)
    model.reset_classifier(3)
    assert model.model_config["num_classes"] == 3 and "stacked_head" not in model.model_config
    save_model(tmp_path / "r", model, {"classes": ["a", "b", "c"]})
    loaded, meta = load_model(tmp_path / "r")
    assert meta["classes"] == ["a", "b", "c"]
    model.eval(), loaded.eval()
    x = torch.randn(2, model.model_config["in_channels"], 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x)) and loaded(x).shape == (2, 3)


@pytest.mark.parametrize("name", ["resnet8_fast", "resnet14_wide_fast", "resnet8_prepool"])
def test_fast_models_pool_the_stem_with_a_2x2_max_pool(name):
    """The *_fast models put "a 2x2 max-pool after the stem" (their docstring): each output pixel the
    max of its own 2x2 block, as F.max_pool2d(x, 2). An ImageNet-style 3x3 stride-2 pool keeps the
    shape and survived the shape checks."""
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.randn(2, 3, 32, 32)
    seen = {}
    model.maxpool.register_forward_hook(lambda m, i, o: seen.update(inp=i[0], out=o))
    model(x)
    assert torch.equal(seen["out"], F.max_pool2d(seen["inp"], 2))
    assert seen["out"].shape[-2:] == (16, 16)


def _prepool_reference(model: nn.Module, x: torch.Tensor, training: bool) -> torch.Tensor:
    """resnet8_prepool as its docstring says, in torch's functional ops: conv, 2x2 max-pool, BN (batch
    statistics in training, running ones in eval), ReLU, then the stages and head it shares with
    resnet8_fast."""
    bn = model.bn1
    stem = F.max_pool2d(F.conv2d(x, model.conv1.weight, padding=1), 2)
    stem = F.relu(F.batch_norm(stem, bn.running_mean.clone(), bn.running_var.clone(), bn.weight, bn.bias,
                               training=training, eps=bn.eps))
    return model.forward_head(model.layer3(model.layer2(model.layer1(stem))))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_prepool_stem_pools_the_conv_before_its_norm_and_relu(training):
    """The stem of resnet8_prepool computes conv -> pool -> BN -> ReLU. Its BN has negative gains and
    non-default running statistics, so the order shows in eval mode too (a positive per-channel
    affine map would commute with the max). The same weights in resnet8_fast, whose stem pools after
    the ReLU, give other outputs: the two differ only in the order."""
    torch.manual_seed(0)
    model = randomize_bn(create_model("resnet8_prepool", num_classes=10, in_channels=1))
    with torch.no_grad():
        model.bn1.weight[::2] *= -1
    model.train(training)
    x = torch.randn(6, 1, 28, 28)
    with torch.no_grad():
        expected = _prepool_reference(model, x, training)
        out = model(x)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    fast = create_model("resnet8_fast", num_classes=10, in_channels=1).train(training)
    fast.load_state_dict(model.state_dict())  # the same parameter names and shapes
    with torch.no_grad():
        assert (fast(x) - out).abs().max() > 1e-2


def test_prepool_stem_bn_is_left_unfolded_by_fuse_bn():
    """Export's BN folding folds a BN into the conv before it; in resnet8_prepool a max-pool sits
    between the stem conv and its BN, and with a negative gain max(a*x) != a*max(x), so that one BN
    must stay while the blocks' fold, and the folded model computes what the original does."""
    from resnet_lab.deploy import fuse_bn_with_report

    torch.manual_seed(0)
    model = randomize_bn(create_model("resnet8_prepool", num_classes=10, in_channels=1)).eval()
    with torch.no_grad():
        model.bn1.weight[::2] *= -1
    fused, report = fuse_bn_with_report(model)
    assert "bn1" in report.unfolded_names and "layer1.0.bn1" not in report.unfolded_names
    assert len(report.folded) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) - 1
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)


def test_cifar_resnet_refuses_a_stem_pool_it_does_not_know():
    msg = _one_line_error(lambda: CifarResNet(8, stem_pool="before"))
    assert msg == "stem_pool must be False, True, 'after' or 'before_norm', got 'before'"


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet8_fast", "preact_resnet164", "wrn16_4"])
def test_every_conv_keeps_its_bias_exactly_when_no_norm_follows(name):
    """norm_has_bias's rule (docs of resnet_lab.nn.norm): a conv before a BN or GN drops its bias (the
    mean subtraction cancels it); with norm='none' nothing follows, so every conv keeps it, the
    projection shortcuts' 1x1 convs included (a bias-less projection survived)."""
    for norm, bias in (("none", True), ("batch", False), ("group", False)):
        model = create_model(name, norm=norm)
        convs = {n: m.bias is not None for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
        assert any("downsample" in n or "shortcut" in n for n in convs), sorted(convs)  # projections exist
        assert convs == {n: bias for n in convs}, (norm, [n for n, b in convs.items() if b != bias])


# ----------------------------------------------------------------------------------------------
# Public classes built by hand: what they refuse, and what a plain block keeps.
# ----------------------------------------------------------------------------------------------


def _one_line_error(build) -> str:
    """The message of the ValueError that ``build()`` raises, checked to be one line."""
    with pytest.raises(ValueError) as err:
        build()
    msg = str(err.value)
    assert "\n" not in msg, msg
    return msg


def test_zero_pad_shortcut_refuses_to_drop_channels_and_names_the_projection():
    """Option A only appends zero channels (its docstring: out_ch >= in_ch); F.pad with a negative
    pad would silently crop the input's last channels instead."""
    msg = _one_line_error(lambda: ZeroPadShortcut(32, 16, 2))
    assert "32 -> 16" in msg and "shortcut='B'" in msg


@pytest.mark.parametrize("layers,widths,named", [((2, 2, 2), (64, 128, 256, 512), "layers=[2, 2, 2]"),
                                                 ((2, 2, 2, 2), (64, 128, 256, 512, 1024), "1024")])
def test_imagenet_resnet_refuses_anything_but_four_stages(layers, widths, named):
    """He et al. 2015, table 1: four stages, conv2_x..conv5_x; a fifth width would be dropped unseen."""
    msg = _one_line_error(lambda: ResNet(BasicBlock, layers, widths=widths))
    assert "4 stages" in msg and named in msg


def test_zero_init_last_leaves_a_plain_block_alone():
    """A plain block has no shortcut to carry the signal (He et al. 2015, sec. 4.1): zeroing its
    last BN scale would output zeros from that block on. timm-style code calls zero_init_last on
    every block that has it, so a plain block must keep its weights."""
    torch.manual_seed(0)
    model = create_model("plain20")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for m in model.modules():
        if hasattr(m, "zero_init_last"):
            m.zero_init_last()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("depth", [8, 14, 20, 32])
def test_a_cifar_resnet_of_depth_6n_plus_2_has_that_many_weighted_layers(depth):
    """He et al. 2015, sec. 4.2: "6n+2 stacked weighted layers" (the stem conv, 6n 3x3 convs, the
    fc); option A adds none."""
    model = CifarResNet(depth)
    assert sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules()) == depth


@pytest.mark.parametrize("depth", [11, 17, 21])
def test_a_cifar_depth_off_6n_plus_2_is_refused_not_rounded_down(depth):
    msg = _one_line_error(lambda: CifarResNet(depth))
    assert "6n+2" in msg and f"got {depth}" in msg
