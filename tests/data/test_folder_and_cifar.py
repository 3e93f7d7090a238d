"""Messy image folders, CIFAR pickle batches and prediction preprocessing, with fixtures built in
tmp_path (PIL-written images, torchvision-format pickles)."""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_lab.data import BadImageWarning, DataNotFoundError, DatasetInfo, load_data, to_channels, to_model_input
from support import write_image_folder


def rgb(w: int, h: int, color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (w, h), color)


def make_messy(root: Path) -> dict[str, list[str]]:
    """cats: RGB, L, RGBA, P, 16-bit, odd sizes; dogs: RGB + three bad files + hidden files."""
    (root / "cats").mkdir(parents=True)
    (root / "dogs").mkdir()
    rgb(40, 30, (200, 10, 10)).save(root / "cats" / "a_rgb.png")
    Image.new("L", (17, 23), 90).save(root / "cats" / "b_gray.png")
    Image.new("RGBA", (32, 32), (0, 0, 255, 128)).save(root / "cats" / "c_rgba.png")
    rgb(20, 20, (0, 255, 0)).convert("P", palette=Image.Palette.ADAPTIVE).save(root / "cats" / "d_palette.png")
    Image.fromarray(np.full((25, 25), 40000, dtype=np.uint16)).save(root / "cats" / "e_16bit.png")
    rgb(50, 64, (10, 10, 10)).save(root / "cats" / "f.jpg", quality=90)
    for i in range(3):
        rgb(30 + i, 30, (i * 50, 0, 0)).save(root / "dogs" / f"dog{i}.png")
    (root / "dogs" / "empty.jpg").write_bytes(b"")
    (root / "dogs" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (root / "dogs" / "notes.txt").write_text("remember to label more dogs")
    (root / "dogs" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return {"good": 9, "bad": ["empty.jpg", "corrupt.png", "notes.txt"]}


def test_messy_folder_loads_good_images_and_warns_once_naming_each_bad_file(tmp_path):
    make_messy(tmp_path)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        b = load_data("folder", data_dir=tmp_path, batch_size=4, num_workers=0, val_fraction=0.25, image_size=16)
    bad_warnings = [w for w in rec if issubclass(w.category, BadImageWarning)]
    assert len(bad_warnings) == 1
    msg = str(bad_warnings[0].message)
    assert "3 unreadable" in msg
    for name in ("empty.jpg", "corrupt.png", "notes.txt"):
        assert msg.count(name) == 1
    assert ".DS_Store" not in msg
    assert b.info.classes == ["cats", "dogs"] and b.info.input_size == (3, 16, 16)
    assert b.num_train + b.num_test == 9
    assert b.num_test == 3  # per class: round(0.25 * 6 cats) = 2, round(0.25 * 3 dogs) -> at least 1
    seen = 0
    for x, y in b.test:
        assert x.shape[1:] == (3, 16, 16) and x.dtype == torch.float32 and torch.isfinite(x).all()
        seen += len(y)
    assert seen == b.num_test
    xs = [x for x, _ in b.train]
    assert all(x.shape[1:] == (3, 16, 16) for x in xs)


def test_folder_grayscale_model_gets_one_channel_and_small_images_keep_their_size(tmp_path):
    make_messy(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImageWarning)
        b = load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=0, in_channels=1, augment=False)
    # all images <= 64 px: median shorter side of the 9 good images (20,17,32,20,25,50,30,30,30) is 30
    assert b.info.input_size == (1, 30, 30)
    x, _ = next(iter(b.train))
    assert x.shape == (2, 1, 30, 30)


@pytest.mark.parametrize("sizes, want", [
    ([(8, 8), (12, 12), (12, 8), (12, 12)], 10),  # short sides 8, 12, 8, 12: their median is 10, between the two middle ones
    ([(64, 9), (9, 9), (9, 11), (9, 9)], 9),  # 64 px is still small
    ([(8, 8), (8, 8), (8, 8), (65, 30)], 224),  # one image over 64 px: the ImageNet size
])
def test_a_folders_default_size_is_the_median_short_side_of_small_images_else_224(tmp_path, sizes, want):
    """docs/DATA.md: image_size defaults to the median shorter side when every image is at most 64 px,
    else 224 (hand-computed above; two images per class)."""
    for i, (w, h) in enumerate(sizes):
        (tmp_path / "ab"[i % 2]).mkdir(exist_ok=True)
        rgb(w, h, (40 * i, 0, 0)).save(tmp_path / "ab"[i % 2] / f"{i}.png")
    b = load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=0, augment=False)
    assert b.info.input_size == (3, want, want)


def test_empty_class_folder_is_an_error_naming_it(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rgb(8, 8, (1, 2, 3)).save(tmp_path / "a" / "x.png")
    (tmp_path / "b" / "readme.txt").write_text("nothing here")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImageWarning)
        with pytest.raises(ValueError, match=r"\['b'\].*no readable images"):
            load_data("folder", data_dir=tmp_path, num_workers=0)


def test_folder_without_class_subfolders_is_an_error(tmp_path):
    rgb(8, 8, (1, 2, 3)).save(tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"no class sub-folders \(it holds files like \['x.png'\]; move them into "
                                         r"one sub-folder per class\)"):
        load_data("folder", data_dir=tmp_path, num_workers=0)
    with pytest.raises(ValueError, match="needs data_dir"):
        load_data("folder")


def train_val_folder(root: Path) -> Path:
    """train/ with 4 red and 4 blue 12 px images, val/ with 2 of each."""
    for split, n in (("train", 4), ("val", 2)):
        for cls, color in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(n):
                rgb(12, 12, color).save(d / f"{i}.png")
    return root


def test_train_val_layout_uses_the_val_folder_as_test_split(tmp_path):
    train_val_folder(tmp_path)
    b = load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=0, augment=False, image_size=12)
    assert (b.num_train, b.num_test) == (8, 4) and b.info.classes == ["blue", "red"]
    xs, ys = zip(*b.test)
    x, y = torch.cat(xs), torch.cat(ys)
    # red images are channel 0 = 1.0, blue channel 2 = 1.0, after ImageNet normalization
    mean, std = torch.tensor(b.info.mean), torch.tensor(b.info.std)
    raw = x.mean((2, 3)) * std + mean  # undo normalization: per-image channel means on 0..1
    expected = torch.where(y[:, None] == 1, torch.tensor([1.0, 0, 0]), torch.tensor([0, 0, 1.0]))
    torch.testing.assert_close(raw, expected, atol=1e-5, rtol=0)
    (tmp_path / "val" / "green").mkdir()
    rgb(12, 12, (0, 255, 0)).save(tmp_path / "val" / "green" / "0.png")
    with pytest.raises(ValueError, match="green"):
        load_data("folder", data_dir=tmp_path, num_workers=0)


@pytest.mark.parametrize("kw, each", [({"subset": 4}, 2), ({"per_class": 3}, 3)])
def test_subset_and_per_class_pick_a_folders_training_images_and_leave_its_test_split(tmp_path, kw, each):
    """docs/DATA.md: --subset N is N training images stratified by class, per_class k of each class
    (a hand count: 4 of 4 + 4 is 2 + 2); val/'s 2 + 2 stay the test split. Too many names the train/
    folder and both numbers."""
    root = train_val_folder(tmp_path)
    b = load_data("folder", data_dir=root, batch_size=2, num_workers=0, **kw)
    train = [(Path(p), b.info.classes[label]) for p, label in b.train.dataset.samples]
    assert b.num_train == len(train) == 2 * each and b.num_test == len(b.test.dataset.samples) == 4
    assert sorted(cls for _, cls in train) == ["blue"] * each + ["red"] * each
    assert all(p.parent == root / "train" / cls for p, cls in train)
    with pytest.raises(ValueError, match=rf"^--subset 9 is more than the 8 training images of image folder {re.escape(str(root / 'train'))};"):
        load_data("folder", data_dir=root, num_workers=0, subset=9)


@pytest.mark.parametrize("kwargs, match", [
    ({"split_seed": 3}, r"split_seed 3 picks the images held out of a folder without a val/ folder, and .* has "),
    ({"val_fraction": 0.3}, r"val_fraction \(--val-fraction\) 0.3 holds out a share of a folder without a val/ folder"),
])
def test_hold_out_options_for_a_folder_with_its_own_val_folder_are_refused(tmp_path, kwargs, match):
    """With val/ nothing is held out (docs/DATA.md): a seed or a share for it would change nothing."""
    root = train_val_folder(tmp_path)
    with pytest.raises(ValueError, match=match) as e:
        load_data("folder", data_dir=root, batch_size=2, num_workers=0, **kwargs)
    assert f"point --data-dir at {root / 'train'}" in str(e.value) and "\n" not in str(e.value)


def test_val_fraction_holds_out_that_share_of_each_class_as_the_test_split(tmp_path):
    """val_fraction against the default (0.1) on a folder without val/: round(fraction * count) of each
    class become the test split, and every image is in exactly one split."""
    files = {}
    for cls, n in (("a", 10), ("b", 6)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            rgb(8, 8, (10 * i, 0, 0)).save(tmp_path / cls / f"{i}.png")
        files[cls] = {str(tmp_path / cls / f"{i}.png") for i in range(n)}
    splits = {}
    for fraction in (None, 0.5):
        kw = {} if fraction is None else {"val_fraction": fraction, "split_seed": 3}
        b = load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=0, **kw)
        # docs/DATA.md: model.json records the split, so that evaluating the run holds out the same images
        assert (b.info.val_fraction, b.info.split_seed) == ((0.1, 0) if fraction is None else (fraction, 3))
        test = [(path, b.info.classes[label]) for path, label in b.test.dataset.samples]
        train = [(path, b.info.classes[label]) for path, label in b.train.dataset.samples]
        assert (b.num_test, b.num_train) == (len(test), len(train))
        assert sorted(train + test) == sorted((f, cls) for cls, fs in files.items() for f in fs)
        splits[fraction] = {cls: sum(c == cls for _, c in test) for cls in files}
    assert splits[None] == {"a": 1, "b": 1}  # round(0.1 * 10) = 1; round(0.6) = 1
    assert splits[0.5] == {"a": 5, "b": 3}


def test_val_fraction_never_holds_out_a_whole_class(tmp_path):
    """A 1-image class keeps its image in train, and val_fraction 0.96 of a 10-image class holds out 9,
    not round(9.6) = 10: every class keeps at least one training image (hold_out's rule: round(fraction *
    count), at least 1 for classes of two or more, never the whole class; a hand count below)."""
    for cls, n in (("a", 10), ("b", 1), ("c", 2), ("d", 40)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            rgb(8, 8, (10 * i, 0, 0)).save(tmp_path / cls / f"{i}.png")
    b = load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=0, val_fraction=0.96)
    count = {}
    for split in ("train", "test"):
        labels = [b.info.classes[label] for _, label in getattr(b, split).dataset.samples]
        count[split] = {cls: labels.count(cls) for cls in ("a", "b", "c", "d")}
    assert count["train"] == {"a": 1, "b": 1, "c": 1, "d": 2}  # d: round(0.96 * 40) = 38 held out
    assert count["test"] == {"a": 9, "b": 0, "c": 1, "d": 38}


def test_to_channels_handles_every_mode_like_a_manual_conversion():
    # 16-bit is rescaled (40000/65535*255 = 155.6 -> 156), not clipped to 255
    im16 = Image.fromarray(np.full((3, 3), 40000, dtype=np.uint16))
    assert np.asarray(to_channels(im16, 1))[0, 0] == round(40000 * 255 / 65535)
    # half-transparent blue over white: 0.5*(0,0,255) + 0.5*(255,255,255)
    rgba = Image.new("RGBA", (2, 2), (0, 0, 255, 128))
    px = np.asarray(to_channels(rgba, 3))[0, 0].astype(int)
    a = 128 / 255
    assert np.abs(px - np.array([255 * (1 - a), 255 * (1 - a), 255])).max() <= 1
    pal = Image.new("RGB", (2, 2), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert tuple(np.asarray(to_channels(pal, 3))[0, 0]) == (10, 200, 30)
    gray = to_channels(Image.new("RGB", (2, 2), (100, 50, 200)), 1)
    assert np.asarray(gray)[0, 0] == round(100 * 0.299 + 50 * 0.587 + 200 * 0.114)


def test_to_model_input_small_gray_resizes_whole_and_normalizes():
    info = DatasetInfo("fashion-mnist", [str(i) for i in range(10)], (1, 28, 28), (0.286,), (0.353,), resize="whole")
    img = Image.new("RGB", (56, 40), (255, 255, 255))
    t = to_model_input(img, info)
    assert t.shape == (1, 1, 28, 28) and t.dtype == torch.float32
    torch.testing.assert_close(t, torch.full_like(t, (1.0 - 0.286) / 0.353))
    # a run's model.json (JSON lists, no "resize": 28 px counts as small) gives the same tensor
    meta = {"input_size": [1, 28, 28], "mean": [0.286], "std": [0.353], "classes": info.classes}
    torch.testing.assert_close(to_model_input(img, meta), t)


def test_to_model_input_large_input_crops_center_after_short_side_resize():
    info = DatasetInfo("folder", ["a"], (3, 64, 64), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), resize="crop")
    arr = np.zeros((100, 300, 3), np.uint8)
    arr[:, :75] = 255  # left quarter white (48 px after resizing to 192x64); the crop starts at 64
    t = to_model_input(Image.fromarray(arr), info)
    assert t.shape == (1, 3, 64, 64)
    assert t.max() < 0.05


def cifar_batch(n: int, seed: int, key: str = "labels") -> dict:
    rng = np.random.default_rng(seed)
    return {b"batch_label": b"x", key.encode(): list(rng.integers(0, 10, n)),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"f"] * n}


def test_cifar10_reads_torchvision_pickle_layout_without_md5(tmp_path, monkeypatch):
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    batches = [cifar_batch(6, i) for i in range(6)]
    for i, b in enumerate(batches[:5]):
        (d / f"data_batch_{i + 1}").write_bytes(pickle.dumps(b, protocol=2))
    (d / "test_batch").write_bytes(pickle.dumps(batches[5], protocol=2))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in names]}, protocol=2))
    b = load_data("cifar10", data_dir=tmp_path, batch_size=4, augment=False)
    assert b.info.classes == names and b.info.input_size == (3, 32, 32)
    assert (b.num_train, b.num_test) == (30, 6)
    # torchvision's CIFAR10.__getitem__ layout: row-major 3x32x32 (R plane, G plane, B plane)
    ref_x = np.concatenate([bt[b"data"] for bt in batches[:5]]).reshape(-1, 3, 32, 32)
    ref_y = np.concatenate([bt[b"labels"] for bt in batches[:5]])
    np.testing.assert_array_equal(b.train.images.numpy(), ref_x)
    np.testing.assert_array_equal(b.train.labels.numpy(), ref_y)
    m = ref_x.astype(np.float64).transpose(1, 0, 2, 3).reshape(3, -1) / 255
    np.testing.assert_allclose(b.info.mean, m.mean(1), atol=1e-4)
    np.testing.assert_allclose(b.info.std, m.std(1), atol=1e-4)
    # a pickle that would run code is refused
    (d / "test_batch").write_bytes(pickle.dumps({"data": Path("x")}))
    with pytest.raises(ValueError, match="test_batch"):
        load_data("cifar10", data_dir=tmp_path)


def test_folder_normalizes_with_torchvisions_imagenet_mean_and_std_per_channel(tmp_path):
    """torchvision's documented ImageNet constants, channel by channel (R, G, B): a pixel of value v
    (0..255) in channel c becomes (v / 255 - mean_c) / std_c."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    color = (200, 90, 30)
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            rgb(8, 8, color).save(tmp_path / split / cls / "0.png")
    b = load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=0, augment=False, image_size=8)
    assert tuple(b.info.mean) == mean and tuple(b.info.std) == std
    x, _ = next(iter(b.test))
    expected = torch.tensor([(v / 255 - m) / s for v, m, s in zip(color, mean, std)]).view(1, 3, 1, 1)
    torch.testing.assert_close(x, expected.expand(2, 3, 8, 8), atol=1e-5, rtol=0)


def test_cifar100_reads_the_fine_labels_and_fine_class_names(tmp_path, monkeypatch):
    """torchvision's cifar-100-python layout: train and test hold fine_labels (100 classes) and
    coarse_labels (20 superclasses), meta both name lists; CIFAR-100 is the fine task."""
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    rng = np.random.default_rng(0)
    splits = {}
    for split, n in (("train", 12), ("test", 5)):
        fine = rng.permutation(100)[:n]  # distinct fine labels, none equal to its coarse one below
        fine = np.where(fine // 5 == fine, fine + 50, fine)
        splits[split] = {b"filenames": [b"f"] * n, b"batch_label": split.encode(), b"fine_labels": fine.tolist(),
                         b"coarse_labels": (fine // 5).tolist(),
                         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (d / split).write_bytes(pickle.dumps(splits[split], protocol=2))
    fine_names = [f"fine{i}" for i in range(100)]
    (d / "meta").write_bytes(pickle.dumps({b"fine_label_names": [n.encode() for n in fine_names],
                                           b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]},
                                          protocol=2))
    b = load_data("cifar100", data_dir=tmp_path, batch_size=4, augment=False)
    assert b.info.classes == fine_names
    for loader, split in ((b.train, "train"), (b.test, "test")):
        np.testing.assert_array_equal(loader.labels.numpy(), splits[split][b"fine_labels"])
        np.testing.assert_array_equal(loader.images.numpy(), splits[split][b"data"].reshape(-1, 3, 32, 32))


def test_missing_cifar_error_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match="(?s)--download.*--data-dir.*cifar-100-python"):
        load_data("cifar100", data_dir=tmp_path)


def test_image_truncated_after_scan_is_replaced_by_next_sample_with_one_warning(tmp_path):
    from resnet_lab.data import ImageFileDataset

    good = tmp_path / "good.png"
    rgb(16, 16, (0, 255, 0)).save(good)
    jpg = tmp_path / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpg, quality=95)
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])  # header intact, data cut: passes the scan
    ds = ImageFileDataset([(str(jpg), 0), (str(good), 1)], lambda im: torch.from_numpy(np.asarray(im.convert("RGB")).copy()))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        x, label = ds[0]
        ds[0]
    assert label == 1 and tuple(x[0, 0].tolist()) == (0, 255, 0)
    assert len([w for w in rec if "cut.jpg" in str(w.message)]) == 1


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_truncated_image_is_warned_about_once_per_run_whatever_the_workers(tmp_path, workers):
    """Each epoch's worker processes start from a copy of the dataset; the warning must not repeat.
    (Run as a user runs it: pytest's own warning capture would swallow what worker processes say.)"""
    data = tmp_path / "data"
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for i in range(4):
            rgb(10, 10, (i * 60, 80 if cls == "a" else 160, 0)).save(data / cls / f"{i}.png")
    jpg = data / "a" / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpg, quality=95)
    jpg.write_bytes(jpg.read_bytes()[: jpg.stat().st_size // 2])  # passes the scan, fails to decode
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "resnet_lab", "train", "--model", "resnet8", "--dataset", "folder",
                           "--data-dir", str(data), "--image-size", "8", "--epochs", "3", "--batch-size", "4",
                           "--workers", workers, "--no-progress", "--device", "cpu", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("cannot decode") == 1, done.stderr


def test_folder_transforms_survive_pickling_and_worker_processes(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            rgb(10, 10, (i * 80, 0, 0)).save(tmp_path / cls / f"{i}.png")
    b = load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=1, val_fraction=0.34)
    pickle.dumps(b.train.dataset)  # "spawn" workers (macOS, Windows) pickle the dataset
    batches = list(b.train)
    assert len(batches) == len(b.train) == 2 and all(x.shape == (2, 3, 10, 10) for x, _ in batches)


@pytest.mark.parametrize("flip", [True, False])
def test_a_folders_training_images_are_mirrored_at_random_only_with_the_flip_on(tmp_path, flip):
    """The train pipeline load_data builds for a folder, against torchvision's RandomResizedCrop
    alone drawn from the same seed (the crop's draws come first in the pipeline): each output is
    that crop or its mirror, the mirror about half the time with flip=True and never with
    flip=False. The image has no mirror symmetry, so a mirror cannot pass for the crop."""
    from torchvision.transforms import v2

    img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 12, 3), dtype=np.uint8))
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            img.save(tmp_path / cls / f"{i}.png")
    b = load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=0, image_size=8, flip=flip, val_fraction=0.34)
    pipeline = b.train.dataset.transform
    crop = v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(8, antialias=True), v2.ToDtype(torch.float32, scale=True),
                       v2.Normalize(list(b.info.mean), list(b.info.std))])
    mirrored = []
    for seed in range(60):
        torch.manual_seed(seed)
        out = pipeline(img)
        torch.manual_seed(seed)
        ref = crop(img)
        assert not torch.equal(ref, ref.flip(-1))
        assert torch.equal(out, ref) or torch.equal(out, ref.flip(-1)), seed
        mirrored.append(torch.equal(out, ref.flip(-1)))
    assert (15 <= sum(mirrored) <= 45) if flip else not any(mirrored)


def test_streaming_loader_resumes_mid_epoch_with_the_same_remaining_batches(tmp_path):
    for cls in ("a", "b", "c"):
        (tmp_path / cls).mkdir()
        for i in range(4):
            rgb(8, 8, (i * 60, 0, 0)).save(tmp_path / cls / f"{i}.png")
    kw = dict(data_dir=tmp_path, batch_size=2, num_workers=0, augment=False, val_fraction=0.25, seed=9)
    first = load_data("folder", **kw).train
    first.set_epoch(3)
    it = iter(first)
    next(it)
    state = first.state_dict()
    rest = [(x.clone(), y.clone()) for x, y in it]
    again = load_data("folder", **kw).train
    again.load_state_dict(state)
    resumed = list(again)
    assert state == {"epoch": 3, "position": 1} and len(rest) == len(resumed) == len(first) - 1 == 3
    for (xa, ya), (xb, yb) in zip(rest, resumed):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def write_cifar10_dir(root: Path, **replace) -> Path:
    """cifar-10-batches-py with 4 images per batch, then the named files (``data_batch_3``,
    ``batches.meta``, ...) replaced by the given objects, pickled as they are (bytes: written as
    they are, a pickle made with another protocol)."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    files = {f"data_batch_{i}": cifar_batch(4, i) for i in range(1, 6)}
    files["test_batch"] = cifar_batch(4, 9)
    files["batches.meta"] = {b"label_names": CIFAR10_NAMES}
    files.update(replace)
    for name, obj in files.items():
        (d / name).write_bytes(obj if isinstance(obj, bytes) else pickle.dumps(obj, protocol=2))
    return root


def test_cifar10_as_gray_is_normalized_with_the_gray_images_statistics(tmp_path, monkeypatch):
    """in_channels=1 turns CIFAR's RGB into gray (ITU-R 601-2 luma, convert_channels' docstring) and
    normalizes with the statistics of those gray training images: recomputed here in float64 from the
    pickled rows (one mean and one population std, to channel_stats' 4 decimals)."""
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    root = write_cifar10_dir(tmp_path)
    rows = np.concatenate([cifar_batch(4, i)[b"data"] for i in range(1, 6)]).reshape(-1, 3, 1024).astype(np.float64)
    gray = np.round(np.tensordot([0.299, 0.587, 0.114], rows, axes=([0], [1]))) / 255.0
    b = load_data("cifar10", data_dir=root, in_channels=1, batch_size=4, device="cpu", augment=False)
    assert b.info.input_size == (1, 32, 32) and next(iter(b.train))[0].shape == (4, 1, 32, 32)
    assert b.info.mean == pytest.approx((gray.mean(),), abs=6e-5)
    assert b.info.std == pytest.approx((gray.std(),), abs=6e-5)


def with_entry(batch: dict, key: bytes, value) -> dict:
    return {**batch, key: value}


@pytest.mark.parametrize("replace, bad_file, match", [
    ({"data_batch_3": with_entry(cifar_batch(4, 3), b"labels", [0, 10, 2, 3])}, "data_batch_3",
     r"has label 10, expected 0\.\.9 \(batches\.meta names 10 classes\)"),
    ({"test_batch": with_entry(cifar_batch(4, 3), b"labels", [0, -1, 2, 3])}, "test_batch",
     r"has label -1, expected 0\.\.9"),
    ({"batches.meta": {b"label_names": CIFAR10_NAMES[:5]},
      "data_batch_1": with_entry(cifar_batch(4, 1), b"labels", [0, 1, 7, 2])},
     "data_batch_1", r"has label 7, expected 0\.\.4 \(batches\.meta names 5 classes\)"),
    ({"batches.meta": {b"num_cases_per_batch": 4}}, "batches.meta", r"lacks the entries \['label_names'\]"),
    ({"data_batch_4": [1, 2, 3]}, "data_batch_4", r"holds a pickled list, not the dict"),
    ({"batches.meta": ["a"] * 10}, "batches.meta", r"holds a pickled list, not the dict"),
    ({"data_batch_2": with_entry(cifar_batch(4, 2), b"labels", [0, 1, 2])}, "data_batch_2",
     r"has 4 images but labels of shape \(3,\), expected \(4,\)"),
    ({"data_batch_1": with_entry(cifar_batch(4, 1), b"data", np.full((4, 3072), 300, np.int64))}, "data_batch_1",
     r"data are int64 from 300 to 300, expected pixel values 0\.\.255"),
    # 256 is the first value a uint8 cannot hold (it would wrap to 0): refused as 300 is
    ({"data_batch_1": with_entry(cifar_batch(4, 1), b"data", np.full((4, 3072), 256, np.int64))}, "data_batch_1",
     r"data are int64 from 256 to 256, expected pixel values 0\.\.255"),
    # class names Python 3 wrote as bytes that are not UTF-8: damage, as everywhere else in the file
    ({"batches.meta": {b"label_names": [b"b\xe9", *CIFAR10_NAMES[1:]]}}, "batches.meta",
     r"label_names\[0\] is b'b\\xe9', not UTF-8 text"),
    # a str name with a lone surrogate (second review of 2026-12-06: it trained and printed as "b\ufffd")
    ({"batches.meta": {b"label_names": ["b\udce9", *CIFAR10_NAMES[1:]]}}, "batches.meta",
     r"label_names\[0\] is 'b\\udce9', not UTF-8 text"),
    # a key that is not UTF-8 is not the entry it should be
    ({"data_batch_2": {b"\xe9ata": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 3]}}, "data_batch_2",
     r"lacks the entries \['data'\] of a CIFAR batch \(it has \['\\\\xe9ata', 'labels'\]\)"),
    ({"batches.meta": {b"label_names": [b"airplane"]}}, "batches.meta",  # one name: no classifier
     r"label_names is \[b'airplane'\], expected a list of class names"),
    ({"batches.meta": {b"label_names": [None] * 10}}, "batches.meta",
     r"label_names\[0\] is None, expected a non-empty class name on one line"),
    ({"batches.meta": {b"label_names": list(range(10))}}, "batches.meta",
     r"label_names\[0\] is 0, expected a non-empty class name on one line"),
    # (protocol 3: protocol 2 pickles b"" as a call to bytes, which the unpickler refuses)
    ({"batches.meta": pickle.dumps({b"label_names": [b""] * 10}, protocol=3)}, "batches.meta",
     r"label_names\[0\] is b'', expected a non-empty class name on one line"),
    ({"batches.meta": {b"label_names": [*CIFAR10_NAMES[:3], b"c\nat", *CIFAR10_NAMES[4:]]}}, "batches.meta",
     r"label_names\[3\] is b'c\\nat', expected a non-empty class name on one line"),
    ({"batches.meta": {b"label_names": [b"a"] * 10}}, "batches.meta",
     r"label_names names 'a' twice \(at 0 and 1\), expected distinct class names"),
    ({"batches.meta": {b"label_names": [*CIFAR10_NAMES[:9], "airplane"]}}, "batches.meta",  # bytes and str alike
     r"label_names names 'airplane' twice \(at 0 and 9\)"),
    ({"data_batch_5": pickle.dumps({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}, protocol=3)},
     "data_batch_5", r"holds no images \(data has shape \(0, 3072\)\)"),
    # docs/DATA.md: "data must be (N, 3072) values in 0..255": a row of 3000 values is no 3x32x32 image
    ({"data_batch_3": with_entry(cifar_batch(4, 3), b"data", np.zeros((4, 3000), np.uint8))}, "data_batch_3",
     r"data has shape \(4, 3000\), expected \(N, 3072\)"),
    # below 0 as above 255: a cast to uint8 would wrap -1 to 255
    ({"data_batch_1": with_entry(cifar_batch(4, 1), b"data", np.full((4, 3072), -1, np.int64))}, "data_batch_1",
     r"data are int64 from -1 to -1, expected pixel values 0\.\.255"),
    # floats (a copy scaled to 0..1) are no pixel values, though within 0..255: the cast would floor 0.25 to 0
    ({"data_batch_2": with_entry(cifar_batch(4, 2), b"data", np.full((4, 3072), 0.25))}, "data_batch_2",
     r"data are float64 from 0\.25 to 0\.25, expected pixel values 0\.\.255"),
    # labels must be integers: 1.5 names no class, and a cast would floor it to 1 without a word
    ({"test_batch": with_entry(cifar_batch(4, 9), b"labels", [0.0, 1.5, 2.0, 3.0])}, "test_batch",
     r"labels are float64, expected integers 0\.\.9"),
    # a blank name shows as no class at all, as b"" does
    ({"batches.meta": {b"label_names": [*CIFAR10_NAMES[:2], b"  ", *CIFAR10_NAMES[3:]]}}, "batches.meta",
     r"label_names\[2\] is b'  ', expected a non-empty class name on one line"),
    # a column of labels has one per image too, but would train as (N, 1) targets
    ({"data_batch_4": with_entry(cifar_batch(4, 4), b"labels", [[0], [1], [2], [3]])}, "data_batch_4",
     r"has 4 images but labels of shape \(4, 1\), expected \(4,\)"),
])
def test_cifar_refuses_malformed_batches_and_meta_with_one_line_naming_the_file(
    tmp_path, monkeypatch, replace, bad_file, match
):
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    root = write_cifar10_dir(tmp_path, **replace)
    with pytest.raises(ValueError, match=match) as e:
        load_data("cifar10", data_dir=root, batch_size=2)
    msg = str(e.value)
    assert str(root / "cifar-10-batches-py" / bad_file) in msg and "get it again" in msg and "\n" not in msg


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_cifar_batches_pickled_with_any_protocol_load_exactly(tmp_path, monkeypatch, protocol):
    """Protocol 5 (Python 3.14's default) pickles an array through numpy's _frombuffer, not _reconstruct."""
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    batches = [cifar_batch(4, i) for i in range(6)]
    for name, batch in zip([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], batches):
        (d / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": CIFAR10_NAMES}, protocol=protocol))
    b = load_data("cifar10", data_dir=tmp_path, batch_size=2, augment=False)
    ref = np.concatenate([bt[b"data"] for bt in batches[:5]]).reshape(-1, 3, 32, 32)
    np.testing.assert_array_equal(b.train.images.numpy(), ref)
    np.testing.assert_array_equal(b.test.labels.numpy(), batches[5][b"labels"])


def test_cifar_data_given_as_int64_within_0_to_255_still_loads_exactly(tmp_path, monkeypatch):
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    wide = cifar_batch(4, 1)
    wide[b"data"] = wide[b"data"].astype(np.int64)
    b = load_data("cifar10", data_dir=write_cifar10_dir(tmp_path, data_batch_1=wide), batch_size=2, augment=False)
    np.testing.assert_array_equal(b.train.images[:4].numpy().reshape(4, -1), wide[b"data"])


def test_a_folder_given_under_home_with_a_tilde_is_found_as_cifar_is(tmp_path, monkeypatch):
    home = tmp_path / "home"
    for cls in ("a", "b"):
        (home / "pets" / cls).mkdir(parents=True)
        for i in range(3):
            rgb(8, 8, (i * 60, 0, 0)).save(home / "pets" / cls / f"{i}.png")
    monkeypatch.setenv("HOME", str(home))  # what `--data-dir=~/pets` hands over: the shell expands no ~ there
    by_tilde = load_data("folder", data_dir="~/pets", batch_size=2, num_workers=0, val_fraction=0.34)
    by_path = load_data("folder", data_dir=home / "pets", batch_size=2, num_workers=0, val_fraction=0.34)
    assert by_tilde.info.classes == by_path.info.classes == ["a", "b"]
    assert (by_tilde.num_train, by_tilde.num_test) == (by_path.num_train, by_path.num_test) == (4, 2)


def test_folder_skips_and_reports_a_dangling_symlink_instead_of_failing(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            rgb(8, 8, (i * 60, 0, 0)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "a" / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        b = load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=0, val_fraction=0.34)
    msgs = [str(w.message) for w in rec if issubclass(w.category, BadImageWarning)]
    assert len(msgs) == 1 and "1 unreadable" in msgs[0]
    assert f"{str(tmp_path / 'a' / 'gone.png')!r} (broken symbolic link to {tmp_path / 'nowhere.png'})" in msgs[0]
    assert b.num_train + b.num_test == 6


def test_folder_follows_a_symlinked_subfolder_once_and_survives_a_symlink_loop(tmp_path):
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    elsewhere.mkdir()
    for i in range(4):
        rgb(8, 8, (0, i * 60, 0)).save(elsewhere / f"x{i}.png")
    for cls in ("a", "b"):
        (data / cls).mkdir(parents=True)
        for i in range(2):
            rgb(8, 8, (i * 60, 0, 0)).save(data / cls / f"{i}.png")
    (data / "a" / "more").symlink_to(elsewhere, target_is_directory=True)   # photos kept elsewhere: count
    (data / "a" / "again").symlink_to(elsewhere, target_is_directory=True)  # the same folder twice: once
    (data / "b" / "loop").symlink_to(data / "b", target_is_directory=True)  # a cycle: must end
    b = load_data("folder", data_dir=data, batch_size=2, num_workers=0, val_fraction=0.34)
    samples = b.train.dataset.samples + b.test.dataset.samples
    by_class = {c: sorted(Path(p).name for p, y in samples if y == i) for i, c in enumerate(b.info.classes)}
    assert by_class == {"a": ["0.png", "1.png", "x0.png", "x1.png", "x2.png", "x3.png"], "b": ["0.png", "1.png"]}


def test_gray_imagenet_mean_is_the_luma_of_imagenets_channel_means(tmp_path):
    """A 1-channel folder model is normalized with ImageNet's gray mean; the loader makes gray with
    PIL's ITU-R 601-2 luma, which is linear, so the mean is the luma of the channel means: checked
    in float64 and against PIL's own conversion of the ImageNet mean colour."""
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(2):
            rgb(8, 8, (i * 60, 0, 0)).save(tmp_path / cls / f"{i}.png")
    (gray_mean,) = load_data("folder", data_dir=tmp_path, in_channels=1, batch_size=2, num_workers=0).info.mean
    rgb_mean = (0.485, 0.456, 0.406)  # ImageNet (torchvision)
    assert gray_mean == pytest.approx(0.299 * rgb_mean[0] + 0.587 * rgb_mean[1] + 0.114 * rgb_mean[2], abs=5e-4)
    pil_gray = np.asarray(rgb(1, 1, tuple(round(255 * m) for m in rgb_mean)).convert("L"))[0, 0] / 255
    assert abs(gray_mean - pil_gray) < 1 / 255


@pytest.mark.parametrize("link", ["parent", "sibling_class", "file_in_other_class"])
def test_a_link_that_puts_an_image_in_two_classes_is_refused_naming_it(tmp_path, link):
    """A link out of a class folder gave the same images two labels, and some were held out for
    testing under one label while training under the other (the docs said loops add nothing twice)."""
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            rgb(8, 8, (i * 60, 0, 0)).save(tmp_path / cls / f"{i}.png")
    if link == "parent":
        (tmp_path / "a" / "up").symlink_to(tmp_path, target_is_directory=True)
    elif link == "sibling_class":
        (tmp_path / "a" / "sib").symlink_to(tmp_path / "b", target_is_directory=True)
    else:
        (tmp_path / "a" / "copy.png").symlink_to(tmp_path / "b" / "0.png")
    with pytest.raises(ValueError, match=r"image\(s\) in .* are in two classes through symbolic links, e.g. "
                                         r".*/a/\S+ \(class 'a'\) and .*/b/0\.png \(class 'b'\) are one file"):
        load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=0)


def test_two_links_to_one_image_in_its_own_class_count_it_once(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            rgb(8, 8, (i * 60, 0, 0)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "a" / "again.png").symlink_to(tmp_path / "a" / "0.png")
    b = load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=0)
    assert b.num_train + b.num_test == 6


# Damaged bytes can make a pickle call an allowed function with bad arguments: a bad encoding name
# (LookupError) or a number where it wants text (TypeError). Both escaped as unnamed errors.
@pytest.mark.parametrize("raw, error", [(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x06\x00\x00\x00lGtin1\x86R.",
                                         "LookupError"),
                                        (b"\x80\x02c_codecs\nencode\nK\x05X\x06\x00\x00\x00latin1\x86R.", "TypeError")])
def test_a_damaged_cifar_pickle_that_fails_in_any_way_is_one_error_naming_the_file(tmp_path, monkeypatch, raw, error):
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    root = write_cifar10_dir(tmp_path)
    meta = root / "cifar-10-batches-py" / "batches.meta"
    meta.write_bytes(raw)
    with pytest.raises(ValueError, match=rf"{meta} is not a readable CIFAR batch \({error}: .*get it again") as e:
        load_data("cifar10", data_dir=root, batch_size=2)
    assert "\n" not in str(e.value)


def test_a_cifar_batch_the_system_cannot_read_keeps_the_systems_error(tmp_path, monkeypatch):
    # read_cifar raises ValueError ("delete it and get it again") for a damaged file only: a file the
    # system refuses to read (permissions, a disk error) is not damaged, and deleting it would not help
    import resnet_lab.data.sources as ds

    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    root = write_cifar10_dir(tmp_path)
    batch = root / "cifar-10-batches-py" / "data_batch_2"

    def denied(path, *args, **kwargs):  # root reads any file whatever its mode: refuse it here instead
        if Path(path) == batch:
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(ds, "open", denied, raising=False)
    with pytest.raises(PermissionError, match=f"Permission denied: '{re.escape(str(batch))}'"):
        load_data("cifar10", data_dir=root, batch_size=2)


class _MakesADirectory:
    """Pickles as a call to os.mkdir: what a crafted CIFAR file could run on loading with pickle's defaults."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def test_a_cifar_batch_that_would_run_code_is_refused_unrun(tmp_path, monkeypatch):
    """docs/DATA.md: the batches are read with a restricted unpickler (arrays, lists, dicts, bytes)."""
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    ran = tmp_path / "ran"
    root = write_cifar10_dir(tmp_path / "c", test_batch=pickle.dumps({b"data": _MakesADirectory(ran), b"labels": []}))
    with pytest.raises(ValueError, match=r"test_batch is not a readable CIFAR batch \(UnpicklingError: refusing to "
                                         r"unpickle (posix|nt)\.mkdir") as e:
        load_data("cifar10", data_dir=root, batch_size=2)
    assert not ran.exists() and "\n" not in str(e.value)


def test_a_stray_key_that_is_not_utf8_beside_the_entries_is_ignored_as_other_extra_entries_are(tmp_path, monkeypatch):
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    batch = {**cifar_batch(4, 1), b"\xe9xtra": b"x"}
    b = load_data("cifar10", data_dir=write_cifar10_dir(tmp_path, data_batch_1=batch), batch_size=2, augment=False)
    np.testing.assert_array_equal(b.train.images[:4].numpy(), batch[b"data"].reshape(4, 3, 32, 32))
    assert b.info.classes == [n.decode() for n in CIFAR10_NAMES]


@pytest.mark.parametrize("given", ["parent", "folder"])
@pytest.mark.parametrize("damage, lacks", [
    (("test_batch",), "test_batch"),
    (("data_batch_3", "test_batch"), "data_batch_3, test_batch"),
    (("batches.meta",), "batches.meta"),
])
def test_a_cifar_folder_lacking_files_names_the_files_it_lacks(tmp_path, monkeypatch, given, damage, lacks):
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    root = write_cifar10_dir(tmp_path / "b2")
    folder = root / "cifar-10-batches-py"
    for f in damage:
        (folder / f).unlink()
    with pytest.raises(DataNotFoundError, match=rf"; {folder} lacks {lacks}\)\. Get it one of these ways"):
        load_data("cifar10", data_dir=root if given == "parent" else folder, batch_size=2)


def test_a_cifar_file_that_is_a_folder_is_named_as_such(tmp_path, monkeypatch):
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    root = write_cifar10_dir(tmp_path / "b2")
    folder = root / "cifar-10-batches-py"
    (folder / "data_batch_2").unlink()
    (folder / "data_batch_2").mkdir()
    with pytest.raises(DataNotFoundError, match=rf"{folder} lacks data_batch_2 \(a folder, not a file\)\)"):
        load_data("cifar10", data_dir=root, batch_size=2)


def test_a_partial_cifar_folder_in_resnet_lab_data_is_named_too(tmp_path, monkeypatch):
    root = write_cifar10_dir(tmp_path / "env")
    folder = root / "cifar-10-batches-py"
    (folder / "test_batch").unlink()
    monkeypatch.setenv("RESNET_LAB_DATA", str(root))
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match=rf"cifar10 not found \({folder} lacks test_batch\)\. Get it"):
        load_data("cifar10", batch_size=2)


def py2_str_pickle(d: dict[bytes, list[bytes]]) -> bytes:
    """A dict of lists pickled as Python 2's cPickle did CIFAR's files: every key and name a Python 2
    str (SHORT_BINSTRING), not Python 3's bytes (written opcode by opcode, from pickletools' table)."""
    s = lambda b: b"U" + bytes([len(b)]) + b  # noqa: E731
    out = b"\x80\x02}("
    for k, names in d.items():
        out += s(k) + b"](" + b"".join(s(n) for n in names) + b"e"
    return out + b"u."


def test_class_names_python_2_pickled_as_str_are_read_as_latin_1(tmp_path, monkeypatch):
    # docs/DATA.md: "names that Python 2 pickled as str are read as Latin-1, as the rest of such a file is"
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    names = [b"caf\xe9", *CIFAR10_NAMES[1:]]
    meta = py2_str_pickle({b"label_names": names})
    import pickletools  # the reference: what Python's own disassembler reads in those bytes

    assert [a for op, a, _ in pickletools.genops(meta) if op.name == "SHORT_BINSTRING"][:2] == ["label_names", "caf\xe9"]
    b = load_data("cifar10", data_dir=write_cifar10_dir(tmp_path, **{"batches.meta": meta}), batch_size=2)
    assert b.info.classes == ["café"] + [n.decode() for n in CIFAR10_NAMES[1:]]


@pytest.mark.parametrize("link", ["class_folder", "one_file"])
def test_a_val_folder_linked_to_training_images_is_refused_counting_them(tmp_path, link):
    """_refuse_shared_images: val/a -> train/a (or one linked file) would measure test accuracy on
    images the model trained on; hand count of the shared images out of val/'s 4 + 4."""
    write_image_folder(tmp_path / "train", n=4)
    write_image_folder(tmp_path / "val", classes=("b",), n=4, seed=1)
    if link == "class_folder":
        (tmp_path / "val" / "a").symlink_to(tmp_path / "train" / "a", target_is_directory=True)
    else:
        write_image_folder(tmp_path / "val", classes=("a",), n=3, seed=2)
        (tmp_path / "val" / "a" / "x.png").symlink_to(tmp_path / "train" / "a" / "2.png")
    shared = 4 if link == "class_folder" else 1
    with pytest.raises(ValueError, match=rf"^{shared} of the 8 test image\(s\) in \S+/val are training images of "
                                         r"\S+/train through symbolic links, e.g. \S+/val/a/\S+ is \S+/train/a/\S+: "
                                         r".*remove the link\(s\)"):
        load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=0)
