"""The stacked head is part of the architecture: ``add_head`` records it in ``model_config``, so a
run's ``arch`` alone rebuilds a head-transferred model; older runs (``transfer.head`` only) still
load. References: the model before saving (outputs compared exactly), torch's ``F.linear``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_lab import create_model
from resnet_lab.models import ClassifierModel, LinearWithHead
from resnet_lab.train import load_model, save_model
from resnet_lab.transfer import add_head, classifier_linear_name, load_source, transfer_model

META = {"classes": ["a", "b", "c"], "input_size": [1, 8, 8], "mean": [0.5], "std": [0.25]}


def _source() -> nn.Module:
    torch.manual_seed(0)
    return create_model("resnet8", num_classes=5, in_channels=1).eval()


def test_add_head_records_stacked_head_and_model_config_rebuilds_the_same_model():
    model = _source()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert add_head(model, 3) == "fc"
    assert model.model_config["stacked_head"] == 3 and model.model_config["num_classes"] == 5
    config = dict(model.model_config)
    rebuilt = create_model(config.pop("name"), **config).eval()
    rebuilt.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
        # The old classifier is untouched: the head applies torch's Linear to the source logits.
        source = _source()
        source.load_state_dict(before)
        assert torch.allclose(model(x), F.linear(source(x), model.fc.head_weight, model.fc.head_bias), atol=1e-6)


def test_a_saved_head_transferred_model_loads_back_from_its_arch_alone(tmp_path):
    model = _source()
    add_head(model, 3)
    save_model(tmp_path, model, dict(META))  # no "transfer" entry: arch must be enough
    loaded, meta = load_model(tmp_path)
    assert meta["arch"]["stacked_head"] == 3 and isinstance(loaded.fc, LinearWithHead)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def _legacy_meta(model: nn.Module) -> dict:
    """model.json of a head-transferred run as older versions saved it: the stacked head only in
    ``transfer.head``, not in ``arch``."""
    arch = {k: v for k, v in model.model_config.items() if k != "stacked_head"}
    return {**META, "arch": arch, "transfer": {"head": {"module": "fc", "num_classes": 3, "old_classes": 5}}}


def test_a_legacy_run_with_only_transfer_head_in_model_json_loads_with_its_head(tmp_path):
    model = _source()
    add_head(model, 3)
    save_model(tmp_path, model, _legacy_meta(model))
    loaded, _ = load_model(tmp_path)
    assert isinstance(loaded.fc, LinearWithHead) and loaded.fc.new_classes == 3
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


class _Custom(ClassifierModel):
    """A model from outside the registry: its classifier is found by searching get_classifier()."""

    classifier_attr = "head"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(4, 2))


def test_classifier_of_a_model_outside_the_registry_is_found_by_search():
    model = _Custom()
    assert classifier_linear_name(model) == "head.2"
    assert add_head(model, 4) == "head.2" and isinstance(model.head[2], LinearWithHead)


@pytest.mark.parametrize("saved_as", ["run", "legacy run", "state dict file"])
def test_a_head_transferred_run_is_a_source_for_a_further_transfer(tmp_path, saved_as):
    """Through --from RUN (as saved now, and as older runs recorded the head: transfer.head only) and
    --from-file FILE --model NAME alike (a run's weights copied out as a .pth)."""
    model = _source()
    add_head(model, 3)
    if saved_as == "run":
        save_model(tmp_path, model, {**META, "transfer": {"head": {"module": "fc", "num_classes": 3, "old_classes": 5}}})
        source = load_source(tmp_path)
    elif saved_as == "legacy run":
        save_model(tmp_path, model, _legacy_meta(model))
        source = load_source(tmp_path)
    else:
        torch.save(model.state_dict(), tmp_path / "head.pth")
        source = load_source(file=tmp_path / "head.pth", model="resnet8")
    assert source.arch["num_classes"] == 3
    again, _ = transfer_model(source, "all", num_classes=3)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        # The folded Linear computes what the stacked pair did: same logits, now from one plain fc.
        assert type(again.fc) is nn.Linear and torch.allclose(again.eval()(x), model(x), atol=1e-5)
