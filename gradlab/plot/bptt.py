"""Where ∂L/∂W comes from: the norm of each lag's contribution to the parameter gradient."""

from __future__ import annotations

import re

import pandas as pd
from matplotlib.axes import Axes

from . import _style as S
from ._check import one_quantity, require
from ._stats import check_band, summarise

_PARAM_ORDER = ("weight_hh", "weight_ih", "bias_hh", "bias_ih", "bias")
_PARAM_LABELS = {
    "weight_hh": r"$W_{hh}$ (recurrent)",
    "weight_ih": r"$W_{ih}$ (input)",
    "bias_hh": r"$b_{hh}$",
    "bias_ih": r"$b_{ih}$",
    "bias": "biases",
}


def _param_key(p: object) -> str:
    """torch names carry a layer/direction suffix: weight_hh_l0, bias_ih_l1_reverse."""
    return re.sub(r"_l\d+(_reverse)?$", "", str(p))


def param_label(p: object) -> str:
    key = _param_key(p)
    label = _PARAM_LABELS.get(key, key)
    suffix = str(p)[len(key) :].lstrip("_")
    if suffix in ("", "l0") or key not in _PARAM_LABELS:
        return label
    return f"{label} [{suffix.replace('_', ' ')}]"


def bptt_by_lag(
    df: pd.DataFrame,
    ax: Axes | None = None,
    *,
    normalize: bool = False,
    quantity: str | None = None,
    band: str | None = "ci",
    title: str = "Share of ∂L/∂W by lag",
) -> Axes:
    """Norm of the lag-k term of ∂L/∂W = Σ_k (lag-k term), log y; colour per cell, style per param.

    Required columns: ``cell``, ``param`` (e.g. "weight_hh", "weight_ih", "bias" or torch names
    "weight_hh_l0"), ``lag`` (k = T - t, steps), ``value`` (norm of the contribution, plain, > 0).
    Optional: ``seed`` (line: geometric mean over seeds; band: 95% CI in log space or min–max),
    ``quantity``. ``normalize=True`` divides each curve by its sum over lags first (per seed), so
    the curves read as shares that sum to 1.

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> lag = np.arange(40)
        >>> df = pd.DataFrame({"cell": "rnn_tanh", "param": "weight_hh", "lag": lag,
        ...                    "value": 0.5 ** lag})
        >>> ax = gplot.bptt_by_lag(df, normalize=True)  # shares of the sum
        >>> ax.get_yscale()
        'log'
    """
    func = "bptt_by_lag"
    require(df, func, ["cell", "param", "lag", "value"], optional=["seed", "quantity"])
    check_band(band, func)
    df, _ = one_quantity(df, func, quantity)
    if normalize:
        keys = [c for c in ("cell", "param", "seed", "init", "seq_len") if c in df.columns]
        total = df.groupby(keys, sort=False)["value"].transform("sum")
        df = df.assign(value=df["value"] / total)
    summ = summarise(df, ["cell", "param", "lag"], band=band, log=True)
    if summ.empty:
        raise ValueError(f"{func}: no positive, finite values to draw on a log axis")

    fig, ax = S.new_axes(ax, (8.4, 4.2))
    cells = S.cells_in(summ["cell"])
    colors = S.cell_colors(cells)
    params = sorted(summ["param"].unique(), key=lambda p: (_rank(p), str(p)))
    styles = S.linestyles(params)
    for cell in cells:
        for p in params:
            s = summ[(summ["cell"] == cell) & (summ["param"] == p)]
            if s.empty:
                continue
            x = s["lag"].to_numpy(float)
            ax.plot(x, s["mean"], color=colors[cell], linestyle=styles[p], linewidth=S.LINEWIDTH,
                    label=f"{S.cell_label(cell)}, {param_label(p)}", gid="data")  # fmt: skip
            if band is not None and s["n"].max() > 1:
                ax.fill_between(x, s["lo"], s["hi"], color=colors[cell], alpha=S.BAND_ALPHA,
                                linewidth=0, gid="band")  # fmt: skip
    ax.set_yscale("log")
    handles = [S.line_handle(S.cell_label(c), color=colors[c]) for c in cells]
    handles += [S.line_handle(param_label(p), linestyle=styles[p], color="0.25") for p in params]
    n = int(summ["n"].max())
    if band is not None and n > 1:
        handles.append(S.band_handle(S.band_text(band, n, geometric=True)))
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0),
              borderaxespad=0.0)  # fmt: skip
    ax.set_xlabel(S.LAG_LABEL)
    if normalize:
        ax.set_ylabel("share of Σ over lags of\n" + r"$\|\partial L/\partial W|_{k}\|$ (log scale)")
    else:
        ax.set_ylabel(r"norm of lag-$k$ term $\|\partial L/\partial W|_{k}\|$ (log scale)")
    ax.set_title(title)
    ax.grid(True, which="major", linewidth=0.4, alpha=0.5)
    return ax


def _rank(p: object) -> int:
    key = _param_key(p)
    return _PARAM_ORDER.index(key) if key in _PARAM_ORDER else len(_PARAM_ORDER)
