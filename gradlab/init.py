"""Initialization registry for recurrent weights in PyTorch's parameter layout.

A scheme is applied with ``apply_init(module, name, generator=seed, **params)`` to a stock
``torch.nn.RNN/LSTM/GRU`` (any ``num_layers``, bidirectional, ``proj_size``), to
``nn.RNNCell/LSTMCell/GRUCell``, or to any module holding parameters with PyTorch's names::

    weight_ih_l{k}[_reverse]  (G*H, I)    input weights, G gate blocks of H rows
    weight_hh_l{k}[_reverse]  (G*H, H)    recurrent weights ((G*H, P) with proj_size P)
    bias_ih_l{k}[_reverse]    (G*H,)      input bias
    bias_hh_l{k}[_reverse]    (G*H,)      recurrent bias
    weight_hr_l{k}[_reverse]  (P, H)      LSTM projection (proj_size > 0 only)

Gate blocks follow PyTorch: RNN G=1; LSTM G=4 in order (i, f, g, o); GRU G=3 in order
(r, z, n). PyTorch keeps TWO bias vectors, and only their sum ``b_ih + b_hh`` enters a gate
(except GRU's ``b_hn``, which sits inside ``r * (W_hn h + b_hn)``). Schemes that prescribe a
gate bias therefore set the *total*: ``b_ih`` gets the value, ``b_hh`` gets 0 in that chunk.

Parameters whose names do not match (a linear read-out head, say) are left untouched.
Every draw uses a CPU ``torch.Generator`` (seeded from ``generator``), so a seed gives the
same weights on any device; values are copied to each parameter's device and dtype.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["INITS", "InitScheme", "apply_init", "available_inits"]

_NAME = re.compile(
    r"^(?P<prefix>(?:.*\.)?)(?P<kind>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)"
    r"(?:_l(?P<layer>\d+))?(?P<rev>_reverse)?$"
)
_CELL_OF_GATES = {1: "rnn", 3: "gru", 4: "lstm"}


# ----------------------------------------------------------------------------- unit discovery


@dataclass
class _Unit:
    """One (layer, direction) of a recurrent module: its parameters and sizes.

    ``G`` gate blocks of ``H`` rows each; ``cell`` is "rnn", "lstm" or "gru".
    """

    key: str
    params: dict[str, nn.Parameter] = field(default_factory=dict)

    @property
    def H(self) -> int:  # hidden size
        if "weight_hr" in self.params:
            return self.params["weight_hr"].shape[1]
        return self.params["weight_hh"].shape[1]

    @property
    def G(self) -> int:  # number of gate blocks
        return self.params["weight_hh"].shape[0] // self.H

    @property
    def cell(self) -> str:
        return _CELL_OF_GATES.get(self.G, f"unknown(G={self.G})")


def _units(module: nn.Module) -> list[_Unit]:
    """Group ``module``'s recurrent parameters by (prefix, layer, direction), in order."""
    units: dict[str, _Unit] = {}
    for pname, p in module.named_parameters():
        m = _NAME.match(pname)
        if m is None:
            continue
        key = f"{m['prefix']}l{m['layer'] or 0}{m['rev'] or ''}"
        units.setdefault(key, _Unit(key)).params[m["kind"]] = p
    where = type(module).__name__
    if not units:
        raise ValueError(
            f"{where} holds no recurrent parameters: apply_init expects PyTorch's names "
            "weight_ih_l{k}, weight_hh_l{k}, bias_ih_l{k}, bias_hh_l{k} (as in nn.RNN/LSTM/GRU); "
            "pass the recurrent module or a module that contains one"
        )
    for u in units.values():
        if "weight_hh" not in u.params:
            raise ValueError(f"{where}: {u.key} has no weight_hh; cannot infer hidden size")
        rows, H = u.params["weight_hh"].shape[0], u.H
        if rows % H or rows // H not in _CELL_OF_GATES:
            raise ValueError(
                f"{where}: {u.key} weight_hh has {rows} rows for hidden size {H}; expected "
                "G*H rows with G = 1 (RNN), 3 (GRU) or 4 (LSTM)"
            )
    return list(units.values())


# ----------------------------------------------------------------------------- samplers
# All draws: CPU generator, float64, then copied into the parameter (its device and dtype).


def _uniform(shape: tuple[int, ...], bound: float, g: torch.Generator) -> torch.Tensor:
    return torch.empty(shape, dtype=torch.float64).uniform_(-bound, bound, generator=g)


def _normal(shape: tuple[int, ...], std: float, g: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.float64, generator=g) * std


def _orthogonal(rows: int, cols: int, g: torch.Generator) -> torch.Tensor:
    """Haar-distributed (semi-)orthogonal matrix (rows, cols).

    QR of a Gaussian matrix with the signs of R's diagonal folded into Q (Mezzadri 2007,
    "How to generate random matrices from the classical compact groups"). Columns are
    orthonormal when rows >= cols, rows are orthonormal otherwise.
    """
    a = torch.randn(max(rows, cols), min(rows, cols), dtype=torch.float64, generator=g)
    q, r = torch.linalg.qr(a)  # q (max, min)
    q = q * torch.sign(torch.diagonal(r)).masked_fill(torch.diagonal(r) == 0, 1.0)
    return q if rows >= cols else q.T


def _blocks(
    shape: tuple[int, ...], G: int, draw: Callable[[int, int], torch.Tensor]
) -> torch.Tensor:
    """A (G*H, cols) weight drawn gate block by gate block: ``draw(H, cols)`` per gate."""
    rows, cols = shape
    return torch.cat([draw(rows // G, cols) for _ in range(G)], dim=0)  # (G*H, cols)


@torch.no_grad()
def _set(p: nn.Parameter, value: torch.Tensor) -> None:
    p.copy_(value.to(device=p.device, dtype=p.dtype))


def _xavier_bound(fan_in: int, fan_out: int, gain: float) -> float:
    return gain * math.sqrt(6.0 / (fan_in + fan_out))


def _xavier_std(fan_in: int, fan_out: int, gain: float) -> float:
    return gain * math.sqrt(2.0 / (fan_in + fan_out))


def _zero_biases(u: _Unit) -> None:
    for k in ("bias_ih", "bias_hh"):
        if k in u.params:
            _set(u.params[k], torch.zeros(u.params[k].shape, dtype=torch.float64))


def _weights(u: _Unit) -> list[tuple[str, nn.Parameter]]:
    return [(k, u.params[k]) for k in ("weight_ih", "weight_hh", "weight_hr") if k in u.params]


def _gate_blocks(u: _Unit, kind: str) -> int:
    """Number of H-row blocks in a weight: G for ih/hh, 1 for the projection."""
    return 1 if kind == "weight_hr" else u.G


# ----------------------------------------------------------------------------- schemes


def _default(units: list[_Unit], g: torch.Generator, module: nn.Module) -> None:
    # nn.RNNBase.reset_parameters: every parameter ~ U(-1/sqrt(H), 1/sqrt(H)).
    for u in units:
        bound = 1.0 / math.sqrt(u.H)
        for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"):
            if k in u.params:
                _set(u.params[k], _uniform(tuple(u.params[k].shape), bound, g))


def _xavier(units: list[_Unit], g: torch.Generator, *, gain: float, normal: bool) -> None:
    def draw(r: int, c: int) -> torch.Tensor:  # one (H, fan_in) block, fan_out = H
        if normal:
            return _normal((r, c), _xavier_std(c, r, gain), g)
        return _uniform((r, c), _xavier_bound(c, r, gain), g)

    for u in units:
        for k, p in _weights(u):
            _set(p, _blocks(tuple(p.shape), _gate_blocks(u, k), draw))
        _zero_biases(u)


def _xavier_uniform(units, g, module, *, gain):
    _xavier(units, g, gain=gain, normal=False)


def _xavier_normal(units, g, module, *, gain):
    _xavier(units, g, gain=gain, normal=True)


def _kaiming(units, g, module, *, gain):
    # fan_in = number of columns, the same for every gate block
    for u in units:
        for _, p in _weights(u):
            _set(p, _normal(tuple(p.shape), gain / math.sqrt(p.shape[1]), g))
        _zero_biases(u)


def _orthogonal_scheme(units, g, module, *, gain):
    def xavier(r: int, c: int) -> torch.Tensor:
        return _uniform((r, c), _xavier_bound(c, r, 1.0), g)

    def orth(r: int, c: int) -> torch.Tensor:
        return gain * _orthogonal(r, c, g)

    for u in units:
        for k, p in _weights(u):
            _set(
                p, _blocks(tuple(p.shape), _gate_blocks(u, k), xavier if k == "weight_ih" else orth)
            )
        _zero_biases(u)


def _irnn(units, g, module, *, scale, input_std):
    for u in units:
        _require_cell(module, "irnn", u, ("rnn",), "use 'orthogonal' or 'gaussian' for LSTM/GRU")
        _set(u.params["weight_hh"], scale * torch.eye(u.H, dtype=torch.float64))
        _set(u.params["weight_ih"], _normal(tuple(u.params["weight_ih"].shape), input_std, g))
        _zero_biases(u)


def _gaussian(units, g, module, *, gain, sigma_b, input_std, bias_split):
    for u in units:
        w_ih, w_hh = u.params["weight_ih"], u.params["weight_hh"]
        std_in = input_std if input_std is not None else 1.0 / math.sqrt(w_ih.shape[1])
        _set(w_ih, _normal(tuple(w_ih.shape), std_in, g))
        std_hh = gain / math.sqrt(w_hh.shape[1])  # fan_in H (P with a projection)
        _set(w_hh, _normal(tuple(w_hh.shape), std_hh, g))  # iid, so per block = whole matrix
        if "weight_hr" in u.params:
            w_hr = u.params["weight_hr"]
            _set(w_hr, _normal(tuple(w_hr.shape), 1.0 / math.sqrt(w_hr.shape[1]), g))
        b_ih, b_hh = u.params.get("bias_ih"), u.params.get("bias_hh")
        if sigma_b and (b_ih is None or b_hh is None):
            raise ValueError(
                f"apply_init({type(module).__name__}, 'gaussian'): sigma_b={sigma_b} needs "
                "bias_ih and bias_hh; build the module with bias=True or pass sigma_b=0"
            )
        if b_ih is None:
            continue
        n = b_ih.shape[0]
        if bias_split == "ih":
            _set(b_ih, _normal((n,), sigma_b, g))
            _set(b_hh, torch.zeros(n, dtype=torch.float64))
        else:  # "even": two independent halves of the variance
            _set(b_ih, _normal((n,), sigma_b / math.sqrt(2.0), g))
            _set(b_hh, _normal((n,), sigma_b / math.sqrt(2.0), g))


def _require_cell(module: nn.Module, scheme: str, u: _Unit, cells: tuple[str, ...], fix: str):
    if u.cell not in cells:
        raise ValueError(
            f"apply_init({type(module).__name__}, {scheme!r}): scheme is defined for "
            f"{'/'.join(cells)} cells, got a {u.cell} ({u.key}, G={u.G}); {fix}"
        )


def _require_biases(module: nn.Module, scheme: str, u: _Unit) -> tuple[nn.Parameter, nn.Parameter]:
    if "bias_ih" not in u.params or "bias_hh" not in u.params:
        raise ValueError(
            f"apply_init({type(module).__name__}, {scheme!r}): {u.key} has no bias_ih/bias_hh; "
            "build the module with bias=True"
        )
    return u.params["bias_ih"], u.params["bias_hh"]


def _set_total_bias(b_ih, b_hh, chunk: int, H: int, value: torch.Tensor) -> None:
    """Set gate ``chunk`` of the total bias b_ih + b_hh to ``value``: b_ih = value, b_hh = 0."""
    sl = slice(chunk * H, (chunk + 1) * H)
    with torch.no_grad():
        b_ih[sl] = value.to(device=b_ih.device, dtype=b_ih.dtype)
        b_hh[sl] = 0.0


def _forget_bias(units, g, module, *, b):
    for u in units:
        _require_cell(module, "forget_bias", u, ("lstm",), "for GRU use 'chrono'")
        _require_biases(module, "forget_bias", u)
    _default(units, g, module)
    for u in units:
        b_ih, b_hh = u.params["bias_ih"], u.params["bias_hh"]
        _set_total_bias(b_ih, b_hh, 1, u.H, torch.full((u.H,), float(b), dtype=torch.float64))


def _chrono(units, g, module, *, t_max):
    for u in units:
        _require_cell(
            module,
            "chrono",
            u,
            ("lstm", "gru"),
            "a plain RNN has no gate to set; use 'irnn', 'orthogonal' or 'gaussian'",
        )
        _require_biases(module, "chrono", u)
    _default(units, g, module)
    for u in units:
        b_ih, b_hh = u.params["bias_ih"], u.params["bias_hh"]
        t = torch.empty(u.H, dtype=torch.float64).uniform_(1.0, t_max - 1.0, generator=g)
        b = torch.log(t)  # (H,) in [0, ln(T_max - 1)]
        if u.cell == "lstm":  # gates (i, f, g, o): b_f = ln U, b_i = -b_f
            _set_total_bias(b_ih, b_hh, 1, u.H, b)
            _set_total_bias(b_ih, b_hh, 0, u.H, -b)
        else:  # GRU gates (r, z, n): h' = (1 - z) n + z h, retention z: b_z = +ln U
            _set_total_bias(b_ih, b_hh, 1, u.H, b)


# ----------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class InitScheme:
    """A named initialization: ``fn(units, generator, module, **params)`` and its defaults.

    ``params`` maps each allowed parameter to its default (``_REQUIRED`` if it has none);
    ``check`` validates the resolved parameters and returns an error message or None.
    """

    name: str
    fn: Callable[..., None]
    params: Mapping[str, Any]
    doc: str
    check: Callable[[dict[str, Any]], str | None] = lambda p: None


_REQUIRED = object()


def _positive(*names: str, allow_zero: bool = False, allow_none: bool = False):
    def check(p: dict[str, Any]) -> str | None:
        for n in names:
            v = p[n]
            if v is None and allow_none:
                continue
            if (
                not isinstance(v, int | float)
                or not math.isfinite(v)
                or v < 0
                or (v == 0 and not allow_zero)
            ):
                return f"{n} must be a {'non-negative' if allow_zero else 'positive'} finite number, got {v!r}"
        return None

    return check


def _check_gaussian(p: dict[str, Any]) -> str | None:
    msg = _positive("gain", "sigma_b", allow_zero=True)(p) or _positive(
        "input_std", allow_none=True
    )(p)
    if msg is None and p["bias_split"] not in ("ih", "even"):
        msg = f"bias_split must be 'ih' or 'even', got {p['bias_split']!r}"
    return msg


def _check_chrono(p: dict[str, Any]) -> str | None:
    t = p["t_max"]
    if not isinstance(t, int | float) or not math.isfinite(t) or t <= 2:
        return f"t_max must be a finite number > 2 (the longest dependency, in steps), got {t!r}"
    return None


def _check_real(*names: str):
    def check(p: dict[str, Any]) -> str | None:
        for n in names:
            if not isinstance(p[n], int | float) or not math.isfinite(p[n]):
                return f"{n} must be a finite number, got {p[n]!r}"
        return None

    return check


INITS: dict[str, InitScheme] = {
    s.name: s
    for s in [
        InitScheme(
            "default",
            _default,
            {},
            "PyTorch's nn.RNNBase.reset_parameters: every parameter ~ U(-1/sqrt(H), 1/sqrt(H)).",
        ),
        InitScheme(
            "xavier_uniform",
            _xavier_uniform,
            {"gain": 1.0},
            "Glorot & Bengio (2010): each (H, fan_in) gate block ~ U(-a, a), "
            "a = gain*sqrt(6/(fan_in + H)); biases 0.",
            _positive("gain", allow_zero=True),
        ),
        InitScheme(
            "xavier_normal",
            _xavier_normal,
            {"gain": 1.0},
            "Glorot & Bengio (2010): each (H, fan_in) gate block ~ N(0, gain^2 * 2/(fan_in + H)); "
            "biases 0.",
            _positive("gain", allow_zero=True),
        ),
        InitScheme(
            "kaiming",
            _kaiming,
            {"gain": math.sqrt(2.0)},
            "He et al. (2015): weights ~ N(0, gain^2/fan_in), gain sqrt(2) for ReLU; biases 0.",
            _positive("gain", allow_zero=True),
        ),
        InitScheme(
            "orthogonal",
            _orthogonal_scheme,
            {"gain": 1.0},
            "Saxe, McClelland & Ganguli (2013): each recurrent (H, H) gate block = gain * Q, "
            "Q Haar-orthogonal; input weights xavier_uniform per block; biases 0.",
            _positive("gain", allow_zero=True),
        ),
        InitScheme(
            "irnn",
            _irnn,
            {"scale": 1.0, "input_std": 1e-3},
            "Le, Jaitly & Hinton (2015), ReLU RNN: W_hh = scale * I, biases 0, "
            "input weights ~ N(0, input_std^2) (paper: 0.001; also for layers > 0, which then "
            "see a weak input). Plain RNN only.",
            lambda p: _check_real("scale")(p) or _positive("input_std", allow_zero=True)(p),
        ),
        InitScheme(
            "gaussian",
            _gaussian,
            {"gain": 1.0, "sigma_b": 0.0, "input_std": None, "bias_split": "ih"},
            "Mean-field Gaussian (Poole et al. 2016; Chen, Pennington & Schoenholz 2018): each "
            "recurrent gate block W_ij ~ N(0, gain^2/H) (gain = sigma_w), input weights "
            "~ N(0, input_std^2), default N(0, 1/I); the total bias b_ih + b_hh ~ N(0, sigma_b^2): "
            "bias_split='ih' puts it all in b_ih and zeroes b_hh (exact for GRU's n gate, whose "
            "b_hn is gated by r), 'even' draws b_ih, b_hh ~ N(0, sigma_b^2/2) independently.",
            _check_gaussian,
        ),
        InitScheme(
            "forget_bias",
            _forget_bias,
            {"b": 1.0},
            "Jozefowicz, Zaremba & Sutskever (2015), LSTM: 'default', then the forget-gate total "
            "bias b_ih + b_hh = b (b_ih = b, b_hh = 0 in the f chunk).",
            _check_real("b"),
        ),
        InitScheme(
            "chrono",
            _chrono,
            {"t_max": _REQUIRED},
            "Tallec & Ollivier (2018): 'default', then LSTM total biases b_f ~ ln U[1, T_max - 1], "
            "b_i = -b_f; GRU (PyTorch h' = (1 - z) n + z h) b_z ~ +ln U[1, T_max - 1].",
            _check_chrono,
        ),
    ]
}


def available_inits() -> list[str]:
    """Names of the registered schemes, sorted: the values ``apply_init`` accepts as ``name``.

    ``INITS[name].doc`` cites each scheme's source and ``INITS[name].params`` lists its
    parameters with their defaults.

    Examples:
        >>> from gradlab.init import available_inits
        >>> "chrono" in available_inits() and "orthogonal" in available_inits()
        True
    """
    return sorted(INITS)


def _generator(generator: torch.Generator | int | None) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        if generator.device.type != "cpu":
            raise ValueError(
                f"apply_init needs a CPU torch.Generator (got one on {generator.device}); "
                "draws happen on CPU and are copied to the parameters' device. Pass a seed instead."
            )
        return generator
    if generator is None:  # follow torch's global seed, so torch.manual_seed makes it repeatable
        generator = int(torch.randint(0, 2**62, (1,)).item())
    if isinstance(generator, bool) or not isinstance(generator, int):
        raise TypeError(
            f"generator must be None, an int seed or a torch.Generator, got {generator!r}"
        )
    return torch.Generator(device="cpu").manual_seed(generator)


def apply_init(
    module: nn.Module,
    name: str,
    *,
    generator: torch.Generator | int | None = None,
    **params: Any,
) -> nn.Module:
    """Initialize ``module``'s recurrent parameters in place with scheme ``name``; return it.

    Args:
        module: ``nn.RNN/LSTM/GRU`` (any layers/directions), their ``*Cell`` versions, or any
            module holding parameters named as PyTorch names them (see the module docstring).
        name: one of ``available_inits()``; ``INITS[name].doc`` cites the source.
        generator: an int seed, a CPU ``torch.Generator``, or None (a seed drawn from torch's
            global generator, so ``torch.manual_seed`` makes it repeatable).
        **params: the scheme's parameters (``INITS[name].params`` lists them and their defaults).

    Schemes:
        default         U(-1/sqrt(H), 1/sqrt(H)) everywhere (PyTorch's reset_parameters).
        xavier_uniform  gain; xavier_normal: gain. Per gate block (Glorot & Bengio 2010).
        kaiming         gain=sqrt(2): N(0, gain^2/fan_in) (He et al. 2015).
        orthogonal      gain: W_hh gate blocks gain*Q (Saxe et al. 2013).
        irnn            scale, input_std: W_hh = scale*I (Le, Jaitly & Hinton 2015).
        gaussian        gain (sigma_w), sigma_b, input_std, bias_split (mean-field).
        forget_bias     b: LSTM forget total bias = b (Jozefowicz et al. 2015).
        chrono          t_max: LSTM b_f ~ ln U[1, T_max-1], b_i = -b_f; GRU b_z = +ln U[...]
                        (Tallec & Ollivier 2018, "Can recurrent neural networks warp time?").

    Chrono for GRU, derivation: a leaky unit h' = a*h + (1 - a)*u forgets with time constant
    1/(1 - a). LSTM's cell keeps c' = f*c + ..., so a = sigmoid(b_f) and
    1/(1 - sigmoid(b_f)) = 1 + exp(b_f); chrono draws exp(b_f) ~ U[1, T_max - 1], i.e. time
    constants uniform on [2, T_max]. PyTorch's GRU keeps h' = (1 - z)*n + z*h, so z is the
    retention (the complement of the paper's GRU update gate): a = sigmoid(b_z) and the same
    argument gives b_z = +ln U[1, T_max - 1]; r is left at its default.

    Raises:
        ValueError: unknown scheme (lists them), unknown or invalid parameter (names the scheme
            and its allowed parameters), a scheme that does not fit the cell (e.g. chrono on a
            plain RNN), or a module with no recurrent parameters.

    Examples:
        >>> import torch
        >>> from gradlab.init import apply_init
        >>> lstm = apply_init(torch.nn.LSTM(4, 8), "forget_bias", generator=0, b=1.0)
        >>> (lstm.bias_ih_l0[8:16] + lstm.bias_hh_l0[8:16]).tolist() == [1.0] * 8  # f gate
        True
    """
    where = f"apply_init({type(module).__name__}, {name!r})"
    if name not in INITS:
        raise ValueError(f"{where}: unknown init; available: {', '.join(available_inits())}")
    scheme = INITS[name]
    unknown = sorted(set(params) - set(scheme.params))
    if unknown:
        allowed = ", ".join(scheme.params) or "none"
        raise ValueError(
            f"{where}: unknown parameter(s) {unknown} for init {name!r}; "
            f"allowed parameters: {allowed}"
        )
    resolved = {**scheme.params, **params}
    missing = [k for k, v in resolved.items() if v is _REQUIRED]
    if missing:
        raise ValueError(
            f"{where}: init {name!r} needs parameter(s) {missing}; pass {missing[0]}=..."
        )
    msg = scheme.check(resolved)
    if msg:
        raise ValueError(f"{where}: {msg}")
    units = _units(module)
    scheme.fn(units, _generator(generator), module, **resolved)
    return module
