"""Plain-autograd references built only from torch.nn cells (code nobody here wrote).

``reference_run`` unrolls a stock nn.RNN/LSTM/GRU step by step with nn.RNNCell/LSTMCell/GRUCell
sharing its weights, calls ``retain_grad`` on every h_t (and c_t), backpropagates the same loss
and returns the per-step gradient norms and the outputs.
"""

import torch
from torch import nn


def nn_cell(module, layer, d):
    """The torch.nn cell of ``layer``/``d`` of an RNN/LSTM/GRU-like module, sharing its values."""
    sfx = f"_l{layer}" + ("_reverse" if d else "")
    w_ih = getattr(module, "weight_ih" + sfx)
    in_size, H = w_ih.shape[1], module.hidden_size
    if module.mode == "LSTM":
        cell = nn.LSTMCell(in_size, H, bias=module.bias)
    elif module.mode == "GRU":
        cell = nn.GRUCell(in_size, H, bias=module.bias)
    else:
        cell = nn.RNNCell(in_size, H, bias=module.bias,
                          nonlinearity="tanh" if module.mode == "RNN_TANH" else "relu")
    cell = cell.to(w_ih.device, w_ih.dtype)
    with torch.no_grad():
        for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            if hasattr(module, n + sfx):
                getattr(cell, n).copy_(getattr(module, n + sfx))
    return cell


def reference_run(module, x, loss_fn, hx=None):
    """Returns (output, h_n, grads) where grads[(layer, d)] = {"h": (B, T, H), "c": ...}
    in sequence order, and output/h_n follow the module's own layout."""
    xb = x if module.batch_first else x.transpose(0, 1)
    B, T, _ = xb.shape
    D = 2 if module.bidirectional else 1
    H = module.hidden_size
    lstm = module.mode == "LSTM"
    layer_in = xb
    keep, h_n, c_n = {}, [], []
    for layer in range(module.num_layers):
        outs = []
        for d in range(D):
            cell = nn_cell(module, layer, d)
            idx = layer * D + d
            h = xb.new_zeros(B, H) if hx is None else (hx[0] if lstm else hx)[idx]
            c = xb.new_zeros(B, H) if hx is None or not lstm else hx[1][idx]
            order = range(T - 1, -1, -1) if d else range(T)
            hs, cs = [None] * T, [None] * T
            for t in order:
                if lstm:
                    h, c = cell(layer_in[:, t], (h, c))
                    # the state-space c_t (h_t held fixed): a copy that only the future sees, so
                    # its gradient is ∂L/∂c_t of the (h, c) state, on CPU and CUDA cells alike
                    c = c.clone()
                    c.retain_grad()
                    cs[t] = c
                else:
                    h = cell(layer_in[:, t], h)
                h.retain_grad()
                hs[t] = h
            keep[(layer, d)] = (hs, cs)
            outs.append(torch.stack(hs, 1))
            h_n.append(h)
            c_n.append(c)
        layer_in = torch.cat(outs, -1)
    out = layer_in if module.batch_first else layer_in.transpose(0, 1)
    hn = torch.stack(h_n, 0)
    state = (hn, torch.stack(c_n, 0)) if lstm else hn
    loss = loss_fn(out, state)
    loss.backward()
    grads = {}
    for key, (hs, cs) in keep.items():
        z = lambda t: torch.zeros_like(t) if t.grad is None else t.grad  # noqa: E731
        grads[key] = {"h": torch.stack([z(h) for h in hs], 1)}
        if lstm:
            grads[key]["c"] = torch.stack([z(c) for c in cs], 1)
    return out.detach(), state, grads
