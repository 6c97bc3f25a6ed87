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


def _lstm_gates(p, xt: Tensor, hp: Tensor):
    """i, f, g, o (t, B, H) of steps whose inputs are xt (t, B, I) and h_{t-1} hp (t, B, H),
    time-major, one GEMM per weight matrix."""
    t, B, H = hp.shape
    a = torch.nn.functional.linear(xt, p.w_ih, p.b_ih).view(t * B, 4 * H)
    a = a.addmm_(hp.reshape(t * B, H), p.w_hh.t())
    if p.b_hh is not None:
        a += p.b_hh
    a = a.view(t, B, 4, H)
    s = torch.sigmoid(a)
    return s[:, :, 0], s[:, :, 1], torch.tanh(a[:, :, 2]), s[:, :, 3]


class _LSTMFactors:
    """The per-step factors of the LSTM vjp, time-major (·, B, ·) so that a step's slice is
    contiguous: A = o ⊙ (1 - tanh² c_t) (h_t's path into c_t), Fc = [g i(1-i), c_{t-1} f(1-f),
    i(1-g²)] (c_t's gradient onto the i, f, g pre-activations), Fo = tanh c_t ⊙ o(1-o), and f.

    The gates are recomputed from x_t and h_{t-1} (both known), c_t by its element-wise recurrence
    c_t = f ⊙ c_{t-1} + i ⊙ g. Whole layer at once, or (lean) c_{t-1} for every step in a first
    sweep (gates ``CHUNK`` steps at a time) and the factors ``CHUNK`` steps at a time, latest
    first."""

    def __init__(self, p, xi, hs, h0, c0, lean):
        self.p = p
        self.xt = xi.transpose(0, 1)  # (T, B, I)
        ht = hs.transpose(0, 1)
        self.hp = torch.cat([h0.unsqueeze(0), ht[:-1]], 0)  # h_{t-1}, (T, B, H)
        T = ht.shape[0]
        self.chunk = CHUNK if lean else T
        self.cp = torch.empty_like(self.hp)  # c_{t-1}, (T, B, H)
        c = c0
        for t0 in range(0, T, self.chunk):  # the c recurrence needs one forward sweep
            t1 = min(T, t0 + self.chunk)
            i, f, g, o = _lstm_gates(p, self.xt[t0:t1], self.hp[t0:t1])
            ig = i * g
            for k in range(t1 - t0):
                self.cp[t0 + k] = c
                c = torch.addcmul(ig[k], f[k], c)
            if not lean:
                self.f = self._make(i, f, g, o, self.cp)
        self.t0, self.t1 = (0, T) if not lean else (-1, -1)

    @staticmethod
    def _make(i, f, g, o, cp):
        tc = torch.tanh(torch.addcmul(i * g, f, cp))
        Fc = torch.stack([g * i * (1 - i), cp * f * (1 - f), i * (1 - g * g)], 2)  # (t,B,3,H)
        return {"A": o * (1 - tc * tc), "Fc": Fc, "Fo": tc * o * (1 - o), "f": f.contiguous()}

    def at(self, t):
        if not self.t0 <= t < self.t1:
            self.t0, self.t1 = max(0, t + 1 - self.chunk), t + 1
            sl = slice(self.t0, self.t1)
            i, f, g, o = _lstm_gates(self.p, self.xt[sl], self.hp[sl])
            self.f = self._make(i, f, g, o, self.cp[sl])
        k = t - self.t0
        return self.f["A"][k], self.f["Fc"][k], self.f["Fo"][k], self.f["f"][k]


def _lstm_recursion(p, factors, direct, hn_g, cn_g, enter, B, T, H, like):
    """(δh_{t-1}, δc_{t-1}) = J_tᵀ (δh_t, δc_t) + direct, a few fused operations per step."""
    W = p.w_hh  # (4H, H)
    dt = None if direct is None else direct.transpose(0, 1).contiguous()  # (T, B, H)
    dh, dc = [None] * T, [None] * T
    uh = like.new_zeros(B, H) if dt is None else dt[T - 1]
    uc = like.new_zeros(B, H)
    zero = like.new_zeros(B, H)
    for t in range(T - 1, -1, -1):
        if t in enter:
            sel = enter[t]
            if hn_g is not None:
                uh = uh + (hn_g if sel is None else hn_g * sel)
            if cn_g is not None:
                uc = uc + (cn_g if sel is None else cn_g * sel)
        dh[t], dc[t] = uh, uc
        if t == 0:
            break
        A, Fc, Fo, f = factors.at(t)
        uc_tot = torch.addcmul(uc, uh, A)  # gradient on c_t
        ga = torch.cat([(Fc * uc_tot.unsqueeze(1)).view(B, 3 * H), uh * Fo], 1)  # (B, 4H)
        uh = torch.addmm(zero if dt is None else dt[t - 1], ga, W)
        uc = uc_tot * f
    return _norms(torch.stack(dh)), _norms(torch.stack(dc))
