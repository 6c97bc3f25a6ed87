"""Closed-form recurrent cells in PyTorch's exact conventions, with the Jacobian of the full state.

Notation (used in the einsum strings below): ``b`` batch (any leading axes), ``i`` input
features, ``h``/``j`` hidden units, ``g`` stacked gate rows (G·H), ``s`` state (S).

* ``rnn_tanh``, ``rnn_relu``: a_t = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh, h_t = φ(a_t).
  State s = h (S = H). Jacobian ∂h_t/∂h_{t-1} = diag(φ'(a_t)) W_hh.
* ``lstm`` (gate order i, f, g, o as in ``torch.nn.LSTM``):
  [i, f, g, o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh,  i, f, o = σ(·), g = tanh(·),
  c_t = f ⊙ c_{t-1} + i ⊙ g,  h_t = o ⊙ tanh(c_t).  State s = (h, c) (S = 2H, h first).
  ∂c_t/∂h_{t-1} = diag(c_{t-1} f(1-f)) W_hf + diag(g i(1-i)) W_hi + diag(i (1-g²)) W_hg,
  ∂c_t/∂c_{t-1} = diag(f),
  ∂h_t/∂h_{t-1} = diag(tanh(c_t) o(1-o)) W_ho + diag(o (1-tanh²c_t)) ∂c_t/∂h_{t-1},
  ∂h_t/∂c_{t-1} = diag(o (1-tanh²c_t) f).
  (Hochreiter & Schmidhuber 1997; Gers et al. 2000 forget gate.)
* ``gru`` (gate order r, z, n as in ``torch.nn.GRU``; Cho et al. 2014):
  r = σ(W_ir x + b_ir + W_hr h + b_hr), z = σ(W_iz x + b_iz + W_hz h + b_hz),
  n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}.
  ∂h_t/∂h_{t-1} = diag(z) + diag((h_{t-1} - n) z(1-z)) W_hz
                 + diag((1-z)(1-n²)) [diag(r) W_hn + diag((W_hn h + b_hn) r(1-r)) W_hr].

Every function is batched over arbitrary leading axes and works on any device and dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

KINDS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}
GATE_NAMES = {"lstm": ("input", "forget", "cell", "output"), "gru": ("reset", "update", "new")}


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"unknown cell kind {kind!r}; allowed: {', '.join(KINDS)}")
    return kind


@dataclass(frozen=True)
class CellParams:
    """The weights of one layer and one direction of a recurrent module.

    Shapes: ``w_ih`` (G·H, I), ``w_hh`` (G·H, H), ``b_ih``/``b_hh`` (G·H,) or None.
    """

    kind: str
    w_ih: Tensor
    w_hh: Tensor
    b_ih: Tensor | None = None
    b_hh: Tensor | None = None

    def __post_init__(self) -> None:
        check_kind(self.kind)
        g = GATES[self.kind]
        gh, h = self.w_hh.shape
        if gh != g * h:
            raise ValueError(
                f"{self.kind} cell: weight_hh has shape {tuple(self.w_hh.shape)}, "
                f"expected ({g}*H, H) = ({g * h}, {h})"
            )
        if self.w_ih.shape[0] != gh:
            raise ValueError(
                f"{self.kind} cell: weight_ih has {self.w_ih.shape[0]} rows, expected {gh}"
            )

    @property
    def hidden_size(self) -> int:
        return self.w_hh.shape[1]

    @property
    def input_size(self) -> int:
        return self.w_ih.shape[1]

    @property
    def state_size(self) -> int:
        return 2 * self.hidden_size if self.kind == "lstm" else self.hidden_size

    def detach(self) -> CellParams:
        d = lambda t: None if t is None else t.detach()  # noqa: E731
        return CellParams(self.kind, d(self.w_ih), d(self.w_hh), d(self.b_ih), d(self.b_hh))

    def to(self, *args, **kwargs) -> CellParams:
        m = lambda t: None if t is None else t.to(*args, **kwargs)  # noqa: E731
        return CellParams(self.kind, m(self.w_ih), m(self.w_hh), m(self.b_ih), m(self.b_hh))


def params_from_module(module: torch.nn.Module, layer: int = 0, direction: int = 0) -> CellParams:
    """The :class:`CellParams` of ``layer``/``direction`` of an ``nn.RNN/LSTM/GRU``-like module."""
    kind = module_kind(module)
    sfx = f"_l{layer}" + ("_reverse" if direction == 1 else "")
    get = lambda n: getattr(module, n + sfx, None)  # noqa: E731
    if get("weight_ih") is None:
        raise ValueError(
            f"{type(module).__name__} has no layer {layer} direction {direction} "
            f"(num_layers={getattr(module, 'num_layers', '?')}, "
            f"bidirectional={getattr(module, 'bidirectional', '?')})"
        )
    return CellParams(kind, get("weight_ih"), get("weight_hh"), get("bias_ih"), get("bias_hh"))


def module_kind(module: torch.nn.Module) -> str:
    """Cell kind of a stock or gradlab recurrent module (``mode`` attribute of ``nn.RNNBase``)."""
    mode = getattr(module, "mode", None)
    kind = {"RNN_TANH": "rnn_tanh", "RNN_RELU": "rnn_relu", "LSTM": "lstm", "GRU": "gru"}.get(mode)
    if kind is None:
        raise TypeError(
            f"{type(module).__name__} is not a recurrent module gradlab knows "
            f"(nn.RNN, nn.LSTM, nn.GRU or gradlab.models.*)"
        )
    return kind


# ---------------------------------------------------------------------------------------------
# Pre-activations and one step


def input_preact(p: CellParams, x: Tensor) -> Tensor:
    """W_ih x + b_ih: (..., I) -> (..., G·H). Computed for all steps in one matmul."""
    out = torch.matmul(x, p.w_ih.t())
    return out if p.b_ih is None else out + p.b_ih


def hidden_preact(p: CellParams, h: Tensor) -> Tensor:
    """W_hh h + b_hh: (..., H) -> (..., G·H)."""
    out = torch.matmul(h, p.w_hh.t())
    return out if p.b_hh is None else out + p.b_hh


def split_state(kind: str, s: Tensor) -> tuple[Tensor, Tensor | None]:
    if kind == "lstm":
        h, c = s.chunk(2, dim=-1)
        return h, c
    return s, None


def step_from_preact(p: CellParams, xa: Tensor, s: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """One step given the input pre-activation ``xa`` = W_ih x + b_ih (..., G·H) and state s.

    Returns the new state (..., S) and the intermediates the Jacobian needs.
    """
    kind = p.kind
    h, c = split_state(kind, s)
    ha = hidden_preact(p, h)  # (..., G·H)
    if kind in ("rnn_tanh", "rnn_relu"):
        a = xa + ha
        hn = torch.tanh(a) if kind == "rnn_tanh" else torch.relu(a)
        return hn, {"a": a, "h": hn}
    if kind == "lstm":
        i, f, g, o = (xa + ha).chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        cn = f * c + i * g
        tc = torch.tanh(cn)
        hn = o * tc
        return torch.cat([hn, cn], dim=-1), {
            "i": i, "f": f, "g": g, "o": o, "c_prev": c, "tanh_c": tc,
        }
    # gru
    xr, xz, xn = xa.chunk(3, dim=-1)
    hr, hz, hn_ = ha.chunk(3, dim=-1)
    r = torch.sigmoid(xr + hr)
    z = torch.sigmoid(xz + hz)
    n = torch.tanh(xn + r * hn_)
    hnew = (1 - z) * n + z * h
    return hnew, {"r": r, "z": z, "n": n, "hn": hn_, "h_prev": h}


def step(p: CellParams, x: Tensor, s: Tensor) -> Tensor:
    """s_t = F(s_{t-1}, x_t): x (..., I), s (..., S) -> (..., S)."""
    return step_from_preact(p, input_preact(p, x), s)[0]


def zero_state(p: CellParams, batch_shape, *, like: Tensor) -> Tensor:
    return like.new_zeros((*batch_shape, p.state_size))


def unroll(p: CellParams, x: Tensor, s0: Tensor | None = None) -> Tensor:
    """All states s_1..s_T for input x (B, T, I) from s0 (B, S) (zeros by default): (B, T, S).

    The input projection is one matmul for all steps; only the recurrence loops over T.
    """
    if x.dim() != 3 or x.shape[-1] != p.input_size:
        raise ValueError(
            f"{p.kind} cell: input must have shape (B, T, I={p.input_size}), got {tuple(x.shape)}"
        )
    B, T, _ = x.shape
    s = zero_state(p, (B,), like=x) if s0 is None else s0
    xa = input_preact(p, x)  # (B, T, G·H)
    out = []
    for t in range(T):
        s = step_from_preact(p, xa[:, t], s)[0]
        out.append(s)
    return torch.stack(out, dim=1)  # (B, T, S)


# ---------------------------------------------------------------------------------------------
# Jacobians ∂s_t/∂s_{t-1}


def jacobian_from_cache(p: CellParams, cache: dict[str, Tensor]) -> Tensor:
    """∂s_t/∂s_{t-1} (..., S, S) from the intermediates of :func:`step_from_preact`."""
    kind = p.kind
    W = p.w_hh
    if kind in ("rnn_tanh", "rnn_relu"):
        d = 1 - cache["h"] ** 2 if kind == "rnn_tanh" else (cache["a"] > 0).to(W.dtype)
        return d.unsqueeze(-1) * W  # (..., H, H)
    if kind == "lstm":
        Wi, Wf, Wg, Wo = W.chunk(4, dim=0)
        i, f, g, o = cache["i"], cache["f"], cache["g"], cache["o"]
        c, tc = cache["c_prev"], cache["tanh_c"]
        dc_dh = (
            (c * f * (1 - f)).unsqueeze(-1) * Wf
            + (g * i * (1 - i)).unsqueeze(-1) * Wi
            + (i * (1 - g**2)).unsqueeze(-1) * Wg
        )  # (..., H, H)
        ot = o * (1 - tc**2)  # (..., H)
        dh_dh = (tc * o * (1 - o)).unsqueeze(-1) * Wo + ot.unsqueeze(-1) * dc_dh
        dh_dc = torch.diag_embed(ot * f)
        dc_dc = torch.diag_embed(f)
        top = torch.cat([dh_dh, dh_dc], dim=-1)
        bot = torch.cat([dc_dh, dc_dc], dim=-1)
        return torch.cat([top, bot], dim=-2)  # (..., 2H, 2H)
    Wr, Wz, Wn = W.chunk(3, dim=0)
    r, z, n, hn, h = cache["r"], cache["z"], cache["n"], cache["hn"], cache["h_prev"]
    dn = ((1 - z) * (1 - n**2)).unsqueeze(-1) * (
        r.unsqueeze(-1) * Wn + (hn * r * (1 - r)).unsqueeze(-1) * Wr
    )
    return torch.diag_embed(z) + ((h - n) * z * (1 - z)).unsqueeze(-1) * Wz + dn


def jacobian(p: CellParams, x: Tensor, s_prev: Tensor) -> Tensor:
    """Closed-form ∂s_t/∂s_{t-1} at input x_t (..., I) and previous state s_{t-1} (..., S).

    Returns (..., S, S): H×H for RNN and GRU, 2H×2H over (h, c) for LSTM.
    """
    _, cache = step_from_preact(p, input_preact(p, x), s_prev)
    return jacobian_from_cache(p, cache)


def _preact_grads(kind: str, cache: dict[str, Tensor], u: Tensor):
    """The gradient u (..., S) on s_t pushed onto the stacked gate pre-activations.

    Returns (g_hh, g_ih, carry): the gradient on the hidden pre-activations (W_hh h + b_hh),
    on the input ones (W_ih x + b_ih), and the part of uᵀ ∂s_t/∂s_{t-1} that bypasses W_hh
    (LSTM: δc_t ⊙ f_t on c_{t-1}; GRU: u ⊙ z_t; None for RNNs). The two pre-activation
    gradients differ only in the GRU's new gate, whose hidden part enters through r ⊙ (·).
    """
    if kind in ("rnn_tanh", "rnn_relu"):
        d = 1 - cache["h"] ** 2 if kind == "rnn_tanh" else (cache["a"] > 0).to(u.dtype)
        ga = u * d
        return ga, ga, None
    if kind == "lstm":
        uh, uc = u.chunk(2, dim=-1)
        i, f, g, o = cache["i"], cache["f"], cache["g"], cache["o"]
        c, tc = cache["c_prev"], cache["tanh_c"]
        uc_tot = uc + uh * (o * (1 - tc**2))  # gradient on c_t
        ga = torch.cat(
            [uc_tot * g * i * (1 - i), uc_tot * c * f * (1 - f),
             uc_tot * i * (1 - g**2), uh * tc * o * (1 - o)], dim=-1,
        )  # (..., 4H): gradient on the pre-activations
        return ga, ga, uc_tot * f
    r, z, n, hn, h = cache["r"], cache["z"], cache["n"], cache["hn"], cache["h_prev"]
    gn = u * (1 - z) * (1 - n**2)  # on n's pre-activation
    gr, gz = gn * hn * r * (1 - r), u * (h - n) * z * (1 - z)
    return torch.cat([gr, gz, gn * r], dim=-1), torch.cat([gr, gz, gn], dim=-1), u * z


def vjp_from_cache(p: CellParams, cache: dict[str, Tensor], u: Tensor) -> Tensor:
    """uᵀ ∂s_t/∂s_{t-1} without forming the Jacobian: u (..., S) -> (..., S)."""
    ga, _, carry = _preact_grads(p.kind, cache, u)
    out = torch.matmul(ga, p.w_hh)
    if p.kind == "lstm":
        return torch.cat([out, carry], dim=-1)
    return out if carry is None else out + carry


def input_vjp_from_cache(p: CellParams, cache: dict[str, Tensor], u: Tensor) -> Tensor:
    """uᵀ ∂s_t/∂x_t: the gradient on the input x_t of a gradient u (..., S) on s_t; (..., I).

    s_t depends on x_t only through the input pre-activation W_ih x_t + b_ih, so the result is
    W_ihᵀ (∂L/∂a_t) with ∂L/∂a_t the gradient on the stacked gate pre-activations, the same as
    in :func:`vjp_from_cache` except for the GRU's new gate n, whose input part W_in x enters
    without the reset gate (n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))).
    """
    return torch.matmul(_preact_grads(p.kind, cache, u)[1], p.w_ih)


def jvp_from_cache(p: CellParams, cache: dict[str, Tensor], v: Tensor) -> Tensor:
    """∂s_t/∂s_{t-1} v without forming the Jacobian: v (..., S) -> (..., S)."""
    kind = p.kind
    W = p.w_hh
    if kind in ("rnn_tanh", "rnn_relu"):
        d = 1 - cache["h"] ** 2 if kind == "rnn_tanh" else (cache["a"] > 0).to(W.dtype)
        return d * torch.matmul(v, W.t())
    if kind == "lstm":
        vh, vc = v.chunk(2, dim=-1)
        i, f, g, o = cache["i"], cache["f"], cache["g"], cache["o"]
        c, tc = cache["c_prev"], cache["tanh_c"]
        ai, af, ag, ao = torch.matmul(vh, W.t()).chunk(4, dim=-1)
        dc = c * f * (1 - f) * af + g * i * (1 - i) * ai + i * (1 - g**2) * ag + f * vc
        dh = tc * o * (1 - o) * ao + o * (1 - tc**2) * dc
        return torch.cat([dh, dc], dim=-1)
    r, z, n, hn, h = cache["r"], cache["z"], cache["n"], cache["hn"], cache["h_prev"]
    ar, az, an = torch.matmul(v, W.t()).chunk(3, dim=-1)
    dn = (1 - n**2) * (r * an + hn * r * (1 - r) * ar)
    return z * v + (h - n) * z * (1 - z) * az + (1 - z) * dn


def gate_values(p: CellParams, cache: dict[str, Tensor]) -> dict[str, Tensor]:
    """Gate activations by name (LSTM: input, forget, cell, output; GRU: reset, update, new)."""
    if p.kind == "lstm":
        return dict(zip(GATE_NAMES["lstm"], (cache["i"], cache["f"], cache["g"], cache["o"]), strict=True))
    if p.kind == "gru":
        return dict(zip(GATE_NAMES["gru"], (cache["r"], cache["z"], cache["n"]), strict=True))
    return {}


def sequence_cache(p: CellParams, x: Tensor, states: Tensor, s0: Tensor | None = None):
    """Intermediates of every step, batched over (B, T), from the states of a finished run.

    x (B, T, I), states s_1..s_T (B, T, S), s0 (B, S) -> the cache dict of step t for all t at
    once (tensors (B, T, ·)), with s_prev (B, T, S). No loop over T: the states are given.
    """
    B, T, _ = x.shape
    s0 = zero_state(p, (B,), like=states) if s0 is None else s0
    s_prev = torch.cat([s0.unsqueeze(1), states[:, :-1]], dim=1)  # (B, T, S)
    _, cache = step_from_preact(p, input_preact(p, x), s_prev)
    return cache, s_prev


def _rows_frob2(coefs: list[Tensor], blocks: list[Tensor], diag: Tensor | None) -> Tensor:
    """Σ_i ‖Σ_g c_g[i] W_g[i,:] + d[i] e_i‖² for coefficients c_g (..., H), blocks W_g (H, H).

    Expands to Σ_i [Σ_{g,g'} c_g c_g' ⟨W_g[i], W_g'[i]⟩ + d_i² + 2 d_i Σ_g c_g W_g[i, i]], so the
    Jacobian is never formed: O(G²·H) per step instead of O(H²).
    """
    C = torch.stack(coefs, -1)  # (..., H, G)
    Wst = torch.stack(blocks, 0)  # (G, H, H)
    gram = torch.einsum("aij,bij->iab", Wst, Wst)  # (H, G, G): row inner products
    total = torch.einsum("...ia,iab,...ib->...", C, gram, C)
    if diag is not None:
        wdiag = torch.diagonal(Wst, dim1=-2, dim2=-1).t()  # (H, G)
        total = total + (diag**2).sum(-1) + 2 * (diag * (C * wdiag).sum(-1)).sum(-1)
    return total


def jacobian_frobenius_from_cache(p: CellParams, cache: dict[str, Tensor]) -> Tensor:
    """‖∂s_t/∂s_{t-1}‖_F for every leading index of the cache, without forming the Jacobian."""
    kind = p.kind
    W = p.w_hh
    if kind in ("rnn_tanh", "rnn_relu"):
        d = 1 - cache["h"] ** 2 if kind == "rnn_tanh" else (cache["a"] > 0).to(W.dtype)
        return ((d**2) @ (W**2).sum(-1)).sqrt()
    if kind == "lstm":
        Wi, Wf, Wg, Wo = W.chunk(4, dim=0)
        i, f, g, o = cache["i"], cache["f"], cache["g"], cache["o"]
        c, tc = cache["c_prev"], cache["tanh_c"]
        cf, ci, cg = c * f * (1 - f), g * i * (1 - i), i * (1 - g**2)
        ot = o * (1 - tc**2)
        dc_dh = _rows_frob2([cf, ci, cg], [Wf, Wi, Wg], None)
        dh_dh = _rows_frob2([ot * cf, ot * ci, ot * cg, tc * o * (1 - o)], [Wf, Wi, Wg, Wo], None)
        return (dh_dh + dc_dh + ((ot * f) ** 2).sum(-1) + (f**2).sum(-1)).sqrt()
    Wr, Wz, Wn = W.chunk(3, dim=0)
    r, z, n, hn, h = cache["r"], cache["z"], cache["n"], cache["hn"], cache["h_prev"]
    a = (1 - z) * (1 - n**2)
    return _rows_frob2([(h - n) * z * (1 - z), a * r, a * hn * r * (1 - r)], [Wz, Wn, Wr], z).sqrt()
