import pytest
import torch

from tinytrain import TinyNet, make_bundle


@pytest.fixture
def bundle():
    return make_bundle()


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return TinyNet()
