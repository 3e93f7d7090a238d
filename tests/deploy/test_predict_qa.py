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
from resnet_lab.train import save_model

META = {"classes": ["a", "b", "c"], "input_size": [1, 8, 8], "mean": [0.5], "std": [0.25]}


@pytest.fixture
def images(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(d / f"good{i}.png")
    (d / "notes.png").write_text("not an image at all")
    return d


@pytest.fixture
def run(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "run"
    save_model(path, create_model("resnet8", num_classes=3, in_channels=1), dict(META))
    return path


def test_a_pattern_that_matches_no_file_says_so_and_a_quoted_one_that_would_match_says_to_unquote(images):
    nothing, quoted = images / "*.nomatch", images / "good*.png"
    assert glob.glob(str(nothing)) == [] and len(glob.glob(str(quoted))) == 3  # as the shell would find them
    with pytest.raises(ImageReadError, match=r"image file not found: .*\*\.nomatch \(no file matches this pattern\)"):
        load_image(nothing)
    with pytest.raises(ImageReadError, match=r"\(a pattern: the shell expands it only unquoted, e.g\. .*good\*\.png "
                                             r"without the quotes\)"):
        load_image(quoted)


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
