"""timm's checkpoints in our zoo: timm's VGG keeps fc6/fc7 as convolutions under other names
(``pre_logits.fc1``/``fc2``, ``head.fc``) and loads through ``vgg_keys_from_timm``; timm's ResNets
and DenseNets have torchvision's keys and load as they are. Each is checked against timm's own
model (randomly initialized, nothing downloaded) when timm is installed; the VGG conversion is
also checked against torch's Conv2d without timm."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnet_lab import create_model
from resnet_lab.models.vgg import vgg_keys_from_timm
from resnet_lab.transfer.sources import infer_arch

try:
    import timm
except ImportError:  # an optional dev dependency: the checks against timm skip without it
    timm = None

needs_timm = pytest.mark.skipif(timm is None, reason="timm is not installed (pip install -e '.[dev]')")


def _ours_from(name: str, state_dict: dict[str, torch.Tensor]) -> nn.Module:
    """Our model holding exactly ``state_dict`` (built on the meta device and assigned: a VGG's
    130M-parameter random init would cost seconds)."""
    with torch.device("meta"):
        model = create_model(name)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model.eval()


def _random_bn_stats(model: nn.Module) -> None:
    """Non-trivial BN state, so that eval outputs depend on every buffer being loaded."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0, 0.1, generator=g)


def _timm_vgg(name: str) -> nn.Module:
    """timm's model with He-uniform random weights, built on the meta device and filled in
    (timm's own init of 130M parameters costs seconds)."""
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    model = model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            bound = (6 / p[0].numel()) ** 0.5 if p.dim() > 1 else 0.1  # fan-in of a conv or Linear
            p.uniform_(-bound, bound, generator=g)
    return model.eval()


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


def _timm_style_head(ours: nn.Module) -> tuple[dict[str, torch.Tensor], nn.Module]:
    """A small VGG head (hidden 16) in timm's layout for ``ours`` (vgg11, hidden_dim 16): fc6 a 7x7
    conv over the 512x7x7 map, fc7 a 1x1 conv, fc8 head.fc, with random features; returned with
    the reference that maps a feature map to the logits through torch's own Conv2d."""
    fc1, fc2, fc = nn.Conv2d(512, 16, 7), nn.Conv2d(16, 16, 1), nn.Linear(16, 10)
    timm_style = {k: torch.randn(v.shape) for k, v in ours.state_dict().items() if k.startswith("features.")}
    for name, module in (("pre_logits.fc1", fc1), ("pre_logits.fc2", fc2), ("head.fc", fc)):
        timm_style.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
    return timm_style, nn.Sequential(fc1, nn.ReLU(), fc2, nn.ReLU(), nn.Flatten(1), fc)  # (2, 16, 1, 1) -> (2, 10)


def test_timm_style_conv_head_loads_into_vgg_and_matches_torch_conv2d():
    torch.manual_seed(0)
    with torch.device("meta"):
        ours = create_model("vgg11", num_classes=10, hidden_dim=16)
    timm_style, reference = _timm_style_head(ours)
    ours.load_state_dict(timm_style, strict=True, assign=True)
    ours.eval()

    feat = torch.randn(2, 512, 7, 7)
    with torch.no_grad():
        _assert_close(ours.forward_head(feat), reference(feat))
    assert ours.get_classifier() is ours.classifier[6]


def test_timm_style_head_loads_into_a_vgg_nested_in_another_module():
    """torch hands a nested VGG its entries under a prefix (``0.`` in a Sequential, ``module.`` under
    DataParallel); the renaming looks behind it."""
    torch.manual_seed(0)
    with torch.device("meta"):
        wrapped = nn.Sequential(create_model("vgg11", num_classes=10, hidden_dim=16))
    timm_style, reference = _timm_style_head(wrapped[0])
    wrapped.load_state_dict({f"0.{k}": v for k, v in timm_style.items()}, strict=True, assign=True)
    feat = torch.randn(2, 512, 7, 7)
    with torch.no_grad():
        _assert_close(wrapped[0].eval().forward_head(feat), reference(feat))


def test_vgg_keys_from_timm_leaves_torchvision_keys_and_other_prefixes_alone():
    w = torch.randn(4, 8)
    sd = {"classifier.0.weight": w, "net.pre_logits.fc1.weight": torch.randn(4, 2, 2, 2)}
    out = vgg_keys_from_timm(sd)
    assert out.keys() == sd.keys() and out["classifier.0.weight"] is w
    nested = vgg_keys_from_timm(sd, prefix="net.")
    assert set(nested) == {"classifier.0.weight", "net.classifier.0.weight"}
    assert nested["net.classifier.0.weight"].shape == (4, 8)


@needs_timm
def test_timm_vgg11_state_dict_loads_strictly_and_matches_timm_head_and_outputs():
    ref = _timm_vgg("vgg11")
    ours = _ours_from("vgg11", ref.state_dict())
    # `--from-file timm_vgg11.pth --model vgg11` reads the architecture off the same keys
    assert infer_arch("vgg11", ref.state_dict()) == {
        "name": "vgg11", "num_classes": 1000, "in_channels": 3, "norm": "batch", "small_input": False}
    # The head on a full 7x7 map (a 224 px image's): timm's 7x7 fc6 conv sees each position
    # once, as our Linear sees the flattened map; this fixes the flatten order.
    feat = torch.randn(1, 512, 7, 7)
    x = torch.randn(1, 3, 32, 32)  # the whole network end to end, cheaply (1x1 map, pooled to 7x7)
    with torch.no_grad():
        expected = ref.forward_head(feat)
        _assert_close(ours.forward_head(feat), expected)
        pre = ours.forward_head(feat, pre_logits=True)  # fc7 features
        _assert_close(pre, ref.forward_head(feat, pre_logits=True))
        _assert_close(ours.get_classifier()(pre), expected)  # fc8 is timm's classifier
        _assert_close(ours(x), ref(x))
    assert type(ours.get_classifier()) is type(ref.get_classifier()) is nn.Linear
    assert ours.get_classifier().weight.shape == ref.get_classifier().weight.shape


@needs_timm
@pytest.mark.parametrize("name", ["resnet18", "densenet121"])
def test_timm_resnet_and_densenet_state_dicts_load_key_for_key_and_match_timm_outputs(name):
    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False).eval()
    _random_bn_stats(ref)
    state = ref.state_dict()
    with torch.device("meta"):
        assert list(create_model(name).state_dict()) == list(state)  # same keys, same order
    ours = _ours_from(name, state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        _assert_close(ours(x), ref(x))


def test_vgg_get_classifier_is_fc8_and_reset_classifier_replaces_only_fc8():
    torch.manual_seed(0)
    model = create_model("vgg11", num_classes=10, hidden_dim=16, pool_size=1).eval()
    fc6, fc7 = model.classifier[0], model.classifier[3]
    assert model.get_classifier() is model.classifier[6] and model.get_classifier().out_features == 10
    model.reset_classifier(5)
    assert model.classifier[0] is fc6 and model.classifier[3] is fc7  # fc6/fc7 keep their weights
    assert model.get_classifier() is model.classifier[6] and model.get_classifier().out_features == 5
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(0)  # features out, as timm's reset_classifier(0)
        torch.testing.assert_close(model(x), features)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_classifier(-1)
