"""The lecture's four RNN structures on real data, and sequence length on a real data set.

``structure_panels``: one row per structure (many-to-one, synchronized many-to-many,
encoder–decoder, one-to-many), three panels per row: the task metric over training, the
gradient reaching each step, and the credit one loss gives to the steps before it.
``length_effect``: test accuracy and the gradient reaching step 0 against sequence length.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullLocator

from . import _style as S
from ._check import require
from ._stats import summarise

STRUCTURE_ORDER = ("ucr", "chars", "reverse", "generate")
CREDIT_LABEL = (r"$\log_{10}\,\|\partial L_t/\partial h_{t-\ell}\|\,/\,"
                r"\|\partial L_t/\partial h_t\|$" "\n(median over loss steps $t$)")  # fmt: skip
PROFILE_LABEL = r"$\log_{10}\,\|\partial L/\partial h_k\|_2$"
_PLAIN = FuncFormatter(lambda v, _: f"{v:g}")  # 0.5, 1, 2 on a log axis, not 5×10⁻¹
_PLAIN_MINOR = FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "25" else "")
_METRIC_CAP = 30.0  # metric panels stop at 30x the baseline
_MODULE_STYLE = {"encoder": (0, (4, 2)), "decoder": "-", "rnn": "-"}


def _band(ax, r: pd.DataFrame, x: str, color: str, n_max: int, **kw) -> None:
    ax.plot(r[x], r["mean"], color=color, linewidth=S.LINEWIDTH, gid="data", **kw)
    if n_max > 1:
        ax.fill_between(r[x], r["lo"], r["hi"], color=color, alpha=S.BAND_ALPHA, linewidth=0,
                        gid="band")  # fmt: skip


def structure_panels(
    metric: pd.DataFrame,
    profile: pd.DataFrame,
    credit: pd.DataFrame,
    fig: Figure | None = None,
    *,
    row_titles: dict | None = None,
    metric_labels: dict | None = None,
    floors: dict | None = None,
    boundaries: dict | None = None,
    title: str = "The four RNN structures",
) -> Figure:
    """A row per structure (``task``), three panels: metric, per-step gradient, credit by lag.

    metric: ``task``, ``cell``, ``iteration``, ``value`` (e.g. evaluation loss ÷ the task's
        no-memory baseline: 1 = nothing remembered) [``seed``]; drawn on a log axis with the
        baseline (1) dashed and, from ``floors`` {task: value}, a dotted floor.
    profile: ``task``, ``cell``, ``stage`` ("init", "trained"), ``step``, ``value``
        (log10 ‖∂L/∂h_k‖) [``seed``]; trained solid, init dashed. ``boundaries`` {task: S}
        draws a vertical line at step S − ½ (the encoder–decoder's hand-over).
    credit: ``task``, ``cell``, ``module``, ``lag``, ``value`` (log10 of the credit loss t
        gives step t − lag, relative to its direct term) [``seed``]; encoder rows dashed.
    Lines are means over seeds, bands bootstrap 95% confidence intervals of the mean.

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot
        >>> it, k, lag = np.arange(0, 101, 10), np.arange(20), np.arange(15)
        >>> one = {"task": "ucr", "cell": "lstm"}
        >>> metric = pd.DataFrame({**one, "iteration": it, "value": 1.2 - 0.008 * it})
        >>> profile = pd.concat([pd.DataFrame({**one, "stage": s, "step": k, "value": r * (19 - k)})
        ...                      for s, r in [("init", -0.2), ("trained", -0.05)]])
        >>> credit = pd.DataFrame({**one, "module": "rnn", "lag": lag, "value": -0.2 * lag})
        >>> fig = gplot.structure_panels(metric, profile, credit, row_titles={"ucr": "many-to-one"})
        >>> len(fig.axes)  # one row (task) of three panels
        3
    """
    func = "structure_panels"
    require(metric, func, ["task", "cell", "iteration", "value"], optional=["seed"])
    require(profile, func, ["task", "cell", "stage", "step", "value"], optional=["seed"])
    require(credit, func, ["task", "cell", "module", "lag", "value"], optional=["seed"])
    tasks = S.ordered(metric["task"], STRUCTURE_ORDER)
    cells = S.cells_in(metric["cell"])
    colors = S.cell_colors(cells)
    fig = S.new_figure(fig, (15.5, 3.3 * len(tasks) + 0.9))
    rows = np.atleast_1d(fig.subfigures(len(tasks), 1))
    axes = np.array([sub.subplots(1, 3) for sub in rows]).reshape(len(tasks), 3)
    m = summarise(metric, ["task", "cell", "iteration"], band="bootstrap", log=True)
    prof = profile[np.isfinite(profile["value"].astype(float))]
    p = summarise(prof, ["task", "cell", "stage", "step"], band="bootstrap")
    cr = credit[np.isfinite(credit["value"].astype(float))]
    c = summarise(cr, ["task", "cell", "module", "lag"], band="bootstrap")
    n_max = int(max(m["n"].max(), p["n"].max() if len(p) else 1))
    for sub, row, task in zip(rows, axes, tasks, strict=True):
        a0, a1, a2 = row
        for cell in cells:
            r = m[(m["task"] == task) & (m["cell"] == cell)].sort_values("iteration")
            if not r.empty:
                _band(a0, r, "iteration", colors[cell], n_max)
            for stage, ls in (("init", (0, (3, 2))), ("trained", "-")):
                r = p[(p["task"] == task) & (p["cell"] == cell) & (p["stage"] == stage)]
                if not r.empty:
                    _band(a1, r.sort_values("step"), "step", colors[cell], n_max, linestyle=ls)
            for module in S.ordered(c["module"], ("rnn", "decoder", "encoder")):
                r = c[(c["task"] == task) & (c["cell"] == cell) & (c["module"] == module)]
                if not r.empty:
                    _band(a2, r.sort_values("lag"), "lag", colors[cell], n_max,
                          linestyle=_MODULE_STYLE.get(module, "-"))  # fmt: skip
        a0.set_yscale("log")
        top = float(m.loc[m["task"] == task, "hi"].max())
        if top > _METRIC_CAP:  # a run that blew up: keep the rest readable, say so
            a0.set_ylim(top=_METRIC_CAP)
            a0.text(0.98, 0.97, f"off scale: up to {top:.0e}", transform=a0.transAxes,
                    ha="right", va="top", fontsize="small", color="0.3", gid="off_scale")
        a0.yaxis.set_major_formatter(_PLAIN)
        a0.yaxis.set_minor_formatter(_PLAIN_MINOR)
        a0.axhline(1.0, gid="reference", **S.REFERENCE)
        if floors and task in floors:
            a0.axhline(floors[task], color="0.3", linestyle="-.", linewidth=1.2, gid="floor")
        a0.set_ylabel((metric_labels or {}).get(task, "loss ÷ no-memory baseline"))
        a0.set_xlabel("training iteration")
        if boundaries and task in boundaries:
            a1.axvline(boundaries[task] - 0.5, color="0.4", linewidth=1.0, gid="boundary")
            a1.text(boundaries[task] - 0.5, 1.0, " decoder →", transform=a1.get_xaxis_transform(),
                    va="top", ha="left", fontsize="small", color="0.3")  # fmt: skip
            a1.text(boundaries[task] - 0.5, 1.0, "← encoder ", transform=a1.get_xaxis_transform(),
                    va="top", ha="right", fontsize="small", color="0.3")  # fmt: skip
        a1.set_xlabel(r"step $k$")
        a1.set_ylabel(PROFILE_LABEL)
        a2.set_xlabel(r"lag $\ell$ (steps back from the loss step $t$)")
        a2.set_ylabel(CREDIT_LABEL, fontsize="small")
        sub.suptitle((row_titles or {}).get(task, S.title_case_task(task)), x=0.01,
                     ha="left", fontsize="medium", fontweight="bold")  # fmt: skip
        for ax, head in zip(row, ("task metric over training",
                                  "gradient reaching step $k$ (a training batch)",
                                  "credit of one loss, after training"), strict=True):  # fmt: skip
            ax.set_title(head, fontsize="small", color="0.3")
            ax.grid(True, linewidth=0.4, alpha=0.5)
    handles: list = [S.line_handle(S.cell_label(cl), color=colors[cl]) for cl in cells]
    handles += [
        S.line_handle("no-memory baseline (metric = 1)", **S.REFERENCE),
        S.line_handle("trained (gradient panels)"),
        S.line_handle("at init (gradient panel)", linestyle=(0, (3, 2))),
        S.line_handle("encoder steps (credit panel)", linestyle=_MODULE_STYLE["encoder"]),
    ]
    if floors:
        handles.append(Line2D([], [], color="0.3", linestyle="-.", linewidth=1.2,
                              label="floor: the class-mean series"))  # fmt: skip
    if n_max > 1:
        handles.append(S.band_handle(S.band_text("bootstrap", n_max)))
    S.figure_legend(fig, handles, fontsize="small")
    fig.suptitle(title)
    return fig


def length_effect(
    accuracy: pd.DataFrame,
    gradient: pd.DataFrame,
    baselines: pd.DataFrame | None = None,
    fig: Figure | None = None,
    *,
    title: str = "Sequence length on real data",
) -> Figure:
    """Test accuracy and the gradient reaching step 0 against sequence length T, per cell.

    accuracy: ``cell``, ``seq_len``, ``value`` (test accuracy) [``seed``].
    gradient: ``cell``, ``seq_len``, ``stage`` ("init", "trained"), ``value``
        (log10 ‖∂L/∂h_0‖ / ‖∂L/∂h_{T-1}‖) [``seed``]; trained solid, init dashed.
    baselines: ``baseline``, ``seq_len``, ``value`` (accuracy of a non-recurrent reference, e.g.
        "majority", "1nn_euclidean", "1nn_dtw"); grey lines with markers.
    Both x axes are logarithmic; lines are means over seeds, bands bootstrap 95% CIs.

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot
        >>> T = np.array([25, 50, 100, 150])
        >>> acc = pd.DataFrame({"cell": "lstm", "seq_len": T, "value": [0.9, 0.85, 0.7, 0.6]})
        >>> grad = pd.concat([pd.DataFrame({"cell": "lstm", "seq_len": T, "stage": s, "value": r * T})
        ...                   for s, r in [("init", -0.2), ("trained", -0.05)]])
        >>> knn = pd.DataFrame({"baseline": "1nn_euclidean", "seq_len": T, "value": 0.9})
        >>> fig = gplot.length_effect(acc, grad, knn)
    """
    func = "length_effect"
    require(accuracy, func, ["cell", "seq_len", "value"], optional=["seed"])
    require(gradient, func, ["cell", "seq_len", "stage", "value"], optional=["seed"])
    if baselines is not None:
        require(baselines, func, ["baseline", "seq_len", "value"])
    cells = S.cells_in(accuracy["cell"])
    colors = S.cell_colors(cells)
    fig = S.new_figure(fig, (12.5, 4.4))
    a0, a1 = S.grid(fig, 1, 2)[0]
    acc = summarise(accuracy, ["cell", "seq_len"], band="bootstrap")
    g = gradient[np.isfinite(gradient["value"].astype(float))]
    gr = summarise(g, ["cell", "stage", "seq_len"], band="bootstrap")
    n_max = int(acc["n"].max()) if len(acc) else 1
    for cell in cells:
        r = acc[acc["cell"] == cell].sort_values("seq_len")
        _band(a0, r, "seq_len", colors[cell], n_max, marker="o", markersize=4)
        for stage, ls in (("init", (0, (3, 2))), ("trained", "-")):
            r = gr[(gr["cell"] == cell) & (gr["stage"] == stage)].sort_values("seq_len")
            if not r.empty:
                _band(a1, r, "seq_len", colors[cell], n_max, linestyle=ls, marker="o",
                      markersize=4)  # fmt: skip
    handles: list = [S.line_handle(S.cell_label(cl), color=colors[cl]) for cl in cells]
    if baselines is not None:
        marks = {"majority": ("s", ":"), "1nn_euclidean": ("^", "--"), "1nn_dtw": ("v", "-.")}
        names = {"majority": "majority class", "1nn_euclidean": "1-NN Euclidean",
                 "1nn_dtw": "1-NN DTW"}  # fmt: skip
        for b in S.ordered(baselines["baseline"], tuple(marks)):
            r = baselines[baselines["baseline"] == b].groupby("seq_len")["value"].mean()
            mk, ls = marks.get(b, ("x", "-"))
            a0.plot(r.index, r.to_numpy(), color="0.35", marker=mk, linestyle=ls, linewidth=1.2,
                    markersize=5, gid="baseline")  # fmt: skip
            handles.append(Line2D([], [], color="0.35", marker=mk, linestyle=ls,
                                  label=names.get(b, str(b))))  # fmt: skip
    a0.set_xscale("log")
    a0.set_ylim(0, 1.02)
    a0.set_xlabel(r"sequence length $T$ (steps, log scale)")
    a0.set_ylabel("test accuracy")
    a0.set_title("accuracy on the fixed test split", fontsize="medium")
    a1.set_xscale("log")
    a1.set_xlabel(r"sequence length $T$ (steps, log scale)")
    a1.set_ylabel(r"$\log_{10}\,\|\partial L/\partial h_0\|\,/\,\|\partial L/\partial h_{T-1}\|$")
    a1.set_title("gradient reaching the first step", fontsize="medium")
    ticks = sorted({int(t) for t in accuracy["seq_len"]})
    for ax in (a0, a1):
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.grid(True, linewidth=0.4, alpha=0.5)
    handles += [S.line_handle("trained (right)"),
                S.line_handle("at init (right)", linestyle=(0, (3, 2)))]  # fmt: skip
    if n_max > 1:
        handles.append(S.band_handle(S.band_text("bootstrap", n_max)))
    S.figure_legend(fig, handles, fontsize="small")
    fig.suptitle(title)
    return fig
