"""Measured gradient decay and Lyapunov exponents of large random tanh RNNs against mean field.

Set-up (Poole et al. 2016; Chen, Pennington & Schoenholz 2018): h_t = tanh(W h_{t-1} + U x_t),
W_ij ~ N(0, σ_w²/N), U x_t with per-unit variance σ_in² (U_ij ~ N(0, σ_in²/I), x ~ N(0, 1)), no
bias. Mean field predicts E‖∂L/∂h_{T-k}‖² ∝ χ₁^k, i.e. a ln-rate ½ ln χ₁ per step for the norm,
and the same value for the largest Lyapunov exponent.

Tolerance, derived from the two error sources:
* statistics: the fitted slope of each sample's log-norm over lags 20..150 scatters between
  samples; 4 standard errors of the batch mean (measured in the test) bound it;
* finite size: the network is one quenched W of finite N. The corrections to the mean-field rate
  are O(1/N): measured here, the largest |measured − theory| over the gains below falls from
  0.043 at N = 400 to 0.006 at N = 1600 (N·error ≤ 17 and ≤ 10), so we allow C/N with C = 20.
At N = 400 the bound is 4·SE + 0.05 nats per step, far below the spread of the predictions
across gains (−1.10 … +0.24), so a wrong χ₁, a wrong factor ½, or ln vs log10 fails.
"""

import numpy as np
import pytest
import torch

import gradlab
from gradlab import theory

N, I, B, WARM, K = 400, 16, 4, 100, 150
C_FINITE = 20.0


def _network(gain, input_std, seed=0):
    gen = torch.Generator().manual_seed(seed)
    m = torch.nn.RNN(I, N, bias=False, batch_first=True).double()
    with torch.no_grad():
        m.weight_hh_l0.copy_(gain * torch.randn(N, N, generator=gen, dtype=torch.float64) / N**0.5)
        m.weight_ih_l0.copy_(
            input_std * torch.randn(N, I, generator=gen, dtype=torch.float64) / I**0.5)
    x = torch.randn(B, WARM + K + 1, I, generator=gen, dtype=torch.float64)
    h0 = 0.5 * torch.randn(1, B, N, generator=gen, dtype=torch.float64)
    return m, x, h0


@pytest.mark.parametrize("gain,input_std", [(0.5, 1.0), (1.0, 1.0), (1.5, 1.0), (2.5, 1.0),
                                            (0.5, 0.0), (1.5, 0.0), (2.5, 0.0)])
def test_gradient_decay_rate_matches_mean_field(gain, input_std):
    m, x, h0 = _network(gain, input_std)
    df = gradlab.gradient_flow(m, x, h0=h0, per_sample=True)
    df = df[(df.quantity == "log10_grad_norm") & (df.lag >= 20) & (df.lag <= K)]
    slopes = np.array([np.polyfit(d.lag, d.value, 1)[0] * np.log(10)
                       for _, d in df.groupby("sample")])
    measured, se = slopes.mean(), slopes.std(ddof=1) / np.sqrt(len(slopes))
    predicted = theory.mean_field_decay_rate(gain, sigma_in=input_std)
    assert abs(measured - predicted) <= 4 * se + C_FINITE / N, (measured, predicted, se)


@pytest.mark.parametrize("gain", [1.5, 2.5])
def test_largest_lyapunov_exponent_matches_mean_field(gain):
    """Chaotic regime without input: λ₁ → ½ ln χ₁ for large N. One trajectory of 400 averaged
    steps; its statistical error is below 0.01 (the running estimate's drift over the last half
    is checked to be smaller), plus the finite-size allowance above."""
    m, _, h0 = _network(gain, 0.0)
    x = torch.zeros(1, WARM + 400, I, dtype=torch.float64)
    df = gradlab.lyapunov_spectrum(m, x, k=1, warmup=WARM, h0=h0[:, :1])
    lam = df[df.quantity == "lyapunov_exponent"].value.item()
    run = df[df.quantity == "lyapunov_running"].sort_values("iteration").value.to_numpy()
    drift = np.abs(run[len(run) // 2:] - lam).max()
    assert drift < 0.01
    assert abs(lam - theory.mean_field_lyapunov(gain)) <= 0.01 + C_FINITE / N


def test_ordered_contractive_case_below_pascanu_bound():
    """With σ_max(W) = s < 1 every per-sample gradient norm obeys the Pascanu et al. (2013)
    bound ‖∂L/∂h_{T-k}‖ ≤ s^k ‖∂L/∂h_T‖ (|tanh'| ≤ 1), at every lag, in log space."""
    m, x, h0 = _network(0.5, 1.0)
    with torch.no_grad():
        m.weight_hh_l0.mul_(0.9 / torch.linalg.matrix_norm(m.weight_hh_l0, ord=2))
    df = gradlab.gradient_flow(m, x, h0=h0, per_sample=True)
    df = df[df.quantity == "log10_grad_norm"]
    bound = theory.log10_pascanu_bound(0.9, df.lag.to_numpy())
    assert np.all(df.value.to_numpy() <= bound + 1e-9)
