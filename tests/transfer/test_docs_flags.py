"""The pages on transfer and data name only flags that some `resnet-lab` command has."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from resnet_lab.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]


def _options() -> set[str]:
    parser = build_parser()
    names = {o for a in parser._actions for o in a.option_strings}
    for sub in parser._subparsers._group_actions[0].choices.values():  # argparse keeps sub-parsers here
        names |= {o for a in sub._actions for o in a.option_strings}
    return names


@pytest.mark.parametrize("page", ["docs/DATA.md", "docs/TRANSFER.md"])
def test_every_flag_a_page_names_is_an_option_of_a_command(page):
    """docs/DATA.md told of runs trained with `--in-channels`, a flag no command has (the channel
    count is set in Python only, DataConfig(in_channels=...))."""
    named = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", (ROOT / page).read_text(encoding="utf-8")))
    assert named and not named - _options(), sorted(named - _options())
