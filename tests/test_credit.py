"""credit_map against plain autograd, a closed form at T = 10,000, and credit_reach.

Reference: the model is unrolled step by step with ``nn.RNNCell/LSTMCell/GRUCell`` twins (the
stock module's weights copied), and a zero leaf ε is added to every state where it is passed
on: h_k + ε^h_k feeds the next step, the layer above and the output, so ∂L_t/∂ε^h_k is the total
∂L_t/∂h_k; for an LSTM c_k + ε^c_k feeds only the next step's cell (h_k is computed from c_k
before ε^c_k is added), so ∂L_t/∂ε^c_k is the state-space gradient with h_k held fixed, the
quantity ``gradlab.record`` calls grad_norm_c. One ``autograd.grad`` per loss step t of
L_t = Σ_b ⟨direct_{b,t}, y_{b,t}⟩. An ε not on any path to L_t gets an exactly zero gradient (a
structural zero), which credit_map may leave out (and must: the row counts are checked
separately); a relu net also has genuine exact zeros (dead units), which credit_map lists as 0.

Tolerance: float64; credit_map evaluates the same products in another order with per-step
rescaling by the norm, relative error ~T·eps ≈ 1e-14 for T ≤ 10, so rtol 1e-10 is loose by four
orders of magnitude and still catches any dropped path (which changes a norm by ≥ 1e-3 here).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import gradlab
from gradlab.analysis import credit_reach
from gradlab.train import EncoderDecoder, SequenceModel

F64 = torch.float64
RTOL = 1e-10


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _stock(kind, I, H, **kw):
    cls = {"lstm": nn.LSTM, "gru": nn.GRU}.get(kind, nn.RNN)
    if kind.startswith("rnn_"):
        kw["nonlinearity"] = kind[4:]
    return cls(I, H, dtype=F64, **kw)


def _twin(rnn, layer, d):
    """The nn.*Cell with the weights of (layer, direction) of a stock module."""
    sfx = f"_l{layer}" + ("_reverse" if d else "")
    w = getattr(rnn, "weight_ih" + sfx)
    H = rnn.hidden_size
    if isinstance(rnn, nn.LSTM):
        cell = nn.LSTMCell(w.shape[1], H, dtype=F64)
    elif isinstance(rnn, nn.GRU):
        cell = nn.GRUCell(w.shape[1], H, dtype=F64)
    else:
        cell = nn.RNNCell(w.shape[1], H, nonlinearity=rnn.nonlinearity, dtype=F64)
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, n).copy_(getattr(rnn, n + sfx))
    return cell


def _unroll(rnn, x, init=None):
    """Unroll with ε leaves. x (B, T, I) batch first. init: per layer the initial (h, c) or h.

    Returns the top output (B, T, D·H), eps {(layer, d): (list of ε^h by position, list of ε^c)}
    and per layer the final state as the decoder receives it (h, or (h, c)).
    """
    B, T, _ = x.shape
    D = 2 if rnn.bidirectional else 1
    H = rnn.hidden_size
    lstm = isinstance(rnn, nn.LSTM)
    eps, finals, inp = {}, [], x
    for layer in range(rnn.num_layers):
        outs = []
        for d in range(D):
            cell = _twin(rnn, layer, d)
            eh = [torch.zeros(B, H, dtype=F64, requires_grad=True) for _ in range(T)]
            ec = (
                [torch.zeros(B, H, dtype=F64, requires_grad=True) for _ in range(T)]
                if lstm
                else None
            )
            if init is None:
                h = torch.zeros(B, H, dtype=F64)
                c = torch.zeros(B, H, dtype=F64)
            else:
                h, c = init[layer] if lstm else (init[layer], None)
            hs = [None] * T
            order = range(T - 1, -1, -1) if d else range(T)
            for k in order:
                if lstm:
                    h, c = cell(inp[:, k], (h, c))
                    c = c + ec[k]
                else:
                    h = cell(inp[:, k], h)
                h = h + eh[k]
                hs[k] = h
            eps[(layer, d)] = (eh, ec)
            finals.append((h, c) if lstm else h)
            outs.append(torch.stack(hs, 1))
        inp = torch.cat(outs, -1)
    return inp, eps, finals


def _grads(loss, eps):
    """{(layer, d, q, k): (B,) norms}."""
    keys, leaves = [], []
    for (layer, d), (eh, ec) in eps.items():
        for q, lst in (("grad_norm", eh), ("grad_norm_c", ec)):
            if lst is None:
                continue
            for k, e in enumerate(lst):
                keys.append((layer, d, q, k))
                leaves.append(e)
    gs = torch.autograd.grad(loss, leaves, retain_graph=True, allow_unused=True)
    return {
        key: torch.linalg.vector_norm(g, dim=-1)
        for key, g in zip(keys, gs, strict=True)
        if g is not None
    }


def _reference(model, x, direct, module):
    """Rows (module, layer, direction, loss_step, step, batch_index, quantity, value)."""
    rows = []
    if isinstance(model, EncoderDecoder):
        src, tgt = x
        _, eps_e, finals = _unroll(model.encoder, src)
        out, eps_d, _ = _unroll(model.decoder, tgt, init=finals)
        y = model.head(out)
        parts = [("decoder", eps_d), ("encoder", eps_e)]
    else:
        rnn = model.rnn if isinstance(model, SequenceModel) else model
        out, eps, _ = _unroll(rnn, x)
        y = model.head(out) if isinstance(model, SequenceModel) else out
        parts = [(module, eps)]
    for t in range(y.shape[1]):
        loss = (direct[:, t] * y[:, t]).sum()
        for name, eps in parts:
            for (layer, d, q, k), nrm in _grads(loss, eps).items():
                for b, v in enumerate(nrm.tolist()):
                    rows.append((name, layer, d, t, k, b, q, v))
                rows.append((name, layer, d, t, k, -1, q, nrm.mean().item()))
    cols = ["module", "layer", "direction", "loss_step", "step", "batch_index", "quantity", "value"]
    return pd.DataFrame(rows, columns=cols)


def _compare(ours, ref):
    """Every row of ours matches the reference within RTOL, and every reference (t, k) that ours
    leaves out is exactly zero (structural; test_structural_zeros_and_lags counts the rows)."""
    key = ["module", "layer", "direction", "loss_step", "step", "batch_index", "quantity"]
    mine = ours[ours["quantity"].isin(["grad_norm", "grad_norm_c"])]
    m = mine.merge(ref, on=key, how="outer", suffixes=("_ours", "_ref"), indicator=True)
    assert (m["_merge"] != "left_only").all(), m[m["_merge"] == "left_only"].head()
    left_out = m[m["_merge"] == "right_only"]
    assert (left_out["value_ref"] == 0).all(), left_out[left_out["value_ref"] != 0].head()
    both = m[m["_merge"] == "both"]
    assert len(both) > len(left_out)
    np.testing.assert_allclose(both["value_ours"], both["value_ref"], rtol=RTOL, atol=0)
    logs = ours[ours["quantity"].str.startswith("log10_")]
    lin = ours[~ours["quantity"].str.startswith("log10_")]
    np.testing.assert_allclose(
        10.0 ** logs["value"].to_numpy(), lin["value"].to_numpy(), rtol=1e-12
    )


CELLS = ["rnn_tanh", "rnn_relu", "lstm", "gru"]


@pytest.mark.parametrize("kind", CELLS)
@pytest.mark.parametrize("num_layers,bidirectional", [(1, False), (2, False), (2, True)])
def test_stock_against_autograd(kind, num_layers, bidirectional):
    B, T, I, H = 3, 6, 2, 4
    m = _stock(kind, I, H, num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
    x = torch.randn(B, T, I, dtype=F64)
    D = 2 if bidirectional else 1
    direct = torch.randn(B, T, D * H, dtype=F64)
    ours = gradlab.credit_map(m, x, direct, per_sample=True)
    _compare(ours, _reference(m, x, direct, type(m).__name__))
    want = {"grad_norm", "log10_grad_norm"}
    if kind == "lstm":
        want |= {"grad_norm_c", "log10_grad_norm_c"}
    assert set(ours["quantity"]) == want


def test_structural_zeros_and_lags():
    m = _stock("gru", 2, 3, num_layers=2, bidirectional=True, batch_first=True)
    T = 5
    ours = gradlab.credit_map(m, torch.randn(2, T, 2, dtype=F64), torch.randn(2, T, 6, dtype=F64))
    top = ours[ours["layer"] == 1]
    fwd, rev = top[top["direction"] == 0], top[top["direction"] == 1]
    assert (fwd["step"] <= fwd["loss_step"]).all() and (rev["step"] >= rev["loss_step"]).all()
    assert (fwd["lag"] == fwd["loss_step"] - fwd["step"]).all()
    assert (rev["lag"] == rev["step"] - rev["loss_step"]).all()
    n_top = T * (T + 1) // 2  # per direction, quantity, batch_index
    assert len(fwd) == len(rev) == 2 * n_top
    low = ours[ours["layer"] == 0]
    assert len(low) == 2 * 2 * T * T  # both directions see every (t, k)
    assert set(ours["batch_index"]) == {-1}
    # LSTM, state-space c-gradient (h_k held fixed): zero at lag 0 of a one-sided layer and at
    # the last step a direction processes; below a bidirectional layer only the latter
    lstm = _stock("lstm", 2, 3, num_layers=2, bidirectional=True, batch_first=True)
    cm = gradlab.credit_map(lstm, torch.randn(2, T, 2, dtype=F64), torch.randn(2, T, 6, dtype=F64))
    c = cm[cm["quantity"] == "grad_norm_c"]
    top, low = c[c["layer"] == 1], c[c["layer"] == 0]
    assert len(top) == 2 * T * (T - 1) // 2 and (top["lag"] > 0).all()
    assert len(low) == 2 * T * (T - 1)
    assert not ((low["direction"] == 0) & (low["step"] == T - 1)).any()
    assert not ((low["direction"] == 1) & (low["step"] == 0)).any()


def test_time_major_and_gradlab_model_and_loss_steps():
    B, T, I, H = 2, 5, 3, 4
    m = _stock("lstm", I, H, batch_first=False)
    x = torch.randn(T, B, I, dtype=F64)
    direct = torch.randn(T, B, H, dtype=F64)
    ours = gradlab.credit_map(m, x, direct, per_sample=True)
    ref = _reference(m, x.transpose(0, 1), direct.transpose(0, 1), "LSTM")
    _compare(ours, ref)
    # a gradlab.models twin gives the same table
    g = gradlab.models.LSTM(I, H, batch_first=False, dtype=F64)
    g.load_state_dict(m.state_dict())
    twin = gradlab.credit_map(g, x, direct, per_sample=True)
    np.testing.assert_allclose(twin["value"], ours["value"], rtol=RTOL)
    # loss_steps picks rows of the full table
    sub = gradlab.credit_map(m, x, direct, loss_steps=[-1, 1, 1])
    assert sorted(set(sub["loss_step"])) == [1, T - 1]
    full = ours[ours["loss_step"].isin([1, T - 1]) & (ours["batch_index"] == -1)]
    np.testing.assert_allclose(sub["value"].to_numpy(), full["value"].to_numpy(), rtol=RTOL)


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm"])
def test_sequence_model_head(kind):
    B, T = 3, 6
    model = SequenceModel(kind, 2, 4, 3, num_layers=2, readout="all", dtype=F64)
    x = torch.randn(B, T, 2, dtype=F64)
    direct = torch.randn(B, T, 3, dtype=F64)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ours = gradlab.credit_map(model, x, direct, per_sample=True)
    _compare(ours, _reference(model, x, direct, "rnn"))
    assert set(ours["module"]) == {"rnn"}
    for n, p in model.named_parameters():  # model unchanged, no gradients touched
        assert torch.equal(p, before[n]) and p.grad is None


def test_sequence_model_readout_last():
    B, T = 2, 5
    model = SequenceModel("gru", 2, 4, 3, readout="last", dtype=F64)
    x = torch.randn(B, T, 2, dtype=F64)
    g1 = torch.randn(B, 3, dtype=F64)
    ours = gradlab.credit_map(model, x, g1, per_sample=True)
    assert set(ours["loss_step"]) == {T - 1}
    direct = torch.zeros(B, T, 3, dtype=F64)
    direct[:, -1] = g1
    model.readout = "all"
    ref = _reference(model, x, direct, "rnn")
    _compare(ours, ref[ref["loss_step"] == T - 1])


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_encoder_decoder(kind):
    B, S, T = 2, 4, 5
    model = EncoderDecoder(kind, 3, 4, 2, num_layers=2, decoder_input_size=2, dtype=F64)
    src, tgt = torch.randn(B, S, 3, dtype=F64), torch.randn(B, T, 2, dtype=F64)
    direct = torch.randn(B, T, 2, dtype=F64)
    ours = gradlab.credit_map(model, (src, tgt), direct, per_sample=True)
    _compare(ours, _reference(model, (src, tgt), direct, None))
    enc = ours[ours["module"] == "encoder"]
    assert len(enc[(enc["quantity"] == "grad_norm") & (enc["batch_index"] == -1)]) == 2 * S * T
    assert (enc["lag"] == S + enc["loss_step"] - enc["step"]).all()
    dec = ours[ours["module"] == "decoder"]
    assert (dec["step"] <= dec["loss_step"]).all()


def test_loss_step_chunks_give_the_same_table(monkeypatch):
    """Loss steps swept in chunks of 1 (a tiny element budget) give the one-chunk table."""
    import gradlab._credit as credit

    model = EncoderDecoder("lstm", 2, 3, 2, num_layers=2, dtype=F64)
    x = (torch.randn(2, 4, 2, dtype=F64), torch.randn(2, 5, 2, dtype=F64))
    d = torch.randn(2, 5, 2, dtype=F64)
    whole = gradlab.credit_map(model, x, d, per_sample=True)
    monkeypatch.setattr(credit, "_LOSS_ELEMS", 1)
    chunked = gradlab.credit_map(model, x, d, per_sample=True)
    pd.testing.assert_frame_equal(whole, chunked, check_exact=False, rtol=1e-13)


def test_float32_model_default_dtype():
    """A float32 model runs in float32 by default; its norms agree with a float64 run to float32
    round-off over T = 20 steps (relative ~20 · 6e-8 ≈ 1e-6; 1e-4 leaves margin)."""
    m = nn.GRU(3, 5, num_layers=2, batch_first=True)
    x, d = torch.randn(4, 20, 3), torch.randn(4, 20, 5)
    f32 = gradlab.credit_map(m, x, d)
    f64 = gradlab.credit_map(m, x, d, dtype=F64)
    assert f32[["loss_step", "step", "quantity"]].equals(f64[["loss_step", "step", "quantity"]])
    lin = f32["quantity"] == "grad_norm"
    np.testing.assert_allclose(f32["value"][lin], f64["value"][lin], rtol=1e-4)


def test_batch_mean_is_mean_of_sample_norms():
    m = _stock("rnn_tanh", 2, 3, batch_first=True)
    ours = gradlab.credit_map(m, torch.randn(4, 5, 2, dtype=F64), torch.randn(4, 5, 3, dtype=F64),
                              per_sample=True)  # fmt: skip
    g = ours[ours["quantity"] == "grad_norm"]
    per = g[g["batch_index"] >= 0].groupby(["loss_step", "step"])["value"].mean()
    mean = g[g["batch_index"] == -1].set_index(["loss_step", "step"])["value"]
    np.testing.assert_allclose(mean.loc[per.index], per, rtol=1e-12)


def test_closed_form_T10000_no_underflow():
    """relu RNN, W_hh = a·I, W_ih ≥ 0, x ≥ 0, b > 0: every pre-activation is positive, so
    J_j = a·I exactly and ∂L_t/∂h_k = a^{t-k} g_t: log10‖·‖ = (t-k) log10 a + log10‖g_t‖."""
    T, H, a = 10_000, 3, 0.5
    m = nn.RNN(2, H, nonlinearity="relu", batch_first=True, dtype=F64)
    with torch.no_grad():
        m.weight_hh_l0.copy_(a * torch.eye(H, dtype=F64))
        m.weight_ih_l0.uniform_(0.1, 1.0)
        m.bias_ih_l0.fill_(0.1)
        m.bias_hh_l0.fill_(0.1)
    x = torch.rand(1, T, 2, dtype=F64)
    direct = torch.randn(1, T, H, dtype=F64)
    ts = [T - 1, 4321]
    ours = gradlab.credit_map(m, x, direct, loss_steps=ts)
    lg = ours[ours["quantity"] == "log10_grad_norm"]
    for t in ts:
        r = lg[lg["loss_step"] == t].sort_values("step")
        k = r["step"].to_numpy()
        assert np.array_equal(k, np.arange(t + 1))
        want = (t - k) * math.log10(a) + math.log10(torch.linalg.vector_norm(direct[0, t]).item())
        np.testing.assert_allclose(r["value"].to_numpy(), want, rtol=0, atol=1e-9)
    assert lg["value"].min() < -3000  # 0.5^9999 ≈ 10^-3010, far below float64's 10^-308
    lin = ours[(ours["quantity"] == "grad_norm") & (ours["lag"] > 1100)]
    assert (lin["value"] == 0).all()  # the linear column underflows; log10 does not


def _frame(lags_vals, module="rnn", layer=0, direction=0, loss_step=9):
    rows = [(module, layer, direction, loss_step, loss_step - lag, lag, -1, "log10_grad_norm", v)
            for lag, v in lags_vals]  # fmt: skip
    cols = ["module", "layer", "direction", "loss_step", "step", "lag", "batch_index", "quantity",
            "value"]  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def test_credit_reach_constructed():
    # direct term 10^0; lag 1..3 above 1e-2, lag 4 below, lag 5 above again (counts), lag 6 below
    f1 = _frame([(0, 0.0), (1, -1.0), (2, -1.5), (3, -2.0), (4, -3.0), (5, -1.9), (6, -4.0)])
    # a second loss step whose credit reaches its sequence start (censored)
    f2 = _frame([(0, 1.0), (1, 0.5), (2, 0.0)], loss_step=2)
    # a third: reach 0
    f3 = _frame([(0, 1.0), (1, -5.0)], loss_step=1)
    r = credit_reach(pd.concat([f1, f2, f3]), ratio=1e-2)
    per = r[r["loss_step"] >= 0].set_index("loss_step")
    assert per.loc[9, "value"] == 5 and not per.loc[9, "censored"]
    assert per.loc[2, "value"] == 2 and per.loc[2, "censored"]
    assert per.loc[1, "value"] == 0 and not per.loc[1, "censored"]
    med = r[r["loss_step"] == -1]
    assert len(med) == 1 and med["value"].iloc[0] == 2.0
    assert set(r["quantity"]) == {"reach_grad_norm"}
    # a stricter ratio shortens the reach
    r2 = credit_reach(f1, ratio=0.02)
    assert r2[r2["loss_step"] == 9]["value"].iloc[0] == 2


def test_credit_reach_encoder_uses_decoder_direct_term():
    dec = _frame([(0, 0.0), (1, -1.0)], module="decoder", loss_step=1)
    enc = pd.DataFrame({"module": "encoder", "layer": 0, "direction": 0, "loss_step": 1,
                        "step": [2, 1, 0], "lag": [2, 3, 4], "batch_index": -1,
                        "quantity": "log10_grad_norm", "value": [-1.5, -1.8, -2.5]})  # fmt: skip
    r = credit_reach(pd.concat([dec, enc]), ratio=1e-2).set_index(["module", "loss_step"])
    assert r.loc[("encoder", 1), "value"] == 3
    assert r.loc[("decoder", 1), "value"] == 1


def test_credit_reach_on_map():
    m = _stock("lstm", 2, 3, batch_first=True)
    cm = gradlab.credit_map(m, torch.randn(2, 8, 2, dtype=F64), torch.randn(2, 8, 3, dtype=F64))
    r = credit_reach(cm)
    assert set(r["quantity"]) == {"reach_grad_norm", "reach_grad_norm_c"}
    per = r[(r["loss_step"] >= 0) & (r["quantity"] == "reach_grad_norm")]
    assert len(per) == 8 and (per["value"] <= per["loss_step"]).all()


def test_errors():
    m = _stock("gru", 2, 3, batch_first=True)
    x, d = torch.randn(2, 4, 2, dtype=F64), torch.randn(2, 4, 3, dtype=F64)
    with pytest.raises(ValueError, match=r"credit_map: argument `direct` has shape \(2, 4, 5\)"):
        gradlab.credit_map(m, x, torch.randn(2, 4, 5, dtype=F64))
    with pytest.raises(ValueError, match="`model`.*Linear.*SequenceModel"):
        gradlab.credit_map(nn.Linear(2, 3), x, d)
    with pytest.raises(ValueError, match="proj_size=2.*fix: use proj_size=0"):
        gradlab.credit_map(nn.LSTM(2, 3, proj_size=2, batch_first=True), x, d)
    packed = nn.utils.rnn.pack_sequence([torch.randn(4, 2), torch.randn(3, 2)])
    with pytest.raises(ValueError, match="PackedSequence.*unpack_sequence"):
        gradlab.credit_map(m, packed, d)
    with pytest.raises(ValueError, match="`loss_steps`.*T = 4"):
        gradlab.credit_map(m, x, d, loss_steps=[4])
    with pytest.raises(ValueError, match="transformer"):
        gradlab.credit_map(SequenceModel("transformer", 2, 4, 3, readout="all"), x, d)
    with pytest.raises(ValueError, match="`x` has 3 features but GRU"):
        gradlab.credit_map(m, torch.randn(2, 4, 3, dtype=F64), d)
    ed = EncoderDecoder("gru", 2, 3, 2)
    with pytest.raises(ValueError, match=r"`x\[1\] \(tgt\)` has 5 features but decoder"):
        gradlab.credit_map(ed, (torch.randn(2, 4, 2), torch.randn(2, 3, 5)), torch.randn(2, 3, 2))
    with pytest.raises(ValueError, match=r"\(src, tgt\)"):
        gradlab.credit_map(ed, x, d)
    with pytest.raises(ValueError, match="`direct` contains NaN"):
        gradlab.credit_map(m, x, d * float("nan"))
    with pytest.raises(ValueError, match="credit_reach: argument `ratio`"):
        credit_reach(pd.DataFrame(columns=["module", "layer", "direction", "loss_step", "lag",
                                           "batch_index", "quantity", "value"]), ratio=2)  # fmt: skip
