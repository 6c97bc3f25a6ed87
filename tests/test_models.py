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
