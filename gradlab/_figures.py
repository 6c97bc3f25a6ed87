"""The figure set: experiment results -> PNG/SVG figures and a README gallery.

``render_all(results, out_dir, scale)`` is what ``gradlab figures`` calls with the results of
every experiment in ``experiments/`` (experiment name -> its tidy rows). Each figure reads one
experiment's table, selects and reshapes it, and draws it with :mod:`gradlab.plot`; nothing is
computed here beyond selections, means over seeds with their bootstrap 95% confidence
intervals (``_boot``) and reading numbers off the table for the README, each quoted with its
interval to the digits the interval supports (``_ci``). A figure whose experiment has no rows is left out and listed as missing in the README.

Output, per figure NAME: ``NAME.png`` and ``NAME.svg`` (byte-for-byte deterministic, see
:func:`gradlab.plot.save`), and ``README.md``: the gallery, with a one-line reading of each
figure that quotes the numbers it shows and the command that made it.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import matplotlib as mpl
import numpy as np
import pandas as pd

__all__ = ["FIGURES", "render_all"]

_CELL_NAMES = {"rnn_tanh": "tanh RNN", "rnn_relu": "ReLU RNN", "lstm": "LSTM", "gru": "GRU",
               "transformer": "Transformer"}  # fmt: skip
_CELL_ORDER = ("rnn_tanh", "rnn_relu", "lstm", "gru", "transformer")
_COPY_SYMBOLS = 8  # gradlab.tasks.COPY_SYMBOLS, not imported here (it imports torch)
_ROUNDOFF_DECADES = 13.0  # singular values this far below a product's largest are round-off


@dataclass(frozen=True)
class _Figure:
    name: str  # file stem
    experiment: str  # the experiment whose rows it draws
    caption: str  # what is plotted (README heading)
    draw: Callable[[pd.DataFrame], tuple[object, str]]  # rows -> (figure, one-line reading)
    # a committed table (path from the repository root) instead of an experiment's results:
    # read, not re-measured, by `make figures` (e.g. a timing benchmark)
    source: str | None = None
    # further experiments whose rows are appended (column ``experiment`` tells them apart)
    also: tuple[str, ...] = ()


_ROOT = Path(__file__).resolve().parents[1]


def _with_sources(results: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``results`` plus the committed tables of figures that read one (when not given)."""
    out = dict(results)
    for f in FIGURES:
        if f.source and f.experiment not in out and (_ROOT / f.source).exists():
            out[f.experiment] = pd.read_csv(_ROOT / f.source)
    return out


# --- small helpers: selection and number formatting --------------------------------------


def _q(df: pd.DataFrame, *quantities: str) -> pd.DataFrame:
    return df[df["quantity"].isin(quantities)]


def _cells(values) -> list[str]:
    present = set(values)
    return [c for c in _CELL_ORDER if c in present] + sorted(present - set(_CELL_ORDER))


def _name(cell: str) -> str:
    return _CELL_NAMES.get(cell, str(cell))


def _f(x: float, digits: int = 2) -> str:
    """A number for the README: fixed digits, a true minus sign, inf as ∞."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if round(x, digits) == 0:
        x = 0.0  # no "−0.00"
    return f"{x:.{digits}f}".replace("-", "−")


def _g(x: float, digits: int = 2) -> str:
    """Significant digits (for numbers of any size)."""
    if math.isinf(x) or math.isnan(x):
        return _f(x)
    return f"{x:.{digits}g}".replace("-", "−")


def _sci(x: float) -> str:
    """A plain number in scientific notation, 0 as 0."""
    if x == 0:
        return "0"
    return f"{x:.1e}".replace("e-0", "e-").replace("e+0", "e").replace("-", "−")


def _decimals(lo: float, hi: float) -> int | None:
    """Decimal places an interval [lo, hi] supports: down to its width's first significant
    digit, or its second when the width's leading digits are 100–354 (the Particle Data
    Group's rounding rule, Review of Particle Physics, Introduction: one digit there would
    misstate the width by up to 40%).

    0.0101–0.0150 (width 0.0049) -> 3; 1.2–3.4 (2.2) -> 1; 120–180 (60) -> -1 (tens);
    3–14 (11) -> 0. None if lo == hi.
    """
    width = abs(hi - lo)
    if not math.isfinite(width) or width == 0:
        return None
    e = math.floor(math.log10(width))
    return -e + (1 if width / 10.0**e < 3.55 else 0)


def _round_to(x: float, decimals: int, *, sci: bool) -> str:
    if math.isinf(x) or math.isnan(x):
        return _f(x)
    if sci and x != 0:
        exp = math.floor(math.log10(abs(x)))
        mant = round(x / 10.0**exp, max(0, exp + decimals))
        if abs(mant) >= 10:  # 9.96 -> 10.0: one decade up
            exp, mant = exp + 1, mant / 10
        text = f"{mant:.{max(0, exp + decimals)}f}e{exp}"
        return text.replace("-", "−")
    if decimals <= 0:
        return _f(round(x, decimals), 0)
    return _f(x, decimals)


def _ci(mean: float, lo: float, hi: float, *, digits: int = 2, unit: str = "") -> str:
    """A mean with its 95% CI, to the digits the interval supports.

    0.0123, [0.0101, 0.0150] -> "0.012 (95% CI 0.010–0.015)": every number is rounded at the
    decimal ``_decimals`` gives the interval (its width's first significant digit, the second
    when that digit is 1–3), so what is printed does not change when the mean moves by a small
    part of the interval. Numbers below 10⁻³ or from 10⁵ up are in
    scientific notation ("8.7e−5"), negative bounds are joined by " to ". Without an interval
    (one seed, or all equal) the mean is printed to ``digits`` significant digits. ``unit``
    (e.g. "%") follows every number.
    """
    if any(v is None or math.isnan(v) for v in (mean, lo, hi)):
        return "n/a"
    dec = _decimals(lo, hi)
    if dec is None:
        return _g(mean, digits) + unit
    big = max(abs(mean), abs(lo), abs(hi))
    sci = big != 0 and (big < 1e-3 or big >= 1e5)
    m, a, b = (_round_to(v, dec, sci=sci) + unit for v in (mean, lo, hi))
    sep = " to " if min(lo, hi) < 0 else "–"
    return f"{m} (95% CI {a}{sep}{b})"


def _boot(df: pd.DataFrame, keys: list[str], value: str = "value") -> pd.DataFrame:
    """Mean and bootstrap 95% CI of ``value`` over the rows (seeds) of each ``keys`` group.

    Returns a frame indexed by ``keys`` with columns mean, lo, hi, n (plot._stats.summarise).
    """
    from gradlab.plot._stats import summarise

    return summarise(df, keys, value=value, band="bootstrap").set_index(keys)


def _cit(stats: pd.DataFrame, key, unit: str = "") -> str:
    """``_ci`` of one row of a ``_boot`` frame."""
    row = stats.loc[key]
    return _ci(float(row["mean"]), float(row["lo"]), float(row["hi"]), unit=unit)


def _one(df: pd.DataFrame, col: str):
    """The single value of ``col`` (a fixed parameter) in ``df``."""
    vals = df[col].unique()
    return vals[0] if len(vals) == 1 else None


def _seeds(df: pd.DataFrame) -> str:
    n = int(df["seed"].nunique()) if "seed" in df.columns else 1
    return "1 seed" if n == 1 else f"{n} seeds"


def _over(df: pd.DataFrame, what: str = "mean") -> str:
    """"mean of 5 seeds, bootstrap 95% CI", or "1 seed, no interval"."""
    n = int(df["seed"].nunique()) if "seed" in df.columns else 1
    return "1 seed, no interval" if n == 1 else f"{what} of {n} seeds, bootstrap 95% CI"


def _init_text(df: pd.DataFrame) -> str:
    init = _one(df, "init")
    return "PyTorch's default init" if init == "default" else f"init {init}"


def _mean_by(df: pd.DataFrame, keys: list[str]) -> pd.Series:
    return df.groupby(keys, sort=True, observed=True)["value"].mean()


def _figure(width: float, height: float):
    import matplotlib.pyplot as plt

    return plt.figure(figsize=(width, height), layout="constrained")


# --- one function per figure --------------------------------------------------------------


def _decay(df: pd.DataFrame):
    from gradlab import plot

    curves = _q(df, "log10_grad_norm")
    H, T = _one(df, "hidden_size"), _one(df, "seq_len")
    ax = plot.decay_curves(
        curves,
        band="bootstrap",
        title=f"Gradient norm by lag at {_init_text(df)} ($H = {H}$, $T = {T}$)",
    )
    rate = _boot(_q(df, "log10_decay_rate"), ["cell"])
    mem = _boot(_q(df, "memory_length"), ["cell"])
    start = _boot(_q(df, "log10_grad_norm_at_start"), ["cell"])
    cells = _cells(rate.index)
    parts = ", ".join(f"{_name(c)} {_cit(rate, c)}" for c in cells)
    mems = ", ".join(f"{_name(c)} {_cit(mem, c)}" for c in cells)
    ends = ", ".join(f"{_name(c)} 10^{_cit(start, c)}" for c in cells)
    reading = (
        f"Fitted decay rates at {_init_text(df)}: {parts} log10 per step ("
        f"{_over(df)}); the gradient falls 1000-fold within {mems} steps, "
        f"and the gradient reaching step 0 from the loss at step {T - 1} is {ends} of its "
        "value at the loss."
    )
    return ax, reading


def _flow_map(df: pd.DataFrame):
    from gradlab import plot

    spec = _q(df, "log10_jac_norm_spectral")
    H, T = _one(df, "hidden_size"), _one(df, "seq_len")
    fig = plot.flow_heatmaps(
        spec,
        quantity="log10_jac_norm_spectral",
        title=f"Spectral norm of $\\partial h_t/\\partial h_k$ at {_init_text(df)} "
        f"($H = {H}$, $T = {T}$; red: grows, blue: shrinks)",
    )
    t_max = spec["t"].max()
    corner = _mean_by(spec[(spec["t"] == t_max) & (spec["k"] == spec["k"].min())], ["cell"])
    off = spec[spec["lag"] >= 1]
    top = _mean_by(off, ["cell", "lag"]).groupby(level=0).max() if not off.empty else None
    cells = _cells(corner.index)
    ends = ", ".join(f"{_name(c)} 10^{_f(corner[c], 0)}" for c in cells)
    most = max(cells, key=lambda c: top[c]) if top is not None else None
    if most is not None and top[most] <= 0.01:
        verdict = (
            f"every map is blue below the diagonal (the largest norm over ≥ 1 step is "
            f"10^{_f(top[most], 2)}, {_name(most)}): no stretch of the sequence amplifies a "
            "perturbation"
        )
    elif most is not None:
        verdict = f"the largest norm over ≥ 1 step is 10^{_f(top[most], 2)} ({_name(most)})"
    else:
        verdict = "the map has no off-diagonal entries"
    reading = (
        f"‖∂h_{{{t_max}}}/∂h_0‖₂ = {ends}; {verdict}. The colour depends on the lag t − k only "
        "(bands parallel to the diagonal): the decay is stationary along the sequence."
    )
    return fig, reading


def _seq_len(df: pd.DataFrame):
    from gradlab import plot

    inits = [i for i in ("default", "orthogonal") if i in set(df["init"])]
    inits += sorted(set(df["init"]) - set(inits))
    fig = _figure(4.6 * len(inits) + 0.6, 7.4)
    axes = fig.subplots(2, len(inits), squeeze=False)
    panels = [
        ("log10_grad_norm_at_start", r"$\log_{10}\|\partial L/\partial h_0\|$ (loss at $T-1$)",
         "{:.0f}"),
        ("log10_decay_rate", "fitted decay rate (log₁₀ per step)", "{:.3f}"),
    ]  # fmt: skip
    for i, (quantity, label, fmt) in enumerate(panels):
        for j, init in enumerate(inits):
            part = _q(df[df["init"] == init], quantity)
            plot.decay_heatmap(part, row="seq_len", col="cell", ax=axes[i, j], fmt=fmt,
                               quantity_label=label, title=f"init: {init}\n{label}")  # fmt: skip
    fig.suptitle(f"Sequence-length sweep ($H = {_one(df, 'hidden_size')}$, mean of {_seeds(df)})")
    start = _boot(_q(df, "log10_grad_norm_at_start"), ["init", "cell", "seq_len"])
    rate = _mean_by(_q(df, "log10_decay_rate"), ["init", "cell", "seq_len"])
    rate_ci = _boot(_q(df, "log10_decay_rate"), ["init", "cell", "seq_len"])
    T_max, T_min = int(df["seq_len"].max()), int(df["seq_len"].min())
    cells = _cells(df["cell"])
    per = []
    for c in cells:
        vals = " vs ".join(f"10^{_cit(start, (i, c, T_max))}" for i in inits)
        per.append(f"{_name(c)} {vals}")
    spread = max(
        abs(rate[(i, c, T_max)] - rate[(i, c, 100 if 100 in set(df["seq_len"]) else T_min)])
        for i in inits
        for c in cells
    )
    plain = [c for c in cells if c.startswith("rnn_")]
    effect = ""
    if "orthogonal" in inits and "default" in inits and plain:
        d = ", ".join(
            f"{_name(c)} {_cit(rate_ci, ('default', c, T_max))} → "
            f"{_cit(rate_ci, ('orthogonal', c, T_max))}"
            for c in plain
        )
        effect = f" Orthogonal instead of default weights change the plain RNNs' rate {d}."
    reading = (
        f"The gradient reaching step 0 falls exponentially with T: at T = {T_max} it is "
        f"{'; '.join(per)} ({' vs '.join(inits)}; {_over(df)}), "
        f"because the per-step rate barely depends on T (the seed-mean rates at T ≥ 100 differ "
        f"by at most {_g(spread, 1)} log10/step).{effect}"
    )
    return fig, reading


def _init(df: pd.DataFrame):
    from gradlab import plot

    fig = _figure(13.5, 5.4)
    axes = fig.subplots(1, 2)
    T = _one(df, "seq_len")
    plot.decay_heatmap(_q(df, "log10_decay_rate"), row="init", col="cell", ax=axes[0],
                       fmt="{:.3f}", quantity_label="fitted decay rate (log₁₀ per step)",
                       title="fitted decay rate (log₁₀ per step)")  # fmt: skip
    start = _q(df, "log10_grad_norm_at_start")
    dead = start[np.isneginf(start["value"])]
    note = "\n(−∞: exactly 0 for some input sequence)" if not dead.empty else ""
    plot.decay_heatmap(start, row="init", col="cell", ax=axes[1], fmt="{:.1f}",
                       quantity_label=rf"$\log_{{10}}\|\partial L/\partial h_0\|$, $T = {T}$",
                       title=f"gradient reaching step 0 from the loss at step {T - 1}{note}")  # fmt: skip
    fig.suptitle(
        f"Initialisation sweep ($H = {_one(df, 'hidden_size')}$, mean of {_seeds(df)}; "
        "n/a: the init is not defined for that cell)"
    )
    rate = _mean_by(_q(df, "log10_decay_rate"), ["cell", "init"])
    rate_ci = _boot(_q(df, "log10_decay_rate"), ["cell", "init"])
    mem = _mean_by(_q(df, "memory_length"), ["cell", "init"])
    parts = []
    for c in _cells(df["cell"]):
        r = rate[c]
        best = r.idxmax()
        m = mem[(c, best)]
        mtxt = f"> {T - 1}" if math.isinf(m) else _cit(_boot(_q(df, "memory_length"),
                                                                ["cell", "init"]), (c, best))
        parts.append(
            f"{_name(c)} {_cit(rate_ci, (c, 'default'))} at default → "
            f"{_cit(rate_ci, (c, best))} with {best} (memory length {mtxt} steps)"
        )
    flat = [f"{_name(c)}/{i}" for (c, i), v in rate.items() if v > -0.02]
    reading = (
        f"Decay rate in log10 per step ({_over(df)}), default init →"
        " slowest init per cell: "
        + "; ".join(parts)
        + ". Nearly lossless (slower than −0.02 log10/step): "
        + (", ".join(flat) or "none")
        + "."
    )
    if not dead.empty:
        pairs = sorted({f"{_name(c)}/{i}" for c, i in zip(dead["cell"], dead["init"], strict=True)})
        reading += (
            f" −∞ ({', '.join(pairs)}): for some input the gradient reaching step 0 is exactly 0"
            " (every path is cut, e.g. by ReLU units that switch off), although the batch-mean"
            " decay rate is nearly flat."
        )
    return fig, reading


def _gain(df: pd.DataFrame):
    from gradlab import plot
    from gradlab.plot._stats import bootstrap_ci
    from gradlab.plot.phase import edge_of_chaos as crossing

    meas = df[(df["source"] == "measured") & df["quantity"].isin(["decay_rate", "lyapunov"])]
    theo = df[(df["source"] == "theory") & df["quantity"].isin(["decay_rate", "lyapunov"])]
    theo = theo.drop_duplicates(["gain", "input_std", "quantity"])
    N = _one(df, "hidden_size")
    ax = plot.gain_phase_diagram(
        meas,
        theo,
        band="bootstrap",
        title=f"Random tanh RNN ($N = {N}$): gradient rate and $\\lambda_{{max}}$ vs mean field",
    )
    edge = df[df["quantity"] == "edge_of_chaos"].groupby("input_std")["value"].first()
    rate = _mean_by(meas[meas["quantity"] == "decay_rate"], ["input_std", "gain"])
    th = theo[theo["quantity"] == "decay_rate"].set_index(["input_std", "gain"])["value"]
    # per seed: the measured rate's error against theory, λ_max − rate, the zero crossing
    per_seed = meas.pivot_table(index=["input_std", "seed", "gain"], columns="quantity",
                                values="value").reset_index()  # fmt: skip
    th_of = th.reindex(pd.MultiIndex.from_frame(per_seed[["input_std", "gain"]])).to_numpy()
    per_seed = per_seed.assign(err=(per_seed["decay_rate"] - th_of).abs(),
                               lam_err=(per_seed["lyapunov"] - per_seed["decay_rate"]).abs())  # fmt: skip
    parts = []
    for s in edge.index:
        r = rate[s]
        cross = crossing(r.index.to_numpy(float), r.to_numpy(float))
        mine = per_seed[per_seed["input_std"] == s]
        err = _boot(mine, ["gain"], value="err")
        worst = err["mean"].idxmax()
        lam_err = _boot(mine, ["gain"], value="lam_err")
        lam_worst = lam_err["mean"].idxmax()
        seed_cross = [
            crossing(g["gain"].to_numpy(float), g["decay_rate"].to_numpy(float))
            for _, g in mine.sort_values("gain").groupby("seed")
        ]
        if len(cross) == 1 and all(len(c) == 1 for c in seed_cross):
            cross_txt = _ci(*bootstrap_ci([c[0] for c in seed_cross]))
        else:
            cross_txt = ", ".join(_f(c, 2) for c in cross) or "none"
        parts.append(
            f"σ_x = {_g(s)}: edge of chaos σ_w* = {_f(edge[s], 3)} (theory) vs "
            f"{cross_txt} (zero crossing of the measured rate); |measured − ½ ln χ₁| is "
            f"largest at σ_w = {_g(worst, 4)}: {_cit(err, worst)}; |λ_max − gradient rate| is"
            f" largest at σ_w = {_g(lam_worst, 4)}: {_cit(lam_err, lam_worst)}"
        )
    reading = (
        "The measured gradient rate (ln per step) and the largest Lyapunov exponent follow the "
        "mean-field ½ ln χ₁ and change sign at the edge of chaos; input noise moves the edge "
        f"to larger gains ({_over(df)}). " + "; ".join(parts) + "."
    )
    return ax, reading


def _spectra(df: pd.DataFrame):
    from gradlab import plot

    lv = _q(df, "log10_singular_value").rename(columns={"lag": "k"})
    # A product's singular values more than 13 decades below its largest are round-off, not
    # spectrum (float64 keeps ~15.6 digits; the ReLU RNN's Jacobian is singular: inactive units
    # give exact zeros); they are not drawn.
    product = ["cell", "init", "seed", "sample", "k"]
    lv = lv[lv["value"] >= lv.groupby(product)["value"].transform("max") - _ROUNDOFF_DECADES]
    # one spectrum per seed: geometric mean over the input samples at each rank that every
    # sample resolves (so the tail does not mix different subsets of samples)
    rank = ["cell", "init", "k", "seed", "index"]
    n_samples = lv.groupby(rank[:-1])["sample"].transform("nunique")
    lv = lv[lv.groupby(rank)["sample"].transform("count") == n_samples]
    per_seed = lv.groupby(rank, as_index=False)["value"].mean()
    sv = per_seed.assign(value=10.0 ** per_seed["value"])
    H = _one(df, "hidden_size")
    fig = plot.singular_value_spectra(
        sv,
        band="bootstrap",
        title=rf"Singular values of the $k$-step Jacobian $\partial s_T/\partial s_{{T-k}}$ "
        rf"($H = {H}$; LSTM: state $(h, c)$; values $< 10^{{-13}}\sigma_1$ are round-off, "
        "not drawn)",
    )
    k_max = int(lv["k"].max())
    top = _boot(per_seed[(per_seed["k"] == k_max) & (per_seed["index"] == 0)], ["cell", "init"])
    one = per_seed[(per_seed["k"] == 1) & (per_seed["init"] == "orthogonal")]
    lo = one.groupby(["cell", "seed"])["value"].min().groupby(level=0).mean()
    hi = one.groupby(["cell", "seed"])["value"].max().groupby(level=0).mean()
    raw = _q(df, "log10_singular_value")
    raw = raw[(raw["lag"] == 1) & (raw["init"] == "orthogonal")]
    size = raw.groupby("cell")["index"].max() + 1  # state size S
    resolved = (
        lv[(lv["k"] == 1) & (lv["init"] == "orthogonal")]
        .groupby(["cell", "seed", "sample"])["index"]
        .count()
        .groupby(level=0)
        .mean()
    )
    parts = []
    for c in _cells(top.index.get_level_values(0)):
        inits = ", ".join(f"{i} {_cit(top, (c, i))}" for i in top.loc[c].index)
        parts.append(f"{_name(c)}: {inits}")
    iso = "; ".join(
        f"{_name(c)} [{_f(lo[c], 1)}, {_f(hi[c], 2)}]"
        + (f" ({_f(resolved[c], 0)} of {size[c]} nonzero)" if resolved[c] < size[c] - 0.5 else "")
        for c in _cells(lo.index)
    )
    reading = (
        f"log10 of the largest singular value of the {k_max}-step product ("
        f"{_over(df)}): "
        + "; ".join(parts)
        + f". One orthogonal step already spreads the spectrum: log10 σ in {iso}; products of "
        "many steps fan out over many decades."
    )
    return fig, reading


def _bptt(df: pd.DataFrame):
    from gradlab import plot

    keep = _q(df, "contribution_norm")
    keep = keep[keep["param"].isin(["weight_hh", "weight_ih", "bias_ih"])]
    T = _one(df, "seq_len")
    ax = plot.bptt_by_lag(
        keep,
        normalize=True,
        band="bootstrap",
        title=f"Share of each lag in the BPTT sum ∂L/∂W (loss at step {T - 1}, {_init_text(df)})",
    )
    hh = keep[keep["param"] == "weight_hh"]
    total = hh.groupby(["cell", "seed"])["value"].sum()

    def share(rows: pd.DataFrame) -> pd.DataFrame:  # per cell: mean over seeds and CI, in %
        per_seed = 100 * rows.groupby(["cell", "seed"])["value"].sum() / total
        return _boot(per_seed.rename("value").reset_index(), ["cell"])

    cut = 10
    near, far = share(hh[hh["lag"] <= 1]), share(hh[hh["lag"] >= cut])
    cells = _cells(total.index.get_level_values(0))
    reading = (
        "Share of Σ_k ‖lag-k term of ∂L/∂W_hh‖ from lags 0–1: "
        + ", ".join(f"{_name(c)} {_cit(near, c, '%')}" for c in cells)
        + f"; from lags ≥ {cut}: "
        + ", ".join(f"{_name(c)} {_cit(far, c, '%') if c in far.index else '0%'}" for c in cells)
        + f" ({_over(df)}). The input weights and biases split the same way: every term"
        " carries the same factor ∂L/∂h_t."
    )
    return ax, reading


def _clip_text(df: pd.DataFrame) -> pd.DataFrame:
    return df.assign(clip=np.where(df["clip_norm"] > 0, df["clip_norm"].astype(str), "none"))


def _training(df: pd.DataFrame):
    from gradlab import plot

    rows = _clip_text(_q(df, "loss", "baseline"))
    H, steps = _one(df, "hidden_size"), _one(df, "steps")
    fig = plot.training_curves(
        rows,
        band="bootstrap",
        title=f"Training loss against the no-memory baseline (Adam, $H = {H}$, {steps} updates"
        f"{_copy_text(df)})",
    )
    final = _boot(_final(df, "eval_loss"), ["clip_norm", "task", "seq_len", "cell"])
    base = _mean_by(_q(df, "baseline"), ["task", "seq_len"])
    sentences = []
    for clip in sorted(final.index.get_level_values(0).unique()):
        parts = []
        for (task, T), b in base.items():
            cells = ", ".join(
                f"{_name(c)} {_cit(final, (clip, task, T, c))}"
                for c in _cells(final.loc[(clip, task, T)].index)
            )
            parts.append(f"{task} T = {T}: {cells} (baseline {_g(b, 3)})")
        how = "without clipping" if clip == 0 else f"with clipping at {_g(clip)}"
        sentences.append(
            f"Final evaluation loss {how} ({_over(df)}): "
            + "; ".join(parts)
            + "."
        )
    clips, B = df["clip_norm"].unique(), _one(df, "batch_size")
    if len(clips) == 1 and B is not None:
        n = _one(df, "copy_length") if "copy" in set(df["task"]) else None
        copy = "" if n is None else f", {n} symbols to copy instead of the paper's 10"
        sentences.append(
            f"Traded to keep `make figures` short: one clipping setting ({_g(clips[0])}), batch "
            f"{B}, {steps} updates{copy}, for {_seeds(df)} per setting."
        )
    return fig, " ".join(sentences)


def _copy_text(df: pd.DataFrame) -> str:
    n = _one(df, "copy_length") if "copy_length" in df.columns else None
    return f"; copy: {n} symbols to recall" if n is not None and "copy" in set(df["task"]) else ""


def _final(df: pd.DataFrame, quantity: str) -> pd.DataFrame:
    """Rows of ``quantity`` at each run's last evaluation."""
    ev = _q(df, quantity)
    return ev[ev["iteration"] == ev.groupby("point")["iteration"].transform("max")]


def _width(arch: str, h: float) -> str:
    """'H = 64' for a recurrent cell, 'd_model = 28' for the Transformer."""
    return f"{'d_model' if arch == 'transformer' else 'H'} = {int(h)}"


def _sizes(df: pd.DataFrame) -> str:
    """'LSTM H = 64, …, Transformer d_model = 28' from the study's hidden_size rows."""
    h = _q(df, "hidden_size").groupby("arch")["value"].first()
    return ", ".join(f"{_name(a)} {_width(a, h[a])}" for a in _cells(h.index))


def _copy(df: pd.DataFrame):
    """Accuracy over training on copy-memory (long_dependency study rows with curves)."""
    from gradlab import plot

    rows = _q(df, "accuracy").rename(columns={"arch": "cell"}).assign(clip=_one(df, "clip_norm"))
    n, steps = int(_one(df, "copy_length")), int(_one(df, "steps"))
    params = _q(df, "params")["value"]
    chance = 1.0 / _COPY_SYMBOLS
    fig = plot.training_curves(
        rows,
        band="bootstrap",
        quantity="accuracy",
        chance=chance,
        title=f"Copy-memory: accuracy on the {n} recalled symbols after a delay $T$\n(Adam at "
        f"{_lr_text(df)}, batch {int(_one(df, 'batch_size'))}, {steps} updates, "
        f"{int(params.min()):,}–{int(params.max()):,} parameters each)",
    )
    acc = _boot(_q(df, "final_accuracy").rename(columns={"arch": "cell"}), ["seq_len", "cell"])
    solved = acc[acc["lo"] > 0.9]
    parts = []
    for T in sorted(acc.index.get_level_values(0).unique()):
        vals = ", ".join(f"{_name(c)} {_cit(acc, (T, c))}" for c in _cells(acc.loc[T].index))
        parts.append(f"T = {T}: {vals}")
    verdict = (
        "Solved (CI above 0.9): " + ", ".join(f"{_name(c)} at T = {T}" for T, c in solved.index)
        if not solved.empty
        else "No architecture solves a length (CI above 0.9)"
    )
    reading = (
        f"Final accuracy on the recalled symbols (chance {_g(chance, 3)}; {_over(df)}): "
        + "; ".join(parts)
        + f". {verdict}. Sizes at equal parameter budget: {_sizes(df)}."
    )
    return fig, reading


def _representative_run(df: pd.DataFrame) -> dict:
    """The adding run at the longest length, without clipping (else: the first task, clip)."""
    task = "adding" if "adding" in set(df["task"]) else sorted(df["task"].unique())[0]
    part = df[df["task"] == task]
    clip = 0.0 if (part["clip_norm"] == 0).any() else float(part["clip_norm"].min())
    return {"task": task, "seq_len": int(part["seq_len"].max()), "clip_norm": clip}


def _training_grad(df: pd.DataFrame):
    from gradlab import plot

    run = _representative_run(df)
    g = _q(df, "grad_norm")
    for k, v in run.items():
        g = g[g[k] == v]
    cells = [c for c in ("rnn_tanh", "lstm") if c in set(g["cell"])] or _cells(g["cell"])[:2]
    seed = g["seed"].min() if "seed" in g.columns else None
    one = g if seed is None else g[g["seed"] == seed]
    fig = _figure(6.2 * len(cells), 4.4)
    axes = fig.subplots(1, len(cells), squeeze=False)[0]
    for ax, c in zip(axes, cells, strict=True):
        plot.training_grad_heatmap(one[one["cell"] == c], ax=ax, title=f"{_name(c)}")
    clip = "no clipping" if run["clip_norm"] == 0 else f"clip at {_g(run['clip_norm'])}"
    fig.suptitle(
        rf"$\|\partial L/\partial h_t\|$ over training, {run['task']} $T = {run['seq_len']}$,"
        f" {clip}" + ("" if seed is None else f", seed {seed}")
        + " (each panel its own colour scale; grey: exactly 0)"
    )
    parts = []
    g0 = g[g["step"] == g["step"].min()]
    with np.errstate(divide="ignore"):  # −∞ where the norm underflows to 0
        g0 = g0.assign(value=np.log10(g0["value"].astype(float)))
    for c in cells:
        part = g0[g0["cell"] == c]
        its = sorted(part["iteration"].unique())
        ends = _boot(part[part["iteration"].isin([its[0], its[-1]])], ["iteration"])
        dead = part[(part["iteration"] == its[-1]) & np.isneginf(part["value"])]
        vals = [f"10^{_cit(ends, i)}" for i in (its[0], its[-1])]
        note = f" ({len(dead)} of {_seeds(part)} exactly 0, left out)" if len(dead) else ""
        parts.append(f"{_name(c)} {vals[0]} at iteration {its[0]} → {vals[1]}{note} at {its[-1]}")
    loss_end = g[g["step"] == g["step"].max()]["value"]
    zero = (one["value"] == 0).any()
    reading = (
        f"The gradient that reaches step 0 (‖∂L/∂h_0‖, against a median {_sci(loss_end.median())}"
        f" at the loss step {run['seq_len'] - 1}) during training ({_over(g, 'log10 mean')}; "
        f"the maps show seed {seed}): "
        + "; ".join(parts)
        + "."
        + (" 0: the norm underflows in float32 (saturated units); drawn grey." if zero else "")
    )
    return fig, reading


def _gates(df: pd.DataFrame):
    from gradlab import plot

    cell, task, T = _one(df, "cell"), _one(df, "task"), int(_one(df, "seq_len"))
    H, steps = _one(df, "hidden_size"), _one(df, "steps")
    fig = plot.gates_over_training(
        df,
        band="bootstrap",
        horizon=float(T),
        chance=1 / _COPY_SYMBOLS if task == "copy" else None,
        title=f"{_name(cell)} learning {task} (delay $T = {T}${_copy_text(df)}; $H = {H}$, "
        f"{steps} updates): gates and the gradient at step 0 over training, per init",
    )
    tau = _q(df, "forget_timescale")
    med = tau.groupby(["init", "seed", "iteration"])["value"].median().rename("value")
    med = np.log10(med).reset_index()
    its = sorted(med["iteration"].unique())
    first, last = its[0], its[-1]
    tau_ci = _boot(med[med["iteration"].isin([first, last])], ["init", "iteration"])
    long = tau[tau["iteration"] == last].assign(value=lambda d: (d["value"] >= T).astype(float))
    long = _boot(long.groupby(["init", "seed"])["value"].mean().reset_index(), ["init"])
    sat = _q(df, "gate_saturated_frac")
    memory = tau["gate"].iloc[0]
    sat = _boot(sat[(sat["gate"] == memory) & (sat["iteration"] == last)], ["init"])
    g = _q(df, "grad_norm")
    g0 = g[g["step"] == g["step"].min()]
    g0 = g0[g0["iteration"].isin([first, last])].assign(value=lambda d: np.log10(d["value"]))
    g0 = _boot(g0, ["init", "iteration"])
    acc = _boot(_final(df, "accuracy"), ["init"]) if (df["quantity"] == "accuracy").any() else None
    loss = _boot(_final(df, "eval_loss"), ["init"])
    parts = []
    for i in [i for i in ("default", "forget_bias", "chrono") if i in set(df["init"])] + sorted(
        set(df["init"]) - {"default", "forget_bias", "chrono"}
    ):
        done = f"accuracy {_cit(acc, i)}" if acc is not None else f"loss {_cit(loss, i)}"
        parts.append(
            f"{i}: median timescale {_cit(10**tau_ci, (i, first))} → "
            f"{_cit(10**tau_ci, (i, last))} steps, units with timescale ≥ T: {_cit(long, i)}, {memory} gate saturated "
            f"{_cit(sat, i)}, ‖∂L/∂h_0‖ 10^{_cit(g0, (i, first))} → 10^{_cit(g0, (i, last))}, "
            f"final {done}"
        )
    reading = (
        f"From iteration {first} to {last} ({_over(df)}; timescales: geometric mean over seeds"
        f" of the median over units of −1/ln f, f averaged over batch and steps; "
        f"‖∂L/∂h_0‖: the loss is at every step): " + "; ".join(parts) + "."
    )
    return fig, reading


# --- Why the Transformer ---------------------------------------------------------------------


def _arch_label(df: pd.DataFrame, arch: str) -> str:
    """'LSTM (H = 30, 4,111 params)' from the study's params/hidden_size rows."""
    part = df[df["arch"] == arch]
    n = _q(part, "params")["value"]
    h = _q(part, "hidden_size")["value"]
    if n.empty or h.empty:
        return _name(arch)
    return f"{_name(arch)} ({_width(arch, h.iloc[0])}, {int(n.iloc[0]):,} params)"


def _input_grad(df: pd.DataFrame):
    from gradlab import plot

    curves = _q(df, "log10_grad_norm")
    archs = _cells(curves["arch"])
    T, T_train = int(_one(df, "seq_len")), int(_one(df, "train_len"))
    steps, task = int(_one(df, "train_steps")), _one(df, "task")
    fig = plot.input_gradient_curves(
        curves,
        labels={a: _arch_label(df, a) for a in archs},
        title=f"Gradient reaching input $x_{{T-1-k}}$ from the output at $T-1$ ($T = {T}$, "
        f"{task} inputs, float64)\nat init and after {steps} Adam updates at $T = {T_train}$;"
        " equal parameter budget",
    )
    m = curves.groupby(["stage", "arch", "lag"])["value"].mean()
    lag_max = int(curves["lag"].max())
    parts = []
    for stage in ("init", "trained"):
        if stage not in m.index.get_level_values(0):
            continue
        per = ", ".join(
            f"{_name(a)} 10^{_f(m[(stage, a, 0)], 1)} → 10^{_f(m[(stage, a, lag_max)], 1)}"
            for a in archs
        )
        parts.append(f"{stage}: {per}")
    tf = "transformer" in archs
    span = ""
    if tf:
        rng = [m[(st, "transformer")] for st in ("init", "trained") if (st, "transformer") in m]
        lo = min(float(r[r.index >= 1].min()) for r in rng)
        hi = max(float(r[r.index >= 1].max()) for r in rng)
        span = (f" The Transformer's gradient stays between 10^{_f(lo, 1)} and 10^{_f(hi, 1)} "
                f"at every lag from 1 to {lag_max}: its path to any input is one layer stack, "
                "so nothing decays with distance; its level is set by how attention spreads "
                "over the T positions.")  # fmt: skip
    ev = _mean_by(_q(df, "final_eval_loss"), ["arch"])
    base = float(_q(df, "baseline")["value"].iloc[0])
    losses = ", ".join(f"{_name(a)} {_g(ev[a], 2)}" for a in archs if a in ev.index)
    reading = (
        f"‖∂L/∂x‖ at lag 0 → lag {lag_max}, " + "; ".join(parts) + "." + span
        + f" Evaluation loss after training (at T = {T_train}; baseline {_g(base, 3)}): "
        + losses + "."
    )
    return fig, reading


def _lr_text(df: pd.DataFrame) -> str:
    """'0.02' or '0.02 (Transformer 0.003)' from the lr and transformer_lr columns."""
    lr = _one(df, "lr")
    tf = _one(df, "transformer_lr") if "transformer_lr" in df.columns else None
    if lr is None:
        return "per run"
    extra = tf is not None and tf > 0 and "transformer" in set(df.get("arch", []))
    return f"{_g(lr)}" + (f" (Transformer {_g(tf)})" if extra else "")


def _task_title(part: pd.DataFrame, task: str) -> str:
    """Panel title of one task: what it is and the training setting its points share."""
    what = {"adding": "Adding problem", "digits": "Digits, pixel by pixel"}.get(task, task)
    if task == "copy":
        what = f"Copy-memory ({int(_one(part, 'copy_length'))} symbols, $T$ = the delay)"
    elif task == "ucr":
        what = f"{_one(part, 'dataset')} (real data, subsampled to $T$)"
    n = _q(part, "params")["value"]
    return (f"{what}\n{int(n.min()):,}–{int(n.max()):,} params, {_seeds(part)}\n"
            f"{int(_one(part, 'steps'))} updates at lr {_lr_text(part)}")  # fmt: skip


def _long_dependency(df: pd.DataFrame):
    """Final loss ÷ baseline against T per task; the copy panel reads the copy experiment."""
    from gradlab import plot

    rel = _q(df, "relative_loss")
    tasks = list(dict.fromkeys(rel["task"]))
    fig = plot.length_sweep(
        rel,
        titles={t: _task_title(df[df["task"] == t], t) for t in tasks},
        title="Final loss against sequence length at equal parameter budget per task "
        f"(Adam, clipping at {_g(_one(df, 'clip_norm'))})",
    )
    sentences = []
    for task in [t for t in ("adding", "copy", "ucr", "digits") if t in tasks]:
        part = rel[rel["task"] == task]
        T_max = int(part["seq_len"].max())
        at = part[part["seq_len"] == T_max]
        g = at.groupby("arch")["value"]
        geo = np.exp(np.log(at["value"]).groupby(at["arch"]).mean())
        vals = ", ".join(
            f"{_name(a)} {_g(geo[a], 2)} [{_g(g.min()[a], 2)}–{_g(g.max()[a], 2)}]"
            for a in _cells(at["arch"])
        )
        solved = np.exp(np.log(part["value"]).groupby([part["arch"], part["seq_len"]]).mean())
        longest = []
        for a in _cells(part["arch"]):
            ok = [T for (aa, T), v in solved.items() if aa == a and v < 0.5]
            longest.append(f"{_name(a)} {max(ok) if ok else 'none'}")
        name = _one(df[df["task"] == task], "dataset") if task == "ucr" else task
        text = (
            f"{name} at T = {T_max}, final loss ÷ baseline (geometric mean [min–max] over "
            f"{_seeds(part)}): {vals}. Longest T where it is below 0.5: " + ", ".join(longest)
        )
        if task == "ucr":
            acc = _q(df[(df["task"] == task) & (df["seq_len"] == T_max)], "final_accuracy")
            acc = acc.groupby("arch")["value"]
            chance = _q(df[df["task"] == task], "chance_accuracy")["value"].mean()
            text += (
                f". Test accuracy at T = {T_max} (mean [min–max]): "
                + ", ".join(f"{_name(a)} {_g(acc.mean()[a], 2)} [{_g(acc.min()[a], 2)}–"
                            f"{_g(acc.max()[a], 2)}]" for a in _cells(acc.mean().index))
                + f" (majority class {_g(chance, 2)})"
            )  # fmt: skip
        sentences.append(text)
    budget = "; ".join(f"{t}: {_sizes(df[df['task'] == t])}" for t in tasks)
    reading = ". ".join(sentences) + f". Sizes: {budget}."
    return fig, reading


def _parallel(df: pd.DataFrame):
    from gradlab import plot

    dev = _one(df, "device") or "cpu"
    B = _one(df, "batch_size")
    fig = plot.parallel_timing(
        df,
        title=f"The parallelism limit on {dev.upper()}: forward + backward of one batch\n"
        f"(B = {B}; RNNs H = 64, one fused layer; Transformer d_model = 64, 2 layers; "
        "1 thread)",
    )
    T = sorted(df["seq_len"].unique())
    t0, t1 = T[0], T[-1]
    ms = df.set_index(["arch", "seq_len"])["ms_median"]
    archs = _cells(df["arch"])
    at = ", ".join(f"{_name(a)} {_g(ms[(a, t0)], 2)} → {_g(ms[(a, t1)], 3)} ms" for a in archs)
    ta = T[-2]
    slope = ", ".join(
        f"{_name(a)} {_f(math.log(ms[(a, t1)] / ms[(a, ta)]) / math.log(t1 / ta), 2)}"
        for a in archs
    )
    steps = df.set_index(["arch", "seq_len"])["sequential_steps"]
    ratio = ms[("transformer", t1)] / ms[("lstm", t1)] if "transformer" in archs else float("nan")
    r0 = ms[("transformer", t0)] / ms[("lstm", t0)] if "transformer" in archs else float("nan")
    reading = (
        f"Wall time at T = {t0} → {t1}: {at} (median of repeats, interleaved, "
        f"{dev.upper()}). Growth exponent between T = {ta} and {t1}: {slope} (1: linear, 2: "
        f"quadratic). Sequential steps at T = {t1}: RNNs {int(steps[(archs[0], t1)])}, "
        f"Transformer {int(steps[('transformer', t1)]) if 'transformer' in archs else 'n/a'}. "
        f"The Transformer takes {_g(r0, 2)}× the LSTM's time at T = {t0} and {_g(ratio, 2)}× at "
        f"T = {t1}: on a CPU with one thread nothing runs in parallel, so the T sequential "
        "steps cost the RNN nothing extra, while attention's O(T²) work shows. The "
        "sequential-step count is what a GPU turns into speed; no GPU run is in this table."
    )
    return fig, reading


# --- The four structures on real data ---------------------------------------------------------

_STRUCTURE_NAMES = {"ucr": "many-to-one", "chars": "synchronized many-to-many",
                    "reverse": "encoder–decoder", "generate": "one-to-many"}  # fmt: skip


def _structure_titles(df: pd.DataFrame) -> dict:
    ds = _one(df, "dataset") or "UCR"
    gen = _one(df, "gen_dataset") if "gen_dataset" in df.columns else ds
    T = {t: _one(df, f"len_{t}") for t in _STRUCTURE_NAMES}
    return {
        "ucr": f"many-to-one: classify {ds} from the last state ($T = {T['ucr']}$)",
        "chars": f"synchronized many-to-many: next character, a loss at every step "
                 f"($T = {T['chars']}$)",
        "reverse": f"encoder–decoder: read a {T['reverse']}-character span, write it reversed",
        "generate": f"one-to-many: a {gen} series from its class, given at step 0 "
                    f"($T = {T['generate']}$)",
    }  # fmt: skip


def _relative_metric(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """eval_loss ÷ baseline per evaluation (``keys`` + seed + iteration)."""
    k = [*keys, "seed", "iteration"]
    ev = _q(df, "eval_loss").set_index(k)["value"]
    base = _q(df, "baseline").set_index(k)["value"]
    return (ev / base).rename("value").reset_index()


def _profile(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """log10 ‖∂L/∂h_k‖ at each run's first ("init") and last ("trained") tracked update."""
    g = _q(df, "grad_norm")
    first = g.groupby("point")["iteration"].transform("min")
    last = g.groupby("point")["iteration"].transform("max")
    g = g.assign(stage=np.where(g["iteration"] == first, "init",
                                np.where(g["iteration"] == last, "trained", None)))  # fmt: skip
    g = g[g["stage"].notna()]
    with np.errstate(divide="ignore"):
        return g.assign(value=np.log10(g["value"].astype(float)))[
            [*keys, "seed", "stage", "step", "value"]]


def _structures(df: pd.DataFrame):
    from gradlab import plot

    keys = ["task", "cell"]
    metric = _relative_metric(df, keys)
    profile = _profile(df, keys)
    credit = _q(df, "log10_credit")
    credit = credit[credit["stage"] == "trained"][[*keys, "seed", "module", "lag", "value"]]
    floors = {}
    if "generate" in set(df["task"]) and not _q(df[df["task"] == "generate"], "floor").empty:
        g = df[df["task"] == "generate"]
        floors["generate"] = float(_q(g, "floor")["value"].mean()
                                   / _q(g, "baseline")["value"].mean())  # fmt: skip
    bound = {"reverse": int(_one(df, "len_reverse"))} if "reverse" in set(df["task"]) else {}
    labels = {"ucr": "test loss ÷ class-prior loss", "chars": "loss ÷ unigram entropy",
              "reverse": "loss ÷ reversed-bigram loss", "generate": "test MSE ÷ mean-series MSE"}
    fig = plot.structure_panels(
        metric, profile, credit, row_titles=_structure_titles(df), metric_labels=labels,
        floors=floors, boundaries=bound,
        title=f"The lecture's four RNN structures on real data (Adam, $H = "
              f"{_one(df, 'hidden_size')}$, {_one(df, 'steps')} updates, {_seeds(df)})",
    )  # fmt: skip
    # readings, every number from the table
    last = metric.groupby([*keys, "seed"])["iteration"].transform("max")
    fin = _boot(metric[metric["iteration"] == last], keys)  # each run's last evaluation
    acc = _final(df, "accuracy")
    accs = _boot(acc, keys) if not acc.empty else None
    reach = _q(df, "credit_reach")
    reach = _boot(reach[reach["stage"] == "trained"], [*keys, "module"])
    parts = []
    for task in [t for t in ("ucr", "chars", "reverse", "generate") if t in set(df["task"])]:
        cells = _cells(fin.loc[task].index)
        vals = ", ".join(f"{_name(c)} {_cit(fin, (task, c))}" for c in cells)
        text = f"{_STRUCTURE_NAMES[task]} ({task}): final loss ÷ baseline {vals}"
        if accs is not None and task in accs.index.get_level_values(0) and task != "generate":
            what = "test accuracy" if task == "ucr" else "accuracy per character"
            text += f"; {what} " + ", ".join(f"{_name(c)} {_cit(accs, (task, c))}" for c in cells)
            if task == "ucr":
                chance = _q(df[df["task"] == "ucr"], "chance_accuracy")["value"]
                text += f" (majority class {_g(float(chance.mean()), 2)})"
        if task == "chars":
            base = float(_q(df[df["task"] == "chars"], "baseline")["value"].mean())
            text += f" (unigram baseline {_g(base / math.log(2), 3)} bits per character)"
        if task == "generate" and floors:
            text += f" (class-mean floor {_g(floors['generate'], 2)})"
        mods = [m for m in ("rnn", "decoder", "encoder") if (task, cells[0], m) in reach.index]
        for m in mods:
            who = "" if m == "rnn" else f" ({m} steps)"
            text += (f"; credit of a typical loss reaches back{who} " + ", ".join(
                f"{_name(c)} {_cit(reach, (task, c, m))}" for c in cells
                if (task, c, m) in reach.index) + " steps")  # fmt: skip
        parts.append(text)
    reading = (
        f"Means over {_seeds(df)} with bootstrap 95% CIs. " + ". ".join(parts) + ". "
        "Reach: the median over loss steps t of the largest lag at which ‖∂L_t/∂h_{t−lag}‖ "
        "is still ≥ 1% of the direct term ‖∂L_t/∂h_t‖ (gradlab.analysis.credit_reach)."
    )
    return fig, reading


def _real_length(df: pd.DataFrame):
    from gradlab import plot

    runs = df[df["experiment"] == "real_length"]
    base = df[df["experiment"] == "real_baselines"]
    acc = _final(runs, "accuracy").assign(seq_len=lambda d: d["len_ucr"].astype(int))
    acc = acc[["cell", "seq_len", "seed", "value"]]
    cr = _q(runs, "log10_credit")  # one loss (the last step): lag T-1 is step 0
    cr = cr[cr["lag"] == cr["len_ucr"] - 1]
    grad = cr[["cell", "len_ucr", "seed", "stage", "value"]].rename(columns={"len_ucr": "seq_len"})
    grad["seq_len"] = grad["seq_len"].astype(int)
    bl = None
    if not base.empty:
        bl = base[["baseline", "seq_len", "value"]].astype({"seq_len": int})
    ds = _one(runs, "dataset")
    fig = plot.length_effect(
        acc, grad, bl,
        title=f"Sequence length on real data: {ds} subsampled to $T$ steps (Adam, $H = "
              f"{int(_one(runs, 'hidden_size'))}$, {int(_one(runs, 'steps'))} updates, "
              f"{_seeds(runs)})",
    )  # fmt: skip
    a = _boot(acc, ["seq_len", "cell"])
    gs = _boot(grad, ["stage", "seq_len", "cell"])
    Ts = sorted(acc["seq_len"].unique())
    parts = []
    for T_ in (Ts[0], Ts[-1]):
        cells = _cells(a.loc[T_].index)
        text = f"T = {T_}: test accuracy " + ", ".join(f"{_name(c)} {_cit(a, (T_, c))}"
                                                     for c in cells)  # fmt: skip
        if bl is not None:
            b = bl[bl["seq_len"] == T_].groupby("baseline")["value"].mean()
            names = {"majority": "majority", "1nn_euclidean": "1-NN Euclidean",
                     "1nn_dtw": "1-NN DTW"}  # fmt: skip
            text += " (" + ", ".join(f"{names.get(k, k)} {_g(v, 2)}" for k, v in b.items()) + ")"
        parts.append(text)
    Tm = Ts[-1]
    grads = "; ".join(
        f"{stage}: " + ", ".join(f"{_name(c)} {_cit(gs, (stage, Tm, c))}"
                                 for c in _cells(gs.loc[(stage, Tm)].index))
        for stage in ("init", "trained") if (stage, Tm) in gs.index.droplevel(2)
    )  # fmt: skip
    reading = (
        f"Means over {_seeds(runs)} with bootstrap 95% CIs. " + "; ".join(parts)
        + f". log10 ‖∂L/∂h_0‖/‖∂L/∂h_{{T−1}}‖ at T = {Tm}, {grads}."
    )
    return fig, reading


FIGURES: tuple[_Figure, ...] = (
    _Figure("decay", "decay", "Gradient norm against lag, per cell, with fitted rates", _decay),
    _Figure("flow_map", "flow_map", "Jacobian-norm map log10 ‖∂h_t/∂h_k‖ per cell", _flow_map),
    _Figure(
        "seq_len", "seq_len", "Sequence-length sweep: gradient at step 0 and decay rate", _seq_len
    ),  # fmt: skip
    _Figure("init", "init", "Initialisation sweep: decay rate and gradient at step 0", _init),
    _Figure("gain", "gain", "Edge of chaos: measured rates vs mean-field theory", _gain),
    _Figure("spectra", "spectra", "Singular values of k-step Jacobian products", _spectra),
    _Figure("bptt", "bptt", "The BPTT sum split by lag", _bptt),
    _Figure("training", "training", "Training loss against the no-memory baseline", _training),
    _Figure(
        "training_grad", "training", "Gradient per step over training iterations", _training_grad
    ),  # fmt: skip
    _Figure("copy", "copy", "Copy-memory: accuracy on the recalled symbols", _copy),
    _Figure("gates", "gates", "Gates and the gradient at step 0 over training, per init", _gates),
    _Figure("input_grad", "input_grad", "Why the Transformer: gradient reaching each input, "
            "RNN/LSTM/GRU vs Transformer", _input_grad),
    _Figure("long_dependency", "long_dependency", "Why the Transformer: final loss against "
            "sequence length at equal parameter budget", _long_dependency, also=("copy",)),
    _Figure("structures", "structures", "The four RNN structures on real data: metric, "
            "gradient per step, credit per loss", _structures),
    _Figure("real_length", "real_length", "Sequence length on real data: accuracy and the "
            "gradient at step 0", _real_length, also=("real_baselines",)),
    _Figure("parallel", "parallel", "Why the Transformer: the parallelism limit (wall time and "
            "sequential steps against T)", _parallel, source="benchmarks/parallel-cpu.csv"),
)


_BY_NAME = {f.name: f for f in FIGURES}


def _command(scale: str) -> str:
    return "make figures" if scale == "default" else f"make figures SCALE={scale}"


def _render_one(name: str, df: pd.DataFrame, out: Path) -> tuple[list[Path], str]:
    """Draw and save figure ``name`` from its experiment's rows; return (paths, reading)."""
    import matplotlib.pyplot as plt

    from gradlab import plot

    spec = _BY_NAME[name]
    with mpl.rc_context({"svg.hashsalt": "gradlab"}):
        fig, reading = spec.draw(df.reset_index(drop=True))
        fig = getattr(fig, "figure", fig)
        try:
            paths = plot.save(fig, out / spec.name)
        finally:
            plt.close(fig)
    return paths, reading


def render_all(
    results: Mapping[str, pd.DataFrame],
    out_dir: str | Path,
    scale: str,
    *,
    jobs: int | None = None,
) -> list[Path]:
    """Draw every figure whose experiment has rows into ``out_dir``; write ``README.md``.

    results: experiment name -> its rows (``gradlab._experiment.load_results``).
    jobs: processes drawing figures at once (default: the CPU count, at most one per figure);
        the files are the same bytes whatever the number.
    Returns the paths written (PNG, SVG, README), in figure order.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = _with_sources(results)
    todo = [f for f in FIGURES if f.experiment in results and not results[f.experiment].empty]
    missing = [f for f in FIGURES if f not in todo]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(todo)))
    if jobs == 1:
        done = [_render_one(f.name, _rows(f, results), out) for f in todo]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
            futures = [pool.submit(_render_one, f.name, _rows(f, results), out) for f in todo]
            done = [fut.result() for fut in futures]
    written = [p for paths, _ in done for p in paths]
    entries = [(f, reading) for f, (_, reading) in zip(todo, done, strict=True)]
    readme = out / "README.md"
    readme.write_text(_readme(entries, missing, results, scale), encoding="utf-8")
    written.append(readme)
    return written


def _rows(spec: _Figure, results: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The rows figure ``spec`` draws: its experiment's, then those of ``spec.also`` present."""
    extra = [results[a] for a in spec.also if a in results and not results[a].empty]
    rows = results[spec.experiment]
    return pd.concat([rows, *extra], ignore_index=True) if extra else rows


def _readme(entries, missing, results, scale: str) -> str:
    cmd = _command(scale)
    lines = [
        "# gradlab figures",
        "",
        f"Every figure here was made by `{cmd}` (scale `{scale}`): it runs the experiments in "
        "`experiments/*.toml` that have no cached results in `results/`, then draws each "
        "figure from their tables (`gradlab/_figures.py`, plotting in `gradlab/plot/`). "
        "Each figure is saved as PNG and SVG; the numbers in the readings below are read off "
        "the same tables.",
        "",
    ]
    for spec, reading in entries:
        df = results[spec.experiment]
        n_points = df["point"].nunique() if "point" in df.columns else "?"
        data = (
            f"Data: `experiments/{spec.experiment}.toml` ({n_points} points at scale `{scale}`)."
            if spec.source is None
            else f"Data: `{spec.source}` (committed; measured by `python "
            f"benchmarks/bench_parallel.py`, read, not re-measured, by `{cmd}`)."
        )
        lines += [
            f"## {spec.caption}",
            "",
            f"![{spec.caption}]({spec.name}.png)",
            "",
            reading,
            "",
            f"Files: [`{spec.name}.png`]({spec.name}.png), [`{spec.name}.svg`]({spec.name}.svg). "
            f"{data} Made by: `{cmd}`.",
            "",
        ]
    if missing:
        lines += ["## Not drawn", ""]
        lines += [
            f"- `{m.name}`: experiment `{m.experiment}` has no results; run "
            f"`gradlab run {m.experiment} --scale {scale}`."
            if m.source is None
            else f"- `{m.name}`: `{m.source}` is missing; run `python benchmarks/bench_parallel.py`."
            for m in missing
        ]
        lines.append("")
    return "\n".join(lines)
