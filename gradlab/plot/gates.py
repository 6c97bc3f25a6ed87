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

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> step = np.arange(30)
        >>> df = pd.concat([pd.DataFrame({"cell": "lstm", "init": "default", "gate": g, "step": step,
        ...                               "quantity": "gate_saturated_frac", "value": v * step / 30})
        ...                 for g, v in [("i", 0.2), ("f", 0.5), ("g", 0.3), ("o", 0.1)]])
        >>> fig = gplot.gate_saturation(df)
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


_UNIT_QUANTILES = (0.1, 0.5, 0.9)


def gates_over_training(
    df: pd.DataFrame,
    fig: Figure | None = None,
    *,
    band: str | None = "bootstrap",
    horizon: float | None = None,
    chance: float | None = None,
    title: str = "Gates over training",
) -> Figure:
    """Memory gate, gate saturation, gradient at step 0 and loss against training iteration.

    Four panels, colour per init:
      (a) the memory gate's timescale -1/ln f over units (quantity "forget_timescale", one row
          per unit): solid line the median over units, thin dashed lines the 10% and 90%
          quantiles, each the mean over seeds; log y; ``horizon`` (e.g. the task's delay T) as a
          dotted reference line;
      (b) saturated fraction of the memory gate (solid) and of the input/reset gate (dashed)
          ("gate_saturated_frac", column ``gate``);
      (c) ‖∂L/∂h_0‖, the gradient reaching step 0 ("grad_norm" at the smallest ``step``),
          geometric mean over seeds; log y;
      (d) the evaluation accuracy ("accuracy") with ``chance`` dashed, when the table has
          accuracy rows; else the evaluation loss ("eval_loss") and the no-memory baseline
          ("baseline", dashed).
    Required columns: ``init``, ``iteration``, ``quantity``, ``value``; ``gate`` and ``unit``
    for (a)/(b), ``step`` for (c); optional ``seed`` (bands: 95% CI over seeds, bootstrap by
    default). A panel whose rows are missing is left empty with a note.

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> it = np.arange(0, 100, 20)
        >>> rows = [pd.DataFrame({"iteration": i, "quantity": "forget_timescale", "gate": "f",
        ...                       "unit": np.arange(8), "value": np.linspace(1, 5 + i / 10, 8)})
        ...         for i in it]
        >>> rows += [pd.DataFrame({"iteration": it, "quantity": "gate_saturated_frac", "gate": g,
        ...                        "value": v * it / 100}) for g, v in [("f", 0.6), ("i", 0.3)]]
        >>> rows += [pd.DataFrame({"iteration": it, "quantity": "grad_norm", "step": 0,
        ...                        "value": 1e-4 * (1 + it / 20)}),
        ...          pd.DataFrame({"iteration": it, "quantity": "accuracy", "value": it / 120})]
        >>> df = pd.concat(rows).assign(init="chrono")
        >>> fig = gplot.gates_over_training(df, horizon=20, chance=1 / 8, band=None)
    """
    func = "gates_over_training"
    require(df, func, ["init", "iteration", "quantity", "value"],
            optional=["seed", "gate", "unit", "step"])  # fmt: skip
    check_band(band, func)
    inits = S.inits_in(df["init"])
    colors = S.init_colors(inits)
    d = df if "seed" in df.columns else df.assign(seed=0)
    fig = S.new_figure(fig, (12.5, 6.6))
    axes = S.grid(fig, 2, 2, sharex=True).ravel()
    n_seeds = int(d["seed"].nunique())

    def draw(ax, rows, keys, *, log=False, linestyle="-", lw=S.LINEWIDTH, fill=True):
        if rows.empty:
            return
        summ = summarise(rows, keys, band=band, log=log)
        for init in inits:
            s = summ[summ["init"] == init]
            if s.empty:
                continue
            x = s["iteration"].to_numpy(float)
            ax.plot(x, s["mean"], color=colors[init], linestyle=linestyle, linewidth=lw,
                    gid="data", label=S.init_label(init))  # fmt: skip
            if fill and band is not None and s["n"].max() > 1:
                ax.fill_between(x, s["lo"], s["hi"], color=colors[init], alpha=S.BAND_ALPHA,
                                linewidth=0, gid="band")  # fmt: skip

    # (a) timescale quantiles over units, per seed, then over seeds (log space)
    ax = axes[0]
    tau = d[d["quantity"] == "forget_timescale"]
    memory = None
    if not tau.empty:
        memory = S.gate_key(tau["gate"].iloc[0]) if "gate" in tau.columns else "f"
        for q in _UNIT_QUANTILES:
            per_seed = (
                tau.groupby(["init", "seed", "iteration"], observed=True)["value"]
                .quantile(q)
                .reset_index()
            )
            draw(ax, per_seed, ["init", "iteration"], log=True,
                 linestyle="-" if q == 0.5 else "--", lw=S.LINEWIDTH if q == 0.5 else 0.9,
                 fill=q == 0.5)  # fmt: skip
        ax.set_yscale("log")
        if horizon is not None:
            ax.axhline(horizon, **S.REFERENCE, gid="reference")
            ax.annotate(f"delay $T = {S.fmt_num(horizon)}$", (0.99, horizon), xycoords=("axes fraction", "data"),
                        ha="right", va="bottom", fontsize="small", color="0.35")  # fmt: skip
    name = {"f": "forget gate", "z": "update gate"}.get(memory, "memory gate")
    ax.set_ylabel(r"timescale $-1/\ln \bar f$ (steps, log)")
    ax.set_title(f"(a) {name} timescale over units:\nmedian (solid), 10% and 90% (dashed)",
                 fontsize="medium")  # fmt: skip

    # (b) saturation
    ax = axes[1]
    sat = d[d["quantity"] == "gate_saturated_frac"]
    if not sat.empty:
        keys = sat["gate"].map(S.gate_key)
        mem = "f" if (keys == "f").any() else "z"
        other = "i" if mem == "f" else "r"
        draw(ax, sat[keys == mem], ["init", "iteration"])
        draw(ax, sat[keys == other], ["init", "iteration"], linestyle="--", lw=1.2)
        ax.set_title(f"(b) saturated fraction:\n{S.gate_label(mem)} (solid), "
                     f"{S.gate_label(other)} (dashed)", fontsize="medium")  # fmt: skip
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("fraction saturated\n(gate < 0.05 or > 0.95)")

    # (c) gradient reaching step 0
    ax = axes[2]
    g = d[d["quantity"] == "grad_norm"]
    if not g.empty and "step" in g.columns:
        g0 = g[g["step"] == g["step"].min()]
        draw(ax, g0, ["init", "iteration"], log=True)
        ax.set_yscale("log")
    ax.set_ylabel(r"$\|\partial L/\partial h_0\|_2$ (log)" + "\ngeometric mean over seeds")
    ax.set_title("(c) gradient at step 0", fontsize="medium")

    # (d) accuracy, or loss
    ax = axes[3]
    acc = d[d["quantity"] == "accuracy"]
    if not acc.empty:
        draw(ax, acc, ["init", "iteration"])
        if chance is not None:
            ax.axhline(chance, **S.THEORY, gid="baseline")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("evaluation accuracy")
        extra = f"; dashed: chance ({S.fmt_num(chance, 3)})" if chance is not None else ""
        ax.set_title(f"(d) accuracy{extra}", fontsize="medium")
    else:
        ev = d[d["quantity"] == "eval_loss"]
        draw(ax, ev, ["init", "iteration"])
        base = d[d["quantity"] == "baseline"]["value"]
        if base.notna().any():
            ax.axhline(float(base.mean()), **S.THEORY, gid="baseline")
        pos = ev["value"].to_numpy(float)
        if pos.size and (pos > 0).all() and pos.max() / pos.min() > 10**1.5:
            ax.set_yscale("log")
        ax.set_ylabel("evaluation loss")
        ax.set_title("(d) evaluation loss; dashed: no-memory baseline", fontsize="medium")

    for ax in axes:
        ax.grid(True, linewidth=0.4, alpha=0.5)
        if not ax.has_data():
            ax.text(0.5, 0.5, "no rows", transform=ax.transAxes, ha="center", color="0.4")
    for ax in axes[2:]:
        ax.set_xlabel("training iteration")
    handles = [S.line_handle(f"init: {S.init_label(i)}", color=colors[i]) for i in inits]
    if band is not None and n_seeds > 1:
        handles.append(S.band_handle(S.band_text(band, n_seeds)))
    S.figure_legend(fig, handles, fontsize="small")
    fig.suptitle(title)
    return fig
