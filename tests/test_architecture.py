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
    allowed are optional dependencies and deferred heavy ones (torchvision: seconds that every
    command would pay), marked with a comment that says so on the line."""
    hidden = []
    for path in sorted(SRC.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for fn in _functions(ast.parse(source)):
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not any(
                    mark in lines[node.lineno - 1] for mark in ("optional", "deferred")):
                    hidden.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not hidden, "imports inside functions:\n" + "\n".join(hidden)


def test_the_cli_and_in_memory_training_do_not_import_torchvision(tmp_path):
    """torchvision's import pulls in torch._dynamo and triton (2-3 s on a 2-core CPU, more than torch
    itself), so every command would pay it; only image folders, downloads and torchvision weights
    need it, and they import it when they run."""
    code = (
        "import sys\n"
        "import resnet_lab.cli\n"
        "from resnet_lab import TrainConfig, create_model, load_data, train\n"
        "data = load_data('fake', batch_size=32, image_size=8, in_channels=1)\n"
        "model = create_model('resnet8_fast', num_classes=len(data.info.classes), in_channels=1, small_input=True)\n"
        "train(model, data, TrainConfig(epochs=1, max_steps_per_epoch=2, progress=False))\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))\n"
        # and the deferred import still works where it is needed: an image folder's transforms
        "from resnet_lab.data.transforms import folder_transforms\n"
        "print(type(folder_transforms(32, 3, (0.5,) * 3, (0.5,) * 3, train=True)).__module__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-2] == "[]"
    assert done.stdout.strip().splitlines()[-1].startswith("torchvision.transforms")


def test_importing_the_library_loads_neither_matplotlib_nor_the_cli(tmp_path):
    """matplotlib (0.2-0.5 s) loads when the first figure is drawn, not with `import resnet_lab`;
    drawing one still works."""
    code = ("import sys\nimport resnet_lab\n"
            "print(sorted(m for m in ('matplotlib', 'resnet_lab.cli') if m in sys.modules))\n"
            "from resnet_lab.figures import new_figure\nfig, ax = new_figure()\n"
            "print('matplotlib' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["[]", "True"]
