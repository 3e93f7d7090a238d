"""Data loaded with given mean/std (finetune's source-weights normalization, DataConfig's mean/std)
keeps every loader option: random erasing, augmentation, flip, subset, channels_last, the epoch position. The reference for
the pixels is a per-sample pad-and-slice crop of the raw uint8 images normalized in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from resnet_lab.data import load_data

MEAN, STD = (0.25, 0.5, 0.75), (0.5, 0.25, 0.4)


def renormalized_bundle(random_erasing: float):
    b = load_data("fake", batch_size=16, subset=64, image_size=8, in_channels=3, seed=5, flip=False,
                  channels_last=True, random_erasing=random_erasing, mean=MEAN, std=STD)
    return b


def reference_batch(loader) -> torch.Tensor:
    """The last batch recomputed from the raw images: zero-pad, slice the crop at (dy, dx),
    normalize with MEAN/STD in float64."""
    dy, dx, flips = (p.tolist() for p in loader.last_params)
    assert not any(flips)  # flip=False survived
    p = loader.padding
    raw = loader.images[loader.last_indices].double()  # (B, C, H, W) 0..255
    h, w = raw.shape[-2:]
    padded = F.pad(raw, (p, p, p, p))
    crops = torch.stack([padded[i, :, y : y + h, x : x + w] for i, (y, x) in enumerate(zip(dy, dx))])
    mean, std = torch.tensor(MEAN, dtype=torch.float64), torch.tensor(STD, dtype=torch.float64)
    return (crops / 255 - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)


def test_the_source_normalization_keeps_random_erasing_and_the_other_loader_options():
    b = renormalized_bundle(0.9)
    t = b.train
    assert t.random_erasing == 0.9 and t.augment and not t.flip and t.channels_last
    assert t.num_samples == b.num_train == 64 and t.batch_size == 16 and t.padding == 1 and t.seed == 5
    assert t.mean == MEAN and t.std == STD and b.info.mean == MEAN and b.info.std == STD
    assert not b.test.augment and b.test.mean == MEAN


def test_renormalized_training_batches_are_still_erased_against_the_same_run_without_erasing():
    erased, plain = renormalized_bundle(0.9), renormalized_bundle(0.0)
    xa, ya = next(iter(erased.train))
    xb, yb = next(iter(plain.train))
    assert xa.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(ya, yb) and torch.equal(erased.train.last_indices, plain.train.last_indices)
    # Without erasing: exactly the source-normalized crops (the new mean/std are in effect).
    torch.testing.assert_close(xb.double(), reference_batch(plain.train), atol=1e-5, rtol=0)
    # With erasing: the same crops (erasing has its own random stream), except whole rectangles
    # set to 0, the mean after normalization. Before the fix the rebuilt loader dropped erasing
    # and the two batches were equal.
    n_erased = 0
    for i in range(len(xa)):
        diff = (xa[i] != xb[i]).any(0)  # (H, W)
        if not diff.any():
            continue
        n_erased += 1
        rows, cols = diff.any(1).nonzero().flatten(), diff.any(0).nonzero().flatten()
        box = xa[i, :, int(rows.min()) : int(rows.max()) + 1, int(cols.min()) : int(cols.max()) + 1]
        assert torch.equal(box, torch.zeros_like(box))  # one solid rectangle of the erase value
    assert n_erased >= len(xa) // 2  # p = 0.9 on 16 images


def test_folder_loader_keeps_its_random_erasing_step_with_the_source_normalization(tmp_path):
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    b = load_data("folder", data_dir=tmp_path, batch_size=2, num_workers=0, val_fraction=0.34, random_erasing=0.5,
                  mean=MEAN, std=STD)
    steps = {type(s).__name__: s for s in b.train.dataset.transform.transforms}
    assert steps["RandomErasing"].p == 0.5
    assert list(steps["Normalize"].mean) == pytest.approx(MEAN) and list(steps["Normalize"].std) == pytest.approx(STD)
    test_norm = [s for s in b.test.dataset.transform.transforms if type(s).__name__ == "Normalize"]
    assert list(test_norm[0].mean) == pytest.approx(MEAN)
