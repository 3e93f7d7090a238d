"""Data: sources (Fashion-MNIST IDX files, CIFAR batches, image folders, fake data), the in-memory
fast loader, and the transforms for training and prediction. Entry point: :func:`load_data`.

See docs/DATA.md for where each dataset is looked for and how messy folders are handled.
"""

from .datasets import (
    CIFAR10_CLASSES,
    DATASETS,
    DEBIAN_FASHION_MNIST,
    FASHION_MNIST_CLASSES,
    MIN_IMAGE_SIZE,
    DataBundle,
    DataNotFoundError,
    DatasetInfo,
    cache_dir,
    channel_stats,
    find_fashion_mnist,
    load_data,
    read_cifar,
    read_fashion_mnist,
    select_per_class,
    select_subset,
)
from .folder import BadImageWarning, ImageFileDataset, scan_class_folders
from .idx import IDXError, read_idx, write_idx
from .loaders import InMemoryLoader, StreamingLoader, batch_slices, epoch_permutation
from .transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    crop_flip,
    normalize,
    sample_crop_flip_params,
    to_channels,
    to_model_input,
)

__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "DEBIAN_FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MIN_IMAGE_SIZE",
    "BadImageWarning",
    "DataBundle",
    "DataNotFoundError",
    "DatasetInfo",
    "IDXError",
    "ImageFileDataset",
    "InMemoryLoader",
    "StreamingLoader",
    "batch_slices",
    "cache_dir",
    "channel_stats",
    "crop_flip",
    "epoch_permutation",
    "find_fashion_mnist",
    "load_data",
    "normalize",
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
