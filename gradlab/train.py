"""Training loop: a stock recurrent network with a linear read-out, trained by BPTT.

``train`` returns one tidy long table (one row per observation) of the training run:

    iteration  quantity            step  layer direction  value
    i          "loss"              <NA>  <NA>  <NA>       training loss of batch i
    i          "grad_norm_total"   <NA>  <NA>  <NA>       ||grad of all parameters||_2, before clipping
    i          "grad_norm_clipped" <NA>  <NA>  <NA>       the same after clipping (only when clipping)
    e          "eval_loss"         <NA>  <NA>  <NA>       loss on the fixed evaluation batches
    e          "baseline"          <NA>  <NA>  <NA>       the task's no-memory baseline loss
    e          "accuracy"          <NA>  <NA>  <NA>       eval accuracy (copy, digits)
    j          "grad_norm"         t     l     d          batch-mean ||dL/dh_t|| (gradlab.Monitor)
    j          "grad_norm_c"       t     l     d          the same for the LSTM cell state c_t

The step t of "grad_norm" rows: for an encoder-decoder task (structure "encoder_decoder",
model :class:`EncoderDecoder`) encoder and decoder share one time axis, encoder steps
t = 0..S-1 and decoder steps t = S..S+T-1 (decoder step k at t = S + k); for a packed
(variable-length) batch, t is the position in each sample's own sequence, and a row's mean
runs over the samples that have step t.

With ``track_gates`` (LSTM, GRU) the table has two more columns, ``gate`` and ``unit``, and at
every tracked iteration j, from that iteration's training batch (before the update):

    iteration  quantity              gate   unit  value
    j          "gate_mean"           g      <NA>  mean of gate g over batch, steps and units
    j          "gate_saturated_frac" g      <NA>  fraction of (b, t, unit) with a sigmoid gate
                                                  < 0.05 or > 0.95, or a tanh gate |g| > 0.95
    j          "forget_timescale"    g      u     -1 / ln(mean over b, t of g_u) for the gate
                                                  that keeps memory (LSTM forget f, GRU update
                                                  z: h' = (1 - z) n + z h); inf if it is 1

Row values at iteration i are measured with the parameters theta_i, before the i-th update;
the last evaluation is at iteration ``steps`` (after the last update). Gradient clipping follows
Pascanu, Mikolov & Bengio (2013), "On the difficulty of training recurrent neural networks".
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from gradlab.init import apply_init
from gradlab.tasks import Task, make_task

__all__ = ["CELLS", "EncoderDecoder", "SequenceModel", "train"]

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru", "transformer")
_OPTIMIZERS = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}
_COLUMNS = ["iteration", "quantity", "step", "layer", "direction", "value"]
_GATE_COLUMNS = ["gate", "unit"]  # added with track_gates
_MEMORY_GATE = {"lstm": "forget", "gru": "update"}
_SATURATED = 0.95  # as gradlab.record: sigmoid < 0.05 or > 0.95, tanh |g| > 0.95


class SequenceModel(nn.Module):
    """A stock ``nn.RNN/LSTM/GRU`` (batch_first) or a causal Transformer, then a linear head.

    h_t = cell(x_t, h_{t-1}) for t = 0..T-1, then ``readout="last"``: y = W h_{T-1} + b, (B, O);
    ``readout="all"``: y_t = W h_t + b for every t, (B, T, O). A ``PackedSequence`` x (variable
    lengths, recurrent cells) reads out h at each sample's own last step (the top layer's h_n)
    for "last", and gives a PackedSequence of y_t over the true steps for "all".
    ``self.rnn`` is the stock module
    (the one ``gradlab._record`` hooks), ``self.head`` the ``nn.Linear``. For
    ``cell="transformer"`` ``self.rnn`` is a :class:`gradlab.models.Transformer` with
    d_model = ``hidden_size``, ``nhead`` heads and ``num_layers`` layers, whose h_t sees
    x_0..x_t only (causal), read out the same way.
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        output_size: int,
        num_layers: int = 1,
        readout: str = "last",
        *,
        nhead: int = 4,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; available: {', '.join(CELLS)}")
        if readout not in ("last", "all"):
            raise ValueError(f"readout must be 'last' or 'all', got {readout!r}")
        _check_sizes("SequenceModel", input_size=input_size, hidden_size=hidden_size,
                     output_size=output_size, num_layers=num_layers)  # fmt: skip
        if cell == "transformer":
            from gradlab.models import Transformer

            self.rnn = Transformer(input_size, hidden_size, nhead, num_layers, device=device,
                                   dtype=dtype)  # fmt: skip
        else:
            self.rnn = _stock_rnn(cell, input_size, hidden_size, num_layers=num_layers,
                                  device=device, dtype=dtype)  # fmt: skip
        self.head = nn.Linear(hidden_size, output_size, device=device, dtype=dtype)
        self.cell, self.readout = cell, readout

    def forward(self, x: torch.Tensor | nn.utils.rnn.PackedSequence) -> torch.Tensor:
        if isinstance(x, nn.utils.rnn.PackedSequence):  # variable lengths (recurrent cells)
            out, state = self.rnn(x)
            if self.readout == "all":
                return nn.utils.rnn.PackedSequence(self.head(out.data), out.batch_sizes,
                                                   out.sorted_indices, out.unsorted_indices)  # fmt: skip
            h_n = state[0] if isinstance(state, tuple) else state  # (L*D, B, H), batch order
            return self.head(h_n[-1])  # (B, O): top layer at each sample's last true step
        out = self.rnn(x)
        out = out[0] if isinstance(out, tuple) else out  # (B, T, H), top layer
        if self.readout == "last":
            return self.head(out[:, -1])  # (B, O)
        return self.head(out)  # (B, T, O)


def _check_sizes(owner: str, **sizes: Any) -> None:
    """ValueError naming ``owner`` and the first size that is not a positive integer."""
    for n, v in sizes.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{owner}: {n} must be a positive integer, got {v!r}")


def _stock_rnn(cell: str, input_size: int, hidden_size: int, **kw) -> nn.Module:
    """A batch-first ``nn.RNN/LSTM/GRU`` for a recurrent ``cell`` name."""
    if cell.startswith("rnn_"):
        return nn.RNN(input_size, hidden_size, nonlinearity=cell[4:], batch_first=True, **kw)
    if cell == "lstm":
        return nn.LSTM(input_size, hidden_size, batch_first=True, **kw)
    return nn.GRU(input_size, hidden_size, batch_first=True, **kw)


class EncoderDecoder(nn.Module):
    """Encoder–decoder many-to-many (Sutskever, Vinyals & Le 2014; Cho et al. 2014).

    Two stock recurrent modules of the same cell and size, then a linear head:

        encoder:  (h_S-1, c_S-1) = final state of ``self.encoder`` on src (B, S, I)
        decoder:  d_t = cell(z_t, d_{t-1}),  d_{-1} = the encoder's final state (every layer;
                  h_n and, for an LSTM, c_n), z (B, T, I_dec) the decoder's input (teacher
                  forcing: the previous target symbol, a start symbol at t = 0)
        head:     y_t = W d_t + b,  y (B, T, O)

    ``forward(src, tgt)`` returns y. The only path from src to y runs through the encoder's
    final state, so every decoder loss L_t reaches encoder step k through
    Π_{j=k+1..S-1} ∂h_j/∂h_{j-1} (encoder) times the decoder's product down to its step 0.
    ``self.encoder`` / ``self.decoder`` are what :func:`gradlab.record` hooks (module names
    "encoder" and "decoder" in its table).
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        output_size: int,
        num_layers: int = 1,
        *,
        decoder_input_size: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if cell not in CELLS or cell == "transformer":
            recurrent = ", ".join(c for c in CELLS if c != "transformer")
            raise ValueError(f"EncoderDecoder: unknown recurrent cell {cell!r}; available: "
                             f"{recurrent}")  # fmt: skip
        dec_in = input_size if decoder_input_size is None else decoder_input_size
        _check_sizes("EncoderDecoder", input_size=input_size, decoder_input_size=dec_in,
                     hidden_size=hidden_size, output_size=output_size,
                     num_layers=num_layers)  # fmt: skip
        kw = dict(num_layers=num_layers, device=device, dtype=dtype)
        self.encoder = _stock_rnn(cell, input_size, hidden_size, **kw)
        self.decoder = _stock_rnn(cell, dec_in, hidden_size, **kw)
        self.head = nn.Linear(hidden_size, output_size, device=device, dtype=dtype)
        self.cell, self.readout = cell, "all"

    def forward(self, src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        _, state = self.encoder(src)  # h_n (L, B, H), or (h_n, c_n) for an LSTM
        out, _ = self.decoder(tgt, state)  # (B, T, H)
        return self.head(out)  # (B, T, O)


def _make_model(
    cell: str,
    task: Task,
    hidden_size: int,
    num_layers: int,
    nhead: int,
    init: str,
    init_params: Mapping[str, Any] | None,
    seed_params: int,
    device: torch.device,
) -> SequenceModel | EncoderDecoder:
    """The model ``train`` starts from: its weights depend on ``seed_params`` only.

    Tasks of structure "encoder_decoder" get an :class:`EncoderDecoder`, the others a
    :class:`SequenceModel`.
    """
    structure = getattr(task, "structure", None)
    if cell == "transformer" and (structure == "encoder_decoder" or getattr(task, "packed", False)):
        what = "an encoder-decoder" if structure == "encoder_decoder" else "packed variable-length"
        raise ValueError(
            f"train: cell='transformer' cannot run task {task.name!r} ({what} input; "
            "SequenceModel's Transformer takes one dense (B, T, I) batch); use a recurrent cell "
            "(rnn_tanh, rnn_relu, lstm, gru)"
        )
    if structure == "encoder_decoder":
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG alone
            model = EncoderDecoder(cell, task.input_size, hidden_size, task.output_size,
                                   num_layers, decoder_input_size=task.decoder_input_size,
                                   device=device)  # fmt: skip
        g_params = torch.Generator().manual_seed(seed_params)
        for m in (model.encoder, model.decoder):
            apply_init(m, init, generator=g_params, **(init_params or {}))
        _init_head(model.head, g_params)
        return model
    if cell == "transformer" and init != "default":
        raise ValueError(
            f"train: init={init!r} is a recurrent-weight scheme; cell='transformer' takes "
            "init='default' (PyTorch's init of its layers, drawn from the seed)"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed_params)  # the Transformer's default init draws from here
        model = SequenceModel(
            cell,
            task.input_size,
            hidden_size,
            task.output_size,
            num_layers,
            task.readout,
            nhead=nhead,
            device=device,
        )
    g_params = torch.Generator().manual_seed(seed_params)
    if cell != "transformer":
        apply_init(model.rnn, init, generator=g_params, **(init_params or {}))
    _init_head(model.head, g_params)
    return model


def _seeds(seed: int) -> tuple[int, int, int]:
    """Independent seeds for (parameters, training data, evaluation data)."""
    a, b, c = (
        int(s.generate_state(1, np.uint64)[0] >> 1) for s in np.random.SeedSequence(seed).spawn(3)
    )
    return a, b, c


@torch.no_grad()
def _init_head(head: nn.Linear, g: torch.Generator) -> None:
    """nn.Linear's default distribution, U(-1/sqrt(fan_in), 1/sqrt(fan_in)), from ``g``."""
    bound = 1.0 / math.sqrt(head.in_features)
    for p in (head.weight, head.bias):
        v = torch.empty(p.shape, dtype=torch.float64).uniform_(-bound, bound, generator=g)
        p.copy_(v.to(device=p.device, dtype=p.dtype))


def _clip_gradients(
    params: list[nn.Parameter], clip_norm: float | None, clip_value: float | None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Clip in place, by value then by total norm; return (norm before, norm after or None).

    Norms are 0-d tensors on the parameters' device (no host sync).
    """
    grads = [p.grad for p in params if p.grad is not None]
    before = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    if clip_norm is None and clip_value is None:
        return before, None
    if clip_value is not None:
        torch.nn.utils.clip_grad_value_(params, clip_value)
    if clip_norm is not None:
        torch.nn.utils.clip_grad_norm_(params, clip_norm)
    after = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
    return before, after


def _positive(name: str, v: Any, *, integer: bool = False, optional: bool = False) -> None:
    if v is None and optional:
        return
    ok = not isinstance(v, bool) and isinstance(v, int if integer else (int, float))
    if not ok or not math.isfinite(v) or v <= 0:
        kind = "positive integer" if integer else "positive number"
        raise ValueError(
            f"train: {name} must be a {kind}{' or None' if optional else ''}, got {v!r}"
        )


def train(
    cell: str,
    task: str | Task,
    *,
    seq_len: int | None = None,
    hidden_size: int,
    steps: int,
    batch_size: int,
    lr: float,
    optimizer: str = "adam",
    clip_norm: float | None = None,
    clip_value: float | None = None,
    init: str = "default",
    init_params: Mapping[str, Any] | None = None,
    seed: int,
    device: torch.device | str = "cpu",
    num_layers: int = 1,
    nhead: int = 4,
    track_every: int | None = None,
    eval_every: int | None = None,
    eval_batches: int = 4,
    task_params: Mapping[str, Any] | None = None,
    return_model: bool = False,
    track_gates: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, SequenceModel]:
    """Train ``SequenceModel(cell, ...)`` on ``task`` by BPTT; return the tidy training record.

    Args:
        cell: "rnn_tanh", "rnn_relu", "lstm", "gru" or "transformer" (a causal
            :class:`gradlab.models.Transformer`, d_model = hidden_size, ``nhead`` heads,
            ``num_layers`` layers; its weights are PyTorch's default init drawn from ``seed``,
            so ``init`` must be "default", and ``track_every`` is ignored: it has no
            recurrent state to record).
        task: a name for ``gradlab.tasks.make_task`` (then ``seq_len`` is required) or a task.
            A task of structure "encoder_decoder" trains an :class:`EncoderDecoder` (recurrent
            cells only), every other task a :class:`SequenceModel`.
        seq_len: the task's length parameter.
        hidden_size: of the recurrent network.
        steps: number of parameter updates.
        batch_size: per update.
        lr: learning rate.
        optimizer: "adam", "rmsprop" or "sgd" (torch.optim defaults besides ``lr``).
        clip_norm: rescale the gradient to total norm <= clip_norm (Pascanu et al. 2013).
        clip_value: clamp every gradient entry to [-clip_value, clip_value]; applied before
            ``clip_norm`` when both are given.
        init: scheme for ``gradlab.init.apply_init`` on the recurrent weights; the head gets
            nn.Linear's default distribution.
        init_params: its parameters.
        seed: everything random (weights, training batches, evaluation batches) derives from it.
            On CPU two runs with the same arguments give identical tables; on CUDA, cuDNN's RNN
            kernels may differ in the last bits between runs.
        device: where the model and batches live.
        num_layers: of the recurrent network (or the Transformer).
        nhead: attention heads of the Transformer.
        track_every: every this many iterations (from 0), record the per-step gradient norms
            ||dL/dh_t|| of that iteration's backward pass with ``gradlab.Monitor``; None: never.
        eval_every: evaluate every this many iterations (from 0) and after the last update;
            default ``max(1, steps // 10)``.
        eval_batches: number of fixed evaluation batches of ``batch_size`` (drawn once, from the
            "test" split for data sets). Tasks with a fixed, small test set (``eval_full_split``:
            ucr, generate) are evaluated on their whole test split instead.
        task_params: extra keywords for ``make_task``.
        return_model: return (table, the trained model) instead of the table.
        track_gates: at every tracked iteration also record gate means, saturated fractions and
            the memory gate's per-unit timescale (module docstring; needs ``track_every`` and an
            LSTM or GRU; layer 0, forward direction).

    Returns:
        DataFrame with columns iteration, quantity, step, layer, direction (0 forward,
        1 reverse), value (see the module docstring); step, layer and direction are nullable
        integers, <NA> where they do not apply.

    Examples:
        >>> from gradlab.train import train
        >>> df = train("gru", "adding", seq_len=10, hidden_size=8, steps=5, batch_size=8, lr=1e-2,
        ...            seed=0, track_every=2)
        >>> sorted(df["quantity"].unique())
        ['baseline', 'eval_loss', 'grad_norm', 'grad_norm_total', 'loss']
    """
    _positive("steps", steps, integer=True)
    _positive("batch_size", batch_size, integer=True)
    _positive("lr", lr)
    _positive("clip_norm", clip_norm, optional=True)
    _positive("clip_value", clip_value, optional=True)
    _positive("track_every", track_every, integer=True, optional=True)
    _positive("eval_every", eval_every, integer=True, optional=True)
    _positive("eval_batches", eval_batches, integer=True)
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; available: {', '.join(_OPTIMIZERS)}")
    if track_gates and (cell not in _MEMORY_GATE or track_every is None):
        raise ValueError(
            f"train: track_gates needs a gated cell (lstm or gru) and track_every, got cell="
            f"{cell!r}, track_every={track_every!r}; set track_gates=False or change them"
        )
    device = torch.device(device)
    seed_params, seed_data, seed_eval = _seeds(seed)

    if isinstance(task, str):
        if seq_len is None:
            raise ValueError(f"train: task {task!r} given by name needs seq_len")
        task = make_task(task, seq_len, seed=seed_data, device=device, **(task_params or {}))
    elif task_params:
        raise ValueError("train: task_params only apply when the task is given by name")
    elif task.device != device:
        raise ValueError(
            f"train: the task puts batches on {task.device} but device={device}; "
            "build the task with the same device or pass device=task.device"
        )

    model = _make_model(cell, task, hidden_size, num_layers, nhead, init, init_params,
                        seed_params, device)  # fmt: skip
    if track_gates and (isinstance(model, EncoderDecoder) or getattr(task, "packed", False)):
        raise ValueError(f"train: track_gates reads one dense SequenceModel; task {task.name!r} "
                         "is encoder-decoder or packed; set track_gates=False")  # fmt: skip
    if cell == "transformer":
        track_every = None
    params = list(model.parameters())
    opt = _OPTIMIZERS[optimizer](params, lr=lr)

    g_data = torch.Generator().manual_seed(seed_data)
    g_eval = torch.Generator().manual_seed(seed_eval)
    if getattr(task, "eval_full_split", False):  # fixed, small test sets (UCR): all of it
        eval_set = [task.full_split("test")]
    else:
        eval_set = [task.sample(batch_size, g_eval, split="test") for _ in range(eval_batches)]
    eval_every = eval_every or max(1, steps // 10)

    scalars: list[tuple[int, str, torch.Tensor]] = []  # device tensors, one host sync at the end
    tracked: list[pd.DataFrame] = []

    def evaluate(i: int) -> None:
        model.eval()
        with torch.no_grad():
            losses, accs = [], []
            for x, y in eval_set:
                pred = _forward(model, x)
                losses.append(task.loss(pred, y))
                acc = task.accuracy(pred, y)
                if acc is not None:
                    accs.append(acc)
        model.train()
        scalars.append((i, "eval_loss", torch.stack(losses).mean()))
        scalars.append((i, "baseline", torch.tensor(float(task.baseline), dtype=torch.float64)))
        if accs:
            scalars.append((i, "accuracy", torch.stack(accs).mean()))

    model.train()
    monitor = None
    if track_every is not None:  # iteration i is the model's i-th grad-enabled call
        from gradlab import Monitor

        monitor = Monitor(model, every=track_every, quantities=("grad_norm", "grad_norm_c"))
    with monitor if monitor is not None else contextlib.nullcontext():
        for i in range(steps):
            if i % eval_every == 0:
                evaluate(i)  # no grad: not an iteration of the Monitor
            x, y = task.sample(batch_size, g_data)  # (B, T, I), target
            opt.zero_grad(set_to_none=True)
            if track_gates and i % track_every == 0:
                tracked.append(_gate_rows(model.rnn, x, i))
            loss = task.loss(_forward(model, x), y)
            loss.backward()
            before, after = _clip_gradients(params, clip_norm, clip_value)
            opt.step()
            scalars.append((i, "loss", loss.detach()))
            scalars.append((i, "grad_norm_total", before))
            if after is not None:
                scalars.append((i, "grad_norm_clipped", after))
        evaluate(steps)
    if monitor is not None:  # before the gate rows: each iteration's rows in that order
        tracked.insert(0, _tracking_rows(_one_time_axis(model, task, monitor.frame())))

    values = torch.stack([v.to(device=device, dtype=torch.float64) for _, _, v in scalars]).cpu()
    table = pd.DataFrame(
        {
            "iteration": [i for i, _, _ in scalars],
            "quantity": [q for _, q, _ in scalars],
            "step": pd.array([pd.NA] * len(scalars), dtype="Int64"),
            "layer": pd.array([pd.NA] * len(scalars), dtype="Int64"),
            "direction": pd.array([pd.NA] * len(scalars), dtype="Int64"),
            "value": values.numpy(),
        }
    )
    columns = _COLUMNS + (_GATE_COLUMNS if track_gates else [])
    if track_gates:
        table = table.assign(gate=None, unit=pd.array([pd.NA] * len(table), dtype="Int64"))
    out = pd.concat([table, *tracked], ignore_index=True) if tracked else table
    out = out.sort_values("iteration", kind="stable").reset_index(drop=True)[columns]
    return (out, model) if return_model else out


def _one_time_axis(model: nn.Module, task: Task, frame: pd.DataFrame) -> pd.DataFrame:
    """Encoder-decoder rows on one time axis: encoder steps 0..S-1, decoder S..S+T-1."""
    if not isinstance(model, EncoderDecoder) or frame.empty:
        return frame
    S = int(frame.loc[frame["module"] == "encoder", "step"].max()) + 1
    return frame.assign(step=frame["step"].where(frame["module"] != "decoder",
                                                 frame["step"] + S))  # fmt: skip


def _forward(model: nn.Module, x: Any) -> torch.Tensor:
    """``model(*x)`` for a tuple x (encoder-decoder: (src, tgt_in)), else ``model(x)``."""
    if isinstance(x, tuple) and not isinstance(x, nn.utils.rnn.PackedSequence):
        return model(*x)
    return model(x)


def _tracking_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Keep the per-step gradient norms of a ``Monitor`` frame, in ``train``'s columns."""
    keep = frame["quantity"].isin(["grad_norm", "grad_norm_c"]) & (frame["batch_index"] == -1)
    rows = frame[keep]
    return pd.DataFrame(
        {
            "iteration": rows["iteration"].to_numpy(dtype=np.int64),
            "quantity": rows["quantity"].to_numpy(),
            "step": pd.array(rows["step"].to_numpy(), dtype="Int64"),
            "layer": pd.array(rows["layer"].to_numpy(), dtype="Int64"),
            "direction": pd.array(rows["direction"].to_numpy(), dtype="Int64"),
            "value": rows["value"].to_numpy(dtype=np.float64),
        }
    )


@torch.no_grad()
def _gate_rows(rnn: nn.Module, x: torch.Tensor, iteration: int) -> pd.DataFrame:
    """Gate statistics of layer 0 of ``rnn`` on the batch x (B, T, I), in ``train``'s columns.

    The gates are recomputed in closed form (gradlab._cells) from the layer's states; per unit u
    the memory gate's mean m_u over batch and steps gives the timescale -1/ln m_u (steps over
    which a stored value falls by 1/e if the gate sat at its mean).
    """
    from gradlab import _cells

    p = _cells.params_from_module(rnn).to(dtype=torch.float64)
    xd = x.to(torch.float64)
    states = _cells.unroll(p, xd)  # (B, T, S)
    cache, _ = _cells.sequence_cache(p, xd, states)
    gates = _cells.gate_values(p, cache)  # name -> (B, T, H)
    names, quantities, units, values = [], [], [], []
    for name, g in gates.items():
        tanh_gate = name in ("cell", "new")
        sat = (g.abs() > _SATURATED) if tanh_gate else ((g < 1 - _SATURATED) | (g > _SATURATED))
        names += [name, name]
        quantities += ["gate_mean", "gate_saturated_frac"]
        units += [pd.NA, pd.NA]
        values += [float(g.mean()), float(sat.double().mean())]
    memory = _MEMORY_GATE[p.kind]
    m = gates[memory].mean(dim=(0, 1))  # (H,)
    with np.errstate(divide="ignore"):
        tau = -1.0 / np.log(m.cpu().numpy())  # inf where m == 1
    H = len(tau)
    names += [memory] * H
    quantities += ["forget_timescale"] * H
    units += list(range(H))
    values += tau.tolist()
    n = len(values)
    na = pd.array([pd.NA] * n, dtype="Int64")
    return pd.DataFrame(
        {
            "iteration": iteration,
            "quantity": quantities,
            "step": na,
            "layer": pd.array([0] * n, dtype="Int64"),
            "direction": pd.array([0] * n, dtype="Int64"),
            "value": np.asarray(values, dtype=np.float64),
            "gate": names,
            "unit": pd.array(units, dtype="Int64"),
        }
    )
