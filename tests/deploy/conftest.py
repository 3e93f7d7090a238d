"""Fixtures of the predict tests: a tiny 3-class gray run saved as training saves one."""

import pytest
import torch

from resnet_lab import create_model
from resnet_lab.train import save_model

# The model.json entries predict reads, for an untrained 8 px gray resnet8.
TINY_META = {"classes": ["a", "b", "c"], "input_size": [1, 8, 8], "mean": [0.5], "std": [0.25]}


@pytest.fixture
def run(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "run"
    save_model(path, create_model("resnet8", num_classes=3, in_channels=1), dict(TINY_META))
    return path
