"""predict_images / iter_predictions: the device goes through train's resolver (device="gpu" was
torch's list of every backend, "cuda" without a GPU its driver traceback), and invert must be True
or False ("no" inverted every image)."""

from __future__ import annotations

import pytest
import torch

from resnet_lab.deploy import OnnxPredictor, iter_predictions, predict_images
from resnet_lab.runs import load_model
from resnet_lab.train import resolve_device

TINY_META = {"classes": ["a", "b", "c"], "input_size": [1, 8, 8], "mean": [0.5], "std": [0.25]}  # the run fixture's


def _resolver_error(device):
    """train's message for ``device`` (the reference): the same words from predict."""
    with pytest.raises((ValueError, RuntimeError)) as e:
        resolve_device(device)
    return e


@pytest.mark.parametrize("device", ["gpu", "tpu:0", *(["cuda", "cuda:0"] if not torch.cuda.is_available() else [])])
def test_a_bad_or_missing_device_gets_trains_one_line_error(run, image, device):
    expected = _resolver_error(device)
    for call in (lambda: predict_images(run, [image], device=device),
                 lambda: iter_predictions(run, [image], device=device),
                 lambda: predict_images(load_model(run)[0], [image], device=device, meta=dict(TINY_META))):
        with pytest.raises(expected.type) as e:
            call()
        assert str(e.value) == str(expected.value) and "\n" not in str(e.value)


def test_auto_and_cpu_devices_still_predict(run, image):
    auto, cpu = predict_images(run, [image], device="auto"), predict_images(run, [image], device=torch.device("cpu"))
    assert [c for c, _ in auto[0]["top"]] == [c for c, _ in cpu[0]["top"]]


@pytest.mark.parametrize("value", ["no", 1, None])
def test_invert_must_be_a_bool(run, image, value):
    for call in (lambda: predict_images(run, [image], invert=value),
                 lambda: iter_predictions(run, [image], invert=value)):
        with pytest.raises(TypeError) as e:
            call()
        assert str(e.value) == f"invert must be True or False, got {value!r}"
    plain, inverted = predict_images(run, [image]), predict_images(run, [image], invert=True)
    assert plain[0]["top"] != inverted[0]["top"]  # a real True still inverts


def test_onnx_predictor_refuses_a_truthy_invert_too(run, image, tmp_path):
    pytest.importorskip("onnxruntime")
    from resnet_lab.deploy.export import export_run

    path = tmp_path / "m.onnx"
    export_run(run, path)
    with pytest.raises(TypeError, match=r"invert must be True or False, got 'no'"):
        OnnxPredictor(path).predict([image], invert="no")
