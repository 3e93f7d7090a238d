"""load_data refuses input that would train on the wrong thing or on nothing, with one error that
names the bad value and the way out: an explicit data_dir without the files (no silent fallback to
another copy), a one-class folder, --subset beyond the data, tiny image sizes, batch sizes below 1.

Fixtures are written here byte by byte (IDX from the format description, CIFAR as plain pickles).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnet_lab.data.sources as ds
from resnet_lab.data import DataNotFoundError, load_data
from support import write_fmnist

def write_cifar10(root: Path, n: int = 4, green: int | None = None) -> Path:
    """torchvision's cifar-10-batches-py layout with n random images per batch (each row R, G, B
    planes of 1024 values), every green value ``green`` when it is given."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"labels": list(rng.integers(0, 10, n)), b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        if green is not None:
            batch[b"data"][:, 1024:2048] = green
        (d / name).write_bytes(pickle.dumps(batch, protocol=2))
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}, protocol=2))
    return root


@pytest.fixture
def copies_elsewhere(tmp_path, monkeypatch):
    """Complete datasets in every place of the search order except the explicit folder: in
    $RESNET_LAB_DATA (Fashion-MNIST and CIFAR-10), the Debian path and the cache."""
    env = tmp_path / "env"
    write_fmnist(env)
    write_cifar10(env)
    monkeypatch.setenv("RESNET_LAB_DATA", str(env))
    monkeypatch.setattr(ds, "DEBIAN_FASHION_MNIST", write_fmnist(tmp_path / "debian"))
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    write_fmnist(tmp_path / "cache" / "FashionMNIST" / "raw")
    write_cifar10(tmp_path / "cache")
    return tmp_path


@pytest.mark.parametrize("kind", ["empty", "missing"])
def test_explicit_data_dir_without_fashion_mnist_is_an_error_naming_it_and_every_way(copies_elsewhere, kind):
    given = copies_elsewhere / "given"
    if kind == "empty":
        given.mkdir()
    with pytest.raises(FileNotFoundError) as e:  # DataNotFoundError is one
        load_data("fashion-mnist", data_dir=given, batch_size=2)
    assert isinstance(e.value, DataNotFoundError)
    msg = str(e.value)
    assert f"in --data-dir {given}" in msg
    assert {"empty": "no folder below has all four", "missing": "does not exist"}[kind] in msg
    # docs/DATA.md: with --data-dir DIR, "DIR is the only place looked at": the message says so, since
    # the copies elsewhere (copies_elsewhere) would be found without it
    assert "An explicit --data-dir is the only place looked at; without it $RESNET_LAB_DATA" in msg
    for way in ("--data-dir DIR", "t10k-labels-idx1-ubyte[.gz]", "RESNET_LAB_DATA",
                "apt-get install dataset-fashion-mnist", "--download"):
        assert way in msg, way


@pytest.mark.parametrize("layout", ["", "fashion-mnist", "FashionMNIST/raw"])
def test_a_data_dir_lacking_one_idx_file_names_the_file_it_lacks(copies_elsewhere, layout):
    folder = write_fmnist(copies_elsewhere / "given" / layout)
    (folder / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataNotFoundError, match=rf"no folder below has all four IDX files; {folder} lacks "
                                                r"train-labels-idx1-ubyte\[\.gz\]\)"):
        load_data("fashion-mnist", data_dir=copies_elsewhere / "given", batch_size=2)


def test_training_images_of_one_value_are_refused_before_normalizing_divides_by_their_zero_std(copies_elsewhere, capsys):
    """Every pixel 7 of 255: the std the loader computes is 0, and normalizing divided by it (the
    loss was NaN at the first step, blamed on the learning rate). torchvision's Normalize refuses
    a zero std too; given statistics (DataConfig's mean/std) still load such images."""
    from resnet_lab.cli import main

    folder = write_fmnist(copies_elsewhere / "flat", n=20)
    with pytest.raises(ValueError, match=r"channel 0 of the training images .*7/255.*std is 0") as e:
        load_data("fashion-mnist", data_dir=folder, batch_size=2)
    assert "mean=" in str(e.value) and "std=" in str(e.value)  # the way out, in Python
    b = load_data("fashion-mnist", data_dir=folder, batch_size=2, augment=False, mean=(0.5,), std=(0.25,))
    x, _ = next(iter(b.train))
    assert torch.allclose(x, torch.full_like(x, (7 / 255 - 0.5) / 0.25))
    assert main(["train", "--model", "resnet8", "--dataset", "fashion-mnist", "--data-dir", str(folder), "--epochs", "1",
                 "--batch-size", "4", "--no-progress", "--out", str(copies_elsewhere / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "std is 0" in err and "Traceback" not in err
    assert not (copies_elsewhere / "run").exists()


def test_a_flat_channel_is_refused_naming_that_channel_and_its_value(tmp_path):
    """CIFAR images whose green plane is 77 everywhere (red and blue random): the error names channel
    1 and 77/255, not the first channel's or the first pixel's value."""
    root = write_cifar10(tmp_path, n=6, green=77)
    with pytest.raises(ValueError, match=r"^channel 1 of the training images is 77/255 in \(nearly\) every pixel"):
        load_data("cifar10", data_dir=root, batch_size=2)


def test_explicit_data_dir_with_fashion_mnist_still_loads_it_in_every_layout(copies_elsewhere):
    for sub in ("", "fashion-mnist", "FashionMNIST/raw"):
        root = copies_elsewhere / f"given{len(sub)}"
        write_fmnist(root / sub if sub else root, n=20, seed=0)
        b = load_data("fashion-mnist", data_dir=root, batch_size=2, augment=False)
        assert b.num_train == 20 and b.info.source == str(root / sub if sub else root)


def test_download_with_explicit_data_dir_fills_that_folder(copies_elsewhere, monkeypatch):
    got = []

    def fake_download(root: Path) -> None:  # stands in for torchvision's FashionMNIST(download=True)
        got.append(root)
        write_fmnist(root / "FashionMNIST" / "raw", n=30, seed=0)

    monkeypatch.setattr(ds, "_download_fashion_mnist", fake_download)
    given = copies_elsewhere / "given"
    b = load_data("fashion-mnist", data_dir=given, download=True, batch_size=2)
    assert got == [given] and b.num_train == 30
    assert b.info.source == str(given / "FashionMNIST" / "raw")


def test_explicit_data_dir_without_cifar_is_an_error_not_the_env_copy(copies_elsewhere):
    given = copies_elsewhere / "given"
    given.mkdir()
    with pytest.raises(DataNotFoundError) as e:
        load_data("cifar10", data_dir=given, batch_size=2)
    msg = str(e.value)
    assert f"in --data-dir {given}" in msg and "cifar-10-batches-py" in msg
    assert "lacks" not in msg  # docs/DATA.md: only a folder with some of the files but not all is named so
    assert "--download" in msg
    assert "An explicit --data-dir is the only place looked at; without it $RESNET_LAB_DATA" in msg
    # without data_dir the search order still finds the copy in $RESNET_LAB_DATA
    assert load_data("cifar10", batch_size=2).num_train == 5 * 4


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "cifar100", "folder"])
def test_a_data_dir_that_is_a_file_is_refused_in_one_line_before_any_search(copies_elsewhere, name):
    """No dataset is read from a file, nor downloaded into one: the not-found message offered
    --download into FILE/FashionMNIST/raw, which cannot work."""
    given = copies_elsewhere / "given.zip"
    given.write_text("not a folder")
    before = sorted(copies_elsewhere.rglob("*"))
    with pytest.raises(NotADirectoryError) as e:
        load_data(name, data_dir=given, download=name != "folder", batch_size=2)
    assert str(e.value) == (f"data_dir (--data-dir) {given} is a file, not a folder: give the folder that holds the "
                            "dataset" + (", or leave it out (None) to search the usual places" if name != "folder" else ""))
    assert sorted(copies_elsewhere.rglob("*")) == before and given.read_text() == "not a folder"  # nothing written


def test_folder_data_dir_that_is_a_file_is_not_a_directory_error(tmp_path):
    f = tmp_path / "photos.zip"
    f.write_bytes(b"PK\x03\x04")
    with pytest.raises(NotADirectoryError, match=f"{f} is a file"):
        load_data("folder", data_dir=f, num_workers=0)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nope'} does not exist"):
        load_data("folder", data_dir=tmp_path / "nope", num_workers=0)


def save_images(folder: Path, n: int, size: int = 10) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", (size, size), (i * 30, 0, 0)).save(folder / f"{i}.png")


@pytest.mark.parametrize("layout", ["flat", "train_val"])
def test_folder_with_one_class_is_refused_naming_the_folder_and_the_class(tmp_path, layout):
    root = tmp_path / "data"
    if layout == "flat":
        save_images(root / "cats", 4)
        where = root
    else:
        save_images(root / "train" / "cats", 4)
        save_images(root / "val" / "cats", 2)
        where = root / "train"
    with pytest.raises(ValueError, match=f"{where} has one class sub-folder, 'cats'; a classifier needs at least 2"):
        load_data("folder", data_dir=root, num_workers=0)


def test_selecting_a_single_class_is_refused():
    with pytest.raises(ValueError, match=r"classes=\[3\] keeps only one class \('class3'\).*at least 2"):
        load_data("fake", classes=[3])


def test_subset_larger_than_the_training_data_is_refused_naming_both_numbers():
    # fake: 512 training images; the old code quietly trained on all 512
    with pytest.raises(ValueError, match=r"--subset 513 is more than the 512 training images of fake; drop --subset"):
        load_data("fake", subset=513)
    assert load_data("fake", subset=512, batch_size=64).num_train == 512  # all of it is still fine
    with pytest.raises(ValueError, match=r"--subset 40 is more than the 30 .* after per_class=3"):
        load_data("fake", per_class=3, subset=40)


def test_subset_larger_than_a_folder_is_refused(tmp_path):
    save_images(tmp_path / "a", 3)
    save_images(tmp_path / "b", 3)
    with pytest.raises(ValueError, match=f"--subset 50 is more than the 4 training images of image folder {tmp_path}"):
        load_data("folder", data_dir=tmp_path, subset=50, num_workers=0, val_fraction=0.34)


@pytest.mark.parametrize("n", [0, -5])
def test_subset_below_one_is_refused_with_the_flag(n):
    with pytest.raises(ValueError, match=rf"subset \(--subset\) must be a positive number of training images, got {n}"):
        load_data("fake", subset=n)


@pytest.mark.parametrize("size", [-3, 0, 1, 3])
def test_image_size_below_4_is_refused(size):
    with pytest.raises(ValueError, match=rf"image_size \(--image-size\) must be at least 4 px, got {size}"):
        load_data("fake", image_size=size)


def test_image_size_4_works_and_a_folder_of_tinier_images_is_upscaled_to_4(tmp_path):
    b = load_data("fake", image_size=4, batch_size=16)
    assert b.info.input_size == (3, 4, 4) and next(iter(b.train))[0].shape == (16, 3, 4, 4)
    save_images(tmp_path / "a", 3, size=2)
    save_images(tmp_path / "b", 3, size=2)
    f = load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=0, augment=False, val_fraction=0.34)
    assert f.info.input_size == (3, 4, 4) and next(iter(f.train))[0].shape == (2, 3, 4, 4)


@pytest.mark.parametrize("kw, match", [
    (dict(batch_size=0), r"batch_size \(--batch-size\) must be at least 1, got 0"),
    (dict(batch_size=-4), r"batch_size \(--batch-size\) must be at least 1, got -4"),
    (dict(eval_batch_size=0), r"eval_batch_size \(evaluate's --batch-size\) must be at least 1 \(or None for batch_size\), got 0"),
])
def test_batch_sizes_below_one_are_refused(kw, match):
    with pytest.raises(ValueError, match=match):
        load_data("fake", **kw)


def test_a_failed_download_puts_the_reason_on_the_first_line(copies_elsewhere, monkeypatch):
    """torchvision's error spans lines (the mirrors it tried); folded into the first line of ours,
    so the message still reads: what failed and why, then the ways to get the data."""
    def offline(root: Path) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried http://a/, got:\n<urlopen error no network>\n")

    monkeypatch.setattr(ds, "_download_fashion_mnist", offline)
    with pytest.raises(DataNotFoundError) as e:
        load_data("fashion-mnist", data_dir=copies_elsewhere / "given", download=True, batch_size=2)
    first, second = str(e.value).splitlines()[:2]
    assert ("download failed: Error downloading train-images-idx3-ubyte.gz: Tried http://a/, got: "
            "<urlopen error no network>") in first
    assert second.startswith("  1. ")


@pytest.mark.parametrize("name,kwargs,flag", [
    ("fake", dict(data_dir="somewhere"), "data_dir (--data-dir)"),
    ("fake", dict(download=True), "download (--download)"),
    ("folder", dict(data_dir="somewhere", download=True), "download (--download)"),
])
def test_data_options_that_would_change_nothing_for_the_dataset_are_refused(name, kwargs, flag):
    from resnet_lab.data import DataConfig

    with pytest.raises(ValueError, match=re.escape(flag) + ".*would change nothing.*leave it out"):
        DataConfig(name, **kwargs)


@pytest.mark.parametrize("name", ["fake", "fashion-mnist", "cifar10"])
def test_val_fraction_for_a_dataset_with_its_own_test_split_is_refused(name):
    from resnet_lab.data import DataConfig

    with pytest.raises(ValueError, match=rf"val_fraction \(--val-fraction 0.3\) holds out part of an image folder as "
                                         rf"its test split; "
                                         rf"{name} has its own test split: leave it out"):
        DataConfig(name, val_fraction=0.3)
    assert DataConfig(name).val_fraction == DataConfig("folder", data_dir="x").val_fraction == 0.1
    assert DataConfig("folder", data_dir="x", val_fraction=0.3).val_fraction == 0.3


@pytest.mark.parametrize("name", ["fake", "fashion-mnist", "cifar10"])
def test_split_seed_for_a_dataset_with_its_own_test_split_is_refused(name):
    """It picks which images of a folder without val/ are held out; elsewhere it changed nothing."""
    from resnet_lab.data import DataConfig

    with pytest.raises(ValueError, match=rf"split_seed 3 picks the images held out of an image folder as its test "
                                         rf"split; {name} has its own test split: leave it out"):
        DataConfig(name, split_seed=3)
    assert DataConfig(name).split_seed == 0
    assert DataConfig("folder", data_dir="x", split_seed=3).split_seed == 3


def test_workers_for_a_dataset_held_in_memory_are_refused_and_folders_default_to_two(tmp_path):
    from resnet_lab.data import DataConfig

    with pytest.raises(ValueError, match=r"num_workers \(--workers\) sets the processes that decode image folders; "
                                         r"fashion-mnist is held in memory and decodes nothing: leave it out"):
        DataConfig("fashion-mnist", num_workers=0)
    assert DataConfig("fashion-mnist").num_workers is None
    assert DataConfig("folder", data_dir=str(tmp_path)).num_workers == 2
    assert DataConfig("folder", data_dir=str(tmp_path), num_workers=0).num_workers == 0


def test_a_failed_cifar_download_says_how_to_go_on_without_internet(tmp_path, monkeypatch):
    """It said only 'downloading cifar10 into DIR failed: <urlopen error ...>': no way out."""
    import torchvision.datasets as tvd

    def offline(**kwargs):
        raise RuntimeError("<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    monkeypatch.setenv("RESNET_LAB_DATA", str(tmp_path / "none"))
    with pytest.raises(DataNotFoundError) as e:
        load_data("cifar10", data_dir=tmp_path / "given", download=True, batch_size=2)
    line = str(e.value)
    assert "\n" not in line and "Name or service not known" in line
    assert f"downloading cifar10 into {tmp_path / 'given'} failed" in line  # read_cifar: "into data_dir when given"
    assert "fetch cifar-10-batches-py/ (data_batch_1" in line and "--data-dir DIR (data_dir=) holding it" in line
