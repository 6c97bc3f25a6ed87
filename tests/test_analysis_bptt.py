"""gradlab.analysis.bptt_by_lag: the per-step BPTT terms against plain autograd.

(1) The terms sum to autograd's gradient of the loss at t* computed from the stock module's
    output (a copy holding the layers up to the analysed one), for every cell, layer, direction.
(2) Each term equals autograd's gradient of δ_i · F(s_{i-1}, x_i; W) through one torch.nn cell
    step with s_{i-1} and x_i detached, δ_i the retain_grad gradient of the nn-cell unroll.
Tolerance: float64 sums of ≤ 10 terms, each a few ulps from autograd's: ~1e-14 relative to the
largest entry; 1e-10 absolute (the brief's bound) on gradients of size O(1).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradlab import analysis
from tests.test_analysis_flow import KINDS, make_module, nn_states, to_bt, truncated

PARAMS = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")


def _configs():
    out = []
    for kind in KINDS:
        out += [
            (kind, 1, False, 0, 0, -1, True),
            (kind, 2, True, 0, 1, 3, False),
            (kind, 2, True, 1, 0, 5, True),
            (kind, 2, True, 1, 1, 0, False),
        ]
    return out


@pytest.mark.parametrize("kind,layers,bidir,layer,d,target,bf", _configs())
def test_terms_sum_to_autograd(kind, layers, bidir, layer, d, target, bf, device):
    m = make_module(kind, layers=layers, bidirectional=bidir, batch_first=bf, device=device, seed=7)
    B, T, H = 3, 8, 4
    x = torch.randn(B, T, 3, dtype=torch.float64, device=device)
    x = x if bf else x.transpose(0, 1).contiguous()
    df, terms = analysis.bptt_by_lag(
        m, x, target_step=target, layer=layer, direction=d, return_terms=True
    )
    sub = truncated(m, layer + 1)
    out = sub(to_bt(m, x))[0]  # (B, T, D·H)
    loss = out[:, target, d * H : (d + 1) * H].sum()
    sfx = f"_l{layer}" + ("_reverse" if d else "")
    names = [n + sfx for n in PARAMS]
    grads = torch.autograd.grad(loss, [getattr(sub, n) for n in names])
    pos = target % T
    n_terms = (T - pos) if d else (pos + 1)
    for name, g in zip(PARAMS, grads, strict=True):
        assert terms[name].shape == (n_terms, *g.shape)
        torch.testing.assert_close(terms[name].sum(0), g, rtol=0, atol=1e-10)
        norms = df[df.param == name].value.to_numpy()
        np.testing.assert_allclose(
            norms, terms[name].flatten(1).norm(dim=1).cpu().numpy(), rtol=1e-13
        )
    assert set(df.quantity) == {"contribution_norm"}
    assert list(df.columns) == ["step", "lag", "param", "quantity", "value"]
    steps = df[df.param == "weight_hh"].step.to_numpy()
    lags = df[df.param == "weight_hh"].lag.to_numpy()
    np.testing.assert_array_equal(np.abs(steps - pos), lags)
    np.testing.assert_array_equal(terms["step"], steps)


@pytest.mark.parametrize("kind", KINDS)
def test_each_term_is_the_immediate_gradient(kind, device):
    """Term i = ∂/∂W [δ_i · F(s_{i-1}.detach(), x_i; W)], by autograd through the nn cell."""
    m = make_module(kind, device=device, seed=8)
    B, T = 2, 6
    x = torch.randn(B, T, 3, dtype=torch.float64, device=device)
    loss = lambda h: (h**2).sum()  # noqa: E731  a non-uniform upstream gradient
    _, terms = analysis.bptt_by_lag(m, x, loss=loss, return_terms=True)
    inp, hs, cs, cell = nn_states(m, x, 0, 0)
    lstm = kind == "lstm"
    loss(hs[-1]).backward()
    g0 = lambda t: torch.zeros_like(t) if t.grad is None else t.grad  # noqa: E731
    for i in range(T):
        hp = hs[i - 1].detach() if i else torch.zeros_like(hs[0])
        if lstm:
            cp = cs[i - 1].detach() if i else torch.zeros_like(hs[0])
            h1, c1 = cell(inp[:, i], (hp, cp))
            val = (h1 * g0(hs[i])).sum() + (c1 * g0(cs[i])).sum()
        else:
            val = (cell(inp[:, i], hp) * g0(hs[i])).sum()
        g = torch.autograd.grad(val, [getattr(cell, n) for n in PARAMS])
        for name, gi in zip(PARAMS, g, strict=True):
            torch.testing.assert_close(terms[name][i], gi, rtol=0, atol=1e-12)


def test_no_bias_and_errors():
    m = make_module("lstm", bias=False, seed=9)
    x = torch.randn(1, 4, 3, dtype=torch.float64)
    df = analysis.bptt_by_lag(m, x)
    assert set(df.param) == {"weight_ih", "weight_hh"}
    with pytest.raises(ValueError, match=r"bptt_by_lag: argument `loss`.*fix:"):
        analysis.bptt_by_lag(m, x, loss="mean")
    with pytest.raises(ValueError, match=r"bptt_by_lag: argument `loss` did not return a scalar"):
        analysis.bptt_by_lag(m, x, loss=lambda h: h)


def test_term_norms_do_not_underflow_before_the_terms_do():
    """Far terms below 1e-154 (where a plain sum of squares underflows in float64) still get
    their norm: compared with the norm of the same term rescaled by 1e200 first."""
    torch.manual_seed(0)
    net = torch.nn.RNN(3, 8, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        net.weight_hh_l0.mul_(0.05)  # a strongly contracting recurrence: -1.3 decades per step
    x = torch.randn(2, 300, 3, dtype=torch.float64)
    df, terms = analysis.bptt_by_lag(net, x, return_terms=True)
    w = df[df["param"] == "weight_hh"].set_index("lag")["value"]
    t = terms["weight_hh"]  # (n, 8, 8), step order
    tiny = [k for k in range(t.shape[0]) if 0 < t[k].abs().max() < 1e-160]
    assert tiny, "the test needs terms below 1e-160"
    for k in tiny[:5]:
        lag = 299 - int(terms["step"][k])
        want = float(torch.linalg.vector_norm(t[k] * 1e200)) / 1e200
        assert w.loc[lag] == pytest.approx(want, rel=1e-12)
