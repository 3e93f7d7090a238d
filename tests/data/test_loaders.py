"""InMemoryLoader: epoch order, coverage, normalization, crop/flip and sharding, each checked
against a plain-Python or float64 reference; load_data's serving options (rank, world_size, device,
channels_last) against the same load without them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from resnet_lab.data import (InMemoryLoader, StreamingLoader, batch_slices, crop_flip, epoch_permutation, load_data,
                             normalize, sample_crop_flip_params, select_per_class, select_subset)
from support import write_fmnist

MEAN, STD = (0.3, 0.5, 0.7), (0.2, 0.25, 0.3)


def dataset(n: int = 50, c: int = 3, h: int = 8, w: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 10
    return x, y


def loader(x, y, **kw):
    args = dict(batch_size=8, mean=MEAN[: x.shape[1]], std=STD[: x.shape[1]], shuffle=True, seed=3)
    args.update(kw)
    return InMemoryLoader(x, y, **args)


def epoch_indices(ld) -> list[int]:
    out = []
    for _ in ld:
        out += ld.last_indices.tolist()
    return out


def test_every_sample_exactly_once_per_epoch_without_drop_last():
    x, y = dataset(50)
    ld = loader(x, y, drop_last=False)
    seen = epoch_indices(ld)
    assert sorted(seen) == list(range(50))
    assert seen != list(range(50))  # shuffled
    assert len(ld) == 7  # 6 full batches of 8 + one of 2


def test_drop_last_drops_only_the_tail_and_never_yields_a_single_sample_batch():
    x, y = dataset(49)
    assert [len(b) for b, _ in loader(x, y, drop_last=True)] == [8] * 6
    # 49 = 6*8 + 1: the one-sample tail of a training loader is dropped even without drop_last
    assert [len(b) for b, _ in loader(x, y, drop_last=False)] == [8] * 6
    # a test loader (no shuffle) keeps it: evaluation must see every sample
    assert [len(b) for b, _ in loader(x, y, shuffle=False)] == [8] * 6 + [1]


def test_order_is_a_function_of_seed_and_epoch_so_resume_is_exact():
    x, y = dataset(40)
    a = loader(x, y, augment=True)
    epochs = [epoch_indices(a) for _ in range(3)]  # epoch advances after each full pass
    assert epochs[0] != epochs[1] != epochs[2]
    b = loader(x, y, augment=True)
    b.set_epoch(2)
    assert epoch_indices(b) == epochs[2]
    # mid-epoch resume: a fresh loader restored from state continues with the same batches
    c = loader(x, y, augment=True)
    c.set_epoch(1)
    it = iter(c)
    for _ in range(2):
        next(it)
    state = c.state_dict()
    rest_c = [(xb.clone(), yb.clone()) for xb, yb in it]
    d = loader(x, y, augment=True)
    d.load_state_dict(state)
    rest_d = list(d)
    assert state == {"epoch": 1, "position": 2} and len(rest_d) == len(rest_c) == len(c) - 2
    for (xa, ya), (xb, yb) in zip(rest_c, rest_d):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert loader(x, y, seed=4).__iter__().__next__()[1].tolist() != loader(x, y).__iter__().__next__()[1].tolist()


def normalized_float64(x: torch.Tensor, scale: float = 255.0) -> torch.Tensor:
    """(x / scale - MEAN) / STD per channel, in float64: the reference of both normalizations."""
    view = (1, 3, 1, 1)
    return (x.double() / scale - torch.tensor(MEAN, dtype=torch.float64).view(view)) / torch.tensor(
        STD, dtype=torch.float64
    ).view(view)


def test_normalization_matches_float64_recomputation():
    x, y = dataset(16)
    ld = loader(x, y, shuffle=False, augment=False)
    xb, yb = next(iter(ld))
    assert xb.dtype == torch.float32 and yb.dtype == torch.int64
    torch.testing.assert_close(xb.double(), normalized_float64(x[:8]), rtol=0, atol=1e-5)
    assert torch.equal(yb, y[:8])


def test_normalize_reads_float_pixels_on_the_range_its_scale_names():
    # normalize's docstring: uint8, "or float on the 0..scale range": images already on 0..1 take scale=1
    x = torch.rand(4, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    out = normalize(x, MEAN, STD, scale=1.0)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), normalized_float64(x, scale=1.0), rtol=0, atol=1e-5)


def reference_crop_flip(img: np.ndarray, dy: int, dx: int, flip: bool, pad: int) -> np.ndarray:
    """Per-sample crop in plain Python loops: torchvision RandomCrop(padding) semantics."""
    c, h, w = img.shape
    out = np.zeros_like(img)
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                src_i, src_j = i + dy - pad, j + dx - pad
                if 0 <= src_i < h and 0 <= src_j < w:
                    out[ch, i, j] = img[ch, src_i, src_j]
    return out[:, :, ::-1] if flip else out


def test_crop_flip_equals_per_sample_python_reference():
    x, _ = dataset(12, c=2, h=6, w=7)
    dy = torch.tensor([0, 8, 4, 1, 7, 3, 0, 8, 5, 2, 6, 4])
    dx = torch.tensor([8, 0, 4, 2, 6, 5, 0, 8, 1, 7, 3, 4])
    fl = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 1, 0], dtype=torch.bool)
    out = crop_flip(x, dy, dx, fl, 4).numpy()
    for k in range(12):
        ref = reference_crop_flip(x[k].numpy(), int(dy[k]), int(dx[k]), bool(fl[k]), 4)
        np.testing.assert_array_equal(out[k], ref, err_msg=f"sample {k}")


def test_loader_augmentation_equals_reference_with_the_offsets_it_drew():
    x, y = dataset(24, c=3, h=8, w=8)
    ld = loader(x, y, augment=True, padding=2, shuffle=True)
    for xb, yb in ld:
        dy, dx, fl = ld.last_params
        assert set(dy.tolist()) <= set(range(5)) and set(dx.tolist()) <= set(range(5))
        for k, i in enumerate(ld.last_indices.tolist()):
            ref = reference_crop_flip(x[i].numpy(), int(dy[k]), int(dx[k]), bool(fl[k]), 2)
            ref = (ref / 255 - np.array(MEAN).reshape(3, 1, 1)) / np.array(STD).reshape(3, 1, 1)
            np.testing.assert_allclose(xb[k].numpy(), ref, atol=1e-5)
            assert yb[k] == y[i]


@pytest.mark.parametrize("padding", [1, 2, 4])
def test_crop_offsets_take_every_shift_from_0_to_2p_about_equally_often(padding):
    """RandomCrop(padding=p) shifts by -p..p: offsets 0..2p into the padded image, each with
    probability 1/(2p+1). A hand count over 900*(2p+1) seeded draws of each axis (expected 900
    each, sd about 29): every offset occurs, none outside, none under 750 or over 1050."""
    k = 2 * padding + 1
    n = 900 * k
    dy, dx, _ = sample_crop_flip_params(n, padding, True, torch.Generator().manual_seed(0))
    for axis in (dy, dx):
        counts = {v: 0 for v in range(k)}
        for v in axis.tolist():
            assert v in counts, v
            counts[v] += 1
        assert all(750 <= c <= 1050 for c in counts.values()), counts
    assert not torch.equal(dy, dx)  # two draws, not one used twice


def test_flip_disabled_never_mirrors():
    x, y = dataset(64)
    ld = loader(x, y, augment=True, flip=False)
    for _ in ld:
        assert not ld.last_params[2].any()
    ld = loader(x, y, augment=True, flip=True)
    flips = torch.cat([ld.last_params[2] for _ in ld])
    assert 0.2 < flips.float().mean() < 0.8


def test_two_ranks_cover_the_same_global_batches_as_one_process():
    x, y = dataset(70)
    one = loader(x, y, batch_size=16, augment=True, drop_last=True)
    r0 = loader(x, y, batch_size=8, augment=True, drop_last=True, rank=0, world_size=2)
    r1 = loader(x, y, batch_size=8, augment=True, drop_last=True, rank=1, world_size=2)
    assert len(one) == len(r0) == len(r1) == 4
    for (x1, y1), (xa, ya), (xb, yb) in zip(one, r0, r1):
        assert torch.equal(torch.cat([xa, xb]), x1) and torch.equal(torch.cat([ya, yb]), y1)


def test_channels_last_output_has_channels_last_strides():
    x, y = dataset(8)
    xb, _ = next(iter(loader(x, y, channels_last=True)))
    assert xb.is_contiguous(memory_format=torch.channels_last)


def test_subset_is_stratified_and_per_class_keeps_k_each():
    y = torch.arange(1000) % 10
    idx = select_subset(y, 95, seed=1)
    counts = torch.bincount(y[idx], minlength=10)
    assert len(set(idx.tolist())) == 95 and counts.min() >= 9 and counts.max() <= 10
    assert not torch.equal(idx, select_subset(y, 95, seed=2))
    per = select_per_class(y, 7, seed=0)
    assert torch.bincount(y[per], minlength=10).tolist() == [7] * 10


def test_fake_data_are_deterministic_and_classes_filter_relabels():
    a = load_data("fake", batch_size=32, seed=5, augment=False)
    b = load_data("fake", batch_size=32, seed=5, augment=False)
    assert torch.equal(a.train.images, b.train.images) and a.info.input_size == (3, 32, 32)
    assert (a.num_train, a.num_test) == (512, 128)
    c = load_data("fake", batch_size=32, seed=5, classes=[7, 2], augment=False)
    assert c.info.classes == ["class7", "class2"]
    assert c.info.class_indices == (7, 2) and a.info.class_indices is None  # model.json keeps them (docs/DATA.md)
    orig_y = a.train.labels
    keep = (orig_y == 7) | (orig_y == 2)
    assert torch.equal(c.train.images, a.train.images[keep])
    assert torch.equal(c.train.labels, (orig_y[keep] == 2).long())  # 7 -> 0, 2 -> 1
    d = load_data("fake", batch_size=8, image_size=20, in_channels=1, per_class=3)
    assert d.info.input_size == (1, 20, 20) and d.num_train == 30
    xb, yb = next(iter(d.train))
    assert xb.shape == (8, 1, 20, 20)


class _PidDataset(torch.utils.data.Dataset):
    """Each sample is the id of the process that decoded it."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        import os

        return torch.tensor([float(os.getpid())]), i % 2


def test_streaming_loader_decodes_in_num_workers_processes():
    """num_workers (--workers) against 0: with workers the samples are decoded in other processes."""
    import os

    from resnet_lab.data.loaders import StreamingLoader

    pids = {}
    for workers in (0, 2):
        loader = StreamingLoader(_PidDataset(), batch_size=4, num_workers=workers)
        loader.set_epoch(0)
        pids[workers] = {int(p) for x, _ in loader for p in x.flatten()}
    assert pids[0] == {os.getpid()}
    assert len(pids[2]) == 2 and os.getpid() not in pids[2]


# --- load_data's serving options (DataConfig rank, world_size, device, channels_last), each against
# the same load without it, for the in-memory (fake) and the streamed (folder) path.


def _load(name: str, root, seed: int = 3, **kw):
    """load_data of 64 fake images of 8 px, of 48 random Fashion-MNIST images of 28 px (which, unlike
    fake images, do not depend on ``seed``) or of a folder under ``root`` of two classes of 8
    distinct 8 px PNGs (files written on first use; not augmented, since folder augmentation draws
    from torch's global generator and two loads would crop differently)."""
    if name == "fake":
        return load_data("fake", seed=seed, subset=64, image_size=8, **kw)
    if name == "fashion-mnist":
        folder = root / "fmnist"
        if not folder.is_dir():
            write_fmnist(folder, n=48, seed=1)
        return load_data("fashion-mnist", seed=seed, data_dir=folder, augment=False, **kw)
    from PIL import Image

    for c, cls in enumerate(("a", "b")):
        if not (root / cls).is_dir():
            (root / cls).mkdir(parents=True)
            for i in range(8):
                Image.fromarray(np.full((8, 8, 3), 20 * i + 5 * c, np.uint8)).save(root / cls / f"{i}.png")
    return load_data("folder", seed=seed, data_dir=root, num_workers=0, val_fraction=0.25, augment=False, **kw)


def _epoch(ld) -> list[tuple[torch.Tensor, torch.Tensor]]:
    ld.set_epoch(0)
    return [(x.cpu(), y.cpu()) for x, y in ld]


def test_load_data_rank_and_world_size_serve_each_rank_its_half_of_the_global_batch(tmp_path):
    """rank and world_size against one process with the global batch: the two ranks' batches are the
    two halves of each of its batches, training (augmented) and test, nothing repeated."""
    one = _load("fake", tmp_path, batch_size=16)
    ranks = [_load("fake", tmp_path, batch_size=8, rank=r, world_size=2) for r in (0, 1)]
    for split in ("train", "test"):
        whole = _epoch(getattr(one, split))
        halves = [_epoch(getattr(r, split)) for r in ranks]
        assert len(whole) == len(halves[0]) == len(halves[1]) == {"train": 4, "test": 8}[split]
        for (x1, y1), (xa, ya), (xb, yb) in zip(whole, *halves):
            assert len(ya) == len(yb) == 8 and not torch.equal(xa, xb)
            assert torch.equal(torch.cat([xa, xb]), x1) and torch.equal(torch.cat([ya, yb]), y1)
    # The folder path shards the same way: rank 1 of 2 is the second half of each global batch.
    folder_one = _load("folder", tmp_path, batch_size=4)
    folder_r1 = _load("folder", tmp_path, batch_size=2, rank=1, world_size=2)
    for (x1, y1), (xr, yr) in zip(_epoch(folder_one.train), _epoch(folder_r1.train), strict=True):
        assert torch.equal(xr, x1[2:]) and torch.equal(yr, y1[2:])


def _best_device() -> str:
    """docs/DATA.md's choice for device="auto", asked of torch itself: CUDA, then Apple's MPS, then the CPU."""
    if torch.cuda.is_available():
        return "cuda"
    return "mps" if torch.backends.mps.is_available() else "cpu"


@pytest.mark.parametrize("name", ["fake", "folder"])
@pytest.mark.parametrize("device", [
    "meta",  # a device every machine has: batches arrive there, with shapes but no values
    "auto",  # the best device here (the CPU on a machine without an accelerator, then checked like one)
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
])
def test_load_data_device_serves_every_batch_there(tmp_path, name, device):
    """device against the default (cpu): every batch of both splits arrives on it, same shapes; on a
    real accelerator with the same values."""
    want = _best_device() if device == "auto" else device
    plain, moved = _load(name, tmp_path, batch_size=4), _load(name, tmp_path, batch_size=4, device=device)
    for split in ("train", "test"):
        here, there = getattr(plain, split), getattr(moved, split)
        here.set_epoch(0)
        there.set_epoch(0)
        pairs = list(zip(here, there, strict=True))
        assert pairs
        for (xc, yc), (xd, yd) in pairs:
            assert xc.device.type == yc.device.type == "cpu"
            assert xd.device.type == yd.device.type == want and xd.shape == xc.shape and yd.shape == yc.shape
            if want != "meta":
                torch.testing.assert_close(xd.cpu(), xc, rtol=0, atol=1e-6)
                assert torch.equal(yd.cpu(), yc)


@pytest.mark.parametrize("name", ["fashion-mnist", "folder"])
def test_load_data_seed_orders_the_training_epoch_and_leaves_the_images_and_the_test_split(tmp_path, name):
    """docs/DATA.md: each epoch's order is drawn from (seed, epoch). The same seed serves the same
    batches; another seed the same training images in another order, and the same test batches."""
    a, again, other = (_load(name, tmp_path, seed=s, batch_size=4) for s in (0, 0, 1))
    train = [torch.cat([x for x, _ in _epoch(b.train)]) for b in (a, again, other)]
    assert torch.equal(train[0], train[1]) and not torch.equal(train[0], train[2])
    assert sorted(train[0].flatten(1).tolist()) == sorted(train[2].flatten(1).tolist())
    for (xa, ya), (xo, yo) in zip(_epoch(a.test), _epoch(other.test), strict=True):
        assert torch.equal(xa, xo) and torch.equal(ya, yo)


@pytest.mark.parametrize("name", ["fake", "folder"])
def test_load_data_channels_last_serves_both_splits_in_nhwc_with_the_same_values(tmp_path, name):
    """channels_last against the default: the same numbers, stored NHWC instead of NCHW."""
    nchw, nhwc = _load(name, tmp_path, batch_size=4), _load(name, tmp_path, batch_size=4, channels_last=True)
    for split in ("train", "test"):
        pairs = list(zip(_epoch(getattr(nchw, split)), _epoch(getattr(nhwc, split)), strict=True))
        assert pairs
        for (xa, ya), (xb, yb) in pairs:
            assert xa.is_contiguous() and not xa.is_contiguous(memory_format=torch.channels_last)
            assert xb.is_contiguous(memory_format=torch.channels_last) and not xb.is_contiguous()
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_streamed_augmentation_is_the_same_for_any_worker_count_and_after_a_resume_mid_epoch(tmp_path):
    """Random crops and flips of a folder epoch come from (seed, epoch, position): 0 and 2 workers
    give the same batches, and so does a loader resumed at batch 2 (a resumed --deterministic run
    must see what the uninterrupted one saw). The reference is the first loader's own epoch."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")

    def batches(workers: int, resume_at: int = 0) -> list[torch.Tensor]:
        ld = load_data("folder", seed=5, data_dir=tmp_path, num_workers=workers, val_fraction=0.25, augment=True,
                       image_size=8, batch_size=3).train
        ld.load_state_dict({"epoch": 1, "position": resume_at})
        torch.manual_seed(123)  # the caller's stream: must not decide the crops
        return [x for x, _ in ld]

    whole = batches(0)
    assert len(whole) == 4 and not torch.equal(whole[0], whole[1])
    for got in (batches(2), batches(0, resume_at=2), batches(2, resume_at=2)):
        want = whole[len(whole) - len(got):]
        assert len(got) == len(want) and all(torch.equal(a, b) for a, b in zip(got, want))
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    batches_in_process = batches(0)  # reseeds to 123 before iterating, then decodes here
    assert torch.equal(torch.rand(3), expected)  # decoding in this process left torch's stream as it was
    assert all(torch.equal(a, b) for a, b in zip(batches_in_process, whole))


@pytest.mark.parametrize("n,batch,world", [(99, 8, 2), (50, 4, 3), (23, 4, 4), (7, 8, 2), (3, 8, 4), (5, 4, 4), (9, 2, 5)])
def test_without_drop_last_the_ranks_together_cover_every_position_exactly_once(n, batch, world):
    # The reference: a hand count. Without drop_last no position is dropped, padded or repeated:
    # the ranks' slices, all together, are range(n) with each position once (docs/DISTRIBUTED.md:
    # "each rank reads disjoint positions"; "No sample is used twice in an epoch").
    covered = []
    for r in range(world):
        for s, e in batch_slices(n, batch, drop_last=False, rank=r, world_size=world):
            assert 0 < e - s <= batch
            covered += range(s, e)
    assert sorted(covered) == list(range(n))
    # and a test loader (no shuffle) on those ranks serves those samples, every one once
    x, y = dataset(n)
    served = []
    for r in range(world):
        served += epoch_indices(loader(x, y, batch_size=batch, shuffle=False, rank=r, world_size=world))
    assert sorted(served) == list(range(n))


# --- edges that mutants passed: the seeds' mix, the fallback batch of drop_last, the resume flag,
# the refusals of the loader's own arguments, the streamed per-sample seeds, the flip's coin, the stats.


def test_neighbouring_seeds_and_epochs_share_no_epoch_order():
    # epoch_seed's promise: (seed=0, epoch=1) and (seed=1, epoch=0) do not share an order, nor does
    # any other pair of the first few seeds and epochs (runs of seeds 0, 1, 2 side by side)
    orders = {(s, e): tuple(epoch_permutation(100, s, e).tolist()) for s in range(4) for e in range(4)}
    assert len(set(orders.values())) == len(orders)


@pytest.mark.parametrize("world", [2, 3])
def test_drop_last_without_a_full_global_batch_gives_each_rank_its_own_samples(world):
    # 2 samples per rank for a global batch of 4 * world: the fallback batch of n // world per rank,
    # and the ranks' batches together are every sample once (a hand count), not one slice repeated
    n = 2 * world
    covered = []
    for r in range(world):
        with pytest.warns(UserWarning, match=f"only {n} samples for a global batch of {4 * world}"):
            (sl,) = batch_slices(n, 4, drop_last=True, rank=r, world_size=world)
        covered += range(*sl)
    assert sorted(covered) == list(range(n))


def test_the_drop_last_fallback_is_never_a_single_sample_training_batch():
    # 3 samples on 2 ranks leave 1 per rank: batch norm cannot train on one value per channel, so a
    # training (shuffled) loader has no batch, and a test loader keeps its single sample
    x, y = dataset(3)
    for r in range(2):
        train = loader(x, y, batch_size=4, drop_last=True, rank=r, world_size=2)
        assert [len(b) for b, _ in train] == []
    with pytest.warns(UserWarning, match="only 3 samples"):
        assert batch_slices(3, 4, drop_last=True, rank=1, world_size=2) == [(1, 2)]


def test_set_epoch_after_load_state_dict_starts_at_batch_0_and_is_no_resume():
    x, y = dataset(40)
    ld = loader(x, y)
    ld.load_state_dict({"epoch": 1, "position": 3})
    assert ld.resuming
    ld.set_epoch(2)
    assert not ld.resuming and ld.state_dict() == {"epoch": 2, "position": 0}
    fresh = loader(x, y)
    fresh.set_epoch(2)
    assert epoch_indices(ld) == epoch_indices(fresh)


def test_a_loaded_state_at_position_0_starts_its_epoch_whole_after_a_peek():
    # a checkpoint taken at an epoch's start (position 0) is loaded into a loader that was peeked at
    x, y = dataset(40)
    ld = loader(x, y)
    it = iter(ld)
    next(it), next(it)
    ld.load_state_dict({"epoch": 1, "position": 0})
    fresh = loader(x, y)
    fresh.set_epoch(1)
    assert epoch_indices(ld) == epoch_indices(fresh) and len(fresh) == 5


def test_the_loader_refuses_a_crop_padding_over_half_the_side_and_stats_of_the_wrong_length():
    x, y = dataset(8, h=8, w=10)
    loader(x, y, augment=True, padding=4)  # half of the shorter side: the largest allowed
    with pytest.raises(ValueError, match=r"crop_padding 5 .* between 0 and half the image side \(4 px of 8\)"):
        loader(x, y, augment=True, padding=5)
    with pytest.raises(ValueError, match=r"crop_padding -1 .* between 0 and half"):  # a negative pad would crop inward
        loader(x, y, augment=True, padding=-1)
    with pytest.raises(ValueError, match=r"mean/std need 3 values \(one per channel\), got 2/3"):
        loader(x, y, mean=(0.5, 0.5))
    with pytest.raises(ValueError, match=r"got 3/1"):
        loader(x, y, std=(0.2,))
    ld = loader(x, y)
    assert ld.normalized_images(3).shape == (3, 3, 8, 10)
    with pytest.raises(ValueError, match="limit must be a positive number of images"):
        ld.normalized_images(0)


class _DrawDataset(torch.utils.data.Dataset):
    """Each sample is one draw of torch's generator: what a random transform of it would see."""

    def __len__(self) -> int:
        return 24

    def __getitem__(self, i: int):
        return torch.randint(0, 2**62, (1,)).double(), i % 2


def test_streamed_samples_of_an_epoch_each_draw_their_own_random_numbers():
    # every position of an epoch gets its own seed: no two samples (of one batch or of two) share
    # their random transform, and the next epoch draws anew
    from resnet_lab.data.loaders import StreamingLoader

    ld = StreamingLoader(_DrawDataset(), batch_size=4, shuffle=True, seed=1, num_workers=0)
    epochs = [[int(v) for x, _ in ld for v in x.flatten().tolist()] for _ in range(2)]
    assert len(epochs[0]) == 24 and len(set(epochs[0])) == 24
    assert not set(epochs[0]) & set(epochs[1])


def test_the_random_flip_mirrors_half_of_the_samples():
    # RandomHorizontalFlip's p = 0.5: 20000 draws, sd of the share 0.0035
    _, _, flips = sample_crop_flip_params(20000, 4, True, torch.Generator().manual_seed(0))
    assert abs(flips.double().mean().item() - 0.5) < 0.02


def test_channel_stats_are_the_population_mean_and_std_of_each_channel():
    from resnet_lab.data import channel_stats

    x, _ = dataset(5, c=3, h=4, w=4, seed=7)  # 80 values a channel: std / (n - 1) would differ by 0.002
    v = x.double().div(255).transpose(0, 1).reshape(3, -1)
    mean, std = channel_stats(x)
    np.testing.assert_allclose(mean, v.mean(1).numpy(), rtol=0, atol=5e-5)
    np.testing.assert_allclose(std, v.std(1, unbiased=False).numpy(), rtol=0, atol=5e-5)


def test_subset_after_per_class_takes_its_images_from_the_per_class_selection_stratified():
    # per_class=5 keeps 50 images; subset=20 of those is 2 of each class (20 // 10), all among the 50
    per = load_data("fake", batch_size=8, image_size=8, per_class=5, seed=2)
    both = load_data("fake", batch_size=8, image_size=8, per_class=5, subset=20, seed=2)
    assert (per.num_train, both.num_train) == (50, 20)
    assert torch.bincount(both.train.labels, minlength=10).tolist() == [2] * 10
    pool = {(bytes(img.numpy()), int(y)) for img, y in zip(per.train.images, per.train.labels)}
    assert all((bytes(img.numpy()), int(y)) in pool for img, y in zip(both.train.images, both.train.labels))


@pytest.mark.parametrize("kw, named", [({"batch_size": 0}, "batch_size=0"), ({"rank": 2, "world_size": 2}, "rank=2"),
                                       ({"rank": -1, "world_size": 2}, "rank=-1"), ({"world_size": 0}, "world_size=0")])
def test_batch_slices_refuse_an_empty_batch_and_a_rank_outside_the_world_naming_the_value(kw, named):
    # docstring: batch_size >= 1 and 0 <= rank < world_size; a batch of 0 would divide by zero, rank
    # == world_size would read past every other rank's slice
    with pytest.raises(ValueError, match=rf"need batch_size >= 1 and 0 <= rank < world_size, got .*{named}"):
        batch_slices(10, **{"batch_size": 4, "drop_last": False, **kw})


class _TypedLabels(torch.utils.data.Dataset):
    """Eight samples whose labels are 0-d tensors of one integer type (as a dataset reading them
    from a uint8 or int32 array would return them)."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int):
        return torch.zeros(1, 2, 2), torch.tensor(i, dtype=self.dtype)


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8])
def test_labels_of_any_integer_type_come_out_int64(dtype):
    # the documented output: int64 (B,) labels, whatever integer type the dataset stores; the
    # streaming loader keeps the in-memory one's contract
    x, y = dataset(16)
    _, yb = next(iter(loader(x, y.to(dtype), shuffle=False)))
    _, ys = next(iter(StreamingLoader(_TypedLabels(dtype), batch_size=8, num_workers=0)))
    for labels in (yb, ys):
        assert labels.dtype == torch.int64 and labels.tolist() == list(range(8))


def test_a_state_without_a_position_resumes_at_the_start_of_its_epoch():
    # load_state_dict reads "position" when there is one: a state of just {"epoch": 2} is that epoch whole
    x, y = dataset(40)
    ld, fresh = loader(x, y), loader(x, y)
    next(iter(ld))
    ld.load_state_dict({"epoch": 2})
    fresh.set_epoch(2)
    assert epoch_indices(ld) == epoch_indices(fresh) == epoch_permutation(40, 3, 2).tolist()


class _IndexDataset(torch.utils.data.Dataset):
    """Each sample is its own index: a streamed epoch shows its order."""

    def __len__(self) -> int:
        return 20

    def __getitem__(self, i: int):
        return torch.tensor([i]), i % 2


def test_a_streamed_epoch_is_served_in_that_epochs_order():
    # the module's contract: epoch order is epoch_permutation(n, seed, epoch), for the streaming
    # loader as for the in-memory one: each epoch its own order, the in-memory loader's
    from resnet_lab.data.loaders import StreamingLoader

    streamed = StreamingLoader(_IndexDataset(), batch_size=4, shuffle=True, seed=6, num_workers=0)
    in_memory = loader(*dataset(20), batch_size=4, seed=6)
    orders = [[int(i) for x, _ in streamed for i in x.flatten()] for _ in range(3)]
    assert orders == [epoch_indices(in_memory) for _ in range(3)]
    assert orders == [epoch_permutation(20, 6, e).tolist() for e in range(3)] and orders[0] != orders[1]


def test_the_small_dataset_warning_names_the_users_line_not_ours():
    """A fixed stacklevel named a line of loaders.py for load_data's callers (and a line of sys for
    batch_slices'): a warning should point at the call the user can change."""
    with pytest.warns(UserWarning, match="only 40 samples for a global batch of 64") as through_load_data:
        load_data("fake", subset=40, batch_size=64)
    with pytest.warns(UserWarning, match="only 40 samples for a global batch of 64") as direct:
        batch_slices(40, 64, drop_last=True)
    assert {w.filename for w in [*through_load_data, *direct]} == {__file__}


@pytest.mark.parametrize("drop_last", [True, False])
def test_streamed_ranks_together_serve_the_batches_of_a_dataloader_with_the_global_batch(drop_last):
    """The sharding contract (docs/DISTRIBUTED.md) for the streaming loader, against torch's own
    DataLoader over the same 20 samples with the global batch of 3 x 2 and the same drop_last: the
    ranks' batch i together are its batch i, so with drop_last both ranks take the same number of
    steps (DDP needs that), read disjoint samples and leave out only the tail."""
    ranks = [StreamingLoader(_IndexDataset(), batch_size=3, drop_last=drop_last, num_workers=0, rank=r, world_size=2)
             for r in range(2)]
    served = [[x.flatten() for x, _ in ld] for ld in ranks]
    want = [x.flatten() for x, _ in torch.utils.data.DataLoader(_IndexDataset(), batch_size=6, drop_last=drop_last)]
    assert [len(s) for s in served] == [len(ld) for ld in ranks] == [len(want)] * 2
    assert all(torch.equal(torch.cat([a, b]), w) for a, b, w in zip(*served, want))
