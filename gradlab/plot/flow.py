"""Gradient flow maps: log10 ‖∂h_t/∂h_k‖ over (target t, source k), one panel per cell."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import _style as S
from ._check import one_quantity, require
from ._stats import edges


def flow_heatmaps(
    df: pd.DataFrame,
    fig: Figure | None = None,
    quantity: str | None = None,
    *,
    colorbar_label: str | None = None,
    title: str = r"Jacobian norms between steps (red: grows, blue: shrinks)",
) -> Figure:
    """log10 ‖∂h_t/∂h_k‖ as a lower-triangular heatmap per cell, on one shared colour scale.

    Required columns: ``cell``, ``t`` (target step), ``k`` (source step, k ≤ t), ``value``
    (log10 of the Jacobian norm). Optional: ``quantity`` (e.g. spectral or Frobenius norm; pick
    one with ``quantity=``, exact or unambiguous substring), ``seed`` (averaged in log space).
    The map is diverging and centred at 0 (‖·‖ = 1), symmetric, so red means exploding and blue
    vanishing; pairs with k > t (undefined) are masked and show the grey background.

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> t, k = np.tril_indices(20)
        >>> df = pd.DataFrame({"cell": "rnn_tanh", "t": t, "k": k, "value": -0.3 * (t - k)})
        >>> fig = gplot.flow_heatmaps(df)
    """
    func = "flow_heatmaps"
    require(df, func, ["cell", "t", "k", "value"], optional=["quantity", "seed"])
    df, qname = one_quantity(df, func, quantity)
    df = df[df["k"] <= df["t"]]
    if df.empty:
        raise ValueError(f"{func}: no rows with k <= t (source step k must not exceed target t)")
    if colorbar_label is None:
        sub = "F" if "frob" in str(qname).lower() else "2"
        colorbar_label = r"$\log_{10}\,\|\partial h_t/\partial h_k\|_" + sub + "$"

    cells = S.cells_in(df["cell"])
    steps = np.array(sorted(set(df["t"].tolist()) | set(df["k"].tolist())), dtype=float)
    index = {s: i for i, s in enumerate(steps)}
    mats = []
    for cell in cells:
        m = df[df["cell"] == cell].groupby(["t", "k"], sort=True)["value"].mean()
        M = np.full((steps.size, steps.size), np.nan)
        for (t, k), v in m.items():
            M[index[float(t)], index[float(k)]] = v
        mats.append(M)
    finite = np.concatenate([M[np.isfinite(M)] for M in mats])
    vmax = max(float(np.abs(finite).max()) if finite.size else 1.0, 1e-12)
    norm = mpl.colors.Normalize(-vmax, vmax)
    # masked cells are transparent: the grey axes face shows through
    cmap = mpl.colormaps["RdBu_r"].with_extremes(bad=(0, 0, 0, 0))

    fig = S.new_figure(fig, (2.7 * len(cells) + 1.3, 3.6))
    axes = S.grid(fig, 1, len(cells), sharex=True, sharey=True)[0]
    e = edges(steps)
    mesh = None
    for ax, cell, M in zip(axes, cells, mats, strict=True):
        ax.set_facecolor("0.82")
        mesh = ax.pcolormesh(e, e, np.ma.masked_invalid(M), cmap=cmap, norm=norm,
                             rasterized=True)  # fmt: skip
        ax.set_title(S.cell_label(cell), color=S.cell_colors([cell])[cell])
        ax.set_xlabel("source step $k$")
        ax.set_box_aspect(1)  # square panels; steps run over the same range on both axes
        ax.set_xlim(e[0], e[-1])
        ax.set_ylim(e[0], e[-1])
    axes[0].set_ylabel("target step $t$")
    fig.colorbar(mesh, ax=list(axes), label=colorbar_label, shrink=0.85)
    fig.suptitle(title)
    return fig
