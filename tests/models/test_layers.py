"""The shared building blocks of models/layers.py against torch's own layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_lab.models import create_model
from resnet_lab.models.layers import ClassifierModel, LinearWithHead, check_rate, conv1x1, conv3x3, replace_linear, stack_head


@pytest.mark.parametrize("stride,dilation", [(1, 1), (1, 2), (2, 3)])
def test_conv3x3_pads_by_its_dilation_as_torchvisions_and_has_no_bias(stride, dilation):
    """torchvision's conv3x3 pads by ``dilation``: a stride-1 3x3 conv keeps the map size at any
    dilation (a padding of 1 shrinks a dilated one by 2 * (dilation - 1) pixels)."""
    torch.manual_seed(0)
    conv = conv3x3(4, 6, stride=stride, dilation=dilation)
    x = torch.randn(2, 4, 9, 9)
    assert conv.bias is None
    with torch.no_grad():
        want = F.conv2d(x, conv.weight, stride=stride, padding=dilation, dilation=dilation)
        torch.testing.assert_close(conv(x), want)
    assert want.shape[-1] == (9 - 1) // stride + 1



def test_reset_classifier_puts_the_new_linear_on_the_models_device_and_dtype():
    """A model moved to float64 (or another device, here meta) and given a new head must run as it
    did: a fresh nn.Linear is float32 on the CPU."""
    model = create_model("resnet8", num_classes=10).double()
    model.reset_classifier(3)
    assert model.fc.weight.dtype == model.fc.bias.dtype == torch.float64
    assert model(torch.randn(2, 3, 16, 16, dtype=torch.float64)).shape == (2, 3)
    with torch.device("meta"):
        on_meta = create_model("densenet40", num_classes=10)
    on_meta.reset_classifier(4)
    assert on_meta.classifier.weight.device.type == "meta" and on_meta.classifier.out_features == 4


def test_conv1x1_is_torchvisions_bias_free_projection():
    """Shortcuts and bottlenecks call conv1x1 with their own bias flag; its default is torchvision's:
    no bias (a norm follows)."""
    from torchvision.models.resnet import conv1x1 as tv_conv1x1

    ours, theirs = conv1x1(4, 6, stride=2), tv_conv1x1(4, 6, stride=2)
    assert ours.bias is None and theirs.bias is None
    assert (ours.kernel_size, ours.stride, ours.padding) == (theirs.kernel_size, theirs.stride, theirs.padding)


@pytest.mark.parametrize("bias", [True, False])
def test_replace_linear_keeps_the_old_layers_bias_setting(bias):
    """A bias-free classifier (a head a user built without one) stays bias-free, alone or at the end
    of a Sequential, as a new nn.Linear with the old one's flag would be."""
    for head in (nn.Linear(8, 4, bias=bias), nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4, bias=bias))):
        new = replace_linear(head, 3)
        last = new if isinstance(new, nn.Linear) else new[-1]
        assert last.out_features == 3 and (last.bias is not None) == bias


@pytest.mark.parametrize("bad", [0, -2, 2.0])
def test_a_stacked_head_of_no_classes_or_a_non_int_count_is_refused(bad):
    """LinearWithHead's docstring: new_classes is the stacked layer's outputs, a positive int; 0 would
    build a model that predicts nothing."""
    with pytest.raises(ValueError, match=f"new_classes must be a positive int, got {bad!r}$"):
        stack_head(nn.Sequential(nn.Linear(8, 4)), "0", bad)


def test_a_stacked_head_names_its_classes_in_its_repr():
    head = stack_head(nn.Sequential(nn.Linear(8, 4)), "0", 5)
    assert repr(head) == "LinearWithHead(in_features=8, out_features=4, bias=True, new_classes=5)"


@pytest.mark.parametrize("bias", [True, False])
def test_from_linear_copies_the_trained_linear_and_stacks_torchs_linear_on_it(bias):
    """The old layer keeps its trained weight and bias (copies, not shared), and the output is
    torch's F.linear of the head over the old layer's own output."""
    torch.manual_seed(0)
    old = nn.Linear(6, 4, bias=bias)
    if bias:
        nn.init.normal_(old.bias)  # far from a fresh Linear's small fan-in draw
    head = LinearWithHead.from_linear(old, 3)
    x = torch.randn(5, 6)
    with torch.no_grad():
        torch.testing.assert_close(head(x), F.linear(old(x), head.head_weight, head.head_bias))
        old.weight.add_(1.0)
    assert not torch.equal(head.weight, old.weight) and (head.bias is not None) == bias


def test_reset_classifier_of_a_stacked_head_model_records_the_plain_linear_it_built():
    """After reset_classifier the stacked head is gone, so model_config (what save_model writes)
    must rebuild a plain Linear: the rebuilt model loads the state dict strictly."""
    model = create_model("resnet8", num_classes=10, stacked_head=4)
    model.reset_classifier(3)
    assert type(model.fc) is nn.Linear and model.fc.out_features == 3 == model.num_classes
    config = dict(model.model_config)
    assert "stacked_head" not in config and config["num_classes"] == 3
    create_model(config.pop("name"), **config).load_state_dict(model.state_dict(), strict=True)


class _MlpHeadNet(ClassifierModel):
    """A user's model whose classifier is a Sequential of two Linears (512 -> 128 -> 10)."""

    classifier_attr = "head"

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Sequential(nn.Linear(512, 128), nn.ReLU(), nn.Dropout(), nn.Linear(128, 10))


def test_num_features_is_the_input_width_of_the_final_linear_of_a_sequential_classifier():
    """The docstring's "width of the pooled features that enter the final Linear": 128 here, the
    Linear reset_classifier replaces (not the 512 entering the first)."""
    model = _MlpHeadNet()
    assert model.num_features == 128
    model.reset_classifier(3)
    assert model.num_features == 128 and model.head[-1].out_features == 3 and model.head[0].in_features == 512


def test_a_dropout_rate_of_zero_is_taken_and_the_largest_float_below_one_too():
    """The docstring's [0, 1): 0 switches dropout off, as nn.Dropout(p=0) does; 1 is refused."""
    import math

    below_one = math.nextafter(1.0, 0.0)
    assert [check_rate("p", v, "0.5") for v in (0, 0.0, below_one)] == [0.0, 0.0, below_one]
    assert nn.Dropout(p=below_one).p == below_one
    with pytest.raises(ValueError, match=r"^p must be a float in \[0, 1\), got 1 "):
        check_rate("p", 1, "0.5")
