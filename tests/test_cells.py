"""Closed-form Jacobians and VJP/JVP against torch.func.jacrev, steps against torch.nn cells.

Tolerance: float64 closed forms and autograd evaluate the same elementary functions in a
different order; the error is a few ulp times the size of the entries (|W|·|state| = O(10)),
so 1e-10 absolute is loose by five orders of magnitude yet catches any wrong term (O(1e-2)).
"""

import pytest
import torch
from torch import nn

from gradlab import _cells as C

SIZES = [(1, 1, 1), (3, 4, 5), (2, 7, 16)]  # (B, I, H)


def _params(kind, I, H, scale, device, gen):
    G = C.GATES[kind]
    r = lambda *s: scale * torch.randn(*s, generator=gen, dtype=torch.float64).to(device)  # noqa: E731
    return C.CellParams(kind, r(G * H, I), r(G * H, H), r(G * H), r(G * H))


@pytest.mark.parametrize("kind", C.KINDS)
@pytest.mark.parametrize("B,I,H", SIZES)
@pytest.mark.parametrize("regime", ["random", "saturated"])
def test_jacobian_matches_jacrev(kind, B, I, H, regime, device):
    gen = torch.Generator().manual_seed(hash((kind, B, I, H, regime)) % 2**31)
    scale = 0.5 if regime == "random" else 6.0  # large weights drive gates into saturation
    p = _params(kind, I, H, scale, device, gen)
    x = torch.randn(B, I, generator=gen, dtype=torch.float64).to(device)
    s = (3.0 if regime == "saturated" else 1.0) * torch.randn(
        B, p.state_size, generator=gen, dtype=torch.float64).to(device)
    J = C.jacobian(p, x, s)
    ref = torch.func.vmap(torch.func.jacrev(lambda ss, xx: C.step(p, xx, ss)))(s, x)
    assert J.shape == (B, p.state_size, p.state_size)
    torch.testing.assert_close(J, ref, atol=1e-10, rtol=0)
    _, cache = C.step_from_preact(p, C.input_preact(p, x), s)
    u = torch.randn(B, p.state_size, generator=gen, dtype=torch.float64).to(device)
    torch.testing.assert_close(C.vjp_from_cache(p, cache, u), torch.einsum("bs,bst->bt", u, ref),
                               atol=1e-10, rtol=0)
    torch.testing.assert_close(C.jvp_from_cache(p, cache, u), torch.einsum("bst,bt->bs", ref, u),
                               atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", C.KINDS)
@pytest.mark.parametrize("B,I,H", SIZES)
@pytest.mark.parametrize("regime", ["random", "saturated"])
def test_input_vjp_matches_jacrev(kind, B, I, H, regime, device):
    gen = torch.Generator().manual_seed(hash(("input", kind, B, I, H, regime)) % 2**31)
    scale = 0.5 if regime == "random" else 6.0
    p = _params(kind, I, H, scale, device, gen)
    x = torch.randn(B, I, generator=gen, dtype=torch.float64).to(device)
    s = torch.randn(B, p.state_size, generator=gen, dtype=torch.float64).to(device)
    ref = torch.func.vmap(torch.func.jacrev(lambda xx, ss: C.step(p, xx, ss)))(x, s)  # (B, S, I)
    _, cache = C.step_from_preact(p, C.input_preact(p, x), s)
    u = torch.randn(B, p.state_size, generator=gen, dtype=torch.float64).to(device)
    torch.testing.assert_close(C.input_vjp_from_cache(p, cache, u),
                               torch.einsum("bs,bsi->bi", u, ref), atol=1e-10, rtol=0)


def _torch_cell(kind, I, H):
    if kind == "lstm":
        return nn.LSTMCell(I, H)
    if kind == "gru":
        return nn.GRUCell(I, H)
    return nn.RNNCell(I, H, nonlinearity=kind.split("_")[1])


@pytest.mark.parametrize("kind", C.KINDS)
def test_step_matches_torch_cells(kind, device):
    torch.manual_seed(0)
    cell = _torch_cell(kind, 3, 6).double().to(device)
    p = C.CellParams(kind, cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
    x = torch.randn(4, 3, dtype=torch.float64, device=device)
    h = torch.randn(4, 6, dtype=torch.float64, device=device)
    if kind == "lstm":
        c = torch.randn(4, 6, dtype=torch.float64, device=device)
        ref = torch.cat(cell(x, (h, c)), -1)
        got = C.step(p, x, torch.cat([h, c], -1))
    else:
        ref, got = cell(x, h), C.step(p, x, h)
    torch.testing.assert_close(got, ref, atol=1e-13, rtol=0)


def test_bad_kind_and_shapes():
    with pytest.raises(ValueError, match="unknown cell kind 'lstmm'"):
        C.check_kind("lstmm")
    with pytest.raises(ValueError, match="weight_hh has shape"):
        C.CellParams("lstm", torch.zeros(12, 2), torch.zeros(12, 4))
    p = C.CellParams("gru", torch.zeros(9, 2), torch.zeros(9, 3))
    with pytest.raises(ValueError, match=r"input must have shape \(B, T, I=2\)"):
        C.unroll(p, torch.zeros(1, 4, 5))
