"""credit_map: the BPTT double sum term by term, ‖∂L_t/∂s_k‖ for every loss step t and state k.

With a loss at every step, L = Σ_t L_t and (Pascanu, Mikolov & Bengio 2013, eq. 3-5)

    ∂L/∂W = Σ_t ∂L_t/∂W,    ∂L_t/∂W = Σ_{k≤t} ∂L_t/∂y_t ∂y_t/∂h_t (Π_{j=k+1..t} ∂h_j/∂h_{j-1}) ∂⁺h_k/∂W.

The credit loss t gives to step k travels through δ_{t,k} = ∂L_t/∂s_k, the TOTAL derivative of
L_t with respect to the state s_k (every path from s_k to L_t: through the recurrence and, in a
multi-layer net, through the layers above). :func:`credit_map` returns ‖δ_{t,k}‖ for every
(t, k) that can be nonzero, exactly and in log10, so the double sum is visible term by term;
:func:`credit_reach` reads off how far back the credit of a typical loss reaches.

Algorithm (index letters: b batch, n loss steps of a chunk, j processing steps, s state). The
loss steps are an extra batch axis. Each layer l (top first) and direction is swept once in
processing order j = T-1 … 0, carrying V (B, n, S), one vector δ_{t,j} per (sample, loss step):

    δ_{t,j} = J_{j+1}ᵀ δ_{t,j+1} + e_{t,j},
    e_{t,j} = [top layer]   (∂y_t/∂h_j)ᵀ g_t if j is position t, else 0,
              [lower layer] Σ_directions (∂s^{l+1}_j/∂x^{l+1}_j)ᵀ δ^{l+1}_{t,j} (input VJPs),
              [encoder]     + ∂L_t/∂d_{-1} (the decoder's initial-state gradient) at j = S-1,

with g_t = ``direct[:, t]`` = ∂L_t/∂y_t and, for a model with a linear head y_t = W h_t + b,
(∂y_t/∂h_t)ᵀ g_t = Wᵀ g_t (exact, not recurrent). ‖δ_{t,j}‖ is recorded after e is added. Every
vector is a unit vector and a log10 scale (:mod:`gradlab._input_grad`), so T = 10⁴ steps of decay
do not underflow. Cost: O(L · D · T · T_loss) VJPs, batched over (B, T_loss) (one GEMM per
step of shape (B·n, G·H) × (G·H, H)); at step j only the loss steps whose gradient has started
are swept (t ≥ j in a one-sided layer: the triangle, half the square). Memory O(B · n · T · D·H)
for the gradient a layer hands to the layer below, with n (loss steps per chunk) chosen so this
stays within 2²⁴ elements (128 MiB in float64).

Structural zeros are left out: the top layer's forward direction reaches k ≤ t only, a reverse
direction k ≥ t, and every layer of a unidirectional net k ≤ t; below a bidirectional layer
every k is reached; every encoder step is reached by every decoder loss. An LSTM's c-gradient is
the state-space one (h_k held fixed, as in :func:`gradlab.record`), so ∂L_t/∂c_t = 0 where L_t
reads c_t only through h_t (lag 0 of a one-sided layer) and at the last step a direction
processes (no c_{k+1}; the encoder's final c gets the decoder's): those rows are left out too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from . import _cells, _flow
from ._input_grad import _add, _normalise

__all__ = ["credit_map", "credit_reach"]

_FN = "credit_map"
# element budget of the per-chunk tensors (gradients handed down, records): 2**24 (128 MiB f64)
_LOSS_ELEMS = 2**24


def _fail(arg: str, problem: str, fix: str, fn: str = _FN) -> ValueError:
    return ValueError(f"{fn}: argument `{arg}` {problem}; fix: {fix}")


# ---------------------------------------------------------------------------------------------
# The models: (module name, recurrent module, input) chains


_SUPPORTED = (
    "a stock nn.RNN/LSTM/GRU, gradlab.models.RNN/LSTM/GRU, gradlab.train.SequenceModel with a "
    "recurrent cell, or gradlab.train.EncoderDecoder"
)


def _check_rnn(rnn, name: str) -> None:
    if getattr(rnn, "mode", None) not in ("RNN_TANH", "RNN_RELU", "LSTM", "GRU") or not hasattr(
        rnn, "weight_ih_l0"
    ):
        raise _fail("model", f"({name}: {type(rnn).__name__}) is not supported",
                    f"pass {_SUPPORTED}")  # fmt: skip
    if getattr(rnn, "proj_size", 0):
        raise _fail("model", f"({name}) has proj_size={rnn.proj_size} (a projected h_t is not "
                    "the state the recurrence carries)",
                    "use proj_size=0, or gradlab.input_gradients for input-side credit")  # fmt: skip


def _check_seq(x, arg: str) -> None:
    if isinstance(x, nn.utils.rnn.PackedSequence):
        raise _fail(arg, "is a PackedSequence",
                    "pass a padded tensor (nn.utils.rnn.pad_packed_sequence), or one sample at a "
                    "time: credit_map(model, s[None], ...) for s in "
                    "torch.nn.utils.rnn.unpack_sequence(packed)")  # fmt: skip
    if not isinstance(x, Tensor) or x.dim() != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise _fail(arg, f"has shape {shape}", "pass (B, T, I) (or (T, B, I) for a stock "
                    "recurrent module with batch_first=False)")  # fmt: skip
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise _fail(arg, f"has shape {tuple(x.shape)}", "pass at least one sample and one step")
    if not bool(torch.isfinite(x).all()):
        raise _fail(arg, "contains NaN or inf", "remove them (e.g. torch.nan_to_num)")


def _states(rnn, x: Tensor, s0s: list[list[Tensor]] | None, dt: torch.dtype):
    """Per layer and direction (CellParams, input in processing order, states (B, T, S), s0)."""
    D = 2 if rnn.bidirectional else 1
    H = rnn.hidden_size
    B = x.shape[0]
    runs, inp = [], x
    for layer in range(rnn.num_layers):
        outs, per = [], []
        for d in range(D):
            p = _cells.params_from_module(rnn, layer, d).detach().to(device=x.device, dtype=dt)
            u = inp.flip(1) if d else inp
            s0 = s0s[layer][d] if s0s is not None else x.new_zeros((B, p.state_size))
            st = _flow.forward_states(p, u, s0)
            if not bool(torch.isfinite(st).all()):
                raise _fail("x", f"drives layer {layer}'s states to NaN/inf",
                            "check the weights and inputs, or pass dtype=torch.float64")  # fmt: skip
            per.append((p, u, st, s0))
            h = st[..., :H]
            outs.append(h.flip(1) if d else h)
        runs.append(per)
        inp = torch.cat(outs, dim=-1)  # (B, T, D·H)
    return runs


# ---------------------------------------------------------------------------------------------
# One sweep of one layer and direction


def _sweep(p, u, st, s0, *, diag=None, above=None, init=None, want_input=False):
    """Backward sweep of one (layer, direction) for n loss steps at once, processing order.

    diag:  (gv (B, T, H) unit, gl (B, T), pos (n,) long): loss i injects 10^gl gv at j = pos_i.
    above: (ev (B, n, T, H), el (B, n, T)): injected at every j.
    init:  (iv (B, n, S), il (B, n)): injected at j = T-1 (the last state of the sequence).
    Returns log10 ‖δ_h‖ (B, n, T), log10 ‖δ_c‖ (B, n, T) or None, the input gradient
    (gv (B, n, T, I), gl (B, n, T)) or None, and the gradient on s_{-1}: (v (B, n, S), ℓ (B, n)).
    """
    B, T, _ = u.shape
    H, S, I = p.hidden_size, p.state_size, p.input_size
    lstm = p.kind == "lstm"
    if diag is not None:
        n = diag[2].shape[0]
    elif above is not None:
        n = above[1].shape[1]
    else:
        n = init[1].shape[1]
    ninf = float("-inf")
    log_h = u.new_full((B, n, T), ninf)
    log_c = u.new_full((B, n, T), ninf) if lstm else None
    gin = (u.new_zeros((B, n, T, I)), u.new_full((B, n, T), ninf)) if want_input else None
    v = u.new_zeros((B, n, S))
    ell = u.new_full((B, n), ninf)
    pad = u.new_zeros((B, n, S - H))
    # first processing step at which loss i injects anything: before it, δ_{t_i} is zero, so
    # only the loss steps with first ≥ j are swept at step j (a contiguous range when the loss
    # steps are sorted: the lower triangle of a one-sided layer costs half the square)
    first = np.full(n, -1)
    if diag is not None:
        first = np.maximum(first, diag[2].cpu().numpy())
    if above is not None:
        nz = torch.isfinite(above[1]).any(0).cpu().numpy()  # (n, T)
        last = np.where(nz.any(1), T - 1 - np.argmax(nz[:, ::-1], axis=1), -1)
        first = np.maximum(first, last)
    if init is not None:
        first[:] = T - 1
    pos = diag[2].cpu().numpy() if diag is not None else None
    c = _flow.time_chunk(p, B)
    for b in range(int(first.max()) + 1, 0, -c):
        a = max(0, b - c)
        cache = _flow.cache_range(p, u, st, s0, a, b)
        for jj in range(b - a - 1, -1, -1):
            j = a + jj
            act = np.flatnonzero(first >= j)
            lo, hi = int(act[0]), int(act[-1]) + 1
            if hi - lo != act.size:
                lo, hi = 0, n
            cj = {key: val[:, jj].unsqueeze(1) for key, val in cache.items()}  # (B, 1, ·)
            vs, es = v[:, lo:hi], ell[:, lo:hi]  # (B, m, S), (B, m)
            if pos is not None:
                idx = (np.flatnonzero(pos[lo:hi] == j)).tolist()
                if idx:
                    w = torch.cat([diag[0][:, j], pad[:, 0]], -1).unsqueeze(1)  # (B, 1, S)
                    m = diag[1][:, j].unsqueeze(1)  # (B, 1)
                    vs[:, idx], es[:, idx] = _add(vs[:, idx], es[:, idx],
                                                  w.expand(B, len(idx), S), m.expand(B, len(idx)))  # fmt: skip
            if above is not None:
                w = torch.cat([above[0][:, lo:hi, j], pad[:, lo:hi]], -1)
                vs, es = _add(vs, es, w, above[1][:, lo:hi, j])
            if init is not None and j == T - 1:
                vs, es = _add(vs, es, init[0][:, lo:hi], init[1][:, lo:hi])
            if lstm:
                log_h[:, lo:hi, j] = es + torch.log10(torch.linalg.vector_norm(vs[..., :H], dim=-1))
                log_c[:, lo:hi, j] = es + torch.log10(torch.linalg.vector_norm(vs[..., H:], dim=-1))
            else:
                log_h[:, lo:hi, j] = es
            if gin is not None:
                w, dw = _normalise(_cells.input_vjp_from_cache(p, cj, vs))  # (B, m, I)
                gin[0][:, lo:hi, j], gin[1][:, lo:hi, j] = w, es + dw
            vs, dv = _normalise(_cells.vjp_from_cache(p, cj, vs))  # δ_{j-1} ∝ J_jᵀ δ_j
            v[:, lo:hi], ell[:, lo:hi] = vs, es + dv
    return log_h, log_c, gin, (v, ell)


def _chain(rnn, runs, n, *, top=None, init=None, want_init=False):
    """Sweep every layer (top first) and direction of one recurrent module for n loss steps.

    top:  (g (B, T, D·H) gradient on the top output, sequence order; t (n,) loss positions).
    init: per layer (v (B, n, S), ℓ (B, n)): gradient on the layer's final state (encoder).
    Returns {(layer, d): (log_h, log_c)} in sequence order (B, n, T) and, with ``want_init``,
    per layer the gradient on the initial state s_{-1} (v, ℓ) (unidirectional modules).
    """
    H = rnn.hidden_size
    L = rnn.num_layers
    out, finals = {}, [None] * L
    e = None  # gradient on the current layer's output, (ev (B, n, T, D·H), el (B, n, T))
    for layer in range(L - 1, -1, -1):
        acc = None
        for d, (p, u, st, s0) in enumerate(runs[layer]):
            T = u.shape[1]
            kw = {}
            if layer == L - 1 and top is not None:
                g, ts = top
                gv, gl = _normalise(g[..., d * H : (d + 1) * H])
                if d:
                    gv, gl = gv.flip(1), gl.flip(1)
                kw["diag"] = (gv, gl, (T - 1 - ts) if d else ts)
            if e is not None:
                ev, el = e[0][..., d * H : (d + 1) * H], e[1]
                kw["above"] = (ev.flip(2), el.flip(2)) if d else (ev, el)
            if init is not None:
                kw["init"] = init[layer]
            lh, lc, gin, fin = _sweep(p, u, st, s0, want_input=layer > 0, **kw)
            if d:
                lh = lh.flip(2)
                lc = None if lc is None else lc.flip(2)
            out[(layer, d)] = (lh, lc)
            finals[layer] = fin
            if gin is not None:
                gv, gl = (gin[0].flip(2), gin[1].flip(2)) if d else gin
                acc = (gv, gl) if acc is None else _add(acc[0], acc[1], gv, gl)
        e = acc
    return out, (finals if want_init else None)


# ---------------------------------------------------------------------------------------------
# Public


def _log_mean(lv: np.ndarray) -> np.ndarray:
    """log10 of the mean over axis 0 of 10^lv, in log space."""
    top = np.max(lv, axis=0)
    safe = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        m = safe + np.log10(np.mean(10.0 ** (lv - safe), axis=0))
    return np.where(np.isneginf(top), -np.inf, m)


def _np(t: Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _loss_steps(loss_steps, T: int) -> list[int]:
    if loss_steps is None:
        return list(range(T))
    if isinstance(loss_steps, (int, np.integer)) and not isinstance(loss_steps, bool):
        loss_steps = [loss_steps]
    try:
        vals = [int(s) for s in loss_steps if not isinstance(s, bool)]
        ok = len(vals) == len(list(loss_steps)) and len(vals) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok or any(not -T <= s < T for s in vals):
        raise _fail("loss_steps", f"is {loss_steps!r} but the output has T = {T} steps",
                    f"pass positions in [-{T}, {T - 1}] (-1 = the last), or None for all")  # fmt: skip
    return sorted({s % T for s in vals})


def _direct(direct, shape: tuple[int, ...], what: str) -> Tensor:
    if not isinstance(direct, Tensor):
        raise _fail("direct", f"is a {type(direct).__name__}", f"pass a tensor of shape {shape} "
                    f"({what})")  # fmt: skip
    if tuple(direct.shape) != tuple(shape):
        raise _fail("direct", f"has shape {tuple(direct.shape)}",
                    f"pass the shape of the output sequence, {tuple(shape)} ({what}): "
                    "direct[:, t] = ∂L_t/∂y_t")  # fmt: skip
    if not bool(torch.isfinite(direct).all()):
        raise _fail("direct", "contains NaN or inf", "pass a finite gradient")
    return direct


def credit_map(
    model,
    x,
    direct: Tensor,
    *,
    per_sample: bool = False,
    dtype: torch.dtype | None = None,
    loss_steps: Sequence[int] | int | None = None,
) -> pd.DataFrame:
    """‖∂L_t/∂s_k‖₂ for every loss step t and state s_k: the BPTT double sum, term by term.

    ``direct`` holds each step's own output gradient ∂L_t/∂y_t, with the shape of the output
    sequence y; the loss is L = Σ_t L_t and L_t is any loss of y_t alone (for
    cross-entropy, ``direct[:, t] = softmax(y_t) - onehot``, divided by whatever the training loss
    divides by). s_k is the state at position k of every layer and direction; the value reported
    is the total derivative δ_{t,k} = ∂L_t/∂s_k (all paths: recurrence and layers above; for
    k = t in the top layer the direct term plus nothing else in a unidirectional net). See
    :mod:`gradlab._credit` for the recursion.

    Models: a stock or :mod:`gradlab.models` ``RNN/LSTM/GRU`` (any ``num_layers``,
    bidirectional; x and direct in the module's layout, y its top-layer output sequence,
    direct (B, T, D·H)); a :class:`gradlab.train.SequenceModel` with a recurrent cell (x (B, T, I);
    ``readout="all"``: y_t = head(h_t), direct (B, T, O); ``readout="last"``: direct (B, O), one
    loss at t = T-1); a :class:`gradlab.train.EncoderDecoder` (x = (src, tgt), direct (B, T, O)),
    whose rows also cover every encoder step: the decoder's initial-state gradient from each loss
    t flows into the encoder's final state (every layer, h and c) and back through the encoder.
    Initial states are zero (the encoder's final state for the decoder); no dropout (eval); the
    model and its parameters' gradients are not touched. Runs in ``dtype`` (default the model's;
    float64 for checks) on the model's device.

    Columns: ``module`` (as in :func:`gradlab.record`: the module's class name for a bare
    recurrent module, "rnn" for a SequenceModel, "encoder"/"decoder"), ``layer``,
    ``direction``, ``loss_step`` (t, a position of the output sequence), ``step`` (k, a position
    of the module's own sequence), ``lag`` (the distance travelled: t − k forward, k − t reverse;
    encoder rows count on one axis with encoder steps 0..S-1 followed by decoder steps
    S..S+T-1, lag = S + t − k), ``batch_index`` (-1: the batch mean of the per-sample norms,
    averaged in log space; ≥ 0 each sample, with ``per_sample``), ``quantity`` in
    {"grad_norm", "log10_grad_norm"} and for an LSTM also {"grad_norm_c", "log10_grad_norm_c"}
    (‖∂L_t/∂h_k‖ and ‖∂L_t/∂c_k‖, the names of :func:`gradlab.record`), ``value``. Only pairs
    (t, k) that can be nonzero are listed (forward: k ≤ t; reverse: k ≥ t; below a
    bidirectional layer and in the encoder: every k; grad_norm_c not at lag 0 of a one-sided
    layer nor at the last processed step of a decoder or plain net, where it is 0 since h_k is
    held fixed). "log10_*" is exact where "*" underflows.

    ``loss_steps`` restricts t (default: all). Cost: O(layers · directions · T · T_loss) VJPs,
    vectorised over batch and loss steps; one layer at B = 64, T = 150, H = 32 takes about a
    second on a 2-core CPU (float32; two layers about 5 s).

    Example::

        model = SequenceModel("lstm", 3, 32, 5, readout="all")
        x, labels = torch.randn(8, 100, 3), torch.randint(5, (8, 100))
        with torch.no_grad():
            y = model(x)                             # (8, 100, 5)
        # cross_entropy(y.reshape(-1, 5), labels.reshape(-1)) averages over B·T terms
        direct = (y.softmax(-1) - nn.functional.one_hot(labels, 5)) / (8 * 100)
        cm = gradlab.credit_map(model, x, direct)    # one row per (t, k ≤ t, quantity)
        reach = gradlab.analysis.credit_reach(cm)    # how far back each loss's credit reaches
        reach[reach.loss_step == -1]                 # the median over loss steps

    Examples:
        >>> import torch, gradlab
        >>> rnn = torch.nn.RNN(3, 8, batch_first=True)
        >>> direct = torch.randn(2, 10, 8)  # ∂L_t/∂y_t of a loss at every step t
        >>> cm = gradlab.credit_map(rnn, torch.randn(2, 10, 3), direct)
        >>> mean = cm[(cm["quantity"] == "grad_norm") & (cm["batch_index"] == -1)]
        >>> len(mean) == 10 * 11 // 2  # one row per pair k <= t
        True
    """
    from .train import EncoderDecoder, SequenceModel

    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise _fail("dtype", f"is {dtype!r}", "pass a floating torch.dtype, e.g. torch.float64")
    if not isinstance(per_sample, bool):
        raise _fail("per_sample", f"is {per_sample!r}", "pass True or False")
    head = None
    if isinstance(model, EncoderDecoder):
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise _fail("x", f"is a {type(x).__name__}", "pass the tuple (src, tgt) that "
                        "EncoderDecoder.forward takes")  # fmt: skip
        src, tgt = x
        _check_seq(src, "x[0] (src)")
        _check_seq(tgt, "x[1] (tgt)")
        chains = [("decoder", model.decoder), ("encoder", model.encoder)]
        head = model.head
    elif isinstance(model, SequenceModel):
        if model.cell == "transformer":
            raise _fail("model", "is a SequenceModel with cell='transformer' (no recurrent "
                        "state)", "use gradlab.input_gradients for attention models")  # fmt: skip
        chains = [("rnn", model.rnn)]
        head = model.head
        _check_seq(x, "x")
    elif isinstance(model, nn.Module) and getattr(model, "mode", None) is not None:
        chains = [(type(model).__name__, model)]
        _check_seq(x, "x")
    else:
        raise _fail("model", f"is a {type(model).__name__}", f"pass {_SUPPORTED}")
    for name, rnn in chains:
        _check_rnn(rnn, name)
    seqs = {"encoder": x[0], "decoder": x[1]} if len(chains) > 1 else {chains[0][0]: x}
    for name, rnn in chains:
        if seqs[name].shape[-1] != rnn.input_size:
            arg = {"decoder": "x[1] (tgt)", "encoder": "x[0] (src)"}.get(name, "x")
            raise _fail(arg, f"has {seqs[name].shape[-1]} features but {name} "
                        f"({type(rnn).__name__}) takes input_size={rnn.input_size}",
                        "pass (B, T, input_size)")  # fmt: skip
    rnn0 = chains[0][1]
    ref = next(iter(rnn0.parameters()))
    dev, dt = ref.device, dtype or ref.dtype
    D = 2 if rnn0.bidirectional else 1
    H = rnn0.hidden_size

    with torch.no_grad():
        if isinstance(model, EncoderDecoder):
            src = src.detach().to(device=dev, dtype=dt)
            xd = tgt.detach().to(device=dev, dtype=dt)
            B, T = xd.shape[:2]
            if src.shape[0] != B:
                raise _fail("x", f"has src batch {src.shape[0]} and tgt batch {B}",
                            "pass src and tgt with the same batch size")  # fmt: skip
            enc_runs = _states(model.encoder, src, None, dt)
            s0s = [[per[0][2][:, -1]] for per in enc_runs]  # final encoder state per layer
            dec_runs = _states(model.decoder, xd, s0s, dt)
            O = head.out_features
            g = _direct(direct, (B, T, O), "batch, decoder steps, head outputs")
        else:
            xx = x
            if head is None and not rnn0.batch_first:
                xx = x.transpose(0, 1)
            xx = xx.detach().to(device=dev, dtype=dt)
            B, T = xx.shape[:2]
            dec_runs = _states(rnn0, xx, None, dt)
            if head is None:
                shape = (B, T, D * H) if rnn0.batch_first else (T, B, D * H)
                g = _direct(direct, shape, "the module's output sequence")
                g = g if rnn0.batch_first else g.transpose(0, 1)
            elif model.readout == "last":
                g1 = _direct(direct, (B, head.out_features), "batch, head outputs: readout "
                             "'last' has one loss, at t = T-1")  # fmt: skip
                g = g1.new_zeros((B, T, head.out_features))
                g[:, -1] = g1
                if loss_steps is not None and _loss_steps(loss_steps, T) != [T - 1]:
                    raise _fail("loss_steps", f"is {loss_steps!r} but readout='last' has one "
                                "loss, at t = T-1", "pass None")  # fmt: skip
                loss_steps = [T - 1]
            else:
                g = _direct(direct, (B, T, head.out_features), "batch, steps, head outputs")
        g = g.detach().to(device=dev, dtype=dt)
        if head is not None:
            g = torch.matmul(g, head.weight.detach().to(device=dev, dtype=dt))  # (B, T, H)
        ts_all = _loss_steps(loss_steps, T)
        nl = len(ts_all)

        # loss steps per chunk: the gradients handed down, (B, n, T, D·H) about three times
        # (this layer's per direction, their sum, the one being read), and the records
        deep = rnn0.num_layers > 1 or len(chains) > 1
        T_max = max(T, src.shape[1]) if len(chains) > 1 else T
        per_loss = B * T_max * (3 * D * H + 4 if deep else 4)
        n_chunk = max(1, min(nl, _LOSS_ELEMS // max(1, per_loss)))

        logs = {}  # (module, layer, d) -> [log_h (B, nl, T), log_c]
        for c0 in range(0, nl, n_chunk):
            ts = torch.tensor(ts_all[c0 : c0 + n_chunk], device=dev)
            n = ts.shape[0]
            res, finals = _chain(rnn0, dec_runs, n, top=(g, ts), want_init=len(chains) > 1)
            parts = [(chains[0][0], res)]
            if len(chains) > 1:
                res_e, _ = _chain(model.encoder, enc_runs, n, init=finals)
                parts.append(("encoder", res_e))
            for name, r in parts:
                for (layer, d), (lh, lc) in r.items():
                    slot = logs.setdefault((name, layer, d), [[], []])
                    slot[0].append(_np(lh))
                    if lc is not None:
                        slot[1].append(_np(lc))

    frames = []
    t_arr = np.asarray(ts_all)
    for (name, layer, d), (lh, lc) in logs.items():
        rnn = dict(chains)[name]
        lh = np.concatenate(lh, axis=1)  # (B, nl, Tm)
        Tm = lh.shape[2]
        k = np.arange(Tm)
        tt, kk = np.meshgrid(t_arr, k, indexing="ij")  # (nl, Tm)
        lag = Tm + tt - kk if name == "encoder" else (kk - tt if d else tt - kk)
        # one-sided (k ≤ t forward, k ≥ t reverse) unless a bidirectional layer above mixes them
        causal = name != "encoder" and (layer == rnn.num_layers - 1 or not rnn.bidirectional)
        qs = [("grad_norm", lh)] + ([("grad_norm_c", np.concatenate(lc, axis=1))] if lc else [])
        for q, lv in qs:
            keep = lag >= 0 if causal else np.ones_like(tt, dtype=bool)
            if q == "grad_norm_c" and name != "encoder":
                # h_k held fixed, c_k reaches L_t only through c_{k+1}: none after the last
                # processed step, and none at lag 0 where L_t reads this layer at step t only
                keep = keep & (kk != (0 if d else Tm - 1))
                if causal:
                    keep = keep & (lag > 0)
            blocks = [(-1, _log_mean(lv))]
            if per_sample:
                blocks += [(b, lv[b]) for b in range(lv.shape[0])]
            vals = np.concatenate([bl[keep] for _, bl in blocks])
            bidx = np.repeat([b for b, _ in blocks], int(keep.sum()))
            m = len(blocks)
            cols = {
                "loss_step": np.tile(tt[keep], m),
                "step": np.tile(kk[keep], m),
                "lag": np.tile(lag[keep], m),
                "batch_index": bidx,
            }
            with np.errstate(over="ignore"):
                lin = 10.0**vals
            for qq, vv in ((q, lin), ("log10_" + q, vals)):
                f = pd.DataFrame(cols)
                f.insert(0, "direction", d)
                f.insert(0, "layer", layer)
                f.insert(0, "module", name)
                f["quantity"] = qq
                f["value"] = vv
                frames.append(f)
    return pd.concat(frames, ignore_index=True)


def credit_reach(frame: pd.DataFrame, ratio: float = 1e-2) -> pd.DataFrame:
    """How far back the credit of each loss reaches: the largest lag with ‖δ_{t,t-lag}‖ ≥ ratio · ‖δ_{t,t}‖.

    For each (module, layer, direction, loss_step t, batch_index) of a :func:`credit_map` table
    and each norm q ("grad_norm", and "grad_norm_c" for an LSTM):

        reach_t = max { lag ≥ 0 : ‖∂L_t/∂s_{t−lag}‖ ≥ ratio · ‖∂L_t/∂s_t‖ }

    (positions counted in the direction's processing order: s_{t+lag} for a reverse direction),
    compared in log10, so it is exact where the norms underflow. The reference ‖∂L_t/∂s_t‖ is
    the direct term ‖∂L_t/∂h_t‖ (grad_norm at lag 0) of the same group, for both norms (an
    LSTM's state-space ∂L_t/∂c_t is 0 at lag 0); encoder rows use the decoder's lag-0 term of
    the same layer and loss step, and their lags count on the joint encoder–decoder axis. reach_t
    is the LARGEST such lag, not the first one where the norm drops (a norm that dips and
    recovers counts as reaching); NaN where no lag qualifies (e.g. encoder rows below ratio) or
    the reference is zero. ``censored`` is True where reach_t is the longest lag available for
    that t (the credit reaches the start of the sequence: the true reach is ≥ the value).

    Rows with loss_step = -1 hold the median of reach_t over the loss steps of a group ("how far
    back the credit of a typical loss reaches"; censored values enter as their lower bound, NaN
    ones are skipped).
    Columns: module, layer, direction, loss_step, batch_index, quantity ("reach_grad_norm",
    "reach_grad_norm_c"), value (steps), censored.
    """
    fn = "credit_reach"
    need = {"module", "layer", "direction", "loss_step", "lag", "batch_index", "quantity", "value"}
    if not isinstance(frame, pd.DataFrame) or not need <= set(frame.columns):
        raise _fail("frame", "is not a credit_map table", "pass gradlab.credit_map(...)'s "
                    f"DataFrame (columns {sorted(need)})", fn)  # fmt: skip
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
        raise _fail("ratio", f"is {ratio!r}", "pass a number in (0, 1], e.g. 1e-2", fn)
    keys = ["layer", "direction", "loss_step", "batch_index"]
    out = []
    for q in ("grad_norm", "grad_norm_c"):
        f = frame[frame["quantity"] == "log10_" + q]
        if f.empty:
            continue
        f = f[f["lag"] >= 0]
        r0 = frame[(frame["quantity"] == "log10_grad_norm") & (frame["lag"] == 0)]
        ref = r0[["module", *keys, "value"]].rename(columns={"value": "ref"})
        dec_ref = ref[ref["module"] == "decoder"].drop(columns="module")
        own = f[f["module"] != "encoder"].merge(ref, on=["module", *keys], how="left")
        enc = f[f["module"] == "encoder"].merge(dec_ref, on=keys, how="left")
        g = pd.concat([own, enc], ignore_index=True)
        g["ok"] = g["value"] >= g["ref"] + math.log10(ratio)
        g["ok"] &= np.isfinite(g["ref"])
        grp = g.groupby(["module", *keys], sort=True)
        maxlag = grp["lag"].max()
        reach = g[g["ok"]].groupby(["module", *keys])["lag"].max().reindex(maxlag.index)
        r = pd.DataFrame({"value": reach.astype(float), "censored": reach == maxlag}).reset_index()
        r["quantity"] = "reach_" + q
        med = r.groupby(["module", "layer", "direction", "batch_index"], sort=True)["value"]
        med = med.median().reset_index()
        med["loss_step"], med["quantity"], med["censored"] = -1, "reach_" + q, False
        out += [r, med]
    if not out:
        raise _fail("frame", "has no log10_grad_norm rows", "pass credit_map's table unfiltered",
                    fn)  # fmt: skip
    cols = ["module", "layer", "direction", "loss_step", "batch_index", "quantity", "value",
            "censored"]  # fmt: skip
    return pd.concat(out, ignore_index=True)[cols]
