"""Small, deterministic summaries for plotting: mean and band over seeds, least-squares slope."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import pandas as pd

BANDS = ("ci", "bootstrap", "minmax", None)
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0

# Two-sided 95% Student-t quantiles t_{0.975, dof} for dof = 1..30; normal beyond.
_T975 = np.array([
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
])  # fmt: skip


def t975(dof: np.ndarray) -> np.ndarray:
    dof = np.asarray(dof, dtype=int)
    out = np.full(dof.shape, 1.96)
    small = (dof >= 1) & (dof <= len(_T975))
    out[small] = _T975[dof[small] - 1]
    return out


def check_band(band: str | None, func: str) -> None:
    if band not in BANDS:
        raise ValueError(
            f"{func}: band must be 'ci', 'bootstrap', 'minmax' or None, got {band!r}"
        )


def bootstrap_ci(
    values: np.ndarray,
    *,
    level: float = 0.95,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float, float]:
    """Mean of ``values`` and its percentile-bootstrap confidence interval: (mean, lo, hi).

    The n values (e.g. one per seed) are resampled with replacement ``resamples`` times; lo and
    hi are the (1 - level)/2 and (1 + level)/2 quantiles of the resampled means. The resampling
    generator is seeded by (``seed``, n), so the same values give the same interval on any
    machine and for any order of the values. Non-finite values are dropped; n = 1 gives lo = hi = mean; n = 0 gives NaNs.
    With few values the percentile interval is somewhat narrower than Student's t interval
    (for n = 5 about sqrt(4/5) · 1.96/2.78 of its width).
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap_ci: level must be in (0, 1), got {level!r}")
    v = np.asarray(values, dtype=float).ravel()
    v = np.sort(v[np.isfinite(v)])  # sorted: the interval does not depend on the rows' order
    n = v.size
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(v.mean())
    if n == 1 or np.all(v == v[0]):
        return mean, mean, mean
    means = v[_resample_index(n, resamples, seed)].mean(axis=1)  # (resamples,)
    lo, hi = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return mean, float(min(lo, mean)), float(max(hi, mean))


@functools.lru_cache(maxsize=64)
def _resample_index(n: int, resamples: int, seed: int) -> np.ndarray:
    """Bootstrap indices (resamples, n) from a generator seeded by (seed, n); read-only."""
    idx = np.random.default_rng([seed, n]).integers(0, n, size=(resamples, n))
    idx.flags.writeable = False
    return idx


def summarise(
    df: pd.DataFrame,
    keys: Sequence[str],
    value: str = "value",
    band: str | None = "ci",
    log: bool = False,
) -> pd.DataFrame:
    """One row per ``keys``: ``mean``, ``lo``, ``hi``, ``n`` over the remaining rows (seeds).

    ``band="ci"``: mean ± t_{0.975, n-1} · sd/√n (95% CI of the mean, Student t);
    ``band="bootstrap"``: percentile-bootstrap 95% CI of the mean (``bootstrap_ci``, seeded);
    ``band="minmax"``: min and max; None or n = 1: lo = hi = mean.
    ``log=True`` summarises log10(value) and maps back (geometric mean; band in log space);
    non-positive values are dropped then.
    """
    keys = list(keys)
    d = df[[*keys, value]].copy()
    v = d[value].astype(float)
    if log:
        d = d[v > 0]
        v = np.log10(d[value].astype(float))
    d = d.assign(_v=v)
    d = d[np.isfinite(d["_v"])]
    g = d.groupby(keys, sort=True, observed=True)["_v"]
    out = g.agg(mean="mean", sd="std", n="count", vmin="min", vmax="max").reset_index()
    n = out["n"].to_numpy()
    if band == "minmax":
        lo, hi = out["vmin"].to_numpy(), out["vmax"].to_numpy()
    elif band == "bootstrap":
        lo, hi = _bootstrap_bands(d, keys)
    elif band == "ci":
        sd = np.nan_to_num(out["sd"].to_numpy())
        half = t975(np.maximum(n - 1, 1)) * sd / np.sqrt(n)
        half[n < 2] = 0.0
        lo, hi = out["mean"].to_numpy() - half, out["mean"].to_numpy() + half
    else:
        lo = hi = out["mean"].to_numpy()
    out["lo"], out["hi"] = lo, hi
    if log:
        for c in ("mean", "lo", "hi"):
            out[c] = 10.0 ** out[c]
    return out[[*keys, "mean", "lo", "hi", "n"]]


def _bootstrap_bands(d: pd.DataFrame, keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """lo and hi of ``bootstrap_ci`` of column ``_v`` per group (groups sorted as groupby).

    Groups with the same number of values n share ``bootstrap_ci``'s resampling index (seeded
    by n), so they are resampled together: one (G, resamples, n) gather per n instead of a
    Python call per group; each group's numbers are those ``bootstrap_ci`` gives it.
    """
    code = d.groupby(keys, sort=True, observed=True).ngroup().to_numpy()  # group of each row
    order = np.argsort(code, kind="stable")
    bounds = np.flatnonzero(np.diff(code[order])) + 1
    groups = np.split(d["_v"].to_numpy(dtype=float)[order], bounds) if len(code) else []
    lo, hi = np.full(len(groups), np.nan), np.full(len(groups), np.nan)
    sizes = np.array([len(g) for g in groups], dtype=int)
    for n in np.unique(sizes):
        at = np.flatnonzero(sizes == n)
        v = np.sort(np.stack([groups[i] for i in at]), axis=1)  # (G, n), as bootstrap_ci
        mean = v.mean(axis=1)
        if n == 1:
            lo[at], hi[at] = mean, mean
            continue
        means = v[:, _resample_index(int(n), BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED)].mean(axis=2)
        q = np.quantile(means, [0.025, 0.975], axis=1)  # (2, G)
        equal = np.all(v == v[:, :1], axis=1)
        lo[at] = np.where(equal, mean, np.minimum(q[0], mean))
        hi[at] = np.where(equal, mean, np.maximum(q[1], mean))
    return lo, hi


def slope(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares line y ≈ a + b x over finite points; returns (b, a). NaN with < 2 x values."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if np.unique(x).size < 2:
        return float("nan"), float("nan")
    xm, ym = x.mean(), y.mean()
    b = float(((x - xm) * (y - ym)).sum() / ((x - xm) ** 2).sum())
    return b, float(ym - b * xm)


def edges(centres: np.ndarray) -> np.ndarray:
    """Cell edges around sorted centres (midpoints; end cells as wide as their neighbour)."""
    c = np.asarray(centres, dtype=float)
    if c.size == 1:
        return np.array([c[0] - 0.5, c[0] + 0.5])
    mid = (c[1:] + c[:-1]) / 2
    return np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]])
