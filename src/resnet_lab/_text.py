"""Words for what the package prints and draws: one plural rule for every message."""

from __future__ import annotations

import os
import signal
import sys

__all__ = ["count", "user_stacklevel"]


def count(n: int, noun: str) -> str:
    """``n`` and ``noun`` in the singular or the plural, for setups, log lines and report text: a
    smoke budget's "1 epochs" read as a typo.

    Args:
        n: how many.
        noun: the singular (``epoch``, ``step``); the plural adds an s.
    """
    return f"{n} {noun}" + ("" if n == 1 else "s")


def seeds_text(seeds) -> str:
    """``seed 0`` or ``seeds 0, 1, 2``: a setup's list of seeds, counted as :func:`count` counts."""
    seeds = list(seeds)
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(map(str, seeds))


def every_steps(n: int) -> str:
    """``every training step`` or ``every 5 training steps``: how often a probe records."""
    return "every training step" if n == 1 else f"every {n} training steps"


def interrupted_words(e: KeyboardInterrupt) -> str:
    """"interrupted"; under torchrun a SIGTERM outside training is torchrun ending the job, most often
    because another rank failed first: the words say so (they read as a Ctrl-C of the user's). A
    SIGTERM reaches a command as ``KeyboardInterrupt("signal 15")``."""
    if str(e) == f"signal {int(signal.SIGTERM)}" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return (f"rank {os.environ.get('RANK', '?')}: stopped by torchrun (SIGTERM): another process failed (its "
                "error says why) or the job was interrupted")
    return "interrupted"


def user_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` in the caller that names the first line outside
    this package: the user's ``load_data(...)``, not a line of ours some calls deeper (a fixed
    level named a line of loaders.py for load_data's callers, and a line of sys for batch_slices')."""
    frame, level = sys._getframe(1), 1
    while frame is not None and (frame.f_globals.get("__name__", "").partition(".")[0] == __name__.partition(".")[0]
                                 or frame.f_globals.get("__name__") in _WRAPPERS):
        frame, level = frame.f_back, level + 1
    return level


# Modules whose frames sit between a function of ours and its caller when a decorator wraps it
# (``@torch.no_grad()`` runs evaluate from torch.utils._contextlib): skipped as ours are, or the
# warning named torch's wrapper.
_WRAPPERS = ("torch.utils._contextlib",)
