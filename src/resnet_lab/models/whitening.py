"""A patch-whitening first layer: the convolution that sees the image set, once, to the PCA
whitening of the training images' patches, and frozen.

The airbench recipe (Jordan 2024, "94% on CIFAR-10 in 3.29 seconds", arXiv 2404.00498, after
tysam-code's hlb-CIFAR10): every ``C x kh x kw`` patch of the training images is a vector of
``D = C*kh*kw`` numbers; the eigenvectors ``v_i`` of their covariance, scaled by
``1 / sqrt(lambda_i + eps)``, are filters whose outputs are uncorrelated with unit variance (for
``lambda_i >> eps``), the strongest directions first. Training then starts from decorrelated
inputs and the layer costs no gradient.

Here the covariance is centred (hlb-CIFAR10's ``torch.cov``; airbench94 uses the uncentred second
moment, the same thing for normalized images whose mean is about 0), and is accumulated in
float64 over chunks of images, so 5000 CIFAR images need little memory.

This module gets the images as a tensor; where they come from (the loader, normalized and not
augmented) is the caller's business (``resnet-lab train --whiten``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .registry import is_model, model_info

__all__ = ["Whitening", "find_first_conv", "patch_whitening", "whiten_first_conv"]

_CHUNK_VALUES = 2**23  # float64 patch values unfolded at a time (64 MiB)


@dataclass(frozen=True)
class Whitening:
    """What :func:`whiten_first_conv` did, for ``model.json``.

    Args:
        module: name of the whitened convolution (``conv1``).
        images: how many images the patch statistics came from.
        eps: added to each eigenvalue before the inverse square root.
        patch_dim: ``D = C * kh * kw``, the number of eigen-directions.
        out_channels: the convolution's output channels.
        whitened: how many of them were set (``min(out_channels, 2 * D)``: the ``D`` directions
            first, then their negatives, as airbench fills its ``2D`` channels); the rest, when
            ``out_channels > 2D``, keep their initial values (and are frozen with the rest).
    """

    module: str
    images: int
    eps: float
    patch_dim: int
    out_channels: int
    whitened: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The convolution that sees the image and its module name: the registry's ``first_conv``
    for zoo models (``model.model_config["name"]``), else the first ``nn.Conv2d`` in module order.

    Args:
        model: any module with at least one ``nn.Conv2d``.
    """
    name = (getattr(model, "model_config", None) or {}).get("name")
    if name and is_model(name):
        path = model_info(name).first_conv
        conv = model.get_submodule(path)
        if isinstance(conv, nn.Conv2d):
            return path, conv
    for path, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return path, m
    raise ValueError(f"{type(model).__name__} has no nn.Conv2d: nothing to whiten")


def patch_whitening(
    images: torch.Tensor, kernel_size: tuple[int, int], *, dilation: tuple[int, int] = (1, 1)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigen-decomposition of the covariance of every ``kernel_size`` patch of ``images``.

    Args:
        images: float (N, C, H, W), as the model sees them (normalized).
        kernel_size: ``(kh, kw)``; patches are taken at every position (stride 1, no padding).
        dilation: the convolution's dilation (the spacing of a patch's pixels).

    Returns:
        ``(eigenvalues, eigenvectors)`` in float64, strongest first: (D,) and (D, D) with
        eigenvector ``i`` in row ``i``, laid out as a conv weight row (channel, row, column).
    """
    n, c, h, w = images.shape
    kh, kw = kernel_size
    span_h, span_w = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
    if h < span_h or w < span_w:
        spans = f" (it spans {span_h}x{span_w} px at dilation {tuple(dilation)})" if (span_h, span_w) != (kh, kw) else ""
        raise ValueError(f"images of {h}x{w} px are smaller than the {kh}x{kw} kernel{spans}: no patch to whiten")
    d = c * kh * kw
    moments, total, count = torch.zeros(d, d, dtype=torch.float64), torch.zeros(d, dtype=torch.float64), 0
    per_image = d * (h - span_h + 1) * (w - span_w + 1)
    for chunk in images.split(max(1, _CHUNK_VALUES // per_image)):
        x = chunk.detach().to("cpu", torch.float64)
        patches = F.unfold(x, (kh, kw), dilation=dilation).transpose(1, 2).reshape(-1, d)  # (B*L, D)
        moments += patches.T @ patches
        total += patches.sum(0)
        count += patches.shape[0]
    mean = total / count
    cov = moments / count - torch.outer(mean, mean)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov)  # ascending, vectors in columns
    return eigenvalues.flip(0).clamp(min=0), eigenvectors.flip(1).T.contiguous()


def _images_way_out(images: object) -> str:
    """The call that turns what was given instead of an image tensor into one (for the TypeError)."""
    in_memory = "(its first images, normalized as the model sees them, not augmented)"
    if hasattr(images, "normalized_images"):  # an in-memory loader: data.train
        return f"data.train.normalized_images(5000) {in_memory}"
    if hasattr(images, "train") and hasattr(images, "test"):  # load_data's DataBundle
        if hasattr(images.train, "normalized_images"):
            return f"data.train.normalized_images(5000) {in_memory}"
        return ("a tensor of unaugmented training images normalized as the model sees them (data.train streams "
                "an image folder, augmented)")
    loader = f"data.train.normalized_images(5000) {in_memory}"
    if isinstance(images, (list, tuple)) and images and all(isinstance(x, torch.Tensor) for x in images):
        if len(images) == 2 and images[0].ndim == 4 and images[1].ndim == 1:  # one loader batch (x, y)
            return f"{loader}; a batch's own images (its x, augmented) whiten for the augmentation"
        if all(x.ndim == 4 for x in images):  # image batches
            return "torch.cat(images) (the batches joined), normalized as the model sees them, not augmented"
        if all(x.ndim == 3 for x in images):
            return "torch.stack(images) (each a (C, H, W) image), normalized as the model sees them"
    if isinstance(images, (list, tuple)) and images and all(isinstance(b, (list, tuple)) for b in images):
        return f"{loader} (what was given holds (images, labels) batches, as a loader yields them)"
    return "torch.as_tensor(images) for a numpy array of (N, C, H, W) images, normalized as the model sees them"


@torch.no_grad()
def whiten_first_conv(model: nn.Module, images: torch.Tensor, *, eps: float = 5e-4) -> Whitening:
    """Set the model's first convolution to the PCA whitening of ``images``' patches and freeze it.

    Output channel ``i < D`` gets eigenvector ``v_i / sqrt(lambda_i + eps)`` (strongest first);
    channels ``D..2D-1`` the same with the opposite sign (airbench's layout: with a ReLU after, both
    halves of each direction pass); more than ``2D`` channels keep their initial weights after
    that; fewer than ``D`` keep the strongest directions. The bias, if any, is left as it is and
    trains. The weight gets ``requires_grad=False`` (it stays in the state dict, so saved runs load
    back unchanged; the trainer leaves frozen parameters out of the optimizer).

    Args:
        model: the model; its first conv is found by :func:`find_first_conv`.
        images: float (N, C, H, W) training images, normalized as the model sees them, not
            augmented (airbench uses 5000).
        eps: added to each eigenvalue (airbench's 5e-4, for inputs of unit variance); larger
            values damp the weak, noisy directions.

    Raises:
        ValueError: a grouped first conv (whitening mixes all input channels), images whose
            channel count is not the conv's, eps <= 0 or an empty image tensor.
        TypeError: ``images`` is not a tensor (a loader or load_data's bundle: pass
            ``data.train.normalized_images(5000)``; a list of images: ``torch.stack(images)``).
    """
    if not isinstance(images, torch.Tensor):  # a loader read "'InMemoryLoader' object has no attribute 'ndim'"
        raise TypeError(f"images must be a tensor of training images (N, C, H, W), got {type(images).__name__}: pass "
                        f"{_images_way_out(images)}")
    path, conv = find_first_conv(model)
    if conv.groups != 1:
        raise ValueError(f"{path} is a grouped convolution (groups={conv.groups}); patch whitening needs a conv "
                         "that sees every input channel")
    if images.ndim != 4 or images.shape[0] < 1 or images.shape[1] != conv.in_channels:
        raise ValueError(f"images must be (N>=1, {conv.in_channels}, H, W) for {path}, got {tuple(images.shape)}")
    if not eps > 0:  # a zero eigenvalue (a constant channel) would divide by zero
        raise ValueError(f"eps must be > 0, got {eps}; airbench uses 5e-4")
    kernel, dilation = tuple(conv.kernel_size), tuple(conv.dilation)
    eigenvalues, eigenvectors = patch_whitening(images, kernel, dilation=dilation)  # type: ignore[arg-type]
    filters = eigenvectors / torch.sqrt(eigenvalues + eps)[:, None]  # (D, D)
    filters = torch.cat([filters, -filters])[: conv.out_channels]
    k = filters.shape[0]
    conv.weight[:k] = filters.view(k, *conv.weight.shape[1:]).to(conv.weight.dtype)
    conv.weight.requires_grad_(False)
    return Whitening(module=path, images=int(images.shape[0]), eps=float(eps), patch_dim=int(eigenvalues.numel()),
                     out_channels=int(conv.out_channels), whitened=k)
