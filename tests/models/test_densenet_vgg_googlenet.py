"""DenseNet, VGG and GoogLeNet against torchvision's models (keys, parameter counts, outputs) and
against the published parameter counts of the CIFAR DenseNets (Huang et al. 2017, Table 2)."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.googlenet import InceptionAux as TorchvisionInceptionAux

from resnet_lab.models import create_model, densenet, googlenet, list_models, vgg
from resnet_lab.nn import BatchNorm2d as ScratchBatchNorm2d
from support import init_differences, randomize_bn, std_off

OURS = {
    **{n: getattr(densenet, n) for n in ("densenet121", "densenet161", "densenet169", "densenet201")},
    **{n: getattr(vgg, n) for n in ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")},
    "googlenet": googlenet.googlenet,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Batch-2, 32 px forwards are too small to gain from intra-op threads; on the shared 2-core
    # machine one thread spends several times less CPU per test.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _torchvision(name: str, **kw) -> nn.Module:
    if name == "googlenet":
        kw.setdefault("init_weights", True)  # silences torchvision's FutureWarning; same init
    return getattr(torchvision.models, name)(weights=None, **kw)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_against_torchvision(name: str, x: torch.Tensor, final_linear) -> None:
    """Strict load of a random torchvision state dict, equal eval outputs, pre-logits that
    torchvision's last Linear maps to its logits, and a working reset_classifier. (Parameter
    counts are compared for every model, cheaply, in test_keys_shapes_and_parameter_counts...)"""
    torch.manual_seed(0)
    ref = _torchvision(name).eval()
    randomize_bn(ref)
    ours = OURS[name]().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        expected = ref(x)
        _assert_close(ours(x), expected)
        pre = ours.forward_head(ours.forward_features(x), pre_logits=True)
        _assert_close(final_linear(ref)(pre), expected)
        ours.reset_classifier(5)
        assert ours(x).shape == (2, 5)
        assert ours.get_classifier() is final_linear(ours)


@pytest.mark.parametrize("name", ["densenet121", "densenet161", "densenet169", "densenet201"])
def test_densenet_loads_torchvision_state_dict_and_matches_its_outputs(name):
    _check_against_torchvision(name, torch.randn(2, 3, 32, 32), lambda ref: ref.classifier)


# Building a VGG costs ~1 s (130M parameters); four are compared numerically, and all eight have
# their keys, shapes and parameter counts compared below.
@pytest.mark.parametrize("name", ["vgg11", "vgg11_bn", "vgg16", "vgg16_bn"])
def test_vgg_loads_torchvision_state_dict_and_matches_its_outputs(name):
    _check_against_torchvision(name, torch.randn(2, 3, 32, 32), lambda ref: ref.classifier[-1])


def test_googlenet_loads_torchvision_default_state_dict_and_matches_its_outputs():
    # torchvision's googlenet(weights=None) has aux heads; ours by default has none and drops them
    # on a strict load, as torchvision does with its own checkpoint.
    _check_against_torchvision("googlenet", torch.randn(2, 3, 32, 32), lambda ref: ref.fc)


@pytest.mark.parametrize("name", sorted(OURS))
def test_keys_shapes_and_parameter_counts_equal_torchvision(name):
    with torch.device("meta"):  # no memory, no init cost: only the structure is compared
        ref = _torchvision(name, aux_logits=False) if name == "googlenet" else _torchvision(name)
        ours = OURS[name]()
    assert _shapes(ours) == _shapes(ref)
    assert _n_params(ours) == _n_params(ref)


@pytest.mark.parametrize("name", ["densenet121", "googlenet"])
def test_initial_weights_are_drawn_as_torchvisions_layer_by_layer(name):
    """The comments' promise, "torchvision's init": each tensor's spread (DenseNet: He-normal over
    fan_in, torch's default Linear weight; GoogLeNet: normal std 0.01 cut at +-2) or constant (norms
    1/0, zero biases) is that of torchvision's model, tensor by tensor (its aux heads aside)."""
    torch.manual_seed(0)
    ref = _torchvision(name)
    torch.manual_seed(1)
    assert init_differences(OURS[name](), ref) == {}


def test_cifar_densenet_convs_are_he_normal_over_fan_in_as_the_imagenet_ones():
    """densenet40 shares the init: std sqrt(2 / (in_channels * k * k)) for every conv (the
    growth-rate 12 convs take 24 to 168 channels in: fan_out would give another std)."""
    torch.manual_seed(0)
    model = create_model("densenet40", num_classes=10)
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert any(m.in_channels != m.out_channels for _, m in convs)
    off = {n: why for n, m in convs
           if (why := std_off(m.weight, (2 / (m.in_channels * m.kernel_size[0] * m.kernel_size[1])) ** 0.5))}
    assert off == {}


@pytest.mark.parametrize("name", ["vgg11", "vgg11_bn"])
def test_vgg_init_is_torchvisions_he_normal_over_fan_out_and_small_normal_linears(name):
    """torchvision's VGG init, by hand (its 130M-parameter model costs seconds, so a narrow head
    here): convs std sqrt(2 / (out_channels * 9)), Linear weights std 0.01, every bias 0, norms 1/0."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, hidden_dim=256, pool_size=2)
    off = {}
    for n, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            want = 0.01 if isinstance(m, nn.Linear) else (2 / (m.out_channels * 9)) ** 0.5
            if why := std_off(m.weight, want):
                off[n] = why
            if m.bias is not None and m.bias.any():
                off[n + ".bias"] = "not zero"
        elif isinstance(m, nn.BatchNorm2d) and not (torch.equal(m.weight, torch.ones_like(m.weight))
                                                    and not m.bias.any()):
            off[n] = "norm not 1/0"
    assert off == {}


def test_googlenet_default_has_torchvision_published_parameter_count():
    # torchvision's GoogLeNet_Weights.IMAGENET1K_V1.meta["num_params"] (the model without aux heads).
    with torch.device("meta"):
        assert _n_params(googlenet.googlenet()) == 6_624_904


def test_googlenet_with_aux_logits_matches_torchvision_in_training_mode():
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    ref = _torchvision("googlenet", aux_logits=True).train()
    ours = googlenet.googlenet(aux_logits=True).train()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert _shapes(ours) == _shapes(ref)
    torch.manual_seed(1)  # same dropout masks if the heads run in torchvision's order
    expected = ref(x)
    torch.manual_seed(1)
    out = ours(x)
    assert isinstance(out, tuple) and out._fields == expected._fields == ("logits", "aux_logits2", "aux_logits1")
    for a, b in zip(out, expected):
        _assert_close(a, b)
    ours.eval()
    ref.eval()
    with torch.no_grad():
        _assert_close(ours(x), ref(x))  # eval: plain logits
    ours.train()
    ours.reset_classifier(5)  # the aux heads follow, so their losses fit the new labels
    assert [tuple(t.shape) for t in ours(x)] == [(2, 5)] * 3


def test_googlenet_dropout_aux_without_aux_heads_is_refused_and_acts_with_them():
    with pytest.raises(ValueError, match="dropout_aux=0.5 only acts on the aux heads; pass aux_logits=True"):
        googlenet.googlenet(dropout_aux=0.5)
    assert googlenet.googlenet(dropout_aux=0.7).aux1 is None  # the default, spelt out, is harmless
    with_aux = googlenet.googlenet(aux_logits=True, dropout_aux=0.5, num_classes=np.int64(4))
    assert with_aux.aux1.dropout.p == with_aux.aux2.dropout.p == 0.5
    with_aux.reset_classifier(np.int64(3))
    assert type(with_aux.aux1.fc2.out_features) is int and with_aux.aux1.fc2.out_features == 3


def test_googlenet_scratch_batchnorm_keeps_torchvision_eps_and_outputs():
    # torchvision's BasicConv2d uses eps=1e-3; our from-scratch BN must get it too.
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    ref = _torchvision("googlenet", aux_logits=False).eval()
    randomize_bn(ref)
    ours = googlenet.googlenet(norm="scratch").eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert all(m.eps == 1e-3 for m in ours.modules() if isinstance(m, ScratchBatchNorm2d))
    with torch.no_grad():
        _assert_close(ours(x), ref(x))


def test_googlenet_transform_input_matches_torchvision():
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    ref = _torchvision("googlenet", aux_logits=False, transform_input=True).eval()
    ours = googlenet.googlenet(transform_input=True).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        _assert_close(ours(x), ref(x))


def test_densenet_memory_efficient_with_dropout_matches_torchvision_outputs_and_gradients():
    # A small DenseNet of torchvision's own class (k=12, 2 layers per block) keeps this fast; the
    # checkpointed bottleneck and the dropout are the same code in every configuration.
    cfg = dict(growth_rate=12, block_config=(2, 2, 2, 2), num_init_features=24, drop_rate=0.2, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    ref = torchvision.models.DenseNet(**cfg).train()
    ours = densenet.DenseNet(**cfg, memory_efficient=True).train()
    ours.load_state_dict(ref.state_dict(), strict=True)
    torch.manual_seed(1)  # same dropout masks: checkpointing must not re-draw them
    expected = ref(x)
    expected.square().mean().backward()
    torch.manual_seed(1)
    out = ours(x)
    out.square().mean().backward()
    _assert_close(out, expected)
    ref_grads = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        g = ref_grads[name].grad
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-6 * max(g.abs().max().item(), 1.0))


def test_densenet_dropout_acts_only_in_training_as_torchvisions():
    """drop_rate > 0 in eval(): deterministic outputs equal to torchvision's DenseNet with the same
    weights (its _DenseLayer passes training=self.training); in train() the dropout draws."""
    cfg = dict(growth_rate=12, block_config=(2, 2, 2, 2), num_init_features=24, drop_rate=0.5, num_classes=10)
    x = torch.randn(2, 3, 32, 32)
    torch.manual_seed(0)
    ref = torchvision.models.DenseNet(**cfg).eval()
    randomize_bn(ref)
    ours = densenet.DenseNet(**cfg).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        torch.manual_seed(1)
        first = ours(x)
        torch.manual_seed(2)  # other dropout draws, were there any
        _assert_close(first, ref(x))
        assert torch.equal(ours(x), first)
        ours.train()
        assert not torch.allclose(ours(x), ours(x))


@pytest.mark.parametrize(
    ("name", "published_millions"),
    # Huang et al. 2017, Table 2 (CIFAR-10, 10 classes), given to 0.1M.
    [("densenet_bc_100", 0.8), ("densenet_bc_250", 15.3), ("densenet40", 1.0)],
)
def test_cifar_densenet_parameter_count_matches_paper(name, published_millions):
    with torch.device("meta"):
        n = _n_params(getattr(densenet, name)(num_classes=10))
    assert abs(n / 1e6 - published_millions) < 0.05, n


@pytest.mark.parametrize("block_config", [(1, 1), (2, 1, 1)])
def test_densenet_transition_floors_an_odd_channel_count_as_torchvisions(block_config):
    """The zoo's DenseNets reach every transition with an even count; torchvision's class takes
    num_features // 2 when it is odd (8 + 5 = 13 -> 6), and its state dicts load into ours."""
    cfg = dict(growth_rate=5, block_config=block_config, num_init_features=8, num_classes=10)
    with torch.device("meta"):
        assert _shapes(densenet.DenseNet(**cfg)) == _shapes(torchvision.models.DenseNet(**cfg))


def test_densenet_bc_100_feature_map_follows_paper_arithmetic():
    # 2k=24 stem channels; each block adds 16*12=192; transitions halve: 216->108, 300->150, 342.
    # Three blocks on 32 px: 32, 16, 8 (the paper's final 8x8 global average pool).
    model = densenet.densenet_bc_100(num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, 342, 8, 8)
        assert model(x).shape == (2, 10)


@pytest.mark.parametrize(
    ("name", "feature_shape"),
    # 28 px (Fashion-MNIST): densenet121 has 3 transitions (28, 14, 7, 3); VGG 4 pools (28, 14, 7,
    # 3, 1); GoogLeNet only maxpool3 and maxpool4 (28, 14, 7), all with ceil_mode.
    [("densenet121", (1024, 3, 3)), ("vgg11_bn", (512, 1, 1)), ("googlenet", (1024, 7, 7))],
)
def test_small_input_grayscale_forward_shapes(name, feature_shape):
    # VGG's 4096-wide fc6/fc7 (100M parameters) would dominate the cost; the width is irrelevant here.
    extra = {"hidden_dim": 256} if name.startswith("vgg") else {}
    model = OURS[name](num_classes=10, in_channels=1, small_input=True, **extra).eval()
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 1, 28, 28))
        assert features.shape == (2, *feature_shape)
        assert model.forward_head(features).shape == (2, 10)


@pytest.mark.parametrize("name", ["vgg11_bn", "googlenet"])
def test_small_input_keeps_torchvision_keys_and_shapes(name):
    # So ImageNet weights still load for transfer to 32 px images (DenseNet's 3x3 conv0 differs).
    with torch.device("meta"):
        ref = _torchvision(name, aux_logits=False) if name == "googlenet" else _torchvision(name)
        ours = OURS[name](small_input=True)
    assert _shapes(ours) == _shapes(ref)


@pytest.mark.parametrize("name", ["densenet121", "vgg11_bn", "googlenet"])
@pytest.mark.parametrize(
    ("norm", "norm_type"), [("scratch", ScratchBatchNorm2d), ("group", nn.GroupNorm), ("none", None)]
)
def test_norm_choice_replaces_every_torchvision_batchnorm(name, norm, norm_type):
    with torch.device("meta"):
        ref = _torchvision(name, aux_logits=False) if name == "googlenet" else _torchvision(name)
        ours = OURS[name](norm=norm)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in ref.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ours.modules())
    if norm_type is not None:
        assert sum(isinstance(m, norm_type) for m in ours.modules()) == n_bn
    else:
        assert not any(isinstance(m, (ScratchBatchNorm2d, nn.GroupNorm)) for m in ours.modules())
        # A conv no longer followed by a norm keeps its bias (nothing else shifts its output).
        assert all(m.bias is not None for m in ours.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("name", ["vgg11", "vgg13", "vgg16", "vgg19"])
def test_plain_vgg_takes_none_or_the_default_and_refuses_a_norm_it_would_not_build(name):
    with torch.device("meta"):
        ref = _torchvision(name)  # torchvision's plain VGG: no norm layer
        assert not any(isinstance(m, nn.BatchNorm2d) for m in ref.modules())
        for norm in ("batch", "none"):  # create_model's default, and what is built
            assert _shapes(getattr(vgg, name)(norm=norm)) == _shapes(ref)
            assert create_model(name, norm=norm).model_config["norm"] == "none"
        for norm in ("scratch", "group"):  # once built as the plain net without a word
            for build in (getattr(vgg, name), functools.partial(create_model, name)):
                with pytest.raises(ValueError, match=rf"^{name} has no normalization layers, so norm='{norm}' "
                                                     rf"\(--norm {norm}\) would change nothing: use {name}_bn "):
                    build(norm=norm)
            assert len(_shapes(create_model(f"{name}_bn", norm=norm))) > len(_shapes(ref))  # the way out builds it


def test_families_are_registered():
    assert set(list_models("densenet*")) >= {"densenet121", "densenet161", "densenet169", "densenet201",
                                             "densenet_bc_100", "densenet_bc_250", "densenet40"}
    assert set(list_models("vgg*")) == {"vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn",
                                        "vgg19", "vgg19_bn"}
    assert "googlenet" in list_models("googlenet")


@pytest.mark.parametrize("kwargs,words", [
    (dict(stem="tiny"), "stem must be 'imagenet' or 'cifar', got 'tiny'"),
    (dict(compression=0.0), "compression must be in (0, 1], got 0.0"),
    (dict(compression=1.5), "compression must be in (0, 1], got 1.5"),
    (dict(bn_size=-1), "bn_size must be an int >= 0, got -1"),
    (dict(bn_size=2.5), "bn_size must be an int >= 0, got 2.5"),
    (dict(growth_rate=0), "growth_rate must be an int >= 1, got 0"),
    (dict(num_init_features=0), "num_init_features must be an int >= 1, got 0"),
    (dict(block_config=()), "block_config must be a non-empty sequence of ints >= 1, got ()"),
    (dict(block_config=(2, 0)), "block_config must be a non-empty sequence of ints >= 1, got (2, 0)"),
], ids=["stem", "no-channels", "expansion", "negative-bn-size", "fractional-bn-size", "no-growth", "no-stem-channels",
        "no-blocks", "empty-block"])
def test_densenet_refuses_arguments_it_cannot_build_in_one_line(kwargs, words):
    """Compression is the paper's theta, 0 < theta <= 1 (Huang et al. 2017, sec. 3): a transition
    keeps that fraction of its channels; 0 would keep none, above 1 it would widen. A negative
    bn_size once built the plain layer of bn_size=0 without a word; a zero growth rate, stem width
    or layer count builds layers that add no channels."""
    with pytest.raises(ValueError) as err:
        densenet.DenseNet(**{**dict(growth_rate=4, block_config=(1, 1), num_init_features=8), **kwargs})
    assert words in str(err.value) and "\n" not in str(err.value)


def test_densenet_transition_keeps_the_compression_fraction_of_its_channels():
    """By hand: 8 stem channels + 2 layers of k=4 -> 16; theta 0.8 keeps floor(12.8) = 12 (a floor, as
    torchvision's num_features // 2); the next block adds 8 -> 20 at norm5. Every layer's 1x1
    bottleneck is bn_size * k wide, its 3x3 gives k."""
    with torch.device("meta"):
        model = densenet.DenseNet(growth_rate=4, block_config=(2, 2), num_init_features=8, bn_size=3,
                                  compression=0.8, stem="cifar", num_classes=10)
    shapes = _shapes(model)
    assert shapes["features.transition1.conv.weight"] == (12, 16, 1, 1)
    assert shapes["features.denseblock2.denselayer2.conv1.weight"] == (12, 16, 1, 1)  # 12 + 4 in, 3k out
    assert shapes["features.denseblock2.denselayer2.conv2.weight"] == (4, 12, 3, 3)
    assert shapes["features.norm5.weight"] == (20,) and shapes["classifier.weight"] == (10, 20)


def test_a_dense_layer_without_bottleneck_is_bn_relu_3x3_conv_of_the_concatenation():
    """DenseNet-40's composite function H_l (Huang et al. 2017, sec. 3): BN, ReLU, 3x3 conv of the
    concatenated earlier maps, recomputed in float64 with torch's functional ops."""
    torch.manual_seed(0)
    model = densenet.DenseNet(growth_rate=4, block_config=(2,), num_init_features=8, bn_size=0, stem="cifar")
    layer = randomize_bn(model).double().eval().features.denseblock1.denselayer2
    earlier = [torch.randn(2, 8, 6, 6, dtype=torch.float64), torch.randn(2, 4, 6, 6, dtype=torch.float64)]
    bn = layer.norm1
    with torch.no_grad():
        pre = F.relu(F.batch_norm(torch.cat(earlier, 1), bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                  training=False, eps=bn.eps))
        torch.testing.assert_close(layer(earlier), F.conv2d(pre, layer.conv1.weight, padding=1))


@pytest.mark.parametrize("bn_size", [1, 2])
def test_densenet_any_positive_bn_size_has_torchvisions_bottleneck(bn_size):
    """torchvision's _DenseLayer always has the 1x1 bottleneck of bn_size * k channels, bn_size=1
    included (only our bn_size=0 drops it, for the paper's plain DenseNet)."""
    cfg = dict(growth_rate=4, block_config=(2, 1), num_init_features=8, bn_size=bn_size, num_classes=10)
    with torch.device("meta"):
        assert _shapes(densenet.DenseNet(**cfg)) == _shapes(torchvision.models.DenseNet(**cfg))


@pytest.mark.parametrize("name", ["densenet121", "densenet_bc_100", "densenet40"])
def test_densenet_builders_pass_drop_rate_and_memory_efficient_to_every_dense_layer(name):
    """The builders' documented keywords reach each layer (the paper's 0.2 dropout for CIFAR without
    augmentation; torchvision's memory_efficient)."""
    with torch.device("meta"):
        model = getattr(densenet, name)(num_classes=10, drop_rate=0.2, memory_efficient=True)
    # torchvision's keys: features.denseblock<i>.denselayer<j>
    layers = [m for n, m in model.named_modules() if n.rpartition(".")[2].startswith("denselayer")]
    assert layers and all(m.drop_rate == 0.2 and m.memory_efficient for m in layers)


def _narrow_vgg11(**kw) -> vgg.VGG:
    # The head's width and pool size do not matter to these tests; 4096-wide fc6/fc7 cost seconds.
    return vgg.vgg11(num_classes=3, hidden_dim=16, pool_size=1, **kw)


def test_vgg_dropout_acts_before_fc7_and_fc8_both():
    """The paper regularizes "the first two fully-connected layers" with dropout; the ``dropout``
    argument sets that rate for both, as torchvision's VGG(dropout=...)."""
    with torch.device("meta"):
        model = _narrow_vgg11(dropout=0.3)
    assert [m.p for m in model.classifier if isinstance(m, nn.Dropout)] == [0.3, 0.3]


def test_vgg_pre_logits_are_what_fc8_reads_in_training_too():
    """forward_head(x) is get_classifier()(forward_head(x, pre_logits=True)): fc7's features after
    its dropout, so with the same seed the train-mode logits are fc8 of the pre-logits."""
    torch.manual_seed(0)
    model = _narrow_vgg11().train()
    features = torch.randn(4, 512, 2, 2)
    torch.manual_seed(1)
    logits = model.forward_head(features)
    torch.manual_seed(1)
    pre = model.forward_head(features, pre_logits=True)
    torch.testing.assert_close(model.get_classifier()(pre), logits)


def test_googlenet_aux_head_matches_torchvisions_on_a_14px_map():
    """The aux head reads 4a's 14x14 map at 224 px (the paper's 5x5/3 average pool gives 4x4); on
    32 px inputs its map is 2x2 and the 4x4 pool only repeats pixels, so the pooling is compared
    here, on the map size it was made for, against torchvision's InceptionAux in eval mode."""
    torch.manual_seed(0)
    ref = randomize_bn(TorchvisionInceptionAux(512, 10)).eval()
    ours = googlenet.InceptionAux(512, 10).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 512, 14, 14)
    with torch.no_grad():
        _assert_close(ours(x), ref(x))


@pytest.mark.parametrize("in_channels", [2, 4])
def test_googlenet_transform_input_refuses_channels_without_imagenet_statistics(in_channels):
    """transform_input re-normalizes with ImageNet's 3 channel means and stds (or their average for
    1 channel); other counts have none, and once failed only at the first forward, in broadcasting."""
    with pytest.raises(ValueError) as err:
        googlenet.googlenet(transform_input=True, in_channels=in_channels)
    assert f"in_channels={in_channels}; pass transform_input=False" in str(err.value) and "\n" not in str(err.value)
