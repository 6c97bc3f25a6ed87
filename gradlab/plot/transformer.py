"""The Transformer beside the recurrent cells: gradient by lag, length sweeps, wall time vs T.

``input_gradient_curves`` (rows of ``gradlab.input_gradients`` per architecture and stage),
``length_sweep`` (final metric against sequence length, per task) and ``parallel_timing``
(forward + backward time and sequential steps against T, from ``benchmarks/bench_parallel.py``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from . import _style as S
from ._check import require
from ._stats import summarise

INPUT_GRAD_LABEL = r"$\log_{10}\,\|\partial L/\partial x_{T-1-k}\|_2$"
_FLOAT32_TINY = float(np.log10(np.finfo(np.float32).tiny))  # −37.9: smallest normal float32


def _archs(values) -> list:
    return S.cells_in(values)


def input_gradient_curves(
    df: pd.DataFrame,
    fig: Figure | None = None,
    *,
    labels: dict | None = None,
    title: str = "Gradient reaching each input position",
) -> Figure:
    """log10 ‖∂L/∂x_{T-1-k}‖ against lag k, one line per architecture, one panel per stage.

    Required columns: ``arch``, ``stage`` (e.g. "init", "trained"), ``lag`` (steps), ``value``
    (log10 norm). Optional ``seed``: the line is the mean over seeds, the band min–max. Where
    a curve falls below float32's smallest normal number (10^−37.9) a dotted guide marks it: a
    float32 backward pass flushes such gradients to zero (gradlab computes them in log space).
    ``labels`` maps arch to its legend text (default: the architecture's name).

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> lag = np.arange(300)
        >>> df = pd.concat([pd.DataFrame({"arch": a, "stage": "init", "lag": lag, "value": v})
        ...                 for a, v in [("lstm", -0.2 * lag), ("transformer", -2 + 0 * lag)]])
        >>> fig = gplot.input_gradient_curves(df)
    """
    func = "input_gradient_curves"
    require(df, func, ["arch", "stage", "lag", "value"], optional=["seed"])
    stages = S.ordered(df["stage"], ("init", "trained"))
    fig = S.new_figure(fig, (5.0 * len(stages) + 1.6, 4.2))
    axes = S.grid(fig, 1, len(stages), sharey=True)[0]
    archs = _archs(df["arch"])
    colors = S.cell_colors(archs)
    d = df[np.isfinite(df["value"].astype(float))]
    summ = summarise(d, ["stage", "arch", "lag"], band="minmax")
    n_max = int(summ["n"].max()) if len(summ) else 1
    low = bool((d["value"] < _FLOAT32_TINY + 3).any())
    for ax, stage in zip(axes, stages, strict=True):
        for arch in archs:
            r = summ[(summ["stage"] == stage) & (summ["arch"] == arch)].sort_values("lag")
            if r.empty:
                continue
            ax.plot(r["lag"], r["mean"], color=colors[arch], linewidth=S.LINEWIDTH,
                    label=(labels or {}).get(arch, S.cell_label(arch)), gid="data")  # fmt: skip
            if n_max > 1:
                ax.fill_between(r["lag"], r["lo"], r["hi"], color=colors[arch],
                                alpha=S.BAND_ALPHA, linewidth=0, gid="band")  # fmt: skip
        if low:
            ax.axhline(_FLOAT32_TINY, gid="reference", **S.REFERENCE)
        ax.set_title(f"{stage}")
        ax.set_xlabel(r"lag $k$ (steps back from the output at $T-1$)")
        ax.grid(True, linewidth=0.4, alpha=0.5)
    axes[0].set_ylabel(INPUT_GRAD_LABEL)
    handles, _ = axes[0].get_legend_handles_labels()
    if low:
        handles.append(S.line_handle("float32 smallest normal (10$^{-37.9}$):\n"
                                     "a float32 backward returns 0 below", **S.REFERENCE))  # fmt: skip
    if n_max > 1:
        handles.append(S.band_handle(S.band_text("minmax", n_max)))
    S.figure_legend(fig, handles, fontsize="small")
    fig.suptitle(title)
    return fig


def length_sweep(
    df: pd.DataFrame,
    fig: Figure | None = None,
    *,
    labels: dict | None = None,
    titles: dict | None = None,
    title: str = "Final loss against sequence length",
) -> Figure:
    """Final relative loss against sequence length, one line per architecture, panel per task.

    Required columns: ``task``, ``arch``, ``seq_len``, ``value`` (final loss ÷ the task's
    no-memory baseline: 1 = nothing remembered, 0 = solved); optional ``seed`` (line: mean,
    band: min–max over seeds, markers: each seed). Both axes are logarithmic (y linear in a
    panel whose values span less than a factor of 10). ``labels``
    maps (task, arch) to the legend text (e.g. with the parameter count), ``titles`` a task to
    its panel title (default: the task's name).

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> df = pd.DataFrame({"task": "adding", "arch": np.repeat(["lstm", "gru"], 3),
        ...                    "seq_len": np.tile([10, 30, 100], 2),
        ...                    "value": [0.01, 0.5, 1.0, 0.01, 0.02, 0.05]})
        >>> fig = gplot.length_sweep(df)
    """
    func = "length_sweep"
    require(df, func, ["task", "arch", "seq_len", "value"], optional=["seed"])
    tasks = S.ordered(df["task"], ("adding", "copy", "digits", "ucr"))
    fig = S.new_figure(fig, (4.6 * len(tasks) + 3.4, 4.3))
    axes = S.grid(fig, 1, len(tasks))[0]
    archs = _archs(df["arch"])
    colors = S.cell_colors(archs)
    d = df[df["value"] > 0]
    summ = summarise(d, ["task", "arch", "seq_len"], band="minmax", log=True)
    n_max, n_min = int(summ["n"].max()), int(summ["n"].min())
    for ax, task in zip(axes, tasks, strict=True):
        for arch in archs:
            r = summ[(summ["task"] == task) & (summ["arch"] == arch)].sort_values("seq_len")
            if r.empty:
                continue
            label = (labels or {}).get((task, arch), S.cell_label(arch))
            ax.plot(r["seq_len"], r["mean"], color=colors[arch], marker="o", markersize=4,
                    linewidth=S.LINEWIDTH, label=label, gid="data")  # fmt: skip
            if n_max > 1:
                ax.fill_between(r["seq_len"], r["lo"], r["hi"], color=colors[arch],
                                alpha=S.BAND_ALPHA, linewidth=0, gid="band")  # fmt: skip
            pts = d[(d["task"] == task) & (d["arch"] == arch)]
            ax.scatter(pts["seq_len"], pts["value"], color=colors[arch], s=8, alpha=0.5,
                       linewidths=0, gid="points")  # fmt: skip
        ax.axhline(1.0, gid="reference", **S.REFERENCE)
        ax.text(0.02, 1.0, "no-memory baseline", transform=ax.get_yaxis_transform(),
                va="bottom", fontsize="small", color="0.35")  # fmt: skip
        ax.set_xscale("log")
        vals = d.loc[d["task"] == task, "value"]
        if vals.max() / vals.min() >= 10:  # a linear axis reads better within one decade
            ax.set_yscale("log")
        ticks = sorted(d.loc[d["task"] == task, "seq_len"].unique())
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(r"sequence length $T$ (steps; copy: the delay)")
        ax.set_ylabel("final loss ÷ no-memory baseline")
        ax.set_title((titles or {}).get(task, S.title_case_task(task)), fontsize="medium")
        ax.grid(True, which="both", linewidth=0.4, alpha=0.4)
    handles = []
    for ax in axes:  # one legend entry per label (labels may differ per task: sizes)
        for h in ax.get_legend_handles_labels()[0]:
            if h.get_label() not in [k.get_label() for k in handles]:
                handles.append(h)
    if n_max > 1:
        seeds = n_max if n_min == n_max else f"{n_min}–{n_max}"
        handles.append(S.band_handle(S.band_text("minmax", seeds, geometric=True)))
    S.figure_legend(fig, handles, fontsize="small")
    fig.suptitle(title)
    return fig


def parallel_timing(
    df: pd.DataFrame,
    fig: Figure | None = None,
    *,
    title: str = "Forward + backward wall time and sequential steps against T",
) -> Figure:
    """Left: wall time (ms) against T, log–log, with guide lines ∝ T and ∝ T². Right: the
    number of sequential steps each architecture needs (T for an RNN, layers for a Transformer).

    Required columns: ``arch``, ``seq_len``, ``ms_median``, ``sequential_steps``; optional
    ``ms_min``, ``ms_max`` (drawn as a band).

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> T = np.array([16, 64, 256, 1024])
        >>> df = pd.concat([pd.DataFrame({"arch": "lstm", "seq_len": T, "ms_median": 0.1 * T,
        ...                               "sequential_steps": T}),
        ...                 pd.DataFrame({"arch": "transformer", "seq_len": T,
        ...                               "ms_median": 1e-3 * T**2, "sequential_steps": 2})])
        >>> fig = gplot.parallel_timing(df)
    """
    func = "parallel_timing"
    require(df, func, ["arch", "seq_len", "ms_median", "sequential_steps"],
            optional=["ms_min", "ms_max"], numeric=("ms_median", "sequential_steps"))  # fmt: skip
    fig = S.new_figure(fig, (11.5, 4.4))
    ax, ax2 = S.grid(fig, 1, 2)[0]
    archs = _archs(df["arch"])
    colors = S.cell_colors(archs)
    for arch in archs:
        r = df[df["arch"] == arch].sort_values("seq_len")
        ax.plot(r["seq_len"], r["ms_median"], color=colors[arch], marker="o", markersize=4,
                linewidth=S.LINEWIDTH, label=S.cell_label(arch), gid="data")  # fmt: skip
        if {"ms_min", "ms_max"} <= set(r.columns):
            ax.fill_between(r["seq_len"], r["ms_min"], r["ms_max"], color=colors[arch],
                            alpha=S.BAND_ALPHA, linewidth=0, gid="band")  # fmt: skip
    # sequential steps: architectures with the same counts share one line (RNNs: T each)
    groups: dict[tuple, list] = {}
    for arch in archs:
        r = df[df["arch"] == arch].sort_values("seq_len")
        key = tuple(zip(r["seq_len"].tolist(), r["sequential_steps"].tolist(), strict=True))
        groups.setdefault(key, []).append(arch)
    for key, members in groups.items():
        x, y = zip(*key, strict=True)
        same_as_T = all(a == b for a, b in key)
        what = "T" if same_as_T else f"{y[-1]}" if len(set(y)) == 1 else ""
        label = " / ".join(S.cell_label(a) for a in members) + (f": {what}" if what else "")
        ax2.plot(x, y, color=colors[members[0]], marker="o", markersize=4,
                 linewidth=S.LINEWIDTH, label=label, gid="data")  # fmt: skip
    T = np.array(sorted(df["seq_len"].unique()), float)
    t0 = T[len(T) // 2]
    y0 = float(df[df["seq_len"] == t0]["ms_median"].median())
    for power, style, name in ((1, "--", r"$\propto T$"), (2, ":", r"$\propto T^2$")):
        ax.plot(T, y0 * (T / t0) ** power, color="black", linestyle=style, linewidth=1.0,
                label=f"guide: {name}", gid="theory")  # fmt: skip
    ticks = sorted(df["seq_len"].unique())
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(r"sequence length $T$ (steps)")
    ax.set_ylabel("forward + backward wall time (ms)")
    ax.set_title("wall time (line: median, band: min–max of repeats)")
    ax.grid(True, which="both", linewidth=0.4, alpha=0.4)
    ax.legend(fontsize="small", loc="upper left")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    for a in (ax, ax2):
        a.set_xticks(ticks, [str(t) for t in ticks])
        a.xaxis.set_minor_locator(NullLocator())
    ax2.set_xlabel(r"sequence length $T$ (steps)")
    ax2.set_ylabel("sequential steps (one forward pass)")
    ax2.set_title("steps that must run one after another\n(RNN: one per position; "
                  "Transformer: one per layer)")
    ax2.grid(True, which="both", linewidth=0.4, alpha=0.4)
    ax2.legend(fontsize="small", loc="upper left")
    fig.suptitle(title)
    return fig
