"""`predict` as QA used it: good images mixed with bad ones, a pattern that matches nothing, a LAB
TIFF on a grayscale model, an error after decoding that must name its file."""

from __future__ import annotations

import glob

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_lab import create_model
from resnet_lab.deploy import ImageReadError, load_image

META = {"classes": ["a", "b", "c"], "input_size": [1, 8, 8], "mean": [0.5], "std": [0.25]}  # the run fixture's (conftest.py)


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(d / f"good{i}.png")
    (d / "notes.png").write_text("not an image at all")
    return d


def test_a_pattern_that_matches_no_file_says_so_and_a_quoted_one_that_would_match_says_to_unquote(images):
    nothing, quoted = images / "*.nomatch", images / "good*.png"
    assert glob.glob(str(nothing)) == [] and len(glob.glob(str(quoted))) == 3  # as the shell would find them
    with pytest.raises(ImageReadError, match=r"image file not found: .*\*\.nomatch \(no file matches this pattern\)"):
        load_image(nothing)
    with pytest.raises(ImageReadError, match=r"\(a pattern: the shell expands it only unquoted, e.g\. .*good\*\.png "
                                             r"without the quotes\)"):
        load_image(quoted)
    # a bracket class is a pattern as well (glob's and the shell's): good[01].png matches two files
    bracket = images / "good[01].png"
    assert len(glob.glob(str(bracket))) == 2
    with pytest.raises(ImageReadError, match=r"good\[01\]\.png \(a pattern: the shell expands it only unquoted"):
        load_image(bracket)


def lab_tiff(path):
    """A CIE L*a*b* TIFF (Pillow mode LAB): lightness across, a and b varied around neutral (128)."""
    rng = np.random.default_rng(1)
    lab = np.stack([np.tile(np.linspace(0, 255, 12, dtype=np.uint8), (10, 1)),
                    rng.integers(100, 156, (10, 12), dtype=np.uint8), rng.integers(100, 156, (10, 12), dtype=np.uint8)], -1)
    Image.fromarray(lab, "LAB").save(path)
    return path


def test_a_lab_tiff_reaches_a_grayscale_model_through_rgb(tmp_path):
    from resnet_lab.data import preprocess, to_channels
    from resnet_lab.deploy import predict_images

    path = lab_tiff(tmp_path / "x_lab.tiff")
    with Image.open(path) as im:
        assert im.mode == "LAB"
        gray = im.convert("RGB").convert("L")  # Pillow's own way there, the reference
        rgb = im.convert("RGB")
    assert np.array_equal(np.asarray(to_channels(load_image(path), 1)), np.asarray(gray))
    assert np.array_equal(np.asarray(to_channels(load_image(path), 3)), np.asarray(rgb))
    model = create_model("resnet8", num_classes=3, in_channels=1).eval()
    (got,) = predict_images(model, [path], meta=META, top_k=3)
    with torch.no_grad():
        want = torch.softmax(model(preprocess(gray, META["input_size"], META["mean"], META["std"])[None]).double(), 1)
    assert [c for c, _ in got["top"]] == [META["classes"][i] for i in want[0].argsort(descending=True).tolist()]


def test_an_error_after_decoding_names_the_file(images, monkeypatch):
    """A mode Pillow cannot convert (none is left that a file decodes to: simulated) failed naming no file."""
    import resnet_lab.data.transforms as transforms
    from resnet_lab.deploy import predict_images

    real = transforms.to_channels
    monkeypatch.setattr(transforms, "to_channels", lambda img, c: real(img, c) if img.getpixel((0, 0)) % 2 else
                        (_ for _ in ()).throw(ValueError("conversion from XYZ to L not supported")))
    paths = sorted(images.glob("good*.png"))
    odd = [p for p in paths if np.asarray(Image.open(p))[0, 0] % 2 == 0]
    assert odd
    model = create_model("resnet8", num_classes=3, in_channels=1)
    with pytest.raises(ImageReadError, match=f"cannot convert image {odd[0]} .*conversion from XYZ to L not supported"):
        predict_images(model, paths, meta=META)


def same(got, want) -> bool:
    """The same predictions (paths, classes in order), probabilities to float rounding (another
    batch, another summation order)."""
    flat = lambda rs: [(r["path"], [c for c, _ in r["top"]]) for r in rs]
    probs = lambda rs: [p for r in rs for _, p in r["top"]]
    return flat(got) == flat(want) and probs(got) == pytest.approx(probs(want), abs=1e-6)


def mixed(images):
    """Good images with an unreadable one among them, in the order given."""
    good = sorted(images.glob("good*.png"))
    return good[:1] + [images / "notes.png"] + good[1:], good


def test_predict_images_keeps_the_good_predictions_and_names_each_bad_file_when_asked(run, images):
    from resnet_lab.deploy import iter_predictions, predict_images

    paths, good = mixed(images)
    alone = predict_images(run, good, top_k=2)  # the same run without the bad file: the reference
    for batch_size in (1, 2, 64):
        got = predict_images(run, paths, top_k=2, batch_size=batch_size, on_error="keep")
        assert [r["path"] for r in got] == [str(p) for p in paths]
        assert got[1] == {"path": str(images / "notes.png"), "error": got[1]["error"]}
        assert got[1]["error"].startswith(f"cannot read image {images / 'notes.png'}")
        assert same([r for r in got if "error" not in r], alone)
    with pytest.raises(ImageReadError, match=f"cannot read image {images / 'notes.png'}"):
        predict_images(run, paths)  # the default: all or an error, as before
    stream = iter_predictions(run, paths, top_k=2, batch_size=1)
    assert same([next(stream)], alone[:1])  # one at a time, before the bad file is reached
    assert "error" in next(stream)
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'keep'"):
        predict_images(run, paths, on_error="skip")


@pytest.mark.parametrize("as_json", [False, True])
def test_cli_predict_prints_the_good_predictions_and_one_line_per_bad_file_and_exits_2(run, images, capsys, as_json):
    import json

    from resnet_lab.cli import main
    from resnet_lab.deploy import predict_images

    paths, good = mixed(images)
    alone = predict_images(run, good, top_k=3)
    code = main(["predict", str(run), *map(str, paths), *(["--json"] if as_json else [])])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.splitlines() == [f"error: cannot read image {images / 'notes.png'}: " + err.split(": ", 2)[2].strip()]
    if as_json:
        assert same(json.loads(out), alone)
    else:
        assert [line.split(": ")[0] for line in out.splitlines()] == [str(p) for p in good]
        assert all(f"{r['top'][0][0]} {100 * r['top'][0][1]:.1f}%" in line for r, line in zip(alone, out.splitlines()))


def test_cli_predict_with_onnx_and_with_cam_keeps_the_good_images_too(run, images, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("pytorch_grad_cam")
    from resnet_lab.cli import main

    paths, good = mixed(images)
    assert main(["export", str(run), "--out", str(tmp_path / "m.onnx")]) == 0
    capsys.readouterr()
    assert main(["predict", "--onnx", str(tmp_path / "m.onnx"), *map(str, paths)]) == 2
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == len(good) and len(err.splitlines()) == 1 and "notes.png" in err
    assert main(["predict", str(run), *map(str, paths), "--cam", str(tmp_path / "maps")]) == 2
    out, err = capsys.readouterr()
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == sorted(f"{p.stem}_cam.png" for p in good)
    assert len(err.splitlines()) == 1 and out.count("Grad-CAM of") == len(good)


def test_invert_predicts_a_dark_on_light_image_as_its_light_on_dark_original(run, tmp_path, capsys):
    """Fashion-MNIST garments are light on black; --invert (preprocess's invert=True) is the way to
    show such a model a photo of a dark garment on white, or one on a transparent background
    (composited over white first)."""
    import json

    from PIL import ImageOps

    from resnet_lab.cli import main
    from resnet_lab.deploy import predict_images

    rng = np.random.default_rng(3)
    garment = np.zeros((8, 8), np.uint8)
    garment[2:7, 1:6] = rng.integers(120, 255, (5, 5))
    Image.fromarray(garment).save(tmp_path / "original.png")  # light on black, as the model was trained
    ImageOps.invert(Image.fromarray(garment)).save(tmp_path / "photo.png")  # dark on white: the reference
    cutout = np.zeros((8, 8, 4), np.uint8)
    cutout[..., :3], cutout[..., 3] = (255 - garment)[..., None], np.where(garment > 0, 255, 0)
    Image.fromarray(cutout, "RGBA").save(tmp_path / "cutout.png")  # dark garment, transparent around it
    want = predict_images(run, [tmp_path / "original.png"], top_k=3)[0]["top"]

    def predicted(*extra):
        assert main(["predict", str(run), str(tmp_path / "photo.png"), str(tmp_path / "cutout.png"), "--json",
                     "--top-k", "3", *extra]) == 0
        return [r["top"] for r in json.loads(capsys.readouterr().out)]

    for top in predicted("--invert"):
        assert [c for c, _ in top] == [c for c, _ in want] and [p for _, p in top] == pytest.approx([p for _, p in want])
    assert all([p for _, p in top] != pytest.approx([p for _, p in want]) for top in predicted())  # without it
    got = predict_images(run, [tmp_path / "photo.png"], top_k=3, invert=True)[0]["top"]
    assert [p for _, p in got] == pytest.approx([p for _, p in want])
    pytest.importorskip("onnxruntime")
    assert main(["export", str(run), "--out", str(tmp_path / "m.onnx")]) == 0
    capsys.readouterr()
    assert main(["predict", "--onnx", str(tmp_path / "m.onnx"), str(tmp_path / "photo.png"), "--invert", "--json",
                 "--top-k", "3"]) == 0
    (onnx,) = json.loads(capsys.readouterr().out)
    assert [p for _, p in onnx["top"]] == pytest.approx([p for _, p in want], abs=1e-5)
