"""Training: loss curves against a no-memory baseline, and ‖∂L/∂h_t‖ over training."""

from __future__ import annotations

from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from . import _style as S
from ._check import one_quantity, require, select, unique_per
from ._stats import check_band, edges, summarise

_LOSS_UNITS = {
    "adding": "MSE",
    "copy": "cross-entropy (nats)",
    "copy_memory": "cross-entropy (nats)",
    "copying": "cross-entropy (nats)",
    "digits": "cross-entropy (nats)",
    "sequential_digits": "cross-entropy (nats)",
    "smnist": "cross-entropy (nats)",
}
_NO_CLIP = {"", "none", "no", "false", "off", "0", "nan", "inf"}


def clip_label(clip: Any) -> str:
    """Readable clipping setting: False/None/"none" -> "no clipping", 1.0 -> "clip at 1"."""
    if clip is None or clip is False or (isinstance(clip, float) and np.isnan(clip)):
        return "no clipping"
    if clip is True:
        return "clipped"
    s = str(clip).strip()
    if s.lower() in _NO_CLIP:
        return "no clipping"
    if s.lower() == "true":
        return "clipped"
    try:
        return f"clip at {S.fmt_num(float(s), 3)}"
    except ValueError:
        return f"clip: {s}"


def training_curves(
    df: pd.DataFrame,
    fig: Figure | None = None,
    *,
    band: str | None = "ci",
    log_y: bool | None = None,
    title: str = "Training loss",
    quantity: str = "loss",
    chance: float | None = None,
) -> Figure:
    """Loss against iteration, one panel per (task, seq_len); colour per cell, style per clip.

    Required columns: ``task``, ``cell``, ``seq_len``, ``clip`` (bool, number or str),
    ``iteration``, ``quantity`` ∈ {"loss", "baseline"}, ``value``. Optional ``seed``: the line
    is the mean over seeds, the band a 95% CI (or min–max). "baseline" rows give the loss of the
    best predictor without memory, drawn as a black dashed horizontal line per panel (mean of its
    rows). A row of panels (one task) gets a log y axis when its losses span more than 1.5
    decades (``log_y`` forces it on or off).

    ``quantity="accuracy"`` draws the "accuracy" rows instead (linear y in [0, 1]; no baseline)
    with ``chance``, if given, as the dashed reference line (e.g. 1/8 for copy-memory).
    ``quantity="eval_loss"`` draws the evaluation loss.

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> it = np.arange(100)
        >>> df = pd.concat([
        ...     pd.DataFrame({"iteration": it, "quantity": "loss", "value": 0.2 * np.exp(-it / 30)}),
        ...     pd.DataFrame({"iteration": [0], "quantity": "baseline", "value": [1 / 6]}),
        ... ]).assign(task="adding", cell="lstm", seq_len=50, clip=1.0)
        >>> fig = gplot.training_curves(df)
    """
    func = "training_curves"
    cols = ["task", "cell", "seq_len", "clip", "iteration", "quantity", "value"]
    require(df, func, cols, optional=["seed"])
    check_band(band, func)
    accuracy = quantity == "accuracy"
    loss = df[df["quantity"] == quantity]
    base = df[df["quantity"] == "baseline"].iloc[:0] if accuracy else df[df["quantity"] == "baseline"]
    if loss.empty:
        raise ValueError(f"{func}: no rows with quantity={quantity!r}")
    loss = loss.assign(clip=loss["clip"].map(clip_label))
    tasks = S.ordered(loss["task"])
    lens = S.ordered(loss["seq_len"])
    cells = S.cells_in(loss["cell"])
    colors = S.cell_colors(cells)
    clips = S.ordered(loss["clip"], ["no clipping"])
    styles = dict(zip(clips, ("-", ":", "-.", (0, (5, 1, 1, 1, 1, 1))), strict=False))
    summ = summarise(loss, ["task", "seq_len", "cell", "clip", "iteration"], band=band)

    fig = S.new_figure(fig, (3.3 * len(lens) + 2.4, 2.7 * len(tasks) + 0.6))
    axes = S.grid(fig, len(tasks), len(lens), sharex=True, sharey="row")
    for i, task in enumerate(tasks):
        vals = loss.loc[loss["task"] == task, "value"].to_numpy(float)
        vals = vals[np.isfinite(vals)]
        pos = vals[vals > 0]
        row_log = (
            log_y
            if log_y is not None
            else bool(pos.size == vals.size and pos.size and pos.max() / pos.min() > 10**1.5)
        ) and not accuracy
        for j, T in enumerate(lens):
            ax = axes[i, j]
            part = summ[(summ["task"] == task) & (summ["seq_len"] == T)]
            for cell in cells:
                for clip in clips:
                    s = part[(part["cell"] == cell) & (part["clip"] == clip)]
                    if s.empty:
                        continue
                    x = s["iteration"].to_numpy(float)
                    ax.plot(x, s["mean"], color=colors[cell], linestyle=styles.get(clip, "-"),
                            linewidth=S.LINEWIDTH - 0.3, gid="data",
                            label=f"{S.cell_label(cell)}, {clip}")  # fmt: skip
                    if band is not None and s["n"].max() > 1:
                        lo = np.maximum(s["lo"], s["mean"] / 10) if row_log else s["lo"]
                        ax.fill_between(x, lo, s["hi"], color=colors[cell], alpha=S.BAND_ALPHA,
                                        linewidth=0, gid="band")  # fmt: skip
            b = base[(base["task"] == task) & (base["seq_len"] == T)]["value"]
            if b.notna().any():
                ax.axhline(float(b.mean()), color="black", linestyle="--", linewidth=1.3,
                           gid="baseline", label="no-memory baseline")  # fmt: skip
            if accuracy and chance is not None:
                ax.axhline(chance, color="black", linestyle="--", linewidth=1.3, gid="baseline",
                           label="chance")  # fmt: skip
            if accuracy:
                ax.set_ylim(-0.02, 1.02)
            if row_log:
                ax.set_yscale("log")
            length = "delay $T" if task == "copy" else "$T"
            ax.set_title(f"{S.title_case_task(task)}, {length} = {T}$", fontsize="medium")
            ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
            if i == len(tasks) - 1:
                ax.set_xlabel("training iteration")
            if j == 0 and accuracy:
                ax.set_ylabel("accuracy on the recalled symbols")
            elif j == 0:
                unit = _LOSS_UNITS.get(str(task))
                what = "evaluation loss" if quantity == "eval_loss" else "loss"
                ax.set_ylabel(f"{what} ({unit})" if unit else f"{what} (task units)")
    handles = [S.line_handle(S.cell_label(c), color=colors[c]) for c in cells]
    if len(clips) > 1 or clips != ["no clipping"]:
        handles += [S.line_handle(c, linestyle=styles.get(c, "-"), color="0.3") for c in clips]
    if base["value"].notna().any():
        handles.append(S.line_handle("no-memory baseline", linestyle="--", linewidth=1.3))
    if accuracy and chance is not None:
        handles.append(S.line_handle(f"chance ({S.fmt_num(chance, 3)})", linestyle="--",
                                     linewidth=1.3))  # fmt: skip
    n = int(summ["n"].max())
    if band is not None and n > 1:
        handles.append(S.band_handle(S.band_text(band, n)))
    S.figure_legend(fig, handles, fontsize="small")
    fig.suptitle(title)
    return fig


def training_grad_heatmap(
    df: pd.DataFrame,
    ax: Axes | None = None,
    *,
    quantity: str | None = None,
    title: str = "Gradient reaching each step during training",
    **filters: Any,
) -> Axes:
    """‖∂L/∂h_t‖₂ for every (training iteration, step t) of one run, on a log colour scale.

    Required columns: ``iteration``, ``step`` (t, 0-based), ``value`` (the plain norm, > 0).
    ``filters`` select one run by column value (e.g. ``cell="lstm", seed=0``); rows that still
    repeat an (iteration, step) pair are a ValueError, since the table mixes runs.
    Non-positive values are not drawable on a log scale and show the grey background.

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> it, step = np.meshgrid(np.arange(0, 100, 10), np.arange(30), indexing="ij")
        >>> df = pd.DataFrame({"iteration": it.ravel(), "step": step.ravel(),
        ...                    "value": 10.0 ** (-0.2 * (29 - step.ravel()))})
        >>> ax = gplot.training_grad_heatmap(df)
    """
    func = "training_grad_heatmap"
    require(df, func, ["iteration", "step", "value"], optional=["quantity", *filters])
    df = select(df, func, **filters)
    df, _ = one_quantity(df, func, quantity)
    unique_per(df, func, ["iteration", "step"])
    its = np.array(sorted(df["iteration"].unique()), dtype=float)
    steps = np.array(sorted(df["step"].unique()), dtype=float)
    M = np.full((its.size, steps.size), np.nan)
    ii = np.searchsorted(its, df["iteration"].to_numpy(float))
    jj = np.searchsorted(steps, df["step"].to_numpy(float))
    M[ii, jj] = df["value"].to_numpy(float)
    ok = np.isfinite(M) & (M > 0)
    if not ok.any():
        raise ValueError(f"{func}: no positive, finite values to draw on a log colour scale")
    M = np.where(ok, M, np.nan)
    lo, hi = float(np.nanmin(M)), float(np.nanmax(M))
    norm = mpl.colors.LogNorm(lo, hi if hi > lo else lo * 10)
    cmap = mpl.colormaps["viridis"].with_extremes(bad=(0, 0, 0, 0))

    fig, ax = S.new_axes(ax, (6.0, 4.0))
    ax.set_facecolor("0.82")
    mesh = ax.pcolormesh(
        edges(steps), edges(its), np.ma.masked_invalid(M), cmap=cmap, norm=norm, rasterized=True
    )
    fig.colorbar(mesh, ax=ax, label=r"$\|\partial L/\partial h_t\|_2$ (log colour scale)")
    ax.set_xlabel(S.STEP_LABEL)
    ax.set_ylabel("training iteration")
    run = ", ".join(
        S.cell_label(v) if k == "cell" else f"{k} = {S.tick_label(k, v)}"
        for k, v in filters.items()
    )
    ax.set_title(title + (f"\n{run}" if run else ""))
    return ax
