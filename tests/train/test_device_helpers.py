"""train.device's small helpers, each against torch's own: the autocast dtype the flags ask for,
fp16 only on CUDA (README: float16 autocast with a gradient scaler, for CUDA GPUs), the module under
torch.compile and a data-parallel wrapper, and the RNG state a resume restores."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resnet_lab.train.device import amp_dtype, check_fp16, get_rng_state, set_rng_state, unwrap


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
