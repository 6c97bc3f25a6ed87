"""gradlab's own ``models.RNN/LSTM/GRU``: unrolled in Python, so a tensor hook on each step's
state s_t reads δs_t directly; forward statistics come from the closed-form step cache."""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _cells, models
from ._layer import Options, Site
from ._recording import Recording
from ._stats import check_full_budget, check_input, forward_stats


def state_hooks(site: Site, d: int, states: list[Tensor]) -> None:
    """Hooks on s_0..s_{T-1} (processing order); when s_0's gradient arrives (it comes last, s_0
    being an ancestor of every later state) the norms go to the site."""
    T, H = len(states), site.H
    grads: list[Tensor | None] = [None] * T

    def make(t):
        def hook(g):
            grads[t] = g.detach()
            if t == 0:
                emit()
        return hook

    def emit():
        gs = [g if g is not None else states[0].new_zeros(states[0].shape) for g in grads]
        G = torch.stack(gs, dim=1)  # (B, T, S)
        site.add_grad(d, "grad_norm", torch.linalg.vector_norm(G[..., :H], dim=-1, dtype=torch.float64))
        if site.kind == "lstm":
            site.add_grad(d, "grad_norm_c", torch.linalg.vector_norm(G[..., H:], dim=-1, dtype=torch.float64))
        grads[:] = [None] * T

    for t, s in enumerate(states):
        if s.requires_grad:
            site.opts.handles.append(s.register_hook(make(t)))


def forward(module: models._Recurrent, rec: Recording, opts: Options, name: str, input,
            hx=None):
    call = rec._next_call(name)
    x, _ = models._to_batch_first(module, input, f"record: module {name!r}")
    check_input(opts, x, name)
    D = 2 if module.bidirectional else 1
    S = 2 * module.hidden_size if module.kind == "lstm" else module.hidden_size
    check_full_budget(opts, name, x.shape[0], x.shape[1], S, module.num_layers, D,
                      x.element_size())
    want_grad = opts.want_grad
    sites: dict[int, Site] = {}

    def observer(layer, d, p, xi, states, h0, c0):
        if layer not in sites:
            ps = [_cells.params_from_module(module, layer, dd) for dd in range(D)]
            sites[layer] = Site(rec, opts, name, call, layer, ps)
        site = sites[layer]
        if want_grad:
            state_hooks(site, d, states)
        if opts.want_forward_stats:
            with torch.no_grad():
                seq = torch.stack([s.detach() for s in states], 1)
                s0 = h0 if c0 is None else torch.cat([h0, c0], -1)
                cache, _ = _cells.sequence_cache(p.detach(), xi.detach(), seq, s0.detach())
                forward_stats(site, d, cache)

    rec.routes.setdefault(name, "unrolled")
    return models._unrolled_forward(module, input, hx, observer=observer,
                                    name=f"record: module {name!r}")
