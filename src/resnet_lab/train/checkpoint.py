"""Run directories: weights as safetensors, metadata as JSON, training state as tensors only.

A run directory holds (DESIGN.md "Runs and checkpoints")::

    model.safetensors   weights of the last completed epoch (or of the interrupt)
    best.safetensors    weights of the best test accuracy so far
    model.json          architecture (create_model arguments), classes, input size, mean/std,
                        epoch, metrics
    train_state.pt      optimizer, scheduler, RNG and loader position; tensors and plain Python
                        containers only, so ``torch.load(..., weights_only=True)`` reads it
    metrics.jsonl       one JSON line per epoch
    curves.png, confusion.png

Every file is written to a temporary name in the same directory and renamed into place, so a
crash or Ctrl-C in the middle of a save never leaves a half-written file behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

__all__ = [
    "FORMAT",
    "atomic_write",
    "atomic_write_text",
    "find_model_json",
    "load_meta",
    "load_model",
    "load_state_dict_file",
    "load_train_state",
    "save_model",
    "save_state_dict",
    "save_train_state",
]

FORMAT = "resnet-lab/1"


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` then atomically rename the temporary file to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def _cpu_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous tensors without shared storage; clone breaks any sharing.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}


def save_state_dict(path: str | os.PathLike, state: dict[str, torch.Tensor] | nn.Module, metadata: dict | None = None) -> Path:
    """Write weights to a ``.safetensors`` file atomically."""
    from safetensors.torch import save_file

    if isinstance(state, nn.Module):
        state = _cpu_state_dict(state)
    meta = {"format": FORMAT, **({k: str(v) for k, v in metadata.items()} if metadata else {})}
    return atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def save_model(run_dir: str | os.PathLike, model: nn.Module, meta: dict[str, Any], *, best: bool = False) -> None:
    """Write ``model.safetensors`` (and ``best.safetensors`` when ``best``) and ``model.json``.

    ``meta`` must carry ``arch`` (the ``create_model`` arguments, as ``model.model_config``);
    everything else (classes, input_size, mean, std, epoch, metrics) is stored as given.
    """
    run_dir = Path(run_dir)
    if "arch" not in meta:
        config = getattr(model, "model_config", None)
        if config is None:
            raise ValueError("meta has no 'arch' and the model has no model_config: build it with create_model")
        meta = {"arch": config, **meta}
    meta = {"format": FORMAT, **meta}
    state = _cpu_state_dict(model)
    save_state_dict(run_dir / "model.safetensors", state)
    if best:
        save_state_dict(run_dir / "best.safetensors", state)
    atomic_write_text(run_dir / "model.json", json.dumps(meta, indent=2, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def load_state_dict_file(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read weights from ``.safetensors``, or ``.pth``/``.pt`` with ``weights_only=True``.

    ``.pth`` files are never unpickled beyond tensors; a file holding ``{"state_dict": ...}`` or
    ``{"model": ...}`` (common training checkpoints) is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device=str(map_location))
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle.UnpicklingError and friends
        raise ValueError(
            f"{path} could not be read with torch.load(weights_only=True) ({e}). Only tensor "
            "checkpoints are accepted; re-save it as torch.save(model.state_dict(), path) or as "
            ".safetensors."
        ) from e
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return obj


def find_model_json(source: str | os.PathLike) -> Path:
    """The ``model.json`` that describes a run directory or a weights file inside one."""
    source = Path(source)
    candidates = [source / "model.json"] if source.is_dir() else [source.with_suffix(".json"), source.parent / "model.json"]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"no model.json found for {source} (looked at {', '.join(map(str, candidates))}). Pass a run "
        "directory written by `resnet-lab train`, or a .safetensors file that has its model.json beside it."
    )


def load_meta(source: str | os.PathLike) -> dict[str, Any]:
    with open(find_model_json(source), encoding="utf-8") as f:
        meta = json.load(f)
    if "arch" not in meta or "name" not in meta["arch"]:
        raise ValueError(f"{find_model_json(source)} has no 'arch.name': not a resnet-lab model.json")
    return meta


def _weights_path(source: Path, which: str) -> Path:
    if source.is_dir():
        path = source / f"{which}.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{source} has no {which}.safetensors: is it a resnet-lab run directory?")
        return path
    if not source.exists():
        raise FileNotFoundError(f"no such run directory or weights file: {source}")
    return source


def load_model(source: str | os.PathLike, device: str | torch.device = "cpu", *, which: str = "model") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a run directory or ``.safetensors`` file; returns ``(model, meta)``.

    Args:
        source: run directory, or a weights file with a ``model.json`` beside it.
        device: where to put the model.
        which: in a run directory, ``model`` (last epoch) or ``best``.

    The model is returned in eval mode.
    """
    from ..models import create_model

    source = Path(source)
    meta = load_meta(source)
    arch = dict(meta["arch"])
    name = arch.pop("name")
    model = create_model(name, **arch)
    if (meta.get("transfer") or {}).get("head"):
        # `finetune --strategy head` stacked a new Linear on the classifier; rebuild it first.
        from ..transfer.heads import restore_head

        restore_head(model, meta)
    state = load_state_dict_file(_weights_path(source, which))
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), meta


def save_train_state(run_dir: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``train_state.pt`` atomically (tensors and plain containers only)."""
    return atomic_write(Path(run_dir) / "train_state.pt", lambda tmp: torch.save(state, tmp))


def load_train_state(run_dir: str | os.PathLike) -> dict[str, Any]:
    path = Path(run_dir) / "train_state.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: nothing to resume (start without --resume)")
    return torch.load(path, map_location="cpu", weights_only=True)
