"""What ``gradlab.record`` collects, and its tidy table.

An entry is one recorded series of one (module, call, layer, direction, quantity[, gate]):
values over the sequence positions t = 0..T-1 (always in sequence order, also for the reverse
direction), per sample (B, T) or already averaged over the batch (T,). For variable-length input
(``PackedSequence``) sample b has steps t < len_b only; its values at padded positions are never
written to the table, and the batch mean at step t averages the ``count`` samples that have a
step t.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

QUANTITIES = ("grad_norm", "grad_norm_c", "gates", "jac_norm")
DEFAULT_QUANTITIES = ("grad_norm", "grad_norm_c")
GRAD_QUANTITIES = ("grad_norm", "grad_norm_c")
SATURATION = (0.05, 0.95)
FRAME_COLUMNS = [
    "module", "call", "layer", "direction", "step", "gate", "batch_index", "count", "quantity",
    "value",
]
NONFINITE_COLUMNS = ["module", "call", "layer", "direction", "quantity", "first_step",
                     "nonfinite_steps", "steps"]


@dataclass
class _Entry:
    module: str
    call: int
    layer: int
    direction: int
    quantity: str
    values: Tensor  # (B, T) per sample, or (T,) batch mean; sequence order; detached
    gate: str | None = None
    lengths: Tensor | None = None  # (B,) valid steps of each sample (variable-length input)
    count: Tensor | None = None  # (T,) samples averaged into a batch mean (values (T,))


@dataclass
class Recording:
    """What ``gradlab.record`` collected. Use :meth:`frame` for a tidy table and
    :meth:`nonfinite` for where gradients stopped being finite."""

    per_sample: bool = False
    entries: list[_Entry] = field(default_factory=list)
    jacobians_full: dict[tuple[str, int, int, int], Tensor] = field(default_factory=dict)
    modules: list[str] = field(default_factory=list)
    routes: dict[str, str] = field(default_factory=dict)
    _calls: dict[str, int] = field(default_factory=dict)
    _nonfinite: list[dict] = field(default_factory=list)
    _on_nonfinite: str = "warn"
    _warned: bool = False
    _grad_scale: object = None

    def frame(self) -> pd.DataFrame:
        """Tidy long table, one row per observation.

        Columns: ``module`` (name inside the model), ``call`` (0-based forward call of that
        module), ``layer``, ``direction`` (0 forward, 1 reverse), ``step`` (position t in the
        sample's own sequence, 0-based, also for the reverse direction), ``gate`` (LSTM:
        input/forget/cell/output, GRU: reset/update/new; empty otherwise), ``batch_index``
        (sample; -1 for the batch mean), ``count`` (samples in the batch mean at that step: all of
        them for padded input, those with a step t for a ``PackedSequence``; 1 on per-sample
        rows), ``quantity``, ``value``.

        Quantities: ``grad_norm`` ‖∂L/∂h_t‖₂ (total gradient BPTT delivers to h_t),
        ``grad_norm_c`` ‖∂L/∂c_t‖₂ (LSTM; the state-space gradient, h_t held fixed, so that
        (∂L/∂h_{t-1}, ∂L/∂c_{t-1}) = J_tᵀ (∂L/∂h_t, ∂L/∂c_t)), ``jac_norm_spectral`` /
        ``jac_norm_frobenius`` of ∂s_t/∂s_{t-1} (s the full state), ``gate_mean``,
        ``gate_saturated_frac`` (fraction of gate units < 0.05 or > 0.95). Non-finite gradients
        appear as ``inf``/``nan`` values (see :meth:`nonfinite`).
        """
        parts = [_entry_frame(e) for e in self.entries]
        if not parts:
            return pd.DataFrame({c: [] for c in FRAME_COLUMNS})
        df = pd.concat(parts, ignore_index=True)
        return df.sort_values(
            ["module", "call", "layer", "direction", "quantity", "gate", "batch_index", "step"],
            kind="stable",
        ).reset_index(drop=True)

    def nonfinite(self) -> pd.DataFrame:
        """Where recorded gradients were inf or NaN, one row per series, in the order the
        backward pass produced them (the first row is where non-finite values first appeared).

        Columns: module, call, layer, direction, quantity, ``first_step`` (the step where the
        backward pass first met a non-finite value: the latest in processing order),
        ``nonfinite_steps`` (how many steps hold one), ``steps`` (the series' length).
        """
        return pd.DataFrame(self._nonfinite, columns=NONFINITE_COLUMNS)

    def jacobians(self, module: str | None = None, layer: int = 0, direction: int = 0,
                  call: int = 0) -> Tensor:
        """Full Jacobians ∂s_t/∂s_{t-1}, shape (B, T, S, S), steps in sequence order
        (for the reverse direction, step t's Jacobian is ∂s_t/∂s_{t+1}).

        Only with ``record(..., jacobians="full")``. ``module`` may be omitted when the model
        holds a single recurrent module.
        """
        if module is None:
            if len(self.modules) != 1:
                raise ValueError(f"jacobians: name the module, one of {self.modules}")
            module = self.modules[0]
        key = (module, call, layer, direction)
        if key not in self.jacobians_full:
            raise KeyError(
                f"no full Jacobians recorded for module={module!r} call={call} layer={layer} "
                f"direction={direction}; record with jacobians='full' (recorded: "
                f"{sorted(self.jacobians_full)})"
            )
        return self.jacobians_full[key]

    # -- internal ------------------------------------------------------------------------------
    def _add(self, module, call, layer, d, quantity, values, gate=None, lengths=None):
        """Store one series. ``values``: (B, T) or (T,) in sequence order; ``lengths`` (B,)
        marks the valid steps of each sample (None: all T)."""
        values = values.detach()
        count = None
        if values.dim() == 2 and not self.per_sample:
            if lengths is None:
                count = torch.full((values.shape[1],), values.shape[0], dtype=torch.int64)
                values = values.mean(0)
            else:
                mask = _mask(lengths, values.shape[1], values.device)  # (B, T)
                n = mask.sum(0)
                values = torch.where(mask, values, 0).sum(0) / n.clamp(min=1)
                count, lengths = n, None
        self.entries.append(_Entry(module, call, layer, d, quantity, values, gate, lengths, count))

    def _add_grad(self, module, call, layer, d, quantity, norms, lengths=None, order=None):
        """Store a gradient-norm series and note non-finite values. ``norms`` (B, T) in sequence
        order; ``order`` (B, T) the processing position of each step (for "first appearance")."""
        scale = _scale_value(self._grad_scale)
        if scale is not None:
            norms = norms / scale
        finite = torch.isfinite(norms)
        if lengths is not None:
            finite = finite | ~_mask(lengths, norms.shape[1], norms.device)
        if not bool(finite.all()):
            bad = ~finite  # (B, T)
            steps = torch.arange(norms.shape[1], device=norms.device).expand_as(bad)
            proc = steps if order is None else order
            # the backward pass meets processing positions from last to first
            first = int(steps[bad][proc[bad].argmax()])
            info = {"module": module, "call": call, "layer": layer, "direction": d,
                    "quantity": quantity, "first_step": first,
                    "nonfinite_steps": int(bad.any(0).sum()), "steps": norms.shape[1]}
            self._nonfinite.append(info)
            where = (f"module {module!r} (call {call}), layer {layer}, direction {d}, "
                     f"step {first}")
            if self._on_nonfinite == "raise":
                raise FloatingPointError(
                    f"record: non-finite {quantity} (inf or NaN) first at {where}; "
                    f"on_nonfinite='raise' stops here. Check the learning rate and the data, "
                    f"clip gradients (torch.nn.utils.clip_grad_norm_), or record with "
                    f"on_nonfinite='warn' to keep training as PyTorch would"
                )
            if not self._warned:
                self._warned = True
                warnings.warn(
                    f"record: non-finite {quantity} (inf or NaN) first at {where}; recorded as "
                    f"is, training unchanged. Rec.nonfinite() lists every series affected "
                    f"(warned once per record block)", RuntimeWarning, stacklevel=2,
                )
        self._add(module, call, layer, d, quantity, norms, lengths=lengths)

    def _next_call(self, name: str) -> int:
        c = self._calls.get(name, 0)
        self._calls[name] = c + 1
        return c


def _scale_value(s) -> float | None:
    if s is None:
        return None
    if isinstance(s, (int, float)):
        return float(s)
    return float(s.get_scale())  # a torch.amp.GradScaler: its scale at this backward


def _mask(lengths: Tensor, T: int, device) -> Tensor:
    return torch.arange(T, device=device) < lengths.to(device).unsqueeze(1)  # (B, T)


def _entry_frame(e: _Entry) -> pd.DataFrame:
    v = e.values.detach().to("cpu", torch.float64).numpy()
    T = v.shape[-1]
    if v.ndim == 1:
        steps = np.arange(T)
        bidx = np.full(T, -1)
        count = e.count.cpu().numpy() if e.count is not None else np.ones(T, dtype=np.int64)
        vals = v
    else:  # per-sample rows (valid steps only), then the batch mean (batch_index -1)
        B = v.shape[0]
        lengths = np.full(B, T) if e.lengths is None else e.lengths.cpu().numpy()
        valid = np.arange(T)[None, :] < lengths[:, None]  # (B, T)
        bi, st = np.nonzero(valid)
        n = valid.sum(0)
        mean = np.where(valid, v, 0.0).sum(0) / np.maximum(n, 1)
        keep = n > 0
        steps = np.concatenate([st, np.arange(T)[keep]])
        bidx = np.concatenate([bi, np.full(int(keep.sum()), -1)])
        count = np.concatenate([np.ones(len(st), dtype=np.int64), n[keep]])
        vals = np.concatenate([v[bi, st], mean[keep]])
    n = len(vals)
    return pd.DataFrame({
        "module": np.full(n, e.module, dtype=object),
        "call": np.full(n, e.call),
        "layer": np.full(n, e.layer),
        "direction": np.full(n, e.direction),
        "step": steps,
        "gate": np.full(n, e.gate or "", dtype=object),
        "batch_index": bidx,
        "count": count.astype(np.int64),
        "quantity": np.full(n, e.quantity, dtype=object),
        "value": vals,
    })
