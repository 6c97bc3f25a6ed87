"""``gradlab.Monitor``: ``gradlab.record`` at every ``every``-th training iteration of a loop.

How it works
------------
A forward pre-hook on the top model counts its grad-enabled calls: call i (0-based) is training
iteration i, and ``torch.is_grad_enabled()`` tells an evaluation pass under ``torch.no_grad()``
apart (it does not count). On iterations 0, every, 2·every, ... the pre-hook enters a
``gradlab.record`` context before the submodules run, so the recurrent modules called inside the
model's forward are recorded as by a standalone ``record`` (a model that is itself a recurrent
module gets a ``forward`` wrapper instead of the pre-hook, see ``_install_wrapper``); a one-shot
forward hook puts a
gradient hook on the model's outputs that marks the end of the backward pass. The recording is
closed and harvested at the next call of the model (or when the Monitor exits); on every other
iteration only the pre-hook runs.

Harvesting turns the recording into rows (``record``'s columns plus ``iteration``) and into
summaries per (module, call, layer, direction), from the batch-mean ‖∂L/∂h_t‖₂ curve
(lag k = T-1-t for the forward direction, k = t for the reverse one):

    log10_grad_ratio   log10 ‖δ at lag T-1‖ / ‖δ at lag 0‖ (first step relative to the last)
    log10_decay_rate   least-squares slope of log10 ‖δ‖ against k (gradlab.theory.memory_table),
    ln_decay_rate      the same in natural log per step, and its fit_r2
    memory_length      first lag at which ‖δ‖ falls to 1e-3 of its lag-0 value (inf: never)
    nonfinite_frac     share of steps whose norm is NaN or Inf

With ``path=`` each recorded iteration's rows go to one Parquet part file in a folder (written to
a hidden temporary file, fsynced, then renamed into place), so the folder is readable while the
run goes on and after a crash, and only the summaries and the batch-mean curves stay in memory.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from . import theory
from ._record import DEFAULT_QUANTITIES, FRAME_COLUMNS, _recordable, record

__all__ = ["Monitor", "curves", "summarise"]

CURVE_KEYS = ["module", "call", "layer", "direction"]
_MISSING = object()
SUMMARY_QUANTITIES = (
    "log10_grad_ratio", "log10_decay_rate", "ln_decay_rate", "fit_r2", "memory_length",
    "nonfinite_frac",
)
MEMORY_FRACTION = 1e-3


# ---------------------------------------------------------------------------------------------
# Tables (pure pandas: shared with gradlab.report)


def curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Batch-mean ‖∂L/∂h_t‖₂ curves of monitor rows.

    Args:
        frame: rows with ``iteration`` and ``record``'s columns.

    Returns:
        Columns ``iteration, module, call, layer, direction, step, lag, value``: one row per
        step of each curve, ``value`` the plain norm (batch mean), ``lag`` k = T-1-t (forward
        direction) or t (reverse direction), T the curve's length.
    """
    g = frame[(frame["quantity"] == "grad_norm") & (frame["batch_index"] == -1)]
    cols = ["iteration", *CURVE_KEYS, "step"]
    g = g[[*cols, "value"]].sort_values(cols, kind="stable").reset_index(drop=True)
    T = g.groupby(["iteration", *CURVE_KEYS])["step"].transform("max").to_numpy() + 1
    step = g["step"].to_numpy()
    lag = np.where(g["direction"].to_numpy() == 1, step, T - 1 - step)
    return g.assign(lag=lag.astype(np.int64))[[*cols, "lag", "value"]]


def summarise(curve: pd.DataFrame, fraction: float = MEMORY_FRACTION) -> pd.DataFrame:
    """Summaries of each curve of :func:`curves` (see the module docstring for the quantities).

    Returns a tidy frame: ``iteration, module, call, layer, direction, quantity, value``.
    """
    keys = ["iteration", *CURVE_KEYS]
    out_cols = [*keys, "quantity", "value"]
    if curve.empty:
        return pd.DataFrame({c: [] for c in out_cols})
    with np.errstate(divide="ignore", invalid="ignore"):
        logged = curve.assign(value=np.log10(curve["value"].to_numpy(float)))
    mem = theory.memory_table(logged[[*keys, "lag", "value"]], by=keys, fraction=fraction)
    rows = []
    for key, g in logged.groupby(keys, sort=True):
        g = g.sort_values("lag")
        y = g["value"].to_numpy(float)
        ratio = y[-1] - y[0] if np.isfinite(y[0]) and np.isfinite(y[-1]) else math.nan
        nonfinite = float(np.mean(~np.isfinite(curve.loc[g.index, "value"].to_numpy(float))))
        ident = dict(zip(keys, key, strict=True))
        rows.append({**ident, "quantity": "log10_grad_ratio", "value": float(ratio)})
        rows.append({**ident, "quantity": "nonfinite_frac", "value": nonfinite})
    out = pd.concat([mem, pd.DataFrame(rows)], ignore_index=True)
    order = {q: i for i, q in enumerate(SUMMARY_QUANTITIES)}
    out = out.assign(_o=out["quantity"].map(order))
    out = out.sort_values([*keys, "_o"], kind="stable").drop(columns="_o")
    return out.reset_index(drop=True)[out_cols]


def tag_prefix(module: str, call: int, layer: int, direction: int) -> str:
    """``gradlab/<module>/layer<k>`` (plus ``/reverse`` and ``/call<c>`` where they apply)."""
    tag = f"gradlab/{module}/layer{int(layer)}"
    if int(direction) == 1:
        tag += "/reverse"
    if int(call) > 0:
        tag += f"/call{int(call)}"
    return tag


def scalars(summary: pd.DataFrame) -> dict[str, float]:
    """Summary rows of one iteration as ``{tag: value}`` (``memory_length`` inf stays inf)."""
    out = {}
    for r in summary.itertuples(index=False):
        out[f"{tag_prefix(r.module, r.call, r.layer, r.direction)}/{r.quantity}"] = float(r.value)
    return out


def _empty_rows() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in ["iteration", *FRAME_COLUMNS]})


# ---------------------------------------------------------------------------------------------
# Parquet parts


def _write_part(folder: Path, iteration: int, df: pd.DataFrame) -> Path:
    """Write ``df`` to ``folder/part-<iteration>.parquet`` atomically (temp file, fsync, rename)."""
    final = folder / f"part-{iteration:010d}.parquet"
    tmp = folder / f".{final.name}.tmp"  # hidden: Parquet readers skip it
    df.to_parquet(tmp, index=False)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, final)
    with contextlib.suppress(OSError):  # the rename itself survives a power cut
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    return final


def part_files(path: str | Path) -> list[Path]:
    """The finished part files of a monitor folder, in iteration order."""
    return sorted(Path(path).glob("part-*.parquet"))


# ---------------------------------------------------------------------------------------------
# Monitor


class Monitor:
    """Record the recurrent modules of ``model`` at every ``every``-th training iteration.

    Usage::

        with gradlab.Monitor(model, every=50, path="runs/lstm.gradlab") as mon:
            for x, y in loader:
                loss = loss_fn(model(x), y)
                opt.zero_grad(); loss.backward(); opt.step()
        mon.frame()     # record's columns plus `iteration` (read back from path= if given)
        mon.summary()   # per recorded iteration: decay rate, memory length, ...

    Args:
        model: the model the loop calls once per training iteration, containing (or being) the
            ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (or gradlab model) to record.
        every: record iterations 0, every, 2·every, ... An iteration is a grad-enabled call of
            ``model``; calls under ``torch.no_grad()`` (evaluation) do not count.
        path: a folder (created; must be empty) to stream each recorded iteration's rows to as
            one Parquet part file; read it with :meth:`Monitor.read` or
            ``pandas.read_parquet(path)``. Without it the rows are kept in memory.
        tensorboard: a log dir or a ``torch.utils.tensorboard.SummaryWriter`` (needs the
            ``gradlab[tensorboard]`` extra): scalars under ``gradlab/<module>/layer<k>/`` at each
            recorded iteration, images every ``image_every`` recorded iterations.
        image_every: see ``tensorboard``.
        quantities: passed to :func:`gradlab.record` (``"grad_norm"`` is always recorded:
            the summaries are computed from it).
        per_sample: passed to :func:`gradlab.record`.
        **record_kwargs: passed to :func:`gradlab.record`.

    Recorded iterations cost what ``record`` costs; the others only the pre-hook. On exit, even by
    exception, every hook is removed and the model is as before (a recorded iteration that an
    exception broke off before its backward finished is dropped). A no-grad call of the model
    between a recorded iteration's forward and its backward is recorded too, as a further
    ``call`` of each recurrent module.

    Examples:
        >>> import torch, gradlab
        >>> lstm, head = torch.nn.LSTM(1, 8, batch_first=True), torch.nn.Linear(8, 1)
        >>> model = torch.nn.ModuleDict({"rnn": lstm, "head": head})
        >>> opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        >>> x, y = torch.randn(16, 30, 1), torch.randn(16, 1)
        >>> with gradlab.Monitor(lstm, every=5) as mon:
        ...     for _ in range(11):
        ...         loss = torch.nn.functional.mse_loss(head(lstm(x)[0][:, -1]), y)
        ...         opt.zero_grad(); loss.backward(); opt.step()
        >>> sorted(mon.frame()["iteration"].unique().tolist())
        [0, 5, 10]
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        every: int = 50,
        path: str | os.PathLike | None = None,
        tensorboard: Any = None,
        image_every: int = 10,
        quantities: tuple[str, ...] | list[str] = DEFAULT_QUANTITIES,
        per_sample: bool = False,
        **record_kwargs: Any,
    ):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Monitor: expected an nn.Module, got {type(model).__name__}")
        for name, v in (("every", every), ("image_every", image_every)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"Monitor: {name} must be a positive integer, got {v!r}")
        quantities = tuple(quantities)
        if "grad_norm" not in quantities:
            quantities = ("grad_norm", *quantities)
        self.model = model
        self.every = every
        self.path = None if path is None else Path(path)
        self.image_every = image_every
        self._record_kwargs = {"quantities": quantities, "per_sample": per_sample, **record_kwargs}
        self._tb_arg = tensorboard
        self._writer = None
        self._own_writer = False
        self._auto = True  # False: a driver (the Lightning callback) calls _begin/_end itself
        self._hook = None
        self._iteration = 0
        self._n_recorded = 0
        self._stack: contextlib.ExitStack | None = None
        self._rec = None
        self._rec_iteration = -1
        self._backward_done = False
        self._grad_handles: list[Any] = []
        self._rows: list[pd.DataFrame] = []
        self._curves: list[pd.DataFrame] = []
        self._summaries: list[pd.DataFrame] = []
        self._listeners: list[Callable[[int, pd.DataFrame], None]] = []
        self._active = False
        self._imaged = -1
        self._last_harvested = -1
        self._wrapper: Callable[..., Any] | None = None
        self._wrapper_prev: Any = None
        self._rec_forward: Callable[..., Any] | None = None

    # -- context manager ------------------------------------------------------------------------
    def __enter__(self) -> Monitor:
        if self._active:
            raise RuntimeError("Monitor: already entered; a Monitor runs one training loop")
        # fail now, not at iteration 0, on bad record options or a model without RNNs
        with record(self.model, **self._record_kwargs):
            pass
        if self.path is not None:
            if self.path.exists() and (not self.path.is_dir() or any(self.path.iterdir())):
                raise FileExistsError(
                    f"Monitor: path {str(self.path)!r} exists and is not an empty folder; "
                    f"give a new folder per run (or delete the old one)"
                )
            self.path.mkdir(parents=True, exist_ok=True)
        if self._tb_arg is not None:
            from .integrations.tensorboard import summary_writer

            self._writer, self._own_writer = summary_writer(self._tb_arg)
        if self._auto and _recordable(self.model):
            self._install_wrapper()
        elif self._auto:
            self._hook = self.model.register_forward_pre_hook(self._pre_hook)
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        try:
            if self._stack is not None:
                if exc[0] is None or self._backward_done:  # a finished iteration is kept
                    self._harvest()
                else:
                    self._discard()
        finally:
            self._close()

    def _close(self) -> None:
        try:
            if self._stack is not None:
                self._discard()
        finally:
            if self._hook is not None:
                self._hook.remove()
                self._hook = None
            self._remove_wrapper()
        if self._writer is not None:
            if self._last_harvested >= 0 and self._imaged != self._last_harvested:  # final state
                from .integrations.tensorboard import write_images

                with contextlib.suppress(Exception):
                    write_images(self._writer, self.curves(), self._last_harvested)
            self._writer.flush()
            if self._own_writer:
                self._writer.close()
            self._writer = None
        self._active = False

    # -- results --------------------------------------------------------------------------------
    @property
    def iteration(self) -> int:
        """Number of training iterations seen so far (the next one's index)."""
        return self._iteration

    def frame(self) -> pd.DataFrame:
        """Rows of every recorded iteration: ``iteration`` and ``record``'s columns."""
        if self.path is not None:
            return Monitor.read(self.path)
        if not self._rows:
            return _empty_rows()
        return pd.concat(self._rows, ignore_index=True)

    def summary(self) -> pd.DataFrame:
        """Per recorded iteration and (module, call, layer, direction): quantity, value
        (log10_grad_ratio, log10_decay_rate, ln_decay_rate, fit_r2, memory_length,
        nonfinite_frac; see the module docstring)."""
        if not self._summaries:
            return summarise(curves(_empty_rows()))
        return pd.concat(self._summaries, ignore_index=True)

    def curves(self) -> pd.DataFrame:
        """Batch-mean ‖∂L/∂h_t‖₂ per recorded iteration and step (see :func:`curves`)."""
        if not self._curves:
            return curves(_empty_rows())
        return pd.concat(self._curves, ignore_index=True)

    @staticmethod
    def read(path: str | os.PathLike) -> pd.DataFrame:
        """The rows a Monitor streamed to ``path`` (finished parts only; also mid-run)."""
        parts = part_files(path)
        if not Path(path).is_dir():
            raise FileNotFoundError(f"Monitor.read: no monitor folder at {str(path)!r}")
        if not parts:
            return _empty_rows()
        return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)

    # -- the hooks ------------------------------------------------------------------------------
    def _pre_hook(self, module: nn.Module, args: Any) -> None:
        if not torch.is_grad_enabled():
            if self._stack is not None and self._backward_done:
                self._harvest()
            return None
        self._begin()
        return None

    def _begin(self) -> None:
        """Start a training iteration: harvest the last recording, open one if it is due."""
        if self._stack is not None:
            self._harvest()
        i = self._iteration
        self._iteration += 1
        if i % self.every == 0:
            self._open(i)

    def _open(self, i: int) -> None:
        stack = contextlib.ExitStack()
        try:
            self._rec = stack.enter_context(record(self.model, **self._record_kwargs))
            if self._wrapper is not None:  # record shadowed the model's forward: call it from
                d = self.model.__dict__  # the wrapper, which stays the entry point
                self._rec_forward = d["forward"]
                d["forward"] = self._wrapper
            if self._auto and self._wrapper is None:
                stack.enter_context(_removing(self.model.register_forward_hook(self._post_hook)))
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        self._rec_iteration = i
        self._backward_done = False

    # A pre-hook runs after nn.Module.__call__ has looked up ``forward``, too late to record the
    # call of a model that is itself a recurrent module. For such a model the Monitor shadows
    # ``forward`` with a wrapper (an instance attribute, removed on exit) that runs the pre-hook's
    # logic first and then calls record's shadow when a recording is open, else the class's
    # forward.
    def _install_wrapper(self) -> None:
        model = self.model
        prev = model.__dict__.get("forward", _MISSING)
        plain = prev if prev is not _MISSING else type(model).forward.__get__(model)

        def forward(*args: Any, **kwargs: Any) -> Any:
            self._pre_hook(model, args)
            if self._stack is None:
                return plain(*args, **kwargs)
            out = self._rec_forward(*args, **kwargs)
            self._post_hook(model, args, out)  # (a hook registered mid-call would not run)
            return out

        self._wrapper, self._wrapper_prev = forward, prev
        model.forward = forward

    def _remove_wrapper(self) -> None:
        if self._wrapper is None:
            return
        if self._wrapper_prev is _MISSING:
            self.model.__dict__.pop("forward", None)
        else:
            self.model.__dict__["forward"] = self._wrapper_prev
        self._wrapper = self._rec_forward = None

    def _post_hook(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._grad_handles or not torch.is_grad_enabled():
            return
        tensors = [t for t in _tensors(output) if t.requires_grad]
        if tensors:
            self._grad_handles.append(
                torch.autograd.graph.register_multi_grad_hook(tensors, self._on_grad, mode="any")
            )

    def _on_grad(self, grad: Any) -> None:
        # runs when the backward reaches the model's outputs; the queued callback runs when the
        # whole backward pass is over, after record's own hooks delivered their rows
        torch.autograd.Variable._execution_engine.queue_callback(self._mark_done)

    def _mark_done(self) -> None:
        self._backward_done = True

    def _end(self) -> pd.DataFrame | None:
        """Harvest now (the driver knows the backward is over); the iteration's summary."""
        if self._stack is None:
            return None
        return self._harvest()

    def _release(self) -> Any:
        stack, rec, it = self._stack, self._rec, self._rec_iteration
        self._stack, self._rec = None, None
        try:
            stack.close()
        finally:
            for h in self._grad_handles:
                h.remove()
            self._grad_handles.clear()
        return rec, it

    def _discard(self) -> None:
        self._release()

    def _harvest(self) -> pd.DataFrame | None:
        rec, it = self._release()
        df = rec.frame()
        if df.empty:
            return None
        df.insert(0, "iteration", np.full(len(df), it, dtype=np.int64))
        cur = curves(df)
        summ = summarise(cur)
        self._curves.append(cur)
        self._summaries.append(summ)
        self._n_recorded += 1
        self._last_harvested = it
        if self.path is not None:
            _write_part(self.path, it, df)
        else:
            self._rows.append(df)
        if self._writer is not None:
            from .integrations.tensorboard import write_images, write_scalars

            write_scalars(self._writer, summ, it)
            if (self._n_recorded - 1) % self.image_every == 0:
                write_images(self._writer, self.curves(), it)
                self._imaged = it
        for fn in self._listeners:
            fn(it, summ)
        return summ


@contextlib.contextmanager
def _removing(handle):
    try:
        yield handle
    finally:
        handle.remove()


def _tensors(obj: Any) -> list[torch.Tensor]:
    """Every tensor in a (nested) output: tensor, tuple/list, dict, dataclass-like."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []
