"""The files of a run directory as resnet_lab.runs writes and reads them, against safetensors' own
save_file/load_file: which weights land in which file, what a save refuses, and a weights file read
by its suffix whatever the suffix's case."""

from __future__ import annotations

import argparse
import gc
import json
import os
import re

import pytest
import torch
from PIL import Image, PngImagePlugin
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from resnet_lab import create_model
from resnet_lab.runs import (OUTPUT_MARK, RunInUseError, RunLock, check_arch, check_distinct_runs, check_output_file, load_meta,
                             load_model, load_state_dict_file, load_train_state, run_without_meta, save_checkpoint, save_model)
from resnet_lab.weights import get_weights

CLASSES = ["ant", "bee", "cat"]


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("resnet8", num_classes=len(CLASSES))


def _holds(state: dict[str, torch.Tensor], model: torch.nn.Module) -> bool:
    want = model.state_dict()
    return state.keys() == want.keys() and all(torch.equal(state[k], want[k]) for k in want)


def test_best_weights_are_replaced_only_by_a_save_that_says_best(tmp_path):
    first, second = _model(0), _model(1)
    save_checkpoint(tmp_path, first, {"classes": CLASSES}, best=True)
    save_checkpoint(tmp_path, second, {"classes": CLASSES})
    assert _holds(load_file(tmp_path / "model.safetensors"), second)
    assert _holds(load_file(tmp_path / "best.safetensors"), first) and not _holds(load_file(tmp_path / "best.safetensors"), second)


def test_model_json_holds_tensors_and_tuples_as_lists_and_paths_as_strings(tmp_path):
    meta = {"classes": CLASSES, "mean": torch.tensor([0.25, 0.5, 0.75]), "input_size": (3, 32, 32),
            "source": tmp_path / "data"}
    save_checkpoint(tmp_path, _model(0), meta)
    written = json.loads((tmp_path / "model.json").read_text())
    assert (written["mean"], written["input_size"], written["source"]) == ([0.25, 0.5, 0.75], [3, 32, 32],
                                                                           str(tmp_path / "data"))


@pytest.mark.parametrize("meta, says", [
    ({"classes": CLASSES[:2]}, "meta names 2 classes but the model has 3 outputs"),
    ({"arch": {"name": "resnet20", "num_classes": 3}}, r"meta's arch \(resnet20\) does not describe the model \(resnet8\)"),
])
def test_a_model_json_that_would_not_describe_the_weights_is_refused_before_anything_is_written(tmp_path, meta, says):
    with pytest.raises(ValueError, match=says):
        save_checkpoint(tmp_path / "run", _model(0), meta)
    assert not (tmp_path / "run").exists()



@pytest.mark.parametrize("name", ["w.safetensors", "W.SAFETENSORS", "w.SafeTensors"])
def test_a_safetensors_file_is_read_by_safetensors_whatever_the_case_of_its_suffix(tmp_path, name):
    """load_state_dict_file took W.SAFETENSORS for a weights file, then gave it to torch.load, which
    called it "not a torch checkpoint, or a truncated or damaged one"."""
    path = tmp_path / name
    save_file(_model(0).state_dict(), str(path))
    got, want = load_state_dict_file(path), load_file(str(path))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("key", ["state_dict", "model", "model_state_dict"])
def test_a_training_checkpoint_holding_the_state_dict_under_a_common_key_is_unwrapped(tmp_path, key):
    state = _model(0).state_dict()
    torch.save({key: state, "epoch": 3}, tmp_path / "ckpt.pth")
    got = load_state_dict_file(tmp_path / "ckpt.pth")
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


def test_a_state_dict_with_a_tensor_named_like_a_wrapper_key_is_not_unwrapped(tmp_path):
    """Only a mapping under "model" (or "state_dict", ...) is a wrapped state dict: a parameter that is
    itself named "model" is one of the tensors."""
    state = {"model": torch.ones(2), "fc.weight": torch.zeros(3, 2)}
    torch.save(state, tmp_path / "plain.pth")
    got = load_state_dict_file(tmp_path / "plain.pth")
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


def test_a_safetensors_file_is_read_onto_the_map_location_as_torch_load_reads_a_pth(tmp_path):
    """map_location means the same for both formats: 'meta' gives the tensors' shapes on the meta device."""
    state = _model(0).state_dict()
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save(state, tmp_path / "w.pth")
    want = {k: (v.shape, v.device.type) for k, v in torch.load(tmp_path / "w.pth", map_location="meta",
                                                               weights_only=True).items()}
    got = load_state_dict_file(tmp_path / "w.safetensors", map_location="meta")
    assert {k: (v.shape, v.device.type) for k, v in got.items()} == want and "meta" in {d for _, d in want.values()}


def test_a_weights_file_that_is_not_there_is_not_found_rather_than_unreadable(tmp_path):
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_state_dict_file(tmp_path / "gone.safetensors")


def test_loading_a_run_removes_the_staged_files_a_killed_uncommitted_save_left(tmp_path):
    """The module's docstring: a kill before the commit point leaves the old set; recover_run_dir, run
    whenever a run is loaded, removes the staged files (here with no manifest: never committed)."""
    save_checkpoint(tmp_path, _model(0), {"classes": CLASSES})
    save_file(_model(1).state_dict(), str(tmp_path / ".model.safetensors.staged"))
    model, _ = load_model(tmp_path)
    assert _holds(load_file(tmp_path / "model.safetensors"), model)
    assert not (tmp_path / ".model.safetensors.staged").exists()


def test_a_pth_whose_mapping_holds_more_than_tensors_is_no_state_dict(tmp_path):
    torch.save({"weight": torch.ones(2), "epoch": 3}, tmp_path / "mixed.pth")
    assert torch.load(tmp_path / "mixed.pth", weights_only=True)["epoch"] == 3  # torch reads it: it is no damage
    with pytest.raises(ValueError, match=r"does not hold a state dict \(a mapping of names to tensors\)"):
        load_state_dict_file(tmp_path / "mixed.pth")


def test_a_weights_files_own_entry_describes_it_before_the_folders_model_json(tmp_path):
    """NAME.safetensors beside its entry NAME.json (docs/WEIGHTS.md "Integrity": shipped or copied
    weights) is described by that entry; the folder's model.json describes the run's model.safetensors."""
    (tmp_path / "model.json").write_text(json.dumps({"arch": {"name": "resnet20", "num_classes": 10}}))
    (tmp_path / "other.json").write_text(json.dumps({"arch": {"name": "resnet8", "num_classes": 3}}))
    save_file(_model(0).state_dict(), str(tmp_path / "other.safetensors"))
    assert load_meta(tmp_path / "other.safetensors")["arch"]["name"] == "resnet8"
    assert load_meta(tmp_path)["arch"]["name"] == "resnet20"


def test_load_model_gives_the_saved_weights_in_eval_mode(tmp_path):
    """load_model's docstring: the model is returned in eval mode, with the file's tensors."""
    save_checkpoint(tmp_path, _model(0), {"classes": CLASSES})
    model, meta = load_model(tmp_path)
    assert meta["classes"] == CLASSES and not any(m.training for m in model.modules())
    assert _holds(load_file(tmp_path / "model.safetensors"), model)


@pytest.mark.parametrize("edit", [lambda s: s.pop("fc.bias"), lambda s: s.update(extra=torch.zeros(1))])
def test_weights_with_a_tensor_missing_or_extra_do_not_fit_the_model_json(tmp_path, edit):
    """A tensor the model lacks or does not have is refused, as torch's strict load_state_dict does."""
    save_checkpoint(tmp_path, _model(0), {"classes": CLASSES})
    state = load_file(tmp_path / "model.safetensors")
    edit(state)
    with pytest.raises(RuntimeError):
        _model(0).load_state_dict(state, strict=True)  # the reference: torch refuses them too
    save_file(state, str(tmp_path / "model.safetensors"))
    odd = next(iter(set(state) ^ set(_model(0).state_dict())))  # the tensor missing or extra
    with pytest.raises(ValueError, match=rf"do not fit the model that .*model.json describes \(.*{odd}"):
        load_model(tmp_path)


def test_which_is_model_or_best_and_nothing_else(tmp_path):
    save_checkpoint(tmp_path, _model(0), {"classes": CLASSES}, best=True)
    with pytest.raises(ValueError, match=r"which must be 'model' \(the last epoch\) or 'best'.*got 'last'"):
        load_model(tmp_path, which="last")
    assert _holds(load_file(tmp_path / "best.safetensors"), load_model(tmp_path, which="best")[0])


@pytest.mark.parametrize("source, device, error, match", [
    (None, "gpu", ValueError, r"unknown device 'gpu': use auto, cpu, cuda, cuda:N or mps"),
    (None, 0, TypeError, r"device \(--device\) must be a device name \(str\) or torch.device.*got 0"),
    (3, "cpu", TypeError, r"load_model takes a run directory, a .safetensors file or shipped weights MODEL:TAG as a "
                          r"str or path, got int 3"),
], ids=["unknown-device", "device-number", "source-number"])
def test_load_model_names_a_bad_device_or_source_and_leaves_the_run_as_it_was(tmp_path, source, device, error, match):
    """device='gpu' was torch's list of every backend, raised by model.to() after the files were read;
    load_model(3) pathlib's 'expected str, bytes or os.PathLike object'."""
    save_checkpoint(tmp_path, _model(0), {"classes": CLASSES})
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(error, match=match):
        load_model(tmp_path if source is None else source, device=device)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert _holds(load_file(tmp_path / "model.safetensors"), load_model(tmp_path, device=torch.device("cpu"))[0])


def test_a_training_state_holding_a_python_object_is_never_unpickled(tmp_path):
    """train_state.pt holds tensors and plain containers only (DESIGN.md): torch.load(weights_only=True),
    the reference, refuses a pickled class instance, and so must the resume."""
    state = {k: 0 for k in ("epoch", "step", "optimizer", "scheduler", "rng")} | {"args": argparse.Namespace(lr=0.1)}
    torch.save(state, tmp_path / "train_state.pt")
    with pytest.raises(Exception):
        torch.load(tmp_path / "train_state.pt", weights_only=True)
    with pytest.raises(ValueError, match="train_state.pt cannot be read .*the training state is corrupt"):
        load_train_state(tmp_path)


@pytest.mark.parametrize("missing", ["epoch", "step", "optimizer", "scheduler", "rng"])
def test_a_training_state_without_a_part_a_resume_needs_is_refused_naming_it(tmp_path, missing):
    state = {"epoch": 1, "step": 0, "optimizer": {}, "scheduler": {}, "rng": {"cpu": torch.get_rng_state()}}
    torch.save({k: v for k, v in state.items() if k != missing}, tmp_path / "train_state.pt")
    with pytest.raises(ValueError, match=rf"train_state.pt lacks {missing}: not a resnet-lab training state"):
        load_train_state(tmp_path)
    torch.save(state, tmp_path / "train_state.pt")
    assert torch.equal(load_train_state(tmp_path)["rng"]["cpu"], state["rng"]["cpu"])


@pytest.mark.parametrize("broken, other", [("model", "best"), ("best", "model")])
def test_a_broken_weights_file_of_a_run_points_to_the_runs_other_one_which_loads(tmp_path, broken, other):
    save_checkpoint(tmp_path, _model(0), {"classes": CLASSES}, best=True)
    (tmp_path / f"{broken}.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match=rf"is truncated or corrupt\. The run's {other}.safetensors .*may still be "
                                         rf"good: give {tmp_path / f'{other}.safetensors'} instead"):
        load_model(tmp_path, which=broken)
    assert _holds(load_file(tmp_path / f"{other}.safetensors"), load_model(tmp_path, which=other)[0])


def test_load_model_rolls_a_killed_writers_committed_save_forward(tmp_path):
    """A save killed between its commit (the manifest) and its renames is rolled forward whenever the
    run is loaded (the module's docstring): the model is the save's, with the save's model.json."""
    save_checkpoint(tmp_path, _model(0), {"classes": CLASSES, "epoch": 1})
    save_file(_model(1).state_dict(), str(tmp_path / ".model.safetensors.staged"))
    (tmp_path / ".model.json.staged").write_text(json.dumps({**load_meta(tmp_path), "epoch": 2}))
    (tmp_path / ".checkpoint-pending.json").write_text(json.dumps(
        {"files": {"model.safetensors": ".model.safetensors.staged", "model.json": ".model.json.staged"}}))
    model, meta = load_model(tmp_path)
    assert meta["epoch"] == 2 and _holds(model.state_dict(), _model(1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]


def _held(run_dir) -> bool:
    """Whether another holder has ``run_dir``'s lock: a second RunLock (another open file) is refused."""
    try:
        with RunLock(run_dir):
            return False
    except RunInUseError:
        return True


def _open_files() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts open files in /proc/self/fd")
@pytest.mark.parametrize("let_go", ["release", "drop"])
def test_a_lock_let_go_frees_the_folder_and_its_open_file(tmp_path, let_go):
    """release(), or a RunLock dropped by a run abandoned between its start and its end, lets the next
    writer in and closes the folder it opened: a process that reads many runs would run out of files."""
    before = _open_files()
    lock = RunLock(tmp_path).acquire()
    assert _held(tmp_path) and _open_files() == before + 1
    if let_go == "release":
        lock.release()
    del lock
    gc.collect()
    assert not _held(tmp_path) and _open_files() == before


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks a child as a DataLoader worker is forked")
def test_a_forked_child_leaves_its_parents_lock_held(tmp_path):
    """A forked child (an image folder's DataLoader worker) closes its copy of the lock; unlocking it
    would free the lock of the parent, which still writes the run (RunLock's docstring)."""
    with RunLock(tmp_path):
        child = os.fork()
        if child == 0:
            os._exit(0)
        os.waitpid(child, 0)
        assert _held(tmp_path)
    assert not _held(tmp_path)


SHIPPED = "resnet20:fashion-mnist"


@pytest.mark.parametrize("sources, which, same", [
    (["r", "r/best.safetensors"], "best", True),
    (["r", "r/model.safetensors"], "best", False),  # the best epoch and the last: two sets of weights
    (["r", "r/model.safetensors"], "model", True),
    ([SHIPPED, "shipped file"], "model", True),
    (["r", "link"], "model", True),  # a symlink to the run: the same files
], ids=["best-and-its-file", "best-and-the-last", "last-and-its-file", "shipped-by-name-and-by-path", "run-and-a-symlink"])
def test_a_run_is_the_weights_file_it_loads_when_told_apart_from_others(tmp_path, monkeypatch, sources, which, same):
    """check_distinct_runs's docstring: a run directory stands for its ``which`` weights, and shipped
    weights by name are their file; the same file twice is refused, two files of a run are two runs."""
    save_checkpoint(tmp_path / "r", _model(0), {"classes": CLASSES}, best=True)
    (tmp_path / "link").symlink_to(tmp_path / "r", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    sources = [str(get_weights(SHIPPED).path) if s == "shipped file" else s for s in sources]
    if not same:
        check_distinct_runs(sources, which)
        return
    with pytest.raises(ValueError, match=rf"{re.escape(sources[0])} and {re.escape(sources[1])} are the same run .*given twice"):
        check_distinct_runs(sources, which)


def test_a_run_folder_named_like_shipped_weights_is_loaded_as_the_run(tmp_path, monkeypatch):
    """resolve_source's docstring: an existing path wins over a name; a folder named
    ``resnet20:fashion-mnist`` holds the user's run, not the shipped resnet20."""
    save_checkpoint(tmp_path / SHIPPED, _model(0), {"classes": CLASSES})
    monkeypatch.chdir(tmp_path)
    model, meta = load_model(SHIPPED)
    assert meta["arch"]["name"] == "resnet8" and _holds(model.state_dict(), _model(0))


def test_a_broken_weights_file_of_a_run_without_the_other_one_points_to_no_file(tmp_path):
    """A run stopped before its first evaluation has no best.safetensors: the way out of a broken
    model.safetensors is then a new copy or a new run, not a file that is not there."""
    save_checkpoint(tmp_path, _model(0), {"classes": CLASSES})
    assert not (tmp_path / "best.safetensors").exists()
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(ValueError, match=r"truncated or corrupt\. If it was copied or downloaded, copy it again; "
                                         r"otherwise train again\.$"):
        load_model(tmp_path)


def test_an_arch_that_create_model_refuses_with_a_type_error_is_blamed_on_the_file(tmp_path):
    """check_arch's docstring: a hand-edited arch that builds no model is refused naming the file;
    create_model refuses an argument it does not take with a TypeError (the reference), a count
    given as text with a ValueError."""
    save_checkpoint(tmp_path, _model(0), {"classes": CLASSES})
    meta = load_meta(tmp_path)
    for edit in ({"bogus": 1}, {"num_classes": "3"}):
        arch = {**meta["arch"], **edit}
        with pytest.raises((TypeError, ValueError)):
            create_model(**arch)
        with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / 'model.json'))}: its 'arch' builds no model"):
            check_arch({**meta, "arch": arch}, tmp_path)


def test_save_model_with_best_writes_the_same_weights_to_both_files(tmp_path):
    """save_model's docstring: best.safetensors too when ``best``; both hold the model's own state_dict."""
    model = _model(0)
    save_model(tmp_path, model, {"classes": CLASSES}, best=True)
    assert _holds(load_file(tmp_path / "model.safetensors"), model) and _holds(load_file(tmp_path / "best.safetensors"), model)


def test_a_run_records_the_format_of_the_shipped_entries_in_model_json_and_in_its_weights(tmp_path):
    """The format tag a reader goes by: the one the shipped weights' entries carry (written by hand in the package)."""
    entry = json.loads(get_weights("resnet20:fashion-mnist").path.with_suffix(".json").read_text())
    save_checkpoint(tmp_path, _model(0), {"classes": CLASSES})
    assert json.loads((tmp_path / "model.json").read_text())["format"] == entry["format"]
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        assert f.metadata()["format"] == entry["format"]


@pytest.mark.parametrize("name", ["w.bin", "w.ckpt", "model_best.pth.tar"])
def test_a_torch_checkpoint_is_read_under_each_suffix_torch_users_give_it(tmp_path, name):
    state = _model(0).state_dict()
    torch.save(state, tmp_path / name)
    got = load_state_dict_file(tmp_path / name)
    assert got.keys() == state.keys() and all(torch.equal(got[k], state[k]) for k in state)


def test_a_runs_model_json_given_as_weights_points_to_the_run_directory(tmp_path):
    save_checkpoint(tmp_path, _model(0), {"classes": CLASSES})
    with pytest.raises(ValueError, match=rf"model.json is not a weights file \(.json\): pass the run directory {tmp_path}$"):
        load_state_dict_file(tmp_path / "model.json")


def test_best_of_a_run_never_evaluated_says_to_drop_best_and_the_last_weights_load(tmp_path):
    save_checkpoint(tmp_path, _model(0), {"classes": CLASSES})
    with pytest.raises(FileNotFoundError, match="has no best.safetensors yet: no epoch of it was evaluated"):
        load_model(tmp_path, which="best")
    assert _holds(load_file(tmp_path / "model.safetensors"), load_model(tmp_path)[0])


@pytest.mark.parametrize("name", ["best.safetensors", "train_state.pt"])
def test_a_folder_with_a_runs_weights_or_state_but_no_model_json_is_named_part_of_a_run(tmp_path, name):
    """A folder whose model.json was deleted is neither resumed nor overwritten, whichever run file is left."""
    (tmp_path / name).write_bytes(b"x")
    error = run_without_meta(tmp_path)
    assert isinstance(error, FileExistsError) and f"holds part of a run ({name}) but no model.json" in str(error)


@pytest.mark.parametrize("name, suffix", [("metrics.csv", ".csv"), ("curves.png", ".png"), ("confusion.png", ".png")])
def test_no_output_lands_on_a_runs_table_or_plots_even_when_resnet_lab_drew_them(tmp_path, name, suffix):
    """RUN_OUTPUTS (runs.py): a run's table and plots belong to it, however their mark reads."""
    save_checkpoint(tmp_path, _model(0), {"classes": CLASSES})
    info = PngImagePlugin.PngInfo()
    info.add_text("Software", OUTPUT_MARK)
    Image.new("L", (4, 4)).save(tmp_path / name, format="PNG", pnginfo=info)
    with pytest.raises(FileExistsError, match=rf"{name} belongs to the run in {tmp_path}"):
        check_output_file(tmp_path / name, kind="picture", suffixes=(suffix,))


def test_best_of_shipped_weights_by_name_is_refused_in_the_name_the_user_typed():
    """load_model's docstring: shipped weights accept only which='model'; the refusal names them as typed."""
    with pytest.raises(ValueError, match=r"^resnet20:fashion-mnist names shipped weights, one set of them: .*drop --best$"):
        load_model("resnet20:fashion-mnist", which="best")
