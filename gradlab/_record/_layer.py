"""The per-layer state of a recording: one :class:`Site` per (module call, layer), carrying what
every route needs to write a series down, and the time maps between processing order and
sequence order.

Processing order is the order a direction walks its sequence: t = 0..len-1 for the forward
direction, t = len-1..0 for the reverse one. For a batch of variable-length sequences (packed
input) the reverse direction of sample b starts at its own last step len_b - 1, so the map is per
sample: position p of sample b is step len_b - 1 - p (p < len_b).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from .. import _cells
from ._recording import GRAD_QUANTITIES, Recording

ROUTES = ("auto", "graph", "recursion", "lean", "extra_input")


@dataclass
class Options:
    quantities: tuple[str, ...]
    jacobians: str | None
    memory_budget: float
    route: str = "auto"
    handles: list = field(default_factory=list)  # removed on leaving record()
    grad_calls: int = 0  # recorded forward calls that wanted gradients

    @property
    def want_grad(self) -> bool:
        return bool(set(GRAD_QUANTITIES) & set(self.quantities)) and torch.is_grad_enabled()

    @property
    def want_forward_stats(self) -> bool:
        return bool({"gates", "jac_norm"} & set(self.quantities)) or self.jacobians == "full"


def reverse_index(lengths: Tensor, T: int) -> Tensor:
    """(B, T) index that reverses each sample's first len_b steps and keeps its padding in place:
    idx[b, p] = len_b - 1 - p for p < len_b, else p. Its own inverse."""
    p = torch.arange(T, device=lengths.device).expand(lengths.shape[0], T)
    L = lengths.unsqueeze(1)
    return torch.where(p < L, L - 1 - p, p)


def to_processing(seq: Tensor, d: int, lengths: Tensor | None) -> Tensor:
    """(B, T, ...) in sequence order -> processing order of direction d (and back: an
    involution)."""
    if d == 0:
        return seq
    if lengths is None:
        return seq.flip(1)
    idx = reverse_index(lengths.to(seq.device), seq.shape[1])
    idx = idx.view(*idx.shape, *([1] * (seq.dim() - 2))).expand_as(seq)
    return seq.gather(1, idx)


@dataclass
class Site:
    """One layer of one recorded call of module ``name``: directions' parameters, the batch's
    lengths (variable-length input, sorted order) and the permutation back to the user's batch
    order."""

    rec: Recording
    opts: Options
    name: str
    call: int
    layer: int
    params: list[_cells.CellParams]  # one per direction
    lengths: Tensor | None = None  # (B,) in the kernel's (sorted) batch order
    unsort: Tensor | None = None  # (B,) kernel order -> user order: values[unsort]

    @property
    def kind(self) -> str:
        return self.params[0].kind

    @property
    def H(self) -> int:
        return self.params[0].hidden_size

    def _user_order(self, v: Tensor) -> tuple[Tensor, Tensor | None]:
        lengths = self.lengths
        if self.unsort is not None:
            v = v[self.unsort.to(v.device)]
            lengths = None if lengths is None else lengths[self.unsort.to(lengths.device)]
        return v, lengths

    def add_grad(self, d: int, quantity: str, norms_proc: Tensor) -> None:
        """Write a gradient-norm series (B, T) given in processing order of direction d."""
        if quantity not in self.opts.quantities:
            return
        seq = to_processing(norms_proc, d, self.lengths)
        T = seq.shape[1]
        order = None
        if d == 1:  # processing position of each step, for "where non-finite values appeared"
            steps = torch.arange(T, device=seq.device).expand(seq.shape[0], T)
            order = to_processing(steps.unsqueeze(-1), 1, self.lengths).squeeze(-1)
        seq, lengths = self._user_order(seq)
        if order is not None and self.unsort is not None:
            order = order[self.unsort.to(order.device)]
        self.rec._add_grad(self.name, self.call, self.layer, d, quantity, seq, lengths, order)

    def add(self, d: int, quantity: str, values_proc: Tensor, gate: str | None = None) -> None:
        """Write a forward statistic (B, T) given in processing order of direction d."""
        seq, lengths = self._user_order(to_processing(values_proc, d, self.lengths))
        self.rec._add(self.name, self.call, self.layer, d, quantity, seq, gate, lengths)
