"""Gray/RGB conversion contracts that mutation probing found unpinned: the channel counts
to_channels and convert_channels refuse, the transparency of palette-with-alpha ("PA") and 1-bit
colour-keyed images (composited over white, docs/DATA.md), and ImageNet's gray statistics as the
comment beside them derives them."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_lab.data.transforms import GRAY_IMAGENET_MEAN, GRAY_IMAGENET_STD, convert_channels, to_channels

LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, Pillow's convert("L")


@pytest.mark.parametrize("gray, rgb", [(GRAY_IMAGENET_MEAN, (0.485, 0.456, 0.406)),
                                       (GRAY_IMAGENET_STD, (0.229, 0.224, 0.225))])
def test_gray_imagenet_statistics_are_the_luma_of_torchvisions_published_ones(gray, rgb):
    # transforms.py: the mean is sum_c w_c * mean_c (0.4590), the std sum_c w_c * std_c (0.2256),
    # each kept at three decimals; recomputed in float64 from torchvision's published values
    assert gray == (round(float(np.dot(LUMA, rgb)), 3),)


@pytest.mark.parametrize("c, channels", [(3, 2), (2, 1), (4, 3), (1, 2), (1, 0)])  # gray was expanded to any count
def test_convert_channels_refuses_counts_other_than_gray_and_rgb(c, channels):
    x = torch.zeros(1, c, 2, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match=rf"^cannot convert {c}-channel images to {channels} channels; use in_channels 1 or 3$"):
        convert_channels(x, channels)


@pytest.mark.parametrize("channels", [0, 2, 4])
def test_to_channels_refuses_counts_other_than_gray_and_rgb(channels):
    with pytest.raises(ValueError, match=rf"^channels must be 1 \(grayscale\) or 3 \(RGB\), got {channels}$"):
        to_channels(Image.new("RGB", (2, 2)), channels)


def composited(rgb: tuple[int, int, int], alpha: int) -> np.ndarray:
    """``rgb`` with ``alpha`` over white, in float64: the reference for the conversions below."""
    a = alpha / 255
    return np.array(rgb, dtype=np.float64) * a + 255.0 * (1 - a)


def test_palette_with_alpha_is_composited_over_white():
    img = Image.new("PA", (2, 1))
    img.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    img.putdata([(0, 0), (1, 128)])  # (palette index, alpha): transparent, half-transparent
    want = np.stack([composited((10, 20, 30), 0), composited((200, 100, 50), 128)])
    assert np.abs(np.asarray(to_channels(img, 3), dtype=np.float64)[0] - want).max() <= 1
    assert np.abs(np.asarray(to_channels(img, 1), dtype=np.float64)[0] - want @ np.array(LUMA)).max() <= 1


def test_a_one_bit_png_with_a_colour_key_turns_its_transparent_pixels_white():
    img = Image.new("1", (2, 1))
    img.putpixel((1, 0), 1)
    buf = io.BytesIO()
    img.save(buf, "PNG", transparency=0)  # tRNS: black means transparent
    buf.seek(0)
    with Image.open(buf) as png:
        assert png.mode == "1"
        assert np.asarray(to_channels(png, 1)).tolist() == [[255, 255]]
        assert np.asarray(to_channels(png, 3)).tolist() == [[[255] * 3, [255] * 3]]
