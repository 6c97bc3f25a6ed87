"""Matrix-free largest singular values for batches of Jacobians.

Golub–Kahan–Lanczos bidiagonalisation (Golub & Kahan 1965; Golub & Van Loan, *Matrix
Computations*, §10.4), batched over N independent operators A_n (S×S) given only through
products A v and Aᵀ u. After k steps A V_k = U_k B_k with B_k upper bidiagonal (α on the
diagonal, β above), and σ_max(B_k) increases monotonically to σ_max(A); Krylov methods converge
much faster than the power method when the top singular values are close.

Without reorthogonalisation the Lanczos vectors lose orthogonality once a Ritz value converges,
which creates spurious copies of converged values but does not move the largest one (Paige 1976;
Golub & Van Loan §10.3.5): for σ_max alone the three-term recurrences suffice, and each step
costs one A v and one Aᵀ u. Operators that have converged leave the active set, so the cost
follows the slowest few, not the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Ops = tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]


def top_singular_value(
    make_ops: Callable[[Tensor | None], Ops],
    like: Tensor,
    *,
    rtol: float = 1e-5,
    max_iter: int = 128,
    check_every: int = 4,
    seed: int = 0,
) -> Tensor:
    """σ_max of N operators, each S×S.

    ``make_ops(idx)`` returns ``(matvec, rmatvec)`` restricted to the operators ``idx`` (a long
    tensor of row indices, or None for all): ``matvec(v)`` = A v and ``rmatvec(u)`` = Aᵀ u for
    v, u (len(idx), S). ``like`` (N, S) fixes shape, dtype and device.

    Stopping rule: the Ritz triplet (σ̃, U_k x, V_k y) of B_k has residual
    ‖Aᵀ U_k x − σ̃ V_k y‖ = |β_k (B_k y)_k| / σ̃ = |β_k α_k y_k| / σ̃, and some singular value of A
    lies within that residual of σ̃ (Golub & Van Loan §8.6.1). An operator stops once the
    residual is ≤ ``rtol``·σ̃, or after ``min(S, max_iter)`` steps. Returns (N,).
    """
    N, S = like.shape
    k_max = min(S, max_iter)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(N, S, generator=gen, dtype=torch.float64).to(like.device, like.dtype)
    v = v / torch.linalg.vector_norm(v, dim=-1, keepdim=True)
    tiny = torch.finfo(like.dtype).tiny
    out = like.new_zeros(N)
    idx = torch.arange(N, device=like.device)
    matvec, rmatvec = make_ops(None)
    u_prev = None
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    for j in range(k_max):
        u = matvec(v)
        if u_prev is not None:
            u = u - betas[-1].unsqueeze(-1) * u_prev
        a = torch.linalg.vector_norm(u, dim=-1)
        alphas.append(a)
        u = u / a.clamp_min(tiny).unsqueeze(-1)
        w = rmatvec(u) - a.unsqueeze(-1) * v
        b = torch.linalg.vector_norm(w, dim=-1)
        last = j + 1 == k_max
        k = j + 1
        # checks cost a batched k×k eigh: every `check_every` steps up to 32, then every 8
        if last or (k >= 2 * check_every and k % (check_every if k <= 32 else 8) == 0):
            est, y_last = _bidiag_top(alphas, betas)
            out[idx] = est
            if last:
                break
            resid = (b * a * y_last).abs()
            keep = resid > rtol * est * est  # residual/σ̃ > rtol·σ̃
            if not bool(keep.all()):
                if not bool(keep.any()):
                    break
                sel = keep.nonzero().squeeze(-1)
                idx, u, w, b, v = idx[sel], u[sel], w[sel], b[sel], v[sel]
                alphas = [t[sel] for t in alphas]
                betas = [t[sel] for t in betas]
                matvec, rmatvec = make_ops(idx)
        betas.append(b)
        u_prev = u
        v = w / b.clamp_min(tiny).unsqueeze(-1)
    return out


def _bidiag_top(alphas: list[Tensor], betas: list[Tensor]) -> tuple[Tensor, Tensor]:
    """σ_max of the k×k upper bidiagonal B_k and the last entry of its right singular vector,
    via the top eigenpair of B_kᵀB_k."""
    k = len(alphas)
    Bk = torch.diag_embed(torch.stack(alphas, -1))  # (N, k, k)
    if k > 1:
        Bk = Bk + torch.diag_embed(torch.stack(betas[: k - 1], -1), offset=1)
    ev, vec = torch.linalg.eigh(Bk.transpose(-1, -2) @ Bk)
    return ev[..., -1].clamp_min(0).sqrt(), vec[..., -1, -1]


def cell_spectral_norms(p, cache: dict[str, Tensor], *, rtol: float = 1e-5) -> Tensor:
    """σ_max(∂s_t/∂s_{t-1}) for every (…) entry of a cell cache, matrix-free (see module doc).

    ``p`` is a :class:`gradlab._cells.CellParams`; ``cache`` tensors have leading shape (…).
    """
    from . import _cells

    lead = next(iter(cache.values())).shape[:-1]
    flat = {k: v.reshape(-1, v.shape[-1]) for k, v in cache.items()}
    N = next(iter(flat.values())).shape[0]
    S = p.state_size

    def make_ops(idx):
        c = flat if idx is None else {k: v[idx] for k, v in flat.items()}
        return (lambda v: _cells.jvp_from_cache(p, c, v),
                lambda u: _cells.vjp_from_cache(p, c, u))

    like = next(iter(flat.values())).new_empty(N, S)
    return top_singular_value(make_ops, like, rtol=rtol).reshape(lead)
