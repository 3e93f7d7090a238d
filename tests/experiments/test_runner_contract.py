"""The runner's contract that every experiment's figures rest on: what a failed seed counts as, the
spread of curves over seeds, the smoothing and the first-crossing helpers, the refusals of a
Context, and He et al.'s constant warm-up as the trainer receives it. References: hand
computations, the trainer's own records (TrainSpy) and the loader's seeded order."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from resnet_lab.experiments.runner import (
    Context,
    RunResult,
    RunSpec,
    SeedResults,
    cifar_net,
    ema,
    first_at_or_below,
)


def _run(seed: int, accs: list[float], losses: list[float], diverged: bool = False) -> RunResult:
    epochs = [{"epoch": i, "test_acc": a} for i, a in enumerate(accs, 1)]
    return RunResult("net", epochs, losses, 1.0, 10, diverged, info={"seed": seed})


def test_final_counts_a_diverged_seed_and_one_without_an_epoch_as_failed():
    runs = SeedResults("net", [_run(0, [0.5, 0.8], [1.0]), _run(1, [0.6], [1.0, math.nan], diverged=True),
                               _run(2, [], [])])
    assert runs.final("test_acc", failed=0.1).values == (0.8, 0.1, 0.1)  # not the diverged seed's 0.6
    default = runs.final("test_acc").values
    assert default[0] == 0.8 and math.isnan(default[1]) and math.isnan(default[2])
    assert runs.diverged == 1 and runs.seeds == [0, 1, 2]


def test_mean_curves_over_seeds_stop_at_the_shortest_run_with_the_sample_sd():
    runs = SeedResults("net", [_run(0, [0.2, 0.4, 0.9], [1.0, 3.0, 5.0]), _run(1, [0.4, 0.8], [3.0, 5.0])])
    steps, mean, sd = runs.mean_steps()
    # per step: (1, 3) and (3, 5): means 2 and 4, sample sd sqrt(((1-2)^2 + (3-2)^2) / 1) = sqrt(2)
    assert steps == [1, 2] and mean == [2.0, 4.0] and sd == pytest.approx([math.sqrt(2)] * 2)
    epochs, mean, sd = runs.mean_curve("test_acc")
    assert epochs == [1, 2] and mean == pytest.approx([0.3, 0.6]) and sd == pytest.approx([0.1 * math.sqrt(2),
                                                                                            0.4 / math.sqrt(2)])


def test_a_diverged_seeds_nan_step_leaves_the_mean_curve_drawable_without_an_sd_there():
    """Context.train ends a diverged run's losses with NaN; the plots' mean over seeds then reaches
    that step, where statistics.stdev raised on the non-finite value instead of giving the curve."""
    runs = SeedResults("net", [_run(0, [0.5], [1.0, 3.0]), _run(1, [0.5], [3.0, math.nan], diverged=True)])
    steps, mean, sd = runs.mean_steps()
    assert steps == [1, 2] and mean[0] == 2.0 and math.isnan(mean[1])
    assert sd == [pytest.approx(math.sqrt(2)), 0.0]  # sample sd of (1, 3); none where a seed has no value


def test_diverged_counts_every_seed_that_diverged():
    runs = SeedResults("net", [_run(s, [0.1], [math.nan], diverged=s != 1) for s in range(3)])
    assert runs.diverged == 2


def test_ema_is_bias_corrected_as_adams_first_moment():
    assert ema([3.0, 3.0, 3.0]) == pytest.approx([3.0, 3.0, 3.0])  # a constant curve stays put from step 1
    # alpha 0.5 on (1, 0): m = 0.5, 0.25; corrected by 1 - 0.5 and 1 - 0.25: 1 and 1/3
    assert ema([1.0, 0.0], alpha=0.5) == pytest.approx([1.0, 1 / 3])
    # the default weight of the newest value, 0.1 (the signature): m = 0.1, 0.09; corrected by 0.1 and 0.19
    assert ema([1.0, 0.0]) == pytest.approx([1.0, 0.09 / 0.19])


def test_first_at_or_below_counts_from_one_and_includes_the_target():
    assert first_at_or_below([3.0, 2.0, 1.0], 2.0) == 2.0
    assert first_at_or_below([3.0, 2.5], 2.0) == math.inf


def test_context_refuses_an_unknown_budget_before_making_its_folder(tmp_path):
    with pytest.raises(ValueError, match="budget must be one of smoke, full, got 'huge'"):
        Context("x", "huge", tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


def test_a_note_is_kept_and_logged_once_however_often_it_is_given(tmp_path):
    lines: list[str] = []
    ctx = Context("notes", "smoke", tmp_path, device="cpu", log=lines.append)
    for _ in range(2):  # e.g. every run of an experiment that met the same caveat
        ctx.note("the budget is small")
    assert ctx.notes == ["the budget is small"] and lines == ["[notes] the budget is small"]


def test_an_experiment_needs_at_least_one_seed(tmp_path):
    ctx = Context("x", "smoke", tmp_path, device="cpu", seed=4, log=lambda s: None)
    assert ctx.seeds(2) == [4, 5]
    with pytest.raises(ValueError, match="at least one seed, got 0"):
        ctx.seeds(0)


def test_the_constant_warmup_reaches_the_trainer_at_its_rate_then_the_run_takes_the_next_epochs_order(
        tmp_path, monkeypatch):
    """He et al.: warmup_steps at the constant warmup_lr, then the run proper at its own schedule,
    on the batches of the epochs after the warm-up's; every call trains with the spec's seed."""
    from trainspy import TrainSpy

    spy = TrainSpy(monkeypatch)
    ctx = Context("warm", "smoke", tmp_path, device="cpu", log=lambda s: None)
    data = ctx.data("fake", batch_size=8, subset=32, image_size=8, in_channels=1)  # 4 steps an epoch
    spec = RunSpec("warm", cifar_net(8, widths=(2, 4, 8)), batch_size=8, epochs=1, lr=0.1, schedule="onecycle",
                   max_steps_per_epoch=2, warmup_lr=0.01, warmup_steps=2, seed=3)
    ctx.train(spec, data)
    warm, main = spy.calls
    assert len(warm.steps) == 2 and {lr for s in warm.steps for lr in s.lrs} == {0.01}  # every param group
    assert warm.config.schedule == "constant"
    assert main.config.schedule == "onecycle" and main.config.lr == 0.1
    assert warm.config.seed == main.config.seed == 3
    # the warm-up ran one epoch of 2 steps: the run proper's first batch is the loader's epoch 1's
    data.train.set_epoch(1)
    _, first = next(iter(data.train))
    assert main.labels[0].tolist() == first.tolist() != warm.labels[0].tolist()


def test_context_data_is_loaded_once_unaugmented_and_handed_back_at_epoch_0(tmp_path):
    ctx = Context("data", "smoke", tmp_path, device="cpu", log=lambda s: None)
    args = dict(batch_size=8, subset=32, image_size=8, in_channels=1)
    data = ctx.data("fake", **args)
    assert data.train.augment is False and ctx.data("fake", augment=True, **args).train.augment is True
    first = next(iter(data.train))[1].tolist()  # epoch 0's first batch
    data.train.set_epoch(5)  # an experiment that walked on through the epochs
    again = ctx.data("fake", **args)
    assert again is data and next(iter(again.train))[1].tolist() == first


def test_only_fashion_mnist_falls_back_to_random_images(tmp_path, monkeypatch):
    """A missing CIFAR-10 is an error: random images in its place would run a CIFAR experiment on
    a 1-channel fake set under a note that names Fashion-MNIST."""
    import resnet_lab.experiments.runner as runner
    from resnet_lab.data import DataNotFoundError

    def missing(name, **kw):
        raise DataNotFoundError(f"{name} is not here (test)")

    monkeypatch.setattr(runner, "load_data", missing)
    ctx = Context("cifar", "smoke", tmp_path, device="cpu", log=lambda s: None)
    with pytest.raises(DataNotFoundError, match="cifar10 is not here"):
        ctx.data("cifar10", subset=32)
    assert not ctx.fake_data and ctx.notes == []


def test_a_dataset_missing_from_data_dir_is_read_from_where_the_library_looks_and_the_report_says_so(
        tmp_path, monkeypatch):
    import resnet_lab.experiments.runner as runner
    from resnet_lab.data import DataNotFoundError

    real = runner.load_data

    def only_without_data_dir(name, data_dir=None, **kw):
        if data_dir is not None:
            raise DataNotFoundError(f"{name} is not in {data_dir} (test)")
        return real("fake", **kw)

    monkeypatch.setattr(runner, "load_data", only_without_data_dir)
    ctx = Context("dirs", "smoke", tmp_path, data_dir="my data", device="cpu", log=lambda s: None)
    data = ctx.data("cifar10", batch_size=8, subset=32, image_size=8, in_channels=1)
    assert ctx.notes == [f"cifar10 is not in --data-dir my data; it was read from {data.info.source}"]


@pytest.mark.parametrize("cap, caps", [(2, {(2, 4)}), (4, set()), (None, set())])
def test_the_context_records_only_epochs_the_budget_cut_short(tmp_path, cap, caps):
    """The setup's "steps" line names the cuts; a cap of a whole epoch (4 of 4 steps) cuts nothing."""
    ctx = Context("caps", "smoke", tmp_path, device="cpu", log=lambda s: None)
    data = ctx.data("fake", batch_size=8, subset=32, image_size=8, in_channels=1)  # 4 steps an epoch
    ctx.train(RunSpec("net", cifar_net(8, widths=(2, 4, 8)), batch_size=8, max_steps_per_epoch=cap), data)
    assert ctx.step_caps == caps


def _fake_fits(monkeypatch, ctx: Context, *results) -> list:
    """Replace the trainer calls of ``ctx.train`` by ``results`` (records, losses, diverged), one
    per call; return the configs they were given."""
    configs, left = [], list(results)

    def fit(spec, model, data, config):
        configs.append(config)
        return left.pop(0)

    monkeypatch.setattr(ctx, "_fit", fit)
    return configs


def _warm_spec(**kw) -> RunSpec:
    return RunSpec("warm", cifar_net(8, widths=(2, 4, 8)), batch_size=8, warmup_lr=0.01, warmup_steps=2, **kw)


def test_a_warmup_that_diverged_ends_the_run_there(tmp_path, monkeypatch):
    """RunResult.diverged: the records stop where the loss blew up; the run proper is not started
    from the blown-up weights."""
    ctx = Context("warm", "smoke", tmp_path, device="cpu", log=lambda s: None)
    data = ctx.data("fake", batch_size=8, subset=32, image_size=8, in_channels=1)
    configs = _fake_fits(monkeypatch, ctx, ([], [2.3, math.nan], True))  # the warm-up's second step gave NaN
    r = ctx.train(_warm_spec(), data)
    assert len(configs) == 1 and configs[0].lr == 0.01
    assert r.diverged and r.epochs == [] and len(r.step_losses) == 2 and math.isnan(r.step_losses[1])


def test_the_warmup_reports_its_steps_rate_and_training_error_and_the_run_its_own_records(tmp_path, monkeypatch):
    ctx = Context("warm", "smoke", tmp_path, device="cpu", log=lambda s: None)
    data = ctx.data("fake", batch_size=8, subset=32, image_size=8, in_channels=1)
    main = [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "test_acc": 0.4}]
    _fake_fits(monkeypatch, ctx, ([{"epoch": 1, "train_acc": 0.25}], [2.0, 1.9], False), (main, [1.5], False))
    r = ctx.train(_warm_spec(seed=2), data)
    assert r.info["warmup"] == {"steps": 2, "lr": 0.01, "train_error": 0.75}  # 1 - the warm-up's 25%
    assert r.epochs == main and r.step_losses == [2.0, 1.9, 1.5] and not r.diverged


@pytest.mark.parametrize("subset, cap, steps, epochs", [(32, 1, 2, 2), (16, None, 3, 3)])
def test_the_warmup_takes_epochs_of_equal_length_evaluates_once_and_leaves_the_run_folder_to_the_run(
        tmp_path, monkeypatch, subset, cap, steps, epochs):
    """Context._warmup_config: ``steps`` steps in as few equal epochs as an epoch allows (the cap
    of 1, or 2 batches of 8 out of 16 samples), evaluated once at its end; spec.out is the run proper's.
    By hand: 2 steps at 1 an epoch take 2 epochs of 1; 3 steps at 2 an epoch take 3 epochs of 1."""
    ctx = Context("warm", "smoke", tmp_path, device="cpu", log=lambda s: None)
    data = ctx.data("fake", batch_size=8, subset=subset, image_size=8, in_channels=1)
    configs = _fake_fits(monkeypatch, ctx, ([], [1.0] * steps, False), ([], [1.0], False))
    spec = replace(_warm_spec(max_steps_per_epoch=cap, out=tmp_path / "run"), warmup_steps=steps)
    ctx.train(spec, data)
    warm, main = configs
    assert (warm.epochs, warm.max_steps_per_epoch, warm.eval_every) == (epochs, steps // epochs, epochs)
    assert warm.out is None and main.out == str(tmp_path / "run")


def test_params_counts_the_trainable_parameters_only(tmp_path, monkeypatch):
    ctx = Context("frozen", "smoke", tmp_path, device="cpu", log=lambda s: None)
    data = ctx.data("fake", batch_size=8, subset=32, image_size=8, in_channels=1)
    _fake_fits(monkeypatch, ctx, ([], [1.0], False))
    model = cifar_net(8, widths=(2, 4, 8))(10, 1)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("fc."))
    r = ctx.train(RunSpec("head", batch_size=8), data, model=model)
    assert r.params == 8 * 10 + 10  # the head alone: 8 features to 10 classes, and its biases


def test_cifar_net_starts_every_block_as_the_identity_when_asked_and_refuses_it_for_a_plain_net():
    from resnet_lab.models.resnet import BasicBlock

    for zero in (True, False):
        blocks = [m for m in cifar_net(8, widths=(2, 4, 8), zero_init_residual=zero)(10, 1).modules()
                  if isinstance(m, BasicBlock)]
        assert len(blocks) == 3 and all(bool((b.bn2.weight == 0).all()) == zero for b in blocks)
    with pytest.raises(ValueError, match="zero_init_residual=True would cut a plain net"):
        cifar_net(8, residual=False, zero_init_residual=True)


def test_cifar_net_shortcuts_are_option_a_identities_with_no_parameters_of_their_own():
    # He et al. 2015 sec. 4.2: option A (zero-padded identity) shortcuts add no parameters, so the
    # residual net has exactly its plain twin's; projection shortcuts (option B) would add 1x1 convs
    def count(model):
        return sum(p.numel() for p in model.parameters())

    assert count(cifar_net(8, widths=(2, 4, 8))(10, 1)) == count(cifar_net(8, widths=(2, 4, 8), residual=False)(10, 1))


def test_a_run_result_for_results_json_leaves_the_model_out():
    import json

    from torch import nn

    r = RunResult("net", [{"epoch": 1, "test_acc": 0.5}], [1.0], 2.0, 3, model=nn.Linear(1, 1), info={"seed": 0})
    assert r.to_dict() == {"label": "net", "epochs": [{"epoch": 1, "test_acc": 0.5}], "step_losses": [1.0],
                           "seconds": 2.0, "params": 3, "diverged": False, "info": {"seed": 0}}
    json.dumps(r.to_dict())  # JSON-ready as it is


def test_context_data_draws_and_orders_with_the_contexts_seed_unless_given_one(tmp_path, monkeypatch):
    import resnet_lab.experiments.runner as runner

    seen, real = [], runner.load_data

    def load_data(name, **kw):
        seen.append(kw["seed"])
        return real(name, **kw)

    monkeypatch.setattr(runner, "load_data", load_data)
    ctx = Context("data", "smoke", tmp_path, device="cpu", seed=7, log=lambda s: None)
    args = dict(batch_size=8, subset=32, image_size=8, in_channels=1)
    ctx.data("fake", **args)
    ctx.data("fake", seed=2, **args)
    assert seen == [7, 2]  # Context.data's docstring: the subset draw and the order default to the context's seed


def test_a_run_that_diverged_ends_its_losses_with_nan_and_logs_it(tmp_path, monkeypatch):
    """The trainer raises at the step whose loss blew up, before its step callbacks see it: the
    runner marks that step with NaN (steps-to-target and the plots read the losses)."""
    import resnet_lab.experiments.runner as runner
    from resnet_lab.train import TrainingDiverged

    def blows_up(model, data, config, *, step_callbacks, **kw):
        for step, loss in enumerate((2.3, 2.0), 1):
            for callback in step_callbacks:
                callback({"step": step, "loss": loss})
        raise TrainingDiverged("loss is nan (test)")

    monkeypatch.setattr(runner, "train", blows_up)
    lines: list[str] = []
    ctx = Context("nan", "smoke", tmp_path, device="cpu", log=lines.append)
    data = ctx.data("fake", batch_size=8, subset=32, image_size=8, in_channels=1)
    r = ctx.train(RunSpec("net", cifar_net(8, widths=(2, 4, 8)), batch_size=8), data)
    assert r.diverged and r.epochs == [] and r.step_losses[:2] == [2.3, 2.0] and math.isnan(r.step_losses[2])
    assert len(r.step_losses) == 3 and lines[-1].endswith("no epoch completed  DIVERGED")

# --- experiments count a diverged seed at chance level (their docstrings), not at its last record ---


def _diverged_then_fine(label: str) -> SeedResults:
    """Seed 0 diverged after an epoch at 80% accuracy; seed 1 ended at 70%."""
    return SeedResults(label, [_run(0, [0.8], [1.0, math.nan], diverged=True), _run(1, [0.7], [1.0, 0.9])])


def test_degradation_counts_a_diverged_seed_at_chance_error():
    from resnet_lab.experiments import degradation

    err = degradation._error(_diverged_then_fine("plain-56"), "test_acc", classes=10)
    assert err.values == pytest.approx((0.9, 0.3))


def test_bn_batch_size_counts_a_diverged_seed_at_chance_error(tmp_path, monkeypatch):
    from resnet_lab.experiments import bn_batch_size

    ctx = Context("bn_batch_size", "smoke", tmp_path, device="cpu", log=lambda s: None)
    monkeypatch.setattr(ctx, "train_seeds", lambda spec, seeds, data=None: _diverged_then_fine(spec.label))
    errors = bn_batch_size.run(ctx).data["errors"]
    for batch in bn_batch_size.BUDGET["smoke"]["batches"]:
        assert errors[f"BN @ {batch}"] == errors[f"GN @ {batch}"] == pytest.approx([0.9, 0.3])


def test_test_samples_keeps_the_first_test_images_in_order(tmp_path):
    ctx = Context("data", "smoke", tmp_path, device="cpu", log=lambda s: None)
    args = dict(batch_size=8, subset=32, image_size=8, in_channels=1)
    full, cut = ctx.data("fake", **args).test, ctx.data("fake", test_samples=5, **args).test
    assert cut.num_samples == 5 < full.num_samples
    assert torch.equal(cut.images, full.images[:5]) and torch.equal(cut.labels, full.labels[:5])
