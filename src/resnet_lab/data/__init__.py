"""Data: one configuration (:class:`DataConfig`), one entry point (:func:`load_data`).

``config`` holds the options, ``sources`` knows where the files are and reads them (Fashion-MNIST
IDX files, CIFAR batches, image folders, fake data), ``selection`` picks classes, subsets and
held-out splits, ``loaders`` serves batches (in memory on the device, or streamed from disk),
``transforms`` augments batches and holds :func:`preprocess`, the one preprocessing of a single
image that prediction and ONNX share; ``datasets`` wires them in :func:`load_data`.

See docs/DATA.md for where each dataset is looked for and how messy folders are handled.
"""

from .config import DATASETS, MIN_IMAGE_SIZE, DataConfig, data_config
from .datasets import DataBundle, DatasetInfo, load_data
from .folder import BadImageWarning, ImageFileDataset, NoDecodableImageError, display_name, scan_class_folders
from .idx import IDXError, read_idx, write_idx
from .loaders import InMemoryLoader, StreamingLoader, batch_slices, epoch_permutation
from .selection import select_per_class, select_subset
from .sources import (
    CIFAR10_CLASSES,
    DEBIAN_FASHION_MNIST,
    FAKE_CLASSES,
    FAKE_PER_CLASS,
    FAKE_TRAIN_SAMPLES,
    FASHION_MNIST_CLASSES,
    DataNotFoundError,
    cache_dir,
    find_fashion_mnist,
    read_cifar,
    read_fashion_mnist,
)
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    SMALL_INPUT_MAX,
    channel_stats,
    check_preprocess,
    crop_flip,
    normalize,
    preprocess,
    sample_crop_flip_params,
    to_channels,
    to_model_input,
)

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "FAKE_CLASSES",
    "FAKE_PER_CLASS",
    "FAKE_TRAIN_SAMPLES",
    "FASHION_MNIST_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MIN_IMAGE_SIZE",
    "SMALL_INPUT_MAX",
    "BadImageWarning",
    "DataBundle",
    "DataConfig",
    "DataNotFoundError",
    "DatasetInfo",
    "IDXError",
    "ImageFileDataset",
    "InMemoryLoader",
    "NoDecodableImageError",
    "StreamingLoader",
    "batch_slices",
    "cache_dir",
    "channel_stats",
    "check_preprocess",
    "crop_flip",
    "display_name",
    "data_config",
    "epoch_permutation",
    "find_fashion_mnist",
    "load_data",
    "normalize",
    "preprocess",
    "read_cifar",
    "read_fashion_mnist",
    "read_idx",
    "sample_crop_flip_params",
    "scan_class_folders",
    "select_per_class",
    "select_subset",
    "to_channels",
    "to_model_input",
    "write_idx",
]
