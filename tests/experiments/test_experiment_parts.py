"""The parts of the experiments that turn runs into figures, and the arms they build: each against
a hand computation, torch's own layers or the module's documented contract (test_checks.py and
test_new_claims.py test the verdict rules on made-up figures; the smoke runs only the pipeline)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resnet_lab.experiments import bn_convergence, bn_imbalance, bn_regularization, bn_sigmoid_range, precise_bn
from resnet_lab.experiments import transfer, very_deep
from resnet_lab.experiments import vanishing_gradients
from resnet_lab.experiments.runner import RunResult
from resnet_lab.nn import BatchNorm1d as ScratchBatchNorm1d
from resnet_lab.nn import BatchNorm2d as ScratchBatchNorm2d
from support import std_off


def _types(model: nn.Module) -> list[type]:
    return [type(m) for m in model.modules()]


def _xavier_std(layer: nn.Module) -> float:
    """Glorot & Bengio's uniform init has variance 2 / (fan_in + fan_out)."""
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(layer.weight)
    return math.sqrt(2.0 / (fan_in + fan_out))


# --- bn_convergence ------------------------------------------------------------------------------


def test_bn_convergence_a_partly_censored_bn_arm_gives_no_speed_up_even_beyond_the_spread():
    # torch BN reached the target in two seeds (100 steps) and never in the third (424): its mean 216
    # is below no norm's 424 by more than its sd 120, but a mean over a censored run is no speed-up.
    steps = {"torch BN": [100.0, 100.0, 424.0], "scratch BN": [100.0, 100.0, 424.0], "no norm": [424.0] * 3}
    checks = bn_convergence.claim_checks({"steps": 3, "max_loss_diff": 0.0, "max_state_diff": 0.0},
                                         {"torch BN": [0.7] * 3, "scratch BN": [0.7] * 3}, steps,
                                         {"LeNet + BN": [200.0] * 3, "LeNet": [950.0] * 3},
                                         {"plain": 424, "lenet": 2341})
    assert not checks[2].passed and "no speed-up: 1 of 3 faster runs never reached it either" in checks[2].evidence


def test_bn_convergence_state_difference_is_the_largest_absolute_one():
    a, b = nn.Linear(2, 2), nn.Linear(2, 2)
    with torch.no_grad():
        b.load_state_dict(a.state_dict())
        b.weight[0, 0] += 0.5  # a - b = -0.5 there: the difference that counts, though negative
        b.bias[1] -= 0.1
    assert bn_convergence._max_state_diff(a, b) == pytest.approx(0.5)


def test_bn_convergence_picks_the_rate_with_the_lowest_sweep_loss_and_the_smaller_on_a_tie():
    assert bn_convergence._best({0.003: 2.0, 0.01: 0.7, 0.03: 0.7, 0.1: math.inf, 0.3: 0.9}) == 0.01
    assert bn_convergence._best({0.3: 0.5, 0.1: 1.0}) == 0.3


def test_bn_convergence_counts_the_epoch_that_reaches_the_accuracy_target_exactly():
    run = RunResult("r", [{"epoch": 1, "test_acc": 0.5}, {"epoch": 2, "test_acc": bn_convergence.ACC_TARGET}], [],
                    1.0, 10)
    assert bn_convergence._epochs_to_acc(run) == 2.0


@pytest.mark.parametrize("label, bn", [("torch BN", nn.BatchNorm2d), ("scratch BN", ScratchBatchNorm2d),
                                       ("no norm", None)])
def test_bn_convergence_arms_are_the_plain_net_with_their_own_norm(label, bn):
    b = bn_convergence.BUDGET["smoke"]
    model = bn_convergence._spec(b, label, 0.1).model(10, 1)
    norms = {t for t in _types(model) if t in (nn.BatchNorm2d, ScratchBatchNorm2d)}
    assert norms == ({bn} if bn else set())
    blocks = [m for m in model.modules() if hasattr(m, "residual")]
    assert blocks and not any(m.residual for m in blocks)  # plain: no shortcut in any block


@pytest.mark.parametrize("norm, bn2d, bn1d", [("scratch", ScratchBatchNorm2d, ScratchBatchNorm1d),
                                              ("batch", nn.BatchNorm2d, nn.BatchNorm1d), ("none", None, None)])
def test_lenet_is_d2ls_sigmoid_net_with_the_chosen_bn_and_xavier_weights(norm, bn2d, bn1d):
    torch.manual_seed(0)
    model = bn_convergence.LeNet(10, 1, norm=norm)
    types = _types(model)
    assert types.count(nn.Sigmoid) == 4 and nn.ReLU not in types
    if bn2d:
        assert types.count(bn2d) == 2 and types.count(bn1d) == 2
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    off = {i: std_off(m.weight, _xavier_std(m)) for i, m in enumerate(layers) if m.weight.numel() >= 800}
    assert len(off) >= 3 and not any(off.values()), off


# --- vanishing_gradients ----------------------------------------------------------------------------


def test_vanishing_gradients_ratio_is_first_layer_over_last_layer():
    norms = [("blocks.0.linear", 1e-3), ("blocks.1.linear", 0.5), ("head", 2.0)]
    assert vanishing_gradients._ratio(norms) == pytest.approx(5e-4)
    assert math.isnan(vanishing_gradients._ratio([("a", 1.0), ("b", 0.0)]))


def _mlp_by_hand(model: vanishing_gradients.DeepMLP, x: torch.Tensor, residual: bool) -> torch.Tensor:
    """The forward of the docstring in float64 from the model's own weights (no BN): the first block
    sigmoid(W x + b); every later one x + W sigmoid(x) + b with shortcuts, sigmoid(W x + b) without."""
    h = x.double().flatten(1)
    for i, block in enumerate(model.blocks):
        w, bias = block.linear.weight.double(), block.linear.bias.double()
        h = h + F.linear(torch.sigmoid(h), w, bias) if residual and i > 0 else torch.sigmoid(F.linear(h, w, bias))
    return F.linear(h, model.head.weight.double(), model.head.bias.double())


@pytest.mark.parametrize("residual", [False, True])
def test_deep_mlp_computes_the_documented_forward_with_depth_linear_layers(residual):
    torch.manual_seed(0)
    model = vanishing_gradients.DeepMLP(12, 3, depth=5, width=8, residual=residual)
    assert sum(isinstance(m, nn.Linear) for m in model.modules()) == 5
    x = torch.randn(4, 3, 2, 2)
    torch.testing.assert_close(model(x).double(), _mlp_by_hand(model, x, residual), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("label", list(vanishing_gradients.CONFIGS))
def test_vanishing_gradients_arms_are_what_their_labels_say_with_glorot_or_he_init(label):
    torch.manual_seed(0)
    depth, width = 6, 256
    model = vanishing_gradients.DeepMLP(200, 10, depth=depth, width=width, **vanishing_gradients.CONFIGS[label])
    types = _types(model)
    relu = label == "ReLU"
    assert (nn.ReLU in types, nn.Sigmoid in types) == (relu, not relu)
    assert (nn.BatchNorm1d in types) == ("BN" in label)
    assert [b.residual for b in model.blocks] == [i > 0 and "residual" in label for i in range(depth - 1)]
    # the linear before a BN has no bias (BN's shift replaces it)
    assert all((b.linear.bias is None) == ("BN" in label) for b in model.blocks)
    for i, block in enumerate(model.blocks):
        w = block.linear.weight
        want = math.sqrt(2.0 / w.shape[1]) if relu else _xavier_std(block.linear)  # He normal / Glorot
        if block.residual:  # branches scaled by 1 / sqrt(depth - 2) at init
            want /= math.sqrt(depth - 2)
        assert std_off(w, want) is None, (i, std_off(w, want))


def test_vanishing_gradients_scales_each_residual_branch_by_the_count_of_residual_blocks():
    """Input as wide as the hidden layers: the first block has a shortcut too, so depth - 1 branches
    (not depth - 2) share the 1/sqrt(n) init scale that keeps the sum of branches' variance fixed."""
    torch.manual_seed(0)
    depth, width = 6, 256
    model = vanishing_gradients.DeepMLP(width, 10, depth=depth, width=width, activation="relu", residual=True)
    assert all(b.residual for b in model.blocks) and len(model.blocks) == depth - 1
    for block in model.blocks:
        want = math.sqrt(2.0 / width) / math.sqrt(depth - 1)  # He normal, scaled
        assert std_off(block.linear.weight, want) is None, std_off(block.linear.weight, want)


# --- very_deep ---------------------------------------------------------------------------------------


def test_very_deep_trend_is_the_mean_of_the_first_and_last_k_finite_losses():
    assert very_deep._trend([4.0, 3.0, 2.0, 1.0, 0.0], 2) == (3.5, 0.5)
    assert very_deep._trend([2.0, 1.0, math.nan], 1) == (2.0, 1.0)  # the NaN of a divergence dropped
    assert all(math.isnan(v) for v in very_deep._trend([2.0, 1.0, 0.5], 2))  # fewer than 2k losses


def _very_deep_checks(plain_last: list[float]):
    resnet = [[2.3, 2.3, 1.5, 1.5]] * 3
    plain = [[2.3, 2.3, v, v] for v in plain_last]
    return very_deep.claim_checks({"resnet-20": resnet, "plain-20": plain},
                                  {"resnet-20": [False] * 3, "plain-20": [False] * 3}, ["resnet-20", "plain-20"],
                                  protocols={"resnet-20": "", "plain-20": ""}, window=2, num_classes=10)


@pytest.mark.parametrize("plain_last, trains", [
    ([2.14, 2.15, 2.16], True),  # 0.15 below chance (2.303), seeds 0.01 apart: under the 0.2 that counts
    ([2.05, 2.15, 2.25], False),  # mean 2.15, sd 0.1: one sd down (2.05) is below 2.103, so "does not" is unshown
])
def test_very_deep_does_not_train_needs_the_plain_net_not_below_the_bar_even_one_sd_down(plain_last, trains):
    assert _very_deep_checks(plain_last)[1].passed == trains


def test_very_deep_plain_arm_has_no_shortcuts_and_the_residual_arm_has_them():
    specs = very_deep._specs(very_deep.BUDGET["smoke"], {})
    residual = [[m.residual for m in s.model(10, 1).modules() if hasattr(m, "residual")] for s in specs[:2]]
    assert all(residual[0]) and not any(residual[1]) and residual[0] and residual[1]


def test_very_deep_warmup_finding_says_met_when_the_error_is_below_eighty_percent():
    def result(err):
        return SimpleNamespace(runs=[SimpleNamespace(info={"warmup": {"train_error": err, "steps": 4, "lr": 0.01}})])

    met, unmet, at = very_deep._warmup_findings({"a": result(0.7), "b": result(0.9), "c": result(0.8)})
    assert "met on average" in met and "not met" not in met and "not met on average" in unmet
    assert "not met on average" in at  # "below 80%": exactly 80% is not below


def test_very_deep_runs_the_documented_protocols():
    # docs/EXPERIMENTS.md "very_deep: protocol": resnet and plain-1202 alike, 100 steps, one-cycle to
    # 0.05, gradient norm clipped to 1; pre-act ResNet-1001 100 steps at 0.01 then 100 at 0.1
    # (constant), no clipping
    resnet, plain, preact = very_deep._specs(very_deep.BUDGET["full"], {})
    for spec in (resnet, plain):
        assert (spec.lr, spec.schedule, spec.grad_clip, spec.max_steps_per_epoch, spec.warmup_steps) == \
            (0.05, "onecycle", 1.0, 100, 0)
    assert (preact.label, preact.warmup_lr, preact.warmup_steps, preact.lr, preact.schedule, preact.grad_clip,
            preact.max_steps_per_epoch) == ("preact-resnet1001", 0.01, 100, 0.1, "constant", None, 100)
    # the paper's ~400 warm-up iterations, when a budget affords them, apart from the steps after
    preact = very_deep._specs(dict(very_deep.BUDGET["full"], preact_warmup=400), {})[2]
    assert (preact.warmup_steps, preact.max_steps_per_epoch) == (400, 100)


def test_very_deep_records_the_first_layer_gradient_norm_of_every_step_before_clipping():
    from resnet_lab.experiments.runner import RunResult, SeedResults

    seen: list[list[float]] = []

    def train_seeds(spec, seeds):  # two steps per seed; the reference norm read off the gradient in float64
        runs = []
        for s in seeds:
            torch.manual_seed(s)
            model, norms = spec.model(10, 1), []
            for _ in range(2):
                model.zero_grad()
                F.cross_entropy(model(torch.randn(4, 1, 8, 8)), torch.randint(0, 10, (4,))).backward()
                norms.append(model.conv1.weight.grad.double().pow(2).sum().sqrt().item())
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1e-3)  # what the trainer does after
            seen.append(norms)
            runs.append(RunResult(f"{spec.label} seed {s}", [], [], 0.0, 0, model=model, info={"seed": s}))
        return SeedResults(spec.label, runs)

    spec = very_deep._specs(very_deep.BUDGET["smoke"], {})[0]
    result, grads = very_deep._train_recording_conv1_grad(SimpleNamespace(train_seeds=train_seeds), spec, [0, 1])
    assert len(grads) == 2 and grads == [pytest.approx(n, rel=1e-5) for n in seen]
    assert all(r.model is None for r in result.runs)  # the models dropped


def test_very_deep_probes_memory_without_and_with_checkpointing(monkeypatch):
    probed = []
    monkeypatch.setattr(very_deep, "_probe_in_subprocess",
                        lambda args: probed.append(args) or {"step_peak_mib": 1.0, "seconds": 0.1})
    b = very_deep.BUDGET["smoke"]
    memory = very_deep._memory(SimpleNamespace(log=lambda s: None), b)
    assert [a["segments"] for a in probed] == [0, b["segments"]] and sorted(memory) == [0, b["segments"]]
    assert all(a["depth"] == b["depth"] and a["residual"] and a["batch"] == b["probe_batch"] for a in probed)


def test_very_deep_table_gives_each_nets_first_and_last_window_and_first_and_last_gradient():
    from resnet_lab.experiments.runner import RunResult, SeedResults

    def run(losses):
        return RunResult("r", [{"epoch": 1, "test_acc": 0.5}], losses, 1.0, 7)

    results = {"a": SeedResults("a", [run([5.0, 4.0, 3.0, 2.0, 1.0]), run([6.0, 6.0, 2.0, 2.0, 0.0])])}
    grads = {"a": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}
    (row,) = very_deep._rows(results, grads, 2)
    # by hand, k = 2: first (5 + 4) / 2, (6 + 6) / 2; last (2 + 1) / 2, (2 + 0) / 2
    assert [row[0], row[1], row[2].values, row[3].values] == ["a", 7, (4.5, 6.0), (1.5, 1.0)]
    assert (row[4].values, row[5].values, row[7]) == ((1.0, 4.0), (3.0, 6.0), "0 of 2")


# --- bn_imbalance -------------------------------------------------------------------------------------


def _scored_model(bn: bool = False) -> nn.Module:
    """Logits (0, x): p(positive) = sigmoid(x); with ``bn``, a BN in front whose running statistics
    (mean 0, var 1) make it the identity in eval mode, and batch statistics would not."""
    head = nn.Linear(1, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[0.0], [1.0]])), head.bias.zero_()
    return nn.Sequential(nn.BatchNorm1d(1, eps=0.0, affine=False), head) if bn else head


P_POS, P_NEG = [0.2, 0.6], [0.005, 0.05, 0.3]


@pytest.mark.parametrize("bn", [False, True])
def test_bn_imbalance_evaluates_auc_on_p_positive_and_balanced_accuracy_at_the_prior(bn):
    p = torch.tensor(P_POS + P_NEG, dtype=torch.float64)
    x, y = torch.logit(p).float().unsqueeze(1), torch.tensor([1, 1, 0, 0, 0])
    model = _scored_model(bn).train()
    m = bn_imbalance._evaluate(SimpleNamespace(diverged=False, model=model), SimpleNamespace(test=[(x, y)]), 0.01,
                               "cpu")
    # by hand: pairs (positive > negative): 0.2 beats 0.005 and 0.05, 0.6 beats all three -> 5 of 6
    assert m["auc"] == pytest.approx(5 / 6)
    # positive when p > 0.01: both positives, and 0.05 and 0.3 of the negatives -> (2/2 + 1/3) / 2
    assert m["bacc"] == pytest.approx((1 + 1 / 3) / 2) and m["pos_recall"] == 1.0
    # argmax (p > 0.5): one positive of two, every negative -> (1/2 + 1) / 2
    assert m["argmax_bacc"] == pytest.approx(0.75) and not model.training


def test_bn_imbalance_calls_a_probability_equal_to_the_prevalence_negative():
    # docstring and report: "positive when p(positive) > training prevalence"; logits (0, 0) give
    # p = 1/2 exactly, so at prevalence 1/2 the negative scored 1/2 is called negative
    x, y = torch.tensor([[0.0], [3.0]]), torch.tensor([0, 1])
    m = bn_imbalance._evaluate(SimpleNamespace(diverged=False, model=_scored_model()), SimpleNamespace(test=[(x, y)]),
                               0.5, "cpu")
    assert m["bacc"] == 1.0 and m["pos_recall"] == 1.0


def test_bn_imbalance_counts_a_diverged_run_at_chance():
    m = bn_imbalance._evaluate(SimpleNamespace(diverged=True, model=None), None, 0.01, "cpu")
    assert m == {"auc": 0.5, "bacc": 0.5, "pos_recall": 0.0, "argmax_bacc": 0.5}


def _indexed_bundle(labels: list[int], train: bool = True):
    """A two-class bundle whose image i carries i (pixels 0 and 1: i // 256, i % 256): a training
    split (shuffled, drop_last) that is its own test split, or with ``train=False`` a test split."""
    from resnet_lab.data import DataBundle, DatasetInfo, InMemoryLoader

    n = len(labels)
    images = torch.zeros(n, 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = torch.arange(n) // 256, torch.arange(n) % 256
    train = InMemoryLoader(images, torch.tensor(labels), batch_size=4, mean=(0.3,), std=(0.2,), shuffle=train,
                           drop_last=train)
    info = DatasetInfo(name="fake", classes=["neg", "pos"], input_size=(1, 2, 2), mean=(0.3,), std=(0.2,))
    return DataBundle(info=info, train=train, test=train, num_train=n, num_test=n)


def _image_ids(loader) -> list[int]:
    return (loader.images[:, 0, 0, 0].long() * 256 + loader.images[:, 0, 0, 1].long()).tolist()


IMBALANCED_LABELS = [1 if i % 31 == 30 else 0 for i in range(310)]  # 300 negatives, 10 positives


@pytest.mark.parametrize("negatives, want_neg, want_pos", [
    (50, 50, 2),  # 50 // 99 = 0 positives: at least 2
    (294, 294, 2), (297, 297, 3),  # 1 positive per 99 negatives, rounded down
    (500, 300, 3),  # more than the data have: all 300
])
def test_bn_imbalance_training_set_keeps_n_negatives_and_one_positive_per_99_drawn_per_seed(negatives, want_neg,
                                                                                           want_pos):
    full = _indexed_bundle(IMBALANCED_LABELS)
    asked = []
    ctx = SimpleNamespace(data=lambda **kw: asked.append(kw) or full)
    b = dict(bn_imbalance.BUDGET["smoke"], negatives=negatives)
    drawn = {}
    for seed in (0, 1):
        bundle, n_neg, n_pos = bn_imbalance._imbalanced(ctx, b, seed)
        ids, y = _image_ids(bundle.train), bundle.train.labels.tolist()
        assert (n_neg, n_pos) == (want_neg, want_pos) and bundle.num_train == len(ids) == want_neg + want_pos
        assert len(set(ids)) == len(ids) and y == [IMBALANCED_LABELS[i] for i in ids]  # each image with its label
        assert y.count(0) == want_neg and y.count(1) == want_pos
        # a training split as load_data makes it (DataBundle: shuffled; docs/DATA.md: drop_last True),
        # normalized with the full training split's statistics, tested on the full test split
        assert bundle.train.shuffle and bundle.train.drop_last and bundle.test is full.test
        assert (bundle.train.mean, bundle.train.std) == (full.train.mean, full.train.std)
        drawn[seed] = {i for i in ids if IMBALANCED_LABELS[i]}
    assert asked[0]["classes"] == [0, 6]  # T-shirt/top vs Shirt
    if want_pos < 10:  # some positives left out: "each with its own draw of the positives"
        assert drawn[0] != drawn[1]


class _TableScorer(nn.Module):
    """Logits (0, logit p[i]) for the image carrying index i (see _indexed_bundle)."""

    def __init__(self, p: list[float], mean: float, std: float) -> None:
        super().__init__()
        self.p, self.mean, self.std = p, mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pix = torch.round((x[:, 0, 0, :2] * self.std + self.mean) * 255).long()
        logit = torch.logit(torch.tensor(self.p, dtype=torch.float64)[pix[:, 0] * 256 + pix[:, 1]])
        return torch.stack([torch.zeros_like(logit), logit], 1).float()


# p(positive) of the 6 test images (labels below) per arm and seed; smoke training: 198 negatives,
# 2 positives, prevalence 2 / 200 = 0.01 (1 / 99 would be 0.0101: 0.01005 lies between the two)
IMBALANCE_TEST_Y = [1, 1, 1, 0, 0, 0]
IMBALANCE_P = {("BN", 0): [0.01005, 0.6, 0.002, 0.005, 0.3, 0.0099],
               ("BN", 1): [0.02, 0.7, 0.9, 0.005, 0.3, 0.0099],
               ("no norm", 0): [0.01005, 0.001, 0.003, 0.005, 0.002, 0.8],
               ("no norm", 1): [0.4, 0.5, 0.003, 0.1, 0.2, 0.0001]}


def _imbalance_reference(p: list[float], prevalence: float) -> dict[str, float]:
    """AUC (pairs won), prior-corrected balanced accuracy and positive recall, in float64 by hand."""
    pos = [q for q, t in zip(p, IMBALANCE_TEST_Y) if t]
    neg = [q for q, t in zip(p, IMBALANCE_TEST_Y) if not t]
    recall = sum(q > prevalence for q in pos) / len(pos)
    return {"auc": sum(a > b for a in pos for b in neg) / (len(pos) * len(neg)),
            "bacc": (recall + sum(q <= prevalence for q in neg) / len(neg)) / 2, "pos_recall": recall}


def test_bn_imbalance_run_reports_what_its_two_arms_score_per_seed_at_the_training_prevalence(tmp_path, monkeypatch):
    monkeypatch.setattr(bn_imbalance, "plot_lines", lambda *a, **kw: None)  # the figures, not the plot
    from resnet_lab.experiments.runner import RunResult, SeedResults

    full = _indexed_bundle(IMBALANCED_LABELS)
    full.test = _indexed_bundle(IMBALANCE_TEST_Y, train=False).train
    specs, trained = {}, {}

    def train_seeds(spec, seeds, data):
        specs[spec.label] = spec
        runs = []
        for s in seeds:
            bundle = data(s)
            trained[spec.label, s] = bundle
            model = _TableScorer(IMBALANCE_P[spec.label, s], 0.3, 0.2)
            runs.append(RunResult(f"{spec.label} seed {s}", [], [], 0.0, 0, model=model, info={"seed": s}))
        return SeedResults(spec.label, runs)

    ctx = SimpleNamespace(budget="smoke", seeds=lambda n: list(range(n)), data=lambda **kw: full,
                          train_seeds=train_seeds, device="cpu", out=tmp_path)
    report = bn_imbalance.run(ctx)
    metrics = report.data["metrics"]
    for label in ("BN", "no norm"):
        y = [trained[label, 0].train.labels.tolist().count(c) for c in (0, 1)]
        prevalence = y[1] / (y[0] + y[1])
        want = [_imbalance_reference(IMBALANCE_P[label, s], prevalence) for s in (0, 1)]
        for k in ("auc", "bacc", "pos_recall"):
            assert metrics[label][k] == pytest.approx([w[k] for w in want], abs=1e-6), (label, k)
            row = next(r for r in report.rows if r[0] == label)
            assert row[1 + ("auc", "bacc", "pos_recall").index(k)].values == pytest.approx(metrics[label][k])
            for s in (0, 1):
                seed_row = next(r for r in report.rows if r[0] == f"{label} seed {s}")
                assert seed_row[1 + ("auc", "bacc", "pos_recall").index(k)] == pytest.approx(want[s][k], abs=1e-6)
        for s in (0, 1):
            info = report.data["runs"][f"{label} seed {s}"]["info"]
            assert (info["auc"], info["balanced_accuracy"]) == (metrics[label]["auc"][s], metrics[label]["bacc"][s])
        # the "same data for both arms, own positives per seed" protocol
        assert _image_ids(trained[label, 0].train) != _image_ids(trained[label, 1].train)
        assert f"lr {specs[label].lr} " in report.setup["training"] and specs[label].lr == specs["BN"].lr
    # the arm called BN has batch norm, the other none
    norms = {label: any(isinstance(m, nn.BatchNorm2d) for m in spec.model(2, 1).modules())
             for label, spec in specs.items()}
    assert norms == {"BN": True, "no norm": False}
    assert all("over 2 seeds" in c.evidence for c in report.checks)


# --- bn_sigmoid_range ------------------------------------------------------------------------------


def test_bn_sigmoid_range_a_frozen_share_of_exactly_sixty_percent_is_in_the_linear_range():
    checks = bn_sigmoid_range.claim_checks({bn_sigmoid_range.FROZEN: [0.6] * 3, bn_sigmoid_range.LEARNABLE: [0.4] * 3},
                                           {bn_sigmoid_range.LEARNABLE: [0.9] * 3, bn_sigmoid_range.FROZEN: [0.8] * 3})
    assert checks[0].passed  # "at least 60%"


@pytest.mark.parametrize("label", list(bn_sigmoid_range.CONFIGS))
def test_bn_sigmoid_range_arms_are_the_papers_sigmoid_mlp_with_gamma_beta_learned_frozen_or_absent(label):
    cfg = bn_sigmoid_range.CONFIGS[label]
    model = bn_sigmoid_range.sigmoid_bn_mlp(3, 16, in_features=20, **cfg)(10, 1)
    types = _types(model)
    assert types.count(nn.Sigmoid) == 3 and types.count(nn.Linear) == 4 and nn.ReLU not in types
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == (3 if label != bn_sigmoid_range.NO_NORM else 0)
    trainable = {p.requires_grad for m in bns for p in (m.weight, m.bias)}
    assert trainable == (set() if not bns else {label == bn_sigmoid_range.LEARNABLE})


def test_bn_sigmoid_range_reports_the_mean_absolute_gamma_and_beta():
    model = bn_sigmoid_range.sigmoid_bn_mlp(2, 2, norm=True, affine=True, in_features=4)(3, 1)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    with torch.no_grad():
        bns[0].weight.copy_(torch.tensor([-1.0, 3.0])), bns[1].weight.copy_(torch.tensor([2.0, -2.0]))
        bns[0].bias.copy_(torch.tensor([-0.5, 0.5])), bns[1].bias.copy_(torch.tensor([0.0, -1.0]))
    assert bn_sigmoid_range._gamma_beta(model) == pytest.approx({"mean abs gamma": 2.0, "mean abs beta": 0.5})


# --- bn_regularization ----------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["batch", "none"])
def test_bn_regularization_lenet_drops_out_after_both_hidden_fcs_and_drops_biases_before_bn(norm):
    model = bn_regularization.LeNet(10, 1, norm=norm, dropout=0.5)
    drops = [m for m in model.classifier if isinstance(m, nn.Dropout)]
    assert [m.p for m in drops] == [0.5, 0.5]
    layers = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert [m.bias is not None for m in layers] == [norm == "none"] * 4 + [True]
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_bn_regularization_smallest_lenet_input_is_twelve_pixels():
    assert bn_regularization.LeNet(10, 1, image_size=12)(torch.randn(2, 1, 12, 12)).shape == (2, 10)
    with pytest.raises(ValueError, match="at least 12 x 12"):
        bn_regularization.LeNet(10, 1, image_size=11)


def test_bn_regularization_a_diverged_run_has_no_training_accuracy():
    r = SimpleNamespace(diverged=True, model=nn.Linear(2, 2))
    assert math.isnan(bn_regularization._train_acc_eval(SimpleNamespace(device="cpu"), r, None))


# --- transfer ------------------------------------------------------------------------------------------


def _frozen_net() -> tuple[nn.Module, dict]:
    """Linear -> BN -> Linear -> BN: the first Linear frozen, the first BN locked in eval as freeze()
    locks it, the second BN trainable."""
    from resnet_lab.transfer.freeze import _lock_eval

    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2), nn.BatchNorm1d(2))
    model[0].requires_grad_(False)
    _lock_eval(model[1])
    return model, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("change, unchanged", [
    (None, True), ("2.weight", True), ("3.running_mean", True),  # a trainable tensor or a live BN's statistic may move
    ("0.weight", False), ("1.running_mean", False),  # a frozen parameter or a locked BN's statistic may not
])
def test_transfer_frozen_unchanged_compares_every_frozen_tensor_with_the_source(change, unchanged):
    model, source = _frozen_net()
    if change:
        with torch.no_grad():
            model.state_dict()[change].add_(1.0)
    assert transfer._frozen_unchanged(model, source) is unchanged
    assert transfer._frozen_unchanged(nn.Linear(2, 2), {}) is None  # nothing frozen


def test_transfer_passes_run_the_inner_loaders_epochs_in_turn_without_repeating_an_order():
    from resnet_lab.data import InMemoryLoader

    images = torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1).expand(8, 1, 2, 2).contiguous()
    inner = InMemoryLoader(images, torch.arange(8), batch_size=4, mean=(0.0,), std=(1.0,), shuffle=True, seed=1)
    view = transfer._Passes(inner, 2)
    assert len(view) == 2 * len(inner)
    seen = []
    for epoch in (0, 1):
        view.set_epoch(epoch)
        seen.append([y.tolist() for _, y in view])
    want = []
    for e in range(4):  # the inner loader's epochs 0-3, by themselves
        inner.set_epoch(e)
        want += [y.tolist() for _, y in inner]
    assert seen[0] + seen[1] == want


def test_transfer_time_per_image_is_pooled_over_the_runs_of_a_strategy():
    runs = [{"strategy": "all", "train_seconds": 1.0, "images": 100}, {"strategy": "all", "train_seconds": 3.0,
                                                                       "images": 300},
            {"strategy": "head", "train_seconds": 9.0, "images": 1}]
    assert transfer._ms_per_image(runs, "all") == pytest.approx(1000 * 4.0 / 400)


# --- precise_bn ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bn", [nn.BatchNorm2d, ScratchBatchNorm2d])
def test_precise_bn_forgets_the_statistics_a_long_training_left(bn):
    # After training num_batches_tracked is large: a cumulative average that went on from it would
    # keep the stale statistics almost whole. Reference: the float64 mean of the per-batch means.
    batches = [torch.randn(4, 2, 3, 3, generator=torch.Generator().manual_seed(i)) + 1.0 for i in range(3)]
    layer = bn(2)
    layer.running_mean.fill_(7.0), layer.num_batches_tracked.fill_(1000)
    precise_bn(nn.Sequential(layer), batches, num_batches=3)
    want = torch.stack([x.double().mean(dim=(0, 2, 3)) for x in batches]).mean(0)
    torch.testing.assert_close(layer.running_mean.double(), want, rtol=1e-5, atol=1e-5)


def test_precise_bn_refuses_zero_batches_and_leaves_a_model_without_bn_in_its_mode():
    with pytest.raises(ValueError, match="num_batches must be >= 1, got 0"):
        precise_bn(nn.Sequential(nn.BatchNorm2d(2)), [torch.randn(2, 2, 2, 2)], num_batches=0)
    model = nn.Sequential(nn.Linear(2, 2)).eval()
    assert precise_bn(model, [torch.randn(2, 2)], num_batches=1) == 0 and not model.training


# --- run-level arms: what the experiments hand to the trainer ----------------------------------------


def test_bn_convergence_lenet_arms_use_d2ls_settings_and_censor_one_past_the_longest_run(tmp_path, monkeypatch):
    from trainspy import TrainSpy
    from resnet_lab.experiments.runner import Context

    spy = TrainSpy(monkeypatch)
    ctx = Context("bn_convergence", "smoke", tmp_path, device="cpu", log=lambda s: None)
    _, censor = bn_convergence._lenet(ctx, bn_convergence.BUDGET["smoke"], [0])
    (bn, plain) = spy.calls  # "LeNet + BN", then "LeNet"
    # d2l's BN chapter: plain SGD, lr 1.0 for its (from-scratch) BN LeNet and 0.9 for LeNet
    assert [(c.config.lr, c.config.momentum, c.config.weight_decay) for c in spy.calls] == [(1.0, 0.0, 0.0),
                                                                                            (0.9, 0.0, 0.0)]
    assert ScratchBatchNorm2d in _types(bn.model) and ScratchBatchNorm1d in _types(bn.model)
    assert not any(isinstance(m, (nn.BatchNorm2d, ScratchBatchNorm2d)) for m in plain.model.modules())
    assert censor == max(len(c.steps) for c in spy.calls) + 1


def test_train_recorded_builds_the_model_after_seeding_with_the_specs_seed(tmp_path):
    from resnet_lab.experiments.bn_input_stats import train_recorded
    from resnet_lab.experiments.runner import Context, RunSpec, cifar_net

    ctx = Context("seeds", "smoke", tmp_path, device="cpu", log=lambda s: None)
    data = ctx.data("fake", batch_size=8, subset=16, image_size=8, in_channels=1)
    factory, built = cifar_net(8, widths=(2, 4, 8)), []

    def build(nc: int, ic: int) -> nn.Module:
        built.append({k: v.clone() for k, v in factory(nc, ic).state_dict().items()})
        return factory(nc, ic)

    result, _ = train_recorded(ctx, RunSpec("r", batch_size=8, epochs=1, max_steps_per_epoch=1, seed=3), data,
                               lambda nc, ic: (build(nc, ic), None)[0], every=1)
    torch.manual_seed(3)
    ref = factory(10, 1).state_dict()
    assert all(torch.equal(built[0][k], ref[k]) for k in ref) and result.info["drift"]["mean"]


def test_seed_band_is_the_mean_over_seeds_plus_and_minus_their_sample_sd():
    import statistics

    from resnet_lab.experiments.bn_input_stats import seed_band
    from resnet_lab.experiments.runner import SeedResults

    curves = [[1.0, 2.0, 9.0], [3.0, 5.0]]  # the band runs to the shortest curve
    runs = SeedResults("x", [RunResult(f"s{i}", [], [], 1.0, 1, info={"c": c}) for i, c in enumerate(curves)])
    mean, (lo, hi) = seed_band(runs, lambda r: r.info["c"])
    sds = [statistics.stdev([1.0, 3.0]), statistics.stdev([2.0, 5.0])]
    assert mean == pytest.approx([2.0, 3.5])
    assert lo == pytest.approx([m - s for m, s in zip(mean, sds)]) and hi == pytest.approx([m + s for m, s in zip(mean, sds)])


def test_very_deep_run_judges_each_net_on_its_own_losses_window_and_divergences(tmp_path, monkeypatch):
    from resnet_lab.experiments.runner import RunResult, SeedResults

    # smoke: window 2, 10 classes (bar ln 10 - 0.2 = 2.103). The residual nets: last two steps 1.0 and
    # 2.3, mean 1.65 (trains; the last step alone would not). The plain net: seed 0 diverged in its
    # second step (at chance), seed 1 stayed at 2.3 (does not train).
    losses = {"resnet-20": [[2.3, 2.3, 2.3, 1.0, 2.3]] * 2, "plain-20": [[2.3, math.nan], [2.3] * 5]}

    def fabricated(ctx, spec, seeds):
        curves = losses.get(spec.label, losses["resnet-20"])
        runs = [RunResult(f"{spec.label} seed {s}", [{"epoch": 1, "test_acc": 0.1}], c, 1.0, 5,
                          diverged=any(v != v for v in c), info={"seed": s}) for s, c in zip(seeds, curves)]
        return SeedResults(spec.label, runs), [[1.0, 1.0] for _ in seeds]

    monkeypatch.setattr(very_deep, "_train_recording_conv1_grad", fabricated)
    monkeypatch.setattr(very_deep, "_memory", lambda ctx, b: {0: {"step_peak_mib": 2.0, "seconds": 1.0,
                                                                  "params_mib": 1.0}, 4: {"step_peak_mib": 1.0,
                                                                  "seconds": 1.0, "params_mib": 1.0}})
    monkeypatch.setattr(very_deep, "_plot", lambda *a, **kw: None)
    ctx = SimpleNamespace(budget="smoke", smoke=True, seeds=lambda n: list(range(n)), out=tmp_path,
                          data=lambda **kw: SimpleNamespace(info=SimpleNamespace(classes=list("abcdefghij"))))
    checks = very_deep.run(ctx).checks
    assert [c.passed for c in checks] == [True, True, True]
    assert "last 2 steps 1.65" in checks[0].evidence and "1 diverged, counted at chance" in checks[1].evidence


def test_very_deep_plots_the_mean_gradient_over_the_steps_every_seed_ran(tmp_path, monkeypatch):
    # seed 1 diverged after 2 steps: the mean per step is over the first 2, where both seeds have a norm
    from resnet_lab.experiments.runner import RunResult, SeedResults

    drawn = {}
    monkeypatch.setattr(very_deep, "plot_lines", lambda lines, path, **kw: drawn.setdefault(path.name, lines))
    results = {"a": SeedResults("a", [RunResult("a seed 0", [], [2.0, 1.0, 0.5], 1.0, 1),
                                      RunResult("a seed 1", [], [2.0, 3.0], 1.0, 1, diverged=True)])}
    very_deep._plot(SimpleNamespace(out=tmp_path), {}, results, {"a": [[1.0, 2.0, 3.0], [3.0, 4.0]]}, plain_label="a")
    assert drawn["first_layer_grad.png"] == {"a": ([1, 2], [2.0, 3.0])}
