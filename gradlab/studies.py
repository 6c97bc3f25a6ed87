"""Studies: one function per kind of measurement, resolved point (dict) -> tidy DataFrame.

A study is a plain function registered under a name together with a typed parameter schema::

    @study("gradient_decay", version=1, params={
        "cell": Param(str, allowed=CELLS),             # closed set: checked in experiment files
        "init": Param(str, default="default", allowed=lambda: gradlab.init.names()),  # lazy
        "hidden_size": 64,                             # shorthand: type from the default
        "seq_len": Param(int),                         # required: no default
        "lags": Param(list[int], default=[1, 10, 100]),
        "seed": 0,
    })
    def gradient_decay(point: dict) -> pd.DataFrame:
        ...                                            # one row per observation
        return pd.DataFrame({"quantity": "log10_grad_norm", "lag": lags, "value": values})

The function receives every parameter, defaults filled in, and must be deterministic in them (it
takes its randomness from ``point["seed"]``). It returns tidy long rows with at least the columns
``quantity`` and ``value``; the runner adds ``experiment``, ``point`` and one column per parameter.

``version`` is the study's schema version: it is part of every point's cache key, so bump it when
the function's output changes and cached results become stale.

``applicable`` (optional) is ``fn(point) -> str | None``: a reason why a resolved point makes no
sense (e.g. the identity init "irnn" for an LSTM), or None. Such points are left out when the
grid is expanded (``Experiment.skipped`` lists them with their reasons), so a grid may cross
every cell with every init and keep only the meaningful pairs.

Workers (a spawned local process or a Ray task) import this module and look the study up by name,
so a study must be registered at import time of this module (or of the module that defines it,
which the worker imports too).
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["CELLS", "REQUIRED", "Param", "Study", "available", "get", "study"]

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")


class _Required:
    """Sentinel default: the parameter must be given by the experiment file."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()

_SCALARS = (int, float, str, bool)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        return f"list[{inner.__name__}]"
    return tp.__name__


def toml_repr(value: Any) -> str:
    """A value as it would be written in a TOML file (for error messages)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_repr(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {toml_repr(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _kind(value: Any) -> str:
    names = {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "table"}
    return names.get(type(value), type(value).__name__)


def _coerce_scalar(tp: type, value: Any) -> Any:
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # 1 and 1.0 are the same point
    if type(value) is not tp:  # bool is not an int here
        raise ValueError(f"expected {tp.__name__}, got {_kind(value)} {toml_repr(value)}")
    return value


@dataclass(frozen=True)
class Param:
    """A typed study parameter.

    type: int, float, str, bool or list[int|float|str|bool].
    default: the value used when an experiment does not set it; ``REQUIRED`` if it must.
    allowed: the closed set of values (for lists: of each element), or a callable returning it,
        called lazily at validation time (so the set can come from another registry).
    """

    type: Any
    default: Any = REQUIRED
    allowed: Collection[Any] | Callable[[], Collection[Any]] | None = None
    doc: str = ""

    def __post_init__(self) -> None:
        origin = typing.get_origin(self.type)
        if origin is list:
            args = typing.get_args(self.type)
            if len(args) != 1 or args[0] not in _SCALARS:
                raise TypeError(f"unsupported parameter type {self.type!r}")
        elif self.type not in _SCALARS:
            raise TypeError(
                f"unsupported parameter type {self.type!r}; use int, float, str, bool or list[...]"
            )
        if self.default is not REQUIRED:
            object.__setattr__(self, "default", self.coerce(self.default))

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def type_name(self) -> str:
        return _type_name(self.type)

    def allowed_values(self) -> tuple[Any, ...] | None:
        allowed = self.allowed() if callable(self.allowed) else self.allowed
        return None if allowed is None else tuple(sorted(allowed, key=repr))

    def coerce(self, value: Any) -> Any:
        """The canonical value (ints widened to float for float params), or ValueError."""
        if typing.get_origin(self.type) is list:
            (inner,) = typing.get_args(self.type)
            if isinstance(value, tuple):
                value = list(value)
            if not isinstance(value, list):
                raise ValueError(
                    f"expected {self.type_name}, got {_kind(value)} {toml_repr(value)}"
                )
            try:
                items = [_coerce_scalar(inner, v) for v in value]
            except ValueError as err:
                raise ValueError(f"in {self.type_name}: {err}") from None
        else:
            items = [_coerce_scalar(self.type, value)]
        allowed = self.allowed_values()
        if allowed is not None:
            for item in items:
                if item not in allowed:
                    close = difflib.get_close_matches(str(item), [str(a) for a in allowed], n=1)
                    hint = f"; did you mean {toml_repr(close[0])}?" if close else ""
                    raise ValueError(
                        f"unknown value {toml_repr(item)}{hint} allowed: "
                        + ", ".join(toml_repr(a) for a in allowed)
                    )
        return items if typing.get_origin(self.type) is list else items[0]


def _as_param(spec: Any) -> Param:
    if isinstance(spec, Param):
        return spec
    if type(spec) in _SCALARS:  # shorthand: a scalar default
        return Param(type(spec), default=spec)
    raise TypeError(
        f"parameter spec {spec!r}: give a Param(...) or a scalar default (int, float, str, bool)"
    )


@dataclass(frozen=True)
class Study:
    """A registered study: ``fn(point) -> tidy DataFrame`` and its parameter schema."""

    name: str
    fn: Callable[[dict[str, Any]], pd.DataFrame]
    params: Mapping[str, Param]
    version: int = 1
    description: str = ""
    module: str = field(default="", compare=False)
    applicable: Callable[[dict[str, Any]], str | None] | None = field(default=None, compare=False)

    def __call__(self, point: Mapping[str, Any]) -> pd.DataFrame:
        return self.fn(dict(point))

    def skip_reason(self, point: Mapping[str, Any]) -> str | None:
        """Why the resolved ``point`` is not applicable to this study, or None if it is."""
        if self.applicable is None:
            return None
        reason = self.applicable(dict(point))
        return str(reason) if reason else None


_REGISTRY: dict[str, Study] = {}


def study(
    name: str,
    *,
    params: Mapping[str, Any],
    version: int = 1,
    applicable: Callable[[dict[str, Any]], str | None] | None = None,
) -> Callable[[Callable[[dict[str, Any]], pd.DataFrame]], Callable[[dict[str, Any]], pd.DataFrame]]:
    """Register ``fn(point: dict) -> DataFrame`` as study ``name`` with a typed schema.

    params maps each parameter name to a ``Param`` or, as shorthand, to a scalar default.
    version is part of every point's cache key: bump it when the study's output changes.
    applicable(point) returns a reason (str) to leave a resolved point out of the grid, or None.
    """
    schema = types.MappingProxyType({k: _as_param(v) for k, v in params.items()})
    for key in schema:
        if not key.isidentifier() or key in ("experiment", "point"):
            raise ValueError(f"study {name!r}: invalid parameter name {key!r}")

    def register(fn: Callable[[dict[str, Any]], pd.DataFrame]):
        if name in _REGISTRY:
            raise ValueError(f"study {name!r} is already registered by {_REGISTRY[name].module}")
        doc = (fn.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = Study(
            name=name,
            fn=fn,
            params=schema,
            version=int(version),
            description=doc[0] if doc else "",
            module=fn.__module__,
            applicable=applicable,
        )
        return fn

    return register


def get(name: str) -> Study:
    """The registered study ``name``; KeyError naming the registered ones otherwise."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(
            f"unknown study {name!r}; registered: {', '.join(sorted(_REGISTRY))}"
        ) from None


def available() -> tuple[str, ...]:
    """Names of the registered studies, sorted."""
    return tuple(sorted(_REGISTRY))


# --- studies -------------------------------------------------------------------------------


@study(
    "toy",
    version=1,
    params={
        "cell": Param(str, default="rnn_tanh", allowed=lambda: CELLS),
        "seed": 0,
        "n": Param(int, default=4, doc="rows per quantity"),
        "gain": 0.9,
        "sleep": Param(float, default=0.0, doc="seconds to wait (tests of kill and resume)"),
        "fail": Param(bool, default=False, doc="raise instead of returning (tests)"),
    },
)
def toy(point: dict[str, Any]) -> pd.DataFrame:
    """Tiny deterministic rows from a seed; exercises the experiment runner."""
    import time

    if point["sleep"] > 0:
        time.sleep(point["sleep"])
    if point["fail"]:
        raise RuntimeError(f"toy study asked to fail (seed={point['seed']})")
    rng = np.random.default_rng([point["seed"], CELLS.index(point["cell"])])
    lag = np.arange(point["n"])
    decay = np.log10(point["gain"]) * lag + 0.1 * rng.standard_normal(point["n"])
    noise = rng.standard_normal(point["n"])
    return pd.DataFrame(
        {
            "quantity": ["log10_decay"] * len(lag) + ["noise"] * len(lag),
            "lag": np.concatenate([lag, lag]),
            "value": np.concatenate([decay, noise]),
        }
    )


# --- the gradlab studies ---------------------------------------------------------------------
#
# Shared conventions. A network is a stock torch.nn.RNN/LSTM/GRU (batch_first, one layer) in
# float64, initialised by gradlab.init.apply_init; the input x (B, T, I) is i.i.d. N(0, input_std²)
# unless a study says otherwise. Weights and inputs draw from two independent seeds derived from
# ``seed``, so the same seed gives the same network for every input (and vice versa). torch is
# imported inside the study functions: importing this module (the CLI, `gradlab list`) stays
# light, and a worker pays for torch once, on its first point.

_INIT_CELLS = {  # initialisations defined for some cells only (gradlab.init raises otherwise)
    "irnn": ("rnn_tanh", "rnn_relu"),
    "forget_bias": ("lstm",),
    "chrono": ("lstm", "gru"),
}
_GATED = ("lstm", "gru")


def _inits() -> list[str]:
    from gradlab.init import available_inits

    return available_inits()


def _init_applies(point: dict[str, Any]) -> str | None:
    """Reason why ``point["init"]`` does not apply to ``point["cell"]``, or None."""
    cells = _INIT_CELLS.get(point.get("init", "default"))
    if cells is not None and point["cell"] not in cells:
        return f"init {point['init']!r} is defined for {'/'.join(cells)} only, not {point['cell']}"
    return None


def _derived_seed(seed: int, tag: str) -> int:
    """An independent 63-bit seed for one use (``tag``) of the point's ``seed``."""
    import zlib

    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, zlib.crc32(tag.encode())])
    return int(state.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _network(cell: str, input_size: int, hidden_size: int, init: str, seed: int, seq_len: int):
    """A float64 stock recurrent module of ``cell``, initialised by scheme ``init``."""
    import torch
    from torch import nn

    from gradlab.init import apply_init

    kw = dict(batch_first=True, dtype=torch.float64)
    if cell.startswith("rnn_"):
        net = nn.RNN(input_size, hidden_size, nonlinearity=cell[4:], **kw)
    elif cell == "lstm":
        net = nn.LSTM(input_size, hidden_size, **kw)
    else:
        net = nn.GRU(input_size, hidden_size, **kw)
    params = {"t_max": float(max(seq_len, 3))} if init == "chrono" else {}
    apply_init(net, init, generator=_derived_seed(seed, "weights"), **params)
    return net.requires_grad_(False)


def _inputs(batch: int, seq_len: int, input_size: int, std: float, seed: int, tag: str = "x"):
    """x (B, T, I) ~ N(0, std²), float64, from the point's input seed."""
    import torch

    g = torch.Generator().manual_seed(_derived_seed(seed, tag))
    return std * torch.randn(batch, seq_len, input_size, generator=g, dtype=torch.float64)


def _decay_summary(lag: np.ndarray, log10_norm: np.ndarray, fit_min_lag: int, fraction: float):
    """Fitted decay of one curve: {quantity: value} (theory.fit_decay_rate, memory_length)."""
    from gradlab import theory

    keep = lag >= fit_min_lag
    try:
        fit = theory.fit_decay_rate(lag[keep], log10_norm[keep])
        rates = (fit.log10_rate, fit.ln_rate, fit.r2)
    except ValueError:  # fewer than two finite points
        rates = (np.nan, np.nan, np.nan)
    return {
        "log10_decay_rate": rates[0],
        "ln_decay_rate": rates[1],
        "fit_r2": rates[2],
        "memory_length": theory.memory_length(lag, log10_norm, fraction),
    }


_CELL = Param(str, allowed=CELLS, doc="rnn_tanh, rnn_relu, lstm or gru")
_INIT = Param(str, default="default", allowed=_inits, doc="a gradlab.init scheme")


@study(
    "gradient_decay",
    version=1,
    applicable=_init_applies,
    params={
        "cell": _CELL,
        "init": _INIT,
        "hidden_size": 128,
        "input_size": 32,
        "seq_len": Param(int, default=300, doc="T; the loss is at step T-1"),
        "batch_size": Param(int, default=32, doc="sequences; values are batch means of log10"),
        "input_std": 1.0,
        "fit_min_lag": Param(int, default=0, doc="fit the rate on lags >= this"),
        "memory_fraction": Param(float, default=1e-3, doc="memory length: lag of this drop"),
        "seed": 0,
    },
)
def gradient_decay(point: dict[str, Any]) -> pd.DataFrame:
    """Decay of ||dL/dh_{T-k}|| with lag k (gradient_flow) and its fitted rate and memory length.

    The loss is <u, h_{T-1}> with u a unit vector (analysis.gradient_flow); h_{-1} = 0. Rows:
    quantity "log10_grad_norm" per (step, lag), the batch mean of log10 norms; one row each of
    "log10_decay_rate" (least-squares slope in log10 per step over lags >= fit_min_lag),
    "ln_decay_rate" (the same in ln per step), "fit_r2", "memory_length" (first lag at which the
    norm is memory_fraction of its lag-0 value; inf if never within T) and
    "log10_grad_norm_at_start" (the gradient reaching step 0, lag T-1).
    """
    import torch

    from gradlab.analysis import gradient_flow

    torch.set_num_threads(1)
    p = point
    net = _network(p["cell"], p["input_size"], p["hidden_size"], p["init"], p["seed"], p["seq_len"])
    x = _inputs(p["batch_size"], p["seq_len"], p["input_size"], p["input_std"], p["seed"])
    flow = gradient_flow(net, x)
    curve = flow[flow["quantity"] == "log10_grad_norm"].sort_values("lag")
    lag = curve["lag"].to_numpy(float)
    y = curve["value"].to_numpy(float)
    summary = _decay_summary(lag, y, p["fit_min_lag"], p["memory_fraction"])
    summary["log10_grad_norm_at_start"] = float(y[-1])
    rows = pd.DataFrame({"quantity": list(summary), "value": list(summary.values())})
    return pd.concat([curve.reset_index(drop=True), rows], ignore_index=True)


@study(
    "flow_map",
    version=1,
    applicable=_init_applies,
    params={
        "cell": _CELL,
        "init": _INIT,
        "hidden_size": 64,
        "input_size": 32,
        "seq_len": 100,
        "input_std": 1.0,
        "norms": Param(list[str], default=["spectral"], allowed=("spectral", "frobenius")),
        "seed": 0,
    },
)
def flow_map_study(point: dict[str, Any]) -> pd.DataFrame:
    """The T x T map log10 ||dh_t/dh_k|| (t >= k) of one input sequence (analysis.flow_map).

    Rows: t, k, lag = t - k, quantity "log10_jac_norm_spectral" / "log10_jac_norm_frobenius".
    The state is the full state (h, c) for an LSTM.
    """
    import torch

    from gradlab.analysis import flow_map

    torch.set_num_threads(1)
    p = point
    net = _network(p["cell"], p["input_size"], p["hidden_size"], p["init"], p["seed"], p["seq_len"])
    x = _inputs(1, p["seq_len"], p["input_size"], p["input_std"], p["seed"])
    return flow_map(net, x, norms=tuple(p["norms"]))


@study(
    "gain_sweep",
    version=1,
    params={
        "gain": Param(float, doc="sigma_w: W_hh ~ N(0, gain^2 / N)"),
        "input_std": Param(float, doc="sigma_in: std of each unit's input drive (W_ih x_t)_i"),
        "hidden_size": Param(int, default=256, doc="N"),
        "seq_len": Param(int, default=200, doc="steps analysed after the warm-up"),
        "warmup": Param(int, default=100, doc="steps run first, from h ~ N(0, 1), to reach q*"),
        "batch_size": 16,
        "fit_min_lag": Param(int, default=10, doc="fit the rate on lags >= this"),
        "lyapunov_samples": Param(int, default=4, doc="trajectories averaged for lambda_max"),
        "seed": 0,
    },
)
def gain_sweep(point: dict[str, Any]) -> pd.DataFrame:
    """Random tanh RNN at gain sigma_w: measured gradient rate and lambda_max vs mean field.

    Network: h_t = tanh(W h_{t-1} + U x_t), W_ij ~ N(0, sigma_w²/N) (init "gaussian", no bias),
    U_ij ~ N(0, 1/N) and x_t ~ N(0, input_std²) fresh every step and unit (I = N), so the input
    drive (U x_t)_i has variance input_std² = theory's sigma_in² (x = 0 exactly for input_std 0).
    The dynamics first run ``warmup`` steps from h ~ N(0, 1), so the analysed window starts at
    the stationary q* (for input_std = 0 and sigma_w < 1 the state has collapsed to 0).

    Rows, ``source`` = "measured":
      decay_rate    ln-per-step slope of log10 ||dL/dh_{T-k}|| (gradient_flow, batch mean of
                    log10, times ln 10) over lags fit_min_lag..T-1 after the warm-up;
      decay_fit_r2  its coefficient of determination;
      lyapunov      the largest Lyapunov exponent (lyapunov_spectrum, k = 1, averaging after the
                    warm-up), mean over ``lyapunov_samples`` trajectories;
      q_star        the mean squared pre-activation over the analysed window.
    ``source`` = "theory" (gradlab.theory.mean_field_table at this gain and sigma_in): q_star,
    chi1, decay_rate and lyapunov (both ½ ln chi_1), depth_scale; and edge_of_chaos (the
    sigma_w with chi_1 = 1 at this sigma_in).
    """
    import torch

    from gradlab import theory
    from gradlab.analysis import gradient_flow, lyapunov_spectrum
    from gradlab.init import apply_init

    torch.set_num_threads(1)
    p = point
    N, T, W, B = p["hidden_size"], p["seq_len"], p["warmup"], p["batch_size"]
    net = torch.nn.RNN(N, N, batch_first=True, dtype=torch.float64)
    apply_init(net, "gaussian", generator=_derived_seed(p["seed"], "weights"), gain=p["gain"],
               input_std=1.0 / np.sqrt(N))  # fmt: skip
    net.requires_grad_(False)
    x = _inputs(B, W + T, N, p["input_std"], p["seed"])  # (B, W+T, N)
    g = torch.Generator().manual_seed(_derived_seed(p["seed"], "h0"))
    h0 = torch.randn(1, B, N, generator=g, dtype=torch.float64)
    with torch.no_grad():
        out_w, h_w = net(x[:, :W], h0)  # h_w (1, B, N): the state entering the window
        out, _ = net(x[:, W:], h_w)  # (B, T, N)
        h_prev = torch.cat([h_w.transpose(0, 1), out[:, :-1]], dim=1)  # h_{t-1}, (B, T, N)
        pre = x[:, W:] @ net.weight_ih_l0.T + h_prev @ net.weight_hh_l0.T  # biases are 0
    q_measured = float((pre**2).mean())

    flow = gradient_flow(net, x[:, W:], h0=h_w)
    curve = flow[(flow["quantity"] == "log10_grad_norm") & (flow["lag"] >= p["fit_min_lag"])]
    fit = theory.fit_decay_rate(curve["lag"].to_numpy(float), curve["value"].to_numpy(float))
    lams = []
    for s in range(min(p["lyapunov_samples"], B)):
        ly = lyapunov_spectrum(net, x, k=1, warmup=W, h0=h0, sample=s)
        lams.append(float(ly.loc[ly["quantity"] == "lyapunov_exponent", "value"].iloc[0]))

    measured = pd.DataFrame({
        "quantity": ["decay_rate", "decay_fit_r2", "lyapunov", "q_star"],
        "value": [fit.ln_rate, fit.r2, float(np.mean(lams)), q_measured],
        "source": "measured",
    })  # fmt: skip
    mf = theory.mean_field_table([p["gain"]], sigma_in=p["input_std"])
    mf = mf[["quantity", "value", "source"]]
    edge = pd.DataFrame({
        "quantity": ["edge_of_chaos"],
        "value": [float(theory.edge_of_chaos(sigma_in=p["input_std"]))],
        "source": "theory",
    })  # fmt: skip
    return pd.concat([measured, mf, edge], ignore_index=True)


@study(
    "jacobian_spectrum",
    version=1,
    applicable=_init_applies,
    params={
        "cell": _CELL,
        "init": _INIT,
        "hidden_size": 64,
        "input_size": 32,
        "seq_len": Param(int, default=100, doc="products end at step T-1"),
        "lags": Param(list[int], default=[1, 10, 50], doc="product lengths k"),
        "batch_size": Param(int, default=4, doc="input sequences (samples)"),
        "input_std": 1.0,
        "seed": 0,
    },
)
def jacobian_spectrum_study(point: dict[str, Any]) -> pd.DataFrame:
    """Singular values of dh_{T-1}/dh_{T-1-k} for each product length k (analysis.jacobian_spectrum).

    Rows: lag (= k), step (T-1), sample, index (0 = largest), quantity "singular_value" and
    "log10_singular_value". The state is (h, c) for an LSTM (2H singular values).
    """
    import torch

    from gradlab.analysis import jacobian_spectrum

    torch.set_num_threads(1)
    p = point
    net = _network(p["cell"], p["input_size"], p["hidden_size"], p["init"], p["seed"], p["seq_len"])
    x = _inputs(p["batch_size"], p["seq_len"], p["input_size"], p["input_std"], p["seed"])
    return jacobian_spectrum(net, x, lags=tuple(p["lags"]))


@study(
    "bptt_by_lag",
    version=1,
    applicable=_init_applies,
    params={
        "cell": _CELL,
        "init": _INIT,
        "hidden_size": 64,
        "input_size": 32,
        "seq_len": 100,
        "batch_size": 32,
        "input_std": 1.0,
        "seed": 0,
    },
)
def bptt_by_lag_study(point: dict[str, Any]) -> pd.DataFrame:
    """The BPTT gradient of L = sum(h_{T-1}) split by lag, per parameter (analysis.bptt_by_lag).

    Rows: step, lag, param (weight_ih, weight_hh, bias_ih, bias_hh), quantity
    "contribution_norm" (Frobenius norm of the lag-k term of dL/dW, summed over the batch).
    """
    import torch

    from gradlab.analysis import bptt_by_lag

    torch.set_num_threads(1)
    p = point
    net = _network(p["cell"], p["input_size"], p["hidden_size"], p["init"], p["seed"], p["seq_len"])
    x = _inputs(p["batch_size"], p["seq_len"], p["input_size"], p["input_std"], p["seed"])
    return bptt_by_lag(net, x)


@study(
    "train",
    version=1,
    applicable=_init_applies,
    params={
        "task": Param(str, allowed=("adding", "copy", "digits")),
        "seq_len": Param(int, doc="the task's length (copy: the delay)"),
        "copy_length": Param(int, default=10, doc="copy: the number of symbols to remember"),
        "cell": _CELL,
        "init": _INIT,
        "clip_norm": Param(float, default=0.0, doc="clip the gradient norm at this; 0 = off"),
        "hidden_size": 32,
        "steps": 1500,
        "batch_size": 64,
        "lr": 1e-2,
        "optimizer": Param(str, default="adam", allowed=("adam", "rmsprop", "sgd")),
        "track_every": Param(int, default=50, doc="record ||dL/dh_t|| every this many updates"),
        "eval_every": Param(int, default=0, doc="0: steps // 10"),
        "track_gates": Param(bool, default=False, doc="also gate statistics (LSTM, GRU)"),
        "seed": 0,
    },
)
def train_study(point: dict[str, Any]) -> pd.DataFrame:
    """Train a one-layer network with a linear read-out on a long-dependency task (train.train).

    Rows (see gradlab.train): per iteration "loss", "grad_norm_total" (and "grad_norm_clipped"
    with clipping); per evaluation "eval_loss", "baseline" (the no-memory loss), "accuracy"
    (copy, digits); every track_every updates "grad_norm" ||dL/dh_t|| per step t (and
    "grad_norm_c" for the LSTM cell state), the batch mean from gradlab.record; with
    track_gates also "gate_mean", "gate_saturated_frac" (column gate) and the memory gate's
    "forget_timescale" per unit (columns gate, unit).
    """
    import torch

    from gradlab.train import train

    torch.set_num_threads(1)
    p = point
    params = {"t_max": float(max(p["seq_len"], 3))} if p["init"] == "chrono" else None
    df = train(
        p["cell"],
        p["task"],
        seq_len=p["seq_len"],
        hidden_size=p["hidden_size"],
        steps=p["steps"],
        batch_size=p["batch_size"],
        lr=p["lr"],
        optimizer=p["optimizer"],
        clip_norm=p["clip_norm"] or None,
        init=p["init"],
        init_params=params,
        seed=p["seed"],
        track_every=p["track_every"] or None,
        eval_every=p["eval_every"] or None,
        track_gates=p["track_gates"],
        task_params={"length": p["copy_length"]} if p["task"] == "copy" else None,
    )
    return df.drop(columns=["layer", "direction"])


@study(
    "gate_stats",
    version=1,
    applicable=_init_applies,
    params={
        "cell": Param(str, allowed=_GATED, doc="lstm or gru"),
        "init": _INIT,
        "hidden_size": 64,
        "input_size": 32,
        "seq_len": 200,
        "batch_size": 32,
        "input_std": 1.0,
        "seed": 0,
    },
)
def gate_stats(point: dict[str, Any]) -> pd.DataFrame:
    """Gate means and saturated fractions per step on random inputs (gradlab.record, forward).

    Rows: step, gate (LSTM input/forget/cell/output, GRU reset/update/new), quantity
    "gate_mean" (mean over units and batch) and "gate_saturated_frac" (fraction of units with a
    sigmoid gate < 0.05 or > 0.95, or a tanh gate |g| > 0.95), batch means.
    """
    import torch

    from gradlab._record import record

    torch.set_num_threads(1)
    p = point
    net = _network(p["cell"], p["input_size"], p["hidden_size"], p["init"], p["seed"], p["seq_len"])
    x = _inputs(p["batch_size"], p["seq_len"], p["input_size"], p["input_std"], p["seed"])
    with torch.no_grad(), record(net, quantities=("gates",)) as rec:
        net(x)
    df = rec.frame()
    df = df[df["batch_index"] == -1]
    return df[["step", "gate", "quantity", "value"]].reset_index(drop=True)


# --- the Transformer beside the recurrent cells -----------------------------------------------
#
# Every architecture is a gradlab.train.SequenceModel (a linear read-out on top) with the hidden
# size (d_model for the Transformer) that brings its parameter count closest to ``budget``, so
# the comparison is at equal size; the count is reported in every table ("params").

ARCHS = ("rnn_tanh", "rnn_relu", "lstm", "gru", "transformer")
_ARCH = Param(str, allowed=ARCHS, doc="rnn_tanh, rnn_relu, lstm, gru or transformer")
_TF_LAYERS = Param(int, default=2, doc="Transformer layers")
_TF_HEADS = Param(int, default=2, doc="Transformer heads (d_model is a multiple)")


def param_count(arch: str, input_size: int, output_size: int, hidden: int, *, layers: int = 2) -> int:
    """Parameters of SequenceModel(arch, I, hidden, O) (one recurrent layer; ``layers`` for the
    Transformer: pre-LN, feed-forward width 4·d, final LayerNorm), head included.

    RNN/LSTM/GRU: G·H·(I + H + 2) + (H + 1)·O with G = 1, 4, 3 gate blocks.
    Transformer: layers·(12 d² + 13 d) + 2 d + (I + 1)·d + (d + 1)·O (attention 4d² + 4d,
    feed-forward 8d² + 5d, two LayerNorms 4d per layer).
    """
    if arch == "transformer":
        d = hidden
        return layers * (12 * d * d + 13 * d) + 2 * d + (input_size + 1) * d + (d + 1) * output_size
    G = {"lstm": 4, "gru": 3}.get(arch, 1)
    H = hidden
    return G * H * (input_size + H + 2) + (H + 1) * output_size


def budget_size(arch: str, input_size: int, output_size: int, budget: int, *, layers: int = 2,
                nhead: int = 2) -> tuple[int, int]:  # fmt: skip
    """(hidden size, parameter count) closest to ``budget``; d_model a multiple of ``nhead``."""
    step = nhead if arch == "transformer" else 1
    best = None
    for h in range(step, 1025, step):
        n = param_count(arch, input_size, output_size, h, layers=layers)
        if best is None or abs(n - budget) < abs(best[1] - budget):
            best = (h, n)
        if n > budget:
            break
    return best


def _arch_model(p: dict[str, Any], task):
    """(SequenceModel at init from the point's seed, hidden size, seed of train's parameters)."""
    import torch

    from gradlab.train import _make_model, _seeds

    layers = p["layers"] if p["arch"] == "transformer" else 1
    H, n = budget_size(p["arch"], task.input_size, task.output_size, p["budget"],
                       layers=layers, nhead=p["nhead"])  # fmt: skip
    model = _make_model(p["arch"], task, H, layers, p["nhead"], "default", None,
                        _seeds(p["seed"])[0], torch.device("cpu"))  # fmt: skip
    return model, H, layers, n


@study(
    "input_gradient",
    version=1,
    params={
        "arch": _ARCH,
        "task": Param(str, default="adding", allowed=("adding", "copy")),
        "seq_len": Param(int, default=1000, doc="T of the measured inputs"),
        "train_len": Param(int, default=100, doc="the task length trained on"),
        "train_steps": Param(int, default=300, doc="Adam updates of the 'trained' stage"),
        "budget": Param(int, default=4000, doc="parameter budget (hidden size chosen to fit)"),
        "layers": _TF_LAYERS,
        "nhead": _TF_HEADS,
        "batch_size": Param(int, default=32, doc="training batch"),
        "eval_batch": Param(int, default=8, doc="sequences the gradient is averaged over"),
        "lr": 1e-2,
        "seed": 0,
    },
)
def input_gradient_study(point: dict[str, Any]) -> pd.DataFrame:
    """‖∂L/∂x_{T-1-k}‖ against lag k at init and after training (gradlab.input_gradients).

    The model (SequenceModel, hidden size from ``budget``) is measured on ``eval_batch`` task
    inputs of length ``seq_len`` in float64, once at init (stage "init") and once after
    ``train_steps`` Adam updates on the task at length ``train_len`` (stage "trained"; the same
    initial weights). L is the read-out's output summed (the adding task's prediction at the
    last step). Rows: stage, step, lag, quantity "log10_grad_norm" (log10 of the batch mean of
    the per-sample norms), value; one row each of "params", "hidden_size" and
    "final_eval_loss" (of the training run), and "baseline" (the task's no-memory loss).
    """
    import torch

    from gradlab import input_gradients
    from gradlab.tasks import make_task
    from gradlab.train import train

    torch.set_num_threads(1)
    p = point
    task = make_task(p["task"], p["seq_len"], seed=_derived_seed(p["seed"], "task"))
    g = torch.Generator().manual_seed(_derived_seed(p["seed"], "x"))
    x, _ = task.sample(p["eval_batch"], g, split="test")
    model, H, layers, n = _arch_model(p, task)
    frames = []

    def measure(stage: str, m) -> None:
        df = input_gradients(m.eval(), x, dtype=torch.float64)
        df = df[(df["quantity"] == "log10_grad_norm") & (df["batch_index"] == -1)]
        frames.append(df[["step", "lag", "quantity", "value"]].assign(stage=stage))

    measure("init", model)
    table, trained = train(
        p["arch"], p["task"], seq_len=p["train_len"], hidden_size=H, num_layers=layers,
        nhead=p["nhead"], steps=p["train_steps"], batch_size=p["batch_size"], lr=p["lr"],
        seed=p["seed"], return_model=True, eval_every=p["train_steps"],
    )  # fmt: skip
    measure("trained", trained)
    ev = table[table["quantity"] == "eval_loss"]
    base = table[table["quantity"] == "baseline"]["value"].iloc[-1]
    summary = pd.DataFrame({
        "quantity": ["params", "hidden_size", "final_eval_loss", "baseline"],
        "value": [float(n), float(H), float(ev["value"].iloc[-1]), float(base)],
        "stage": "trained",
    })  # fmt: skip
    return pd.concat([*frames, summary], ignore_index=True)


def _task_applies(point: dict[str, Any]) -> str | None:
    if point["task"] == "digits" and point["seq_len"] not in (8, 64):
        return f"task 'digits' reads 8x8 images: seq_len 8 or 64 only, not {point['seq_len']}"
    if point["task"] == "ucr":
        from gradlab.data import native_length

        T = native_length(point["dataset"])
        if point["seq_len"] > T:
            return (f"task 'ucr': {point['dataset']} has {T} steps, fewer than seq_len "
                    f"{point['seq_len']}")  # fmt: skip
    return None


def _task_params(p: dict[str, Any]) -> dict[str, Any]:
    """make_task keywords of a point: copy's number of symbols, ucr's data set."""
    return {"copy": {"length": p["copy_length"]}, "ucr": {"dataset": p["dataset"]}}.get(
        p["task"], {}
    )


@study(
    "long_dependency",
    version=2,
    applicable=_task_applies,
    params={
        "arch": _ARCH,
        "task": Param(str, allowed=("adding", "copy", "digits", "ucr")),
        "seq_len": Param(int, doc="the task's length (copy: the delay; ucr: subsampled to it)"),
        "copy_length": Param(int, default=10, doc="copy: the number of symbols to remember"),
        "dataset": Param(str, default="OSULeaf", doc="ucr: a gradlab.data UCR/UEA set"),
        "budget": Param(int, default=4000, doc="parameter budget (hidden size chosen to fit)"),
        "layers": _TF_LAYERS,
        "nhead": _TF_HEADS,
        "steps": 400,
        "batch_size": 32,
        "lr": 1e-2,
        "transformer_lr": Param(float, default=0.0, doc="the Transformer's learning rate; "
                                "0 = lr"),  # fmt: skip
        "clip_norm": Param(float, default=1.0, doc="clip the gradient norm at this; 0 = off"),
        "eval_every": Param(int, default=0, doc="also the evaluation curve every this many "
                            "updates; 0 = the final evaluation only"),  # fmt: skip
        "seed": 0,
    },
)
def long_dependency(point: dict[str, Any]) -> pd.DataFrame:
    """Final metric against sequence length, every architecture at the same parameter budget.

    Trains SequenceModel(arch) (hidden size from ``budget``; one recurrent layer, ``layers``
    Transformer layers) with Adam (learning rate ``lr``; ``transformer_lr`` for the Transformer
    when > 0: attention models are commonly trained at a smaller step than recurrent nets) and
    gradient-norm clipping, as gradlab.train.train. Rows (one each, ``iteration`` <NA>):
    "final_eval_loss" (loss on the fixed evaluation batches, or the whole test split for ucr,
    after the last update), "baseline" (the task's no-memory loss),
    "relative_loss" (their ratio: 1 = no memory used, 0 = solved), "final_accuracy" (copy:
    the recalled symbols; digits, ucr: the class), "chance_accuracy" (ucr: the majority
    class), "params", "hidden_size". With ``eval_every`` > 0 also the curve: "eval_loss" and
    "accuracy" at iterations 0, eval_every, ..., steps (measured before that update).
    """
    import torch

    from gradlab.tasks import make_task
    from gradlab.train import train

    torch.set_num_threads(1)
    p = point
    kw = _task_params(p)
    task = make_task(p["task"], p["seq_len"], seed=0, **kw)
    layers = p["layers"] if p["arch"] == "transformer" else 1
    H, n = budget_size(p["arch"], task.input_size, task.output_size, p["budget"],
                       layers=layers, nhead=p["nhead"])  # fmt: skip
    own = p["arch"] == "transformer" and p["transformer_lr"] != 0  # 0: the shared lr
    lr = p["transformer_lr"] if own else p["lr"]
    df = train(
        p["arch"], p["task"], seq_len=p["seq_len"], hidden_size=H, num_layers=layers,
        nhead=p["nhead"], steps=p["steps"], batch_size=p["batch_size"],
        lr=lr,
        clip_norm=p["clip_norm"] or None, seed=p["seed"], task_params=kw or None,
        eval_every=p["eval_every"] or p["steps"],
    )  # fmt: skip
    last = df[df["iteration"] == p["steps"]].set_index("quantity")["value"]
    out = {
        "final_eval_loss": last["eval_loss"],
        "baseline": last["baseline"],
        "relative_loss": last["eval_loss"] / last["baseline"],
        "params": float(n),
        "hidden_size": float(H),
    }
    if "accuracy" in last.index:
        out["final_accuracy"] = last["accuracy"]
    if hasattr(task, "chance_accuracy"):
        out["chance_accuracy"] = task.chance_accuracy
    rows = pd.DataFrame({"quantity": list(out), "value": [float(v) for v in out.values()]})
    rows["iteration"] = pd.array([pd.NA] * len(rows), dtype="Int64")
    if not p["eval_every"]:
        return rows
    curve = df[df["quantity"].isin(["eval_loss", "accuracy"])][["iteration", "quantity", "value"]]
    curve = curve.astype({"iteration": "Int64", "value": float})
    return pd.concat([rows, curve], ignore_index=True)


# --- the lecture's four structures on real data (issue 11) ----------------------------------

_STRUCTURE_TASKS = ("ucr", "chars", "reverse", "generate")


def _direct(model, task, x, y):
    """∂ℓ_{b,t}/∂y_{b,t}: each step's own loss gradient on the model output (B, [T,] O).

    ℓ_{b,t} is the per-sample, per-step loss (cross-entropy, or the squared error summed over
    channels), i.e. ``task.loss`` times the number of terms it averages over.
    """
    import torch

    with torch.no_grad():
        pred = model(*x) if isinstance(x, tuple) else model(x)
    pred = pred.detach().requires_grad_(True)
    n = pred.numel() // pred.shape[-1] if task.metric == "cross_entropy" else pred.numel()
    with torch.enable_grad():
        (g,) = torch.autograd.grad(task.loss(pred, y) * n, pred)
    return g


def _credit_rows(model, task, x, y) -> pd.DataFrame:
    """Median over loss steps t of log10 ‖∂L_t/∂s_{t−lag}‖/‖∂L_t/∂s_t‖ per (module, lag), and
    the median reach (gradlab.analysis.credit_reach, ratio 1e-2) per module."""
    from gradlab import credit_map
    from gradlab.analysis import credit_reach

    cm = credit_map(model.eval(), x, _direct(model, task, x, y))
    q = cm[(cm["quantity"] == "log10_grad_norm") & (cm["batch_index"] == -1)
           & (cm["layer"] == 0) & (cm["direction"] == 0)]  # fmt: skip
    own = q[(q["module"] != "encoder") & (q["lag"] == 0)].set_index("loss_step")["value"]
    rel = q.assign(value=q["value"].to_numpy() - own.reindex(q["loss_step"]).to_numpy())
    curve = rel.groupby(["module", "lag"], as_index=False)["value"].median()
    reach = credit_reach(cm[(cm["layer"] == 0) & (cm["direction"] == 0)])
    reach = reach[(reach["loss_step"] == -1) & (reach["batch_index"] == -1)
                  & (reach["quantity"] == "reach_grad_norm")]  # fmt: skip
    return pd.concat([
        curve.assign(quantity="log10_credit"),
        reach[["module", "value"]].assign(quantity="credit_reach"),
    ], ignore_index=True)  # fmt: skip


@study(
    "structure",
    version=2,
    params={
        "task": Param(str, allowed=_STRUCTURE_TASKS,
                      doc="ucr (many-to-one), chars (synchronized many-to-many), reverse "
                          "(encoder-decoder), generate (one-to-many)"),  # fmt: skip
        "dataset": Param(str, default="GunPoint", doc="ucr: the UCR/UEA set"),
        "gen_dataset": Param(str, default="ArrowHead",
                             doc="generate: the UCR/UEA set (one whose classes differ in shape)"),
        # one length per task (a grid crosses tasks, and each needs its own length)
        "len_ucr": Param(int, default=150, doc="ucr: series length after subsampling"),
        "len_chars": Param(int, default=50, doc="chars: window T"),
        "len_reverse": Param(int, default=10, doc="reverse: span n (encoder and decoder steps)"),
        "len_generate": Param(int, default=50, doc="generate: length after subsampling"),
        "cell": _CELL,
        "hidden_size": 32,
        "steps": 300,
        "batch_size": 32,
        "lr": 1e-2,
        "clip_norm": Param(float, default=1.0, doc="clip the gradient norm at this; 0 = off"),
        "track_every": Param(int, default=50, doc="record ||dL/dh_t|| every this many updates"),
        "credit_batch": Param(int, default=32, doc="test samples of the final credit map"),
        "seed": 0,
    },
)
def structure_study(point: dict[str, Any]) -> pd.DataFrame:
    """One of the lecture's four structures on real data, trained by gradlab.train.train.

    The task's length is its own parameter ``len_<task>`` (a grid crosses tasks). Rows of the
    training table (gradlab.train): per evaluation "eval_loss" (UCR tasks: the whole test
    split), "baseline" (the task's no-memory loss), "accuracy" (classification and
    text tasks); every ``track_every`` updates "grad_norm" ||dL/dh_k|| per step k (batch mean;
    "grad_norm_c" for the LSTM cell; the encoder-decoder's encoder steps 0..S-1 and decoder
    steps S..S+T-1 on one axis). After training, on ``credit_batch`` test samples, the lecture's
    double sum term by term (gradlab.credit_map, layer 0; column ``stage``: "trained", and
    "init" for the same weights before the first update): "log10_credit" per (module, lag) =
    the median over loss steps t of log10 ‖∂L_t/∂s_{t-lag}‖ − log10 ‖∂L_t/∂s_t‖ (encoder rows:
    lag counted from the decoder's step t through the encoder's last state), and
    "credit_reach" per module = the median over t of the largest lag still ≥ 1% of the direct
    term (gradlab.analysis.credit_reach). One row each of "floor" (generate: the per-class
    mean series' MSE) and "chance_accuracy" (ucr: the majority class on test).
    """
    import torch

    from gradlab.tasks import make_task
    from gradlab.train import train

    torch.set_num_threads(1)
    p = point
    T = p[f"len_{p['task']}"]
    task_params = ({"dataset": p["dataset"]} if p["task"] == "ucr" else
                   {"dataset": p["gen_dataset"]} if p["task"] == "generate" else None)  # fmt: skip
    init_model = _initial_model(p, T, task_params)
    table, model = train(
        p["cell"], p["task"], seq_len=T, hidden_size=p["hidden_size"],
        steps=p["steps"], batch_size=p["batch_size"], lr=p["lr"],
        clip_norm=p["clip_norm"] or None, seed=p["seed"], track_every=p["track_every"] or None,
        task_params=task_params, return_model=True,
    )  # fmt: skip
    task = make_task(p["task"], T, seed=_derived_seed(p["seed"], "credit"),
                     **(task_params or {}))  # fmt: skip
    g = torch.Generator().manual_seed(_derived_seed(p["seed"], "credit-batch"))
    x, y = task.sample(p["credit_batch"], g, split="test")
    extra = {"floor": getattr(task, "floor", None),
             "chance_accuracy": getattr(task, "chance_accuracy", None)}  # fmt: skip
    extra = pd.DataFrame([{"quantity": k, "value": float(v)} for k, v in extra.items()
                          if v is not None])  # fmt: skip
    train_rows = table.drop(columns=["layer", "direction"])
    train_rows = train_rows[~train_rows["quantity"].isin(["loss", "grad_norm_total",
                                                         "grad_norm_clipped"])]  # fmt: skip
    credit = [_credit_rows(m, task, x, y).assign(stage=stage)
              for stage, m in (("init", init_model), ("trained", model))]  # fmt: skip
    return pd.concat([train_rows, *credit, extra], ignore_index=True)


def _initial_model(p: dict[str, Any], T: int, task_params):
    """The model ``train`` starts from for point ``p`` (the same weights: train's own seeds)."""
    import torch

    from gradlab.tasks import make_task
    from gradlab.train import _make_model, _seeds

    seed_params, seed_data, _ = _seeds(p["seed"])
    task = make_task(p["task"], T, seed=seed_data, **(task_params or {}))
    return _make_model(p["cell"], task, p["hidden_size"], 1, 4, "default", None, seed_params,
                       torch.device("cpu"))  # fmt: skip


@study(
    "ucr_baselines",
    version=1,
    params={
        "dataset": Param(str, default="OSULeaf", doc="the UCR/UEA set"),
        "seq_len": Param(int, doc="length after subsampling"),
    },
)
def ucr_baselines_study(point: dict[str, Any]) -> pd.DataFrame:
    """Test accuracy of the majority class and 1-NN Euclidean / DTW (aeon's classifier) on the
    same split, subsampling and standardisation as task "ucr" (gradlab.data.ucr_baselines).
    Rows: quantity "accuracy", column baseline in {"majority", "1nn_euclidean", "1nn_dtw"}."""
    from gradlab.data import ucr_baselines

    df = ucr_baselines(point["dataset"], point["seq_len"])
    return pd.DataFrame({"baseline": df["baseline"], "quantity": "accuracy",
                         "value": df["accuracy"].astype(float)})  # fmt: skip
