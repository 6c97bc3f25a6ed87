"""Theory for vanishing and exploding gradients: bounds, mean field, memory length.

Three groups of functions, all pure numpy/scipy/pandas (no torch):

1. **Pascanu bound.**  For ``h_t = phi(W_hh h_{t-1} + U x_t + b)`` the Jacobian over ``k``
   steps is a product of ``k`` factors ``diag(phi'(a_s)) W_hh`` so, with ``|phi'| <= gamma``,

       ||dh_t / dh_{t-k}||_2 <= (gamma * sigma_max(W_hh))^k

   (Pascanu, Mikolov & Bengio, "On the difficulty of training recurrent neural networks",
   ICML 2013).  ``gamma = 1`` for tanh, ``1/4`` for the logistic sigmoid.

2. **Mean field for the random tanh RNN** ``h_t = tanh(a_t)``, ``a_t = W h_{t-1} + U x_t + b``
   with ``W_ij ~ N(0, sigma_w^2 / N)``, input contribution ``Var[(U x_t)_i] = sigma_in^2``
   (fresh every step) and bias ``b_i ~ N(0, sigma_b^2)``.  At large ``N`` the pre-activations
   are Gaussian with variance ``q_t`` following the variance map

       q_t = M(q_{t-1}),   M(q) = sigma_w^2 E_z[tanh^2(sqrt(q) z)] + sigma_in^2 + sigma_b^2,

   ``z ~ N(0, 1)`` (Poole et al., "Exponential expressivity in deep neural networks through
   transient chaos", NeurIPS 2016; Schoenholz et al., "Deep information propagation",
   ICLR 2017; Chen, Pennington & Schoenholz, "Dynamical isometry and a mean field theory of
   RNNs", ICML 2018).  At the fixed point ``q*`` one backward step multiplies the expected
   squared gradient norm by

       chi_1 = sigma_w^2 E_z[tanh'(sqrt(q*) z)^2] = sigma_w^2 E_z[sech^4(sqrt(q*) z)],

   so ``E||dL/dh_{T-k}||^2 ∝ chi_1^k`` (this uses the usual gradient-independence assumption:
   ``W`` in the backward pass treated as independent of the forward pass, which is accurate
   for wide networks).  From ``chi_1``: the per-step ln growth of the gradient norm
   ``(1/2) ln chi_1`` (negative: vanishing), the largest Lyapunov exponent (the same number),
   the depth scale ``xi = -1 / ln chi_1`` and the edge of chaos ``chi_1 = 1``.

   Every Gaussian expectation is computed by adaptive quadrature (``scipy.integrate.quad``)
   rather than a fixed low-order Gauss-Hermite rule: for large ``sigma_w`` the integrands
   ``tanh^2(sqrt(q) z)`` and ``sech^4(sqrt(q) z)`` change on the scale ``1/sqrt(q)``, far
   below the spacing of a few Hermite nodes (a 5-point rule overstates ``chi_1`` by about
   2.6x at ``sigma_w = 3``).

3. **Memory length from measured decay curves**, on tidy tables of
   ``log10 ||dL/dh_{T-k}||`` against the lag ``k``: a least-squares decay rate and the lag at
   which the norm first drops to a given fraction of its lag-0 value.

Conventions (docs/DESIGN.md): rates are natural log per step unless the name says log10;
tidy tables carry ``quantity`` and ``value`` columns.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import integrate, optimize

__all__ = [
    "DecayFit",
    "depth_scale",
    "edge_of_chaos",
    "fit_decay_rate",
    "log10_pascanu_bound",
    "mean_field_chi1",
    "mean_field_decay_rate",
    "mean_field_lyapunov",
    "mean_field_q_star",
    "mean_field_table",
    "memory_length",
    "memory_table",
    "pascanu_bound",
]

# ----------------------------------------------------------------------------------------
# Input checks and scalar/array plumbing
# ----------------------------------------------------------------------------------------


def _nonneg(name: str, x: ArrayLike, meaning: str) -> np.ndarray:
    """``x`` as a float array, or a ValueError naming ``name`` if it is negative or not finite."""
    arr = np.asarray(x, dtype=float)
    if arr.size == 0:
        raise ValueError(f"{name} is empty; pass at least one value ({meaning}).")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(
            f"{name} must be finite and >= 0 ({meaning}); got {x!r}. "
            f"Pass the standard deviation itself, not a variance or a log."
        )
    return arr


def _out(arr: np.ndarray, scalar: bool) -> float | np.ndarray:
    """A Python float for scalar input, an ndarray otherwise."""
    return float(arr) if scalar else arr


def _sigmas(
    sigma_w: ArrayLike, sigma_in: ArrayLike, sigma_b: ArrayLike
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Validate and broadcast; return (sigma_w, c = sigma_in^2 + sigma_b^2, all_scalar)."""
    sw = _nonneg("sigma_w", sigma_w, "W_ij ~ N(0, sigma_w^2 / N)")
    si = _nonneg("sigma_in", sigma_in, "std of the input contribution (U x_t)_i")
    sb = _nonneg("sigma_b", sigma_b, "std of the bias b_i")
    scalar = sw.ndim == 0 and si.ndim == 0 and sb.ndim == 0
    sw, si, sb = np.broadcast_arrays(sw, si, sb)
    return sw, si * si + sb * sb, scalar


def _map_scalar(fn: Callable[[float, float], float], sw: np.ndarray, c: np.ndarray) -> np.ndarray:
    out = np.empty(sw.shape, dtype=float)
    for idx in np.ndindex(sw.shape):
        out[idx] = fn(float(sw[idx]), float(c[idx]))
    return out


# ----------------------------------------------------------------------------------------
# 1. Pascanu et al. (2013) bound
# ----------------------------------------------------------------------------------------


def _bound_args(sigma_max: float, k: ArrayLike, gamma: float) -> tuple[float, np.ndarray]:
    s = float(_nonneg("sigma_max", sigma_max, "largest singular value of W_hh"))
    g = float(_nonneg("gamma", gamma, "bound on |phi'|: 1 for tanh, 0.25 for sigmoid"))
    k_arr = _nonneg("k", k, "number of steps (lag) of the Jacobian product")
    return s * g, k_arr


def pascanu_bound(sigma_max: float, k: ArrayLike, gamma: float = 1.0) -> float | np.ndarray:
    """Upper bound ``(gamma * sigma_max)^k`` on ``||dh_t / dh_{t-k}||_2``.

    For ``h_t = phi(W_hh h_{t-1} + U x_t + b)``,
    ``dh_t/dh_{t-k} = prod_{s=t-k+1}^{t} diag(phi'(a_s)) W_hh`` and submultiplicativity of the
    spectral norm gives ``||dh_t/dh_{t-k}||_2 <= (gamma sigma_max(W_hh))^k`` with
    ``gamma = sup |phi'|`` (Pascanu, Mikolov & Bengio, ICML 2013).  ``gamma sigma_max < 1`` is
    sufficient for vanishing gradients; ``gamma sigma_max > 1`` is necessary for exploding.

    Args:
        sigma_max: largest singular value of ``W_hh`` (>= 0).
        k: lag(s), >= 0; any shape.
        gamma: bound on ``|phi'|``; 1 for tanh (default), 0.25 for the logistic sigmoid.

    Returns:
        The bound, a float for scalar ``k``, else an array shaped like ``k``.  Overflows to
        ``inf`` / underflows to 0 for large ``k``; use :func:`log10_pascanu_bound` there.

    Examples:
        >>> from gradlab import theory
        >>> theory.pascanu_bound(0.5, [1, 2, 10]).tolist()
        [0.5, 0.25, 0.0009765625]
    """
    eta, k_arr = _bound_args(sigma_max, k, gamma)
    with np.errstate(over="ignore", under="ignore"):
        out = np.power(eta, k_arr)  # 0.0 ** 0 == 1: the empty product
    return _out(out, k_arr.ndim == 0)


def log10_pascanu_bound(sigma_max: float, k: ArrayLike, gamma: float = 1.0) -> float | np.ndarray:
    """``log10`` of :func:`pascanu_bound`: ``k * log10(gamma * sigma_max)``, exact at any ``k``.

    ``-inf`` where ``gamma * sigma_max == 0`` and ``k > 0``; 0 at ``k == 0`` (empty product).

    Examples:
        >>> from gradlab import theory
        >>> round(float(theory.log10_pascanu_bound(0.9, 10_000)), 2)  # 0.9**10000 underflows
        -457.57
    """
    eta, k_arr = _bound_args(sigma_max, k, gamma)
    if eta == 0.0:
        out = np.where(k_arr == 0, 0.0, -np.inf)
    else:
        out = k_arr * math.log10(eta) + 0.0  # + 0.0 turns -0.0 at k = 0 into 0.0
    return _out(np.asarray(out, dtype=float), k_arr.ndim == 0)


# ----------------------------------------------------------------------------------------
# 2. Mean field of the random tanh RNN
# ----------------------------------------------------------------------------------------

_SQRT_2PI = math.sqrt(2.0 * math.pi)
_Z_CUT = 12.0  # 2 * integral_{12}^inf phi(z) dz < 4e-33: below double precision of any result
_QUAD_EPSREL = 1e-13  # QUADPACK's floor is 50 * eps ~ 1.1e-14


def _tanh2(x: float) -> float:
    return math.tanh(x) ** 2


def _sech4(x: float) -> float:
    # sech(x) = 2 e^{-|x|} / (1 + e^{-2|x|}): no overflow of cosh at large |x|.
    e = math.exp(-abs(x))
    return (2.0 * e / (1.0 + e * e)) ** 4


def _gauss_expect(g: Callable[[float], float], q: float) -> float:
    """``E_z[g(sqrt(q) z)]``, ``z ~ N(0, 1)``, for an even, bounded ``g``, by adaptive quadrature.

    ``= 2 int_0^inf g(sqrt(q) z) phi(z) dz`` with ``phi`` the standard normal density.  The
    half line is split at ``_Z_CUT`` (the far piece is integrated too, for completeness) and
    the near piece gets break points at the scale ``1/sqrt(q)`` on which ``g(sqrt(q) z)``
    varies, so that large ``q`` (large ``sigma_w``) is resolved; relative tolerance 1e-13.
    """
    if q == 0.0:
        return g(0.0)
    s = math.sqrt(q)

    def integrand(z: float) -> float:
        return g(s * z) * math.exp(-0.5 * z * z) / _SQRT_2PI

    pts = sorted({p for p in (0.25 / s, 1.0 / s, 4.0 / s, 16.0 / s, 1.0, 3.0) if p < _Z_CUT})
    kw = dict(epsabs=0.0, epsrel=_QUAD_EPSREL, limit=500)
    near, _ = integrate.quad(integrand, 0.0, _Z_CUT, points=pts, **kw)
    far, _ = integrate.quad(integrand, _Z_CUT, np.inf, **kw)
    return 2.0 * (near + far)


def _variance_map(q: float, sw: float, c: float) -> float:
    """``M(q) = sigma_w^2 E[tanh^2(sqrt(q) z)] + c`` with ``c = sigma_in^2 + sigma_b^2``."""
    return sw * sw * _gauss_expect(_tanh2, q) + c


@functools.lru_cache(maxsize=4096)
def _q_star(sw: float, c: float) -> float:
    """Stable fixed point of the variance map reached from any ``q_0 > 0``.

    ``M`` is increasing and concave in ``q`` with ``M(q) < sigma_w^2 + c``, so
    ``f(q) = M(q) - q`` has at most one positive root and it is the stable one:

    * ``c > 0``: ``f(c) = sigma_w^2 E[tanh^2(sqrt(c) z)] >= 0`` and ``f(sigma_w^2 + c) < 0``;
      bracket ``[c, sigma_w^2 + c]``.
    * ``c = 0``, ``sigma_w <= 1``: ``M(q) < q`` for all ``q > 0`` (``tanh^2 x < x^2``), the only
      fixed point is ``q* = 0`` and it is returned exactly.
    * ``c = 0``, ``sigma_w > 1``: ``q = 0`` is unstable (``M'(0) = sigma_w^2``); the positive
      root is bracketed by ``[q_lo, sigma_w^2]`` where ``q_lo`` is a quarter of the small-``q``
      estimate ``(sigma_w^2 - 1) / (2 sigma_w^2)`` from ``E tanh^2(sqrt(q) z) = q - 2q^2 + ...``.
    """
    if c == 0.0 and sw <= 1.0:
        return 0.0
    if sw == 0.0:
        return c

    def f(q: float) -> float:
        return _variance_map(q, sw, c) - q

    if c > 0.0:
        lo, hi = c, sw * sw + c
    else:
        lo, hi = 0.125 * (sw * sw - 1.0) / (sw * sw), sw * sw
        while f(lo) <= 0.0:  # guard: shrink until the bracket is valid
            lo *= 0.5
            if lo < 1e-300:
                return 0.0  # sigma_w so close to 1 that q* underflows
    if f(lo) == 0.0:
        return lo
    return optimize.brentq(f, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500)


@functools.lru_cache(maxsize=4096)
def _chi1(sw: float, c: float) -> float:
    return sw * sw * _gauss_expect(_sech4, _q_star(sw, c))


def mean_field_q_star(
    sigma_w: ArrayLike, sigma_in: ArrayLike = 0.0, sigma_b: ArrayLike = 0.0
) -> float | np.ndarray:
    """Fixed point ``q*`` of the pre-activation variance map of the random tanh RNN.

    ``q* = sigma_w^2 E_z[tanh^2(sqrt(q*) z)] + sigma_in^2 + sigma_b^2``, ``z ~ N(0, 1)``
    (Poole et al. 2016; Schoenholz et al. 2017; Chen, Pennington & Schoenholz 2018).

    Which fixed point: the stable one reached by iterating the map from any ``q_0 > 0``.
    With input or bias (``sigma_in^2 + sigma_b^2 > 0``) it is the unique fixed point.
    Without them, ``q* = 0`` (exactly) for ``sigma_w <= 1``, and for ``sigma_w > 1`` the
    nonzero fixed point (0 is then unstable).  Solved by ``scipy.optimize.brentq`` on a
    bracket proved valid by concavity of the map; expectations by adaptive quadrature.

    Args:
        sigma_w: recurrent weight scale, ``W_ij ~ N(0, sigma_w^2 / N)``; >= 0.
        sigma_in: std of the input contribution ``(U x_t)_i`` per unit; >= 0.
        sigma_b: std of the bias ``b_i``; >= 0.

    Returns:
        ``q*``: a float if all arguments are scalars, else an array of their broadcast shape.

    Examples:
        >>> from gradlab import theory
        >>> float(theory.mean_field_q_star(0.5))  # ordered phase without input: the state dies out
        0.0
        >>> bool(theory.mean_field_q_star(2.0) > 0)
        True
    """
    sw, c, scalar = _sigmas(sigma_w, sigma_in, sigma_b)
    return _out(_map_scalar(_q_star, sw, c), scalar)


def mean_field_chi1(
    sigma_w: ArrayLike, sigma_in: ArrayLike = 0.0, sigma_b: ArrayLike = 0.0
) -> float | np.ndarray:
    """``chi_1 = sigma_w^2 E_z[tanh'(sqrt(q*) z)^2]``: per-step factor of ``E||dL/dh||^2``.

    ``tanh' = sech^2`` so ``chi_1 = sigma_w^2 E[sech^4(sqrt(q*) z)]`` (Schoenholz et al.
    2017; Chen, Pennington & Schoenholz 2018).  ``chi_1 < 1``: ordered phase,
    gradients vanish; ``chi_1 > 1``: chaotic phase, gradients explode.  With no input and
    no bias and ``sigma_w <= 1``, ``q* = 0`` and ``chi_1 = sigma_w^2`` exactly.
    Arguments as in :func:`mean_field_q_star`.

    Examples:
        >>> from gradlab import theory
        >>> float(theory.mean_field_chi1(1.0))  # the edge of chaos without input
        1.0
        >>> bool(theory.mean_field_chi1(1.0, sigma_in=1.0) < 1)  # input noise saturates tanh
        True
    """
    sw, c, scalar = _sigmas(sigma_w, sigma_in, sigma_b)
    return _out(_map_scalar(_chi1, sw, c), scalar)


def _half_ln(chi1: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 0.5 * np.log(chi1)


def mean_field_decay_rate(
    sigma_w: ArrayLike, sigma_in: ArrayLike = 0.0, sigma_b: ArrayLike = 0.0
) -> float | np.ndarray:
    """Predicted per-step ln change of the gradient NORM: ``(1/2) ln chi_1``.

    Since ``E||dL/dh_{T-k}||^2 ∝ chi_1^k``, ``ln||dL/dh_{T-k}|| ≈ const + k (1/2) ln chi_1``.
    Negative means vanishing (compare with the ``ln_decay_rate`` of :func:`memory_table`).
    ``-inf`` at ``sigma_w = 0``.  Arguments as in :func:`mean_field_q_star`.

    Examples:
        >>> from gradlab import theory
        >>> round(float(theory.mean_field_decay_rate(0.8)), 4)  # ½ ln 0.64
        -0.2231
    """
    sw, c, scalar = _sigmas(sigma_w, sigma_in, sigma_b)
    return _out(_half_ln(_map_scalar(_chi1, sw, c)), scalar)


def mean_field_lyapunov(
    sigma_w: ArrayLike, sigma_in: ArrayLike = 0.0, sigma_b: ArrayLike = 0.0
) -> float | np.ndarray:
    """Largest Lyapunov exponent of the random tanh RNN in mean field, natural log per step.

    ``lambda_max = (1/2) ln chi_1``: a small perturbation ``delta h`` grows by
    ``||J delta h||^2 / ||delta h||^2 -> chi_1`` per step for a wide network (Poole et al.
    2016; Chen, Pennington & Schoenholz 2018).  Equal to :func:`mean_field_decay_rate`.

    Examples:
        >>> from gradlab import theory
        >>> round(float(theory.mean_field_lyapunov(0.8)), 4)
        -0.2231
    """
    return mean_field_decay_rate(sigma_w, sigma_in, sigma_b)


def depth_scale(
    sigma_w: ArrayLike, sigma_in: ArrayLike = 0.0, sigma_b: ArrayLike = 0.0
) -> float | np.ndarray:
    """Depth (here: time) scale ``xi = -1 / ln chi_1`` of the squared gradient norm.

    ``E||dL/dh_{T-k}||^2 ∝ exp(-k / xi)`` (Schoenholz et al. 2017): positive in the ordered
    phase (steps for the squared norm to fall by ``e``), negative in the chaotic phase
    (``|xi|`` steps to grow by ``e``), ``inf`` exactly at ``chi_1 = 1`` and 0 at
    ``sigma_w = 0``.  The gradient NORM has scale ``2 xi``.

    Examples:
        >>> from gradlab import theory
        >>> round(float(theory.depth_scale(0.8)), 3)  # -1 / ln 0.64
        2.241
    """
    sw, c, scalar = _sigmas(sigma_w, sigma_in, sigma_b)
    ln_chi = 2.0 * _half_ln(_map_scalar(_chi1, sw, c))
    with np.errstate(divide="ignore"):
        xi = np.where(ln_chi == 0.0, np.inf, -1.0 / np.where(ln_chi == 0.0, 1.0, ln_chi))
    return _out(np.asarray(xi, dtype=float), scalar)


def _edge(c: float) -> float:
    if c == 0.0:
        # chi_1 = sigma_w^2 < 1 below 1 (q* = 0) and chi_1 > 1 above (chaotic phase, Poole et
        # al. 2016); near 1+ chi_1 - 1 = O((sigma_w - 1)^2), too flat for a root finder.
        return 1.0
    # For sigma_w <= 1, q* >= c > 0 so E[sech^4] < 1 and chi_1 < sigma_w^2 <= 1: the crossing
    # lies above 1.  For large sigma_w, chi_1 ~ sigma_w * (4/3) / sqrt(2 pi) grows without bound.
    lo, hi = 1.0, 2.0
    while _chi1(hi, c) <= 1.0:
        lo, hi = hi, 2.0 * hi
        if hi > 1e8:
            raise ValueError(
                f"no edge of chaos below sigma_w = 1e8 for sigma_in^2 + sigma_b^2 = {c}; "
                "use smaller input/bias standard deviations."
            )
    return optimize.brentq(lambda s: _chi1(s, c) - 1.0, lo, hi, xtol=1e-13, rtol=1e-15)


def edge_of_chaos(sigma_in: ArrayLike = 0.0, sigma_b: ArrayLike = 0.0) -> float | np.ndarray:
    """The ``sigma_w`` at which ``chi_1 = 1`` (order-to-chaos transition), by ``brentq``.

    With no input and no bias it is exactly 1 (returned as such).  Input or bias raise
    ``q*`` and so lower ``E[sech^4]``: the edge moves above 1 (Poole et al. 2016, phase
    diagram; Chen, Pennington & Schoenholz 2018).  For ``sigma_w <= 1``, ``chi_1 < 1`` whenever
    input or bias is present, so the root is sought above 1: the bracket ``[1, 2^m]`` is
    doubled until ``chi_1 > 1`` at its top.  ``chi_1`` rises with ``sigma_w`` (checked on a grid
    in the tests), so this crossing is the only one.

    Examples:
        >>> from gradlab import theory
        >>> float(theory.edge_of_chaos())
        1.0
        >>> round(float(theory.edge_of_chaos(sigma_in=1.0)), 2)
        1.86
    """
    _, c, scalar = _sigmas(1.0, sigma_in, sigma_b)
    out = np.array([_edge(float(ci)) for ci in c.ravel()]).reshape(c.shape)
    return _out(out, scalar)


_MF_QUANTITIES = ("q_star", "chi1", "decay_rate", "lyapunov", "depth_scale")


def mean_field_table(
    sigma_w_values: ArrayLike, sigma_in: float = 0.0, sigma_b: float = 0.0
) -> pd.DataFrame:
    """Tidy table of the mean-field predictions over a grid of ``sigma_w``.

    One row per (gain, quantity).  Columns: ``gain`` (= sigma_w), ``input_std`` (= sigma_in),
    ``bias_std`` (= sigma_b), ``quantity`` in {"q_star", "chi1", "decay_rate", "lyapunov",
    "depth_scale"}, ``value``, ``source`` = "theory".  ``decay_rate`` and ``lyapunov`` are
    natural log per step of the gradient norm (``(1/2) ln chi_1``); ``depth_scale`` is
    ``-1 / ln chi_1`` (see :func:`depth_scale`).

    Examples:
        >>> from gradlab import theory
        >>> t = theory.mean_field_table([0.5, 1.0, 2.0], sigma_in=1.0)
        >>> sorted(t["quantity"].unique())
        ['chi1', 'decay_rate', 'depth_scale', 'lyapunov', 'q_star']
    """
    gains = _nonneg("sigma_w_values", sigma_w_values, "W_ij ~ N(0, sigma_w^2 / N)").ravel()
    si_arr = _nonneg("sigma_in", sigma_in, "input std")
    sb_arr = _nonneg("sigma_b", sigma_b, "bias std")
    if si_arr.size != 1 or sb_arr.size != 1:
        raise ValueError(
            "sigma_in and sigma_b must be single numbers (one table per input/bias std); "
            "call mean_field_table once per value and pd.concat the results."
        )
    si, sb = float(si_arr.item()), float(sb_arr.item())
    values = {
        "q_star": mean_field_q_star(gains, si, sb),
        "chi1": mean_field_chi1(gains, si, sb),
        "decay_rate": mean_field_decay_rate(gains, si, sb),
        "lyapunov": mean_field_lyapunov(gains, si, sb),
        "depth_scale": depth_scale(gains, si, sb),
    }
    rows = [
        {
            "gain": float(g),
            "input_std": si,
            "bias_std": sb,
            "quantity": name,
            "value": float(values[name][i]),
            "source": "theory",
        }
        for i, g in enumerate(gains)
        for name in _MF_QUANTITIES
    ]
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------------
# 3. Memory length from measured decay curves
# ----------------------------------------------------------------------------------------


class DecayFit(NamedTuple):
    """Least-squares line ``log10||dL/dh_{T-k}|| ≈ intercept + log10_rate * k``.

    Returned by :func:`fit_decay_rate`. Fields: ``log10_rate`` (slope, log10 per step;
    negative: vanishing), ``ln_rate`` (the same in natural log per step), ``intercept``
    (fitted log10 norm at lag 0), ``r2`` (coefficient of determination), ``n_points``
    (finite points used).
    """

    log10_rate: float  # slope, log10 per step (negative: vanishing)
    ln_rate: float  # slope, natural log per step = log10_rate * ln 10
    intercept: float  # fitted log10 norm at lag 0
    r2: float  # coefficient of determination (1.0 for a constant curve fitted exactly)
    n_points: int  # finite points used


def _curve(lag: ArrayLike, log10_norm: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(lag, dtype=float)
    y = np.asarray(log10_norm, dtype=float)
    if k.ndim != 1 or y.ndim != 1 or k.shape != y.shape:
        raise ValueError(
            f"lag and log10_norm must be 1-D and of equal length; got shapes {k.shape} and "
            f"{y.shape}. Pass one decay curve at a time (memory_table handles many)."
        )
    if k.size == 0:
        raise ValueError("lag is empty; pass at least two (lag, log10_norm) points.")
    if not np.all(np.isfinite(k)):
        raise ValueError("lag must be finite; drop rows with missing lags first.")
    if np.unique(k).size != k.size:
        raise ValueError(
            "lag has repeated values; pass one curve (filter to one quantity, or group by the "
            "columns that tell curves apart, e.g. seed), or average the repeats first."
        )
    return k, y


def fit_decay_rate(lag: ArrayLike, log10_norm: ArrayLike) -> DecayFit:
    """Least-squares slope of ``log10||dL/dh_{T-k}||`` against the lag ``k``.

    Non-finite values (``-inf`` from an exactly zero gradient, NaN) are dropped before
    fitting.  ``r2 = 1 - SS_res / SS_tot`` (1.0 when ``SS_tot = 0``).

    Raises:
        ValueError: if fewer than two finite points remain, or the inputs are malformed.

    Examples:
        >>> import numpy as np
        >>> from gradlab import theory
        >>> lag = np.arange(20)
        >>> fit = theory.fit_decay_rate(lag, -0.3 * lag)
        >>> round(fit.log10_rate, 6), round(fit.r2, 6)
        (-0.3, 1.0)
    """
    k, y = _curve(lag, log10_norm)
    keep = np.isfinite(y)
    k, y = k[keep], y[keep]
    if k.size < 2:
        raise ValueError(
            f"fit_decay_rate needs at least 2 finite log10_norm values, got {k.size} "
            "(-inf marks an exactly zero gradient); use a shorter lag range or float64."
        )
    kc = k - k.mean()
    yc = y - y.mean()
    slope = float(np.dot(kc, yc) / np.dot(kc, kc))
    intercept = float(y.mean() - slope * k.mean())
    ss_res = float(np.sum((yc - slope * kc) ** 2))
    ss_tot = float(np.dot(yc, yc))
    r2 = 1.0 if ss_tot == 0.0 else 1.0 - ss_res / ss_tot
    return DecayFit(slope, slope * math.log(10.0), intercept, r2, int(k.size))


def _check_fraction(fraction: float) -> float:
    f = float(fraction)
    if not (0.0 < f < 1.0):
        raise ValueError(
            f"fraction must lie strictly between 0 and 1 (e.g. 1e-3 for a 1000x drop); got "
            f"{fraction!r}."
        )
    return f


def memory_length(lag: ArrayLike, log10_norm: ArrayLike, fraction: float = 1e-3) -> float:
    """Smallest lag at which the gradient norm first falls to ``fraction`` of its lag-0 value.

    With the curve sorted by lag and ``k_0`` its smallest lag (0 in gradlab tables), returns
    the first ``k`` with ``log10_norm[k] - log10_norm[k_0] <= log10(fraction)`` (``-inf``,
    an exactly zero gradient, counts as fallen; NaN never does).  For a geometric curve
    ``||g_k|| = r^k`` this is ``ceil(ln(fraction) / ln(r))``.

    Returns:
        The lag as a float; ``inf`` if the norm never falls that far within the measured lags
        (the memory is longer than the window: a lower bound only); NaN if the lag-``k_0``
        value is not finite (no reference).

    Examples:
        >>> import numpy as np
        >>> from gradlab import theory
        >>> lag = np.arange(20)
        >>> theory.memory_length(lag, -0.5 * lag)  # 10^-3 is reached at lag 6
        6.0
    """
    f = _check_fraction(fraction)
    k, y = _curve(lag, log10_norm)
    order = np.argsort(k, kind="stable")
    k, y = k[order], y[order]
    if not np.isfinite(y[0]):
        return math.nan
    with np.errstate(invalid="ignore"):
        fallen = (y - y[0]) <= math.log10(f)
    hits = np.flatnonzero(fallen)
    return float(k[hits[0]]) if hits.size else math.inf


_MEMORY_QUANTITIES = ("log10_decay_rate", "ln_decay_rate", "memory_length", "fit_r2")


def memory_table(df: pd.DataFrame, by: str | Sequence[str], fraction: float = 1e-3) -> pd.DataFrame:
    """Decay rate and memory length per curve of a tidy table of log10 gradient norms.

    Args:
        df: tidy frame with columns ``lag``, ``value`` (log10 norms, e.g. quantity
            "log10_grad_norm") and the columns in ``by``.  A ``quantity`` column, if present
            and not in ``by``, must hold a single value.
        by: columns that identify one curve, e.g. ``["cell", "init", "seq_len", "seed"]``
            (may be empty: the whole frame is one curve).
        fraction: threshold of :func:`memory_length`, in (0, 1).

    Returns:
        Long frame, one row per (group, quantity): columns ``*by, quantity, value`` with
        quantity in {"log10_decay_rate", "ln_decay_rate", "memory_length", "fit_r2"}.
        Fit quantities are NaN for a curve with fewer than two finite points;
        ``memory_length`` may be ``inf`` (see :func:`memory_length`).

    Examples:
        >>> import numpy as np, pandas as pd
        >>> from gradlab import theory
        >>> lag = np.arange(30)
        >>> df = pd.concat([pd.DataFrame({"cell": c, "lag": lag, "value": r * lag})
        ...                 for c, r in [("rnn_tanh", -0.3), ("lstm", -0.1)]])
        >>> t = theory.memory_table(df, by="cell")
        >>> # the LSTM curve does not fall 1000-fold within its 30 lags: inf (a lower bound)
        >>> t[t["quantity"] == "memory_length"].set_index("cell")["value"].to_dict()
        {'lstm': inf, 'rnn_tanh': 10.0}
    """
    f = _check_fraction(fraction)
    by = [by] if isinstance(by, str) else list(by)
    if not isinstance(df, pd.DataFrame):
        raise ValueError(f"df must be a pandas DataFrame, got {type(df).__name__}.")
    for col in ["lag", "value", *by]:
        if col not in df.columns:
            raise ValueError(
                f"df has no column {col!r} (columns: {list(df.columns)}); memory_table needs "
                "'lag', 'value' and every column named in `by`."
            )
    if len(df) == 0:
        raise ValueError("df is empty; memory_table needs at least one decay curve.")
    if "quantity" in df.columns and "quantity" not in by and df["quantity"].nunique() > 1:
        raise ValueError(
            f"df holds several quantities {sorted(df['quantity'].unique())}; filter it to the "
            "log10 gradient norm first, e.g. df[df.quantity == 'log10_grad_norm']."
        )

    groups = df.groupby(by, sort=True, dropna=False) if by else [((), df)]
    rows = []
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        ident = dict(zip(by, key, strict=True))
        try:
            mem = memory_length(g["lag"], g["value"], f)
        except ValueError as err:
            raise ValueError(f"group {ident}: {err}") from err
        finite = int(np.isfinite(np.asarray(g["value"], dtype=float)).sum())
        if finite >= 2:
            fit = fit_decay_rate(g["lag"], g["value"])
            vals = (fit.log10_rate, fit.ln_rate, mem, fit.r2)
        else:
            vals = (math.nan, math.nan, mem, math.nan)
        for name, v in zip(_MEMORY_QUANTITIES, vals, strict=True):
            rows.append({**ident, "quantity": name, "value": float(v)})
    return pd.DataFrame(rows, columns=[*by, "quantity", "value"])
