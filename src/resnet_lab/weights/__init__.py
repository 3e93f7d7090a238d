"""Trained weights that ship with the package, in the style of torchvision's ``Weights`` enums.

Each entry is two files in this directory: ``MODEL-TAG.safetensors`` (the weights) and
``MODEL-TAG.json``, a run's ``model.json`` (architecture, classes, input size, mean/std) with a
``weights`` block: the tag, the file's sha256, the exact command that trained it (``recipe``) and
the test accuracy that ``resnet-lab evaluate MODEL:TAG`` prints for the shipped file. Because the
JSON is a ``model.json`` beside its weights file, everything that loads a run also loads an entry.

Use them by name::

    create_model("resnet20", weights="fashion-mnist")        # the registry's way
    get_weights("resnet20:fashion-mnist").transforms.mean    # what the input must look like
    resnet-lab evaluate resnet20:fashion-mnist                # the CLI's way (predict, finetune --from)

Every read checks the file's sha256 first: a changed or damaged file is refused, never loaded.

This package sits below :mod:`resnet_lab.models` (which imports it for ``create_model(...,
weights=...)``) and imports nothing of ours: it is data plus the code that checks and reads it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

__all__ = [
    "WEIGHTS_DIR",
    "Transforms",
    "Weights",
    "WeightsHashError",
    "get_weights",
    "in_torchvision",
    "is_weights_name",
    "list_weights",
    "read_entry",
    "sha256_of",
]

WEIGHTS_DIR = Path(__file__).resolve().parent

# MODEL:TAG, e.g. resnet20:fashion-mnist; no slash, so a path with a colon is never taken for one.
_NAME = re.compile(r"^([A-Za-z0-9_]+):([A-Za-z0-9_.-]+)$")


class WeightsHashError(ValueError):
    """A weights file whose sha256 differs from the one its entry records."""


# The way out of a missing or damaged weights file: a torch.hub user's checkout (hubconf.py puts its
# src/ first) loads its own files, which only git restores.
_RESTORE = "reinstall resnet-lab (pip install --force-reinstall resnet-lab) or, in a checkout, restore the file with git"


@dataclass(frozen=True)
class Transforms:
    """What an input must look like for the weights: the preprocessing they were trained with.

    Attributes:
        mean, std: per-channel normalization of pixel values scaled to 0..1.
        input_size: ``(C, H, W)``.
        classes: the class names, in the order of the classifier's outputs.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]
    classes: tuple[str, ...]


@dataclass(frozen=True)
class Weights:
    """One shipped set of trained weights.

    Attributes:
        model: the registered model name (``resnet20``).
        tag: what they were trained on (``fashion-mnist``).
        path: the ``.safetensors`` file.
        meta_path: its ``model.json``-like JSON file.
        sha256: the file's SHA-256, hex; checked before every read.
        recipe: the exact command that trained them.
        accuracy: test accuracy in percent, as ``resnet-lab evaluate MODEL:TAG`` prints it for
            this file (two decimals).
        test_images: how many test images that accuracy is over.
        dataset: the dataset name the CLI knows (``fashion-mnist``).
        transforms: mean, std, input size and classes.
        arch: the ``create_model`` arguments, with ``name``.
    """

    model: str
    tag: str
    path: Path
    meta_path: Path
    sha256: str
    recipe: str
    accuracy: float
    test_images: int
    dataset: str
    transforms: Transforms
    arch: Mapping[str, Any] = field(hash=False, compare=False)

    @property
    def name(self) -> str:
        """``MODEL:TAG``, the form the CLI takes."""
        return f"{self.model}:{self.tag}"

    def verify(self) -> Path:
        """The weights file, after checking its sha256 against the entry's.

        Raises:
            FileNotFoundError: the file is missing.
            WeightsHashError: its sha256 differs (a damaged or replaced file).
        """
        if not self.path.is_file():
            raise FileNotFoundError(f"the weights file of {self.name} is missing: {self.path}; {_RESTORE}")
        actual = sha256_of(self.path)
        if actual != self.sha256:
            raise WeightsHashError(
                f"{self.path} has sha256 {actual}, but {self.name} expects {self.sha256}: the file is damaged "
                f"or was replaced, so it is refused; {_RESTORE}"
            )
        return self.path

    def get_state_dict(self, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
        """The verified tensors on ``map_location``; floating-point ones as float32 (a file may store float16).

        Raises:
            RuntimeError: ``map_location`` is not a device (torch's own message, naming it).
        """
        try:
            state = load_safetensors(self.verify(), map_location)
        except SafetensorError as e:  # only reachable if the recorded hash itself is of a bad file
            raise ValueError(f"{self.path} is not a readable safetensors file ({e}); reinstall resnet-lab") from e
        return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def load_safetensors(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A ``.safetensors`` file's tensors on ``map_location``, any device torch takes (``"meta"`` too).

    The device is parsed first, so a bad one is torch's error naming it; the file is read on the CPU
    and then moved, since safetensors' own device errors ("device meta is invalid") read as a broken
    file. A damaged file raises safetensors' ``SafetensorError`` (or an ``OSError``) for the caller to word.
    """
    device = torch.device(map_location)
    state = load_file(str(path), device="cpu")
    return state if device.type == "cpu" else {k: v.to(device) for k, v in state.items()}


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_entry(meta_path: str | os.PathLike) -> Weights:
    """The :class:`Weights` an entry's JSON describes (its ``weights.file`` beside it).

    Raises:
        ValueError: the JSON lacks a field of the entry format.
    """
    meta_path = Path(meta_path)
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{meta_path} is not a readable weights entry ({type(e).__name__}: {e})") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{meta_path} is not a weights entry: its JSON is {_json_kind(meta)}, not an object")

    def field(dotted: str, kind: Any = object, items: Any = None) -> Any:
        value = _entry_field(meta, dotted, kind, meta_path)
        for i, item in enumerate(value if items is not None else ()):  # a list's items, each of ``items``
            _entry_value(item, f"{dotted}[{i}]", items, meta_path)
        return value

    number, seq = (int, float), (list, tuple)
    transforms = Transforms(mean=tuple(field("mean", seq, number)), std=tuple(field("std", seq, number)),
                            input_size=tuple(int(n) for n in field("input_size", seq, _WHOLE)),
                            classes=tuple(field("classes", seq, str)))
    return Weights(
        model=field("arch.name", str), tag=field("weights.tag", str), path=meta_path.parent / field("weights.file", str),
        meta_path=meta_path, sha256=field("weights.sha256", str), recipe=field("weights.recipe"),
        accuracy=float(field("weights.accuracy", number)), test_images=int(field("weights.test_images", _WHOLE)),
        dataset=field("dataset", str), transforms=transforms, arch=MappingProxyType(dict(field("arch", dict))),
    )


_WHOLE = "whole"  # a kind for _entry_field: a count, a finite number without a fraction (10000 or 10000.0)


def _entry_field(meta: dict[str, Any], dotted: str, kind: Any, meta_path: Path) -> Any:
    """``meta``'s value at ``dotted`` ("weights.sha256"), of ``kind`` (a type, a tuple of types or
    ``_WHOLE``), or a ValueError naming the field (a list where an object belongs read "list indices
    must be integers or slices, not str")."""
    value: Any = meta
    for depth, key in enumerate(dotted.split(".")):
        if not isinstance(value, dict):
            parent = ".".join(dotted.split(".")[:depth])
            raise ValueError(f"{meta_path} is not a weights entry: field {parent!r} is {_json_kind(value)}, not an "
                             "object")
        if key not in value:
            missing = ".".join(dotted.split(".")[:depth + 1])
            raise ValueError(f"{meta_path} is not a weights entry: field {missing!r} is missing")
        value = value[key]
    return _entry_value(value, dotted, kind, meta_path)


def _entry_value(value: Any, dotted: str, kind: Any, meta_path: Path) -> Any:
    """``value`` (field ``dotted``, or a list's item ``mean[0]``) if it is of ``kind``; a number must
    be finite (json reads NaN, Infinity and 1e400 as floats), a ``_WHOLE`` one without a fraction."""
    whole = isinstance(kind, str) and kind == _WHOLE
    kind = (int, float) if whole else kind
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not object):
        want = _json_kind(kind[0]() if isinstance(kind, tuple) else kind())  # kind's JSON name: a list, a number
        shown = json.dumps(value) if value is None or isinstance(value, (str, int, float)) else _json_kind(value)
        raise ValueError(f"{meta_path} is not a weights entry: field {dotted!r} is {shown}, not {want}")
    if isinstance(value, float) and (not math.isfinite(value) or (whole and not value.is_integer())):
        raise ValueError(f"{meta_path} is not a weights entry: field {dotted!r} is {json.dumps(value)}, not a "
                         f"{'whole' if whole else 'finite'} number")
    return value


def _json_kind(value: Any) -> str:
    """How JSON names what ``value`` is: a list, an object, a string..."""
    kinds = ((dict, "an object"), (list, "a list"), (tuple, "a list"), (str, "a string"), (bool, "a boolean"),
             (int, "a number"), (float, "a number"), (type(None), "null"))
    return next((name for kind, name in kinds if isinstance(value, kind)), type(value).__name__)


def _scan(directory: Path) -> tuple[dict[str, Weights], dict[Path, str]]:
    """The readable entries by name, and what is wrong with each unreadable JSON: one damaged or
    stray file must not take the package (every command, even --help) down with it."""
    entries, damaged = {}, {}
    for path in sorted(directory.glob("*.json")):
        try:
            w = read_entry(path)
        except Exception as e:  # noqa: BLE001 - whatever one file does (a case not foreseen), it stays its own
            damaged[path] = str(e) if str(path) in str(e) else f"{path}: {type(e).__name__}: {e}"
        else:
            entries[w.name] = w
    return entries, damaged


_REGISTRY, _DAMAGED = _scan(WEIGHTS_DIR)


def list_weights(model: str | None = None) -> list[str]:
    """Names (``MODEL:TAG``) of the shipped weights, optionally of one model only."""
    return [n for n, w in _REGISTRY.items() if model is None or w.model == model]


def is_weights_name(spec: str) -> bool:
    """Whether ``spec`` has the form ``MODEL:TAG`` (registered or not); paths never do."""
    return _NAME.match(spec) is not None


def in_torchvision(model: str) -> bool:
    """Whether torchvision has a model of this name (with ImageNet weights to download)."""
    import torchvision.models  # deferred: only a refused tag needs it

    return model in torchvision.models.list_models()


def get_weights(model: str, tag: str | None = None) -> Weights:
    """The entry of ``get_weights("resnet20", "fashion-mnist")`` or ``get_weights("resnet20:fashion-mnist")``.

    Raises:
        ValueError: no such entry; the message lists what is shipped.
    """
    if not isinstance(model, str) or not isinstance(tag, (str, type(None))):
        raise TypeError(f"weights are named by strings, e.g. get_weights('resnet20', 'fashion-mnist'); "
                        f"got {model!r}, {tag!r}")
    if tag is None:
        match = _NAME.match(model)
        if match is None:
            raise ValueError(f"{model!r} is not a weights name: expected MODEL:TAG, e.g. resnet20:fashion-mnist")
        model, tag = match.groups()
    name = f"{model}:{tag}"
    if name in _REGISTRY:
        return _REGISTRY[name]
    same_model = [w.tag for w in _REGISTRY.values() if w.model == model]
    known = (f"{model} has weights {', '.join(map(repr, same_model))}" if same_model
             else f"shipped: {', '.join(_REGISTRY) or 'none'}")
    # torchvision's ImageNet weights are reached by transfer, not shipped (their tags are upper case)
    elsewhere = (f"; torchvision's {tag} weights are not shipped: `resnet-lab finetune --from "
                 f"torchvision:{model}.{tag}` downloads them, or `--from-file FILE --model {model}` reads a "
                 "saved state dict" if tag.isupper() and in_torchvision(model) else "")
    if tag.startswith(f"{model}:") and tag.split(":", 1)[1] in same_model:  # the full name given where a tag goes
        elsewhere = f"; weights= takes the tag alone: weights={tag.split(':', 1)[1]!r}"
    if "/" in tag or "\\" in tag or tag.endswith(".safetensors"):  # a path given where a tag goes
        elsewhere = "; weights= takes a shipped tag: a run directory or .safetensors file loads with load_model(PATH)"
    if _DAMAGED:  # the entry asked for may be the damaged one
        elsewhere += (f"; {len(_DAMAGED)} entr{'y' if len(_DAMAGED) == 1 else 'ies'} in {WEIGHTS_DIR} could not be "
                      f"read ({'; '.join(_DAMAGED.values())}): reinstall resnet-lab (pip install --force-reinstall "
                      "resnet-lab) or, in a checkout, restore the files with git")
    raise ValueError(f"no shipped weights {name!r}; {known}{elsewhere}")
