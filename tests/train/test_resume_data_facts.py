"""Data settings a resume must share with the run: DataConfig.flip (in-memory datasets too) and
DataConfig.drop_last are recorded in model.json and train_state.pt, and a resume that changes them
is refused in one line naming them; runs saved before they were recorded still resume with the
command they were started with.

References: the DataConfig each run was made with, and the loader's own flip and batch count."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from resnet_lab import create_model
from resnet_lab.data import DataConfig, load_data
from resnet_lab.train import TrainConfig, train


def _run(out, *, resume: bool, stop_after: int | None = 1, **data_kw):
    data = load_data(DataConfig("fake", subset=56, batch_size=16, image_size=8, **data_kw))
    model = create_model("resnet8", num_classes=len(data.info.classes), small_input=True)
    config = TrainConfig(epochs=2, stop_after=stop_after, out=str(out), resume=resume, progress=False, plots=False,
                         device="cpu")
    return lambda: train(model, data, config), data


def _as_saved_before(run, *keys):
    """Rewrite a run's records as resnet-lab saved them before ``keys`` were recorded."""
    state = torch.load(run / "train_state.pt", weights_only=True)
    for key in keys:
        state["data"].pop(key, None)
    if "flip" in keys:
        state["data"]["flip_mode"] = "random"  # what an in-memory run with the flip off recorded
    torch.save(state, run / "train_state.pt")


def test_an_in_memory_run_records_its_flip_off_as_a_folder_run_does(tmp_path):
    for name, flip in (("off", False), ("on", True)):
        start, data = _run(tmp_path / name, resume=False, flip=flip)
        start()
        assert data.train.flip is flip  # the reference: what the loader was told
        training = json.loads((tmp_path / name / "model.json").read_text())["training"]
        assert (training["flip"], training["flip_mode"]) == ((False, None) if not flip else (True, "random")), name


@pytest.mark.parametrize("first, then", [(False, True), (True, False)])
def test_resuming_with_the_flip_changed_is_refused_naming_it(tmp_path, first, then):
    run = tmp_path / "run"
    _run(run, resume=False, flip=first)[0]()
    _refused_then_resumed_with_its_own(run, "flip", first, then)


def test_without_augmentation_the_flip_setting_mirrors_nothing_and_a_resume_may_change_it(tmp_path):
    """_augmentation's "flip": whether the training images are mirrored at all. With --no-augment
    they never are, whatever flip says: the run records flip False, and a resume that adds
    flip=False (or leaves it at its default) has the same batches and is not refused."""
    run = tmp_path / "run"
    _run(run, resume=False, augment=False)[0]()
    assert json.loads((run / "model.json").read_text())["training"]["flip"] is False
    _run(run, resume=True, stop_after=None, augment=False, flip=False)[0]()
    assert json.loads((run / "model.json").read_text())["epoch"] == 2


def _refused_then_resumed_with_its_own(run, field: str, first: bool, then: bool) -> None:
    """A resume with ``field`` changed is refused in one line naming it; the run's own value resumes."""
    resume, _ = _run(run, resume=True, stop_after=None, **{field: then})
    with pytest.raises(ValueError, match=f"data {field}: run has {first}, now {then}") as e:
        resume()
    assert "\n" not in str(e.value) and f"{field}={first}" in str(e.value)
    _run(run, resume=True, stop_after=None, **{field: first})[0]()
    assert json.loads((run / "model.json").read_text())["epoch"] == 2


@pytest.mark.parametrize("field", ["flip", "drop_last"])
def test_a_run_saved_before_the_field_was_recorded_resumes_with_its_own_command(tmp_path, field):
    run = tmp_path / "old"
    _run(run, resume=False, **{field: False})[0]()
    _as_saved_before(run, field)
    _run(run, resume=True, stop_after=None, **{field: False})[0]()
    assert json.loads((run / "model.json").read_text())["epoch"] == 2


def test_an_old_run_with_alternating_flips_is_not_taken_for_one_with_the_flip_off(tmp_path):
    """Only an old record of "random" flips can stand for the flip off (what such runs recorded
    then); an old run that alternated its flips mirrored its images, and a resume without the flip
    is refused, naming the mode."""
    run = tmp_path / "old"
    _run(run, resume=False, flip_mode="alternate")[0]()
    state = torch.load(run / "train_state.pt", weights_only=True)
    state["data"].pop("flip")  # as saved before the flip was recorded; flip_mode stays "alternate"
    torch.save(state, run / "train_state.pt")
    with pytest.raises(ValueError, match="data flip_mode: run has 'alternate', now None"):
        _run(run, resume=True, stop_after=None, flip=False)[0]()


@pytest.mark.parametrize("first, then", [(True, False), (False, True)])
def test_resuming_with_drop_last_changed_is_refused_naming_it(tmp_path, first, then):
    run = tmp_path / "run"
    _, data = _run(run, resume=False, drop_last=first)
    _, other = _run(tmp_path / "unused", resume=False, drop_last=then)
    assert {len(data.train), len(other.train)} == {56 // 16, -(-56 // 16)}  # the reference: 3 and 4 steps an epoch
    _run(run, resume=False, drop_last=first)[0]()
    assert json.loads((run / "model.json").read_text())["training"]["drop_last"] is first
    _refused_then_resumed_with_its_own(run, "drop_last", first, then)


@pytest.mark.parametrize("subset", [64, 65])
def test_drop_last_changed_where_it_changes_no_step_resumes(tmp_path, subset):
    """Review of 2026-12-06: 512 images at batch 64 give 8 steps whether the last partial batch is kept
    or dropped (there is none), and a 1-image last batch is dropped either way; such a resume was
    refused for "another count of steps". The reference: the loaders' own step counts."""
    def run(resume, drop_last, stop_after=1):
        data = load_data(DataConfig("fake", subset=subset, batch_size=16, image_size=8, drop_last=drop_last))
        model = create_model("resnet8", num_classes=len(data.info.classes), small_input=True)
        config = TrainConfig(epochs=2, stop_after=stop_after, out=str(tmp_path / "run"), resume=resume,
                             progress=False, plots=False, device="cpu")
        return lambda: train(model, data, config), data

    start, kept = run(False, True)
    assert len(kept.train) == len(run(False, False)[1].train) == 4  # the same steps either way
    start()
    run(True, False, stop_after=None)[0]()
    assert json.loads((tmp_path / "run" / "model.json").read_text())["epoch"] == 2


@pytest.mark.parametrize("subset, batch_then", [(66, 16), (64, 24)])
def test_drop_last_changed_where_it_changes_the_steps_is_refused_naming_it(tmp_path, subset, batch_then):
    """Only a last batch of 0 or 1 images at the same global batch makes drop_last change no step: 66
    images at batch 16 leave 2 (4 steps or 5), and 64 at batch 24 leave 16 (2 or 3; at the run's batch
    16 none). The reference: the loaders' own step counts."""
    def run(resume, drop_last, batch, stop_after=1):
        data = load_data(DataConfig("fake", subset=subset, batch_size=batch, image_size=8, drop_last=drop_last))
        model = create_model("resnet8", num_classes=len(data.info.classes), small_input=True)
        config = TrainConfig(epochs=2, stop_after=stop_after, out=str(tmp_path / "run"), resume=resume,
                             progress=False, plots=False, device="cpu")
        return lambda: train(model, data, config), data

    start, kept = run(False, True, 16)
    resume, other = run(True, False, batch_then, stop_after=None)
    assert len(kept.train) != len(run(False, False, 16)[1].train) or len(other.train) != len(run(False, True, batch_then)[1].train)
    start()
    with pytest.raises(ValueError, match="data drop_last: run has True, now False"):
        resume()


def test_an_old_plain_sgd_run_is_told_momentum_0_alone_not_the_refused_no_nesterov(tmp_path):
    """Review of 2026-12-06: a run saved with momentum 0 and nesterov False (accepted then) resumed with
    the defaults was told "--momentum 0.0 --no-nesterov", which is refused now."""
    data = load_data(DataConfig("fake", subset=56, batch_size=16, image_size=8))
    model = create_model("resnet8", num_classes=10, small_input=True)
    config = TrainConfig(epochs=2, stop_after=1, out=str(tmp_path / "run"), momentum=0.0, progress=False,
                         plots=False, device="cpu")
    train(model, data, config)
    state = torch.load(tmp_path / "run" / "train_state.pt", weights_only=True)
    state["recipe"]["nesterov"] = False  # as the run was saved before --no-nesterov with momentum 0 was refused
    torch.save(state, tmp_path / "run" / "train_state.pt")
    again = TrainConfig(epochs=2, out=str(tmp_path / "run"), resume=True, progress=False, plots=False, device="cpu")
    with pytest.raises(ValueError) as e:
        train(create_model("resnet8", num_classes=10, small_input=True), data, again)
    assert "--momentum 0.0" in str(e.value) and "nesterov" not in str(e.value).split("(or give the run's values")[1]
    train(create_model("resnet8", num_classes=10, small_input=True), data,
          dataclasses.replace(again, momentum=0.0))  # the hint, taken: it resumes


def test_a_run_saved_before_drop_last_was_recorded_resumes_mid_epoch_at_its_share_of_the_new_epoch(tmp_path):
    """Such a run resumes with drop_last changed unchecked (above), and then has another count of steps
    per epoch: 56 images at batch 16 give 3 steps with drop_last and 4 without (the loaders' own
    counts). Stopped after step 2 of epoch 2 of 3 (2/3 of it), the resume skips floor(2 * 4 / 3) = 2
    of the 4 steps and its schedule goes on at step 1 * 4 + 2 = 6 of 12: it ends where a run made
    with the new count ends (the reference: that run's schedule position and learning rate)."""
    def run(out, *, resume: bool, drop_last: bool, callbacks=()):
        data = load_data(DataConfig("fake", subset=56, batch_size=16, image_size=8, drop_last=drop_last))
        model = create_model("resnet8", num_classes=len(data.info.classes), small_input=True)
        config = TrainConfig(epochs=3, out=str(out), resume=resume, progress=False, plots=False, device="cpu")
        return train(model, data, config, step_callbacks=callbacks), len(data.train)

    def stop_at_epoch_2_step_2(info):
        if (info["epoch"], info["step"]) == (2, 2):
            raise KeyboardInterrupt

    old = tmp_path / "old"
    history, three = run(old, resume=False, drop_last=True, callbacks=[stop_at_epoch_2_step_2])
    assert history.interrupted and three == 3
    saved = torch.load(old / "train_state.pt", weights_only=True)
    assert (saved["epoch"], saved["step"], saved["steps_per_epoch"]) == (1, 2, 3)
    _as_saved_before(old, "drop_last")
    steps = []
    _, four = run(old, resume=True, drop_last=False, callbacks=[lambda info: steps.append((info["epoch"], info["step"]))])
    assert four == 4
    assert steps == [(2, 3), (2, 4)] + [(3, s) for s in range(1, 5)]
    run(tmp_path / "new", resume=False, drop_last=False)
    got, want = (torch.load(d / "train_state.pt", weights_only=True) for d in (old, tmp_path / "new"))
    assert got["scheduler"]["last_epoch"] == want["scheduler"]["last_epoch"] == 3 * 4
    assert got["optimizer"]["param_groups"][0]["lr"] == want["optimizer"]["param_groups"][0]["lr"]


def test_without_augmentation_no_crop_padding_is_recorded_and_with_it_a_change_is_refused(tmp_path):
    """_augmentation's "crop_padding": None when nothing is augmented (the loader keeps a padding for
    a random crop it never takes; the report shows the record as the run's augmentation); with
    augmentation on, the loader's padding, and a resume that changes it is refused."""
    run = tmp_path / "plain"
    resume, data = _run(run, resume=False, augment=False)
    resume()
    assert data.train.padding is not None  # what would be recorded if the augmentation were not asked
    assert torch.load(run / "train_state.pt", weights_only=True)["data"]["crop_padding"] is None
    assert json.loads((run / "model.json").read_text())["training"]["crop_padding"] is None
    run = tmp_path / "augmented"
    _run(run, resume=False, crop_padding=2)[0]()
    assert torch.load(run / "train_state.pt", weights_only=True)["data"]["crop_padding"] == 2
    with pytest.raises(ValueError, match="data crop_padding: run has 2, now 4"):
        _run(run, resume=True, stop_after=None, crop_padding=4)[0]()


@pytest.mark.parametrize("erasing", [0.0, 0.25])
def test_a_folder_runs_erasing_probability_is_read_from_its_training_transforms(erasing):
    """An image folder's augmentation is read off its train pipeline (the streaming loader has no
    settings of its own): the probability is the one folder_transforms was given, so a resume of a
    folder run with another --random-erasing is refused, as an in-memory run's is."""
    from types import SimpleNamespace

    from resnet_lab.data.transforms import folder_transforms
    from resnet_lab.train.checkpoint import _augmentation

    pipeline = folder_transforms(8, 1, (0.5,), (0.25,), train=True, random_erasing=erasing)
    loader = SimpleNamespace(dataset=SimpleNamespace(transform=pipeline))
    assert _augmentation(loader) == {"augment": True, "random_erasing": erasing, "flip_mode": "random", "flip": True,
                                     "crop_padding": None}
