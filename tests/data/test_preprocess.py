"""preprocess, the one preprocessing of a single image (prediction, ONNX, to_model_input), against
torchvision's Resize / CenterCrop / Normalize applied to the same PIL image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from resnet_lab.data import preprocess, to_model_input


def reference(img: Image.Image, size: tuple[int, int], mean, std, crop: bool) -> torch.Tensor:
    """torchvision on the PIL image: Resize (short side, or to (H, W)), CenterCrop, Normalize."""
    geometry = [v2.Resize(size[0], InterpolationMode.BILINEAR), v2.CenterCrop(size)] if crop else \
        [v2.Resize(size, InterpolationMode.BILINEAR)]
    pipeline = v2.Compose([*geometry, v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
    return pipeline(img)


@pytest.mark.parametrize("mode, channels", [("RGB", 3), ("L", 1)])
def test_whole_and_crop_resizing_match_torchvision_on_the_pil_image(mode, channels):
    rng = np.random.default_rng(0)
    shape = (50, 100, 3) if mode == "RGB" else (50, 100)  # 100 x 50: the short side 50 -> 64 makes 128 x 64
    img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
    mean, std = [0.4, 0.5, 0.6][:channels], [0.2, 0.25, 0.3][:channels]
    for resize, size, crop in [("crop", (64, 64), True), ("whole", (28, 28), False), ("whole", (20, 36), False)]:
        ours = preprocess(img, (channels, *size), mean, std, resize)
        assert ours.shape == (channels, *size) and ours.dtype == torch.float32 and ours.is_contiguous()
        torch.testing.assert_close(ours, reference(img, size, mean, std, crop), atol=1e-5, rtol=0)


def test_auto_is_whole_up_to_64_px_and_crop_above():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 100, 3), dtype=np.uint8))
    for side, crop in [(64, False), (65, True)]:
        ref = reference(img, (side, side), [0.5] * 3, [0.5] * 3, crop)
        torch.testing.assert_close(preprocess(img, (3, side, side), [0.5], [0.5]), ref, atol=1e-5, rtol=0)


def test_to_model_input_is_preprocess_with_a_batch_dimension_and_invert_flips_the_pixels():
    img = Image.new("L", (10, 10), 30)
    meta = {"input_size": [1, 10, 10], "mean": [0.0], "std": [1.0]}
    assert torch.equal(to_model_input(img, meta), preprocess(img, (1, 10, 10), [0.0], [1.0])[None])
    torch.testing.assert_close(to_model_input(img, meta, invert=True), torch.full((1, 1, 10, 10), (255 - 30) / 255))


@pytest.mark.parametrize("args, match", [
    (((2, 8, 8), [0.5], [0.5], "whole"), r"1 \(grayscale\) or 3 \(RGB\) channels, got 2"),
    (((3, 8, 8), [0.5, 0.5], [0.5], "whole"), r"must have 1 or 3 entries"),
    (((3, 8, 8), [0.5], [0.5], "stretch"), r"resize must be 'whole', 'crop' or 'auto', got 'stretch'"),
])
def test_bad_arguments_are_value_errors_naming_them(args, match):
    with pytest.raises(ValueError, match=match):
        preprocess(Image.new("RGB", (8, 8)), *args)
