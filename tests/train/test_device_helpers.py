"""train.device's small helpers, each against torch's own: the autocast dtype the flags ask for,
fp16 only on CUDA (README: float16 autocast with a gradient scaler, for CUDA GPUs), the module under
torch.compile and a data-parallel wrapper, and the RNG state a resume restores."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
from torch import nn

from resnet_lab.train.device import (amp_dtype, autocast, check_fp16, emulated_bf16, get_rng_state, set_rng_state,
                                     unwrap)


@pytest.mark.parametrize("bf16, fp16, dtype", [(False, False, None), (True, False, torch.bfloat16),
                                               (False, True, torch.float16)])
def test_amp_dtype_is_the_dtype_each_flag_names(bf16, fp16, dtype):
    assert amp_dtype(bf16=bf16, fp16=fp16) == dtype


def test_amp_dtype_refuses_both_flags_rather_than_picking_one():
    with pytest.raises(ValueError, match="--bf16 and --fp16 exclude each other"):
        amp_dtype(bf16=True, fp16=True)


@pytest.mark.parametrize("device", ["cpu", "mps", "meta"])
def test_fp16_is_refused_on_every_device_but_cuda(device):
    with pytest.raises(ValueError, match=rf"this is on {device}: use --bf16"):
        check_fp16(torch.device(device), True)
    check_fp16(torch.device(device), False)
    check_fp16(torch.device("cuda", 1), True)  # a name only: no GPU is touched


def test_unwrap_gives_the_module_that_owns_the_parameters_under_compile_and_data_parallel():
    model = nn.Linear(3, 2)
    wrapped = [torch.compile(model), nn.DataParallel(model), torch.compile(nn.DataParallel(model))]
    for outer in wrapped:
        assert outer is not model and unwrap(outer) is model
        assert dict(unwrap(outer).named_parameters()).keys() == dict(model.named_parameters()).keys()  # no prefix
    assert unwrap(model) is model


def test_a_restored_rng_state_draws_what_the_saved_one_drew():
    torch.manual_seed(7)
    state = get_rng_state(torch.device("cpu"))
    assert state.keys() == {"cpu"} and torch.equal(state["cpu"], torch.get_rng_state())
    first = torch.rand(5)
    torch.rand(3)  # the state moves on
    set_rng_state(state, torch.device("cpu"))
    assert torch.equal(torch.rand(5), first)


def test_a_gpu_runs_rng_state_restores_on_the_cpu_leaving_the_cuda_part_alone():
    # a checkpoint of a GPU run holds a "cuda" state too; resumed on a CPU it must not reach for CUDA
    torch.manual_seed(3)
    state = {**get_rng_state(torch.device("cpu")), "cuda": torch.zeros(16, dtype=torch.uint8)}
    first = torch.rand(4)
    set_rng_state(state, torch.device("cpu"))
    assert torch.equal(torch.rand(4), first)


@pytest.mark.parametrize("dtype", [None, torch.bfloat16, torch.float16])
def test_autocast_computes_a_matmul_in_the_dtype_asked_and_in_float32_without_one(dtype):
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast(torch.device("cpu"), dtype):
        out = a @ b
    assert out.dtype == (dtype or torch.float32)


@pytest.mark.parametrize("avx2, avx512, bf16, amx, emulated", [
    (True, False, False, False, True), (False, True, False, False, True),  # x86 with either vector unit
    (False, False, False, False, False),  # neither: not an x86 CPU torch knows, counted as native
    (True, True, True, False, False), (True, True, False, True, False),  # AVX512-BF16 or AMX: native
])
def test_emulated_bf16_is_an_x86_cpu_without_avx512_bf16_and_without_amx(avx2, avx512, bf16, amx, emulated,
                                                                          monkeypatch):
    for name, value in [("_is_avx2_supported", avx2), ("_is_avx512_supported", avx512),
                        ("_is_avx512_bf16_supported", bf16), ("_is_amx_tile_supported", amx)]:
        monkeypatch.setattr(torch.cpu, name, lambda value=value: value)
    assert emulated_bf16(torch.device("cpu")) is emulated


def _cpu_flags() -> set[str] | None:
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return None
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), None)
    return set(line.split(":", 1)[1].split()) if line else None


def test_emulated_bf16_agrees_with_the_cpus_own_flags():
    """The reference is the kernel's list of the CPU's features (Linux x86 only)."""
    flags = _cpu_flags()
    if not flags or "sse2" not in flags:
        pytest.skip("needs /proc/cpuinfo of an x86 CPU")
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert emulated_bf16(torch.device("cpu")) is (not native)
    assert emulated_bf16(torch.device("cuda")) is False and emulated_bf16(torch.device("meta")) is False


@pytest.mark.parametrize("entry", ["train", "lr_find", "evaluate"])
@pytest.mark.parametrize("bf16_flag, amx, bf16, warned", [(False, False, True, True), (True, False, True, False),
                                                          (False, True, True, False), (False, False, False, False)])
def test_train_lr_find_and_evaluate_warn_of_an_emulated_bf16_once(entry, bf16_flag, amx, bf16, warned, monkeypatch):
    """On an x86 CPU without AVX512-BF16 or AMX, --bf16 ran about 2x slower than float32 without a word.
    Every warning is recorded (pyproject's filter hides this one from the rest of the suite)."""
    from resnet_lab.train import TrainConfig, evaluate, lr_find, train
    from tinytrain import TinyNet, make_bundle

    monkeypatch.setattr(torch.cpu, "_is_avx2_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: bf16_flag)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    config = TrainConfig(epochs=1, lr=0.05, bf16=bf16, device="cpu", progress=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if entry == "train":  # it evaluates every epoch: warned once all the same
            train(TinyNet(), make_bundle(), dataclasses.replace(config, epochs=2), log=lambda line: None)
        elif entry == "evaluate":  # evaluate(bf16=True) in Python ran emulated without a word
            bundle = make_bundle()
            evaluate(TinyNet(), bundle.test, num_classes=len(bundle.info.classes), bf16=bf16)
        else:
            lr_find(TinyNet(), make_bundle(), config, steps=5)
    said = [w for w in caught if "is emulated here and slower than float32" in str(w.message)]
    assert [str(w.message) for w in said] == (["this CPU has neither AVX512-BF16 nor AMX, so bf16 (--bf16) is "
                                               "emulated here and slower than float32: leave it out for speed"]
                                              if warned else [])
    assert all(w.filename == __file__ for w in said)  # the user's line, not one of ours
