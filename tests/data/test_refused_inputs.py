"""Inputs load_data used to take with a raw traceback, or silently ignore: a device this machine
lacks, a device given as a number, an empty data_dir, a non-number in mean/std, a per_class beyond
a class's images. Each is refused in one line that names the value and the way out."""

from __future__ import annotations

import pytest
import torch

from resnet_lab.data import DataConfig, InMemoryLoader, load_data
from resnet_lab.data.sources import fake_arrays, find_fashion_mnist, find_folder_samples, read_cifar


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_a_cuda_device_without_cuda_is_one_line_naming_it_and_cpu(device, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError) as exc:
        load_data("fake", device=device, image_size=8)
    assert _one_line(exc) == (f"device {str(device)!r} asked for, but CUDA is not available here; use device='cpu' "
                              "in Python, --device cpu on the command line")
    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(RuntimeError, match="CUDA is not available here"):  # the loader made directly too
        InMemoryLoader(x, torch.zeros(4), batch_size=2, mean=[0.5] * 3, std=[0.5] * 3, device=device)


def test_a_cuda_index_beyond_the_machines_devices_is_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(RuntimeError) as exc:
        load_data("fake", device="cuda:3", image_size=8)
    assert _one_line(exc) == ("device 'cuda:3' asked for, but this machine has 1 CUDA device (cuda:0); use one of "
                              "them, or device='cpu' in Python, --device cpu on the command line")


def test_mps_without_mps_is_one_line(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(RuntimeError) as exc:
        load_data("fake", device="mps", image_size=8)
    assert "Apple's MPS is not available here; use device='cpu' in Python, --device cpu" in _one_line(exc)


@pytest.mark.parametrize("name", ["cifar10", "folder"])
def test_a_missing_device_is_named_before_any_file_is_looked_for(tmp_path, monkeypatch, name):
    """load_data's docstring: a device this machine lacks is a RuntimeError, checked "before any file
    is read": data that are not there either must not hide the one-line device error behind a
    DataNotFoundError (or read a whole dataset first)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("RESNET_LAB_DATA", raising=False)
    monkeypatch.setenv("RESNET_LAB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(RuntimeError) as exc:
        load_data(name, data_dir=tmp_path / "none", device="cuda")
    assert "CUDA is not available here; use device='cpu' in Python, --device cpu" in _one_line(exc)


@pytest.mark.parametrize("device, error, message", [
    (0, TypeError, "device (--device) must be a device name (str) or torch.device, e.g. 'cpu', 'cuda:0' or 'auto', got 0"),
    (None, TypeError, "device (--device) must be a device name (str) or torch.device, e.g. 'cpu', 'cuda:0' or 'auto', got None"),
    ("cuda:x", ValueError, "unknown device 'cuda:x': use auto, cpu, cuda, cuda:N or mps"),
])
def test_a_device_that_is_not_a_name_of_ours_is_refused_by_the_config(device, error, message):
    with pytest.raises(error) as exc:
        DataConfig("fake", device=device)
    assert _one_line(exc) == message


@pytest.mark.parametrize("name", ["fashion-mnist", "cifar10", "folder"])
@pytest.mark.parametrize("empty, what", [("", "an empty string"), ("  ", "blank ('  ', whitespace only)")])
def test_an_empty_data_dir_is_refused_not_taken_for_no_data_dir(name, empty, what):
    with pytest.raises(ValueError) as exc:
        DataConfig(name, data_dir=empty)
    way_out = "" if name == "folder" else ", or leave it out (None) to search the usual places"
    assert _one_line(exc) == f"data_dir (--data-dir) is {what}: give a path (an unset shell variable?){way_out}"


@pytest.mark.parametrize("name, call", [
    ("fashion-mnist", find_fashion_mnist),
    ("cifar10", lambda d: read_cifar("cifar10", d)),
    ("folder", lambda d: find_folder_samples(d, 0.1, 0)),  # was the current directory
])
@pytest.mark.parametrize("empty", ["", " ", "\t"])
def test_the_readers_refuse_an_empty_data_dir_in_the_configs_words(name, call, empty):
    with pytest.raises(ValueError) as reference:
        DataConfig(name, data_dir=empty)
    with pytest.raises(ValueError) as exc:
        call(empty)
    assert _one_line(exc) == str(reference.value)


@pytest.mark.parametrize("values, shown", [(["a", 0, 0], "'a'"), ([None, 0, 0], "None"), ([True, 0, 0], "True")])
@pytest.mark.parametrize("field", ["mean", "std"])
def test_a_non_number_in_mean_or_std_names_the_field_and_value(field, values, shown):
    good = [0.5] * 3
    stats = {"mean": good, "std": good, field: values}
    with pytest.raises(TypeError) as exc:
        DataConfig("fake", **stats)
    assert _one_line(exc) == (f"{field} must hold one number per channel, e.g. [0.5, 0.5, 0.5]; got {shown} in "
                              f"{values!r}")


def test_mean_and_std_as_tensors_or_numpy_values_still_work():
    np = pytest.importorskip("numpy")
    c = DataConfig("fake", mean=torch.tensor([0.5, 0.4, 0.3]), std=np.array([0.2, 0.2, 0.2], dtype=np.float32))
    assert c.mean == pytest.approx((0.5, 0.4, 0.3)) and c.std == pytest.approx((0.2, 0.2, 0.2))


def test_per_class_beyond_the_smallest_class_is_refused_naming_it():
    labels = fake_arrays(8, 3, 0).train_y  # the images load_data("fake") draws from
    counts = torch.bincount(labels)
    smallest = int(counts.argmin())
    low = int(counts[smallest])
    assert low < int(counts.max())  # some class has more: per_class=low + 1 fits some classes, not all
    data = load_data("fake", per_class=low, image_size=8)
    assert data.num_train == low * len(counts)  # each class gives exactly per_class images
    for k in (low + 1, 10**9):
        with pytest.raises(ValueError) as exc:
            load_data("fake", per_class=k, image_size=8)
        assert _one_line(exc) == (f"per_class {k} is more than the {low} training images of class "
                                  f"'class{smallest}' (label {smallest}) of fake, its smallest class; pass "
                                  f"per_class={low} or less, or drop per_class to train on every image")


@pytest.mark.parametrize("classes", [[5, 6, 7, 8, 9], [9, 3]])
def test_per_class_refusal_names_the_callers_label_when_classes_relabels(classes):
    """classes=[5..9] keeps labels 5..9 as 0..4: the message said "'class5' (label 0)"."""
    counts = torch.bincount(fake_arrays(8, 3, 0).train_y)  # the reference: the fake set's own counts
    kept = torch.tensor(classes)
    smallest = int(kept[counts[kept].argmin()])  # the first of the smallest, in the order given
    low = int(counts[smallest])
    with pytest.raises(ValueError) as exc:
        load_data("fake", classes=classes, per_class=100, image_size=8)
    assert _one_line(exc) == (f"per_class 100 is more than the {low} training images of class "
                              f"'class{smallest}' (label {smallest}) of fake, its smallest class; pass "
                              f"per_class={low} or less, or drop per_class to train on every image")


@pytest.mark.parametrize("device", ["xla", "ipu", "hpu:0"])
def test_a_device_torch_names_but_resnet_lab_does_not_run_on_is_one_line(device):
    """QA 2026-12-06: load_data(device='xla') was torch's traceback from the first copy."""
    with pytest.raises(ValueError) as exc:
        load_data("fake", device=device, image_size=8)
    assert _one_line(exc) == f"device {device!r} is not one resnet-lab runs on: use auto, cpu, cuda, cuda:N or mps"


def test_auto_puts_the_data_where_train_would_put_the_model(monkeypatch):
    """QA 2026-12-05: load_data(device='auto') was "unknown device 'auto'" while train and predict
    take auto; now both resolve it by the same rule (CUDA, then MPS, then the CPU)."""
    from resnet_lab.train import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    config = DataConfig("fake", device="auto", image_size=8)
    assert config.device == "auto"  # the config keeps what was asked for
    x, _ = next(iter(load_data(config).train))
    assert x.device == resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the choice, without moving data there
    from resnet_lab.data.config import pick_device
    assert pick_device("auto") == resolve_device("auto") == torch.device("cuda")
    assert pick_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("classes", [[3, 3, 5], [0, 10], [-1, 2]])
def test_classes_repeated_or_beyond_the_last_label_are_refused_naming_the_range(classes):
    # fake has 10 classes, labels 0..9: a repeated label would name one class twice, label 10 is none
    with pytest.raises(ValueError) as exc:
        load_data("fake", classes=classes, image_size=8)
    assert _one_line(exc).startswith(f"classes={classes}: expected distinct labels in 0..9 (10 classes)")


def test_a_single_last_class_is_refused_with_a_pair_that_exists():
    # the suggestion for classes=[9] of 10 classes wraps round to label 0 (there is no label 10)
    with pytest.raises(ValueError) as exc:
        load_data("fake", classes=[9], image_size=8)
    assert _one_line(exc).endswith("a classifier needs at least 2, e.g. classes=[9, 0]")
    assert load_data("fake", classes=[9, 0], image_size=8, batch_size=8).info.classes == ["class9", "class0"]


@pytest.mark.parametrize("images, labels, named, way_out", [
    (torch.rand(4, 3, 8, 8), torch.arange(4), "got torch.float32 (4, 3, 8, 8)", "(images * 255).round().to(torch.uint8)"),
    (torch.zeros(4, 8, 8, dtype=torch.uint8), torch.arange(4), "got torch.uint8 (4, 8, 8)", "images.unsqueeze(1)"),
    (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.arange(4)[:, None], "shape (4,), one class index per image, got (4, 1)", "labels.view(-1)"),
    (torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.arange(3), "got (3,)", "one class index per image"),
])
def test_the_in_memory_loader_refuses_images_it_would_misread_and_labels_that_do_not_match(images, labels, named, way_out):
    # 0..1 floats would be normalized as if they were 0..255, and a label per image is what each batch
    # pairs with its images: each refused in one line naming the value and the way out
    with pytest.raises(ValueError) as exc:
        InMemoryLoader(images, labels, batch_size=2, mean=[0.5] * 3, std=[0.5] * 3)
    assert named in _one_line(exc) and way_out in _one_line(exc)
