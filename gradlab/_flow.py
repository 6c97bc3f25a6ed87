"""Kernels of :mod:`gradlab.analysis`: forward states, log-space gradient flow, Jacobian products.

Index letters (as in :mod:`gradlab._cells`): ``b`` batch, ``t``/``k`` time steps in processing
order, ``s``/``a`` state (S), ``g`` stacked gate rows (G·H), ``n`` sources in a block.

Everything here works in the order the recurrence processes its input (for a reverse direction the
caller has already flipped the input in time) and on the device and dtype of its inputs. Nothing
here builds an autograd graph: the callers run under ``torch.no_grad()``.

The one-step Jacobian is J_t = ∂s_t/∂s_{t-1}; products are P_{t,k} = ∂s_t/∂s_k = J_t J_{t-1} ⋯
J_{k+1} (P_{k,k} = I).
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import _cells
from ._cells import CellParams

# Element budget (float64: 8 bytes each) for one time chunk of per-step intermediates. 2**22
# elements = 32 MiB, so chunked caches stay small even at T = 100,000.
_CHUNK_ELEMS = 2**22


# Element budget of one sub-batch of products in flow_map: 2**20 float64 = 8 MiB, which stays in
# a typical L2/L3 cache between the GEMM that updates it and the Lanczos passes that read it
# (measured: ~9x the memory bandwidth of a 64 MiB batch on the 2-core development machine).
_CACHE_ELEMS = 2**20


def time_chunk(p: CellParams, batch: int, per_step: int | None = None) -> int:
    """Steps per chunk so that ``batch * chunk * per_step`` elements fit the budget."""
    per = per_step if per_step is not None else (_cells.GATES[p.kind] + 4) * p.hidden_size
    return max(1, _CHUNK_ELEMS // max(1, batch * per))


def forward_states(p: CellParams, u: Tensor, s0: Tensor) -> Tensor:
    """States s_0..s_{T-1} (B, T, S) for input u (B, T, I) from s_{-1} = s0 (B, S).

    Like :func:`_cells.unroll` but writes into one preallocated tensor and computes the input
    projection W_ih x + b_ih one time chunk at a time, so the peak memory is the states plus one
    chunk (``unroll`` stacks a list: twice the states, plus the projection of all steps).
    """
    B, T, _ = u.shape
    states = u.new_empty((B, T, p.state_size))
    s = s0
    c = time_chunk(p, B, _cells.GATES[p.kind] * p.hidden_size)
    for a in range(0, T, c):
        xa = _cells.input_preact(p, u[:, a : a + c])  # (B, c, G·H)
        for j in range(xa.shape[1]):
            s = _cells.step_from_preact(p, xa[:, j], s)[0]
            states[:, a + j] = s
    return states


def cache_range(p: CellParams, u: Tensor, states: Tensor, s0: Tensor, a: int, b: int) -> dict:
    """Step intermediates of steps a..b-1 (tensors (B, b-a, ·)), one batched call."""
    prev = s0 if a == 0 else states[:, a - 1]
    cache, _ = _cells.sequence_cache(p, u[:, a:b], states[:, a:b], prev)
    return cache


def cache_at(p: CellParams, u: Tensor, states: Tensor, s0: Tensor, idx: Tensor) -> dict:
    """Step intermediates at the (processing) time indices ``idx`` (n,): tensors (B, n, ·)."""
    s_prev = torch.cat([s0.unsqueeze(1), states[:, :-1]], dim=1)  # (B, T, S)
    xa = _cells.input_preact(p, u[:, idx])  # (B, n, G·H)
    return _cells.step_from_preact(p, xa, s_prev[:, idx])[1]


def _slice(cache: dict, j: int) -> dict:
    return {key: val[:, j] for key, val in cache.items()}


def _safe_normalise(v: Tensor) -> tuple[Tensor, Tensor]:
    """v / ‖v‖ along the last axis and log10 ‖v‖; a zero vector stays zero with log -inf."""
    n = torch.linalg.vector_norm(v, dim=-1)
    v = v / torch.where(n > 0, n, torch.ones_like(n)).unsqueeze(-1)
    return v, torch.log10(n)


def gradient_logs(
    p: CellParams, u: Tensor, states: Tensor, s0: Tensor, delta: Tensor, t_star: int
) -> Tensor:
    """log10 ‖δ_k‖ for k = 0..t_star (rows), for δ_{t*} = ``delta`` (B, S), δ_{k-1} = J_kᵀ δ_k.

    Log-space recursion: carry the unit vector v_k = δ_k / ‖δ_k‖ and ℓ_k = log10 ‖δ_k‖;
    v_{k-1} ∝ J_kᵀ v_k (one VJP, no Jacobian formed), ℓ_{k-1} = ℓ_k + log10 ‖J_kᵀ v_k‖. Nothing
    under- or overflows: each step multiplies a unit vector by one Jacobian.

    Returns (Q, t_star + 1, B): Q = 1 (total) for RNN/GRU, Q = 3 (total, h part, c part) for LSTM.
    """
    lstm = p.kind == "lstm"
    B = delta.shape[0]
    nq = 3 if lstm else 1
    out = delta.new_empty((nq, t_star + 1, B))

    def record(k: int, v: Tensor, ell: Tensor) -> None:
        out[0, k] = ell
        if lstm:
            vh, vc = v.chunk(2, dim=-1)
            out[1, k] = ell + torch.log10(torch.linalg.vector_norm(vh, dim=-1))
            out[2, k] = ell + torch.log10(torch.linalg.vector_norm(vc, dim=-1))

    v, ell = _safe_normalise(delta)
    record(t_star, v, ell)
    c = time_chunk(p, B)
    # caches of steps 1..t_star, in chunks walked backwards in time
    for b in range(t_star + 1, 1, -c):
        a = max(1, b - c)
        cache = cache_range(p, u, states, s0, a, b)
        for j in range(b - a - 1, -1, -1):
            k = a + j  # J_k maps δ_k to δ_{k-1}
            v, dl = _safe_normalise(_cells.vjp_from_cache(p, _slice(cache, j), v))
            ell = ell + dl
            record(k - 1, v, ell)
    return out


# ---------------------------------------------------------------------------------------------
# Products of Jacobians for one sample: the flow map


def _jac_chunk(p: CellParams, u1: Tensor, states1: Tensor, s01: Tensor, a: int, b: int) -> Tensor:
    """J_a..J_{b-1} of sample 0 of the (1, T, ·) inputs: (b-a, S, S)."""
    return _cells.jacobian_from_cache(p, cache_range(p, u1, states1, s01, a, b))[0]


def _right_mul_jt(p: CellParams, X: Tensor, J: Tensor) -> Tensor:
    """X Jᵀ for X (m, S, S) (stacked Pᵀ blocks) and one Jacobian J (S, S): (m, S, S).

    One GEMM (m·S, S) × (S, S). For an LSTM, J = [[A, diag d1], [B, diag d2]] (its c-columns are
    diagonal), so X Jᵀ = X[:, :, :H] [A; B]ᵀ + [X_c d1, X_c d2]: half the flops of a full GEMM.
    """
    m, S, _ = X.shape
    X2 = X.reshape(m * S, S)
    if p.kind != "lstm":
        return (X2 @ J.t()).view(m, S, S)
    H = S // 2
    d = torch.stack([torch.diagonal(J[:H, H:]), torch.diagonal(J[H:, H:])])  # (2, H)
    out = (X2[:, :H] @ J[:, :H].t()).view(m * S, 2, H)  # (m·S, 2H)
    out.addcmul_(X2[:, H:].unsqueeze(1), d)  # + [X_c d1, X_c d2]
    return out.view(m, S, S)


def _lanczos_sigma(X: Tensor, v: Tensor, *, tol: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """Largest singular value of each P = Xᵀ (X: (n, S, S)) by batched Lanczos on A = PᵀP.

    ``v`` (n, S): start vectors (warm: the previous step's top right singular vectors, vectors at
    s_k, a space that does not change as t grows). Lanczos with full re-orthogonalisation
    (classical Gram-Schmidt, twice) builds the tridiagonal T_m; its top eigenpair (θ, y) gives
    σ = √θ. A product leaves the batch once the Ritz residual ‖A z − θ z‖ = β_m |y_m| ≤
    ``tol`` · θ: θ is then within tol·θ of an eigenvalue of A (Parlett, The Symmetric Eigenvalue
    Problem, 1998, Thm 11.5.1) and never above λ_max (Cauchy interlacing), so σ is a lower bound
    within tol/2 (relative) whenever the eigenvalue found is the top one; the error of a Ritz
    value is in practice ≈ r²/gap, far smaller. Converged products leave the batch (compacted
    when half are done), so the few slow ones (short lags) do not hold up the rest.
    Returns (σ (n,), Ritz vectors (n, S), the next warm start).
    """
    n, S, _ = X.shape
    mmax = max(1, min(max_iter, S))
    sig = v.new_zeros(n)
    out_v = v.clone()
    ids = torch.arange(n, device=v.device)  # original row of each batch row
    Qs = v.new_empty((n, mmax + 1, S))  # Lanczos vectors; only rows ≤ j are ever read
    alpha = v.new_zeros((n, mmax))
    beta = v.new_zeros((n, mmax))
    q, _ = _safe_normalise(v)
    Qs[:, 0] = q
    finished = torch.zeros(n, dtype=torch.bool, device=v.device)
    checks = {2, 4, 6, 8, 11, 14, 18, 22, 27, 33, 40, 50, 60, 80, 100, mmax}
    for j in range(mmax):
        pq = torch.bmm(q.unsqueeze(1), X)  # (P q)ᵀ = qᵀ Pᵀ: (n, 1, S)
        w = torch.bmm(pq, X.transpose(1, 2))  # (Pᵀ P q)ᵀ: (n, 1, S)
        Qj = Qs[:, : j + 1]  # (n, j+1, S)
        c = torch.bmm(w, Qj.transpose(1, 2))  # (n, 1, j+1); c[..., j] = α_j
        alpha[:, j] = c[:, 0, j]
        w = w - torch.bmm(c, Qj)
        w = w - torch.bmm(torch.bmm(w, Qj.transpose(1, 2)), Qj)  # twice is enough
        b = torch.linalg.vector_norm(w, dim=-1)  # (n, 1)
        beta[:, j] = b[:, 0]
        # b = 0: the Krylov space is invariant and T_j exact; q = 0 then adds only zero Ritz
        # values, and a q of pure round-off is still orthonormal to the rest (a valid basis)
        q = (w / b.clamp(min=torch.finfo(w.dtype).tiny).unsqueeze(-1)).squeeze(1)
        Qs[:, j + 1] = q
        m = j + 1
        if m not in checks:
            continue
        Tm = torch.diag_embed(alpha[:, :m])
        if m > 1:
            off = beta[:, : m - 1]
            Tm = Tm + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
        ev, evec = torch.linalg.eigh(Tm)
        theta, y = ev[:, -1], evec[:, :, -1]  # (n,), (n, m)
        done = (beta[:, j] * y[:, -1].abs() <= tol * theta.abs()) | (m == mmax) | finished
        new = done & ~finished
        if bool(new.any()):
            di = ids[new]
            sig[di] = theta[new].clamp(min=0).sqrt()
            out_v[di] = torch.bmm(y[new].unsqueeze(1), Qs[new, :m]).squeeze(1)
            finished = done
            n_left = int((~done).sum())
            if n_left == 0:
                break
            if 2 * n_left <= X.shape[0]:  # compact: the copies stay below twice the batch
                keep = ~done
                Qk = Qs.new_empty((n_left, mmax + 1, S))
                Qk[:, : m + 1] = Qs[keep, : m + 1]  # only the vectors made so far
                ids, X, q, Qs = ids[keep], X[keep], q[keep], Qk
                alpha, beta, finished = alpha[keep], beta[keep], done[keep]
    return sig, out_v


def flow_map_logs(
    p: CellParams,
    u1: Tensor,
    states1: Tensor,
    s01: Tensor,
    *,
    spectral: str | None,
    frobenius: bool,
    block_elems: int = 2**23,
    tol: float = 1e-6,
    max_iter: int = 60,
) -> tuple[Tensor | None, Tensor | None]:
    """log10 ‖P_{t,k}‖ for all t ≥ k of one sample: (T, T) tensors (t rows, k columns, NaN above).

    ``spectral`` is "lanczos" (warm-started Lanczos, see :func:`_lanczos_sigma`), "svd"
    (exact, torch.linalg.matrix_norm(ord=2)) or None (skip). Sources k are processed in blocks:
    for a block [k0, k1) the stacked transposes P_{t,k}ᵀ (n, S, S) are pushed forward in t with
    one GEMM per step, P_{t,k} = J_t P_{t-1,k}, and each is rescaled to unit Frobenius norm with
    its log10 scale carried separately (no under/overflow at any T). Memory: one block of
    ``block_elems`` elements (64 MiB in float64) and a time chunk of Jacobians; never all
    T² products, never all T Jacobians.
    """
    _, T, _ = u1.shape
    S = p.state_size
    dt, dev = u1.dtype, u1.device
    log_f = torch.full((T, T), float("nan"), dtype=dt, device=dev) if frobenius else None
    log_s = torch.full((T, T), float("nan"), dtype=dt, device=dev) if spectral else None
    K = max(1, min(T, block_elems // (S * S)))
    cj = max(1, min(T, _CHUNK_ELEMS // (S * S)))
    # CPU: sub-batches that stay in cache; GPU: the whole block (fewer, larger kernels)
    sub = max(1, _CACHE_ELEMS // (S * S)) if dev.type == "cpu" else K
    tol = max(tol, 64 * torch.finfo(dt).eps)  # float32: the residual floor is ~eps·√S·θ
    gen = torch.Generator().manual_seed(0)
    v0 = torch.randn(S, generator=gen, dtype=torch.float64).to(device=dev, dtype=dt)
    v0 = v0 / torch.linalg.vector_norm(v0)
    eye = torch.eye(S, dtype=dt, device=dev)
    for k0 in range(0, T, K):
        k1 = min(T, k0 + K)
        nk = k1 - k0
        X = eye.expand(nk, S, S).clone()  # X[n] = P_{t, k0+n}ᵀ
        ell = torch.zeros(nk, dtype=dt, device=dev)  # log10 scale of each product
        v = v0.expand(nk, S).clone()  # warm starts
        jc, ja = None, -1
        for t in range(k0, T):
            m = min(t - k0, nk) if t > k0 else 0  # sources k < t get J_t
            if m:
                if t >= ja + (0 if jc is None else jc.shape[0]):
                    ja = t
                    jc = _jac_chunk(p, u1, states1, s01, t, min(T, t + cj))
                J = jc[t - ja]
            n = min(t - k0 + 1, nk)  # sources k ≤ t are recorded
            i1 = t - k0 - 1  # row of the lag-1 product: start from its neighbour's lag-1
            if spectral == "lanczos" and 1 <= i1 < n:  # vector of step t-1 (its own: lag 0)
                v[i1] = v[i1 - 1]
            # sub-batches small enough to stay in cache between the GEMM and the Lanczos passes
            for a in range(0, n, sub):
                b = min(n, a + sub)
                if a < m:
                    X[a : min(b, m)] = _right_mul_jt(p, X[a : min(b, m)], J)
                Xs = X[a:b]
                f = torch.linalg.vector_norm(Xs, dim=(1, 2))  # (b-a,)
                Xs.div_(torch.where(f > 0, f, torch.ones_like(f)).view(-1, 1, 1))
                ell[a:b] += torch.log10(f)
                if spectral == "svd":
                    sig = torch.linalg.matrix_norm(Xs, ord=2)
                elif spectral == "lanczos":
                    # a small fixed random part keeps every direction in the Krylov space
                    sig, v[a:b] = _lanczos_sigma(Xs, v[a:b] + 1e-3 * v0, tol=tol, max_iter=max_iter)
                if spectral:
                    log_s[t, k0 + a : k0 + b] = ell[a:b] + torch.log10(sig)
            if frobenius:
                log_f[t, k0 : k0 + n] = ell[:n]
    return log_f, log_s


# ---------------------------------------------------------------------------------------------
# Products at chosen end steps, for all samples: singular values by lag


def product_spectra(
    p: CellParams, u: Tensor, states: Tensor, s0: Tensor, steps: list[int], lags: list[int]
) -> dict[int, Tensor]:
    """log10 singular values of P_{t, t-L} for each lag L in ``lags``, all samples, all ``steps``.

    P_{t,t-L} = J_t J_{t-1} ⋯ J_{t-L+1} is built right to left from lag 1 up, batched over
    (B, steps), rescaled to unit Frobenius norm after every factor with the log10 scale carried
    (float64 products of any length neither under- nor overflow); the singular values of the
    rescaled product come from ``torch.linalg.svdvals``. Returns {L: (B, len(steps), S)},
    descending. Singular values below ~eps·σ_max of a product are at round-off level.
    """
    st = torch.as_tensor(steps, device=u.device)
    want = set(lags)
    out: dict[int, Tensor] = {}
    M = None
    ell = None
    for L in range(1, max(lags) + 1):
        # steps with t < L - 1 have no lag-L product: clamped here, dropped by the caller
        cache = cache_at(p, u, states, s0, (st - (L - 1)).clamp(min=0))
        J = _cells.jacobian_from_cache(p, cache)  # (B, n, S, S)
        if M is None:
            M = J
            ell = torch.zeros(M.shape[:2], dtype=u.dtype, device=u.device)
        else:
            M = torch.matmul(M, J)
        f = torch.linalg.vector_norm(M, dim=(-2, -1))
        M = M / torch.where(f > 0, f, torch.ones_like(f))[..., None, None]
        ell = ell + torch.log10(f)
        if L in want:
            out[L] = ell.unsqueeze(-1) + torch.log10(torch.linalg.svdvals(M))
    return out
