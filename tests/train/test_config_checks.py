"""TrainConfig's checks: run again when train() starts (a field set after the config was made used
to train unchecked: epochs=0 returned an empty History, ema=1.5 trained, eval_every=0 was a
ZeroDivisionError), lr's default by optimizer (the CLI's), and errors that name the field at fault."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from resnet_lab.train import TrainConfig, lr_find, train

from tinytrain import TinyNet, make_bundle


def _net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet()


def _quiet(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(epochs=1, progress=False, plots=False, device="cpu"), **kw})


@pytest.mark.parametrize("field, value", [("epochs", 0), ("ema", 1.5), ("momentum", 5.0), ("eval_every", 0),
                                          ("label_smoothing", 1.5), ("lr", float("nan")), ("lookahead_alpha", 1.0),
                                          ("stop_after", 2.5), ("lr_scale", {1: 1.0}), ("bf16", "no")])
def test_a_field_set_after_construction_is_checked_when_train_starts(tmp_path, field, value):
    """The same error as the constructor's for the value (the reference), before anything is written."""
    with pytest.raises((ValueError, TypeError)) as made:
        _quiet(**{field: value, **({"lookahead": 2} if field == "lookahead_alpha" else {})})
    config = _quiet(out=str(tmp_path / "run"), lookahead=2 if field == "lookahead_alpha" else 0)
    setattr(config, field, value)
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(type(made.value)) as started:
        train(net, make_bundle(), config)
    assert str(started.value) == str(made.value)
    assert not (tmp_path / "run").exists()
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items())


def test_lr_find_checks_a_mutated_config_too():
    config = _quiet()
    config.momentum = 5.0
    with pytest.raises(ValueError, match=r"momentum \(--momentum\) must be in \[0, 1\), got 5.0"):
        lr_find(_net(), make_bundle(), config, steps=3)


def test_config_stays_mutable_and_a_good_change_trains():
    config = _quiet()
    config.epochs = 2  # notebooks change configs in place: still allowed
    assert [r["epoch"] for r in train(_net(), make_bundle(), config, log=lambda s: None).epochs] == [1, 2]


def test_lr_defaults_by_optimizer_as_the_cli_does():
    """docs: 0.1 for sgd, 1e-3 for adamw when lr is not given (the CLI's train, cli._TRAIN_LR)."""
    from resnet_lab.cli import _TRAIN_LR

    assert TrainConfig().lr == _TRAIN_LR["sgd"] == 0.1
    assert TrainConfig(optimizer="adamw").lr == _TRAIN_LR["adamw"] == 1e-3
    assert TrainConfig(optimizer="adamw", lr=0.01).lr == 0.01  # a given rate is kept
    assert isinstance(TrainConfig(lr=None).lr, float)
    adamw = TrainConfig(optimizer="adamw")
    assert dataclasses.replace(adamw, epochs=3).lr == 1e-3  # replace keeps the rate...
    assert dataclasses.replace(TrainConfig(), optimizer="adamw", lr=None).lr == 1e-3  # ...None takes the new default
    config = TrainConfig()
    config.optimizer, config.lr = "adamw", None  # the same in place: resolved when train() checks it
    config.check()
    assert config.lr == 1e-3


def test_adamw_default_lr_is_what_the_optimizer_runs_saves_and_resumes_with(tmp_path):
    """The rate reaches torch's AdamW, model.json records it, and a resume with lr left out matches
    the saved recipe (a resume with another lr is refused)."""
    out = tmp_path / "run"
    recipe = dict(optimizer="adamw", schedule="constant", epochs=2, out=str(out))
    train(_net(), make_bundle(), _quiet(**recipe, stop_after=1), log=lambda s: None)
    assert json.loads((out / "model.json").read_text())["train_config"]["lr"] == 1e-3
    history = train(_net(), make_bundle(), _quiet(**recipe, resume=True), log=lambda s: None)
    assert [(r["epoch"], r["lr"]) for r in history.epochs] == [(1, 1e-3), (2, 1e-3)]
    with pytest.raises(ValueError, match=r"--lr 0.001"):
        train(_net(), make_bundle(), _quiet(**recipe, lr=0.1, resume=True), log=lambda s: None)


@pytest.mark.parametrize("kw, error, message", [
    ({"epochs": float("nan")}, ValueError, "epochs (--epochs) must be >= 1, got nan"),
    ({"epochs": True}, TypeError, "TrainConfig.epochs must be an int, got True"),
    ({"stop_after": True}, TypeError, "TrainConfig.stop_after must be an int or None, got True"),
    ({"stop_after": 2.5}, ValueError, "stop_after (--stop-after) must be between 1 and epochs (10), got 2.5 (a whole number of epochs)"),
    ({"lr_scale": {1: 1.0}}, TypeError,
     "lr_scale keys must be parameter-name prefixes (str), e.g. {'fc': 10.0}, got 1"),
])
def test_errors_name_the_field_at_fault(kw, error, message):
    with pytest.raises(error) as e:
        TrainConfig(**kw)
    assert str(e.value) == message


def test_warmup_still_weighed_against_epochs():
    with pytest.raises(ValueError, match=r"warmup_epochs \(--warmup-epochs\) must be between 0 and epochs \(2\), got 3"):
        TrainConfig(epochs=2, warmup_epochs=3.0)
    assert math.isclose(TrainConfig(epochs=2, warmup_epochs=2.0).warmup_epochs, 2.0)


def test_no_nesterov_with_momentum_0_is_refused_as_plain_sgd_either_way(tmp_path, capsys):
    from resnet_lab.cli import main  # deferred: only this test drives the CLI
    from resnet_lab.train import build_optimizer  # deferred, as above
    # the reference: with momentum 0 the optimizer is plain SGD whether nesterov is asked for or not
    groups = [[{k: v for k, v in g.items() if k != "params"} for g in build_optimizer(_net(), momentum=0.0,
               nesterov=nesterov).param_groups] for nesterov in (False, True)]
    assert groups[0] == groups[1] and not any(g["nesterov"] for g in groups[1])
    with pytest.raises(ValueError, match=r"nesterov=False \(--no-nesterov\) does nothing with momentum 0 .*leave it out"):
        TrainConfig(momentum=0.0, nesterov=False)
    assert TrainConfig(momentum=0.0).nesterov and not TrainConfig(nesterov=False).nesterov  # each alone is fine
    argv = ["lr-find", "--model", "resnet8", "--dataset", "fake", "--subset", "32", "--batch-size", "16", "--steps", "2",
            "--no-progress", "--momentum", "0", "--no-nesterov"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: nesterov=False (--no-nesterov) does nothing"), err


def test_a_run_saved_with_no_nesterov_and_momentum_0_resumes_with_momentum_0(tmp_path):
    """Runs saved before the refusal recorded nesterov False: the command without --no-nesterov resumes them."""
    run = tmp_path / "run"
    train(_net(), make_bundle(), _quiet(epochs=2, stop_after=1, momentum=0.0, out=str(run)))
    state = torch.load(run / "train_state.pt", weights_only=False)
    state["recipe"]["nesterov"] = False  # as `--momentum 0 --no-nesterov` saved it
    torch.save(state, run / "train_state.pt")
    with pytest.raises(ValueError, match="recipe nesterov: run has False, now True"):  # with momentum it matters
        train(_net(), make_bundle(), _quiet(epochs=2, momentum=0.5, out=str(run), resume=True))
    train(_net(), make_bundle(), _quiet(epochs=2, momentum=0.0, out=str(run), resume=True))
    assert json.loads((run / "model.json").read_text())["epoch"] == 2


def test_a_nesterov_run_with_momentum_resumed_with_momentum_0_names_both_differences(tmp_path):
    """Plain SGD "either way" needs momentum 0 on both sides: a --no-nesterov run with momentum 0.5
    resumed with --momentum 0 (nesterov then True) differs in both, and the way back names both flags."""
    run = tmp_path / "run"
    train(_net(), make_bundle(), _quiet(epochs=2, stop_after=1, momentum=0.5, nesterov=False, out=str(run)))
    with pytest.raises(ValueError, match="recipe momentum: run has 0.5, now 0.0; recipe nesterov: run has False, "
                                         r"now True\).*--momentum 0\.5 --no-nesterov"):
        train(_net(), make_bundle(), _quiet(epochs=2, momentum=0.0, out=str(run), resume=True))


def test_a_resume_with_an_lr_one_part_in_a_million_off_is_refused_and_rounding_is_not(tmp_path):
    """check_resume compares floats "to rounding" (recipe_values_differ's docstring): a typed lr that
    differs by 1e-6 of itself is another recipe; a difference of float rounding (1e-15 relative) is not."""
    from resnet_lab.train.checkpoint import recipe_values_differ  # deferred: only this test reads it
    assert recipe_values_differ(0.1, 0.1 * (1 + 1e-6)) and not recipe_values_differ(0.1, 0.1 * (1 + 1e-15))
    assert recipe_values_differ([0.1, 0.2], [0.1]) and recipe_values_differ([1, 2], [1, 2, 3])
    run = tmp_path / "run"
    train(_net(), make_bundle(), _quiet(epochs=2, stop_after=1, lr=0.1, out=str(run)))
    with pytest.raises(ValueError, match=r"recipe lr: run has 0\.1, now 0\.1000001"):
        train(_net(), make_bundle(), _quiet(epochs=2, lr=0.1000001, out=str(run), resume=True))


@pytest.mark.parametrize("kw, message", [
    ({"label_smoothing": 1.0}, r"label_smoothing \(--label-smoothing\) must be in \[0, 1\), got 1.0"),
    ({"momentum": 1.0}, r"momentum \(--momentum\) must be in \[0, 1\), got 1.0"),
    ({"max_steps_per_epoch": 0}, r"max_steps_per_epoch must be >= 1 \(or None for whole epochs\), got 0"),
    ({"tensorboard": True}, r"tensorboard \(--tensorboard\) writes its logs under the run directory: set out"),
    ({"lr": 0.0}, r"lr \(--lr\) must be a finite number > 0, got 0.0"),
    ({"grad_clip": 0.0}, r"grad_clip \(--grad-clip\) must be a finite number > 0 \(or unset for no clipping\), got 0.0"),
    ({"lr_scale": {"fc": math.inf}}, r"lr_scale factors must be finite and >= 0, got \{'fc': inf\}"),
    ({"out": "  "}, r"out \(--out\) is an empty string: give a run directory, or None"),
    ({"resume": True}, r"resume \(--resume\) needs the run directory to continue: set out \(--out DIR\)"),
    ({"device": "meta"}, r"unknown device 'meta' \(--device\): use auto, cpu, cuda, cuda:N or mps"),
    ({"device": "xla"}, r"unknown device 'xla' \(--device\): use auto, cpu, cuda, cuda:N or mps"),
])
def test_the_edge_of_each_documented_range_is_refused(kw, message):
    """The open ends of the ranges the errors (and docs/TENSORBOARD.md: "--tensorboard needs --out")
    state: label smoothing 1 trains toward uniform targets, momentum 1 never forgets a gradient, 0
    steps an epoch trains nothing; only the values beyond them were tested. Likewise lr 0 and
    grad_clip 0 (every step would be zero), an infinite factor, a blank out, resume with nothing to
    resume from, and torch device kinds outside the listed ones (meta holds no data, xla is not ours)."""
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kw)


@pytest.mark.parametrize("kw", [{"label_smoothing": 0.0}, {"momentum": 0.0}, {"max_steps_per_epoch": 1},
                                {"epochs": 3, "stop_after": 3}, {"epochs": 2, "progressive_resize": 4},
                                {"norm_lr_scale": 0.0}, {"lr_scale": {"fc": 0.0}},
                                {"device": "mps"}])
def test_the_closed_end_of_each_documented_range_is_taken(kw):
    """stop_after "between 1 and epochs" takes epochs itself (without out too: it pauses nothing),
    progressive_resize its minimum side (4 px), a factor of 0 "finite and >= 0" (a part trained
    at rate 0), and each device name the error lists ("auto, cpu, cuda, cuda:N or mps": whether the
    machine has it is checked when the run starts)."""
    config = TrainConfig(**kw)
    assert all(getattr(config, k) == v for k, v in kw.items())


def test_a_factor_of_0_leaves_exactly_those_parameters_where_they_were(tmp_path):
    """lr_scale {"fc": 0} and norm_lr_scale 0 are taken (factors "finite and >= 0"): the parameters
    they name train at rate 0, weight decay included, while the rest move."""
    for kw, still in (({"lr_scale": {"fc": 0.0}}, {"fc.weight", "fc.bias"}),
                      ({"norm_lr_scale": 0.0}, {"bn.weight", "bn.bias"})):
        net = _net()
        before = {k: v.clone() for k, v in net.named_parameters()}
        train(net, make_bundle(), _quiet(**kw), log=lambda s: None)
        moved = {k for k, v in net.named_parameters() if not torch.equal(v, before[k])}
        assert moved == set(before) - still, kw


def test_every_default_is_the_cli_trains_default():
    """The recipe the Python API trains when a field is left out is the one `resnet-lab train` trains
    when its flag is left out (README): the parser's defaults, written apart from the dataclass's,
    are the reference. Only out differs (the CLI always has a run directory) and nothing here sets it."""
    from resnet_lab import cli  # deferred: only this test reads the parser

    args = cli.build_parser().parse_args(["train", "--model", "resnet8", "--dataset", "fake"])
    made, default = cli._train_config(args, None), TrainConfig()
    assert {f.name: getattr(default, f.name) for f in dataclasses.fields(TrainConfig)} == \
        {f.name: getattr(made, f.name) for f in dataclasses.fields(TrainConfig)}


@pytest.mark.parametrize("seed", [2 ** 64, -(2 ** 63) - 1])
def test_a_seed_torch_cannot_take_is_refused_when_made(seed):
    """The reference is torch's own generator, which overflows on these seeds; the config names the
    flag and the range when made, instead of train() failing on "Overflow when unpacking long"."""
    with pytest.raises((RuntimeError, ValueError), match="Overflow"):
        torch.Generator().manual_seed(seed)
    with pytest.raises(ValueError, match=r"seed \(--seed\) must be an integer from -9223372036854775808 to "
                                         r"18446744073709551615, got"):
        TrainConfig(seed=seed)
    assert TrainConfig(seed=2 ** 64 - 1).seed == 2 ** 64 - 1  # the largest torch takes
    torch.Generator().manual_seed(2 ** 64 - 1)
