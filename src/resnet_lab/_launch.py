"""The `resnet-lab` command's entry point. Loading torch and the CLI takes the first seconds of every
command; a Ctrl-C or SIGTERM then ends in the same one line and exit status as one later
("interrupted", 130), not a traceback through torch's import nor a silent kill. `import resnet_lab`
loads nothing heavy (its names load on first use), so this module runs before torch does. Once the
command is done, Ctrl-C and SIGTERM are ignored: what is left is the interpreter's shutdown (torch's
exit handlers), which a late Ctrl-C turned into a traceback after the command's last line."""

from __future__ import annotations

import contextlib
import importlib
import signal
import sys
import threading

from ._text import interrupted_words

# The modules the CLI imports whose pip package has another name.
_PIP_NAMES = {"PIL": "pillow"}


def _imports(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")  # as cli's own SIGTERM handler: interrupted_words reads it


def _shutting_down() -> None:
    """The command has ended (its output flushed): a Ctrl-C or SIGTERM from now on would land in
    torch's exit handlers ("Exception ignored in atexit callback ... KeyboardInterrupt", or a silent
    kill) and change nothing else, so both are ignored until the process ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def main() -> int:
    """Run the command line; its exit status. The process's entry point: SIGTERM acts as Ctrl-C from
    the first instant (training and the CLI install their own handlers on top of this one), and on
    the way out both are ignored for the rest of the process's life."""
    handles = threading.current_thread() is threading.main_thread()  # signals reach the main thread only
    if handles:
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        code = _command()
    except KeyboardInterrupt as e:
        if handles:  # before the line: a second Ctrl-C (users press it twice) no longer reaches the shutdown
            _shutting_down()
        print(interrupted_words(e), file=sys.stderr)
        return 130
    finally:
        if handles:  # a usage error's or --help's SystemExit too
            _shutting_down()
    # The command's last lines (a pipe holds them until now): a Ctrl-C as they appear finds the
    # command done and changes neither them nor its exit status.
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    return code


def _command() -> int:
    try:
        from .cli import main as cli_main  # deferred: this import is what a Ctrl-C may land in
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
