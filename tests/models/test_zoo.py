"""Every registered model, with every norm, trains a step: right output shape, finite gradients on
every parameter. Iterates over whatever ``list_models()`` holds, so new families are covered as
soon as they register. Plus the registry's error messages."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resnet_lab.models import create_model, list_models, model_info
from resnet_lab.nn import NORMS

NUM_CLASSES = 10
# Too deep to run on 2 shared CPU cores in a unit test: built and counted instead.
BUILD_ONLY = {"resnet1202", "preact_resnet1001"}
# Candidate input sizes, smallest first: each model runs at the smallest one its architecture
# accepts with a last feature map of at least 2x2 (that keeps models x norms fast).
SIZES = (8, 16, 32, 48, 64, 96, 128, 224)
_smallest: dict[tuple[str, bool], int] = {}

RUNNABLE = [n for n in list_models() if n not in BUILD_ONLY]


def _extra(name: str) -> dict:
    # VGG's 25088->4096->4096 classifier is 120M parameters of plain Linear layers; the full-size
    # head is compared with torchvision in test_densenet_vgg_googlenet.py, so here a narrow one
    # keeps 32 cases fast while every conv and norm still runs forward and backward.
    return {"hidden_dim": 64} if name.startswith("vgg") else {}


def _case(norm: str) -> tuple[int, bool]:
    """(in_channels, small_input) for a norm, so the cross product also covers grayscale input
    and the ImageNet stem: batch runs the standard stem on RGB, the others the small-input stem,
    scratch and none on one channel."""
    in_channels = 1 if norm in ("scratch", "none") else 3
    return in_channels, norm != "batch"


def _input_size(model: torch.nn.Module, name: str, in_channels: int, small_input: bool) -> int:
    """Smallest size in SIZES at which the last feature map is still at least 2x2.

    Merely running is not enough: on a 1x1 map batch norm normalizes 2 values per channel (batch
    2), which sends every activation to +-1 and lets gradients blow up through 30+ such layers.
    """
    key = (name, small_input)
    if key not in _smallest:
        errors = []
        model.eval()
        with torch.no_grad():
            for size in SIZES:
                try:
                    feats = model.forward_features(torch.randn(1, in_channels, size, size))
                except (RuntimeError, ValueError) as e:  # too small for a conv or pool
                    errors.append(f"{size}px: {e}")
                    continue
                if feats.dim() != 4 or min(feats.shape[-2:]) >= 2:
                    _smallest[key] = size
                    break
                errors.append(f"{size}px: feature map {tuple(feats.shape)} is smaller than 2x2")
        model.train()
        if key not in _smallest:
            pytest.fail(f"{name} (small_input={small_input}) fits none of {SIZES} px:\n" + "\n".join(errors))
    return _smallest[key]


PLAIN_VGG = {"vgg11", "vgg13", "vgg16", "vgg19"}  # the paper's VGGs: no normalization layers


def _finite(t: torch.Tensor) -> bool:
    # max and min propagate NaN and inf, and allocate nothing the size of t (VGG has 130M params).
    return bool(torch.isfinite(t.amax()) and torch.isfinite(t.amin()))


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", RUNNABLE)
def test_model_trains_one_step_with_finite_gradients(name, norm):
    if name in PLAIN_VGG:  # no norm layer to put it in: none or the default batch, recorded as none
        if norm in ("scratch", "group"):  # would change nothing: refused, pointing at the _bn variant
            with pytest.raises(ValueError, match=f"{name} has no normalization layers.*use {name}_bn"):
                create_model(name, num_classes=NUM_CLASSES, norm=norm)
            return
    torch.manual_seed(0)
    in_channels, small_input = _case(norm)
    small_input = small_input or model_info(name).small_input  # the CIFAR families refuse small_input=False
    model = create_model(name, num_classes=NUM_CLASSES, in_channels=in_channels, small_input=small_input, norm=norm,
                         **_extra(name))
    if name in PLAIN_VGG:  # none, or the default batch recorded as none (built once: 130M parameters)
        assert model.model_config["norm"] == "none"
    size = _input_size(model, name, in_channels, small_input)
    out = model.train()(torch.randn(2, in_channels, size, size))
    assert isinstance(out, torch.Tensor), f"{name} returned {type(out).__name__} in training, expected logits"
    assert out.shape == (2, NUM_CLASSES)
    F.cross_entropy(out, torch.tensor([0, NUM_CLASSES - 1])).backward()
    missing = [k for k, p in model.named_parameters() if p.grad is None]
    assert not missing, f"{name}/{norm}: parameters without gradient: {missing[:5]}"
    bad = [k for k, p in model.named_parameters() if not _finite(p.grad)]
    assert not bad, f"{name}/{norm}: non-finite gradients in {bad[:5]}"


@pytest.mark.parametrize("name", sorted(BUILD_ONLY))
def test_very_deep_model_builds_with_every_norm_and_norms_change_only_norm_parameters(name):
    models = {norm: create_model(name, num_classes=NUM_CLASSES, norm=norm) for norm in NORMS}
    count = {norm: sum(p.numel() for p in m.parameters()) for norm, m in models.items()}
    for m in models.values():
        assert m.get_classifier().out_features == NUM_CLASSES
    # BN (torch's or ours) and GroupNorm all learn one scale and one shift per channel.
    assert count["batch"] == count["scratch"] == count["group"]
    # "none" drops those and gives every conv a bias instead, as nothing re-centres its output.
    ref = models["batch"]
    norm_params = sum(p.numel() for m in ref.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())
    conv_biases = sum(m.out_channels for m in ref.modules() if isinstance(m, torch.nn.Conv2d))
    assert count["none"] == count["batch"] - norm_params + conv_biases


def test_list_models_filters_by_pattern():
    names = list_models("resnet*")
    assert "resnet18" in names and "resnet56" in names
    assert all(n.startswith("resnet") for n in names)
    # numbers in numeric order, as a reader expects (a plain string sort puts resnet110 before resnet18)
    depths = [int(n[len("resnet"):]) for n in names if n[len("resnet"):].isdigit()]
    assert depths == sorted(depths) and {8, 18, 20, 110, 1202} <= set(depths)


def test_a_pattern_without_wildcards_matches_anywhere_in_the_name():
    """``wrn`` is ``*wrn*`` (documented with the CLI's `models` and in list_models), checked against fnmatch
    over every registered name; a pattern with a wildcard is taken as written, anchored at both ends."""
    import fnmatch

    every = list_models()
    assert list_models("wrn") == [n for n in every if fnmatch.fnmatchcase(n, "*wrn*")] != []
    assert list_models("WRN") == list_models("wrn")
    assert list_models("resnet1?") == [n for n in every if fnmatch.fnmatchcase(n, "resnet1?")]
    assert "preact_resnet110" in list_models("resnet110") and "preact_resnet110" not in list_models("resnet110*")


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ValueError) as info:
        create_model("resnet_56")
    msg = str(info.value)
    assert "'resnet_56'" in msg and "resnet56" in msg


def test_unexpected_keyword_names_the_keyword_and_the_accepted_ones():
    with pytest.raises(TypeError) as info:
        create_model("resnet18", dropout=0.1)
    msg = str(info.value)
    assert "'dropout'" in msg and "zero_init_residual" in msg


def test_bad_common_arguments_are_rejected_with_the_value():
    with pytest.raises(ValueError, match="'layer'"):
        create_model("resnet8", norm="layer")
    with pytest.raises(ValueError, match="0"):
        create_model("resnet8", num_classes=0)
