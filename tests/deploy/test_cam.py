"""Grad-CAM (``resnet_lab.deploy.cam``, ``predict --cam``): the registry names a real feature map for
every model, the map is Grad-CAM's formula recomputed in float64, and a trained Fashion-MNIST model
looks at the trousers rather than at the background."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import nn

from resnet_lab import create_model, list_models, model_info
from resnet_lab.cli import main
from resnet_lab.data import FASHION_MNIST_CLASSES, DataNotFoundError, channel_stats, find_fashion_mnist, read_idx
from resnet_lab.runs import save_model

pytest.importorskip("pytorch_grad_cam", reason="the cam extra is not installed: pip install 'resnet-lab[cam]'")
from resnet_lab.deploy.cam import cam_paths, grad_cam, overlay, save_cams  # noqa: E402  (after the skip: it is the extra's code)

# The models whose depth makes even a meta-device build take a second or more.
_DEEP = {"resnet1202", "preact_resnet1001"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in _DEEP else n for n in list_models()])
def test_every_registered_models_cam_layer_is_one_of_its_modules(name):
    with torch.device("meta"):  # the module tree without allocating or initializing weights
        model = create_model(name)
    layer = model.get_submodule(model_info(name).cam_layer)  # AttributeError names the missing one
    assert layer is not model


# One model per family constructor, at a small input its stem and stages accept.
_FAMILIES = [("resnet18", 64), ("plain18", 64), ("resnet8", 16), ("resnet8_fast", 16), ("plain20", 16),
             ("preact_resnet110", 16), ("wrn16_4", 16), ("densenet40", 16), ("densenet121", 64), ("vgg11_bn", 32),
             ("googlenet", 64)]


@pytest.mark.parametrize("name,size", _FAMILIES)
def test_cam_layer_outputs_the_feature_map_the_head_pools(name, size):
    """forward_features (the model's own contract: the map the head pools) is the cam layer's output,
    or its ReLU where the head applies one (pre-activation nets, DenseNet)."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    seen = {}
    hook = model.get_submodule(model_info(name).cam_layer).register_forward_hook(lambda m, i, o: seen.update(out=o))
    with torch.no_grad():
        features = model.forward_features(torch.randn(2, 3, size, size))
    hook.remove()
    out = seen["out"]
    assert out.dim() == 4 and out.shape == features.shape
    assert torch.equal(features, out) or torch.equal(features, F.relu(out))


def _reference_cam(model: nn.Module, x: torch.Tensor, layer: str, target: int | None) -> tuple[np.ndarray, int]:
    """Grad-CAM as Selvaraju et al. 2017 write it, in float64 with a hook and autograd: channel
    weights are the spatial mean of d(score)/dA, the map is ReLU(sum_c w_c A_c), scaled to [0, 1],
    upsampled bilinearly (half-pixel centres) and scaled to [0, 1] again, as grad-cam does."""
    model = copy.deepcopy(model).double().eval().requires_grad_(True)  # a frozen model's copy too: the graph to A
    seen = {}
    model.get_submodule(layer).register_forward_hook(lambda m, i, o: seen.update(a=o))
    logits = model(x.double())
    cls = int(logits[0].argmax()) if target is None else target
    a = seen["a"]
    (g,) = torch.autograd.grad(logits[0, cls], a)
    cam = torch.relu((g.mean((2, 3), keepdim=True) * a).sum(1, keepdim=True))  # (1, 1, h, w)

    def scaled(t):
        t = t - t.min()
        return t / (t.max() + 1e-7)

    up = F.interpolate(scaled(cam), size=x.shape[-2:], mode="bilinear", align_corners=False)
    return scaled(up)[0, 0].detach().numpy(), cls


def test_grad_cam_is_the_formula_recomputed_in_float64_for_the_top_or_the_given_class():
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=4, in_channels=1)
    x = torch.randn(1, 1, 16, 16)
    want, top = _reference_cam(model, x, model_info("resnet8").cam_layer, None)
    got = grad_cam(model, x[0])  # (C, H, W) works as (1, C, H, W)
    assert got.shape == (16, 16) and got.min() >= 0 and got.max() <= 1
    np.testing.assert_allclose(got, want, atol=1e-4)
    other = (top + 1) % 4
    want_other, _ = _reference_cam(model, x, "layer2", other)
    np.testing.assert_allclose(grad_cam(model, x, target_class=other, layer="layer2"), want_other, atol=1e-4)



def test_a_float64_image_gets_the_map_of_the_same_image_in_float32():
    # The docstring asks for a normalized floating-point image, and NumPy's default is float64
    # (torch.from_numpy keeps it): the map is computed in float32 whatever the image's precision.
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=4, in_channels=1)
    x = torch.randn(1, 16, 16, dtype=torch.float64)
    np.testing.assert_allclose(grad_cam(model, x), grad_cam(model, x.float()), atol=1e-6)

def test_grad_cam_of_a_model_with_only_its_head_trainable_is_still_the_formula():
    # A backbone frozen whole (fine-tuning the classifier only): no parameter up to the cam layer
    # requires grad, so its feature map has a graph only through the image.
    torch.manual_seed(1)
    model = create_model("resnet8", num_classes=4, in_channels=1).requires_grad_(False)
    model.get_classifier().requires_grad_(True)
    x = torch.randn(1, 1, 16, 16)
    want, _ = _reference_cam(model, x, model_info("resnet8").cam_layer, None)
    np.testing.assert_allclose(grad_cam(model, x), want, atol=1e-4)
    assert not x.requires_grad and not model.conv1.weight.requires_grad  # the caller's tensors as they were


def test_grad_cam_leaves_the_model_as_it_came_modes_hooks_and_accumulated_gradients():
    model = create_model("resnet8", num_classes=3, in_channels=1).train()
    for p in model.layer1.parameters():  # a frozen stage still gets a map
        p.requires_grad_(False)
    model.bn1.eval()  # a BN the user froze by hand (it used to come back in train mode)
    model(torch.randn(2, 1, 16, 16)).sum().backward()  # gradients being accumulated (they used to be deleted)
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads
    modes = {n: m.training for n, m in model.named_modules()}
    with torch.no_grad():  # callers' no_grad does not stop it
        heat = grad_cam(model, torch.randn(1, 16, 16))
    assert heat.shape == (16, 16)
    assert {n: m.training for n, m in model.named_modules()} == modes and not model.bn1.training
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())
    assert {n: p.grad for n, p in model.named_parameters() if p.grad is not None}.keys() == grads.keys()
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert torch.equal(p.grad, grads[n]), n
    fresh = create_model("resnet8", num_classes=3, in_channels=1)
    grad_cam(fresh, torch.randn(1, 16, 16))
    assert all(p.grad is None for p in fresh.parameters())  # none before, none after


def test_grad_cam_under_autocast_matches_float32_and_refuses_what_it_cannot_take():
    model = create_model("resnet8", num_classes=3, in_channels=1).eval()
    x = torch.randn(1, 16, 16)
    with torch.autocast("cpu", torch.bfloat16):  # turned off for the map
        np.testing.assert_array_equal(grad_cam(model, x), grad_cam(model, x))
    for low in ("bfloat16", "float16"):  # CAM.md: a bf16/fp16 model is refused
        with pytest.raises(ValueError, match=rf"needs a float32 model, and this one has {low} parameters: pass "
                                             r"model.float\(\)"):
            grad_cam(model.to(getattr(torch, low)), x.to(getattr(torch, low)))
        model.float()
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"which torch.inference_mode\(\) turns off"):
        grad_cam(model, x)


def test_grad_cam_errors_name_the_bad_value_and_the_way_out():
    model = create_model("resnet8", num_classes=3, in_channels=1)
    with pytest.raises(ValueError, match=r"target_class 3 is out of range: the model has 3 classes") as raised:
        grad_cam(model, torch.randn(1, 8, 8), target_class=3)
    # its hooks are off although the error's traceback (and with it grad_cam's frame) is still held
    assert raised.tb is not None and all(not m._forward_hooks for m in model.modules())
    with pytest.raises(ValueError, match=r"no module 'layer9'.*layer1, layer2, layer3"):
        grad_cam(model, torch.randn(1, 8, 8), layer="layer9")
    with pytest.raises(ValueError, match=r"one image.*got shape \(2, 1, 8, 8\)"):
        grad_cam(model, torch.randn(2, 1, 8, 8))
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"not built by create_model.*pass layer="):
        grad_cam(plain, torch.randn(1, 8, 8))
    assert grad_cam(plain, torch.randn(1, 8, 8), layer="0").shape == (8, 8)
    # a module that never runs, or one without an (N, C, H, W) output, is named
    wide = create_model("wrn16_4")
    with pytest.raises(ValueError, match=r"layer 'relu' never ran in the forward pass"):
        grad_cam(wide, torch.randn(1, 3, 32, 32), layer="relu")
    for layer in ("fc", ""):
        with pytest.raises(ValueError, match=rf"layer '{layer}' gives a 2-D output \(1, 3\), not a feature map"):
            grad_cam(model, torch.randn(1, 8, 8), layer=layer)


@pytest.mark.parametrize("image, match", [
    (np.zeros((1, 8, 8), np.float32), r"grad_cam takes the image as a torch.Tensor \(C, H, W\), got ndarray: convert it"),
    (torch.zeros(1, 8, 8, dtype=torch.uint8), r"normalized floating-point image, got torch.uint8: .*to_model_input"),
    ([[[0.0] * 8] * 8], r"torch.Tensor \(C, H, W\), got list"),
], ids=["numpy", "uint8", "list"])
def test_grad_cam_refuses_an_image_that_is_no_float_tensor_and_leaves_the_model_alone(image, match):
    """A numpy array was an AttributeError ('no attribute dim'), uint8 pixels torch's 'only Tensors of
    floating point dtype can require gradients'."""
    model = create_model("resnet8", num_classes=3, in_channels=1).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError, match=match):
        grad_cam(model, image)
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_overlay_is_the_images_size_enlarged_by_a_whole_factor_in_jet_colours():
    image = Image.fromarray(np.full((28, 20), 128, dtype=np.uint8))  # (H, W) = (28, 20): W is the short side
    heat = np.zeros((28, 20), dtype=np.float32)
    heat[:, :10] = 1.0  # left half hot, right half cold
    assert overlay(image, heat).size == (20, 28)
    big = overlay(image, heat, min_side=224, image_weight=0.0)  # 224 / 20 -> a factor of 12
    assert big.mode == "RGB" and big.size == (240, 336)
    rgb = np.asarray(big).astype(int)
    left, right = rgb[:, :60].reshape(-1, 3).mean(0), rgb[:, -60:].reshape(-1, 3).mean(0)
    assert left[0] > 2 * left[2] and right[2] > 2 * right[0]  # jet: hot is red, cold is blue
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        overlay(image, heat * 2)


def _jet(heat: np.ndarray) -> np.ndarray:
    """OpenCV's jet colours (grad-cam's) of a [0, 1] map, RGB on [0, 1]: the colour reference."""
    import cv2

    return cv2.applyColorMap(np.uint8(255 * heat), cv2.COLORMAP_JET)[..., ::-1].astype(np.float64) / 255


@pytest.mark.parametrize("weight", [0.0, 0.3, 0.5, 1.0])
def test_overlay_is_the_documented_blend_without_stretching(weight):
    """QA 2026-12-06: overlay divided the blend by its maximum (grad-cam's show_cam_on_image), so a
    grey image came back brighter, and all white at image_weight=1."""
    image = Image.fromarray(np.full((28, 28), 100, dtype=np.uint8))
    heat = np.zeros((28, 28), dtype=np.float32)
    heat[10:15, 10:15] = 1.0
    got = np.asarray(overlay(image, heat, image_weight=weight)).astype(int)
    want = np.round(255 * ((1 - weight) * _jet(np.asarray(
        Image.fromarray(heat, mode="F").resize((28, 28), Image.Resampling.BILINEAR)).clip(0, 1))
        + weight * 100 / 255)).astype(int)
    assert np.abs(got - want).max() <= 1
    if weight == 1.0:
        assert (got == 100).all()  # only the image: the image


def test_overlay_rounds_the_blend_to_the_nearest_level():
    # CAM.md: each pixel is image_weight * image + (1 - image_weight) * jet(heatmap), rounded, here far
    # from a half: red and green 0.3 * 102 = 30.6 -> 31 (truncated, 30); blue adds 0.7 * jet's 128 -> 120.2
    got = np.asarray(overlay(Image.new("L", (2, 2), 102), np.zeros((2, 2), np.float32), image_weight=0.3))
    want = np.round(0.3 * 102 + 0.7 * 255 * _jet(np.zeros((2, 2))))
    assert (got == want).all() and want[0, 0].tolist() == [31, 31, 120]


def test_overlay_resizes_a_smaller_heatmap_bilinearly_as_documented():
    """overlay's docstring: the heatmap is "resized (bilinear) to the output". A 2x2 map over a 28x28
    image must blend smoothly, as torch's bilinear interpolation (align_corners=False) of the same map;
    nearest-neighbour resizing survived the earlier tests (their maps were the image's size)."""
    image = Image.fromarray(np.full((28, 28), 0, dtype=np.uint8))
    heat = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    got = np.asarray(overlay(image, heat, image_weight=0.0)).astype(int)
    smooth = F.interpolate(torch.from_numpy(heat)[None, None], size=(28, 28), mode="bilinear",
                           align_corners=False)[0, 0].numpy().clip(0, 1)
    want = np.round(255 * _jet(smooth)).astype(int)
    assert np.abs(got - want).max() <= 8  # jet's 256 steps: a rounding of 255 * heat may move one step
    assert len({tuple(px) for px in got.reshape(-1, 3)}) > 20  # many blended colours, not two


def test_a_map_of_tiny_values_is_still_scaled_to_reach_one():
    """QA 2026-12-06: grad-cam divides by max + 1e-7, so a map whose raw values are near 1e-9 (an
    untrained model's near-zero logits) topped out well below 1."""
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=4, in_channels=1)
    with torch.no_grad():
        model.fc.weight.mul_(1e-9)  # every gradient, and so the map, a billion times smaller
    x = torch.randn(1, 1, 16, 16)
    got = grad_cam(model, x[0])
    assert got.max() == pytest.approx(1.0, abs=1e-6) and got.min() == 0
    torch.manual_seed(0)
    plain = create_model("resnet8", num_classes=4, in_channels=1)  # the same net at its normal scale
    np.testing.assert_allclose(got, grad_cam(plain, x[0]), atol=1e-3)


# --- a trained Fashion-MNIST model -------------------------------------------------------------

TROUSER, DRESS = FASHION_MNIST_CLASSES.index("Trouser"), FASHION_MNIST_CLASSES.index("Dress")


def _fashion_mnist_split(files: dict[str, Path], split: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(read_idx(files[f"{split}_images"], expected_ndim=3)).unsqueeze(1)  # uint8 (N, 1, 28, 28)
    return x, torch.from_numpy(read_idx(files[f"{split}_labels"], expected_ndim=1)).long()


@pytest.fixture(scope="module")
def trouser_model():
    """resnet8 trained for one epoch on 500 trousers and 500 dresses (label 0: trouser): two garments
    of the same upright shape, so the evidence for trousers has to lie on the garment itself."""
    try:
        files = find_fashion_mnist(None)
    except DataNotFoundError:
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    x, y = _fashion_mnist_split(files, "train")
    idx = torch.cat([torch.nonzero(y == c).flatten()[:500] for c in (TROUSER, DRESS)])
    idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(0))]
    mean, std = channel_stats(x[idx])
    norm = lambda u8: (u8.float() / 255 - mean[0]) / std[0]  # noqa: E731
    images, labels = norm(x[idx]), (y[idx] == DRESS).long()
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=2, in_channels=1)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for i in range(0, len(images), 32):
        loss = F.cross_entropy(model(images[i:i + 32]), labels[i:i + 32])
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Eval-mode statistics over the whole subset: 31 steps leave the running averages behind the weights.
    torch.optim.swa_utils.update_bn([images[i:i + 250] for i in range(0, len(images), 250)], model)
    test_x, test_y = _fashion_mnist_split(files, "test")
    return model.eval(), norm, test_x[test_y == TROUSER][:8], test_x[test_y == DRESS][:8]


def test_grad_cam_of_a_trained_fashion_mnist_model_weighs_the_trousers_pixels_over_the_background(trouser_model):
    model, norm, trousers, dresses = trouser_model
    with torch.no_grad():
        predicted = model(norm(torch.cat([trousers, dresses]))).argmax(1)
    assert (predicted == torch.tensor([0] * 8 + [1] * 8)).float().mean() >= 0.85  # it learned the task
    for img in trousers:
        heat = grad_cam(model, norm(img), target_class=0)  # (28, 28)
        garment = img[0].numpy() > 25  # the trouser's pixels; Fashion-MNIST's background is 0
        assert heat[garment].mean() > heat[~garment].mean()


# --- predict --cam ------------------------------------------------------------------------------


@pytest.fixture
def cam_run(tmp_path) -> tuple[Path, nn.Module, list[Path]]:
    """A run of a resnet8 (random weights) for 16 px grayscale images, and two such images."""
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=3, in_channels=1).eval()
    run = tmp_path / "run"
    save_model(run, model, {"classes": ["a", "b", "c"], "input_size": [1, 16, 16], "mean": [0.5], "std": [0.25]})
    rng = np.random.default_rng(0)
    images = []
    for name in ("one", "two"):
        images.append(tmp_path / f"{name}.png")
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(images[-1])
    return run, model, images


def _expected_picture(model: nn.Module, path: Path) -> tuple[np.ndarray, int]:
    """The float64 Grad-CAM of the top class over the image, 14x enlarged (16 px -> 224 px)."""
    image = Image.open(path)
    x = (torch.from_numpy(np.array(image)).double() / 255 - 0.5) / 0.25
    heat, cls = _reference_cam(model, x[None, None], "layer3", None)
    return np.asarray(overlay(image, heat.astype(np.float32), min_side=224)).astype(int), cls


def test_predict_cam_writes_the_top_class_map_over_the_image(cam_run, tmp_path, capsys):
    run, model, (image, _) = cam_run
    out = tmp_path / "cam.png"
    assert main(["predict", str(run), str(image), "--top-k", "1", "--cam", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    want, cls = _expected_picture(model, image)
    top = lines[0].split(": ")[1].split()[0]
    assert top == "abc"[cls] and lines[1] == f"{image}: Grad-CAM of {top} -> {out}"
    got = np.asarray(Image.open(out)).astype(int)
    assert got.shape == want.shape == (224, 224, 3)
    assert np.abs(got - want).max() <= 2  # float32 vs float64 maps round to the same colours, or one step off


def test_predict_cam_with_several_images_writes_image_cam_png_into_the_directory(cam_run, tmp_path, capsys):
    run, model, images = cam_run
    out = tmp_path / "cams"
    assert main(["predict", str(run), *map(str, images), "--json", "--cam", str(out)]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["cam"] for r in results] == [str(out / "one_cam.png"), str(out / "two_cam.png")]
    for image, r in zip(images, results):
        want, _ = _expected_picture(model, image)
        assert np.abs(np.asarray(Image.open(r["cam"])).astype(int) - want).max() <= 2


def test_predict_cam_refuses_onnx_a_file_for_several_images_and_an_unknown_suffix(cam_run, tmp_path, capsys):
    run, _, images = cam_run
    cases = [  # (before the images, the images, after them, the message)
        (["--onnx", str(tmp_path / "m.onnx")], images[:1], ["--cam", str(tmp_path / "c.png")],
         "--cam needs the PyTorch model"),
        ([str(run)], images, ["--cam", str(tmp_path / "c.png")], "images need one map each: pass a directory"),
        ([str(run)], images[:1], ["--cam", str(tmp_path / "c.xyz")], "expected a file name ending in .png, .jpg or"),
        # formats that cannot carry the mark would be refused by the same command the next time
        ([str(run)], images[:1], ["--cam", str(tmp_path / "c.webp")], "expected a file name ending in .png, .jpg or"),
        ([str(run)], images[:1], ["--cam", str(tmp_path / "c.bmp")], "expected a file name ending in .png, .jpg or"),
    ]
    for before, imgs, after, message in cases:
        assert main(["predict", *before, *map(str, imgs), *after]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not list(tmp_path.glob("c.*"))


def test_predict_cam_refuses_to_draw_over_a_runs_plot(cam_run, capsys):
    run, _, images = cam_run
    (run / "confusion.png").write_bytes(b"the run's plot")
    assert main(["predict", str(run), str(images[0]), "--cam", str(run / "confusion.png")]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --cam {run / 'confusion.png'} belongs to the run in {run}; the map would overwrite it: " \
                  "choose another --cam path\n"
    assert (run / "confusion.png").read_bytes() == b"the run's plot"


def test_predict_cam_checks_every_destination_first_and_prints_the_predictions_before_the_maps(
        cam_run, tmp_path, capsys):
    run, _, images = cam_run
    out = tmp_path / "maps"
    (out / "two_cam.png").mkdir(parents=True)  # a directory where the second map goes
    assert main(["predict", str(run), *map(str, images), "--cam", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --cam {out / 'two_cam.png'} is a directory, where the map of two would go: choose " \
                  "another --cam path, or move it\n"
    assert not (out / "one_cam.png").exists()  # the first map used to be written before the refusal
    # "maps2/" names a directory to make, even for one image
    assert main(["predict", str(run), str(images[0]), "--cam", f"{tmp_path / 'maps2'}/"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{images[0]}: ") and lines[1].endswith(str(tmp_path / "maps2" / "one_cam.png"))
    assert main(["predict", str(run), str(images[0]), "--cam", f"{tmp_path / 'maps2'}/"]) == 0  # again: replaced
    capsys.readouterr()


# --- what the mutation probe found unguarded ---------------------------------------------------


def test_a_negative_class_index_is_refused_not_read_from_the_end():
    # ClassifierOutputTarget(-1) would explain the last class without a word
    model = create_model("resnet8", num_classes=3, in_channels=1)
    with pytest.raises(ValueError, match=r"target_class must be a class index >= 0 .*got -1"):
        grad_cam(model, torch.randn(1, 8, 8), target_class=-1)
    with pytest.raises(ValueError, match=r"target_class 3 is out of range: the model has 3 classes \(0\.\.2\)"):
        grad_cam(model, torch.randn(1, 8, 8), target_class=3)


def test_a_numpy_class_index_is_that_class_and_a_bool_is_refused():
    # an index taken from numpy (np.argmax of the logits) is a class index; True is no class, not class 1
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=3, in_channels=1)
    x = torch.randn(1, 8, 8)
    want, _ = _reference_cam(model, x[None], "layer3", 1)
    np.testing.assert_allclose(grad_cam(model, x, target_class=np.int64(1)), want, atol=1e-4)
    with pytest.raises(ValueError, match=r"target_class must be a class index >= 0 .*got True"):
        grad_cam(model, x, target_class=True)


def test_grad_cam_of_a_densenet_is_grad_cams_own_map_of_the_layer_cam_md_names():
    """CAM.md's table: a DenseNet's map is that of ``features`` (the other registry-named layers were
    only reached with layer= or on CIFAR nets). Reference: pytorch_grad_cam.GradCAM itself on that
    module for the same class, rescaled so that its largest value is exactly 1, as CAM.md says."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(0)
    model = create_model("densenet40", num_classes=4).eval()
    x = torch.randn(1, 3, 16, 16)
    with GradCAM(model=model, target_layers=[model.features]) as cam:
        want = cam(input_tensor=x, targets=[ClassifierOutputTarget(2)])[0]
    np.testing.assert_allclose(grad_cam(model, x, target_class=2), want / want.max(), atol=1e-6)


def test_a_layer_with_a_3d_output_is_named_as_no_feature_map():
    # a sequence-shaped output (N, C, L), as a token layer gives: named, not grad-cam's "Invalid grads shape"
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(2), nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"layer '1' gives a 3-D output \(1, 4, 36\), not a feature map"):
        grad_cam(model, torch.randn(1, 8, 8), layer="1")


def test_cam_paths_follow_cam_md_for_a_directory_an_upper_case_suffix_and_a_file(tmp_path):
    """CAM.md: one image and an existing directory: the map goes into it as <image>_cam.png; a .PNG
    name is a .png; several images and a file: refused (pass a directory) before anything is written."""
    images = [tmp_path / "one.png", tmp_path / "two.png"]
    for path in images:
        Image.new("L", (4, 4)).save(path)
    (tmp_path / "maps").mkdir()
    assert cam_paths(images[:1], tmp_path / "maps") == [tmp_path / "maps" / "one_cam.png"]
    assert cam_paths(images[:1], tmp_path / "MAP.PNG") == [tmp_path / "MAP.PNG"]
    (tmp_path / "notes").write_text("mine")
    with pytest.raises(ValueError, match=r"--cam .*notes is a file, but 2 images need one map each: pass a directory"):
        cam_paths(images, tmp_path / "notes")
    assert (tmp_path / "notes").read_text() == "mine"


def test_a_class_with_no_positive_evidence_gets_an_all_zero_map_not_nans():
    # The map is ReLU(sum_c w_c A_c): with A >= 0 (after a ReLU) and every weight of class 0 negative,
    # it is 0 everywhere; scaling it by its maximum must not divide 0 by 0.
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))
    with torch.no_grad():
        model[4].weight.copy_(torch.tensor([[-1.0, -2.0], [1.0, 2.0]]))
    heat = grad_cam(model, torch.rand(1, 8, 8), target_class=0, layer="1")
    assert heat.shape == (8, 8) and np.isfinite(heat).all() and (heat == 0).all()
    assert overlay(Image.new("L", (8, 8)), heat).size == (8, 8)


def test_overlay_refuses_maps_and_weights_it_cannot_draw():
    image = Image.new("L", (4, 4), 100)
    good = np.full((4, 4), 0.5, dtype=np.float32)
    nan = good.copy()
    nan[0, 0] = np.nan
    for heat, match in [(good - 1, r"in \[0, 1\]"), (nan, r"finite and in \[0, 1\]"),
                        (good[None], r"must be 2-D \(H, W\), got shape \(1, 4, 4\)"),
                        (good[0], r"must be 2-D \(H, W\), got shape \(4,\)"),
                        (good[:0], r"finite and in \[0, 1\]")]:  # no values: numpy's "zero-size array" before
        with pytest.raises(ValueError, match=match):
            overlay(image, heat)
    for weight in (-0.1, 1.5):
        with pytest.raises(ValueError, match=rf"image_weight must be in \[0, 1\], got {weight}"):
            overlay(image, good, image_weight=weight)


def test_overlay_enlarges_the_image_by_repeating_its_pixels():
    # CAM.md: "enlarged by a whole factor ... pixels kept sharp". The reference: each pixel repeated.
    pixels = np.array([[0, 200, 40], [90, 255, 10]], dtype=np.uint8)
    got = np.asarray(overlay(Image.fromarray(pixels), np.zeros((2, 3), np.float32), image_weight=1.0, min_side=6))
    want = np.repeat(np.repeat(pixels, 3, axis=0), 3, axis=1)
    assert got.shape == (6, 9, 3) and (got == want[..., None]).all()


def test_save_cams_draws_an_rgb_image_of_another_aspect_as_the_model_saw_it(tmp_path):
    """An RGB run of 8x12 (H x W) images with a mean and std per channel: the picture is the image,
    not its transpose nor other colours, under the float64 map."""
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=3, in_channels=3).eval()
    mean, std = [0.2, 0.5, 0.8], [0.3, 0.25, 0.2]
    run = tmp_path / "run"
    save_model(run, model, {"classes": ["a", "b", "c"], "input_size": [3, 8, 12], "mean": mean, "std": std})
    path = tmp_path / "rgb.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (8, 12, 3), dtype=np.uint8)).save(path)
    image = Image.open(path)
    x = (torch.from_numpy(np.array(image)).double().permute(2, 0, 1) / 255 - torch.tensor(mean).view(3, 1, 1)) \
        / torch.tensor(std).view(3, 1, 1)
    heat, cls = _reference_cam(model, x[None], "layer3", None)
    want = np.asarray(overlay(image, heat.astype(np.float32), min_side=224)).astype(int)
    (result,) = save_cams(run, [path], tmp_path / "cam.png")
    got = np.asarray(Image.open(result["cam"])).astype(int)
    assert result["class"] == "abc"[cls] and got.shape == want.shape == (224, 336, 3)
    assert np.abs(got - want).max() <= 2


def test_save_cams_invert_and_min_side_are_those_of_the_picture_written(cam_run, tmp_path):
    """invert=True draws the map of the inverted image over the inverted image: the reference is
    save_cams of that inverted image saved as a file. min_side: 16 px enlarged by 2 to 32."""
    run, _, (image, _) = cam_run
    flipped = tmp_path / "flipped.png"
    ImageOps.invert(Image.open(image)).save(flipped)
    (a,) = save_cams(run, [image], tmp_path / "a.png", invert=True, min_side=32)
    (b,) = save_cams(run, [flipped], tmp_path / "b.png", min_side=32)
    got, want = np.asarray(Image.open(a["cam"])), np.asarray(Image.open(b["cam"]))
    assert got.shape == (32, 32, 3) and (got == want).all() and a["class"] == b["class"]
    (c,) = save_cams(run, [image], tmp_path / "c.png", min_side=0)
    assert Image.open(c["cam"]).size == (16, 16)


def test_save_cams_refuses_destinations_and_arguments_it_cannot_honour(cam_run, tmp_path):
    run, model, images = cam_run
    same = tmp_path / "other" / images[0].name  # another one.png: both maps would be one_cam.png
    same.parent.mkdir()
    same.write_bytes(images[0].read_bytes())
    cases = [
        (lambda: save_cams(run, images, tmp_path / "maps.png"), r"looks like a picture file, but 2 images need one map "
                                                                  r"each: pass a directory \(e.g. .*maps\)"),
        # the destination is checked before any work: before the run is even looked for
        (lambda: save_cams(tmp_path / "no run", images, tmp_path / "maps.png"), r"looks like a picture file"),
        (lambda: save_cams(run, [images[0], same], tmp_path / "maps"),
         r"images with the same name one would share a map"),
        (lambda: save_cams(model, images, tmp_path / "maps"), r"save_cams\(model, \.\.\.\) needs meta= with input_size"),
        (lambda: save_cams(run, images, tmp_path / "maps", on_error="skip"),
         r"on_error must be 'raise' or 'keep', got 'skip'"),
        (lambda: save_cams(model, images, tmp_path / "maps", meta={"classes": ["a", "b"], "input_size": [1, 16, 16],
                                                                  "mean": [0.5], "std": [0.25]}),
         r"meta names 2 classes but the model has 3 outputs"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
    assert not (tmp_path / "maps").exists() and not (tmp_path / "maps.png").exists()
