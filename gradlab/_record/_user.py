"""A user's own cell wrapped in ``gradlab.Unrolled``: tensor hooks on each step's state read
δs_t; Jacobians ∂s_t/∂s_{t-1} come from ``torch.func.jacrev`` (vmapped over the batch where
the cell allows it)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import models
from ._layer import Options
from ._recording import Recording
from ._stats import check_full_budget, check_input, spectral_norm


def forward(module: models.Unrolled, rec: Recording, opts: Options, name: str, x, state=None):
    call = rec._next_call(name)
    want_grad = opts.want_grad

    def observer(xb, states):
        flat = [torch.cat(list(s), -1) if isinstance(s, tuple) else s for s in states]
        check_input(opts, xb, name)
        B, T = xb.shape[:2]
        S = flat[0].shape[-1]
        H = (states[0][0] if isinstance(states[0], tuple) else states[0]).shape[-1]
        check_full_budget(opts, name, B, T, S, 1, 1, xb.element_size())
        if want_grad:
            _grad_hooks(rec, opts, name, call, states, H)
        if "jac_norm" in opts.quantities or opts.jacobians == "full":
            s_prev = [_zero_like(states[0]) if state is None else state] + states[:-1]
            J = _jacobians(module.cell, xb.detach(), s_prev)  # (B, T, S, S)
            if "jac_norm" in opts.quantities:
                rec._add(name, call, 0, 0, "jac_norm_spectral", spectral_norm(J))
                rec._add(name, call, 0, 0, "jac_norm_frobenius",
                         torch.linalg.matrix_norm(J, ord="fro"))
            if opts.jacobians == "full":
                rec.jacobians_full[(name, call, 0, 0)] = J

    rec.routes.setdefault(name, "unrolled")
    return models._unrolled_user_forward(module, x, state, observer=observer,
                                         name=f"record: module {name!r}")


def _zero_like(s):
    if isinstance(s, tuple):
        return tuple(torch.zeros_like(v) for v in s)
    return torch.zeros_like(s)


def _grad_hooks(rec, opts, name, call, states, H):
    T = len(states)
    parts = [list(s) if isinstance(s, tuple) else [s] for s in states]
    n_parts = len(parts[0])
    grads = [[None] * n_parts for _ in range(T)]
    seen = {"n": 0}
    total = sum(1 for ps in parts for v in ps if v.requires_grad)

    def make(t, j):
        def hook(g):
            grads[t][j] = g.detach()
            seen["n"] += 1
            if seen["n"] == total:
                seen["n"] = 0
                gs = []
                for tt in range(T):
                    row = [grads[tt][jj] if grads[tt][jj] is not None
                           else torch.zeros_like(parts[tt][jj]) for jj in range(n_parts)]
                    gs.append(torch.cat(row, -1))
                G = torch.stack(gs, 1)  # (B, T, S)
                if "grad_norm" in opts.quantities:
                    rec._add_grad(name, call, 0, 0, "grad_norm",
                                  torch.linalg.vector_norm(G[..., :H], dim=-1, dtype=torch.float64))
                if n_parts > 1:
                    rec._add_grad(name, call, 0, 0, "grad_norm_state",
                                  torch.linalg.vector_norm(G, dim=-1, dtype=torch.float64))
        return hook

    for t, ps in enumerate(parts):
        for j, v in enumerate(ps):
            if v.requires_grad:
                opts.handles.append(v.register_hook(make(t, j)))


def _jacobians(cell: nn.Module, xb: Tensor, s_prev: list) -> Tensor:
    """∂s_t/∂s_{t-1} of a user cell by torch.func.jacrev, (B, T, S, S) (flattened state)."""
    tup = isinstance(s_prev[0], tuple)
    widths = [v.shape[-1] for v in s_prev[0]] if tup else [s_prev[0].shape[-1]]

    def f(s_flat, x_t):
        s = tuple(s_flat.split(widths, -1)) if tup else s_flat
        out = cell(x_t.unsqueeze(0), tuple(v.unsqueeze(0) for v in s) if tup else s.unsqueeze(0))
        out = torch.cat(list(out), -1) if tup else out
        return out.squeeze(0)

    Js = []
    for t, sp in enumerate(s_prev):
        flat = torch.cat([v.detach() for v in sp], -1) if tup else sp.detach()
        try:
            J = torch.func.vmap(torch.func.jacrev(f))(flat, xb[:, t])
        except Exception:  # cells that vmap cannot batch: one sample at a time
            J = torch.stack([torch.func.jacrev(f)(flat[b], xb[b, t])
                             for b in range(flat.shape[0])])
        Js.append(J)
    return torch.stack(Js, 1)
