"""Instrumented recurrent models: Python-unrolled twins of ``torch.nn.RNN/LSTM/GRU``.

``RNN``, ``LSTM`` and ``GRU`` have the parameters, initialisation, call signature and outputs of
their ``torch.nn`` namesakes (a ``state_dict`` loads both ways), but unroll the recurrence in
Python with the closed-form cells of :mod:`gradlab._cells`, so every per-step state is a tensor of
its own: ``gradlab.record`` hooks each one and reads the exact total gradient ∂L/∂s_t that BPTT
delivers to it, and the closed-form Jacobians ∂s_t/∂s_{t-1}.

``Unrolled`` does the same for a user's own cell, any ``nn.Module`` mapping ``(x_t, state)`` to
the next state (a tensor, or a tuple of tensors whose first entry is the output h_t); its
Jacobians come from ``torch.func.jacrev``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from . import _cells

__all__ = ["RNN", "LSTM", "GRU", "Unrolled"]


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
    """Elman RNN, h_t = φ(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), φ = tanh or relu."""

    def __init__(self, *args, nonlinearity: str = "tanh", **kwargs) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self.mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(*args, **kwargs)


class LSTM(_Recurrent):
    """LSTM with the gate order (i, f, g, o) of ``torch.nn.LSTM``; state (h, c)."""

    mode = "LSTM"


class GRU(_Recurrent):
    """GRU with the gate order (r, z, n) of ``torch.nn.GRU``."""

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
