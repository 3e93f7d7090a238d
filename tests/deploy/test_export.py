"""ONNX export and prediction: onnxruntime reproduces PyTorch, and both predictors agree on files.

References: PyTorch's own forward pass (ONNX outputs), the onnx package read directly (metadata).
The preprocessing both predictors share (resnet_lab.data.preprocess) is tested against
torchvision's transforms in tests/data/test_preprocess.py.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import resnet_lab  # noqa: E402
from resnet_lab.deploy import (  # noqa: E402
    ImageReadError,
    OnnxPredictor,
    export_onnx,
    export_run,
    predict_images,
    read_onnx_metadata,
)
from resnet_lab.runs import save_model  # noqa: E402
from support import randomize_bn  # noqa: E402
from torch.onnx._constants import ONNX_MAX_OPSET  # noqa: E402
from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as TS_MAX_OPSET  # noqa: E402

CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]


@pytest.mark.parametrize(
    "build, input_size, fuse",
    [
        (lambda: resnet_lab.create_model("resnet20", num_classes=10, in_channels=1), (1, 28, 28), False),
        (lambda: resnet_lab.create_model("resnet20", num_classes=10, in_channels=1, norm="scratch"), (1, 28, 28), True),
        (lambda: torchvision.models.resnet18(num_classes=7), (3, 32, 32), True),
    ],
    ids=["resnet20-torch-bn", "resnet20-scratch-bn-fused", "torchvision-resnet18-fused"],
)
def test_onnxruntime_matches_pytorch_at_batch_1_and_3(tmp_path, build, input_size, fuse):
    model = randomize_bn(build()).eval()
    path = export_onnx(model, tmp_path / "m.onnx", input_size=input_size, fuse=fuse)
    for batch in (1, 3):  # one file, two batch sizes: the batch dimension is dynamic
        x = torch.randn(batch, *input_size)
        with torch.no_grad():
            ref = model(x).numpy()
        out = run_onnx(path, x)
        assert out.shape == ref.shape
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_export_does_not_modify_the_model(tmp_path):
    model = randomize_bn(resnet_lab.create_model("resnet8", num_classes=10, in_channels=1)).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx", input_size=(1, 28, 28), fuse=True)
    assert model.training  # mode restored (export works on a copy)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_metadata_props_hold_preprocessing_as_json_and_read_back(tmp_path):
    model = resnet_lab.create_model("resnet8", num_classes=10, in_channels=1)
    meta = {"classes": CLASSES, "mean": [0.286], "std": [0.353], "dataset": "fashion-mnist", "epoch": 3,
            "arch": model.model_config, "input_size": [1, 28, 28]}
    path = export_onnx(model.eval(), tmp_path / "m.onnx", input_size=(1, 28, 28), meta=meta)
    proto = onnx.load(str(path))  # read with onnx itself, not with our reader
    props = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert props["classes"] == CLASSES and props["mean"] == [0.286] and props["std"] == [0.353]
    assert props["input_size"] == [1, 28, 28] and props["arch"]["name"] == "resnet8"
    assert read_onnx_metadata(path)["classes"] == CLASSES
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [1, 28, 28]  # symbolic batch



def test_the_recorded_input_size_is_the_calls_the_graph_was_traced_at_not_metas(tmp_path):
    # export_onnx's docstring: meta's keys are stored "with input_size from this call"; a model.json of
    # 28 px exported at 12 px must say 12, or OnnxPredictor would feed the graph 28 px images.
    model = resnet_lab.create_model("resnet8", num_classes=10, in_channels=1).eval()
    meta = {"classes": CLASSES, "mean": [0.5], "std": [0.25], "input_size": [1, 28, 28]}
    path = export_onnx(model, tmp_path / "m.onnx", input_size=(1, 12, 12), meta=meta)
    dims = [d.dim_value for d in onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim[1:]]
    assert read_onnx_metadata(path)["input_size"] == dims == [1, 12, 12]

def test_metadata_values_that_are_not_json_stay_the_strings_they_are():
    """decode_metadata (how OnnxPredictor reads an ONNX file made elsewhere): JSON values decoded, any
    other value kept as its text, not dropped. The reference: json.loads of each JSON value."""
    from resnet_lab.deploy.predict import decode_metadata  # deferred: not re-exported by resnet_lab.deploy

    props = {"classes": '["cat", "dog"]', "epoch": "3", "author": "made by hand", "arch": "{not json"}
    assert decode_metadata(props) == {"classes": ["cat", "dog"], "epoch": 3, "author": "made by hand",
                                      "arch": "{not json"}


def test_a_static_batch_export_takes_one_image_and_the_predictor_uses_it(tmp_path, images):
    # It used to bake in the example batch of 2, so neither onnxruntime at 1 nor OnnxPredictor could run it.
    model = randomize_bn(resnet_lab.create_model("resnet8", num_classes=10, in_channels=1), seed=4).eval()
    path = export_onnx(model, tmp_path / "s.onnx", input_size=(1, 28, 28), dynamic_batch=False,
                       meta={"classes": CLASSES, "mean": [0.286], "std": [0.353]})
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 1, 28, 28] and not dims[0].dim_param
    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        np.testing.assert_allclose(run_onnx(path, x), model(x).numpy(), rtol=1e-4, atol=1e-5)
    preds = OnnxPredictor(path).predict(images, top_k=2)
    assert len(preds) == len(images) and all(len(p["top"]) == 2 for p in preds)
    # one row at a time, each image its own: the reference is PyTorch's predictor on the same model
    want = predict_images(model, images, top_k=2, meta={"input_size": [1, 28, 28], "mean": [0.286], "std": [0.353],
                                                         "classes": CLASSES})
    assert len({tuple(p for _, p in w["top"]) for w in want}) == len(images)  # the images tell apart
    for w, got in zip(want, preds):
        assert [c for c, _ in got["top"]] == [c for c, _ in w["top"]]
        np.testing.assert_allclose([p for _, p in got["top"]], [p for _, p in w["top"]], atol=1e-4)


@pytest.mark.parametrize("bn", [torch.nn.BatchNorm2d, resnet_lab.nn.BatchNorm2d])
def test_a_batch_norm_without_running_statistics_is_refused_before_writing(tmp_path, bn):
    # In eval mode it normalizes by the batch's own statistics: the exported file (ours once failed
    # to load in onnxruntime) would answer differently for one image in different batches.
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), bn(4, track_running_stats=False), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 6 * 6, 2)).eval()
    with pytest.raises(ValueError, match=r"^1 has no running statistics \(track_running_stats=False\).*export a "
                                         r"model trained with running statistics"):
        export_onnx(model, tmp_path / "m.onnx", input_size=(1, 8, 8), opset=18)
    assert list(tmp_path.iterdir()) == []


def test_wrong_input_size_fails_with_clear_error_and_leaves_no_file(tmp_path):
    model = resnet_lab.create_model("resnet8", num_classes=10, in_channels=1).eval()
    with pytest.raises(ValueError, match=r"input_size \(3, 28, 28\)"):
        export_onnx(model, tmp_path / "m.onnx", input_size=(3, 28, 28))  # wrong channel count
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="input_size"):
        export_onnx(model, tmp_path / "m.onnx", input_size=(28, 28))


@pytest.mark.parametrize("opset", [7, 8])
def test_export_at_opset_7_or_8_shows_no_torch_warning_on_keep_initializers_as_inputs(tmp_path, capfd, opset):
    """torch warns, at opsets 7 and 8, that it ignores keep_initializers_as_inputs=False (an argument
    never given): before the refusal of a model it cannot write there (the shipped resnet20's strided
    slice), the refusal was not the one line the user saw; a model it can write is exported silently."""
    from resnet_lab.cli import main

    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:  # pytest's own capture would keep them off stderr
        warnings.simplefilter("always")
        assert main(["export", "resnet20:fashion-mnist", "--opset", str(opset), "--out", str(tmp_path / "r20.onnx")]) == 2
        model = resnet_lab.create_model("resnet18", num_classes=3, in_channels=1, small_input=True).eval()
        path = export_onnx(model, tmp_path / "m.onnx", input_size=(1, 16, 16), opset=opset)
    err = capfd.readouterr().err
    assert err.startswith(f"error: the TorchScript exporter cannot write this model at opset {opset} ") \
        and len(err.splitlines()) == 1, err
    assert [str(w.message) for w in caught if "keep_initializers_as_inputs" in str(w.message)] == []
    x = torch.randn(2, 1, 16, 16)
    got = ort.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]  # the weights as graph inputs: read
    assert onnx.load(str(path)).opset_import[0].version == opset
    np.testing.assert_allclose(got, model(x).detach().numpy(), atol=1e-4)


def test_an_opset_the_torchscript_exporter_cannot_write_is_refused_not_written_as_another(tmp_path, capfd):
    # the CIFAR option-A shortcut's strided slice needs opset 10 in torch's TorchScript exporter;
    # the dynamo exporter writes 18 or newer, so it is no way to an opset-9 file
    model = resnet_lab.create_model("resnet8", num_classes=10, in_channels=1).eval()
    with pytest.raises(torch.onnx.errors.SymbolicValueError):
        torch.onnx.export(model, (torch.randn(2, 1, 16, 16),), str(tmp_path / "ref.onnx"), opset_version=9, dynamo=False)
    (tmp_path / "ref.onnx").unlink(missing_ok=True)
    capfd.readouterr()
    with pytest.raises(ValueError, match=r"cannot write this model at opset 9 \(step!=1 is currently not supported\); "
                                         r"try a newer --opset"):
        export_onnx(model, tmp_path / "m.onnx", input_size=(1, 16, 16), opset=9)
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left
    assert capfd.readouterr().out == ""  # not the exporter's IR dump
    with pytest.raises(ValueError, match="the dynamo exporter writes opset 18 or newer, not 17"):
        export_onnx(model, tmp_path / "m.onnx", input_size=(1, 16, 16), opset=17, exporter="dynamo")
    from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as ts_max

    with pytest.raises(ValueError, match=rf"the TorchScript exporter writes opset {ts_max} at most, not {ts_max + 1}"):
        export_onnx(model, tmp_path / "m.onnx", input_size=(1, 16, 16), opset=ts_max + 1, exporter="torchscript")
    assert list(tmp_path.iterdir()) == []  # torch used to warn and write it
    export_onnx(model, tmp_path / "m.onnx", input_size=(1, 16, 16), opset=10)
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == 10
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


# --- prediction on image files ------------------------------------------------------------------


@pytest.fixture(scope="module")
def gray_run(tmp_path_factory):
    """A run directory of a grayscale Fashion-MNIST-shaped resnet8 and its ONNX export."""
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    model = randomize_bn(resnet_lab.create_model("resnet8", num_classes=10, in_channels=1), seed=1).eval()
    save_model(root / "run", model, {"classes": CLASSES, "input_size": [1, 28, 28], "mean": [0.286],
                                     "std": [0.353], "dataset": "fashion-mnist", "epoch": 1, "metrics": {}})
    onnx_path = export_run(root / "run", root / "model.onnx", fuse=True)
    return root / "run", onnx_path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """PNGs in several modes and shapes: grayscale 28x28, RGB 40x30, RGBA 28x28, palette 50x50."""
    root = tmp_path_factory.mktemp("img")
    rng = np.random.default_rng(0)
    files = []
    for name, mode, size in [("g.png", "L", (28, 28)), ("rgb.png", "RGB", (40, 30)), ("rgba.png", "RGBA", (28, 28))]:
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8).squeeze()
        Image.fromarray(arr, mode).save(root / name)
        files.append(root / name)
    Image.fromarray(rng.integers(0, 256, (50, 50, 3), dtype=np.uint8), "RGB").convert("P").save(root / "p.png")
    files.append(root / "p.png")
    return files


def test_onnx_predictor_top_k_equals_pytorch_predictor(gray_run, images):
    run_dir, onnx_path = gray_run
    torch_preds = predict_images(run_dir, images, top_k=3)
    onnx_preds = OnnxPredictor(onnx_path).predict(images, top_k=3)
    assert [p["path"] for p in onnx_preds] == [str(p) for p in images]
    _assert_same_top(torch_preds, onnx_preds)


def _assert_same_top(torch_preds, onnx_preds):
    for t, o in zip(torch_preds, onnx_preds, strict=True):
        assert [c for c, _ in o["top"]] == [c for c, _ in t["top"]]
        np.testing.assert_allclose([p for _, p in o["top"]], [p for _, p in t["top"]], atol=1e-4)


def test_one_mean_and_std_for_three_channels_exports_and_predicts_as_the_run_does(images, tmp_path):
    """model.json may hold one mean and std for every channel, and the run predicts with it; export
    refused it ("give one per channel"). The reference: the run's own PyTorch predictor."""
    model = randomize_bn(resnet_lab.create_model("resnet8", num_classes=10), seed=4).eval()
    save_model(tmp_path / "run", model, {"classes": CLASSES, "input_size": [3, 28, 28], "mean": [0.4], "std": [0.25],
                                         "dataset": "folder", "epoch": 1, "metrics": {}})
    path = export_run(tmp_path / "run", tmp_path / "m.onnx")
    assert (read_onnx_metadata(path)["mean"], read_onnx_metadata(path)["std"]) == ([0.4], [0.25])
    _assert_same_top(predict_images(tmp_path / "run", images, top_k=3), OnnxPredictor(path).predict(images, top_k=3))


def test_onnx_predictor_overrides_of_classes_and_resize_win_over_the_files_metadata(gray_run, images, tmp_path):
    """OnnxPredictor's keyword arguments override the metadata (its docstring): class names given
    rename the same probabilities by index, and resize="crop" center-crops a file exported with
    "whole". The references: the predictor without overrides, and torchvision's CenterCrop."""
    import torchvision.transforms.functional as TF  # deferred: this test's reference only

    _, onnx_path = gray_run
    renamed = [f"class {i}" for i in range(len(CLASSES))]
    plain = OnnxPredictor(onnx_path).predict(images, top_k=3)
    named = OnnxPredictor(onnx_path, classes=renamed).predict(images, top_k=3)
    for a, b in zip(plain, named):
        assert b["top"] == [(renamed[CLASSES.index(c)], p) for c, p in a["top"]]
    model = randomize_bn(resnet_lab.create_model("resnet8", num_classes=10, in_channels=1), seed=2).eval()
    path = export_onnx(model, tmp_path / "whole.onnx", input_size=(1, 28, 28),
                       meta={"classes": CLASSES, "mean": [0.286], "std": [0.353], "resize": "whole"})
    wide = tmp_path / "wide.png"  # 60 x 28: cropping keeps its middle 28 x 28, "whole" squeezes it
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (28, 60), dtype=np.uint8)).save(wide)
    want = TF.normalize(TF.center_crop(TF.to_tensor(Image.open(wide)), [28, 28]), [0.286], [0.353]).numpy()
    np.testing.assert_allclose(OnnxPredictor(path, resize="crop").preprocess([wide])[0], want, atol=1e-6)
    assert not np.allclose(OnnxPredictor(path).preprocess([wide])[0], want, atol=1e-3)  # the file's "whole"


@pytest.mark.parametrize("kw", [{"top_k": 0}, {"top_k": True}, {"batch_size": 0}, {"on_error": "skip"}],
                         ids=["top_k-0", "top_k-True", "batch_size-0", "on_error-skip"])
def test_onnx_predictor_refuses_what_predict_images_refuses_in_the_same_words(gray_run, images, kw):
    """docs/DEPLOY.md: OnnxPredictor.predict takes predict_images' arguments, and iter_predict, as
    iter_predictions, checks them when called, not at the first next(). A top_k of 0 gave every
    image an empty list; a batch_size of 0 was range()'s error. Reference: predict_images' refusal."""
    run_dir, onnx_path = gray_run
    with pytest.raises(ValueError) as want:
        predict_images(run_dir, images[:1], **kw)
    predictor = OnnxPredictor(onnx_path)
    calls = [lambda: predictor.predict(images[:1], **kw)]
    if "on_error" not in kw:
        calls.append(lambda: predictor.iter_predict(images[:1], **kw))  # not iterated: refused at the call
    for call in calls:
        with pytest.raises(ValueError) as got:
            call()
        assert str(got.value) == str(want.value)


@pytest.mark.parametrize("kw, match", [({"std": [0.0]}, r"std must be > 0 in every channel, got \[0.0\]"),
                                       ({"resize": "squash"}, "resize must be 'whole', 'crop' or 'auto', got 'squash'")],
                         ids=["std-0", "resize-squash"])
def test_onnx_predictor_refuses_settings_no_image_fits_when_made_not_per_image(gray_run, kw, match):
    # docs/DEPLOY.md: such settings are "a ValueError raised before the first file is opened", not an
    # ImageReadError blamed on every image in turn
    _, onnx_path = gray_run
    with pytest.raises(ValueError, match=match):
        OnnxPredictor(onnx_path, **kw)


def test_an_onnx_file_without_resize_metadata_center_crops_above_64_px_as_auto_does(tmp_path):
    """A file exported without meta (or made elsewhere) records no resize: OnnxPredictor then uses
    "auto", which crops above 64 px (docs/DEPLOY.md). Reference: torchvision's center crop of an
    image whose height is already the input's (nothing resampled)."""
    import torchvision.transforms.functional as TF  # deferred: this test's reference only

    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(1, 2))
    path = export_onnx(net, tmp_path / "m.onnx", input_size=(1, 70, 70))
    assert "resize" not in read_onnx_metadata(path)
    wide = tmp_path / "wide.png"  # 150 x 70: "crop" keeps its middle 70 x 70, "whole" would squeeze it
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (70, 150), dtype=np.uint8)).save(wide)
    want = TF.normalize(TF.center_crop(TF.to_tensor(Image.open(wide)), [70, 70]), [0.5], [0.25]).numpy()
    np.testing.assert_allclose(OnnxPredictor(path, mean=[0.5], std=[0.25]).preprocess([wide])[0], want, atol=1e-6)


def test_predictions_are_probabilities_sorted_best_first(gray_run, images):
    run_dir, _ = gray_run
    (pred,) = predict_images(run_dir, images[:1], top_k=10)
    probs = [p for _, p in pred["top"]]
    assert sorted({c for c, _ in pred["top"]}) == sorted(CLASSES)
    assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-6


def test_top_k_ties_keep_the_lower_class_index_first_with_many_classes():
    """Equal probabilities come in class order (so the PyTorch and ONNX predictors agree on a tie),
    also past 16 classes, where NumPy's default sort is not stable. The reference: Python's sorted,
    which is stable."""
    from resnet_lab.deploy.predict import top_k  # deferred: not re-exported by resnet_lab.deploy

    rows = np.random.default_rng(0).random((3, 100)) * 0.5
    rows[:, [5, 50, 70, 90]] = 0.9
    rows[1, [3, 97]] = 0.4  # a second tie further down
    names = [f"c{i}" for i in range(100)]
    got = top_k(rows, names, 8)
    for row, top in zip(rows, got):
        want = sorted(range(100), key=lambda j: -row[j])[:8]
        assert [c for c, _ in top] == [names[j] for j in want]
        assert [c for c, _ in top[:4]] == ["c5", "c50", "c70", "c90"]


def test_unreadable_image_error_names_the_file(gray_run, tmp_path):
    run_dir, onnx_path = gray_run
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    for predict in (lambda p: predict_images(run_dir, p), OnnxPredictor(onnx_path).predict):
        with pytest.raises(ImageReadError, match="broken.png"):
            predict([bad])
        with pytest.raises(ImageReadError, match="missing.png"):
            predict([tmp_path / "missing.png"])


def test_missing_model_files_raise_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.onnx"):
        OnnxPredictor(tmp_path / "nope.onnx")
    with pytest.raises(FileNotFoundError, match="no_run"):
        predict_images(tmp_path / "no_run", [])


def test_stdout_works_again_after_an_export_and_after_a_refused_one(tmp_path, capfd):
    # the exporter's C++ IR dump is silenced by pointing file descriptor 1 at /dev/null for the
    # export only: what the caller writes to it afterwards (the CLI's "wrote m.onnx", through
    # sys.stdout, which is descriptor 1 outside pytest's capture) must still show
    model = resnet_lab.create_model("resnet8", num_classes=10, in_channels=1).eval()
    capfd.readouterr()
    export_onnx(model, tmp_path / "m.onnx", input_size=(1, 16, 16))
    os.write(1, b"after the export\n")
    with pytest.raises(ValueError, match="cannot write this model at opset 9"):
        export_onnx(model, tmp_path / "m.onnx", input_size=(1, 16, 16), opset=9)
    os.write(1, b"after the refusal\n")
    assert capfd.readouterr().out == "after the export\nafter the refusal\n"


def test_export_works_without_a_stdout(tmp_path, monkeypatch):
    # pythonw, services, `>&-`: the exporter's silencing of stdout has nothing to silence
    model = resnet_lab.create_model("resnet8", num_classes=10, in_channels=1).eval()
    monkeypatch.setattr("sys.stdout", None)
    export_onnx(model, tmp_path / "m.onnx", input_size=(1, 16, 16))
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == 17


def test_exporting_the_best_weights_writes_the_best_epochs_number_and_metrics(tmp_path):
    """model.json describes the last epoch: `export RUN/best.safetensors` wrote epoch 300 and its
    metrics into the file of the weights of epoch 84."""
    import shutil

    torch.manual_seed(0)
    run = tmp_path / "run"
    records = [{"epoch": 1, "test_acc": 0.9, "test_loss": 0.3}, {"epoch": 2, "test_acc": 0.5, "test_loss": 0.9},
               {"epoch": 3, "train_loss": 0.1}]  # epoch 3 not evaluated (--eval-every)
    save_model(run, resnet_lab.create_model("resnet8", num_classes=10, in_channels=1),
               {"classes": CLASSES, "input_size": [1, 12, 12], "mean": [0.5], "std": [0.25], "epoch": 3,
                "metrics": records[-1]})
    shutil.copy(run / "model.safetensors", run / "best.safetensors")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    for source, which in ((run, "best"), (run / "best.safetensors", "model")):
        out = export_run(source, tmp_path / f"{which}.onnx", which=which)
        meta = read_onnx_metadata(out)
        assert meta["epoch"] == 1 and meta["metrics"]["test_acc"] == 0.9, source
    last = read_onnx_metadata(export_run(run, tmp_path / "last.onnx"))
    assert last["epoch"] == 3 and last["metrics"] == records[-1]  # the last epoch's weights: model.json's
    # no evaluated epoch in metrics.jsonl (or no file): which epoch best.safetensors holds is unknown, and
    # model.json's last epoch is not it, so neither is written (the _best_epoch_meta docstring)
    (run / "metrics.jsonl").write_text(json.dumps(records[-1]) + "\n")
    unknown = read_onnx_metadata(export_run(run, tmp_path / "unknown.onnx", which="best"))
    assert "epoch" not in unknown and "metrics" not in unknown and unknown["classes"] == CLASSES
    # a corrupt metrics.jsonl (a broken line before the last) says no more: exported, neither written
    (run / "metrics.jsonl").write_text("{not json\n" + json.dumps(records[0]) + "\n")
    corrupt = read_onnx_metadata(export_run(run, tmp_path / "corrupt.onnx", which="best"))
    assert "epoch" not in corrupt and "metrics" not in corrupt


def test_exporting_the_best_weights_of_a_tie_writes_the_first_best_epoch(tmp_path):
    """Epochs 2 and 3 share the best test accuracy: best.safetensors holds epoch 2's weights (the
    trainer's History, the reference, keeps the first), so the file must say epoch 2."""
    import shutil

    from resnet_lab.train.loop import History  # deferred: the reference, the rule that writes best.safetensors

    run = tmp_path / "run"
    records = [{"epoch": 1, "test_acc": 0.5, "test_loss": 0.9}, {"epoch": 2, "test_acc": 0.9, "test_loss": 0.3},
               {"epoch": 3, "test_acc": 0.9, "test_loss": 0.2}, {"epoch": 4, "test_acc": 0.7, "test_loss": 0.5}]
    trainer = History()
    for r in records:
        trainer.add(dict(r))
    save_model(run, resnet_lab.create_model("resnet8", num_classes=10, in_channels=1),
               {"classes": CLASSES, "input_size": [1, 12, 12], "mean": [0.5], "std": [0.25], "epoch": 4,
                "metrics": records[-1]})
    shutil.copy(run / "model.safetensors", run / "best.safetensors")
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    meta = read_onnx_metadata(export_run(run, tmp_path / "best.onnx", which="best"))
    assert meta["epoch"] == trainer.best_epoch == 2 and meta["metrics"] == records[1]


def test_export_onnx_refuses_a_meta_or_arguments_that_do_not_fit_the_model(tmp_path):
    """These were written, and failed only in the file's predictor (2 class names for 10 outputs,
    2 means for 3 channels, a std of 0 it would divide by), or named another network; input_size 12.7
    was cut to 12, fuse="no" folded."""
    model = resnet_lab.create_model("resnet8").eval()
    out = tmp_path / "m.onnx"
    for kw, match in [({"meta": {"classes": ["a", "b"]}}, "meta names 2 classes but the model has 10 outputs"),
                      ({"meta": {"mean": [0.5, 0.5], "std": [0.2] * 3}}, "meta's mean has 2 value.s. for 3-channel"),
                      ({"meta": {"arch": {"name": "resnet50"}}}, r"meta's arch \(resnet50\) does not describe the model"),
                      ({"input_size": None}, "input_size must be .C, H, W. with positive int entries"),
                      ({"input_size": "3,12,12"}, "input_size must be .C, H, W. with positive int entries"),
                      ({"input_size": (3, 12.7, 12)}, "input_size must be .C, H, W. with positive int entries"),
                      ({"input_size": (3, 0, 12)}, "input_size must be .C, H, W. with positive int entries"),
                      ({"input_size": (12, 12)}, "input_size must be .C, H, W. with positive int entries"),
                      ({"input_size": (True, 12, 12)}, "input_size must be .C, H, W. with positive int entries"),
                      ({"exporter": "onnxscript"}, "exporter must be 'auto', 'torchscript' or 'dynamo', got 'onnxscript'"),
                      ({"exporter": ""}, "exporter must be 'auto', 'torchscript' or 'dynamo', got ''"),
                      ({"meta": {"std": [0.2, 0.0, 0.2]}}, r"meta's std must be > 0 in every channel, got \[0.2, 0.0"),
                      ({"opset": ONNX_MAX_OPSET + 1}, rf"opset \(--opset\) must be .* to {ONNX_MAX_OPSET}, got "),
                      ({"opset": "17"}, r"opset \(--opset\) must be an ONNX opset this torch exports.*got '17'"),
                      ({"opset": 17.0}, r"opset \(--opset\) must be an ONNX opset this torch exports.*got 17.0")]:
        with pytest.raises(ValueError, match=match):
            export_onnx(model, out, **{"input_size": (3, 12, 12), **kw})
    for kw in ({"fuse": "no"}, {"dynamic_batch": "no"}):
        with pytest.raises(TypeError, match="must be True or False, got 'no'"):
            export_onnx(model, out, input_size=(3, 12, 12), **kw)
    assert not out.exists()


def test_read_onnx_metadata_names_a_directory_and_a_file_that_is_not_onnx(tmp_path):
    with pytest.raises(IsADirectoryError, match=f"{tmp_path} is a directory: give an .onnx file"):
        read_onnx_metadata(tmp_path)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x96\x01not a model at all" * 3)
    with pytest.raises(ValueError, match=f"{garbage} is not a readable ONNX file"):
        read_onnx_metadata(garbage)


@pytest.mark.parametrize("dynamic_batch", [True, False])
def test_export_leaves_the_callers_global_rng_as_it_was(tmp_path, dynamic_batch):
    """The example input was drawn with torch.randn from the global RNG: an export between two
    draws of a seeded notebook changed every draw after it."""
    model = resnet_lab.create_model("resnet8", num_classes=10, in_channels=1)
    torch.manual_seed(3)
    want = torch.rand(4)  # the next draw after the seed, with no export in between
    torch.manual_seed(3)
    export_onnx(model, tmp_path / "m.onnx", input_size=(1, 8, 8), fuse=True, dynamic_batch=dynamic_batch)
    assert torch.equal(torch.rand(4), want)


def test_a_folder_trained_runs_onnx_file_crops_as_the_run_does(tmp_path, capsys):
    """A folder run records resize "crop" (its images were resized by the shorter side and
    center-cropped): its ONNX file must preprocess the same way at 16 px, where "auto" would resize
    the whole image, so a non-square image gets the PyTorch predictor's probabilities."""
    from resnet_lab.cli import main  # deferred: the CLI, to train a real folder run

    rng = np.random.default_rng(0)
    for cls in ("ants", "bees"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "data" / cls / f"{i}.png")
    run = tmp_path / "run"
    assert main(["train", "--model", "resnet8", "--dataset", "folder", "--data-dir", str(tmp_path / "data"),
                 "--image-size", "16", "--epochs", "1", "--batch-size", "4", "--workers", "0", "--no-progress",
                 "--out", str(run)]) == 0
    capsys.readouterr()
    onnx_path = export_run(run, tmp_path / "folder.onnx")
    assert read_onnx_metadata(onnx_path)["resize"] == json.loads((run / "model.json").read_text())["resize"] == "crop"
    wide = tmp_path / "wide.png"  # 48 x 20: cropping keeps its middle 20 x 20, resizing the whole squeezes it
    Image.fromarray(rng.integers(0, 256, (20, 48, 3), dtype=np.uint8)).save(wide)
    (want,) = predict_images(run, [wide], top_k=2)
    (got,) = OnnxPredictor(onnx_path).predict([wide], top_k=2)
    assert [c for c, _ in got["top"]] == [c for c, _ in want["top"]]
    np.testing.assert_allclose([p for _, p in got["top"]], [p for _, p in want["top"]], atol=1e-5)


@pytest.mark.parametrize("exporter, opset", [("torchscript", 17), ("dynamo", 18)])
def test_the_graph_has_the_documented_names_and_symbolic_batch_dimension(tmp_path, exporter, opset):
    """docs/DEPLOY.md: input `input` of shape (batch, C, H, W) float32 with a symbolic batch
    dimension; output `logits` (batch, num_classes). Read back by onnxruntime, the reader users have."""
    if exporter == "dynamo":
        pytest.importorskip("onnxscript")
    model = resnet_lab.create_model("resnet8", num_classes=10, in_channels=1).eval()
    path = export_onnx(model, tmp_path / "m.onnx", input_size=(1, 12, 12), opset=opset, exporter=exporter)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ((name, shape, kind),) = [(i.name, i.shape, i.type) for i in sess.get_inputs()]
    assert (name, shape, kind) == ("input", ["batch", 1, 12, 12], "tensor(float)")
    assert [(o.name, o.shape) for o in sess.get_outputs()] == [("logits", ["batch", 10])]
    # symbolic in the graph's signature and in its computation: other batch sizes run, as torch does
    # (an exporter given a batch of 1 as its example may bake that 1 into the ops)
    for batch in (1, 3):
        x = torch.randn(batch, 1, 12, 12, generator=torch.Generator().manual_seed(batch))
        with torch.no_grad():
            want = model(x).numpy()
        np.testing.assert_allclose(sess.run(None, {"input": x.numpy()})[0], want, rtol=1e-4, atol=1e-5)
    # the dynamo exporter also writes torch.export's range of the symbolic batch into the graph's
    # metadata (onnxruntime ignores it): it must not claim less than "any batch size" from 1
    ranges = {p.key: p.value for p in onnx.load(str(path)).graph.metadata_props}.get(
        "pkg.torch.export.ExportedProgram.range_constraints")
    if ranges is not None:
        ((low, high),) = re.findall(r"VR\[(\d+), (\d+)\]", ranges)
        assert int(low) == 1 and int(high) >= 65536, ranges



def _op_types(path) -> list[str]:
    return sorted(node.op_type for node in onnx.load(str(path)).graph.node)


def test_fuse_turns_the_scratch_bn_graph_into_the_one_torch_bn_exports(tmp_path):
    """docs/DEPLOY.md: torch's exporter folds torch's eval BN into the conv by itself (no
    BatchNormalization node, fuse or not), while our BN is exported op by op, so only fuse=True
    gives the same graph. The reference is torch's own export of the model with torch's BN."""
    size = (1, 12, 12)
    torch_bn = _op_types(export_onnx(resnet_lab.create_model("resnet8", in_channels=1).eval(), tmp_path / "t.onnx",
                                     input_size=size))
    scratch = resnet_lab.create_model("resnet8", in_channels=1, norm="scratch").eval()
    unfused = _op_types(export_onnx(scratch, tmp_path / "s.onnx", input_size=size))
    fused = _op_types(export_onnx(scratch, tmp_path / "f.onnx", input_size=size, fuse=True))
    assert "BatchNormalization" not in torch_bn
    assert fused == torch_bn
    assert len(unfused) > len(fused)

# --- what the mutation probe found unguarded ---------------------------------------------------


def test_metadata_says_what_fuse_folded_and_kept_and_false_without_fuse(tmp_path):
    """docs/DEPLOY.md: fused_bn is false, or the numbers folded and the names kept. Hand count: the
    first BN follows the conv (folds), the second follows the ReLU (kept)."""
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                                torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 2))
    model = randomize_bn(model).eval()
    fused = read_onnx_metadata(export_onnx(model, tmp_path / "f.onnx", input_size=(1, 8, 8), fuse=True))
    plain = read_onnx_metadata(export_onnx(model, tmp_path / "p.onnx", input_size=(1, 8, 8)))
    assert fused["fused_bn"] == {"folded": 1, "unfolded": ["3"]}
    assert plain["fused_bn"] is False


def test_a_file_exported_without_meta_still_names_its_architecture_and_format(tmp_path, run):
    # the run's model.json (save_model) is the reference for both: arch is the model's create_model
    # arguments, format the run format's version
    from resnet_lab.runs import load_model  # deferred: the reference's reader

    model, meta = load_model(run)
    props = read_onnx_metadata(export_onnx(model, tmp_path / "m.onnx", input_size=(1, 8, 8)))
    assert props["arch"] == meta["arch"] and props["arch"]["name"] == "resnet8"
    assert props["format"] == json.loads((run / "model.json").read_text())["format"]


def test_export_onnx_refuses_a_std_of_the_wrong_length_and_names_every_bn_without_statistics(tmp_path):
    model = resnet_lab.create_model("resnet8").eval()
    with pytest.raises(ValueError, match=r"meta's std has 2 value\(s\) for 3-channel inputs"):
        export_onnx(model, tmp_path / "m.onnx", input_size=(3, 12, 12), meta={"mean": [0.5] * 3, "std": [0.2, 0.2]})
    two = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4, track_running_stats=False),
                              torch.nn.Conv2d(4, 4, 3), torch.nn.BatchNorm2d(4, track_running_stats=False)).eval()
    with pytest.raises(ValueError, match=r"^1 \(and 1 more batch-norm layers\) has no running statistics"):
        export_onnx(two, tmp_path / "m.onnx", input_size=(1, 8, 8))
    assert list(tmp_path.iterdir()) == []


def test_export_run_of_a_model_json_without_input_size_says_so(tmp_path):
    run = tmp_path / "run"
    save_model(run, resnet_lab.create_model("resnet8", num_classes=3, in_channels=1), {"classes": ["a", "b", "c"]})
    with pytest.raises(ValueError, match=rf"model.json of {run} has no 'input_size' \(\[C, H, W\]\)"):
        export_run(run, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_a_float64_model_is_exported_in_float32(tmp_path):
    # docs/DEPLOY.md: exported from a copy, on the CPU, in float32 (what OnnxPredictor feeds)
    model = randomize_bn(resnet_lab.create_model("resnet8", num_classes=4, in_channels=1)).eval()
    path = export_onnx(model.double(), tmp_path / "m.onnx", input_size=(1, 12, 12))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.type for i in sess.get_inputs()] == ["tensor(float)"]
    assert [o.type for o in sess.get_outputs()] == ["tensor(float)"]
    x = torch.randn(2, 1, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(run_onnx(path, x.float()), want, rtol=1e-4, atol=1e-4)
    assert next(model.parameters()).dtype == torch.float64  # the caller's model unchanged


def test_read_onnx_metadata_of_a_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"ONNX file not found: {tmp_path / 'nope.onnx'}"):
        read_onnx_metadata(tmp_path / "nope.onnx")


def _stand_in_exporters(monkeypatch, failure: BaseException | None = None) -> list[str]:
    """Replace export's two exporters by TorchScript at opset 17 (the torchscript one raising
    ``failure`` after writing part of its file, when given); returns the names called, in order."""
    import importlib

    module = importlib.import_module("resnet_lab.deploy.export")
    real, calls = module._export_torchscript, []

    def stand_in(name, error=None):
        def export(model, x, path, _opset, dynamic_batch):
            calls.append(name)
            if error is not None:
                Path(path).write_bytes(b"\x08\x07 half an ONNX file")
                raise error
            real(model, x, path, 17, dynamic_batch)
        return export

    monkeypatch.setattr(module, "_export_torchscript", stand_in("torchscript", failure))
    monkeypatch.setattr(module, "_export_dynamo", stand_in("dynamo"))
    return calls


def _small_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3)).eval()


@pytest.mark.parametrize("exporter, opset, failure, want", [
    ("auto", 17, None, ["torchscript"]),
    ("auto", 20, None, ["torchscript"]),  # TorchScript's newest opset: still its own
    ("auto", 21, None, ["dynamo"]),  # above it: dynamo straight away
    ("auto", ONNX_MAX_OPSET, None, ["dynamo"]),  # up to the newest opset this torch exports
    ("auto", 18, RuntimeError("unsupported operator"), ["torchscript", "dynamo"]),  # fails at >= 18: dynamo
    ("auto", 17, RuntimeError("unsupported operator"), ValueError),  # below 18: an error naming the opset
    ("auto", 18, OSError(28, "No space left on device"), OSError),  # a full disk: no exporter writes it either
    ("auto", 18, OSError("cannot write the file"), OSError),  # any OSError, with an errno or not
    ("torchscript", TS_MAX_OPSET, None, ["torchscript"]),  # asked for, at its newest opset
    ("torchscript", 18, RuntimeError("unsupported operator"), ValueError),  # asked for: no dynamo behind it
    ("dynamo", ONNX_MAX_OPSET, None, ["dynamo"]),
], ids=["17", "20", "21", "newest", "18-fails", "17-fails", "18-disk-full", "18-oserror-no-errno",
        "torchscript-newest", "torchscript-18-fails", "dynamo-newest"])
def test_auto_picks_the_exporter_docs_deploy_names_for_each_opset(tmp_path, monkeypatch, exporter, opset, failure,
                                                                  want):
    """docs/DEPLOY.md, "Exporter": TorchScript first, dynamo if TorchScript fails at an opset of 18 or
    more, never a file of another opset below 18, and dynamo straight away above TorchScript's newest
    opset (20); an exporter asked for by name is the only one tried, at any opset it writes. Both
    exporters are stood in for by TorchScript at opset 17 (the choice is the test)."""
    calls = _stand_in_exporters(monkeypatch, failure)
    out = tmp_path / "m.onnx"
    if isinstance(want, list):
        export_onnx(_small_net(), out, input_size=(1, 6, 6), opset=opset, exporter=exporter)
        assert calls == want and out.is_file()
        return
    with pytest.raises(want, match=f"at opset {opset} .unsupported operator" if want is ValueError else "No space|cannot"):
        export_onnx(_small_net(), out, input_size=(1, 6, 6), opset=opset, exporter=exporter)
    assert calls == ["torchscript"] and list(tmp_path.iterdir()) == []


def test_an_interrupted_export_leaves_the_earlier_file_whole_and_no_part_of_its_own(tmp_path, monkeypatch):
    # docs/DEPLOY.md: "written to a temporary name and renamed: an interrupted export leaves no partial file"
    out = export_onnx(_small_net(), tmp_path / "m.onnx", input_size=(1, 6, 6))
    before = out.read_bytes()
    _stand_in_exporters(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        export_onnx(_small_net(), out, input_size=(1, 6, 6))
    assert out.read_bytes() == before and list(tmp_path.iterdir()) == [out]
    onnx.checker.check_model(onnx.load(str(out)))


# --- edges the second mutation pass found unguarded --------------------------------------------


def test_every_metadata_key_of_meta_is_stored_as_given_and_no_other(tmp_path):
    # docs/DEPLOY.md lists the keys: input_size (the call's), mean, std, classes, arch, resize,
    # dataset, epoch, metrics, format, and fused_bn; a run's own format, dataset and arch too (an arch
    # with more than model_config holds, same name), and nothing else. The reference: meta itself.
    model = resnet_lab.create_model("resnet8", num_classes=3, in_channels=1).eval()
    meta = {"format": "resnet-lab/0", "arch": {**model.model_config, "note": "fine-tuned"}, "classes": ["a", "b", "c"],
            "input_size": [1, 8, 8], "mean": [0.5], "std": [0.25], "resize": "crop", "dataset": "folder", "epoch": 7,
            "metrics": {"test_acc": 0.5}, "lr": 0.1}
    props = read_onnx_metadata(export_onnx(model, tmp_path / "m.onnx", input_size=(1, 8, 8), meta=meta))
    assert props == {**{k: v for k, v in meta.items() if k != "lr"}, "fused_bn": False}


def test_export_run_with_fuse_folds_every_bn_of_the_run_and_says_so(tmp_path, run):
    # docs/DEPLOY.md: a CIFAR ResNet folds all its BNs; export_run(fuse=True) passes fuse on. The
    # reference: the BN count of the run's model, loaded by load_model.
    from resnet_lab.deploy import count_bn
    from resnet_lab.runs import load_model  # deferred: the reference's reader

    n = count_bn(load_model(run)[0])
    assert n > 0
    fused = read_onnx_metadata(export_run(run, tmp_path / "f.onnx", fuse=True))["fused_bn"]
    assert fused == {"folded": n, "unfolded": []}


def test_text_printed_before_an_export_reaches_stdout_in_order(tmp_path, capfd, monkeypatch):
    """What the caller printed but Python still buffers (a pipe or file is block-buffered) must be
    written out before the exporter points descriptor 1 at /dev/null, not lost while it is there."""
    model = resnet_lab.create_model("resnet8", num_classes=10, in_channels=1).eval()
    capfd.readouterr()
    buffered = open(1, "w", buffering=1 << 16, closefd=False)  # a stdout as it is when piped
    monkeypatch.setattr("sys.stdout", buffered)
    print("before the export")
    export_onnx(model, tmp_path / "m.onnx", input_size=(1, 16, 16), exporter="torchscript")
    print("after the export")
    buffered.flush()
    assert capfd.readouterr().out == "before the export\nafter the export\n"


def test_read_onnx_metadata_reads_only_the_graph_file_not_its_external_weights(tmp_path):
    """The metadata lives in the .onnx file itself: a file whose weights lie in a side file (onnx's
    external data, as large models are saved) is read without that side file, here absent."""
    weight = onnx.numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])], [weight])
    model = onnx.helper.make_model(graph)
    onnx.helper.set_model_props(model, {"classes": json.dumps(["a", "b"])})
    path = tmp_path / "m.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location="m.onnx.data", size_threshold=0)
    (tmp_path / "m.onnx.data").unlink()
    assert read_onnx_metadata(path) == {"classes": ["a", "b"]}
