"""Helpers shared by tests in several folders (imported as ``from support import ...``; the
suite puts ``tests/`` on the path, and a plain module avoids the ambiguity of several
conftest.py files under ``--import-mode=importlib``)."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
import torch
from torch import nn


FMNIST_STEMS = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def write_fmnist(folder: Path, n: int = 10, seed: int | None = None) -> Path:
    """The four IDX files (uint8, big-endian dims), 28x28 images of value 7 (random pixels drawn
    with ``seed`` when it is given: images that can be normalized and trained on), labels 0..9."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for stem in FMNIST_STEMS:
        pixels = np.full((n, 28, 28), 7, np.uint8) if seed is None else rng.integers(0, 256, (n, 28, 28), np.uint8)
        arr = pixels if "images" in stem else (np.arange(n) % 10).astype(np.uint8)
        head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
        (folder / stem).write_bytes(head + arr.tobytes())
    return folder


def write_image_folder(root: Path, classes=("a", "b"), n: int = 10, seed: int = 0) -> Path:
    """An image folder dataset: ``n`` random 8x8 RGB PNGs (seeded) in a sub-folder per class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BN with running statistics (torch's, ours, any width) non-trivial ones, a
    non-trivial scale and shift where it has them, and ``num_batches_tracked`` 1234: the defaults
    (mean 0, var 1, scale 1, shift 0) make a BN the identity in eval mode, which would hide a
    wrong mode, a misplaced tensor or a statistic that drifted.

    Args:
        model: changed in place; its train/eval mode is left as it is.
        seed: seed of the draws.

    Returns the model, for chaining (``randomize_bn(build()).eval()``).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if not isinstance(getattr(m, "running_mean", None), torch.Tensor):
                continue
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(getattr(m, "num_batches_tracked", None), torch.Tensor):
                m.num_batches_tracked.fill_(1234)
            if getattr(m, "weight", None) is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model


def hooked_modules(model: nn.Module) -> list[str]:
    """Names of the modules of ``model`` that still carry a forward (pre-)hook: a tool that hooks a
    model for one pass or one recording must leave this empty afterwards."""
    return [name for name, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks]


def std_off(w: torch.Tensor, want: float, sigmas: float = 6.0) -> str | None:
    """Why ``w``'s standard deviation is not ``want`` (None when it is): more than ``sigmas``
    standard errors away (about ``want / sqrt(2 n)`` for n independent normal draws), or its mean
    more than ``sigmas`` standard errors off 0. A loose bound: the draws are seeded, so a test
    that uses it is deterministic; a He init over the other fan, or another gain, is several
    times the bound away for tensors of a few hundred values or more."""
    w, n = w.detach().double().flatten(), w.numel()
    std, mean = w.std().item(), w.mean().item()
    if abs(std / want - 1) > sigmas / (2 * n) ** 0.5:
        return f"std {std:.4g}, want {want:.4g} (n={n})"
    if abs(mean) > sigmas * want / n ** 0.5:
        return f"mean {mean:.4g}, want 0 (std {want:.4g}, n={n})"
    return None


def init_differences(ours: nn.Module, ref: nn.Module) -> dict[str, str]:
    """Every parameter of ``ours`` against ``ref``'s of the same name, both freshly initialised:
    a constant one (a norm's 1s, a bias's 0s) must be equal, a random one drawn with the same
    spread (see :func:`std_off`; twice the bound, both are estimates). Returns what differs, by
    name; a name ``ref`` lacks is a difference too."""
    refs = dict(ref.named_parameters())
    out = {}
    for name, p in ours.named_parameters():
        r = refs.get(name)
        if r is None or r.shape != p.shape:
            out[name] = f"{tuple(p.shape)}, the reference's: {None if r is None else tuple(r.shape)}"
        elif r.numel() < 2 or r.detach().std() == 0:
            if not torch.equal(p, r):
                out[name] = "not the reference's constant"
        elif why := std_off(p, r.detach().double().std().item(), sigmas=6.0 * 2 ** 0.5):
            out[name] = why
    return out


class FakeTorchvisionCifar10:
    """Stands in for torchvision.datasets.CIFAR10(download=True): writes torchvision's
    python-pickle layout (5 train batches of 6 images, a test batch of 6) into ``root``."""

    roots: list[tuple[str, bool]] = []

    def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
        type(self).roots.append((root, download))
        d = Path(root) / "cifar-10-batches-py"
        d.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            batch = {b"labels": list(rng.integers(0, 10, 6)), b"data": rng.integers(0, 256, (6, 3072), dtype=np.uint8)}
            (d / name).write_bytes(pickle.dumps(batch, protocol=2))
        (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [f"c{i}".encode() for i in range(10)]}))


class TerminalStream(io.StringIO):
    """A stream that says it is a terminal, as a shell's stderr does: progress bars draw only on
    one (``contextlib.redirect_stderr(TerminalStream())``)."""

    def isatty(self) -> bool:
        return True


# A tiny CLI training run: the flags (no plots: drawing them took most of such a run's time), and a trained
# run with a grey image to predict on.
TINY_TRAIN = ["--model", "resnet8", "--dataset", "fake", "--image-size", "16", "--subset", "64", "--batch-size", "16",
              "--no-progress", "--no-plots"]


def tiny_trained_run(root: Path, epochs: int) -> tuple[Path, Path]:
    """Train ``TINY_TRAIN`` for ``epochs`` into ``root/run`` through the CLI; return it and a 16x16 image."""
    from PIL import Image  # deferred: most users of this module need no images

    from resnet_lab.cli import main  # deferred: the CLI loads everything

    run = root / "run"
    assert main(["train", *TINY_TRAIN, "--epochs", str(epochs), "--out", str(run)]) == 0
    image = root / "img.png"
    Image.new("L", (16, 16), 128).save(image)
    return run, image


def run_files(run: Path) -> dict[str, bytes]:
    """``{file name: bytes}`` of the files directly in ``run``: compared before and after a refused
    command, it shows that nothing was written."""
    return {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}


def hand_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """A batch a user's own loader might yield: 16 one-channel 8x8 images and int64 labels 0-9."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 1, 8, 8, generator=g) * 3, torch.arange(16) % 10


def bad_batches(caller: str, classes: str) -> list[tuple[tuple, type, str]]:
    """Hand-made batches a one-channel, ten-class create_model model must refuse, as
    ``(batch, error type, message pattern)``: ``caller`` names the function in the message,
    ``classes`` where its class count came from (the label-range message names it)."""
    x, y = hand_batch()
    return [
        ((x, y.float()), TypeError, rf"{caller} needs integer class indices as labels, got torch.float32: y.long\(\)"),
        # a mask is no class index, though .long() would make one of 0s and 1s
        ((x, y > 4), TypeError, rf"{caller} needs integer class indices as labels, got torch.bool: y.long\(\)"),
        ((x, torch.where(y == 9, 10, y)), ValueError, rf"label 10 is not a class index for {classes}: labels must be 0 to 9"),
        ((x, torch.where(y == 0, -1, y)), ValueError, rf"label -1 is not a class index for {classes}"),
        ((x.double(), y), TypeError, rf"{caller} got torch.float64 images for a model with torch.float32 weights: x.float\(\)"),
        (((x * 40).clamp(0, 255).to(torch.uint8), y), TypeError, r"torch.uint8 images .*x.float\(\) \(and divide 0-255 pixels by 255\)"),
        ((x, y[:, None]), ValueError, r"needs one label per image, shape \(16,\), got \(16, 1\): y.flatten\(\)"),
        ((x, y[:3]), ValueError, r"needs one label per image, shape \(16,\), got \(3,\)"),
        ((x, y, y), TypeError, rf"{caller} needs batches of \(images, labels\), got a tuple of 3"),
        ((x, y.tolist()), TypeError, r"needs batches of two tensors \(images, labels\), got \(Tensor, list\)"),
        ((x[:, 0], y), ValueError, r"needs images of shape \(N, C, H, W\), got \(16, 8, 8\): add the channel axis, "
                                   r"x.unsqueeze\(1\)"),
        ((x.expand(-1, 3, -1, -1), y), ValueError, r"got images of 3 channels, shape \(16, 3, 8, 8\), for a model that "
                                                   r"takes 1: load the data with in_channels=1"),
    ]
