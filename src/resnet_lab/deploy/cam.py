"""What the network looks at: Grad-CAM maps (Selvaraju et al. 2017, arXiv:1610.02391) through the
``grad-cam`` package (``pytorch_grad_cam``, the optional extra ``resnet-lab[cam]``).

* :func:`grad_cam` weighs the feature map of the model's registered ``cam_layer``
  (:attr:`resnet_lab.models.ModelInfo.cam_layer`: ``layer4``, ``layer3`` for the CIFAR nets,
  ``bn_final`` for pre-activation and wide nets, ``features`` for DenseNet and VGG, ``inception5b``
  for GoogLeNet) by the class score's gradient and returns an (H, W) map in [0, 1];
* :func:`overlay` draws that map over an image (grad-cam's jet overlay);
* :func:`save_cams` does both for image files, as ``resnet-lab predict RUN IMAGE --cam PATH``.
"""

from __future__ import annotations

import importlib
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from torch import nn

from ..models import model_info
from ..models.registry import check_module
from ..runs import (OUTPUT_MARK, RUN_FILES, RUN_OUTPUTS, arch_outputs, atomic_write, is_one_of, is_own_output,
                    load_model)
from .predict import ImageReadError, image_paths, load_model_input

__all__ = ["CAM_SUFFIX", "cam_paths", "grad_cam", "overlay", "require_cam", "save_cams"]

#: appended to an image's stem to name its map when ``--cam`` is a directory.
CAM_SUFFIX = "_cam.png"
_INSTALL = "pip install 'resnet-lab[cam]' (the grad-cam package)"


def _cam_layer_name(model: nn.Module, layer: str | None) -> str:
    """``layer``, or the registry's ``cam_layer`` of the model's architecture."""
    if layer is not None:
        return layer
    name = (getattr(model, "model_config", None) or {}).get("name")
    if name is None:
        raise ValueError("the model has no model_config['name'] (it was not built by create_model), so the "
                         "registry cannot name its Grad-CAM layer: pass layer='<module name of its last feature map>'")
    return model_info(name).cam_layer


def _target_layer(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError:
        tops = ", ".join(n for n, _ in model.named_children())
        raise ValueError(f"the model has no module {name!r} for Grad-CAM; its top-level modules are {tops}") from None


def _one_image(image_tensor: torch.Tensor) -> torch.Tensor:
    """(C, H, W) or (1, C, H, W) -> (1, C, H, W), a leaf that requires grad."""
    if not isinstance(image_tensor, torch.Tensor):  # a numpy array was an AttributeError ('no attribute dim')
        raise TypeError(f"grad_cam takes the image as a torch.Tensor (C, H, W), got {type(image_tensor).__name__}: "
                        "convert it (torch.from_numpy, or resnet_lab.data.to_model_input for a PIL image)")
    if not image_tensor.is_floating_point():  # uint8 pixels: "only Tensors of floating point dtype can require gradients"
        raise TypeError(f"grad_cam takes a normalized floating-point image, got {image_tensor.dtype}: "
                        "resnet_lab.data.to_model_input makes one from a PIL image")
    x = image_tensor[None] if image_tensor.dim() == 3 else image_tensor
    if x.dim() != 4 or x.shape[0] != 1:
        raise ValueError(f"grad_cam takes one image, (C, H, W) or (1, C, H, W), got shape {tuple(image_tensor.shape)}")
    # A frozen backbone leaves the layer's output without a graph; a grad-requiring input keeps one.
    return x.detach().requires_grad_(True)


def require_cam() -> None:
    """Raise an ImportError saying how to install it when the grad-cam extra is missing: callers
    (``predict --cam``) check before any work, not after the predictions."""
    try:
        importlib.import_module("pytorch_grad_cam")  # optional extra: pip install 'resnet-lab[cam]'
    except ImportError as e:
        raise ImportError(f"Grad-CAM needs the optional extra: {_INSTALL}") from e


def _grad_cam(model: nn.Module, x: torch.Tensor, target_class: int | None, layer: str | None) -> tuple[np.ndarray, int]:
    """The map and the class it explains (``target_class``, or the top class)."""
    try:
        from pytorch_grad_cam import GradCAM  # optional extra: pip install 'resnet-lab[cam]'
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # optional extra, as above
    except ImportError as e:
        raise ImportError(f"Grad-CAM needs the optional extra: {_INSTALL}") from e
    bad_class = isinstance(target_class, bool) or not isinstance(target_class, (int, np.integer)) or target_class < 0
    if target_class is not None and bad_class:
        raise ValueError(f"target_class must be a class index >= 0 (or None for the top class), got {target_class!r}")
    if torch.is_inference_mode_enabled():
        raise RuntimeError("grad_cam needs gradients, which torch.inference_mode() turns off: call it outside "
                           "that block (torch.no_grad() is fine)")
    low = sorted({str(p.dtype).replace("torch.", "") for p in model.parameters() if p.dtype != torch.float32})
    if low:
        raise ValueError(f"grad_cam needs a float32 model, and this one has {', '.join(low)} parameters: pass "
                         "model.float() (a bf16/fp16 model predicts fine; its map is computed in float32)")
    layer_name = _cam_layer_name(model, layer)
    target = _target_layer(model, layer_name)
    modes = {m: m.training for m in model.modules()}  # each module's own mode: a frozen BN stays in eval
    grads = {p: None if p.grad is None else p.grad.clone() for p in model.parameters()}  # accumulated ones
    cam = GradCAM(model=model, target_layers=[target])  # puts the model in eval mode
    try:
        # callers may hold torch.no_grad() or autocast; the map needs the gradient, in float32
        with torch.enable_grad(), torch.autocast(x.device.type, enabled=False):
            targets = None if target_class is None else [ClassifierOutputTarget(target_class)]
            heat = cam(input_tensor=x.float(), targets=targets)  # (1, H, W), min-max scaled to [0, 1]
    except IndexError:
        n = cam.outputs.shape[-1]
        raise ValueError(f"target_class {target_class} is out of range: the model has {n} classes "
                         f"(0..{n - 1})") from None
    except (AttributeError, ValueError) as e:
        seen = cam.activations_and_grads.activations
        if not seen:
            raise ValueError(f"layer {layer_name!r} never ran in the forward pass, so it has no feature map for "
                             "Grad-CAM: choose a module the forward pass calls (the model's cam_layer when "
                             "layer=None)") from None
        if seen[0].dim() != 4:
            raise ValueError(f"layer {layer_name!r} gives a {seen[0].dim()}-D output {tuple(seen[0].shape)}, not a "
                             "feature map (N, C, H, W): choose a convolutional stage, e.g. the model's cam_layer "
                             "(layer=None)") from None
        raise e
    finally:
        cam.activations_and_grads.release()  # remove the hooks: the model is left as it was given
        for m, training in modes.items():
            m.training = training
        for p, g in grads.items():
            p.grad = g
    chosen = int(cam.outputs[0].argmax()) if target_class is None else int(target_class)
    heat, top = heat[0], float(heat[0].max())
    # grad-cam scales by max + 1e-7: a map of tiny raw values (an untrained net's) stopped short of 1
    return (heat / top if top > 0 else heat), chosen


def grad_cam(model: nn.Module, image_tensor: torch.Tensor, target_class: int | None = None,
             layer: str | None = None) -> np.ndarray:
    """Grad-CAM of one preprocessed image: where the evidence for ``target_class`` lies.

    The feature map A of ``layer`` is weighed per channel by the spatial mean of d(score)/dA, summed,
    passed through a ReLU, upsampled (bilinear) to the input's size and scaled to [0, 1]
    (``pytorch_grad_cam.GradCAM``). The model runs in eval mode and is returned as it came: each
    module in the train/eval mode it had, no hooks, and its parameters' ``.grad`` as they were
    (accumulated gradients survive). Autocast is turned off for the map, which is computed in float32.

    Args:
        model: a classifier; with ``layer=None`` it must come from :func:`resnet_lab.create_model`
            (or a run), whose ``model_config["name"]`` names its registered ``cam_layer``.
        image_tensor: one normalized image, (C, H, W) or (1, C, H, W), on the model's device (as
            :func:`resnet_lab.data.to_model_input` makes it).
        target_class: the class index to explain; ``None`` explains the top class.
        layer: module name of the feature map (``"layer3"``); ``None`` asks the registry.

    Returns:
        float32 array (H, W) in [0, 1], H and W those of the input.

    Raises:
        ImportError: the ``cam`` extra is not installed.
        ValueError: a bad shape, layer name (one that never runs, or has no (N, C, H, W) output) or
            class index; a model that is not float32.
        RuntimeError: called inside ``torch.inference_mode()``.
    """
    check_module(model, "grad_cam")
    heat, _ = _grad_cam(model, _one_image(image_tensor), target_class, layer)
    return heat


def _display_size(size: tuple[int, int], min_side: int) -> tuple[int, int]:
    """``size`` (W, H) scaled up by a whole factor until its shorter side is at least ``min_side``."""
    factor = max(1, math.ceil(min_side / min(size)))
    return size[0] * factor, size[1] * factor


def overlay(image: Image.Image, heatmap: np.ndarray | torch.Tensor, *, image_weight: float = 0.5,
            min_side: int = 0) -> Image.Image:
    """Draw ``heatmap`` over ``image`` in the jet colours (blue: none, red: most), grad-cam's, blended
    ``image_weight * image + (1 - image_weight) * colours`` (not stretched to the brightest pixel, as
    grad-cam's ``show_cam_on_image`` stretches it).

    Args:
        image: the picture (any mode; drawn in RGB). The heatmap is stretched over all of it, so give
            the image as the model saw it (the same crop).
        heatmap: (h, w) values in [0, 1], e.g. from :func:`grad_cam`; resized (bilinear) to the output.
        image_weight: share of the image in the blend (0: only the map, 1: only the image).
        min_side: enlarge small images by a whole factor (nearest neighbour: the pixels stay
            visible) until their shorter side has at least this many pixels; 0 keeps the size.

    Returns:
        an RGB image of ``image``'s size (times the enlarging factor).
    """
    try:
        import cv2  # optional extra (grad-cam's dependency): pip install 'resnet-lab[cam]'
    except ImportError as e:
        raise ImportError(f"overlay needs the optional extra: {_INSTALL}") from e
    heat = np.asarray(heatmap.detach().cpu() if isinstance(heatmap, torch.Tensor) else heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (H, W), got shape {heat.shape}")
    if heat.size == 0 or not np.isfinite(heat).all() or heat.min() < 0 or heat.max() > 1:
        raise ValueError("heatmap values must be finite and in [0, 1] (as grad_cam returns them)")
    if not 0.0 <= image_weight <= 1.0:
        raise ValueError(f"image_weight must be in [0, 1], got {image_weight}")
    size = _display_size(image.size, min_side)
    rgb = image.convert("RGB").resize(size, Image.Resampling.NEAREST)
    heat = np.asarray(Image.fromarray(heat, mode="F").resize(size, Image.Resampling.BILINEAR)).clip(0, 1)
    # grad-cam's jet colours, blended as documented; its show_cam_on_image also divides the blend by
    # its maximum, which brightened every picture (an image_weight=1 grey image came back white)
    jet = cv2.applyColorMap(np.uint8(255 * heat), cv2.COLORMAP_JET)[..., ::-1].astype(np.float32) / 255
    blended = (1 - image_weight) * jet + image_weight * np.asarray(rgb, dtype=np.float32) / 255
    return Image.fromarray(np.round(blended * 255).clip(0, 255).astype(np.uint8))


def _seen_image(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> Image.Image:
    """The picture the model was given: a normalized (C, H, W) tensor back on the 0..255 scale."""
    c = x.shape[0]
    m = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1).expand(c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1).expand(c, 1, 1)
    pixels = (x.detach().cpu().float() * s + m).clamp(0, 1).mul(255).round().to(torch.uint8)
    return Image.fromarray(pixels[0].numpy() if c == 1 else pixels.permute(1, 2, 0).numpy())


# The formats whose files carry OUTPUT_MARK (PNG text, JPEG/GIF comment): a map in another format
# (WebP, BMP, TIFF...) could not be told from a user's picture, so the same command would refuse to
# replace it the next time.
CAM_FORMATS = ("PNG", "JPEG", "GIF")


def _check_writable_suffix(path: Path) -> None:
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt not in CAM_FORMATS:
        raise ValueError(f"cannot write a Grad-CAM map to {path}: expected a file name ending in .png, .jpg or .gif "
                         f"(the formats that carry resnet-lab's mark, so that the same command can replace it), or a "
                         f"directory")


def cam_paths(images: Sequence[str | os.PathLike], out: str | os.PathLike) -> list[Path]:
    """Where each image's map goes: ``out`` itself for one image (unless ``out`` is an existing
    directory); otherwise ``out`` is a directory (made if missing) holding ``<image stem>_cam.png``.

    Args:
        images: the image files.
        out: the ``--cam`` path.

    Raises:
        ValueError: ``out`` cannot take the maps (a file for several images, a directory-like path
            with no picture suffix for one image, two images with the same stem).
    """
    as_dir = str(out).endswith(("/", os.sep))  # "maps/": a directory, even one to make
    out = Path(out)
    images = image_paths(images)  # one path is one image, not its letters
    if len(images) == 1 and not out.is_dir() and not as_dir:
        _check_writable_suffix(out)
        return _not_an_input([out], images)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--cam {out} is a file, but {len(images)} images need one map each: pass a directory")
    if out.suffix.lower() in Image.registered_extensions() and not out.exists():
        raise ValueError(f"--cam {out} looks like a picture file, but {len(images)} images need one map each: "
                         f"pass a directory (e.g. {out.with_suffix('')})")
    stems = [Path(p).stem for p in images]
    twice = sorted({s for s in stems if stems.count(s) > 1})
    if twice:
        raise ValueError(f"images with the same name {', '.join(twice)} would share a map in {out}: "
                         f"run them in separate calls")
    return _not_an_input([out / f"{stem}{CAM_SUFFIX}" for stem in stems], images)


def _not_an_input(targets: list[Path], images: Sequence[str | os.PathLike]) -> list[Path]:
    """Refuse a map that would overwrite one of the images it is drawn from, or a run's file."""
    for target in targets:
        if target.is_dir():
            raise ValueError(f"--cam {target} is a directory, where the map of {target.stem.removesuffix('_cam')} "
                             "would go: choose another --cam path, or move it")
        if is_one_of(target, images):
            raise ValueError(f"--cam {target} is one of the input images; the map would overwrite it: choose "
                             "another --cam path")
        if target.name in RUN_FILES + RUN_OUTPUTS and (target.parent / "model.json").exists():
            raise ValueError(f"--cam {target} belongs to the run in {target.parent}; the map would overwrite it: "
                             "choose another --cam path")
        if target.is_file() and not is_own_output(target):
            raise ValueError(f"--cam {target} exists and is no earlier Grad-CAM map (resnet-lab did not write it); "
                             "the map would overwrite it: choose another --cam path, or delete it first")
    return targets


def _save_marked(image: Image.Image, target: Path) -> None:
    """Write ``image`` atomically in the format its name says, with :data:`OUTPUT_MARK` where the
    format has room for it (PNG text, JPEG and GIF comment), so that a later run may replace it."""
    fmt = Image.registered_extensions()[target.suffix.lower()]
    extra: dict[str, Any] = {}
    if fmt == "PNG":
        extra["pnginfo"] = PngInfo()
        extra["pnginfo"].add_text("Software", OUTPUT_MARK)
    elif fmt in ("JPEG", "GIF"):
        extra["comment"] = OUTPUT_MARK
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    atomic_write(target, lambda tmp: image.save(tmp, format=fmt, **extra))


def save_cams(
    source_or_model: str | os.PathLike | nn.Module,
    images: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    meta: dict[str, Any] | None = None,
    min_side: int = 224,
    on_error: str = "raise",
    invert: bool = False,
) -> list[dict[str, Any]]:
    """Write the Grad-CAM of each image's top class over the image as the model saw it (resized or
    cropped to its input size, enlarged to ``min_side``): ``predict RUN IMAGE... --cam out``.

    Args:
        source_or_model: a run directory or ``.safetensors`` file, or a model (then ``meta`` is required).
        images: image files (or one image file).
        out: one image: the picture's path; several: a directory (see :func:`cam_paths`).
        device: where the model runs (None: a model given stays where it is; a run loads on the CPU).
        meta: ``model.json`` content (``input_size``, ``mean``, ``std``, ``classes``) when passing a model.
        min_side: shorter side of the written pictures at least (see :func:`overlay`).
        on_error: ``"raise"``: an image that cannot be read raises ``ImageReadError`` naming it;
            ``"keep"``: its entry is ``{"path", "error"}``, no map, and the other maps are drawn (as
            ``predict_images``; the maps' names are those of all the images given).
        invert: invert the pixel values first, as ``predict_images(..., invert=True)``: the map is
            drawn over the image as the model saw it.

    Returns:
        ``{"path": image, "cam": written picture, "class": explained class}`` per image, in order.
    """
    if on_error not in ("raise", "keep"):
        raise ValueError(f"on_error must be 'raise' or 'keep', got {on_error!r}")
    images = image_paths(images)
    targets = cam_paths(images, out)  # check the destination before any work
    if isinstance(source_or_model, nn.Module):
        if meta is None:
            raise ValueError("save_cams(model, ...) needs meta= with input_size, mean, std and classes "
                             "(a run's model.json)")
        if device is None:  # the caller's model stays where it is
            device = next(source_or_model.parameters(), torch.empty(0)).device
        model = source_or_model.to(device)
    else:
        device = "cpu" if device is None else device
        model, meta = load_model(source_or_model, device=device)
    classes = meta.get("classes")
    outputs = arch_outputs(getattr(model, "model_config", None) or meta.get("arch") or {})
    if classes and outputs is not None and len(classes) != outputs:
        raise ValueError(f"meta names {len(classes)} classes but the model has {outputs} outputs: give one class "
                         "name per output")
    written = []
    for path, target in zip(images, targets):
        try:
            x = load_model_input(path, meta, invert=invert).to(device)  # (1, C, H, W)
        except ImageReadError as e:
            if on_error == "raise":
                raise
            written.append({"path": str(Path(path)), "error": str(e)})
            continue
        heat, cls = _grad_cam(model, _one_image(x), None, None)
        _save_marked(overlay(_seen_image(x[0], meta["mean"], meta["std"]), heat, min_side=min_side), target)
        written.append({"path": str(Path(path)), "cam": str(target), "class": classes[cls] if classes else str(cls)})
    return written
