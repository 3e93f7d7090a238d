"""The activation-statistics recorder, against float64 recomputations by hand and torchvision's block."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from support import hooked_modules
from torch import nn
from torchvision.models.resnet import BasicBlock

from resnet_lab.analysis import ActivationStatsRecorder, plot_activation_stats
from resnet_lab.models import create_model
from resnet_lab.models.resnet import CifarResNet
from resnet_lab.train.sam import ascent_at

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _by_hand(y: torch.Tensor, linear_range: float = 1.0) -> tuple[float, float, float]:
    """Mean, population std and share with |y| < linear_range of a float64 tensor, written out."""
    n = y.numel()
    mean = y.sum() / n
    std = torch.sqrt(((y - mean) ** 2).sum() / n)
    return float(mean), float(std), float((y.abs() < linear_range).sum()) / n


class _Flaky(nn.Module):
    """A ReLU net whose forward raises after the ReLU (an out-of-memory error) while ``fail``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc, self.act, self.fail = nn.Linear(4, 4), nn.ReLU(), False

    def forward(self, x):
        x = self.act(self.fc(x))
        if self.fail:
            raise RuntimeError("out of memory (simulated)")
        return x


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
    assert hooked_modules(model) == []


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
    assert recs["no norm"].to_dict()["std"].__len__() == 3
    assert {k: recs["BN"].to_dict()[k] for k in ("steps", "every")} == {"steps": [0, 2], "every": 2}


def test_a_training_pass_that_raises_adds_no_step_so_steps_and_records_stay_paired():
    model = _Flaky().train()
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
    for bad in (5, 1, -2, False):  # 1 and -2: one past either end; False is no index (not 0)
        with pytest.raises(IndexError, match=rf"index {bad!r} is outside the 1 record\(s\) \(steps \[0\]\): "
                                             r"use 0\.\.0, or -1"):
            rec.stats(bad)


@pytest.mark.parametrize(("kw", "match"), [({"where": "inputs"}, r"where must be 'input' or 'output', got 'inputs'"),
                                           ({"linear_range": 0.0}, r"linear_range must be > 0, got 0\.0"),
                                           ({"every": True}, r"every must be a whole number of steps >= 1, got True")],
                         ids=["where", "linear_range", "every"])
def test_bad_arguments_are_refused_naming_the_value(kw, match):
    with pytest.raises(ValueError, match=match):
        ActivationStatsRecorder(nn.ReLU(), **kw)


def test_matrix_rows_are_sites_columns_records_each_statistic_by_hand_and_nan_where_a_site_did_not_run():
    """A site that runs in one step only keeps its row (NaN in the other columns, as documented);
    each statistic's matrix holds that statistic, recomputed in float64 by hand."""

    class Sometimes(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act, self.extra, self.use_extra = nn.Linear(5, 6), nn.ReLU(), nn.Tanh(), False

        def forward(self, x):
            h = self.fc(x)
            return self.act(h) + (self.extra(2 * h) if self.use_extra else 0)

    torch.manual_seed(7)
    model = Sometimes()
    xs = [torch.randn(8, 5), torch.randn(8, 5) * 3 + 1]
    with ActivationStatsRecorder(model, linear_range=0.5) as rec:
        for use_extra, x in zip((True, False), xs):
            model.use_extra = use_extra
            model(x)
    assert rec.layers == ["act", "extra"] and rec.steps == [0, 1]
    pre = [_linear_out_float64(model.fc, x) for x in xs]
    want = {"act": [_by_hand(pre[0], 0.5), _by_hand(pre[1], 0.5)], "extra": [_by_hand(2 * pre[0], 0.5), None]}
    for k, stat in enumerate(("mean", "std", "within")):
        got = rec.matrix(stat)
        assert got.shape == (2, 2) and math.isnan(got[1, 1])
        for i, site in enumerate(rec.layers):
            for j, by_hand in enumerate(want[site]):
                if by_hand is not None:
                    assert float(got[i, j]) == pytest.approx(by_hand[k], abs=1e-6), (stat, site, j)
    assert [r.name for r in rec.stats(1)] == ["act"]  # the tanh did not run at step 1


def test_a_float64_model_gets_float64_statistics():
    """Statistics are computed in float64: a spread of 1e-9 around 1 (lost in float32, where every
    value rounds to 1.0) comes out as the float64 recomputation gives it."""
    torch.manual_seed(8)
    x = 1 + 1e-9 * torch.randn(64, 5, dtype=torch.float64)
    model = nn.Sequential(nn.Identity(), nn.ReLU())
    with ActivationStatsRecorder(model) as rec:
        model(x)
    (got,) = rec.stats()
    mean, std, _ = _by_hand(x)
    assert got.std == pytest.approx(std, rel=1e-6) and got.std > 0
    assert got.mean == pytest.approx(mean, abs=1e-12)


def test_a_nan_statistic_makes_the_drift_nan_instead_of_being_sorted_away():
    """_median: NaN when any layer's value is NaN (a diverged step), per drift's contract."""
    rec = ActivationStatsRecorder(nn.ReLU())
    rec.layers, rec.steps = ["a", "b", "c", "d", "e"], [0]
    rec.records = [{"a": (math.nan, math.nan, math.nan), "b": (0.1, 1.0, 0.9), "c": (0.2, 1.0, 0.8),
                    "d": (0.3, 2.0, 0.7), "e": (0.4, 3.0, 0.6)}]
    assert all(math.isnan(v) for v in rec.drift().values())


def test_attaching_twice_hooks_once_and_an_empty_recorder_still_serializes():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    rec = ActivationStatsRecorder(model)
    assert rec.to_dict() == {"layers": [], "steps": [], "every": 1, "where": "input", "linear_range": 1.0}
    rec.attach()
    with rec:  # __enter__ attaches again: the hooks must not double (two steps, a "1#2" site)
        model(torch.randn(2, 3))
    assert (rec.layers, rec.steps) == (["1"], [0])
    assert hooked_modules(model) == []


def test_an_evaluation_pass_after_a_training_pass_that_raised_is_not_recorded():
    """The raising pass left the recorder mid-step; the evaluation pass after it is no training step."""
    model = _Flaky().train()
    with ActivationStatsRecorder(model) as rec:
        model.fail = True
        with pytest.raises(RuntimeError, match="simulated"):
            model(torch.randn(3, 4))
        model.fail = False
        model.eval()
        model(torch.randn(3, 4))
    assert rec.records == [] and rec.steps == []


def test_an_activation_called_with_its_input_as_a_keyword_is_recorded():
    """act(input=h) reached the pre-hook with no positional argument: an IndexError inside the
    recorder's hook broke the user's forward pass. Reference: the float64 linear output by hand."""

    class Keyword(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.act = nn.Linear(3, 5), nn.ReLU()

        def forward(self, x):
            return self.act(input=self.fc(x))

    torch.manual_seed(9)
    model, x = Keyword(), torch.randn(6, 3)
    with ActivationStatsRecorder(model) as rec:
        model(x)
    (got,) = rec.stats()
    assert got.name == "act"
    assert (got.mean, got.std, got.within) == pytest.approx(_by_hand(_linear_out_float64(model.fc, x)), abs=1e-6)


def test_within_counts_only_values_strictly_inside_the_linear_range():
    """The docstring's |x| < linear_range: values on the edge (|x| = 1) are outside. Hand count: of
    -1, -0.5, 0, 0.5, 1, 2 three are inside; the float64 recomputation agrees."""
    x = torch.tensor([[-1.0, -0.5, 0.0, 0.5, 1.0, 2.0]], dtype=torch.float64)
    model = nn.Sequential(nn.Identity(), nn.Sigmoid())
    with ActivationStatsRecorder(model, linear_range=1.0) as rec:
        model(x)
    (got,) = rec.stats()
    assert got.within == 0.5 == _by_hand(x)[2]


def test_a_site_of_constant_input_has_std_0_and_an_infinite_log_std_drift():
    """A dead site (every value equal: std 0) is infinitely far from std 1: |ln 0| = inf, per
    drift's contract, not a math domain error. Reference: the float64 recomputation by hand."""
    model, x = nn.Sequential(nn.ReLU()), torch.zeros(4, 3)
    with ActivationStatsRecorder(model) as rec:
        model(x)
    (got,) = rec.stats()
    assert (got.mean, got.std, got.within) == _by_hand(x.double()) == (0.0, 0.0, 1.0)
    assert rec.drift() == {"mean": 0.0, "log_std": math.inf, "within": 1.0}


def test_a_recorder_closed_and_entered_again_records_again_and_takes_its_hooks_off_again():
    """close() then attach() (two `with` blocks): the second block must hook the model again; the
    steps go on counting from the first block's."""
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    rec = ActivationStatsRecorder(model)
    for _ in range(2):
        with rec:
            model(torch.randn(2, 3))
        assert hooked_modules(model) == []
    assert rec.steps == [0, 1] and len(rec.records) == 2


def test_sams_probe_pass_at_the_perturbed_weights_is_no_step():
    """A SAM step runs the model twice; the probe (inside ascent_at) is not a training step of its
    own. Reference: the float64 linear output of the second step's batch at the restored weights."""
    torch.manual_seed(10)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
    x0, probe, x1 = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    with ActivationStatsRecorder(model) as rec:
        model(x0).sum().backward()
        with ascent_at(model, 0.5):
            model(probe).sum().backward()
        model(x1)
    assert rec.steps == [0, 1] and len(rec.records) == 2
    got = rec.stats(1)[0]
    assert (got.mean, got.std, got.within) == pytest.approx(_by_hand(_linear_out_float64(model[0], x1)), abs=1e-6)


def test_an_empty_call_and_an_output_that_is_no_tensor_are_skipped_not_recorded_as_nan():
    """A call on an empty slice has no elements to average (its NaN would make every drift NaN);
    an LSTM's output is a tuple, not one tensor: neither is a site, and the user's forward runs."""

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.lstm, self.act = nn.Linear(3, 4), nn.LSTM(4, 4, batch_first=True), nn.ReLU()

        def forward(self, x):  # (B, 3)
            h = self.fc(x)
            self.act(h[:0])
            out, _ = self.lstm(h.unsqueeze(1))
            return self.act(h) + out.squeeze(1)

    torch.manual_seed(11)
    model, x = Mixed(), torch.randn(6, 3)
    inputs, outputs = ActivationStatsRecorder(model), ActivationStatsRecorder(
        model, where="output", layer_types=(nn.Linear, nn.LSTM))
    with inputs, outputs:
        model(x)
    want = _by_hand(_linear_out_float64(model.fc, x))
    for rec, site in ((inputs, "act"), (outputs, "fc")):
        (got,) = rec.stats()
        assert rec.layers == [site] and (got.mean, got.std, got.within) == pytest.approx(want, abs=1e-6)


def test_layer_types_match_subclasses_such_as_the_group_norm_layer_of_norm_group():
    """norm="group" builds a private GroupNorm subclass: layer_types=(nn.GroupNorm,) must reach every
    one of them (isinstance, as torch's own module checks). Reference: torch's named_modules."""
    model = create_model("resnet8", num_classes=3, norm="group")
    norms = [n for n, m in model.named_modules() if isinstance(m, nn.GroupNorm)]
    assert norms and all(type(m) is not nn.GroupNorm for m in model.modules() if isinstance(m, nn.GroupNorm))
    with ActivationStatsRecorder(model, where="output", layer_types=(nn.GroupNorm,)) as rec:
        model(torch.randn(2, 3, 8, 8))
    assert sorted(rec.layers) == sorted(norms)


def test_drift_history_is_each_records_drift_and_an_even_count_takes_the_middle_pair_mean():
    """Hand-set records: site "a" runs from the second step on, called before "b". The median of
    two values is their mean (0.2, not the lower 0.1); stats() lists sites in the matrix's row order."""
    rec = ActivationStatsRecorder(nn.ReLU())
    rec.layers, rec.steps = ["b", "a"], [0, 5]
    rec.records = [{"b": (-0.4, math.e, 0.6)},
                   {"a": (0.1, math.exp(-1), 0.9), "b": (-0.3, 1.0, 0.5)}]
    want = {"mean": [0.4, 0.2], "log_std": [1.0, 0.5], "within": [0.6, 0.7]}
    assert {k: pytest.approx(v) for k, v in want.items()} == rec.drift_history()
    assert [r.name for r in rec.stats(1)] == ["b", "a"] == rec.layers


def test_a_bad_statistic_or_no_recorder_to_plot_is_refused_naming_the_value(tmp_path):
    rec = ActivationStatsRecorder(nn.ReLU())
    with pytest.raises(ValueError, match=r"stat must be one of mean, std, within, got 'median'"):
        rec.matrix("median")
    with pytest.raises(ValueError, match="plot_activation_stats needs at least one recorder"):
        plot_activation_stats({}, tmp_path / "stats.png")
    assert not (tmp_path / "stats.png").exists()
