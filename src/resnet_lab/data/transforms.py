"""Transforms: batch-wise augmentation on the device, the conversions of in-memory datasets at load
time, image-mode conversion, and :func:`preprocess`, the one preprocessing of a single image that
prediction (PyTorch and ONNX) and :func:`to_model_input` share.

The in-memory fast path augments whole batches with tensor ops (the airbench recipe: no
per-sample Python in the hot loop). The standard CIFAR augmentation (He et al. 2016, sec. 4.2:
"4 pixels are padded on each side, and a 32x32 crop is randomly sampled from the padded image or
its horizontal flip") becomes one gather: each sample's crop rows/columns are index arithmetic on
its own offsets, and a flip just reverses its column index. Random erasing (Zhong et al. 2017)
is one boolean mask per batch built from each sample's rectangle.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

if TYPE_CHECKING:
    from .datasets import DatasetInfo

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "GRAY_IMAGENET_MEAN",
    "GRAY_IMAGENET_STD",
    "FLIP_MODES",
    "SMALL_INPUT_MAX",
    "alternating_flips",
    "channel_stats",
    "check_flip_mode",
    "check_preprocess",
    "convert_channels",
    "crop_flip",
    "erase",
    "folder_transforms",
    "normalize",
    "preprocess",
    "resize_images",
    "sample_crop_flip_params",
    "sample_erase_params",
    "to_channels",
    "to_model_input",
    "translate",
    "tta_offsets",
    "tta_views",
]

# How test-time augmentation moves its views (tta_offsets): "cross" moves each view PX pixels up,
# down, left and right; "diamond" every way within PX pixels (|dy| + |dx| <= PX).
TTA_PATTERNS = ("cross", "diamond")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# ImageNet's statistics for the gray images to_channels makes (ITU-R 601-2 luma, 0.299 R + 0.587 G +
# 0.114 B). The mean is linear: sum_c w_c * mean_c = 0.4590. The std would need the channel
# covariances, which are not published with the means; sum_c w_c * std_c = 0.2256 is its value for
# fully correlated channels (an upper bound; ImageNet's channels are strongly correlated).
GRAY_IMAGENET_MEAN, GRAY_IMAGENET_STD = (0.459,), (0.226,)
# Inputs at most this many pixels on a side are "small" (MNIST/CIFAR-like): the object fills the
# frame, so prediction resizes the whole image instead of resizing the short side and cropping.
SMALL_INPUT_MAX = 64
# How the in-memory loader draws horizontal flips: "random" (each sample, each epoch, a coin toss) or
# "alternate" (airbench's alternating flip, Jordan 2024, arXiv 2404.00498: a random half in epoch 0,
# then every sample the opposite of its previous epoch, so each pair of epochs shows both views).
FLIP_MODES = ("random", "alternate")


def sample_crop_flip_params(
    n: int, padding: int, flip: bool, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw per-sample crop offsets and flip decisions (on the generator's device, CPU by default).

    Args:
        n: number of samples.
        padding: pad on each side; offsets are drawn from ``0..2*padding`` inclusive.
        flip: if False, no sample is flipped.
        generator: the random stream (seeded by the loader from seed and epoch).

    Returns:
        ``(dy, dx, flips)``: int64 offsets of shape (n,) and a bool tensor of shape (n,).
    """
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    if not flip:
        flips = torch.zeros(n, dtype=torch.bool)
    return dy, dx, flips


def check_flip_mode(flip_mode: str, *, augment: bool, flip: bool) -> None:
    """Raise ValueError unless ``flip_mode`` is one of :data:`FLIP_MODES` and, for "alternate",
    flips happen at all (with augmentation on and the flip allowed): asking for an alternating flip
    that never flips is a mistake, not a no-op.

    Args:
        flip_mode: "random" or "alternate".
        augment: whether the training images are augmented.
        flip: whether the horizontal flip is allowed.
    """
    if flip_mode not in FLIP_MODES:
        raise ValueError(f"flip_mode (--flip) must be one of {', '.join(FLIP_MODES)}, got {flip_mode!r}")
    if flip_mode == "alternate" and not (augment and flip):
        off = "augmentation is off (augment=False, --no-augment)" if not augment else "the flip is off (flip=False)"
        raise ValueError(f"flip_mode 'alternate' (--flip alternate) flips nothing because {off}; "
                         "turn it back on, or leave --flip at random")


def alternating_flips(n: int, epoch: int, generator: torch.Generator) -> torch.Tensor:
    """Per-sample flips of the alternating flip: a seeded random half of the ``n`` samples (exactly
    ``n // 2``) in even epochs, the other samples in odd epochs, so each sample's flip in epoch
    ``e + 1`` is the opposite of its flip in epoch ``e``.

    Args:
        n: number of samples (the dataset, indexed by sample, not by position in an epoch's order).
        epoch: the epoch number (0-based).
        generator: the stream that picks the epoch-0 half; seed it the same for every epoch.

    Returns:
        bool (n,): flip sample ``i`` in this epoch.
    """
    first = torch.zeros(n, dtype=torch.bool)
    first[torch.randperm(n, generator=generator)[: n // 2]] = True
    return ~first if epoch % 2 else first


def crop_flip(
    x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flips: torch.Tensor, padding: int
) -> torch.Tensor:
    """Zero-pad each image by ``padding``, crop it back to its size at offset ``(dy, dx)``, and
    mirror it left-right where ``flips`` is set; all samples at once.

    Zero padding happens on the raw pixels, like torchvision's ``RandomCrop(32, padding=4)`` on a
    PIL image before ``ToTensor``/``Normalize``.

    Args:
        x: images (B, C, H, W), any dtype (uint8 on the fast path).
        dy, dx: int64 (B,) offsets in ``0..2*padding`` into the padded image.
        flips: bool (B,): mirror these samples.
        padding: pixels of zero padding on each side.

    Returns:
        The augmented batch, same shape and dtype as ``x``.
    """
    b, c, h, w = x.shape
    dev = x.device
    dy, dx, flips = dy.to(dev), dx.to(dev), flips.to(dev)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x  # (B, C, H+2p, W+2p)
    hp, wp = h + 2 * padding, w + 2 * padding
    rows = dy[:, None] + torch.arange(h, device=dev)  # (B, H)
    cols_fwd = torch.arange(w, device=dev)
    cols = torch.where(flips[:, None], cols_fwd.flip(0), cols_fwd) + dx[:, None]  # (B, W)
    # One gather over the flattened padded image (4x faster on CPU than 4-D advanced indexing).
    flat = (rows[:, :, None] * wp + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
    return padded.reshape(b, c, hp * wp).gather(2, flat).view(b, c, h, w)


def translate(x: torch.Tensor, dy: int, dx: int, fill: Sequence[float] | None = None) -> torch.Tensor:
    """Shift every image's content ``dy`` pixels down and ``dx`` right (negative: up, left).

    The pixels the shift uncovers take ``fill``, one value per channel (default 0). For normalized
    images pass the normalized value of a black pixel, ``-mean / std``: then the shift matches the
    training pad-crop, which zero-pads the raw pixels (:func:`crop_flip`).

    Args:
        x: images (B, C, H, W), floating point.
        dy, dx: the shift in pixels, each smaller than the image's side.
        fill: per-channel value of the uncovered pixels (one value per channel, or one for all).

    Returns:
        A new batch of the same shape (contiguous in the default memory format).
    """
    h, w = x.shape[-2:]
    if abs(dy) >= h or abs(dx) >= w:
        raise ValueError(f"a shift of ({dy}, {dx}) px moves a {h}x{w} image out of its frame")
    c = x.shape[1]
    if fill is not None and len(fill) not in (1, c):
        raise ValueError(f"fill has {len(fill)} values for {c}-channel images: pass {c} (the normalized black pixel "
                         f"-mean / std of these images' channels) or one for all")
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    out[:] = x.new_tensor(fill).view(1, -1, 1, 1) if fill is not None else 0
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        x[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def tta_offsets(shift: int, pattern: str = "cross") -> list[tuple[int, int]]:
    """The ``(dy, dx)`` moves of the shifted test-time views, the unmoved view not included.

    ``"cross"``: ``shift`` pixels down, up, right and left (4 moves). ``"diamond"``: every move of
    at most ``shift`` pixels in all, ``0 < |dy| + |dx| <= shift`` (``2 * shift * (shift + 1)``
    moves: 4 at 1 px, the cross's; 12 at 2 px), nearest first. No moves for ``shift`` 0.
    """
    if shift < 0:
        raise ValueError(f"tta_shift must be 0 (none) or a positive number of pixels, got {shift}")
    if pattern not in TTA_PATTERNS:
        raise ValueError(f"tta pattern must be one of {', '.join(TTA_PATTERNS)}, got {pattern!r}")
    if pattern == "cross":
        return [(shift, 0), (-shift, 0), (0, shift), (0, -shift)] if shift else []
    return [(dy, dx) for r in range(1, shift + 1) for dy in range(-r, r + 1) for dx in sorted({r - abs(dy), abs(dy) - r})]


def tta_views(x: torch.Tensor, *, flip: bool, shift: int = 0,
              fill: Sequence[float] | None = None, pattern: str = "cross") -> list[torch.Tensor]:
    """The test-time-augmentation views of a batch: the images, their mirrors (``flip``) and, for
    ``shift`` > 0, each of those moved by :func:`tta_offsets` (``pattern``: ``shift`` pixels up,
    down, left and right, or every way within ``shift`` pixels) with :func:`translate`.

    One view (the batch itself) without ``flip`` and ``shift``; 2, 5 or 10 views otherwise with the
    cross; 13 or 26 with the 2 px diamond.
    """
    moves = tta_offsets(shift, pattern)
    base = [x, x.flip(-1)] if flip else [x]
    return [view for v in base for view in (v, *(translate(v, dy, dx, fill) for dy, dx in moves))]


# Random erasing defaults of Zhong et al. 2017 (sec. 3.1): erased area 2%..40% of the image,
# aspect ratio 0.3..1/0.3 (drawn uniformly in log space, as torchvision does).
ERASE_SCALE = (0.02, 0.4)
ERASE_RATIO = (0.3, 1 / 0.3)


def check_erase_probability(p: float, *, augment: bool = True) -> None:
    """Raise ValueError unless ``p`` is a probability (NaN included in the refusal) and, when it is
    above 0, the training images are augmented at all (erasing is part of the augmentation, so
    with ``augment`` off it would change nothing)."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"random_erasing is a probability in [0, 1], got {p}")
    if p > 0 and not augment:
        raise ValueError(f"random_erasing {p:g} (--random-erasing) is part of the augmentation, which --no-augment "
                         "(augment=False) turns off: drop one of the two")


def sample_erase_params(
    n: int, height: int, width: int, p: float, generator: torch.Generator,
    scale: tuple[float, float] = ERASE_SCALE, ratio: tuple[float, float] = ERASE_RATIO,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw one erasing rectangle per sample (random erasing, Zhong et al. 2017).

    Each sample is erased with probability ``p``; its rectangle has an area drawn uniformly from
    ``scale`` (fractions of ``height * width``) and an aspect ratio (height / width) drawn
    log-uniformly from ``ratio``, clipped to the image, at a uniform position where it fits. Every
    sample consumes the same random numbers whatever ``p`` is, so the stream stays aligned.

    Args:
        n: number of samples.
        height, width: image size in pixels.
        p: probability of erasing a sample, in [0, 1].
        generator: the random stream (seeded by the loader from seed and epoch).
        scale, ratio: the ranges above.

    Returns:
        ``(top, left, eh, ew)``: int64 (n,) each; ``eh == ew == 0`` for samples left alone.
    """
    check_erase_probability(p)
    if not (0.0 < scale[0] <= scale[1] <= 1.0 and 0.0 < ratio[0] <= ratio[1]):
        raise ValueError(f"need 0 < scale[0] <= scale[1] <= 1 and 0 < ratio[0] <= ratio[1], got {scale}, {ratio}")
    u = torch.rand(n, 5, generator=generator, dtype=torch.float64)
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, 0])
    log_lo, log_hi = np.log(ratio[0]), np.log(ratio[1])
    r = torch.exp(log_lo + (log_hi - log_lo) * u[:, 1])
    eh = torch.sqrt(area * r).round().clamp(1, height).to(torch.int64)
    ew = torch.sqrt(area / r).round().clamp(1, width).to(torch.int64)
    top = (u[:, 2] * (height - eh + 1)).floor().to(torch.int64).clamp(max=height - 1)
    left = (u[:, 3] * (width - ew + 1)).floor().to(torch.int64).clamp(max=width - 1)
    keep = u[:, 4] >= p  # p == 0: nobody erased; p == 1: everybody (u < 1 always)
    eh, ew = eh.masked_fill(keep, 0), ew.masked_fill(keep, 0)
    return top, left, eh, ew


def erase(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, eh: torch.Tensor, ew: torch.Tensor, value: float = 0.0
) -> torch.Tensor:
    """Set each sample's rectangle ``[top, top+eh) x [left, left+ew)`` to ``value`` in every channel.

    On normalized input the default ``value=0`` is the per-channel training mean. Returns a new
    tensor of the same shape and dtype.

    Args:
        x: (B, C, H, W).
        top, left, eh, ew: int64 (B,) from :func:`sample_erase_params` (``eh == 0``: untouched).
        value: fill value.
    """
    _, _, h, w = x.shape
    dev = x.device
    top, left, eh, ew = (t.to(dev) for t in (top, left, eh, ew))
    rows = torch.arange(h, device=dev)[None, :]
    cols = torch.arange(w, device=dev)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # (B, H)
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # (B, W)
    return x.masked_fill((in_rows[:, :, None] & in_cols[:, None, :])[:, None], value)


def normalize(
    x: torch.Tensor, mean: Sequence[float], std: Sequence[float], *, scale: float = 255.0
) -> torch.Tensor:
    """Turn raw pixels into float32 ``(x / scale - mean) / std`` per channel.

    Args:
        x: (B, C, H, W) uint8 (or float on the 0..scale range).
        mean, std: per-channel statistics on the 0..1 scale.
        scale: the pixel range (255 for uint8).
    """
    c = x.shape[1]
    m = torch.tensor(mean, dtype=torch.float32, device=x.device).view(1, c, 1, 1) * scale
    inv = 1.0 / (torch.tensor(std, dtype=torch.float32, device=x.device).view(1, c, 1, 1) * scale)
    return (x.to(torch.float32) - m) * inv


# ----------------------------------------------------------------------------- in-memory datasets


def convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 images (N, C, H, W) with C in (1, 3) as ``channels`` channels: gray is repeated to
    RGB; RGB becomes gray with the ITU-R 601-2 luma weights (those of PIL's ``convert("L")``).
    Any other count, either side, is a ValueError (gray was once expanded to 2 or 0 channels)."""
    c = x.shape[1]
    if c not in (1, 3) or channels not in (1, 3):
        raise ValueError(f"cannot convert {c}-channel images to {channels} channels; use in_channels 1 or 3")
    if c == channels:
        return x
    if c == 1:
        return x.expand(-1, channels, -1, -1).contiguous()
    w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)  # c == 3, channels == 1
    return (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def resize_images(x: torch.Tensor, size: int | tuple[int, int], chunk: int = 4096) -> torch.Tensor:
    """uint8 images (N, C, H, W) resized to (size, size) (or ``size = (H, W)``): bilinear,
    antialiased, ``chunk`` images at a time (bounded float memory). :func:`preprocess` resizes a
    single image of an in-memory dataset's model with it too, so that prediction sees what
    evaluation saw (Pillow's bilinear differs by a gray level on a fifth of the pixels)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) == hw:
        return x
    out = [
        F.interpolate(x[i : i + chunk].float(), size=hw, mode="bilinear", align_corners=False,
                      antialias=True).round().clamp(0, 255).to(torch.uint8)
        for i in range(0, x.shape[0], chunk)
    ]
    return torch.cat(out) if out else x.new_empty(x.shape[0], x.shape[1], *hw)


def channel_stats(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 images on the 0..1 scale, from a
    256-bin histogram per channel (no float copy of the dataset).

    Args:
        x: uint8 (N, C, H, W).
    """
    means, stds = [], []
    v = torch.arange(256, dtype=torch.float64) / 255.0
    for c in range(x.shape[1]):
        h = torch.bincount(x[:, c].reshape(-1).cpu().long(), minlength=256).to(torch.float64)
        total = h.sum()
        m = (h * v).sum() / total
        var = (h * (v - m) ** 2).sum() / total
        means.append(round(float(m), 4))
        stds.append(round(float(var.sqrt()), 4))
    return tuple(means), tuple(stds)


# ----------------------------------------------------------------------------- single images


def _to_8bit(img: Image.Image) -> Image.Image:
    """Map 16/32-bit integer and float single-channel images to 8-bit "L", the same way for every
    image (no guess from its own range, so a stored value always decodes to the same gray).

    Integer modes ("I;16*": 16-bit PNG/TIFF; "I": 16-bit PGM, 32-bit TIFF, 16-bit PNG in older
    Pillow) are read as 16-bit: v -> round(v / 257), 0..65535 onto 0..255; "I" values below 0 or
    above 65535 are clipped first. ``Image.convert("L")`` would clip at 255 instead, which turns
    most 16-bit images white. Float ("F"): 0..1 if the image's maximum is at most 1, else 0..255.
    """
    arr = np.asarray(img)
    if img.mode == "F":
        arr = arr.astype(np.float64)
        hi = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
        return Image.fromarray(np.clip(np.nan_to_num(arr) / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    v = np.clip(arr.astype(np.int64), 0, 65535)
    return Image.fromarray(((2 * v + 257) // 514).astype(np.uint8), "L")  # floor(v / 257 + 1/2), in integers


def _colour_key_alpha(img: Image.Image) -> Image.Image | None:
    """The alpha mask ("L", 0 = transparent) of a 16/32-bit image whose transparency is a colour
    key (PNG's tRNS chunk: one stored value means "transparent"), or None without one. Read before
    :func:`_to_8bit`, which maps several stored values to one gray."""
    key = img.info.get("transparency")
    if not isinstance(key, int):
        return None
    return Image.fromarray(np.where(np.asarray(img) == key, 0, 255).astype(np.uint8), "L")


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL image to mode "L" (``channels=1``) or "RGB" (``channels=3``).

    Applies the EXIF orientation (phone photos), composites transparency (RGBA, LA, palette with
    transparency, a tRNS colour key on 1/L/RGB/16-bit images) over white, and maps 16-bit/float
    images to 8 bits instead of clipping them (:func:`_to_8bit`).

    Args:
        img: the image, any mode (1, L, P, RGB, RGBA, LA, CMYK, I, I;16, F, ...).
        channels: 1 or 3.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
    img = ImageOps.exif_transpose(img)
    if img.mode in ("P", "PA") or (img.mode in ("1", "L", "RGB") and img.info.get("transparency") is not None):
        img = img.convert("RGBA")  # Pillow turns the palette's or the colour key's transparency into alpha
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        alpha = _colour_key_alpha(img)
        img = _to_8bit(img)
        if alpha is not None:
            img.putalpha(alpha)  # "L" -> "LA"
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        img = img.convert("LA" if img.mode == "La" else "RGBA").convert("RGBA")  # La unpremultiplies to LA only
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    target = "L" if channels == 1 else "RGB"
    try:
        return img.convert(target)
    except ValueError:  # no direct way (LAB -> L: a CIE L*a*b* TIFF): through RGB, which Pillow reaches from more modes
        return img.convert("RGB").convert(target)


class _ToChannels:
    """Picklable ``to_channels`` step (workers started with "spawn" pickle the transform)."""

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def __call__(self, img: Image.Image) -> Image.Image:
        return to_channels(img, self.channels)

    def __repr__(self) -> str:
        return f"ToChannels({self.channels})"


def folder_transforms(
    image_size: int, channels: int, mean: Sequence[float], std: Sequence[float], *, train: bool, flip: bool = True,
    random_erasing: float = 0.0,
):
    """torchvision.transforms.v2 pipelines for streamed folder images.

    Train: RandomResizedCrop + horizontal flip (the ImageNet recipe, Szegedy et al. 2015).
    Test: resize the shorter side to ``image_size`` and take the center crop (no aspect distortion).

    Args:
        image_size: output side length.
        channels: 1 or 3; the PIL image is converted with :func:`to_channels` first.
        mean, std: normalization on the 0..1 scale.
        train: augmenting pipeline or deterministic one.
        flip: include the random horizontal flip in the train pipeline.
        random_erasing: probability of torchvision's ``RandomErasing`` (value 0, the mean, after
            normalization; the scale and ratio defaults of Zhong et al.) at the end of the train
            pipeline; 0 leaves it out.
    """
    from torchvision.transforms import v2  # deferred: importing torchvision costs 2-3 s

    check_erase_probability(random_erasing)
    erasing = [v2.RandomErasing(random_erasing, ERASE_SCALE, ERASE_RATIO, value=0)] if train and random_erasing else []

    geometry = (
        [v2.RandomResizedCrop(image_size, antialias=True)] + ([v2.RandomHorizontalFlip()] if flip else [])
        if train
        else [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
    )
    return v2.Compose(
        [_ToChannels(channels), v2.PILToTensor(), *geometry, v2.ToDtype(torch.float32, scale=True),
         v2.Normalize(list(mean), list(std)), *erasing]
    )


def check_preprocess(input_size: Sequence[int], mean: Sequence[float], std: Sequence[float], resize: str = "auto") -> str:
    """Refuse settings of :func:`preprocess` that no image could be prepared with (a hand-edited
    ``model.json``, a wrong ``meta=``), so that a caller preparing many files can say so once, before
    the first, rather than blame every file. Returns the resize mode, ``"whole"`` or ``"crop"``."""
    size = tuple(input_size)
    if len(size) != 3 or any(int(v) < 1 for v in size):  # (H, W) alone, a batch dimension, a 0
        raise ValueError(f"input_size must be (C, H, W) with C, H and W >= 1, got {size}: e.g. (1, 28, 28) for "
                         "a grayscale 28 px model, (3, 32, 32) for an RGB one")
    c, h, w = (int(v) for v in size)
    if c not in (1, 3):
        raise ValueError(f"input_size must have 1 (grayscale) or 3 (RGB) channels, got {c} in {tuple(input_size)}")
    if len(mean) not in (1, c) or len(std) not in (1, c):
        raise ValueError(f"mean {list(mean)} and std {list(std)} must have 1 or {c} entries for {c}-channel input")
    if not all(math.isfinite(s) and s > 0 for s in std):  # 0 gives NaN, a negative one wrong probabilities
        raise ValueError(f"std must be > 0 in every channel, got {list(std)}")
    mode = resize or "auto"
    if mode == "auto":
        mode = "whole" if max(h, w) <= SMALL_INPUT_MAX else "crop"
    if mode not in ("whole", "crop"):
        raise ValueError(f"resize must be 'whole', 'crop' or 'auto', got {resize!r}")
    return mode


def preprocess(
    img: Image.Image, input_size: Sequence[int], mean: Sequence[float], std: Sequence[float], resize: str = "auto",
    *, invert: bool = False,
) -> torch.Tensor:
    """One image as the model's test data were prepared: the preprocessing that
    :func:`to_model_input`, ``predict_images`` and the ONNX predictor (which takes ``.numpy()``) share.

    1. convert to ``C`` channels with :func:`to_channels` (EXIF rotation, alpha over white, 16-bit);
       for ``"whole"``, to RGB with it and then to gray with :func:`convert_channels`, as the
       in-memory datasets are converted (Pillow's gray is a level apart on a few pixels);
    2. with ``invert``, invert the pixel values (Fashion-MNIST garments are light on black, so a
       photo of a dark garment on a white background needs it);
    3. resize to (H, W): ``"whole"`` (Fashion-MNIST, CIFAR, fake: centered objects filling the frame)
       resizes the image as it is, with :func:`resize_images` (the in-memory datasets' resize, so a
       run trained with ``--image-size`` is shown a test image file as its test set holds it);
       ``"crop"`` (folder datasets, their test transform) resizes the shorter side and takes the
       center crop, as torchvision's ``Resize`` + ``CenterCrop``; ``"auto"`` is "whole" up to
       :data:`SMALL_INPUT_MAX` pixels on a side, else "crop". Bilinear and antialiased;
    4. scale to 0..1, subtract ``mean`` and divide by ``std`` per channel (:func:`normalize`).

    Args:
        img: a PIL image in any mode.
        input_size: ``(C, H, W)`` the model expects; C is 1 (grayscale) or 3 (RGB).
        mean, std: per-channel statistics on the 0..1 scale (C values, or 1 for every channel).
        resize: ``"whole"``, ``"crop"`` or ``"auto"``, as the run's ``model.json`` says.
        invert: see step 2.

    Returns:
        float32 tensor (C, H, W).
    """
    mode = check_preprocess(input_size, mean, std, resize)
    c, h, w = (int(v) for v in input_size)
    if mode == "whole":  # the in-memory datasets' own steps (datasets.py): their gray, their resize
        x = convert_channels(_uint8_tensor(_reduced(to_channels(img, 3), h, w))[None], c)
    else:  # the folder test pipeline's: Pillow's gray (folder_transforms), then resize and crop below
        x = _uint8_tensor(to_channels(img, c))[None]
    if invert:
        x = 255 - x
    x = resize_images(x, (h, w)) if mode == "whole" else _resize_center_crop(x[0], h, w)[None]
    return normalize(x, tuple(mean) * (c // len(mean)), tuple(std) * (c // len(std)))[0]


def _reduced(img: Image.Image, h: int, w: int, gap: int = 3) -> Image.Image:
    """A photo (over a megapixel) shrunk with Pillow to ``gap`` times (h, w) first, whole extent to
    whole extent: the float resize of all its pixels took 0.4 s for 12 megapixels and this 0.03 s,
    for a result a gray level apart at most. Smaller images (every in-memory dataset's: 28 or 32 px)
    are left whole, so that their resize stays the loader's, bit for bit."""
    size = (min(img.width, gap * w), min(img.height, gap * h))
    if img.width * img.height <= 1_000_000 or size == img.size:
        return img
    return img.resize(size, Image.Resampling.BILINEAR, reducing_gap=None)


def _uint8_tensor(img: Image.Image) -> torch.Tensor:
    """An "L" or "RGB" image as a uint8 (C, H, W) tensor."""
    c = len(img.getbands())
    return torch.from_numpy(np.array(img, dtype=np.uint8)).view(img.height, img.width, c).permute(2, 0, 1).contiguous()


def _resize_center_crop(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """uint8 (C, H', W') scaled so that it covers (h, w), then its center (h, w): for a square
    output the folder test pipeline's ``Resize(size) + CenterCrop(size)`` on the tensor, op for op
    (torchvision's sizes: the long side truncated, the crop offset rounded)."""
    from torchvision.transforms.v2 import functional as TF  # deferred: importing torchvision costs 2-3 s

    ih, iw = x.shape[-2:]
    if h / ih >= w / iw:  # the height decides: as Resize(h) when the height is the shorter side
        size = [h, max(w, int(h * iw / ih))]
    else:
        size = [max(h, int(w * ih / iw)), w]
    return TF.center_crop(TF.resize(x, size, antialias=True), [h, w])


def to_model_input(
    img: Image.Image, info: "DatasetInfo | Mapping[str, Any]", *, invert: bool = False
) -> torch.Tensor:
    """Preprocess one image for prediction the way the model's test data were preprocessed
    (:func:`preprocess` with the model's input size, mean, std and resize mode).

    Args:
        img: a PIL image in any mode.
        info: the :class:`DatasetInfo` the model was trained with, or a mapping with the same keys
            (a run's ``model.json``: ``input_size``, ``mean``, ``std``, optional ``resize``).
        invert: invert the pixel values first (see :func:`preprocess`).

    Returns:
        float32 tensor (1, C, H, W), normalized with ``info.mean``/``info.std``.
    """
    get = info.get if isinstance(info, Mapping) else lambda k, d=None: getattr(info, k, d)
    missing = [k for k in ("input_size", "mean", "std") if get(k) is None]
    if missing:
        raise ValueError(f"to_model_input needs the model's {', '.join(missing)} (a run's model.json or a "
                         f"DatasetInfo has them), got {sorted(info) if isinstance(info, Mapping) else info!r}")
    return preprocess(img, get("input_size"), get("mean"), get("std"), get("resize", "auto"), invert=invert)[None]
