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
