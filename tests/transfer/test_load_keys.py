"""Which keys and shapes of a state dict load: a tensor of another shape outside the first conv and
the classifier is refused (load_pretrained's docstring); GoogLeNet's aux heads are dropped."""

from __future__ import annotations

import pytest
import torch

from resnet_lab import create_model
from resnet_lab.transfer import ArchitectureMismatchError, load_pretrained


@pytest.mark.parametrize("key", ["layer1.0.conv1.weight", "layer2.0.bn1.running_var"])
def test_a_tensor_of_another_shape_inside_the_network_is_refused_naming_it(key):
    """Only the first conv's input channels are adapted and only the classifier is re-created: an
    inner conv with one input channel (which the first conv's 1 -> C rule could repeat) or a BN
    buffer of another width is a wrong architecture, refused before anything is copied."""
    torch.manual_seed(0)
    state = create_model("resnet8", num_classes=4).state_dict()
    good = state[key]
    state[key] = good[:, :1] if good.ndim == 4 else good[:-1]
    target = create_model("resnet8", num_classes=4)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ArchitectureMismatchError) as e:
        load_pretrained(target, state)
    assert f"different shapes: {key} {tuple(state[key].shape)} vs model {tuple(good.shape)}" in str(e.value)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())


def test_googlenets_aux_heads_in_the_weights_are_dropped_for_a_model_without_them():
    """torchvision's GoogLeNet files carry the aux classifiers (aux1., aux2.), which a model built
    without them does not want; torchvision drops them the same way for aux_logits=False. The
    reference: torchvision's own GoogLeNet with aux heads, its other tensors copied one for one."""
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False, num_classes=10)
    state = tv.state_dict()
    aux = [k for k in state if k.startswith(("aux1.", "aux2."))]
    ours = create_model("googlenet", num_classes=10)
    assert aux and not any(k.startswith("aux") for k in ours.state_dict())
    report = load_pretrained(ours, state)
    assert report.dropped == aux and report.recreated == []
    assert all(torch.equal(v, state[k]) for k, v in ours.state_dict().items())
