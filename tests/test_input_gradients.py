"""input_gradients against plain autograd, and a closed form at T = 10,000.

Tolerance: float64. The recurrent route evaluates the same products as autograd in another order
and with per-step rescaling by a power of ten of the norm; the relative error grows like
T · eps ≈ 1e-14 for T ≤ 20, so 1e-10 relative is loose by four orders of magnitude and still
catches any wrong term (a dropped path changes norms by ≥ 1e-3 here).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import gradlab
from gradlab.models import Transformer, causal_mask
from gradlab.train import SequenceModel


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _reference(model, x, ts, go=None, batch_first=True, pick=None):
    """Per-sample ‖∂L/∂x_{b,k}‖ (B, T) by autograd, L = Σ_b ⟨go_b, y_b⟩."""
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    out = out[0] if isinstance(out, tuple) else out
    if not batch_first:
        out = out.transpose(0, 1)
    y = pick(out) if pick is not None else out[:, ts]
    go = torch.ones_like(y) if go is None else go.expand_as(y)
    (g,) = torch.autograd.grad((go * y).sum(), xg)
    if not batch_first:
        g = g.transpose(0, 1)
    return torch.linalg.vector_norm(g, dim=-1)  # (B, T)


def _ours(df: pd.DataFrame, B: int, T: int, quantity: str = "grad_norm") -> torch.Tensor:
    rows = df[(df["quantity"] == quantity) & (df["batch_index"] >= 0)]
    rows = rows.sort_values(["batch_index", "step"])
    return torch.tensor(rows["value"].to_numpy().reshape(B, T))


def _stock(kind, I, H, **kw):
    cls = {"lstm": nn.LSTM, "gru": nn.GRU}.get(kind, nn.RNN)
    if kind.startswith("rnn_"):
        kw["nonlinearity"] = kind[4:]
    return cls(I, H, dtype=torch.float64, **kw)


RECURRENT_CASES = [
    ("rnn_tanh", {"batch_first": True}),
    ("rnn_relu", {"batch_first": True}),
    ("lstm", {"batch_first": True}),
    ("gru", {"batch_first": True}),
    ("rnn_tanh", {"batch_first": True, "num_layers": 3}),
    ("lstm", {"batch_first": False, "num_layers": 2, "bidirectional": True}),
    ("gru", {"batch_first": True, "num_layers": 2, "bidirectional": True}),
    ("rnn_relu", {"batch_first": True, "bidirectional": True}),
]


@pytest.mark.parametrize("kind,kw", RECURRENT_CASES)
@pytest.mark.parametrize("target_step", [-1, 5])
def test_stock_recurrent_equals_autograd(kind, kw, target_step):
    B, T, I, H = 3, 12, 4, 6
    net = _stock(kind, I, H, **kw)
    bf = kw["batch_first"]
    x = torch.randn(B, T, I, dtype=torch.float64)
    xin = x if bf else x.transpose(0, 1)
    ref = _reference(net, xin if bf else xin, target_step, batch_first=bf) if bf else None
    if not bf:
        xg = xin.clone().requires_grad_(True)
        out = net(xg)[0].transpose(0, 1)  # (B, T, D·H)
        (g,) = torch.autograd.grad(out[:, target_step].sum(), xg)
        ref = torch.linalg.vector_norm(g.transpose(0, 1), dim=-1)
    df = gradlab.input_gradients(net, xin, target_step=target_step, per_sample=True)
    torch.testing.assert_close(_ours(df, B, T), ref, rtol=1e-10, atol=0)
    # batch row: the mean of the per-sample norms, and its log10
    mean = df[(df["quantity"] == "grad_norm") & (df["batch_index"] == -1)].sort_values("step")
    np.testing.assert_allclose(mean["value"], ref.mean(0).numpy(), rtol=1e-10)
    logm = df[(df["quantity"] == "log10_grad_norm") & (df["batch_index"] == -1)]
    with np.errstate(divide="ignore"):  # positions after t*: log10 0 = -inf on both sides
        np.testing.assert_allclose(logm.sort_values("step")["value"],
                                   np.log10(ref.mean(0).numpy()), rtol=0, atol=1e-10)
    ts = target_step % T
    assert (mean["lag"].to_numpy() == ts - np.arange(T)).all()
    if not kw.get("bidirectional"):  # causal: nothing after t* reaches the loss
        assert (mean["value"].to_numpy()[ts + 1 :] == 0).all()


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru"])
def test_gradlab_models_and_grad_output(kind):
    B, T, I, H = 2, 9, 3, 5
    cls = {"lstm": gradlab.models.LSTM, "gru": gradlab.models.GRU}.get(kind, gradlab.models.RNN)
    net = cls(I, H, num_layers=2, batch_first=True, dtype=torch.float64)
    x = torch.randn(B, T, I, dtype=torch.float64)
    go = torch.randn(B, H, dtype=torch.float64)
    df = gradlab.input_gradients(net, x, target_step=-2, grad_output=go, per_sample=True)
    ref = _reference(net, x, -2, go)
    torch.testing.assert_close(_ours(df, B, T), ref, rtol=1e-10, atol=0)


@pytest.mark.parametrize("cell", ["rnn_tanh", "lstm", "gru", "transformer"])
@pytest.mark.parametrize("readout", ["last", "all"])
def test_sequence_model_equals_autograd(cell, readout):
    B, T = 3, 10
    m = SequenceModel(cell, 3, 8, 2, num_layers=2, readout=readout, dtype=torch.float64)
    x = torch.randn(B, T, 3, dtype=torch.float64)
    df = gradlab.input_gradients(m, x, target_step=6, per_sample=True)
    ref = _reference(m, x, 6, pick=(lambda y: y) if readout == "last" else None)
    torch.testing.assert_close(_ours(df, B, T), ref, rtol=1e-10, atol=0)
    ts = T - 1 if readout == "last" else 6
    assert (df["lag"].to_numpy()[:T] == ts - np.arange(T)).all()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("norm_first", [False, True])
def test_transformer_encoder_equals_autograd(causal, norm_first):
    B, T, d = 2, 11, 8
    layer = nn.TransformerEncoderLayer(d, 2, 16, 0.0, batch_first=True, norm_first=norm_first,
                                       dtype=torch.float64)
    enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    mask = causal_mask(T, dtype=torch.float64) if causal else None
    f = (lambda x: enc(x, mask=mask, is_causal=True)) if causal else enc
    x = torch.randn(B, T, d, dtype=torch.float64)
    # a random g: the sum of a LayerNorm output (the default g = 1) does not depend on x
    go = torch.randn(d, dtype=torch.float64)
    df = gradlab.input_gradients(f, x, target_step=4, grad_output=go, per_sample=True)
    ref = _reference(f, x, 4, go)
    torch.testing.assert_close(_ours(df, B, T), ref, rtol=1e-10, atol=0)
    after = _ours(df, B, T)[:, 5:]
    assert bool((after == 0).all()) == causal  # a causal model cannot see the future


def test_float32_model_in_float64_on_its_device():
    net = nn.GRU(3, 4, batch_first=True)  # float32
    x = torch.randn(2, 6, 3)
    df = gradlab.input_gradients(net, x, dtype=torch.float64, per_sample=True)
    ref = _reference(net.double(), x.double(), -1)
    torch.testing.assert_close(_ours(df, 2, 6), ref, rtol=1e-10, atol=0)
    tf = Transformer(3, 8, nhead=2)  # autograd route: a float64 copy, the model untouched
    gradlab.input_gradients(tf, x, dtype=torch.float64)
    assert tf.input_proj.weight.dtype == torch.float32


def test_relu_rnn_at_ten_thousand_steps_matches_the_closed_form():
    """h_t = relu(W_ih x_t + ½ h_{t-1}) with W_ih > 0, x > 0: every unit is active, so
    δ_k = ½^{T-1-k} δ_{T-1} and ‖∂L/∂x_k‖ = ½^{T-1-k} ‖W_ihᵀ 1‖ exactly: 10^-3010 at k = 0,
    far below float64's smallest number."""
    T, I, H = 10_000, 2, 3
    net = nn.RNN(I, H, nonlinearity="relu", batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        net.weight_hh_l0.copy_(0.5 * torch.eye(H))
        net.weight_ih_l0.copy_(torch.rand(H, I, dtype=torch.float64) + 0.1)
        net.bias_ih_l0.zero_()
        net.bias_hh_l0.zero_()
    x = torch.rand(2, T, I, dtype=torch.float64) + 0.1
    df = gradlab.input_gradients(net, x)
    logs = df[(df["quantity"] == "log10_grad_norm") & (df["batch_index"] == -1)]
    logs = logs.sort_values("step")
    base = math.log10(torch.linalg.vector_norm(net.weight_ih_l0.sum(0)).item())
    lag = (T - 1 - np.arange(T)).astype(float)
    expect = base + lag * math.log10(0.5)
    assert np.isfinite(logs["value"]).all()
    # error: T rescaled steps of relative round-off ~1e-16 each -> ~1e-12 in log10
    np.testing.assert_allclose(logs["value"].to_numpy(), expect, rtol=0, atol=1e-9)
    assert logs["value"].iloc[0] < -3000
    plain = df[(df["quantity"] == "grad_norm") & (df["batch_index"] == -1)].sort_values("step")
    assert plain["value"].iloc[0] == 0.0  # the plain norm underflows; the log10 column does not


def test_errors_name_the_argument():
    net = nn.LSTM(3, 4, batch_first=True)
    with pytest.raises(ValueError, match="`x` has shape"):
        gradlab.input_gradients(net, torch.randn(5, 3))
    with pytest.raises(ValueError, match="`target_step` is 9"):
        gradlab.input_gradients(net, torch.randn(2, 5, 3), target_step=9)
    with pytest.raises(ValueError, match="`grad_output` has shape"):
        gradlab.input_gradients(net, torch.randn(2, 5, 3), grad_output=torch.ones(2, 7))
    with pytest.raises(ValueError, match="`x` contains NaN"):
        gradlab.input_gradients(net, torch.full((1, 4, 3), float("nan")))
