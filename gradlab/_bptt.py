"""Kernels of :func:`gradlab.analysis.bptt_by_lag`: BPTT split into one term per time step.

For a loss L at step t* of a layer s_t = F(s_{t-1}, x_t; W), backpropagation through time is

    ∂L/∂W = Σ_{i ≤ t*} δ_iᵀ ∂F(s_{i-1}, x_i; W)/∂W |_immediate,
    δ_{t*} = ∂L/∂s_{t*},   δ_{i-1} = J_iᵀ δ_i   (J_i = ∂s_i/∂s_{i-1}),

where the immediate derivative holds s_{i-1} and x_i fixed (Werbos 1990; Pascanu, Mikolov &
Bengio 2013, eq. 3-5). Every parameter enters F through the pre-activations

    a_ih = W_ih x_i + b_ih,   a_hh = W_hh h_{i-1} + b_hh   (G·H rows each),

so term i is, with γ = ∂L/∂a at step i (upstream δ_i, closed form below):
weight_ih: Σ_b γ_ih ⊗ x_i, weight_hh: Σ_b γ_hh ⊗ h_{i-1}, bias_ih: Σ_b γ_ih, bias_hh: Σ_b γ_hh.
γ_ih = γ_hh except for the GRU candidate rows, where a_hh enters as r ⊙ (W_hn h + b_hn).
Index letters: ``b`` batch, ``t`` step, ``g`` gate rows (G·H), ``i`` input, ``h`` hidden.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _cells
from ._cells import CellParams
from ._flow import _slice, cache_range, time_chunk


def deltas(
    p: CellParams, u: Tensor, states: Tensor, s0: Tensor, delta: Tensor, t_star: int
) -> Tensor:
    """Total gradients δ_i = ∂L/∂s_i for i = 0..t_star (B, t_star + 1, S), raw (not rescaled)."""
    B = delta.shape[0]
    out = delta.new_empty((B, t_star + 1, delta.shape[-1]))
    out[:, t_star] = delta
    v = delta
    c = time_chunk(p, B)
    for b in range(t_star + 1, 1, -c):
        a = max(1, b - c)
        cache = cache_range(p, u, states, s0, a, b)
        for j in range(b - a - 1, -1, -1):
            v = _cells.vjp_from_cache(p, _slice(cache, j), v)
            out[:, a + j - 1] = v
    return out


def preact_grads(p: CellParams, cache: dict, d: Tensor) -> tuple[Tensor, Tensor]:
    """γ_ih, γ_hh = ∂L/∂a_ih, ∂L/∂a_hh (..., G·H) of one step, upstream δ = ∂L/∂s_t (..., S)."""
    kind = p.kind
    if kind in ("rnn_tanh", "rnn_relu"):
        dphi = 1 - cache["h"] ** 2 if kind == "rnn_tanh" else (cache["a"] > 0).to(d.dtype)
        g = d * dphi
        return g, g
    if kind == "lstm":
        dh, dc = d.chunk(2, dim=-1)
        i, f, g, o = cache["i"], cache["f"], cache["g"], cache["o"]
        c, tc = cache["c_prev"], cache["tanh_c"]
        dc_tot = dc + dh * o * (1 - tc**2)  # ∂L/∂c_t through both paths
        gam = torch.cat(
            [
                dc_tot * g * i * (1 - i),
                dc_tot * c * f * (1 - f),
                dc_tot * i * (1 - g**2),
                dh * tc * o * (1 - o),
            ],
            dim=-1,
        )
        return gam, gam
    r, z, n, hn, h = cache["r"], cache["z"], cache["n"], cache["hn"], cache["h_prev"]
    gn = d * (1 - z) * (1 - n**2)  # on the candidate's pre-activation xn + r ⊙ hn
    gr = gn * hn * r * (1 - r)
    gz = d * (h - n) * z * (1 - z)
    return torch.cat([gr, gz, gn], dim=-1), torch.cat([gr, gz, gn * r], dim=-1)


def terms(
    p: CellParams, u: Tensor, states: Tensor, s0: Tensor, dl: Tensor, *, keep: bool
) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """Per-step parameter gradients from δ (B, n, S) of steps 0..n-1.

    Returns ({param: Frobenius norm per step (n,)}, {param: term per step (n, *shape)} or None).
    Terms are formed one time chunk at a time, so only ``keep=True`` holds all of them.
    """
    B, n, _ = dl.shape
    H = p.hidden_size
    names = ["weight_ih", "weight_hh"]
    names += ["bias_ih"] if p.b_ih is not None else []
    names += ["bias_hh"] if p.b_hh is not None else []
    norms = {k: [] for k in names}
    kept = {k: [] for k in names} if keep else None
    c = time_chunk(p, B, _cells.GATES[p.kind] * H * (p.input_size + H + 2))
    c = max(1, min(c, n))
    for a in range(0, n, c):
        b = min(n, a + c)
        cache = cache_range(p, u, states, s0, a, b)
        g_ih, g_hh = preact_grads(p, cache, dl[:, a:b])  # (B, c, G·H)
        prev = s0.unsqueeze(1) if a == 0 else states[:, a - 1 : a]
        h_prev = torch.cat([prev, states[:, a : b - 1]], dim=1)[..., :H]  # (B, c, H)
        got = {
            "weight_ih": torch.einsum("btg,bti->tgi", g_ih, u[:, a:b]),
            "weight_hh": torch.einsum("btg,bth->tgh", g_hh, h_prev),
        }
        got["bias_ih"] = g_ih.sum(0)
        got["bias_hh"] = g_hh.sum(0)
        for k in names:
            norms[k].append(_scaled_norm(got[k].flatten(1)))
            if keep:
                kept[k].append(got[k])
    out_n = {k: torch.cat(v) for k, v in norms.items()}
    out_t = {k: torch.cat(v) for k, v in kept.items()} if keep else None
    return out_n, out_t


def _scaled_norm(x: Tensor) -> Tensor:
    """‖x_i‖₂ per row of x (n, m). A plain sum of squares underflows to 0 once the entries fall
    below ~1e-154 in float64 (1e-19 in float32), long before the terms themselves do; such
    rows are recomputed as a·‖x_i/a‖ with a = max |x_i| (the others keep the plain value)."""
    plain = torch.linalg.vector_norm(x, dim=-1)  # (n,)
    a = x.abs().amax(dim=-1)  # (n,)
    lost = (plain == 0) & (a > 0)
    if not bool(lost.any()):
        return plain
    safe = torch.where(lost, a, torch.ones_like(a)).unsqueeze(-1)
    scaled = torch.linalg.vector_norm(x / safe, dim=-1) * safe.squeeze(-1)
    return torch.where(lost, scaled, plain)
