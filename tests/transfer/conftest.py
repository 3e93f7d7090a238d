"""Fixtures: pretrained-looking weights built with random values, saved under tmp dirs (no downloads)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/tinytrain.py


def randomize_norm_stats(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN non-default running statistics and affine values, so an identity-like BN
    cannot hide a wrong mode or a drifted statistic."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(getattr(m, "running_mean", None), torch.Tensor):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.num_batches_tracked.fill_(1234)
                if getattr(m, "weight", None) is not None:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


@pytest.fixture(scope="session")
def tv_resnet18(tmp_path_factory):
    """A torchvision resnet18 with random weights (eval mode) and its state dict saved as .pth."""
    torch.manual_seed(0)
    model = randomize_norm_stats(torchvision.models.resnet18(num_classes=10)).eval()
    path = tmp_path_factory.mktemp("tv") / "resnet18.pth"
    torch.save(model.state_dict(), path)
    return model, path


@pytest.fixture(scope="session")
def resnet8_run(tmp_path_factory):
    """A run directory of ours: a 1-channel resnet8 for 5 classes, with model.json."""
    from resnet_lab import create_model
    from resnet_lab.train import save_model

    torch.manual_seed(1)
    model = randomize_norm_stats(create_model("resnet8", num_classes=5, in_channels=1), seed=1)
    run = tmp_path_factory.mktemp("runs") / "source"
    save_model(run, model, {"classes": [f"old{i}" for i in range(5)], "input_size": [1, 6, 6],
                            "mean": [0.25], "std": [0.5], "dataset": "tiny"})
    return run
