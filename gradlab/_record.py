"""``gradlab.record``: per-step gradient norms, Jacobians and gate statistics of the recurrent
modules inside any user model, read from the real forward and backward pass.

How the total gradient δ_t = ∂L/∂s_t reaches us without unrolling a fused kernel
-------------------------------------------------------------------------------
For a stock ``nn.RNN``/``nn.LSTM``/``nn.GRU`` each layer still runs as one fused call
(``torch.rnn_tanh/rnn_relu/lstm/gru``, cuDNN on CUDA) with the module's own weights, so outputs
and parameter gradients are those of the unrecorded model. Tensor hooks on the layer's outputs
(the sequence, h_n, c_n) catch the *direct* gradients: what the rest of the model sends to each
h_t. The layer's initial state passes through an identity node whose backward runs right after
the layer's fused backward; there gradlab runs the BPTT recursion itself,

    δs_{T} = direct_T (+ ∂L/∂h_n, ∂L/∂c_n),   δs_{t-1} = direct_{t-1} + J_tᵀ δs_t,

with the closed-form vector–Jacobian product of :mod:`gradlab._cells` (never a Jacobian), on
gate values recomputed in one batched matmul from the recorded h sequence (for RNNs φ' follows
from h alone). δs is the state-space gradient: (∂L/∂h_t, ∂L/∂c_t) for LSTM, c_t with h_t held
fixed, so that δs_{t-1} = J_tᵀ δs_t holds with the Jacobian over (h, c).

A second route needs no loop over steps for RNN and LSTM: the layer input gets
zero-valued extra columns whose input weights are a detached copy of W_hh. Since
a_t = W_ih x_t + W_hh h_{t-1} + b, the gradient reaching those columns at t is W_hhᵀ ∂L/∂a_t,
exactly the recurrent part of δ_{t-1}; the direct part is added from the output hook. GRU's
h_{t-1} also enters through r ⊙ (W_hn h + b_hn) and z ⊙ h_{t-1}, so its extra weights are
[[W_hr, 0], [W_hz, 0], [0, I]], giving W_hrᵀ g_r + W_hzᵀ g_z and g_n, and
δ_{t-1} = direct + W_hrᵀ g_r + W_hzᵀ g_z + W_hnᵀ(r_t ⊙ g_n) + z_t ⊙ δ_t (element-wise loop). The
extra columns are exact zeros, so outputs and gradients are unchanged up to the blocking of the
input GEMM. This route is the default except for a GRU on CPU, where the recursion is faster
(see ``_STRATEGY``).

gradlab's own ``models.RNN/LSTM/GRU`` and ``models.Unrolled`` are unrolled in Python: a tensor hook
on each step's state reads δ_t directly.

Nothing is stashed on the user's modules: the module's ``forward`` is shadowed by an instance
attribute for the duration of the ``with`` block only, and every hook handle and shadow is removed
in ``finally``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from . import _cells, _linalg, models

QUANTITIES = ("grad_norm", "grad_norm_c", "gates", "jac_norm")
DEFAULT_QUANTITIES = ("grad_norm", "grad_norm_c", "gates")
SATURATION = (0.05, 0.95)
FRAME_COLUMNS = [
    "module", "call", "layer", "direction", "step", "gate", "batch_index", "quantity", "value",
]


@dataclass
class _Entry:
    """One recorded series: values over steps (T,) or per sample (B, T), in processing order."""

    module: str
    call: int
    layer: int
    direction: int
    quantity: str
    values: Tensor  # (T,) or (B, T), detached
    gate: str | None = None


@dataclass
class Recording:
    """What ``gradlab.record`` collected. Use :meth:`frame` for a tidy table."""

    per_sample: bool = False
    entries: list[_Entry] = field(default_factory=list)
    jacobians_full: dict[tuple[str, int, int, int], Tensor] = field(default_factory=dict)
    modules: list[str] = field(default_factory=list)
    _calls: dict[str, int] = field(default_factory=dict)

    def frame(self) -> pd.DataFrame:
        """Tidy long table, one row per observation.

        Columns: module (name inside the model), call (0-based forward call of that module),
        layer, direction (0 forward, 1 reverse), step (position in the sequence, 0-based, also for
        the reverse direction), gate (LSTM: input/forget/cell/output, GRU: reset/update/new; empty
        otherwise), batch_index (sample; -1 for the batch mean), quantity, value.

        Quantities: ``grad_norm`` ‖∂L/∂h_t‖₂ (total gradient BPTT delivers to h_t),
        ``grad_norm_c`` ‖∂L/∂c_t‖₂ (LSTM; the state-space gradient, h_t held fixed, so that
        (∂L/∂h_{t-1}, ∂L/∂c_{t-1}) = J_tᵀ (∂L/∂h_t, ∂L/∂c_t)), ``jac_norm_spectral`` / ``jac_norm_frobenius`` of
        ∂s_t/∂s_{t-1} (s the full state), ``gate_mean``, ``gate_saturated_frac``
        (fraction of gate units < 0.05 or > 0.95).
        """
        parts = []
        for e in self.entries:
            v = e.values.detach().to("cpu", torch.float64).numpy()
            T = v.shape[-1]
            pos = np.arange(T)
            steps = T - 1 - pos if e.direction == 1 else pos
            if v.ndim == 1:
                bidx = np.full(T, -1)
                vals = v
            else:  # per-sample rows, then the batch mean (batch_index -1)
                B = v.shape[0]
                bidx = np.concatenate([np.repeat(np.arange(B), T), np.full(T, -1)])
                steps = np.tile(steps, B + 1)
                vals = np.concatenate([v.reshape(-1), v.mean(0)])
            n = len(vals)
            parts.append(pd.DataFrame({
                "module": np.full(n, e.module, dtype=object),
                "call": np.full(n, e.call),
                "layer": np.full(n, e.layer),
                "direction": np.full(n, e.direction),
                "step": steps,
                "gate": np.full(n, e.gate or "", dtype=object),
                "batch_index": bidx,
                "quantity": np.full(n, e.quantity, dtype=object),
                "value": vals,
            }))
        if not parts:
            return pd.DataFrame({c: [] for c in FRAME_COLUMNS})
        df = pd.concat(parts, ignore_index=True)
        return df.sort_values(
            ["module", "call", "layer", "direction", "quantity", "gate", "batch_index", "step"],
            kind="stable",
        ).reset_index(drop=True)

    def jacobians(self, module: str | None = None, layer: int = 0, direction: int = 0,
                  call: int = 0) -> Tensor:
        """Full Jacobians ∂s_t/∂s_{t-1}, shape (B, T, S, S), steps in sequence order
        (for the reverse direction, step t's Jacobian is ∂s_t/∂s_{t+1}).

        Only with ``record(..., jacobians="full")``. ``module`` may be omitted when the model
        holds a single recurrent module.
        """
        if module is None:
            if len(self.modules) != 1:
                raise ValueError(f"jacobians: name the module, one of {self.modules}")
            module = self.modules[0]
        key = (module, call, layer, direction)
        if key not in self.jacobians_full:
            raise KeyError(
                f"no full Jacobians recorded for module={module!r} call={call} layer={layer} "
                f"direction={direction}; record with jacobians='full' (recorded: "
                f"{sorted(self.jacobians_full)})"
            )
        return self.jacobians_full[key]

    # -- internal ------------------------------------------------------------------------------
    def _add(self, module, call, layer, d, quantity, values, gate=None):
        if not self.per_sample and values.dim() == 2:
            values = values.mean(0)
        self.entries.append(_Entry(module, call, layer, d, quantity, values.detach(), gate))

    def _next_call(self, name: str) -> int:
        c = self._calls.get(name, 0)
        self._calls[name] = c + 1
        return c


# ---------------------------------------------------------------------------------------------
# Registry: module type -> how to record it


def _stock_options(module: nn.Module, name: str) -> None:
    """Reject options gradlab does not support, naming the option."""
    if getattr(module, "proj_size", 0):
        raise NotImplementedError(
            f"record: module {name!r} ({type(module).__name__}) uses proj_size="
            f"{module.proj_size}; LSTMs with projections are not supported by gradlab "
            f"(their state Jacobian is not square in h); use proj_size=0"
        )
    if type(module).forward not in (nn.RNN.forward, nn.LSTM.forward, nn.GRU.forward):
        raise NotImplementedError(
            f"record: module {name!r} ({type(module).__name__}) overrides forward(); gradlab "
            f"records the stock nn.RNN/nn.LSTM/nn.GRU forward only"
        )


def _is_stock(m: nn.Module) -> bool:
    return isinstance(m, (nn.RNN, nn.LSTM, nn.GRU))


def _recordable(m: nn.Module) -> bool:
    return _is_stock(m) or isinstance(m, (models._Recurrent, models.Unrolled))


def _find_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    found = [(n or type(model).__name__, m) for n, m in model.named_modules() if _recordable(m)]
    # a gradlab.Unrolled owns its cell: do not record recurrent modules nested inside it twice
    owners = [n for n, m in found if isinstance(m, models.Unrolled)]
    return [(n, m) for n, m in found if not any(n.startswith(o + ".") for o in owners)]


# ---------------------------------------------------------------------------------------------
# Per-layer statistics shared by both paths


def _lstm_cache_from_h(p: _cells.CellParams, x: Tensor, h_seq: Tensor, h0: Tensor, c0: Tensor):
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


def _layer_cache(p: _cells.CellParams, x: Tensor, h_seq: Tensor, h0: Tensor, c0: Tensor | None):
    """Cache of every step (tensors (B, T, ·)) of one layer/direction, processing order."""
    if p.kind == "lstm":
        return _lstm_cache_from_h(p, x, h_seq, h0, c0)
    h_prev = torch.cat([h0.unsqueeze(1), h_seq[:, :-1]], dim=1)
    return _cells.step_from_preact(p, _cells.input_preact(p, x), h_prev)[1]


def _slice_cache(cache: dict[str, Tensor], t0: int, t1: int) -> dict[str, Tensor]:
    return {k: v[:, t0:t1] for k, v in cache.items()}


def _forward_stats(rec: Recording, opts: dict, name: str, call: int, layer: int, d: int,
                   p: _cells.CellParams, cache: dict[str, Tensor]) -> None:
    """Gate statistics and Jacobian norms of one layer/direction from its cache."""
    if "gates" in opts["quantities"]:
        lo, hi = SATURATION
        for gname, gv in _cells.gate_values(p, cache).items():
            rec._add(name, call, layer, d, "gate_mean", gv.mean(-1), gname)
            if gname in ("cell", "new"):  # tanh gates: saturation at |value| > 0.95·1
                sat = (gv.abs() > hi).to(gv.dtype).mean(-1)
            else:
                sat = ((gv < lo) | (gv > hi)).to(gv.dtype).mean(-1)
            rec._add(name, call, layer, d, "gate_saturated_frac", sat, gname)
    want_norms = "jac_norm" in opts["quantities"]
    want_full = opts["jacobians"] == "full"
    if not (want_norms or want_full):
        return
    any_t = next(iter(cache.values()))
    B, T = any_t.shape[:2]
    S = p.state_size
    itemsize = any_t.element_size()
    # chunk over time so that one chunk of Jacobians stays below ~256 MB
    chunk = max(1, int(2**28 // max(1, B * S * S * itemsize)))
    spec, frob, full = [], [], []
    matrix_free = want_norms and not want_full and S > _DENSE_MAX_S
    for t0 in range(0, T, chunk):
        sub = _slice_cache(cache, t0, min(T, t0 + chunk))
        if matrix_free:  # never forms J: Lanczos for σ_max, closed form for ‖J‖_F
            spec.append(_linalg.cell_spectral_norms(p, sub))
            frob.append(_cells.jacobian_frobenius_from_cache(p, sub))
            continue
        J = _cells.jacobian_from_cache(p, sub)
        if want_norms:
            frob.append(torch.linalg.matrix_norm(J, ord="fro"))
            spec.append(_spectral_norm(J))
        if want_full:
            full.append(J)
    if want_norms:
        rec._add(name, call, layer, d, "jac_norm_spectral", torch.cat(spec, 1))
        rec._add(name, call, layer, d, "jac_norm_frobenius", torch.cat(frob, 1))
    if want_full:
        Jf = torch.cat(full, 1)
        rec.jacobians_full[(name, call, layer, d)] = Jf.flip(1) if d == 1 else Jf


def _spectral_norm(J: Tensor) -> Tensor:
    """Largest singular value of each matrix in a batch (..., S, S)."""
    return torch.linalg.matrix_norm(J, ord=2)


# Above this state size the spectral norm is computed matrix-free (Lanczos, see _linalg);
# below it a dense SVD of the formed Jacobian is as cheap.
_DENSE_MAX_S = 48


def _check_full_budget(opts, name, B, T, S, L, D, itemsize):
    if opts["jacobians"] != "full":
        return
    need = B * T * S * S * itemsize * L * D
    if need > opts["memory_budget"]:
        raise MemoryError(
            f"record: full Jacobians of module {name!r} (B={B}, T={T}, S={S}, "
            f"{L} layer(s) x {D} direction(s)) need {need / 2**30:.2f} GiB, above "
            f"memory_budget={opts['memory_budget'] / 2**30:.2f} GiB; raise memory_budget=, "
            f"shorten the sequence, or record jacobians='norms'"
        )


def _check_finite(t: Tensor, name: str, what: str) -> None:
    # one reduction in the common case: a NaN or Inf anywhere makes the sum non-finite (a sum
    # that overflows from finite values is re-checked element-wise before raising)
    if not bool(torch.isfinite(t.sum())) and not bool(torch.isfinite(t).all()):
        raise FloatingPointError(
            f"record: module {name!r}: {what} contains NaN or Inf; check the data and the "
            f"learning rate (gradient clipping helps against exploding gradients)"
        )


# ---------------------------------------------------------------------------------------------
# Fused path for stock nn.RNN / nn.LSTM / nn.GRU


_FUSED = {"rnn_tanh": torch.rnn_tanh, "rnn_relu": torch.rnn_relu, "lstm": torch.lstm,
          "gru": torch.gru}


def _fused_forward(module: nn.Module, rec: Recording, opts: dict, name: str, input, hx=None):
    _stock_options(module, name)
    call = rec._next_call(name)
    kind = _cells.module_kind(module)
    x, batched = models._to_batch_first(module, input, f"record: module {name!r}")
    _check_finite(x, name, "the input")
    h0, c0 = models._initial_state(module, hx, x, batched, f"record: module {name!r}")
    L, H = module.num_layers, module.hidden_size
    D = 2 if module.bidirectional else 1
    B, T = x.shape[:2]
    S = 2 * H if kind == "lstm" else H
    _check_full_budget(opts, name, B, T, S, L, D, x.element_size())
    want_grad = bool({"grad_norm", "grad_norm_c"} & set(opts["quantities"])) and \
        torch.is_grad_enabled()
    fwd_stats = bool({"gates", "jac_norm"} & set(opts["quantities"])) or opts["jacobians"] == "full"
    fused = _FUSED[kind]
    layer_in = x
    h_n, c_n = [], []
    for layer in range(L):
        ps = [_cells.params_from_module(module, layer, d) for d in range(D)]
        sl = slice(layer * D, (layer + 1) * D)
        h0_l = h0[sl].contiguous()
        anchors = [t for p in ps for t in (p.w_ih, p.w_hh, p.b_ih, p.b_hh)
                   if t is not None and t.requires_grad]
        anchors += [layer_in] if layer_in.requires_grad else []
        tap = None
        inp = layer_in
        extra = want_grad and anchors and _strategy(x, kind) == "extra_input"
        if want_grad and anchors:
            # a tap node whose backward runs right after this layer's fused backward, when every
            # direct gradient on the layer's outputs is known: on zero-valued extra input columns
            # ("extra_input") or on the initial state ("recursion"); see the module docstring
            tap = _Tap(extra)
            if extra:
                width = (2 if kind == "gru" else 1) * D * H
                inp = torch.cat([layer_in, tap(x.new_zeros(B, T, width), *anchors)], dim=-1)
            else:
                h0_l = tap(h0_l, *anchors)
        flat: list[Tensor] = []
        for d, p in enumerate(ps):
            w_ih = torch.cat([p.w_ih, _extra_weights(p, d, D)], dim=1) if extra else p.w_ih
            flat += [w_ih, p.w_hh] + ([p.b_ih, p.b_hh] if module.bias else [])
        hx_l = (h0_l, c0[sl].contiguous()) if kind == "lstm" else h0_l
        with warnings.catch_warnings():  # cuDNN: our per-call weights are not one flat buffer
            warnings.filterwarnings("ignore", message=".*single contiguous chunk.*")
            res = fused(inp, hx_l, flat, module.bias, 1, 0.0, module.training, D == 2, True)
        out, hn = res[0], res[1]  # (B, T, D·H), (D, B, H)
        cn = res[2] if kind == "lstm" else None
        h_n.append(hn)
        if cn is not None:
            c_n.append(cn)
        if fwd_stats:
            with torch.no_grad():
                for d, p in enumerate(ps):
                    xi, hs = _direction_views(layer_in, out, d, H)
                    cache = _layer_cache(p.detach(), xi.detach(), hs.detach(), h0[layer * D + d],
                                         None if c0 is None else c0[layer * D + d])
                    _forward_stats(rec, opts, name, call, layer, d, p.detach(), cache)
        if tap is not None:
            _install_grad_hooks(rec, opts, name, call, layer, ps, layer_in, out, hn, cn, tap,
                                h0[sl], None if c0 is None else c0[sl])
        layer_in = out
        if module.dropout and module.training and layer < L - 1:
            layer_in = nn.functional.dropout(layer_in, module.dropout, training=True)
    hn_all = torch.cat(h_n, 0)
    cn_all = torch.cat(c_n, 0) if kind == "lstm" else None
    return models._finish_output(module, layer_in, hn_all, cn_all, batched)


def _direction_views(layer_in: Tensor, out: Tensor, d: int, H: int) -> tuple[Tensor, Tensor]:
    """Input and h sequence of direction d in processing order (reverse flipped in time)."""
    hs = out[..., d * H:(d + 1) * H]
    return (layer_in.flip(1), hs.flip(1)) if d else (layer_in, hs)


# How the fused path reads the recurrent gradient; None = the faster route, measured side by side
# (B=32, T=100, H=256, 2-core CPU): "extra_input" needs no loop over steps for RNN and LSTM
# (RNN 1.17x, LSTM 1.37x the plain step, against 1.33x and 1.88x for "recursion"); a GRU needs
# a loop either way and its extra columns are twice as wide, so on CPU "recursion" wins (1.65x
# against 1.92x). Tests set this to check both routes.
_STRATEGY: str | None = None


def _strategy(x: Tensor, kind: str) -> str:
    if _STRATEGY is not None:
        return _STRATEGY
    return "recursion" if kind == "gru" and not x.is_cuda else "extra_input"


def _extra_weights(p: _cells.CellParams, d: int, D: int) -> Tensor:
    """Input weights of the zero-valued extra columns for direction d (module docstring)."""
    H = p.hidden_size
    W = p.w_hh.detach()
    if p.kind != "gru":
        E = W.new_zeros(W.shape[0], D * H)
        E[:, d * H:(d + 1) * H] = W
        return E
    E = W.new_zeros(3 * H, 2 * D * H)
    E[: 2 * H, 2 * d * H:(2 * d + 1) * H] = W[: 2 * H]
    E[2 * H:, (2 * d + 1) * H:(2 * d + 2) * H] = torch.eye(H, dtype=W.dtype, device=W.device)
    return E


class _TapFn(torch.autograd.Function):
    """Identity on ``x`` whose backward first calls ``tap.callback`` and then passes the gradient
    through unchanged (no change to any gradient). Its extra inputs ("anchors", the layer's
    weights) put it on the path to the parameters, so the engine runs it for ``loss.backward()``
    and for ``torch.autograd.grad(loss, params)`` alike, where a hook on a leaf would not fire."""

    @staticmethod
    def forward(ctx, tap, x, *anchors):
        ctx.tap = tap
        ctx.n = len(anchors)
        ctx.x_grad = x.requires_grad
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        if ctx.tap.callback is not None:
            ctx.tap.callback(g)
        return (None, g if ctx.x_grad else None) + (None,) * ctx.n


class _Tap:
    def __init__(self, extra: bool):
        self.extra = extra  # on the extra input columns (else on the initial state)
        self.callback = None

    def __call__(self, x, *anchors):
        return _TapFn.apply(self, x, *anchors)

    def remove(self):  # same interface as a hook handle: disarmed on leaving record()
        self.callback = None


def _install_grad_hooks(rec, opts, name, call, layer, ps, layer_in, out, hn, cn, tap, h0, c0):
    """Hooks that collect the direct gradients and, once e's gradient arrives, the totals."""
    box: dict[str, Tensor] = {}

    def keep(key):
        def hook(g):
            if g is not None:  # cuDNN passes None for an output the loss does not use
                box[key] = g.detach()
        return hook

    handles = [out.register_hook(keep("out")), hn.register_hook(keep("hn"))]
    if cn is not None:
        handles.append(cn.register_hook(keep("cn")))
    saved = (layer_in.detach(), out.detach(), h0.detach(), None if c0 is None else c0.detach())

    def on_backward(g: Tensor):
        try:
            with torch.no_grad():
                if tap.extra:  # g is the gradient on the extra input columns
                    _finish_grads_extra(rec, opts, name, call, layer, ps, saved, box, g.detach())
                else:
                    _finish_grads(rec, opts, name, call, layer, ps, saved, box)
        finally:
            box.clear()

    tap.callback = on_backward
    handles.append(tap)
    rec_handles = opts["_tensor_handles"]
    rec_handles.extend(handles)


def _finish_grads_extra(rec, opts, name, call, layer, ps, saved, box, ge):
    """Totals from the gradient ``ge`` on the extra input columns (B, T, width):
    RNN/LSTM: ge_t = W_hhᵀ ∂L/∂a_t, the recurrent part of δ_{t-1}, so δ needs no loop;
    GRU: ge_t = (W_hrᵀ g_r + W_hzᵀ g_z, g_n), then δ_{t-1} += W_hnᵀ(r_t ⊙ g_n) + z_t ⊙ δ_t."""
    layer_in, out, h0, c0 = saved
    B, T = out.shape[:2]
    H = ps[0].hidden_size
    kind = ps[0].kind
    g_out = box.get("out")
    for d, p in enumerate(ps):
        p = p.detach()
        direct = out.new_zeros(B, T, H) if g_out is None else g_out[..., d * H:(d + 1) * H]
        delta = (direct.flip(1) if d else direct).clone()  # (B, T, H), processing order
        if "hn" in box:
            delta[:, -1] += box["hn"][d]
        xi, hs = _direction_views(layer_in, out, d, H)
        if kind == "gru":
            u = ge[..., 2 * d * H:(2 * d + 1) * H]
            gn = ge[..., (2 * d + 1) * H:(2 * d + 2) * H]
            u, gn = (u.flip(1), gn.flip(1)) if d else (u, gn)
            cache = _layer_cache(p, xi, hs, h0[d], None)
            rec_part = u + torch.matmul(cache["r"] * gn, p.w_hh[2 * H:])
            delta[:, :-1] += rec_part[:, 1:]
            z = cache["z"]
            for t in range(T - 1, 0, -1):
                delta[:, t - 1] += z[:, t] * delta[:, t]
        else:
            r = ge[..., d * H:(d + 1) * H]
            delta[:, :-1] += (r.flip(1) if d else r)[:, 1:]
        _check_finite(delta, name, f"the gradient reaching layer {layer} direction {d}")
        if "grad_norm" in opts["quantities"]:
            rec._add(name, call, layer, d, "grad_norm", torch.linalg.vector_norm(delta, dim=-1))
        if kind == "lstm" and "grad_norm_c" in opts["quantities"]:
            # ∂L/∂c_t (h_t held fixed) = f_{t+1} ⊙ (δ_{t+1} ⊙ o_{t+1}(1 - tanh² c_{t+1}) + ∂L/∂c_{t+1})
            cache = _lstm_cache_from_h(p, xi, hs, h0[d], c0[d])
            a = cache["o"] * (1 - cache["tanh_c"] ** 2)
            f = cache["f"]
            dc = torch.zeros_like(delta)
            if "cn" in box:
                dc[:, -1] = box["cn"][d]
            for t in range(T - 2, -1, -1):
                dc[:, t] = f[:, t + 1] * (delta[:, t + 1] * a[:, t + 1] + dc[:, t + 1])
            rec._add(name, call, layer, d, "grad_norm_c", torch.linalg.vector_norm(dc, dim=-1))


class _ChunkedCache:
    """Step caches of a GRU layer computed ``chunk`` steps at a time, as the backward recursion
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


def _finish_grads(rec, opts, name, call, layer, ps, saved, box):
    """Total state gradients of one layer from the direct ones, by the BPTT recursion
    δs_{t-1} = direct_{t-1} + J_tᵀ δs_t with the closed-form VJP (``_cells.vjp_from_cache``)."""
    layer_in, out, h0, c0 = saved
    B, T = out.shape[:2]
    H = ps[0].hidden_size
    kind = ps[0].kind
    g_out = box.get("out")
    for d, p in enumerate(ps):
        p = p.detach()
        xi, hs = _direction_views(layer_in, out, d, H)
        if kind in ("rnn_tanh", "rnn_relu"):  # φ' from the output alone: 1 - h², or [h > 0]
            cache = {"h": hs, "a": hs}
        elif kind == "gru":  # gates recomputed per chunk of steps, latest first (memory)
            cache = _ChunkedCache(p, xi, hs, h0[d])
        else:
            cache = _layer_cache(p, xi, hs, h0[d], None if c0 is None else c0[d])
        direct = None if g_out is None else g_out[..., d * H:(d + 1) * H]
        if direct is not None and d:
            direct = direct.flip(1)
        delta = out.new_zeros(B, p.state_size)
        if "hn" in box:
            delta[:, :H] += box["hn"][d]
        if "cn" in box:
            delta[:, H:] += box["cn"][d]
        deltas = [None] * T
        for t in range(T - 1, -1, -1):
            if direct is not None:
                delta[:, :H] += direct[:, t]
            deltas[t] = delta
            if t:
                step_cache = cache.at(t) if isinstance(cache, _ChunkedCache) else \
                    {k: v[:, t] for k, v in cache.items()}
                delta = _cells.vjp_from_cache(p, step_cache, delta)
        dl = torch.stack(deltas, 1)  # (B, T, S), processing order
        _check_finite(dl, name, f"the gradient reaching layer {layer} direction {d}")
        norms = torch.linalg.vector_norm(dl[..., :H], dim=-1)
        if "grad_norm" in opts["quantities"]:
            rec._add(name, call, layer, d, "grad_norm", norms)
        if kind == "lstm" and "grad_norm_c" in opts["quantities"]:
            rec._add(name, call, layer, d, "grad_norm_c",
                     torch.linalg.vector_norm(dl[..., H:], dim=-1))


# ---------------------------------------------------------------------------------------------
# Unrolled path for gradlab.models and gradlab.models.Unrolled


def _state_grad_hooks(rec, opts, name, call, layer, d, states: list[Tensor], H: int, kind: str):
    T = len(states)
    grads: list[Tensor | None] = [None] * T

    def make(t):
        def hook(g):
            grads[t] = g.detach()
            if t == 0:  # s_0 is an ancestor of every later state: its gradient comes last
                _emit()
        return hook

    def _emit():
        gs = [g if g is not None else states[0].new_zeros(states[0].shape) for g in grads]
        G = torch.stack(gs, dim=1)  # (B, T, S)
        _check_finite(G, name, f"the gradient reaching layer {layer} direction {d}")
        rec._add(name, call, layer, d, "grad_norm", torch.linalg.vector_norm(G[..., :H], dim=-1))
        if kind == "lstm" and "grad_norm_c" in opts["quantities"]:
            rec._add(name, call, layer, d, "grad_norm_c",
                     torch.linalg.vector_norm(G[..., H:], dim=-1))
        grads[:] = [None] * T

    for t, s in enumerate(states):
        if s.requires_grad:
            opts["_tensor_handles"].append(s.register_hook(make(t)))


def _model_forward(module: models._Recurrent, rec, opts, name, input, hx=None):
    call = rec._next_call(name)
    x, _ = models._to_batch_first(module, input, f"record: module {name!r}")
    _check_finite(x, name, "the input")
    D = 2 if module.bidirectional else 1
    S = 2 * module.hidden_size if module.kind == "lstm" else module.hidden_size
    _check_full_budget(opts, name, x.shape[0], x.shape[1], S, module.num_layers, D,
                       x.element_size())
    want_grad = bool({"grad_norm", "grad_norm_c"} & set(opts["quantities"])) and \
        torch.is_grad_enabled()

    def observer(layer, d, p, xi, states, h0, c0):
        if want_grad:
            _state_grad_hooks(rec, opts, name, call, layer, d, states, module.hidden_size,
                              module.kind)
        with torch.no_grad():
            seq = torch.stack([s.detach() for s in states], 1)
            s0 = h0 if c0 is None else torch.cat([h0, c0], -1)
            cache, _ = _cells.sequence_cache(p.detach(), xi.detach(), seq, s0.detach())
            _forward_stats(rec, opts, name, call, layer, d, p.detach(), cache)

    return models._unrolled_forward(module, input, hx, observer=observer,
                                    name=f"record: module {name!r}")


def _user_forward(module: models.Unrolled, rec, opts, name, x, state=None):
    call = rec._next_call(name)
    want_grad = bool({"grad_norm", "grad_norm_c"} & set(opts["quantities"])) and \
        torch.is_grad_enabled()

    def observer(xb, states):
        flat = [torch.cat(list(s), -1) if isinstance(s, tuple) else s for s in states]
        _check_finite(xb, name, "the input")
        B, T = xb.shape[:2]
        S = flat[0].shape[-1]
        H = (states[0][0] if isinstance(states[0], tuple) else states[0]).shape[-1]
        _check_full_budget(opts, name, B, T, S, 1, 1, xb.element_size())
        if want_grad:
            _user_grad_hooks(rec, opts, name, call, states, H)
        if "jac_norm" in opts["quantities"] or opts["jacobians"] == "full":
            s_prev = [_zero_like_state(states[0]) if state is None else state] + states[:-1]
            jac = _autograd_jacobians(module.cell, xb.detach(), s_prev)  # (B, T, S, S)
            _forward_user_jac(rec, opts, name, call, jac)

    return models._unrolled_user_forward(module, x, state, observer=observer,
                                         name=f"record: module {name!r}")


def _zero_like_state(s):
    if isinstance(s, tuple):
        return tuple(torch.zeros_like(v) for v in s)
    return torch.zeros_like(s)


def _user_grad_hooks(rec, opts, name, call, states, H):
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
                gs = []
                for tt in range(T):
                    row = [grads[tt][jj] if grads[tt][jj] is not None
                           else torch.zeros_like(parts[tt][jj]) for jj in range(n_parts)]
                    gs.append(torch.cat(row, -1))
                G = torch.stack(gs, 1)  # (B, T, S)
                _check_finite(G, name, "the gradient reaching the cell state")
                rec._add(name, call, 0, 0, "grad_norm", torch.linalg.vector_norm(G[..., :H], dim=-1))
                if n_parts > 1:
                    rec._add(name, call, 0, 0, "grad_norm_state",
                             torch.linalg.vector_norm(G, dim=-1))
        return hook

    for t, ps in enumerate(parts):
        for j, v in enumerate(ps):
            if v.requires_grad:
                opts["_tensor_handles"].append(v.register_hook(make(t, j)))


def _autograd_jacobians(cell: nn.Module, xb: Tensor, s_prev: list) -> Tensor:
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
            J = torch.stack([torch.func.jacrev(f)(flat[b], xb[b, t]) for b in range(flat.shape[0])])
        Js.append(J)
    return torch.stack(Js, 1)


def _forward_user_jac(rec, opts, name, call, J: Tensor) -> None:
    if "jac_norm" in opts["quantities"]:
        rec._add(name, call, 0, 0, "jac_norm_spectral", _spectral_norm(J))
        rec._add(name, call, 0, 0, "jac_norm_frobenius", torch.linalg.matrix_norm(J, ord="fro"))
    if opts["jacobians"] == "full":
        rec.jacobians_full[(name, call, 0, 0)] = J


# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def record(
    model: nn.Module,
    *,
    quantities: tuple[str, ...] | list[str] = DEFAULT_QUANTITIES,
    per_sample: bool = False,
    jacobians: str | None = None,
    memory_budget: float = 2**30,
) -> Iterator[Recording]:
    """Record every ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (and gradlab model) inside ``model``.

    Usage::

        with gradlab.record(model) as rec:
            loss = loss_fn(model(x), y)
            loss.backward()
        df = rec.frame()

    Args:
        model: any ``nn.Module`` containing recurrent modules (or one itself).
        quantities: any of ``"grad_norm"`` (‖∂L/∂h_t‖₂ of the total BPTT gradient, from the
            real backward pass), ``"grad_norm_c"`` (‖∂L/∂c_t‖₂ for LSTM; costs one batched
            recomputation of the gates), ``"gates"`` (per-step gate means
            and saturated fractions, LSTM/GRU), ``"jac_norm"`` (spectral and Frobenius norms of
            ∂s_t/∂s_{t-1}, s the full state: H×H for RNN/GRU, 2H×2H over (h, c) for LSTM).
        per_sample: also keep every sample's value (``batch_index`` ≥ 0) instead of the batch
            mean only.
        jacobians: ``"full"`` keeps every Jacobian (B, T, S, S) (see ``Recording.jacobians``),
            refused with a MemoryError above ``memory_budget`` bytes (default 1 GiB).

    The model's outputs and parameter gradients are those of the unrecorded model (fused kernels
    are kept; see the module docstring). On exit, even by exception, every hook and shadowed
    ``forward`` is removed: the model is exactly as before.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"record: expected an nn.Module, got {type(model).__name__}")
    quantities = tuple(quantities)
    bad = [q for q in quantities if q not in QUANTITIES]
    if bad:
        raise ValueError(f"record: unknown quantities {bad}; allowed: {list(QUANTITIES)}")
    if jacobians not in (None, "norms", "full"):
        raise ValueError(f"record: jacobians must be None, 'norms' or 'full', got {jacobians!r}")
    if jacobians == "norms" and "jac_norm" not in quantities:
        quantities = quantities + ("jac_norm",)
    if not (isinstance(memory_budget, (int, float)) and memory_budget > 0
            and math.isfinite(memory_budget)):
        raise ValueError(f"record: memory_budget must be a positive number of bytes, "
                         f"got {memory_budget!r}")
    targets = _find_modules(model)
    if not targets:
        raise ValueError(
            f"record: {type(model).__name__} contains no nn.RNN, nn.LSTM, nn.GRU or gradlab "
            f"model; wrap a custom cell in gradlab.models.Unrolled to record it"
        )
    for name, m in targets:
        if _is_stock(m):
            _stock_options(m, name)
    rec = Recording(per_sample=per_sample, modules=[n for n, _ in targets])
    opts = {"quantities": quantities, "jacobians": jacobians, "memory_budget": memory_budget,
            "_tensor_handles": []}
    shadowed: list[tuple[nn.Module, object]] = []
    try:
        for name, m in targets:
            if _is_stock(m):
                fn = _fused_forward
            elif isinstance(m, models.Unrolled):
                fn = _user_forward
            else:
                fn = _model_forward
            prev = m.__dict__.get("forward", _MISSING)
            shadowed.append((m, prev))
            m.forward = _bind(fn, m, rec, opts, name)
        yield rec
    finally:
        for m, prev in reversed(shadowed):
            if prev is _MISSING:
                m.__dict__.pop("forward", None)
            else:
                m.__dict__["forward"] = prev
        for h in opts["_tensor_handles"]:
            h.remove()
        opts["_tensor_handles"].clear()


_MISSING = object()


def _bind(fn, module, rec, opts, name):
    def forward(*args, **kwargs):
        return fn(module, rec, opts, name, *args, **kwargs)
    return forward
