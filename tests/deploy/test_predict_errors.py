"""`predict` on the wrong kind of path ends in one clear error naming it, never a traceback: a
directory instead of image files, a file that is not an image, a file that is not an ONNX model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_lab import create_model
from resnet_lab.cli import main
from resnet_lab.deploy import ImageReadError, OnnxPredictor, iter_predictions, load_image, predict_images

META = {"classes": ["a", "b", "c"], "input_size": [1, 8, 8], "mean": [0.5], "std": [0.25]}  # the run fixture's (conftest.py)


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(d / "good.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))  # PNG signature, garbage after
    (d / "notes.png").write_text("not an image at all")
    return d


def test_a_directory_says_it_is_one_and_how_to_pass_its_images(images):
    with pytest.raises(ImageReadError, match=f"{images} is a directory; pass image files, e.g. {images}/\\*.png"):
        load_image(images)
    model = create_model("resnet8", num_classes=3, in_channels=1)
    with pytest.raises(ImageReadError, match="is a directory"):
        predict_images(model, [images / "good.png", images], meta=META)


@pytest.mark.parametrize("name", ["broken.png", "notes.png"])
def test_an_unreadable_image_names_the_file(images, name):
    with pytest.raises(ImageReadError, match=f"cannot read image {images / name}"):
        load_image(images / name)


def test_cli_predict_on_a_directory_prints_one_error_line(run, images, capsys):
    assert main(["predict", str(run), str(images / "good.png"), str(images)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"error: {images} is a directory; pass image files, e.g. {images}/*.png"


def test_onnx_predictor_on_a_file_that_is_not_onnx_is_a_value_error_naming_it(tmp_path, run, images, capsys):
    pytest.importorskip("onnxruntime")
    for bad in (run / "model.safetensors", images / "good.png"):
        with pytest.raises(ValueError, match=f"{bad} is not an ONNX model written by resnet-lab export"):
            OnnxPredictor(bad)
    with pytest.raises(ValueError, match=f"{run} is a directory; pass the .onnx file"):
        OnnxPredictor(run)
    code = main(["predict", "--onnx", str(run / "model.safetensors"), str(images / "good.png")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run / 'model.safetensors'} is not an ONNX model written by resnet-lab export")
    assert "Traceback" not in err


@pytest.mark.parametrize("std", [[0.0, 0.0, 0.0], [-1.0, -1.0, -1.0]])
def test_a_std_that_is_not_positive_is_refused_not_turned_into_nan_or_wrong_probabilities(tmp_path, std):
    import numpy as np
    from PIL import Image

    from resnet_lab.deploy import export_onnx, predict_images
    from resnet_lab.models import create_model

    image = tmp_path / "img.png"
    Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(image)
    model = create_model("resnet8", num_classes=2)
    meta = {"classes": ["a", "b"], "input_size": [3, 8, 8], "mean": [0.5] * 3, "std": std}
    with pytest.raises(ValueError, match=r"std must be > 0 in every channel"):
        predict_images(model, [image], meta=meta)
    with pytest.raises(ValueError, match=r"meta's std must be > 0 in every channel"):
        export_onnx(model, tmp_path / "m.onnx", input_size=(3, 8, 8), meta=meta)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("arg, size", [("batch_size", -1), ("batch_size", 0), ("batch_size", 2.5), ("batch_size", True),
                                       ("top_k", 0), ("top_k", 2.5), ("top_k", True)])
def test_a_batch_size_or_top_k_that_is_not_a_positive_int_is_refused_not_an_empty_result(run, images, arg, size):
    """-1 returned [] (no predictions, no error); 0 was a bare range() error; top_k 0 would give
    every image an empty list of classes (docs/DEPLOY.md: best class first)."""
    good = [images / "good.png"]
    with pytest.raises(ValueError, match=f"{arg}.* must be an int >= 1.*got {size!r}"):
        predict_images(run, good, **{arg: size})
    assert len(predict_images(run, good, **{arg: 1})) == 1


def test_a_quoted_pattern_is_named_as_one_the_shell_did_not_expand(images):
    with pytest.raises(ImageReadError, match=r"image file not found: .*\*\.png \(a pattern: the shell expands it "
                                             r"only unquoted"):
        load_image(images / "*.png")
    with pytest.raises(ImageReadError, match=r"image file not found: .*missing\.png$"):
        load_image(images / "missing.png")


@pytest.mark.parametrize("module_name", ["predict", "cam"])
def test_a_model_given_without_a_device_is_not_moved(images, monkeypatch, module_name):
    """predict_images(model) used device="cpu" by default and moved the caller's model there: a
    CUDA model came back on the CPU. Without device= it stays where it is; save_cams(model) too."""
    import importlib

    if module_name == "cam":
        pytest.importorskip("pytorch_grad_cam", reason="the cam extra is not installed")
    module = importlib.import_module(f"resnet_lab.deploy.{module_name}")
    call = {"predict": lambda m: predict_images(m, [images / "good.png"], meta=META),
            "cam": lambda m: module.save_cams(m, [images / "good.png"], images / "map.png", meta=META)}[module_name]
    model = create_model("resnet8", num_classes=3, in_channels=1)
    # No GPU here: the model's device, as the call reads it from its first parameter, is made to
    # say "meta"; the default must send the model there, not to "cpu".
    monkeypatch.setattr(module, "next", lambda it, default=None: torch.empty(0, device="meta"), raising=False)
    seen = []
    monkeypatch.setattr(model, "to", lambda device=None, *a, **kw: seen.append(torch.device(device)) or model)
    with pytest.raises(Exception):  # the CPU model cannot take "meta" inputs; what matters is where it was sent
        call(model)
    assert seen == [torch.device("meta")]


@pytest.mark.parametrize("classes", [["a", "b"], ["a", "b", "c", "d"]])
def test_class_names_that_do_not_fit_the_models_outputs_are_refused_not_misnamed(images, classes):
    """A model.json naming 4 classes for a 3-output model (or 2) is refused with both counts: with
    one name too many, every probability was put under a name silently; with one too few, an IndexError."""
    model = create_model("resnet8", num_classes=3, in_channels=1)
    with pytest.raises(ValueError, match=f"^the model has 3 outputs but {len(classes)} class names were given$"):
        predict_images(model, [images / "good.png"], meta={**META, "classes": classes})



@pytest.mark.parametrize("size", [[8, 8], [1, 1, 8, 8], [1, 0, 8]])
def test_an_input_size_that_is_not_c_h_w_is_refused_in_words_naming_it(images, size):
    """A model.json (or meta=) input_size of (H, W) only, or with a batch dimension, failed with
    Python's "not enough values to unpack (expected 3, got 2)"; a 0 height was blamed on every image."""
    model = create_model("resnet8", num_classes=3, in_channels=1)
    with pytest.raises(ValueError) as refused:
        predict_images(model, [images / "good.png"], meta={**META, "input_size": size})
    text = str(refused.value)
    assert text.startswith(f"input_size must be (C, H, W) with C, H and W >= 1, got {tuple(size)}") and "\n" not in text


def test_a_meta_without_mean_and_std_is_refused_naming_both(images):
    # docs/DEPLOY.md: meta= is model.json's content; without its normalization no image can be
    # prepared, which is said before the first file, not as a KeyError from the preprocessing
    meta = {k: v for k, v in META.items() if k not in ("mean", "std")}
    with pytest.raises(ValueError, match="has no mean, std: cannot preprocess images without them"):
        predict_images(create_model("resnet8", num_classes=3, in_channels=1), [images / "good.png"], meta=meta)


def test_a_model_given_without_meta_is_refused_saying_meta_is_needed(images):
    # docs/DEPLOY.md: "Pass meta= (a model.json dict) when giving an nn.Module": without it the size,
    # normalization and class names are unknown, which is said in words, not as an AttributeError
    model = create_model("resnet8", num_classes=3, in_channels=1)
    for call in (predict_images, iter_predictions):
        with pytest.raises(ValueError, match=r"^predict_images\(model, \.\.\.\) needs meta= with input_size, mean, std"):
            call(model, [images / "good.png"])
