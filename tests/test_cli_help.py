"""`resnet-lab COMMAND --help` states each option's default once, and the one the code uses.

The formatter appends "(default: X)" to every help text that does not format ``%(default)``
itself; a text that states its default in its own words ends with ``cli._NO_DEFAULT`` so it is not
also given "(default: None)". Options without a help text show no default at all.
"""

from __future__ import annotations

import argparse
import re
import types

import pytest

from resnet_lab import cli
from resnet_lab.cli import build_parser
from resnet_lab.data import load_data


def _commands() -> dict[str, argparse.ArgumentParser]:
    return build_parser()._subparsers._group_actions[0].choices  # argparse keeps sub-parsers here


COMMANDS = sorted(_commands())


def _helps(command: str) -> list[tuple[str, argparse.Action, str]]:
    """``(option, action, help as --help renders it, on one line)`` for each argument but -h."""
    sub = _commands()[command]
    formatter = sub._get_formatter()
    out = []
    for action in sub._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        text = formatter._expand_help(action) if action.help else ""
        out.append(("/".join(action.option_strings) or action.dest, action, " ".join(text.split())))
    return out


def _help(command: str, option: str) -> str:
    return next(text for name, _, text in _helps(command) if name == option)


def _is_flag(action: argparse.Action) -> bool:
    return isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._VersionAction))


def test_the_commands_are_all_here():
    assert {"models", "summary", "train", "lr-find", "finetune", "experiment", "evaluate", "predict", "export",
            "report"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_argument_has_a_help_text(command):
    _commands()[command].format_help()  # renders: no stray % in any text
    empty = [name for name, _, text in _helps(command) if not text.strip()]
    assert not empty, f"{command}: no help text for {empty}"


@pytest.mark.parametrize("command", COMMANDS)
def test_no_help_text_shows_default_none_or_states_its_default_twice(command):
    for name, action, text in _helps(command):
        assert "(default: None)" not in text, (
            f"{command} {name}: '(default: None)'; say what leaving it out means and end the text with _NO_DEFAULT")
        if "(default: " in text:  # the formatter's; the text must not state one too
            own = text.replace(f"(default: {action.default})", "")
            assert not re.search(r"\bdefaults?\b|when not given", own), f"{command} {name}: two defaults: {text}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_each_default_value(command):
    for name, action, text in _helps(command):
        if action.default is None or action.default is argparse.SUPPRESS or _is_flag(action):
            continue
        assert str(action.default) in text, f"{command} {name}: default {action.default!r} not in {text!r}"


@pytest.fixture
def finetune_lr(monkeypatch):
    """The lr ``cmd_finetune`` hands the trainer for the given flags (no weights read, no data loaded)."""
    seen = {}
    monkeypatch.setattr(cli, "load_source", lambda *a, **k: types.SimpleNamespace(notes=[]))
    monkeypatch.setattr(cli, "with_source_preprocessing", lambda config, source: config)
    info = types.SimpleNamespace(classes=["a", "b"], input_size=(3, 8, 8))
    monkeypatch.setattr(cli, "load_data", lambda config: types.SimpleNamespace(info=info))
    plan = types.SimpleNamespace(describe=lambda: "plan")
    monkeypatch.setattr(cli, "transfer_model", lambda *a, **k: (None, plan))

    def fake_finetune(model, data, config, plan, freeze_epochs=0):
        seen["lr"] = config.lr
        return types.SimpleNamespace(interrupted=True)

    monkeypatch.setattr(cli, "finetune", fake_finetune)

    def run(*flags: str) -> float:
        args = build_parser().parse_args(["finetune", "--from", "x", "--strategy", "all", "--dataset", "fake",
                                          "--device", "cpu", *flags])
        assert cli.cmd_finetune(args) == 130  # fake_finetune's "interrupted"
        return seen["lr"]

    return run


def _train_lr(*flags: str) -> float:
    args = build_parser().parse_args(["train", "--model", "resnet8", "--dataset", "fake", *flags])
    return cli._train_config(args, None).lr


def test_finetune_lr_help_names_the_rates_finetune_uses(finetune_lr):
    text = _help("finetune", "--lr")
    sgd, adamw = finetune_lr(), finetune_lr("--optimizer", "adamw")
    assert sgd == 0.01  # docs/TRANSFER.md: a tenth of the from-scratch rate
    assert f"{sgd:g} for sgd" in text and f"{adamw:g} for adamw" in text, text
    assert f"{_train_lr():g} for sgd" not in text, text  # train's rate is not finetune's
    assert finetune_lr("--lr", "0.05") == 0.05


def test_train_lr_help_names_the_rates_train_uses():
    text = _help("train", "--lr")
    assert f"{_train_lr():g} for sgd" in text and f"{_train_lr('--optimizer', 'adamw'):g} for adamw" in text, text


def test_image_size_help_covers_every_dataset_in_pixels():
    native = load_data("fake", batch_size=8).info.input_size[-1]
    for command in ("train", "lr-find", "finetune", "evaluate"):
        text = _help(command, "--image-size")
        assert "px" in text and "folder images" not in text, f"{command}: {text}"
    for command in ("train", "lr-find"):
        text = _help(command, "--image-size")
        assert all(s in text for s in ("Fashion-MNIST", "CIFAR", "fake", "28", str(native), "224")), text
    assert "trained at" in _help("evaluate", "--image-size")
    assert "weights" in _help("finetune", "--image-size")


def test_lookahead_alpha_help_states_the_interval_train_config_accepts():
    """QA 2026-12-06: the help said (0, 1] while 1 is refused."""
    from resnet_lab.train import TrainConfig
    low, high = re.search(r"in ([(\[])0, 1([)\]])", _help("train", "--lookahead-alpha")).groups()
    for end, bracket in ((0.0, low), (1.0, high)):
        try:
            TrainConfig(lookahead=2, lookahead_alpha=end)
            accepted = True
        except ValueError:
            accepted = False
        assert accepted == (bracket in "[]"), (end, bracket)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_commands_description_is_wrapped_like_the_rest_of_its_help(command):
    """QA 2026-12-06: report's description was one 184-character line (printed as written, for the
    example block), where every other command's fitted the terminal."""
    help_text = _commands()[command].format_help()
    description = help_text.split("\n\n")[1]
    assert max(len(line) for line in description.splitlines()) <= 80, description


@pytest.mark.parametrize("command", ["train", "lr-find", "summary"])
def test_small_input_alone_means_yes_in_every_command_that_takes_it(command):
    """QA 2026-12-06: summary took `--small-input` alone as yes; train and lr-find wanted a value."""
    head = ["summary", "resnet18"] if command == "summary" else [command, "--model", "resnet18", "--dataset", "fake"]
    parser = build_parser()
    alone, spelled = parser.parse_args([*head, "--small-input"]), parser.parse_args([*head, "--small-input", "yes"])
    assert alone.small_input == spelled.small_input == "yes"
    assert parser.parse_args(head).small_input == "auto"
