# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Why recurrent networks forget: the lecture, executed
#
# This notebook walks the lecture on recurrent networks with gradlab doing the measuring:
# sequential data and the recurrence; the four structures; backpropagation through time (BPTT)
# and its product of Jacobians, checked term by term against autograd; vanishing gradients
# measured and explained (Jacobian spectra, Pascanu's bound, mean-field theory and the edge of
# chaos); exploding gradients and clipping; LSTM and GRU; the Transformer's flat gradient path
# and the parallelism limit; and finally your own model.
#
# Every number below is computed when the notebook runs (the test suite executes it top to
# bottom, in one to two minutes on two CPU cores). Sizes are small on purpose; the
# [figure gallery](../gallery.md) has the same measurements at full size.

# %%
# %matplotlib inline
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from torch import nn

import gradlab
import gradlab.data
import gradlab.plot as gplot
import gradlab.tasks
from gradlab import theory
from gradlab.init import apply_init
from gradlab.train import train

torch.set_num_threads(1)  # small models: one thread is fastest and plays well with others
torch.manual_seed(0)
NOTEBOOK_START = time.perf_counter()

# %% [markdown]
# ## 1. The recurrence
#
# A recurrent network reads a sequence x_1, …, x_T one step at a time and carries a state:
#
# $$h_t = \tanh(W_h h_{t-1} + W_x x_t + b), \qquad y_t = W_y h_t .$$
#
# The same weights are used at every step, so a sequence of any length goes through a fixed
# number of parameters. `gradlab.models.RNN` is numerically identical to `torch.nn.RNN` (same
# parameter names) and adds closed-form Jacobians ∂h_t/∂h_{t-1}; `gradlab.record` works on the
# stock module as well.

# %%
torch.manual_seed(0)
stock = nn.RNN(2, 3, batch_first=True)
ours = gradlab.models.RNN(2, 3, batch_first=True)
ours.load_state_dict(stock.state_dict())
x = torch.randn(1, 5, 2)  # (B, T, I)
h_by_hand = torch.zeros(3)
for t in range(5):  # the recurrence, written out
    h_by_hand = torch.tanh(stock.weight_hh_l0 @ h_by_hand + stock.weight_ih_l0 @ x[0, t]
                           + stock.bias_hh_l0 + stock.bias_ih_l0)
out_stock, _ = stock(x)
out_ours, _ = ours(x)
print("h_5 by hand :", h_by_hand.detach().numpy().round(4))
print("torch.nn.RNN:", out_stock[0, -1].detach().numpy().round(4))
assert torch.allclose(out_stock, out_ours, atol=1e-6)
assert torch.allclose(out_stock[0, -1], h_by_hand, atol=1e-6)

# %% [markdown]
# ## 2. Four structures
#
# The lecture's four ways to wire a recurrent network to a task, each here a tiny model trained
# for a few hundred updates on real data that ships with installed packages (nothing is
# downloaded): UCR/UEA time series bundled in aeon's wheel and Python's own help text
# (`gradlab.data`). Each task in `gradlab.tasks` states its structure and its *no-memory
# baseline*, the best loss of a model that ignores the part of the input it should remember.
#
# | structure | task | input → output |
# |---|---|---|
# | one-to-many | `generate` | a class (one step) → an ArrowHead series (50 steps) |
# | many-to-one | `ucr` | a BasicMotions recording (50 steps, 6 channels) → its class |
# | encoder–decoder | `reverse` | 6 characters of text → the same reversed (`EncoderDecoder`) |
# | synchronized many-to-many | `chars` | text → the next character at every step |

# %%
STRUCTURES = {  # task: (structure, cell, seq_len, task_params, updates)
    "generate": ("one-to-many", "gru", 50, {"dataset": "ArrowHead"}, 300),
    "ucr": ("many-to-one", "gru", 50, {"dataset": "BasicMotions"}, 200),
    "reverse": ("encoder–decoder", "gru", 6, {}, 300),
    "chars": ("synchronized many-to-many", "lstm", 32, {}, 150),
}
structure_runs, structure_models = {}, {}
for name, (_, cell, T, params, steps) in STRUCTURES.items():
    df, model = train(cell, name, seq_len=T, task_params=params, hidden_size=32, steps=steps,
                      batch_size=32, lr=1e-2, seed=0, eval_every=steps // 10,
                      return_model=True)
    structure_runs[name], structure_models[name] = df, model
    task = gradlab.tasks.make_task(name, T, seed=0, **params)
    ev = df[df.quantity == "eval_loss"].value
    acc = df[df.quantity == "accuracy"].value
    print(f"{task.structure:16s} {name:9s} {type(model).__name__:15s} eval loss {ev.iloc[0]:.3f} → "
          f"{ev.iloc[-1]:.3f} (no-memory baseline {task.baseline:.3f})"
          + (f", accuracy {acc.iloc[-1]:.2f}" if len(acc) else ""))

fig, axes = plt.subplots(1, 4, figsize=(15, 3.4), layout="constrained")
units = {"generate": "MSE", "ucr": "cross-entropy (nats)", "reverse": "cross-entropy (nats)",
         "chars": "cross-entropy (nats)"}
for ax, (name, df) in zip(axes, structure_runs.items(), strict=True):
    structure, cell = STRUCTURES[name][:2]
    ev = df[df.quantity == "eval_loss"]
    ax.plot(ev.iteration, ev.value, marker="o", ms=3, color=gplot.CELL_COLORS[cell],
            label=f"{gplot.CELL_LABELS[cell]}, evaluation loss")
    ax.axhline(df[df.quantity == "baseline"].value.mean(), ls="--", c="k",
               label="no-memory baseline")
    ax.set(title=f"{structure}: {name}", xlabel="update", ylabel=f"loss, {units[name]}")
    ax.legend(fontsize=8)
fig.suptitle("The four structures, each a tiny network trained on real data")
plt.show()

# %% [markdown]
# Every network goes below what it could do without memory, in a few hundred updates. What
# they learned:

# %%
# one-to-many: the series generated from each class vs that class's mean training series
gen_task = gradlab.tasks.make_task("generate", 50, seed=0, dataset="ArrowHead")
x_tr, y_tr = gen_task.full_split("train")  # x: class one-hot at step 0; y (N, T, 1)
cls = x_tr[:, 0].argmax(-1)
K = x_tr.shape[-1]
one_hot_at_0 = torch.zeros(K, 50, K)
one_hot_at_0[:, 0] = torch.eye(K)  # (K, T, K): class k at step 0, then nothing
with torch.no_grad():
    gen = structure_models["generate"](one_hot_at_0)  # (K, T, 1)
fig, ax = plt.subplots(figsize=(7, 3.6), layout="constrained")
for k in range(K):
    c = plt.cm.tab10(k)
    ax.plot(y_tr[cls == k].mean(0)[:, 0], ls="--", color=c, label=f"class {k}: training mean")
    ax.plot(gen[k, :, 0], color=c, label=f"class {k}: generated")
ax.set(xlabel="step t", ylabel="standardised value",
       title="One-to-many: ArrowHead series generated from the class alone")
ax.legend(fontsize=7, ncol=3, loc="lower center")
plt.show()
print(f"test MSE {gen_task.floor:.3f} for the per-class mean series (the floor), "
      f"{gen_task.baseline:.3f} for one mean series (the no-memory baseline)")

# %%
# encoder–decoder: test spans and the decoder's prediction (teacher-forced, argmax per step)
rev_task = gradlab.tasks.make_task("reverse", 6, seed=0)
(src, tgt_in), tgt = rev_task.sample(8, split="test")
with torch.no_grad():
    pred = structure_models["reverse"](src, tgt_in).argmax(-1)
vocab = gradlab.data.text_vocabulary()


def show(codes):
    return "".join(vocab[int(i)] for i in codes).replace("\n", "⏎")


print("encoder–decoder, test spans: source → prediction (target)")
for s_, p_, t_ in zip(src, pred, tgt, strict=True):
    print(f"  {show(s_.argmax(-1))!r:>10} → {show(p_)!r:>10}  ({show(t_)!r})")

# %% [markdown]
# For the synchronized many-to-many model (a loss at *every* step), the gradient that trains
# it is a double sum: each loss L_t sends credit back to every earlier state s_k.
# `gradlab.credit_map` gives ‖∂L_t/∂h_k‖ for every pair; each row is one loss's own decay curve.

# %%
chars_task = gradlab.tasks.make_task("chars", 32, seed=0)
x_c, y_c = chars_task.sample(16)
lm = structure_models["chars"]
with torch.no_grad():
    logits = lm(x_c)  # (B, T, V)
direct = (torch.softmax(logits, -1) - nn.functional.one_hot(y_c, chars_task.V)) / y_c.numel()
credit = gradlab.credit_map(lm, x_c, direct, dtype=torch.float64)
cm = credit[(credit.quantity == "log10_grad_norm") & (credit.batch_index == -1)]
fig = gplot.flow_heatmaps(cm.assign(cell="lstm", t=cm.loss_step, k=cm.step),
                          colorbar_label=r"$\log_{10}\,\|\partial L_t/\partial h_k\|_2$",
                          title="Credit from each loss $L_t$ to each state $h_k$ (char LSTM)")
fig.axes[0].set(xlabel="state step $k$", ylabel="loss step $t$")
plt.show()

# %% [markdown]
# Along every row the credit fades with the distance t − k, as in the decay curves of section 4
# below: even with a loss at every step, each state is trained mostly by the losses just after
# it. Sections 3 and 4 look at one such row in detail.

# %% [markdown]
# ## 3. Backpropagation through time, term by term
#
# Unroll the network for three steps and put a loss on the state at step 2 (steps counted from
# 0), L₂ = Σ h₂. The state h₂ depends on W_h directly and through h₁ and h₀, so the chain rule
# gives one term per earlier step i:
#
# $$\frac{\partial L_2}{\partial W_h} = \sum_{i=0}^{2}
#   \frac{\partial L_2}{\partial h_2}
#   \Bigl(\prod_{j=i+1}^{2} \frac{\partial h_j}{\partial h_{j-1}}\Bigr)
#   \frac{\partial^{+} h_i}{\partial W_h},$$
#
# where ∂⁺h_i/∂W_h is the *immediate* derivative (h_{i-1} held fixed) and, for the tanh RNN,
# ∂h_j/∂h_{j-1} = diag(1 − h_j²) W_h. `gradlab.bptt_by_lag(..., return_terms=True)` returns
# these terms; below we also build them by hand from the formula, and compare both with
# autograd's gradient. Everything in float64.

# %%
torch.manual_seed(1)
H = 3
rnn = nn.RNN(2, H, batch_first=True, dtype=torch.float64)
x = torch.randn(1, 3, 2, dtype=torch.float64)  # steps 0, 1, 2
h_init = 0.5 * torch.randn(1, 1, H, dtype=torch.float64)  # h_{-1}, the state before step 0

table, terms = gradlab.bptt_by_lag(rnn, x, target_step=2, h0=h_init, return_terms=True)
print("terms for weight_hh:", tuple(terms["weight_hh"].shape), "at steps", terms["step"])

# the formula by hand
W_h = rnn.weight_hh_l0.detach()
with torch.no_grad():
    hs, _ = rnn(x, h_init)
h = hs[0]  # (T, H): h_0, h_1, h_2
h_prev = torch.cat([h_init[0], h[:-1]])  # h_{i-1}
dL_dh2 = torch.ones(H, dtype=h.dtype)  # ∂(Σ h_2)/∂h_2
by_hand = {}
for i in range(3):
    row = dL_dh2.clone()  # the row vector ∂L/∂h_2 · Π_{j=i+1}^{2} ∂h_j/∂h_{j-1}
    for j in range(2, i, -1):
        J_j = torch.diag(1 - h[j] ** 2) @ W_h  # ∂h_j/∂h_{j-1}
        row = row @ J_j
    # immediate derivative: h_i = tanh(a_i), a_i = W_h h_{i-1} + ..., so
    # (row · ∂⁺h_i/∂W_h)_{ab} = row_a (1 - h_i,a²) h_{i-1,b}
    by_hand[i] = torch.outer(row * (1 - h[i] ** 2), h_prev[i])

# autograd
rnn.zero_grad()
out, _ = rnn(x, h_init)
out[0, 2].sum().backward()
autograd = rnn.weight_hh_l0.grad

for k, i in enumerate(terms["step"]):
    print(f"term i={i} (lag {2 - i}): |gradlab - by hand| = "
          f"{(terms['weight_hh'][k] - by_hand[int(i)]).abs().max():.1e}, "
          f"Frobenius norm {by_hand[int(i)].norm():.4f}")
total = sum(by_hand.values())
print(f"Σ_i terms vs autograd: max |difference| = {(total - autograd).abs().max():.1e}")
assert torch.allclose(terms["weight_hh"].sum(0), autograd, atol=1e-12)
assert torch.allclose(total, autograd, atol=1e-12)

# %% [markdown]
# The three terms are the lecture's sum; they add up to autograd's gradient to round-off.
# The far term (i = 0) carries two Jacobian factors, the near term (i = 2) none. With more
# steps the far terms carry more factors. At T = 100 and T = 1,000 (a tanh RNN with 32 units at
# PyTorch's default initialisation) the norm of each term, by its lag t* − i:

# %%
rows = []
for T in (100, 1000):
    torch.manual_seed(2)
    net = nn.RNN(4, 32, batch_first=True, dtype=torch.float64)
    xT = torch.randn(4, T, 4, dtype=torch.float64)
    df, terms_T = gradlab.bptt_by_lag(net, xT, return_terms=True)
    net.zero_grad()
    net(xT)[0][:, -1].sum().backward()
    err = (terms_T["weight_hh"].sum(0) - net.weight_hh_l0.grad).abs().max().item()
    print(f"T = {T:5d}: Σ of {len(terms_T['step'])} terms vs autograd, max |diff| = {err:.1e}")
    assert err < 1e-10
    rows.append(df.assign(cell="rnn_tanh", seq_len=T))
bptt = pd.concat(rows)
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), layout="constrained")
for ax, (T, d) in zip(axes, bptt.groupby("seq_len"), strict=True):
    gplot.bptt_by_lag(d[d.param.isin(["weight_hh", "weight_ih"])], ax=ax,
                      title=f"Norm of each term of ∂L/∂W by lag, T = {T}")
axes[0].get_legend().remove()
plt.show()
wh = bptt[(bptt.param == "weight_hh") & (bptt.seq_len == 1000)].set_index("lag")["value"]
print(f"share of the terms' norms at lags < 10: {wh[wh.index < 10].sum() / wh.sum():.3f}; "
      f"norm of the lag-0 term: {wh.loc[0]:.2f}, lag 50: {wh.loc[50]:.1e}, "
      f"lag 100: {wh.loc[100]:.1e}")

# %% [markdown]
# The terms shrink geometrically with the lag (a straight line on the log axis; at T = 1,000
# the last ones are near float64's smallest numbers, and a few hundred steps further they
# underflow to an exact 0): at T = 1,000 the gradient of W_h is made of its
# first few lags; what happened 100 steps back contributes a vanishing fraction of it
# (printed above; far enough back a term underflows even float64 and reads 0). The network can
# only learn from what its gradient sees, so it learns short dependencies. That is the vanishing
# gradient; the rest of this notebook measures it.

# %% [markdown]
# ## 4. Vanishing gradients, measured
#
# ### Decay curves
# `gradlab.gradient_flow` propagates δ_k = ∂L/∂h_k from a loss at the last step back to every
# step, in log space (no underflow at any length). One curve per cell at PyTorch's default
# initialisation, H = 32, T = 200, 8 random input sequences:

# %%
CELLS = {"rnn_tanh": lambda: nn.RNN(4, 32, batch_first=True),
         "rnn_relu": lambda: nn.RNN(4, 32, nonlinearity="relu", batch_first=True),
         "lstm": lambda: nn.LSTM(4, 32, batch_first=True),
         "gru": lambda: nn.GRU(4, 32, batch_first=True)}
xs = torch.randn(8, 200, 4)
flows = []
for cell, make in CELLS.items():
    for seed in range(3):
        torch.manual_seed(seed)
        f = gradlab.gradient_flow(make(), xs, dtype=torch.float64)
        flows.append(f[f.quantity == "log10_grad_norm"].assign(cell=cell, seed=seed))
flow = pd.concat(flows)
ax = gplot.decay_curves(flow, title="‖∂L/∂h_{T−k}‖ by lag k, default init, T = 200")
plt.show()
mem = theory.memory_table(flow, by=["cell", "seed"])
print(mem.pivot_table(index="cell", columns="quantity", values="value").round(3))

# %% [markdown]
# Straight lines on a log axis: the gradient decays *geometrically*, at a rate set by the cell.
# The memory length is the lag at which the gradient has fallen to 1/1000 of its value at the
# loss.
#
# ### The T × T map
# The decay is not only a property of one loss: `gradlab.flow_map` gives ‖∂h_t/∂h_k‖ for every
# pair k ≤ t (here T = 48, spectral norm).

# %%
x48 = torch.randn(1, 48, 4)
maps = []
for cell, make in CELLS.items():
    torch.manual_seed(0)
    m = gradlab.flow_map(make(), x48, norms=("spectral",), dtype=torch.float64)
    maps.append(m.assign(cell=cell))
fig = gplot.flow_heatmaps(pd.concat(maps))
plt.show()

# %% [markdown]
# Each map is blue away from the diagonal: the farther k lies before t, the smaller ‖∂h_t/∂h_k‖.
# The colour depends mostly on t − k, not on t: the decay is a property of the dynamics.
#
# ### Why: the Jacobian's singular values and Pascanu's bound
# The product Π ∂h_j/∂h_{j-1} of k Jacobians has singular values that fan out with k; its norm
# is at most (γ σ_max(W_h))^k with γ = sup |tanh'| = 1 (Pascanu, Mikolov & Bengio 2013). If
# σ_max(W_h) < 1 the gradient must vanish; if it is > 1 it may explode.

# %%
torch.manual_seed(0)
rnn = nn.RNN(4, 32, batch_first=True, dtype=torch.float64)
x100 = torch.randn(4, 100, 4, dtype=torch.float64)
rnn_orth = apply_init(nn.RNN(4, 32, batch_first=True, dtype=torch.float64), "orthogonal",
                      generator=0)
spectra = []
for init, net in [("default", rnn), ("orthogonal", rnn_orth)]:
    sp = gradlab.jacobian_spectrum(net, x100[:1], lags=(1, 10, 50))  # one input sequence
    spectra.append(sp[sp.quantity == "singular_value"].assign(cell="rnn_tanh", init=init))
fig = gplot.singular_value_spectra(pd.concat(spectra).rename(columns={"lag": "k"}))
plt.show()

sigma_max = torch.linalg.matrix_norm(rnn.weight_hh_l0.detach(), ord=2).item()
fm = gradlab.flow_map(rnn, x100[:1], norms=("spectral",))
measured = fm[fm.t == 99].set_index("lag")["value"]  # log10 ‖∂h_99/∂h_{99-k}‖
lags = np.arange(100)
fig, ax = plt.subplots(figsize=(6, 3.8))
ax.plot(measured.index, measured.values, label="measured ‖∂h₉₉/∂h₉₉₋ₖ‖₂")
ax.plot(lags, theory.log10_pascanu_bound(sigma_max, lags), "--",
        label=f"Pascanu bound (γ σ_max)^k, σ_max = {sigma_max:.2f}")
ax.set(xlabel="lag k (steps)", ylabel="log₁₀ norm", title="Measured Jacobian norm vs the bound")
ax.legend()
plt.show()
slope = theory.fit_decay_rate(measured.index.to_numpy(float), measured.to_numpy(float))
print(f"σ_max(W_h) = {sigma_max:.3f}; measured slope {slope.log10_rate:.3f} log10 per step")

# %% [markdown]
# The singular values fan out with k: after 50 steps the largest is 10⁻¹³ at the default init,
# and the product has collapsed onto a few directions. Orthogonal W_h (Saxe et al. 2013) keeps
# them closer to 1 for longer, but tanh' < 1 still pulls them down.
#
# At PyTorch's default init σ_max(W_h) is close to 1, so the bound allows (almost) no decay;
# the measured norm still falls by the slope printed above, since tanh' < 1 on every
# pre-activation that the input drives away from 0. The bound is sufficient, not tight. For a
# quantitative prediction we need the statistics of those pre-activations: mean-field theory.
#
# ### Mean field and the edge of chaos
# For a wide tanh RNN with W_ij ~ N(0, σ_w²/H) and input of variance σ_x², the pre-activations
# settle to a Gaussian of variance q*, and the gradient changes by the factor
# χ₁ = σ_w² E[tanh'(√q* z)²] per step: its log-rate is ½ ln χ₁ (Poole et al. 2016; Chen,
# Pennington & Schoenholz 2018). χ₁ = 1 is the *edge of chaos*: below it gradients vanish, above
# it they explode. Measure the rate of random networks across σ_w and compare:

# %%
H, T, WARM = 64, 60, 40
gains = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
measured_rows = []
for input_std in (0.0, 1.0):
    for gain in gains:
        for seed in range(2):
            net = nn.RNN(H, H, batch_first=True, dtype=torch.float64)
            apply_init(net, "gaussian", generator=seed, gain=gain, input_std=1 / np.sqrt(H))
            g = torch.Generator().manual_seed(seed)
            xg = input_std * torch.randn(4, WARM + T, H, generator=g, dtype=torch.float64)
            h0 = torch.randn(1, 4, H, generator=g, dtype=torch.float64)
            with torch.no_grad():
                _, hw = net(xg[:, :WARM], h0)  # run into the stationary regime first
            f = gradlab.gradient_flow(net, xg[:, WARM:], h0=hw)
            f = f[(f.quantity == "log10_grad_norm") & (f.lag >= 5)]
            fit = theory.fit_decay_rate(f.lag.to_numpy(float), f.value.to_numpy(float))
            measured_rows.append({"gain": gain, "input_std": input_std, "seed": seed,
                                  "quantity": "decay_rate", "value": fit.ln_rate})
measured_mf = pd.DataFrame(measured_rows)
theory_mf = pd.concat([theory.mean_field_table(np.linspace(0.25, 3.2, 60), sigma_in=s)
                       for s in (0.0, 1.0)])
ax = gplot.gain_phase_diagram(measured_mf, theory_mf, band="minmax")
plt.show()
print("edge of chaos σ_w* (σ_x = 0, 1):",
      [round(float(theory.edge_of_chaos(sigma_in=s)), 3) for s in (0.0, 1.0)])

# %% [markdown]
# The measured rate is the slope of ln ‖∂L/∂h_{T−k}‖ against k: negative = vanishing,
# positive = exploding (error bars: min–max over two random networks). The measured rates
# follow the mean-field line and cross zero where theory says: at σ_w = 1 without input and
# at σ_w ≈ 1.86 with unit input. Input noise pushes the edge of chaos out, since it drives tanh
# into saturation. Below the edge the network forgets; above, it is chaotic and gradients
# explode.
#
# ## 5. Exploding gradients and clipping
# Past the edge of chaos the backward product *grows*: a tanh RNN at σ_w = 3 (input std 1)
# amplifies the gradient it sends back.

# %%
net = nn.RNN(16, 16, batch_first=True, dtype=torch.float64)
apply_init(net, "gaussian", generator=0, gain=3.0, input_std=0.25)
f = gradlab.gradient_flow(net, torch.randn(4, 100, 16, dtype=torch.float64))
ax = gplot.decay_curves(f[f.quantity == "log10_grad_norm"].assign(cell="rnn_tanh"),
                        title="Exploding: tanh RNN at σ_w = 3")
plt.show()

# %% [markdown]
# In training, such a gradient arrives as a sudden spike in the total gradient norm that throws
# the weights far away. Pascanu et al. (2013) rescale the gradient to a maximum norm
# (`clip_norm=` in `gradlab.train.train`). The same tanh RNN, initialised past the edge of chaos
# (σ_w = 3), learns the adding problem (T = 20) with and without clipping:

# %%
runs = []
for clip in (None, 1.0):
    df = train("rnn_tanh", "adding", seq_len=20, hidden_size=32, steps=150, batch_size=32,
               lr=1e-2, init="gaussian", init_params={"gain": 3.0}, clip_norm=clip, seed=0,
               eval_every=15)
    runs.append(df.assign(cell="rnn_tanh", task="adding", seq_len=20,
                          clip="none" if clip is None else f"norm ≤ {clip}"))
runs = pd.concat(runs)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
gn = runs[runs.quantity == "grad_norm_total"]
for clip, d in gn.groupby("clip"):
    axes[0].plot(d.iteration, d.value, label=f"clip {clip}")
axes[0].set(yscale="log", xlabel="iteration", ylabel="‖∂L/∂θ‖₂ before clipping",
            title="Total gradient norm")
axes[0].legend()
ev = runs[runs.quantity.isin(["eval_loss", "baseline"])]
for clip, d in ev[ev.quantity == "eval_loss"].groupby("clip"):
    axes[1].plot(d.iteration, d.value, marker="o", label=f"clip {clip}")
axes[1].axhline(ev[ev.quantity == "baseline"].value.mean(), ls="--", c="k",
                label="no-memory baseline")
axes[1].set(yscale="log", xlabel="iteration", ylabel="evaluation MSE", title="Adding, T = 20")
axes[1].legend()
plt.show()
final = runs[runs.quantity == "eval_loss"].groupby("clip").value.last()
print("largest total gradient norm:", gn.groupby("clip").value.max().round(1).to_dict())
print("final evaluation MSE:", final.round(3).to_dict(), "; baseline",
      round(ev[ev.quantity == "baseline"].value.mean(), 3))

# %% [markdown]
# Past the edge of chaos the first updates see gradients of norm 10–100 in both runs. Without
# clipping every such gradient is a step of that size: a burst of them around update 60–90
# throws the evaluation loss from near the baseline back up; the clipped run's steps are bounded,
# and after its first 30 updates it stays near the baseline. Clipping tames exploding
# gradients; it does nothing for vanishing ones: neither run gets far below the no-memory
# baseline here.

# %% [markdown]
# ## 6. LSTM and GRU: a path the gradient can travel
#
# The LSTM adds a cell state c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t: along c, the one-step Jacobian is
# diag(f_t) plus small terms, a product of forget gates instead of a product of weight matrices.
# When f_t ≈ 1 the gradient passes unchanged. `gradient_flow` splits an LSTM's gradient into its
# h and c parts; at two initialisations:

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained", sharey=True)
for ax, (init, params) in zip(axes, [("default", {}), ("chrono", {"t_max": 200})], strict=True):
    lstm = apply_init(nn.LSTM(4, 32, batch_first=True), init, generator=0, **params)
    f = gradlab.gradient_flow(lstm, xs, dtype=torch.float64)
    for q, label in [("log10_grad_norm_c", r"$\|\partial L/\partial c_{T-k}\|$ (cell state)"),
                     ("log10_grad_norm_h", r"$\|\partial L/\partial h_{T-k}\|$ (hidden state)")]:
        d = f[f.quantity == q]
        ax.plot(d.lag, d.value, label=label)
        print(f"{init:8s} {q}: lag 50 {d.set_index('lag').value.loc[50]:6.2f}, "
              f"lag 199 {d.set_index('lag').value.loc[199]:6.2f}")
    ax.set(xlabel="lag k (steps)", title=f"LSTM, {init} initialisation")
    ax.legend()
axes[0].set_ylabel("log₁₀ gradient norm (loss on h at the last step)")
plt.show()

# %% [markdown]
# At PyTorch's default init (left) the forget gates average about σ(0) = 0.5, so the
# cell-state path too shrinks the gradient at every step; h and c are coupled through the gates
# and decay at one rate, about 0.2 decades per step. *Chrono* initialisation (Tallec &
# Ollivier 2018; right) draws the forget bias b_f ~ ln U[1, T_max − 1], so that the gates' time
# scales −1/ln f spread up to T_max: now the gradient on c is still within about a decade of
# its start 200 steps back, while the part on h sits two decades lower. The gradient travels
# along the cell state. The forget-gate bias of 1 (Jozefowicz et al. 2015) sits in between:

# %%
chrono_rows = []
for init, params in [("default", {}), ("forget_bias", {}), ("chrono", {"t_max": 200})]:
    for seed in range(3):  # three random networks per initialisation
        lstm = nn.LSTM(4, 32, batch_first=True)
        apply_init(lstm, init, generator=seed, **params)
        f = gradlab.gradient_flow(lstm, xs, dtype=torch.float64)
        chrono_rows.append(f[f.quantity == "log10_grad_norm"].assign(cell="lstm", init=init,
                                                                     seed=seed))
ax = gplot.decay_curves(pd.concat(chrono_rows), title="LSTM gradient by lag and initialisation")
plt.show()

# %% [markdown]
# ### Gates during training
# The gates are learned. `train(..., track_gates=True)` records at every tracked iteration the
# forget gates' time scales, the gates' saturation and the gradient reaching step 0. An LSTM
# learning copy-memory (recall 3 symbols after a delay of 20 steps) from three initialisations:

# %%
gate_runs = []
for init, params in [("default", {}), ("forget_bias", {}), ("chrono", {"t_max": 30})]:
    df = train("lstm", "copy", seq_len=20, hidden_size=32, steps=200, batch_size=32, lr=1e-2,
               init=init, init_params=params, clip_norm=1.0, seed=0, track_every=40,
               track_gates=True, eval_every=40, task_params={"length": 3})
    gate_runs.append(df.assign(init=init))
fig = gplot.gates_over_training(pd.concat(gate_runs), horizon=20, chance=1 / 8, band=None)
plt.show()

# %% [markdown]
# The forget gates move first: within 40 updates their time scales (a) grow toward the delay,
# most with chrono initialisation, which starts closest, and the gates saturate (b). 200 updates
# of one seed are far too few to learn the task (d stays at chance); the gallery's `gates`
# figure trains 800 updates of a wider LSTM (H = 64, 2 symbols, Adam at 0.02) over 5 seeds.

# %% [markdown]
# ## 7. The Transformer: a flat path, and parallel steps
#
# Recurrent networks have two limits: the gradient has to travel through every step in between,
# and the steps run one after another since h_t needs h_{t-1}. Attention connects every output
# with every earlier input in one hop per layer. `gradlab.input_gradients` measures
# ‖∂L/∂x_k‖ for any sequence model (recurrent ones exactly, in log space):

# %%
T = 300
xin = torch.randn(4, T, 4)
archs = {"rnn_tanh": nn.RNN(4, 32, batch_first=True),
         "lstm": nn.LSTM(4, 32, batch_first=True),
         "gru": nn.GRU(4, 32, batch_first=True),
         "transformer": gradlab.models.Transformer(4, 32, nhead=4, num_layers=2)}
ig = []
for arch, model in archs.items():
    kw = {"grad_output": torch.randn(32)} if arch == "transformer" else {}
    g = gradlab.input_gradients(model, xin, **kw)
    ig.append(g[(g.quantity == "log10_grad_norm") & (g.batch_index == -1)]
              .assign(arch=arch, stage="init"))
fig = gplot.input_gradient_curves(pd.concat(ig))
plt.show()

# %% [markdown]
# The recurrent curves fall by a fixed number of decades per step; the Transformer's is flat:
# the distance between x_k and the loss is two attention hops whatever the lag. (The
# Transformer's gradient is computed by ordinary autograd; a float32 recurrent backward pass
# would read zero below the dotted line.)
#
# The second limit, parallelism: an RNN needs T sequential steps, a Transformer as many as it
# has layers, at the price of O(T²) work in attention. Forward + backward wall time on this
# machine (one thread, so nothing runs in parallel here; a GPU turns the sequential-step count
# into speed):

# %%
def fwd_bwd_ms(model, T, repeats=3):
    x = torch.randn(8, T, 4)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        out.sum().backward()
        times.append(1e3 * (time.perf_counter() - t0))
    return times

timing = []
for arch in ("lstm", "transformer"):
    for T in (16, 64, 256, 1024):
        ms = fwd_bwd_ms(archs[arch], T)
        timing.append({"arch": arch, "seq_len": T, "ms_median": np.median(ms),
                       "ms_min": min(ms), "ms_max": max(ms),
                       "sequential_steps": T if arch == "lstm" else 2})
fig = gplot.parallel_timing(pd.DataFrame(timing))
plt.show()

# %% [markdown]
# ## 8. Your own model
#
# Everything above also works on your own model. `gradlab.record` hooks the stock recurrent
# modules inside it for one forward/backward (nothing about the model changes) and returns a tidy
# table of ‖∂L/∂h_t‖ (and ‖∂L/∂c_t‖ for an LSTM) per step:

# %%
class Classifier(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.LSTM(1, 32, batch_first=True)
        self.head = nn.Linear(32, 10)

    def forward(self, x):
        return self.head(self.rnn(x)[0][:, -1])


model = Classifier()
x, y = torch.randn(32, 64, 1), torch.randint(0, 10, (32,))
with gradlab.record(model) as rec:
    nn.functional.cross_entropy(model(x), y).backward()
rec.frame().head()

# %% [markdown]
# `gradlab.Monitor` does the same every `every`-th iteration of your training loop (add
# `tensorboard="runs/tb"` for TensorBoard, `path=` to stream the rows to Parquet):

# %%
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
with gradlab.Monitor(model, every=10) as mon:
    for _ in range(41):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
frame = mon.frame()
ax = gplot.decay_over_training(frame[frame.quantity == "grad_norm"].query("layer == 0"))
plt.show()
mon.summary().head()

# %%
print(f"notebook ran in {time.perf_counter() - NOTEBOOK_START:.0f} s")
