"""The experiments in experiments/: every file runs at --scale quick, and the numbers make sense.

All experiments run once per test session, in this process, at quick scale (a few seconds in
all; see ``quick_results``); the checks below read their tables. Tolerances are stated where
they are used, with the reason for their size.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from gradlab import studies
from gradlab._experiment import (
    ExperimentError,
    load_experiment,
    load_results,
    run_experiment,
)

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
NAMES = sorted(p.stem for p in EXPERIMENTS.glob("*.toml"))
EXPECTED = ["bptt", "copy", "decay", "flow_map", "gain", "gates", "init", "input_grad",
            "long_dependency", "real_baselines", "real_length", "seq_len", "spectra", "structures",
            "training"]


@functools.cache
def _run_quick(results: Path) -> dict[str, pd.DataFrame]:
    torch.set_num_threads(1)
    out = {}
    for name in NAMES:
        summary = run_experiment(
            EXPERIMENTS / f"{name}.toml", scale="quick", results_dir=results, progress=False
        )
        assert summary.ok, [f.error for f in summary.failed]
        out[name] = load_results(EXPERIMENTS / f"{name}.toml", scale="quick", results_dir=results)
    return out


def quick_results_for(tmp_path_factory) -> dict[str, pd.DataFrame]:
    """Every experiment at quick scale, computed once per session (shared with test_figures)."""
    return _run_quick(tmp_path_factory.getbasetemp() / "quick_results")


@pytest.fixture(scope="session")
def quick(tmp_path_factory) -> dict[str, pd.DataFrame]:
    return quick_results_for(tmp_path_factory)


def _q(df: pd.DataFrame, quantity: str) -> pd.DataFrame:
    return df[df["quantity"] == quantity]


def _by(df: pd.DataFrame, quantity: str, keys: list[str]) -> pd.Series:
    return _q(df, quantity).groupby(keys)["value"].mean()


# --- the files ---------------------------------------------------------------------------


def test_every_study_has_its_experiment_file():
    assert NAMES == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
@pytest.mark.parametrize("scale", ["quick", "default", "full"])
def test_experiment_files_are_valid_at_every_scale(name, scale):
    exp = load_experiment(EXPERIMENTS / f"{name}.toml", scale)
    assert exp.points
    for params, reason in exp.skipped:
        if "init" in params:
            assert "init" in reason and params["init"] in reason
        elif params["task"] == "digits":  # long_dependency: the digits task has two lengths
            assert "seq_len 8 or 64" in reason
        else:  # long_dependency: a real data set is no longer than its series
            assert params["task"] == "ucr" and f"fewer than seq_len {params['seq_len']}" in reason


def test_quick_is_smaller_than_default_is_smaller_than_full():
    for name in EXPECTED:
        sizes = [len(load_experiment(EXPERIMENTS / f"{name}.toml", s).points)
                 for s in ("quick", "default", "full")]  # fmt: skip
        assert sizes[0] <= sizes[1] <= sizes[2], (name, sizes)


def test_every_experiment_runs_at_quick_scale_and_writes_its_declared_quantities(quick):
    for name in EXPECTED:
        df = quick[name]
        exp = load_experiment(EXPERIMENTS / f"{name}.toml", "quick")
        assert df["point"].nunique() == len(exp.points), name
        assert set(df["quantity"]) <= set(exp.records), name
        assert not df["value"].isna().any(), name
        # +inf only for a memory longer than the window; -inf is log10 of an exact zero
        assert set(df.loc[df["value"] == np.inf, "quantity"]) <= {"memory_length"}, name


def test_quick_results_are_cached(quick, tmp_path_factory):
    summary = run_experiment(
        EXPERIMENTS / "decay.toml",
        scale="quick",
        results_dir=tmp_path_factory.getbasetemp() / "quick_results",
        progress=False,
    )
    assert summary.run == 0 and summary.cached == summary.total


# --- not-applicable points ----------------------------------------------------------------


def test_inapplicable_init_cell_pairs_are_left_out_of_the_grid():
    exp = load_experiment(EXPERIMENTS / "init.toml", "default")
    pairs = {(p.params["cell"], p.params["init"]) for p in exp.points}
    assert ("rnn_relu", "irnn") in pairs and ("lstm", "chrono") in pairs
    assert ("lstm", "forget_bias") in pairs and ("gru", "chrono") in pairs
    for bad in [("lstm", "irnn"), ("gru", "irnn"), ("gru", "forget_bias"),
                ("rnn_tanh", "chrono"), ("rnn_relu", "forget_bias")]:  # fmt: skip
        assert bad not in pairs
    skipped = {(p["cell"], p["init"]) for p, _ in exp.skipped}
    assert ("lstm", "irnn") in skipped
    n_seeds = len({p.params["seed"] for p in exp.points})
    assert len(exp.points) + len(exp.skipped) == 4 * 9 * n_seeds


def test_a_grid_with_no_applicable_point_is_an_error(tmp_path):
    path = tmp_path / "nothing.toml"
    path.write_text(
        '[experiment]\nname = "nothing"\nstudy = "gradient_decay"\nrecords = ["x"]\n'
        '[grid]\ncell = ["lstm", "gru"]\ninit = ["irnn"]\n'
    )
    with pytest.raises(ExperimentError, match="no applicable point.*irnn"):
        load_experiment(path)


def test_applicable_hook_of_a_registered_study(tmp_path):
    studies.study(
        "only_even",
        params={"seed": 0},
        applicable=lambda p: "odd seed" if p["seed"] % 2 else None,
    )(lambda p: pd.DataFrame({"quantity": ["x"], "value": [float(p["seed"])]}))
    try:
        path = tmp_path / "even.toml"
        path.write_text(
            '[experiment]\nname = "even"\nstudy = "only_even"\nrecords = ["x"]\n'
            "[grid]\nseed = [0, 1, 2, 3]\n"
        )
        exp = load_experiment(path)
        assert [p.params["seed"] for p in exp.points] == [0, 2]
        assert [(p["seed"], r) for p, r in exp.skipped] == [(1, "odd seed"), (3, "odd seed")]
        assert run_experiment(path, results_dir=tmp_path / "r", progress=False).run == 2
        assert sorted(load_results(path, results_dir=tmp_path / "r")["value"]) == [0.0, 2.0]
    finally:
        del studies._REGISTRY["only_even"]


# --- the numbers --------------------------------------------------------------------------


def test_decay_lstm_and_gru_forget_slower_than_plain_rnns_at_default_init(quick):
    rate = _by(quick["decay"], "log10_decay_rate", ["cell"])
    assert (rate < 0).all()  # every cell's gradient vanishes at PyTorch's default init
    # Measured at quick scale: tanh -0.34, ReLU -0.41, LSTM -0.24, GRU -0.22 log10/step; the
    # margin (0.1) is far above the seed-to-seed spread (about 0.01).
    assert rate["lstm"] > rate["rnn_tanh"] + 0.05
    assert rate["gru"] > rate["rnn_tanh"] + 0.05
    r2 = _by(quick["decay"], "fit_r2", ["cell"])
    assert (r2 > 0.95).all()  # the decay is geometric: a straight line in log space


def test_decay_rows_agree_with_their_summary(quick):
    df = quick["decay"]
    for _, part in df.groupby("point"):
        curve = _q(part, "log10_grad_norm").sort_values("lag")
        T = int(part["seq_len"].iloc[0])
        assert curve["lag"].tolist() == list(range(T))
        assert curve["value"].iloc[0] == pytest.approx(0.0, abs=1e-9)  # unit vector at the loss
        start = _q(part, "log10_grad_norm_at_start")["value"].item()
        assert start == pytest.approx(curve["value"].iloc[-1])
        slope = np.polyfit(curve["lag"], curve["value"], 1)[0]
        assert _q(part, "log10_decay_rate")["value"].item() == pytest.approx(slope, rel=1e-6)
        ln = _q(part, "ln_decay_rate")["value"].item()
        assert ln == pytest.approx(slope * math.log(10), rel=1e-6)


def test_seq_len_gradient_at_step_0_falls_with_length(quick):
    start = _by(quick["seq_len"], "log10_grad_norm_at_start", ["cell", "init", "seq_len"])
    for (cell, init), s in start.groupby(level=[0, 1]):
        vals = s.droplevel([0, 1]).sort_index().to_numpy()
        assert (np.diff(vals) < 0).all(), (cell, init, vals)


def test_init_sweep_chrono_and_irnn_keep_the_gradient(quick):
    rate = _by(quick["init"], "log10_decay_rate", ["cell", "init"])
    for cell in ("lstm", "gru"):
        assert rate[(cell, "chrono")] > rate[(cell, "default")] + 0.1
    # identity recurrence: the gradient is carried almost unchanged (rate ~ 0, measured -0.008)
    assert abs(rate[("rnn_relu", "irnn")]) < 0.05
    assert rate[("rnn_relu", "irnn")] > rate[("rnn_relu", "default")] + 0.2


def test_gain_measured_rates_follow_mean_field_and_lyapunov(quick):
    df = quick["gain"]
    meas = df[df["source"] == "measured"].groupby(["quantity", "input_std", "gain"])["value"].mean()
    theo = df[df["source"] == "theory"].groupby(["quantity", "input_std", "gain"])["value"].mean()
    rate, lam = meas["decay_rate"], meas["lyapunov"]
    # The gradient rate of a fixed loss direction and lambda_max are the same exponent once the
    # backward vector has aligned with the top Lyapunov vector; at quick scale (T = 60 after the
    # warm-up, N = 64) they agree to 0.02 (0.007 measured).
    assert (rate - lam).abs().max() < 0.03
    for s in (0.0, 1.0):
        r = rate[s].sort_index()
        assert (np.diff(r.to_numpy()) > 0).all()  # faster growth with larger gain
        assert r.iloc[0] < 0 < r.iloc[-1]  # ordered at sigma_w = 0.5, chaotic at 2.5
    # Far from the edge (|theory| > 0.5) finite-N effects are small even at N = 64: measured
    # -1.096 vs -1.096 (sigma_x = 1) and -0.63 vs -0.69 (sigma_x = 0, sigma_w = 0.5: the rate is
    # then ln of W's spectral radius, which at N = 64 lies ~ 1/sqrt(N) below sigma_w).
    far = theo["decay_rate"][theo["decay_rate"].abs() > 0.5]
    assert not far.empty
    assert ((rate[far.index] - far).abs() < 0.1).all()
    # mean-field fixed point of the pre-activation variance, where the state is not collapsed
    q, q_th = meas["q_star"], theo["q_star"]
    big = q_th[q_th > 0.5].index
    assert ((q[big] / q_th[big] - 1).abs() < 0.15).all()
    edge = df[df["quantity"] == "edge_of_chaos"].groupby("input_std")["value"].first()
    assert edge[0.0] == pytest.approx(1.0, abs=1e-6)
    assert 1.5 < edge[1.0] < 2.2


def test_spectra_orthogonal_tanh_step_is_a_contraction_and_products_shrink(quick):
    df = _q(quick["spectra"], "singular_value")
    top = df[df["index"] == 0]
    one = top[(top["lag"] == 1) & (top["cell"] == "rnn_tanh") & (top["init"] == "orthogonal")]
    assert (one["value"] <= 1 + 1e-12).all()  # |tanh'| <= 1 and ||W_hh||_2 = 1
    smax = top.groupby(["cell", "init", "lag"])["value"].apply(lambda v: np.exp(np.log(v).mean()))
    for (cell, init), s in smax.groupby(level=[0, 1]):
        assert s.iloc[-1] < s.iloc[0], (cell, init)  # the longest product is the smallest


def test_bptt_contributions_fall_with_lag(quick):
    df = quick["bptt"]
    assert set(df["param"]) == {"weight_ih", "weight_hh", "bias_ih", "bias_hh"}
    hh = df[df["param"] == "weight_hh"]
    for cell, part in hh.groupby("cell"):
        s = part.set_index("lag")["value"].sort_index()
        assert s.iloc[-1] < 1e-3 * s.iloc[:3].max(), cell


def test_training_rows_and_baselines(quick):
    df = quick["training"]
    assert set(df["task"]) == {"adding"}  # copy-memory has its own experiment
    np.testing.assert_allclose(_q(df, "baseline")["value"], 1 / 6, rtol=1e-12)
    assert np.isfinite(_q(df, "loss")["value"]).all()
    clipped = df[df["clip_norm"] > 0]
    assert (_q(clipped, "grad_norm_clipped")["value"] <= clipped["clip_norm"].max() + 1e-6).all()
    assert _q(df[df["clip_norm"] == 0], "grad_norm_clipped").empty
    tracked = _q(df, "grad_norm")
    assert not tracked.empty and (tracked["value"] > 0).all()
    assert tracked["step"].notna().all()
    assert _q(df, "accuracy").empty  # a regression task


def test_copy_rows_curves_and_budget(quick):
    df = quick["copy"]
    n, T, steps = (int(df[c].iloc[0]) for c in ("copy_length", "seq_len", "steps"))
    np.testing.assert_allclose(_q(df, "baseline")["value"], n * math.log(8) / (T + 2 * n),
                               rtol=1e-12)
    acc = _q(df, "accuracy")  # the curve: every eval_every updates and after the last one
    every = int(df["eval_every"].iloc[0])
    for _, part in acc.groupby("point"):
        assert sorted(part["iteration"]) == list(range(0, steps, every)) + [steps]
    assert acc["value"].between(0, 1).all()
    final = _q(df, "final_accuracy").set_index("point")["value"]
    last = acc[acc["iteration"] == steps].set_index("point")["value"]
    np.testing.assert_array_equal(final.sort_index(), last.sort_index())
    assert _q(df, "final_accuracy")["iteration"].isna().all()
    assert set(df["arch"]) == {"lstm", "rnn_tanh", "transformer"}


def test_gates_over_training_rows_and_chrono_opens_the_forget_gate(quick):
    df = quick["gates"]
    sat = _q(df, "gate_saturated_frac")["value"]
    assert ((sat >= 0) & (sat <= 1)).all()
    tau = _q(df, "forget_timescale")
    assert set(tau["gate"]) == {"forget"}
    H = int(df["hidden_size"].iloc[0])
    assert (tau.groupby(["init", "iteration"])["unit"].nunique() == H).all()
    start = tau[tau["iteration"] == 0].groupby("init")["value"].median()
    # default: f ≈ sigmoid(small) ≈ 0.5, timescale -1/ln 0.5 ≈ 1.4 steps; b_f = 1 (forget_bias):
    # f ≈ 0.73, ≈ 3.2 steps; chrono: b_f = ln U[1, T_max - 1], median timescale of order T_max/2
    assert 1.0 < start["default"] < 2.5
    assert start["forget_bias"] > start["default"] + 1
    assert start["chrono"] > start["forget_bias"]
    assert _q(df, "grad_norm")["step"].notna().all()


def test_flow_map_diagonal_is_the_identity(quick):
    df = quick["flow_map"]
    diag = df[df["lag"] == 0]
    assert np.allclose(diag["value"], 0.0, atol=1e-12)  # ||I||_2 = 1
    assert set(df["cell"]) == {"rnn_tanh", "rnn_relu", "lstm", "gru"}


def test_input_grad_recurrent_gradients_fall_with_lag_the_transformers_do_not(quick):
    df = quick["input_grad"]
    g = _q(df, "log10_grad_norm")
    T = int(g["seq_len"].iloc[0])
    assert set(g["lag"]) == set(range(T)) and set(g["stage"]) == {"init", "trained"}
    assert set(g["arch"]) == {"rnn_tanh", "lstm", "gru", "transformer"}
    assert np.isfinite(g["value"]).all()
    init = g[g["stage"] == "init"].groupby(["arch", "lag"])["value"].mean()
    for arch in ("rnn_tanh", "lstm", "gru"):  # a k-step path: falls by orders of magnitude
        assert init[(arch, T - 1)] < init[(arch, 0)] - 3, arch
    tf = init["transformer"]
    assert tf.loc[1:].max() - tf.loc[1:].min() < 2  # one layer stack at every lag
    assert init[("transformer", T - 1)] > max(init[(a, T - 1)] for a in ("rnn_tanh", "lstm"))
    # equal budget: counts within 20% of each other, as the table says
    n = _by(df, "params", ["arch"])
    assert n.max() / n.min() < 1.2


def test_long_dependency_rows_and_budget(quick):
    df = quick["long_dependency"]
    rel = _q(df, "relative_loss").set_index("point")["value"]
    loss = _q(df, "final_eval_loss").set_index("point")["value"]
    base = _q(df, "baseline").set_index("point")["value"]
    np.testing.assert_allclose(rel, loss / base, rtol=1e-12)
    # accuracy only where defined (the class of ucr); copy-memory is copy.toml's
    assert set(_q(df, "final_accuracy")["task"]) == {"ucr"}
    assert set(_q(df, "chance_accuracy")["task"]) == {"ucr"}
    assert _q(df, "accuracy").empty  # no curve without eval_every
    assert df.groupby(["arch", "task", "seq_len"])["seed"].nunique().min() >= 3
    for (arch, task), part in _q(df, "params").groupby(["arch", "task"]):
        from gradlab.studies import budget_size, param_count
        from gradlab.tasks import make_task

        kw = {"copy": {"length": 10}, "ucr": {"dataset": "OSULeaf"}}.get(task, {})
        t = make_task(task, 5, seed=0, **kw)
        H = int(_q(df[(df["arch"] == arch) & (df["task"] == task)], "hidden_size")["value"].iloc[0])
        layers = 2 if arch == "transformer" else 1
        assert part["value"].iloc[0] == param_count(arch, t.input_size, t.output_size, H,
                                                    layers=layers)
        assert (H, part["value"].iloc[0]) == budget_size(arch, t.input_size, t.output_size,
                                                         600, layers=layers)
    ucr = _q(df[df["task"] == "ucr"], "baseline")["value"]
    assert np.allclose(ucr, ucr.iloc[0]) and 1.5 < ucr.iloc[0] < math.log(6) + 1e-9  # H(prior)


def test_param_count_is_the_models_count():
    from gradlab.studies import param_count
    from gradlab.train import SequenceModel

    for arch in ("rnn_tanh", "rnn_relu", "lstm", "gru", "transformer"):
        for I, H, O in ((2, 8, 1), (10, 12, 9)):
            layers = 2 if arch == "transformer" else 1
            m = SequenceModel(arch, I, H, O, num_layers=layers, nhead=2)
            assert param_count(arch, I, O, H, layers=layers) == sum(
                p.numel() for p in m.parameters()), arch


def test_structures_rows_per_task_and_credit_against_credit_map(quick):
    """Every structure has its metric, per-step gradient and credit rows; the credit curve is
    the median over loss steps of credit_map's log ratio, recomputed here from credit_map."""
    from gradlab import credit_map
    from gradlab.tasks import make_task
    from gradlab.train import train

    df = quick["structures"]
    assert set(df["task"]) == {"ucr", "chars", "reverse", "generate"}
    for task, part in df.groupby("task"):
        have = set(part["quantity"])
        assert {"eval_loss", "baseline", "grad_norm", "log10_credit", "credit_reach"} <= have
        cr = _q(part, "log10_credit")
        assert (cr[cr["lag"] == 0]["value"] == 0).all()  # relative to the direct term
        assert (cr["value"] < 1).all()  # the direct term dominates
        T = part[f"len_{task}"].iloc[0]
        steps = _q(part, "grad_norm")["step"]
        assert steps.min() == 0 and steps.max() == (2 * T - 1 if task == "reverse" else T - 1)
    assert set(_q(df[df["task"] == "reverse"], "log10_credit")["module"]) == {"encoder",
                                                                               "decoder"}
    assert _q(df, "floor")["task"].unique().tolist() == ["generate"]
    # recompute one point's credit curve by hand
    p = df[(df["task"] == "chars") & (df["cell"] == "lstm")].iloc[0]
    _, model = train("lstm", "chars", seq_len=int(p["len_chars"]), hidden_size=int(p["hidden_size"]),
                     steps=int(p["steps"]), batch_size=int(p["batch_size"]), lr=float(p["lr"]),
                     clip_norm=float(p["clip_norm"]), seed=int(p["seed"]),
                     track_every=int(p["track_every"]), return_model=True)  # fmt: skip
    task = make_task("chars", int(p["len_chars"]),
                     seed=studies._derived_seed(int(p["seed"]), "credit"))  # fmt: skip
    g = torch.Generator().manual_seed(studies._derived_seed(int(p["seed"]), "credit-batch"))
    x, y = task.sample(int(p["credit_batch"]), g, split="test")
    pred = model(x).detach().requires_grad_(True)
    ell = torch.nn.functional.cross_entropy(pred.reshape(-1, task.V), y.reshape(-1),
                                            reduction="sum")  # fmt: skip
    (direct,) = torch.autograd.grad(ell, pred)
    cm = credit_map(model, x, direct)
    q = cm[(cm["quantity"] == "log10_grad_norm") & (cm["batch_index"] == -1)]
    own = q[q["lag"] == 0].set_index("loss_step")["value"]
    rel = q["value"].to_numpy() - own.reindex(q["loss_step"]).to_numpy()
    want = pd.Series(rel, index=q["lag"].to_numpy()).groupby(level=0).median()
    got = _q(df[(df["task"] == "chars") & (df["cell"] == "lstm")], "log10_credit")
    assert set(got["stage"]) == {"init", "trained"}
    got = got[got["stage"] == "trained"].set_index("lag")["value"].sort_index()
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), rtol=1e-6, atol=1e-6)


def test_real_length_and_real_baselines_rows(quick):
    df, base = quick["real_length"], quick["real_baselines"]
    assert set(df["len_ucr"]) == set(base["seq_len"])
    acc = _q(df, "accuracy")
    assert acc["value"].between(0, 1).all()
    assert set(base["baseline"]) == {"majority", "1nn_euclidean", "1nn_dtw"}
    chance = _q(df, "chance_accuracy")["value"].unique()
    maj = base[base["baseline"] == "majority"]["value"].unique()
    np.testing.assert_allclose(chance, maj)  # the task's majority class is aeon's split's


@pytest.mark.parametrize("task, T", [("chars", 10), ("reverse", 4), ("ucr", 20)])
def test_structure_init_credit_is_taken_from_trains_own_starting_weights(task, T):
    """The "init" credit rows are computed on the weights train starts from: an Adam step
    with lr 1e-30 leaves them unchanged, so they must equal _initial_model's exactly."""
    from gradlab.train import train

    tp = {"dataset": "GunPoint"} if task == "ucr" else None
    m0 = studies._initial_model({"seed": 3, "task": task, "cell": "gru", "hidden_size": 8}, T, tp)
    _, m1 = train("gru", task, seq_len=T, hidden_size=8, steps=1, batch_size=4, lr=1e-30,
                  seed=3, task_params=tp, return_model=True)  # fmt: skip
    for a, b in zip(m0.parameters(), m1.parameters(), strict=True):
        assert torch.equal(a, b)
