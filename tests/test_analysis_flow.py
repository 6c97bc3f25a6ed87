"""gradlab.analysis.gradient_flow against plain autograd through torch.nn cells, exact cases,
long sequences (log-space propagation) and input resolution.

Also holds the torch.nn references the other analysis tests import (``nn_states``,
``layer_input``, ``nn_cell``): nothing in them uses gradlab's closed-form cells.

Tolerances: float64 throughout. The closed-form VJP and the nn cells' autograd differ by a few
ulps per step, so for T ≤ 12 the log10 norms agree to ~1e-14; 1e-10 (the brief's bound) leaves
four orders of margin.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from gradlab import analysis
from gradlab._cells import CellParams
from tests._reference import nn_cell

KINDS = ("rnn_tanh", "rnn_relu", "lstm", "gru")


# ---------------------------------------------------------------------------------------------
# torch.nn references


def make_module(
    kind, I=3, H=4, layers=1, bidirectional=False, batch_first=True, bias=True, device="cpu", seed=0
):
    torch.manual_seed(seed)
    kw = dict(num_layers=layers, bidirectional=bidirectional, batch_first=batch_first, bias=bias)
    if kind == "lstm":
        m = nn.LSTM(I, H, **kw)
    elif kind == "gru":
        m = nn.GRU(I, H, **kw)
    else:
        m = nn.RNN(I, H, nonlinearity=kind[4:], **kw)
    return m.to(device=device, dtype=torch.float64)


def truncated(module, n_layers):
    """A batch_first copy of ``module`` holding its first ``n_layers`` layers."""
    kw = dict(
        num_layers=n_layers, bias=module.bias, batch_first=True, bidirectional=module.bidirectional
    )
    if module.mode == "LSTM":
        m = nn.LSTM(module.input_size, module.hidden_size, **kw)
    elif module.mode == "GRU":
        m = nn.GRU(module.input_size, module.hidden_size, **kw)
    else:
        m = nn.RNN(module.input_size, module.hidden_size, nonlinearity=module.nonlinearity, **kw)
    m = m.to(device=module.weight_hh_l0.device, dtype=module.weight_hh_l0.dtype)
    own = dict(module.named_parameters())
    with torch.no_grad():
        for name, par in m.named_parameters():
            par.copy_(own[name])
    return m


def to_bt(module, x):
    return x if module.batch_first else x.transpose(0, 1)


def split_h0(module, h0):
    if h0 is None:
        return None, None
    return (h0[0], h0[1]) if module.mode == "LSTM" else (h0, None)


def layer_input(module, x, layer, h0=None):
    """(B, T, ·) input of ``layer``: the output of torch.nn running the layers below."""
    xb = to_bt(module, x)
    if layer == 0:
        return xb
    D = 2 if module.bidirectional else 1
    h, c = split_h0(module, h0)
    sub = None if h is None else (h[: layer * D] if c is None else (h[: layer * D], c[: layer * D]))
    return truncated(module, layer)(xb, sub)[0]


def nn_states(module, x, layer, d, h0=None):
    """Per-step states of (layer, d) in processing order, computed by the torch.nn cell:
    lists of h_j (and c_j) that retain their gradients as the state-space gradient ∂L/∂s_j."""
    D = 2 if module.bidirectional else 1
    inp = layer_input(module, x, layer, h0).detach()
    if d:
        inp = inp.flip(1)
    B, T, _ = inp.shape
    cell = nn_cell(module, layer, d)
    H = module.hidden_size
    h0h, h0c = split_h0(module, h0)
    h = inp.new_zeros(B, H) if h0h is None else h0h[layer * D + d]
    c = inp.new_zeros(B, H) if h0c is None else h0c[layer * D + d]
    hs, cs = [], []
    for j in range(T):
        if module.mode == "LSTM":
            h, c = cell(inp[:, j], (h, c))
            c = c.clone()  # the state coordinate c_j: only the future sees this copy
            c.retain_grad()
            cs.append(c)
        else:
            h = cell(inp[:, j], h)
        h.retain_grad()
        hs.append(h)
    return inp, hs, cs, cell


def reference_flow(module, x, layer, d, t_proc, u=None, h0=None):
    """log10 ‖∂L/∂s_j‖ (j ≤ t_proc, processing order) per sample, L = ⟨u, h_{t*}⟩ summed over
    the batch, by retain_grad; returns dict of (t_proc+1, B) arrays."""
    _, hs, cs, _ = nn_states(module, x, layer, d, h0)
    H = module.hidden_size
    u = torch.full_like(hs[0], 1 / math.sqrt(H)) if u is None else u
    (hs[t_proc] * u).sum().backward()
    z = lambda t: torch.zeros_like(hs[0]) if t.grad is None else t.grad  # noqa: E731
    gh = torch.stack([z(h) for h in hs[: t_proc + 1]])  # (n, B, H)
    out = {"h": gh.norm(dim=-1).log10()}
    if cs:
        gc = torch.stack([z(c) for c in cs[: t_proc + 1]])
        out["c"] = gc.norm(dim=-1).log10()
        out["total"] = torch.cat([gh, gc], -1).norm(dim=-1).log10()
    else:
        out["total"] = out["h"]
    return {k: v.detach().cpu().numpy() for k, v in out.items()}


# ---------------------------------------------------------------------------------------------
# gradient_flow == autograd


def _configs():
    out = []
    for kind in KINDS:
        out.append((kind, 1, False, True, 0, 0, -1))
        out.append((kind, 1, False, False, -1, 0, 5))
        out.append((kind, 2, True, False, 0, 1, 0))
        out.append((kind, 2, True, True, 1, 0, -1))
        out.append((kind, 2, True, False, 1, 1, 2))
    return out


@pytest.mark.parametrize("kind,layers,bidir,bf,layer,d,target", _configs())
def test_gradient_flow_matches_autograd(kind, layers, bidir, bf, layer, d, target, device):
    m = make_module(kind, layers=layers, bidirectional=bidir, batch_first=bf, device=device)
    B, T = 3, 9
    x = torch.randn(B, T, 3, dtype=torch.float64, device=device)
    x = x if bf else x.transpose(0, 1).contiguous()
    D = 2 if bidir else 1
    h0 = torch.randn(layers * D, B, 4, dtype=torch.float64, device=device)
    if kind == "lstm":
        h0 = (h0, torch.randn_like(h0))
    df = analysis.gradient_flow(
        m, x, target_step=target, layer=layer, direction=d, h0=h0, per_sample=True
    )
    pos = target % T
    t_proc = T - 1 - pos if d else pos
    ref = reference_flow(m, x, layer % layers, d, t_proc, h0=h0)
    names = {"log10_grad_norm": "total", "log10_grad_norm_h": "h", "log10_grad_norm_c": "c"}
    assert set(df.quantity) == ({"log10_grad_norm"} if kind != "lstm" else set(names))
    assert list(df.columns) == ["step", "lag", "sample", "quantity", "value"]
    for q, key in names.items():
        sub = df[df.quantity == q]
        if sub.empty:
            continue
        j = t_proc - sub.lag.to_numpy()  # processing index
        want = ref[key][j, sub["sample"].to_numpy()]
        np.testing.assert_allclose(sub.value.to_numpy(), want, rtol=0, atol=1e-10)
        # steps are original positions: reverse direction counts down from T-1
        np.testing.assert_array_equal(sub.step.to_numpy(), T - 1 - j if d else j)
    assert len(df) == (t_proc + 1) * B * (3 if kind == "lstm" else 1)
    # batch mean of the per-sample log10 norms
    mean = analysis.gradient_flow(m, x, target_step=target, layer=layer, direction=d, h0=h0)
    got = mean[mean.quantity == "log10_grad_norm"].set_index("step").value
    want = df[df.quantity == "log10_grad_norm"].groupby("step").value.mean()
    np.testing.assert_allclose(
        got.sort_index().to_numpy(), want.sort_index().to_numpy(), atol=1e-12
    )


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_flow_grad_output_and_cellparams(kind, device):
    """A user loss ⟨u, h_{t*}⟩ with u = grad_output (B, H); a CellParams model in (B, T, I)."""
    m = make_module(kind, device=device, seed=3)
    x = torch.randn(2, 6, 3, dtype=torch.float64, device=device)
    u = torch.randn(2, 4, dtype=torch.float64, device=device)
    ref = reference_flow(m, x, 0, 0, 5, u=u)
    p = CellParams(kind, m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0, m.bias_hh_l0)
    for model in (m, p):
        df = analysis.gradient_flow(model, x, grad_output=u, per_sample=True)
        sub = df[df.quantity == "log10_grad_norm"]
        want = ref["total"][sub.step.to_numpy(), sub["sample"].to_numpy()]
        np.testing.assert_allclose(sub.value.to_numpy(), want, atol=1e-10)


def test_unbatched_and_float32_model():
    """Unbatched (T, I) input is one sample; dtype=float64 analyses a float32 module exactly."""
    m32 = make_module("gru", seed=4).float()
    x = torch.randn(7, 3)
    a = analysis.gradient_flow(m32, x, dtype=torch.float64)
    m64 = make_module("gru", seed=4)
    b = analysis.gradient_flow(m64, x.double()[None].to(torch.float32).double())
    np.testing.assert_allclose(a.value.to_numpy(), b.value.to_numpy(), atol=1e-12)
    c = analysis.gradient_flow(m32, x)  # float32 analysis: float32 round-off only
    np.testing.assert_allclose(c.value.to_numpy(), b.value.to_numpy(), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Exact cases


def _diag_rnn(kind, H, w, device, I=2):
    W = torch.eye(H, dtype=torch.float64, device=device) * w
    w_ih = torch.full((H, I), 0.1, dtype=torch.float64, device=device)
    return CellParams(kind, w_ih, W)


def test_long_sequence_decay_exact(device):
    """T = 10,000 at an exact rate 0.5: relu RNN, W_hh = 0.5 I, positive W_ih and inputs, no
    bias, so a_t > 0 and J_t = 0.5 I exactly. log10 ‖δ_k‖ = lag · log10 0.5 (−3010 at the
    start, 10^-3010 underflows any float). Error: each step adds log10 of a norm that is 0.5
    to 1 ulp, so the running sum (|ℓ| ≤ 3011) gathers ≤ 1e4 · 3011 · 1.1e-16 ≈ 3.3e-9."""
    T, H = 10_000, 8
    p = _diag_rnn("rnn_relu", H, 0.5, device)
    x = torch.rand(1, T, 2, dtype=torch.float64, device=device) + 0.1
    df = analysis.gradient_flow(p, x)
    assert len(df) == T and np.isfinite(df.value).all()
    np.testing.assert_allclose(
        df.value.to_numpy(), df.lag.to_numpy() * math.log10(0.5), rtol=0, atol=3.3e-9
    )
    assert df.value.min() == pytest.approx((T - 1) * math.log10(0.5), abs=3.3e-9)


def test_long_sequence_explode_exact(device):
    """T = 2,000 at an exact rate 2: tanh RNN, W_hh = 2 Q (Q orthogonal), zero input and h0,
    so h_t ≡ 0 and J_t = 2 Q: ‖δ_k‖ = 2^lag exactly (10^602 overflows float64). Error: Q is
    orthogonal to ~1e-15, so each step's norm is 2(1 ± 1e-15): ≤ 2000 · 1e-15/ln 10 + the
    summation bound 2000 · 603 · 1.1e-16 ≈ 1e-12; 1e-10 allowed."""
    T, H = 2_000, 6
    g = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(H, H, generator=g, dtype=torch.float64))[0].to(device)
    p = CellParams("rnn_tanh", torch.ones(H, 2, dtype=torch.float64, device=device), 2 * Q)
    x = torch.zeros(2, T, 2, dtype=torch.float64, device=device)
    df = analysis.gradient_flow(p, x, per_sample=True)
    np.testing.assert_allclose(
        df.value.to_numpy(), df.lag.to_numpy() * math.log10(2.0), rtol=0, atol=1e-10
    )
    assert df.value.max() > 600


def test_lstm_zero_weights_forget_gate_decay(device):
    """All weights 0, biases b: every gate is constant, f = σ(b_if + b_hf), and the state-space
    recursion gives δ^c_k = f^lag ⊙ u_c, δ^h_k = 0 for lag ≥ 1 (the h columns of J are 0), for
    any input. Tolerance: 30 steps of one multiply each, ~1e-14 (1e-12 allowed)."""
    H, T = 5, 30
    z = torch.zeros(4 * H, 3, dtype=torch.float64, device=device)
    b = torch.randn(4 * H, dtype=torch.float64, device=device)
    p = CellParams("lstm", z, torch.zeros(4 * H, H, dtype=torch.float64, device=device), b, b)
    x = torch.randn(1, T, 3, dtype=torch.float64, device=device)
    uc = torch.rand(1, H, dtype=torch.float64, device=device)
    go = torch.cat([torch.zeros_like(uc), uc], -1)
    df = analysis.gradient_flow(p, x, grad_output=go)
    f = torch.sigmoid(2 * b[H : 2 * H])
    lag = np.arange(T)
    want = np.array([float((f**L * uc[0]).norm().log10()) for L in lag])
    c = df[df.quantity == "log10_grad_norm_c"].sort_values("lag")
    np.testing.assert_allclose(c.value.to_numpy(), want, atol=1e-12)
    h = df[df.quantity == "log10_grad_norm_h"].sort_values("lag")
    assert np.isneginf(h.value.to_numpy()[1:]).all()  # exactly zero, reported -inf, never NaN
    assert not df.value.isna().any()


def test_dead_relu_gives_minus_inf_not_nan(device):
    """A relu RNN whose pre-activations are all ≤ 0 passes no gradient: -inf, never NaN."""
    H = 3
    p = CellParams(
        "rnn_relu",
        -torch.ones(H, 2, dtype=torch.float64, device=device),
        torch.eye(H, dtype=torch.float64, device=device),
    )
    x = torch.rand(2, 5, 2, dtype=torch.float64, device=device)
    df = analysis.gradient_flow(p, x)
    assert not df.value.isna().any()
    assert df[df.lag == 0].value.iloc[0] == 0.0
    assert np.isneginf(df[df.lag > 0].value).all()


# ---------------------------------------------------------------------------------------------
# Input resolution and errors


@pytest.mark.parametrize("kind", KINDS)
def test_resolve_layer_input_matches_torch_nn(kind, device):
    """_resolve's layer input (lower layers run by the closed-form cells) equals torch.nn's
    output of the lower layers; its states equal torch.nn's top-layer output, both directions."""
    m = make_module(kind, layers=3, bidirectional=True, batch_first=False, device=device)
    x = torch.randn(8, 2, 3, dtype=torch.float64, device=device)  # (T, B, I)
    h0 = torch.randn(6, 2, 4, dtype=torch.float64, device=device)
    h0 = (h0, torch.randn_like(h0)) if kind == "lstm" else h0
    for layer in (1, 2):
        for d in (0, 1):
            p, u, s0 = analysis._resolve(m, x, layer, d, h0, fn="test")
            want = layer_input(m, x, layer, h0)
            torch.testing.assert_close(u, want.flip(1) if d else want, rtol=0, atol=1e-13)
    out = m(x, h0)[0].transpose(0, 1)  # (B, T, 2H)
    for d in (0, 1):
        p, u, s0 = analysis._resolve(m, x, -1, d, h0, fn="test")
        from gradlab import _flow

        st = _flow.forward_states(p, u, s0)[..., :4]
        torch.testing.assert_close(
            st.flip(1) if d else st, out[..., 4 * d : 4 * d + 4], rtol=0, atol=1e-13
        )


def test_errors_name_function_argument_and_fix():
    m = make_module("gru")
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    cases = [
        (lambda: analysis.gradient_flow(m, x[:, :0]), "gradient_flow", "`x`", "T = 0"),
        (
            lambda: analysis.gradient_flow(m, torch.randn(2, 5, 7)),
            "gradient_flow",
            "`x`",
            "input_size=3",
        ),
        (
            lambda: analysis.gradient_flow(m, x, target_step=5),
            "gradient_flow",
            "`target_step`",
            "[-5, 4]",
        ),
        (lambda: analysis.bptt_by_lag(m, x, target_step=-6), "bptt_by_lag", "`target_step`", "fix"),
        (
            lambda: analysis.flow_map(m, x.masked_fill(x > 1, float("nan"))),
            "flow_map",
            "`x`",
            "NaN",
        ),
        (
            lambda: analysis.lyapunov_spectrum(m, x, k=5, warmup=0),
            "lyapunov_spectrum",
            "`k`",
            "1 ≤ k ≤ 4",
        ),
        (lambda: analysis.lyapunov_spectrum(m, x), "lyapunov_spectrum", "`warmup`", "fix"),
        (lambda: analysis.gradient_flow(m, x, layer=1), "gradient_flow", "`layer`", "fix"),
        (lambda: analysis.gradient_flow(m, x, direction=1), "gradient_flow", "`direction`", "fix"),
        (
            lambda: analysis.gradient_flow(m, x, h0=torch.zeros(3, 4)),
            "gradient_flow",
            "`h0`",
            "fix",
        ),
        (
            lambda: analysis.gradient_flow(m, x, grad_output=torch.zeros(3, 4)),
            "gradient_flow",
            "`grad_output`",
            "fix",
        ),
        (lambda: analysis.jacobian_spectrum(m, x, lags=(0,)), "jacobian_spectrum", "`lags`", "fix"),
        (lambda: analysis.jacobian_spectrum(m, x, lags=(9,)), "jacobian_spectrum", "`lags`", "fix"),
        (lambda: analysis.flow_map(m, x, norms=("nuclear",)), "flow_map", "`norms`", "fix"),
        (lambda: analysis.flow_map(m, x, sample=2), "flow_map", "`sample`", "fix"),
    ]
    for call, fn, arg, hint in cases:
        with pytest.raises(ValueError) as e:
            call()
        msg = str(e.value)
        assert msg.startswith(fn + ":") and arg in msg and "fix:" in msg and hint in msg, msg


def test_nan_states_are_reported():
    """Weights that overflow the states to inf/NaN (relu, W = 1e200 I) are named in the error."""
    H = 2
    p = CellParams(
        "rnn_relu", torch.ones(H, 1, dtype=torch.float64), 1e200 * torch.eye(H, dtype=torch.float64)
    )
    x = torch.ones(1, 4, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"gradient_flow: argument `x` drives the states to NaN"):
        analysis.gradient_flow(p, x)


def test_unsupported_models():
    with pytest.raises(NotImplementedError, match="proj_size"):
        analysis.gradient_flow(nn.LSTM(3, 4, proj_size=2), torch.randn(1, 2, 3))
    with pytest.raises(TypeError, match="not a recurrent module"):
        analysis.gradient_flow(nn.Linear(3, 4), torch.randn(1, 2, 3))
