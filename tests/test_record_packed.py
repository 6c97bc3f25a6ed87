"""gradlab.record on variable-length batches (PackedSequence) against a per-sample reference:
each sample run alone, unpadded, through nn.RNNCell/LSTMCell/GRUCell twins (tests/_reference).

The loss is a sum over samples, so sample b's per-step gradients depend on sample b alone and
the reference of each sample is exact. Tolerance: float64, a few ulp per step over T ≤ 9 steps
(relative 1e-10, as in test_record.py).
"""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import gradlab
from tests._reference import reference_run
from tests.test_record import CLS, make


def loss_of(out, state):
    """Sum over samples of (‖out‖² + Σh_n³ + ½‖c_n‖²), for a padded output or packed data."""
    o = out.data if isinstance(out, nn.utils.rnn.PackedSequence) else out
    h = state[0] if isinstance(state, tuple) else state
    loss = (o**2).sum() + (h**3).sum()
    if isinstance(state, tuple):
        loss = loss + 0.5 * (state[1] ** 2).sum()
    return loss


def per_sample_reference(m, x, lengths, hx):
    """{(layer, d): {"h": [ (len_b,) norms per sample ], "c": ...}} from each sample alone."""
    ref = {}
    for b, n in enumerate(lengths):
        xb = x[b:b + 1, :n] if m.batch_first else x[:n, b:b + 1]
        hb = None
        if hx is not None:
            hb = tuple(t[:, b:b + 1] for t in hx) if isinstance(hx, tuple) else hx[:, b:b + 1]
        m.zero_grad()
        _, _, g = reference_run(m, xb, loss_of, hx=hb)
        for key, v in g.items():
            for q, t in v.items():
                ref.setdefault(key, {}).setdefault(q, []).append(
                    torch.linalg.vector_norm(t[0], dim=-1).numpy())
    return ref


def check_packed(kind, L, bi, lengths, enforce_sorted, with_h0, route="auto", seed=0):
    m = make(kind, I=3, H=4, L=L, bi=bi, bf=True, seed=seed)
    B, T = len(lengths), max(lengths)
    x = torch.randn(B, T, 3, dtype=torch.float64)
    D = 2 if bi else 1
    hx = None
    if with_h0:
        h0 = torch.randn(L * D, B, 4, dtype=torch.float64)
        hx = (h0, torch.randn_like(h0)) if kind == "lstm" else h0
    packed = pack_padded_sequence(x, torch.tensor(lengths), batch_first=True,
                                  enforce_sorted=enforce_sorted)
    # the plain run, for bit-for-bit outputs and gradients
    out0, st0 = m(packed, hx)
    g0 = torch.autograd.grad(loss_of(out0, st0), list(m.parameters()))
    with gradlab.record(m, per_sample=True, route=route,
                        quantities=("grad_norm", "grad_norm_c", "gates")) as rec:
        out1, st1 = m(packed, hx)
        g1 = torch.autograd.grad(loss_of(out1, st1), list(m.parameters()))
    assert isinstance(out1, nn.utils.rnn.PackedSequence)
    assert torch.equal(out1.data, out0.data)
    for a, b in zip(st1 if kind == "lstm" else [st1], st0 if kind == "lstm" else [st0],
                    strict=True):
        assert torch.equal(a, b)
    for a, b in zip(g1, g0, strict=True):
        assert torch.equal(a, b)
    df = rec.frame()
    ref = per_sample_reference(m, x, lengths, hx)
    qs = {"h": "grad_norm", "c": "grad_norm_c"}
    for (layer, d), v in ref.items():
        for q, per in v.items():
            sel = df[(df.quantity == qs[q]) & (df.layer == layer) & (df.direction == d)]
            for b, want in enumerate(per):
                got = sel[sel.batch_index == b].sort_values("step")
                assert got.step.tolist() == list(range(lengths[b]))  # no padded rows
                np.testing.assert_allclose(got.value.to_numpy(), want, rtol=1e-10, atol=1e-14)
            mean = sel[sel.batch_index == -1].sort_values("step")
            counts = [sum(n > t for n in lengths) for t in range(T)]
            assert mean["count"].tolist() == counts
            want_mean = [np.mean([p[t] for p in per if len(p) > t]) for t in range(T)]
            np.testing.assert_allclose(mean.value.to_numpy(), want_mean, rtol=1e-10, atol=1e-14)
    gates = df[df.quantity == "gate_mean"]
    if kind in ("lstm", "gru"):
        for b, n in enumerate(lengths):
            assert gates[gates.batch_index == b].step.max() == n - 1


@pytest.mark.parametrize("kind", list(CLS))
@pytest.mark.parametrize("L,bi", [(1, False), (2, True)])
@pytest.mark.parametrize("enforce_sorted,with_h0", [(True, False), (False, True)])
def test_packed_matches_each_sample_alone(kind, L, bi, enforce_sorted, with_h0):
    lengths = [7, 5, 5, 2, 1] if enforce_sorted else [2, 7, 1, 5, 5]
    check_packed(kind, L, bi, lengths, enforce_sorted, with_h0)


@pytest.mark.parametrize("kind", list(CLS))
@pytest.mark.parametrize("route", ["recursion", "lean"])
def test_packed_every_route(kind, route):
    check_packed(kind, 2, True, [6, 1, 4], False, True, route=route)


@settings(max_examples=15, deadline=None)
@given(kind=st.sampled_from(list(CLS)), L=st.integers(1, 2), bi=st.booleans(),
       lengths=st.lists(st.integers(1, 9), min_size=1, max_size=5),
       enforce_sorted=st.booleans(), with_h0=st.booleans())
def test_property_packed(kind, L, bi, lengths, enforce_sorted, with_h0):
    if enforce_sorted:
        lengths = sorted(lengths, reverse=True)
    check_packed(kind, L, bi, lengths, enforce_sorted, with_h0)


def test_packed_all_equal_lengths_equal_the_padded_recording():
    m = make("lstm", L=2, bi=True)
    x = torch.randn(3, 6, 3, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor([6, 6, 6]), batch_first=True)
    with gradlab.record(m) as rec_p:
        out, st_ = m(packed)
        loss_of(out, st_).backward()
    with gradlab.record(m) as rec_d:
        out, st_ = m(x)
        loss_of(out, st_).backward()
    a, b = rec_p.frame(), rec_d.frame()
    assert a.drop(columns="value").equals(b.drop(columns="value"))
    np.testing.assert_allclose(a.value, b.value, rtol=1e-12)
