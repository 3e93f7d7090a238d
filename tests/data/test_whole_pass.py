"""Every iter() of a loader is a whole pass: a pass left part-way (a peek at one batch, a break, an
error inside evaluate) must not make the next pass, evaluation's included, start where it stopped.
Only the pass right after load_state_dict starts at its position (the trainer's exact resume).
References: the split's own tensors, and a plain-torch evaluation over all of them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_lab.data import load_data
from resnet_lab.train import evaluate

from support import write_image_folder


def _bundle(kind, tmp_path):
    if kind == "memory":
        return load_data("fake", batch_size=100, subset=200, image_size=8)
    return load_data("folder", data_dir=write_image_folder(tmp_path / "pics"), batch_size=3, num_workers=0, val_fraction=0.5,
                     augment=False, image_size=8)


@pytest.mark.parametrize("kind", ["memory", "streaming"])
@pytest.mark.parametrize("split", ["train", "test"])
def test_a_pass_left_part_way_does_not_shorten_the_next(kind, split, tmp_path):
    ld = getattr(_bundle(kind, tmp_path), split)
    ld.set_epoch(0)
    whole = [y.clone() for _, y in ld]
    assert len(whole) >= 2
    ld.set_epoch(0)
    for _ in ld:
        break
    next(iter(ld))
    iter(ld)  # a new pass starts at iter(): a checkpoint taken before its first batch resumes it whole
    assert ld.state_dict() == {"epoch": 0, "position": 0}
    again = [y for _, y in ld]  # epoch 0 again: no set_epoch was needed after a pass left part-way
    assert len(again) == len(whole) and all(torch.equal(a, b) for a, b in zip(again, whole))


@pytest.mark.parametrize("kind", ["memory", "streaming"])
def test_only_the_pass_right_after_load_state_dict_resumes(kind, tmp_path):
    ld = _bundle(kind, tmp_path).train
    ld.set_epoch(1)
    whole = [y.clone() for _, y in ld]
    ld.load_state_dict({"epoch": 1, "position": 1})
    rest = [y for _, y in ld]
    assert len(rest) == len(whole) - 1 and all(torch.equal(a, b) for a, b in zip(rest, whole[1:]))
    assert ld.state_dict() == {"epoch": 2, "position": 0}
    ld.load_state_dict({"epoch": 1, "position": 1})
    next(iter(ld))  # the resumed pass, left after one batch
    assert ld.state_dict() == {"epoch": 1, "position": 2}  # where it stopped, to resume from explicitly
    full = [y for _, y in ld]  # the next pass is whole again
    assert len(full) == len(whole) and all(torch.equal(a, b) for a, b in zip(full, whole))


class _Linear(nn.Module):
    def __init__(self, fail_at: int | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 8 * 8, 10)
        self.calls, self.fail_at = 0, fail_at

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        return self.fc(x.flatten(1))


def _plain(model, data):
    """Loss, accuracy and n over every test image, straight from the split's tensors."""
    with torch.no_grad():
        logits = model.fc(data.test.normalized_images().flatten(1))
    y = data.test.labels
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).double().mean().item(), y.numel()


def test_evaluate_after_a_peek_or_an_error_covers_the_whole_test_split():
    data = load_data("fake", batch_size=100, subset=200, image_size=8)
    model = _Linear()
    loss, acc, n = _plain(model, data)
    assert n == 128 and len(data.test) == 2
    next(iter(data.test))  # a peek at the first batch
    got = evaluate(model, data.test, num_classes=10)
    assert got["n"] == n and got["acc"] == pytest.approx(acc) and got["loss"] == pytest.approx(loss, rel=1e-5)
    failing = _Linear(fail_at=2)
    with pytest.raises(RuntimeError, match="boom"):
        evaluate(failing, data.test, num_classes=10)  # stops after the first batch
    got = evaluate(failing, data.test, num_classes=10)
    assert got["n"] == n and got["acc"] == pytest.approx(acc) and got["loss"] == pytest.approx(loss, rel=1e-5)
