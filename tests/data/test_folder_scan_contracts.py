"""The documented promises of resnet_lab.data.folder that the larger folder tests do not pin down:
the reason each skipped file is reported with, hidden folders beside the classes, which folders
count as a held-out split, and which sample a replaced image's label comes from."""

from __future__ import annotations

import signal
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resnet_lab.data import BadImageWarning, ImageFileDataset, NoDecodableImageError, scan_class_folders
from resnet_lab.data.folder import find_split_dirs, holds_out
from support import write_image_folder


def test_each_skipped_file_is_reported_with_the_reason_docs_data_md_gives_it(tmp_path):
    # docs/DATA.md: "'pets/dogs/empty.png' (empty file)"; a text file is "(not an image)"
    root = write_image_folder(tmp_path / "pets", n=2)
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "b" / "notes.txt").write_text("remember to label more dogs")
    # a PNG whose header reads but whose pixel data were damaged (one byte of its IDAT chunk):
    # the module docstring's Image.verify at scan time finds it, not the tenth epoch's decode
    png = bytearray((root / "a" / "0.png").read_bytes())
    png[png.index(b"IDAT") + 9] ^= 0xFF
    (root / "b" / "damaged.png").write_bytes(bytes(png))
    with pytest.warns(BadImageWarning) as rec:
        scan = scan_class_folders(root)
    reasons = {Path(p).name: why for p, why in scan.bad}
    assert reasons.pop("damaged.png").startswith("corrupt (")
    assert reasons == {"empty.png": "empty file", "notes.txt": "not an image"}
    msg = str(rec[0].message)
    assert f"{str(root / 'b' / 'empty.png')!r} (empty file)" in msg
    assert rec[0].filename == __file__  # reported at the caller's line, not inside resnet_lab


def test_each_sample_size_is_the_width_and_height_pil_reads(tmp_path):
    # FolderScan: sizes are "(width, height) of each sample, from the file header", PIL's Image.size
    root = write_image_folder(tmp_path / "pets", n=1)
    Image.new("RGB", (12, 5)).save(root / "b" / "wide.png")
    scan = scan_class_folders(root)
    assert [(Path(p).name, size) for (p, _), size in zip(scan.samples, scan.sizes)] == [
        ("0.png", (8, 8)), ("0.png", (8, 8)), ("wide.png", (12, 5))]


def _scans_the_two_classes_silently(root):
    """The scan of write_image_folder's two classes of 2 images finds them alone, with no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scan = scan_class_folders(root)
    assert scan.classes == ["a", "b"] and len(scan.samples) == 4


def test_a_hidden_folder_beside_the_classes_is_no_class(tmp_path):
    # hidden entries are ignored silently (module docstring), folders too: Jupyter leaves
    # .ipynb_checkpoints/ beside the class folders, and a copy of an image in it is no class
    root = write_image_folder(tmp_path / "pets", n=2)
    write_image_folder(root / ".ipynb_checkpoints", classes=("c",), n=1)
    _scans_the_two_classes_silently(root)


def test_hidden_image_files_beside_the_classes_are_no_loose_images(tmp_path):
    # docs/DATA.md: hidden files (".DS_Store, ._x.jpg, Thumbs.db") are ignored silently; the
    # AppleDouble ._x.jpg a Mac copy leaves beside the class folders is no image left out of a class
    root = write_image_folder(tmp_path / "pets", n=2)
    (root / "._x.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (root / ".cover.png").write_bytes((root / "a" / "0.png").read_bytes())
    _scans_the_two_classes_silently(root)


def test_a_hidden_folder_inside_a_class_adds_no_samples(tmp_path):
    # _files_below: "every non-hidden file below", hidden folders skipped like hidden files: the
    # previews a viewer keeps in cats/.thumbnails/ are not more cats
    root = write_image_folder(tmp_path / "pets", n=2)
    write_image_folder(root / "a", classes=(".thumbnails",), n=3, seed=1)
    scan = scan_class_folders(root)
    assert sorted(Path(p).relative_to(root).as_posix() for p, _ in scan.samples) == ["a/0.png", "a/1.png",
                                                                                    "b/0.png", "b/1.png"]


@pytest.mark.parametrize("train", ["train", "training", "Training"])
def test_every_documented_name_of_the_training_split_is_found_beside_val(tmp_path, train):
    # find_split_dirs' docstring: train/training (any case, as the val names) mark the split layout
    write_image_folder(tmp_path / train)
    write_image_folder(tmp_path / "val")
    assert find_split_dirs(tmp_path) == (tmp_path / train, tmp_path / "val")


def test_holds_out_is_true_only_for_a_readable_folder_without_a_val_split(tmp_path):
    # its docstring: a test split is held out of a folder without val/; False where there is a val/,
    # no folder at all, or one that cannot be read (loading it says why)
    flat = write_image_folder(tmp_path / "flat")
    split = tmp_path / "split"
    write_image_folder(split / "train")
    write_image_folder(split / "val")
    half = write_image_folder(tmp_path / "half", classes=("train",))  # only train/: refused on load
    assert holds_out(flat) is True
    assert holds_out(str(flat)) is True
    assert holds_out(split) is False
    assert holds_out(None) is False
    assert holds_out(half) is False


@pytest.fixture
def good_and_broken(tmp_path):
    """A decodable 4x4 PNG and a copy cut short after its header (passes a scan, fails to decode)."""
    good = tmp_path / "good.png"
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(good)
    broken = tmp_path / "broken.png"
    broken.write_bytes(good.read_bytes()[:40])
    return str(good), str(broken)


def to_tensor(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(im.convert("RGB")))


@pytest.mark.parametrize("order", ["broken_first", "broken_last"])
def test_a_replaced_image_is_the_next_sample_with_its_own_label_wrapping_around(good_and_broken, order):
    # ImageFileDataset's promise: an undecodable file is replaced by the next sample (after the last
    # comes the first), which is that sample, image and label, as the dataset gives it at its own index
    good, broken = good_and_broken
    samples = [(broken, 0), (good, 1)] if order == "broken_first" else [(good, 1), (broken, 0)]
    ds = ImageFileDataset(samples, to_tensor)
    bad_i = 0 if order == "broken_first" else 1
    with pytest.warns(BadImageWarning):
        x, y = ds[bad_i]
    want_x, want_y = ds[1 - bad_i]
    assert y == want_y == 1 and torch.equal(x, want_x)


def test_an_image_dataset_without_samples_is_refused_when_built_not_when_first_read():
    with pytest.raises(ValueError, match="at least one sample"):
        ImageFileDataset([], to_tensor)


def test_scanning_a_file_or_a_missing_folder_says_which_in_its_error_type(tmp_path):
    # scan_class_folders' docstring: FileNotFoundError for a missing root, NotADirectoryError for a file
    file = tmp_path / "pets.zip"
    file.write_bytes(b"PK\x03\x04")
    with pytest.raises(NotADirectoryError, match=f"{file} is a file, not a folder"):
        scan_class_folders(file)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'nowhere'} does not exist"):
        scan_class_folders(tmp_path / "nowhere")


def test_no_decodable_image_error_keeps_its_own_message_and_unwraps_only_torchs_worker_traceback():
    # its docstring: torch reraises a worker's error with the whole traceback as message; the last
    # line, "<module>.NoDecodableImageError: <message>", is taken back out. Any other text is kept whole.
    own = "no image in /data/a\nb can be decoded"  # a folder name with a newline in it
    assert str(NoDecodableImageError(own)) == own
    wrapped = ("Caught NoDecodableImageError in DataLoader worker process 0.\nOriginal Traceback (most recent "
               "call last):\n  File \"x.py\", line 1\nresnet_lab.data.folder.NoDecodableImageError: no image in /d")
    assert str(NoDecodableImageError(wrapped)) == "no image in /d"


class _ScanTooSlow(Exception):
    """Raised by the timer below; not an OSError, which os.walk would swallow as an unreadable folder."""


@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs a POSIX interval timer")
def test_two_links_back_to_a_folder_inside_a_class_are_entered_once_not_in_every_combination(tmp_path):
    # module docstring: symlinked folders are followed, "each real folder once". a/sub/ holds two
    # links to itself: entering a folder again for every path that reaches it would walk 2**40
    # paths (the kernel's symbolic-link limit ends each chain) and never finish; once, it takes ms
    root = write_image_folder(tmp_path / "pets", n=1)
    write_image_folder(root / "a", classes=("sub",), n=1, seed=1)
    for name in ("l1", "l2"):
        (root / "a" / "sub" / name).symlink_to(root / "a" / "sub", target_is_directory=True)

    def too_slow(*_):
        raise _ScanTooSlow("the scan walked for 5 s")

    old = signal.signal(signal.SIGALRM, too_slow)
    signal.setitimer(signal.ITIMER_REAL, 5)
    try:
        scan = scan_class_folders(root)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    found = sorted(Path(p).relative_to(root).as_posix() for p, _ in scan.samples)
    assert found == ["a/0.png", "a/sub/0.png", "b/0.png"]
