"""Public functions refuse arguments of the wrong kind with an error naming the argument, instead
of a deep Python error or a truthy string acting as True (found by a library user's pass over the
API: tta="no" averaged the mirror views, inplace="no" changed the caller's model, dim=True gave
BatchNorm1d)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from resnet_lab.analysis import count_params
from resnet_lab.data import to_model_input
from resnet_lab.deploy import fuse_bn
from resnet_lab.models import create_model, list_models
from resnet_lab.nn import norm_layer
from resnet_lab.train import evaluate
from resnet_lab.transfer.freeze import count_params as frozen_count

from support import write_image_folder


def test_truthy_strings_are_not_taken_for_true():
    model = create_model("resnet8", num_classes=3, in_channels=1).eval()
    batches = [(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0]))]
    with pytest.raises(TypeError, match="tta must be True or False, got 'no'"):
        evaluate(model, batches, num_classes=3, tta="no")
    assert evaluate(model, batches, num_classes=3, tta=False)["n"] == 4
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match="inplace must be True or False, got 'no'"):
        fuse_bn(model, inplace="no")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="dim must be 1 or 2, got True"):
        norm_layer("batch", dim=True)
    assert norm_layer("batch", dim=1) is torch.nn.BatchNorm1d


def test_wrong_kinds_are_named():
    with pytest.raises(TypeError, match=r"pattern must be a string such as 'resnet\*' \(or None for all\), got 5"):
        list_models(5)
    assert list_models("resnet20*") == ["resnet20", "resnet20_fast"]
    for counter in (count_params, frozen_count):
        with pytest.raises(TypeError, match=r"count_params needs a torch.nn.Module \(e.g. create_model\('resnet8'\)\), got int"):
            counter(5)
    with pytest.raises(ValueError, match=r"to_model_input needs the model's mean, std \(a run's model.json"):
        to_model_input(Image.new("L", (8, 8)), {"input_size": [1, 8, 8]})
    assert to_model_input(Image.new("L", (8, 8)), {"input_size": [1, 8, 8], "mean": [0.5], "std": [0.5]}).shape \
        == (1, 1, 8, 8)


def test_analysis_tools_name_bad_arguments():
    """summarize("3,32,32") was int(','); (3, 8.5, 8) and batch_size=2.0 torch errors; depth=True
    was taken as 1; summarize("resnet8") and GradientFlowRecorder("resnet8") AttributeErrors."""
    from resnet_lab.analysis import GradientFlowRecorder, summarize

    model = create_model("resnet8", num_classes=3, in_channels=1)
    for kw, match in [({"input_size": "1,8,8"}, r"input_size must be positive int sizes .*got '1,8,8'"),
                      ({"input_size": (1, 8.5, 8)}, r"input_size must be positive int sizes .*got \(1, 8\.5, 8\)"),
                      ({"input_size": (1, 8, 8), "batch_size": 2.0}, r"batch_size must be an int >= 1, got 2\.0"),
                      ({"input_size": (1, 8, 8), "depth": True}, r"depth must be None .* or an int >= 1, got True"),
                      ({"input_size": (1, 0, 8)}, r"input_size must be positive int sizes .*got \(1, 0, 8\)"),
                      ({"input_size": (1, 8, 8), "batch_size": 0}, r"batch_size must be an int >= 1, got 0"),
                      ({"input_size": (1, 8, 8), "depth": 0}, r"depth must be None .* or an int >= 1, got 0")]:
        with pytest.raises(ValueError, match=match):
            summarize(model, **kw)
    with pytest.raises(TypeError, match=r"summarize needs a torch.nn.Module \(e.g. create_model\('resnet8'\)\)"):
        summarize("resnet8", (1, 8, 8))
    with pytest.raises(TypeError, match=r"GradientFlowRecorder needs a torch.nn.Module \(e.g. create_model\('resnet8'\)\), got str"):
        GradientFlowRecorder("resnet8")
    assert summarize(model, (1, 8, 8), depth=1).total_params == sum(p.numel() for p in model.parameters())


def test_transfer_functions_name_bad_arguments(tmp_path):
    """freeze(model, "fc.weight") iterated the letters; with_source_preprocessing("fashion-mnist", s)
    was an AttributeError; transfer_model(num_classes=3, classes=[2 names]) saved a model.json that
    could not load; --backbone-lr-scale inf was named as lr_scale."""
    from resnet_lab.data import DataConfig
    from resnet_lab.transfer import (check_transfer_options, freeze, load_source, transfer_model,
                                     with_source_preprocessing)

    model = create_model("resnet8", num_classes=3)
    with pytest.raises(TypeError, match=r"trainable must be a list of parameter names, e.g. \['fc.weight'\]"):
        freeze(model, "fc.weight")
    torch.save(model.state_dict(), tmp_path / "w.pth")
    source = load_source(file=tmp_path / "w.pth", model="resnet8")
    with pytest.raises(TypeError, match=r"config must be a DataConfig \(e.g. DataConfig\('fashion-mnist'\)\)"):
        with_source_preprocessing("fashion-mnist", source)
    assert with_source_preprocessing(DataConfig("fake"), source).name == "fake"
    with pytest.raises(ValueError, match="classes names 2 classes but num_classes is 3"):
        transfer_model(source, "last", num_classes=3, classes=["a", "b"])
    with pytest.raises(ValueError, match=r"--backbone-lr-scale must be a finite number > 0 \(e.g. 0.1\), got inf"):
        check_transfer_options("all", None, float("inf"))


def _calls_taking_a_model():
    from resnet_lab.analysis import summarize
    from resnet_lab.deploy import export_onnx
    from resnet_lab.deploy.cam import grad_cam
    from resnet_lab.train import TrainConfig, train
    from tinytrain import make_bundle

    return {
        "fuse_bn": lambda m, tmp: fuse_bn(m),
        "export_onnx": lambda m, tmp: export_onnx(m, tmp / "m.onnx", input_size=(1, 8, 8)),
        "summarize": lambda m, tmp: summarize(m, (1, 8, 8)),
        "grad_cam": lambda m, tmp: grad_cam(m, torch.zeros(1, 8, 8)),
        "evaluate": lambda m, tmp: evaluate([m], [(torch.zeros(2, 1, 8, 8), torch.zeros(2, dtype=torch.long))],
                                            num_classes=3),
        "train": lambda m, tmp: train(m, make_bundle(), TrainConfig(epochs=1, out=str(tmp / "run"), progress=False)),
    }


@pytest.mark.parametrize("call", list(_calls_taking_a_model()))
@pytest.mark.parametrize("model", ["resnet8", {"fc.weight": torch.zeros(3, 4)}], ids=["name", "state-dict"])
def test_a_model_name_or_state_dict_where_the_network_goes_is_named(call, model, tmp_path):
    """fuse_bn("resnet8") and export_onnx were "'str' object has no attribute 'named_modules'", evaluate
    'no attribute modules', and train("resnet8", ...) said the model had no model_config; nothing is written."""
    name = repr(model) if isinstance(model, str) else "'resnet8'"
    with pytest.raises(TypeError, match=rf"{call} needs a torch.nn.Module \(e.g. create_model\({name}\)\), got "
                                        rf"{type(model).__name__}$"):
        _calls_taking_a_model()[call](model, tmp_path)
    assert list(tmp_path.iterdir()) == []


def _frozen_resnet8():
    from resnet_lab.transfer import freeze

    model = create_model("resnet8", num_classes=3, in_channels=1).train()
    freeze(model, ["fc.weight", "fc.bias"])  # the norms locked in eval, all but the head frozen
    return model


def _unfreeze(model, **kw):
    from resnet_lab.transfer.freeze import unfreeze

    unfreeze(model, **kw)


def _params_from(model, name):
    from resnet_lab.transfer.freeze import params_from

    params_from(model, name)


@pytest.mark.parametrize("call, arg, error, match", [
    (_unfreeze, {"mode": "eval"}, TypeError, r"mode must be True \(train\), False \(eval\) or None .*got 'eval'"),
    (_params_from, {"name": ""}, ValueError, r"--unfreeze-from '' is not a module with parameters of CifarResNet; "
                                             r"expected one of conv1, bn1, layer1, layer2, layer3, fc"),
], ids=["unfreeze-mode-string", "params-from-empty-name"])
def test_a_truthy_string_or_empty_name_is_refused_and_the_frozen_model_kept(call, arg, error, match):
    """unfreeze(model, "eval") put the norms in train mode ("eval" is truthy); params_from(model, "")
    raised "'.conv1.weight' is not in list"."""
    model = _frozen_resnet8()
    flags = [(n, p.requires_grad) for n, p in model.named_parameters()]
    modes = [(n, m.training) for n, m in model.named_modules()]
    with pytest.raises(error, match=match):
        call(model, **arg)
    assert [(n, p.requires_grad) for n, p in model.named_parameters()] == flags
    assert [(n, m.training) for n, m in model.named_modules()] == modes


@pytest.mark.parametrize("kind", ["memory", "streaming"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_train_refuses_a_model_whose_weights_are_not_float32_before_any_step(tmp_path, dtype, kind):
    """load_data's batches are float32, held in memory or streamed from an image folder: a .double()
    model failed at its first step with torch's "Input type (torch.FloatTensor) and weight type
    (torch.DoubleTensor) should be the same", after the 'training' line, naming no way out; a
    .bfloat16() one likewise (mixed precision keeps float32 weights: bf16=True)."""
    from resnet_lab.data import load_data
    from resnet_lab.train import TrainConfig, train

    if kind == "memory":
        data = load_data("fake", batch_size=8, subset=16, image_size=8, in_channels=1)
    else:
        data = load_data("folder", data_dir=write_image_folder(tmp_path / "pics"), batch_size=8, num_workers=0,
                         in_channels=1, image_size=8)
    model = create_model("resnet8", num_classes=len(data.info.classes), in_channels=1).to(dtype)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match=rf"^train needs a float32 model, got {dtype} weights: call model.float\(\)"):
        train(model, data, TrainConfig(epochs=1, out=str(tmp_path / "run"), progress=False))
    assert not (tmp_path / "run").exists()
    assert all(v.dtype == dtype and torch.equal(v, before[k]) for k, v in model.state_dict().items()
               if v.is_floating_point())
    # the reference: the same model in float32 trains on the same batches
    train(model.float(), data, TrainConfig(epochs=1, progress=False))
