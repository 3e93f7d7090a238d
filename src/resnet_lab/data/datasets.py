"""The entry point: :func:`load_data` turns a :class:`~resnet_lab.data.DataConfig` into a
:class:`DataBundle`, train and test loaders plus the :class:`DatasetInfo` a model is saved with.

Fashion-MNIST, CIFAR and fake data become uint8 tensors on the device, served by
:class:`~resnet_lab.data.loaders.InMemoryLoader`; image folders are streamed from disk by
:class:`~resnet_lab.data.loaders.StreamingLoader`. The parts: ``config`` (the options), ``sources``
(where the files are, reading them), ``selection`` (classes, subsets, held-out splits), ``loaders``
and ``transforms``.
"""

from __future__ import annotations

import statistics
import warnings
from dataclasses import asdict, dataclass, replace
from itertools import compress
from typing import Any

import torch

from .config import MIN_IMAGE_SIZE, DataConfig, check_device_present, data_config, pick_device
from .folder import ImageFileDataset
from .._text import user_stacklevel
from .loaders import InMemoryLoader, StreamingLoader
from .selection import check_classes, keep_classes, select_training
from .sources import FAKE_TRAIN_SAMPLES, find_folder_samples, read_arrays
from .transforms import (
    GRAY_IMAGENET_MEAN,
    GRAY_IMAGENET_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    SMALL_INPUT_MAX,
    channel_stats,
    convert_channels,
    folder_transforms,
    resize_images,
)

# FAKE_TRAIN_SAMPLES stays importable from here for experiments/runner.py (resnet_lab.data has it).
__all__ = ["FAKE_TRAIN_SAMPLES", "DataBundle", "DatasetInfo", "load_data"]


@dataclass
class DatasetInfo:
    """What a model needs to know about its data (saved in ``model.json`` by the trainer).

    Attributes:
        name: "fashion-mnist", "cifar10", "cifar100", "folder" or "fake".
        classes: class names, index = label.
        input_size: (C, H, W) as the model sees it.
        mean, std: per-channel normalization on the 0..1 scale.
        resize: how prediction resizes a new image (see :func:`~resnet_lab.data.preprocess`):
            "whole" (resize to H, W), "crop" (short side to H, then center crop) or "auto".
        source: where the data were read from (informational).
        class_indices: the dataset's labels that were kept (``DataConfig.classes``), in the order of
            ``classes``; None when all were (``model.json`` records them, so that evaluating the
            run keeps the same classes).
        split_seed, val_fraction: the seed and share of the held-out test split of a folder without
            val/ (``model.json`` records them, so that evaluating the run holds out the same
            images); None otherwise.
    """

    name: str
    classes: list[str]
    input_size: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = "auto"
    source: str = ""
    split_seed: int | None = None
    val_fraction: float | None = None
    class_indices: tuple[int, ...] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """A dict for ``model.json`` (``json.dump`` writes the tuples as lists)."""
        return asdict(self)


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


def load_data(config: DataConfig | str | None = None, /, **fields: Any) -> DataBundle:
    """Load a dataset and return train/test loaders that yield normalized batches on the device.

    ``load_data(DataConfig("cifar10", batch_size=256))`` and ``load_data("cifar10", batch_size=256)``
    are the same call: a dataset name and keywords make the :class:`~resnet_lab.data.DataConfig`
    (whose fields and defaults are the options); keywords after a DataConfig replace its fields.

    Args:
        config: a DataConfig, or the dataset name: "fashion-mnist", "cifar10", "cifar100",
            "folder" or "fake".
        fields: DataConfig fields, e.g. ``data_dir``, ``batch_size``, ``subset``, ``mean``/``std``.

    Returns:
        A :class:`DataBundle`. Unless the config gives ``mean``/``std``, those of in-memory datasets
        are computed on the training split after class filtering and channel/size conversion,
        before ``subset``/``per_class``, so a quick run normalizes exactly like the full run;
        folders get ImageNet's.

    Raises:
        TypeError: a keyword that is not a DataConfig field (the message lists them).
        RuntimeError: ``device`` is a CUDA or MPS device this machine does not have.
        DataNotFoundError: the files are not found (the message lists every way to get them).
        FileNotFoundError, NotADirectoryError: a folder dataset's ``data_dir`` is missing or a file.
        ValueError: bad values (``subset`` beyond the data, ``image_size`` below 4, a single class,
            ...) or unusable folders, with what was expected.
    """
    config = data_config(config, **fields)
    check_device_present(config.device)  # before any file is read
    if config.device == "auto":  # the same choice as train's resolve_device
        config = replace(config, device=pick_device(config.device))
    return _load_folder(config) if config.name == "folder" else _load_in_memory(config)


def _load_in_memory(config: DataConfig) -> DataBundle:
    arrays = read_arrays(config)
    tx, ty, vx, vy, names = arrays.train_x, arrays.train_y, arrays.test_x, arrays.test_y, arrays.classes
    keep = check_classes(config.classes, names)
    if keep is not None:
        kept, ty = keep_classes(ty, keep)
        tx = tx[kept]
        kept, vy = keep_classes(vy, keep)
        vx = vx[kept]
        names = [names[c] for c in keep]
    channels = config.channels
    if channels < tx.shape[1]:  # reduce channels before resizing, expand after: less to resize
        tx, vx = convert_channels(tx, channels), convert_channels(vx, channels)
    if config.image_size is not None:
        tx, vx = resize_images(tx, config.image_size), resize_images(vx, config.image_size)
    mean, std = config.mean, config.std
    if mean is None:
        # Before gray is repeated to RGB: each RGB channel then has the gray statistics.
        mean, std = (stats * (channels // tx.shape[1]) for stats in channel_stats(tx))
        _check_spread(tx, std)
    tx, vx = convert_channels(tx, channels), convert_channels(vx, channels)
    idx = select_training(ty, config.subset, config.per_class, config.seed, config.name, names, keep)
    if idx is not None:
        tx, ty = tx[idx], ty[idx]
    h = tx.shape[-1]
    info = DatasetInfo(
        name=config.name, classes=names, input_size=(channels, tx.shape[-2], h), mean=mean, std=std,
        resize="whole", source=arrays.source, class_indices=tuple(keep) if keep is not None else None,
    )
    # He et al. pad 4 px on 32 px CIFAR images; keep that ratio for other sizes (28 px -> 4).
    padding = max(1, round(h / 8)) if config.crop_padding is None else config.crop_padding
    common = dict(mean=mean, std=std, seed=config.seed, device=config.device, rank=config.rank,
                  world_size=config.world_size, channels_last=config.channels_last)
    train = InMemoryLoader(tx, ty, batch_size=config.batch_size, shuffle=True, augment=config.augment,
                           drop_last=config.drop_last, padding=padding, flip=config.flip,
                           flip_mode=config.flip_mode,
                           random_erasing=config.random_erasing, **common)
    test = InMemoryLoader(vx, vy, batch_size=config.test_batch_size, shuffle=False, augment=False, drop_last=False,
                          **common)
    return DataBundle(info=info, train=train, test=test, num_train=int(tx.shape[0]), num_test=int(vx.shape[0]))


def _check_spread(images: torch.Tensor, std: tuple[float, ...]) -> None:
    """Refuse training images whose computed std is 0 in a channel (every pixel one value, or so
    nearly that the 4-decimal std rounds to 0): normalizing would divide by it and the first step's
    loss would be NaN, blamed on the learning rate."""
    for c, s in enumerate(std[: images.shape[1]]):
        if s == 0:
            value = int(images[:, c].flatten()[0])
            raise ValueError(f"channel {c} of the training images is {value}/255 in (nearly) every pixel: its std is 0, "
                             "and normalizing would divide by it; check the data (in Python, DataConfig's mean=... and "
                             "std=... give the statistics instead)")


def _load_folder(config: DataConfig) -> DataBundle:
    found = find_folder_samples(config.data_dir, config.val_fraction, config.split_seed)
    train_s, test_s, names = found.train, found.test, found.classes
    keep = check_classes(config.classes, names)
    if keep is not None:
        train_s, test_s = _keep_samples(train_s, keep), _keep_samples(test_s, keep)
        names = [names[c] for c in keep]
    idx = select_training(_labels(train_s), config.subset, config.per_class, config.seed,
                          f"image folder {found.train_dir}", names, keep)
    if idx is not None:
        train_s = [train_s[i] for i in idx.tolist()]
    if not test_s:
        warnings.warn(f"the test split of {config.data_dir} is empty; add images or a val/ folder", stacklevel=user_stacklevel())
    size = config.image_size or _folder_image_size(found.sizes)
    channels = config.channels
    mean, std = config.mean, config.std
    if mean is None:
        mean, std = (IMAGENET_MEAN, IMAGENET_STD) if channels == 3 else (GRAY_IMAGENET_MEAN, GRAY_IMAGENET_STD)
    info = DatasetInfo(
        name="folder", classes=names, input_size=(channels, size, size), mean=mean, std=std, resize="crop",
        source=str(found.root), split_seed=config.split_seed if found.held_out else None,
        val_fraction=config.val_fraction if found.held_out else None,
        class_indices=tuple(keep) if keep is not None else None,
    )
    common = dict(seed=config.seed, num_workers=config.num_workers, device=config.device, rank=config.rank,
                  world_size=config.world_size, channels_last=config.channels_last)
    train_tf = folder_transforms(size, channels, mean, std, train=config.augment, flip=config.flip,
                                 random_erasing=config.random_erasing)
    test_tf = folder_transforms(size, channels, mean, std, train=False)
    train = StreamingLoader(ImageFileDataset(train_s, train_tf), batch_size=config.batch_size, shuffle=True,
                            drop_last=config.drop_last, **common)
    test = StreamingLoader(ImageFileDataset(test_s, test_tf) if test_s else _Empty(),
                           batch_size=config.test_batch_size, shuffle=False, drop_last=False, **common)
    return DataBundle(info=info, train=train, test=test, num_train=len(train_s), num_test=len(test_s))


def _folder_image_size(sizes: list[tuple[int, int]]) -> int:
    """Small images (icons, CIFAR-like crops) keep their size (the median short side, at least
    :data:`MIN_IMAGE_SIZE`); photos go to the ImageNet 224."""
    if all(max(w, h) <= SMALL_INPUT_MAX for w, h in sizes):
        return max(MIN_IMAGE_SIZE, int(statistics.median(min(w, h) for w, h in sizes)))
    return 224


def _labels(samples: list[tuple[str, int]]) -> torch.Tensor:
    return torch.tensor([label for _, label in samples], dtype=torch.long)


def _keep_samples(samples: list[tuple[str, int]], keep: list[int]) -> list[tuple[str, int]]:
    """The samples of the classes in ``keep``, relabeled as :func:`keep_classes` does."""
    kept, labels = keep_classes(_labels(samples), keep)
    return [(path, label) for (path, _), label in zip(compress(samples, kept.tolist()), labels.tolist())]


class _Empty(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 0

    def __getitem__(self, i: int) -> Any:
        raise IndexError(i)
