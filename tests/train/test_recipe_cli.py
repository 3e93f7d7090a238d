"""The recipe flags of `train` and `finetune` (--ema, --lookahead, --lookahead-alpha, --norm-lr-scale,
--progressive-resize, --mixup, --cutmix, --sam) reach the trainer as the TrainConfig fields whose effects
tests/train/test_ema.py, test_lookahead.py, test_norm_lr_scale.py, test_progressive_resize.py and
test_mixing.py and test_sam.py show; a run trained with all
of them records them in its recipe (model.json) and its saved weights are the EMA."""

from __future__ import annotations

import json

import torch
from safetensors.torch import load_file

from resnet_lab.cli import main

from trainspy import TrainSpy

# resnet8 on 32 fake images of 8 px, batch 16: two optimizer steps.
TINY = ["--model", "resnet8", "--dataset", "fake", "--image-size", "8", "--subset", "32", "--batch-size", "16",
        "--epochs", "1", "--no-progress", "--device", "cpu"]
FLAGS = ["--ema", "0.9", "--lookahead", "2", "--lookahead-alpha", "0.6", "--norm-lr-scale", "2.5",
         "--progressive-resize", "4", "--mixup", "0.3", "--cutmix", "0.7", "--sam", "0.05"]
# Two epochs: progressive resizing needs them (the last one trains at full size); a flag is given once.
TWO_EPOCHS = [*TINY[:TINY.index("--epochs")], "--epochs", "2", *TINY[TINY.index("--epochs") + 2:]]
FIELDS = {"ema": 0.9, "lookahead": 2, "lookahead_alpha": 0.6, "norm_lr_scale": 2.5, "progressive_resize": 4,
          "mixup": 0.3, "cutmix": 0.7, "sam": 0.05}
DEFAULTS = {"ema": 0.0, "lookahead": 0, "lookahead_alpha": 0.5, "norm_lr_scale": 1.0, "progressive_resize": None,
            "mixup": 0.0, "cutmix": 0.0, "sam": 0.0}


def _fields(config) -> dict:
    return {k: getattr(config, k) for k in FIELDS}


def test_cli_train_and_finetune_hand_the_recipe_flags_to_the_trainer(tmp_path, monkeypatch, capsys):
    spy = TrainSpy(monkeypatch)
    out = tmp_path / "r8"
    assert main(["train", *TWO_EPOCHS, *FLAGS, "--out", str(out)]) == 0
    call = spy.last
    assert _fields(call.config) == FIELDS
    # epoch 1 at the start side, the last epoch at the full 8 px; with SAM each step's batch twice
    assert [tuple(x.shape[-2:]) for x in call.inputs] == [(4, 4)] * 4 + [(8, 8)] * 4
    assert all(torch.equal(a, b) for a, b in zip(call.inputs[::2], call.inputs[1::2]))
    assert {k: json.loads((out / "model.json").read_text())["train_config"][k] for k in FIELDS} == FIELDS
    saved = load_file(out / "model.safetensors")
    raw = torch.load(out / "train_state.pt", weights_only=True)["averaging"]["raw"]
    assert not torch.equal(saved["fc.weight"], raw["fc.weight"])  # model.safetensors holds the EMA

    spy.run = False
    finetune = ["finetune", "--from", str(out), "--strategy", "all"]
    assert main([*finetune, *TWO_EPOCHS[2:], *FLAGS]) == 0
    assert _fields(spy.last.config) == FIELDS
    assert main([*finetune, *TINY[2:]]) == 0 and main(["train", *TINY]) == 0
    assert _fields(spy.calls[-2].config) == DEFAULTS == _fields(spy.calls[-1].config)
    capsys.readouterr()


def test_model_json_records_how_the_batches_were_made(tmp_path):
    """model.json's "training": the global batch, augmentation, one process, no synchronized BN
    (tests/distributed shows 2 processes with --sync-bn), as the flags asked."""
    assert main(["train", *TINY, "--random-erasing", "0.3", "--crop-padding", "1", "--out", str(tmp_path / "a")]) == 0
    assert main(["train", *TINY, "--no-augment", "--out", str(tmp_path / "b")]) == 0
    a, b = (json.loads((tmp_path / n / "model.json").read_text())["training"] for n in "ab")
    assert a == {"world_size": 1, "sync_bn": False, "global_batch_size": 16, "augment": True, "crop_padding": 1,
                 "flip_mode": "random", "flip": True, "random_erasing": 0.3, "num_train": 32, "drop_last": True,
                 "bf16": False, "fp16": False,
                 "channels_last": False, "compile": False, "deterministic": False, "folder": None}
    assert (b["augment"], b["crop_padding"], b["random_erasing"]) == (False, None, 0.0)
