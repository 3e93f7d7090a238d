"""train's resolve_device and the data's loaders refuse a device this machine lacks through one
check (data.config.check_device_present): the same words, naming both ways out (device='cpu' in
Python, --device cpu on the command line), and the same verdict on a CUDA index past the GPUs."""

from __future__ import annotations

import pytest
import torch

from resnet_lab.data import load_data
from resnet_lab.train import resolve_device


def _message(call, device) -> str:
    with pytest.raises(RuntimeError) as exc:
        call(device)
    text = str(exc.value)
    assert "\n" not in text
    return text


def _no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _no_mps(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)


def _one_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)


@pytest.mark.parametrize("machine, device", [
    (_no_cuda, "cuda"), (_no_cuda, "cuda:0"), (_no_mps, "mps"), (_one_gpu, "cuda:3"),
    (_one_gpu, "cuda:1"),  # the first index past the GPUs
])
def test_train_and_data_refuse_a_missing_device_in_the_same_words(monkeypatch, machine, device):
    machine(monkeypatch)
    from_train = _message(resolve_device, device)
    from_data = _message(lambda d: load_data("fake", device=d, image_size=8), device)
    assert from_train == from_data
    assert repr(device) in from_train
    assert "device='cpu' in Python" in from_train and "--device cpu on the command line" in from_train


def test_a_cuda_index_within_the_machines_gpus_is_taken(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device("cuda:3") == torch.device("cuda", 3)


@pytest.mark.parametrize("device", [0, 1, True, 0.0])
def test_a_device_given_as_a_number_is_refused_not_taken_for_a_gpu(device):
    """torch.device(0) is cuda:0: evaluate(device=0) and predict_images(device=0) asked for a GPU the
    caller never named, where TrainConfig and load_data refuse a number."""
    from resnet_lab.deploy import predict_images
    from resnet_lab.train import evaluate

    with pytest.raises(TypeError, match=rf"device \(--device\) must be a device name \(str\) or torch.device, e.g. 'cpu', 'cuda:0' or 'auto', got {device!r}"):
        resolve_device(device)
    with pytest.raises(TypeError, match=r"device \(--device\) must be a device name"):
        evaluate(torch.nn.Linear(4, 2), [(torch.zeros(1, 4), torch.zeros(1, dtype=torch.long))], num_classes=2,
                 device=device)
    with pytest.raises(TypeError, match=r"device \(--device\) must be a device name"):
        predict_images(torch.nn.Linear(4, 2), [], device=device)
    assert resolve_device(torch.device("cpu")) == resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "folder"])
def test_load_data_refuses_a_missing_device_before_looking_for_the_files(monkeypatch, tmp_path, name):
    """docs/DATA.md: the device is refused "before reading any file"; a data_dir that does not exist
    would otherwise be the error reported (DataNotFoundError, FileNotFoundError), and fixing it would
    only lead to this one."""
    _no_cuda(monkeypatch)
    text = _message(lambda d: load_data(name, data_dir=tmp_path / "absent", device=d), "cuda")
    assert text == _message(resolve_device, "cuda")
