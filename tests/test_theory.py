"""Tests for gradlab.theory: exact identities, independent references, Monte Carlo checks.

Every tolerance is stated with where it comes from.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from numpy.polynomial.hermite_e import hermegauss
from scipy import integrate

from gradlab import theory as th

# Parameter grid (sigma_w, sigma_in, sigma_b) over both phases, with and without input.
GRID = [
    (0.5, 0.0, 0.0),
    (0.8, 0.5, 0.3),
    (1.0, 0.2, 0.0),
    (1.001, 0.0, 0.0),
    (1.5, 0.0, 0.0),
    (1.5, 0.5, 0.0),
    (3.0, 0.0, 0.0),
    (3.0, 1.0, 0.5),
    (10.0, 0.0, 0.1),
]


# ---------------------------------------------------------------------------------------
# Independent references for E_z[g(sqrt(q) z)]
# ---------------------------------------------------------------------------------------


def tanh2(x):
    return np.tanh(x) ** 2


def sech2(x):
    e = np.exp(-np.abs(x))  # sech x = 2 e^{-|x|} / (1 + e^{-2|x|}): no overflow of cosh
    return (2.0 * e / (1.0 + e * e)) ** 2


def sech4(x):
    return sech2(x) ** 2


def ref_expect_x(g, q: float) -> float:
    """E[g(sqrt(q) z)] as an integral over x = sqrt(q) z (density N(0, q)), not over z.

    A different variable, different break points (at x = 1, 3 and sqrt(q) multiples) and a
    tighter tolerance (2e-14 relative) than gradlab.theory, so agreement tests the code
    rather than re-running it.  Cut at |x| = 13 sqrt(q): the Gaussian tail beyond is < 1e-38.
    """
    if q == 0.0:
        return float(g(0.0))
    s = math.sqrt(q)
    X = 13.0 * s

    def f(x):
        return g(x) * math.exp(-0.5 * x * x / q) / (s * math.sqrt(2 * math.pi))

    pts = sorted({p for p in (s, 4 * s, 1.0, 3.0, 10.0) if p < X})
    v, _ = integrate.quad(f, 0.0, X, points=pts, epsabs=0.0, epsrel=2e-14, limit=1000)
    return 2.0 * v


def gauss_hermite(g, q: float, n: int) -> float:
    """n-point probabilists' Gauss-Hermite rule for E[g(sqrt(q) z)]."""
    z, w = hermegauss(n)
    return float(np.sum(w * g(math.sqrt(q) * z)) / math.sqrt(2 * math.pi))


# ---------------------------------------------------------------------------------------
# 1. Pascanu bound
# ---------------------------------------------------------------------------------------


def test_pascanu_bound_values():
    k = np.array([0, 1, 2, 10])
    np.testing.assert_array_equal(th.pascanu_bound(0.9, k), 0.9**k)
    # sigmoid: gamma = 1/4 multiplies sigma_max.
    np.testing.assert_allclose(th.pascanu_bound(2.0, k, gamma=0.25), 0.5**k, rtol=1e-15)
    assert isinstance(th.pascanu_bound(1.2, 3), float)
    assert th.pascanu_bound(1.2, 3) == pytest.approx(1.2**3, rel=1e-15)
    # sigma_max = 0: the empty product at k = 0 is 1, all later lags 0.
    np.testing.assert_array_equal(th.pascanu_bound(0.0, k), [1.0, 0.0, 0.0, 0.0])


def test_log10_pascanu_bound():
    k = np.arange(0, 50)
    # Where the bound is representable, log10 of it agrees to rounding (rel 1e-13).
    np.testing.assert_allclose(
        th.log10_pascanu_bound(0.7, k), np.log10(th.pascanu_bound(0.7, k)), rtol=1e-13, atol=1e-15
    )
    # At k = 1e6 the bound underflows to 0 but the log is exact: k log10(0.7).
    assert th.pascanu_bound(0.7, 1e6) == 0.0
    assert th.log10_pascanu_bound(0.7, 1e6) == pytest.approx(1e6 * math.log10(0.7), rel=1e-15)
    assert th.log10_pascanu_bound(2.0, 1e4, gamma=0.5) == 0.0  # gamma sigma = 1 exactly
    np.testing.assert_array_equal(th.log10_pascanu_bound(0.0, [0, 3]), [0.0, -np.inf])


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(sigma_max=-1.0, k=2), "sigma_max"),
        (dict(sigma_max=1.0, k=-2), "k"),
        (dict(sigma_max=1.0, k=2, gamma=-0.5), "gamma"),
        (dict(sigma_max=np.nan, k=2), "sigma_max"),
    ],
)
def test_pascanu_bad_input(kwargs, name):
    with pytest.raises(ValueError, match=name):
        th.pascanu_bound(**kwargs)
    with pytest.raises(ValueError, match=name):
        th.log10_pascanu_bound(**kwargs)


# ---------------------------------------------------------------------------------------
# 2. Mean field: quadrature accuracy
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [1e-10, 1e-3, 0.5, 1.0, 6.3, 100.0, 1e4])
@pytest.mark.parametrize("g", [tanh2, sech4], ids=["tanh2", "sech4"])
def test_adaptive_quadrature_matches_x_substitution(g, q):
    # Both integrals are requested to ~1e-13 relative; 1e-11 leaves 100x for rounding in the
    # sum over up to a few hundred subintervals.  q = 1e4 (sigma_w ~ 100) is the hard case:
    # the integrand in z varies on the scale 0.01.
    got = th._gauss_expect(th._tanh2 if g is tanh2 else th._sech4, q)
    assert got == pytest.approx(ref_expect_x(g, q), rel=1e-11)


@pytest.mark.parametrize("q", [0.25, 1.0])
def test_adaptive_quadrature_matches_200_point_gauss_hermite(q):
    # tanh(sqrt(q) z) has poles at |Im z| = pi / (2 sqrt(q)); the n-point Hermite error decays
    # like exp(-2 d sqrt(2n)) with d = pi / (2 sqrt(2 q)) the pole distance in the physicists'
    # variable: < 1e-19 for n = 200, q <= 1.  Tolerance 1e-12 relative covers rounding.
    for g, gq in [(tanh2, th._tanh2), (sech4, th._sech4)]:
        assert th._gauss_expect(gq, q) == pytest.approx(gauss_hermite(g, q, 200), rel=1e-12)


@pytest.mark.parametrize("q", [0.1, 2.0, 50.0])
def test_gaussian_integration_by_parts_identity(q):
    # Stein's lemma E[z f(z)] = E[f'(z)] with f(z) = tanh(sqrt(q) z) gives
    # E[x tanh x] = q E[sech^2 x], x = sqrt(q) z: two different integrands must agree.
    lhs = th._gauss_expect(lambda x: x * math.tanh(x), q)
    rhs = q * th._gauss_expect(lambda x: float(sech2(x)), q)
    assert lhs == pytest.approx(rhs, rel=1e-11)


def test_five_point_gauss_hermite_is_visibly_wrong_at_large_sigma_w():
    # Why the module uses adaptive quadrature: at sigma_w = 3, q* ~ 6.3 and sech^4(sqrt(q) z)
    # has width ~ 0.4 in z, narrower than the gap between the 5 Hermite nodes (0, +-1.36,
    # +-2.86), so the rule sees only the node at 0.  chi_1 comes out ~2.6x too large.
    q = th.mean_field_q_star(3.0)
    chi_gh5 = 9.0 * gauss_hermite(sech4, q, 5)
    chi = th.mean_field_chi1(3.0)
    assert chi == pytest.approx(9.0 * ref_expect_x(sech4, q), rel=1e-11)
    assert chi_gh5 / chi > 2.0
    # ... and the 5-point variance map misses q* itself by > 10 %.
    gh5_map = 9.0 * gauss_hermite(tanh2, q, 5)
    assert abs(gh5_map - q) / q > 0.1


# ---------------------------------------------------------------------------------------
# 2. Mean field: fixed point, chi_1, edge of chaos
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("sw, si, sb", GRID)
def test_q_star_solves_fixed_point_equation(sw, si, sb):
    q = th.mean_field_q_star(sw, si, sb)
    # Residual evaluated with the independent x-substitution quadrature; brentq is run to
    # rtol 4 eps and both quadratures to ~1e-13, so 1e-10 (relative to max(1, q*)) is loose.
    resid = sw**2 * ref_expect_x(tanh2, q) + si**2 + sb**2 - q
    assert abs(resid) <= 1e-10 * max(1.0, q)
    if si == sb == 0.0 and sw > 1.0:
        assert q > 0.0  # the nonzero (stable) fixed point, not the unstable q = 0


@pytest.mark.parametrize("sw, si, sb", [(1.5, 0.0, 0.0), (0.8, 0.5, 0.3), (3.0, 1.0, 0.5)])
def test_q_star_is_the_attracting_fixed_point(sw, si, sb):
    # Iterating the map from far below and far above must converge to the returned q*.
    # The map contracts (slope M'(q*) <= 0.51 at these points), so 150 steps reach rounding
    # level from any start; 1e-9 relative.
    q_star = th.mean_field_q_star(sw, si, sb)
    for q in (1e-3, 50.0):
        for _ in range(150):
            q = th._variance_map(q, sw, si**2 + sb**2)
        assert q == pytest.approx(q_star, rel=1e-9)


@pytest.mark.parametrize("sw", [0.0, 0.3, 0.9, 1.0])
def test_no_input_ordered_phase_is_exact(sw):
    # No input, sigma_w <= 1: q* = 0 and chi_1 = sigma_w^2 E[sech^4(0)] = sigma_w^2, exactly.
    assert th.mean_field_q_star(sw) == 0.0
    assert th.mean_field_chi1(sw) == sw**2


def test_chi1_matches_reference_and_derived_quantities():
    for sw, si, sb in GRID:
        q = th.mean_field_q_star(sw, si, sb)
        chi = th.mean_field_chi1(sw, si, sb)
        assert chi == pytest.approx(sw**2 * ref_expect_x(sech4, q), rel=1e-11)
        half_ln = 0.5 * math.log(chi)
        assert th.mean_field_decay_rate(sw, si, sb) == pytest.approx(half_ln, rel=1e-14)
        assert th.mean_field_lyapunov(sw, si, sb) == pytest.approx(half_ln, rel=1e-14)
        assert th.depth_scale(sw, si, sb) == pytest.approx(-1.0 / math.log(chi), rel=1e-14)
    # At the edge chi_1 = 1: no decay and an infinite depth scale; sigma_w = 0: chi_1 = 0.
    assert th.mean_field_decay_rate(1.0) == 0.0
    assert th.depth_scale(1.0) == math.inf
    assert th.mean_field_decay_rate(0.0) == -math.inf
    assert th.depth_scale(0.0) == 0.0


def test_edge_of_chaos():
    assert th.edge_of_chaos() == pytest.approx(1.0, abs=1e-8)
    # The crossing without input: chi_1 = sigma_w^2 < 1 below, > 1 above (chaotic phase).
    assert th.mean_field_chi1(0.99) < 1.0 < th.mean_field_chi1(1.01)
    # Input moves the edge above 1, the more the larger the input; chi_1(edge) = 1 to the
    # brentq tolerance (xtol 1e-13 times a slope of order 1, plus quadrature 1e-13): 1e-9.
    e1, e2 = th.edge_of_chaos(0.2), th.edge_of_chaos(0.5, 0.1)
    assert 1.0 < e1 < e2
    for edge, si, sb in [(e1, 0.2, 0.0), (e2, 0.5, 0.1)]:
        assert th.mean_field_chi1(edge, si, sb) == pytest.approx(1.0, abs=1e-9)
    # chi_1 rises with sigma_w on a grid, so the crossing found is the only one.
    chis = th.mean_field_chi1(np.linspace(0.05, 6.0, 60), 0.5, 0.1)
    assert np.all(np.diff(chis) > 0)


def test_vectorised_over_arrays():
    sw = np.array([[0.5, 1.5], [2.0, 3.0]])
    out = th.mean_field_chi1(sw, 0.3)
    assert isinstance(out, np.ndarray) and out.shape == (2, 2)
    assert out[1, 0] == th.mean_field_chi1(2.0, 0.3)
    assert isinstance(th.mean_field_q_star(1.5), float)
    edges = th.edge_of_chaos(np.array([0.0, 0.2]))
    assert edges.shape == (2,) and edges[1] == th.edge_of_chaos(0.2)


@pytest.mark.parametrize(
    "args, name",
    [
        ((-1.0,), "sigma_w"),
        ((np.nan,), "sigma_w"),
        ((1.0, -0.1), "sigma_in"),
        ((1.0, 0, -1), "sigma_b"),
    ],
)
def test_mean_field_bad_input(args, name):
    for fn in (th.mean_field_q_star, th.mean_field_chi1, th.depth_scale):
        with pytest.raises(ValueError, match=name):
            fn(*args)


def test_mean_field_table():
    gains = [0.5, 1.0, 2.0]
    df = th.mean_field_table(gains, sigma_in=0.0)
    assert list(df.columns) == ["gain", "input_std", "bias_std", "quantity", "value", "source"]
    assert len(df) == 3 * 5
    assert set(df["quantity"]) == {"q_star", "chi1", "decay_rate", "lyapunov", "depth_scale"}
    assert (df["source"] == "theory").all()
    wide = df.pivot(index="gain", columns="quantity", values="value")
    assert wide.loc[2.0, "chi1"] == th.mean_field_chi1(2.0)
    assert wide.loc[0.5, "chi1"] == 0.25
    assert wide.loc[1.0, "depth_scale"] == math.inf
    with pytest.raises(ValueError, match="sigma_in"):
        th.mean_field_table(gains, sigma_in=[0.1, 0.2])
    with pytest.raises(ValueError, match="sigma_w_values"):
        th.mean_field_table([])


# ---------------------------------------------------------------------------------------
# 2. Mean field against a simulated wide random tanh RNN
# ---------------------------------------------------------------------------------------


def simulate(sw, si, sb, seed, N=2000, B=4, T0=20, S=30):
    """Wide tanh RNN a_t = W h_{t-1} + u_t + b, h_t = tanh(a_t), in numpy.

    u_t ~ N(0, si^2) fresh per unit and step (the law of (U x_t)_i for Gaussian x_t), b fixed.
    Returns the mean of a^2 over units, batch and the last S steps, and the per-step
    ln(||v_{t-1}||^2 / ||v_t||^2) of the backward pass v_{t-1} = W^T diag(sech^2 a_t) v_t.
    """
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((N, N)) * (sw / math.sqrt(N))
    b = rng.standard_normal((N, 1)) * sb
    h = np.tanh(rng.standard_normal((N, B)))
    a_kept = []
    for t in range(T0 + S):  # T0 = 20 burn-in steps: the q map contracts >= 2.9x per step here
        a = W @ h + si * rng.standard_normal((N, B)) + b  # (N, B)
        h = np.tanh(a)
        if t >= T0:
            a_kept.append(a)
    q_emp = float(np.mean([np.mean(a * a) for a in a_kept]))
    v = rng.standard_normal((N, B))
    log_ratio = []
    for a in reversed(a_kept):
        u = W.T @ (v / np.cosh(a) ** 2)  # (N, B)
        log_ratio.append(np.log(np.sum(u * u, axis=0) / np.sum(v * v, axis=0)))
        v = u
    return q_emp, np.concatenate(log_ratio)


@pytest.mark.parametrize("sw, si, sb", [(1.5, 0.5, 0.0), (0.8, 0.5, 0.3)])
def test_mean_field_matches_wide_network(sw, si, sb):
    N, B, S = 2000, 4, 30
    q_emp, log_ratio = simulate(sw, si, sb, seed=0, N=N, B=B, S=S)
    q_star = th.mean_field_q_star(sw, si, sb)
    # At one step, a_i^2 over N units x B chains are ~ Gaussian-squared samples with
    # variance 2 q*^2; averaging over S correlated steps cannot increase the variance, so
    # SE <= q* sqrt(2 / (N B)) = 1.6 % of q*.  4 SE, plus O(1/N) finite-width bias (0.05 %).
    tol = 4 * q_star * math.sqrt(2 / (N * B)) + q_star / N
    assert abs(q_emp - q_star) <= tol
    # Gradient norm: per backward step ln ratio ~ ln chi_1.  SE of its mean from the sample's
    # own spread, counting only the S steps as independent (the B chains share W): 4 SE.
    ln_chi = math.log(th.mean_field_chi1(sw, si, sb))
    se = np.std(log_ratio) / math.sqrt(S)
    assert abs(np.mean(log_ratio) - ln_chi) <= 4 * se + 1.0 / N


# ---------------------------------------------------------------------------------------
# 3. Decay fits and memory length
# ---------------------------------------------------------------------------------------


def test_fit_decay_rate_exact_line():
    lag = np.arange(0, 50)
    y = 0.7 - 0.0123 * lag
    fit = th.fit_decay_rate(lag, y)
    # An exact line: least squares recovers it up to rounding (~50 * eps * |y|): 1e-12.
    assert fit.log10_rate == pytest.approx(-0.0123, abs=1e-12)
    assert fit.intercept == pytest.approx(0.7, abs=1e-12)
    assert fit.ln_rate == pytest.approx(-0.0123 * math.log(10), abs=1e-12)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.n_points == 50
    # Exact zeros (-inf) and NaN are dropped, not fitted.
    y2 = y.copy()
    y2[[5, 40]] = -np.inf
    y2[10] = np.nan
    fit2 = th.fit_decay_rate(lag, y2)
    assert fit2.log10_rate == pytest.approx(-0.0123, abs=1e-12)
    assert fit2.n_points == 47


def test_fit_decay_rate_r2_of_noisy_line():
    # r2 = 1 - SS_res / SS_tot, checked against the hand formula on a zig-zag.
    lag = np.arange(4.0)
    y = np.array([0.0, -1.5, -1.5, -3.0])
    fit = th.fit_decay_rate(lag, y)
    assert fit.log10_rate == pytest.approx(-0.9, abs=1e-12)
    resid = y - (fit.intercept + fit.log10_rate * lag)
    assert fit.r2 == pytest.approx(1 - np.sum(resid**2) / np.sum((y - y.mean()) ** 2), abs=1e-12)


def test_fit_decay_rate_errors():
    with pytest.raises(ValueError, match="finite"):
        th.fit_decay_rate([0, 1, 2], [0.0, -np.inf, np.nan])
    with pytest.raises(ValueError, match="equal length"):
        th.fit_decay_rate([0, 1, 2], [0.0, 1.0])
    with pytest.raises(ValueError, match="repeated"):
        th.fit_decay_rate([0, 1, 1], [0.0, 1.0, 2.0])


@pytest.mark.parametrize("rate, fraction", [(0.93, 1e-3), (0.5, 1e-2), (0.99, 0.37), (0.2, 1e-6)])
def test_memory_length_geometric(rate, fraction):
    expected = math.ceil(math.log(fraction) / math.log(rate))
    # The ratio must not be within rounding of an integer, or "<=" would be a coin toss.
    ratio = math.log(fraction) / math.log(rate)
    assert abs(ratio - round(ratio)) > 1e-6
    lag = np.arange(0, 400)
    y = 2.0 + lag * math.log10(rate)
    assert th.memory_length(lag, y, fraction) == expected
    # Order of the rows does not matter.
    perm = np.random.default_rng(1).permutation(lag.size)
    assert th.memory_length(lag[perm], y[perm], fraction) == expected


def test_memory_length_edge_cases():
    lag = np.arange(10)
    assert th.memory_length(lag, np.zeros(10)) == math.inf  # never falls: longer than window
    y = np.zeros(10)
    y[4] = -np.inf  # exact zero gradient counts as fallen
    assert th.memory_length(lag, y) == 4.0
    y[0] = -np.inf
    assert math.isnan(th.memory_length(lag, y))  # no reference value
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="fraction"):
            th.memory_length(lag, np.zeros(10), bad)


def make_curves() -> tuple[pd.DataFrame, dict]:
    rows = []
    rates = {("rnn_tanh", 0): 0.8, ("rnn_tanh", 1): 0.85, ("lstm", 0): 0.97, ("lstm", 1): 0.95}
    for (cell, seed), r in rates.items():
        for k in range(60):
            rows.append(
                dict(
                    cell=cell, seed=seed, lag=k, quantity="log10_grad_norm", value=k * math.log10(r)
                )
            )
    return pd.DataFrame(rows), rates


def test_memory_table():
    df, rates = make_curves()
    out = th.memory_table(df, by=["cell", "seed"], fraction=1e-2)
    assert list(out.columns) == ["cell", "seed", "quantity", "value"]
    assert out.shape == (4 * 4, 4)
    assert set(out["quantity"]) == {"log10_decay_rate", "ln_decay_rate", "memory_length", "fit_r2"}
    wide = out.set_index(["cell", "seed", "quantity"])["value"]
    for (cell, seed), r in rates.items():
        assert wide[(cell, seed, "log10_decay_rate")] == pytest.approx(math.log10(r), abs=1e-12)
        assert wide[(cell, seed, "ln_decay_rate")] == pytest.approx(math.log(r), abs=1e-12)
        assert wide[(cell, seed, "fit_r2")] == pytest.approx(1.0, abs=1e-12)
        expected = math.ceil(math.log(1e-2) / math.log(r))
        assert wide[(cell, seed, "memory_length")] == (expected if expected < 60 else math.inf)
    # One curve for the whole frame: by may be a string or empty.
    one = th.memory_table(df[(df.cell == "lstm") & (df.seed == 0)], by=[])
    assert list(one.columns) == ["quantity", "value"] and len(one) == 4
    assert len(th.memory_table(df[df.seed == 0], by="cell")) == 8


def test_memory_table_errors():
    df, _ = make_curves()
    with pytest.raises(ValueError, match="'init'"):
        th.memory_table(df, by=["cell", "init"])
    with pytest.raises(ValueError, match="'lag'"):
        th.memory_table(df.drop(columns="lag"), by=["cell"])
    with pytest.raises(ValueError, match="empty"):
        th.memory_table(df.iloc[:0], by=["cell"])
    with pytest.raises(ValueError, match="repeated"):  # seeds not told apart
        th.memory_table(df, by=["cell"])
    two = pd.concat([df, df.assign(quantity="log10_param_norm")])
    with pytest.raises(ValueError, match="quantities"):
        th.memory_table(two, by=["cell", "seed"])
    with pytest.raises(ValueError, match="fraction"):
        th.memory_table(df, by=["cell", "seed"], fraction=2.0)
