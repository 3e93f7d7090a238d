"""What transfer_model's plan records (``model.json``'s ``transfer`` entry, the printed counts) and the
head helpers' refusals. References: the source run's own model (its parameter count) and the
documented contract of ``head_param_names``."""

from __future__ import annotations

import pytest

from resnet_lab import create_model
from resnet_lab.train import load_model
from resnet_lab.transfer import head_param_names, load_source, transfer_model


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
