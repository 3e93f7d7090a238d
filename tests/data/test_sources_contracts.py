"""resnet_lab.data.sources against its docstrings and docs/DATA.md, with dataset files written here
(nothing is downloaded): where downloads go, and which folders are looked in."""

from __future__ import annotations

import pytest
import torch

import resnet_lab.data.sources as ds
from resnet_lab.data import DataConfig, find_fashion_mnist, read_fashion_mnist
from support import FakeTorchvisionCifar10, write_fmnist, write_image_folder


@pytest.fixture
def no_locations(tmp_path, monkeypatch):
    """None of the variables that move the data or the cache, HOME in tmp_path, no Debian copy."""
    for var in ("RESNET_LAB_CACHE", "XDG_CACHE_HOME", "RESNET_LAB_DATA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(ds, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    return tmp_path


def test_the_cache_is_resnet_lab_cache_else_xdg_cache_home_else_home_dot_cache(no_locations, monkeypatch):
    # cache_dir's docstring and docs/DATA.md: "$RESNET_LAB_CACHE or $XDG_CACHE_HOME/resnet-lab move it"
    t = no_locations
    assert ds.cache_dir() == t / "home" / ".cache" / "resnet-lab"
    monkeypatch.setenv("XDG_CACHE_HOME", str(t / "xdg"))
    assert ds.cache_dir() == t / "xdg" / "resnet-lab"
    monkeypatch.setenv("RESNET_LAB_CACHE", str(t / "mine"))
    assert ds.cache_dir() == t / "mine"


def test_a_tilde_in_the_data_and_cache_variables_is_the_home_folder(no_locations, monkeypatch):
    # docs/DATA.md lets --data-dir start with ~ "which the shell leaves as it is"; so does a quoted
    # export RESNET_LAB_DATA="~/data": both variables name the folder in $HOME, not a folder called ~
    home = no_locations / "home"
    monkeypatch.setenv("RESNET_LAB_CACHE", "~/mine")
    assert ds.cache_dir() == home / "mine"
    raw = write_fmnist(home / "data" / "FashionMNIST" / "raw")
    monkeypatch.setenv("RESNET_LAB_DATA", "~/data")
    assert find_fashion_mnist(None)["train_images"] == raw / "train-images-idx3-ubyte"


def test_fashion_mnist_in_the_xdg_cache_is_found_without_any_setting(no_locations, monkeypatch):
    # a torchvision download into the cache (docs/DATA.md, place 3) is found again on the next run
    monkeypatch.setenv("XDG_CACHE_HOME", str(no_locations / "xdg"))
    raw = write_fmnist(no_locations / "xdg" / "resnet-lab" / "FashionMNIST" / "raw")
    assert find_fashion_mnist(None) == {k: raw / stem for k, stem in ds.FASHION_MNIST_FILES.items()}


@pytest.mark.parametrize("given", ["parent", "folder"])
def test_an_explicit_cifar_dir_is_searched_as_given_or_as_the_batches_folder_itself(no_locations, given):
    # docs/DATA.md: cifar-10-batches-py/ "in (or directly as) --data-dir DIR, the only place looked at":
    # a DIR that is that folder is searched alone, not for a cifar-10-batches-py/ inside it
    batches = no_locations / "c" / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    (batches / "batches.meta").write_bytes(b"")  # some of the files, not all: not found
    data_dir = batches if given == "folder" else batches.parent
    with pytest.raises(ds.DataNotFoundError) as e:
        ds.read_cifar("cifar10", data_dir)
    searched = str(e.value).split("Searched, in order:\n")[1].splitlines()
    want = [batches] if given == "folder" else [batches, batches.parent]
    assert searched == [f"  - {p} (--data-dir)" for p in want]


def test_read_fashion_mnist_gives_the_documented_dtypes_and_shapes(tmp_path):
    # ImageArrays' docstring: images uint8 (N, C, H, W), labels int64 (N,), as the IDX files hold them
    files = find_fashion_mnist(write_fmnist(tmp_path / "f", n=12, seed=0))
    a = read_fashion_mnist(files)
    for x, y in ((a.train_x, a.train_y), (a.test_x, a.test_y)):
        assert x.dtype == torch.uint8 and x.shape == (12, 1, 28, 28)
        assert y.dtype == torch.int64 and y.tolist() == [i % 10 for i in range(12)]
    # index = label, in the order of the dataset's own labels, as torchvision names them
    from torchvision.datasets import FashionMNIST  # deferred: the reference

    assert a.classes == FashionMNIST.classes


def test_fake_classes_are_told_apart_by_the_nearest_class_mean_on_the_test_split():
    # fake_arrays' docstring: "each class is a smooth random pattern plus noise, so a smoke run can
    # learn something": the class means of the training split, recomputed here in float64, classify
    # the test split far above chance (1/10); data without the pattern would sit at chance
    a = ds.fake_arrays(16, 3, seed=5)
    train, test = a.train_x.double().flatten(1), a.test_x.double().flatten(1)
    means = torch.stack([train[a.train_y == c].mean(0) for c in range(ds.FAKE_CLASSES)])
    nearest = torch.cdist(test, means).argmin(1)
    assert (nearest == a.test_y).double().mean() > 0.9


def test_fake_data_are_the_documented_512_plus_128_images_of_10_classes():
    # docs/DATA.md's table: fake is "512 + 128 random images, 10 classes"
    a = ds.fake_arrays(8, 1, seed=0)
    assert (len(a.train_y), len(a.test_y), len(a.classes)) == (512, 128, 10)
    assert a.train_x.shape == (512, 1, 8, 8) and a.test_x.shape == (128, 1, 8, 8)


def test_read_arrays_refuses_a_folder_dataset_and_names_its_reader(tmp_path):
    # read_arrays' docstring: it reads the in-memory datasets; a folder's files are streamed instead
    config = DataConfig("folder", data_dir=str(write_image_folder(tmp_path / "pets", n=2)), num_workers=0)
    with pytest.raises(ValueError, match=r"folder is not an in-memory dataset; .*\(find_folder_samples\)"):
        ds.read_arrays(config)


def test_fake_data_are_drawn_from_the_seed():
    # docs/DATA.md: seed decides the "fake data": one seed gives the same images, another seed others
    same, again, other = (ds.fake_arrays(8, 1, seed=s) for s in (3, 3, 4))
    assert torch.equal(same.train_x, again.train_x) and torch.equal(same.test_y, again.test_y)
    assert not torch.equal(same.train_x, other.train_x)


def test_a_folder_holding_the_files_itself_wins_over_its_layouts_in_the_documented_order(no_locations):
    # docs/DATA.md: looked for in "DIR, DIR/fashion-mnist, DIR/FashionMNIST/raw", the first complete one winning
    given = no_locations / "given"
    layouts = [given / "FashionMNIST" / "raw", given / "fashion-mnist", given]
    for i, folder in enumerate(layouts):  # the last written is the first documented place
        write_fmnist(folder)
        assert find_fashion_mnist(given)["train_images"].parent == folder, i


def test_the_debian_copy_wins_over_the_download_cache_without_a_setting(no_locations, monkeypatch):
    # docs/DATA.md, without --data-dir: "2. /usr/share/datasets/fashion-mnist ... 3. the download cache"
    monkeypatch.setenv("RESNET_LAB_CACHE", str(no_locations / "cache"))
    cached = write_fmnist(no_locations / "cache" / "FashionMNIST" / "raw")
    assert find_fashion_mnist(None)["test_labels"].parent == cached
    write_fmnist(no_locations / "debian")
    assert find_fashion_mnist(None)["test_labels"].parent == no_locations / "debian"


@pytest.mark.parametrize("given", [True, False])
def test_a_cifar_download_goes_into_data_dir_else_the_cache_and_is_read_from_there(no_locations, monkeypatch, given):
    # read_cifar's docstring: download "into data_dir when given, else into cache_dir()"; what is read
    # is what was downloaded, compared with numpy's reading of the same pickles
    import pickle

    import numpy as np
    import torchvision

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeTorchvisionCifar10)
    monkeypatch.setattr(FakeTorchvisionCifar10, "roots", [])
    root = no_locations / ("given" if given else "home/.cache/resnet-lab")
    a = ds.read_cifar("cifar10", root if given else None, download=True)
    assert FakeTorchvisionCifar10.roots == [(str(root), True)]
    batches = root / "cifar-10-batches-py"
    test = pickle.loads((batches / "test_batch").read_bytes())
    assert a.test_x.numpy().tobytes() == np.asarray(test[b"data"], np.uint8).tobytes()
    assert a.test_y.tolist() == [int(v) for v in test[b"labels"]] and a.train_x.shape == (30, 3, 32, 32)
    assert a.classes == [f"c{i}" for i in range(10)] and a.source == str(batches)


def test_read_arrays_makes_the_fake_data_at_the_configs_size_else_32_px_and_from_its_seed():
    # read_arrays' docstring: "the fake data already at config's image size and channels"; DataConfig: None is 32 px
    for size, want in ((16, 16), (None, 32)):
        a = ds.read_arrays(DataConfig("fake", image_size=size, in_channels=1, seed=7))
        assert a.train_x.shape == (512, 1, want, want)
        assert torch.equal(a.test_x, ds.fake_arrays(want, 1, seed=7).test_x)


def test_fake_per_class_is_the_hand_counted_size_of_the_smallest_fake_class():
    # FAKE_PER_CLASS's comment: labels 0..k-1 in turn, each class has n // k or one more: 512 = 2 * 52 + 8 * 51
    counts = torch.bincount(ds.fake_arrays(8, 1, seed=0).train_y, minlength=ds.FAKE_CLASSES).tolist()
    assert sorted(counts) == [51] * 8 + [52] * 2 and ds.FAKE_PER_CLASS == min(counts) == 51


def test_a_data_dir_that_is_neither_file_nor_folder_is_named_as_not_a_folder(no_locations):
    # a FIFO (or /dev/null) passes check_data_dir's is_file test; the not-found message still says what it is
    import os

    fifo = no_locations / "pipe"
    os.mkfifo(fifo)
    for find in (find_fashion_mnist, lambda d: ds.read_cifar("cifar10", d)):
        with pytest.raises(ds.DataNotFoundError, match=rf"not found in --data-dir {fifo} \(it is a file, not a folder\)"):
            find(fifo)
