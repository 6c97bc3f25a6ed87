"""Route "graph": read δh_t = ∂L/∂h_t where the autograd engine already holds it.

Where PyTorch runs a recurrent layer as composite ATen operations (``nn.RNN`` and ``nn.GRU`` on
CPU, ``nn.LSTM`` in float64 on CPU), every step's new hidden state h_t is the output of its own
autograd node, and the layer's output is ``stack`` (dense input) or ``cat`` (packed input) of
those h_t. Before the engine runs the node that made h_t it has summed every gradient sent to
h_t: from the output sequence, from h_n, and from step t+1 through W_hh (and z ⊙ h for GRU) —
exactly the total δh_t of BPTT. A pre-hook on that node reads it; nothing is computed twice and
no gradient is changed, so outputs and parameter gradients are bit for bit those of the
unrecorded model, and recording costs one norm per step.

The node of step t is found by walking from the layer's output node: through the views (the
batch-first transpose), the direction ``cat`` (bidirectional), to the ``stack``/``cat`` whose
inputs are the steps. If the graph does not have that shape (a fused kernel, another PyTorch
build), :func:`step_nodes` returns None and the caller takes the recursion route.
"""

from __future__ import annotations

import torch
from torch import Tensor

_VIEWS = {"TransposeBackward0", "TransposeBackward1", "ViewBackward0", "PermuteBackward0"}


def _strip_views(node):
    while node is not None and node.name() in _VIEWS and len(node.next_functions) == 1:
        node = node.next_functions[0][0]
    return node


def step_nodes(out: Tensor, T: int, D: int, batch_sizes: Tensor | None):
    """Per direction, the T autograd nodes whose outputs are h_0..h_{T-1} (sequence order, for
    packed input the h_t of the samples active at t), or None if the graph has another shape."""
    node = _strip_views(out.grad_fn)
    if node is None:
        return None
    if D == 2:
        if node.name() != "CatBackward0" or len(node.next_functions) != 2:
            return None
        heads = [_strip_views(f) for f, _ in node.next_functions]
    else:
        heads = [node]
    want = "CatBackward0" if batch_sizes is not None else "StackBackward0"
    found = []
    for head in heads:
        if head is None or head.name() != want or len(head.next_functions) != T:
            return None
        nodes = [f for f, _ in head.next_functions]
        if any(n is None or n.name() in _VIEWS for n in nodes):
            return None
        found.append(nodes)
    if D == 2 and found[0][0] is found[1][0]:
        return None
    return found


class StepReader:
    """Pre-hooks on the step nodes of one direction: each stores ‖δh_t‖ per sample; once the
    backward pass is over (an engine callback) the (B, T) series goes to ``emit``."""

    def __init__(self, nodes, B: int, batch_sizes: Tensor | None, dtype, device, emit):
        self.T = len(nodes)
        self.B = B
        self.batch_sizes = None if batch_sizes is None else [int(b) for b in batch_sizes]
        self.norm_dtype = torch.float64  # a float32 sum of squares overflows at ‖g‖ ≈ 1.8e19
        self.device = device
        self.emit = emit
        self.norms: list[Tensor | None] = [None] * self.T
        self.queued = False
        self.handles = [n.register_prehook(self._hook(t)) for t, n in enumerate(nodes)]

    def _hook(self, t: int):
        def hook(grad_outputs):
            g = grad_outputs[0]
            if g is not None:
                self.norms[t] = torch.linalg.vector_norm(g, dim=-1, dtype=self.norm_dtype)
            if not self.queued:
                self.queued = True
                torch.autograd.Variable._execution_engine.queue_callback(self._finish)
        return hook

    def _finish(self):
        self.queued = False
        if self.batch_sizes is None and all(n is not None for n in self.norms):
            out = torch.stack(self.norms, 1)  # (B, T): one copy
        else:  # packed (samples 0..bs_t-1 at step t) or steps no gradient reached: zeros
            out = torch.zeros(self.B, self.T, dtype=self.norm_dtype, device=self.device)
            for t, n in enumerate(self.norms):
                if n is not None:
                    out[: n.shape[0], t] = n
        self.norms = [None] * self.T
        self.emit(out)

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []
