"""Found by a QA pass on deployment (2026-12-06): predict_images left the caller's model in eval mode
(a hand-written loop that predicts mid-training then froze its BN statistics), evaluate flipped a BN
the caller had put in eval back to training, OnnxPredictor took NumPy overrides for a truth test and
an input_size its graph does not take only at the first prediction, and an .onnx file given where a
run belongs did not say how to run it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resnet_lab.cli import main
from resnet_lab.deploy import OnnxPredictor, iter_predictions, predict_images
from resnet_lab.runs import load_model
from resnet_lab.train import evaluate

from .conftest import TINY_META


def _modes(model):
    return [m.training for m in model.modules()]


def test_predicting_with_a_training_model_keeps_its_modes_and_uses_eval_mode_for_the_forward(run, image):
    model, meta = load_model(run)
    model.train()
    model.layer1[0].bn1.eval()  # one BN the caller froze
    before = _modes(model)
    reference = predict_images(run, [image])  # loaded fresh: eval mode, the reference
    assert predict_images(model, [image], meta=dict(meta))[0]["top"] == reference[0]["top"]
    assert _modes(model) == before
    results = iter_predictions(model, [image], meta=dict(meta))
    assert _modes(model) == before  # not switched when the generator is made
    assert next(results)["top"] == reference[0]["top"]
    assert _modes(model) == before


def test_evaluate_gives_back_each_modules_own_mode(run):
    model, _ = load_model(run)
    model.train()
    model.layer1[0].bn1.eval()
    before = _modes(model)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    evaluate(model, [(x, y)], num_classes=3)
    assert _modes(model) == before


def _exported(run, tmp_path):
    pytest.importorskip("onnxruntime")
    from resnet_lab.deploy.export import export_run

    path = tmp_path / "m.onnx"
    export_run(run, path)
    return path


def test_onnx_predictor_takes_numpy_overrides_as_the_same_lists(run, image, tmp_path):
    path = _exported(run, tmp_path)
    arrays = OnnxPredictor(path, input_size=np.array([1, 8, 8]), mean=np.array([0.5]), std=np.array([0.25]))
    lists = OnnxPredictor(path, input_size=[1, 8, 8], mean=[0.5], std=[0.25])
    assert (arrays.input_size, arrays.mean, arrays.std) == (lists.input_size, lists.mean, lists.std)
    assert arrays.predict([image])[0]["top"] == lists.predict([image])[0]["top"]
    other = OnnxPredictor(path, mean=np.array([0.2]), std=np.array([0.5]))  # an override still overrides
    assert (other.mean, other.std) == ([0.2], [0.5]) and other.input_size == TINY_META["input_size"]


def test_onnx_predictor_refuses_an_input_size_its_graph_does_not_take_when_made(run, tmp_path):
    path = _exported(run, tmp_path)
    with pytest.raises(ValueError) as e:
        OnnxPredictor(path, input_size=[3, 8, 8], mean=[0.5] * 3, std=[0.25] * 3)
    assert str(e.value) == (f"input_size (3, 8, 8) does not fit {path}: its graph takes (C, H, W) = (1, 8, 8); leave "
                            "input_size out to use the file's metadata")


@pytest.mark.parametrize("command", ["predict", "export", "evaluate"])
def test_an_onnx_file_where_a_run_belongs_says_how_to_run_it(run, image, tmp_path, capsys, command):
    path = _exported(run, tmp_path)
    args = {"predict": [str(path), str(image)], "export": [str(path), "--out", str(tmp_path / "again.onnx")],
            "evaluate": [str(path)]}[command]
    assert main([command, *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert f"{path} is an ONNX file (an export), not a run: `resnet-lab predict --onnx {path} IMAGE...` runs it" in err


def test_onnx_softmax_is_finite_for_large_logits():
    """OnnxPredictor's probabilities come from a NumPy softmax: logits of 1000 (a confident or
    diverged model) overflowed exp() to inf and gave NaN unless the row's maximum is subtracted.
    Reference: torch.softmax in float64."""
    from resnet_lab.deploy.predict import _softmax

    logits = np.array([[1000.0, 0.0, -5.0], [0.0, 1.0, 2.0], [-800.0, -801.0, -900.0]], dtype=np.float32)
    got = _softmax(logits)
    want = torch.softmax(torch.from_numpy(logits).double(), dim=1).numpy()
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)


def test_predict_images_probabilities_are_the_float64_softmax_of_the_logits(image):
    """A class 110 logits below the best has probability e^-110 / Z, about 1.7e-48, which a float32
    softmax rounds to 0: the PyTorch predictor computes it in float64, as OnnxPredictor's NumPy
    softmax does. Reference: the softmax by hand with math.exp, for a model whose logits are its bias."""
    import math

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))  # 1 x 8 x 8: TINY_META's input
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([0.0, -5.0, -110.0]))
    (got,) = predict_images(model, [image], meta=dict(TINY_META), top_k=3)
    z = 1 + math.exp(-5) + math.exp(-110)
    assert [c for c, _ in got["top"]] == ["a", "b", "c"]
    assert [p for _, p in got["top"]] == pytest.approx([1 / z, math.exp(-5) / z, math.exp(-110) / z], rel=1e-9, abs=0)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-6), (torch.bfloat16, 0.05)])
def test_a_model_of_another_float_dtype_is_given_inputs_of_its_own(run, image, dtype, tol):
    """The batch was always cast to float32: a float64 or bfloat16 model given to predict_images
    stopped at its first conv ("Input type and bias type should be the same"). The reference: the
    float32 run loaded fresh, and the model's own forward on the image at its dtype."""
    reference = predict_images(run, [image])[0]
    model, meta = load_model(run)
    model = model.to(dtype).eval()
    got = predict_images(model, [image], meta=dict(meta))[0]
    assert [name for name, _ in got["top"]] == [name for name, _ in reference["top"]]
    for (_, p), (_, q) in zip(got["top"], reference["top"]):
        assert p == pytest.approx(q, abs=tol)
    assert next(model.parameters()).dtype == dtype  # the caller's model is left as it was
