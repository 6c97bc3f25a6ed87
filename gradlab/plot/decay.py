"""Gradient decay with lag: curves per cell (`decay_curves`) and a table heatmap (`decay_heatmap`)."""

from __future__ import annotations

from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from . import _style as S
from ._check import one_quantity, require
from ._stats import check_band, slope, summarise

GRAD_NORM_LABEL = r"$\log_{10}\,\|\partial L/\partial h_{T-k}\|_2$"


def decay_curves(
    df: pd.DataFrame,
    ax: Axes | None = None,
    fits: bool = True,
    *,
    quantity: str | None = None,
    band: str | None = "ci",
    ylabel: str = GRAD_NORM_LABEL,
    title: str = "Gradient norm by lag",
) -> Axes:
    """log10 gradient norm against lag, one line per cell (and per init, by line style).

    Required columns: ``cell``, ``lag`` (k = T - t, steps), ``value`` (log10 ‖∂L/∂h_{T-k}‖₂).
    Optional: ``seed`` (the line is the mean over seeds, the band a 95% CI of it, or min–max with
    ``band="minmax"``), ``init`` (one line style per init), ``quantity`` (pick one with
    ``quantity=``). With ``fits`` the least-squares slope of value on lag (all seeds pooled) of
    each line is written in the legend in log10 per step and drawn as a thin dashed line.

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> lag = np.arange(50)
        >>> df = pd.concat([pd.DataFrame({"cell": c, "lag": lag, "value": r * lag})
        ...                 for c, r in [("rnn_tanh", -0.3), ("lstm", -0.2)]])
        >>> ax = gplot.decay_curves(df)  # legend: fitted rate in log10 per step
        >>> ax.get_xlabel()
        'lag $k = T - t$ (steps)'
    """
    func = "decay_curves"
    require(df, func, ["cell", "lag", "value"], optional=["seed", "init", "quantity"])
    check_band(band, func)
    df, _ = one_quantity(df, func, quantity)
    fig, ax = S.new_axes(ax, (5.6, 3.8))

    cells = S.cells_in(df["cell"])
    colors = S.cell_colors(cells)
    inits = S.inits_in(df["init"]) if "init" in df.columns else [None]
    styles = S.linestyles(inits)
    keys = ["cell", "init", "lag"] if "init" in df.columns else ["cell", "lag"]
    summ = summarise(df, keys, band=band)
    n_max = int(summ["n"].max())

    for cell in cells:
        for init in inits:
            rows = df[df["cell"] == cell]
            srows = summ[summ["cell"] == cell]
            if init is not None:
                rows, srows = rows[rows["init"] == init], srows[srows["init"] == init]
            if srows.empty:
                continue
            name = S.cell_label(cell)
            if init is not None and len(inits) > 1:
                name = f"{name}, {S.init_label(init)}"
            x = srows["lag"].to_numpy(float)
            label = name
            if fits:
                b, a = slope(rows["lag"], rows["value"])
                if np.isfinite(b):
                    label = f"{name}: {S.fmt_num(b, 2)} log₁₀/step"
                    xs = np.array([x.min(), x.max()])
                    ax.plot(xs, a + b * xs, color=colors[cell], linestyle="--",
                            linewidth=0.9, alpha=0.9, gid="fit", label="_fit")  # fmt: skip
            ax.plot(x, srows["mean"], color=colors[cell], linestyle=styles[init],
                    linewidth=S.LINEWIDTH, label=label, gid="data")  # fmt: skip
            if band is not None and srows["n"].max() > 1:
                ax.fill_between(x, srows["lo"], srows["hi"], color=colors[cell],
                                alpha=S.BAND_ALPHA, linewidth=0, gid="band")  # fmt: skip

    handles, _ = ax.get_legend_handles_labels()
    if fits:
        handles.append(S.line_handle("thin dashed: least-squares fit", color="0.3",
                                     linestyle="--", linewidth=0.9))  # fmt: skip
    if band is not None and n_max > 1:
        handles.append(S.band_handle(S.band_text(band, n_max)))
    ax.legend(handles=handles, fontsize="small", loc="best")
    ax.set_xlabel(S.LAG_LABEL)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, linewidth=0.4, alpha=0.5)
    return ax


def decay_heatmap(
    df: pd.DataFrame,
    row: str,
    col: str,
    ax: Axes | None = None,
    quantity_label: str = "decay rate (log₁₀ per step)",
    *,
    value: str = "value",
    quantity: str | None = None,
    fmt: str = "{:.3g}",
    cmap: str | None = None,
    title: str | None = None,
) -> Axes:
    """One number per (row, col) pair as an annotated heatmap, e.g. row="init", col="cell".

    Required columns: ``row``, ``col`` (the names passed) and ``value``. Rows sharing a (row, col)
    pair (seeds) are averaged. Values of both signs get a diverging map centred at 0 (red > 0),
    one sign a sequential map. ``quantity_label`` labels the colour bar and the title. Cells
    without rows read "n/a"; infinite values (log10 of an exactly zero gradient, a memory longer
    than the window) read "−∞" / "∞"; both are grey.

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> df = pd.DataFrame({"init": ["default", "default", "chrono", "chrono"],
        ...                    "cell": ["lstm", "gru", "lstm", "gru"],
        ...                    "value": [-0.2, -0.2, -0.01, -0.02]})
        >>> ax = gplot.decay_heatmap(df, row="init", col="cell")
    """
    func = "decay_heatmap"
    require(df, func, [row, col, value], optional=["seed", "quantity"], numeric=[value])
    df, _ = one_quantity(df, func, quantity)
    mean = df.groupby([row, col], sort=True, observed=True)[value].mean()
    rows = S.inits_in(mean.index.get_level_values(0)) if row == "init" else None
    rows = S.cells_in(mean.index.get_level_values(0)) if row == "cell" else rows
    rows = rows or S.ordered(mean.index.get_level_values(0))
    cols = S.inits_in(mean.index.get_level_values(1)) if col == "init" else None
    cols = S.cells_in(mean.index.get_level_values(1)) if col == "cell" else cols
    cols = cols or S.ordered(mean.index.get_level_values(1))
    M = np.full((len(rows), len(cols)), np.nan)
    for (r, c), v in mean.items():
        M[rows.index(r), cols.index(c)] = v

    fig, ax = S.new_axes(ax, (1.3 * len(cols) + 2.6, 0.55 * len(rows) + 1.9))
    finite = M[np.isfinite(M)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if lo < 0 < hi:
        m = max(-lo, hi)
        norm = mpl.colors.Normalize(-m, m)
        cmap = cmap or "RdBu_r"
    else:
        norm = mpl.colors.Normalize(lo, hi if hi > lo else lo + 1e-12)
        cmap = cmap or "viridis"
    cm = _cmap(cmap).with_extremes(bad="0.85")
    mesh = ax.pcolormesh(np.ma.masked_invalid(M), cmap=cm, norm=norm, edgecolors="white",
                         linewidth=1.0)  # fmt: skip
    for i in range(len(rows)):
        for j in range(len(cols)):
            v = M[i, j]
            if np.isfinite(v):
                rgba = cm(norm(v))
                lum = 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2]
                text = fmt.format(v).replace("-", S.MINUS)
                color = "black" if lum > 0.5 else "white"
            elif np.isinf(v):  # e.g. log10 of an exactly zero gradient
                text, color = ("∞" if v > 0 else S.MINUS + "∞"), "0.3"
            else:
                text, color = "n/a", "0.3"
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize="small",
                    color=color)  # fmt: skip
    ax.set_xticks(np.arange(len(cols)) + 0.5, [S.tick_label(col, c) for c in cols])
    ax.set_yticks(np.arange(len(rows)) + 0.5, [S.tick_label(row, r) for r in rows])
    ax.set_xlim(0, len(cols))
    ax.set_ylim(len(rows), 0)  # first row on top, as in a table
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_xlabel(S.column_label(col))
    ax.set_ylabel(S.column_label(row))
    if title is None:
        n = df["seed"].nunique() if "seed" in df.columns else 1
        title = quantity_label + (f"\nmean over {n} seeds" if n > 1 else "")
    ax.set_title(title)
    fig.colorbar(mesh, ax=ax, label=quantity_label, shrink=0.9)
    return ax


def _cmap(name: Any) -> mpl.colors.Colormap:
    if isinstance(name, mpl.colors.Colormap):
        return name
    return mpl.colormaps[name]
