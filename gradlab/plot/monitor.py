"""A monitored training run: decay curves over training, and their summaries over training.

Tables come from ``gradlab.Monitor`` (``mon.curves()``, ``mon.summary()``) or from a monitor
folder through ``gradlab.report``. (The iteration × step heatmap is
:func:`gradlab.plot.training_grad_heatmap`.)
"""

from __future__ import annotations

from typing import Any

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from . import _style as S
from ._check import require, select, unique_per

_RUN_KEYS = ("module", "call", "layer", "direction")
_SUMMARY_PANELS = (
    ("ln_decay_rate", "fitted decay rate\n(ln per step; < 0: vanishing)"),
    ("memory_length", "memory length\n(steps to a 1000× drop)"),
    ("log10_grad_ratio",
     "first step over last\n" r"$\log_{10}\,\|\partial L/\partial h_0\| / \|\partial L/\partial h_{T-1}\|$"),
)


def pick_iterations(iterations: Any, n: int) -> list[int]:
    """About ``n`` iterations spread evenly over ``iterations`` (first and last included)."""
    its = np.array(sorted(set(int(i) for i in iterations)))
    if its.size <= n:
        return its.tolist()
    idx = np.unique(np.round(np.linspace(0, its.size - 1, n)).astype(int))
    return its[idx].tolist()


def run_label(module: Any, layer: Any, direction: Any = 0, call: Any = 0) -> str:
    """``module rnn, layer 0`` (plus ``reverse`` and ``call c`` where they apply)."""
    s = f"module {module}, layer {int(layer)}"
    if int(direction) == 1:
        s += ", reverse"
    if int(call) > 0:
        s += f", call {int(call)}"
    return s


def decay_over_training(
    df: pd.DataFrame,
    ax: Axes | None = None,
    *,
    iterations: list[int] | None = None,
    n: int = 6,
    title: str = "Gradient reaching each step, during training",
    **filters: Any,
) -> Axes:
    """‖∂L/∂h_t‖₂ against step t at a few training iterations, coloured by iteration.

    Required columns: ``iteration``, ``step`` (t, 0-based), ``value`` (the plain norm, batch
    mean). ``filters`` select one curve per iteration (e.g. ``module="lstm", layer=0``); rows
    that still repeat an (iteration, step) pair are a ValueError. ``iterations`` picks the
    iterations to draw (default: ``n`` spread over the run, first and last included). The y axis
    is logarithmic; non-positive or non-finite values are left out of a line.

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> it, step = np.meshgrid(np.arange(0, 100, 10), np.arange(30), indexing="ij")
        >>> df = pd.DataFrame({"iteration": it.ravel(), "step": step.ravel(),
        ...                    "value": 10.0 ** (-0.2 * (29 - step.ravel()) * (1 - it.ravel() / 200))})
        >>> ax = gplot.decay_over_training(df, n=4)
    """
    func = "decay_over_training"
    require(df, func, ["iteration", "step", "value"], optional=list(filters))
    df = select(df, func, **filters)
    unique_per(df, func, ["iteration", "step"])
    have = sorted(df["iteration"].unique().tolist())
    its = pick_iterations(have, n) if iterations is None else [int(i) for i in iterations]
    missing = [i for i in its if i not in have]
    if missing:
        raise ValueError(f"{func}: iterations {missing} not in the table; recorded: {have}")
    lo, hi = min(have), max(have)
    norm = mpl.colors.Normalize(lo, hi if hi > lo else lo + 1)
    cmap = mpl.colormaps["viridis"]
    fig, ax = S.new_axes(ax, (6.0, 4.0))
    for it in its:
        c = df[df["iteration"] == it].sort_values("step")
        y = c["value"].to_numpy(float)
        y = np.where(np.isfinite(y) & (y > 0), y, np.nan)
        ax.plot(c["step"].to_numpy(float), y, color=cmap(norm(it)), linewidth=S.LINEWIDTH - 0.3,
                gid="data", label=f"iteration {it}")  # fmt: skip
    ax.set_yscale("log")
    sm = mpl.cm.ScalarMappable(norm=norm, cmap=cmap)
    fig.colorbar(sm, ax=ax, label="training iteration")
    ax.set_xlabel(S.STEP_LABEL)
    ax.set_ylabel(r"$\|\partial L/\partial h_t\|_2$ (batch mean, log scale)")
    run = ", ".join(f"{k} = {v}" for k, v in filters.items() if v is not None)
    ax.set_title(title + (f"\n{run}" if run else ""))
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
    return ax


def summary_over_training(
    df: pd.DataFrame,
    fig: Figure | None = None,
    *,
    seq_len: int | None = None,
    title: str = "Gradient decay over training",
) -> Figure:
    """Fitted decay rate, memory length and first/last gradient ratio against iteration.

    Required columns: ``iteration``, ``quantity`` (``ln_decay_rate``, ``memory_length``,
    ``log10_grad_ratio``; other quantities are ignored), ``value``. Optional ``module``,
    ``call``, ``layer``, ``direction``: one line per recurrent layer. A memory length of inf
    (the norm never fell 1000× within the sequence) is drawn as an upward triangle at the
    sequence length ``seq_len`` (a dotted line), or at the top edge of its panel without it.

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> it = np.arange(0, 100, 10)
        >>> df = pd.concat([pd.DataFrame({"iteration": it, "quantity": q, "value": v})
        ...                 for q, v in [("ln_decay_rate", -0.5 + it / 400),
        ...                              ("memory_length", 14 + it / 10),
        ...                              ("log10_grad_ratio", -6 + it / 40)]])
        >>> fig = gplot.summary_over_training(df, seq_len=50)
    """
    func = "summary_over_training"
    require(df, func, ["iteration", "quantity", "value"], optional=list(_RUN_KEYS))
    keys = [k for k in _RUN_KEYS if k in df.columns]
    wanted = [p for p in _SUMMARY_PANELS if (df["quantity"] == p[0]).any()]
    if not wanted:
        raise ValueError(
            f"{func}: no rows with quantity in {[p[0] for p in _SUMMARY_PANELS]}; "
            f"got {sorted(df['quantity'].astype(str).unique())}"
        )
    runs = [()] if not keys else list(df[keys].drop_duplicates().itertuples(index=False))
    colors = dict(zip(runs, (S.CB * 3)[: len(runs)], strict=True))
    fig = S.new_figure(fig, (6.4, 2.1 * len(wanted) + 0.8))
    axes = S.grid(fig, len(wanted), 1, sharex=True)[:, 0]
    for ax, (q, ylabel) in zip(axes, wanted, strict=True):
        part = df[df["quantity"] == q]
        tops = []
        for run in runs:
            r = part
            for k, v in zip(keys, run, strict=True):
                r = r[r[k] == v]
            r = r.sort_values("iteration")
            x = r["iteration"].to_numpy(float)
            y = r["value"].to_numpy(float)
            label = run_label(*(dict(zip(keys, run, strict=True)).get(k, 0)
                                for k in ("module", "layer", "direction", "call"))) if keys else q
            ax.plot(x, np.where(np.isfinite(y), y, np.nan), marker="o", markersize=3,
                    color=colors[run], linewidth=S.LINEWIDTH - 0.4, gid="data", label=label)  # fmt: skip
            inf = np.isposinf(y)
            if inf.any():
                tops.append((x[inf], colors[run]))
        if q == "memory_length" and seq_len is not None:
            ax.axhline(float(seq_len), **S.REFERENCE, gid="reference",
                       label=f"sequence length $T = {int(seq_len)}$")  # fmt: skip
        if tops:
            ymin, ymax = ax.get_ylim()
            if not np.isfinite(part["value"].to_numpy(float)).any():
                ymin, ymax = 0.0, 1.0
            if seq_len is not None:
                ymin, ymax = min(ymin, 0.0), float(seq_len)
            for xs, color in tops:
                ax.plot(xs, np.full(xs.size, ymax), linestyle="none", marker="^", color=color,
                        markersize=6, clip_on=False, gid="reference",
                        label="_longer than the sequence")  # fmt: skip
            ax.set_ylim(ymin, ymax)
        if q == "log10_grad_ratio":
            ax.axhline(0.0, **S.REFERENCE, gid="reference")
        ax.set_ylabel(ylabel, fontsize="small")
        ax.grid(True, linewidth=0.4, alpha=0.5)
    axes[-1].set_xlabel("training iteration")
    handles, _ = axes[0].get_legend_handles_labels()
    if seq_len is not None and any(q == "memory_length" for q, _ in wanted):
        handles.append(S.line_handle(f"sequence length $T = {int(seq_len)}$", **S.REFERENCE))
    if any(np.isposinf(df.loc[df["quantity"] == "memory_length", "value"].to_numpy(float))):
        handles.append(S.line_handle("memory longer than the sequence", linestyle="none",
                                     marker="^", color="0.3"))  # fmt: skip
    fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)),
               fontsize="small")  # fmt: skip
    fig.suptitle(title)
    return fig
