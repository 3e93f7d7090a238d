"""The code keeps the shape DESIGN.md draws: dependencies point one way, functions stay readable."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "resnet_lab"
MAX_FUNCTION_LINES = 80


def test_import_contracts_of_design_md_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent)) or shutil.which("lint-imports")
    if exe is None:
        pytest.skip("import-linter is not installed (pip install -e '.[dev]')")
    done = subprocess.run([exe, "--config", str(ROOT / "pyproject.toml")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_no_function_in_src_is_longer_than_80_lines_and_train_is_under_60():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for fn in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            lines = fn.end_lineno - fn.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} ({lines} lines)")
    assert not long, "functions over 80 lines:\n" + "\n".join(long)
    loop = ast.parse((SRC / "train" / "loop.py").read_text(encoding="utf-8"))
    (train,) = [fn for fn in _functions(loop) if fn.name == "train"]
    assert train.end_lineno - train.lineno + 1 < 60  # signature and docstring included


def test_imports_stand_at_the_top_of_every_module():
    """An import inside a function hides the dependency graph (and usually a cycle); the only ones
    allowed are optional dependencies, marked with a comment that says so on the line."""
    hidden = []
    for path in sorted(SRC.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for fn in _functions(ast.parse(source)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and "optional" not in lines[node.lineno - 1]:
                    hidden.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not hidden, "imports inside functions:\n" + "\n".join(hidden)

