"""The alternating flip (airbench, Jordan 2024): each image flipped in every other epoch, starting
from a seeded random half; and the default random flip left exactly as it was."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import resnet_lab.cli as cli_module
from resnet_lab.cli import main
from resnet_lab.data import DataConfig, InMemoryLoader
from resnet_lab.data.loaders import epoch_permutation, epoch_seed
from resnet_lab.data.transforms import crop_flip, normalize, sample_crop_flip_params

N = 50  # not a multiple of the batch: the tail batch is kept (drop_last=False), so every image is seen
# The stream id today's loader seeds its crops and random flips with (loaders._AUGMENT_STREAM), written
# out: the reference below must not read the code under test, and a changed id would change batches.
AUGMENT_STREAM = 0x5EED_A06


def _images(n: int = N, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _loader(images: torch.Tensor, **kw) -> InMemoryLoader:
    opts = dict(batch_size=8, mean=(0.0,) * 3, std=(1.0,) * 3, shuffle=True, augment=True, padding=0, seed=0)
    return InMemoryLoader(images, torch.arange(len(images)), **{**opts, **kw})


def _flips_seen(loader: InMemoryLoader, images: torch.Tensor, epoch: int) -> torch.Tensor:
    """Which images epoch ``epoch`` showed mirrored, read off the pixels (padding 0: each batch image
    is the stored one or its mirror, on the 0..1 scale with mean 0 and std 1)."""
    loader.set_epoch(epoch)
    flipped = torch.full((len(images),), -1)
    for x, y in loader:
        raw = images[y].to(torch.float32) / 255
        mirrored = torch.isclose(x, raw.flip(-1)).flatten(1).all(1)
        plain = torch.isclose(x, raw).flatten(1).all(1)
        assert bool((mirrored ^ plain).all()), "each image must be the stored one or its mirror"
        flipped[y] = mirrored.long()
    assert bool((flipped >= 0).all()), "every image is seen once per epoch"
    return flipped.bool()


def test_alternate_flips_a_random_half_then_each_image_the_opposite_of_the_epoch_before():
    images = _images()
    loader = _loader(images, flip_mode="alternate")
    flips = [_flips_seen(loader, images, e) for e in range(4)]
    assert int(flips[0].sum()) == N // 2
    for e in range(3):
        assert bool((flips[e + 1] == ~flips[e]).all()), f"epoch {e + 1} must flip exactly the others"
    # the orders differ between epochs, so the alternation is per image, not per position
    assert not torch.equal(epoch_permutation(N, 0, 0), epoch_permutation(N, 0, 1))


def test_the_flipped_half_is_drawn_apart_from_the_epoch_order():
    # "a seeded random half of the samples": a draw of its own, so the mirrored images are spread
    # over each epoch's order, not its first half. Hypergeometric count over the first 128 of 256
    # positions: 64 expected, sd 4; 44..84 is 5 sd either side
    n = 256
    loader = _loader(_images(n), flip_mode="alternate")
    for epoch in (0, 1):
        flips = loader.augment_params(epoch)[2]  # by position in the epoch's order
        assert 44 <= int(flips[: n // 2].sum()) <= 84, f"epoch {epoch}: {int(flips[: n // 2].sum())} of 128"


def test_random_flip_repeats_some_images_view_in_consecutive_epochs():
    """The same run without --flip alternate: a coin toss per image and epoch, so about half the
    images keep their view from one epoch to the next."""
    images = _images()
    loader = _loader(images)
    first, second = _flips_seen(loader, images, 0), _flips_seen(loader, images, 1)
    assert 0 < int((first == second).sum()) < N


def test_alternate_flips_depend_only_on_the_seed():
    images = _images()
    a = [_flips_seen(_loader(images, flip_mode="alternate", seed=3), images, e) for e in (0, 1)]
    b = [_flips_seen(_loader(images, flip_mode="alternate", seed=3), images, e) for e in (1, 0)][::-1]
    other = _flips_seen(_loader(images, flip_mode="alternate", seed=4), images, 0)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], other)


def test_alternate_keeps_the_crops_of_the_random_flip():
    images = _images()
    order = epoch_permutation(N, 0, 2)
    rand = _loader(images, padding=2).augment_params(2)
    alt = _loader(images, padding=2, flip_mode="alternate").augment_params(2, order)
    assert torch.equal(rand[0], alt[0]) and torch.equal(rand[1], alt[1])


def _reference_batches(images: torch.Tensor, seed: int, epoch: int, padding: int, batch: int):
    """Today's random-flip batches, rebuilt from the sampling functions (as the loader did before
    the flip modes existed)."""
    order = epoch_permutation(len(images), seed, epoch)
    g = torch.Generator().manual_seed(epoch_seed(seed, epoch, AUGMENT_STREAM))
    dy, dx, fl = sample_crop_flip_params(len(images), padding, True, g)
    for s in range(0, len(images), batch):
        sl = slice(s, min(s + batch, len(images)))
        x = crop_flip(images[order[sl]], dy[sl], dx[sl], fl[sl], padding)
        yield normalize(x, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)), order[sl]


@pytest.mark.parametrize("mode", [{}, {"flip_mode": "random"}], ids=["default", "random"])
def test_random_flip_batches_are_bit_identical_to_the_reference(mode):
    images = _images()
    loader = _loader(images, padding=2, seed=5, mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), **mode)
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        got = list(loader)
        want = list(_reference_batches(images, 5, epoch, 2, 8))
        assert len(got) == len(want)
        for (x, y), (rx, ry) in zip(got, want):
            assert torch.equal(x, rx) and torch.equal(y, ry)


def test_resume_mid_epoch_gives_the_same_alternate_batches():
    images = _images()
    whole = _loader(images, flip_mode="alternate", padding=1)
    whole.set_epoch(3)
    expected = [x for x, _ in whole]
    first = _loader(images, flip_mode="alternate", padding=1)
    first.set_epoch(3)
    batches = iter(first)
    head = [next(batches)[0] for _ in range(3)]
    resumed = _loader(images, flip_mode="alternate", padding=1)
    resumed.load_state_dict(first.state_dict())
    got = head + [x for x, _ in resumed]
    assert len(got) == len(expected) and all(torch.equal(a, b) for a, b in zip(got, expected))


def test_alternate_flips_of_two_ranks_together_are_those_of_one_process():
    images = _images(48)
    one = _flips_seen(_loader(images, flip_mode="alternate", batch_size=8), images, 1)
    both = torch.full((48,), -1)
    for rank in (0, 1):
        loader = _loader(images, flip_mode="alternate", batch_size=4, rank=rank, world_size=2)
        loader.set_epoch(1)
        for x, y in loader:
            both[y] = torch.isclose(x, images[y].float().flip(-1) / 255).flatten(1).all(1).long()
    assert torch.equal(both.bool(), one)


@pytest.mark.parametrize("kw, words", [
    ({"augment": False}, "--no-augment"),
    ({"flip": False}, "flip=False"),
    ({"flip_mode": "sometimes"}, "random, alternate"),
])
def test_alternate_without_flips_or_an_unknown_mode_is_refused_in_one_line(kw, words):
    mode = {"flip_mode": "alternate", **kw}
    for make in (lambda: _loader(_images(), **mode), lambda: DataConfig("fake", **mode)):
        with pytest.raises(ValueError, match="flip") as err:
            make()
        assert words in str(err.value) and "\n" not in str(err.value)


def test_alternate_on_a_streamed_folder_is_refused_with_the_way_out(tmp_path):
    with pytest.raises(ValueError, match="in-memory dataset.*--flip random"):
        DataConfig("folder", data_dir=tmp_path, flip_mode="alternate")


def _capture(monkeypatch) -> list:
    """Replace the trainer the CLI calls with one that keeps its data and trains nothing."""
    seen = []

    def fake(model, data, config, *args, **kwargs):
        seen.append(data)
        return SimpleNamespace(interrupted=False, epochs=[])

    monkeypatch.setattr(cli_module, "train", fake)
    monkeypatch.setattr(cli_module, "finetune", fake)
    return seen


def _consecutive_flips(loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Each training image's flip in epochs 0 and 1, from what the loader says it drew."""
    flips = []
    for epoch in (0, 1):
        loader.set_epoch(epoch)
        f = torch.full((loader.num_samples,), -1)
        for _ in loader:
            f[loader.last_indices] = loader.last_params[2].long()
        flips.append(f)
    return flips[0], flips[1]


TINY = ["--dataset", "fake", "--image-size", "8", "--subset", "32", "--batch-size", "8", "--epochs", "1",
        "--no-progress", "--no-plots", "--device", "cpu"]


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_cli_flip_alternate_reaches_the_training_loader(monkeypatch, tmp_path, capsys, command):
    source = tmp_path / "source"
    if command == "finetune":
        assert main(["train", "--model", "resnet8", *TINY, "--out", str(source)]) == 0
    seen = _capture(monkeypatch)
    head = ["--model", "resnet8"] if command == "train" else ["--from", str(source), "--strategy", "all"]
    for flag in ([], ["--flip", "alternate"]):
        assert main([command, *head, *TINY, *flag]) == 0, capsys.readouterr().err
    plain, alternate = (_consecutive_flips(data.train) for data in seen)
    assert bool(((plain[0] >= 0) & (alternate[0] >= 0)).all())
    assert bool((alternate[0] != alternate[1]).all()) and int(alternate[0].sum()) == 16
    assert bool((plain[0] == plain[1]).any()), "without --flip alternate some images keep their view"


def test_cli_flip_alternate_with_no_augment_says_so_in_one_line(capsys):
    code = main(["train", "--model", "resnet8", *TINY, "--flip", "alternate", "--no-augment"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: flip_mode 'alternate'") and err.count("\n") == 1


def test_with_an_odd_count_epoch_0_flips_the_smaller_half_and_epoch_1_the_larger():
    # alternating_flips' contract: exactly n // 2 samples (24 of 49) in even epochs, the other 25 in
    # odd ones; 7 batches of 7, so no tail is dropped and every image is seen
    images = _images(49)
    loader = _loader(images, flip_mode="alternate", batch_size=7)
    flips = [_flips_seen(loader, images, e) for e in range(3)]
    assert [int(f.sum()) for f in flips] == [24, 25, 24]
    assert torch.equal(flips[1], ~flips[0]) and torch.equal(flips[2], flips[0])


def test_augment_params_without_an_order_are_the_flips_an_unshuffled_loader_draws():
    # augment_params(epoch) computes the epoch's order itself when none is given: for a test-order
    # (unshuffled) loader that is the stored order, so it says what the loader's batches showed
    images = _images(48)
    loader = _loader(images, flip_mode="alternate", shuffle=False)
    for epoch in (0, 1):
        shown = _flips_seen(loader, images, epoch)
        assert torch.equal(loader.augment_params(epoch)[2], shown)
