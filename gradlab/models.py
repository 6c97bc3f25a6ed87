"""Instrumented recurrent models: Python-unrolled twins of ``torch.nn.RNN/LSTM/GRU``.

``RNN``, ``LSTM`` and ``GRU`` have the parameters, initialisation, call signature and outputs of
their ``torch.nn`` namesakes (a ``state_dict`` loads both ways), but unroll the recurrence in
Python with the closed-form cells of :mod:`gradlab._cells`, so every per-step state is a tensor of
its own: ``gradlab.record`` hooks each one and reads the exact total gradient ∂L/∂s_t that BPTT
delivers to it, and the closed-form Jacobians ∂s_t/∂s_{t-1}.

``Unrolled`` does the same for a user's own cell, any ``nn.Module`` mapping ``(x_t, state)`` to
the next state (a tensor, or a tuple of tensors whose first entry is the output h_t); its
Jacobians come from ``torch.func.jacrev``.

``Transformer`` is the causal attention model set beside them: an ``nn.TransformerEncoder`` over
the projected input plus a positional encoding, (B, T, I) -> (B, T, d_model) like a batch_first
recurrent module's output, so :class:`gradlab.train.SequenceModel` puts the same read-out on it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from . import _cells

__all__ = ["RNN", "LSTM", "GRU", "Unrolled", "Transformer"]


class _Recurrent(nn.Module):
    """Shared machinery of the instrumented RNN/LSTM/GRU (torch.nn conventions)."""

    mode = ""

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if hidden_size <= 0 or input_size <= 0 or num_layers <= 0:
            raise ValueError(
                f"{type(self).__name__}: input_size, hidden_size and num_layers must be positive, "
                f"got {input_size}, {hidden_size}, {num_layers}"
            )
        if not 0 <= dropout < 1:
            raise ValueError(f"{type(self).__name__}: dropout must be in [0, 1), got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = 0
        kind = self.kind
        G = _cells.GATES[kind]
        D = 2 if bidirectional else 1
        fk = {"device": device, "dtype": dtype}
        for layer in range(num_layers):
            in_size = input_size if layer == 0 else hidden_size * D
            for d in range(D):
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                self.register_parameter(
                    "weight_ih" + sfx, nn.Parameter(torch.empty(G * hidden_size, in_size, **fk))
                )
                self.register_parameter(
                    "weight_hh" + sfx, nn.Parameter(torch.empty(G * hidden_size, hidden_size, **fk))
                )
                if bias:
                    self.register_parameter(
                        "bias_ih" + sfx, nn.Parameter(torch.empty(G * hidden_size, **fk))
                    )
                    self.register_parameter(
                        "bias_hh" + sfx, nn.Parameter(torch.empty(G * hidden_size, **fk))
                    )
        self.reset_parameters()

    @property
    def kind(self) -> str:
        return _cells.module_kind(self)

    def reset_parameters(self) -> None:
        """PyTorch's default: every weight and bias ~ U(-1/√H, 1/√H)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for w in self.parameters():
            nn.init.uniform_(w, -bound, bound)

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        return s

    def forward(self, input: Tensor, hx=None):
        """Same signature and outputs as the ``torch.nn`` module (PackedSequence excepted)."""
        return _unrolled_forward(self, input, hx, observer=None)


class RNN(_Recurrent):
    """Elman RNN, h_t = φ(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), φ = tanh or relu.

    Same constructor, parameter names and shapes as ``torch.nn.RNN`` (``weight_ih_l{k}``
    (H, I), ``weight_hh_l{k}`` (H, H), biases (H,)); ``forward(x, h0)`` returns
    ``(output (B, T, D·H) batch first, h_n (L·D, B, H))`` and equals ``torch.nn.RNN`` to
    round-off. One-step Jacobian ∂h_t/∂h_{t-1} = diag(φ'(a_t)) W_hh in closed form
    (``gradlab/_cells.py``), used by ``gradlab.record`` and the analysis functions.

    Examples:
        >>> import torch, gradlab
        >>> rnn = gradlab.models.RNN(3, 8, batch_first=True)
        >>> out, h_n = rnn(torch.randn(2, 5, 3))
        >>> tuple(out.shape), tuple(h_n.shape)
        ((2, 5, 8), (1, 2, 8))
    """

    def __init__(self, *args, nonlinearity: str = "tanh", **kwargs) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(*args, **kwargs)


class LSTM(_Recurrent):
    """LSTM with the gate order (i, f, g, o) of ``torch.nn.LSTM``; state (h, c).

    c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t, h_t = o_t ⊙ tanh(c_t). Same constructor, parameter
    names and shapes as ``torch.nn.LSTM`` (``weight_ih_l{k}`` (4H, I), ``weight_hh_l{k}``
    (4H, H)); ``forward`` returns ``(output, (h_n, c_n))`` and equals ``torch.nn.LSTM`` to
    round-off. The analyses use the full state s = (h, c) (2H) and its closed-form Jacobian.

    Examples:
        >>> import torch, gradlab
        >>> lstm = gradlab.models.LSTM(3, 8, batch_first=True)
        >>> out, (h_n, c_n) = lstm(torch.randn(2, 5, 3))
        >>> tuple(out.shape), tuple(c_n.shape)
        ((2, 5, 8), (1, 2, 8))
    """

    mode = "LSTM"


class GRU(_Recurrent):
    """GRU with the gate order (r, z, n) of ``torch.nn.GRU``.

    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn)), h_t = (1 − z_t) ⊙ n_t +
    z_t ⊙ h_{t-1} (PyTorch's convention: z close to 1 keeps the state). Same constructor,
    parameter names and shapes as ``torch.nn.GRU`` (``weight_hh_l{k}`` (3H, H)); ``forward``
    returns ``(output, h_n)`` and equals ``torch.nn.GRU`` to round-off.

    Examples:
        >>> import torch, gradlab
        >>> gru = gradlab.models.GRU(3, 8, batch_first=True)
        >>> out, h_n = gru(torch.randn(2, 5, 3))
        >>> tuple(out.shape)
        (2, 5, 8)
    """

    mode = "GRU"


def _to_batch_first(module, input: Tensor, name: str) -> tuple[Tensor, bool]:
    """(B, T, I) view of ``input`` in the module's layout; unbatched (T, I) gets B = 1."""
    if isinstance(input, nn.utils.rnn.PackedSequence):
        raise NotImplementedError(
            f"{name} ({type(module).__name__}): PackedSequence input is not supported by "
            f"gradlab; pad the batch (nn.utils.rnn.pad_packed_sequence) and record the padded "
            f"tensor, or record each length group separately"
        )
    if not isinstance(input, Tensor) or input.dim() not in (2, 3):
        shape = tuple(input.shape) if isinstance(input, Tensor) else type(input).__name__
        layout = "(B, T, I)" if module.batch_first else "(T, B, I)"
        raise ValueError(
            f"{name} ({type(module).__name__}): input must be a 3-D tensor {layout} or an "
            f"unbatched 2-D tensor (T, I), got {shape}"
        )
    batched = input.dim() == 3
    x = input if batched else input.unsqueeze(0 if module.batch_first else 1)
    if not module.batch_first:
        x = x.transpose(0, 1)
    if x.shape[-1] != module.input_size:
        layout = "(B, T, I)" if module.batch_first else "(T, B, I)"
        raise ValueError(
            f"{name} ({type(module).__name__}): expected input {layout} with "
            f"I = input_size = {module.input_size}, got shape {tuple(input.shape)}; "
            f"check batch_first={module.batch_first} and the feature size"
        )
    if x.shape[1] == 0:
        raise ValueError(f"{name} ({type(module).__name__}): input has T = 0 steps")
    return x, batched


def _initial_state(module, hx, x: Tensor, batched: bool, name: str):
    """Initial (h0, c0) as (L·D, B, H) tensors; c0 is None except for LSTM."""
    L, D, H = module.num_layers, 2 if module.bidirectional else 1, module.hidden_size
    B = x.shape[0]
    lstm = _cells.module_kind(module) == "lstm"
    if hx is None:
        z = x.new_zeros(L * D, B, H)
        return z, (z if lstm else None)
    hs = list(hx) if lstm else [hx]
    if lstm and len(hs) != 2:
        raise ValueError(f"{name} (LSTM): hx must be a tuple (h0, c0)")
    out = []
    for t in hs:
        t = t if batched else t.unsqueeze(1)
        if tuple(t.shape) != (L * D, B, H):
            raise ValueError(
                f"{name} ({type(module).__name__}): initial state must have shape "
                f"(num_layers*num_directions, B, H) = ({L * D}, {B}, {H}), got {tuple(t.shape)}"
            )
        out.append(t)
    return out[0], (out[1] if lstm else None)


def _finish_output(module, out: Tensor, h_n: Tensor, c_n, batched: bool):
    if not module.batch_first:
        out = out.transpose(0, 1)
    if not batched:
        out = out.squeeze(0 if module.batch_first else 1)
        h_n = h_n.squeeze(1)
        c_n = None if c_n is None else c_n.squeeze(1)
    return out, ((h_n, c_n) if c_n is not None else h_n)


def _unrolled_forward(module: _Recurrent, input: Tensor, hx, observer=None, name: str = "model"):
    """Unroll a gradlab RNN/LSTM/GRU step by step; ``observer(layer, d, cache, states)`` sees
    every step's state tensors (processing order) for recording."""
    x, batched = _to_batch_first(module, input, name)  # (B, T, I)
    h0, c0 = _initial_state(module, hx, x, batched, name)
    kind = module.kind
    D = 2 if module.bidirectional else 1
    H = module.hidden_size
    layer_in = x
    h_n, c_n = [], []
    for layer in range(module.num_layers):
        outs = []
        for d in range(D):
            p = _cells.params_from_module(module, layer, d)
            idx = layer * D + d
            s = h0[idx] if kind != "lstm" else torch.cat([h0[idx], c0[idx]], dim=-1)
            xi = layer_in.flip(1) if d else layer_in
            xa = _cells.input_preact(p, xi)  # (B, T, G·H)
            states = []
            for t in range(xi.shape[1]):
                s = _cells.step_from_preact(p, xa[:, t], s)[0]  # (B, S)
                states.append(s)
            if observer is not None:
                observer(layer, d, p, xi, states, h0[idx], None if c0 is None else c0[idx])
            seq = torch.stack(states, dim=1)  # (B, T, S)
            h_seq = seq[..., :H]
            outs.append(h_seq.flip(1) if d else h_seq)
            h_n.append(states[-1][..., :H])
            if kind == "lstm":
                c_n.append(states[-1][..., H:])
        layer_in = torch.cat(outs, dim=-1) if D == 2 else outs[0]  # (B, T, D·H)
        if module.dropout and module.training and layer < module.num_layers - 1:
            layer_in = nn.functional.dropout(layer_in, module.dropout, training=True)
    hn = torch.stack(h_n, 0)
    cn = torch.stack(c_n, 0) if kind == "lstm" else None
    return _finish_output(module, layer_in, hn, cn, batched)


class Unrolled(nn.Module):
    """Unroll a user's cell over time so that gradlab can record it.

    ``cell`` maps ``(x_t, state) -> state`` with x_t (B, I) and state a tensor (B, H) or a tuple
    of tensors whose first entry is the output h_t (B, H) (e.g. ``(h, c)``).
    ``forward(x, state0)`` takes x (B, T, I) (or (T, B, I) with ``batch_first=False``) and an
    initial state (zeros of width ``hidden_size`` when omitted) and returns
    ``(outputs (B, T, H), final_state)``. Jacobians ∂s_t/∂s_{t-1} of the concatenated state are
    computed with ``torch.func.jacrev`` (vmapped over the batch where the cell allows).

    Examples:
        >>> import torch, gradlab
        >>> class MinimalCell(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.W, self.U = torch.nn.Linear(3, 16), torch.nn.Linear(16, 16, bias=False)
        ...     def forward(self, x, h):
        ...         return torch.tanh(self.W(x) + self.U(h))
        >>> model = gradlab.Unrolled(MinimalCell(), hidden_size=16)
        >>> with gradlab.record(model, quantities=("grad_norm", "jac_norm")) as rec:
        ...     out, _ = model(torch.randn(4, 30, 3))
        ...     out[:, -1].sum().backward()
        >>> sorted(rec.frame()["quantity"].unique())
        ['grad_norm', 'jac_norm_frobenius', 'jac_norm_spectral']
    """

    def __init__(self, cell: nn.Module, hidden_size: int, *, batch_first: bool = True,
                 state_shapes: tuple[int, ...] | None = None) -> None:
        super().__init__()
        if not isinstance(cell, nn.Module):
            raise TypeError(f"Unrolled: cell must be an nn.Module, got {type(cell).__name__}")
        self.cell = cell
        self.hidden_size = hidden_size
        self.batch_first = batch_first
        self.state_shapes = state_shapes

    def forward(self, x: Tensor, state=None):
        return _unrolled_user_forward(self, x, state, observer=None)


def _unrolled_user_forward(module: Unrolled, x: Tensor, state, observer=None, name="model"):
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(
            f"{name} (Unrolled): input must be a 3-D tensor, got "
            f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}"
        )
    xb = x if module.batch_first else x.transpose(0, 1)  # (B, T, I)
    B, T = xb.shape[:2]
    if T == 0:
        raise ValueError(f"{name} (Unrolled): input has T = 0 steps")
    if state is None:
        widths = module.state_shapes or (module.hidden_size,)
        zs = tuple(xb.new_zeros(B, w) for w in widths)
        state = zs if len(zs) > 1 else zs[0]
    states, outs = [], []
    for t in range(T):
        state = module.cell(xb[:, t], state)
        states.append(state)
        outs.append(state[0] if isinstance(state, tuple) else state)
    if observer is not None:
        observer(xb, states)
    out = torch.stack(outs, dim=1)  # (B, T, H)
    if not module.batch_first:
        out = out.transpose(0, 1)
    return out, state


# ---------------------------------------------------------------------------------------------
# The causal Transformer


def sinusoidal_encoding(T: int, d_model: int, *, device=None, dtype=None) -> Tensor:
    """PE (T, d_model): PE[t, 2m] = sin(t / 10000^(2m/d)), PE[t, 2m+1] = cos(t / 10000^(2m/d)).

    Vaswani et al. (2017), section 3.5; for odd d_model the last column is the sine of its pair.
    """
    t = torch.arange(T, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    pe = torch.zeros(T, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(t * freq)
    pe[:, 1::2] = torch.cos(t * freq[: d_model // 2])
    return pe.to(device=device, dtype=dtype)


def causal_mask(T: int, *, device=None, dtype=torch.float32) -> Tensor:
    """(T, T) additive mask: 0 where key j ≤ query t, -inf above the diagonal (no future)."""
    return torch.triu(torch.full((T, T), float("-inf"), device=device, dtype=dtype), diagonal=1)


class Transformer(nn.Module):
    """Causal Transformer encoder: position t sees x_0..x_t only.

    z_t = W_in x_t + b_in + PE_t,  (B, T, I) -> (B, T, d_model), then ``num_layers``
    ``nn.TransformerEncoderLayer`` (``batch_first``, ReLU feed-forward of width
    ``dim_feedforward``, pre-LN if ``norm_first`` with a final LayerNorm, else post-LN) under the
    causal mask of :func:`causal_mask`. ``positional``: "sinusoidal" (fixed, any T) or
    "learned" (a parameter (max_len, d_model) ~ N(0, 0.02²); T ≤ max_len).

    The output is the top layer's (B, T, d_model) sequence, as a batch_first ``nn.RNN``'s
    ``output`` is (B, T, H): ``SequenceModel("transformer", ...)`` reads it out the same way.
    The path from any x_k to any output y_t (k ≤ t) is ``num_layers`` attention hops long,
    whatever t - k is, and the whole sequence is processed in ``num_layers`` sequential steps.
    """

    def __init__(
        self,
        input_size: int,
        d_model: int,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int | None = None,
        dropout: float = 0.0,
        *,
        positional: str = "sinusoidal",
        max_len: int | None = None,
        norm_first: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        for n, v in [("input_size", input_size), ("d_model", d_model), ("nhead", nhead),
                     ("num_layers", num_layers)]:  # fmt: skip
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Transformer: {n} must be a positive integer, got {v!r}")
        if d_model % nhead:
            raise ValueError(
                f"Transformer: d_model={d_model} is not divisible by nhead={nhead}; pick "
                f"d_model a multiple of nhead (e.g. {nhead * max(1, d_model // nhead)})"
            )
        if positional not in ("sinusoidal", "learned"):
            raise ValueError(
                f"Transformer: positional must be 'sinusoidal' or 'learned', got {positional!r}"
            )
        if positional == "learned" and (not isinstance(max_len, int) or max_len < 1):
            raise ValueError(
                f"Transformer: positional='learned' needs max_len (the longest T), got {max_len!r}"
            )
        fk = {"device": device, "dtype": dtype}
        self.input_size, self.d_model, self.nhead, self.num_layers = (
            input_size, d_model, nhead, num_layers)  # fmt: skip
        self.hidden_size = d_model
        self.positional, self.max_len, self.norm_first = positional, max_len, norm_first
        self.batch_first = True
        self.input_proj = nn.Linear(input_size, d_model, **fk)
        if positional == "learned":
            self.pos_embedding = nn.Parameter(0.02 * torch.randn(max_len, d_model, **fk))
        layer = nn.TransformerEncoderLayer(
            d_model, nhead, dim_feedforward or 4 * d_model, dropout,
            batch_first=True, norm_first=norm_first, **fk,
        )  # fmt: skip
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(d_model, **fk) if norm_first else None,
            enable_nested_tensor=False,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return (f"{self.input_size}, d_model={self.d_model}, nhead={self.nhead}, "
                f"num_layers={self.num_layers}, positional={self.positional!r}")  # fmt: skip

    def embed(self, x: Tensor) -> Tensor:
        """z = W_in x + b_in + PE: (B, T, I) -> (B, T, d_model)."""
        if not isinstance(x, Tensor) or x.dim() != 3 or x.shape[-1] != self.input_size:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(
                f"Transformer: input must be (B, T, I={self.input_size}) (batch_first), "
                f"got {shape}"
            )
        T = x.shape[1]
        z = self.input_proj(x)  # (B, T, d_model)
        if self.positional == "learned":
            if T > self.max_len:
                raise ValueError(
                    f"Transformer: T = {T} steps but the learned positional encoding has "
                    f"max_len = {self.max_len}; build the model with max_len >= {T}"
                )
            return z + self.pos_embedding[:T]
        return z + sinusoidal_encoding(T, self.d_model, device=z.device, dtype=z.dtype)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, I) -> (B, T, d_model), causal."""
        z = self.embed(x)
        T = z.shape[1]
        mask = causal_mask(T, device=z.device, dtype=z.dtype)
        return self.encoder(z, mask=mask, is_causal=True)  # (B, T, d_model)

    def attention_stats(self, x: Tensor) -> pd.DataFrame:
        """Mean attention distance and attention entropy per layer, head and query position.

        The weights a_{t,j} (query t, key j ≤ t) are those of the real forward pass: a hook on
        each layer's ``self_attn`` asks it for per-head weights (``need_weights=True``,
        ``average_attn_weights=False``) for this one call and is removed afterwards. Per query
        t: distance d_t = Σ_j a_{t,j} (t - j) (steps; 0: attends to itself, t/2: uniform over the
        past), entropy H_t = -Σ_j a_{t,j} ln a_{t,j} (nats; at most ln(t+1), uniform).

        Columns: ``layer``, ``head``, ``step`` (query position t), ``quantity`` in
        {"attention_distance", "attention_entropy", "attention_entropy_max"}, ``value`` (batch
        mean; the max is ln(t+1), the entropy of a uniform look-back, for reference).
        """
        weights: dict[int, Tensor] = {}
        handles = []

        def pre(module, args, kwargs):
            kwargs = dict(kwargs, need_weights=True, average_attn_weights=False)
            return args, kwargs

        def post(i):
            def hook(module, args, kwargs, out):
                weights[i] = out[1].detach()  # (B, nhead, T, T)

            return hook

        try:
            for i, layer in enumerate(self.encoder.layers):
                handles.append(layer.self_attn.register_forward_pre_hook(pre, with_kwargs=True))
                handles.append(layer.self_attn.register_forward_hook(post(i), with_kwargs=True))
            # an input that requires grad keeps nn.TransformerEncoderLayer off its fused
            # inference path, which would bypass self_attn (and the hooks)
            xg = x.detach().to(self.input_proj.weight).requires_grad_(True)
            with torch.enable_grad():
                self(xg)
        finally:
            for h in handles:
                h.remove()
        if len(weights) != self.num_layers:
            raise RuntimeError(
                f"Transformer.attention_stats: saw the weights of {len(weights)} of "
                f"{self.num_layers} layers; the fused inference path bypassed self_attn"
            )
        frames = []
        for i in range(self.num_layers):
            a = weights[i].to(torch.float64)  # (B, nh, T, T)
            T = a.shape[-1]
            t = torch.arange(T, dtype=torch.float64, device=a.device)
            dist = (t.view(T, 1) - t.view(1, T)).clamp(min=0)  # (T, T): t - j
            d = (a * dist).sum(-1).mean(0)  # (nh, T)
            ent = -(torch.xlogy(a, a)).sum(-1).mean(0)  # (nh, T)
            nh = d.shape[0]
            emax = np.log(np.arange(1, T + 1, dtype=float))
            for q, v in (("attention_distance", d), ("attention_entropy", ent)):
                frames.append(pd.DataFrame({
                    "layer": i, "head": np.repeat(np.arange(nh), T), "step": np.tile(np.arange(T), nh),
                    "quantity": q, "value": v.cpu().numpy().reshape(-1),
                }))  # fmt: skip
            frames.append(pd.DataFrame({
                "layer": i, "head": np.repeat(np.arange(nh), T), "step": np.tile(np.arange(T), nh),
                "quantity": "attention_entropy_max", "value": np.tile(emax, nh),
            }))  # fmt: skip
        return pd.concat(frames, ignore_index=True)
