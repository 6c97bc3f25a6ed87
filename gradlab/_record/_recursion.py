"""Route "recursion": the total state gradient of a fused layer by the BPTT recursion, run
right after the layer's fused backward (cuDNN, oneDNN) from the direct gradients that the rest
of the model sent to its outputs,

    δs_{T} = direct_T (+ ∂L/∂h_n, ∂L/∂c_n),   δs_{t-1} = direct_{t-1} + J_tᵀ δs_t,

with the closed-form vector–Jacobian product of :mod:`gradlab._cells` (never a Jacobian), on
gate values recomputed from the h sequence that the kernel returned. δs is the state-space
gradient: (∂L/∂h_t, ∂L/∂c_t) for LSTM, c_t with h_t held fixed. The fused call itself is the
module's own, unchanged, so outputs and parameter gradients are bit for bit those of the
unrecorded model.

Variable-length batches (packed input) run the same recursion on the padded batch in each
sample's processing order: the direct gradient is zero on padding, so δ stays zero until a
sample's own last step len_b - 1, where ∂L/∂h_n (and ∂L/∂c_n) of that sample enters.

``lean=True`` recomputes the step caches ``CHUNK`` steps at a time, latest first, so the
recording holds O(B·CHUNK·G·H) besides the (B, T) norms; otherwise the whole cache of a layer
is recomputed at once (faster, B·T·G·H more memory during the recursion).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _cells
from ._layer import Site
from ._stats import ChunkedCache, layer_cache

CHUNK = 32


def state_gradients(site: Site, d: int, xi: Tensor, hs: Tensor, h0: Tensor, c0: Tensor | None,
                    direct: Tensor | None, hn_g: Tensor | None, cn_g: Tensor | None,
                    lean: bool) -> tuple[Tensor, Tensor | None]:
    """‖δh_t‖ and (LSTM) ‖δc_t‖ of direction d, (B, T) each, processing order.

    xi (B, T, I), hs (B, T, H) and direct (B, T, H) are in processing order (zero on padding);
    h0/c0/hn_g/cn_g are (B, H).
    """
    p = site.params[d].detach()
    B, T, H = hs.shape
    kind = p.kind
    if kind == "lstm":
        c0 = torch.zeros_like(h0) if c0 is None else c0
        cache = ChunkedCache(p, xi, hs, h0, c0, chunk=CHUNK) if lean else \
            layer_cache(p, xi, hs, h0, c0)
    elif kind in ("rnn_tanh", "rnn_relu"):  # φ' from the output alone: 1 - h², or [h > 0]
        cache = {"h": hs, "a": hs}
    else:
        cache = ChunkedCache(p, xi, hs, h0, chunk=CHUNK) if lean else \
            layer_cache(p, xi, hs, h0, None)
    # where ∂L/∂h_n enters: the last step of each sample (T - 1 without lengths)
    last = None if site.lengths is None else (site.lengths.to(hs.device) - 1)
    dh_norm = hs.new_empty(B, T, dtype=_norm_dtype(hs))
    dc_norm = hs.new_empty(B, T, dtype=_norm_dtype(hs)) if kind == "lstm" else None
    uh = hs.new_zeros(B, H)
    uc = hs.new_zeros(B, H) if kind == "lstm" else None
    for t in range(T - 1, -1, -1):
        if direct is not None:
            uh = uh + direct[:, t]
        if hn_g is not None or cn_g is not None:
            sel = None if last is None else (last == t).unsqueeze(1)  # (B, 1)
            if last is None and t == T - 1 or sel is not None and bool(sel.any()):
                if hn_g is not None:
                    uh = uh + (hn_g if sel is None else hn_g * sel)
                if cn_g is not None:
                    uc = uc + (cn_g if sel is None else cn_g * sel)
        dh_norm[:, t] = torch.linalg.vector_norm(uh, dim=-1, dtype=dh_norm.dtype)
        if uc is not None:
            dc_norm[:, t] = torch.linalg.vector_norm(uc, dim=-1, dtype=dc_norm.dtype)
        if t == 0:
            break
        step = cache.at(t) if isinstance(cache, ChunkedCache) else \
            {k: v[:, t] for k, v in cache.items()}
        if kind == "lstm":
            uh, uc = _lstm_vjp(p, step, uh, uc)
        else:
            uh = _cells.vjp_from_cache(p, step, uh)
    return dh_norm, dc_norm


def _norm_dtype(t: Tensor) -> torch.dtype:
    # norms accumulate in float64: a float32 sum of squares overflows at ‖g‖ ≈ 1.8e19, long
    # before the gradient itself does (3.4e38)
    return torch.float64


def _lstm_vjp(p, c: dict[str, Tensor], uh: Tensor, uc: Tensor) -> tuple[Tensor, Tensor]:
    """(δh_{t-1}, δc_{t-1}) from (δh_t, δc_t): the LSTM vjp of :func:`_cells.vjp_from_cache`
    with the state split in two tensors (no concatenation per step)."""
    i, f, g, o, cp, tc = c["i"], c["f"], c["g"], c["o"], c["c_prev"], c["tanh_c"]
    uc_tot = torch.addcmul(uc, uh, o * (1 - tc * tc))  # gradient on c_t
    ga = torch.cat([uc_tot * (g * i * (1 - i)), uc_tot * (cp * f * (1 - f)),
                    uc_tot * (i * (1 - g * g)), uh * (tc * o * (1 - o))], dim=-1)  # (B, 4H)
    return torch.matmul(ga, p.w_hh), uc_tot * f
