"""Fixtures: pretrained-looking weights built with random values, saved under tmp dirs (no downloads)."""

from __future__ import annotations

import pytest
import torch
import torchvision

from resnet_lab import create_model
from resnet_lab.runs import save_model
from support import randomize_bn


@pytest.fixture(scope="session")
def tv_resnet18(tmp_path_factory):
    """A torchvision resnet18 with random weights (eval mode) and its state dict saved as .pth."""
    torch.manual_seed(0)
    model = randomize_bn(torchvision.models.resnet18(num_classes=10)).eval()
    path = tmp_path_factory.mktemp("tv") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="session")
def resnet8_run(tmp_path_factory):
    """A run directory of ours: a 1-channel resnet8 for 5 classes, with model.json."""
    torch.manual_seed(1)
    model = randomize_bn(create_model("resnet8", num_classes=5, in_channels=1), seed=1)
    run = tmp_path_factory.mktemp("runs") / "source"
    save_model(run, model, {"classes": [f"old{i}" for i in range(5)], "input_size": [1, 6, 6],
                            "mean": [0.25], "std": [0.5], "dataset": "tiny"})
    return run
