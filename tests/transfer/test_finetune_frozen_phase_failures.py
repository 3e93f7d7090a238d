"""A finetune whose frozen-backbone phase fails gives the model back as it was given: it left the
caller's model frozen (requires_grad False) with its BN layers locked in eval mode."""

from __future__ import annotations

import pytest

from resnet_lab.train import TrainConfig, TrainingDiverged
from resnet_lab.transfer import finetune, load_source, transfer_model
from tinytrain import make_bundle


def _transferred(resnet8_run):
    data = make_bundle(classes=3)  # 1 x 6 x 6 images, as the source run's
    model, plan = transfer_model(load_source(resnet8_run), "all", num_classes=3, in_channels=1,
                                 classes=list(data.info.classes))
    return model, plan, data


def _state(model) -> tuple[list[bool], list[bool], list[bool]]:
    """Each parameter's requires_grad, whether each module is locked (freeze pins ``train`` on
    the instance), and each module's train/eval mode."""
    return ([p.requires_grad for p in model.parameters()], ["train" in m.__dict__ for m in model.modules()],
            [m.training for m in model.modules()])


def _config(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 1, "lr": 0.01, "progress": False, "plots": False, "device": "cpu", **kw})


def test_a_frozen_phase_refused_for_its_out_leaves_the_model_as_given(resnet8_run, tmp_path):
    out = tmp_path / "ft"
    model, plan, data = _transferred(resnet8_run)
    finetune(model, data, _config(out=str(out)), plan, freeze_epochs=1, log=lambda s: None)
    model, plan, data = _transferred(resnet8_run)
    given = _state(model)
    assert all(given[0]) and not any(given[1])  # the reference: nothing frozen, nothing locked
    with pytest.raises(FileExistsError, match="freeze_phase already holds a run"):
        finetune(model, data, _config(out=str(out)), plan, freeze_epochs=1, log=lambda s: None)
    assert _state(model) == given


def test_a_frozen_phase_that_diverges_leaves_the_model_unfrozen(resnet8_run):
    model, plan, data = _transferred(resnet8_run)
    with pytest.raises(TrainingDiverged):
        finetune(model, data, _config(lr=1e30), plan, freeze_epochs=1, log=lambda s: None)
    grads, locked, modes = _state(model)
    assert all(grads) and not any(locked)
    assert all(mode == model.training for mode in modes)  # no BN left behind in another mode
