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
    """tqdm's ``disable`` for a bar that ``progress`` asks for: None, tqdm's own "not on a non-TTY"
    (it asks the stream the bar draws on, so a notebook's widget bar still draws), or True when
    ``progress`` is off."""
    return None if progress else True


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (stderr, where bars draw, when None) is a terminal: for the bars of other
    libraries, which take a plain yes or no (torch's download bar)."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False
