"""--lookahead K with finetune's --freeze-epochs: K is measured against the main phase (the one
--epochs counts), not the short frozen-backbone phase that comes first."""

from __future__ import annotations

import json

from resnet_lab.cli import main

SUBSET, BATCH = 64, 32
FT = ["--dataset", "fake", "--image-size", "16", "--subset", str(SUBSET), "--batch-size", str(BATCH), "--device", "cpu",
      "--no-progress", "--strategy", "all", "--freeze-epochs", "1", "--lookahead", "5"]
STEPS = SUBSET // BATCH  # by hand: full batches of the subset, one optimizer step each


def test_lookahead_longer_than_the_frozen_phase_but_within_the_main_phase_trains(resnet8_run, tmp_path, capsys):
    """The frozen phase (1 epoch of 2 steps) kept --lookahead 5 and was refused on its own; the main
    phase (3 epochs, 6 steps) reaches step 5, so the fine-tune runs."""
    assert 1 * STEPS < 5 <= 3 * STEPS
    out = tmp_path / "ft"
    assert main(["finetune", "--from", str(resnet8_run), "--epochs", "3", *FT, "--out", str(out)]) == 0, \
        capsys.readouterr().err
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3]
    assert (out / "freeze_phase" / "model.json").exists()


def test_a_main_phase_too_short_for_lookahead_is_still_refused_before_anything_trains(resnet8_run, tmp_path, capsys):
    out = tmp_path / "ft"
    main_steps = 2 * STEPS
    assert main_steps < 5
    code = main(["finetune", "--from", str(resnet8_run), "--epochs", "2", *FT, "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert (f"but this fine-tune's main phase takes {main_steps} (2 epochs of {STEPS} steps)" in err
            and f"give --lookahead {main_steps} or fewer" in err), err
    assert not (out / "freeze_phase" / "train_state.pt").exists()  # refused before the frozen phase trained
