"""gradlab.analysis.lyapunov_spectrum: exact linear cases, a NumPy Benettin reference, and the
invariance of the exponents to the QR interval.

Tolerances are derived in each test. The QR method (Benettin et al. 1980) converges to the
exponents of the linearised dynamics; for a constant normal map A the per-step R_ii equal the
eigenvalue moduli |μ_i| up to terms ~(|μ_{i+1}|/|μ_i|)^t, so after enough warmup only rounding
(~1e-16 per step) is left.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradlab import _cells, analysis
from gradlab._cells import CellParams
from tests.test_analysis_flow import make_module
from tests.test_analysis_map import jacrev_products


def exponents(df):
    return df[df.quantity == "lyapunov_exponent"].sort_values("index").value.to_numpy()


def tanh_rnn(W, device, I=1):
    N = W.shape[0]
    w_ih = torch.ones(N, I, dtype=torch.float64)
    return CellParams("rnn_tanh", w_ih.to(device), W.to(device))


def test_linear_limit_symmetric_exact(device):
    """W = g W₀, W₀ = Q diag(μ) Qᵀ symmetric with |μ_i| = 0.95·0.8^i (alternating signs), g = 0.9,
    zero input and bias, h0 ≠ 0: h_t → 0 as (0.855)^t, so J_t → g W₀ and λ_i = ln(g |μ_i|).
    Error budget after warmup w = 300: the nonlinearity shifts ln|det| by Σ_{t≥w} ‖h_t‖² ≤
    0.855^600/(1-0.855²) ≈ 1e-41; the QR basis is aligned with the eigenvectors up to 0.8^300 ≈
    1e-29; what is left is rounding, ~1e-16 per step. Allowed: 1e-10."""
    N, g = 8, 0.9
    gen = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(N, N, generator=gen, dtype=torch.float64))[0]
    mu = torch.tensor([0.95 * 0.8**i * (-1) ** i for i in range(N)], dtype=torch.float64)
    W = g * Q @ torch.diag(mu) @ Q.T
    p = tanh_rnn(W, device)
    T = 1300
    x = torch.zeros(1, T, 1, dtype=torch.float64, device=device)
    h0 = 0.3 * torch.randn(1, N, generator=gen, dtype=torch.float64).to(device)
    df = analysis.lyapunov_spectrum(p, x, warmup=300, h0=h0)
    want = np.log(g * np.abs(mu.numpy()))
    np.testing.assert_allclose(exponents(df), want, rtol=0, atol=1e-10)
    assert exponents(df)[0] == pytest.approx(math.log(g * 0.95), abs=1e-10)


def test_linear_limit_nonnormal(device):
    """Random (non-normal) W₀, g·ρ(W₀) < 1, zero input: the sum of all exponents is the mean
    of ln |det J_t| = ln |det g W₀| exactly (Π R_ii = |det(J Q)|), up to the transient
    Σ_{t≥w} ‖h_t‖² (< 1e-20 here) and rounding: 1e-10. The largest exponent → ln(g ρ(W₀)) with a
    finite-time error O(ln κ_V / n) from the eigenvector condition number κ_V: over n = 4000
    steps, 1e-2 is ample (measured: ~1e-4)."""
    N, g = 6, 0.6
    gen = torch.Generator().manual_seed(1)
    W0 = torch.randn(N, N, generator=gen, dtype=torch.float64) / math.sqrt(N)
    W0 = W0 / torch.linalg.eigvals(W0).abs().max()  # ρ(W₀) = 1
    p = tanh_rnn(g * W0, device)
    T, w = 4200, 200
    x = torch.zeros(1, T, 1, dtype=torch.float64, device=device)
    h0 = 0.5 * torch.ones(1, N, dtype=torch.float64, device=device)
    lam = exponents(analysis.lyapunov_spectrum(p, x, warmup=w, h0=h0))
    logdet = torch.linalg.slogdet(g * W0).logabsdet.item()
    assert lam.sum() == pytest.approx(logdet, abs=1e-10)
    assert lam[0] == pytest.approx(math.log(g), abs=1e-2)
    assert (np.diff(lam) <= 0).all()


def numpy_benettin(Js, warmup, Q0):
    """Plain NumPy QR method, a Householder QR (numpy.linalg.qr) every step."""
    Q = Q0.copy()
    acc = np.zeros(Q.shape[1])
    for t, J in enumerate(Js):
        Q, R = np.linalg.qr(J @ Q)
        if t >= warmup:
            acc += np.log(np.abs(np.diag(R)))
    return np.sort(acc / (len(Js) - warmup))[::-1]


def q0(S, k):
    """The initial tangent basis lyapunov_spectrum documents: Q of a seeded normal (S, k)."""
    g = torch.Generator().manual_seed(0)
    return torch.linalg.qr(torch.randn(S, k, generator=g, dtype=torch.float64))[0].numpy()


@pytest.mark.parametrize("qr_every", [None, 1, 3])
def test_matches_numpy_benettin_chaotic_tanh(qr_every, device):
    """Chaotic driven tanh RNN (N = 40, W_hh ~ N(0, 2²/N), no bias, inputs of std 0.1: λ₁ ≈ 0.1),
    J_t = diag(1 - h_t²) W_hh along gradlab's trajectory (``_flow.forward_states``, the states
    every analysis shares; checked against torch.nn in test_analysis_flow), same Q₀. In a
    chaotic run any other trajectory (cuDNN's, NumPy's) leaves this one by e^(λ₁ t)·1e-16 and is
    a different finite-time sample, so a 1e-6 comparison must share it. The QR interval does not
    change the sums of ln |R_ii| in exact arithmetic (gradlab._lyapunov); in float64 they differ
    by rounding amplified by the block condition number (≤ 1e8 by construction): measured
    ≤ 1e-9 here, 1e-6 allowed (the brief's bound)."""
    N, T, w = 40, 1200, 100
    m = make_module("rnn_tanh", I=2, H=N, bias=False, device=device, seed=11)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        W = 2.0 * torch.randn(N, N, generator=gen, dtype=torch.float64) / math.sqrt(N)
        m.weight_hh_l0.copy_(W)
    x = 0.1 * torch.randn(1, T, 2, generator=gen, dtype=torch.float64).to(device)
    h0 = torch.full((1, 1, N), 0.5, dtype=torch.float64, device=device)
    # the trajectory lyapunov_spectrum follows: gradlab's cell (equal to torch.nn.RNN's output
    # on CPU, test_cells; on CUDA cuDNN rounds differently and, the system being chaotic, the
    # two trajectories part after ~200 steps, so the reference must ride on the same one)
    p = _cells.params_from_module(m).detach()
    h = _cells.unroll(p, x, h0[0]).detach()[0].cpu().numpy()  # (T, N)
    Wn = W.numpy()
    Js = [(1 - h[t] ** 2)[:, None] * Wn for t in range(T)]
    ref = numpy_benettin(Js, w, q0(N, N))
    df = analysis.lyapunov_spectrum(m, x, warmup=w, qr_every=qr_every, h0=h0)
    np.testing.assert_allclose(exponents(df), ref, rtol=0, atol=1e-6)
    assert ref[0] > 0.05  # chaotic: the test exercises positive exponents


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_matches_numpy_benettin_gated(kind, device):
    """LSTM/GRU: Jacobians from torch.func.jacrev of the torch.nn cell, NumPy QR every step,
    top-k only (k < S: the JVP path). Same trajectory and Q₀; tolerance as above."""
    H, T, w, k = 6, 300, 50, 4
    m = make_module(kind, I=3, H=H, device=device, seed=12)
    x = torch.randn(1, T, 3, dtype=torch.float64, device=device)
    Js = jacrev_products(m, x, 0, 0).cpu().numpy()
    S = Js.shape[-1]
    ref = numpy_benettin(Js, w, q0(S, k))
    df = analysis.lyapunov_spectrum(m, x, warmup=w, k=k)
    np.testing.assert_allclose(exponents(df), ref, rtol=0, atol=1e-6)


def test_trace_and_columns(device):
    N, T, w = 5, 600, 100
    m = make_module("gru", I=2, H=N, device=device, seed=13)
    x = torch.randn(1, T, 2, dtype=torch.float64, device=device)
    df = analysis.lyapunov_spectrum(m, x, warmup=w, trace_points=50, k=3)
    assert list(df.columns) == ["index", "quantity", "value", "step", "iteration"]
    fin = df[df.quantity == "lyapunov_exponent"]
    run = df[df.quantity == "lyapunov_running"]
    assert len(fin) == 3 and (fin.iteration == T - w).all() and (fin.step == T - 1).all()
    n_pts = run.iteration.nunique()  # ≥ 10 steps apart, QRs at most 16 steps apart
    assert (T - w) // 16 <= n_pts <= 51
    last = run[run.iteration == run.iteration.max()].sort_values("index")
    np.testing.assert_allclose(last.value.to_numpy(), fin.value.to_numpy(), rtol=0, atol=0)
    assert last.iteration.iloc[0] == T - w and last.step.iloc[0] == T - 1
    # reverse direction: the trajectory runs from position T-1 down to 0
    mb = make_module("gru", I=2, H=N, bidirectional=True, device=device, seed=13)
    dr = analysis.lyapunov_spectrum(mb, x, warmup=w, direction=1, k=2)
    assert (dr[dr.quantity == "lyapunov_exponent"].step == 0).all()
    assert dr[dr.quantity == "lyapunov_running"].step.max() <= T - 1 - w


def test_lyapunov_errors():
    m = make_module("lstm", H=3)
    x = torch.randn(1, 20, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"lyapunov_spectrum: argument `k`.*S = 6"):
        analysis.lyapunov_spectrum(m, x, k=7, warmup=5)
    with pytest.raises(ValueError, match=r"lyapunov_spectrum: argument `warmup`.*fix"):
        analysis.lyapunov_spectrum(m, x, warmup=20)
    with pytest.raises(ValueError, match=r"lyapunov_spectrum: argument `qr_every`"):
        analysis.lyapunov_spectrum(m, x, warmup=5, qr_every=0)
