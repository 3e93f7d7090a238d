"""IDX reader and Fashion-MNIST source order, against IDX files written here byte by byte."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

import resnet_lab.data.sources as ds
from resnet_lab.data import (
    FASHION_MNIST_CLASSES,
    DataNotFoundError,
    IDXError,
    find_fashion_mnist,
    load_data,
    read_idx,
)

STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def idx_bytes(arr: np.ndarray, code: int = 0x08) -> bytes:
    """IDX encoding written from the format description, independent of resnet_lab.data.idx."""
    head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.astype(">u1" if code == 0x08 else ">i4").tobytes()


def write(path: Path, data: bytes) -> Path:
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def make_fmnist(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = True, fill: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(fill)
    ext = ".gz" if gz else ""
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        x[:, 0, 0] = fill  # marks which folder a loaded image came from
        y = (np.arange(n) % 10).astype(np.uint8)
        write(folder / f"{split}-images-idx3-ubyte{ext}", idx_bytes(x))
        write(folder / f"{split}-labels-idx1-ubyte{ext}", idx_bytes(y))
    return folder


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_returns_the_array_written_by_an_independent_encoder(tmp_path, gz):
    arr = np.random.default_rng(1).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    p = write(tmp_path / ("a.idx.gz" if gz else "a.idx"), idx_bytes(arr))
    out = read_idx(p)
    assert out.dtype == np.uint8 and out.shape == (7, 5, 3)
    np.testing.assert_array_equal(out, arr)


def test_read_idx_decodes_big_endian_int32():
    arr = np.array([[1, -2], [70000, 3]], dtype=np.int32)
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        p = write(Path(d) / "i.idx", idx_bytes(arr, code=0x0C))
        np.testing.assert_array_equal(read_idx(p), arr)


@pytest.mark.parametrize("code, fmt, values", [
    (0x09, "b", [1, -2, 127, -128, 5, 0]),
    (0x0B, "h", [1, -2, 300, -32768, 32767, 7]),
    (0x0D, "f", [1.5, -2.25, 3e8, 1e-3, -0.0, 7.0]),
    (0x0E, "d", [1.5, -2.25, 3e300, 1e-3, -0.0, 7.0]),
])
def test_read_idx_decodes_every_big_endian_dtype(tmp_path, code, fmt, values):
    # a 2 x 3 array packed with struct's ">" (big-endian), as the IDX format says; the reference is
    # struct's reading of those bytes (the values at the dtype's precision: 1e-3 as a float32)
    body = struct.pack(f">{len(values)}{fmt}", *values)
    out = read_idx(write(tmp_path / "x.idx", bytes([0, 0, code, 2]) + struct.pack(">II", 2, 3) + body))
    assert out.shape == (2, 3) and out.dtype.isnative
    assert out.reshape(-1).tolist() == list(struct.unpack(f">{len(values)}{fmt}", body))


def test_read_idx_rejects_bad_magic_naming_the_file(tmp_path):
    p = write(tmp_path / "bad-magic", b"\x12\x34\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(IDXError, match="bad-magic.*not an IDX file"):
        read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_rejects_truncated_data_naming_the_file(tmp_path, gz):
    full = idx_bytes(np.zeros((4, 28, 28), np.uint8))
    p = write(tmp_path / ("short.gz" if gz else "short"), full[:-100])
    with pytest.raises(IDXError, match=r"short.*truncated"):
        read_idx(p)


def test_read_idx_rejects_wrong_ndim_and_broken_gzip(tmp_path):
    p = write(tmp_path / "labels", idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(IDXError, match="1 dimensions, expected 3"):
        read_idx(p, expected_ndim=3)
    g = tmp_path / "broken.gz"
    g.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 3), np.uint8)))[:-12])
    with pytest.raises(IDXError, match="broken.gz"):
        read_idx(g)


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No env var, Debian path and cache pointed into tmp_path."""
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    monkeypatch.setattr(ds, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_fashion_mnist_source_order_data_dir_then_env_then_debian(isolated, monkeypatch):
    t = isolated
    make_fmnist(t / "debian", fill=3)
    make_fmnist(t / "env" / "fashion-mnist", fill=2, gz=False)  # env var's sub-folder counts
    make_fmnist(t / "explicit", fill=1)
    monkeypatch.setenv("RESNET_LAB_DATA", str(t / "env"))
    assert find_fashion_mnist(t / "explicit")["train_images"].parent == t / "explicit"
    assert find_fashion_mnist(None)["train_images"] == t / "env" / "fashion-mnist" / "train-images-idx3-ubyte"
    monkeypatch.delenv("RESNET_LAB_DATA")
    assert find_fashion_mnist(None)["train_images"].parent == t / "debian"
    # and the data actually loaded are the winning folder's
    b = load_data("fashion-mnist", data_dir=t / "explicit", batch_size=4, augment=False)
    assert int(b.train.images[:, 0, 0, 0].unique().item()) == 1


def test_fashion_mnist_found_in_torchvision_cache_layout(isolated):
    make_fmnist(isolated / "cache" / "FashionMNIST" / "raw")
    assert find_fashion_mnist(None)["test_labels"].parent == isolated / "cache" / "FashionMNIST" / "raw"


def test_missing_fashion_mnist_error_lists_every_way_and_place(isolated, monkeypatch):
    incomplete = isolated / "envdir"
    monkeypatch.setenv("RESNET_LAB_DATA", str(incomplete))
    make_fmnist(incomplete)
    (incomplete / "t10k-labels-idx1-ubyte.gz").unlink()  # an incomplete folder does not count
    with pytest.raises(DataNotFoundError) as e:
        load_data("fashion-mnist")  # no data_dir: the whole search order (an explicit one: test_bad_input.py)
    msg = str(e.value)
    for needle in ("apt-get install dataset-fashion-mnist", "--data-dir", "RESNET_LAB_DATA", "--download",
                   str(incomplete), str(isolated / "debian"), str(isolated / "cache")):
        assert needle in msg, needle


def test_unknown_dataset_name_suggests_the_closest():
    with pytest.raises(ValueError, match="fashion-mnist"):
        load_data("fashon-mnist")


REAL = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (REAL / "train-labels-idx1-ubyte.gz").exists() and not (REAL / "train-labels-idx1-ubyte").exists(),
                    reason="Debian package dataset-fashion-mnist not installed")
def test_real_debian_fashion_mnist_has_published_shape_and_balance(monkeypatch):
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    files = find_fashion_mnist(None)
    tr_x = read_idx(files["train_images"], expected_ndim=3)
    tr_y = read_idx(files["train_labels"], expected_ndim=1)
    te_x = read_idx(files["test_images"], expected_ndim=3)
    te_y = read_idx(files["test_labels"], expected_ndim=1)
    # Xiao et al. 2017: 60,000 train / 10,000 test 28x28 images, 10 classes, 6,000 / 1,000 each.
    assert tr_x.shape == (60000, 28, 28) and te_x.shape == (10000, 28, 28)
    assert np.bincount(tr_y).tolist() == [6000] * 10
    assert np.bincount(te_y).tolist() == [1000] * 10
    # Published normalization constants (0.2860, 0.3530), recomputed in float64.
    mean, std = tr_x.mean(dtype=np.float64) / 255, tr_x.std(dtype=np.float64) / 255
    assert abs(mean - 0.2860) < 5e-4 and abs(std - 0.3530) < 5e-4
    b = load_data("fashion-mnist", batch_size=512)
    assert b.info.classes == FASHION_MNIST_CLASSES and b.info.input_size == (1, 28, 28)
    assert b.info.mean == pytest.approx((mean,), abs=1e-4) and b.info.std == pytest.approx((std,), abs=1e-4)


def test_fashion_mnist_as_rgb_32px_matches_pil_resize_of_each_image(isolated):
    from PIL import Image

    make_fmnist(isolated / "d", n_train=6, n_test=4)
    raw = read_idx(isolated / "d" / "train-images-idx3-ubyte.gz")
    b = load_data("fashion-mnist", data_dir=isolated / "d", image_size=32, in_channels=3, batch_size=2)
    assert b.info.input_size == (3, 32, 32) and len(b.info.mean) == 3
    got = b.train.images.numpy()
    for i in range(6):
        ref = np.asarray(Image.fromarray(raw[i]).resize((32, 32), Image.Resampling.BILINEAR), dtype=np.int16)
        for c in range(3):  # gray repeated into each RGB channel
            assert np.abs(got[i, c].astype(np.int16) - ref).max() <= 1


def test_read_idx_turns_a_damaged_deflate_stream_into_an_idx_error_naming_the_file(tmp_path):
    # A valid gzip header followed by a deflate block of the reserved type 3: zlib.error, which is
    # not an OSError, must still become the one-line "delete it and get it again" error.
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(bytes([0x1F, 0x8B, 8, 0, 0, 0, 0, 0, 0, 0xFF, 0x07]) + bytes(20))
    with pytest.raises(IDXError, match=r"cannot read IDX file .*train-images-idx3-ubyte\.gz.*delete it and get it again"):
        read_idx(p)


def fmnist_with(folder: Path, **replace: np.ndarray) -> Path:
    """make_fmnist's four plain files, then the named ones (e.g. ``train_images``) replaced by
    the given arrays, IDX-encoded with the dtype code of their numpy type."""
    make_fmnist(folder, gz=False)
    codes = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(np.float32): 0x0D}
    stems = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
    for key, arr in replace.items():
        code = codes[arr.dtype]
        head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
        (folder / stems[key]).write_bytes(head + arr.astype(arr.dtype.newbyteorder(">")).tobytes())
    return folder


def test_an_empty_array_round_trips_and_what_is_read_is_a_writable_copy(tmp_path):
    from resnet_lab.data import write_idx

    write_idx(tmp_path / "empty", np.zeros((0, 28, 28), np.uint8))  # the header alone: 0 data bytes
    assert (tmp_path / "empty").read_bytes() == idx_bytes(np.zeros((0, 28, 28), np.uint8))
    assert read_idx(tmp_path / "empty").shape == (0, 28, 28)
    out = read_idx(write(tmp_path / "a", idx_bytes(np.arange(6, dtype=np.uint8))))
    assert out.flags.writeable  # the caller's own array, not a read-only view of the file's bytes
    out[0] = 9


def test_write_idx_refuses_a_0_dimensional_array_which_no_reader_would_take(tmp_path):
    from resnet_lab.data import write_idx

    with pytest.raises(ValueError, match=r"IDX stores 1 to 255 dimensions, got a 0-dimensional array; "
                                         r"reshape it, e.g. array.reshape\(1\)"):
        write_idx(tmp_path / "s", np.array(5, np.uint8))
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("key, arr, match", [
    # 32 px training images with the 28 px test images: refused, not trained at one size and tested at another
    ("train_images", np.zeros((20, 32, 32), np.uint8),
     r"train-images-idx3-ubyte holds uint8 images of 32x32 px, expected uint8 28x28"),
    ("test_images", np.zeros((10, 28, 27), np.uint8),
     r"t10k-images-idx3-ubyte holds uint8 images of 28x27 px, expected uint8 28x28"),
    ("train_images", np.zeros((20, 28, 28), np.float32), r"train-images-idx3-ubyte holds float32 images of 28x28 px"),
    ("train_labels", (np.arange(20) % 10 - 1).astype(np.int8),
     r"train-labels-idx1-ubyte has label -1, expected 0\.\.9"),
    ("test_labels", np.full(10, 10, np.uint8), r"t10k-labels-idx1-ubyte has label 10, expected 0\.\.9"),
])
def test_fashion_mnist_refuses_images_not_uint8_28x28_and_labels_outside_0_to_9_naming_the_file(
    isolated, key, arr, match
):
    d = fmnist_with(isolated / "d", **{key: arr})
    with pytest.raises(ValueError, match=match + ".*delete it and get it again") as e:
        load_data("fashion-mnist", data_dir=d, batch_size=2)
    assert str(d) in str(e.value) and "\n" not in str(e.value)


def test_read_idx_names_a_gzip_file_without_gz_and_counts_huge_dimensions_exactly(tmp_path):
    plain = tmp_path / "train-images-idx3-ubyte"
    plain.write_bytes(gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">3I", 1, 2, 2) + bytes(4)))
    with pytest.raises(IDXError, match=r"is gzip-compressed but its name does not end in .gz: rename it to "
                                       r"train-images-idx3-ubyte.gz"):
        read_idx(plain)
    huge = tmp_path / "huge-idx2-ubyte"
    huge.write_bytes(b"\x00\x00\x08\x02" + struct.pack(">2I", 2**32 - 1, 3) + bytes(6))
    # the byte count used to wrap around in int64 arithmetic for larger headers; it is exact now
    with pytest.raises(IDXError, match=rf"dimensions \(4294967295, 3\) need {(2**32 - 1) * 3} data bytes, found 6"):
        read_idx(huge)
    wraps = tmp_path / "wraps-idx3-ubyte"  # 2^32-1 cubed overflows int64: it was a raw numpy reshape error
    wraps.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1) + bytes(6))
    with pytest.raises(IDXError, match=r"is truncated: dimensions .* need \d+ data bytes, found 6"):
        read_idx(wraps)


GOOD_2x3 = b"\x00\x00\x08\x02" + struct.pack(">2I", 2, 3) + bytes(range(6))


@pytest.mark.parametrize("data, match", [
    (b"\x00\x00\x08", r"is truncated: 3 bytes, shorter than the 4-byte header"),
    (b"\x00\x01\x08\x01" + struct.pack(">I", 1) + b"\x00", r"is not an IDX file: magic number 00010801"),  # 2nd byte
    (b"\x00\x00\x08\x00" + b"\x05", r"is not an IDX file: magic number 00000800"),  # 0 dimensions
    (b"\x00\x00\x08\x03" + struct.pack(">I", 2), r"is truncated inside its header \(8 of 16 bytes\)"),
    (b"\x00\x00\x08\x01", r"is truncated inside its header \(4 of 8 bytes\)"),  # the magic number alone
    (GOOD_2x3 + b"\x00\x00\x00", r"has 3 bytes beyond its dimensions \(2, 3\)"),
], ids=["3 bytes", "second magic byte", "0 dims", "short header", "magic only", "extra bytes"])
def test_read_idx_refuses_each_malformed_file_in_one_line_naming_it(tmp_path, data, match):
    """The IDX layout (2 zero bytes, dtype code, ndim >= 1, ndim big-endian uint32, exactly the data)."""
    np.testing.assert_array_equal(read_idx(write(tmp_path / "ok-idx2-ubyte", GOOD_2x3)), [[0, 1, 2], [3, 4, 5]])
    p = write(tmp_path / "bad-idx-ubyte", data)
    with pytest.raises(IDXError, match=match) as e:
        read_idx(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("gz", [False, True])
def test_write_idx_writes_the_bytes_of_an_independent_encoder(tmp_path, gz):
    from resnet_lab.data import write_idx

    for arr, code in ((np.arange(24, dtype=np.uint8).reshape(2, 3, 4), 0x08),
                      (np.array([[1, -2], [70000, 3]], dtype=np.int32), 0x0C)):  # native little-endian in
        p = tmp_path / ("a.gz" if gz else "a")
        write_idx(p, arr)
        raw = gzip.decompress(p.read_bytes()) if gz else p.read_bytes()
        assert raw == idx_bytes(arr, code=code)
    with pytest.raises(ValueError, match="IDX cannot store dtype float16"):
        write_idx(tmp_path / "h", np.zeros(3, np.float16))


@pytest.mark.parametrize("key, arr, match", [
    ("train_labels", (np.arange(19) % 10).astype(np.uint8),
     r"train-images-idx3-ubyte has 20 images but \S+train-labels-idx1-ubyte has 19 labels; the files do not belong "
     r"together"),
    ("test_labels", (np.arange(10) % 10).astype(np.float32),
     r"t10k-labels-idx1-ubyte holds float32 labels, expected integers 0\.\.9"),
])
def test_fashion_mnist_refuses_labels_that_do_not_match_the_images_in_count_or_kind(isolated, key, arr, match):
    """One integer label per image (the IDX files of LeCun's MNIST layout: labels are ubyte)."""
    d = fmnist_with(isolated / "d", **{key: arr})
    with pytest.raises(ValueError, match=match) as e:
        load_data("fashion-mnist", data_dir=d, batch_size=2)
    assert str(d) in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("key, arr, match", [
    # a column of labels would pass every other check and train as (N, 1) targets
    ("train_labels", (np.arange(20) % 10).astype(np.uint8)[:, None], r"train-labels-idx1-ubyte has 2 dimensions, expected 1"),
    # MNIST as flat rows of 784 pixels, as some converters write it
    ("test_images", np.zeros((10, 784), np.uint8), r"t10k-images-idx3-ubyte has 2 dimensions, expected 3"),
])
def test_fashion_mnist_refuses_files_of_the_wrong_rank_naming_the_file(isolated, key, arr, match):
    d = fmnist_with(isolated / "d", **{key: arr})
    with pytest.raises(IDXError, match=match) as e:
        load_data("fashion-mnist", data_dir=d, batch_size=2)
    assert str(d) in str(e.value) and "\n" not in str(e.value)
