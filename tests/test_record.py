"""gradlab.record against plain autograd (retain_grad on an nn-cell twin), and its contract:
identical outputs and gradients, nothing left on the model, clear errors.

Tolerances. float64: the recorded δ_t is the same sum of products as autograd's, evaluated in
another order (the fused kernel's own, or gradlab's recursion); the rounding error is a few ulp
per step times T ≤ 12 steps, so relative 1e-10 is safe by five orders of magnitude. Outputs and
parameter gradients: bit for bit (torch.equal), every route calls the module's own kernel with
the module's own weights.
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import gradlab
from tests._reference import reference_run

CLS = {"rnn_tanh": (nn.RNN, {"nonlinearity": "tanh"}), "rnn_relu": (nn.RNN, {"nonlinearity": "relu"}),
       "lstm": (nn.LSTM, {}), "gru": (nn.GRU, {})}


def make(kind, I=3, H=5, L=1, bi=False, bf=True, dtype=torch.float64, device="cpu", seed=0):
    torch.manual_seed(seed)
    cls, kw = CLS[kind]
    return cls(I, H, num_layers=L, bidirectional=bi, batch_first=bf, **kw).to(device, dtype)


def loss_fn(out, state):
    h = state[0] if isinstance(state, tuple) else state
    loss = (out**2).sum() + (h**3).sum()
    if isinstance(state, tuple):
        loss = loss + 0.5 * (state[1] ** 2).sum()
    return loss


def recorded(m, x, loss=loss_fn, **kw):
    with gradlab.record(m, **kw) as rec:
        out, state = m(x)
        loss(out, state).backward()
    return out, rec.frame()


def series(df, quantity, layer, d, per_sample=False):
    sel = df[(df.quantity == quantity) & (df.layer == layer) & (df.direction == d)]
    sel = sel[sel.batch_index >= 0] if per_sample else sel[sel.batch_index == -1]
    sel = sel.sort_values(["batch_index", "step"])
    T = sel.step.nunique()
    return sel.value.to_numpy().reshape(-1, T)


@pytest.mark.parametrize("kind", list(CLS))
@pytest.mark.parametrize("L,bi", [(1, False), (2, False), (2, True)])
@pytest.mark.parametrize("bf", [True, False])
def test_grad_norm_matches_autograd(kind, L, bi, bf, device):
    m = make(kind, L=L, bi=bi, bf=bf, device=device)
    shape = (4, 9, 3) if bf else (9, 4, 3)
    x = torch.randn(*shape, dtype=torch.float64, device=device)
    _, df = recorded(m, x, per_sample=True)
    m.zero_grad()
    _, _, ref = reference_run(m, x, loss_fn)
    for (layer, d), g in ref.items():
        want = torch.linalg.vector_norm(g["h"], dim=-1).cpu().numpy()  # (B, T)
        got = series(df, "grad_norm", layer, d, per_sample=True)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(series(df, "grad_norm", layer, d)[0], want.mean(0),
                                   rtol=1e-10, atol=1e-14)
        if kind == "lstm":
            want_c = torch.linalg.vector_norm(g["c"], dim=-1).cpu().numpy()
            np.testing.assert_allclose(series(df, "grad_norm_c", layer, d, True), want_c,
                                       rtol=1e-10, atol=1e-14)


ROUTES = ["auto", "recursion", "lean"]


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("kind", list(CLS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_outputs_and_parameter_grads_bit_for_bit(kind, dtype, route, dropout, device):
    m = make(kind, L=2, bi=True, dtype=dtype, device=device)
    m.dropout = dropout
    x = torch.randn(4, 12, 3, dtype=dtype, device=device)
    torch.manual_seed(1)
    out0, st0 = m(x)
    g0 = torch.autograd.grad(loss_fn(out0, st0), list(m.parameters()))
    torch.manual_seed(1)
    with gradlab.record(m, quantities=("grad_norm", "gates", "jac_norm"), route=route) as rec:
        out1, st1 = m(x)
        g1 = torch.autograd.grad(loss_fn(out1, st1), list(m.parameters()))
    assert set(rec.frame().quantity) >= {"grad_norm", "jac_norm_spectral"}
    assert torch.equal(out1, out0)
    for a, b in zip(g1, g0, strict=True):
        assert torch.equal(a, b)


def _snapshot(m):
    return ({k: v.clone() for k, v in m.state_dict().items()},
            [dict(mm.__dict__) .keys() for mm in m.modules()],
            [(len(mm._forward_hooks), len(mm._forward_pre_hooks), len(mm._backward_hooks))
             for mm in m.modules()])


class Wrapper(nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.enc = make(kind, H=6)
        self.head = nn.Linear(6, 1).double()

    def forward(self, x):
        out, _ = self.enc(x)
        return self.head(out[:, -1])


@pytest.mark.parametrize("kind", list(CLS))
def test_model_untouched_after_exit_even_on_exception(kind):
    model = Wrapper(kind)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    before = _snapshot(model)
    y0 = model(x)
    with pytest.raises(RuntimeError, match="boom"):
        with gradlab.record(model) as rec:
            model(x).sum().backward()
            raise RuntimeError("boom")
    after = _snapshot(model)
    assert [list(k) for k in before[1]] == [list(k) for k in after[1]]
    assert before[2] == after[2]
    assert "forward" not in model.enc.__dict__
    for k, v in before[0].items():
        assert torch.equal(v, after[0][k])
    assert torch.equal(model(x), y0)
    n = len(rec.entries)
    model(x).sum().backward()  # a backward after exit records nothing
    assert len(rec.entries) == n
    assert rec.frame().module.unique().tolist() == ["enc"]


def test_frame_is_tidy_and_names_modules():
    model = Wrapper("lstm")
    with gradlab.record(model) as rec:  # defaults: the two gradient norms
        model(torch.randn(3, 7, 3, dtype=torch.float64)).sum().backward()
    assert set(rec.frame().quantity) == {"grad_norm", "grad_norm_c"}
    with gradlab.record(model, quantities=("grad_norm", "grad_norm_c", "gates")) as rec:
        model(torch.randn(3, 7, 3, dtype=torch.float64)).sum().backward()
    df = rec.frame()
    assert list(df.columns) == list(gradlab.Recording().frame().columns)
    assert {"module", "layer", "direction", "step", "count", "quantity", "value"} <= set(df.columns)
    assert (df[df.batch_index == -1]["count"] == 3).all()
    assert not df.value.map(lambda v: isinstance(v, (list, np.ndarray))).any()
    assert set(df.quantity) == {"grad_norm", "grad_norm_c", "gate_mean", "gate_saturated_frac"}
    gm = df[(df.quantity == "gate_mean")]
    assert set(gm.gate) == {"input", "forget", "cell", "output"}
    assert sorted(df[df.quantity == "grad_norm"].step) == list(range(7))


def test_gate_statistics_match_manual_lstm():
    m = make("lstm", H=4)
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    with gradlab.record(m, quantities=("gates",)) as rec:
        m(x)
    df = rec.frame()
    cell = nn.LSTMCell(3, 4).double()
    cell.load_state_dict({k.replace("_l0", ""): v for k, v in m.state_dict().items()})
    h = c = torch.zeros(3, 4, dtype=torch.float64)
    for t in range(6):
        a = x[:, t] @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh
        f = torch.sigmoid(a.chunk(4, -1)[1])
        got = df[(df.gate == "forget") & (df.step == t) & (df.quantity == "gate_mean")].value.item()
        assert got == pytest.approx(f.mean().item(), rel=1e-12)
        sat = ((f < 0.05) | (f > 0.95)).double().mean().item()
        got = df[(df.gate == "forget") & (df.step == t) & (df.quantity == "gate_saturated_frac")]
        assert got.value.item() == pytest.approx(sat)
        h, c = cell(x[:, t], (h, c))


@pytest.mark.parametrize("kind", list(CLS))
def test_jacobian_norms_and_full_jacobians_match_jacrev(kind):
    m = make(kind, H=4, bi=True)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    with gradlab.record(m, quantities=("jac_norm",), jacobians="full") as rec:
        m(x)
    df = rec.frame()
    p = gradlab._cells.params_from_module(m, 0, 1)  # the reverse direction
    from gradlab import _cells as C
    states = C.unroll(p, x.flip(1)).flip(1)  # (B, T, S) in sequence order
    S = p.state_size
    for t in range(5):
        prev = states[:, t + 1] if t < 4 else torch.zeros(2, S, dtype=torch.float64)
        J = torch.func.vmap(torch.func.jacrev(lambda s, xx: C.step(p, xx, s)))(prev, x[:, t])
        torch.testing.assert_close(rec.jacobians(None, 0, 1)[:, t], J, atol=1e-12, rtol=0)
        sel = df[(df.direction == 1) & (df.step == t)]
        spec = torch.linalg.matrix_norm(J, ord=2).mean().item()
        frob = torch.linalg.matrix_norm(J).mean().item()
        assert sel[sel.quantity == "jac_norm_spectral"].value.item() == pytest.approx(spec, rel=1e-10)
        assert sel[sel.quantity == "jac_norm_frobenius"].value.item() == pytest.approx(frob, rel=1e-10)


def test_full_jacobians_refused_above_budget():
    m = make("lstm", H=8)
    with gradlab.record(m, jacobians="full", memory_budget=1000) as rec:
        with pytest.raises(MemoryError, match=r"need .* GiB, above memory_budget.*raise memory_budget="):
            m(torch.randn(2, 10, 3, dtype=torch.float64))
    assert rec.jacobians_full == {}


# ---- exact cases ---------------------------------------------------------------------------

def _full_jacobians(m, x, **kw):
    with gradlab.record(m, quantities=(), jacobians="full", **kw) as rec:
        m(x)
    return rec.jacobians()


def test_identity_relu_zero_input_gives_identity_products():
    m = make("rnn_relu", I=2, H=6)
    with torch.no_grad():
        m.weight_hh_l0.copy_(torch.eye(6))
        m.bias_ih_l0.zero_()
        m.bias_hh_l0.zero_()
    x = torch.zeros(1, 20, 2, dtype=torch.float64)
    h0 = torch.rand(1, 1, 6, dtype=torch.float64) + 0.1  # positive: relu'(h) = 1 everywhere
    with gradlab.record(m, quantities=(), jacobians="full") as rec:
        m(x, h0)
    J = rec.jacobians()[0]
    P = torch.eye(6, dtype=torch.float64)
    for t in range(20):
        P = J[t] @ P
        assert torch.equal(P, torch.eye(6, dtype=torch.float64))


def test_zero_weight_lstm_cell_path_is_forget_gate_power():
    m = make("lstm", I=2, H=4)
    b_f = torch.tensor([-2.0, 0.0, 1.0, 3.0], dtype=torch.float64)
    with torch.no_grad():
        for p in m.parameters():
            p.zero_()
        m.bias_ih_l0[4:8] = b_f
    J = _full_jacobians(m, torch.randn(1, 12, 2, dtype=torch.float64))[0]  # (T, 8, 8)
    P = torch.eye(8, dtype=torch.float64)
    for k in range(1, 13):
        P = P @ J[12 - k]  # ∂s_T/∂s_{T-k} = J_T ... J_{T-k+1}
        want = torch.diag(torch.sigmoid(b_f) ** k)
        torch.testing.assert_close(P[4:, 4:], want, atol=1e-15, rtol=1e-13)


def test_pascanu_bound_holds_for_contractive_tanh_rnn():
    """Pascanu et al. (2013): |tanh'| ≤ 1, so ‖∂h_t/∂h_k‖₂ ≤ σ_max(W_hh)^(t-k)."""
    m = make("rnn_tanh", I=3, H=10, seed=3)
    s = 0.8
    with torch.no_grad():
        W = torch.randn(10, 10, dtype=torch.float64)
        m.weight_hh_l0.copy_(s * W / torch.linalg.matrix_norm(W, ord=2))
    J = _full_jacobians(m, 2 * torch.randn(3, 30, 3, dtype=torch.float64))
    for b in range(3):
        P = torch.eye(10, dtype=torch.float64)
        for k in range(1, 30):
            P = P @ J[b, 30 - k]
            assert torch.linalg.matrix_norm(P, ord=2).item() <= s**k * (1 + 1e-12)


# ---- bad input -----------------------------------------------------------------------------

def _untouched(m):
    assert "forward" not in m.__dict__


def test_errors_name_module_and_problem():
    model = Wrapper("gru")
    with pytest.raises(ValueError, match=r"'enc'.*input_size = 3.*\(2, 5, 4\)"):
        with gradlab.record(model):
            model(torch.randn(2, 5, 4, dtype=torch.float64))
    _untouched(model.enc)
    with pytest.raises(FloatingPointError, match=r"'enc'.*input contains NaN.*jac_norm"):
        with gradlab.record(model, quantities=("grad_norm", "jac_norm")):
            x = torch.randn(2, 5, 3, dtype=torch.float64)
            x[0, 1, 2] = float("nan")
            model(x)
    _untouched(model.enc)
    with pytest.raises(FloatingPointError, match=r"non-finite grad_norm.*'enc'.*layer 0.*step 4"):
        with gradlab.record(model, on_nonfinite="raise"):
            y = model(torch.randn(2, 5, 3, dtype=torch.float64))
            (y * float("nan")).sum().backward()
    _untouched(model.enc)
    with pytest.raises(ValueError, match="on_nonfinite must be"):
        with gradlab.record(model, on_nonfinite="ignore"):
            pass
    with pytest.raises(ValueError, match="route must be one of"):
        with gradlab.record(model, route="fast"):
            pass
    with pytest.raises(ValueError, match="contains no nn.RNN, nn.LSTM, nn.GRU"):
        with gradlab.record(nn.Linear(2, 2)):
            pass
    lstm = nn.LSTM(3, 4, proj_size=2)
    with pytest.raises(NotImplementedError, match="proj_size=2"):
        with gradlab.record(lstm):
            pass
    _untouched(lstm)
    g = nn.GRU(3, 4, batch_first=True)
    with pytest.raises(ValueError, match="unknown quantities"):
        with gradlab.record(g, quantities=("grad",)):
            pass


# ---- variants ------------------------------------------------------------------------------

def test_unbatched_input_initial_state_and_calls():
    m = make("lstm", bf=False)
    x = torch.randn(6, 3, dtype=torch.float64)  # unbatched (T, I)
    h0 = torch.randn(1, 5, dtype=torch.float64)
    c0 = torch.randn(1, 5, dtype=torch.float64)
    ref_out, _ = m(x, (h0, c0))
    with gradlab.record(m) as rec:
        out, _ = m(x, (h0, c0))
        out2, _ = m(x, (h0, c0))
        (out.sum() + out2.sum()).backward()
    torch.testing.assert_close(out, ref_out, atol=1e-15, rtol=0)
    df = rec.frame()
    assert sorted(df.call.unique()) == [0, 1]
    m.zero_grad()
    _, _, ref = reference_run(m, x.unsqueeze(1), lambda o, s: o.sum(),
                              hx=(h0.unsqueeze(1), c0.unsqueeze(1)))
    want = torch.linalg.vector_norm(ref[(0, 0)]["h"], dim=-1)[0].numpy()
    got = df[(df.quantity == "grad_norm") & (df.call == 0)].sort_values("step").value.to_numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10)


@settings(max_examples=12, deadline=None)
@given(kind=st.sampled_from(list(CLS)), B=st.integers(1, 3), T=st.integers(1, 6),
       H=st.integers(1, 4), L=st.integers(1, 2), bi=st.booleans(), bf=st.booleans())
def test_property_record_matches_autograd(kind, B, T, H, L, bi, bf):
    m = make(kind, I=2, H=H, L=L, bi=bi, bf=bf)
    x = torch.randn(*((B, T, 2) if bf else (T, B, 2)), dtype=torch.float64)
    _, df = recorded(m, x, per_sample=True)
    m.zero_grad()
    _, _, ref = reference_run(m, x, loss_fn)
    for (layer, d), g in ref.items():
        want = torch.linalg.vector_norm(g["h"], dim=-1).numpy()
        np.testing.assert_allclose(series(df, "grad_norm", layer, d, True), want,
                                   rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("route", ROUTES + ["graph"])
@pytest.mark.parametrize("kind", list(CLS))
def test_every_gradient_route_matches_autograd(kind, route, device):
    """Stock modules read δ_t by per-step autograd pre-hooks (composite kernels), by the BPTT
    recursion after the fused backward, or by the recursion on chunked caches ("lean"); each
    must give autograd's per-step norms."""
    m = make(kind, L=2, bi=True, device=device)
    x = torch.randn(3, 8, 3, dtype=torch.float64, device=device)
    if route == "graph" and (kind == "lstm" or device.type != "cpu"):
        with pytest.raises(ValueError, match="route='graph' needs a composite kernel"):
            recorded(m, x, route=route)
        return
    _, df = recorded(m, x, per_sample=True, route=route,
                     quantities=("grad_norm", "grad_norm_c") if kind == "lstm" else ("grad_norm",))
    m.zero_grad()
    _, _, ref = reference_run(m, x, loss_fn)
    for (layer, d), g in ref.items():
        want = torch.linalg.vector_norm(g["h"], dim=-1).cpu().numpy()
        np.testing.assert_allclose(series(df, "grad_norm", layer, d, True), want, rtol=1e-10,
                                   atol=1e-14)
        if kind == "lstm":
            want_c = torch.linalg.vector_norm(g["c"], dim=-1).cpu().numpy()
            np.testing.assert_allclose(series(df, "grad_norm_c", layer, d, True), want_c,
                                       rtol=1e-10, atol=1e-14)
