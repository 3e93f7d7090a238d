"""Where the data are, and reading them into uint8 tensors (see docs/DATA.md).

* ``fashion-mnist``: the four IDX files (:mod:`resnet_lab.data.idx`), in ``data_dir`` when it is
  given (and nowhere else), else looked for in ``$RESNET_LAB_DATA``, the Debian package path
  (:data:`DEBIAN_FASHION_MNIST`), then the torchvision download cache.
* ``cifar10`` / ``cifar100``: torchvision's python-pickle batches (``cifar-10-batches-py``,
  ``cifar-100-python``) in ``data_dir`` when given, else ``$RESNET_LAB_DATA`` or the cache;
  downloaded through torchvision only with ``download=True``. The batches are read here with a
  restricted unpickler (numpy arrays, lists, dicts, bytes only) rather than through torchvision's
  Dataset, which skips its per-sample PIL conversion and its md5 pass.
* ``folder``: a class-per-folder tree, scanned by :mod:`resnet_lab.data.folder`; its files stay on
  disk (:func:`find_folder_samples` lists them and holds out a test split when there is no val/).
* ``fake``: class-dependent random images for smoke runs.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import DEFAULT_VAL_FRACTION, DataConfig, check_data_dir
from .folder import find_split_dirs, scan_class_folders
from .idx import read_idx
from .selection import hold_out

__all__ = [
    "CIFAR10_CLASSES",
    "DEBIAN_FASHION_MNIST",
    "ENV_DATA",
    "FAKE_CLASSES",
    "FAKE_PER_CLASS",
    "FAKE_TRAIN_SAMPLES",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "DataNotFoundError",
    "FolderSamples",
    "ImageArrays",
    "cache_dir",
    "fake_arrays",
    "find_fashion_mnist",
    "find_folder_samples",
    "load_fashion_mnist",
    "read_arrays",
    "read_cifar",
    "read_fashion_mnist",
]

FAKE_TRAIN_SAMPLES = 512  # training images of the `fake` dataset
FAKE_CLASSES = 10  # its classes, class0 to class9
# The training images of its smallest class: labels are 0..k-1 in turn (fake_arrays), so each
# class has n // k or one more.
FAKE_PER_CLASS = FAKE_TRAIN_SAMPLES // FAKE_CLASSES
DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
ENV_DATA = "RESNET_LAB_DATA"
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are in none of the places searched; the message lists how to get them."""


@dataclass
class ImageArrays:
    """Both splits of an in-memory dataset as read from its source.

    Attributes:
        train_x, test_x: uint8 (N, C, H, W).
        train_y, test_y: int64 (N,).
        classes: class names, index = label.
        source: where they were read from (informational).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    source: str = ""


# ----------------------------------------------------------------------------- locations


def cache_dir() -> Path:
    """Where downloads go: ``$RESNET_LAB_CACHE``, else ``$XDG_CACHE_HOME/resnet-lab``, else
    ``~/.cache/resnet-lab``."""
    if os.environ.get("RESNET_LAB_CACHE"):
        return Path(os.environ["RESNET_LAB_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "resnet-lab"


def _bases(data_dir: str | os.PathLike | None) -> list[tuple[str, Path]]:
    # An explicit data_dir is the only place looked at: training on another copy found elsewhere
    # (the Debian package, $RESNET_LAB_DATA) when the given folder lacks the files would be silent.
    check_data_dir(data_dir)
    if data_dir:
        return [("--data-dir", Path(data_dir).expanduser())]
    if os.environ.get(ENV_DATA):
        return [(f"${ENV_DATA}", Path(os.environ[ENV_DATA]).expanduser())]
    return []


def _explicit_dir_notes(data_dir: str | os.PathLike | None, incomplete: str, elsewhere: str) -> tuple[str, str]:
    """The two parts of a not-found message about an explicit data_dir (both "" without one): what
    is wrong with it (missing, a file, else ``incomplete``), and that ``elsewhere`` was not searched.
    """
    if not data_dir:
        return "", ""
    given = Path(data_dir).expanduser()
    problem = incomplete
    if not given.is_dir():
        problem = "it is a file, not a folder" if given.exists() else "it does not exist"
    return (
        f" in --data-dir {given} ({problem})",
        f"An explicit --data-dir is the only place looked at; without it {elsewhere} are searched.\n",
    )


def _idx_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _idx_files_missing(places: list[tuple[str, Path]]) -> str:
    """Where a searched folder holds some of the four IDX files but not all: which it lacks."""
    for _, folder in places:
        missing = [stem for stem in FASHION_MNIST_FILES.values() if _idx_file(folder, stem) is None]
        if 0 < len(missing) < len(FASHION_MNIST_FILES):
            return f"; {folder} lacks {', '.join(m + '[.gz]' for m in missing)}"
    return ""


def _fashion_mnist_places(data_dir: str | os.PathLike | None) -> list[tuple[str, Path]]:
    places = []
    for label, base in _bases(data_dir):
        places += [(label, base), (label, base / "fashion-mnist"), (label, base / "FashionMNIST" / "raw")]
    if not data_dir:
        places.append(("Debian package dataset-fashion-mnist", Path(DEBIAN_FASHION_MNIST)))
        places.append(("torchvision download cache", cache_dir() / "FashionMNIST" / "raw"))
    return places


def _fashion_mnist_howto(
    places: list[tuple[str, Path]], why: str = "", data_dir: str | os.PathLike | None = None
) -> str:
    searched = "\n".join(f"  - {p} ({label})" for label, p in places)
    where, explicit = _explicit_dir_notes(
        data_dir, "no folder below has all four IDX files" + _idx_files_missing(places),
        f"${ENV_DATA}, {DEBIAN_FASHION_MNIST} and the download cache",
    )
    return (
        f"Fashion-MNIST not found{where}" + (f" ({why})" if why else "") + ". Get it one of these ways:\n"
        "  1. sudo apt-get install dataset-fashion-mnist   (Debian/Ubuntu; installs "
        f"{DEBIAN_FASHION_MNIST})\n"
        "  2. --data-dir DIR (or data_dir=DIR) pointing at a folder with the four IDX files "
        "(train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
        "t10k-labels-idx1-ubyte[.gz])\n"
        f"  3. export {ENV_DATA}=DIR with those files in DIR or DIR/fashion-mnist\n"
        f"  4. --download (download=True) with internet access: torchvision fetches it into "
        f"{_download_root(data_dir) / 'FashionMNIST' / 'raw'}\n"
        f"{explicit}Searched, in order:\n{searched}"
    )


def _download_root(data_dir: str | os.PathLike | None) -> Path:
    """Where ``download=True`` puts files: the explicit data_dir (so that it then holds them), else
    the cache."""
    return Path(data_dir).expanduser() if data_dir else cache_dir()


def find_fashion_mnist(data_dir: str | os.PathLike | None = None) -> dict[str, Path]:
    """Locate the four Fashion-MNIST IDX files (plain or ``.gz``), first complete folder wins.

    Args:
        data_dir: when given, the only folder searched (with its ``fashion-mnist`` and
            ``FashionMNIST/raw`` sub-folders); when None, ``$RESNET_LAB_DATA`` likewise, then
            :data:`DEBIAN_FASHION_MNIST`, then the cache.

    Returns:
        ``{"train_images": path, "train_labels": ..., "test_images": ..., "test_labels": ...}``.

    Raises:
        DataNotFoundError: listing every way to get the files and every place searched.
    """
    places = _fashion_mnist_places(data_dir)
    for _, folder in places:
        files = {k: _idx_file(folder, stem) for k, stem in FASHION_MNIST_FILES.items()}
        if all(files.values()):
            return files  # type: ignore[return-value]
    raise DataNotFoundError(_fashion_mnist_howto(places, data_dir=data_dir))


def read_fashion_mnist(files: dict[str, Path]) -> ImageArrays:
    """Read the IDX files found by :func:`find_fashion_mnist` into uint8 (N, 1, 28, 28) tensors.

    Raises:
        IDXError: a file is not valid IDX (see :func:`~resnet_lab.data.idx.read_idx`).
        ValueError: images that are not uint8 28x28, image and label counts that differ, labels
            outside 0..9; the message names the file.
    """
    arrays = {k: read_idx(p, expected_ndim=3 if k.endswith("images") else 1) for k, p in files.items()}
    again = "; the file is not Fashion-MNIST's: delete it and get it again (see docs/DATA.md)"
    for split in ("train", "test"):
        xi, yi = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        x_file, y_file = files[f"{split}_images"], files[f"{split}_labels"]
        # Both splits must be 28x28: a fully convolutional net would otherwise train on one size
        # and be evaluated on another without a word.
        if xi.dtype != np.uint8 or xi.shape[1:] != (28, 28):
            raise ValueError(f"{x_file} holds {xi.dtype} images of {xi.shape[1]}x{xi.shape[2]} px, "
                             f"expected uint8 28x28{again}")
        if xi.shape[0] != yi.shape[0]:
            raise ValueError(
                f"{x_file} has {xi.shape[0]} images but {y_file} has "
                f"{yi.shape[0]} labels; the files do not belong together"
            )
        if yi.dtype.kind not in "iu":
            raise ValueError(f"{y_file} holds {yi.dtype} labels, expected integers 0..9{again}")
        bad = (yi < 0) | (yi >= len(FASHION_MNIST_CLASSES))
        if bad.any():
            raise ValueError(f"{y_file} has label {int(yi[bad][0])}, expected 0..9{again}")
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    return ImageArrays(
        train_x=t(arrays["train_images"]).unsqueeze(1), train_y=t(arrays["train_labels"]).long(),
        test_x=t(arrays["test_images"]).unsqueeze(1), test_y=t(arrays["test_labels"]).long(),
        classes=list(FASHION_MNIST_CLASSES), source=str(Path(files["train_images"]).parent),
    )


def _download_fashion_mnist(root: Path) -> None:
    import torchvision.datasets as tvd  # deferred: importing torchvision costs 2-3 s

    for train in (True, False):
        tvd.FashionMNIST(root=str(root), train=train, download=True)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None, *, download: bool = False) -> ImageArrays:
    """Find (:func:`find_fashion_mnist`), download when allowed and missing, and read Fashion-MNIST.

    Args:
        data_dir: the only folder searched when given (see :func:`find_fashion_mnist`).
        download: fetch it through torchvision when not found, into ``data_dir`` when given, else
            into :func:`cache_dir`.
    """
    try:
        files = find_fashion_mnist(data_dir)
    except DataNotFoundError:
        if not download:
            raise
        try:
            _download_fashion_mnist(_download_root(data_dir))
        except Exception as e:
            raise DataNotFoundError(
                _fashion_mnist_howto(_fashion_mnist_places(data_dir), f"download failed: {' '.join(str(e).split())}", data_dir)
            ) from e
        files = find_fashion_mnist(data_dir)
    return read_fashion_mnist(files)


# ----------------------------------------------------------------------------- CIFAR

_CIFAR = {
    "cifar10": dict(folder="cifar-10-batches-py", train=[f"data_batch_{i}" for i in range(1, 6)],
                    test=["test_batch"], meta="batches.meta", names="label_names", labels="labels",
                    tv="CIFAR10"),
    "cifar100": dict(folder="cifar-100-python", train=["train"], test=["test"], meta="meta",
                     names="fine_label_names", labels="fine_labels", tv="CIFAR100"),
}


class _DataUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays: a CIFAR batch cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"), ("codecs", "encode"),
        # pickle protocol 5 (Python 3.14's default) stores an array as a buffer: numpy rebuilds it here
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: a CIFAR batch holds only arrays and lists")


_CIFAR_AGAIN = "; delete it and get it again (see docs/DATA.md)"


def _load_batch(path: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """One pickled CIFAR file as a dict with str keys, which must hold ``keys``."""
    try:
        with open(path, "rb") as f:
            d = _DataUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except OSError:
        raise
    except Exception as e:  # a damaged pickle can fail in any way (a bad encoding name, a call with bad arguments)
        raise ValueError(f"{path} is not a readable CIFAR batch ({type(e).__name__}: {e}){_CIFAR_AGAIN}") from e
    if not isinstance(d, dict):
        raise ValueError(f"{path} holds a pickled {type(d).__name__}, not the dict of a CIFAR batch{_CIFAR_AGAIN}")
    # A key that is not UTF-8 is no entry of CIFAR's: kept visible for the "lacks" error, ignored otherwise.
    d = {(k.decode("utf-8", "backslashreplace") if isinstance(k, bytes) else k): v for k, v in d.items()}
    missing = [k for k in keys if k not in d]
    if missing:
        raise ValueError(
            f"{path} lacks the entries {missing} of a CIFAR batch (it has {sorted(map(str, d))}){_CIFAR_AGAIN}"
        )
    return d


def _cifar_batch_arrays(
    path: Path, d: dict[str, Any], labels_key: str, classes: list[str], meta: Path
) -> tuple[np.ndarray, np.ndarray]:
    """A batch's uint8 (N, 3, 32, 32) images and int64 labels, checked: N images and N labels,
    labels indexing ``classes`` (read from ``meta``), pixel values in 0..255 (a cast to uint8 would
    wrap 300 to 44 without a word)."""
    k = len(classes)
    try:
        x = np.asarray(d["data"])
        y = np.asarray(d[labels_key])
    except (TypeError, ValueError) as e:  # ragged lists
        raise ValueError(f"{path}: its data or {labels_key} are not arrays ({e}){_CIFAR_AGAIN}") from e
    if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: data has shape {x.shape}, expected (N, 3072){_CIFAR_AGAIN}")
    if x.shape[0] == 0:  # every batch of CIFAR's holds images: an empty one is a truncated file
        raise ValueError(f"{path} holds no images (data has shape {x.shape}){_CIFAR_AGAIN}")
    if x.dtype != np.uint8:
        if x.dtype.kind not in "iu" or (x.size and (x.min() < 0 or x.max() > 255)):
            lo_hi = f" from {x.min()} to {x.max()}" if x.size and x.dtype.kind in "iuf" else ""
            raise ValueError(f"{path}: data are {x.dtype}{lo_hi}, expected pixel values 0..255{_CIFAR_AGAIN}")
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{path} has {x.shape[0]} images but {labels_key} of shape {y.shape}, expected "
                         f"({x.shape[0]},){_CIFAR_AGAIN}")
    if y.size and y.dtype.kind not in "iu":
        raise ValueError(f"{path}: {labels_key} are {y.dtype}, expected integers 0..{k - 1}{_CIFAR_AGAIN}")
    bad = (y < 0) | (y >= k)
    if bad.any():
        raise ValueError(f"{path} has label {int(y[bad][0])}, expected 0..{k - 1} ({meta.name} names {k} classes): "
                         f"the files do not belong together; delete {path.parent} and get it again (see docs/DATA.md)")
    return x.astype(np.uint8).reshape(-1, 3, 32, 32), y.astype(np.int64)


def _cifar_class_names(meta: Path, key: str, names: Any) -> list[str]:
    """The class names of a meta file as str: distinct, non-empty, one line each, bytes UTF-8 (a
    Python 2 pickle's str names arrive Latin-1 decoded, as the file is read: real CIFAR's are ASCII)."""
    if not isinstance(names, (list, tuple)) or len(names) < 2:
        raise ValueError(f"{meta}: {key} is {names!r:.60}, expected a list of class names{_CIFAR_AGAIN}")
    classes: list[str] = []
    for i, raw in enumerate(names):
        try:  # a str with a lone surrogate (no UTF-8 text either) fails the encode
            name = raw.decode() if isinstance(raw, bytes) else raw
            if isinstance(name, str):
                name.encode("utf-8")
        except UnicodeError:
            raise ValueError(f"{meta}: {key}[{i}] is {raw!r:.40}, not UTF-8 text{_CIFAR_AGAIN}") from None
        # a name is a figure's tick label and a line of a report: None, 0 or "" would show as a class
        if not isinstance(name, str) or not name.strip() or name.splitlines() != [name]:
            raise ValueError(f"{meta}: {key}[{i}] is {raw!r:.40}, expected a non-empty class name on one line"
                             f"{_CIFAR_AGAIN}")
        if name in classes:
            raise ValueError(f"{meta}: {key} names {name!r:.40} twice (at {classes.index(name)} and {i}), expected "
                             f"distinct class names{_CIFAR_AGAIN}")
        classes.append(name)
    return classes


def _cifar_files_missing(places: list[tuple[str, Path]], needed: list[str]) -> str:
    """Where a searched folder holds some of CIFAR's files but not all: which it lacks."""
    for _, folder in places:
        absent = [f for f in needed if not (folder / f).is_file()]
        if 0 < len(absent) < len(needed):
            named = [f + (" (a folder, not a file)" if (folder / f).is_dir() else "") for f in absent]
            return f"{folder} lacks {', '.join(named)}"
    return ""


def _cifar_places(name: str, data_dir: str | os.PathLike | None) -> list[tuple[str, Path]]:
    folder = _CIFAR[name]["folder"]
    places = []
    for label, base in _bases(data_dir) + ([] if data_dir else [("download cache", cache_dir())]):
        places += [(label, base / folder), (label, base)] if base.name != folder else [(label, base)]
    return places


def read_cifar(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = False) -> ImageArrays:
    """Read CIFAR-10/100 from torchvision's python batches into uint8 (N, 3, 32, 32) tensors.

    Args:
        name: "cifar10" or "cifar100".
        data_dir: folder holding ``cifar-10-batches-py``/``cifar-100-python`` (or that folder
            itself), the only place searched when given; when None, ``$RESNET_LAB_DATA``, then the
            cache are searched.
        download: fetch through torchvision when not found, into ``data_dir`` when given, else into
            :func:`cache_dir`.

    Raises:
        DataNotFoundError: the files are in none of the places searched (naming the files a
            folder that holds some of them lacks).
        ValueError: a file that is not a pickled dict with CIFAR's entries, class names that are
            not distinct one-line text (bytes: UTF-8), a batch without images, labels outside
            0..len(class names)-1 or not one per image, data that are not (N, 3072) values in
            0..255; the message names the file.
    """
    spec = _CIFAR[name]
    needed = spec["train"] + spec["test"] + [spec["meta"]]
    places = _cifar_places(name, data_dir)
    hit = next((p for _, p in places if all((p / f).is_file() for f in needed)), None)
    if hit is None and download:
        import torchvision.datasets as tvd  # deferred: importing torchvision costs 2-3 s

        root = _download_root(data_dir)
        try:
            getattr(tvd, spec["tv"])(root=str(root), train=True, download=True)
        except Exception as e:
            raise DataNotFoundError(f"downloading {name} into {root} failed: {' '.join(str(e).split())}; without "
                                    f"internet, fetch {spec['folder']}/ ({', '.join(needed)}; "
                                    "https://www.cs.toronto.edu/~kriz/cifar.html) elsewhere and give --data-dir DIR "
                                    "(data_dir=) holding it") from e
        hit = root / spec["folder"]
    if hit is None:
        searched = "\n".join(f"  - {p} ({label})" for label, p in places)
        lacks = _cifar_files_missing(places, needed)
        incomplete = f"no complete {spec['folder']}/ in it, nor its files directly in it"
        where, explicit = _explicit_dir_notes(
            data_dir, incomplete + (f"; {lacks}" if lacks else ""),
            f"${ENV_DATA} and the download cache",
        )
        where = where or (f" ({lacks})" if lacks else "")
        raise DataNotFoundError(
            f"{name} not found{where}. Get it one of these ways:\n"
            f"  1. --download (download=True) with internet access: torchvision fetches it into "
            f"{_download_root(data_dir)}\n"
            f"  2. --data-dir DIR with DIR/{spec['folder']}/ holding {', '.join(needed)} "
            "(torchvision's python version, https://www.cs.toronto.edu/~kriz/cifar.html)\n"
            f"  3. export {ENV_DATA}=DIR likewise\n"
            f"{explicit}Searched, in order:\n{searched}"
        )

    meta = hit / spec["meta"]
    classes = _cifar_class_names(meta, spec["names"], _load_batch(meta, (spec["names"],))[spec["names"]])

    def split(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for f in files:
            d = _load_batch(hit / f, ("data", spec["labels"]))
            x, y = _cifar_batch_arrays(hit / f, d, spec["labels"], classes, meta)
            xs.append(x)
            ys.append(y)
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    tx, ty = split(spec["train"])
    vx, vy = split(spec["test"])
    return ImageArrays(tx, ty, vx, vy, classes, source=str(hit))


# ----------------------------------------------------------------------------- fake


def fake_arrays(
    image_size: int, channels: int, seed: int, n_train: int = FAKE_TRAIN_SAMPLES, n_test: int = 128,
    k: int = FAKE_CLASSES,
) -> ImageArrays:
    """The ``fake`` dataset: each class is a smooth random pattern plus noise, so a smoke run can
    learn something.

    Args:
        image_size: side in px.
        channels: 1 or 3.
        seed: the data's seed.
        n_train, n_test: samples per split.
        k: classes (named ``class0``, ``class1``...).
    """
    g = torch.Generator().manual_seed(seed)
    protos = torch.rand(k, channels, 4, 4, generator=g) * 255
    protos = F.interpolate(protos, size=(image_size, image_size), mode="bilinear", align_corners=False)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n) % k
        y = y[torch.randperm(n, generator=g)]
        noise = torch.rand(n, channels, image_size, image_size, generator=g) * 255
        return (0.6 * protos[y] + 0.4 * noise).round().clamp(0, 255).to(torch.uint8), y

    tx, ty = make(n_train)
    vx, vy = make(n_test)
    return ImageArrays(tx, ty, vx, vy, [f"class{i}" for i in range(k)], source=f"random (seed {seed})")



def read_arrays(config: DataConfig) -> ImageArrays:
    """Both splits of an in-memory dataset (``fashion-mnist``, ``cifar10``, ``cifar100``, ``fake``)
    as stored; the fake data already at ``config``'s image size and channels."""
    if config.name == "fashion-mnist":
        return load_fashion_mnist(config.data_dir, download=config.download)
    if config.name in _CIFAR:
        return read_cifar(config.name, config.data_dir, download=config.download)
    if config.name == "fake":
        return fake_arrays(config.image_size or 32, config.channels, config.seed)
    raise ValueError(f"{config.name} is not an in-memory dataset; its files are streamed (find_folder_samples)")


# ----------------------------------------------------------------------------- image folders


@dataclass
class FolderSamples:
    """The images of a folder dataset, split, before any class or subset selection.

    Attributes:
        root: the folder given.
        train_dir: where the training classes are (``root`` or its ``train/``).
        classes: class names (sub-folder names, sorted), index = label.
        train, test: ``(path, label)`` of each image.
        sizes: ``(width, height)`` of every image found in ``train_dir`` (held-out ones included).
        held_out: the test split was held out of ``train_dir`` (there is no val/ folder).
    """

    root: Path
    train_dir: Path
    classes: list[str]
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]
    sizes: list[tuple[int, int]]
    held_out: bool = False


def _refuse_shared_images(train: list[tuple[str, int]], test: list[tuple[str, int]], train_dir: Path,
                          val_dir: Path) -> None:
    """Refuse a val/ whose images are training images through symbolic links (val/cats -> train/cats,
    or one linked file): the run would report its accuracy on images it trained on, as a plausible
    number nobody would question."""
    trained = {os.path.realpath(p): p for p, _ in train}
    shared = [(p, trained[real]) for p, _ in test if (real := os.path.realpath(p)) in trained]
    if shared:
        path, same = shared[0]
        raise ValueError(
            f"{len(shared)} of the {len(test)} test image(s) in {val_dir} are training images of {train_dir} through "
            f"symbolic links, e.g. {path} is {os.path.realpath(same)}: the test accuracy would be measured on images "
            f"the model trained on; remove the link(s) and give {val_dir} images of its own, or remove {val_dir} to "
            f"hold out a share of each class instead (--val-fraction)")


def find_folder_samples(data_dir: str | os.PathLike | None, val_fraction: float, seed: int) -> FolderSamples:
    """Scan a class-per-folder tree (:func:`~resnet_lab.data.folder.scan_class_folders`); its
    ``val/`` (or ``valid``, ``validation``, ``test``) is the test split, else a seeded
    ``val_fraction`` of each class is held out (:func:`~resnet_lab.data.selection.hold_out`).

    Args:
        data_dir: the folder (``--data-dir``).
        val_fraction: share of each class held out when there is no val/ folder.
        seed: the hold-out's seed.

    Raises:
        ValueError: no data_dir, a single class, or an unusable folder (see ``scan_class_folders``).
        FileNotFoundError, NotADirectoryError: ``data_dir`` is missing or a file.
    """
    if data_dir is None:
        raise ValueError("dataset 'folder' needs data_dir (--data-dir DIR) with one sub-folder per class")
    check_data_dir(data_dir, searched=False)
    data_dir = Path(data_dir).expanduser()  # --data-dir=~/pets: the shell leaves that ~ to us, as for CIFAR
    train_dir, val_dir = find_split_dirs(data_dir)
    if val_dir is not None and val_fraction != DEFAULT_VAL_FRACTION:  # it would change nothing
        raise ValueError(f"val_fraction (--val-fraction) {val_fraction:g} holds out a share of a folder without a "
                         f"val/ folder, and {data_dir} has {val_dir}, which is the test split: leave it out, or point "
                         f"--data-dir at {train_dir} to hold out a share of it instead")
    if val_dir is not None and seed != 0:  # no images are held out: the seed would pick none
        raise ValueError(f"split_seed {seed} picks the images held out of a folder without a val/ folder, and "
                         f"{data_dir} has {val_dir}, which is the test split: leave it out, or point --data-dir at "
                         f"{train_dir} to hold out a share of it instead")
    scan = scan_class_folders(train_dir)
    train = scan.samples
    if val_dir is not None:
        test = scan_class_folders(val_dir, classes=scan.classes).samples
        _refuse_shared_images(train, test, train_dir, val_dir)
    else:
        mask = hold_out(torch.tensor([lab for _, lab in train], dtype=torch.long), val_fraction, seed).tolist()
        test = [s for s, m in zip(train, mask) if m]
        train = [s for s, m in zip(train, mask) if not m]
    if len(scan.classes) < 2:
        # One class trains to a meaningless 100%: every prediction is right.
        raise ValueError(
            f"image folder {train_dir} has one class sub-folder, {scan.classes[0]!r}; a classifier needs at least 2 "
            f"classes: put each class's images in its own sub-folder ({train_dir}/<class>/<image>)"
        )
    return FolderSamples(root=Path(data_dir), train_dir=train_dir, classes=scan.classes, train=train, test=test,
                         sizes=list(scan.sizes), held_out=val_dir is None)
