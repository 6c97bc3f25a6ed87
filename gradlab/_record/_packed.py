"""Stock modules on a variable-length batch (``PackedSequence``).

The layer runs as the module's own packed kernel call (``torch.lstm(data, batch_sizes, ...)``),
layer by layer, with the initial state in the packed (sorted) batch order, exactly as
``nn.LSTM.forward`` does; outputs and gradients are bit for bit the module's own.

Recording works per true step: sample b of the sorted batch has len_b = #{t : batch_sizes[t] > b}
steps. Data row ``offsets[t] + b`` holds sample b at step t, so :class:`Padder` scatters the packed
rows into a zero-padded (B, T, ·) batch for the statistics and the recursion. Padded positions are
never written to the table; the reverse direction starts at each sample's own last step; per-sample
rows carry the user's batch index (``unsorted_indices``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import _cells
from ._fused import check_options, run_layers, site_route
from ._layer import Options
from ._recording import Recording
from ._stats import check_full_budget, check_input


class Padder:
    """Packed rows (N, F) -> zero-padded (B, T, F), batch in the packed (sorted) order."""

    def __init__(self, batch_sizes: Tensor, device):
        bs = batch_sizes.to("cpu", torch.int64)
        self.B, self.T = int(bs[0]), len(bs)
        offsets = torch.cumsum(bs, 0) - bs  # (T,)
        b = torch.arange(self.B)
        idx = offsets.unsqueeze(0) + b.unsqueeze(1)  # (B, T)
        valid = b.unsqueeze(1) < bs.unsqueeze(0)
        self.N = int(bs.sum())
        self.index = torch.where(valid, idx, self.N).to(device)  # N: the zero row
        self.lengths = valid.sum(1).to(device)  # (B,)

    def __call__(self, data: Tensor) -> Tensor:
        z = torch.cat([data, data.new_zeros(1, *data.shape[1:])], 0)
        return z[self.index]  # (B, T, F)


def forward(module: nn.Module, rec: Recording, opts: Options, name: str, input, hx=None):
    check_options(module, name)
    call = rec._next_call(name)
    kind = _cells.module_kind(module)
    data, batch_sizes, sorted_idx, unsorted_idx = input
    label = f"record: module {name!r} ({type(module).__name__})"
    if data.dim() != 2 or data.shape[-1] != module.input_size:
        raise ValueError(f"{label}: packed data must be (N, input_size={module.input_size}), "
                         f"got {tuple(data.shape)}")
    check_input(opts, data, name)
    L, H = module.num_layers, module.hidden_size
    D = 2 if module.bidirectional else 1
    padder = Padder(batch_sizes, data.device)
    B, T = padder.B, padder.T
    check_full_budget(opts, name, B, T, 2 * H if kind == "lstm" else H, L, D,
                      data.element_size())
    if hx is None:
        z = data.new_zeros(L * D, B, H)
        h0, c0 = z, (z if kind == "lstm" else None)
    else:  # the user's batch order -> the packed order, as nn.RNNBase.permute_hidden does
        hs = list(hx) if kind == "lstm" else [hx]
        for t in hs:
            if tuple(t.shape) != (L * D, B, H):
                raise ValueError(f"{label}: initial state must have shape "
                                 f"(num_layers*num_directions, B, H) = ({L * D}, {B}, {H}), "
                                 f"got {tuple(t.shape)}")
        if sorted_idx is not None:
            hs = [t.index_select(1, sorted_idx) for t in hs]
        h0, c0 = hs[0], (hs[1] if kind == "lstm" else None)
    layer_in, hn_all, cn_all = run_layers(module, rec, opts, name, call, data, h0, c0,
                                          batch_sizes, padder, padder.lengths, unsorted_idx)
    if unsorted_idx is not None:
        hn_all = hn_all.index_select(1, unsorted_idx)
        cn_all = None if cn_all is None else cn_all.index_select(1, unsorted_idx)
    rec.routes.setdefault(name, site_route(module, data, opts))
    output = nn.utils.rnn.PackedSequence(layer_in, batch_sizes, sorted_idx, unsorted_idx)
    return output, ((hn_all, cn_all) if kind == "lstm" else hn_all)
