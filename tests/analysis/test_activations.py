"""The activation-statistics recorder, against float64 recomputations by hand and torchvision's block."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn
from torchvision.models.resnet import BasicBlock

from resnet_lab.analysis import ActivationStatsRecorder, plot_activation_stats
from resnet_lab.models.resnet import CifarResNet

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _by_hand(y: torch.Tensor, linear_range: float = 1.0) -> tuple[float, float, float]:
    """Mean, population std and share with |y| < linear_range of a float64 tensor, written out."""
    n = y.numel()
    mean = y.sum() / n
    std = torch.sqrt(((y - mean) ** 2).sum() / n)
    return float(mean), float(std), float((y.abs() < linear_range).sum()) / n


def _linear_out_float64(lin: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x.double() @ lin.weight.detach().double().T + lin.bias.detach().double()


@pytest.mark.parametrize("inplace", [False, True])
def test_relu_input_stats_equal_a_float64_recomputation_from_the_linear_weights(inplace):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 9), nn.ReLU(inplace=inplace), nn.Linear(9, 3))
    x = torch.randn(32, 6) * 2 + 0.3
    with ActivationStatsRecorder(model, linear_range=0.7) as rec:
        model(x).sum().backward()
    (got,) = rec.stats()
    # An in-place ReLU overwrites its input: the recorder must have read it before (negatives in the mean).
    want = _by_hand(_linear_out_float64(model[0], x), 0.7)
    assert got.name == "1" and rec.layers == ["1"] and rec.steps == [0]
    assert (got.mean, got.std, got.within) == pytest.approx(want, abs=1e-6)
    assert got.mean < float(torch.relu(_linear_out_float64(model[0], x)).mean())


def test_linear_output_stats_equal_a_float64_recomputation_with_where_output():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 4))
    x = torch.randn(16, 5)
    with ActivationStatsRecorder(model, where="output", layer_types=(nn.Linear,)) as rec:
        model(x)
    first, second = rec.stats()
    h = torch.tanh(_linear_out_float64(model[0], x))
    assert [first.name, second.name] == ["0", "2"]
    assert (first.mean, first.std, first.within) == pytest.approx(_by_hand(_linear_out_float64(model[0], x)), abs=1e-6)
    assert (second.mean, second.std) == pytest.approx(_by_hand(_linear_out_float64(model[2], h))[:2], abs=1e-6)


def test_a_relu_called_twice_in_torchvisions_basic_block_is_two_sites_and_bn_output_is_mean_0_std_1():
    torch.manual_seed(2)
    block = BasicBlock(4, 4)
    ref = copy.deepcopy(block)
    x = torch.randn(8, 4, 6, 6)
    with ActivationStatsRecorder(block) as rec:
        block(x)
    first, second = rec.stats()
    assert [first.name, second.name] == ["relu", "relu#2"]
    with torch.no_grad():
        pre1 = ref.bn1(ref.conv1(x))  # training-mode BN: batch statistics, gamma 1, beta 0
        pre2 = ref.bn2(ref.conv2(torch.relu(pre1))) + x  # the second ReLU sees the shortcut sum
    assert (first.mean, first.std) == pytest.approx(_by_hand(pre1.double())[:2], abs=1e-5)
    assert (second.mean, second.std) == pytest.approx(_by_hand(pre2.double())[:2], abs=1e-5)
    # Per-channel normalization with gamma 1, beta 0 pools to mean 0 and std sqrt(var / (var + eps)) ~ 1.
    assert abs(first.mean) < 1e-6 and first.std == pytest.approx(1.0, abs=1e-3)


def test_only_every_kth_training_forward_is_recorded_and_eval_or_no_grad_passes_are_not_steps():
    model = nn.Sequential(nn.Linear(3, 3), nn.Sigmoid())
    x = torch.randn(4, 3)
    with ActivationStatsRecorder(model, every=2) as rec:
        for _ in range(5):
            model(x)
            with torch.no_grad():
                model(x)  # e.g. precise-BN statistics: not a training step
            model.eval()
            model(x)  # evaluation: not a training step
            model.train()
    assert rec.steps == [0, 2, 4] and len(rec.records) == 3
    assert rec.matrix("within").shape == (1, 3)


def test_hooks_are_removed_on_exit_and_nothing_more_is_recorded():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    with ActivationStatsRecorder(model) as rec:
        model(torch.randn(2, 3))
    model(torch.randn(2, 3))
    assert len(rec.records) == 1
    assert not model._forward_pre_hooks and not model._forward_hooks and not model[1]._forward_pre_hooks


def test_every_relu_call_of_a_plain_cifar_net_is_a_site_in_forward_order():
    # plain-8: the stem's ReLU, then two per basic block, one block per stage (He et al. 2015, sec. 4.2).
    model = CifarResNet(8, num_classes=3, in_channels=1, shortcut="none", widths=(2, 4, 4))
    with ActivationStatsRecorder(model) as rec:
        model(torch.randn(4, 1, 8, 8))
    assert rec.layers == ["relu"] + [f"layer{s}.0.relu{c}" for s in (1, 2, 3) for c in ("", "#2")]


def test_drift_is_the_median_over_layers_of_abs_mean_and_abs_log_std():
    rec = ActivationStatsRecorder(nn.ReLU())
    rec.layers = ["a", "b", "c"]
    rec.steps = [0]
    rec.records = [{"a": (0.1, 1.0, 0.9), "b": (-0.5, math.e, 0.5), "c": (2.0, math.exp(-2), 0.2)}]
    assert rec.drift() == pytest.approx({"mean": 0.5, "log_std": 1.0, "within": 0.5})


def test_a_model_without_activation_modules_fails_with_the_way_out():
    model = nn.Linear(3, 2)  # e.g. a net that calls F.relu: no module to hook
    with ActivationStatsRecorder(model) as rec:
        model(torch.randn(2, 3))
    with pytest.raises(ValueError, match="where='output'"):
        rec.drift()
    with pytest.raises(ValueError, match="every must be"):
        ActivationStatsRecorder(model, every=0)


def test_heatmaps_of_two_networks_with_different_depths_are_written(tmp_path):
    recs = {}
    for label, depth in (("BN", 2), ("no norm", 3)):
        model = nn.Sequential(*[m for _ in range(depth) for m in (nn.Linear(4, 4), nn.ReLU())])
        with ActivationStatsRecorder(model, every=2) as recs[label]:
            for _ in range(4):
                model(torch.randn(8, 4))
    path = plot_activation_stats(recs, tmp_path / "stats.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert recs["no norm"].to_dict()["std"].__len__() == 3 and recs["BN"].to_dict()["steps"] == [0, 2]


def test_a_training_pass_that_raises_adds_no_step_so_steps_and_records_stay_paired():
    class Flaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act, self.fail = nn.Linear(4, 4), nn.ReLU(), False

        def forward(self, x):
            x = self.act(self.fc(x))
            if self.fail:
                raise RuntimeError("out of memory (simulated)")
            return x

    model = Flaky().train()
    with ActivationStatsRecorder(model) as rec:
        model(torch.randn(3, 4))
        model.fail = True
        with pytest.raises(RuntimeError, match="simulated"):
            model(torch.randn(3, 4))
        model.fail = False
        model(torch.randn(3, 4))
    # the failed pass was step 1: it has no record, so it has no step either
    assert rec.steps == [0, 2] and len(rec.records) == 2
    assert all(len(v) == len(rec.steps) for v in rec.drift_history().values())


def test_stats_at_a_record_that_does_not_exist_names_the_records_there_are():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    with ActivationStatsRecorder(net) as rec:
        net(torch.randn(2, 3)).sum().backward()
    assert len(rec.stats(0)) == 1 and rec.stats(-1) == rec.stats(0)
    with pytest.raises(IndexError, match=r"index 5 is outside the 1 record\(s\) \(steps \[0\]\): use 0\.\.0, or -1"):
        rec.stats(5)
