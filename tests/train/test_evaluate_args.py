"""evaluate(): arguments of the wrong kind are named (a truthy "yes" ran bf16, num_classes=True failed
in torch.zeros, tta_shift=2.5 in a slice, fp16 ran on a CPU), and an ensemble's or TTA's loss stays
finite where each model's is (probabilities averaged in float32 rounded a true class to 0: inf)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from resnet_lab.models import create_model
from resnet_lab.train import evaluate
from support import bad_batches, hand_batch


def _model(seed: int = 0, scale: float = 1.0):
    torch.manual_seed(seed)
    model = create_model("resnet8", num_classes=10, in_channels=1).eval()
    with torch.no_grad():  # an overconfident model: logits thousands apart
        model.fc.weight.mul_(scale)
        model.fc.bias.mul_(scale)
    return model


@pytest.mark.parametrize("kw, error, message", [
    ({"bf16": "yes"}, TypeError, "bf16 must be True or False, got 'yes'"),
    ({"fp16": 1}, TypeError, "fp16 must be True or False, got 1"),
    ({"channels_last": 1}, TypeError, "channels_last must be True or False, got 1"),
    ({"tta": "no"}, TypeError, "tta must be True or False, got 'no'"),
    ({"tta_shift": 2.5}, TypeError, "tta_shift must be an int >= 0 (pixels each view moves; 0 turns it off), got 2.5"),
    ({"tta_shift": True}, TypeError, "tta_shift must be an int >= 0 (pixels each view moves; 0 turns it off), got True"),
])
def test_arguments_of_the_wrong_kind_are_named(kw, error, message):
    model = _model()
    with pytest.raises(error) as e:
        evaluate(model, [hand_batch()], **{"num_classes": 10, **kw})
    assert str(e.value) == message


@pytest.mark.parametrize("bad", [True, 10.0, "3", 0, -1, 10**23])
def test_num_classes_is_refused_as_create_model_and_transfer_model_refuse_it(bad):
    """evaluate had a third check of its own (TypeError, another message): the reference is
    create_model's refusal of the same value; transfer_model's test compares with it too."""
    with pytest.raises(ValueError) as want:
        create_model("resnet8", num_classes=bad)
    with pytest.raises(ValueError) as got:
        evaluate(_model(), [hand_batch()], num_classes=bad)
    assert str(got.value) == str(want.value) and "num_classes" in str(got.value)
    assert "\n" not in str(want.value)  # 10**23 was torch's overflow TypeError, several lines


def test_a_class_count_no_layer_can_hold_names_the_limit():
    with pytest.raises(ValueError) as e:
        create_model("resnet8", num_classes=2**63)  # one past torch's int64 sizes
    assert str(e.value) == f"num_classes must be a positive int (the classifier's outputs) of at most {2**63 - 1}, got {2**63}"


def test_fp16_on_a_cpu_is_refused_as_train_refuses_it():
    with pytest.raises(ValueError, match=r"--fp16 \(fp16=True.*this is on cpu: use --bf16 \(bf16=True\) there, or neither"):
        evaluate(_model(), [hand_batch()], num_classes=10, device="cpu", fp16=True)


def test_good_arguments_still_evaluate():
    x, y = hand_batch()
    ev = evaluate(_model(), [(x, y)], num_classes=np.int64(10), tta_shift=np.int64(1), bf16=True, channels_last=True)
    assert ev["n"] == 16


def test_ensemble_and_tta_loss_stay_finite_for_an_overconfident_model():
    """[m, m] averages a model with itself: its loss is the model's own cross-entropy, recomputed in
    float64 here; the predictions are the argmax of the averaged float32 probabilities, as before."""
    model, (x, y) = _model(scale=5000.0), hand_batch()
    with torch.no_grad():
        logits = model(x)
    reference = F.cross_entropy(logits.double(), y).item()
    assert math.isfinite(reference) and reference > 100  # true classes far below float32's smallest probability
    single, pair = evaluate(model, [(x, y)], num_classes=10), evaluate([model, model], [(x, y)], num_classes=10)
    assert single["loss"] == pytest.approx(reference, rel=1e-5)
    assert pair["loss"] == pytest.approx(reference, rel=1e-5)
    assert pair["acc"] == single["acc"] == (logits.argmax(1) == y).float().mean().item()
    flipped = evaluate(model, [(x, y)], num_classes=10, tta=True)
    assert math.isfinite(flipped["loss"])


def test_ensemble_loss_matches_a_float64_recomputation():
    """Two different overconfident models: -log of the mean of their probabilities of the true class,
    in float64 (log-sum-exp, so nothing underflows); accuracy from the mean float32 probabilities."""
    models, (x, y) = [_model(0, 5000.0), _model(1, 5000.0)], hand_batch()
    with torch.no_grad():
        logits = [m(x) for m in models]
    log_p = torch.stack([F.log_softmax(l.double(), 1) for l in logits])  # (2, N, 10)
    true = log_p[:, torch.arange(len(y)), y]  # (2, N)
    reference = -(torch.logsumexp(true, 0) - math.log(2)).mean().item()
    predicted = torch.stack([l.softmax(1) for l in logits]).mean(0).argmax(1)
    ev = evaluate(models, [(x, y)], num_classes=10)
    assert math.isfinite(reference) and ev["loss"] == pytest.approx(reference, rel=1e-5)
    assert ev["acc"] == (predicted == y).float().mean().item()
    mild = [_model(0), _model(1)]  # ordinary models: the same figure as the probability average it replaced
    with torch.no_grad():
        probs = torch.stack([m(x).double().softmax(1) for m in mild]).mean(0)
    assert evaluate(mild, [(x, y)], num_classes=10)["loss"] == pytest.approx(
        F.nll_loss(probs.log(), y).item(), rel=1e-5)


@pytest.mark.parametrize("case", range(len(bad_batches("evaluate", "num_classes=10"))))
def test_a_hand_made_batch_is_named_before_the_model_runs(case):
    """A user's own loader: torch's "expected target dtype to be Long or Byte", "Target 10 is out of
    bounds", "expected scalar type Double but found Float" or an unpacking error came instead."""
    batch, error, message = bad_batches("evaluate", "num_classes=10")[case]
    with pytest.raises(error, match=message):
        evaluate(_model(), [batch], num_classes=10)


def test_a_later_batch_of_float_labels_is_named_too():
    x, y = hand_batch()
    with pytest.raises(TypeError, match=r"evaluate needs integer class indices as labels, got torch.float32"):
        evaluate(_model(), [(x, y), (x, y.float())], num_classes=10)


def test_labels_of_any_integer_dtype_evaluate_as_int64_labels_do():
    """int32 labels (numpy's default on some systems, torch.from_numpy of them) failed in cross_entropy."""
    x, y = hand_batch()
    reference = evaluate(_model(), [(x, y)], num_classes=10)
    for dtype in (torch.int32, torch.int16, torch.uint8):
        got = evaluate(_model(), [(x, y.to(dtype))], num_classes=10)
        assert got["loss"] == reference["loss"] and torch.equal(got["confusion"], reference["confusion"])
