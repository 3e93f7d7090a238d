"""optim.py against independent references: torch's SGD over hand-made groups, and the documented
contracts of param_groups and the schedules (optim.py's docstrings, docs/)."""

from __future__ import annotations

import pytest
import torch

from resnet_lab.train import build_optimizer

from tinytrain import TinyNet


def test_a_model_with_every_parameter_frozen_is_refused_by_name_not_by_torchs_empty_list_error():
    """param_groups' docstring: frozen parameters are left out; with all of them frozen there is nothing
    to train, which must say so (torch's own "optimizer got an empty parameter list" names no cause)."""
    model = TinyNet().requires_grad_(False)
    for name in ("sgd", "adamw"):
        with pytest.raises(ValueError, match=r"no trainable parameters \(everything is frozen\).*requires_grad"):
            build_optimizer(model, name)
