"""Where training runs: the device, bf16 autocast, and the RNG state that an exact resume restores."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["autocast", "get_rng_state", "resolve_device", "set_rng_state", "unwrap"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU; an explicit CUDA device must exist."""
    if str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} asked for, but CUDA is not available here; use --device cpu")
    return dev


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast on ``device`` (a no-op context when not ``enabled``): one code path."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def unwrap(model: nn.Module) -> nn.Module:
    """The module that owns the parameters, under ``torch.compile`` and DistributedDataParallel."""
    model = getattr(model, "_orig_mod", model)  # torch.compile
    return getattr(model, "module", model)  # DistributedDataParallel


def get_rng_state(device: torch.device) -> dict[str, Tensor]:
    """The global RNG state (dropout draws from it; the loaders have their own generators)."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
