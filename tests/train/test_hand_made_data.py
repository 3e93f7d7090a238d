"""train() on a DataBundle a user put together from their own loaders: a bad batch is named in one
line before the model sees it (torch's "expected target dtype to be Long or Byte", "Target 10 is
out of bounds", "expected scalar type Byte but found Float" or an unpacking error came instead),
nothing of the run is left behind, and labels of any integer dtype train as int64 labels do."""

from __future__ import annotations

import pytest
import torch

from resnet_lab.data import DataBundle, DatasetInfo
from resnet_lab.models import create_model
from resnet_lab.train import TrainConfig, train
from support import bad_batches, hand_batch

CLASSES = [str(i) for i in range(10)]


def _train(batches, out):
    """One epoch of resnet8 on ``batches`` (a list is a loader), tested on a good batch."""
    torch.manual_seed(0)
    model = create_model("resnet8", num_classes=10, in_channels=1)
    info = DatasetInfo("fake", CLASSES, (1, 8, 8), (0.0,), (1.0,))
    data = DataBundle(info, batches, [hand_batch()], 16 * len(batches), 16)
    return model, train(model, data, TrainConfig(epochs=1, lr=0.05, out=out, progress=False, seed=0),
                        log=lambda line: None)


@pytest.mark.parametrize("case", range(len(bad_batches("train", "a model with 10 outputs"))))
def test_a_hand_made_batch_is_named_before_the_model_trains_and_leaves_no_run(case, tmp_path):
    batch, error, message = bad_batches("train", "a model with 10 outputs")[case]
    with pytest.raises(error, match=message):
        _train([batch], tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_later_batch_of_float_labels_is_named_too(tmp_path):
    x, y = hand_batch()
    with pytest.raises(TypeError, match=r"train needs integer class indices as labels, got torch.float32"):
        _train([(x, y), (x, y.float())], tmp_path / "run")


@pytest.mark.parametrize("dtype", [torch.int32, torch.uint8])
def test_labels_of_any_integer_dtype_train_as_int64_labels_do(dtype):
    """int32 labels (torch.from_numpy of numpy's on some systems) failed in cross_entropy."""
    x, y = hand_batch()
    reference, _ = _train([(x, y)], None)
    got, _ = _train([(x, y.to(dtype))], None)
    for (name, a), (_, b) in zip(reference.state_dict().items(), got.state_dict().items()):
        assert torch.equal(a, b), name
