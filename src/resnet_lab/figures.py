"""Figures as PNG files without pyplot: no global backend is switched and no window can open.

Every plot of the package (training curves, confusion matrices, gradient flow, experiment
figures) is a :class:`matplotlib.figure.Figure` made here and written with :func:`save_png`,
atomically like every other file of a run.
"""

from __future__ import annotations

import os
from pathlib import Path

from typing import TYPE_CHECKING

from .runs import OUTPUT_MARK, atomic_write, check_output_file

if TYPE_CHECKING:  # matplotlib loads when the first figure is drawn, not with `import resnet_lab`
    from matplotlib.figure import Figure

__all__ = ["check_png_path", "new_figure", "save_png"]


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6.4, 4.0)):
    """A figure and its axes (one Axes, or an array of them), as ``pyplot.subplots`` returns."""
    from matplotlib.figure import Figure  # deferred: see the import above

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols)


def save_png(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write ``fig`` as a PNG at ``path`` (atomically) and return the path."""
    software = {"Software": OUTPUT_MARK}  # the mark that lets a later command replace it (runs.is_own_output)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight",
                                                      metadata=software))


def check_png_path(path: str | os.PathLike) -> Path:
    """Refuse a plot path given by a caller that would destroy something (a run's file, a file
    resnet-lab did not write, a name without .png): the rule of every output the CLI writes, kept
    by the public plotting functions too. Call it before the work that makes the figure."""
    return check_output_file(path, kind="PNG plot", suffixes=(".png",))
