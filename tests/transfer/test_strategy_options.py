"""Options that do not fit the strategy, refused by the API in the words the CLI uses, before
anything is built or written (finetune's and transfer_model's own check_transfer_options call)."""

from __future__ import annotations

import pytest

from resnet_lab.train import TrainConfig
from resnet_lab.transfer import finetune, load_source, transfer_model
from tinytrain import make_bundle


@pytest.mark.parametrize("strategy, kw, message", [
    ("everything", {}, "unknown strategy 'everything': expected one of all, last, head"),
    ("all", {"backbone_lr_scale": 0.0}, "--backbone-lr-scale must be a finite number > 0 (e.g. 0.1), got 0.0"),
    # inf passed "> 0" and was refused later naming lr_scale, a name the caller never gave
    ("all", {"backbone_lr_scale": float("inf")}, "--backbone-lr-scale must be a finite number > 0 (e.g. 0.1), got inf"),
    ("last", {"backbone_lr_scale": 0.1}, "--backbone-lr-scale applies to --strategy all, not last"),
])
def test_transfer_model_refuses_an_option_of_another_strategy_or_out_of_range(resnet8_run, strategy, kw, message):
    with pytest.raises(ValueError) as e:
        transfer_model(load_source(resnet8_run), strategy, num_classes=3, **kw)
    assert str(e.value) == message


@pytest.mark.parametrize("strategy, freeze_epochs, message", [
    ("last", 1, "--freeze-epochs applies to --strategy all, not last"),
    ("head", 2, "--freeze-epochs applies to --strategy all, not head"),
    ("all", -1, "--freeze-epochs must be >= 0, got -1"),
])
def test_finetune_refuses_freeze_epochs_outside_all_or_below_zero(resnet8_run, tmp_path, strategy, freeze_epochs,
                                                                  message):
    data = make_bundle(classes=3)  # 1 x 6 x 6 images, as the source run's
    model, plan = transfer_model(load_source(resnet8_run), strategy, num_classes=3, in_channels=1,
                                 classes=list(data.info.classes))
    out = tmp_path / "ft"
    with pytest.raises(ValueError) as e:
        finetune(model, data, TrainConfig(epochs=1, progress=False, plots=False, device="cpu", out=str(out)), plan,
                 freeze_epochs=freeze_epochs, log=lambda s: None)
    assert str(e.value) == message
    assert not out.exists()
