"""DataConfig: one set of options for load_data, checked when made; mean/std given by the caller (a
pretrained model's) normalize the batches and leave every other loader option as it was.
References: the raw uint8 images normalized by hand in float64, the batches' own shapes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from resnet_lab.data import DataConfig, load_data

MEAN, STD = (0.25, 0.5, 0.75), (0.5, 0.25, 0.4)


def test_an_unknown_keyword_is_a_type_error_that_lists_every_field():
    with pytest.raises(TypeError) as e:
        load_data("fake", batchsize=16)
    message = str(e.value)
    assert "batchsize" in message and "did you mean batch_size" in message
    assert all(f.name in message for f in dataclasses.fields(DataConfig))


def test_a_config_and_a_name_with_keywords_load_the_same_batches():
    kw = dict(batch_size=16, subset=64, image_size=8, seed=3, random_erasing=0.5)
    a, b = load_data(DataConfig("fake", **kw)), load_data("fake", **kw)
    c = load_data(DataConfig("fake", batch_size=99), **kw)  # keywords replace the config's fields
    for other in (b, c):
        assert other.info == a.info and other.train.batch_size == 16
        a.train.set_epoch(0)
        for (xa, ya), (xo, yo) in zip(a.train, other.train, strict=True):
            assert torch.equal(xa, xo) and torch.equal(ya, yo)


def test_bad_values_are_refused_when_the_config_is_made_and_when_a_field_is_replaced():
    with pytest.raises(ValueError, match=r"subset \(--subset\) must be a positive number"):
        DataConfig("fake", subset=0)
    config = DataConfig("fake")
    with pytest.raises(ValueError, match=r"batch_size \(--batch-size\) must be at least 1, got 0"):
        dataclasses.replace(config, batch_size=0)
    with pytest.raises(ValueError, match="val_fraction \\(--val-fraction\\) must be between 0 and 1"):
        DataConfig("folder", data_dir="x", val_fraction=1.0)
    with pytest.raises(ValueError, match="unknown dataset 'fashon-mnist'.*Did you mean fashion-mnist"):
        DataConfig("fashon-mnist")
    assert DataConfig("CIFAR_10").name == "cifar10"


@pytest.mark.parametrize("kw, match", [
    (dict(mean=(0.5,), std=(0.5,)), r"mean \[0.5\] needs 3 finite values, one per channel of the 3-channel fake"),
    (dict(mean=MEAN, std=STD, in_channels=1), r"mean \[0.25, 0.5, 0.75\] needs 1 finite values"),
    (dict(mean=MEAN), "give mean and std together"),
    (dict(mean=MEAN, std=(0.5, 0.0, 0.5)), r"std must be > 0 in every channel"),
])
def test_mean_and_std_must_fit_the_channels(kw, match):
    with pytest.raises(ValueError, match=match):
        DataConfig("fake", **kw)


@pytest.mark.parametrize("kw", [{}, {"in_channels": 1}, {"in_channels": 3}])
def test_channels_is_the_channel_count_of_the_batches(kw):
    config = DataConfig("fake", batch_size=8, image_size=8, **kw)
    x, _ = next(iter(load_data(config).train))
    assert config.channels == x.shape[1]


@pytest.mark.parametrize("side, want", [(4, 1), (8, 1), (20, 2), (28, 4)])
def test_the_default_crop_padding_is_an_eighth_of_the_side_and_at_least_one_pixel(side, want):
    """docs/DATA.md: None is side / 8 (He et al.'s 4 px on 32 px), rounded, and at least 1 px so that a
    small image is still shifted (side 4: 0.5 px would be no crop at all); 20 / 8 = 2.5 rounds to 2."""
    assert load_data("fake", batch_size=8, subset=16, image_size=side).train.padding == want


@pytest.mark.parametrize("given", [0, 3])
def test_a_given_crop_padding_replaces_the_default(given):
    """docs/DATA.md: crop_padding is the pad-crop shift in px (the default at side 8 is 1), and 0 the
    flip alone: with the flip off too, the training batches are the images unaugmented."""
    kw = dict(batch_size=8, subset=16, image_size=8, seed=1)
    b = load_data("fake", crop_padding=given, flip=False, **kw)
    assert b.train.padding == given
    if given == 0:
        pairs = list(zip(b.train, load_data("fake", augment=False, **kw).train, strict=True))
        assert pairs and all(torch.equal(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in pairs)


def source_normalized(random_erasing: float):
    return load_data("fake", batch_size=16, subset=64, image_size=8, in_channels=3, seed=5, flip=False,
                     channels_last=True, random_erasing=random_erasing, mean=MEAN, std=STD)


def test_given_mean_and_std_normalize_the_crops_and_keep_every_other_loader_option():
    erased, plain = source_normalized(0.9), source_normalized(0.0)
    t = erased.train
    assert t.random_erasing == 0.9 and t.augment and not t.flip and t.channels_last and t.padding == 1
    assert t.mean == MEAN and erased.info.mean == MEAN and erased.test.std == STD
    xa, ya = next(iter(erased.train))
    xb, yb = next(iter(plain.train))
    assert torch.equal(ya, yb) and xa.is_contiguous(memory_format=torch.channels_last)
    # The reference: zero-pad the raw images, slice each crop at (dy, dx), normalize in float64.
    dy, dx, _ = (p.tolist() for p in plain.train.last_params)
    raw = plain.train.images[plain.train.last_indices].double()
    padded = F.pad(raw, (1, 1, 1, 1))
    crops = torch.stack([padded[i, :, y : y + 8, x : x + 8] for i, (y, x) in enumerate(zip(dy, dx))])
    ref = (crops / 255 - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(xb.double(), ref, atol=1e-5, rtol=0)
    # Erasing still happens: where the batches differ, the erased one is 0 (the mean).
    differs = (xa != xb).any(1, keepdim=True).expand_as(xa)
    assert differs.any(3).any(2).any(1).sum() >= 8 and torch.all(xa[differs] == 0)


def test_a_folder_with_given_mean_and_std_serves_them(tmp_path):
    values = {"a": 40, "b": 200}
    for cls, v in values.items():
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), v, np.uint8)).save(tmp_path / cls / f"{i}.png")
    b = load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=0, val_fraction=0.34, mean=MEAN, std=STD)
    assert b.info.mean == MEAN and b.info.std == STD
    x, y = next(iter(b.test))
    for img, label in zip(x, y.tolist()):
        v = values[b.info.classes[label]] / 255
        ref = torch.stack([torch.full((8, 8), (v - m) / s, dtype=torch.float64) for m, s in zip(MEAN, STD)])
        torch.testing.assert_close(img.double(), ref, atol=1e-5, rtol=0)


def _batch_sizes(loader) -> list[int]:
    loader.set_epoch(0)
    return [len(y) for _, y in loader]


def test_eval_batch_size_sets_the_test_batches_and_leaves_the_training_ones():
    """eval_batch_size against the same load without it: 128 fake test images."""
    plain = load_data("fake", batch_size=24, subset=64, image_size=8)
    sized = load_data("fake", batch_size=24, subset=64, image_size=8, eval_batch_size=50)
    assert _batch_sizes(plain.test) == [24] * 5 + [8]
    assert _batch_sizes(sized.test) == [50, 50, 28]
    assert _batch_sizes(plain.train) == _batch_sizes(sized.train) == [24, 24]


def test_drop_last_false_keeps_the_incomplete_training_batch():
    """drop_last against the default (True): 64 images in batches of 24."""
    dropped = load_data("fake", batch_size=24, subset=64, image_size=8)
    kept = load_data("fake", batch_size=24, subset=64, image_size=8, drop_last=False)
    assert _batch_sizes(dropped.train) == [24, 24]
    assert _batch_sizes(kept.train) == [24, 24, 16]
    kept.train.set_epoch(0)
    served = sorted(int(i) for _ in kept.train for i in kept.train.last_indices)
    assert served == list(range(64))  # the tail batch holds the 16 images the default drops


@pytest.mark.parametrize("kw, train, test", [
    ({}, [3, 3], [3, 3]),  # drop_last by default: the 8 training images make 2 batches of 3
    ({"drop_last": False}, [3, 3, 2], [3, 3]),
    ({"eval_batch_size": 4}, [3, 3], [4, 2]),  # the test split drops nothing
])
def test_a_folders_batches_follow_batch_size_eval_batch_size_and_drop_last(tmp_path, kw, train, test):
    """The in-memory rules above, for a folder (hand counts): 7 images of each class, round(0.43 * 7) = 3
    of each held out, leave 8 training and 6 test images; batch_size 3."""
    for c, cls in enumerate(("a", "b")):
        (tmp_path / cls).mkdir()
        for i in range(7):
            Image.fromarray(np.full((8, 8, 3), 30 * i + c, np.uint8)).save(tmp_path / cls / f"{i}.png")
    b = load_data("folder", data_dir=tmp_path, batch_size=3, num_workers=1, val_fraction=0.43, augment=False, **kw)
    assert (b.num_train, b.num_test) == (8, 6)
    assert (_batch_sizes(b.train), _batch_sizes(b.test)) == (train, test)
    assert b.train.num_workers == b.test.num_workers == 1  # decoding processes (docs/DATA.md: None is 2)


def test_drop_last_false_is_refused_for_several_ranks_which_would_take_different_step_counts():
    # The reference: batch_slices itself, which gives 99 samples in batches of 8 on 2 ranks 7 and 6
    # training batches: DDP would wait for the missing step until its timeout.
    from resnet_lab.data.loaders import batch_slices

    per_rank = [len(batch_slices(99, 8, drop_last=False, rank=r, world_size=2, drop_single=True)) for r in (0, 1)]
    assert per_rank[0] != per_rank[1]
    with pytest.raises(ValueError, match=r"drop_last=False with world_size=2: .* keep drop_last=True"):
        DataConfig("fake", world_size=2, rank=1, drop_last=False)
    assert DataConfig("fake", world_size=2, rank=1).drop_last  # the default is fine
    assert not DataConfig("fake", drop_last=False).drop_last  # and one process may keep its tail


@pytest.mark.parametrize("make, message", [
    (lambda: DataConfig("fake", augment="no"), "DataConfig.augment must be True or False, got 'no'"),
    (lambda: DataConfig("fake", drop_last="no"), "DataConfig.drop_last must be True or False, got 'no'"),
    (lambda: DataConfig("fake", batch_size="16"), "DataConfig.batch_size must be a number, got '16'"),
    (lambda: DataConfig("fake", batch_size=16.5), "DataConfig.batch_size must be an int, got 16.5"),
    (lambda: DataConfig("fake", augment=1), "DataConfig.augment must be True or False, got 1"),  # not a truthy int
])
def test_a_field_of_the_wrong_kind_is_a_type_error_not_a_truthy_string(make, message):
    """augment="no" used to augment (a non-empty string is true); "16" failed deep in a comparison."""
    with pytest.raises(TypeError) as e:
        make()
    assert str(e.value) == message


@pytest.mark.parametrize("kw, error, match", [
    ({"classes": "01"}, TypeError, r"classes must be a list of class indices \(ints\), e\.g\. \[5, 6, 7\], got '01'"),
    ({"classes": 5}, TypeError, r"classes must be a list of class indices \(ints\), e\.g\. \[5, 6, 7\], got 5"),
    ({"classes": [1.5, 2.7]}, TypeError, r"got 1\.5 in \[1\.5, 2\.7\]"),
    ({"classes": [True, False]}, TypeError, r"got True in \[True, False\]"),
    ({"rank": -1}, ValueError, r"rank must be an int from 0 to world_size - 1 \(0\), got -1"),
    ({"rank": 5, "world_size": 2}, ValueError, r"rank must be an int from 0 to world_size - 1 \(1\), got 5"),
    ({"world_size": 0}, ValueError, r"world_size must be an int >= 1 .*got 0"),
    ({"device": "gpu"}, ValueError, r"unknown device 'gpu': use auto, cpu, cuda, cuda:N or mps"),
    ({"mean": 0.5, "std": 0.2}, TypeError, r"mean must be a list of one value per channel, e\.g\. \[0\.5\]"),
    # a string is iterable and "555" would read as (5.0, 5.0, 5.0) for a 3-channel dataset
    ({"mean": "555", "std": [0.2] * 3}, TypeError, r"mean must be a list of one value per channel, .*, got '555'$"),
])
def test_data_config_refuses_nonsense_when_made_not_after_reading_the_files(kw, error, match):
    """These were accepted (classes "01" became (0, 1), [1.5, 2.7] became [1, 2]) or failed later,
    inside load_data, with torch's or Python's own words."""
    with pytest.raises(error, match=match):
        DataConfig("fake", **kw)


def test_data_config_keeps_good_classes_ranks_and_devices():
    assert DataConfig("fake", classes=np.array([3, 1])).classes == (3, 1)
    assert DataConfig("fake", rank=1, world_size=2).rank == 1
    assert str(DataConfig("fake", device="cuda:1").device) == "cuda:1"  # a name; whether it exists is checked later


def test_crop_padding_0_is_flip_only_and_the_crop_and_flip_options_are_refused_where_they_change_nothing():
    """DataConfig's documented rules: crop_padding 0 is the flip alone (a value, not an error); a
    padding with augment=False, or with a folder (RandomResizedCrop), and flip_mode 'alternate' with a
    folder (streamed with a random flip) are refused naming the flag."""
    assert DataConfig("fake", crop_padding=0).crop_padding == 0
    with pytest.raises(ValueError, match=r"crop_padding \(--crop-padding\) must be 0 \(flip only\) or a positive"):
        DataConfig("fake", crop_padding=-1)
    with pytest.raises(ValueError, match=r"crop_padding 2 \(--crop-padding\) sets the random crop, which --no-augment"):
        DataConfig("fake", crop_padding=2, augment=False)
    with pytest.raises(ValueError, match=r"crop_padding 2 \(--crop-padding\) applies to in-memory datasets"):
        DataConfig("folder", data_dir="x", crop_padding=2)
    with pytest.raises(ValueError, match=r"flip_mode 'alternate' \(--flip alternate\) needs an in-memory dataset"):
        DataConfig("folder", data_dir="x", flip_mode="alternate")
    assert DataConfig("fake", flip_mode="alternate").flip_mode == "alternate"


@pytest.mark.parametrize("field, last_good, first_bad, folder", [
    ("seed", 2 ** 64 - 1, 2 ** 64, False), ("seed", -(2 ** 63), -(2 ** 63) - 1, False),
    ("split_seed", 2 ** 64 - 1, 2 ** 64, True), ("split_seed", -(2 ** 63), -(2 ** 63) - 1, True),
])
def test_seeds_are_taken_over_torchs_whole_range_and_refused_just_past_it(field, last_good, first_bad, folder):
    """The reference: what torch.Generator.manual_seed takes (docs/DATA.md: the seeds seed torch)."""
    where = dict(name="folder", data_dir="x") if folder else dict(name="fake")
    torch.Generator().manual_seed(last_good)
    assert getattr(DataConfig(**where, **{field: last_good}), field) == last_good
    with pytest.raises((RuntimeError, ValueError)):  # torch's own words: "Overflow when unpacking long long"
        torch.Generator().manual_seed(first_bad)
    with pytest.raises(ValueError, match=rf"{field} .*must be an integer from {-(2 ** 63)} to {2 ** 64 - 1}"):
        DataConfig(**where, **{field: first_bad})


@pytest.mark.parametrize("kw, last_good, first_bad, match", [
    # each range as the error words it (docs/DATA.md "Selecting data"): its last good value is taken
    (dict(name="fake"), dict(image_size=8192), dict(image_size=8193), r"image_size \(--image-size\) must be at most 8192"),
    (dict(name="fake"), dict(per_class=1), dict(per_class=0), r"per_class must be a positive number of training images"),
    (dict(name="fake"), dict(in_channels=3), dict(in_channels=2), r"in_channels must be 1 or 3, got 2"),
    (dict(name="folder", data_dir="x"), dict(val_fraction=1e-9), dict(val_fraction=0.0),
     r"val_fraction \(--val-fraction\) must be between 0 and 1 \(exclusive\), got 0.0"),
    (dict(name="fake", world_size=2), dict(rank=1), dict(rank=2), r"rank must be an int from 0 to world_size - 1 \(1\), got 2"),
    (dict(name="fake", std=STD), dict(mean=MEAN), dict(mean=(0.5, float("nan"), 0.5)), r"needs 3 finite values"),
])
def test_each_range_check_takes_its_edge_and_refuses_one_step_past_it(kw, last_good, first_bad, match):
    DataConfig(**kw, **last_good)
    with pytest.raises(ValueError, match=match):
        DataConfig(**kw, **first_bad)


def test_a_dataset_named_twice_is_refused_in_words_that_say_so():
    """load_data("fake", name=...) gives the name twice; the message says so, not Python's own words."""
    with pytest.raises(TypeError, match=r"the dataset is named twice: 'fake' and name='cifar10'"):
        load_data("fake", name="cifar10")
