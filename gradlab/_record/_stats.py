"""Forward statistics of one layer (gate means and saturation, Jacobian norms, full
Jacobians) from its step cache, and the step caches themselves, recomputed from the h sequence
that the fused kernel returned (tensors (B, T, ·) in processing order)."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _cells, _linalg
from ._layer import Site
from ._recording import SATURATION

# Above this state size the spectral norm is computed matrix-free (Lanczos, see _linalg);
# below it a dense SVD of the formed Jacobian is as cheap.
DENSE_MAX_S = 48


def lstm_cache_from_h(p: _cells.CellParams, x: Tensor, h_seq: Tensor, h0: Tensor, c0: Tensor):
    """Gate cache of every step of an LSTM layer from its h sequence (B, T, H).

    The gates need only h_{t-1} and x_t (one batched matmul); c_t follows element-wise,
    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t.
    """
    h_prev = torch.cat([h0.unsqueeze(1), h_seq[:, :-1]], dim=1)  # (B, T, H)
    a = _cells.input_preact(p, x) + _cells.hidden_preact(p, h_prev)  # (B, T, 4H)
    i, f, g, o = a.chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    ig = i * g
    cs = []
    c = c0
    for t in range(x.shape[1]):
        c = f[:, t] * c + ig[:, t]
        cs.append(c)
    c_seq = torch.stack(cs, dim=1)  # (B, T, H)
    c_prev = torch.cat([c0.unsqueeze(1), c_seq[:, :-1]], dim=1)
    return {"i": i, "f": f, "g": g, "o": o, "c_prev": c_prev, "tanh_c": torch.tanh(c_seq)}


def layer_cache(p: _cells.CellParams, x: Tensor, h_seq: Tensor, h0: Tensor, c0: Tensor | None):
    """Cache of every step (tensors (B, T, ·)) of one layer/direction, processing order."""
    if p.kind == "lstm":
        return lstm_cache_from_h(p, x, h_seq, h0, c0)
    h_prev = torch.cat([h0.unsqueeze(1), h_seq[:, :-1]], dim=1)
    return _cells.step_from_preact(p, _cells.input_preact(p, x), h_prev)[1]


def _slice(cache: dict[str, Tensor], t0: int, t1: int) -> dict[str, Tensor]:
    return {k: v[:, t0:t1] for k, v in cache.items()}


def spectral_norm(J: Tensor) -> Tensor:
    """Largest singular value of each matrix in a batch (..., S, S)."""
    return torch.linalg.matrix_norm(J, ord=2)


def forward_stats(site: Site, d: int, cache: dict[str, Tensor]) -> None:
    """Gate statistics and Jacobian norms of direction d of a layer from its cache."""
    opts, p = site.opts, site.params[d].detach()
    if "gates" in opts.quantities:
        lo, hi = SATURATION
        for gname, gv in _cells.gate_values(p, cache).items():
            site.add(d, "gate_mean", gv.mean(-1), gname)
            if gname in ("cell", "new"):  # tanh gates: saturation at |value| > 0.95·1
                sat = (gv.abs() > hi).to(gv.dtype).mean(-1)
            else:
                sat = ((gv < lo) | (gv > hi)).to(gv.dtype).mean(-1)
            site.add(d, "gate_saturated_frac", sat, gname)
    want_norms = "jac_norm" in opts.quantities
    want_full = opts.jacobians == "full"
    if not (want_norms or want_full):
        return
    any_t = next(iter(cache.values()))
    B, T = any_t.shape[:2]
    S = p.state_size
    # chunk over time so that one chunk of Jacobians stays below ~256 MB
    chunk = max(1, int(2**28 // max(1, B * S * S * any_t.element_size())))
    spec, frob, full = [], [], []
    matrix_free = want_norms and not want_full and S > DENSE_MAX_S
    for t0 in range(0, T, chunk):
        sub = _slice(cache, t0, min(T, t0 + chunk))
        if matrix_free:  # never forms J: Lanczos for σ_max, closed form for ‖J‖_F
            spec.append(_linalg.cell_spectral_norms(p, sub))
            frob.append(_cells.jacobian_frobenius_from_cache(p, sub))
            continue
        J = _cells.jacobian_from_cache(p, sub)
        if want_norms:
            frob.append(torch.linalg.matrix_norm(J, ord="fro"))
            spec.append(spectral_norm(J))
        if want_full:
            full.append(J)
    if want_norms:
        site.add(d, "jac_norm_spectral", torch.cat(spec, 1))
        site.add(d, "jac_norm_frobenius", torch.cat(frob, 1))
    if want_full:
        Jf = torch.cat(full, 1)  # (B, T, S, S) processing order
        from ._layer import to_processing
        Jf, _ = site._user_order(to_processing(Jf, d, site.lengths))
        site.rec.jacobians_full[(site.name, site.call, site.layer, d)] = Jf


def check_full_budget(opts, name, B, T, S, L, D, itemsize):
    if opts.jacobians != "full":
        return
    need = B * T * S * S * itemsize * L * D
    if need > opts.memory_budget:
        raise MemoryError(
            f"record: full Jacobians of module {name!r} (B={B}, T={T}, S={S}, "
            f"{L} layer(s) x {D} direction(s)) need {need / 2**30:.2f} GiB, above "
            f"memory_budget={opts.memory_budget / 2**30:.2f} GiB; raise memory_budget=, "
            f"shorten the sequence, or record jacobians='norms'"
        )


def check_input(opts, x: Tensor, name: str) -> None:
    """NaN/Inf in the input is an error only where it would corrupt gradlab's own numbers
    silently: the Lanczos iteration behind ``jac_norm`` (its stopping rule never sees a finite
    residual). Gradients and gate statistics of a non-finite input are recorded as they are."""
    if "jac_norm" not in opts.quantities and opts.jacobians != "full":
        return
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise FloatingPointError(
            f"record: module {name!r}: the input contains NaN or Inf, and Jacobian norms "
            f"(quantities 'jac_norm' / jacobians=) of a non-finite state are undefined; clean "
            f"the data (torch.nan_to_num) or record without 'jac_norm'"
        )


class ChunkedCache:
    """Step caches of an RNN or GRU layer computed ``chunk`` steps at a time, as the backward recursion
    walks from the last step to the first: memory O(B·chunk·G·H) instead of O(B·T·G·H)."""

    def __init__(self, p, x, h_seq, h0, chunk: int = 32):
        self.p, self.x, self.h_seq, self.h0, self.chunk = p, x, h_seq, h0, chunk
        self.t0 = self.t1 = -1
        self.cache: dict[str, Tensor] = {}

    def at(self, t: int) -> dict[str, Tensor]:
        if not self.t0 <= t < self.t1:
            self.t0, self.t1 = max(0, t + 1 - self.chunk), t + 1
            h_prev = self.h0.unsqueeze(1) if self.t0 == 0 else \
                self.h_seq[:, self.t0 - 1:self.t0]
            h_prev = torch.cat([h_prev, self.h_seq[:, self.t0:self.t1 - 1]], dim=1)
            xa = _cells.input_preact(self.p, self.x[:, self.t0:self.t1])
            self.cache = _cells.step_from_preact(self.p, xa, h_prev)[1]
        return {k: v[:, t - self.t0] for k, v in self.cache.items()}
