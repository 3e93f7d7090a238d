"""preprocess, the one preprocessing of a single image (prediction, ONNX, to_model_input): "whole"
against torchvision's Resize / Normalize of the same image's pixels and against the in-memory test
set itself, "crop" against the test pipeline a folder dataset's model was evaluated with
(folder_transforms(train=False))."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from resnet_lab.data import check_preprocess, preprocess, to_channels, to_model_input
from resnet_lab.data.transforms import folder_transforms


def reference(img: Image.Image, size: tuple[int, int], mean, std, crop: bool) -> torch.Tensor:
    """torchvision: crop: Resize (short side) and CenterCrop on the PIL image; whole: Resize to (H, W)
    of its pixels as floats, rounded to uint8, as the in-memory datasets are resized at load time
    (Pillow's resize, and torchvision's of a uint8 tensor, compute in integers: a gray level apart
    on a fifth of the pixels). Then Normalize."""
    if crop:
        steps = [v2.Resize(size[0], InterpolationMode.BILINEAR), v2.CenterCrop(size), v2.PILToTensor()]
    else:
        steps = [v2.PILToTensor(), v2.ToDtype(torch.float32), v2.Resize(size, InterpolationMode.BILINEAR, antialias=True),
                 v2.Lambda(lambda x: x.round().clamp(0, 255).to(torch.uint8))]
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])(img)


@pytest.mark.parametrize("mode, channels", [("RGB", 3), ("L", 1)])
def test_whole_resizing_matches_torchvision_on_the_pil_image(mode, channels):
    rng = np.random.default_rng(0)
    shape = (50, 100, 3) if mode == "RGB" else (50, 100)  # 100 x 50: the short side 50 -> 64 makes 128 x 64
    img = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)
    mean, std = [0.4, 0.5, 0.6][:channels], [0.2, 0.25, 0.3][:channels]
    for resize, size, crop in [("whole", (28, 28), False), ("whole", (20, 36), False)]:
        ours = preprocess(img, (channels, *size), mean, std, resize)
        assert ours.shape == (channels, *size) and ours.dtype == torch.float32 and ours.is_contiguous()
        torch.testing.assert_close(ours, reference(img, size, mean, std, crop), atol=1e-5, rtol=0)


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("width, height", [(100, 72), (100, 77), (91, 64), (129, 100), (72, 100), (64, 64), (300, 41)])
def test_crop_is_the_folder_test_pipeline_pixel_for_pixel_at_any_aspect_ratio(width, height, channels):
    # Prediction must see what evaluation saw: torchvision truncates the long side and rounds the
    # crop offset; rounding the one or flooring the other shifts or rescales by a pixel.
    yy, xx = np.mgrid[0:height, 0:width]
    smooth = (127 + 60 * np.sin(xx / 5.0) + 60 * np.cos(yy / 7.0)).astype(np.uint8)
    img = Image.fromarray(np.stack([smooth, smooth[::-1], 255 - smooth], -1))
    mean, std = [0.4, 0.5, 0.6][:channels], [0.2, 0.25, 0.3][:channels]
    ours = preprocess(img, (channels, 64, 64), mean, std, "crop")
    evaluated = folder_transforms(64, channels, mean, std, train=False)(img)
    torch.testing.assert_close(ours, evaluated, atol=1e-6, rtol=0)


def test_crop_to_a_non_square_input_covers_it_and_takes_the_middle():
    # No test pipeline makes a non-square crop; a float64 reference of the geometry instead: a
    # 100 x 50 (W x H) ramp, value 2x in column x, scaled to cover 40 x 30 is 60 x 30, and its
    # middle 40 columns are 10..49, whose centres sit at x = (j + 10.5) * 100 / 60 - 0.5.
    ramp = np.tile(np.arange(100, dtype=np.uint8)[None, :] * 2, (50, 1))
    ours = preprocess(Image.fromarray(ramp), (1, 30, 40), [0.0], [1.0], "crop")
    assert ours.shape == (1, 30, 40)
    j = torch.arange(40, dtype=torch.float64)
    expected = 2 * ((j + 10.5) * 100 / 60 - 0.5)
    assert (ours[0].double() * 255 - expected).abs().max() <= 1.0  # a linear ramp stays linear; uint8 rounding


def test_auto_is_whole_up_to_64_px_and_crop_above():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (50, 100, 3), dtype=np.uint8))
    ref = reference(img, (64, 64), [0.5] * 3, [0.5] * 3, crop=False)
    torch.testing.assert_close(preprocess(img, (3, 64, 64), [0.5], [0.5]), ref, atol=1e-5, rtol=0)
    ref = folder_transforms(65, 3, [0.5] * 3, [0.5] * 3, train=False)(img)
    torch.testing.assert_close(preprocess(img, (3, 65, 65), [0.5], [0.5]), ref, atol=1e-6, rtol=0)


def test_to_model_input_is_preprocess_with_a_batch_dimension_and_invert_flips_the_pixels():
    img = Image.new("L", (10, 10), 30)
    meta = {"input_size": [1, 10, 10], "mean": [0.0], "std": [1.0]}
    assert torch.equal(to_model_input(img, meta), preprocess(img, (1, 10, 10), [0.0], [1.0])[None])
    torch.testing.assert_close(to_model_input(img, meta, invert=True), torch.full((1, 1, 10, 10), (255 - 30) / 255))


@pytest.mark.parametrize("args, match", [
    (((2, 8, 8), [0.5], [0.5], "whole"), r"1 \(grayscale\) or 3 \(RGB\) channels, got 2"),
    (((3, 8, 8), [0.5, 0.5], [0.5], "whole"), r"must have 1 or 3 entries"),
    (((3, 8, 8), [0.5], [0.5, 0.5], "whole"), r"must have 1 or 3 entries"),
    (((3, 8, 8), [0.5], [0.5], "stretch"), r"resize must be 'whole', 'crop' or 'auto', got 'stretch'"),
    (((3, 8, 8), [0.5], [float("inf")], "whole"), r"std must be > 0 in every channel, got \[inf\]"),  # all zeros
    (((3, 8, 8), [0.5], [0.2, 0.0, 0.2], "whole"), r"std must be > 0 in every channel, got \[0.2, 0.0, 0.2\]"),
    (((3, 0, 8), [0.5], [0.5], "whole"), r"input_size must be \(C, H, W\) with C, H and W >= 1, got \(3, 0, 8\)"),
])
def test_bad_arguments_are_value_errors_naming_them(args, match):
    with pytest.raises(ValueError, match=match):
        preprocess(Image.new("RGB", (8, 8)), *args)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_png_colour_key_transparency_is_composited_over_white_in_prediction_and_the_test_pipeline(tmp_path, mode):
    # A tRNS colour key: pixels of value 0 (black) are transparent. PIL's own reading of the file
    # (convert("RGBA")) gives the alpha; composited over white, they must come out white.
    a = np.zeros((8, 8), np.uint8)
    a[2:6, 2:6] = 128
    path = tmp_path / f"{mode}.png"
    if mode == "L":
        Image.fromarray(a, "L").save(path, transparency=0)
    else:
        Image.fromarray(np.stack([a] * 3, -1), "RGB").save(path, transparency=(0, 0, 0))
    img = Image.open(path)
    assert img.mode == mode and "transparency" in img.info
    alpha = np.asarray(img.convert("RGBA"))[..., 3] / 255.0
    expected = np.round(a * alpha + 255 * (1 - alpha)) / 255.0  # float64 compositing over white
    for channels in (1, 3):
        ours = preprocess(img, (channels, 8, 8), [0.0], [1.0], "whole")
        evaluated = folder_transforms(8, channels, [0.0] * channels, [1.0] * channels, train=False)(img)
        torch.testing.assert_close(ours, evaluated, atol=1e-6, rtol=0)  # prediction = test pipeline
        np.testing.assert_allclose(ours.numpy(), np.broadcast_to(expected, (channels, 8, 8)), atol=1e-6)


def test_16_bit_colour_key_is_composited_before_scaling_to_8_bits():
    # 40000 and 40001 both become gray 156; only the stored key 40000 is transparent.
    img = Image.fromarray(np.array([[40000, 40001, 0]], np.uint16))
    img.info["transparency"] = 40000
    out = np.asarray(to_channels(img, 1))
    assert out.tolist() == [[255, round(40001 / 257), 0]]


@pytest.mark.parametrize("mode", ["I", "I;16"])
def test_integer_images_map_v_to_v_over_257_whatever_the_rest_of_the_image(mode):
    # Float64 reference: v / 257 rounded (no ties: 257 is odd), after clipping to 0..65535.
    v = np.arange(65536, dtype=np.int64).reshape(256, 256)
    if mode == "I":  # 32-bit: values outside the 16-bit range clip
        v = v.copy()
        v[0, :3] = (-5, 70000, 2**31 - 1)
    img = Image.fromarray(v.astype(np.int32 if mode == "I" else np.uint16))
    assert img.mode == mode
    ref = np.round(np.clip(v.astype(np.float64), 0, 65535) / 257)
    np.testing.assert_array_equal(np.asarray(to_channels(img, 1)), ref)
    # the same stored value decodes alike in a dark image and in one with a brighter pixel
    dark = np.full((4, 4), 200, np.int32)
    bright = dark.copy()
    bright[0, 0] = 1000
    grays = [np.asarray(to_channels(Image.fromarray(a), 1))[1, 1] for a in (dark, bright)]
    assert grays == [round(200 / 257)] * 2


def _smooth_images(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, size, size, channels): noise on gradients, every gray level about equally likely."""
    rng = np.random.default_rng(seed)
    yy, xx = (g[None, :, :, None] for g in np.mgrid[0:size, 0:size])
    base = 127 + 100 * np.sin(xx / 3.0 + rng.uniform(0, 6, (n, 1, 1, channels))) * np.cos(yy / 4.0)
    return np.clip(base + rng.normal(0, 20, (n, size, size, channels)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("name, size, channels", [
    ("fashion-mnist", 40, 1), ("fashion-mnist", 40, 3), ("fashion-mnist", 20, 1),
    ("cifar10", 16, 1), ("cifar10", 48, 3)])
def test_whole_prepares_a_test_image_file_as_the_in_memory_test_set_has_it(tmp_path, name, size, channels):
    """predict on a test image saved as a file sees what evaluate saw: a run trained with
    --image-size (or --in-channels) holds its test set resized (and converted) by the in-memory
    loader's own steps, which Pillow's resize and gray conversion differ from by a gray level on
    ~20% of the pixels (top-1 differed on 1 of 256 Fashion-MNIST images at 40 px)."""
    import pickle

    from resnet_lab.data import load_data, write_idx

    if name == "fashion-mnist":
        raw = _smooth_images(8, 28, 1)
        for split in ("train", "t10k"):
            write_idx(tmp_path / f"{split}-images-idx3-ubyte", raw[..., 0])
            write_idx(tmp_path / f"{split}-labels-idx1-ubyte", np.arange(8, dtype=np.uint8) % 10)
    else:
        raw = _smooth_images(8, 32, 3)
        d = tmp_path / "cifar-10-batches-py"
        d.mkdir()
        batch = {b"labels": list(range(8)), b"data": raw.transpose(0, 3, 1, 2).reshape(8, -1)}
        for part in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            (d / part).write_bytes(pickle.dumps(batch))
        (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))
    data = load_data(name, data_dir=tmp_path, image_size=size, in_channels=channels, batch_size=8)
    evaluated = torch.cat([x for x, _ in data.test])
    info = data.info
    for i in range(len(raw)):  # each test image as a user has it: a PNG file
        Image.fromarray(raw[i].squeeze(-1) if raw.shape[-1] == 1 else raw[i]).save(tmp_path / f"{i}.png")
        with Image.open(tmp_path / f"{i}.png") as img:
            ours = preprocess(img, info.input_size, info.mean, info.std, info.resize)
        torch.testing.assert_close(ours, evaluated[i], atol=1e-6, rtol=0)


def test_whole_shrinks_a_large_photo_first_to_within_a_gray_level_of_the_full_resize():
    """A photo (over a megapixel) for a 28 px model is shrunk with Pillow to 3x that first, which
    saves most of the time and changes a pixel by one gray level at most (noise: the worst case)."""
    rng = np.random.default_rng(2)
    img = Image.fromarray(rng.integers(0, 256, (900, 1200, 3), dtype=np.uint8))
    full = reference(img, (28, 28), [0.0] * 3, [1.0] * 3, crop=False)
    ours = preprocess(img, (3, 28, 28), [0.0], [1.0], "whole")
    assert (ours - full).abs().max() <= 1.01 / 255


def test_auto_goes_by_the_longer_side_of_a_non_square_input():
    # "whole" up to SMALL_INPUT_MAX (64) pixels on a side: a 32 x 128 input has a side over 64
    assert check_preprocess((3, 32, 128), [0.5], [0.5]) == "crop"
    assert check_preprocess((3, 64, 16), [0.5], [0.5]) == "whole"


def test_a_model_json_without_resize_crops_a_large_input_as_auto_says():
    # runs saved before "resize" was written: 64 px inputs and up are cropped, not squeezed whole;
    # the white left quarter of a 300 x 100 image falls outside the centre crop (64 of 192 px)
    arr = np.zeros((100, 300, 3), np.uint8)
    arr[:, :75] = 255
    meta = {"input_size": [3, 96, 96], "mean": [0.0], "std": [1.0]}
    x = to_model_input(Image.fromarray(arr), meta)
    assert x.shape == (1, 3, 96, 96) and x.max() < 0.05
    # train writes "resize": null for a dataset info without one: read as "auto" too
    assert torch.equal(to_model_input(Image.fromarray(arr), {**meta, "resize": None}), x)


def test_float_images_of_0_to_1_map_1_to_white():
    # mode "F": 0..1 when the image's maximum is at most 1 (1.0 included), else 0..255
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32), "F")
    assert np.asarray(to_channels(unit, 1)).tolist() == [[0, 128, 255]]
    wide = Image.fromarray(np.array([[0.0, 1.0, 255.0]], np.float32), "F")
    assert np.asarray(to_channels(wide, 1)).tolist() == [[0, 1, 255]]


def test_the_exif_orientation_of_a_photo_is_applied():
    # orientation 6: the camera held sideways, the stored pixels are shown turned 90 degrees clockwise
    import io

    arr = (np.arange(8, dtype=np.uint8) * 30).reshape(2, 4)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    Image.fromarray(arr, "L").save(buf, "PNG", exif=exif)
    with Image.open(buf) as img:
        np.testing.assert_array_equal(np.asarray(to_channels(img, 1)), np.rot90(arr, -1))


def test_premultiplied_la_is_composited_over_white_as_its_straight_alpha_would_be():
    # gray 100 at alpha 128 is stored as La (50, 128); over white it is 100 * a + 255 * (1 - a)
    la = Image.new("LA", (2, 2), (100, 128)).convert("La")
    a = 128 / 255
    assert abs(int(np.asarray(to_channels(la, 1))[0, 0]) - (100 * a + 255 * (1 - a))) <= 1


def test_in_memory_gray_is_pils_luma_and_the_resize_treats_every_chunk_alike():
    from resnet_lab.data.transforms import convert_channels, resize_images

    rgb = np.random.default_rng(3).integers(0, 256, (5, 6, 7, 3), dtype=np.uint8)
    x = torch.from_numpy(rgb).permute(0, 3, 1, 2).contiguous()
    pil = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in rgb])  # ITU-R 601-2, in integers
    assert (convert_channels(x, 1)[:, 0].int() - torch.from_numpy(pil).int()).abs().max() <= 1
    one_by_one = torch.cat([resize_images(x[i:i + 1], (4, 5)) for i in range(5)])
    for chunk in (1, 2, 3, 4096):
        assert torch.equal(resize_images(x, (4, 5), chunk=chunk), one_by_one)


def test_one_mean_and_three_stds_normalize_each_channel_by_its_own_std():
    # check_preprocess lets mean and std each have 1 or C entries; a float64 recomputation of a flat
    # RGB image: (v / 255 - 0.5) / std_c for each channel c
    img = Image.new("RGB", (8, 8), (40, 120, 200))
    ours = preprocess(img, (3, 8, 8), [0.5], [0.2, 0.25, 0.3], "whole")
    want = [(v / 255 - 0.5) / s for v, s in zip((40, 120, 200), (0.2, 0.25, 0.3))]
    torch.testing.assert_close(ours.double(), torch.tensor(want, dtype=torch.float64).view(3, 1, 1).expand(3, 8, 8),
                               atol=1e-5, rtol=0)


def test_a_folder_runs_info_prepares_a_wide_file_as_the_folder_test_set_has_it(tmp_path):
    """A folder run's DatasetInfo tells prediction to resize as the folder's test transform does
    (the shorter side, then the center crop): a wide file predicted from it is the tensor evaluate
    saw. Squeezed whole instead, the 24 x 12 images would reach the model stretched."""
    from resnet_lab.data import load_data

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.fromarray(rng.integers(0, 256, (12, 24, 3), dtype=np.uint8)).save(tmp_path / split / cls / "0.png")
    data = load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=0, image_size=8, device="cpu")
    evaluated = torch.cat([x for x, _ in data.test])
    info = data.info
    for (path, _), want in zip(data.test.dataset.samples, evaluated):
        with Image.open(path) as img:
            torch.testing.assert_close(preprocess(img, info.input_size, info.mean, info.std, info.resize), want,
                                       atol=1e-6, rtol=0)
