"""Gradient flow through time: where BPTT gradients vanish or explode, measured exactly.

Every function takes a recurrent ``model`` — a stock ``torch.nn.RNN``/``LSTM``/``GRU`` (any
``num_layers``, ``batch_first`` or not, bidirectional; also :mod:`gradlab.models`) or a
:class:`gradlab._cells.CellParams` — and its input ``x`` in the module's own layout ((B, T, I) if
``batch_first`` else (T, B, I); (T, I) unbatched; always (B, T, I) for ``CellParams``). The
analysed layer is ``layer`` (default -1, the top one) and ``direction`` (1 = the reverse half
of a bidirectional module). A layer above 0 is driven by the outputs of the layers below, run
here with the closed-form cells (both directions concatenated, as ``torch.nn`` does; no
inter-layer dropout, i.e. eval mode).

Notation. s_t is the full state of the analysed layer after step t (s = h for RNN/GRU,
s = (h, c) for LSTM, size S), J_t = ∂s_t/∂s_{t-1} the one-step Jacobian, and for t ≥ k
P_{t,k} = ∂s_t/∂s_k = J_t ⋯ J_{k+1} (P_{k,k} = I). Positions: the ``step``, ``t``, ``k`` and
``target_step`` of every function are positions in the ORIGINAL sequence (the index of the
module's output); a reverse direction processes them from T-1 down to 0, so its "earlier" states
have larger positions. ``lag`` is always the number of recurrence steps between the two states
(≥ 0).

Numerics: analyses run in the model's dtype (pass ``dtype=torch.float64``, recommended, to
analyse a float32 model in double precision) on the model's device; ``x`` is moved there.
Magnitudes are carried in log10 (rescaled vectors and matrices with the scale kept apart), so
products over 10⁵ steps neither under- nor overflow. Tables are tidy pandas DataFrames, one row
per observation, with ``quantity`` and ``value`` columns; values are copied to numpy only when
the table is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from . import _bptt, _flow, _lyapunov
from ._cells import CellParams, module_kind, params_from_module
from ._credit import credit_reach
from ._input_grad import input_gradients

__all__ = [
    "gradient_flow",
    "flow_map",
    "jacobian_spectrum",
    "lyapunov_spectrum",
    "bptt_by_lag",
    "input_gradients",
    "credit_reach",
]


# ---------------------------------------------------------------------------------------------
# Input resolution shared by every function


def _fail(fn: str, arg: str, problem: str, fix: str) -> ValueError:
    return ValueError(f"{fn}: argument `{arg}` {problem}; fix: {fix}")


def _check_finite(fn: str, arg: str, t: Tensor, fix: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise _fail(fn, arg, "contains NaN or inf", fix)


def _layout(model) -> tuple[str, int, int, bool, bool]:
    """(kind, num_layers, directions, batch_first, is_module) of a model or CellParams."""
    if isinstance(model, CellParams):
        return model.kind, 1, 2, True, False
    if not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"model must be an nn.RNN/LSTM/GRU (or gradlab.models.*) or a CellParams, "
            f"got {type(model).__name__}"
        )
    kind = module_kind(model)
    if getattr(model, "proj_size", 0):
        raise NotImplementedError(
            f"{type(model).__name__} with proj_size={model.proj_size} is not supported "
            f"(the state h would be projected); use proj_size=0"
        )
    D = 2 if getattr(model, "bidirectional", False) else 1
    return (
        kind,
        int(getattr(model, "num_layers", 1)),
        D,
        bool(getattr(model, "batch_first", 0)),
        True,
    )


def _params(model, layer: int, direction: int) -> CellParams:
    if isinstance(model, CellParams):
        return model
    return params_from_module(model, layer, direction)


def _state_parts(fn: str, h0, unbatched: bool):
    """Split ``h0`` into (h-part, c-part) tensors with a batch axis (either may be None)."""
    if h0 is None:
        return None, None
    if isinstance(h0, (tuple, list)):
        if len(h0) != 2:
            raise _fail(fn, "h0", f"is a sequence of {len(h0)} tensors", "pass h0 or (h0, c0)")
        h, c = h0
    else:
        h, c = h0, None
    out = []
    for name, t in (("h0", h), ("c0", c)):
        if t is None:
            out.append(None)
            continue
        if not isinstance(t, Tensor):
            raise _fail(fn, name, f"is a {type(t).__name__}", "pass a torch.Tensor")
        out.append(t.unsqueeze(-2) if unbatched else t)
    return out[0], out[1]


def _initial_state(
    fn: str, p: CellParams, hc, layer: int, direction: int, D: int, B: int, ref: Tensor
) -> Tensor:
    """s_{-1} (B, S) of layer/direction from (h-part, c-part) in module (D·L, B, ·) or per-layer
    (B, H) / (B, S) form; zeros where not given."""
    H, S = p.hidden_size, p.state_size
    parts = []
    for name, t, width in (("h0", hc[0], H), ("c0", hc[1], H)):
        if t is None:
            parts.append(None)
            continue
        t = t.detach().to(device=ref.device, dtype=ref.dtype)
        if t.dim() == 3:  # module convention (D·num_layers, B, H)
            t = t[layer * D + direction]
        if t.dim() != 2 or t.shape[0] != B or t.shape[1] not in (width, S):
            raise _fail(
                fn,
                name,
                f"has shape {tuple(t.shape)}",
                f"pass (num_layers*directions, B={B}, {width}) as torch.nn does, "
                f"or ({B}, {width}) for the analysed layer",
            )
        _check_finite(fn, name, t, "pass a finite initial state")
        parts.append(t)
    h, c = parts
    if h is not None and h.shape[1] == S and S != H:  # full LSTM state (h, c) given as h0
        return h
    s = ref.new_zeros((B, S))
    if h is not None:
        s[:, :H] = h
    if c is not None:
        if p.kind != "lstm":
            raise _fail(fn, "c0", f"was given for a {p.kind} cell", "pass c0 only for an LSTM")
        s[:, H:] = c[:, :H]
    return s


def _states(fn: str, p: CellParams, u: Tensor, s0: Tensor) -> Tensor:
    st = _flow.forward_states(p, u, s0)
    if not bool(torch.isfinite(st).all()):
        bad = int((~torch.isfinite(st)).flatten(2).any(-1).any(0).nonzero()[0])
        raise _fail(
            fn,
            "x",
            f"drives the states to NaN/inf (first at processing step {bad})",
            "check the weights and inputs for overflow, or analyse in dtype=torch.float64",
        )
    return st


def _resolve(
    model, x, layer: int, direction: int, h0, *, fn: str, dtype: torch.dtype | None = None
) -> tuple[CellParams, Tensor, Tensor]:
    """(CellParams, layer input (B, T, I) in processing order, s_{-1} (B, S)).

    The parameters are detached and cast to ``dtype`` (default: theirs); the input is moved to
    their device and dtype. For a reverse direction the returned input is time-reversed, so
    processing step j is original position T-1-j. Layers below ``layer`` are run here.
    """
    kind, L, D, batch_first, is_module = _layout(model)
    if not isinstance(layer, int) or not -L <= layer < L:
        raise _fail(
            fn,
            "layer",
            f"is {layer!r} but the model has {L} layer(s)",
            f"pass an int in [-{L}, {L - 1}] (-1 = top layer)",
        )
    layer = layer % L
    if direction not in tuple(range(D)):
        raise _fail(
            fn,
            "direction",
            f"is {direction!r} but the model has {D} direction(s)",
            "pass 0 (forward)" + (" or 1 (reverse)" if D == 2 else ""),
        )
    ref_p = _params(model, layer, direction)
    dt = dtype or ref_p.w_hh.dtype
    dev = ref_p.w_hh.device
    if isinstance(x, torch.nn.utils.rnn.PackedSequence):
        raise _fail(
            fn, "x", "is a PackedSequence (a variable-length batch); the analysis follows each "
            "sample's exact trajectory, and padding is not part of it",
            "analyse each sample alone, unpadded: `for s in "
            "torch.nn.utils.rnn.unpack_sequence(x): " + fn + "(model, s.unsqueeze(0))` "
            "(batch_first=True modules), or gradlab.record(model) the packed batch in training",
        )
    if not isinstance(x, Tensor):
        raise _fail(fn, "x", f"is a {type(x).__name__}", "pass a torch.Tensor")
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(0 if batch_first or not is_module else 1)
    if x.dim() != 3:
        raise _fail(
            fn,
            "x",
            f"has shape {tuple(x.shape)}",
            "pass (B, T, I) (batch_first) or (T, B, I), or (T, I) unbatched",
        )
    if is_module and not batch_first:
        x = x.transpose(0, 1)  # (B, T, I)
    B, T, I = x.shape
    in_size = _params(model, 0, 0).input_size
    if I != in_size:
        lay = "(B, T, I)" if batch_first or not is_module else "(T, B, I)"
        raise _fail(
            fn,
            "x",
            f"has {I} input features but the model expects input_size={in_size}",
            f"pass x of shape {lay} with I={in_size}",
        )
    if T == 0:
        raise _fail(fn, "x", "has T = 0 time steps", "pass a sequence with at least one step")
    if B == 0:
        raise _fail(fn, "x", "has batch size 0", "pass at least one sample")
    x = x.detach().to(device=dev, dtype=dt)
    _check_finite(fn, "x", x, "remove NaN/inf from the input (e.g. torch.nan_to_num)")
    hc = _state_parts(fn, h0, unbatched)
    inp = x
    with torch.no_grad():
        for lo in range(layer):
            outs = []
            for d in range(D):
                pl = _params(model, lo, d).detach().to(dtype=dt)
                s0 = _initial_state(fn, pl, hc, lo, d, D, B, x)
                st = _states(fn, pl, inp if d == 0 else inp.flip(1), s0)[..., : pl.hidden_size]
                outs.append(st if d == 0 else st.flip(1))
            inp = torch.cat(outs, dim=-1)  # (B, T, D·H)
        p = ref_p.detach().to(dtype=dt)
        if is_module:
            s0 = _initial_state(fn, p, hc, layer, direction, D, B, x)
        else:  # a CellParams is one layer and one direction: module-form h0 is (1, B, H)
            s0 = _initial_state(fn, p, hc, 0, 0, 1, B, x)
    u = inp.flip(1) if direction == 1 else inp
    return p, u, s0


def _position(T: int, direction: int, j):
    """Original position of processing step j (int or array)."""
    return T - 1 - j if direction == 1 else j


def _processing(fn: str, arg: str, pos: int, T: int, direction: int) -> int:
    if isinstance(pos, bool) or not isinstance(pos, (int, np.integer)) or not -T <= pos < T:
        raise _fail(
            fn,
            arg,
            f"is {pos!r} but x has T = {T} steps",
            f"pass a position in [-{T}, {T - 1}] (-1 = the last position)",
        )
    pos = int(pos) % T
    return T - 1 - pos if direction == 1 else pos


def _np(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


# ---------------------------------------------------------------------------------------------
# 1. gradient_flow


def gradient_flow(
    model,
    x: Tensor,
    *,
    target_step: int = -1,
    layer: int = -1,
    direction: int = 0,
    h0=None,
    per_sample: bool = False,
    grad_output: Tensor | None = None,
    dtype: torch.dtype | None = None,
) -> pd.DataFrame:
    """log10 norm of the BPTT gradient reaching every state s_k, k ≤ t*, from a loss at t*.

    The loss is L = ⟨u, h_{t*}⟩ per sample: by default u = 1/√H · (1, …, 1) on h (zero on c),
    i.e. the gradient of sum(h_{t*})/√H, a unit vector; ``grad_output`` (B, H) or (H,) sets
    δ_{t*} = ∂L/∂h_{t*} of your own loss ((B, 2H) for an LSTM also sets ∂L/∂c_{t*}). Then
    δ_{k-1} = J_kᵀ δ_k (a VJP per step, no Jacobian formed), propagated in log space: the unit
    vector δ_k/‖δ_k‖ is carried with log10 ‖δ_k‖ separately, so T = 10⁵ steps at any rate are
    exact (a zero gradient gives -inf, never NaN). Memory: the states plus one time chunk of
    step intermediates (T = 100,000, B = 1, H = 128 runs in well under 1 GB).

    ``target_step`` is a position in the original sequence (the index of the module's output,
    -1 = last). For ``direction=1`` the reverse half reaches position t* last when t* = 0, so
    pass ``target_step=0`` to see its longest flow.

    Columns: ``step`` (position k), ``lag`` (steps between k and t*), ``quantity``,
    ``value``; plus ``sample`` if ``per_sample``. Quantities: "log10_grad_norm" (‖δ_k‖ of the
    full state), for an LSTM also "log10_grad_norm_h" and "log10_grad_norm_c" (the h and c parts).
    Without ``per_sample`` the value is the batch MEAN of the per-sample log10 norms (a geometric
    mean of the norms), not the log of the mean norm.

    Examples:
        >>> import torch, gradlab
        >>> lstm = torch.nn.LSTM(4, 16, batch_first=True)
        >>> flow = gradlab.gradient_flow(lstm, torch.randn(2, 300, 4), dtype=torch.float64)
        >>> g = flow[flow["quantity"] == "log10_grad_norm"].set_index("lag")["value"]
        >>> bool(g.loc[299] < g.loc[0] - 10)  # 300 steps back: more than ten decades smaller
        True
    """
    fn = "gradient_flow"
    p, u, s0 = _resolve(model, x, layer, direction, h0, fn=fn, dtype=dtype)
    B, T, _ = u.shape
    ts = _processing(fn, "target_step", target_step, T, direction)
    H, S = p.hidden_size, p.state_size
    with torch.no_grad():
        states = _states(fn, p, u[:, : ts + 1], s0)
        delta = u.new_zeros((B, S))
        if grad_output is None:
            delta[:, :H] = 1.0 / math.sqrt(H)
        else:
            g = grad_output.detach().to(device=u.device, dtype=u.dtype)
            if g.dim() == 1:
                g = g.expand(B, -1)
            if g.dim() != 2 or g.shape[0] != B or g.shape[1] not in (H, S):
                raise _fail(
                    fn,
                    "grad_output",
                    f"has shape {tuple(grad_output.shape)}",
                    f"pass ({B}, {H}) = ∂L/∂h at the target step (or ({H},))",
                )
            _check_finite(fn, "grad_output", g, "pass a finite gradient")
            delta[:, : g.shape[1]] = g
        logs = _flow.gradient_logs(p, u, states, s0, delta, ts)  # (Q, ts+1, B)
    names = ["log10_grad_norm"] + (
        ["log10_grad_norm_h", "log10_grad_norm_c"] if p.kind == "lstm" else []
    )
    vals = _np(logs)  # (Q, n, B)
    n = ts + 1
    j = np.arange(n)
    step, lag = _position(T, direction, j), ts - j
    Q = len(names)
    if not per_sample:
        v = vals.mean(axis=-1)  # (Q, n)
        return pd.DataFrame(
            {
                "step": np.tile(step, Q),
                "lag": np.tile(lag, Q),
                "quantity": np.repeat(names, n),
                "value": v.reshape(-1),
            }
        )
    return pd.DataFrame(
        {
            "step": np.tile(np.repeat(step, B), Q),
            "lag": np.tile(np.repeat(lag, B), Q),
            "sample": np.tile(np.arange(B), Q * n),
            "quantity": np.repeat(names, n * B),
            "value": vals.reshape(-1),
        }
    )


# ---------------------------------------------------------------------------------------------
# 2. flow_map

_NORMS = {"spectral": "log10_jac_norm_spectral", "frobenius": "log10_jac_norm_frobenius"}


def flow_map(
    model,
    x: Tensor,
    *,
    layer: int = -1,
    direction: int = 0,
    norms: Sequence[str] = ("spectral", "frobenius"),
    sample: int = 0,
    h0=None,
    dtype: torch.dtype | None = None,
    spectral_method: str = "lanczos",
) -> pd.DataFrame:
    """The T×T map log10 ‖∂s_t/∂s_k‖ for all t ≥ k (in processing order) of one sample.

    For each source k the product P_{t,k} = J_t P_{t-1,k} is pushed forward in t, batched over a
    block of sources (one GEMM per step), rescaled to unit Frobenius norm with its log10 scale
    kept: never all T² products, never all T Jacobians at once. Frobenius norms are exact.
    Spectral norms: ``spectral_method="lanczos"`` (default) runs batched Lanczos on PᵀP, warm
    started from the previous step's top right singular vector (a vector at s_k, which does not
    move with t), until the Ritz residual is ≤ 1e-6 of the Ritz value (float32: 64·eps): that
    bounds the error of σ² by 1e-6 relative, i.e. ≤ 2.2e-7 in log10 σ, and a Ritz value never
    exceeds σ_max; measured against ``torch.linalg.matrix_norm(ord=2)`` the error is ~1e-12 in
    float64 (the Ritz value converges quadratically in the residual). ``"svd"`` computes
    ``torch.linalg.matrix_norm(ord=2)`` of every product (exact, slower for S ≳ 64).

    Columns: ``t`` and ``k`` (original positions of s_t and s_k), ``lag`` (steps from k to t),
    ``quantity`` in {"log10_jac_norm_spectral", "log10_jac_norm_frobenius"}, ``value``.
    The lag-0 diagonal is the identity: 0 and log10 √S.

    Examples:
        >>> import torch, gradlab
        >>> rnn = torch.nn.RNN(3, 8, batch_first=True)
        >>> m = gradlab.flow_map(rnn, torch.randn(1, 20, 3), norms=("spectral",))
        >>> len(m) == 20 * 21 // 2  # one row per pair k <= t
        True
    """
    fn = "flow_map"
    norms = (norms,) if isinstance(norms, str) else tuple(norms)
    bad = [n for n in norms if n not in _NORMS]
    if bad or not norms:
        raise _fail(fn, "norms", f"is {norms!r}", "pass a subset of ('spectral', 'frobenius')")
    if spectral_method not in ("lanczos", "svd"):
        raise _fail(fn, "spectral_method", f"is {spectral_method!r}", "pass 'lanczos' or 'svd'")
    p, u, s0 = _resolve(model, x, layer, direction, h0, fn=fn, dtype=dtype)
    B, T, _ = u.shape
    if isinstance(sample, bool) or not isinstance(sample, int) or not -B <= sample < B:
        raise _fail(
            fn, "sample", f"is {sample!r} but x has batch size {B}", f"pass an int in [0, {B - 1}]"
        )
    sample %= B
    u1, s01 = u[sample : sample + 1], s0[sample : sample + 1]
    with torch.no_grad():
        st1 = _states(fn, p, u1, s01)
        lf, ls = _flow.flow_map_logs(
            p,
            u1,
            st1,
            s01,
            spectral=spectral_method if "spectral" in norms else None,
            frobenius="frobenius" in norms,
        )
    ti, ki = np.tril_indices(T)
    frames = []
    for name in norms:
        m = _np(ls if name == "spectral" else lf)
        frames.append(
            pd.DataFrame(
                {
                    "t": _position(T, direction, ti),
                    "k": _position(T, direction, ki),
                    "lag": ti - ki,
                    "quantity": _NORMS[name],
                    "value": m[ti, ki],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# 3. jacobian_spectrum


def jacobian_spectrum(
    model,
    x: Tensor,
    *,
    lags: Sequence[int] = (1, 10),
    steps: int | Sequence[int] | None = None,
    layer: int = -1,
    direction: int = 0,
    h0=None,
    dtype: torch.dtype | None = None,
) -> pd.DataFrame:
    """Singular values of ∂s_t/∂s_{t-L} = J_t ⋯ J_{t-L+1} for each lag L, step t and sample.

    Lag 1 is the one-step Jacobian. Products are built factor by factor, rescaled to unit
    Frobenius norm with the log10 scale kept, then ``torch.linalg.svdvals`` (float64 products of
    any length neither under- nor overflow; singular values below ≈ eps·σ_max of a product are
    round-off). Data for dynamical-isometry plots (Pennington, Schoenholz & Ganguli 2017).

    ``steps``: positions in the original sequence (int or list); default: the last step the
    direction processes (T-1 forward, 0 reverse). A lag L needs L steps of history: pairs with
    fewer are left out (a ValueError if none is left).

    Columns: ``lag``, ``step`` (position t), ``sample``, ``index`` (rank, 0 = largest),
    ``quantity`` in {"singular_value", "log10_singular_value"}, ``value``.

    Examples:
        >>> import torch, gradlab
        >>> gru = torch.nn.GRU(3, 8, batch_first=True)
        >>> s = gradlab.jacobian_spectrum(gru, torch.randn(2, 30, 3), lags=(1, 10))
        >>> s[s["quantity"] == "singular_value"].groupby("lag")["index"].nunique().tolist()
        [8, 8]
    """
    fn = "jacobian_spectrum"
    lags = [lags] if isinstance(lags, int) else list(lags)
    if not lags or any(
        isinstance(L, bool) or not isinstance(L, (int, np.integer)) or L < 1 for L in lags
    ):
        raise _fail(fn, "lags", f"is {lags!r}", "pass positive ints, e.g. lags=(1, 10)")
    lags = sorted({int(L) for L in lags})
    p, u, s0 = _resolve(model, x, layer, direction, h0, fn=fn, dtype=dtype)
    B, T, _ = u.shape
    if steps is None:
        proc = [T - 1]
    else:
        steps = [steps] if isinstance(steps, (int, np.integer)) else list(steps)
        if not steps:
            raise _fail(fn, "steps", "is empty", "pass positions, or None for the last step")
        proc = [_processing(fn, "steps", s, T, direction) for s in steps]
    if all(L > t + 1 for L in lags for t in proc):
        raise _fail(
            fn,
            "lags",
            f"{lags} all exceed the history before steps (T = {T})",
            "pass smaller lags or later steps",
        )
    with torch.no_grad():
        states = _states(fn, p, u[:, : max(proc) + 1], s0)
        spec = _flow.product_spectra(p, u, states, s0, proc, lags)
    S = p.state_size
    frames = []
    for L in lags:
        ok = [i for i, t in enumerate(proc) if L <= t + 1]
        if not ok:
            continue
        lv = _np(spec[L][:, ok])  # (B, n, S)
        n = len(ok)
        pos = _position(T, direction, np.asarray(proc)[ok])
        base = {
            "lag": L,
            "step": np.tile(np.repeat(pos, S), B),
            "sample": np.repeat(np.arange(B), n * S),
            "index": np.tile(np.arange(S), B * n),
        }
        with np.errstate(over="ignore"):
            frames.append(
                pd.DataFrame(
                    {**base, "quantity": "singular_value", "value": 10.0 ** lv.reshape(-1)}
                )
            )
        frames.append(
            pd.DataFrame({**base, "quantity": "log10_singular_value", "value": lv.reshape(-1)})
        )
    return pd.concat(frames, ignore_index=True)


# ---------------------------------------------------------------------------------------------
# 4. lyapunov_spectrum


def lyapunov_spectrum(
    model,
    x: Tensor,
    *,
    k: int | None = None,
    warmup: int = 100,
    h0=None,
    layer: int = -1,
    direction: int = 0,
    sample: int = 0,
    dtype: torch.dtype | None = None,
    qr_every: int | None = None,
    trace_points: int = 200,
) -> pd.DataFrame:
    """Top-k Lyapunov exponents (natural log per step) of the state dynamics driven by x.

    QR method (Benettin et al. 1980; for RNNs Vogt et al. 2022): k orthonormal tangent vectors
    are pushed through J_t by JVPs and re-orthonormalised by QR; λ_i is the average of
    ln |R_ii| over the T - ``warmup`` steps after the first ``warmup`` steps (the trajectory and
    the tangent vectors evolve from step 0; only the averaging waits). ``k`` defaults to the
    state size S (all exponents). ``qr_every`` fixes the number of steps between QRs; the default
    adapts it so the columns never lose more than 8 digits of conditioning (the sums of ln|R_ii|
    are then the same as with a QR every step, see :mod:`gradlab._lyapunov`).

    Columns: ``index`` (0 = largest), ``quantity``, ``value``, ``step``, ``iteration``.
    quantity "lyapunov_exponent": one row per exponent (``step`` = the last position,
    ``iteration`` = T - warmup). quantity "lyapunov_running": the running estimate of each
    exponent after ``iteration`` averaged steps, ending at position ``step`` (QR times about
    (T - warmup) / ``trace_points`` steps apart, the last one included). Exponents are sorted in decreasing order and the
    running rows follow that ordering.

    Examples:
        >>> import torch, gradlab
        >>> rnn = torch.nn.RNN(3, 8, batch_first=True)
        >>> ly = gradlab.lyapunov_spectrum(rnn, torch.randn(1, 200, 3), k=2, warmup=50)
        >>> ly.loc[ly["quantity"] == "lyapunov_exponent", "index"].tolist()
        [0, 1]
    """
    fn = "lyapunov_spectrum"
    p, u, s0 = _resolve(model, x, layer, direction, h0, fn=fn, dtype=dtype)
    B, T, _ = u.shape
    S = p.state_size
    if k is None:
        k = S
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= S:
        raise _fail(
            fn,
            "k",
            f"is {k!r} but the state size is S = {S}",
            f"pass 1 ≤ k ≤ {S}, or k=None for all exponents",
        )
    if isinstance(warmup, bool) or not isinstance(warmup, (int, np.integer)) or not 0 <= warmup < T:
        raise _fail(
            fn,
            "warmup",
            f"is {warmup!r} but x has T = {T} steps",
            f"pass 0 ≤ warmup < {T}, e.g. warmup={T // 5}, or a longer x",
        )
    if isinstance(sample, bool) or not isinstance(sample, int) or not -B <= sample < B:
        raise _fail(
            fn, "sample", f"is {sample!r} but x has batch size {B}", f"pass an int in [0, {B - 1}]"
        )
    if qr_every is not None and (not isinstance(qr_every, int) or qr_every < 1):
        raise _fail(fn, "qr_every", f"is {qr_every!r}", "pass a positive int or None (adaptive)")
    with torch.no_grad():
        lam, tr, tr_t, finite = _lyapunov.benettin(
            p,
            u[sample],
            s0[sample],
            int(k),
            int(warmup),
            qr_every=qr_every,
            trace_points=trace_points,
        )
    if not finite:
        raise _fail(
            fn,
            "x",
            "drives the states to NaN/inf",
            "check the weights and inputs for overflow, or analyse in dtype=torch.float64",
        )
    lam_np, tr_np = _np(lam), _np(tr)
    order = np.argsort(-lam_np, kind="stable")
    lam_np, tr_np = lam_np[order], tr_np[:, order]
    pick = np.arange(tr_np.shape[0])
    tt = tr_t.numpy()
    final = pd.DataFrame(
        {
            "index": np.arange(k),
            "quantity": "lyapunov_exponent",
            "value": lam_np,
            "step": _position(T, direction, T - 1),
            "iteration": T - warmup,
        }
    )
    running = pd.DataFrame(
        {
            "index": np.tile(np.arange(k), len(pick)),
            "quantity": "lyapunov_running",
            "value": tr_np[pick].reshape(-1),
            "step": np.repeat(_position(T, direction, tt), k),
            "iteration": np.repeat(tt + 1 - warmup, k),
        }
    )
    return pd.concat([final, running], ignore_index=True)


# ---------------------------------------------------------------------------------------------
# 5. bptt_by_lag


def bptt_by_lag(
    model,
    x: Tensor,
    *,
    target_step: int = -1,
    loss: str | Callable[[Tensor], Tensor] = "sum",
    layer: int = -1,
    direction: int = 0,
    h0=None,
    dtype: torch.dtype | None = None,
    return_terms: bool = False,
):
    """The BPTT gradient of a loss at t* split into one term per time step i ≤ t*.

    ∂L/∂W = Σ_i δ_iᵀ ∂s_i/∂W|_immediate, δ_i = ∂L/∂s_i the total gradient on the state from the
    loss at t* (δ_{i-1} = J_iᵀ δ_i), the immediate derivative holding s_{i-1} and x_i fixed
    (Pascanu, Mikolov & Bengio 2013, eqs. 3-5); formulas in :mod:`gradlab._bptt`. The terms sum
    to autograd's gradient of the layer's ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh``
    (the chosen layer and direction of a multi-layer module).

    ``loss``: "sum" (L = sum of h_{t*} over batch and units) or a callable mapping h_{t*}
    (B, H) to a scalar (its gradient is taken by autograd). ``target_step`` is a position in
    the original sequence (the module output's index; -1 = last).

    Columns: ``step`` (position i), ``lag`` (steps from i to t*), ``param``,
    ``quantity`` = "contribution_norm" (Frobenius norm of term i), ``value``.
    With ``return_terms=True`` returns (DataFrame, dict): param -> the terms (t*+1, *shape) in
    processing order, and "step" -> their positions (numpy).

    Examples:
        >>> import torch, gradlab
        >>> rnn = torch.nn.RNN(3, 8, batch_first=True, dtype=torch.float64)
        >>> x = torch.randn(2, 30, 3, dtype=torch.float64)
        >>> df, terms = gradlab.bptt_by_lag(rnn, x, return_terms=True)
        >>> rnn(x)[0][:, -1].sum().backward()  # the same loss, by autograd
        >>> torch.allclose(terms["weight_hh"].sum(0), rnn.weight_hh_l0.grad)
        True
    """
    fn = "bptt_by_lag"
    p, u, s0 = _resolve(model, x, layer, direction, h0, fn=fn, dtype=dtype)
    B, T, _ = u.shape
    ts = _processing(fn, "target_step", target_step, T, direction)
    H, S = p.hidden_size, p.state_size
    with torch.no_grad():
        states = _states(fn, p, u[:, : ts + 1], s0)
    delta = u.new_zeros((B, S))
    if isinstance(loss, str):
        if loss != "sum":
            raise _fail(fn, "loss", f"is {loss!r}", "pass 'sum' or a callable h (B, H) -> scalar")
        delta[:, :H] = 1.0
    elif callable(loss):
        h = states[:, ts, :H].detach().requires_grad_(True)
        with torch.enable_grad():
            val = loss(h)
            if not isinstance(val, Tensor) or val.numel() != 1:
                raise _fail(
                    fn,
                    "loss",
                    "did not return a scalar tensor",
                    "return e.g. a .sum() or .mean() of the (B, H) state",
                )
            (g,) = torch.autograd.grad(val.reshape(()), h, allow_unused=True)
        if g is not None:
            delta[:, :H] = g.detach()
    else:
        raise _fail(fn, "loss", f"is a {type(loss).__name__}", "pass 'sum' or a callable")
    _check_finite(fn, "loss", delta, "use a loss with a finite gradient")
    with torch.no_grad():
        dl = _bptt.deltas(p, u, states, s0, delta, ts)  # (B, ts+1, S)
        norms, terms = _bptt.terms(p, u, states, s0, dl, keep=return_terms)
    j = np.arange(ts + 1)
    step, lag = _position(T, direction, j), ts - j
    df = pd.concat(
        [
            pd.DataFrame(
                {
                    "step": step,
                    "lag": lag,
                    "param": name,
                    "quantity": "contribution_norm",
                    "value": _np(v),
                }
            )
            for name, v in norms.items()
        ],
        ignore_index=True,
    )
    if return_terms:
        return df, {**terms, "step": step}
    return df
