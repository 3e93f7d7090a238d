"""The trained weights that ship with the package: their files, the registry, and every way in
(create_model, torch.hub, the CLI's MODEL:TAG for evaluate, predict and finetune)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import importlib.util
import json
import re
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image
from safetensors.torch import load_file, save_file

import resnet_lab.weights as weights_pkg
from resnet_lab.cli import main
from resnet_lab.models import create_model, model_info
from resnet_lab.models.resnet import CifarResNet
from resnet_lab.weights import WeightsHashError, get_weights, list_weights, read_entry

ROOT = Path(__file__).resolve().parents[1]
DEBIAN = Path("/usr/share/datasets/fashion-mnist")
HAS_DEBIAN = (DEBIAN / "t10k-images-idx3-ubyte.gz").exists() and (DEBIAN / "t10k-labels-idx1-ubyte.gz").exists()
# Xiao et al. 2017, the dataset's own order of labels.
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot"]


def _file_tensors(name: str) -> dict[str, torch.Tensor]:
    """The shipped tensors read straight from the file with safetensors, not through the registry."""
    return load_file(str(get_weights(name).path))


def _corrupt_copy(name: str, tmp_path: Path):
    """A copy of the entry (JSON and weights) in tmp_path with one byte of a tensor flipped."""
    entry = get_weights(name)
    shutil.copy(entry.meta_path, tmp_path / entry.meta_path.name)
    data = bytearray(entry.path.read_bytes())
    data[-100] ^= 0x01  # inside the last tensor's data: the file still parses, only the hash tells
    (tmp_path / entry.path.name).write_bytes(bytes(data))
    return read_entry(tmp_path / entry.meta_path.name)


def test_resnet8_fast_and_resnet20_on_fashion_mnist_ship_under_2_mb_each():
    assert {"resnet8_fast:fashion-mnist", "resnet20:fashion-mnist"} <= set(list_weights())
    for name in list_weights():
        assert get_weights(name).path.stat().st_size < 2_000_000, name


@pytest.mark.parametrize("name", list_weights())
def test_every_shipped_file_has_the_sha256_its_entry_records(name):
    entry = get_weights(name)
    assert hashlib.sha256(entry.path.read_bytes()).hexdigest() == entry.sha256


@pytest.mark.parametrize("name", list_weights())
def test_entry_records_recipe_accuracy_and_the_fashion_mnist_transforms(name):
    entry = get_weights(name)
    model, tag = name.split(":")
    assert entry.model == model and entry.tag == tag == entry.dataset == "fashion-mnist"
    assert f"resnet-lab train --model {model} --dataset fashion-mnist " in entry.recipe
    assert 85.0 < entry.accuracy < 100.0 and entry.test_images == 10_000  # Xiao et al. 2017: 10,000 test images
    t = entry.transforms
    assert t.input_size == (1, 28, 28) and list(t.classes) == FASHION_MNIST_CLASSES
    # The published normalization constants of Fashion-MNIST, 0.2860 and 0.3530.
    assert t.mean == pytest.approx((0.2860,), abs=5e-4) and t.std == pytest.approx((0.3530,), abs=5e-4)
    # The recipe's flags are the run's: its epochs are the trained epochs.
    assert f"--epochs {json.loads(entry.meta_path.read_text())['epoch']} " in entry.recipe + " "


def test_create_model_with_weights_takes_the_entrys_architecture_and_the_files_tensors():
    model = create_model("resnet20", weights="fashion-mnist")
    assert model.model_config == {"name": "resnet20", "num_classes": 10, "in_channels": 1, "small_input": True,
                                  "norm": "batch"}
    want = _file_tensors("resnet20:fashion-mnist")
    got = model.state_dict()
    assert set(got) == set(want)
    assert all(torch.equal(got[k], want[k]) for k in want)


def test_create_model_with_weights_refuses_a_class_count_that_contradicts_them():
    with pytest.raises(ValueError, match=r"num_classes=10, not 5.*reset_classifier"):
        create_model("resnet20", weights="fashion-mnist", num_classes=5)
    # the entry's own values are accepted when given
    assert create_model("resnet20", weights="fashion-mnist", num_classes=10, in_channels=1) is not None


@pytest.mark.parametrize("kwargs, match", [
    ({"in_channels": 3}, r"in_channels=1, not 3: leave in_channels out$"),  # 3 is also create_model's default
    ({"num_classes": 1000}, r"num_classes=10, not 1000: leave num_classes out \(for another class count"),
    ({"norm": "batch"}, None),  # the weights' own value, given: accepted
])
def test_an_argument_equal_to_the_default_still_counts_as_given_against_the_weights(kwargs, match):
    # The RGB default must not be taken as "not given": gray weights built for in_channels=3 came
    # back with 1 input channel and failed later on an RGB image with torch's conv error.
    if match is None:
        assert create_model("resnet20", weights="fashion-mnist", **kwargs).model_config["in_channels"] == 1
        return
    with pytest.raises(ValueError, match=match):
        create_model("resnet20", weights="fashion-mnist", **kwargs)


@pytest.mark.parametrize("kwargs", [{"num_classes": 10.0}, {"in_channels": 1.0}, {"small_input": 1}])
def test_a_value_of_the_wrong_kind_is_refused_with_weights_as_without(kwargs):
    # 10.0 == 10 and 1 == True: compared with the entry alone they passed, while create_model without
    # weights refuses them; the reference is that call's own error.
    with pytest.raises((TypeError, ValueError)) as without:
        create_model("resnet20", **kwargs)
    with pytest.raises(without.type, match=f"^{re.escape(str(without.value))}$"):
        create_model("resnet20", weights="fashion-mnist", **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    ({"shortcut": "B"}, r"were trained with shortcut='A', not 'B': leave shortcut out$"),
    # no tensor more or less: it loaded silently and computed a plain net with residual weights
    ({"shortcut": "none"}, r"were trained with shortcut='A', not 'none': leave shortcut out$"),
    ({"zero_init_residual": True}, r"zero_init_residual=True only sets the initial weights, which resnet20 weights "
                                   r"'fashion-mnist' replace: leave zero_init_residual out$"),
])
def test_family_options_that_contradict_the_weights_or_do_nothing_with_them_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_model("resnet20", weights="fashion-mnist", **kwargs)
    # the weights' own value, and options that change training only, are accepted
    reference = create_model("resnet20", weights="fashion-mnist").eval()
    for ok in ({"shortcut": "A"}, {"checkpoint_segments": 2}):
        model = create_model("resnet20", weights="fashion-mnist", **ok).eval()
        x = torch.randn(2, 1, 28, 28)
        with torch.no_grad():
            assert torch.equal(model(x), reference(x))


def test_weights_that_do_not_fit_the_built_layers_name_the_first_odd_tensor(monkeypatch):
    # The check of the options that shape a net comes first; behind it, loading names what differs.
    import resnet_lab.models.registry as registry

    monkeypatch.setattr(registry, "_SHAPING", ())
    with pytest.raises(ValueError, match=r"do not fit the model built with \{'shortcut': 'B'\}: the model has "
                                         r"layer2\.0\.downsample\.0\.weight and they do not; leave shortcut out$"):
        create_model("resnet20", weights="fashion-mnist", shortcut="B")


def test_the_full_weights_name_given_as_a_tag_gets_the_tag_as_the_way_out():
    with pytest.raises(ValueError, match=r"weights= takes the tag alone: weights='fashion-mnist'$"):
        create_model("resnet20", weights="resnet20:fashion-mnist")


def test_arguments_left_out_are_create_models_defaults_without_weights():
    # num_classes left out is the model's own: what `resnet-lab models` lists and the family's
    # constructor (CifarResNet(20)) defaults to
    config = create_model("resnet20").model_config
    assert (config["num_classes"], config["in_channels"], config["norm"]) == (10, 3, "batch")
    assert create_model("resnet20").fc.out_features == CifarResNet(20).fc.out_features == 10
    assert create_model("resnet18").model_config["small_input"] is False
    assert create_model("resnet18").fc.out_features == torchvision.models.resnet18().fc.out_features == 1000
    for name in ("resnet8", "wrn16_4", "densenet40", "preact_resnet164", "resnet18", "densenet121", "googlenet"):
        with torch.device("meta"):
            assert create_model(name).num_classes == model_info(name).num_classes, name


def test_torch_hub_entry_points_default_to_the_models_own_class_count():
    for name, classes in (("resnet20", 10), ("wrn16_4", 10), ("resnet18", 1000)):
        with torch.device("meta"):
            assert torch.hub.load(str(ROOT), name, source="local").num_classes == classes


def test_unknown_weights_tag_names_the_shipped_ones():
    with pytest.raises(ValueError, match=r"no shipped weights 'resnet20:cifar10'; resnet20 has weights 'fashion-mnist'"):
        create_model("resnet20", weights="cifar10")


def test_a_model_without_shipped_weights_is_told_every_shipped_name():
    """resnet56 has no entry of its own: the message lists what list_weights() lists, not another
    model's tags as if they were resnet56's."""
    with pytest.raises(ValueError) as refused:
        get_weights("resnet56:cifar10")
    assert str(refused.value).startswith(f"no shipped weights 'resnet56:cifar10'; shipped: {', '.join(list_weights())}")
    assert len(list_weights()) >= 2 and "resnet56 has weights" not in str(refused.value)
    with pytest.raises(ValueError) as refused:  # torchvision's tags are upper case: a lower-case one is not its
        get_weights("resnet18:cifar10")
    assert "torchvision" not in str(refused.value)


def test_a_name_without_a_tag_is_a_value_error_showing_the_form():
    """The docstring's Raises: a ValueError (a caller catching it, as resolve_source does)."""
    with pytest.raises(ValueError, match=r"^'resnet20' is not a weights name: expected MODEL:TAG, e\.g\. resnet20:"):
        get_weights("resnet20")


def test_the_way_out_of_a_missing_tag_fits_where_it_was_asked_for(tmp_path):
    from resnet_lab.runs import resolve_source

    # torchvision's tags are not shipped: the error names the transfer route, not a run directory
    with pytest.raises(ValueError, match=r"IMAGENET1K_V1 weights are not shipped: `resnet-lab finetune --from "
                                         r"torchvision:resnet18.IMAGENET1K_V1`.*--from-file FILE --model resnet18"):
        create_model("resnet18", weights="IMAGENET1K_V1")
    with pytest.raises(ValueError, match=r"weights= takes a shipped tag: a run directory or \.safetensors file "
                                         r"loads with load_model\(PATH\)"):
        create_model("resnet20", weights=str(tmp_path / "run"))
    # where a path is accepted too (evaluate, export, load_model), the error says so
    with pytest.raises(ValueError, match=r"no shipped weights 'resnet20:cifar10'.*or give a run directory"):
        resolve_source("resnet20:cifar10")
    with pytest.raises(ValueError) as refused:
        create_model("resnet20", weights="cifar10")
    assert "run directory" not in str(refused.value)
    # an upper-case tag for a model torchvision does not have: no route through torchvision
    with pytest.raises(ValueError) as refused:
        create_model("resnet20", weights="DEFAULT")
    assert "torchvision" not in str(refused.value) and "resnet20 has weights 'fashion-mnist'" in str(refused.value)


@pytest.mark.parametrize("bad", [True, 1, ["fashion-mnist"]])
def test_a_weights_argument_that_is_not_a_string_is_a_type_error_naming_it(bad):
    with pytest.raises(TypeError, match=re.escape(f"got {bad!r}")):
        create_model("resnet20", weights=bad)
    with pytest.raises(TypeError, match=re.escape(repr(bad))):
        get_weights("resnet20", bad)


def test_a_corrupted_copy_is_refused_with_both_hashes_in_the_message(tmp_path):
    bad = _corrupt_copy("resnet20:fashion-mnist", tmp_path)
    actual = hashlib.sha256(bad.path.read_bytes()).hexdigest()
    with pytest.raises(WeightsHashError, match=f"sha256 {actual}.*expects {bad.sha256}.*refused.*reinstall"):
        bad.get_state_dict()


def _entry_copy(tmp_path: Path, tensors: dict[str, torch.Tensor] | None = None, sha256: str | None = None):
    """resnet20:fashion-mnist's entry copied to tmp_path, with other tensors and/or another recorded sha256."""
    entry = get_weights("resnet20:fashion-mnist")
    meta = json.loads(entry.meta_path.read_text())
    path = tmp_path / entry.path.name
    if tensors is None:
        shutil.copy(entry.path, path)
    else:
        save_file(tensors, str(path))
    meta["weights"]["sha256"] = sha256 or hashlib.sha256(path.read_bytes()).hexdigest()
    (tmp_path / entry.meta_path.name).write_text(json.dumps(meta))
    return read_entry(tmp_path / entry.meta_path.name)


def test_a_recorded_sha256_that_differs_in_its_last_hex_digit_is_refused(tmp_path):
    actual = hashlib.sha256(get_weights("resnet20:fashion-mnist").path.read_bytes()).hexdigest()
    last = "0" if actual[-1] != "0" else "1"
    entry = _entry_copy(tmp_path, sha256=actual[:-1] + last)
    with pytest.raises(WeightsHashError, match=f"sha256 {actual}, but .* expects {actual[:-1] + last}"):
        entry.get_state_dict()
    same = tmp_path / "same"
    same.mkdir()
    assert _entry_copy(same, sha256=actual).verify().parent == same  # the digest itself is taken


def test_a_float16_file_is_read_as_float32_with_its_values_and_counts_as_they_are(tmp_path):
    half = {k: v.half() if v.is_floating_point() else v for k, v in _file_tensors("resnet20:fashion-mnist").items()}
    assert {v.dtype for v in half.values()} >= {torch.float16}
    state = _entry_copy(tmp_path, half).get_state_dict()
    assert state.keys() == half.keys()
    for k, v in half.items():
        want = v.to(torch.float32) if v.is_floating_point() else v  # float16 -> float32 is exact
        assert state[k].dtype == want.dtype and torch.equal(state[k], want), k


def test_cli_and_create_model_refuse_a_corrupted_file_in_one_error_line(tmp_path, monkeypatch, capsys):
    bad = _corrupt_copy("resnet20:fashion-mnist", tmp_path)
    monkeypatch.setitem(weights_pkg._REGISTRY, bad.name, bad)
    with pytest.raises(WeightsHashError):
        create_model("resnet20", weights="fashion-mnist")
    assert main(["evaluate", "resnet20:fashion-mnist", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "is damaged or was replaced, so it is refused" in err and err.count("\n") == 1


def test_torch_hub_loads_resnet20_with_weights_from_the_repo_dir():
    model = torch.hub.load(str(ROOT), "resnet20", weights="fashion-mnist", source="local")
    want = _file_tensors("resnet20:fashion-mnist")
    assert all(torch.equal(model.state_dict()[k], want[k]) for k in want)
    untrained = torch.hub.load(str(ROOT), "resnet56", num_classes=7, source="local")
    assert untrained.fc.out_features == 7


def _test_images() -> tuple[np.ndarray, np.ndarray]:
    """Debian's Fashion-MNIST test set, read with numpy from the IDX format (not our reader)."""
    with gzip.open(DEBIAN / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(DEBIAN / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images, labels


def test_predict_by_name_gives_the_probabilities_of_torchvisions_preprocessing(tmp_path, capsys):
    shirt = tmp_path / "shirt.png"
    if HAS_DEBIAN:
        images, labels = _test_images()
        pixels = images[int(np.flatnonzero(labels == FASHION_MNIST_CLASSES.index("Shirt"))[0])]
    else:
        pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(pixels).save(shirt)
    assert main(["predict", "resnet20:fashion-mnist", str(shirt), "--top-k", "10", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    # Reference: the file's tensors in a fresh model, fed through torchvision's ToTensor + Normalize.
    entry = get_weights("resnet20:fashion-mnist")
    model = create_model("resnet20", num_classes=10, in_channels=1, small_input=True)
    model.load_state_dict(_file_tensors(entry.name))
    x = TF.normalize(TF.to_tensor(Image.open(shirt)), entry.transforms.mean, entry.transforms.std)
    with torch.no_grad():
        probs = torch.softmax(model.eval()(x[None]).double(), 1)[0]
    got = dict(result["top"])
    assert set(got) == set(FASHION_MNIST_CLASSES)
    assert all(got[c] == pytest.approx(float(probs[i]), abs=1e-5) for i, c in enumerate(FASHION_MNIST_CLASSES))


def test_finetune_from_name_starts_from_the_shipped_weights(tmp_path, capsys):
    out = tmp_path / "ft"
    code = main(["finetune", "--from", "resnet20:fashion-mnist", "--strategy", "last", "--dataset", "fake",
                 "--image-size", "8", "--epochs", "1", "--batch-size", "32", "--subset", "64", "--no-progress",
                 "--device", "cpu", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    meta = json.loads((out / "model.json").read_text())
    assert meta["transfer"]["source"] == "resnet20:fashion-mnist"
    # --strategy last keeps the backbone frozen: its tensors are still the shipped file's.
    state = load_file(str(out / "model.safetensors"))
    want = _file_tensors("resnet20:fashion-mnist")
    assert torch.equal(state["layer2.0.conv1.weight"], want["layer2.0.conv1.weight"])
    assert torch.equal(state["layer2.0.bn1.running_var"], want["layer2.0.bn1.running_var"])


@pytest.mark.skipif(not HAS_DEBIAN, reason="Debian package dataset-fashion-mnist not installed")
@pytest.mark.parametrize("name", list_weights())
def test_evaluate_by_name_reproduces_the_recorded_accuracy_on_debian_fashion_mnist(name, capsys):
    entry = get_weights(name)
    assert main(["evaluate", name, "--device", "cpu", "--data-dir", str(DEBIAN)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"{name}: accuracy {entry.accuracy:.2f}% on 10000 fashion-mnist test images")


def test_a_corrupted_copy_given_by_path_is_refused_as_by_name(tmp_path, capsys):
    """By path (the file and its entry copied elsewhere, one byte flipped), export, evaluate and
    load_model read the damaged weights: the entry's sha256 was checked only by name."""
    from resnet_lab.runs import load_model

    src = get_weights("resnet8_fast:fashion-mnist")
    copy = tmp_path / src.path.name
    shutil.copy(src.path, copy)
    shutil.copy(src.path.with_suffix(".json"), copy.with_suffix(".json"))
    assert load_model(copy)[0] is not None  # intact: loads
    raw = bytearray(copy.read_bytes())
    raw[-100] ^= 0x01  # inside the last tensor's data: the file still parses, only the hash tells
    copy.write_bytes(bytes(raw))
    with pytest.raises(WeightsHashError, match=r"has another sha256 than its entry .*refused"):
        load_model(copy)
    assert main(["export", str(copy), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "is damaged or was replaced, so it is refused" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()
    # the same pair as a run directory (the entry as model.json): checked as well, not loaded
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(copy, run / "model.safetensors")
    shutil.copy(src.path.with_suffix(".json"), run / "model.json")
    with pytest.raises(WeightsHashError, match=r"has another sha256 than its entry model.json records"):
        load_model(run)
    shutil.copy(src.path, run / "model.safetensors")
    assert load_model(run)[0] is not None  # intact: loads


def test_a_corrupted_copy_with_an_upper_case_suffix_is_refused_too(tmp_path):
    """The loader reads ``W.SAFETENSORS`` (any case) as safetensors, but the entry check beside it
    compared the suffix case-sensitively, so a damaged copy so named loaded without its sha256 check."""
    from resnet_lab.runs import load_model

    src = get_weights("resnet8_fast:fashion-mnist")
    copy = tmp_path / (src.path.stem + ".SAFETENSORS")
    raw = bytearray(src.path.read_bytes())
    raw[-100] ^= 0x01
    copy.write_bytes(bytes(raw))
    shutil.copy(src.path.with_suffix(".json"), copy.with_suffix(".json"))
    with pytest.raises(WeightsHashError, match=r"has another sha256 than its entry .*refused"):
        load_model(copy)
    shutil.copy(src.path, copy)
    assert load_model(copy)[0] is not None  # intact: loads


@pytest.mark.parametrize("edit, says", [
    (lambda meta: [], "is not a weights entry: its JSON is a list, not an object"),
    (lambda meta: {k: v for k, v in meta.items() if k != "weights"}, "is not a weights entry: field 'weights' is missing"),
    (lambda meta: {**meta, "weights": []}, "is not a weights entry: field 'weights' is a list, not an object"),
    (lambda meta: {**meta, "weights": {k: v for k, v in meta["weights"].items() if k != "sha256"}},
     "is not a weights entry: field 'weights.sha256' is missing"),
    (lambda meta: {**meta, "weights": {**meta["weights"], "accuracy": "high"}},
     "is not a weights entry: field 'weights.accuracy' is \"high\", not a number"),
    (lambda meta: {**meta, "mean": 0.5}, "is not a weights entry: field 'mean' is 0.5, not a list"),
    (lambda meta: {**meta, "input_size": None}, "is not a weights entry: field 'input_size' is null, not a list"),
    (lambda meta: {**meta, "classes": {}}, "is not a weights entry: field 'classes' is an object, not a list"),
    (lambda meta: {**meta, "weights": {**meta["weights"], "tag": True}},
     "is not a weights entry: field 'weights.tag' is true, not a string"),
    # JSON's true is a boolean, not a number, though Python's bool is an int
    (lambda meta: {**meta, "weights": True}, "is not a weights entry: field 'weights' is a boolean, not an object"),
    (lambda meta: {**meta, "dataset": 10}, "is not a weights entry: field 'dataset' is 10, not a string"),
])
def test_an_unreadable_entry_names_the_field(tmp_path, edit, says):
    """QA 2026-12-06: an entry of [] read "missing or bad field list indices must be integers or
    slices, not str": torch's... Python's message glued on, naming no field."""
    from resnet_lab.weights import read_entry

    meta = json.loads(get_weights("resnet20:fashion-mnist").meta_path.read_text())
    path = tmp_path / "entry.json"
    path.write_text(json.dumps(edit(meta)))
    with pytest.raises(ValueError) as e:
        read_entry(path)
    assert str(e.value) == f"{path} {says}"


def test_an_entry_that_is_not_utf8_json_is_refused_naming_the_file_and_the_reason(tmp_path):
    path = tmp_path / "entry.json"
    path.write_bytes(b'{"arch": "\xff"}')  # a Latin-1 byte: not UTF-8, which JSON text is (RFC 8259)
    with pytest.raises(ValueError, match=r"entry\.json is not a readable weights entry \(UnicodeDecodeError: "):
        read_entry(path)


@pytest.mark.parametrize("device", ["gpu", "meta"])
def test_a_bad_or_unusual_map_location_is_blamed_on_itself_not_on_the_file(device):
    """get_state_dict('gpu') said the shipped file was "not a readable safetensors file" and to reinstall:
    the file is fine. Torch's own device parsing is the reference: 'gpu' is refused by torch.device in
    the same words, and 'meta' (shapes without data, as torch.load's map_location takes) works."""
    entry = get_weights("resnet20:fashion-mnist")
    try:
        torch.device(device)
    except RuntimeError as e:
        with pytest.raises(RuntimeError, match=re.escape(str(e))):
            entry.get_state_dict(device)
        return
    state = entry.get_state_dict(device)
    want = _file_tensors("resnet20:fashion-mnist")
    assert {k: (v.shape, v.device.type) for k, v in state.items()} == {k: (v.shape, device) for k, v in want.items()}


def test_a_file_whose_recorded_hash_matches_but_is_not_safetensors_is_refused_in_one_line(tmp_path):
    entry = _entry_copy(tmp_path)
    garbage = b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}"  # a 16-byte header that is not JSON
    entry.path.write_bytes(garbage)
    bad = dataclasses.replace(entry, sha256=hashlib.sha256(garbage).hexdigest())
    with pytest.raises(ValueError, match=r"is not a readable safetensors file \(.*\); reinstall resnet-lab$") as e:
        bad.get_state_dict()
    assert "\n" not in str(e.value) and str(bad.path) in str(e.value)


@pytest.mark.parametrize("field, text, says", [
    ("test_images", "1e400", "field 'weights.test_images' is Infinity, not a whole number"),
    ("test_images", "NaN", "field 'weights.test_images' is NaN, not a whole number"),
    ("test_images", "10000.7", "field 'weights.test_images' is 10000.7, not a whole number"),
    ("accuracy", "NaN", "field 'weights.accuracy' is NaN, not a finite number"),
    ("accuracy", "-Infinity", "field 'weights.accuracy' is -Infinity, not a finite number"),
    # JSON's true and false are Python's True and False, which are ints: not a figure nor a count
    ("accuracy", "true", "field 'weights.accuracy' is true, not a number"),
    ("test_images", "false", "field 'weights.test_images' is false, not a number"),
])
def test_a_count_or_figure_that_is_not_finite_or_not_whole_names_the_field(tmp_path, field, text, says):
    """QA: "test_images": 1e400 (json reads inf) raised OverflowError, NaN a ValueError naming neither
    file nor field; 10000.7 became 10000 and an accuracy of NaN was taken; an accuracy of true was
    taken as 1.0%. The reference: the text written into the entry, as JSON (Python's json) spells the
    value."""
    from resnet_lab.weights import read_entry

    meta = json.loads(get_weights("resnet20:fashion-mnist").meta_path.read_text())
    meta["weights"][field] = "@VALUE@"
    path = tmp_path / "entry.json"
    path.write_text(json.dumps(meta).replace('"@VALUE@"', text))
    assert json.loads(path.read_text())["weights"][field] is not None
    with pytest.raises(ValueError) as e:
        read_entry(path)
    assert str(e.value) == f"{path} is not a weights entry: {says}"


@pytest.mark.parametrize("field, items, says", [
    ("mean", ["a"], "field 'mean[0]' is \"a\", not a number"),
    ("std", [0.3, "NaN"], "field 'std[1]' is NaN, not a finite number"),
    ("input_size", [1, 28.5, 28], "field 'input_size[1]' is 28.5, not a whole number"),
    ("input_size", [1, None, 28], "field 'input_size[1]' is null, not a number"),
    ("classes", ["a", 3], "field 'classes[1]' is 3, not a string"),
])
def test_a_list_item_of_another_kind_names_the_field_and_the_item(tmp_path, field, items, says):
    """QA: "mean": ["a"] was accepted (and would fail at the first normalization)."""
    from resnet_lab.weights import read_entry

    meta = json.loads(get_weights("resnet20:fashion-mnist").meta_path.read_text())
    path = tmp_path / "entry.json"
    path.write_text(json.dumps({**meta, field: items}).replace('"NaN"', "NaN"))
    with pytest.raises(ValueError) as e:
        read_entry(path)
    assert str(e.value) == f"{path} is not a weights entry: {says}"


def test_any_failure_of_one_entry_stays_with_that_file_and_names_it(tmp_path, monkeypatch):
    """QA: a stray entry with "test_images": 1e400 took every command (resnet-lab models) down with an
    OverflowError traceback; the scan kept only ValueError and TypeError to the file."""
    import resnet_lab.weights as weights

    good = get_weights("resnet20:fashion-mnist").meta_path
    shutil.copy(good, tmp_path / good.name)
    meta = json.loads(good.read_text())
    (tmp_path / "huge.json").write_text(json.dumps(meta).replace('"test_images": 10000', '"test_images": 1e400'))
    (tmp_path / "odd.json").write_text(json.dumps({**meta, "weights": {**meta["weights"], "tag": "odd"}}))

    def read(path):
        if path.name == "odd.json":
            raise RuntimeError("an unforeseen failure")
        return real(path)

    real = weights.read_entry
    monkeypatch.setattr(weights, "read_entry", read)
    entries, damaged = weights._scan(tmp_path)
    assert list(entries) == ["resnet20:fashion-mnist"]
    assert sorted(damaged) == [tmp_path / "huge.json", tmp_path / "odd.json"]
    assert damaged[tmp_path / "huge.json"] == (f"{tmp_path / 'huge.json'} is not a weights entry: field "
                                               "'weights.test_images' is Infinity, not a whole number")
    assert damaged[tmp_path / "odd.json"] == f"{tmp_path / 'odd.json'}: RuntimeError: an unforeseen failure"


def test_a_damaged_or_stray_entry_leaves_the_other_weights_and_the_commands_working(tmp_path):
    """The registry reads every JSON of the weights folder at import: a truncated entry (a damaged
    install) or a stray notes.json used to take every command down with a traceback, --help too."""
    package = tmp_path / "src" / "resnet_lab"
    shutil.copytree(ROOT / "src" / "resnet_lab", package)  # with its bytecode: copy2 keeps the mtimes it is checked by
    entry = package / "weights" / "resnet20-fashion-mnist.json"
    entry.write_text(entry.read_text()[:300])
    (package / "weights" / "notes.json").write_text("{}")
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "src"), "OMP_NUM_THREADS": "1"}
    listed = subprocess.run([sys.executable, "-m", "resnet_lab", "models"], env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr[-2000:]
    code = ("import resnet_lab.weights as w; print(w.list_weights()); w.get_weights('resnet20:fashion-mnist')")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.stdout.strip() == "['resnet8_fast:fashion-mnist']"  # the intact entry still loads
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: no shipped weights 'resnet20:fashion-mnist'")
    assert "2 entries" in last and "resnet20-fashion-mnist.json is not a readable weights entry" in last
    assert "notes.json is not a weights entry" in last and "reinstall resnet-lab" in last


def test_torchvision_style_calls_are_pointed_at_weights_and_a_weights_entry_is_taken_whole():
    """pretrained=True got "unexpected argument(s) 'pretrained'" with a list that left weights= out;
    get_weights(...)'s entry passed as weights= was refused with its whole repr."""
    with pytest.raises(TypeError, match=r"create_model takes weights=TAG .*list_weights\('resnet18'\).*not "
                                        r"pretrained=.*load_source\('torchvision:resnet18'\)"):
        create_model("resnet18", pretrained=True)
    entry = get_weights("resnet20:fashion-mnist")
    by_entry, by_tag = create_model("resnet20", weights=entry), create_model("resnet20", weights="fashion-mnist")
    assert by_entry.model_config == by_tag.model_config
    assert all(torch.equal(a, b) for a, b in zip(by_entry.state_dict().values(), by_tag.state_dict().values()))
    with pytest.raises(ValueError, match=r"weights resnet20:fashion-mnist are resnet20's, not resnet8_fast's: "
                                         r"create_model\('resnet20', weights='fashion-mnist'\)"):
        create_model("resnet8_fast", weights=entry)


@pytest.mark.parametrize("name", ["resnet20", "resnet8_fast", "preact_resnet164"])
def test_pretrained_on_a_model_torchvision_lacks_names_only_routes_that_exist(name):
    """QA 2026-12-06: pretrained=True on a CIFAR-family model named load_source('torchvision:resnet20'),
    which fails (torchvision has no such model). The reference: torchvision's own model list."""
    import torchvision

    assert name not in torchvision.models.list_models()
    with pytest.raises(TypeError) as e:
        create_model(name, pretrained=True)
    text = str(e.value)
    assert "torchvision:" not in text and f"list_weights({name!r})" in text and "weights=" in text
    assert "\n" not in text


def test_torch_hub_names_a_missing_dependency_in_one_line():
    """A hub user without safetensors (which the weights need) got a ModuleNotFoundError traceback
    out of hubconf.py: torch.hub checks `dependencies` only after hubconf has imported."""
    code = ("import sys; sys.modules['safetensors'] = None; import torch\n"
            f"torch.hub.load({str(ROOT)!r}, 'resnet8_fast', source='local')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    last = r.stderr.strip().splitlines()[-1]
    assert r.returncode != 0 and last.startswith("RuntimeError: resnet-lab's hub entry points need the safetensors")
    assert "pip install" in last


def test_torch_hub_needs_only_what_it_lists():
    """The entry points load the model zoo alone: without the training side's packages (tqdm,
    torchvision, PIL, matplotlib) a hub model still builds, equal to create_model's."""
    code = ("import sys\nfor name in ('tqdm', 'torchvision', 'PIL', 'matplotlib'): sys.modules[name] = None\n"
            "import torch\n"
            f"model = torch.hub.load({str(ROOT)!r}, 'resnet8_fast', source='local')\n"
            "from resnet_lab.models import create_model\n"
            "torch.manual_seed(0); a = create_model('resnet8_fast').state_dict()\n"
            f"torch.manual_seed(0); b = torch.hub.load({str(ROOT)!r}, 'resnet8_fast', source='local').state_dict()\n"
            "print(all(torch.equal(a[k], b[k]) for k in a) and a.keys() == b.keys())")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0 and r.stdout.split() == ["True"], r.stderr[-1500:]


def test_a_missing_weights_file_names_the_entry_the_file_and_the_way_out(tmp_path):
    """Weights.verify's documented FileNotFoundError: without its own check, the hash's open() said
    only "[Errno 2] No such file or directory", naming neither the weights nor a reinstall. A torch.hub
    user loads a checkout's own weights (hubconf.py puts its src/ first), which no reinstall restores:
    the way out of a damaged file, git, is named for a missing one too (a trial of 2026-12-06)."""
    entry = _entry_copy(tmp_path)
    entry.path.unlink()
    with pytest.raises(FileNotFoundError) as missing:
        entry.get_state_dict()
    text = str(missing.value)
    assert "resnet20:fashion-mnist" in text and str(tmp_path / entry.path.name) in text and "reinstall resnet-lab" in text
    assert "in a checkout, restore the file with git" in text


def test_list_weights_of_one_model_lists_that_models_entries_alone():
    """The reference: the entries' JSON files read with json, grouped by their arch.name."""
    by_model: dict[str, list[str]] = {}
    for path in sorted(weights_pkg.WEIGHTS_DIR.glob("*.json")):
        meta = json.loads(path.read_text())
        by_model.setdefault(meta["arch"]["name"], []).append(f"{meta['arch']['name']}:{meta['weights']['tag']}")
    assert len(by_model) >= 2  # else the filter is not put to the test
    for model, names in by_model.items():
        assert sorted(list_weights(model)) == sorted(names), model
    assert list_weights("resnet18") == []


def test_one_unreadable_entry_is_counted_in_the_singular(tmp_path, monkeypatch):
    (tmp_path / "notes.json").write_text("{}")
    entries, damaged = weights_pkg._scan(tmp_path)
    assert entries == {} and len(damaged) == 1
    monkeypatch.setattr(weights_pkg, "_DAMAGED", damaged)
    with pytest.raises(ValueError) as refused:
        get_weights("resnet20:cifar10")
    assert f"; 1 entry in {weights_pkg.WEIGHTS_DIR} could not be read ({tmp_path / 'notes.json'}" in str(refused.value)


def test_a_full_name_of_weights_not_shipped_is_not_answered_with_its_tag():
    """weights='resnet20:cifar10' (no such weights) must not be told to pass weights='cifar10', which is
    refused in turn: it gets the tags that exist."""
    with pytest.raises(ValueError) as refused:
        create_model("resnet20", weights="resnet20:cifar10")
    text = str(refused.value)
    assert "weights='cifar10'" not in text and "resnet20 has weights 'fashion-mnist'" in text


@pytest.mark.parametrize("path", ["resnet20.safetensors", "runs\\r20"])
def test_a_file_or_windows_path_given_as_a_tag_is_pointed_at_load_model(path):
    with pytest.raises(ValueError, match=r"weights= takes a shipped tag: a run directory or \.safetensors file "
                                         r"loads with load_model\(PATH\)"):
        create_model("resnet20", weights=path)


def test_a_path_with_a_colon_is_never_taken_for_a_weights_name(tmp_path, monkeypatch, capsys):
    """MODEL:TAG has no slash (the module's rule), so `evaluate exp:1/run` with no such folder is a
    missing path, not "no shipped weights 'exp:1/run'"."""
    from resnet_lab.weights import is_weights_name

    assert is_weights_name("resnet20:fashion-mnist") and is_weights_name("resnet18:IMAGENET1K_V1")
    for path in ("exp:1/run", "C:/runs/r20.safetensors", "runs:a/model.safetensors"):
        assert not is_weights_name(path), path
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "exp:1/run", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: exp:1/run does not exist") and "no shipped weights" not in err


def _hub_doc(name: str) -> str:
    """What torch.hub.help shows for an entry point (its __doc__), read from hubconf.py without a download."""
    spec = importlib.util.spec_from_file_location("hubconf_under_test", ROOT / "hubconf.py")
    hubconf = importlib.util.module_from_spec(spec)
    saved = list(sys.path)
    try:
        spec.loader.exec_module(hubconf)  # it puts src/ first on sys.path, as under torch.hub
    finally:
        sys.path[:] = saved
    return " ".join(getattr(hubconf, name).__doc__.split())


def test_torch_hub_help_lists_the_tags_and_the_class_count_of_each_entry_point():
    """torch.hub.help shows what weights= takes: the tags of the entries' JSON (read with json), not
    their full names, and the class count the model's own default gives (model_info)."""
    tags = {json.loads(p.read_text())["arch"]["name"]: json.loads(p.read_text())["weights"]["tag"]
            for p in weights_pkg.WEIGHTS_DIR.glob("*.json")}
    assert f"weights: {tags['resnet20']!r}; None for random initialization" in _hub_doc("resnet20")
    assert "resnet20:" not in _hub_doc("resnet20").split("weights:")[1]
    assert "weights: none shipped;" in _hub_doc("resnet18")
    for name, classes in (("resnet18", 1000), ("resnet20", 10)):
        assert model_info(name).num_classes == classes
        assert f"num_classes left out: {classes}." in _hub_doc(name)


def test_torch_hub_loads_the_checkouts_own_package_over_an_installed_one(tmp_path):
    """docs/WEIGHTS.md: hubconf.py puts src/ on the path, so a checkout loads its own code even where
    another resnet_lab (an older install) is importable first."""
    shadow = tmp_path / "site" / "resnet_lab"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('the installed resnet_lab, not the checkout')\n")
    code = (f"import torch; m = torch.hub.load({str(ROOT)!r}, 'resnet8_fast', source='local'); "
            "import resnet_lab; print(type(m).__name__, resnet_lab.__file__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tmp_path / "site")})
    assert r.returncode == 0, r.stderr[-1500:]
    assert r.stdout.split()[1] == str(ROOT / "src" / "resnet_lab" / "__init__.py")
