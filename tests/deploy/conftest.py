"""Fixtures of the predict tests: a tiny 3-class gray run saved as training saves one, and an 8 px
gray image for it."""

import numpy as np
import pytest
import torch
from PIL import Image

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


@pytest.fixture
def image(tmp_path):
    """An 8 px gray PNG of random pixels: the run's input size."""
    path = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 8), dtype=np.uint8)).save(path)
    return path
