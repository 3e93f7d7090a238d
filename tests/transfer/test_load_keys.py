"""Which keys and shapes of a state dict load. Saved from a wrapped model, it loads as the bare
model's (the keys torch's own wrappers give, ``torch.compile``'s ``_orig_mod.`` and DDP's
``module.`` nested in either order, are the reference, and the logits must equal the bare model's);
a tensor of another shape outside the first conv and the classifier is refused (load_pretrained's
docstring); GoogLeNet's aux heads are dropped."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnet_lab import create_model
from resnet_lab.transfer import ArchitectureMismatchError, load_pretrained, load_source, normalize_keys, transfer_model
from support import randomize_bn


class _DDPNamed(nn.Module):
    """DistributedDataParallel's naming (it holds the model as ``self.module``) without a process group."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module


@pytest.mark.parametrize("wrap", [lambda m: torch.compile(_DDPNamed(m)), lambda m: _DDPNamed(torch.compile(m))],
                         ids=["compile(ddp(model))", "ddp(compile(model))"])
def test_a_compiled_and_ddp_wrapped_checkpoint_loads_with_the_bare_models_logits(tmp_path, wrap):
    """compile(DDP(model)), the order torch's DDP docs recommend, saves ``_orig_mod.module.conv1.weight``:
    normalize_keys stripped only its first prefix, so ``load_source`` kept ``module.conv1.weight``
    (it loaded only because load_pretrained normalized the keys a second time)."""
    torch.manual_seed(0)
    model = randomize_bn(create_model("resnet8", num_classes=4)).eval()
    state = wrap(model).state_dict()
    assert not any(k in state for k in model.state_dict())  # every key carries both prefixes
    assert list(normalize_keys(state)) == list(model.state_dict())
    torch.save(state, tmp_path / "wrapped.pth")
    source = load_source(file=tmp_path / "wrapped.pth", model="resnet8")
    assert list(source.state_dict) == list(model.state_dict())
    loaded, plan = transfer_model(source, "all", num_classes=4)
    assert plan.load.recreated == [] and plan.load.adapted == {}
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(x), model(x))


def _refused(weights: dict, **kw) -> str:
    """The ArchitectureMismatchError message of loading ``weights`` into a fresh resnet8 for 4
    classes, checking that the model was left exactly as built."""
    target = create_model("resnet8", num_classes=4)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    with pytest.raises(ArchitectureMismatchError) as e:
        load_pretrained(target, weights, **kw)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
    return str(e.value)


@pytest.mark.parametrize("key, cut", [("layer1.0.conv1.weight", lambda t: t[:, :1]),
                                      ("layer2.0.bn1.running_var", lambda t: t[:-1]),
                                      ("conv1.weight", lambda t: t[:-1]),
                                      ("conv1.weight", lambda t: nn.functional.pad(t, (1, 1, 1, 1)))],
                         ids=["inner conv, one input channel", "bn buffer", "first conv, fewer filters",
                              "first conv, 5x5 kernel"])
def test_a_tensor_of_another_shape_inside_the_network_is_refused_naming_it(key, cut):
    """Only the first conv's input channels are adapted and only the classifier is re-created: an
    inner conv with one input channel (which the first conv's 1 -> C rule could repeat), a BN
    buffer of another width or a first conv with another number of filters or kernel size (an
    ImageNet 7x7 stem for a small-input 3x3 one) is a wrong architecture, refused before anything
    is copied."""
    torch.manual_seed(0)
    state = create_model("resnet8", num_classes=4).state_dict()
    good = state[key]
    state[key] = cut(good)
    assert f"different shapes: {key} {tuple(state[key].shape)} vs model {tuple(good.shape)}" in _refused(state)


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


def test_keys_missing_from_the_weights_or_unknown_to_the_model_are_refused_naming_the_first_five():
    """load_pretrained's docstring: missing or unexpected keys raise ArchitectureMismatchError naming
    the first of each (five, then how many more), before anything is copied. The reference is torch's
    state dict order; num_batches_tracked may be missing (old torchvision files lack it)."""
    torch.manual_seed(0)
    state = create_model("resnet8", num_classes=4).state_dict()
    gone = [k for k in state if k.startswith("layer3.") and not k.endswith("num_batches_tracked")]
    weights = {k: v for k, v in state.items() if not k.startswith("layer3.")} | {"extra.weight": torch.ones(1)}
    lines = _refused(weights, source="my.pth").splitlines()
    assert lines[0] == "my.pth do not fit resnet8:"
    assert lines[1] == f"  missing in the weights: {', '.join(gone[:5])} (+{len(gone) - 5} more)"
    assert lines[2] == "  not in the model: extra.weight"
