"""checkpoint.py against its documented contracts: docs/DISTRIBUTED.md's global batch (batch x N
processes), and a resume that refuses, in one line and touching nothing, a model that trains other
tensors than the run did."""

from __future__ import annotations

import pytest
import torch

from resnet_lab.train import TrainConfig, train
from tinytrain import TinyNet, make_bundle


def _tiny_run(out, frozen: str, **kw):
    """TinyNet with the parameter ``frozen`` frozen, trained for the first of 2 epochs into ``out``."""
    torch.manual_seed(0)
    model = TinyNet()
    model.get_parameter(frozen).requires_grad_(False)
    config = TrainConfig(epochs=2, stop_after=1, lr=0.05, out=str(out), progress=False, plots=False, device="cpu", **kw)
    return train(model, make_bundle(), config, log=lambda *_: None)


def test_a_resume_freezing_another_tensor_of_the_same_count_is_one_line_and_leaves_the_run_alone(tmp_path):
    """The run froze the conv's weight (1 decayed + 3 undecayed tensors train), the resume the BN's
    weight (2 + 2): as many trainable tensors, but other ones. Comparing the counts alone let torch's
    multi-line "doesn't match the size of optimizer's group" through."""
    run = tmp_path / "run"
    _tiny_run(run, "conv.weight")
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(ValueError) as e:
        _tiny_run(run, "bn.weight", resume=True)
    text = str(e.value)
    assert "\n" not in text and str(run) in text and "the same layers frozen" in text
    assert "4 trainable tensors either way" in text  # not "trained with 4, this model has 4"
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
