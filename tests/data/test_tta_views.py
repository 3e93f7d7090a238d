"""Test-time translation views: :func:`translate` against a per-pixel Python reference and against
the training pad-crop (zero padding of the raw pixels, then normalization), and :func:`tta_views`'
list of views."""

from __future__ import annotations

import pytest
import torch

from resnet_lab.data import crop_flip
from resnet_lab.data.transforms import translate, tta_offsets, tta_views

MEAN, STD = (0.3, 0.5), (0.2, 0.25)


def _reference(x: torch.Tensor, dy: int, dx: int, fill) -> torch.Tensor:
    """out[..., i, j] = x[..., i - dy, j - dx] where that pixel exists, else the channel's fill."""
    b, c, h, w = x.shape
    out = torch.empty_like(x)
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                si, sj = i - dy, j - dx
                out[:, ch, i, j] = x[:, ch, si, sj] if 0 <= si < h and 0 <= sj < w else fill[ch]
    return out


@pytest.mark.parametrize("dy,dx", [(1, 0), (-1, 0), (0, 2), (0, -2), (2, -1), (-3, 3)])
def test_translate_moves_the_content_and_fills_the_uncovered_pixels(dy, dx):
    x = torch.randn(3, 2, 6, 7)
    fill = (-1.5, 0.25)
    assert torch.equal(translate(x, dy, dx, fill), _reference(x, dy, dx, fill))
    assert torch.equal(translate(x, dy, dx), _reference(x, dy, dx, (0.0, 0.0)))  # default fill 0


def test_translate_by_the_black_pixel_fill_equals_the_training_pad_crop_then_normalize():
    raw = torch.randint(0, 256, (4, 2, 8, 8), dtype=torch.uint8)
    mean, std = torch.tensor(MEAN).view(1, 2, 1, 1), torch.tensor(STD).view(1, 2, 1, 1)
    norm = lambda u: (u.float() / 255 - mean) / std  # noqa: E731
    fill = [-m / s for m, s in zip(MEAN, STD)]
    p = 2
    for dy, dx in ((2, 0), (-2, 0), (0, 1), (-1, 2)):
        # the pad-crop's offset (oy, ox) into the padded image shows the content moved by (p - oy, p - ox)
        oy, ox = torch.full((4,), p - dy), torch.full((4,), p - dx)
        trained = norm(crop_flip(raw, oy, ox, torch.zeros(4, dtype=torch.bool), p))
        assert torch.allclose(translate(norm(raw), dy, dx, fill), trained, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_translate_keeps_the_batch_dtype_and_its_exact_values(dtype):
    # "a new batch of the same shape" of the images themselves: a float64 or bfloat16 batch is moved,
    # not converted, so its shifted TTA views match its unshifted ones (the reference: the per-pixel loop)
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64).to(dtype)
    fill = (-1.5, 0.25)
    out = translate(x, 1, -2, fill)
    assert out.dtype == dtype and torch.equal(out, _reference(x, 1, -2, fill))
    assert {v.dtype for v in tta_views(x, flip=True, shift=1, fill=fill)} == {dtype}


@pytest.mark.parametrize("fill", [(0.1, 0.2), (0.1, 0.2, 0.3, 0.4)])
def test_translate_refuses_a_fill_that_is_not_one_value_per_channel_naming_it(fill):
    # an RGB black-pixel fill passed with gray images (or the reverse) was torch's "The expanded size of
    # the tensor (3) must match the existing size (2)"; the docstring asks one value per channel
    x = torch.randn(2, 3, 5, 5)
    with pytest.raises(ValueError, match=rf"fill has {len(fill)} values for 3-channel images: pass 3 .*-mean / std"):
        translate(x, 1, 0, fill)
    assert torch.equal(translate(x, 1, 0, (0.5,)), _reference(x, 1, 0, (0.5,) * 3))  # one value: all channels


@pytest.mark.parametrize("dy, dx", [(0, 5), (0, -5), (5, 0), (-5, 0), (6, 1)])
def test_translate_refuses_a_shift_that_leaves_the_frame(dy, dx):
    with pytest.raises(ValueError, match=rf"\({dy}, {dx}\) px moves a 5x5 image out of its frame"):
        translate(torch.zeros(1, 1, 5, 5), dy, dx)


def test_tta_views_are_the_images_their_mirrors_and_the_four_shifts_of_each():
    x = torch.randn(2, 1, 5, 6)
    assert [torch.equal(v, x) for v in tta_views(x, flip=False)] == [True]
    plain, mirror = tta_views(x, flip=True)
    assert torch.equal(plain, x) and torch.equal(mirror, x.flip(-1))
    views = tta_views(x, flip=True, shift=1, fill=[0.5])
    assert len(views) == 10
    expected = [base if (dy, dx) == (0, 0) else _reference(base, dy, dx, [0.5])
                for base in (x, x.flip(-1)) for dy, dx in ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))]
    assert all(torch.equal(v, e) for v, e in zip(views, expected))
    assert len(tta_views(x, flip=False, shift=2)) == 5
    with pytest.raises(ValueError, match="got -1"):
        tta_views(x, flip=True, shift=-1)


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_the_diamond_moves_every_way_within_the_shift_once_each_and_the_cross_only_along_the_axes(shift):
    every = {(dy, dx) for dy in range(-shift, shift + 1) for dx in range(-shift, shift + 1)
             if 0 < abs(dy) + abs(dx) <= shift}
    diamond = tta_offsets(shift, "diamond")
    assert len(diamond) == len(set(diamond)) == len(every) == 2 * shift * (shift + 1) and set(diamond) == every
    assert [abs(dy) + abs(dx) for dy, dx in diamond] == sorted(abs(dy) + abs(dx) for dy, dx in diamond)  # nearest first
    assert tta_offsets(shift) == [(shift, 0), (-shift, 0), (0, shift), (0, -shift)]
    assert tta_offsets(0, "diamond") == tta_offsets(0) == []


def test_diamond_views_are_each_view_then_its_moves_and_an_unknown_pattern_is_refused():
    x = torch.randn(2, 1, 6, 6)
    views = tta_views(x, flip=True, shift=2, fill=[0.5], pattern="diamond")
    assert len(views) == 26
    expected = [_reference(base, dy, dx, [0.5]) for base in (x, x.flip(-1)) for dy, dx in [(0, 0), *tta_offsets(2, "diamond")]]
    assert all(torch.equal(v, e) for v, e in zip(views, expected))
    assert set(map(tuple, (v.flatten().tolist() for v in tta_views(x, flip=False, shift=1, pattern="diamond")))) == \
        set(map(tuple, (v.flatten().tolist() for v in tta_views(x, flip=False, shift=1))))  # the same 5 at 1 px
    with pytest.raises(ValueError, match="tta pattern must be one of cross, diamond, got 'ring'"):
        tta_views(x, flip=True, shift=1, pattern="ring")
