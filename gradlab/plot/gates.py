"""Gate saturation along the sequence for LSTM and GRU."""

from __future__ import annotations

import pandas as pd
from matplotlib.figure import Figure

from . import _style as S
from ._check import require
from ._stats import check_band, summarise

_YLABELS = {
    "gate_saturated_frac": "fraction saturated (<0.05 or >0.95)",
    "gate_mean": "mean gate activation",
}


def gate_saturation(
    df: pd.DataFrame,
    fig: Figure | None = None,
    quantity: str = "gate_saturated_frac",
    *,
    band: str | None = "ci",
    title: str = "Gate saturation along the sequence",
) -> Figure:
    """One panel per cell (LSTM, GRU); colour per gate, line style per init; x = step t.

    Required columns: ``cell`` ("lstm" or "gru"), ``init``, ``gate`` ("i", "f", "g", "o" /
    "r", "z", "n", or their names), ``step`` (t, 0-based), ``quantity`` ∈ {"gate_mean",
    "gate_saturated_frac"}, ``value``. Only rows of ``quantity`` are drawn. Optional ``seed``:
    line = mean over seeds, band = 95% CI (or min–max). Gates that do the same job share a
    colour across cells (LSTM f and GRU z keep memory).
    """
    func = "gate_saturation"
    require(df, func, ["cell", "init", "gate", "step", "quantity", "value"], optional=["seed"])
    check_band(band, func)
    d = df[df["quantity"] == quantity]
    if d.empty:
        have = ", ".join(sorted(map(str, df["quantity"].unique())))
        raise ValueError(f"{func}: no rows with quantity={quantity!r}; available: {have}")
    cells = S.cells_in(d["cell"])
    inits = S.inits_in(d["init"])
    styles = S.linestyles(inits)
    summ = summarise(d, ["cell", "gate", "init", "step"], band=band)

    fig = S.new_figure(fig, (3.6 * len(cells) + 1.8, 3.5))
    axes = S.grid(fig, 1, len(cells), sharey=True)[0]
    gate_handles = []
    for ax, cell in zip(axes, cells, strict=True):
        part = summ[summ["cell"] == cell]
        gates = sorted(part["gate"].unique(), key=lambda g: _gate_rank(g))
        for gi, gate in enumerate(gates):
            color = S.gate_color(gate, gi)
            gate_handles.append(S.line_handle(S.gate_label(gate), color=color))
            for init in inits:
                s = part[(part["gate"] == gate) & (part["init"] == init)]
                if s.empty:
                    continue
                x = s["step"].to_numpy(float)
                ax.plot(x, s["mean"], color=color, linestyle=styles[init], linewidth=S.LINEWIDTH,
                        gid="data", label=f"{S.gate_label(gate)}, {S.init_label(init)}")  # fmt: skip
                if band is not None and s["n"].max() > 1:
                    ax.fill_between(x, s["lo"], s["hi"], color=color, alpha=S.BAND_ALPHA,
                                    linewidth=0, gid="band")  # fmt: skip
        ax.set_title(S.cell_label(cell), color=S.cell_colors([cell])[cell])
        ax.set_xlabel(S.STEP_LABEL)
        ax.grid(True, linewidth=0.4, alpha=0.5)
        if quantity == "gate_saturated_frac":
            ax.set_ylim(-0.03, 1.03)
    axes[0].set_ylabel(_YLABELS.get(quantity, quantity.replace("_", " ")))
    handles = gate_handles + [
        S.line_handle(f"init: {S.init_label(i)}", linestyle=styles[i], color="0.25") for i in inits
    ]
    n = int(summ["n"].max())
    if band is not None and n > 1:
        handles.append(S.band_handle(S.band_text(band, n)))
    S.figure_legend(fig, handles, title="gate (colour), init (style)", fontsize="small")
    fig.suptitle(title)
    return fig


def _gate_rank(gate: object) -> tuple[int, str]:
    key = S.gate_key(gate)
    return (S.GATE_ORDER.index(key) if key in S.GATE_ORDER else len(S.GATE_ORDER), str(gate))
