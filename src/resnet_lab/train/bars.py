"""When a progress bar is drawn: on a terminal, never into a file or a pipe.

tqdm redraws its bar with carriage returns; written to a log (``resnet-lab train ... 2> log``) or a
pipe, each redraw stays there as junk. Off a terminal the bars are left out and the one summary
line per epoch is all there is, as with ``--no-progress``.
"""

from __future__ import annotations

import sys
from typing import TextIO

__all__ = ["bar_disable", "on_terminal"]


def bar_disable(progress: bool) -> bool | None:
    """tqdm's ``disable`` for a bar that ``progress`` asks for: True when it is off; False inside
    IPython (Jupyter, qtconsole, Spyder), whose output is no terminal but shows a bar, a text one too
    when tqdm.auto falls back to it without ipywidgets; else None, tqdm's own "not on a non-TTY" (it
    asks the stream the bar draws on)."""
    if not progress:
        return True
    return False if _in_ipython() else None


def _in_ipython() -> bool:
    shell = sys.modules.get("IPython")  # imported by the kernel itself; never imported here
    get = getattr(shell, "get_ipython", None)
    return bool(get and get() is not None)


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stderr, where bars draw, when None) is a terminal: for the bars of other
    libraries, which take a plain yes or no (torch's download bar)."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False
