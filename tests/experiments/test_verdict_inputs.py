"""What the verdicts read: which measured series each check is given, and the measured figures
themselves, recomputed independently (hand-made per-seed results, float64 recomputations).

test_checks.py feeds each ``claim_checks`` its figures directly; these tests cover the step
before it: the experiment picks the right series out of its runs (training error, not test
error, for degradation) and measures what its docstring says (an RMS is an RMS).
"""

from __future__ import annotations

import copy
import types

import pytest
import torch
import torch.nn.functional as F

from resnet_lab.experiments import bn_batch_size, bn_convergence, bn_input_stats, bn_regularization, bn_sigmoid_range
from resnet_lab.experiments import degradation, vanishing_gradients
from resnet_lab.experiments.report import Spread, exceeds
from resnet_lab.experiments.runner import Context, RunResult, SeedResults, cifar_net


def _seeds(label: str, depth: int, train_acc: list[float], test_acc: list[float]) -> SeedResults:
    runs = [RunResult(f"{label} seed {s}", [{"epoch": 1, "train_acc": tr, "test_acc": te, "train_loss": 1.0}],
                      [1.0], 1.0, 10, info={"seed": s, "depth": depth})
            for s, (tr, te) in enumerate(zip(train_acc, test_acc))]
    return SeedResults(label, runs)


def test_degradation_judges_the_training_error_not_the_test_error(tmp_path, monkeypatch):
    """He et al.'s fig. 6 claim is about *training* error: plain-14 trains worse than plain-8 here
    (20% vs 10% training error) while its test error is lower (10% vs 20%, as an overfit shallow
    net could give); resnet-14 trains as well as resnet-8 but tests 10 pp worse. Read from the
    training error both checks pass; read from the test error both would fail."""
    monkeypatch.setattr(degradation, "_plots", lambda *a, **k: [])
    results = {"plain-8": _seeds("plain-8", 8, [0.90, 0.90], [0.80, 0.80]),
               "plain-14": _seeds("plain-14", 14, [0.80, 0.80], [0.90, 0.90]),
               "resnet-8": _seeds("resnet-8", 8, [0.90, 0.90], [0.90, 0.90]),
               "resnet-14": _seeds("resnet-14", 14, [0.90, 0.90], [0.80, 0.80])}
    ctx = Context("degradation", "smoke", tmp_path, device="cpu", log=lambda s: None)
    checks, *_ = degradation._compare(ctx, results, 8, 14, "Fashion-MNIST", "", classes=10)
    assert [c.passed for c in checks] == [True, True]


def test_init_gradient_measures_the_stream_rms_and_the_global_gradient_norm_in_float64_too(tmp_path):
    """The stream RMS is sqrt(mean(f^2)) of the features entering the pooling and the gradient norm
    the L2 norm of all parameter gradients together: recomputed here on a float64 copy of the
    same initialization, with torch.linalg norms rather than the module's sums."""
    ctx = Context("degradation", "smoke", tmp_path, device="cpu", log=lambda s: None)
    bundle = ctx.data("fake", batch_size=8, subset=32, image_size=8, in_channels=1)
    factory = cifar_net(8, widths=(2, 4, 8))
    got = degradation.init_gradient(factory, bundle, [0, 1])
    x, y = next(iter(bundle.train))
    for i, seed in enumerate([0, 1]):
        torch.manual_seed(seed)
        model = factory(len(bundle.info.classes), bundle.info.input_size[0]).double().train()
        feats = model.forward_features(x.double())
        grads = torch.autograd.grad(F.cross_entropy(model.forward_head(feats), y), list(model.parameters()))
        rms = torch.linalg.vector_norm(feats.detach()) / feats.numel() ** 0.5
        norm = torch.linalg.vector_norm(torch.cat([g.flatten() for g in grads]))
        assert got["stream_rms"].values[i] == pytest.approx(float(rms), rel=1e-4)
        assert got["grad_norm"].values[i] == pytest.approx(float(norm), rel=1e-4)


def test_degradation_trains_the_residual_nets_from_zeroed_branches_and_the_plain_nets_from_a_normal_init():
    """The protocol (module docstring, docs/EXPERIMENTS.md): every residual block's last BN scale
    starts at 0 (Goyal et al. 2017), so ResNet-56 starts at ResNet-20's scale; a plain net cannot
    (a zeroed layer would cut it). Counted on the built nets: one all-zero BN scale per block."""
    b = degradation.BUDGET["smoke"]
    for spec in degradation._specs(b, 32, {}, "fashion-mnist"):
        model = spec.model(10, 1)
        zeroed = sum(bool((m.weight == 0).all()) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
        blocks = 3 * (spec.info["depth"] - 2) // 6  # 6n+2 layers: n blocks in each of 3 stages
        assert zeroed == (blocks if spec.info["kind"] == "resnet" else 0), spec.label


def test_an_effect_must_clear_the_larger_of_margin_and_spread_not_their_sum():
    """``exceeds``: mean(a) - mean(b) > max(margin, sd(a) + sd(b)). By hand: means 0.31 and 0.21
    (difference 0.10), sds 0.01414 each (sum 0.0283); with margin 0.09 the difference clears both
    (0.10 > 0.09), though not their sum (0.118)."""
    a, b = Spread.of([0.30, 0.32]), Spread.of([0.20, 0.22])
    assert exceeds(a, b, 0.09)
    assert not exceeds(a, b, 0.11)


def test_float64_agreement_keeps_the_largest_loss_difference_over_all_steps_not_the_last(monkeypatch):
    """The float64 check reads the worst step: a loss difference of 1e-3 planted in the scratch
    net's first step (a constant: the gradients, so the weights, stay the same) must come out as
    the largest difference though the second step agrees to rounding."""
    calls = []

    def cross_entropy(logits, y):
        calls.append(1)
        return F.cross_entropy(logits, y) + (1e-3 if len(calls) == 2 else 0.0)  # call 2: scratch BN, step 1

    monkeypatch.setattr(bn_convergence, "F", types.SimpleNamespace(cross_entropy=cross_entropy))
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(4, 1, 8, 8, generator=g), torch.tensor([0, 1, 2, 3])) for _ in range(2)]
    got = bn_convergence.float64_agreement(8, (2, 4, 8), batches, lr=0.1)
    assert got["steps"] == 2 and len(calls) == 4
    assert got["max_loss_diff"] == pytest.approx(1e-3, abs=1e-9)
    assert got["max_state_diff"] < 1e-9 < got["max_change"]


_BN, _NO = bn_regularization.BN, bn_regularization.NO_NORM
_PLAIN, _REG = bn_regularization.PLAIN, bn_regularization.REG


def test_bn_regularization_takes_the_no_norm_gap_by_size_too():
    """Check 1 compares |gap|: a net without BN testing 5 pp *above* its training accuracy has a
    gap of 5 pp, wider than BN's 0 by more than the 1 pp margin, so BN narrows it (passes)."""
    acc = {_BN: {_PLAIN: [0.9] * 3, _REG: [0.9] * 3}, _NO: {_PLAIN: [0.9] * 3, _REG: [0.9] * 3}}
    gap = {_BN: {_PLAIN: [0.0] * 3, _REG: [0.0] * 3}, _NO: {_PLAIN: [-0.05] * 3, _REG: [0.0] * 3}}
    assert bn_regularization.claim_checks(acc, gap)[0].passed


def test_bn_regularization_bn_alone_means_bn_without_dropout_and_l2():
    """Check 3: BN *alone* (86%) against dropout + L2 alone (87%) fails, whatever BN with dropout +
    L2 reaches (95%); read from the BN + dropout + L2 cell it would pass."""
    acc = {_BN: {_PLAIN: [0.86] * 3, _REG: [0.95] * 3}, _NO: {_PLAIN: [0.84] * 3, _REG: [0.87] * 3}}
    gap = {k: {_PLAIN: [0.0] * 3, _REG: [0.0] * 3} for k in (_BN, _NO)}
    assert not bn_regularization.claim_checks(acc, gap)[2].passed


def _recorded(labels_drift: dict[str, dict[str, list[float]]], acc: float = 0.9) -> dict[str, SeedResults]:
    """Two seeds per label, each with the drift history ``{stat: [first record, ..., last record]}``
    (both seeds alike) and a final test accuracy, as ``train_recorded`` leaves them."""
    return {label: SeedResults(label, [RunResult(f"{label} seed {s}", [{"epoch": 1, "test_acc": acc}], [1.0], 1.0, 10,
                                                 info={"seed": s, "drift": drift, "gamma_beta": {}})
                                       for s in (0, 1)])
            for label, drift in labels_drift.items()}


def test_bn_sigmoid_range_judges_the_share_at_the_last_record_not_at_initialization(tmp_path, monkeypatch):
    """The claim is about the end of training: frozen 70% and learnable 30% of inputs in |x| < 1 at
    the last record (68% for both at the first) pass checks 1 and 2."""
    runs = _recorded({label: {"within": [0.68, within]} for label, within in
                      ((bn_sigmoid_range.LEARNABLE, 0.30), (bn_sigmoid_range.FROZEN, 0.70),
                       (bn_sigmoid_range.NO_NORM, 0.5))})
    monkeypatch.setattr(bn_sigmoid_range, "_train_all", lambda ctx, b: (runs, {}))
    monkeypatch.setattr(bn_sigmoid_range, "_plots", lambda *a: [])
    report = bn_sigmoid_range.run(Context("bn_sigmoid_range", "smoke", tmp_path, device="cpu", log=lambda s: None))
    assert report.data["share"][bn_sigmoid_range.FROZEN] == [0.70, 0.70]
    assert [c.passed for c in report.checks[:2]] == [True, True]


def test_bn_input_stats_judges_the_drift_at_the_last_record_not_at_initialization(tmp_path, monkeypatch):
    """Both nets start at (0, 1) here; at the last record the net without BN is 0.5 off in |mean| and
    |ln std|, BN 0.05: the three checks pass only when read at the end."""
    runs = _recorded({"BN": {"mean": [0.0, 0.05], "log_std": [0.0, 0.05]},
                      "no norm": {"mean": [0.0, 0.5], "log_std": [0.0, 0.5]}})
    monkeypatch.setattr(bn_input_stats, "_train_all", lambda ctx, b: (runs, {}))
    monkeypatch.setattr(bn_input_stats, "_plots", lambda *a: [])
    report = bn_input_stats.run(Context("bn_input_stats", "smoke", tmp_path, device="cpu", log=lambda s: None))
    assert report.data["drift_end"]["no norm"] == {"mean": [0.5, 0.5], "log_std": [0.5, 0.5]}
    assert [c.passed for c in report.checks] == [True, True, True]


def _batch_errors(bn_small: float, gn_small: float = 0.10, precise_small: float | None = None) -> dict:
    """Test errors over three seeds (sd 0.001) at batches 2 and 32; every large-batch error 10%."""
    def three(m: float) -> list[float]:
        return [m - 0.001, m, m + 0.001]
    err = {("BN", 2): three(bn_small), ("GN", 2): three(gn_small), ("BN", 32): three(0.10), ("GN", 32): three(0.10)}
    if precise_small is not None:
        err.update({("BN + precise", 2): three(precise_small), ("BN + precise", 32): three(0.10)})
    return err


def test_bn_batch_size_a_rise_of_bn_error_must_clear_the_two_point_margin():
    """BN's error 1.5 pp above the large batch's, with a tiny spread, is under MARGIN (2 pp): no rise;
    3 pp is one."""
    assert not bn_batch_size.claim_checks(_batch_errors(0.115), [2, 32])[0].passed
    assert bn_batch_size.claim_checks(_batch_errors(0.13), [2, 32])[0].passed


def test_bn_batch_size_finding_says_precise_bn_helps_when_it_lowers_the_tiny_batch_error():
    """Precise BN taking the batch-2 error from 20% to 12% (beyond PRECISE_HELPS and the spread)
    helps; the reverse does not."""
    def helps(bn: float, precise: float) -> str:
        e = {k: Spread.of(v) for k, v in _batch_errors(bn, precise_small=precise).items()}
        return next(f for f in bn_batch_size._findings(e, [2, 32]) if f.startswith("precise BN helps"))

    assert "batch 2: yes" in helps(0.20, 0.12)
    assert "batch 2: no" in helps(0.12, 0.20)


def test_bn_input_stats_near_zero_means_a_median_mean_of_at_most_one_fifth():
    """NEAR_MEAN is 0.2: a median |mean| of 0.21 in every seed is not near 0 (check 3 fails), even
    though it is inside ln 1.25 = 0.223, the std's bound."""
    drift = {"BN": {"mean": [0.21] * 3, "log_std": [0.0] * 3}, "no norm": {"mean": [1.0] * 3, "log_std": [1.0] * 3}}
    assert not bn_input_stats.claim_checks(drift)[2].passed


def test_bn_input_stats_compares_the_stds_of_the_two_nets_not_bns_mean():
    """Check 2 reads |ln std|: BN's 0.5 equals the no-norm net's, so BN does not keep the stds closer
    to 1, whatever BN's means (0.0) do."""
    drift = {"BN": {"mean": [0.0] * 3, "log_std": [0.5] * 3}, "no norm": {"mean": [0.5] * 3, "log_std": [0.5] * 3}}
    checks = bn_input_stats.claim_checks(drift)
    assert [checks[0].passed, checks[1].passed] == [True, False]


def test_vanishing_gradients_does_not_call_a_run_without_an_accuracy_collapsed():
    """A seed that recorded no test accuracy did not end at chance accuracy; one at 10% did."""
    runs = SeedResults("ReLU", [RunResult("ReLU seed 0", [], [1.0], 1.0, 10, info={"seed": 0}),
                                RunResult("ReLU seed 1", [{"epoch": 1, "test_acc": 0.10}], [1.0], 1.0, 10,
                                          info={"seed": 1})])
    assert vanishing_gradients.collapsed_seeds(runs, 10) == [1]


def test_bn_batch_size_takes_the_smallest_batch_whatever_order_the_batches_come_in():
    """``batches`` in any order: the tiny batch is the smallest (2), not the first listed (32)."""
    assert "at batch 2" in bn_batch_size.claim_checks(_batch_errors(0.13), [32, 2])[0].question


def _flows(init: float, trained: float) -> dict[str, list]:
    """Two seeds of per-layer gradient norms whose first/last ratio is ``init`` then ``trained``."""
    return {"init": [[("fc1", init), ("out", 1.0)]] * 2, "trained": [[("fc1", trained), ("out", 1.0)]] * 2}


def test_vanishing_gradients_judges_the_ratios_after_training_too_and_says_which_net_diverged(tmp_path, monkeypatch):
    """The sigmoid net's ratio has vanished at initialization (1e-4) but not after training (0.5):
    "every seed below 1e-2, at init and after training" fails. One of ReLU's two seeds diverged: its
    evidence says so."""
    monkeypatch.setattr(vanishing_gradients, "plot_gradient_flow", lambda *a, **k: None)
    monkeypatch.setattr(vanishing_gradients, "plot_lines", lambda *a, **k: None)
    labels = list(vanishing_gradients.CONFIGS)
    flows = {label: _flows(1e-4, 0.5) if label == "sigmoid" else _flows(0.5, 0.5) for label in labels}
    record = [{"epoch": 1, "test_acc": 0.8, "train_loss": 0.5}]
    results = {label: SeedResults(label, [RunResult(f"{label} seed {s}", record, [1.0], 1.0, 10,
                                                    diverged=label == "ReLU" and s == 1, info={"seed": s})
                                          for s in (0, 1)]) for label in labels}
    ctx = Context("vanishing_gradients", "smoke", tmp_path, device="cpu", log=lambda s: None)
    report = vanishing_gradients._report(ctx, vanishing_gradients.BUDGET["smoke"], [0, 1], flows, results,
                                         {label: [1.0] for label in labels}, 10)
    assert [c.passed for c in report.checks] == [False, True, True, True]
    assert [("diverged" in c.evidence) for c in report.checks[1:]] == [label == "ReLU" for label in labels[1:]]


def test_a_smoke_verdict_is_marked_as_no_evidence():
    from resnet_lab.experiments.report import verdict_text

    assert verdict_text("mixed", "smoke") == "mixed (smoke budget: a check of the pipeline, not evidence)"


def test_bn_input_stats_peak_is_the_largest_over_seeds_and_records():
    """The finding's "largest median |ln std| over training" is the max over every seed's records:
    seed 0 peaks at 0.3, seed 1 at 0.6, so 0.600."""
    runs = _recorded({"BN": {"mean": [0.0, 0.0], "log_std": [0.1, 0.3]},
                      "no norm": {"mean": [0.0, 0.0], "log_std": [0.1, 0.2]}})
    runs["BN"].runs[1].info["drift"] = {"mean": [0.0, 0.0], "log_std": [0.6, 0.1]}
    drift = {label: {"mean": [0.0, 0.0], "log_std": [0.0, 0.0]} for label in runs}
    peak = bn_input_stats._findings(runs, drift, drift)[0]
    assert peak == "largest median |ln std| over training: BN 0.600, no norm 0.200"


def test_degradation_smooths_the_step_losses_over_a_twentieth_of_the_shortest_run(tmp_path, monkeypatch):
    """100 steps: a moving average of 5 (the first values over the steps so far), by hand."""
    drawn = {}
    monkeypatch.setattr(degradation, "plot_lines", lambda series, path, **kw: drawn.update({path.name: (series, kw)}))
    losses = [float(i % 7) for i in range(100)]
    results = {label: SeedResults(label, [RunResult(label, [{"epoch": 1, "train_acc": 0.5, "test_acc": 0.5}], losses,
                                                    1.0, 10, info={"seed": 0})]) for label in ("a", "b", "c", "d")}
    ctx = Context("degradation", "smoke", tmp_path, device="cpu", log=lambda s: None)
    degradation._plots(ctx, results, ("a", "b", "c", "d"), "Fashion-MNIST", "")
    series, kw = drawn["train_loss_steps.png"]
    want = [sum(losses[max(0, i - 4):i + 1]) / min(i + 1, 5) for i in range(100)]
    assert "moving average of 5" in kw["title"] and series["a"][1] == pytest.approx(want)


def test_vanishing_gradients_measures_the_trained_nets_in_training_mode(tmp_path, monkeypatch):
    """The after-training ratio is measured as training sees the net (BN with batch statistics),
    even when the trainer hands the model back in eval mode. Training is skipped here (the nets
    are measured as built); the reference is autograd on a copy in training mode."""
    kept = {}

    def train_seeds(spec, seeds, data):
        runs = []
        for seed in seeds:
            torch.manual_seed(seed)
            model = spec.model(len(data.info.classes), data.info.input_size[0])
            kept.setdefault(spec.label, []).append(copy.deepcopy(model))
            runs.append(RunResult(f"{spec.label} seed {seed}", [{"epoch": 1, "test_acc": 0.8, "train_loss": 0.5}],
                                  [1.0], 1.0, 10, model=model.eval(), info={"seed": seed}))
        return SeedResults(spec.label, runs)

    ctx = Context("vanishing_gradients", "smoke", tmp_path, device="cpu", log=lambda s: None)
    monkeypatch.setattr(ctx, "train_seeds", train_seeds)
    monkeypatch.setattr(vanishing_gradients, "_report", lambda ctx, b, seeds, flows, *a: flows)
    flows = vanishing_gradients.run(ctx)
    b = vanishing_gradients.BUDGET["smoke"]
    bundle = ctx.data(batch_size=b["batch"], subset=b["subset"], test_samples=b["test"])
    x, y = next(iter(bundle.train))
    model = kept["sigmoid + BN"][0].train()
    layers = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), layers)
    got = [n for _, n in flows["sigmoid + BN"]["trained"][0]]
    assert got == pytest.approx([float(torch.linalg.vector_norm(g)) for g in grads], rel=1e-4)
