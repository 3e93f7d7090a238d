"""What load_source reads and hands on: which weights file of a run (``which``), a ``--model`` that
contradicts the run, the preprocessing and held-out split a run or a bare file brings, and a file of
another architecture. The references: the weights file itself, read with safetensors, and the
documented contracts (docs/TRANSFER.md, the docstrings)."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from resnet_lab.transfer import ArchitectureMismatchError, load_source
from support import write_image_folder


@pytest.fixture
def run_with_best(tmp_path, resnet8_run):
    """A copy of the source run whose best.safetensors holds other weights than its model.safetensors."""
    run = tmp_path / "run"
    shutil.copytree(resnet8_run, run)
    last = load_file(str(run / "model.safetensors"))
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in last.items()}, str(run / "best.safetensors"))
    return run


@pytest.mark.parametrize("which", ["model", "best"])
def test_which_chooses_the_runs_last_or_best_weights(run_with_best, which):
    want = load_file(str(run_with_best / f"{which}.safetensors"))
    source = load_source(run_with_best, which=which)
    assert source.origin == str(run_with_best / f"{which}.safetensors")
    assert source.state_dict.keys() == want.keys()
    assert all(torch.equal(source.state_dict[k], v) for k, v in want.items())


def test_a_model_name_that_contradicts_the_run_is_refused(run_with_best):
    with pytest.raises(ValueError, match=rf"^--model resnet20 differs from resnet8 recorded with {run_with_best}; "
                                         r"drop --model$"):
        load_source(run_with_best, model="resnet20")
    assert load_source(run_with_best, model="resnet8").arch["name"] == "resnet8"  # the same name is fine
    # `--model ''` (an unset shell variable) was taken for no --model and silently ignored, where
    # `--model resnet20` was refused: a blank name contradicts the run as much as a wrong one
    for blank in ("", " "):
        with pytest.raises(ValueError, match=rf"^--model {blank!r} differs from resnet8 recorded with "):
            load_source(run_with_best, model=blank)


def test_source_preprocessing_fills_in_only_what_the_data_config_leaves_out(resnet8_run):
    """with_source_preprocessing's docstring: the weights' input size unless the config sets
    image_size, their mean/std (1 channel repeated for RGB data) unless the config sets them."""
    from resnet_lab.data import DataConfig
    from resnet_lab.transfer import with_source_preprocessing

    source = load_source(resnet8_run)  # 1 x 6 x 6, mean 0.25, std 0.5
    filled = with_source_preprocessing(DataConfig("fake"), source)
    assert (filled.image_size, tuple(filled.mean), tuple(filled.std)) == (6, (0.25,) * 3, (0.5,) * 3)
    own = DataConfig("fake", image_size=12, mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1))
    kept = with_source_preprocessing(own, source)
    assert (kept.image_size, tuple(kept.mean), tuple(kept.std)) == (12, (0.1, 0.2, 0.3), (0.3, 0.2, 0.1))


def test_a_non_folder_run_hands_no_held_out_split_to_the_target_data(resnet8_run):
    """Only a run of an image folder without val/ held images out (WeightSource's docstring): the
    source run here trained on another dataset, so nothing of its split may reach a target folder."""
    source = load_source(resnet8_run)
    assert (source.split_seed, source.val_fraction) == (None, None)


def test_only_a_1000_class_rgb_file_is_assumed_to_be_imagenet_trained(tv_resnet18):
    """docs/TRANSFER.md: a --from-file 1000-class RGB file is assumed ImageNet-trained; any other
    file says nothing of its preprocessing, so the target data's own statistics are used."""
    _, path = tv_resnet18  # RGB, the ImageNet stem, 10 classes
    source = load_source(file=path, model="resnet18")
    assert (source.mean, source.std, source.input_size) == (None, None, None)
    assert source.notes == ["the file does not say its preprocessing: the target data's own mean/std are used"]


def test_a_file_of_another_architecture_is_refused_naming_the_keys_it_lacks(tv_resnet18, resnet8_run):
    _, path = tv_resnet18
    with pytest.raises(ArchitectureMismatchError, match=r"^the weights do not fit vgg11: missing in the weights: "
                                                        r"classifier\.6\.weight, features\.0\.weight \(they have "
                                                        r"conv1\.weight, bn1\.weight"):
        load_source(file=path, model="vgg11")
    with pytest.raises(ValueError, match=r"^give exactly one weight source"):  # never one of them silently
        load_source(resnet8_run, file=path, model="resnet18")


def _torchvision_stand_in(monkeypatch, tmp_path, model: str, weights: str | None, state: dict) -> None:
    """torchvision's ``model`` weights ``weights`` (DEFAULT when None), downloaded as a stand-in: their
    real transforms and meta, ``state`` as the tensors, the hub cache in ``tmp_path``."""
    import types

    from resnet_lab.transfer import sources

    real = sources.torchvision_weights(model, weights)
    stand_in = types.SimpleNamespace(url=f"https://download.invalid/models/{model}.pth", transforms=real.transforms,
                                     meta=real.meta, name=real.name, get_state_dict=lambda **kw: state)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(sources, "torchvision_weights", lambda model, name=None: stand_in)
    monkeypatch.setattr(sources, "_download", lambda url, cached: None)


def test_torchvision_googlenet_weights_take_the_input_rescaling_torchvision_sets_for_them(monkeypatch, tmp_path):
    """torchvision's googlenet builder sets transform_input=True whenever it loads weights (they were
    trained on [-1, 1] inputs); the source's arch must ask create_model for the same. The download is a
    stand-in: the weights' real transforms and class names, tensors of the zoo's own GoogLeNet."""
    from resnet_lab import create_model

    with torch.device("meta"):
        state = create_model("googlenet", num_classes=1000).state_dict()
    _torchvision_stand_in(monkeypatch, tmp_path, "googlenet", None, state)
    source = load_source("torchvision:googlenet")
    assert source.arch["transform_input"] is True and source.arch["num_classes"] == 1000
    # torchvision's ImageNet stem: small_input (no stride-2 conv1, no first pools) loads the same tensors and
    # computes other features
    assert source.arch["small_input"] is False
    assert load_source("torchvision:resnet18").arch.get("transform_input") is None  # only GoogLeNet's


def test_a_folder_target_holds_out_the_sources_share_unless_it_gives_its_own(tmp_path):
    """with_source_preprocessing's docstring: a run of an image folder passes on which images it held
    out (split_seed, and its share when the config keeps the default), so a finetune on the same
    folder tests on none the source trained on; a share the config sets itself is the user's."""
    from resnet_lab.data import DataConfig
    from resnet_lab.data.config import DEFAULT_VAL_FRACTION
    from resnet_lab.transfer import WeightSource, with_source_preprocessing

    (tmp_path / "pics" / "ants").mkdir(parents=True)  # a folder without val/: its test split is held out
    source = WeightSource(state_dict={}, arch={"name": "resnet8"}, split_seed=3, val_fraction=0.5)
    default = with_source_preprocessing(DataConfig("folder", data_dir=str(tmp_path / "pics")), source)
    assert (default.split_seed, default.val_fraction) == (3, 0.5) and DEFAULT_VAL_FRACTION != 0.5
    own = with_source_preprocessing(DataConfig("folder", data_dir=str(tmp_path / "pics"), val_fraction=0.3), source)
    assert (own.split_seed, own.val_fraction) == (3, 0.3)


def test_a_folder_target_with_its_own_val_folder_takes_no_held_out_split_and_loads(tmp_path):
    """with_source_preprocessing's docstring: a folder with val/ holds none out, so the source's split
    seed is not handed on; the reference is the folder reader, which refuses a split seed for such a
    folder (there is nothing to hold out) and reads the config that comes back."""
    from resnet_lab.data import DataConfig
    from resnet_lab.data.config import DEFAULT_VAL_FRACTION
    from resnet_lab.data.sources import find_folder_samples
    from resnet_lab.transfer import WeightSource, with_source_preprocessing

    root = tmp_path / "pics"
    for split in ("train", "val"):
        write_image_folder(root / split, n=2)
    source = WeightSource(state_dict={}, arch={"name": "resnet8"}, split_seed=3, val_fraction=0.5)
    config = with_source_preprocessing(DataConfig("folder", data_dir=str(root)), source)
    assert (config.split_seed, config.val_fraction) == (0, DEFAULT_VAL_FRACTION)
    found = find_folder_samples(config.data_dir, config.val_fraction, config.split_seed)
    assert not found.held_out


def test_a_head_transferred_run_as_a_source_has_its_stacked_heads_class_count(tmp_path):
    """Its stacked Linear folds into the classifier, so the source's arch has the head's classes
    (the rows of the folded weight), and a further ``head`` transfer stacks on those outputs."""
    from resnet_lab import create_model
    from resnet_lab.runs import save_model
    from resnet_lab.transfer import transfer_model

    model = create_model("resnet8", num_classes=5, in_channels=1, stacked_head=3)
    save_model(tmp_path / "run", model, {"classes": ["a", "b", "c"], "input_size": [1, 8, 8]})
    source = load_source(tmp_path / "run")
    assert source.arch["num_classes"] == source.state_dict["fc.weight"].shape[0] == 3
    _, plan = transfer_model(source, "head", num_classes=2)
    assert plan.head == {"module": "fc", "num_classes": 2, "old_classes": 3}


@pytest.mark.parametrize("in_channels, small_input", [(1, False), (3, True)], ids=["1-channel", "cifar-stem"])
def test_a_1000_class_file_is_assumed_imagenet_trained_only_when_rgb_with_the_imagenet_stem(tmp_path, in_channels,
                                                                                          small_input):
    """docs/TRANSFER.md: only a 1000-class RGB file with the ImageNet stem is assumed ImageNet-trained; a
    1-channel one, or one with the CIFAR stem, was trained on other images, whatever its class count."""
    from resnet_lab import create_model

    path = tmp_path / "w.pth"
    torch.save(create_model("resnet18", num_classes=1000, in_channels=in_channels, small_input=small_input).state_dict(),
               path)
    source = load_source(file=path, model="resnet18")
    assert (source.arch["in_channels"], source.arch["small_input"]) == (in_channels, small_input)
    assert (source.mean, source.std, source.input_size) == (None, None, None)


def test_a_file_of_another_depth_is_refused_naming_what_it_lacks_not_the_other_stems_shapes(tv_resnet18):
    """infer_arch's error is that of the stem tried first (the ImageNet one, which resnet18's file has):
    a resnet18 file for resnet34 lacks layer1.2's tensors; its 7x7 conv1 is no "different shape"."""
    _, path = tv_resnet18
    with pytest.raises(ArchitectureMismatchError) as e:
        load_source(file=path, model="resnet34")
    assert "missing in the weights: layer1.2.conv1.weight" in str(e.value)
    assert "different shapes" not in str(e.value) and "conv1.weight (64, 3, 7, 7)" not in str(e.value)


def test_a_file_without_the_classifier_is_refused_naming_it_not_with_a_key_error(tv_resnet18, tmp_path):
    """A backbone-only file (its fc dropped, as feature-extractor exports do) has the stem but no
    classifier: infer_arch's refusal names the missing key, whichever of the two is missing."""
    model, _ = tv_resnet18
    path = tmp_path / "backbone.pth"
    torch.save({k: v for k, v in model.state_dict().items() if not k.startswith("fc.")}, path)
    with pytest.raises(ArchitectureMismatchError, match=r"^the weights do not fit resnet18: missing in the weights: "
                                                        r"fc\.weight \(they have conv1\.weight"):
        load_source(file=path, model="resnet18")


def test_torchvision_weights_with_nan_tensors_are_refused_naming_them_and_the_weights_to_use(monkeypatch, tmp_path):
    """torchvision's vgg16.IMAGENET1K_FEATURES are "missing values in the classifier module" (their docs):
    loaded, every strategy would train on NaN (a new head replaces only the last Linear of VGG's
    classifier). Any torchvision source with non-finite tensors is refused, naming them and the
    DEFAULT weights (a stand-in of resnet18's, which build in a fraction of vgg16's time)."""
    from resnet_lab import create_model

    state = create_model("resnet18", num_classes=1000).state_dict()
    state["fc.weight"][3, 5] = float("nan")
    _torchvision_stand_in(monkeypatch, tmp_path, "resnet18", None, state)
    with pytest.raises(ValueError, match=r"^torchvision:resnet18: 1 tensor holds NaN or inf \(fc\.weight\), so "
                                         r"nothing trains from these weights: .*torchvision:resnet18 "):
        load_source("torchvision:resnet18")
