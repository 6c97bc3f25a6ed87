"""Deterministic figure export: the same figure gives the same PNG and SVG bytes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib as mpl
from matplotlib.axes import Axes
from matplotlib.figure import Figure

_METADATA = {
    "png": {"Software": None},
    "svg": {"Date": None, "Creator": None},
    "pdf": {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None},
}


def save(
    fig: Figure | Axes,
    path_stem: str | Path,
    *,
    formats: Sequence[str] = ("png", "svg"),
    dpi: int = 150,
) -> list[Path]:
    """Write ``path_stem.png`` (``dpi``) and ``path_stem.svg``; return the paths written.

    Deterministic: no dates or version strings in the metadata, a fixed SVG hash salt (so
    generated ids repeat) and a tight bounding box. Constrained layout does not always settle
    (each draw of a figure with square panels or an outside legend moves it a pixel), so ``save``
    runs the layout engine once and then switches it off: every later save of the figure gives
    the same bytes as the first, and the same as a fresh figure from the same table. (Call
    ``fig.set_layout_engine("constrained")`` to lay it out again after editing it.) A suffix on
    ``path_stem`` that names one of ``formats`` is dropped. Parent folders are created.

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> import tempfile, os
        >>> lag = np.arange(20)
        >>> ax = gplot.decay_curves(pd.DataFrame({"cell": "gru", "lag": lag, "value": -0.2 * lag}))
        >>> paths = gplot.save(ax, os.path.join(tempfile.mkdtemp(), "decay"))
        >>> [p.suffix for p in paths]
        ['.png', '.svg']
    """
    if isinstance(fig, Axes):
        fig = fig.figure
    if not isinstance(fig, Figure):
        raise TypeError(f"save: expected a matplotlib Figure or Axes, got {type(fig).__name__}")
    stem = Path(path_stem)
    if stem.suffix.lstrip(".").lower() in formats:
        stem = stem.with_suffix("")
    stem.parent.mkdir(parents=True, exist_ok=True)
    _freeze_layout(fig)
    out = []
    with mpl.rc_context({"svg.hashsalt": "gradlab", "svg.id": None, "svg.fonttype": "path"}):
        for fmt in formats:
            path = stem.with_name(f"{stem.name}.{fmt}")
            fig.savefig(path, format=fmt, dpi=dpi, bbox_inches="tight", pad_inches=0.05,
                        metadata=_METADATA.get(fmt), facecolor="white")  # fmt: skip
            out.append(path)
    return out


def _freeze_layout(fig: Figure) -> None:
    engine = fig.get_layout_engine()
    if engine is None or type(engine).__name__ == "PlaceHolderLayoutEngine":
        return
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
