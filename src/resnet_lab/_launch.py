"""The `resnet-lab` command's entry point. Loading torch and the CLI takes the first seconds of every
command; a Ctrl-C then ends in the same one line and exit status as one later ("interrupted", 130),
not a traceback through torch's import. `import resnet_lab` loads nothing heavy (its names load on
first use), so this module runs before torch does."""

from __future__ import annotations

import importlib
import sys

# The modules the CLI imports whose pip package has another name.
_PIP_NAMES = {"PIL": "pillow"}


def _imports(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def main() -> int:
    try:
        from .cli import main as cli_main  # deferred: this import is what a Ctrl-C may land in
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:  # a dependency missing from this Python: pip's job, not a traceback
        if not e.name or e.name.split(".")[0] == __package__:
            raise
        top = e.name.split(".")[0]
        package = _PIP_NAMES.get(top, top)
        if e.name != top and _imports(top):  # the package imports, a part of it does not: an old or broken install
            print(f"error: resnet-lab needs {e.name}, which this Python's {package} ({sys.executable}) lacks: "
                  f"pip install --upgrade --force-reinstall {package}", file=sys.stderr)
        else:
            print(f"error: resnet-lab needs {top}, which this Python ({sys.executable}) cannot import: pip install "
                  f"{package} (or reinstall resnet-lab, which brings it)", file=sys.stderr)
        return 2
    return cli_main()
