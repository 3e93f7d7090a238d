"""The `resnet-lab` command's entry point. Loading torch and the CLI takes the first seconds of every
command; a Ctrl-C then ends in the same one line and exit status as one later ("interrupted", 130),
not a traceback through torch's import. `import resnet_lab` loads nothing heavy (its names load on
first use), so this module runs before torch does."""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from .cli import main as cli_main  # deferred: this import is what a Ctrl-C may land in
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return cli_main()
