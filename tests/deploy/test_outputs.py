"""What shipping writes, and what it must not overwrite; the Python API as forgiving as the CLI.

References: the onnx package read directly (opset, producer), onnxruntime against PyTorch's forward
pass, Pillow reading the written pictures back, and the files as they were before a refused call.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import resnet_lab  # noqa: E402
from resnet_lab.deploy import OnnxPredictor, export_onnx, export_run, predict_images, read_onnx_metadata  # noqa: E402
from resnet_lab.deploy.cam import save_cams  # noqa: E402
from resnet_lab.deploy.predict import ImageReadError, load_image  # noqa: E402
from resnet_lab.figures import new_figure, save_png  # noqa: E402
from resnet_lab.runs import check_output_file, is_own_output, save_model  # noqa: E402

CLASSES = ["T-shirt", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Boot"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run directory of a grayscale resnet8 and one grayscale picture."""
    root = tmp_path_factory.mktemp("out")
    torch.manual_seed(0)
    model = resnet_lab.create_model("resnet8", num_classes=10, in_channels=1).eval()
    save_model(root / "run", model, {"classes": CLASSES, "input_size": [1, 28, 28], "mean": [0.286],
                                     "std": [0.353], "dataset": "fashion-mnist", "epoch": 1, "metrics": {}})
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(root / "shoe.png")
    return root / "run", root / "shoe.png"


def _foreign_picture(path):
    Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8), "RGB").save(path)
    return path.read_bytes()


def test_the_export_api_refuses_the_runs_own_files_and_names_without_onnx(run, tmp_path):
    run_dir, _ = run
    weights = (run_dir / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="belongs to the run"):
        export_run(run_dir, run_dir / "model.safetensors")
    assert (run_dir / "model.safetensors").read_bytes() == weights  # the run survives, as with the CLI
    with pytest.raises(ValueError, match=r"does not end in \.onnx"):
        export_run(run_dir, tmp_path / "model.txt")
    with pytest.raises(ValueError, match=r"does not end in \.onnx"):  # "before any work": the run is not read
        export_run(tmp_path / "no-such-run", tmp_path / "model.txt")
    model = resnet_lab.create_model("resnet8", num_classes=10, in_channels=1)
    with pytest.raises(ValueError, match=r"does not end in \.onnx"):
        export_onnx(model, tmp_path / "model.txt", input_size=(1, 28, 28))
    assert list(tmp_path.iterdir()) == []


def test_export_replaces_its_own_onnx_file_but_not_anyone_elses(run, tmp_path):
    run_dir, _ = run
    out = export_run(run_dir, tmp_path / "m.onnx")
    assert onnx.load(str(out)).producer_name == "resnet-lab" and is_own_output(out)
    export_run(run_dir, out, fuse=True)  # the same command again: replaced
    assert onnx.load(str(out)).metadata_props  # a whole file, read back
    # and folded, as asked: resnet8 is conv-BN-ReLU throughout, every BN folds (docs/DEPLOY.md's table)
    bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in resnet_lab.load_model(run_dir)[0].modules())
    assert read_onnx_metadata(out)["fused_bn"] == {"folded": bns, "unfolded": []} and bns > 0
    foreign = tmp_path / "theirs.onnx"
    proto = onnx.load(str(out))
    proto.producer_name = "pytorch"
    onnx.save(proto, str(foreign))
    before = foreign.read_bytes()
    for call in (lambda: export_run(run_dir, foreign),
                 lambda: export_onnx(resnet_lab.create_model("resnet8", num_classes=10, in_channels=1), foreign,
                                     input_size=(1, 28, 28))):
        with pytest.raises(FileExistsError, match="was not written by resnet-lab"):
            call()
    assert foreign.read_bytes() == before


def test_an_opset_above_the_torchscript_exporters_is_written_by_dynamo_without_a_warning(run, tmp_path):
    pytest.importorskip("onnxscript")
    run_dir, _ = run
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = export_run(run_dir, tmp_path / "m21.onnx", opset=21)
    assert not [w for w in caught if "not supported" in str(w.message)]
    assert list(tmp_path.iterdir()) == [out]  # dynamo writes the weights beside its file: saved inline, no side file left
    proto = onnx.load(str(out))
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {21}
    model, _ = resnet_lab.load_model(run_dir)
    x = torch.randn(3, 1, 28, 28)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(got, model.eval()(x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["cam.png", "cam.jpg", "cam.gif"])
def test_a_cam_picture_is_marked_and_replaced_by_the_next_run(run, tmp_path, name):
    run_dir, image = run
    (first,) = save_cams(run_dir, [image], tmp_path / name)
    assert is_own_output(first["cam"])
    with Image.open(first["cam"]) as pic:
        assert pic.size[0] >= 224 and pic.format == {"png": "PNG", "jpg": "JPEG", "gif": "GIF"}[name[-3:]]
    save_cams(run_dir, [image], tmp_path / name)  # again: its own earlier map, replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary file left


def test_a_cam_never_overwrites_a_picture_it_did_not_write(run, tmp_path):
    run_dir, image = run
    mine = tmp_path / "holiday.png"
    before = _foreign_picture(mine)
    with pytest.raises(ValueError, match="no earlier Grad-CAM map"):
        save_cams(run_dir, [image], mine)
    folder = tmp_path / "maps"
    folder.mkdir()
    (folder / "shoe_cam.png").write_bytes(before)  # a user's file under the name the map would take
    with pytest.raises(ValueError, match="no earlier Grad-CAM map"):
        save_cams(run_dir, [image, mine], folder)
    assert mine.read_bytes() == before and (folder / "shoe_cam.png").read_bytes() == before


def test_plots_replace_only_their_own_files(tmp_path):
    fig, ax = new_figure()
    ax.plot([0, 1], [1, 0])
    plot = save_png(fig, tmp_path / "lr.png")
    assert is_own_output(plot) and check_output_file(plot, kind="PNG plot", suffixes=(".png",)) == plot
    theirs = tmp_path / "theirs.png"
    _foreign_picture(theirs)
    assert not is_own_output(theirs)
    with pytest.raises(FileExistsError, match="was not written by resnet-lab"):
        check_output_file(theirs, kind="PNG plot", suffixes=(".png",))
    page = tmp_path / "theirs.html"
    page.write_text("<html><body>my notes</body></html>")
    with pytest.raises(FileExistsError, match="was not written by resnet-lab"):
        check_output_file(page, kind="HTML report", suffixes=(".html", ".htm"))
    # (a report replacing its own page: tests/analysis/test_report.py)


@pytest.mark.parametrize("name, mark", [("theirs.png", "GIMP 2.10.34"), ("theirs.jpg", "my holiday")])
def test_a_picture_another_program_marked_is_not_taken_for_an_earlier_output(tmp_path, name, mark):
    """Only resnet-lab's own mark makes a picture replaceable: a PNG's Software text or a JPEG's
    comment written by another program (Pillow reads it back) is a user's picture, kept."""
    path = tmp_path / name
    picture = Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8), "RGB")
    if name.endswith(".png"):
        info = PngInfo()
        info.add_text("Software", mark)
        picture.save(path, pnginfo=info)
    else:
        picture.save(path, comment=mark.encode())
    with Image.open(path) as pic:
        assert mark in str(pic.info.get("Software") or pic.info.get("comment"))
    assert not is_own_output(path)
    with pytest.raises(FileExistsError, match="was not written by resnet-lab"):
        check_output_file(path, kind="picture", suffixes=(".png", ".jpg"))


def test_an_input_given_as_the_output_under_another_name_is_named_as_an_input(tmp_path):
    """A symlink or a hard link to an input is that input (os.path.samefile says so): the refusal
    names it as one, not as a file of another kind."""
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"weights")
    (tmp_path / "link.safetensors").symlink_to(weights)
    os.link(weights, tmp_path / "hard.safetensors")
    for other in (tmp_path / "link.safetensors", tmp_path / "hard.safetensors"):
        assert os.path.samefile(other, weights)
        with pytest.raises(FileExistsError, match="is one of this command's inputs"):
            check_output_file(other, kind="ONNX", suffixes=(".onnx",), inputs=(weights,))
    assert weights.read_bytes() == b"weights"


def test_one_path_is_one_image_not_its_letters(run, tmp_path):
    run_dir, image = run
    onnx_path = export_run(run_dir, tmp_path / "m.onnx")
    as_list = predict_images(run_dir, [image], top_k=2)
    assert predict_images(run_dir, str(image), top_k=2) == as_list
    assert predict_images(run_dir, image, top_k=2) == as_list
    (one,) = OnnxPredictor(onnx_path).predict(str(image), top_k=2)
    assert one["path"] == str(image)
    (cam,) = save_cams(run_dir, str(image), tmp_path / "c.png")
    assert cam["path"] == str(image)


def test_onnx_without_preprocessing_says_how_to_get_it_from_the_cli_too(tmp_path):
    model = resnet_lab.create_model("resnet8", num_classes=10, in_channels=1)
    path = export_onnx(model, tmp_path / "bare.onnx", input_size=(1, 28, 28))  # no meta: no mean, std
    with pytest.raises(ValueError, match=r"no mean, std .*resnet-lab export RUN.*pass mean=, std= to OnnxPredictor"):
        OnnxPredictor(path)


def test_an_image_over_pillows_pixel_limit_names_the_limit_and_the_way_out(tmp_path, monkeypatch):
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8), "L").save(big)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)  # 4x the limit: Pillow's bomb error
    with pytest.raises(ImageReadError, match=r"big\.png.*Shrink it first"):
        load_image(big)


def test_the_public_writers_of_plots_and_reports_refuse_a_runs_files_and_files_they_did_not_write(run, tmp_path):
    # Only the CLI checked these paths: write_report(runs, "notes.html") replaced a user's page,
    # plot_lr_find(result, "RUN/model.safetensors") a run's weights.
    from resnet_lab.analysis import ActivationStatsRecorder, plot_activation_stats, plot_gradient_flow, write_report
    from resnet_lab.train import LRFindResult, plot_lr_find

    run_dir, _ = run
    weights = (run_dir / "model.safetensors").read_bytes()
    theirs = tmp_path / "theirs.png"
    picture = _foreign_picture(theirs)
    notes = tmp_path / "notes.html"
    notes.write_text("<p>my notes</p>")
    result = LRFindResult([1e-3, 1e-2, 1e-1], [2.0, 1.9, 1.5], [2.0, 1.95, 1.8], 1e-2, 1e-2, False, 3)
    rec = ActivationStatsRecorder(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()).train())
    with rec:
        rec.model(torch.randn(3, 2))
    writers = {
        "lr-find plot": lambda p: plot_lr_find(result, p),
        "gradient flow": lambda p: plot_gradient_flow([("a", 1.0), ("b", 0.5)], p),
        "activation stats": lambda p: plot_activation_stats({"net": rec}, p),
    }
    for name, write in writers.items():
        with pytest.raises(FileExistsError, match="belongs to the run in"):
            write(run_dir / "model.safetensors")
        with pytest.raises(FileExistsError, match="was not written by resnet-lab"):
            write(theirs)
        own = write(tmp_path / f"{name}.png")  # a new file, then the same again: its own, replaced
        assert is_own_output(own) and write(own) == own, name
    with pytest.raises(FileExistsError, match="was not written by resnet-lab"):
        write_report(run_dir, notes)
    with pytest.raises(FileExistsError, match="is one of this command's inputs|belongs to the run in"):
        write_report([run_dir], run_dir / "model.json")
    assert (run_dir / "model.safetensors").read_bytes() == weights and theirs.read_bytes() == picture
    assert notes.read_text() == "<p>my notes</p>"
