"""Prediction on image files: from a run (PyTorch) or from an exported ONNX file (onnxruntime).

Both paths return the same structure, one dict per image::

    {"path": "shoe.png", "top": [("Sneaker", 0.91), ("Sandal", 0.05), ...]}

Both preprocess with the one function training's data code defines,
:func:`resnet_lab.data.preprocess` (the PyTorch path through :func:`resnet_lab.data.to_model_input`,
the ONNX path through :func:`preprocess_image`, which hands onnxruntime its ``.numpy()``):

1. convert to ``L`` (1 input channel) or ``RGB`` (3), whatever the file's mode (EXIF rotation,
   palette, alpha over white, 16-bit), with :func:`resnet_lab.data.to_channels`;
2. resize to (H, W) as the run's ``resize`` says: ``whole`` (Fashion-MNIST, CIFAR: the object fills
   the frame) resizes the image as it is, as the in-memory datasets are resized; ``crop`` (folder datasets) resizes the shorter side
   (bilinear) and center-crops, as torchvision's ``Resize`` + ``CenterCrop``; ``auto`` (default)
   is ``whole`` up to :data:`resnet_lab.data.SMALL_INPUT_MAX` (64) px and ``crop`` above;
3. scale to [0, 1], subtract ``mean`` and divide by ``std`` per channel.
"""

from __future__ import annotations

import glob
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data import check_preprocess, preprocess, to_model_input
from ..models.registry import weights_dtype
from ..runs import load_model
from ..train.device import resolve_device

__all__ = ["ImageReadError", "OnnxPredictor", "decode_metadata", "iter_predictions", "load_image", "load_model_input",
           "predict_images", "preprocess_image", "top_k"]

Prediction = dict[str, Any]
T = TypeVar("T")


class ImageReadError(ValueError):
    """An image file is missing, a directory, or cannot be decoded; the message names the path."""


def load_image(path: str | os.PathLike):
    """Open an image file with Pillow and decode it fully (so a broken file fails here, by name).

    Args:
        path: an image file (PNG, JPEG, ... anything Pillow reads).

    Raises:
        ImageReadError: ``path`` is missing, a directory, or not a readable image.
    """

    path = Path(path)
    if path.is_dir():
        # The shell passes a folder as is; say how to name its images instead of "not found".
        raise ImageReadError(f"{path} is a directory; pass image files, e.g. {path / '*.png'}")
    if not path.is_file():
        if any(c in path.name for c in "*?["):  # a pattern reaches us as it was typed: quoted, or matching nothing
            if not glob.glob(str(path)):  # unquoted, the shell passes a pattern that matches nothing as it is
                raise ImageReadError(f"image file not found: {path} (no file matches this pattern)")
            raise ImageReadError(f"image file not found: {path} (a pattern: the shell expands it only unquoted, "
                                 f"e.g. {path} without the quotes)")
        raise ImageReadError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy()
    except Image.DecompressionBombError as e:
        raise ImageReadError(f"cannot read image {path}: {e} Shrink it first (or, in Python, raise "
                             "PIL.Image.MAX_IMAGE_PIXELS if you trust the file)") from e
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError...
        raise ImageReadError(f"cannot read image {path}: {e} (expected a PNG, JPEG or other Pillow-readable file)") from e


def _prepared(path: str | os.PathLike, prepare: Callable[[Image.Image], T]) -> T:
    """``prepare(load_image(path))``, where an error after decoding (a mode Pillow has no conversion
    for) is an :class:`ImageReadError` naming the file too, as a decoding error is. The settings
    ``prepare`` uses are checked once before (``check_preprocess``): what fails here is the file's."""
    img = load_image(path)
    try:
        return prepare(img)
    except (ValueError, OSError) as e:  # Pillow's "conversion from X to Y not supported", a failed resize
        raise ImageReadError(f"cannot convert image {path} (mode {img.mode}, {img.width}x{img.height}): {e}") from e


def preprocess_image(
    image, input_size: Sequence[int], mean: Sequence[float], std: Sequence[float], resize: str = "auto",
    *, invert: bool = False,
) -> np.ndarray:
    """One PIL image -> a normalized float32 array of shape ``input_size`` (C, H, W), for onnxruntime:
    :func:`resnet_lab.data.preprocess` (the steps above), as NumPy.

    Args:
        image: a ``PIL.Image`` of any mode.
        input_size: ``(C, H, W)`` the model expects; C is 1 (grayscale) or 3 (RGB).
        mean, std: per-channel normalization on the 0..1 scale (length C, or 1 to broadcast).
        resize: ``"whole"`` (resize to H, W), ``"crop"`` (shorter side to H, center crop) or
            ``"auto"`` (whole up to 64 px, else crop), as the run's ``model.json`` says.
        invert: invert the pixel values after the mode conversion (see :func:`predict_images`).
    """
    return preprocess(image, input_size, mean, std, resize, invert=invert).numpy()


def decode_metadata(props: dict[str, str]) -> dict[str, Any]:
    """JSON-decode ONNX ``metadata_props`` values (values that are not JSON stay strings).

    Args:
        props: key -> string, as stored in the ONNX file.
    """
    out: dict[str, Any] = {}
    for key, value in props.items():
        try:
            out[key] = json.loads(value)
        except (TypeError, ValueError):
            out[key] = value
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def top_k(probs: np.ndarray, classes: Sequence[str] | None, k: int) -> list[list[tuple[str, float]]]:
    """Per row of ``probs`` (N, K): the ``k`` most probable ``(class name, probability)``, best first.

    Ties keep the lower class index first (stable sort), so two backends agree on equal scores.

    Args:
        probs: (N, num_classes) probabilities.
        classes: class names (index -> name); ``None`` uses the index as the name.
        k: how many; capped at the number of classes.
    """
    _check_k(k)
    n_cls = probs.shape[1]
    if classes is not None and len(classes) != n_cls:
        raise ValueError(f"the model has {n_cls} outputs but {len(classes)} class names were given")
    names = list(classes) if classes is not None else [str(i) for i in range(n_cls)]
    order = np.argsort(-probs, axis=1, kind="stable")[:, : min(k, n_cls)]
    return [[(names[j], float(row[j])) for j in idx] for row, idx in zip(probs, order)]


def _check_k(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"top_k (--top-k) must be an int >= 1, got {k!r}")


def image_paths(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """The image files as a list: one path (a str or PathLike) is one image, not its letters."""
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def _check_invert(invert: bool) -> None:
    if not isinstance(invert, bool):  # "no" is truthy: it would invert every image
        raise TypeError(f"invert must be True or False, got {invert!r}")


def _check_batch_size(size: int) -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:  # -1 yielded nothing: no predictions
        raise ValueError(f"batch_size must be an int >= 1 (images decoded and run at a time), got {size!r}")


def _predictions(paths: list[Path], batch_size: int, prepare: Callable[[Path], Any],
                 probabilities: Callable[[list], np.ndarray], classes: Sequence[str] | None, k: int) -> Iterator[Prediction]:
    """One result per path, in input order, ``batch_size`` files decoded and run at a time (bounded
    memory): ``{"path", "top"}``, or ``{"path", "error"}`` for a file ``prepare`` cannot read, while
    the rest of its batch still runs (one bad file among 300 used to cost every prediction)."""
    for i in range(0, len(paths), batch_size):
        ready, entries = [], []
        for p in paths[i : i + batch_size]:
            try:
                ready.append(prepare(p))
                entries.append({"path": str(p)})
            except ImageReadError as e:
                entries.append({"path": str(p), "error": str(e)})
        tops = iter(_top_k(probabilities(ready), classes, k) if ready else [])
        for entry in entries:
            if "error" not in entry:
                entry["top"] = next(tops)
            yield entry


def _check_on_error(on_error: str) -> None:
    if on_error not in ("raise", "keep"):
        raise ValueError(f"on_error must be 'raise' or 'keep', got {on_error!r}")


def _raise_or_keep(results: Iterator[Prediction], on_error: str) -> list[Prediction]:
    """The results as a list; with ``on_error="raise"`` the first unreadable file's error instead."""
    out = []
    for r in results:
        if "error" in r and on_error == "raise":
            raise ImageReadError(r["error"])
        out.append(r)
    return out


def iter_predictions(
    source_or_model,
    paths: Sequence[str | os.PathLike],
    top_k: int = 5,
    device: str | torch.device | None = None,
    *,
    meta: dict[str, Any] | None = None,
    batch_size: int = 64,
    invert: bool = False,
) -> Iterator[Prediction]:
    """:func:`predict_images` as it goes: the model is loaded and the arguments checked now, then
    one result per image, in input order, yielded as its batch is done; a file that cannot be read
    (missing, not an image, a mode with no conversion) is ``{"path", "error": message naming it}``
    and the others go on. The CLI's ``predict`` prints from it.
    """
    _check_invert(invert)  # before the model is loaded
    if device is not None:  # "gpu" and a CUDA device this machine lacks: one line, as train's --device
        device = resolve_device(device)
    if isinstance(source_or_model, nn.Module):
        if meta is None:
            raise ValueError("predict_images(model, ...) needs meta= with input_size, mean, std and classes (a run's model.json)")
        if device is None:  # the caller's model stays where it is (a CUDA model used to move to the CPU)
            device = next(source_or_model.parameters(), torch.empty(0)).device
        model = source_or_model.to(device)  # moved there, as nn.Module.to does; its modes are kept (below)
    else:
        device = "cpu" if device is None else device
        model, meta = load_model(source_or_model, device=device)
    _check_meta(meta, "model.json")
    check_preprocess(meta["input_size"], meta["mean"], meta["std"], meta.get("resize", "auto"))  # once, not per file
    _check_k(top_k)
    _check_batch_size(batch_size)

    # the inputs in the model's own floating dtype (a float64 or bfloat16 model refused float32 ones)
    dtype = weights_dtype(model, torch.float32)

    def probabilities(batch: list[torch.Tensor]) -> np.ndarray:
        modes = [(m, m.training) for m in model.modules()]  # each module's own: a frozen BN stays in eval
        model.eval()  # for the forward only: a training model given here goes back to training after it
        try:
            with torch.no_grad():  # here, not around the yields: grad mode is the caller's between them
                x = torch.cat(batch).to(device=device, dtype=dtype)
                return torch.softmax(model(x).double(), dim=1).cpu().numpy()
        finally:
            for m, training in modes:
                m.training = training

    return _predictions(image_paths(paths), batch_size, lambda p: load_model_input(p, meta, invert=invert),
                        probabilities, meta.get("classes"), top_k)


def predict_images(
    source_or_model,
    paths: Sequence[str | os.PathLike],
    top_k: int = 5,
    device: str | torch.device | None = None,
    *,
    meta: dict[str, Any] | None = None,
    batch_size: int = 64,
    on_error: str = "raise",
    invert: bool = False,
) -> list[Prediction]:
    """Classify image files with a PyTorch model: the CLI's ``predict RUN IMAGE...``.

    Args:
        source_or_model: a run directory, a ``.safetensors`` file with its ``model.json``, or an
            ``nn.Module`` (then ``meta`` is required).
        paths: image files (or one image file).
        top_k: classes to return per image.
        device: where to run the model: auto, cpu, cuda, cuda:N or mps, refused in one line when
            this machine lacks it (None: a model given stays where it is; a run loads on the CPU).
        meta: ``model.json`` content (``input_size``, ``mean``, ``std``, ``classes``) when passing a model.
        batch_size: images per forward pass.
        on_error: ``"raise"``: a file that cannot be read raises :class:`ImageReadError` naming it;
            ``"keep"``: its entry is ``{"path", "error"}`` and the other images are predicted.
        invert: True to invert the pixel values after the mode conversion (transparency over white), as
            :func:`resnet_lab.data.preprocess` does: a dark object on a light (or transparent)
            background shown to a model trained on light objects on black (Fashion-MNIST).

    Returns one ``{"path", "top": [(class, probability), ...]}`` per image, in input order
    (:func:`iter_predictions` yields them as they are made).
    """
    _check_on_error(on_error)  # before the model is loaded
    results = iter_predictions(source_or_model, paths, top_k, device, meta=meta, batch_size=batch_size, invert=invert)
    return _raise_or_keep(results, on_error)


def load_model_input(path: str | os.PathLike, meta: Any, *, invert: bool = False) -> torch.Tensor:
    """An image file as the model's (1, C, H, W) input (:func:`resnet_lab.data.to_model_input` with
    ``meta``, a run's ``model.json`` or a ``DatasetInfo``, and ``invert``); :class:`ImageReadError`
    naming the file when it cannot be read or converted."""
    return _prepared(path, lambda img: to_model_input(img, meta, invert=invert))


_top_k = top_k  # the parameter name shadows the function inside predict()/predict_images()


def _check_meta(meta: dict[str, Any], where: str) -> None:
    missing = [k for k in ("input_size", "mean", "std") if meta.get(k) is None]
    if missing:
        raise ValueError(f"{where} has no {', '.join(missing)}: cannot preprocess images without them")


def _given_or(value: Any, recorded: Any) -> list:
    """An override as a list (a NumPy array's truth value is an error), else the recorded value."""
    if value is not None:
        return list(value)
    return list(recorded) if recorded is not None else []


def _check_graph_input(path: Path, shape: Sequence[Any], input_size: Sequence[int]) -> None:
    """Refuse in one line an ``input_size`` the graph's fixed (C, H, W) does not take (onnxruntime
    said so only at the first prediction, in several lines); dynamic dimensions take any size."""
    fixed = list(shape[1:])
    if len(fixed) != len(input_size) or any(isinstance(d, int) and d != int(s) for d, s in zip(fixed, input_size)):
        graph = tuple(d if isinstance(d, int) else "any" for d in fixed)
        raise ValueError(f"input_size {tuple(int(s) for s in input_size)} does not fit {path}: its graph takes "
                         f"(C, H, W) = {graph}; leave input_size out to use the file's metadata")


class OnnxPredictor:
    """Classify image files with an exported ONNX model, using onnxruntime, NumPy and Pillow only.

    Preprocessing (input size, mean, std) and class names come from the file's metadata (written by
    :func:`resnet_lab.deploy.export_onnx`); keyword arguments override them, e.g. for an ONNX file
    made elsewhere.

    Args:
        path: the ``.onnx`` file.
        input_size, mean, std, classes, resize: overrides of the metadata.
        providers: onnxruntime execution providers (default: CPU).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        input_size: Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        classes: Sequence[str] | None = None,
        resize: str | None = None,
        providers: Sequence[str] | None = None,
    ) -> None:
        try:
            import onnxruntime as ort  # optional extra: pip install resnet-lab[onnx]
        except ImportError as e:
            raise ImportError("OnnxPredictor needs onnxruntime: pip install 'resnet-lab[onnx]'") from e
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"{self.path} is a directory; pass the .onnx file written by `resnet-lab export`")
        if not self.path.is_file():
            raise FileNotFoundError(
                f"ONNX model file not found: {self.path}. Make one with `resnet-lab export RUN --out {self.path}`."
            )
        try:
            self.session = ort.InferenceSession(str(self.path), providers=list(providers or ["CPUExecutionProvider"]))
        except Exception as e:  # onnxruntime's errors (InvalidProtobuf, Fail, ...) derive from Exception only
            raise ValueError(
                f"{self.path} is not an ONNX model written by resnet-lab export: onnxruntime cannot load it ({e}). "
                f"Make one with `resnet-lab export RUN --out {self.path.with_suffix('.onnx')}`."
            ) from e
        self.metadata: dict[str, Any] = decode_metadata(dict(self.session.get_modelmeta().custom_metadata_map))
        self.input_size = _given_or(input_size, self.metadata.get("input_size"))  # NumPy arrays too: no truth tests
        self.mean = _given_or(mean, self.metadata.get("mean"))
        self.std = _given_or(std, self.metadata.get("std"))
        self.classes = list(classes) if classes is not None else self.metadata.get("classes")
        self.resize = resize or self.metadata.get("resize") or "auto"
        missing = [k for k in ("input_size", "mean", "std") if not getattr(self, k)]
        if missing:
            raise ValueError(
                f"{self.path} has no {', '.join(missing)} in its metadata (not exported by resnet-lab?): "
                f"re-export it with `resnet-lab export RUN` (or export_onnx(..., meta=model.json's content)), "
                f"which records them, or in Python pass {', '.join(m + '=' for m in missing)} to OnnxPredictor"
            )
        check_preprocess(self.input_size, self.mean, self.std, self.resize)  # here, not blamed on an image
        _check_graph_input(self.path, self.session.get_inputs()[0].shape, self.input_size)
        self.input_name = self.session.get_inputs()[0].name
        batch_dim = self.session.get_inputs()[0].shape[0]
        self._fixed_batch = batch_dim if isinstance(batch_dim, int) else None

    def preprocess(self, paths: Sequence[str | os.PathLike]) -> np.ndarray:
        """Image files -> a (N, C, H, W) float32 batch."""
        return np.stack([self._prepare(p) for p in paths])

    def _prepare(self, path: str | os.PathLike, invert: bool = False) -> np.ndarray:
        return _prepared(path, lambda img: preprocess_image(img, self.input_size, self.mean, self.std, self.resize,
                                                            invert=invert))

    def predict_logits(self, batch: np.ndarray) -> np.ndarray:
        """Run the graph on a preprocessed (N, C, H, W) batch."""
        if self._fixed_batch is not None:  # exported with dynamic_batch=False: one row at a time
            return np.concatenate([self.session.run(None, {self.input_name: batch[i : i + 1]})[0] for i in range(len(batch))])
        return self.session.run(None, {self.input_name: batch})[0]

    def iter_predict(self, paths: Sequence[str | os.PathLike], top_k: int = 5, batch_size: int = 64,
                     invert: bool = False) -> Iterator[Prediction]:
        """:meth:`predict` as it goes, as :func:`iter_predictions`: an unreadable file is
        ``{"path", "error"}`` and the others go on."""
        _check_k(top_k)
        _check_batch_size(batch_size)
        _check_invert(invert)
        return _predictions(image_paths(paths), batch_size, lambda p: self._prepare(p, invert),
                            lambda batch: _softmax(self.predict_logits(np.stack(batch))), self.classes, top_k)

    def predict(self, paths: Sequence[str | os.PathLike], top_k: int = 5, batch_size: int = 64,
                on_error: str = "raise", invert: bool = False) -> list[Prediction]:
        """Classify image files; same result structure as :func:`predict_images`.

        Args:
            paths: image files (or one image file).
            top_k: classes to return per image.
            batch_size: images per run of the graph.
            on_error: ``"raise"`` or ``"keep"``, as for :func:`predict_images`.
            invert: invert the pixel values, as for :func:`predict_images`.
        """
        _check_on_error(on_error)
        return _raise_or_keep(self.iter_predict(paths, top_k, batch_size, invert), on_error)
