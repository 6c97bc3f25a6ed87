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
    # where ∂L/∂h_n enters: each sample's last step (T - 1 without lengths)
    if site.lengths is None:
        enter = {T - 1: None}
    else:
        last = (site.lengths.to(hs.device) - 1)
        enter = {int(t): (last == t).unsqueeze(1).to(hs.dtype) for t in last.unique().tolist()}
    if kind == "lstm":
        c0 = torch.zeros_like(h0) if c0 is None else c0
        factors = _LSTMFactors(p, xi, hs, h0, c0, lean)
        return _lstm_recursion(p, factors, direct, hn_g, cn_g, enter, B, T, H, hs)
    if kind in ("rnn_tanh", "rnn_relu"):  # φ' from the output alone: 1 - h², or [h > 0]
        cache = {"h": hs, "a": hs}
    else:
        cache = ChunkedCache(p, xi, hs, h0, chunk=CHUNK) if lean else \
            layer_cache(p, xi, hs, h0, None)
    dh = hs.new_empty(T, B, H)
    uh = hs.new_zeros(B, H)
    for t in range(T - 1, -1, -1):
        if direct is not None:
            uh = uh + direct[:, t]
        if t in enter and hn_g is not None:
            uh = uh + (hn_g if enter[t] is None else hn_g * enter[t])
        dh[t] = uh
        if t == 0:
            break
        step = cache.at(t) if isinstance(cache, ChunkedCache) else \
            {k: v[:, t] for k, v in cache.items()}
        uh = _cells.vjp_from_cache(p, step, uh)
    return _norms(dh), None


def _norms(seq: Tensor) -> Tensor:
    """(T, B, H) -> (B, T) norms. They accumulate in float64: a float32 sum of squares
    overflows at ‖g‖ ≈ 1.8e19, long before the gradient itself does (3.4e38)."""
    return torch.linalg.vector_norm(seq, dim=-1, dtype=torch.float64).t()


class _LSTMFactors:
    """The per-step factors of the LSTM vjp, (B, ·) at step t:
    A = o ⊙ (1 - tanh² c_t) (h_t's path into c_t), Fc = [g i(1-i), c_{t-1} f(1-f), i(1-g²)]
    (c_t's gradient into the i, f, g pre-activations), Fo = tanh c_t ⊙ o(1-o), and f.
    Computed for the whole layer at once, or ``CHUNK`` steps at a time (lean)."""

    def __init__(self, p, xi, hs, h0, c0, lean):
        self.lean = lean
        self.src = ChunkedCache(p, xi, hs, h0, c0, chunk=CHUNK) if lean else None
        self.t0 = self.t1 = -1
        if not lean:
            self.f = self._make(layer_cache(p, xi, hs, h0, c0))
            self.t0, self.t1 = 0, hs.shape[1]

    @staticmethod
    def _make(c):
        i, f, g, o, cp, tc = c["i"], c["f"], c["g"], c["o"], c["c_prev"], c["tanh_c"]
        B, T, H = i.shape
        Fc = torch.stack([g * i * (1 - i), cp * f * (1 - f), i * (1 - g * g)], 2)  # (B,T,3,H)
        return {"A": o * (1 - tc * tc), "Fc": Fc, "Fo": tc * o * (1 - o), "f": f}

    def at(self, t):
        if not self.t0 <= t < self.t1:
            src = self.src
            src.at(t)  # loads the chunk ending at t
            self.f = self._make(src.cache)
            self.t0, self.t1 = src.t0, src.t1
        k = t - self.t0
        return self.f["A"][:, k], self.f["Fc"][:, k], self.f["Fo"][:, k], self.f["f"][:, k]


def _lstm_recursion(p, factors, direct, hn_g, cn_g, enter, B, T, H, like):
    """(δh_{t-1}, δc_{t-1}) = J_tᵀ (δh_t, δc_t) + direct, a few fused operations per step."""
    W = p.w_hh  # (4H, H)
    dh = like.new_empty(T, B, H)
    dc = like.new_empty(T, B, H)
    uh = like.new_zeros(B, H) if direct is None else direct[:, T - 1].clone()
    uc = like.new_zeros(B, H)
    zero = like.new_zeros(B, H)
    for t in range(T - 1, -1, -1):
        if t in enter:
            sel = enter[t]
            if hn_g is not None:
                uh = uh + (hn_g if sel is None else hn_g * sel)
            if cn_g is not None:
                uc = uc + (cn_g if sel is None else cn_g * sel)
        dh[t] = uh
        dc[t] = uc
        if t == 0:
            break
        A, Fc, Fo, f = factors.at(t)
        uc_tot = torch.addcmul(uc, uh, A)  # gradient on c_t
        ga = torch.cat([(Fc * uc_tot.unsqueeze(1)).view(B, 3 * H), uh * Fo], 1)  # (B, 4H)
        uh = torch.addmm(zero if direct is None else direct[:, t - 1], ga, W)
        uc = uc_tot * f
    return _norms(dh), _norms(dc)
