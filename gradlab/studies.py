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

    def __call__(self, point: Mapping[str, Any]) -> pd.DataFrame:
        return self.fn(dict(point))


_REGISTRY: dict[str, Study] = {}


def study(
    name: str, *, params: Mapping[str, Any], version: int = 1
) -> Callable[[Callable[[dict[str, Any]], pd.DataFrame]], Callable[[dict[str, Any]], pd.DataFrame]]:
    """Register ``fn(point: dict) -> DataFrame`` as study ``name`` with a typed schema.

    params maps each parameter name to a ``Param`` or, as shorthand, to a scalar default.
    version is part of every point's cache key: bump it when the study's output changes.
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
