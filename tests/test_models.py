"""Instrumented models against torch.nn (same weights: outputs and gradients), and user cells."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import gradlab
from gradlab import models

PAIRS = {
    "rnn_tanh": (lambda **k: nn.RNN(**k), lambda **k: models.RNN(**k)),
    "rnn_relu": (lambda **k: nn.RNN(nonlinearity="relu", **k),
                 lambda **k: models.RNN(nonlinearity="relu", **k)),
    "lstm": (lambda **k: nn.LSTM(**k), lambda **k: models.LSTM(**k)),
    "gru": (lambda **k: nn.GRU(**k), lambda **k: models.GRU(**k)),
}


def _pair(kind, device="cpu", **kw):
    torch.manual_seed(0)
    ref = PAIRS[kind][0](**kw).double().to(device)
    ours = PAIRS[kind][1](**kw).double().to(device)
    ours.load_state_dict(ref.state_dict())  # same names and shapes both ways
    ref.load_state_dict(ours.state_dict())
    return ref, ours


def _loss(out, state):
    h = state[0] if isinstance(state, tuple) else state
    return (out.sin()).sum() + (h**2).sum()


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from(list(PAIRS)), B=st.integers(1, 3), T=st.integers(1, 6),
       H=st.integers(1, 5), L=st.integers(1, 3), bi=st.booleans(), bf=st.booleans(),
       bias=st.booleans())
def test_models_match_torch_nn(kind, B, T, H, L, bi, bf, bias):
    ref, ours = _pair(kind, input_size=2, hidden_size=H, num_layers=L, bidirectional=bi,
                      batch_first=bf, bias=bias)
    x = torch.randn(*((B, T, 2) if bf else (T, B, 2)), dtype=torch.float64)
    o1, s1 = ref(x)
    o2, s2 = ours(x)
    # float64, T ≤ 6 steps × L ≤ 3 layers of O(1) arithmetic: rounding ≪ 1e-12
    torch.testing.assert_close(o2, o1, atol=1e-12, rtol=0)
    g1 = torch.autograd.grad(_loss(o1, s1), list(ref.parameters()))
    g2 = torch.autograd.grad(_loss(o2, s2), list(ours.parameters()))
    for a, b in zip(g2, g1, strict=True):
        torch.testing.assert_close(a, b, atol=1e-11, rtol=0)


@pytest.mark.parametrize("kind", list(PAIRS))
def test_models_on_device_and_unbatched(kind, device):
    ref, ours = _pair(kind, device=device, input_size=3, hidden_size=4)
    x = torch.randn(5, 3, dtype=torch.float64, device=device)
    torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=1e-12, rtol=0)


def test_model_validation():
    with pytest.raises(ValueError, match="nonlinearity"):
        models.RNN(2, 3, nonlinearity="sigmoid")
    m = models.GRU(2, 3, batch_first=True)
    with pytest.raises(ValueError, match=r"I = input_size = 2"):
        m(torch.randn(1, 4, 5))
    with pytest.raises(ValueError, match="initial state must have shape"):
        m(torch.randn(1, 4, 2), torch.zeros(2, 1, 3))


class MinimalRNNCell(nn.Module):
    """A user's own cell: h' = tanh(W x + U h) (a tuple state exercises the (h, c) path)."""

    def __init__(self, I, H, tuple_state=False):
        super().__init__()
        self.W = nn.Linear(I, H).double()
        self.U = nn.Linear(H, H, bias=False).double()
        self.tuple_state = tuple_state

    def forward(self, x, state):
        if self.tuple_state:
            h, c = state
            c = 0.5 * c + torch.tanh(self.W(x))
            return torch.tanh(self.U(h) + c), c
        return torch.tanh(self.W(x) + self.U(state))


@pytest.mark.parametrize("tuple_state", [False, True])
def test_unrolled_user_cell_is_recorded(tuple_state):
    torch.manual_seed(1)
    cell = MinimalRNNCell(3, 4, tuple_state)
    m = gradlab.Unrolled(cell, hidden_size=4, state_shapes=(4, 4) if tuple_state else None)
    x = torch.randn(2, 6, 3, dtype=torch.float64)
    with gradlab.record(m, quantities=("grad_norm", "jac_norm"), per_sample=True) as rec:
        out, _ = m(x)
        (out[:, -1] ** 2).sum().backward()
    df = rec.frame()
    # plain autograd: retain_grad on each h_t of a hand-unrolled loop
    state = tuple(torch.zeros(2, 4, dtype=torch.float64) for _ in range(2)) if tuple_state \
        else torch.zeros(2, 4, dtype=torch.float64)
    hs, prevs = [], []
    for t in range(6):
        prevs.append(state)
        state = cell(x[:, t], state)
        h = state[0] if tuple_state else state
        h.retain_grad()
        hs.append(h)
    (hs[-1] ** 2).sum().backward()
    want = torch.stack([torch.linalg.vector_norm(h.grad, dim=-1) for h in hs], 1).numpy()
    got = df[(df.quantity == "grad_norm") & (df.batch_index >= 0)].sort_values(
        ["batch_index", "step"]).value.to_numpy().reshape(2, 6)
    np.testing.assert_allclose(got, want, rtol=1e-10)
    assert (df.quantity == "jac_norm_spectral").sum() == 2 * 6 + 6
    S = 8 if tuple_state else 4
    spec = df[(df.quantity == "jac_norm_spectral") & (df.batch_index == 0)].sort_values("step")
    assert len(spec) == 6 and np.all(np.isfinite(spec.value)) and S > 0


# ----------------------------------------------------------------------------- Transformer


def _hand_built(m, x, norm_first):
    """The same computation written with a fresh nn.TransformerEncoder holding m's weights."""
    from gradlab.models import Transformer  # noqa: F401

    T, d = x.shape[1], m.d_model
    layer = nn.TransformerEncoderLayer(d, m.nhead, 4 * d, 0.0, batch_first=True,
                                       norm_first=norm_first, dtype=torch.float64)
    enc = nn.TransformerEncoder(layer, m.num_layers, enable_nested_tensor=False,
                                norm=nn.LayerNorm(d, dtype=torch.float64) if norm_first else None)
    enc.load_state_dict(m.encoder.state_dict())
    pos = torch.arange(T, dtype=torch.float64)[:, None]
    i = torch.arange(d, dtype=torch.float64)[None, :]
    angle = pos / 10000 ** (2 * torch.div(i, 2, rounding_mode="floor") / d)
    pe = torch.where(i % 2 == 0, torch.sin(angle), torch.cos(angle))  # Vaswani et al. 3.5
    z = x @ m.input_proj.weight.T + m.input_proj.bias + pe
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)  # True: not allowed
    return enc(z, mask=mask)


@pytest.mark.parametrize("norm_first", [True, False])
def test_transformer_equals_hand_built_encoder(norm_first):
    from gradlab.models import Transformer

    torch.manual_seed(0)
    m = Transformer(3, 8, nhead=2, num_layers=2, norm_first=norm_first, dtype=torch.float64)
    x = torch.randn(4, 9, 3, dtype=torch.float64)
    torch.testing.assert_close(m(x), _hand_built(m, x, norm_first), atol=1e-12, rtol=0)
    m.eval()
    with torch.no_grad():  # the fused inference path gives the same numbers
        torch.testing.assert_close(m(x), _hand_built(m, x, norm_first), atol=1e-12, rtol=0)


def test_transformer_is_causal_and_learned_positions():
    from gradlab.models import Transformer

    torch.manual_seed(1)
    m = Transformer(2, 8, nhead=4, positional="learned", max_len=10, dtype=torch.float64)
    x = torch.randn(2, 10, 2, dtype=torch.float64)
    y = x.clone()
    y[:, 6:] += 1.0
    torch.testing.assert_close(m(x)[:, :6], m(y)[:, :6], atol=1e-13, rtol=0)
    assert not torch.allclose(m(x)[:, 6:], m(y)[:, 6:])
    with pytest.raises(ValueError, match="max_len = 10"):
        m(torch.randn(1, 11, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="not divisible by nhead"):
        Transformer(2, 6, nhead=4)


def test_attention_stats_uniform_attention_has_the_closed_form():
    """Zero query/key weights: every query attends uniformly to keys 0..t, so the distance is
    t/2 and the entropy ln(t+1) exactly, in every layer and head."""
    from gradlab.models import Transformer

    torch.manual_seed(2)
    m = Transformer(3, 8, nhead=2, num_layers=2, dtype=torch.float64)
    with torch.no_grad():
        for layer in m.encoder.layers:
            layer.self_attn.in_proj_weight[:16].zero_()  # W_q, W_k
            layer.self_attn.in_proj_bias[:16].zero_()
    m.requires_grad_(False).eval()  # the hooks must still see the real forward
    T = 7
    df = m.attention_stats(torch.randn(3, T, 3, dtype=torch.float64))
    assert set(df["layer"]) == {0, 1} and set(df["head"]) == {0, 1}
    t = np.arange(T)
    for (_, _), g in df[df["quantity"] == "attention_distance"].groupby(["layer", "head"]):
        np.testing.assert_allclose(g.sort_values("step")["value"], t / 2, atol=1e-12)
    for (_, _), g in df[df["quantity"] == "attention_entropy"].groupby(["layer", "head"]):
        np.testing.assert_allclose(g.sort_values("step")["value"], np.log(t + 1), atol=1e-12)
    assert not m.encoder.layers[0].self_attn._forward_hooks  # hooks removed
