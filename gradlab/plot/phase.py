"""Order-to-chaos phase diagram: measured gradient decay rate and Lyapunov exponent vs theory."""

from __future__ import annotations

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from . import _style as S
from ._check import require
from ._stats import check_band, summarise

QUANTITIES = ("decay_rate", "lyapunov")
_MARKERS = {"decay_rate": ("o", True), "lyapunov": ("s", False)}  # (marker, filled)
_QLABEL = {"decay_rate": "gradient decay rate", "lyapunov": "max. Lyapunov exponent"}
_THEORY_DASH = {"decay_rate": "--", "lyapunov": "-."}


def edge_of_chaos(gain: np.ndarray, rate: np.ndarray) -> list[float]:
    """Gains where the piecewise-linear curve rate(gain) crosses 0 (sorted by gain)."""
    order = np.argsort(gain, kind="stable")
    g, r = np.asarray(gain, float)[order], np.asarray(rate, float)[order]
    ok = np.isfinite(g) & np.isfinite(r)
    g, r = g[ok], r[ok]
    out = [float(x) for x in g[r == 0]]
    for i in range(len(g) - 1):
        if r[i] * r[i + 1] < 0:
            out.append(float(g[i] - r[i] * (g[i + 1] - g[i]) / (r[i + 1] - r[i])))
    return sorted(set(out))


def gain_phase_diagram(
    measured: pd.DataFrame,
    theory: pd.DataFrame,
    ax: Axes | None = None,
    *,
    band: str | None = "ci",
    title: str = "Edge of chaos: measured rates vs mean-field theory",
) -> Axes:
    """Rates (ln per step) against σ_w, one colour per input std σ_x.

    ``measured`` columns: ``gain`` (σ_w), ``input_std``, ``quantity`` ∈ {"decay_rate",
    "lyapunov"}, ``value`` (ln per step); optional ``seed``. Drawn as markers (filled circle:
    decay rate, open square: Lyapunov exponent) with error bars: 95% CI over seeds (or min–max).
    ``theory`` columns: ``gain``, ``input_std``, ``quantity``, ``value`` (mean field, ½ ln χ₁);
    drawn as dashed lines (one per input std; a single line when both quantities agree).
    Where a theory line crosses 0 (linear interpolation) a dotted vertical line marks the edge of
    chaos, and its σ_w is written in the legend. Other quantities are ignored.

    Examples:
        >>> import numpy as np, pandas as pd, gradlab.plot as gplot

        >>> from gradlab import theory
        >>> th = theory.mean_field_table(np.linspace(0.5, 3, 26), sigma_in=1.0)
        >>> measured = th[th["quantity"] == "decay_rate"].iloc[::5]  # stand-in for measurements
        >>> ax = gplot.gain_phase_diagram(measured, th)
    """
    func = "gain_phase_diagram"
    cols = ["gain", "input_std", "quantity", "value"]
    require(measured, func, cols, optional=["seed"], numeric=["gain", "value"], table="measured")
    require(theory, func, cols, numeric=["gain", "value"], table="theory")
    check_band(band, func)
    meas = measured[measured["quantity"].isin(QUANTITIES)]
    theo = theory[theory["quantity"].isin(QUANTITIES)]
    for name, d in (("measured", meas), ("theory", theo)):
        if d.empty:
            raise ValueError(f"{func}: {name} has no rows with quantity in {QUANTITIES}")

    stds = S.ordered([*meas["input_std"], *theo["input_std"]])
    cmap = mpl.colormaps["viridis"]
    colors = {s: cmap(0.85 * i / max(len(stds) - 1, 1)) for i, s in enumerate(stds)}
    fig, ax = S.new_axes(ax, (9.0, 4.4))
    ax.axhline(0.0, color="0.3", linewidth=0.8, gid="reference")

    # Theory for both quantities is the same ½ ln χ₁ in mean field: draw it once, dashed. Only when
    # the table gives two different curves are they drawn apart (dashed / dash-dot).
    split = not _all_same(theo, stds)
    handles = []
    for s in stds:
        c = colors[s]
        th = theo[theo["input_std"] == s]
        curves = {
            q: th[th["quantity"] == q].groupby("gain", sort=True)["value"].mean()
            for q in QUANTITIES
            if (th["quantity"] == q).any()
        }
        if not split:
            curves = dict([next(iter(curves.items()))]) if curves else {}
        for q, cur in curves.items():
            ax.plot(cur.index.to_numpy(float), cur.to_numpy(float), color=c,
                    linestyle=_THEORY_DASH[q] if split else "--", linewidth=1.4,
                    gid="theory", label=f"_theory {q} σ_x={s}")  # fmt: skip
        edges = edge_of_chaos(*_first(curves)) if curves else []
        for g in edges:
            ax.axvline(g, color=c, linestyle=":", linewidth=1.2, gid="edge")
        m = summarise(meas[meas["input_std"] == s], ["quantity", "gain"], band=band)
        for q in QUANTITIES:
            mq = m[m["quantity"] == q]
            if mq.empty:
                continue
            marker, filled = _MARKERS[q]
            y = mq["mean"].to_numpy(float)
            yerr = np.vstack([y - mq["lo"].to_numpy(float), mq["hi"].to_numpy(float) - y])
            bars = ax.errorbar(mq["gain"].to_numpy(float), y, yerr=yerr if band else None,
                               fmt=marker, color=c, markerfacecolor=c if filled else "none",
                               markeredgecolor=c, markersize=4 if filled else 7, capsize=2,
                               elinewidth=1,
                               linestyle="none", label=f"_measured {q} σ_x={s}")  # fmt: skip
            bars.lines[0].set_gid("data")
        edge = ", ".join(S.fmt_num(g, 3) for g in edges)
        lab = rf"$\sigma_x$ = {S.fmt_num(float(s), 3)}" + (
            rf" (edge $\sigma_w^*$ ≈ {edge})" if edges else ""
        )
        handles.append(S.line_handle(lab, color=c, linewidth=6))

    n = int(summarise(meas, ["quantity", "gain", "input_std"], band=band)["n"].max())
    how = {"minmax": "min–max", "bootstrap": "bootstrap 95% CI"}.get(band, "95% CI")
    errs = f", bars: {how} over {n} seeds" if band and n > 1 else ""
    present = [q for q in QUANTITIES if (meas["quantity"] == q).any()]
    for q in present:
        marker, filled = _MARKERS[q]
        handles.append(S.line_handle(f"measured {_QLABEL[q]}{errs if q == present[0] else ''}",
                                     marker=marker, linestyle="none",
                                     markerfacecolor="black" if filled else "white",
                                     markeredgecolor="black"))  # fmt: skip
    if split:
        for q in S.ordered(theo["quantity"], QUANTITIES):
            handles.append(S.line_handle(f"theory: mean-field {_QLABEL[q]}",
                                         linestyle=_THEORY_DASH[q], linewidth=1.4))  # fmt: skip
    else:
        handles.append(S.line_handle(r"theory: mean field, $\frac{1}{2}\ln\chi_1$",
                                     **S.THEORY))  # fmt: skip
    handles.append(S.line_handle("edge of chaos (theory = 0)", color="black", linestyle=":",
                                 linewidth=1.2))  # fmt: skip
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0),
              borderaxespad=0.0)  # fmt: skip
    ax.set_xlabel(S.SIGMA_W_LABEL)
    ax.set_ylabel("rate (ln per step)")
    ax.set_title(title)
    ax.grid(True, linewidth=0.4, alpha=0.5)
    return ax


def _same_curve(a: pd.Series, b: pd.Series) -> bool:
    common = a.index.intersection(b.index)
    if len(common) != len(a) or len(common) != len(b):
        return False
    return bool(np.allclose(a.loc[common], b.loc[common], rtol=1e-9, atol=1e-12, equal_nan=True))


def _all_same(theo: pd.DataFrame, stds: list) -> bool:
    """True when, for every input std, the theory curves given for both quantities coincide."""
    for s in stds:
        th = theo[theo["input_std"] == s]
        cur = [th[th["quantity"] == q].groupby("gain")["value"].mean() for q in QUANTITIES]
        if all(len(c) for c in cur) and not _same_curve(*cur):
            return False
    return True


def _first(curves: dict[str, pd.Series]) -> tuple[np.ndarray, np.ndarray]:
    cur = next(iter(curves.values()))
    return cur.index.to_numpy(float), cur.to_numpy(float)
