"""The patch-whitening first conv (airbench): checked against a float64 numpy recomputation of the
patch covariance, its eigenvectors and what the whitened patches look like."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from resnet_lab.cli import main
from resnet_lab.data import DataConfig, load_data
from resnet_lab.models import create_model, whiten_first_conv
from resnet_lab.runs import load_model
from resnet_lab.train import TrainConfig, train
from tinytrain import TinyNet, make_bundle


def _correlated_images(n: int = 24, c: int = 3, size: int = 12, seed: int = 0) -> np.ndarray:
    """float64 (N, C, H, W): white noise blurred across neighbouring pixels, mixed across channels
    and shifted off zero, so patch values are strongly correlated and not centred."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, size + 2, size + 2))
    x = x[..., 1:-1, 1:-1] + 0.7 * x[..., :-2, 1:-1] + 0.5 * x[..., 1:-1, 2:]  # (N, C, size, size)
    mix = np.triu(np.full((c, c), 0.6)) + np.eye(c) * 0.4
    return np.einsum("dc,nchw->ndhw", mix, x) + 0.3


def _patches(x: np.ndarray, k: int | tuple[int, int], dilation: int = 1) -> np.ndarray:
    """Every k x k patch (kh x kw for a pair; its pixels ``dilation`` apart) as a row, laid out like
    a conv weight row (channel, row, column)."""
    kh, kw = (k, k) if isinstance(k, int) else k
    span = ((kh - 1) * dilation + 1, (kw - 1) * dilation + 1)
    win = np.lib.stride_tricks.sliding_window_view(x, span, axis=(2, 3))  # (N, C, H', W', span_h, span_w)
    win = win[..., ::dilation, ::dilation]  # (N, C, H', W', kh, kw)
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1] * kh * kw)


def _eigen(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (descending) and eigenvectors (columns) of the centred patch covariance."""
    values, vectors = np.linalg.eigh(np.cov(p, rowvar=False, bias=True))
    return values[::-1], vectors[:, ::-1]


def _whitened_cov(weight: torch.Tensor, p: np.ndarray) -> np.ndarray:
    """Covariance of the conv's outputs over all patches: W cov(P) W^T."""
    w = weight.detach().double().reshape(weight.shape[0], -1).numpy()
    z = (p - p.mean(0)) @ w.T
    return z.T @ z / len(z)


def test_whitened_patches_have_identity_covariance_and_the_second_half_the_opposite_sign():
    x = _correlated_images()
    p = _patches(x, 3)
    conv = nn.Conv2d(3, 54, 3, padding=1, bias=False)  # 2 x 27 patch dimensions: airbench's layout
    done = whiten_first_conv(conv, torch.from_numpy(x).float(), eps=1e-9)
    assert (done.patch_dim, done.whitened, done.module) == (27, 54, "")
    values, _ = _eigen(p)
    assert values[-1] > 1e-3, "the test images must have no flat direction"
    cov = _whitened_cov(conv.weight[:27], p)
    np.testing.assert_allclose(cov, np.eye(27), atol=2e-5)
    assert torch.equal(conv.weight[27:], -conv.weight[:27])


def test_a_dilated_conv_whitens_its_own_dilated_patches():
    """A conv with dilation 2 sees pixels 2 apart: its outputs over those patches are white, which
    the whitening of adjacent-pixel patches would not make them on images correlated nearby."""
    x = _correlated_images(size=14)
    p = _patches(x, 3, dilation=2)
    conv = nn.Conv2d(3, 27, 3, padding=2, dilation=2, bias=False)
    whiten_first_conv(conv, torch.from_numpy(x).float(), eps=1e-9)
    assert _eigen(p)[0][-1] > 1e-3, "the test images must have no flat direction"
    np.testing.assert_allclose(_whitened_cov(conv.weight, p), np.eye(27), atol=2e-5)


def test_a_non_square_kernel_whitens_its_own_rows_by_columns_patches():
    """A 2x3 conv sees patches of 2 rows and 3 columns (C*2*3 = 18 values): their whitening, not that
    of 3x2 patches laid into a 2x3 weight, makes its outputs white."""
    x = _correlated_images(size=10)
    p = _patches(x, (2, 3))
    conv = nn.Conv2d(3, 36, (2, 3), bias=False)
    done = whiten_first_conv(conv, torch.from_numpy(x).float(), eps=1e-9)
    assert (done.patch_dim, done.whitened) == (18, 36)
    assert _eigen(p)[0][-1] > 1e-3, "the test images must have no flat direction"
    np.testing.assert_allclose(_whitened_cov(conv.weight[:18], p), np.eye(18), atol=2e-5)


def test_images_far_from_zero_mean_still_whiten_as_the_float64_centred_covariance_says():
    """The module centres the covariance (hlb-CIFAR10's) and accumulates it in float64 (its
    docstring): images shifted by 50, whose second moments are 2500x their variance, lose the
    variance to rounding in float32 sums of squares minus the squared mean."""
    images = torch.from_numpy(_correlated_images() + 50).float()
    p = _patches(images.double().numpy(), 3)  # the reference sees the same float32 pixel values
    conv = nn.Conv2d(3, 27, 3, bias=False)
    whiten_first_conv(conv, images, eps=1e-9)
    np.testing.assert_allclose(_whitened_cov(conv.weight, p), np.eye(27), atol=2e-5)


def test_patch_statistics_of_more_images_than_one_chunk_are_those_of_all_their_patches():
    """The patches are unfolded and summed a chunk of images at a time (64 MiB of float64): 24
    images of 128 px make two chunks, and the whitening must still be that of every patch."""
    x = _correlated_images(n=24, size=128)
    conv = nn.Conv2d(3, 27, 3, bias=False)
    whiten_first_conv(conv, torch.from_numpy(x).float(), eps=1e-9)
    np.testing.assert_allclose(_whitened_cov(conv.weight, _patches(x, 3)), np.eye(27), atol=2e-5)


def test_one_image_larger_than_a_chunk_is_whitened_on_its_own():
    """A chunk holds 2**23 float64 patch values; one 600x600 RGB image has 27 * 598**2 (9.7M) of them,
    so its chunk is that one image (a chunk of 0 images made torch's split fail)."""
    x = _correlated_images(n=1, size=600)
    conv = nn.Conv2d(3, 27, 3, bias=False)
    assert whiten_first_conv(conv, torch.from_numpy(x).float(), eps=1e-9).images == 1
    np.testing.assert_allclose(_whitened_cov(conv.weight, _patches(x, 3)), np.eye(27), atol=2e-5)


def test_the_bias_of_a_whitened_conv_is_left_as_it_was_and_trains():
    """whiten_first_conv's docstring: only the weight is set and frozen; the bias (a conv with no norm
    after it keeps one, resnet20 with norm='none') keeps its value and its gradient."""
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10, norm="none")
    bias = model.conv1.bias.detach().normal_().clone()  # the zoo starts biases at 0: make it tell
    whiten_first_conv(model, torch.from_numpy(_correlated_images()).float())
    assert torch.equal(model.conv1.bias, bias) and model.conv1.bias.requires_grad
    assert not model.conv1.weight.requires_grad


def test_resnet20_first_conv_keeps_the_16_strongest_directions_scaled_by_their_eigenvalues():
    x = _correlated_images()
    p = _patches(x, 3)
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=10)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    eps = 5e-4
    done = whiten_first_conv(model, torch.from_numpy(x).float(), eps=eps)
    assert (done.module, done.out_channels, done.whitened, done.images) == ("conv1", 16, 16, 24)
    values, vectors = _eigen(p)
    w = model.conv1.weight.detach().double().reshape(16, 27).numpy()
    scale = np.sqrt(values[:16] + eps)
    np.testing.assert_allclose(np.abs((w * vectors[:, :16].T).sum(1)) * scale, 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(w, axis=1) * scale, 1.0, atol=1e-5)
    np.testing.assert_allclose(_whitened_cov(model.conv1.weight, p), np.diag(values[:16] / (values[:16] + eps)),
                               atol=1e-5)
    after = model.state_dict()
    assert [k for k in before if not torch.equal(before[k], after[k])] == ["conv1.weight"]
    assert [n for n, q in model.named_parameters() if not q.requires_grad] == ["conv1.weight"]


@pytest.mark.parametrize("name,module", [("densenet40", "features.conv0"), ("googlenet", "conv1.conv")])
def test_the_conv_whitened_in_other_families_is_the_one_that_sees_the_image(name, module):
    # torchvision's names of the first conv: a DenseNet's and a GoogLeNet's are not ``conv1``
    with torch.device("meta"):
        model = create_model(name, num_classes=10)
    model.to_empty(device="cpu")
    done = whiten_first_conv(model, torch.from_numpy(_correlated_images()).float())
    assert done.module == module and not model.get_submodule(module).weight.requires_grad


def test_more_channels_than_twice_the_patch_dimensions_keep_their_initial_weights():
    x = _correlated_images(c=1)
    conv = nn.Conv2d(1, 24, 3, bias=False)  # patches of 9 values: 18 channels whitened
    init = conv.weight.detach().clone()
    done = whiten_first_conv(conv, torch.from_numpy(x).float(), eps=1e-3)
    # the record model.json keeps, field by field as the Whitening docstring defines it
    assert done.as_dict() == {"module": "", "images": 24, "eps": 1e-3, "patch_dim": 9, "out_channels": 24,
                              "whitened": 18}
    assert torch.equal(conv.weight[9:18], -conv.weight[:9])
    assert torch.equal(conv.weight[18:], init[18:])
    assert not torch.equal(conv.weight[:18], init[:18])


@pytest.mark.parametrize("conv, images, eps, words", [
    (nn.Conv2d(4, 8, 3, groups=2), torch.randn(2, 4, 8, 8), 5e-4, "grouped"),
    (nn.Conv2d(3, 8, 3), torch.randn(2, 1, 8, 8), 5e-4, "(N>=1, 3, H, W)"),
    (nn.Conv2d(3, 8, 3), torch.randn(0, 3, 8, 8), 5e-4, "(N>=1, 3, H, W)"),
    (nn.Conv2d(3, 8, 3), torch.randn(2, 3, 8, 8), 0.0, "eps must be > 0"),
    (nn.Conv2d(3, 8, 3), torch.randn(2, 3, 8, 8), float("nan"), "eps must be > 0"),
    (nn.Conv2d(3, 8, 5), torch.randn(2, 3, 4, 4), 5e-4, "smaller than the 5x5 kernel"),
    (nn.Conv2d(3, 8, 5), torch.randn(2, 3, 4, 9), 5e-4, "images of 4x9 px are smaller than the 5x5 kernel"),
    # a 3x3 kernel at dilation 3 spans 7x7 px: 5x5 images hold no patch of it
    (nn.Conv2d(3, 8, 3, dilation=3), torch.randn(2, 3, 5, 5), 5e-4, "smaller than the 3x3 kernel (it spans 7x7 px"),
    # at dilation (1, 3) it spans 3 rows and 7 columns: 9x5 images are tall enough, not wide enough
    (nn.Conv2d(3, 8, 3, dilation=(1, 3)), torch.randn(2, 3, 9, 5), 5e-4, "(it spans 3x7 px at dilation (1, 3))"),
], ids=["groups", "channels", "no-images", "eps", "nan-eps", "tiny-images", "too-short", "tiny-for-dilation",
        "too-narrow-for-dilation"])
def test_whitening_that_makes_no_sense_is_refused_in_one_line(conv, images, eps, words):
    with pytest.raises(ValueError) as err:
        whiten_first_conv(conv, images, eps=eps)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_a_loader_or_an_array_in_place_of_an_image_tensor_is_a_type_error_naming_it_and_the_way_out():
    """QA: whiten_first_conv(model, data.train) crashed with "'InMemoryLoader' object has no attribute
    'ndim'". The reference: the names of the types given, and the call docs/RECIPES.md shows."""
    data = load_data(DataConfig("fake", subset=32, batch_size=16, image_size=8))
    model = create_model("resnet8", num_classes=10, in_channels=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TypeError) as err:
        whiten_first_conv(model, data.train)
    assert str(err.value) == ("images must be a tensor of training images (N, C, H, W), got InMemoryLoader: pass "
                              "data.train.normalized_images(5000) (its first images, normalized as the model sees "
                              "them, not augmented)")
    with pytest.raises(TypeError) as err:
        whiten_first_conv(model, data.train.normalized_images(16).numpy())
    assert str(err.value) == ("images must be a tensor of training images (N, C, H, W), got ndarray: pass "
                              "torch.as_tensor(images) for a numpy array of (N, C, H, W) images, normalized as the model sees them")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_a_data_bundle_or_a_list_of_images_gets_a_way_out_that_works():
    """The review of 2026-12-06: a DataBundle (load_data's result) and a list of image tensors were told
    torch.as_tensor(images), which fails on both. The reference: the way out named is run as written
    and whitens the conv, as the tensor it builds does."""
    data = load_data(DataConfig("fake", subset=32, batch_size=16, image_size=8))
    images = list(data.train.normalized_images(16))
    batches = [torch.stack(images[:8]), torch.stack(images[8:])]  # as a loader yields them
    for given, way_out, build in ((data, "data.train.normalized_images(5000)", lambda: data.train.normalized_images(16)),
                                  (images, "torch.stack(images)", lambda: torch.stack(images)),
                                  (tuple(images), "torch.stack(images)", lambda: torch.stack(images)),
                                  (batches, "torch.cat(images)", lambda: torch.cat(batches))):
        with pytest.raises((TypeError, ValueError, RuntimeError)):
            torch.as_tensor(given)  # the premise: the earlier way out fails on it
        model = create_model("resnet8", num_classes=10, in_channels=3)
        with pytest.raises(TypeError) as err:
            whiten_first_conv(model, given)
        text = str(err.value)
        assert "\n" not in text and type(given).__name__ in text and f"pass {way_out}" in text
        assert "as_tensor" not in text
        assert whiten_first_conv(model, build()).as_dict()  # the way out works


def test_a_loader_batch_or_a_list_of_loader_batches_gets_the_loader_images_as_its_way_out():
    """Second review of 2026-12-06: one loader batch (x, y) was told torch.stack(images), which fails on
    it, and a list of (x, y) batches torch.as_tensor(images), which fails too. Both now get
    data.train.normalized_images(5000), run here as written."""
    data = load_data(DataConfig("fake", subset=32, batch_size=16, image_size=8))
    for given in (next(iter(data.train)), list(data.train)):
        for attempt in (torch.stack, torch.as_tensor):
            with pytest.raises((TypeError, ValueError, RuntimeError)):
                attempt(given)  # the premise: neither of the earlier ways out works on it
        model = create_model("resnet8", num_classes=10, in_channels=3)
        with pytest.raises(TypeError) as err:
            whiten_first_conv(model, given)
        text = str(err.value)
        assert "\n" not in text and "pass data.train.normalized_images(5000)" in text
        assert "torch.stack" not in text and "as_tensor" not in text
        assert whiten_first_conv(model, data.train.normalized_images(5000)).as_dict()


def test_whitened_conv_stays_as_it_is_through_training_while_the_rest_learns():
    data = make_bundle()
    torch.manual_seed(0)
    model = TinyNet()
    whiten_first_conv(model, data.train.x)
    whitened, fc = model.conv.weight.detach().clone(), model.fc.weight.detach().clone()
    config = TrainConfig(epochs=1, lr=0.1, weight_decay=5e-3, device="cpu", progress=False, plots=False,
                         max_steps_per_epoch=3)
    train(model, data, config, log=lambda line: None)
    assert torch.equal(model.conv.weight, whitened)
    assert not torch.equal(model.fc.weight, fc)


TINY = ["--model", "resnet8", "--dataset", "fake", "--image-size", "8", "--subset", "32", "--batch-size", "8",
        "--epochs", "1", "--no-progress", "--device", "cpu"]


def _training_patches() -> np.ndarray:
    """The fake training images the CLI trains on, normalized in float64 by numpy."""
    data = load_data(DataConfig("fake", image_size=8, subset=32, batch_size=8))
    mean, std = (np.array(s, dtype=np.float64)[None, :, None, None] for s in (data.info.mean, data.info.std))
    x = (data.train.images.numpy().astype(np.float64) / 255 - mean) / std
    return _patches(x, 3)


def test_cli_whiten_trains_with_the_whitened_frozen_first_conv_records_it_and_loads_back(tmp_path, capsys):
    plain, whitened = tmp_path / "plain", tmp_path / "whitened"
    assert main(["train", *TINY, "--out", str(plain)]) == 0
    assert main(["train", *TINY, "--whiten", "--out", str(whitened)]) == 0, capsys.readouterr().err
    meta = json.loads((whitened / "model.json").read_text())
    assert meta["whiten"] == {"module": "conv1", "images": 32, "eps": 5e-4, "patch_dim": 27, "out_channels": 16,
                              "whitened": 16}
    assert meta["params"]["frozen"] == 16 * 27 and "whiten" not in json.loads((plain / "model.json").read_text())
    p = _training_patches()
    values, _ = _eigen(p)
    target = np.diag(values[:16] / (values[:16] + 5e-4))
    model, _ = load_model(whitened)  # after a training epoch: still the whitening, so it did not train
    np.testing.assert_allclose(_whitened_cov(model.conv1.weight, p), target, atol=1e-4)
    base, _ = load_model(plain)
    assert np.abs(_whitened_cov(base.conv1.weight, p) - target).max() > 0.1


def test_cli_whiten_reads_the_first_5000_training_images_normalized(monkeypatch):
    """README: --whiten is the whitening "of up to 5000 training images' patches" (airbench's count):
    the first 5000 in dataset order, normalized as the batches are; a smaller set gives all of its own."""
    from types import SimpleNamespace

    from resnet_lab import cli
    from resnet_lab.data.loaders import InMemoryLoader

    seen = []
    monkeypatch.setattr(cli, "whiten_first_conv", lambda model, x: seen.append(x) or SimpleNamespace(as_dict=dict))
    args = SimpleNamespace(whiten=True, out=None, dataset="fake")
    raw = torch.randint(0, 256, (5003, 1, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    for n in (5003, 7):
        loader = InMemoryLoader(raw[:n], torch.zeros(n, dtype=torch.long), batch_size=8, mean=(0.3,), std=(0.2,))
        cli._whiten(args, None, SimpleNamespace(train=loader))
        expected = (raw[:min(n, 5000)].double() / 255 - 0.3) / 0.2  # float64 reference
        assert seen[-1].shape == (min(n, 5000), 1, 4, 4)
        torch.testing.assert_close(seen[-1].double(), expected, rtol=0, atol=1e-5)


def test_cli_resume_refuses_a_different_whiten_setting(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY, "--whiten", "--out", str(run)]) == 0
    capsys.readouterr()
    two = list(TINY)
    two[two.index("--epochs") + 1] = "2"  # a flag is given once
    code = main(["train", *two, "--resume", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and "trained with --whiten" in err and err.count("\n") == 1


def test_cli_whiten_on_a_streamed_folder_is_refused_in_one_line(tmp_path, capsys):
    for label in ("ants", "bees"):
        (tmp_path / label).mkdir()
        for i in range(4):
            Image.new("RGB", (8, 8), (40 * i, 80, 120)).save(tmp_path / label / f"{i}.png")
    code = main(["train", "--model", "resnet8", "--dataset", "folder", "--data-dir", str(tmp_path), "--image-size", "8",
                 "--batch-size", "4", "--epochs", "1", "--no-progress", "--device", "cpu", "--workers", "0", "--whiten"])
    err = capsys.readouterr().err
    assert code == 2 and "--whiten needs an in-memory dataset" in err and err.count("\n") == 1
