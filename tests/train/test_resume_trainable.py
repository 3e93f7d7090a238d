"""A Python resume whose model trains other tensors than the run did (the run whitened and froze its
first conv, the model given now did not, or the other way round) was torch's "loaded state dict
contains a parameter group that doesn't match the size of optimizer's group". Now one line naming
the run, the counts and the way out; the run's files are left as they were (QA 2026-12-06)."""

from __future__ import annotations

import pytest
import torch

from resnet_lab.data import load_data
from resnet_lab.models import create_model, whiten_first_conv
from resnet_lab.train import TrainConfig, train


def _run(out, *, whiten: bool, resume: bool, freeze: str | None = None):
    data = load_data("fake", subset=128, batch_size=64, image_size=16)
    torch.manual_seed(0)
    model = create_model("resnet8_fast", num_classes=10, in_channels=3)
    meta = {"whiten": whiten_first_conv(model, data.train.normalized_images(256)).as_dict()} if whiten else None
    for p in model.get_submodule(freeze).parameters() if freeze else ():
        p.requires_grad_(False)
    trainable = sum(p.requires_grad for p in model.parameters())
    config = TrainConfig(epochs=2, stop_after=1, out=str(out), resume=resume, progress=False, plots=False)
    return lambda: train(model, data, config, meta=meta), trainable


def _files(run):
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


@pytest.mark.parametrize("first, then, hint", [
    (True, False, "its first conv was whitened and frozen (model.json 'whiten'): call whiten_first_conv"),
    (False, True, "it was trained without a whitened first conv: resume with the model unwhitened"),
])
def test_resuming_with_other_trainable_tensors_is_one_line(tmp_path, first, then, hint):
    run = tmp_path / "run"
    start, saved = _run(run, whiten=first, resume=False)
    start()
    before = _files(run)
    resume, now = _run(run, whiten=then, resume=True)
    assert saved != now  # the premise: whitening freezes the first conv
    with pytest.raises(ValueError) as e:
        resume()
    text = str(e.value)
    assert "\n" not in text and str(run) in text and hint in text
    assert f"{saved} trainable tensors" in text and f"this model has {now}" in text
    assert _files(run) == before


def test_a_whitened_run_resumed_with_another_layer_frozen_is_not_told_to_whiten(tmp_path):
    """The whitening hint is for a model with more trainable tensors than the whitened run had (its
    first conv not frozen); a whitened model with one more layer frozen has fewer, and is told to
    freeze the layers as the run's start did."""
    run = tmp_path / "run"
    _run(run, whiten=True, resume=False)[0]()
    resume, now = _run(run, whiten=True, resume=True, freeze="fc")
    with pytest.raises(ValueError) as e:
        resume()
    assert f"this model has {now}" in str(e.value) and "whiten_first_conv" not in str(e.value)
    assert "resume with the model as the run's start had it (the same layers frozen)" in str(e.value)


@pytest.mark.parametrize("other, what", [
    (dict(name="resnet20"), "model.json: resnet8_fast, this model: resnet20; "),
    (dict(name="resnet8_fast", norm="none"), " of its tensors differ, e.g. "),
])
def test_resuming_with_another_model_names_what_differs_not_freezing(tmp_path, other, what):
    """The review of 2026-12-06: a resume with resnet20 for a resnet8 run, or norm='none', was told to
    unfreeze or unwhiten (the trainable counts differ for another model too)."""
    from safetensors import safe_open

    run = tmp_path / "run"
    start, _ = _run(run, whiten=False, resume=False)
    start()
    before = _files(run)
    data = load_data("fake", subset=128, batch_size=64, image_size=16)
    model = create_model(num_classes=10, in_channels=3, **other)
    with pytest.raises(ValueError) as e:
        train(model, data, TrainConfig(epochs=2, out=str(run), resume=True, progress=False, plots=False))
    text = str(e.value)
    assert "\n" not in text and f"{run} was trained with another model (" in text and what in text
    assert "whiten" not in text and "frozen" not in text
    # the tensor named is one whose shape really differs (the reference: the file's own header)
    key = text.split(", e.g. ")[1].split(":")[0]
    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        saved = tuple(f.get_slice(key).get_shape()) if key in f.keys() else None
    now = tuple(model.state_dict()[key].shape) if key in model.state_dict() else None
    assert saved != now
    assert _files(run) == before


@pytest.mark.parametrize("first, then", [
    (dict(zero_init_residual=False), {}),           # a default given, then left out
    (dict(checkpoint_segments=2), {}),              # changes memory, not the model: may change on resume
    ({}, dict(checkpoint_segments=0)),
])
def test_the_same_model_spelled_otherwise_resumes(tmp_path, first, then):
    """The review of 2026-12-06: comparing create_model's arguments refused these (the same tensors)."""
    run = tmp_path / "run"
    data = load_data("fake", subset=128, batch_size=64, image_size=16)
    torch.manual_seed(0)
    train(create_model("resnet8", num_classes=10, in_channels=3, **first), data,
          TrainConfig(epochs=2, stop_after=1, out=str(run), progress=False, plots=False))
    history = train(create_model("resnet8", num_classes=10, in_channels=3, **then), data,
                    TrainConfig(epochs=2, out=str(run), resume=True, progress=False, plots=False))
    assert [r["epoch"] for r in history.epochs] == [1, 2]


@pytest.mark.parametrize("first, then", [("batch", "scratch"), ("scratch", "batch")])
def test_resuming_with_another_norm_of_the_same_tensors_is_refused_naming_norm(tmp_path, first, then):
    """QA: torch's BN and ours (norm='scratch') have the same tensor names and shapes, so a Python
    resume with the other one was taken (the CLI refuses it) and model.json's arch was rewritten to
    the new norm. The reference: the norm each model was built with, the run's files byte for byte,
    and the given model's tensors, untouched."""
    run = tmp_path / "run"
    data = load_data("fake", subset=128, batch_size=64, image_size=16)
    torch.manual_seed(0)
    train(create_model("resnet8", num_classes=10, in_channels=3, norm=first), data,
          TrainConfig(epochs=2, stop_after=1, out=str(run), progress=False, plots=False))
    before = _files(run)
    model = create_model("resnet8", num_classes=10, in_channels=3, norm=then)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as e:
        train(model, data, TrainConfig(epochs=2, out=str(run), resume=True, progress=False, plots=False))
    text = str(e.value)
    assert "\n" not in text and f"{run} was trained with another model (" in text
    assert f"norm: model.json {first!r}, this model {then!r}" in text
    assert _files(run) == before
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


# 16 px images without the last max-pool, and a small head: seconds, not minutes, and files of 37 MB, not 500
SMALL_VGG = dict(small_input=True, hidden_dim=16, pool_size=1)


def _plain_vgg_run_of_old(run, norm: str):
    """A vgg11 run as resnet-lab wrote it before 2026-12-03: model.json's arch recorded the norm flag
    (create_model's default "batch"), though the plain VGGs have no norm layer. --resume rebuilds
    the small model from model.json."""
    import json

    data = load_data("fake", subset=64, batch_size=32, image_size=16)
    torch.manual_seed(0)
    train(create_model("vgg11", num_classes=10, **SMALL_VGG), data,
          TrainConfig(epochs=2, stop_after=1, out=str(run), progress=False, plots=False))
    meta = json.loads((run / "model.json").read_text())
    meta["arch"]["norm"] = norm
    (run / "model.json").write_text(json.dumps(meta))
    return data


@pytest.mark.parametrize("norm", ["batch", "scratch", "group"])
def test_a_plain_vgg_run_recorded_with_a_norm_resumes_in_python(tmp_path, norm):
    """The review of 2026-12-06: the norm check refused a plain-VGG run saved before 2026-12-03
    ("norm: model.json 'batch', this model 'none'"); load_meta corrected only scratch and group."""
    from resnet_lab.runs import load_meta

    run = tmp_path / "run"
    data = _plain_vgg_run_of_old(run, norm)
    model = create_model("vgg11", num_classes=10, **SMALL_VGG)
    assert load_meta(run)["arch"]["norm"] == model.model_config["norm"]  # what create_model records
    history = train(model, data, TrainConfig(epochs=2, out=str(run), resume=True, progress=False, plots=False))
    assert [r["epoch"] for r in history.epochs] == [1, 2]


def test_a_plain_vgg_run_recorded_with_norm_batch_resumes_from_the_cli(tmp_path, capsys):
    from resnet_lab.cli import main
    from resnet_lab.runs import read_metrics

    run = tmp_path / "run"
    _plain_vgg_run_of_old(run, "batch")
    rc = main(["train", "--model", "vgg11", "--dataset", "fake", "--subset", "64", "--image-size", "16",
               "--batch-size", "32", "--epochs", "2", "--no-progress", "--out", str(run), "--resume"])
    assert rc == 0, capsys.readouterr().err
    assert [r["epoch"] for r in read_metrics(run)] == [1, 2]


def test_a_plain_vgg_run_recorded_with_norm_group_still_evaluates_from_the_cli(tmp_path, capsys):
    """Earlier versions accepted --norm group on vgg11 and recorded it: rebuilding from that model.json
    must not trip the refusal meant for the flag."""
    from resnet_lab.cli import main

    run = tmp_path / "run"
    _plain_vgg_run_of_old(run, "group")
    assert main(["evaluate", str(run)]) == 0, capsys.readouterr().err
