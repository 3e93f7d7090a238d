"""What transfer_model's plan records (``model.json``'s ``transfer`` entry, the printed counts), and
the head helpers: where the stacked layer goes, what is refused. References: the source run's own
model (its parameter count), torch's ``F.linear``, the documented contract of ``head_param_names``."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_lab import create_model
from resnet_lab.models import ClassifierModel
from resnet_lab.train import load_model
from resnet_lab.transfer import add_head, classifier_linear_name, head_param_names, load_source, transfer_model


def test_head_plan_counts_the_whole_source_network_as_frozen(resnet8_run):
    """``head`` keeps every source parameter, so the frozen count is the source model's own count and
    the trainable one that of the stacked Linear(5 -> 3)."""
    source_model, _ = load_model(resnet8_run)
    n_source = sum(p.numel() for p in source_model.parameters())
    _, plan = transfer_model(load_source(resnet8_run), "head", num_classes=3)
    assert (plan.trainable, plan.frozen) == (5 * 3 + 3, n_source)
    assert plan.to_meta()["transfer"]["params"] == {"trainable": 18, "frozen": n_source}
    assert f"18 trainable / {n_source:,} frozen parameters" in plan.describe()


def test_head_param_names_refuses_a_model_without_a_stacked_head():
    with pytest.raises(ValueError, match=r"^fc has no stacked head: call add_head first$"):
        head_param_names(create_model("resnet8", num_classes=3))


class _IdentityHead(ClassifierModel):
    """A model outside the registry whose classifier has no Linear (features out, as num_classes=0)."""

    classifier_attr = "head"

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Conv2d(1, 4, 3), nn.Identity()


@pytest.mark.parametrize("model, message", [
    (nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4, 2)),
     "Sequential has no get_classifier(): build it with resnet_lab.create_model"),
    (_IdentityHead(), "the classifier of _IdentityHead (Identity) has no Linear layer"),
], ids=["no get_classifier", "no Linear"])
def test_a_model_without_a_classifier_linear_is_refused_saying_why(model, message):
    """classifier_linear_name's docstring: a model without get_classifier(), or whose classifier holds no
    Linear, raises ValueError (not an AttributeError or IndexError from inside the search)."""
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        add_head(model, 3)


class _TwoLinearHead(ClassifierModel):
    """A model outside the registry whose classifier is an MLP: Linear(4 -> 6), ReLU, Linear(6 -> 2)."""

    classifier_attr = "head"

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))

    def forward(self, x):
        return self.head(self.body(x))


def test_add_head_stacks_on_the_classifiers_final_linear_not_its_first():
    """The stacked layer goes on the classifier's *final* Linear (the logits), whatever comes before
    it: the reference is torch's F.linear applied to the whole old classifier's output."""
    torch.manual_seed(0)
    model = _TwoLinearHead()
    x = torch.randn(3, 1, 5, 5)
    with torch.no_grad():
        old_logits = model(x)
    assert classifier_linear_name(model) == "head.2"
    assert add_head(model, 3) == "head.2" and head_param_names(model) == ["head.2.head_weight", "head.2.head_bias"]
    with torch.no_grad():
        assert torch.allclose(model(x), F.linear(old_logits, model.head[2].head_weight, model.head[2].head_bias),
                              atol=1e-6)


def test_head_keeps_the_old_classifier_even_when_asked_to_recreate_it(resnet8_run):
    """docs/TRANSFER.md: ``head`` loads every weight, the old classifier included, unchanged; its
    stacked layer takes the old logits, so a fresh old classifier would make them meaningless."""
    want = load_model(resnet8_run)[0].state_dict()
    model, plan = transfer_model(load_source(resnet8_run), "head", num_classes=3, recreate_head=True)
    assert plan.load.recreated == []
    assert all(torch.equal(model.state_dict()[k], v) for k, v in want.items())


def test_last_plan_records_how_many_frozen_norm_layers_stay_in_eval_mode(resnet8_run):
    """model.json's transfer.eval_norms (shown by `resnet-lab report`) counts the BatchNorm layers
    before the unfreeze point: every torch BatchNorm2d outside layer3 of resnet8."""
    model, plan = transfer_model(load_source(resnet8_run), "last", num_classes=3, unfreeze_from="layer3")
    frozen_bns = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d) and not n.startswith("layer3")]
    assert len(frozen_bns) >= 3 and sorted(plan.eval_norms) == sorted(frozen_bns)
    assert plan.to_meta()["transfer"]["eval_norms"] == len(frozen_bns)
    assert f"; {len(frozen_bns)} frozen norm layers kept in eval mode" in plan.describe()


@pytest.mark.parametrize("strategy", ["all", "last"])
@pytest.mark.parametrize("names, recreated", [
    ([f"old{i}" for i in range(5)], False),  # the source's own classes: its classifier is kept
    ([f"new{i}" for i in range(5)], True),  # as many classes, other ones: the old rows mean nothing here
])
def test_the_classifier_is_recreated_at_the_same_count_exactly_when_the_class_names_differ(resnet8_run, strategy,
                                                                                          names, recreated):
    """docs/TRANSFER.md: "with both class name lists known and different it is re-created even at the same
    count". Reference: the source run's own classifier (5 classes old0..old4), read back with load_model."""
    want = load_model(resnet8_run)[0].state_dict()
    torch.manual_seed(0)
    model, plan = transfer_model(load_source(resnet8_run), strategy, num_classes=5, in_channels=1, classes=names)
    got = model.state_dict()
    assert plan.load.recreated == (["fc.weight", "fc.bias"] if recreated else [])
    assert torch.equal(got["fc.weight"], want["fc.weight"]) is not recreated
    assert torch.equal(got["fc.bias"], want["fc.bias"]) is not recreated
    assert torch.equal(got["layer1.0.conv1.weight"], want["layer1.0.conv1.weight"])  # the backbone loads either way
