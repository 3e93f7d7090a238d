"""checkpoint.py against its documented contracts: docs/DISTRIBUTED.md's global batch (batch x N
processes), and a resume that refuses, in one line and touching nothing, a model that trains other
tensors than the run did."""

from __future__ import annotations

import pytest
import torch

from resnet_lab.train import TrainConfig, train
from resnet_lab.train.checkpoint import recipe_values_differ, run_facts

from support import run_files
from tinytrain import TinyNet, make_bundle


def test_the_data_facts_record_the_global_batch_so_another_split_of_it_among_processes_resumes():
    """docs/DISTRIBUTED.md: --batch-size is per process, the global batch is batch x N; a run of 2
    processes at 16 shares its trajectory with 1 process at 32, not with 1 process at 16."""
    def data_facts(batch_size, world_size):
        return run_facts(TrainConfig(), make_bundle(batch_size=batch_size), world_size)["data"]

    two_at_16 = data_facts(16, 2)
    assert two_at_16["global_batch_size"] == 32
    assert not [k for k in two_at_16 if recipe_values_differ(two_at_16[k], data_facts(32, 1)[k])]
    assert [k for k in two_at_16 if recipe_values_differ(two_at_16[k], data_facts(16, 1)[k])] == ["global_batch_size"]


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
    before = run_files(run)
    with pytest.raises(ValueError) as e:
        _tiny_run(run, "bn.weight", resume=True)
    text = str(e.value)
    assert "\n" not in text and str(run) in text and "the same layers frozen" in text
    assert "4 trainable tensors either way" in text  # not "trained with 4, this model has 4"
    assert run_files(run) == before


@pytest.mark.parametrize("saved, now", [(3, 0.1 * 3 * 10), (0.1 * 3 * 10, 3), (0, 1e-13), (1e-13, 0)])  # 3.0000000000000004
def test_a_float_on_either_side_is_compared_to_rounding(saved, now):
    """recipe_values_differ's docstring: floats are compared to rounding. A value a user gave as an int
    (lr=3) and the same value computed in floats on the other side are the same recipe, whichever
    side holds the int."""
    assert not recipe_values_differ(saved, now)
    assert recipe_values_differ(saved, now + 1e-3)
