"""Where training runs: the device, autocast (bf16, or fp16 with a GradScaler), and the RNG state
that an exact resume restores."""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from .._text import user_stacklevel
from ..data.config import check_device_name, check_device_present, pick_device

__all__ = ["amp_dtype", "autocast", "check_fp16", "emulated_bf16", "get_rng_state", "resolve_device", "set_rng_state",
           "unwrap", "warn_emulated_bf16"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple's MPS, then the CPU (data's :func:`~resnet_lab.data.config.pick_device`,
    so load_data chooses alike); an explicit CUDA or MPS device must exist here
    (:func:`~resnet_lab.data.config.check_device_present`: CUDA at all, and the index)."""
    dev = pick_device(check_device_name(device, training=True))  # data's check, in the trainer's words
    check_device_present(dev)  # data's check: load_data and train refuse a missing device in the same words
    return dev


def amp_dtype(bf16: bool = False, fp16: bool = False) -> torch.dtype | None:
    """The autocast dtype the flags ask for, or None for full precision."""
    if bf16 and fp16:
        raise ValueError("--bf16 and --fp16 exclude each other: pick one autocast dtype")
    return torch.bfloat16 if bf16 else torch.float16 if fp16 else None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast to ``dtype`` on ``device``; a no-op context for ``None``: one code path for all."""
    return torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def check_fp16(device: torch.device, fp16: bool) -> None:
    """float16 autocast needs a GradScaler and a GPU; a CPU trains in bfloat16 instead."""
    if fp16 and device.type != "cuda":
        raise ValueError(f"--fp16 (fp16=True: float16 autocast with a gradient scaler) is for CUDA GPUs without "
                         f"bfloat16 (T4, V100); this is on {device}: use --bf16 (bf16=True) there, or neither")


def emulated_bf16(device: torch.device) -> bool:
    """Whether bfloat16 autocast on ``device`` would be emulated: an x86 CPU without AVX512-BF16 and
    without AMX, where oneDNN widens every bfloat16 product to float32 and a step runs slower than in
    float32 (about 2x for resnet8_fast on an Ice Lake Xeon). GPUs, and CPUs torch cannot tell
    (not x86), count as native."""
    cpu = torch.cpu
    if device.type != "cpu" or not hasattr(cpu, "_is_avx512_bf16_supported"):
        return False
    x86 = cpu._is_avx2_supported() or cpu._is_avx512_supported()
    return bool(x86 and not cpu._is_avx512_bf16_supported() and not cpu._is_amx_tile_supported())


def warn_emulated_bf16(device: torch.device, bf16: bool) -> None:
    """Warn, naming the user's line, when ``bf16`` autocast would be emulated on ``device``
    (:func:`emulated_bf16`): train and lr_find would run slower than in float32 without a word."""
    if bf16 and emulated_bf16(device):
        warnings.warn("this CPU has neither AVX512-BF16 nor AMX, so bf16 (--bf16) is emulated here and slower than "
                      "float32: leave it out for speed", stacklevel=user_stacklevel())


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
