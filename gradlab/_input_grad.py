"""input_gradients: ‖∂L/∂x_k‖ for every input position k of any sequence model.

Two routes, one table.

* Recurrent route (stock ``nn.RNN/LSTM/GRU``, :mod:`gradlab.models` RNN/LSTM/GRU, and
  :class:`gradlab.train.SequenceModel` with a recurrent cell), exact at any T. For each layer
  l (top first) and direction, in processing order j = T-1 … 0 (index letters as in
  :mod:`gradlab._cells`):

      δ_j = J_{j+1}ᵀ δ_{j+1} + e_j,          e_j = ∂L/∂h_j arriving from above (h part only),
      g_j = (∂s_j/∂x_j)ᵀ δ_j = W_ihᵀ ∂L/∂a_j  (``_cells.input_vjp_from_cache``),

  where x_j is the layer's input at step j (the outputs of the layer below, both directions
  concatenated) and e_j is the gradient on the layer's output: grad_output at the target step for
  the top layer, the two directions' g_j summed for a lower one. Every vector is carried as a
  unit vector and its log10 norm (as :func:`gradlab.analysis.gradient_flow` does); a sum of two
  such vectors is formed after scaling both by 10^(ℓ - max ℓ). So T = 10⁵ steps at any rate
  neither under- nor overflow, and ‖∂L/∂x_k‖ of the bottom layer is read off in log10.

* Autograd route (anything else: attention models, a user's function x -> output): one
  backward pass of L = Σ_b ⟨grad_output_b, y_b⟩ from the chosen output y, in ``dtype`` on the
  model's device; the per-sample norms ‖∂L/∂x_{b,k}‖ are taken from x.grad. (Per sample because
  samples do not mix in a model without batch statistics; run BatchNorm in eval mode.)
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from . import _cells, _flow

__all__ = ["input_gradients"]

_FN = "input_gradients"
_LN10 = math.log(10.0)


def _fail(arg: str, problem: str, fix: str) -> ValueError:
    return ValueError(f"{_FN}: argument `{arg}` {problem}; fix: {fix}")


# ---------------------------------------------------------------------------------------------
# Log-space vectors: (unit vector v, log10 scale ℓ), the vector being 10^ℓ · v


def _normalise(v: Tensor) -> tuple[Tensor, Tensor]:
    return _flow._safe_normalise(v)


def _add(v: Tensor, ell: Tensor, w: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """10^ℓ v + 10^m w as (unit vector, log10 norm); v, w (..., n), ℓ, m (...)."""
    top = torch.maximum(ell, m)
    top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))  # both zero: stays zero
    r = v * torch.pow(10.0, ell - top).unsqueeze(-1) + w * torch.pow(10.0, m - top).unsqueeze(-1)
    u, dl = _normalise(r)
    return u, top + dl


# ---------------------------------------------------------------------------------------------
# The recurrent route


def _recurrent_module(model) -> nn.Module | None:
    """The recurrent module the route runs through, or None for the autograd route."""
    from .train import SequenceModel

    if isinstance(model, SequenceModel):
        model = model.rnn
    if isinstance(model, nn.Module) and getattr(model, "mode", None) in (
        "RNN_TANH", "RNN_RELU", "LSTM", "GRU"
    ):  # fmt: skip
        if getattr(model, "proj_size", 0):
            return None  # projected h: autograd route
        if not hasattr(model, "weight_ih_l0"):
            return None
        return model
    return None


def _top_gradient(model, rnn, x: Tensor, ts: int, grad_output, dtype) -> Tensor:
    """∂L/∂out (B, T, D·H) of the recurrent module's output sequence (batch first).

    For the module itself: grad_output (default ones) at position t* and zero elsewhere. For a
    SequenceModel: the head's VJP, by autograd on the head alone (the head is not recurrent).
    """
    B, T, _ = x.shape
    width = rnn.hidden_size * (2 if rnn.bidirectional else 1)
    if rnn is model:
        g = x.new_zeros((B, T, width))
        g[:, ts] = _grad_output(grad_output, (B, width), x)
        return g
    # SequenceModel: run the recurrent part without a graph, differentiate the head only
    with torch.no_grad():
        out = _run_rnn(rnn, x)  # (B, T, D·H)
    out = out.detach().requires_grad_(True)
    head = model.head
    if head.weight.dtype != x.dtype:
        head = copy.deepcopy(head).to(dtype=x.dtype)
    with torch.enable_grad():
        y = head(out[:, -1]) if model.readout == "last" else head(out)[:, ts]  # (B, O)
        go = _grad_output(grad_output, tuple(y.shape), y)
        (g,) = torch.autograd.grad(y, out, go)
    return g


def _run_rnn(rnn, x: Tensor) -> Tensor:
    """The top layer's output sequence (B, T, D·H) by the closed-form cells in x's dtype."""
    return _layer_states(rnn, x)[1]


def _layer_states(rnn, x: Tensor):
    """Per layer and direction: (CellParams, input in processing order, states (B, T, S));
    and the top layer's output (B, T, D·H) in sequence order. Initial states are zero."""
    D = 2 if rnn.bidirectional else 1
    H = rnn.hidden_size
    runs = []
    inp = x
    for layer in range(rnn.num_layers):
        outs, per = [], []
        for d in range(D):
            p = _cells.params_from_module(rnn, layer, d).detach().to(dtype=x.dtype)
            u = inp.flip(1) if d else inp
            st = _flow.forward_states(p, u, x.new_zeros((x.shape[0], p.state_size)))
            if not bool(torch.isfinite(st).all()):
                raise _fail("x", f"drives layer {layer}'s states to NaN/inf",
                            "check the weights and inputs, or pass dtype=torch.float64")  # fmt: skip
            per.append((p, u, st))
            h = st[..., :H]
            outs.append(h.flip(1) if d else h)
        runs.append(per)
        inp = torch.cat(outs, dim=-1)  # (B, T, D·H)
    return runs, inp


def _recurrent_logs(rnn, x: Tensor, g_top: Tensor) -> Tensor:
    """log10 ‖∂L/∂x_{b,k}‖ (B, T) for the gradient g_top (B, T, D·H) on the top output."""
    runs, _ = _layer_states(rnn, x)
    B, T, _ = x.shape
    H = rnn.hidden_size
    # the gradient on the current layer's output sequence, log space: (B, T, D·H), (B, T)
    e_v, e_l = _normalise(g_top)
    for per in reversed(runs):
        in_v, in_l = None, None  # gradient on this layer's input, summed over directions
        for d, (p, u, st) in enumerate(per):
            S, I = p.state_size, p.input_size
            ev = e_v[..., d * H : (d + 1) * H]  # (B, T, H), norm ≤ 1
            el = e_l
            if d:  # processing order
                ev, el = ev.flip(1), el.flip(1)
            gv = u.new_zeros((B, T, I))
            gl = u.new_full((B, T), float("-inf"))
            v = u.new_zeros((B, S))
            ell = u.new_full((B,), float("-inf"))
            pad = u.new_zeros((B, S - H))
            s0 = u.new_zeros((B, S))
            c = _flow.time_chunk(p, B)
            for b in range(T, 0, -c):
                a = max(0, b - c)
                cache = _flow.cache_range(p, u, st, s0, a, b)
                for j in range(b - a - 1, -1, -1):
                    k = a + j
                    cj = _flow._slice(cache, j)
                    v, ell = _add(v, ell, torch.cat([ev[:, k], pad], -1), el[:, k])
                    w, dw = _normalise(_cells.input_vjp_from_cache(p, cj, v))
                    gv[:, k], gl[:, k] = w, ell + dw
                    v, dv = _normalise(_cells.vjp_from_cache(p, cj, v))  # δ_{k-1} ∝ J_kᵀ δ_k
                    ell = ell + dv
            if d:
                gv, gl = gv.flip(1), gl.flip(1)
            if in_v is None:
                in_v, in_l = gv, gl
            else:
                in_v, in_l = _add(in_v, in_l, gv, gl)
        e_v, e_l = in_v, in_l
    return e_l  # (B, T): the bottom layer's input is x


# ---------------------------------------------------------------------------------------------
# The autograd route


def _grad_output(grad_output, shape: tuple[int, ...], ref: Tensor) -> Tensor:
    """grad_output broadcast to ``shape`` (B, ...) in ref's dtype/device; default ones."""
    if grad_output is None:
        return ref.new_ones(shape)
    if not isinstance(grad_output, Tensor):
        raise _fail("grad_output", f"is a {type(grad_output).__name__}", "pass a torch.Tensor")
    g = grad_output.detach().to(device=ref.device, dtype=ref.dtype)
    try:
        g = g.expand(shape) if g.dim() < len(shape) or g.shape[0] == 1 else g
    except RuntimeError:
        pass
    if tuple(g.shape) != tuple(shape):
        raise _fail("grad_output", f"has shape {tuple(grad_output.shape)}",
                    f"pass the shape of the chosen output, {tuple(shape)} (or its trailing "
                    f"{tuple(shape[1:])} for every sample)")  # fmt: skip
    if not bool(torch.isfinite(g).all()):
        raise _fail("grad_output", "contains NaN or inf", "pass a finite gradient")
    return g


def _pick_output(out, ts_arg: int, T: int, B: int):
    """The chosen output (B, ...) of a model's return value."""
    if isinstance(out, (tuple, list)):
        if not out or not isinstance(out[0], Tensor):
            raise _fail("model", "returned a tuple whose first entry is not a tensor",
                        "return (B, T, ·), (B, ·), or a tuple (output, state) as nn.RNN does")  # fmt: skip
        out = out[0]
    if not isinstance(out, Tensor):
        raise _fail("model", f"returned a {type(out).__name__}", "return a tensor")
    if out.dim() >= 3 and out.shape[0] == B and out.shape[1] == T:
        return out[:, ts_arg % T], True  # a sequence (B, T, ·)
    if out.dim() >= 1 and out.shape[0] == B:
        return out, False  # a final output (B, ·)
    raise _fail("model", f"returned shape {tuple(out.shape)} for x of shape (B={B}, T={T}, ·)",
                "use a batch_first model returning (B, T, ·) or (B, ·)")  # fmt: skip


def _autograd_norms(model, x: Tensor, ts: int, grad_output, dtype) -> tuple[Tensor, bool]:
    """(‖∂L/∂x_{b,k}‖ (B, T) by one backward pass, whether the output was a sequence)."""
    B, T, _ = x.shape
    if isinstance(model, nn.Module):
        ref = next(iter(model.parameters()), None)
        if ref is not None and dtype is not None and ref.dtype != dtype:
            model = copy.deepcopy(model).to(dtype=dtype)
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        y, seq = _pick_output(model(xg), ts, T, B)
        go = _grad_output(grad_output, tuple(y.shape), y)
        (g,) = torch.autograd.grad(y, xg, go, allow_unused=True)
    if g is None:
        return x.new_zeros((B, T)), seq
    return torch.linalg.vector_norm(g.detach(), dim=-1), seq  # (B, T)


# ---------------------------------------------------------------------------------------------
# Public


def _device_dtype(model, x: Tensor, dtype):
    ref = None
    if isinstance(model, nn.Module):
        ref = next(iter(model.parameters()), None)
    dev = ref.device if ref is not None else x.device
    dt = dtype or (ref.dtype if ref is not None else x.dtype)
    return dev, dt


def input_gradients(
    model,
    x: Tensor,
    target_step: int = -1,
    grad_output: Tensor | None = None,
    dtype: torch.dtype | None = None,
    per_sample: bool = False,
) -> pd.DataFrame:
    """‖∂L/∂x_k‖₂ for every input position k of a sequence model, exact at any T.

    ``model`` maps x (B, T, I) (batch first; a stock ``nn.RNN/LSTM/GRU`` in its own layout) to
    a sequence (B, T, ·), a tuple ``(output, state)`` as ``nn.RNN`` returns (the output is
    used), or a final output (B, ·); any callable works (e.g. ``lambda x: enc(x, mask=m)``).
    The loss is L = Σ_b ⟨g_b, y_b⟩ with y the output at position ``target_step`` of a sequence
    (ignored for a final output) and g = ``grad_output`` ((B, ·) or (·,); default all ones, i.e.
    L = sum of y; for a model ending in a LayerNorm with unit gain that sum does not depend on
    x, so pass a random ``grad_output`` there).

    Stock and gradlab RNN/LSTM/GRU (any layers, bidirectional) and
    ``gradlab.train.SequenceModel`` with a recurrent cell go the recurrent route: BPTT in log
    space (see :mod:`gradlab._input_grad`), so the norms at T = 10⁴ and beyond do not underflow;
    initial states are zero, inter-layer dropout is off (eval). Any other model goes through one
    autograd backward pass (its norms underflow where float does). Both run in ``dtype``
    (default: the model's) on the model's device.

    Columns: ``step`` (position k), ``lag`` (t* - k for a sequence output, T-1-k for a final
    one; negative for positions after t*, which a bidirectional or non-causal model can see),
    ``quantity`` in {"grad_norm", "log10_grad_norm"}, ``batch_index`` (-1: the batch mean of
    the per-sample norms, and its log10; ≥ 0 each sample, with ``per_sample``), ``value``.
    "log10_grad_norm" is computed in log space (exact where "grad_norm" underflows to 0).

    Examples:
        >>> import torch, gradlab
        >>> g = gradlab.input_gradients(torch.nn.GRU(3, 8, batch_first=True), torch.randn(2, 100, 3))
        >>> mean = g[(g["quantity"] == "log10_grad_norm") & (g["batch_index"] == -1)]
        >>> curve = mean.set_index("lag")["value"]
        >>> bool(curve.loc[99] < curve.loc[0])
        True
    """
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise _fail("x", f"has shape {shape}", "pass (B, T, I) (or (T, B, I) for a stock "
                    "recurrent module with batch_first=False)")  # fmt: skip
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise _fail("dtype", f"is {dtype!r}", "pass a floating torch.dtype, e.g. torch.float64")
    rnn = _recurrent_module(model)
    dev, dt = _device_dtype(model, x, dtype)
    if rnn is not None and rnn is model and not rnn.batch_first:
        x = x.transpose(0, 1)
    B, T, _ = x.shape
    if T == 0 or B == 0:
        raise _fail("x", f"has shape {tuple(x.shape)}", "pass at least one sample and one step")
    if isinstance(target_step, bool) or not isinstance(target_step, (int, np.integer)) or not (
        -T <= target_step < T
    ):
        raise _fail("target_step", f"is {target_step!r} but x has T = {T} steps",
                    f"pass a position in [-{T}, {T - 1}] (-1 = the last)")  # fmt: skip
    ts = int(target_step) % T
    x = x.detach().to(device=dev, dtype=dt)
    if not bool(torch.isfinite(x).all()):
        raise _fail("x", "contains NaN or inf", "remove them (e.g. torch.nan_to_num)")
    if rnn is not None:
        with torch.no_grad():
            if rnn is not model and model.readout == "last":
                ts = T - 1
            g_top = _top_gradient(model, rnn, x, ts, grad_output, dt)
            logs = _recurrent_logs(rnn, x, g_top)  # (B, T)
    else:
        norms, seq = _autograd_norms(model, x, ts, grad_output, dtype)
        logs = torch.log10(norms)
        if not seq:
            ts = T - 1  # a final output: lags count back from the last input
    lv = logs.detach().to("cpu", torch.float64).numpy()  # (B, T)
    # mean of the per-sample norms, in log space: log10 mean_b 10^ℓ_b
    top = np.max(lv, axis=0)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        mean_log = safe + np.log10(np.mean(10.0 ** (lv - safe), axis=0))
    mean_log = np.where(np.isneginf(top), -np.inf, mean_log)
    k = np.arange(T)
    lag = ts - k
    rows_l = [mean_log[None, :]]
    bidx = [np.full(T, -1)]
    if per_sample:
        rows_l.append(lv)
        bidx.append(np.repeat(np.arange(B), T))
    logs_all = np.concatenate([r.reshape(-1) for r in rows_l])
    bi = np.concatenate(bidx)
    n = logs_all.size
    steps = np.tile(k, n // T)
    lags = np.tile(lag, n // T)
    with np.errstate(over="ignore"):
        vals = 10.0**logs_all
    return pd.DataFrame(
        {
            "step": np.concatenate([steps, steps]),
            "lag": np.concatenate([lags, lags]),
            "quantity": np.repeat(["grad_norm", "log10_grad_norm"], n),
            "batch_index": np.concatenate([bi, bi]),
            "value": np.concatenate([vals, logs_all]),
        }
    )
