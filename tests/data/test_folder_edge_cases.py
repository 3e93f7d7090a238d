"""Image folders as QA found them: names with runs of spaces, train/ and val/ that are one set of
images, a class named like a split, images beside the class folders, a folder that decodes nothing."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_lab.cli import main
from resnet_lab.data import BadImageWarning, load_data, scan_class_folders

TRAIN = ["train", "--model", "resnet8_fast", "--dataset", "folder", "--batch-size", "4", "--image-size", "8",
         "--epochs", "1", "--no-progress", "--no-plots"]


def save_images(folder: Path, n: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_skipped_files_are_named_intact_in_the_warning_and_the_cli_line(tmp_path, capsys):
    root = tmp_path / "pets"
    save_images(root / "cats", 6)
    save_images(root / "dogs", 6, seed=1)
    (root / "cats" / "bad  two  spaces.png").write_text("not an image")
    (root / "dogs" / "empty.png").write_bytes(b"")
    on_disk = sorted(str(root / c / n) for c in ("cats", "dogs") for n in os.listdir(root / c) if not n[0].isdigit())
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        scan_class_folders(root)
    (message,) = [str(w.message) for w in rec if issubclass(w.category, BadImageWarning)]
    assert "\n" not in message
    assert all(repr(p) in message for p in on_disk)  # quoted whole: a double space is seen, not lost
    assert message.count("; ") == 1  # one entry per file, apart
    err = cli_stderr([*TRAIN, "--data-dir", str(root), "--workers", "0", "--out", str(tmp_path / "run")], capsys)
    (line,) = [x for x in err.splitlines() if "unreadable" in x]
    assert line.startswith("warning: skipped 2") and all(repr(p) in line for p in on_disk)


def cli_stderr(argv: list[str], capsys, code: int = 0) -> str:
    """The CLI's stderr with its warnings as a terminal sees them (pytest records warnings instead)."""
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda m, c, f, n, file=None, line=None: sys.stderr.write(
            warnings.formatwarning(m, c, f, n, line))
        assert main(argv) == code
    return capsys.readouterr().err


@pytest.mark.parametrize("name,lacks", [("Test", "train"), ("validation", "train"), ("train", "val")])
def test_a_class_named_like_a_split_is_refused_naming_that_folder_and_the_ways_out(tmp_path, capsys, name, lacks):
    root = tmp_path / "flat"
    save_images(root / name, 4)
    save_images(root / "other", 4, seed=1)
    (folder,) = [d for d in os.listdir(root) if d.lower() == name.lower()]  # as it is on disk
    err = cli_stderr([*TRAIN, "--data-dir", str(root), "--out", str(tmp_path / "run")], capsys, code=2)
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert f"a {folder}/ folder" in err and f"but no {lacks}" in err
    assert f"rename the class folder {folder}/" in err and f"{root}/{'train' if lacks == 'train' else 'val'}/<class>" in err
    assert not (tmp_path / "run").exists()


def test_images_beside_the_class_folders_are_named_in_one_warning_not_ignored_silently(tmp_path):
    root = tmp_path / "pets"
    save_images(root / "cats", 3)
    save_images(root / "dogs", 3, seed=1)
    save_images(root, 2, seed=2)  # 0.png, 1.png directly in root
    (root / "README.txt").write_text("pets, 2024")  # not an image: no reason to warn
    loose = sorted(n for n in os.listdir(root) if n.endswith(".png"))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        scan = scan_class_folders(root)
    (message,) = [str(w.message) for w in rec]
    assert message.startswith(f"{len(loose)} image(s) directly in {root} are not in a class folder and are not used")
    assert any(repr(n) in message for n in loose) and "README" not in message
    assert len(scan.samples) == 6
    (root / "0.png").unlink(), (root / "1.png").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scan_class_folders(root)


def pngs(folder: Path) -> list[str]:
    return sorted(os.path.join(d, n) for d, _, names in os.walk(folder, followlinks=True) for n in names)


@pytest.mark.parametrize("link", ["folders", "one file"])
def test_a_val_split_that_holds_training_images_through_links_is_refused_naming_one(tmp_path, capsys, link):
    root = tmp_path / "pets"
    for i, cls in enumerate(("a", "b")):
        save_images(root / "train" / cls, 4, seed=i)
        if link == "folders":  # val/a -> train/a: every test image is a training image
            (root / "val").mkdir(exist_ok=True)
            (root / "val" / cls).symlink_to(root / "train" / cls, target_is_directory=True)
        else:  # val/ of its own, but one of its files is a link to a training image
            save_images(root / "val" / cls, 2, seed=10 + i)
    if link == "one file":
        (root / "val" / "b" / "x.png").symlink_to(root / "train" / "b" / "3.png")
    train_real = {os.path.realpath(p) for p in pngs(root / "train")}
    shared = [p for p in pngs(root / "val") if os.path.realpath(p) in train_real]
    assert shared  # the files on disk say so
    err = cli_stderr([*TRAIN, "--data-dir", str(root), "--out", str(tmp_path / "run")], capsys, code=2)
    assert len(err.splitlines()) == 1
    assert f"{len(shared)} of the " in err and f"test image(s) in {root / 'val'} are training images" in err
    assert any(f"e.g. {p} is {os.path.realpath(p)}" in err for p in shared)
    assert "remove the link" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_folder_whose_images_all_fail_to_decode_is_one_error_naming_it_and_leaves_no_out(tmp_path, capsys, workers):
    """JPEGs cut short pass the scan (its verify() reads no JPEG data) and fail when decoded; with
    workers, torch wrapped the error in a 15-line worker traceback."""
    root = tmp_path / "cut"
    save_images(root / "a", 3)
    save_images(root / "b", 3, seed=1)
    for png in sorted(root.glob("*/*.png")):
        Image.open(png).convert("RGB").resize((32, 32)).save(png.with_suffix(".jpg"), quality=95)
        png.unlink()
        data = png.with_suffix(".jpg").read_bytes()
        png.with_suffix(".jpg").write_bytes(data[: 2 * len(data) // 3])  # the headers whole, the data cut
    for jpg in root.glob("*/*.jpg"):  # the reference: Pillow itself cannot decode any of them
        with pytest.raises(OSError, match="(?i)truncated"), Image.open(jpg) as im:
            im.load()
    out = tmp_path / "run"
    err = cli_stderr([*TRAIN, "--data-dir", str(root), "--workers", str(workers), "--out", str(out)], capsys, code=2)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err and "Caught" not in err, err
    assert errors[0].startswith(f"error: no image in {root} can be decoded")
    assert "convert" in errors[0] and err.rstrip().endswith(errors[0])
    assert not out.exists()  # created for the run, empty: removed


def test_classes_are_in_torchvisions_imagefolder_order_uppercase_first(tmp_path):
    # ImageFolder sorts the folder names as strings (code points: "Zebra" < "apple"); a case-blind
    # sort would number the classes differently from a model trained with torchvision on the folder
    from torchvision.datasets import ImageFolder  # deferred: the reference

    for name in ("Zebra", "apple", "Mango", "banana"):
        save_images(tmp_path / name, 2)
    reference = ImageFolder(str(tmp_path))
    assert reference.classes == ["Mango", "Zebra", "apple", "banana"]
    scan = scan_class_folders(tmp_path)
    assert scan.classes == reference.classes
    assert sorted((str(p), lab) for p, lab in scan.samples) == sorted(reference.samples)


def test_nested_folders_are_listed_in_torchvisions_imagefolder_order(tmp_path):
    # FolderScan: samples "sorted by class then file name"; inside a class, nested folders in the
    # order of torchvision's ImageFolder (sorted walk, sorted files): the seeded hold-out draws over
    # this list, so another order holds out other images on another machine or version
    from torchvision.datasets import ImageFolder  # deferred: the reference

    for sub, n in (("a", 2), ("a/y", 1), ("a/x", 2), ("a/y/z", 1), ("a/x/w", 1), ("b", 2), ("b/q", 1)):
        save_images(tmp_path / sub, n)
    assert [(str(p), lab) for p, lab in scan_class_folders(tmp_path).samples] == ImageFolder(str(tmp_path)).samples


def test_windows_thumbs_db_and_desktop_ini_are_ignored_silently_like_hidden_files(tmp_path):
    # the module's promise: Thumbs.db (any case) and desktop.ini are no images and no "unreadable" files
    root = tmp_path / "pets"
    save_images(root / "cats", 2)
    save_images(root / "dogs", 2, seed=1)
    (root / "cats" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0 not an image")
    (root / "dogs" / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (root / "dogs" / "THUMBS.DB").write_bytes(b"\xd0\xcf\x11\xe0")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scan = scan_class_folders(root)
    assert sorted(Path(p).name for p, _ in scan.samples) == ["0.png", "0.png", "1.png", "1.png"] and not scan.bad


@pytest.mark.parametrize("val", ["val", "valid", "validation", "test", "VAL"])
def test_every_documented_name_of_the_test_split_is_found_beside_train(tmp_path, val):
    # find_split_dirs' docstring: val/valid/validation/test (any case) beside train/ is the test split
    root = tmp_path / "pets"
    for i, cls in enumerate(("a", "b")):
        save_images(root / "train" / cls, 3, seed=i)
        save_images(root / val / cls, 2, seed=10 + i)
    b = load_data("folder", data_dir=root, batch_size=2, num_workers=0)
    assert (b.num_train, b.num_test) == (6, 4) and b.info.classes == ["a", "b"]
    assert all(Path(p).parts[-3] == val for p, _ in b.test.dataset.samples)
    assert b.info.val_fraction is None and b.info.split_seed is None  # nothing held out, no seed drew it


@pytest.mark.parametrize("used, unused", [("val", "test"), ("val", "valid"), ("valid", "validation"),
                                          ("validation", "test")])
def test_a_second_test_folder_is_named_as_unused_in_one_warning(tmp_path, used, unused):
    # docs/DATA.md: "the first of val, valid, validation, test is the test split"
    root = tmp_path / "pets"
    for split, n in (("train", 3), (used, 2), (unused, 1)):
        for i, cls in enumerate(("a", "b")):
            save_images(root / split / cls, n, seed=i)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        b = load_data("folder", data_dir=root, batch_size=2, num_workers=0)
    assert b.num_test == 4  # the used folder's 2 + 2, not the other's
    (message,) = [str(w.message) for w in rec]
    assert f"{used}/ is the test split" in message and f"{unused}/ is not used" in message


def _train_abc_and_val(root: Path, val_classes: str) -> Path:
    """train/ with classes a, b, c (3 images each) and val/ with ``val_classes`` only (2 each)."""
    for i, cls in enumerate("abc"):
        save_images(root / "train" / cls, 3, seed=i)
        if cls in val_classes:
            save_images(root / "val" / cls, 2, seed=10 + i)
    return root


def test_a_val_split_without_some_classes_keeps_the_training_labels(tmp_path):
    # val/ lacks class b: its c images are still labelled c (index 2 of the training classes), not 1
    root = _train_abc_and_val(tmp_path / "pets", "ac")
    b = load_data("folder", data_dir=root, batch_size=2, num_workers=0)
    assert b.info.classes == ["a", "b", "c"]
    for split in (b.train, b.test):
        assert all(b.info.classes[label] == Path(p).parent.name for p, label in split.dataset.samples)
    assert sorted(label for _, label in b.test.dataset.samples) == [0, 0, 2, 2]


def test_loose_images_with_an_uppercase_extension_are_warned_about_too(tmp_path):
    root = tmp_path / "pets"
    save_images(root / "cats", 2)
    save_images(root / "dogs", 2, seed=1)
    Image.new("RGB", (8, 8)).save(root / "SCAN.PNG")  # cameras and scanners write upper case
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        scan_class_folders(root)
    (message,) = [str(w.message) for w in rec]
    assert message.startswith(f"1 image(s) directly in {root}") and "'SCAN.PNG'" in message


def test_samples_are_sorted_by_class_then_file_name_whatever_the_directory_order(tmp_path):
    # FolderScan's contract; the held-out split and subsets are drawn over this order, so it must not
    # depend on the order the file system lists a folder in
    root = tmp_path / "pets"
    names = [f"{c}{i}.png" for i in range(3) for c in "qzamxkbe"]
    for cls in ("dogs", "cats"):
        (root / cls / "sub").mkdir(parents=True)
        for name in names:
            Image.new("L", (4, 4)).save(root / cls / name)
        Image.new("L", (4, 4)).save(root / cls / "sub" / "0.png")
    scan = scan_class_folders(root)
    expected = [(str(root / cls / n), label) for label, cls in enumerate(("cats", "dogs"))
                for n in [*sorted(names), "sub/0.png"]]
    assert scan.samples == expected


def test_classes_keeps_a_class_that_the_val_split_lacks(tmp_path):
    # classes=[2, 0] of a, b, c: c is label 0 and a label 1; val/ has no c, so its test split is a's
    # images only, labelled 1 (a hand count), and training has both
    root = _train_abc_and_val(tmp_path / "pets", "ab")
    b = load_data("folder", data_dir=root, batch_size=2, num_workers=0, classes=[2, 0])
    assert b.info.classes == ["c", "a"] and b.info.class_indices == (2, 0)  # model.json keeps them (docs/DATA.md)
    assert sorted((Path(p).parent.name, label) for p, label in b.test.dataset.samples) == [("a", 1)] * 2
    train = sorted((Path(p).parent.name, label) for p, label in b.train.dataset.samples)
    assert train == [("a", 1)] * 3 + [("c", 0)] * 3


@pytest.mark.parametrize("layout", ["one image per class", "val/ lacks the chosen classes"])
def test_an_empty_test_split_is_one_warning_naming_the_folder_and_the_way_out_at_the_callers_line(tmp_path, layout):
    # docs/DATA.md: a hold-out that leaves no image (a class of one image keeps it for training), or
    # classes that val/ lacks, leave the test split empty; load_data says so, pointing at the line
    # that called it (not at the library), and serves an empty test loader
    root = tmp_path / "pets"
    if layout == "one image per class":
        save_images(root / "cats", 1)
        save_images(root / "dogs", 1, seed=1)
        kw = {}
    else:
        kw = {"classes": [1, 2]}  # b and c; val/ has a only
        _train_abc_and_val(root, "a")
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        b = load_data("folder", data_dir=root, batch_size=2, num_workers=0, **kw)
    (w,) = rec
    assert str(w.message) == f"the test split of {root} is empty; add images or a val/ folder"
    assert w.filename == __file__
    assert b.num_test == 0 and list(b.test) == [] and b.num_train == 2 * (1 if not kw else 3)


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's documented values


def _served_images(root: Path, split: str, **kw) -> list[torch.Tensor]:
    """Every image of one epoch of a split of an 8 px folder, served at 8 px."""
    b = load_data("folder", data_dir=root, batch_size=2, num_workers=0, val_fraction=0.25, image_size=8, **kw)
    return [img for x, _ in getattr(b, split) for img in x]


@pytest.mark.parametrize("augment", [True, False])
def test_a_folders_test_split_and_unaugmented_training_images_are_the_pixels_normalized(tmp_path, augment):
    """docs/DATA.md: training augments (RandomResizedCrop + flip) unless augment=False; testing resizes
    and center-crops, which changes nothing on 8 px images at 8 px. The reference: each PNG's
    pixels normalized by hand in float64 with ImageNet's mean/std."""
    root = tmp_path / "pets"
    save_images(root / "cats", 4)
    save_images(root / "dogs", 4, seed=1)
    mean, std = (torch.tensor(v, dtype=torch.float64).view(3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    refs = [(torch.from_numpy(np.array(Image.open(p))).permute(2, 0, 1) / 255 - mean) / std
            for p in sorted(root.glob("*/*.png"))]

    def as_is(img: torch.Tensor) -> bool:
        return any(torch.allclose(img.double(), ref, atol=1e-5, rtol=0) for ref in refs)

    test, train = _served_images(root, "test", augment=augment), _served_images(root, "train", augment=augment)
    assert len(test) == 2 and all(as_is(img) for img in test)
    assert len(train) == 6 and sum(as_is(img) for img in train) == (0 if augment else 6)


def test_random_erasing_reaches_a_folders_training_images_only(tmp_path):
    """random_erasing=1 erases a rectangle of every training image to 0 (the mean, after
    normalization: torchvision's RandomErasing), which no normalized pixel of an 8 bit image is in
    all three channels; the test split is never erased."""
    root = tmp_path / "pets"
    save_images(root / "cats", 4)
    save_images(root / "dogs", 4, seed=1)

    def erased(img: torch.Tensor) -> bool:
        return bool((img == 0).all(0).any())

    for p, split in ((1.0, "train"), (1.0, "test"), (0.0, "train")):
        images = _served_images(root, split, random_erasing=p)
        assert images and sum(map(erased, images)) == (len(images) if (p, split) == (1.0, "train") else 0)
