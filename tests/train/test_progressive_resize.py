"""TrainConfig.progressive_resize / --progressive-resize: epoch e of E trains on images whose side is
``round(start + (full - start) * min(1, e / ceil(0.75 * (E - 1))))`` (linear from the start side to the
full size, reached at the epoch 75% of the way through, so the last epoch is always at full size), resized by antialiased bilinear interpolation; evaluation
always sees the full size. The model's inputs are recorded by a spy."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from resnet_lab.train import TrainConfig, train
from resnet_lab.train.progressive import check_progressive_resize, progressive_side, resize_batch

from tinytrain import TinyLoader, TinyNet, make_bundle

FULL, START, EPOCHS = 16, 4, 5


class SpyNet(TinyNet):
    """TinyNet (global pooling: any image size) that records each input's mode and size."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[bool, tuple[int, int], torch.Tensor]] = []

    def forward(self, x):
        self.seen.append((self.training, tuple(x.shape[-2:]), x.detach().clone()))
        return super().forward(x)


def _bundle(side: int = FULL) -> SimpleNamespace:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, side, side, generator=g), torch.randint(0, 3, (32,), generator=g)
    info = SimpleNamespace(name="tiny16", classes=["a", "b", "c"], input_size=(1, side, side), mean=(0.0,), std=(1.0,))
    return SimpleNamespace(info=info, train=TinyLoader(x, y, 8, True), test=TinyLoader(x[:16], y[:16], 8, False),
                           num_train=32, num_test=16)


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(epochs=EPOCHS, lr=0.05, progress=False, plots=False, device="cpu"), **kw})


def test_each_epoch_trains_at_the_closed_form_side_and_evaluation_is_at_full_size():
    torch.manual_seed(0)
    model, data = SpyNet(), _bundle()
    train(model, data, _cfg(progressive_resize=START))
    steps = len(data.train)
    training = [(size, x) for mode, size, x in model.seen if mode]
    evaluation = [size for mode, size, _ in model.seen if not mode]
    expected = [round(START + (FULL - START) * min(1.0, e / math.ceil(0.75 * (EPOCHS - 1)))) for e in range(EPOCHS)]
    assert expected == [4, 8, 12, 16, 16]
    assert [size for size, _ in training] == [(s, s) for s in expected for _ in range(steps)]
    assert evaluation and set(evaluation) == {(FULL, FULL)}
    # The first batch is the loader's first batch, shrunk by antialiased bilinear interpolation.
    data.train.set_epoch(0)
    x0, _ = next(iter(data.train))
    want = F.interpolate(x0, size=(START, START), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(training[0][1], want)


def test_without_progressive_resize_every_epoch_trains_at_full_size():
    torch.manual_seed(0)
    model = SpyNet()
    train(model, _bundle(), _cfg(epochs=2))
    assert {size for _, size, _ in model.seen} == {(FULL, FULL)}


@pytest.mark.parametrize("hw, want", [((8, 12), (4, 6)), ((12, 8), (6, 4))], ids=["wide", "tall"])
def test_resize_keeps_the_aspect_ratio_with_the_shorter_side_at_the_asked_size(hw, want):
    x = torch.rand(2, 3, *hw)
    assert resize_batch(x, 4).shape == (2, 3, *want)
    assert resize_batch(x, 8) is x
    flat = torch.full((1, 1, 9, 9), 0.25)
    torch.testing.assert_close(resize_batch(flat, 5), torch.full((1, 1, 5, 5), 0.25))  # a constant stays constant


def test_a_start_side_below_4_is_refused_naming_the_flag():
    with pytest.raises(ValueError, match=r"progressive_resize \(--progressive-resize\) must be at least 4 px, got 3"):
        TrainConfig(progressive_resize=3)


@pytest.mark.parametrize("start", [6, 7])
def test_a_start_side_not_below_the_images_side_is_refused_before_training(start):
    model = TinyNet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"--progressive-resize\) must be smaller than the images' side \(6 px\)"):
        train(model, make_bundle(), _cfg(progressive_resize=start))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize("input_size", [(3, 12, 10), (3, 10, 12)], ids=["tall", "wide"])
def test_on_images_not_square_the_start_is_checked_against_the_shorter_side(input_size):
    # 12 x 10 (or 10 x 12) images train at full size with the shorter side 10 (resize_batch's side): a
    # start of 11 would grow them at first, not shrink them, and is refused naming the 10 px
    with pytest.raises(ValueError, match=r"must be smaller than the images' side \(10 px\), got 11"):
        check_progressive_resize(11, input_size)
    check_progressive_resize(9, input_size)


@pytest.mark.parametrize("epochs", [2, 3, 4, 7, 10])
def test_the_last_epoch_always_trains_at_full_size(epochs):
    sides = [progressive_side(START, FULL, e, epochs) for e in range(epochs)]
    assert sides[0] == START and sides[-1] == FULL and sides == sorted(sides)


@pytest.mark.parametrize("epochs, full_from", [(4, 3), (6, 4), (8, 6)])
def test_the_full_size_comes_at_the_epoch_75_percent_through_rounded_up(epochs, full_from):
    # 0.75 * (E - 1) not whole: 2.25 -> epoch 3 of 4, 3.75 -> 4 of 6, 5.25 -> 6 of 8 (rounded up: the full
    # size never comes before 75% of the way); e.g. 4 epochs: 4, 8, 12, 16 px, not 4, 10, 16, 16
    assert full_from == math.ceil(0.75 * (epochs - 1))
    want = [round(START + (FULL - START) * min(1, e / full_from)) for e in range(epochs)]
    assert [progressive_side(START, FULL, e, epochs) for e in range(epochs)] == want


def test_a_side_between_whole_pixels_is_rounded_to_the_nearest_as_recipes_example():
    # docs/RECIPES.md: "For 10 epochs of 32 px images from --progressive-resize 16: 16, 18, 21, 23, 25, 27,
    # 30, 32, 32, 32" (16 + 16 e / 7: 20.57 -> 21, 29.71 -> 30; truncated they would be 20 and 29)
    assert [progressive_side(16, 32, e, 10) for e in range(10)] == [16, 18, 21, 23, 25, 27, 30, 32, 32, 32]


def test_progressive_resize_with_one_epoch_is_refused_naming_the_flag():
    with pytest.raises(ValueError, match="--progressive-resize.*at least 2 epochs"):
        TrainConfig(epochs=1, progressive_resize=8)
