"""Singular values of Jacobian products: does an init keep them near 1?"""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from . import _style as S
from ._check import require
from ._stats import check_band, summarise


def singular_value_spectra(
    df: pd.DataFrame,
    fig: Figure | None = None,
    *,
    band: str | None = "minmax",
    title: str = r"Singular values of the $k$-step Jacobian $\partial h_{t+k}/\partial h_t$",
) -> Figure:
    """Sorted singular values per init, one panel per (cell, product length k); log y.

    Required columns: ``init``, ``cell``, ``k`` (number of Jacobians in the product), ``index``
    (singular value rank, 0 or 1 = largest), ``value`` (singular value, > 0; others are not
    drawable on a log axis and are dropped). Optional ``seed``: the line is the geometric mean
    over seeds at each rank, the band min–max (``band="minmax"``) or a 95% CI in log space.
    A dotted line marks σ = 1 (norm preserving): orthogonal inits stay on it, others fan out.

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> df = pd.DataFrame({"init": "default", "cell": "rnn_tanh", "k": np.repeat([1, 10], 8),
        ...                    "index": np.tile(np.arange(8), 2),
        ...                    "value": np.r_[0.9 ** np.arange(8), 0.9 ** (10 * np.arange(1, 9))]})
        >>> fig = gplot.singular_value_spectra(df)
    """
    func = "singular_value_spectra"
    require(df, func, ["init", "cell", "k", "index", "value"], optional=["seed"])
    check_band(band, func)
    cells = S.cells_in(df["cell"])
    ks = S.ordered(df["k"])
    inits = S.inits_in(df["init"])
    colors = S.init_colors(inits)
    summ = summarise(df, ["cell", "k", "init", "index"], band=band, log=True)
    if summ.empty:
        raise ValueError(f"{func}: no positive, finite singular values to draw")
    base = int(df["index"].min())

    fig = S.new_figure(fig, (2.9 * len(ks) + 2.2, 2.5 * len(cells) + 0.6))
    axes = S.grid(fig, len(cells), len(ks), sharex=True, sharey=True)
    for i, cell in enumerate(cells):
        for j, k in enumerate(ks):
            ax = axes[i, j]
            part = summ[(summ["cell"] == cell) & (summ["k"] == k)]
            for init in inits:
                s = part[part["init"] == init]
                if s.empty:
                    continue
                x = s["index"].to_numpy(float)
                ax.plot(x, s["mean"], color=colors[init], linewidth=S.LINEWIDTH,
                        label=S.init_label(init), gid="data")  # fmt: skip
                if band is not None and s["n"].max() > 1:
                    ax.fill_between(x, s["lo"], s["hi"], color=colors[init],
                                    alpha=S.BAND_ALPHA, linewidth=0, gid="band")  # fmt: skip
            ax.axhline(1.0, gid="reference", **S.REFERENCE)
            ax.set_yscale("log")
            ax.set_title(f"{S.cell_label(cell)}, $k = {k}$", fontsize="medium")
            ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
            if i == len(cells) - 1:
                ax.set_xlabel(f"rank $i$ ({base} = largest)")
            if j == 0:
                ax.set_ylabel(r"singular value $\sigma_i$")
    handles = [S.line_handle(S.init_label(i), color=colors[i]) for i in inits]
    handles.append(S.line_handle(r"$\sigma = 1$ (norm preserving)", **S.REFERENCE))
    n = int(summ["n"].max())
    if band is not None and n > 1:
        handles.append(S.band_handle(S.band_text(band, n, geometric=True)))
    S.figure_legend(fig, handles, title="initialisation", fontsize="small")
    fig.suptitle(title)
    return fig
