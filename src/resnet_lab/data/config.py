"""DataConfig: every option of :func:`~resnet_lab.data.load_data` in one small dataclass, checked
once when it is made (the CLI's data flags map onto its fields one to one)."""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from .transforms import check_erase_probability, check_flip_mode

__all__ = ["DATASETS", "MIN_IMAGE_SIZE", "NATIVE_CHANNELS", "DataConfig", "check_device_is_name", "check_device_name",
           "check_data_dir", "check_device_present", "check_field_types", "check_image_size", "check_seed", "data_config",
           "pick_device"]

# torch.manual_seed's range (a signed or an unsigned 64-bit integer)
SEED_RANGE = (-(2 ** 63), 2 ** 64 - 1)
DEFAULT_VAL_FRACTION = 0.1  # a folder without val/: the share of each class held out for testing


def check_seed(seed: int, headroom: int = 0) -> None:
    """Refuse a seed torch cannot take (``Overflow when unpacking long long`` names nothing), with
    ``headroom`` for the seeds counted up from it (an experiment's seed, seed + 1...)."""
    low, high = SEED_RANGE
    if not _is_int(seed) or not low <= seed <= high - headroom:  # True would be 1, "3" or 1.0 a raw TypeError
        raise ValueError(f"seed (--seed) must be an integer from {low} to {high - headroom}, got {seed!r}")


def check_device_is_name(device: Any) -> None:
    """A TypeError unless ``device`` is a str or torch.device (``device=0`` was taken for cuda:0 and
    True for cuda:1): the one wording for load_data, train and evaluate."""
    if isinstance(device, bool) or not isinstance(device, (str, torch.device)):
        raise TypeError(f"device (--device) must be a device name (str) or torch.device, e.g. 'cpu', 'cuda:0' or "
                        f"'auto', got {device!r}")


def check_device_name(device: Any, *, training: bool = False) -> torch.device | str:
    """``device`` as a torch.device, if it is a name torch knows (a str or torch.device:
    ``device=0`` was taken for cuda:0) of a kind resnet-lab runs on, or ``'auto'`` as given
    (:func:`pick_device` chooses). The meta device is taken too (batches with shapes only), except
    with ``training``: train's resolver, whose words name ``--device``. The one check for both
    (xla, ipu: torch names them, the copy failed)."""
    check_device_is_name(device)
    if isinstance(device, str) and device == "auto":
        return device
    flag, names = (" (--device)" if training else ""), "auto, cpu, cuda, cuda:N or mps"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):  # torch's message lists every backend it knows
        raise ValueError(f"unknown device {str(device)!r}{flag}: use {names}") from None
    if dev.type not in ("cpu", "cuda", "mps") + (() if training else ("meta",)):
        raise ValueError(f"device {str(device)!r}{flag} is not one resnet-lab runs on: use {names}")
    return dev


def pick_device(device: str | torch.device) -> torch.device:
    """``'auto'`` as the device this machine runs best on: CUDA, then Apple's MPS, then the CPU; any
    other name as its torch.device. The one rule for load_data and train's ``resolve_device``."""
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def check_device_present(device: str | torch.device) -> torch.device:
    """Refuse, in one line, a CUDA or MPS device this machine lacks (torch's own error is a traceback
    about drivers, raised by the first copy of the data), or a CUDA index past its GPUs; returns the
    device (``auto`` picked). The one check: train's ``resolve_device`` calls it too, so both say the
    same (``RuntimeError``)."""
    dev = pick_device(check_device_name(device))
    cpu = "device='cpu' in Python, --device cpu on the command line"
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"device {str(device)!r} asked for, but Apple's MPS is not available here; use {cpu}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} asked for, but CUDA is not available here; use {cpu}")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise RuntimeError(f"device {str(device)!r} asked for, but this machine has {n} CUDA device"
                           f"{'s' if n != 1 else ''} (cuda:0{f' to cuda:{n - 1}' if n > 1 else ''}); use one of "
                           f"them, or {cpu}")
    return dev


def check_data_dir(data_dir: Any, searched: bool = True) -> None:
    """Refuse an empty or blank string, which ``if data_dir:`` took for "not given" (and a folder
    for "."), and a file, which holds no dataset and can take no download; one message for
    DataConfig, the readers, the report and the experiments. ``searched``: leaving data_dir out
    searches the usual places (not for a folder, which has none)."""
    way_out = ", or leave it out (None) to search the usual places" if searched else ""
    if isinstance(data_dir, str) and not data_dir.strip():
        what = "an empty string" if not data_dir else f"blank ({data_dir!r}, whitespace only)"
        raise ValueError(f"data_dir (--data-dir) is {what}: give a path (an unset shell variable?){way_out}")
    if isinstance(data_dir, (str, os.PathLike)) and Path(data_dir).expanduser().is_file():
        # no dataset is ever read from (or downloaded into) a file: the not-found message offered FILE/FashionMNIST/raw
        raise NotADirectoryError(f"data_dir (--data-dir) {data_dir} is a file, not a folder: give the folder that "
                                 f"holds the dataset{way_out}")


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


# A field's annotation -> (the check, what the message says it must be).
_FIELD_TYPES = {
    "bool": (lambda v: isinstance(v, bool), "True or False"),
    "int": (_is_int, "an int"),
    "int | None": (lambda v: v is None or _is_int(v), "an int or None"),
    "float": (_is_real, "a number"),
    "float | None": (lambda v: v is None or _is_real(v), "a number or None"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "dict[str, float]": (lambda v: isinstance(v, dict), "a dict"),
}


def check_field_types(config: Any, *, exact: bool = True) -> None:
    """Raise TypeError for a dataclass field of the wrong kind: a string where True/False goes
    (any non-empty string was truthy: augment="no" augmented), a string where a number goes, and
    with ``exact`` a float where an int goes (run without it first, so the fields' own range
    checks, which name their flags, speak first about 2.5 epochs)."""
    for f in dataclasses.fields(config):
        kind = str(f.type)
        if not exact:
            kind = {"int": "float", "int | None": "float | None"}.get(kind, kind)
        check, expected = _FIELD_TYPES.get(kind, (None, ""))
        value = getattr(config, f.name)
        if check is not None and not check(value):
            raise TypeError(f"{type(config).__name__}.{f.name} must be {expected}, got {value!r}")

DATASETS = ("fashion-mnist", "cifar10", "cifar100", "folder", "fake")
# The channels each dataset has as stored (a folder's images are read as RGB unless asked otherwise).
NATIVE_CHANNELS = {"fashion-mnist": 1, "cifar10": 3, "cifar100": 3, "folder": 3, "fake": 3}
_ALIASES = {"fashionmnist": "fashion-mnist", "cifar-10": "cifar10", "cifar-100": "cifar100"}
# The smallest image side accepted. The CIFAR-style ResNets used for inputs up to 64 px halve the
# resolution twice (stages 2 and 3): from 4 px on, each stride-2 convolution halves a real map
# (4 -> 2 -> 1); below it one runs on a single pixel, i.e. mostly on zero padding, and the pad-crop
# augmentation (at least 1 px) shifts by half the image. Sizes like 1 or 0 are typos, not tasks.
MIN_IMAGE_SIZE = 4
MAX_IMAGE_SIZE = 8192  # 8192^2 px per image; far beyond any model here
FOLDER_WORKERS = 2  # num_workers left out, for image folders


def check_image_size(size: int | None) -> None:
    if size is not None and size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"image_size (--image-size) must be at least {MIN_IMAGE_SIZE} px, got {size}: smaller "
            "images leave the networks' stride-2 stages nothing but padding; leave it out to use the dataset's own size"
        )
    if size is not None and size > MAX_IMAGE_SIZE:  # torch's resize overflowed with a C++ trace
        raise ValueError(f"image_size (--image-size) must be at most {MAX_IMAGE_SIZE} px, got {size}")


@dataclass(frozen=True)
class DataConfig:
    """What data to load and how to serve it. Bad values are refused when the config is made,
    before any file is read, each error naming the CLI flag. Change a field with
    ``dataclasses.replace(config, batch_size=64)`` (which checks again).

    See docs/DATA.md for where each dataset is looked for.
    """

    name: str  # fashion-mnist | cifar10 | cifar100 | folder | fake (fashion_mnist, cifar-10... accepted)
    # --- where the files are
    data_dir: str | os.PathLike | None = None  # the only place searched when given (needed for folder)
    download: bool = False  # let torchvision fetch Fashion-MNIST/CIFAR into data_dir (else the cache)
    # --- which samples
    classes: Sequence[int] | None = None  # keep these labels, relabeled 0..k-1 in this order, both splits
    per_class: int | None = None  # keep this many training images of each class (seeded)
    subset: int | None = None  # keep N training images, random and stratified by class (seeded)
    val_fraction: float = DEFAULT_VAL_FRACTION  # folder without train/ + val/: share of each class held out as test split
    seed: int = 0  # epoch order, augmentation, subset/per-class draw, fake data
    split_seed: int = 0  # a folder without val/: which images are held out (not `seed`: every seed of a
    #                      folder then tests on the same images, which no run of it trained on)
    # --- what the model sees
    image_size: int | None = None  # side in px, >= 4; None: native (28 Fashion-MNIST, 32 CIFAR/fake;
    #                                folders: median short side when all are <= 64 px, else 224)
    in_channels: int | None = None  # 1 or 3; None: native (NATIVE_CHANNELS)
    mean: Sequence[float] | None = None  # per channel, 0..1 scale; None: the training split's (folders:
    std: Sequence[float] | None = None  #  ImageNet's); give both, e.g. a pretrained model's
    # --- augmentation of the training split
    augment: bool = True  # random pad-crop + flip (in memory), RandomResizedCrop + flip (folders)
    flip: bool = True  # allow the horizontal flip
    flip_mode: str = "random"  # random | alternate (airbench: each sample flipped every other epoch; in memory only)
    random_erasing: float = 0.0  # probability of erasing a rectangle to the mean (Zhong et al. 2017)
    crop_padding: int | None = None  # pad-crop shift in px (in memory); None: side / 8 (4 px at 28-32 px); 0: flip only
    # --- batches
    batch_size: int = 128  # training samples per batch per rank
    eval_batch_size: int | None = None  # test samples per batch; None: batch_size
    drop_last: bool = True  # drop the last incomplete training batch
    device: str | torch.device = "cpu"  # where in-memory data live and where batches arrive
    channels_last: bool = False  # batches in torch.channels_last memory format
    num_workers: int | None = None  # decoding processes for folders (None: 2); in-memory data take none
    rank: int = 0  # this process's shard of both splits (see resnet_lab.data.loaders)
    world_size: int = 1

    def __post_init__(self) -> None:
        check_field_types(self, exact=False)
        check_seed(self.seed)
        if not _is_int(self.split_seed) or not SEED_RANGE[0] <= self.split_seed <= SEED_RANGE[1]:
            raise ValueError(f"split_seed must be an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]}, got "
                             f"{self.split_seed!r}")
        # Frozen: the checked values are the final ones; object.__setattr__ stores their canonical form.
        object.__setattr__(self, "name", _canonical_name(self.name))
        self._check_dataset_options()
        self._check_sizes()
        self._check_test_split()
        self._check_augmentation()
        self._check_placement()
        if self.world_size > 1 and not self.drop_last:
            # batch_slices gives the last partial batch to some ranks only (a one-sample piece is
            # dropped), and DDP waits at every step for all of them: a hang until the timeout
            raise ValueError(f"drop_last=False with world_size={self.world_size}: the last partial batch would go to "
                             "some ranks and not others, and DDP needs every rank to take the same steps; keep "
                             "drop_last=True")
        self._check_classes()
        if self.mean is not None or self.std is not None:
            object.__setattr__(self, "mean", _stats("mean", self.mean, self.channels, self))
            object.__setattr__(self, "std", _stats("std", self.std, self.channels, self))
            if not all(s > 0 for s in self.std):
                raise ValueError(f"std must be > 0 in every channel, got {list(self.std)}")
        check_field_types(self)

    def _check_dataset_options(self) -> None:
        """Options that would change nothing for this dataset (an option that does nothing is
        refused); a folder's worker count stored as a value."""
        if self.name == "fake" and (self.data_dir is not None or self.download):
            flag = "data_dir (--data-dir)" if self.data_dir is not None else "download (--download)"
            raise ValueError(f"{flag} with the fake dataset would change nothing (its images are made, not read): "
                             "leave it out")
        if self.name == "folder" and self.download:
            raise ValueError("download (--download) with a folder dataset would change nothing (there is nothing to "
                             "download; its images are yours, in --data-dir): leave it out")
        if self.num_workers is not None and (isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int)
                                             or self.num_workers < 0):
            raise ValueError(f"num_workers (--workers) must be an int >= 0 (0 decodes in the main process), got "
                             f"{self.num_workers!r}")
        if self.name != "folder" and self.num_workers is not None:  # it would change nothing
            raise ValueError(f"num_workers (--workers) sets the processes that decode image folders; {self.name} "
                             "is held in memory and decodes nothing: leave it out")
        if self.name == "folder" and self.num_workers is None:  # the value (what dataclasses.replace passes on)
            object.__setattr__(self, "num_workers", FOLDER_WORKERS)

    def _check_sizes(self) -> None:
        """Batch sizes, channels, image size, subset sizes and the held-out share in range."""
        if self.batch_size < 1:
            raise ValueError(f"batch_size (--batch-size) must be at least 1, got {self.batch_size}")
        if self.eval_batch_size is not None and self.eval_batch_size < 1:
            raise ValueError(f"eval_batch_size (evaluate's --batch-size) must be at least 1 (or None for batch_size), got {self.eval_batch_size}")
        if self.in_channels is not None and self.in_channels not in (1, 3):
            raise ValueError(f"in_channels must be 1 or 3, got {self.in_channels}")
        check_image_size(self.image_size)
        if self.subset is not None and self.subset < 1:
            raise ValueError(
                f"subset (--subset) must be a positive number of training images, got {self.subset}; "
                "drop it to train on all"
            )
        if self.per_class is not None and self.per_class < 1:
            raise ValueError(f"per_class must be a positive number of training images per class, got {self.per_class}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction (--val-fraction) must be between 0 and 1 (exclusive), got {self.val_fraction}")

    def _check_test_split(self) -> None:
        """val_fraction and split_seed pick a folder's held-out images: refused for a dataset with
        its own test split."""
        if self.name != "folder" and self.val_fraction != DEFAULT_VAL_FRACTION:  # elsewhere it would change nothing
            raise ValueError(f"val_fraction (--val-fraction {self.val_fraction:g}) holds out part of an image folder as "
                             f"its test split; "
                             f"{self.name} has its own test split: leave it out")
        if self.name != "folder" and self.split_seed != 0:  # it picks a folder's held-out images: nothing here
            raise ValueError(f"split_seed {self.split_seed} picks the images held out of an image folder as its test "
                             f"split; {self.name} has its own test split: leave it out")

    def _check_augmentation(self) -> None:
        """Random erasing, flips and the pad-crop: in range, and only where they act."""
        check_erase_probability(self.random_erasing, augment=self.augment)
        check_flip_mode(self.flip_mode, augment=self.augment, flip=self.flip)
        if self.crop_padding is not None:
            if self.crop_padding < 0:
                raise ValueError(f"crop_padding (--crop-padding) must be 0 (flip only) or a positive number of pixels, "
                                 f"got {self.crop_padding}; leave it out for side / 8")
            if not self.augment:
                raise ValueError(f"crop_padding {self.crop_padding} (--crop-padding) sets the random crop, which "
                                 "--no-augment (augment=False) turns off: drop one of the two")
            if self.name == "folder":
                raise ValueError(f"crop_padding {self.crop_padding} (--crop-padding) applies to in-memory datasets "
                                 "(fashion-mnist, cifar10, cifar100, fake); image folders use RandomResizedCrop: "
                                 "leave it out")
        if self.flip_mode != "random" and self.name == "folder":
            raise ValueError(f"flip_mode {self.flip_mode!r} (--flip {self.flip_mode}) needs an in-memory dataset "
                             "(fashion-mnist, cifar10, cifar100, fake); image folders are streamed with a random "
                             "flip per image: use --flip random")

    @property
    def channels(self) -> int:
        """The channel count of the images the loaders yield: ``in_channels`` or the native one."""
        return self.in_channels or NATIVE_CHANNELS[self.name]

    @property
    def test_batch_size(self) -> int:
        """``eval_batch_size``, or ``batch_size`` when it is None."""
        return self.eval_batch_size or self.batch_size

    def _check_classes(self) -> None:
        """``classes`` as a tuple of ints ("01" was read as (0, 1), [1.5, 2.7] as [1, 2])."""
        if self.classes is not None:
            if isinstance(self.classes, (str, bytes)) or not isinstance(self.classes, Iterable):
                raise TypeError(f"classes must be a list of class indices (ints), e.g. [5, 6, 7], got {self.classes!r}")
            bad = [c for c in self.classes if not _is_int(c)]
            if bad:
                raise TypeError(f"classes must be a list of class indices (ints), got {bad[0]!r} in {self.classes!r}")
            object.__setattr__(self, "classes", tuple(int(c) for c in self.classes))

    def _check_placement(self) -> None:
        """Where the data come from and go: a path, this process's shard, a device name."""
        if self.data_dir is not None and not isinstance(self.data_dir, (str, os.PathLike)):
            raise TypeError(f"data_dir (--data-dir) must be a path (str or pathlib.Path), got {self.data_dir!r}")
        check_data_dir(self.data_dir, searched=self.name != "folder")  # "" was taken for "not given"
        if not _is_int(self.world_size) or self.world_size < 1:
            raise ValueError(f"world_size must be an int >= 1 (the processes sharing the data), got {self.world_size!r}")
        if not _is_int(self.rank) or not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be an int from 0 to world_size - 1 ({self.world_size - 1}), got {self.rank!r}")
        check_device_name(self.device)  # the name only: whether the machine has it, when the data go there


_FIELDS = tuple(f.name for f in dataclasses.fields(DataConfig))


def _stats(what: str, values: Sequence[float] | None, channels: int, config: DataConfig) -> tuple[float, ...]:
    """``values`` as a tuple of one finite float per channel, or a ValueError that says why not."""
    if values is None:
        raise ValueError(f"give mean and std together (or neither, to compute them), got mean={config.mean}, std={config.std}")
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{what} must be a list of one value per channel, e.g. [0.5] or [0.485, 0.456, 0.406], "
                        f"got {values!r}")
    out = tuple(_number(what, v, values) for v in values)
    if len(out) != channels or not all(math.isfinite(v) for v in out):
        raise ValueError(
            f"{what} {list(out)} needs {channels} finite values, one per channel of the {channels}-channel "
            f"{config.name} images (in_channels={config.in_channels})"
        )
    return out


def _number(what: str, value: Any, values: Any) -> float:
    """One value of ``mean``/``std`` as a float: a number, numpy's or a one-element tensor included;
    a string (float("a") named neither the field nor the list), None or True is refused."""
    try:
        if isinstance(value, (str, bytes, bool)):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        shown = list(values) if not isinstance(values, (list, tuple)) else values
        raise TypeError(f"{what} must hold one number per channel, e.g. [0.5, 0.5, 0.5]; got {value!r} in "
                        f"{shown!r}") from None


def _canonical_name(name: str) -> str:
    key = str(name).lower().replace("_", "-")
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        close = difflib.get_close_matches(key, DATASETS, n=2)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        raise ValueError(f"unknown dataset {name!r}: expected one of {', '.join(DATASETS)}.{hint}")
    return key


def data_config(config: DataConfig | str | None = None, /, **fields: Any) -> DataConfig:
    """The :class:`DataConfig` that ``load_data(config, **fields)`` loads.

    Args:
        config: a DataConfig (``fields`` then replace some of its values), a dataset name (``fields``
            fill in the rest), or None (``fields`` must include ``name``).
        fields: DataConfig fields by name.

    Raises:
        TypeError: a keyword that is not a DataConfig field (the message lists the fields), or no
            dataset name.
        ValueError: a bad value (see :class:`DataConfig`).
    """
    unknown = [k for k in fields if k not in _FIELDS]
    if unknown:
        close = {k: difflib.get_close_matches(k, _FIELDS, n=1) for k in unknown}
        hints = "".join(f" ({k}: did you mean {c[0]}?)" for k, c in close.items() if c)
        raise TypeError(
            f"unknown data option(s) {', '.join(unknown)}{hints}; DataConfig has: {', '.join(_FIELDS)}"
        )
    if isinstance(config, DataConfig):
        return dataclasses.replace(config, **fields) if fields else config
    if isinstance(config, str):
        if "name" in fields:
            raise TypeError(f"the dataset is named twice: {config!r} and name={fields['name']!r}")
        return DataConfig(config, **fields)
    if config is None and "name" in fields:
        return DataConfig(**fields)
    raise TypeError(
        f"expected a dataset name ({', '.join(DATASETS)}) or a DataConfig, got {config!r}; "
        'e.g. load_data("fashion-mnist", batch_size=128)'
    )
