"""Every `resnet-lab COMMAND ...` line in README.md and docs/*.md uses flags that COMMAND has, and
every name their ```python snippets import exists.

A user copies these lines; a flag renamed or dropped in the CLI but left in a document fails them
with "unrecognized arguments". The reference is the CLI's own argparse parser (what --help shows).
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
from pathlib import Path

import pytest

from resnet_lab.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# A command word, then the rest of the line up to a comment, the end of inline code or the line's end.
# "resnet-lab train: error: ..." (a quoted message, not a command line) is left out by the (?!:).
COMMAND_LINE = re.compile(r"(?:\bresnet-lab|-m resnet_lab)\s+([a-z][a-z-]*)\b(?!:)([^`#\n]*)")
FLAG = re.compile(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)")


def _flags_by_command() -> dict[str, set[str]]:
    commands = build_parser()._subparsers._group_actions[0].choices  # argparse keeps sub-parsers here
    return {name: {opt for action in sub._actions for opt in action.option_strings}
            for name, sub in commands.items() if isinstance(sub, argparse.ArgumentParser)}


def _command_lines(text: str) -> list[tuple[int, str, str]]:
    """``(line number, command, rest of the command line)``, with ``\\``-continued lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [(number, m.group(1), m.group(2))
            for number, line in enumerate(joined.splitlines(), 1) for m in COMMAND_LINE.finditer(line)]


@pytest.mark.parametrize("doc", DOCS, ids=[p.name for p in DOCS])
def test_every_flag_of_a_documented_command_line_exists(doc):
    flags = _flags_by_command()
    lines = [(n, cmd, rest) for n, cmd, rest in _command_lines(doc.read_text(encoding="utf-8")) if cmd in flags]
    unknown = [f"line ~{n}: resnet-lab {cmd} {flag}" for n, cmd, rest in lines
               for flag in FLAG.findall(rest) if flag not in flags[cmd]]
    assert not unknown, f"{doc.name} shows flags its commands do not have:\n" + "\n".join(unknown)


def test_the_check_sees_command_lines_and_their_flags():
    """The extraction itself, on a made-up document: a bad flag is found, a quoted error is not."""
    text = ("```bash\nresnet-lab train --model resnet20 \\\n    --epochz 3 --out runs/x   # note --not-a-flag\n```\n"
            "`resnet-lab train: error: unrecognized arguments: --epoch 3`, `resnet-lab evaluate RUN --tta`\n")
    lines = _command_lines(text)
    assert [(cmd, FLAG.findall(rest)) for _, cmd, rest in lines] == [
        ("train", ["--model", "--epochz", "--out"]), ("evaluate", ["--tta"])]
    assert "--epochz" not in _flags_by_command()["train"] and "--model" in _flags_by_command()["train"]


PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _documented_imports() -> list[tuple[str, str, str | None]]:
    """``(document, module, name or None)`` for each import in the documents' ```python blocks."""
    out = []
    for doc in DOCS:
        for block in PYTHON_BLOCK.findall(doc.read_text(encoding="utf-8")):
            for node in ast.walk(ast.parse(block)):
                if isinstance(node, ast.ImportFrom):
                    out += [(doc.name, node.module, alias.name) for alias in node.names]
                elif isinstance(node, ast.Import):
                    out += [(doc.name, alias.name, None) for alias in node.names]
    return out


@pytest.mark.parametrize("doc, module, name", _documented_imports())
def test_every_name_a_documented_python_snippet_imports_exists(doc, module, name):
    imported = importlib.import_module(module)
    assert name is None or hasattr(imported, name), f"{doc}: `from {module} import {name}` fails"
