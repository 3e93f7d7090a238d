"""Words for what the package prints and draws: one plural rule for every message."""

from __future__ import annotations

__all__ = ["count"]


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
