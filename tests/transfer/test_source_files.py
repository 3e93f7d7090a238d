"""--from a file that is not a run's weights: the advice in the refusal is one that works."""

from __future__ import annotations

import re
import shutil

import pytest
import torch
from safetensors.torch import load_file

from resnet_lab import create_model
from resnet_lab.transfer import load_source


def _advice(error: Exception) -> str:
    """The --from value the one-line refusal tells to give instead."""
    text = str(error)
    assert "\n" not in text
    found = re.search(r"give --from (\S+)$", text)
    assert found, text
    return found.group(1)


@pytest.mark.parametrize("name", ["metrics.jsonl", "train_state.pt", "curves.png", "model.json"])
@pytest.mark.parametrize("flag", ["--from", "--from-file"])
def test_a_file_of_a_run_that_holds_no_weights_is_refused_naming_the_run_directory(tmp_path, resnet8_run, name, flag):
    """A run's metrics or training state given as the source was told to use --from-file, which then
    failed again ("not a weights file", "does not hold a state dict"). The refusal names the run
    directory, and that loads the run's own weights (as safetensors reads them)."""
    run = tmp_path / "run"
    shutil.copytree(resnet8_run, run)
    (run / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (run / "curves.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    torch.save({"epoch": 1, "optimizer": {"state": {}}}, run / "train_state.pt")  # tensors and numbers, no model
    kw = {"source": run / name} if flag == "--from" else {"file": run / name, "model": "resnet8"}
    with pytest.raises(ValueError, match=rf"^{flag} {re.escape(str(run / name))} ") as e:
        load_source(**kw)
    assert "--from-file" not in str(e.value).split(":", 1)[-1]
    given = _advice(e.value)
    assert given == str(run)
    source = load_source(given)
    want = load_file(str(run / "model.safetensors"))
    assert source.state_dict.keys() == want.keys()
    assert all(torch.equal(source.state_dict[k], v) for k, v in want.items())


def test_from_a_state_dict_file_suggests_from_file_and_that_loads_it(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=3, in_channels=1)
    torch.save(model.state_dict(), tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"use --from-file (\S+) --model NAME$") as e:
        load_source(tmp_path / "w.pth")
    path = re.search(r"--from-file (\S+)", str(e.value)).group(1)
    # the advice says --model NAME too: without it the bare file cannot say its architecture
    with pytest.raises(ValueError, match=rf"^--from-file {re.escape(path)} needs --model NAME: "):
        load_source(file=path)
    source = load_source(file=path, model="resnet8")
    assert all(torch.equal(source.state_dict[k], v) for k, v in model.state_dict().items())


def test_from_a_file_that_is_no_state_dict_never_suggests_from_file(tmp_path, resnet8_run):
    """Only a file that holds a state dict is pointed at --from-file: a .pt of other things, or a text
    file, was told to use it and failed there."""
    torch.save({"epoch": 3, "note": "not weights"}, tmp_path / "other.pt")
    (tmp_path / "log.jsonl").write_text("{}\n")
    for path in (tmp_path / "other.pt", tmp_path / "log.jsonl"):
        with pytest.raises(ValueError, match=rf"^--from {re.escape(str(path))} ") as e:
            load_source(path)
        assert "--from-file " + str(path) not in str(e.value) and "\n" not in str(e.value)
    run = tmp_path / "run"
    shutil.copytree(resnet8_run, run)
    (run / "old.pth").write_bytes(b"broken")  # a damaged file in a run: the run's weights are the way out
    with pytest.raises(ValueError, match=rf"could not be read .* \(the run's own weights: --from {re.escape(str(run))}\)$"):
        load_source(run / "old.pth")


def test_a_state_dict_inside_a_run_is_named_as_such_and_both_ways_out_load(tmp_path, resnet8_run, capsys):
    """--from RUN/extra.pth was "a bare state dict (no model.json)" with RUN/model.json beside it: the
    refusal says it is a file inside the run, names --from RUN for the run's own weights and
    --from-file with a model for this file, and each of them loads what it says."""
    from resnet_lab.cli import main

    run = tmp_path / "run"
    shutil.copytree(resnet8_run, run)
    torch.manual_seed(3)
    extra = create_model("resnet8", num_classes=3, in_channels=1)
    torch.save(extra.state_dict(), run / "extra.pth")
    with pytest.raises(ValueError) as e:
        load_source(run / "extra.pth")
    text = str(e.value)
    assert "\n" not in text and "no model.json" not in text, text
    assert text.startswith(f"--from {run / 'extra.pth'} is a state dict file inside run {run}, not the run's weights")
    assert f"give --from {run} for the run's own weights" in text
    found = re.search(r"--from-file (\S+) --model NAME \(the run's is (\w+)\) for this file$", text)
    assert found, text
    own = load_source(run)
    want = load_file(str(run / "model.safetensors"))
    assert all(torch.equal(own.state_dict[k], v) for k, v in want.items())
    this = load_source(file=found.group(1), model=found.group(2))
    assert all(torch.equal(this.state_dict[k], v) for k, v in extra.state_dict().items())
    code = main(["finetune", "--from", str(run / "extra.pth"), "--strategy", "last", "--dataset", "fake", "--epochs",
                 "1", "--device", "cpu", "--no-progress", "--out", str(tmp_path / "ft")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"error: {text}"
