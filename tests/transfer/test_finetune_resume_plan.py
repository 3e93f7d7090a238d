"""A resumed finetune goes on with what its run started with (docs/TRANSFER.md): another
``--unfreeze-from`` would train other parameters from the saved optimizer state's groups, a source
file rewritten with another architecture or other values is named as such, and a save a kill left committed is
rolled forward first. The references: the documented refusals, the run's files unchanged, the
epochs the run records."""

from __future__ import annotations

import json

from resnet_lab.cli import main
from support import randomize_bn, run_files

FT = ["--dataset", "fake", "--image-size", "8", "--batch-size", "32", "--subset", "64", "--no-progress", "--no-plots",
      "--device", "cpu"]


def _refused(argv: list[str], out, capsys) -> str:
    """Run a finetune that must be refused: exit 2, the run's files as they were; its one stderr line."""
    before = run_files(out)
    capsys.readouterr()
    assert main(argv) == 2
    assert run_files(out) == before
    return capsys.readouterr().err.strip()


def test_a_resume_with_another_unfreeze_point_is_refused_and_the_same_one_resumes(resnet8_run, tmp_path, capsys):
    out = tmp_path / "ft"
    args = ["finetune", "--from", str(resnet8_run), "--strategy", "last", "--epochs", "2", *FT, "--out", str(out)]
    assert main([*args, "--unfreeze-from", "layer2", "--stop-after", "1"]) == 0
    assert json.loads((out / "model.json").read_text())["transfer"]["unfreeze_from"] == "layer2"
    for other in (["--unfreeze-from", "layer3"], []):  # another point, and the default (the last stage, layer3)
        err = _refused([*args, *other, "--resume"], out, capsys)
        assert err == (f"error: {out} was fine-tuned with unfreeze_from 'layer2', not 'layer3' (--unfreeze-from); "
                       "resume with the command the run was started with")
    assert main([*args, "--unfreeze-from", "layer2", "--resume"]) == 0
    assert json.loads((out / "model.json").read_text())["epoch"] == 2


def test_a_resume_whose_source_file_now_holds_another_architecture_says_so(resnet8_run, tmp_path, capsys):
    """The source run's folder trained again with another model: the same --from path holds other
    weights. The refusal said "fine-tuned from SRC/model.safetensors, not SRC/model.safetensors",
    naming one path twice; it names what changed (the reference: the two runs' model.json arch)."""
    import shutil

    from resnet_lab import create_model
    from resnet_lab.runs import load_meta, save_model

    source = tmp_path / "src"
    shutil.copytree(resnet8_run, source)
    out = tmp_path / "ft"
    args = ["finetune", "--from", str(source), "--strategy", "last", "--epochs", "2", *FT, "--out", str(out)]
    assert main([*args, "--stop-after", "1"]) == 0
    before = run_files(out)
    meta = {k: v for k, v in load_meta(source).items() if k in ("classes", "input_size", "mean", "std", "dataset")}
    shutil.rmtree(source)
    save_model(source, randomize_bn(create_model("resnet20", num_classes=5, in_channels=1), seed=2), meta)
    capsys.readouterr()
    assert main([*args, "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {out} was fine-tuned from {source / 'model.safetensors'}, which now holds other weights "
                   "(name 'resnet8', now 'resnet20'): resume from the weights the run was started with")
    assert run_files(out) == before


def test_a_resume_whose_source_file_now_holds_the_same_architecture_with_other_values_says_so(resnet8_run, tmp_path,
                                                                                                capsys):
    """The source folder trained again with the same model (another seed): path and architecture agree,
    the values do not. The resume went on as if fine-tuned from the new weights; it is refused, and
    the same file written back resumes (the reference: the values themselves, via torch.equal)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    source = tmp_path / "src"
    shutil.copytree(resnet8_run, source)
    out = tmp_path / "ft"
    args = ["finetune", "--from", str(source), "--strategy", "last", "--epochs", "2", *FT, "--out", str(out)]
    assert main([*args, "--stop-after", "1"]) == 0
    weights = source / "model.safetensors"
    kept = load_file(weights)
    other = {k: (v + 1 if v.is_floating_point() else v) for k, v in kept.items()}
    assert not all(torch.equal(kept[k], other[k]) for k in kept)
    save_file(other, weights)
    err = _refused([*args, "--resume"], out, capsys)
    assert err == (f"error: {out} was fine-tuned from {weights}, which now holds other weights (the same "
                   "architecture, other values): resume from the weights the run was started with")
    save_file({k: kept[k] for k in reversed(list(kept))}, weights)  # the same values, keys in another order
    assert main([*args, "--resume"]) == 0
    assert json.loads((out / "model.json").read_text())["epoch"] == 2


def test_a_resume_after_a_kill_inside_the_main_phases_save_goes_on_from_that_save(resnet8_run, tmp_path):
    """Killed after its save was committed but before train_state.pt was renamed into place: the
    resume must roll the save forward before it judges whether the main phase has begun, not train
    the frozen phase's hand-over again. The reference: the run's own epochs, 1 then 2."""
    from resnet_lab.runs import _MANIFEST, _STAGED_SUFFIX

    out = tmp_path / "ft"
    args = ["finetune", "--from", str(resnet8_run), "--strategy", "all", "--freeze-epochs", "1", "--epochs", "2", *FT,
            "--out", str(out)]
    assert main([*args, "--stop-after", "1"]) == 0
    staged = f".train_state.pt{_STAGED_SUFFIX}"
    (out / "train_state.pt").rename(out / staged)  # as the kill left it: committed, not yet renamed
    (out / _MANIFEST).write_text(json.dumps({"files": {"train_state.pt": staged}}) + "\n")
    assert main([*args, "--resume"]) == 0
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert [json.loads(line)["epoch"] for line in (out / "freeze_phase" / "metrics.jsonl").read_text().splitlines()] == [1]


def test_a_new_finetune_into_a_stopped_one_of_another_strategy_names_it_not_a_resume_that_fails(resnet8_run, tmp_path,
                                                                                               capsys):
    """Without --resume, train's refusal ("pass --resume to continue it") sent the user to a resume that
    the other strategy then refused: two steps to the way out. The refusal names the difference and
    both ways at once; the stopped run stays as it was and resumes with its own command."""
    out = tmp_path / "ft"
    args = ["finetune", "--from", str(resnet8_run), "--epochs", "2", *FT, "--out", str(out)]
    assert main([*args, "--strategy", "last", "--stop-after", "1"]) == 0
    err = _refused([*args, "--strategy", "all"], out, capsys)
    assert err == (f"error: {out} was fine-tuned with strategy 'last', not 'all' (--strategy); resume with the "
                   "command the run was started with, or choose another --out for a new finetune")
    assert main([*args, "--strategy", "last", "--resume"]) == 0
    assert json.loads((out / "model.json").read_text())["epoch"] == 2


def test_a_run_saved_before_source_path_was_recorded_resumes_from_the_same_source(resnet8_run, tmp_path, capsys):
    """_check_resumed_plan: runs saved before transfer.source_path existed are judged by their --from
    value; the same value names the same weights, so the run resumes (and trains its last epoch)."""
    out = tmp_path / "ft"
    args = ["finetune", "--from", str(resnet8_run), "--strategy", "head", "--epochs", "2", *FT, "--out", str(out)]
    assert main([*args, "--stop-after", "1"]) == 0
    meta = json.loads((out / "model.json").read_text())
    del meta["transfer"]["source_path"]  # as older versions saved it
    (out / "model.json").write_text(json.dumps(meta))
    assert main([*args, "--resume"]) == 0, capsys.readouterr().err
    assert json.loads((out / "model.json").read_text())["epoch"] == 2
