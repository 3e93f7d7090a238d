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
