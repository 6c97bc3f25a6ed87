"""Stock ``nn.RNN``/``nn.LSTM``/``nn.GRU`` on a padded (dense) batch: each layer runs as one
call of the module's own fused kernel (``torch.rnn_tanh/rnn_relu/lstm/gru``; cuDNN on CUDA,
oneDNN for float32 LSTMs on CPU, composite ATen operations otherwise) with the module's own
weights, so outputs and parameter gradients are bit for bit those of the unrecorded model.

Where the gradient is caught (:func:`run_layer`, shared with packed input):

- route "graph" (:mod:`._graph`): pre-hooks on the autograd nodes of the steps of a composite
  kernel read the total δh_t as the engine delivers it;
- route "recursion"/"lean" (:mod:`._recursion`): hooks on the layer's outputs collect the direct
  gradients, and an identity node on the layer's initial state (:class:`_TapFn`), whose backward
  runs right after the layer's fused backward, runs the BPTT recursion.

"auto" takes "graph" wherever the kernel is composite and "recursion" elsewhere.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn

from .. import _cells, models
from . import _graph, _recursion
from ._layer import Options, Site, to_processing
from ._recording import Recording
from ._stats import check_full_budget, check_input, forward_stats, layer_cache

KERNELS = {"rnn_tanh": torch.rnn_tanh, "rnn_relu": torch.rnn_relu, "lstm": torch.lstm,
           "gru": torch.gru}


def check_options(module: nn.Module, name: str) -> None:
    """Reject options gradlab does not support, naming the option."""
    if getattr(module, "proj_size", 0):
        raise NotImplementedError(
            f"record: module {name!r} ({type(module).__name__}) uses proj_size="
            f"{module.proj_size}; LSTMs with projections are not supported by gradlab "
            f"(their state Jacobian is not square in h); use proj_size=0"
        )
    if type(module).forward not in (nn.RNN.forward, nn.LSTM.forward, nn.GRU.forward):
        raise NotImplementedError(
            f"record: module {name!r} ({type(module).__name__}) overrides forward(); gradlab "
            f"records the stock nn.RNN/nn.LSTM/nn.GRU forward only"
        )


def composite_kernel(kind: str, x: Tensor) -> bool:
    """Whether the graph route applies: PyTorch runs RNN and GRU layers on CPU as composite ATen
    operations (one autograd node per step). LSTMs take the recursion: on CPU in float32 they
    run as oneDNN's fused kernel, and their c-gradient (``grad_norm_c``, state-space: h_t held
    fixed) is not the total gradient any node holds."""
    return x.device.type == "cpu" and kind != "lstm"


def forward(module: nn.Module, rec: Recording, opts: Options, name: str, input, hx=None):
    """The recorded ``forward`` of a stock module (dense input; packed goes to _packed)."""
    if isinstance(input, nn.utils.rnn.PackedSequence):
        from . import _packed
        return _packed.forward(module, rec, opts, name, input, hx)
    check_options(module, name)
    call = rec._next_call(name)
    kind = _cells.module_kind(module)
    x, batched = models._to_batch_first(module, input, f"record: module {name!r}")
    check_input(opts, x, name)
    h0, c0 = models._initial_state(module, hx, x, batched, f"record: module {name!r}")
    L, H = module.num_layers, module.hidden_size
    D = 2 if module.bidirectional else 1
    B, T = x.shape[:2]
    check_full_budget(opts, name, B, T, 2 * H if kind == "lstm" else H, L, D, x.element_size())
    layer_in, hn_all, cn_all = run_layers(module, rec, opts, name, call, x, h0, c0)
    rec.routes.setdefault(name, site_route(module, x, opts))
    return models._finish_output(module, layer_in, hn_all, cn_all, batched)


def run_layers(module: nn.Module, rec: Recording, opts: Options, name: str, call: int,
               x: Tensor, h0: Tensor, c0: Tensor | None, batch_sizes: Tensor | None = None,
               pad=None, lengths: Tensor | None = None, unsort: Tensor | None = None):
    """Every layer of one recorded call, as ``nn.RNNBase.forward`` runs them (dropout between
    layers): returns (top layer's output, h_n (L·D, B, H), c_n or None), in the kernel's batch
    order. Packed input: ``batch_sizes``, ``pad``, ``lengths`` and ``unsort`` as in _packed."""
    L, D = module.num_layers, 2 if module.bidirectional else 1
    layer_in = x
    h_n, c_n = [], []
    for layer in range(L):
        ps = [_cells.params_from_module(module, layer, d) for d in range(D)]
        site = Site(rec, opts, name, call, layer, ps, lengths=lengths, unsort=unsort)
        sl = slice(layer * D, (layer + 1) * D)
        out, hn, cn = run_layer(site, module, layer_in, h0[sl], None if c0 is None else c0[sl],
                                batch_sizes, pad)
        h_n.append(hn)
        if cn is not None:
            c_n.append(cn)
        layer_in = out
        if module.dropout and module.training and layer < L - 1:
            layer_in = nn.functional.dropout(layer_in, module.dropout, training=True)
    return layer_in, torch.cat(h_n, 0), (torch.cat(c_n, 0) if c_n else None)


def site_route(module, x: Tensor, opts: Options) -> str:
    kind = _cells.module_kind(module)
    if opts.route in ("auto", "lean") and composite_kernel(kind, x):
        return "graph"
    if opts.route == "auto":
        return "recursion"
    return opts.route


def run_layer(site: Site, module: nn.Module, layer_in: Tensor, h0: Tensor, c0: Tensor | None,
              batch_sizes: Tensor | None = None, pad=None):
    """One layer (both directions) through the module's fused kernel, recorded.

    Dense: layer_in (B, T, I) batch-first. Packed: layer_in is the packed data (N, I) with
    ``batch_sizes`` (T,), and ``pad(data)`` -> (B, T, ·) the padded batch (sorted order).
    Returns (out, h_n, c_n) as the kernel does.
    """
    opts, ps = site.opts, site.params
    kind, H, D = site.kind, site.H, len(ps)
    packed = batch_sizes is not None
    route = opts.route
    if route == "graph" and not composite_kernel(kind, layer_in):
        raise ValueError(
            f"record: route='graph' needs a composite kernel (one autograd node per step), but "
            f"module {site.name!r} runs as a fused {kind} kernel on {layer_in.device.type} "
            f"({layer_in.dtype}); use route='auto'"
        )
    use_graph = route in ("auto", "lean", "graph") and composite_kernel(kind, layer_in)
    anchors = [t for p in ps for t in (p.w_ih, p.w_hh, p.b_ih, p.b_hh)
               if t is not None and t.requires_grad]
    anchors += [layer_in] if layer_in.requires_grad else []
    want_grad = opts.want_grad and bool(anchors)
    tap = None
    h0_in = h0.contiguous()
    if want_grad and not use_graph:
        tap = _Tap()
        h0_in = tap(h0_in, *anchors)
    flat: list[Tensor] = []
    for p in ps:
        flat += [p.w_ih, p.w_hh] + ([p.b_ih, p.b_hh] if module.bias else [])
    hx = (h0_in, c0.contiguous()) if kind == "lstm" else h0_in
    fused = KERNELS[kind]
    with warnings.catch_warnings():  # cuDNN: our per-call weights are not one flat buffer
        warnings.filterwarnings("ignore", message=".*single contiguous chunk.*")
        if packed:
            res = fused(layer_in, batch_sizes, hx, flat, module.bias, 1, 0.0, module.training,
                        D == 2)
        else:
            res = fused(layer_in, hx, flat, module.bias, 1, 0.0, module.training, D == 2, True)
    out, hn = res[0], res[1]  # (B, T, D·H) or (N, D·H); (D, B, H)
    cn = res[2] if kind == "lstm" else None
    B = h0.shape[1]
    T = len(batch_sizes) if packed else layer_in.shape[1]
    if opts.want_forward_stats:
        with torch.no_grad():
            xs = pad(layer_in) if packed else layer_in
            os_ = pad(out) if packed else out
            for d, p in enumerate(ps):
                xi = to_processing(xs, d, site.lengths).detach()
                hs = to_processing(os_[..., d * H:(d + 1) * H], d, site.lengths).detach()
                cache = layer_cache(p.detach(), xi, hs, h0[d], None if c0 is None else c0[d])
                forward_stats(site, d, cache)
    if not want_grad:
        return out, hn, cn
    if use_graph:
        nodes = _graph.step_nodes(out, T, D, batch_sizes)
        if nodes is None:
            raise RuntimeError(
                f"record: module {site.name!r}: the autograd graph of the composite {kind} "
                f"kernel does not have the expected per-step shape in this PyTorch build; "
                f"record with route='recursion'"
            )
        for d, ns in enumerate(nodes):
            def emit(norms_seq, d=d):
                with torch.no_grad():
                    site.add_grad(d, "grad_norm", to_processing(norms_seq, d, site.lengths))
            opts.handles.append(_graph.StepReader(ns, B, batch_sizes, out.dtype, out.device,
                                                  emit))
        return out, hn, cn
    _arm_recursion(site, tap, layer_in, out, hn, cn, h0, c0, pad, lean=route == "lean")
    return out, hn, cn


def _arm_recursion(site, tap, layer_in, out, hn, cn, h0, c0, pad, lean):
    """Hooks that collect the direct gradients; the tap runs the recursion once the layer's
    fused backward is done."""
    box: dict[str, Tensor] = {}

    def keep(key):
        def hook(g):
            if g is not None:  # cuDNN passes None for an output the loss does not use
                box[key] = g.detach()
        return hook

    handles = [out.register_hook(keep("out")), hn.register_hook(keep("hn"))]
    if cn is not None:
        handles.append(cn.register_hook(keep("cn")))
    saved = (layer_in.detach(), out.detach(), h0.detach(), None if c0 is None else c0.detach())
    H = site.H

    def on_backward(_g: Tensor):
        try:
            with torch.no_grad():
                x_, out_, h0_, c0_ = saved
                if pad is not None:
                    x_, out_ = pad(x_), pad(out_)
                g_out = box.get("out")
                if g_out is not None and pad is not None:
                    g_out = pad(g_out)
                for d in range(len(site.params)):
                    sl = slice(d * H, (d + 1) * H)
                    xi = to_processing(x_, d, site.lengths)
                    hs = to_processing(out_[..., sl], d, site.lengths)
                    direct = None if g_out is None else to_processing(g_out[..., sl], d,
                                                                      site.lengths)
                    dh, dc = _recursion.state_gradients(
                        site, d, xi, hs, h0_[d], None if c0_ is None else c0_[d], direct,
                        box["hn"][d] if "hn" in box else None,
                        box["cn"][d] if "cn" in box else None, lean)
                    site.add_grad(d, "grad_norm", dh)
                    if dc is not None:
                        site.add_grad(d, "grad_norm_c", dc)
        finally:
            box.clear()

    tap.callback = on_backward
    site.opts.handles.extend(handles + [tap])


class _TapFn(torch.autograd.Function):
    """Identity on ``x`` whose backward first calls ``tap.callback`` and then passes the gradient
    through unchanged. Its extra inputs ("anchors", the layer's weights) put it on the path to
    the parameters, so the engine runs it for ``loss.backward()`` and for
    ``torch.autograd.grad(loss, params)`` alike, where a hook on a leaf would not fire. It runs
    after the layer's fused backward, since the kernel consumed its output."""

    @staticmethod
    def forward(ctx, tap, x, *anchors):
        ctx.tap = tap
        ctx.n = len(anchors)
        ctx.x_grad = x.requires_grad
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        if ctx.tap.callback is not None:
            ctx.tap.callback(g)
        return (None, g if ctx.x_grad else None) + (None,) * ctx.n


class _Tap:
    def __init__(self):
        self.callback = None

    def __call__(self, x, *anchors):
        return _TapFn.apply(self, x, *anchors)

    def remove(self):  # same interface as a hook handle: disarmed on leaving record()
        self.callback = None
