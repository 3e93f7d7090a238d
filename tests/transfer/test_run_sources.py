"""A run directory as the source: which of its weights files is read (load_source's ``which``), a
``--model`` that contradicts the run's model.json, and the preprocessing it hands to the data. The
references: the weights file itself, read with safetensors, and the documented contracts."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from resnet_lab.transfer import load_source


@pytest.fixture
def run_with_best(tmp_path, resnet8_run):
    """A copy of the source run whose best.safetensors holds other weights than its model.safetensors."""
    run = tmp_path / "run"
    shutil.copytree(resnet8_run, run)
    last = load_file(str(run / "model.safetensors"))
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in last.items()}, str(run / "best.safetensors"))
    return run


@pytest.mark.parametrize("which", ["model", "best"])
def test_which_chooses_the_runs_last_or_best_weights(run_with_best, which):
    want = load_file(str(run_with_best / f"{which}.safetensors"))
    source = load_source(run_with_best, which=which)
    assert source.origin == str(run_with_best / f"{which}.safetensors")
    assert source.state_dict.keys() == want.keys()
    assert all(torch.equal(source.state_dict[k], v) for k, v in want.items())


def test_a_model_name_that_contradicts_the_run_is_refused(run_with_best):
    with pytest.raises(ValueError, match=rf"^--model resnet20 differs from resnet8 recorded with {run_with_best}; "
                                         r"drop --model$"):
        load_source(run_with_best, model="resnet20")
    assert load_source(run_with_best, model="resnet8").arch["name"] == "resnet8"  # the same name is fine


def test_source_preprocessing_fills_in_only_what_the_data_config_leaves_out(resnet8_run):
    """with_source_preprocessing's docstring: the weights' input size unless the config sets
    image_size, their mean/std (1 channel repeated for RGB data) unless the config sets them."""
    from resnet_lab.data import DataConfig
    from resnet_lab.transfer import with_source_preprocessing

    source = load_source(resnet8_run)  # 1 x 6 x 6, mean 0.25, std 0.5
    filled = with_source_preprocessing(DataConfig("fake"), source)
    assert (filled.image_size, tuple(filled.mean), tuple(filled.std)) == (6, (0.25,) * 3, (0.5,) * 3)
    own = DataConfig("fake", image_size=12, mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1))
    kept = with_source_preprocessing(own, source)
    assert (kept.image_size, tuple(kept.mean), tuple(kept.std)) == (12, (0.1, 0.2, 0.3), (0.3, 0.2, 0.1))
