"""Data sources and :func:`load_data`, the one entry point the trainer uses.

Sources (see docs/DATA.md):

* ``fashion-mnist``: the four IDX files, in ``data_dir`` when it is given (and nowhere else), else
  looked for in ``$RESNET_LAB_DATA``, the Debian package path (:data:`DEBIAN_FASHION_MNIST`), then
  the torchvision download cache.
* ``cifar10`` / ``cifar100``: torchvision's python-pickle batches (``cifar-10-batches-py``,
  ``cifar-100-python``) in ``data_dir`` when given, else ``$RESNET_LAB_DATA`` or the cache;
  downloaded through torchvision only with ``download=True``. The batches are read here with a
  restricted unpickler (numpy arrays, lists, dicts, bytes only) rather than through torchvision's
  Dataset, which skips its per-sample PIL conversion and its md5 pass.
* ``folder``: a class-per-folder tree (:mod:`resnet_lab.data.folder`), streamed from disk.
* ``fake``: class-dependent random images for smoke runs.

The first three and ``fake`` become uint8 tensors on the device served by
:class:`~resnet_lab.data.loaders.InMemoryLoader`.
"""

from __future__ import annotations

import difflib
import io
import os
import pickle
import statistics
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .folder import find_split_dirs, scan_class_folders, ImageFileDataset
from .idx import read_idx
from .loaders import InMemoryLoader, StreamingLoader
from .transforms import IMAGENET_MEAN, IMAGENET_STD, SMALL_INPUT_MAX, check_erase_probability, folder_transforms

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_FILES",
    "MIN_IMAGE_SIZE",
    "DataBundle",
    "DataNotFoundError",
    "DatasetInfo",
    "cache_dir",
    "channel_stats",
    "find_fashion_mnist",
    "load_data",
    "read_cifar",
    "read_fashion_mnist",
    "select_per_class",
    "select_subset",
]

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "folder", "fake")
FAKE_TRAIN_SAMPLES = 512  # training images of the `fake` dataset
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
_GRAY_IMAGENET_MEAN, _GRAY_IMAGENET_STD = (0.449,), (0.226,)  # channel means of IMAGENET_MEAN/STD
# The smallest image side accepted. The CIFAR-style ResNets used for inputs up to 64 px halve the
# resolution twice (stages 2 and 3): from 4 px on, each stride-2 convolution halves a real map
# (4 -> 2 -> 1); below it one runs on a single pixel, i.e. mostly on zero padding, and the pad-crop
# augmentation (at least 1 px) shifts by half the image. Sizes like 1 or 0 are typos, not tasks.
MIN_IMAGE_SIZE = 4


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are in none of the places searched; the message lists how to get them."""


@dataclass
class DatasetInfo:
    """What a model needs to know about its data (saved in ``model.json`` by the trainer).

    Attributes:
        name: "fashion-mnist", "cifar10", "cifar100", "folder" or "fake".
        classes: class names, index = label.
        input_size: (C, H, W) as the model sees it.
        mean, std: per-channel normalization on the 0..1 scale.
        resize: how prediction resizes a new image (see :func:`~resnet_lab.data.to_model_input`):
            "whole" (resize to H, W), "crop" (short side to H, then center crop) or "auto".
        source: where the data were read from (informational).
    """

    name: str
    classes: list[str]
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "auto"
    source: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """A dict for ``model.json`` (``json.dump`` writes the tuples as lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DatasetInfo":
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        known = {f for f in cls.__dataclass_fields__}
        d = {k: v for k, v in d.items() if k in known}
        d["input_size"] = tuple(int(v) for v in d["input_size"])
        d["mean"], d["std"] = tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"])
        d["classes"] = list(d["classes"])
        return cls(**d)


@dataclass
class DataBundle:
    """Train and test loaders plus the :class:`DatasetInfo`.

    Attributes:
        info: dataset description.
        train: shuffled, augmented (when asked) loader; yields ``(x, y)`` on the device.
        test: unshuffled, unaugmented, nothing dropped.
        num_train, num_test: samples in each split (all ranks together).
    """

    info: DatasetInfo
    train: InMemoryLoader | StreamingLoader
    test: InMemoryLoader | StreamingLoader
    num_train: int
    num_test: int


@dataclass
class _Arrays:
    train_x: torch.Tensor  # (N, C, H, W) uint8
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


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
        data_dir, "no folder below has all four IDX files",
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


def read_fashion_mnist(files: dict[str, Path]) -> _Arrays:
    """Read the IDX files found by :func:`find_fashion_mnist` into uint8 (N, 1, 28, 28) tensors."""
    arrays = {k: read_idx(p, expected_ndim=3 if k.endswith("images") else 1) for k, p in files.items()}
    for split in ("train", "test"):
        xi, yi = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if xi.shape[0] != yi.shape[0]:
            raise ValueError(
                f"{files[f'{split}_images']} has {xi.shape[0]} images but {files[f'{split}_labels']} has "
                f"{yi.shape[0]} labels; the files do not belong together"
            )
        if yi.size and yi.max() >= len(FASHION_MNIST_CLASSES):
            raise ValueError(f"{files[f'{split}_labels']} has label {int(yi.max())}, expected 0..9")
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    return _Arrays(
        train_x=t(arrays["train_images"]).unsqueeze(1), train_y=t(arrays["train_labels"]).long(),
        test_x=t(arrays["test_images"]).unsqueeze(1), test_y=t(arrays["test_labels"]).long(),
        classes=list(FASHION_MNIST_CLASSES), source=str(Path(files["train_images"]).parent),
    )


def _download_fashion_mnist(root: Path) -> None:
    from torchvision.datasets import FashionMNIST

    for train in (True, False):
        FashionMNIST(root=str(root), train=train, download=True)


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
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: a CIFAR batch holds only arrays and lists")


def _load_batch(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            d = _DataUnpickler(io.BytesIO(f.read()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError) as e:
        raise ValueError(f"{path} is not a readable CIFAR batch ({e}); delete it and get it again") from e
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _cifar_places(name: str, data_dir: str | os.PathLike | None) -> list[tuple[str, Path]]:
    folder = _CIFAR[name]["folder"]
    places = []
    for label, base in _bases(data_dir) + ([] if data_dir else [("download cache", cache_dir())]):
        places += [(label, base / folder), (label, base)] if base.name != folder else [(label, base)]
    return places


def read_cifar(name: str, data_dir: str | os.PathLike | None = None, *, download: bool = False) -> _Arrays:
    """Read CIFAR-10/100 from torchvision's python batches into uint8 (N, 3, 32, 32) tensors.

    Args:
        name: "cifar10" or "cifar100".
        data_dir: folder holding ``cifar-10-batches-py``/``cifar-100-python`` (or that folder
            itself), the only place searched when given; when None, ``$RESNET_LAB_DATA``, then the
            cache are searched.
        download: fetch through torchvision when not found, into ``data_dir`` when given, else into
            :func:`cache_dir`.
    """
    spec = _CIFAR[name]
    needed = spec["train"] + spec["test"] + [spec["meta"]]
    places = _cifar_places(name, data_dir)
    hit = next((p for _, p in places if all((p / f).is_file() for f in needed)), None)
    if hit is None and download:
        import torchvision.datasets as tvd

        root = _download_root(data_dir)
        try:
            getattr(tvd, spec["tv"])(root=str(root), train=True, download=True)
        except Exception as e:
            raise DataNotFoundError(f"downloading {name} into {root} failed: {e}") from e
        hit = root / spec["folder"]
    if hit is None:
        searched = "\n".join(f"  - {p} ({label})" for label, p in places)
        where, explicit = _explicit_dir_notes(
            data_dir, f"no complete {spec['folder']}/ in it, nor its files directly in it",
            f"${ENV_DATA} and the download cache",
        )
        raise DataNotFoundError(
            f"{name} not found{where}. Get it one of these ways:\n"
            f"  1. --download (download=True) with internet access: torchvision fetches it into "
            f"{_download_root(data_dir)}\n"
            f"  2. --data-dir DIR with DIR/{spec['folder']}/ holding {', '.join(needed)} "
            "(torchvision's python version, https://www.cs.toronto.edu/~kriz/cifar.html)\n"
            f"  3. export {ENV_DATA}=DIR likewise\n"
            f"{explicit}Searched, in order:\n{searched}"
        )

    def split(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for f in files:
            d = _load_batch(hit / f)
            if "data" not in d or spec["labels"] not in d:
                raise ValueError(f"{hit / f} lacks 'data'/'{spec['labels']}' entries: not a {name} batch")
            x = np.asarray(d["data"], dtype=np.uint8)
            if x.ndim != 2 or x.shape[1] != 3 * 32 * 32:
                raise ValueError(f"{hit / f}: data has shape {x.shape}, expected (N, 3072)")
            xs.append(x.reshape(-1, 3, 32, 32))
            ys.append(np.asarray(d[spec["labels"]], dtype=np.int64))
        return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ys))

    tx, ty = split(spec["train"])
    vx, vy = split(spec["test"])
    names = _load_batch(hit / spec["meta"])[spec["names"]]
    classes = [c.decode() if isinstance(c, bytes) else str(c) for c in names]
    return _Arrays(tx, ty, vx, vy, classes, source=str(hit))


# ----------------------------------------------------------------------------- fake


def _fake(image_size: int, channels: int, seed: int, n_train: int = FAKE_TRAIN_SAMPLES, n_test: int = 128, k: int = 10) -> _Arrays:
    # Each class is a smooth random pattern plus noise, so a smoke run can learn something.
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
    return _Arrays(tx, ty, vx, vy, [f"class{i}" for i in range(k)], source=f"random (seed {seed})")


# ----------------------------------------------------------------------------- selection


def _class_ranks(labels: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample's rank within its class under a seeded shuffle, and the shuffle itself."""
    n = labels.numel()
    perm = torch.randperm(n, generator=generator)
    lp = labels[perm]
    order = torch.argsort(lp, stable=True)  # shuffled positions grouped by class
    counts = torch.bincount(lp)
    starts = torch.cumsum(counts, 0) - counts
    ranks = torch.empty(n, dtype=torch.long)
    ranks[perm[order]] = torch.arange(n) - starts[lp[order]]
    pos = torch.empty(n, dtype=torch.long)
    pos[perm] = torch.arange(n)
    return ranks, pos


def select_subset(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """Indices (ascending) of ``n`` samples chosen at random, stratified: classes are taken in
    turn, so every class gets ``n // k`` or one more while it has samples left.

    Args:
        labels: (N,) int labels.
        n: how many to keep (all if ``n >= N``).
        seed: the selection's seed.
    """
    if n < 1:
        raise ValueError(f"subset must be at least 1, got {n}")
    if n >= labels.numel():
        return torch.arange(labels.numel())
    ranks, pos = _class_ranks(labels, torch.Generator().manual_seed(_selection_seed(seed)))
    key = ranks * labels.numel() + pos  # round-robin over classes, random class order per round
    return torch.sort(torch.argsort(key)[:n]).values


def select_per_class(labels: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Indices (ascending) of ``k`` random samples of each class (all of a class with fewer).

    Args:
        labels: (N,) int labels.
        k: samples per class.
        seed: the selection's seed.
    """
    if k < 1:
        raise ValueError(f"per_class must be at least 1, got {k}")
    ranks, _ = _class_ranks(labels, torch.Generator().manual_seed(_selection_seed(seed)))
    return torch.nonzero(ranks < k).flatten()


def _selection_seed(seed: int) -> int:
    # A stream apart from the epoch orders, so subset choice and epoch-0 order are not correlated.
    return (int(seed) * 1_000_003 + 0x5E1EC7) % (2**63 - 1)


def _filter_classes(x: torch.Tensor, y: torch.Tensor, keep: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    lut = torch.full((int(y.max()) + 1 if y.numel() else 1,), -1, dtype=torch.long)
    for new, old in enumerate(keep):
        if old < lut.numel():
            lut[old] = new
    new_y = lut[y]
    m = new_y >= 0
    return x[m], new_y[m]


# ----------------------------------------------------------------------------- conversions


def _convert_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1:
        return x.expand(-1, channels, -1, -1).contiguous()
    if c == 3 and channels == 1:
        # ITU-R 601-2 luma, the weights of PIL's convert("L").
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        return (x.float() * w).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
    raise ValueError(f"cannot convert {c}-channel images to {channels} channels; use in_channels 1 or 3")


def _resize(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    if x.shape[-2:] == (size, size):
        return x
    out = [
        F.interpolate(x[i : i + chunk].float(), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=True).round().clamp(0, 255).to(torch.uint8)
        for i in range(0, x.shape[0], chunk)
    ]
    return torch.cat(out) if out else x.new_empty(x.shape[0], x.shape[1], size, size)


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


# ----------------------------------------------------------------------------- entry point


def _check_name(name: str) -> str:
    key = name.lower().replace("_", "-")
    key = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}.get(key, key)
    if key not in DATASETS:
        close = difflib.get_close_matches(key, DATASETS, n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}.{hint}")
    return key


def _select(
    y: torch.Tensor, subset: int | None, per_class: int | None, seed: int, what: str
) -> torch.Tensor | None:
    """Indices of the training samples kept by ``per_class`` then ``subset`` (None: all).

    Args:
        what: the data's name for the error message (e.g. "fake", "image folder DIR").
    """
    idx = None
    if per_class is not None:
        idx = select_per_class(y, per_class, seed)
    if subset is not None:
        n = y.numel() if idx is None else idx.numel()
        if subset > n:
            # select_subset would quietly keep all n: a run "on N images" must not train on fewer.
            after = f" after per_class={per_class}" if per_class is not None else ""
            raise ValueError(
                f"--subset {subset} is more than the {n} training images of {what}{after}; "
                f"drop --subset to train on all {n}, or pass a smaller N"
            )
        inner = select_subset(y if idx is None else y[idx], subset, seed)
        idx = inner if idx is None else idx[inner]
    return idx


def _check_classes(classes: Sequence[int] | None, names: list[str]) -> list[int] | None:
    if classes is None:
        return None
    classes = [int(c) for c in classes]
    bad = [c for c in classes if not 0 <= c < len(names)]
    if bad or len(set(classes)) != len(classes) or not classes:
        raise ValueError(
            f"classes={classes}: expected distinct labels in 0..{len(names) - 1} ({len(names)} classes), "
            f"e.g. classes=[0, 1, 2, 3, 4]"
        )
    if len(classes) < 2:
        # One class trains to a meaningless 100%: every prediction is right.
        raise ValueError(
            f"classes={classes} keeps only one class ({names[classes[0]]!r}); a classifier needs at least 2, "
            f"e.g. classes=[{classes[0]}, {(classes[0] + 1) % len(names)}]"
        )
    return classes


def _check_arguments(
    batch_size: int, eval_batch_size: int | None, image_size: int | None, in_channels: int | None,
    subset: int | None, per_class: int | None, random_erasing: float,
) -> None:
    """Refuse bad :func:`load_data` arguments before any file is read, each with its CLI flag."""
    if batch_size < 1:
        raise ValueError(f"batch_size (--batch-size) must be at least 1, got {batch_size}")
    if eval_batch_size is not None and eval_batch_size < 1:
        raise ValueError(f"eval_batch_size must be at least 1 (or None for batch_size), got {eval_batch_size}")
    if in_channels is not None and in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 or 3, got {in_channels}")
    if image_size is not None and image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size (--image-size) must be at least {MIN_IMAGE_SIZE} px, got {image_size}: smaller images leave "
            "the networks' stride-2 stages nothing but padding; leave it out to use the dataset's own size"
        )
    if subset is not None and subset < 1:
        raise ValueError(
            f"subset (--subset) must be a positive number of training images, got {subset}; drop it to train on all"
        )
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class must be a positive number of training images per class, got {per_class}")
    check_erase_probability(random_erasing)


def load_data(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    batch_size: int = 128,
    device: str | torch.device = "cpu",
    augment: bool = True,
    subset: int | None = None,
    seed: int = 0,
    num_workers: int = 2,
    image_size: int | None = None,
    in_channels: int | None = None,
    download: bool = False,
    val_fraction: float = 0.1,
    drop_last: bool = True,
    rank: int = 0,
    world_size: int = 1,
    classes: Sequence[int] | None = None,
    per_class: int | None = None,
    flip: bool = True,
    channels_last: bool = False,
    eval_batch_size: int | None = None,
    random_erasing: float = 0.0,
) -> DataBundle:
    """Load a dataset and return train/test loaders that yield normalized batches on ``device``.

    Args:
        name: "fashion-mnist", "cifar10", "cifar100", "folder" or "fake".
        data_dir: the folder holding the data (required for "folder"). When given, it is the only
            place looked at; when None, ``$RESNET_LAB_DATA``, the Debian path (Fashion-MNIST) and
            the download cache are searched.
        batch_size: training samples per batch per rank.
        device: where data live (in-memory datasets) and batches arrive.
        augment: random pad-crop + flip (in-memory) or RandomResizedCrop + flip (folder) for train.
        subset: keep N training samples, chosen at random and stratified by class (quick runs);
            more than there are is an error.
        seed: seeds epoch order, augmentation, subset/per-class choice, the folder val split and
            the fake data.
        num_workers: decoding workers for "folder" (in-memory datasets need none).
        image_size: output side length, at least :data:`MIN_IMAGE_SIZE` (4); default: native (28
            Fashion-MNIST, 32 CIFAR and fake); for folders the median short side (at least 4) when
            every image is at most 64 px, else 224.
        in_channels: 1 or 3; default: native (1 Fashion-MNIST, 3 otherwise). Grayscale is
            repeated to 3 channels; RGB becomes gray with the ITU-R 601-2 luma weights.
        download: allow torchvision to download Fashion-MNIST/CIFAR into ``data_dir`` when given,
            else into :func:`cache_dir`.
        val_fraction: for a folder without train/val sub-folders, the share of each class held out
            as the test split (seeded).
        drop_last: drop the last incomplete training batch.
        rank, world_size: distributed shard of both splits (see :mod:`resnet_lab.data.loaders`).
        classes: keep only these original labels, relabeled 0..k-1 in the given order, in both
            splits (e.g. pretrain on [0..4], transfer to [5..9]).
        per_class: keep this many training samples per class (seeded).
        flip: allow horizontal flips in augmentation.
        channels_last: batches in ``torch.channels_last`` memory format.
        eval_batch_size: test batch size (default ``batch_size``).
        random_erasing: with ``augment``, the probability of erasing a random rectangle of a
            training image to the mean (Zhong et al. 2017); 0 (default) turns it off.

    Returns:
        A :class:`DataBundle`. Mean/std of in-memory datasets are computed on the training split
        after class filtering and channel/size conversion, before ``subset``/``per_class``, so a
        quick run normalizes exactly like the full run.

    Raises:
        DataNotFoundError: the files are not found (the message lists every way to get them).
        FileNotFoundError, NotADirectoryError: a folder dataset's ``data_dir`` is missing or a file.
        ValueError: bad arguments (``subset`` beyond the data, ``image_size`` below 4, a single
            class, ...) or unusable folders, with what was expected.
    """
    key = _check_name(name)
    _check_arguments(batch_size, eval_batch_size, image_size, in_channels, subset, per_class, random_erasing)
    eval_bs = eval_batch_size or batch_size
    if key == "folder":
        return _load_folder(
            data_dir, batch_size=batch_size, eval_batch_size=eval_bs, device=device, augment=augment,
            subset=subset, seed=seed, num_workers=num_workers, image_size=image_size, in_channels=in_channels,
            val_fraction=val_fraction, drop_last=drop_last, rank=rank, world_size=world_size, classes=classes,
            per_class=per_class, channels_last=channels_last, flip=flip, random_erasing=random_erasing,
        )
    if key == "fashion-mnist":
        try:
            files = find_fashion_mnist(data_dir)
        except DataNotFoundError:
            if not download:
                raise
            try:
                _download_fashion_mnist(_download_root(data_dir))
            except Exception as e:
                raise DataNotFoundError(
                    _fashion_mnist_howto(_fashion_mnist_places(data_dir), f"download failed: {e}", data_dir)
                ) from e
            files = find_fashion_mnist(data_dir)
        arrays = read_fashion_mnist(files)
    elif key in _CIFAR:
        arrays = read_cifar(key, data_dir, download=download)
    else:
        arrays = _fake(image_size or 32, in_channels or 3, seed)

    keep = _check_classes(classes, arrays.classes)
    tx, ty, vx, vy, names = arrays.train_x, arrays.train_y, arrays.test_x, arrays.test_y, arrays.classes
    if keep is not None:
        tx, ty = _filter_classes(tx, ty, keep)
        vx, vy = _filter_classes(vx, vy, keep)
        names = [names[c] for c in keep]
    channels = in_channels or tx.shape[1]
    if channels < tx.shape[1]:  # reduce channels before resizing, expand after: less to resize
        tx, vx = _convert_channels(tx, channels), _convert_channels(vx, channels)
    if image_size is not None:
        tx, vx = _resize(tx, image_size), _resize(vx, image_size)
    mean, std = channel_stats(tx)
    if channels > tx.shape[1]:  # gray repeated to RGB: every channel has the gray statistics
        tx, vx = _convert_channels(tx, channels), _convert_channels(vx, channels)
        mean, std = mean * channels, std * channels
    idx = _select(ty, subset, per_class, seed, key)
    if idx is not None:
        tx, ty = tx[idx], ty[idx]
    h = tx.shape[-1]
    info = DatasetInfo(
        name=key, classes=names, input_size=(channels, tx.shape[-2], h), mean=mean, std=std,
        resize="whole", source=arrays.source,
    )
    # He et al. pad 4 px on 32 px CIFAR images; keep that ratio for other sizes (28 px -> 4).
    padding = max(1, round(h / 8))
    common = dict(mean=mean, std=std, seed=seed, device=device, rank=rank, world_size=world_size,
                  channels_last=channels_last)
    train = InMemoryLoader(tx, ty, batch_size=batch_size, shuffle=True, augment=augment, drop_last=drop_last,
                           padding=padding, flip=flip, random_erasing=random_erasing, **common)
    test = InMemoryLoader(vx, vy, batch_size=eval_bs, shuffle=False, augment=False, drop_last=False, **common)
    return DataBundle(info=info, train=train, test=test, num_train=int(tx.shape[0]), num_test=int(vx.shape[0]))


def _split_val(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Boolean mask of held-out samples: ``round(fraction * count)`` of each class, at least one
    for classes of two or more, never the whole class."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {fraction}")
    ranks, _ = _class_ranks(labels, torch.Generator().manual_seed(_selection_seed(seed) + 1))
    counts = torch.bincount(labels)
    n_val = torch.clamp(torch.round(counts.double() * fraction).long(), min=1)
    n_val = torch.minimum(n_val, counts - 1)
    return ranks < n_val[labels]


def _load_folder(
    data_dir: str | os.PathLike | None, *, batch_size: int, eval_batch_size: int, device: str | torch.device,
    augment: bool, subset: int | None, seed: int, num_workers: int, image_size: int | None,
    in_channels: int | None, val_fraction: float, drop_last: bool, rank: int, world_size: int,
    classes: Sequence[int] | None, per_class: int | None, channels_last: bool, flip: bool, random_erasing: float,
) -> DataBundle:
    if data_dir is None:
        raise ValueError("dataset 'folder' needs data_dir (--data-dir DIR) with one sub-folder per class")
    train_dir, val_dir = find_split_dirs(data_dir)
    scan = scan_class_folders(train_dir)
    train_s = scan.samples
    sizes = list(scan.sizes)
    if val_dir is not None:
        vscan = scan_class_folders(val_dir, classes=scan.classes)
        test_s = vscan.samples
    else:
        labels = torch.tensor([lab for _, lab in train_s])
        mask = _split_val(labels, val_fraction, seed).tolist()
        test_s = [s for s, m in zip(train_s, mask) if m]
        train_s = [s for s, m in zip(train_s, mask) if not m]
    names = scan.classes
    if len(names) < 2:
        # One class trains to a meaningless 100%: every prediction is right.
        raise ValueError(
            f"image folder {train_dir} has one class sub-folder, {names[0]!r}; a classifier needs at least 2 "
            f"classes: put each class's images in its own sub-folder ({train_dir}/<class>/<image>)"
        )
    keep = _check_classes(classes, names)
    if keep is not None:
        lut = {old: new for new, old in enumerate(keep)}
        train_s = [(p, lut[lab]) for p, lab in train_s if lab in lut]
        test_s = [(p, lut[lab]) for p, lab in test_s if lab in lut]
        names = [names[c] for c in keep]
    idx = _select(torch.tensor([lab for _, lab in train_s]), subset, per_class, seed, f"image folder {train_dir}")
    if idx is not None:
        train_s = [train_s[i] for i in idx.tolist()]
    if not test_s:
        warnings.warn(f"the test split of {data_dir} is empty; add images or a val/ folder", stacklevel=3)
    if image_size is None:
        # Small images (icons, CIFAR-like crops) keep their size; photos go to the ImageNet 224.
        small = all(max(w, h) <= SMALL_INPUT_MAX for w, h in sizes)
        image_size = max(MIN_IMAGE_SIZE, int(statistics.median(min(w, h) for w, h in sizes))) if small else 224
    channels = in_channels or 3
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (_GRAY_IMAGENET_MEAN, _GRAY_IMAGENET_STD)
    info = DatasetInfo(
        name="folder", classes=names, input_size=(channels, image_size, image_size), mean=mean, std=std,
        resize="crop", source=str(Path(data_dir)),
    )
    common = dict(seed=seed, num_workers=num_workers, device=device, rank=rank, world_size=world_size,
                  channels_last=channels_last)
    train_ds = ImageFileDataset(train_s, folder_transforms(image_size, channels, mean, std, train=augment, flip=flip,
                                                              random_erasing=random_erasing))
    test_tf = folder_transforms(image_size, channels, mean, std, train=False)
    train = StreamingLoader(train_ds, batch_size=batch_size, shuffle=True, drop_last=drop_last, **common)
    test = StreamingLoader(ImageFileDataset(test_s, test_tf) if test_s else _Empty(), batch_size=eval_batch_size,
                           shuffle=False, drop_last=False, **common)
    return DataBundle(info=info, train=train, test=test, num_train=len(train_s), num_test=len(test_s))


class _Empty(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 0

    def __getitem__(self, i: int) -> Any:
        raise IndexError(i)
