"""``gradlab.record``: per-step gradient norms, Jacobians and gate statistics of the recurrent
modules inside any user model, read from the real forward and backward pass.

Where each kind of module is recorded (one file per route):

- :mod:`._fused` — stock ``nn.RNN/LSTM/GRU`` on a padded batch. Each layer runs through the
  module's own fused kernel with its own weights (outputs and parameter gradients bit for bit
  the unrecorded model's). The total gradient δh_t = ∂L/∂h_t is caught either where the autograd
  engine already holds it (:mod:`._graph`, composite CPU kernels: one pre-hook per step) or by
  the BPTT recursion run right after the layer's fused backward (:mod:`._recursion`: cuDNN,
  oneDNN's LSTM);
- :mod:`._packed` — the same for a ``PackedSequence``, per true step of each sample;
- :mod:`._unrolled` — gradlab's ``models.RNN/LSTM/GRU``, unrolled in Python: a hook per state;
- :mod:`._user` — a user's cell in ``gradlab.Unrolled``: a hook per state, Jacobians by jacrev.

Each layer of each call is a :class:`._layer.Site`, which writes series into the
:class:`Recording` (:mod:`._recording`), where non-finite values are noted as data.

Nothing is stashed on the user's modules: the module's ``forward`` is shadowed by an instance
attribute for the duration of the ``with`` block only, and every hook handle and shadow is removed
in ``finally``.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Iterator

import torch
from torch import nn

from .. import models
from . import _fused, _unrolled, _user
from ._layer import ROUTES, Options
from ._recording import (
    DEFAULT_QUANTITIES,
    FRAME_COLUMNS,
    GRAD_QUANTITIES,
    QUANTITIES,
    Recording,
)

__all__ = ["record", "Recording", "QUANTITIES", "DEFAULT_QUANTITIES", "FRAME_COLUMNS", "ROUTES"]


def _is_stock(m: nn.Module) -> bool:
    return isinstance(m, (nn.RNN, nn.LSTM, nn.GRU))


def _recordable(m: nn.Module) -> bool:
    return _is_stock(m) or isinstance(m, (models._Recurrent, models.Unrolled))


def _find_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    found = [(n or type(model).__name__, m) for n, m in model.named_modules() if _recordable(m)]
    # a gradlab.Unrolled owns its cell: do not record recurrent modules nested inside it twice
    owners = [n for n, m in found if isinstance(m, models.Unrolled)]
    found = [(n, m) for n, m in found if not any(n.startswith(o + ".") for o in owners)]
    # torch.compile's wrapper holds the model as `_orig_mod`: name modules as the user does
    return [(".".join(p for p in n.split(".") if p != "_orig_mod") or type(m).__name__, m)
            for n, m in found]


def _compiled(model: nn.Module) -> list[nn.Module]:
    """Modules that run through torch.compile: OptimizedModule wrappers and modules compiled in
    place (``module.compile()``)."""
    from torch._dynamo.eval_frame import OptimizedModule
    return [m for m in model.modules()
            if isinstance(m, OptimizedModule) or getattr(m, "_compiled_call_impl", None)]


@contextlib.contextmanager
def record(
    model: nn.Module,
    *,
    quantities: tuple[str, ...] | list[str] = DEFAULT_QUANTITIES,
    per_sample: bool = False,
    jacobians: str | None = None,
    memory_budget: float = 2**30,
    on_nonfinite: str = "warn",
    route: str = "auto",
    grad_scale=None,
) -> Iterator[Recording]:
    """Record every ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (and gradlab model) inside ``model``.

    Usage::

        with gradlab.record(model) as rec:
            loss = loss_fn(model(x), y)
            loss.backward()
        df = rec.frame()

    Args:
        model: any ``nn.Module`` containing recurrent modules (or one itself), also a
            ``torch.compile``d one.
        quantities: any of ``"grad_norm"`` (‖∂L/∂h_t‖₂ of the total BPTT gradient, from the
            real backward pass), ``"grad_norm_c"`` (‖∂L/∂c_t‖₂ for LSTM), ``"gates"`` (per-step
            gate means and saturated fractions, LSTM/GRU; one batched recomputation of the gates
            per layer), ``"jac_norm"`` (spectral and Frobenius norms of ∂s_t/∂s_{t-1}, s the full
            state: H×H for RNN/GRU, 2H×2H over (h, c) for LSTM). Default: the two gradient norms,
            cheap enough to leave on (see ``benchmarks/results.md``).
        per_sample: also keep every sample's value (``batch_index`` ≥ 0) besides the batch mean.
        jacobians: ``"full"`` keeps every Jacobian (B, T, S, S) (see ``Recording.jacobians``),
            refused with a MemoryError above ``memory_budget`` bytes (default 1 GiB).
        on_nonfinite: ``"warn"`` (default): inf/NaN gradients are recorded as they are, where
            they first appeared is listed by ``Recording.nonfinite()``, one warning per block,
            and the backward pass finishes exactly as without gradlab (so clipping or a
            ``GradScaler`` sees what it would have seen). ``"raise"``: a ``FloatingPointError``
            inside ``backward()`` naming the first non-finite step (a debugging mode, like
            ``torch.autograd.detect_anomaly``).
        route: how the gradient of a stock module is caught. ``"auto"``: per-step autograd
            pre-hooks where PyTorch runs the layer as composite operations (RNN/GRU on CPU),
            else the BPTT recursion after the fused backward (oneDNN LSTM on CPU, cuDNN).
            ``"lean"``: the same, with the recursion's step caches recomputed 32 steps at a time
            (peak memory within a few percent of the unrecorded run, a little slower).
            ``"recursion"``: the recursion everywhere; ``"graph"``: pre-hooks or an error.
            Every route leaves outputs and parameter gradients bit for bit unchanged.
        grad_scale: a ``torch.amp.GradScaler`` (or a number): recorded gradient norms are
            divided by its scale at each backward, i.e. recorded for the unscaled loss. Without
            it, under a GradScaler the recorded gradients are those of the scaled loss, as
            ``.grad`` is before ``scaler.unscale_``.

    Packed input (``PackedSequence``): ``step`` is the position in each sample's own sequence,
    there are no rows for padded steps, the reverse direction starts at each sample's own last
    step, per-sample rows carry the sample's index in the user's batch, and the batch mean at
    step t averages the ``count`` samples that have a step t.

    Compiled models: the recorded modules run eagerly (outside the compiled graph) while the
    ``with`` block is open, so the rows are those of the eager model; the compiled graph is used
    again afterwards. Under ``torch.autocast`` the kernels run as autocast makes them run
    (bfloat16 on CPU, float16 on CUDA); gradient norms accumulate in float64.

    The model's outputs and parameter gradients are those of the unrecorded model. On exit, even
    by exception, every hook and shadowed ``forward`` is removed: the model is exactly as before.

    Examples:
        >>> import torch, gradlab
        >>> lstm = torch.nn.LSTM(3, 8, batch_first=True)
        >>> with gradlab.record(lstm) as rec:
        ...     out, _ = lstm(torch.randn(2, 20, 3))
        ...     out[:, -1].sum().backward()
        >>> df = rec.frame()
        >>> sorted(df["quantity"].unique())
        ['grad_norm', 'grad_norm_c']
        >>> int(df["step"].max())
        19
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"record: expected an nn.Module, got {type(model).__name__}")
    quantities = tuple(quantities)
    bad = [q for q in quantities if q not in QUANTITIES]
    if bad:
        raise ValueError(f"record: unknown quantities {bad}; allowed: {list(QUANTITIES)}")
    if jacobians not in (None, "norms", "full"):
        raise ValueError(f"record: jacobians must be None, 'norms' or 'full', got {jacobians!r}")
    if jacobians == "norms" and "jac_norm" not in quantities:
        quantities = quantities + ("jac_norm",)
    if not (isinstance(memory_budget, (int, float)) and memory_budget > 0
            and math.isfinite(memory_budget)):
        raise ValueError(f"record: memory_budget must be a positive number of bytes, "
                         f"got {memory_budget!r}")
    if on_nonfinite not in ("warn", "raise"):
        raise ValueError(f"record: on_nonfinite must be 'warn' or 'raise', got {on_nonfinite!r}")
    if route not in ROUTES:
        raise ValueError(f"record: route must be one of {list(ROUTES)}, got {route!r}")
    if grad_scale is not None and not (isinstance(grad_scale, (int, float))
                                       or hasattr(grad_scale, "get_scale")):
        raise TypeError(f"record: grad_scale must be a torch.amp.GradScaler or a number, got "
                        f"{type(grad_scale).__name__}")
    targets = _find_modules(model)
    if not targets:
        raise ValueError(
            f"record: {type(model).__name__} contains no nn.RNN, nn.LSTM, nn.GRU or gradlab "
            f"model; wrap a custom cell in gradlab.models.Unrolled to record it"
        )
    for name, m in targets:
        if _is_stock(m):
            _fused.check_options(m, name)
    rec = Recording(per_sample=per_sample, modules=[n for n, _ in targets],
                    _on_nonfinite=on_nonfinite, _grad_scale=grad_scale)
    opts = Options(quantities, jacobians, memory_budget, route)
    shadowed: list[tuple[nn.Module, str, object]] = []
    top_calls = []
    pre = model.register_forward_pre_hook(
        lambda *_: top_calls.append(torch.is_grad_enabled()) if not top_calls else None)
    clean_exit = False
    try:
        for m in _compiled(model):  # run eagerly while recording: the rows are eager's
            if isinstance(m, torch._dynamo.eval_frame.OptimizedModule):
                _shadow(shadowed, m, "forward", m._orig_mod.__call__)
            else:
                _shadow(shadowed, m, "_compiled_call_impl", None)
        for name, m in targets:
            if _is_stock(m):
                fn = _fused.forward
            elif isinstance(m, models.Unrolled):
                fn = _user.forward
            else:
                fn = _unrolled.forward
            _shadow(shadowed, m, "forward", _bind(fn, m, rec, opts, name))
        yield rec
        clean_exit = True
    finally:
        pre.remove()
        for m, attr, prev in reversed(shadowed):
            if prev is _MISSING:
                m.__dict__.pop(attr, None)
            else:
                m.__dict__[attr] = prev
        for h in opts.handles:
            h.remove()
        opts.handles.clear()
    if clean_exit:
        _say_why_empty(rec, opts, top_calls)


def _say_why_empty(rec: Recording, opts: Options, top_calls: list) -> None:
    """Never return nothing without a word."""
    if top_calls and top_calls[0] and not rec._calls:
        warnings.warn(
            "record: the model ran inside the block, but none of its recurrent modules went "
            f"through gradlab's forward ({rec.modules}); a model traced ahead of time "
            "(torch.jit, torch.export, a compiled graph that inlined the modules) cannot be "
            "recorded: record the eager model", RuntimeWarning, stacklevel=3)
    elif opts.grad_calls and not any(e.quantity in GRAD_QUANTITIES for e in rec.entries):
        warnings.warn(
            "record: the recurrent modules ran with gradients enabled but no gradient reached "
            "them inside the block, so there are no gradient rows; call loss.backward() (or "
            "torch.autograd.grad) inside the with block", RuntimeWarning, stacklevel=3)


_MISSING = object()


def _shadow(shadowed, m: nn.Module, attr: str, value) -> None:
    shadowed.append((m, attr, m.__dict__.get(attr, _MISSING)))
    m.__dict__[attr] = value


def _bind(fn, module, rec, opts, name):
    def forward(*args, **kwargs):
        out = fn(module, rec, opts, name, *args, **kwargs)
        if opts.want_grad:
            opts.grad_calls += 1
        return out
    # inside a compiled function TorchDynamo breaks the graph here and runs the recorded module
    # eagerly, instead of tracing gradlab's hooks into a graph (where they would never fire)
    return torch._dynamo.disable(forward, recursive=True)
