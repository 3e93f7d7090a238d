"""Runs saved before 2026-12-03 recorded ``small_input`` as the argument given, not the stem built:
a CIFAR family trained on large images said ``false``; and a plain VGG recorded the ``--norm`` given.
create_model now refuses those arguments for those models (they changed nothing), and such a run
must still load, as the same network."""

from __future__ import annotations

import json

import torch

from resnet_lab import create_model
from resnet_lab.train import load_model, save_model

META = {"classes": [str(i) for i in range(10)], "input_size": [1, 28, 28], "mean": [0.5], "std": [0.25]}


def test_a_cifar_family_run_that_recorded_small_input_false_still_loads(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet8_fast", num_classes=10, in_channels=1).eval()
    save_model(tmp_path, model, dict(META))
    meta_path = tmp_path / "model.json"
    meta = json.loads(meta_path.read_text())
    meta["arch"]["small_input"] = False  # as the older runs wrote it
    meta_path.write_text(json.dumps(meta))
    loaded, loaded_meta = load_model(tmp_path)
    assert loaded_meta["arch"]["small_input"] is True
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_a_plain_vgg_run_that_recorded_another_norm_still_loads_as_the_norm_free_net(tmp_path):
    # runs saved before 2026-12-03 recorded the flag given (and its default, "batch")
    torch.manual_seed(0)
    model = create_model("vgg11", num_classes=10, in_channels=1, small_input=True, hidden_dim=8, pool_size=1).eval()
    assert model.model_config["norm"] == "none"
    save_model(tmp_path, model, dict(META))
    meta_path = tmp_path / "model.json"
    for recorded in ("batch", "scratch", "group"):
        meta = json.loads(meta_path.read_text())
        meta["arch"]["norm"] = recorded
        meta_path.write_text(json.dumps(meta))
        loaded, loaded_meta = load_model(tmp_path)
        assert loaded_meta["arch"]["norm"] == "none"
        x = torch.randn(2, 1, 28, 28)
        with torch.no_grad():
            assert torch.equal(loaded(x), model(x))
