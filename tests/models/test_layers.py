"""The shared building blocks of models/layers.py against torch's own layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from resnet_lab.models import create_model
from resnet_lab.models.layers import conv3x3


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
