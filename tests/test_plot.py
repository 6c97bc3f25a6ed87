"""gradlab.plot: figures checked by their artists on tiny synthetic tables, not by images.

Artists that carry data have a gid: "data" (measured mean lines/markers), "band", "fit",
"theory", "reference", "edge", "baseline" (see gradlab/plot/_style.py).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import LogNorm, to_hex  # noqa: E402

from gradlab import plot as gp  # noqa: E402

PLOT_DIR = Path(__file__).resolve().parents[1] / "gradlab" / "plot"
ROOT = PLOT_DIR.parents[1]


@pytest.fixture(autouse=True)
def _close_all_figures():
    yield
    plt.close("all")


# ----------------------------------------------------------------------------- tiny tables


def decay_df(cells=("rnn_tanh", "lstm", "gru"), seeds=(0, 1), slopes=None):
    slopes = slopes or {"rnn_tanh": -0.05, "rnn_relu": 0.01, "lstm": -0.012, "gru": -0.02}
    rows = []
    for c in cells:
        for s in seeds:
            for lag in range(0, 10):
                # seeds straddle the line symmetrically, so the pooled slope is exact
                rows.append(
                    dict(cell=c, seed=s, lag=lag, value=slopes[c] * lag + 0.01 * (2 * s - 1))
                )
    return pd.DataFrame(rows)


def flow_df(cells=("rnn_tanh", "lstm"), quantities=("log10_jac_spectral",)):
    rows = []
    for q in quantities:
        for i, c in enumerate(cells):
            for t in range(5):
                for k in range(t + 1):
                    v = (0.3 if i == 0 else -0.2) * (t - k)
                    rows.append(dict(cell=c, t=t, k=k, quantity=q, value=v))
    return pd.DataFrame(rows)


def heat_df():
    rows = []
    for i, init in enumerate(["orthogonal", "default"]):
        for j, c in enumerate(["gru", "rnn_tanh"]):
            for s in (0, 1):
                rows.append(
                    dict(init=init, cell=c, seed=s, value=-0.01 * (i + 1) * (j + 1) + 0.001 * s)
                )
    return pd.DataFrame(rows)


def phase_dfs():
    gains = np.array([0.5, 0.75, 1.0, 1.25, 1.5, 2.0])
    meas, theo = [], []
    for sx, shift in ((0.0, 1.0), (1.0, 1.5)):
        for g in gains:
            for q in ("decay_rate", "lyapunov"):
                theo.append(dict(gain=g, input_std=sx, quantity=q, value=g - shift))
                for s in (0, 1, 2):
                    meas.append(
                        dict(gain=g, input_std=sx, quantity=q, seed=s, value=g - shift + 0.01 * s)
                    )
    return pd.DataFrame(meas), pd.DataFrame(theo)


def spectra_df():
    rows = []
    for c in ("rnn_tanh", "lstm"):
        for init, spread in (("orthogonal", 0.0), ("gaussian", 0.5)):
            for k in (1, 10):
                for s in (0, 1):
                    sv = 10.0 ** (spread * np.sqrt(k) * np.linspace(1, -1, 4) + 0.01 * s)
                    rows += [
                        dict(cell=c, init=init, k=k, seed=s, index=i + 1, value=v)
                        for i, v in enumerate(sv)
                    ]
    return pd.DataFrame(rows)


def bptt_df(seeds=(0, 1)):
    rows = []
    for c, r in (("rnn_tanh", -0.3), ("gru", -0.05)):
        for p, scale in (("weight_hh_l0", 1.0), ("weight_ih_l0", 0.3), ("bias_hh_l0", 0.1)):
            for s in seeds:
                for lag in range(8):
                    rows.append(
                        dict(
                            cell=c,
                            param=p,
                            seed=s,
                            lag=lag,
                            value=scale * 10 ** (r * lag) * (1 + 0.1 * s),
                        )
                    )
    return pd.DataFrame(rows)


def training_df(decades=True):
    rows = []
    for task, base in (("adding", 0.167), ("copy", 2.0)):
        for T in (10, 50):
            for c in ("rnn_tanh", "lstm"):
                for clip in (False, 1.0):
                    for s in (0, 1):
                        for it in range(0, 100, 10):
                            drop = 10 ** (-3 * it / 90) if decades else 1 - 0.3 * it / 90
                            v = base * (drop if c == "lstm" else 1.0) * (1 + 0.01 * s)
                            rows.append(
                                dict(task=task, cell=c, seq_len=T, clip=clip, seed=s,
                                     iteration=it, quantity="loss", value=v)
                            )  # fmt: skip
            rows.append(dict(task=task, cell="lstm", seq_len=T, clip=False, seed=0,
                             iteration=0, quantity="baseline", value=base))  # fmt: skip
    return pd.DataFrame(rows)


def grad_df():
    rows = []
    for c in ("rnn_tanh", "lstm"):
        for it in range(0, 50, 10):
            for t in range(6):
                rows.append(dict(cell=c, seed=0, iteration=it, step=t, value=10.0 ** (-(5 - t))))
    return pd.DataFrame(rows)


def gates_df():
    rows = []
    for c, gates in (("lstm", "ifgo"), ("gru", "rzn")):
        for init in ("default", "chrono"):
            for gi, g in enumerate(gates):
                for s in (0, 1):
                    for t in range(6):
                        for q, v in (("gate_saturated_frac", 0.1 * gi + 0.01 * t),
                                     ("gate_mean", 0.5)):  # fmt: skip
                            rows.append(dict(cell=c, init=init, gate=g, step=t, seed=s,
                                             quantity=q, value=v))  # fmt: skip
    return pd.DataFrame(rows)


def gates_training_df():
    """Two inits x 3 seeds x 4 tracked iterations: per-unit timescales (default ~1.4 steps,
    chrono 10x longer), saturated fractions, ∂L/∂h_0 (two steps), accuracy."""
    rows = []
    for init, scale in (("default", 1.0), ("chrono", 10.0)):
        for s in range(3):
            for it in (0, 10, 20, 30):
                for u in range(4):
                    rows.append(dict(init=init, seed=s, iteration=it, quantity="forget_timescale",
                                     gate="forget", unit=u, step=None,
                                     value=scale * 1.4 * (1 + u) * (1 + it / 30)))  # fmt: skip
                for g, v in (("forget", 0.1 * scale / 10), ("input", 0.05)):
                    rows.append(dict(init=init, seed=s, iteration=it, gate=g, unit=None,
                                     step=None, quantity="gate_saturated_frac", value=v))  # fmt: skip
                for t in (0, 1):
                    rows.append(dict(init=init, seed=s, iteration=it, gate=None, unit=None, step=t,
                                     quantity="grad_norm", value=10.0 ** (-4 + t + s / 10)))  # fmt: skip
                rows.append(dict(init=init, seed=s, iteration=it, gate=None, unit=None, step=None,
                                 quantity="accuracy", value=0.1 + it / 100))  # fmt: skip
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- helpers


def by_gid(ax, gid):
    return [a for a in ax.get_children() if a.get_gid() == gid]


def data_lines(ax):
    return [line for line in ax.get_lines() if line.get_gid() == "data"]


def colorbars(fig):
    return [a for a in fig.axes if a.get_label() == "<colorbar>"]


def panels(fig):
    return [a for a in fig.axes if a.get_label() != "<colorbar>"]


def legend_texts(legend):
    assert legend is not None
    return [t.get_text() for t in legend.get_texts()]


def assert_units(label, *words):
    assert label.strip(), "empty axis label"
    for w in words:
        assert w in label, f"{w!r} not in {label!r}"


# ----------------------------------------------------------------------------- 1 decay_curves


def test_decay_curves_one_line_per_cell_with_fit_slope_in_legend():
    ax = gp.decay_curves(decay_df())
    lines = data_lines(ax)
    assert len(lines) == 3
    assert [to_hex(line.get_color()) for line in lines] == [
        gp.CELL_COLORS[c] for c in ("rnn_tanh", "lstm", "gru")
    ]
    assert len(by_gid(ax, "fit")) == 3
    assert all(f.get_linestyle() == "--" for f in by_gid(ax, "fit"))
    assert len(by_gid(ax, "band")) == 3  # two seeds -> a band per cell
    texts = legend_texts(ax.get_legend())
    assert "LSTM: \N{MINUS SIGN}0.012 log₁₀/step" in texts
    assert "tanh RNN: \N{MINUS SIGN}0.05 log₁₀/step" in texts
    assert any("95% CI over 2 seeds" in t for t in texts)
    assert_units(ax.get_xlabel(), "lag", "steps")
    assert_units(ax.get_ylabel(), "log_{10}", "partial L")
    assert ax.get_title()


def test_decay_curves_without_fits_or_seeds():
    df = decay_df(seeds=(0,)).drop(columns="seed")
    ax = gp.decay_curves(df, fits=False)
    assert len(data_lines(ax)) == 3
    assert not by_gid(ax, "fit") and not by_gid(ax, "band")
    assert legend_texts(ax.get_legend()) == ["tanh RNN", "LSTM", "GRU"]


def test_decay_curves_init_is_a_line_style_and_colours_are_fixed():
    a = decay_df(cells=("lstm",)).assign(init="orthogonal")
    b = a.assign(init="default", value=a["value"] * 2)
    ax = gp.decay_curves(pd.concat([a, b]))
    lines = data_lines(ax)
    assert len(lines) == 2
    assert {to_hex(line.get_color()) for line in lines} == {gp.CELL_COLORS["lstm"]}
    assert len({line.get_linestyle() for line in lines}) == 2


def test_decay_curves_draws_into_given_axes():
    fig, ax = plt.subplots()
    assert gp.decay_curves(decay_df(), ax=ax) is ax


# ----------------------------------------------------------------------------- 2 flow_heatmaps


def test_flow_heatmaps_panels_shared_diverging_scale_masked_triangle():
    fig = gp.flow_heatmaps(flow_df())
    axes = panels(fig)
    assert len(axes) == 2
    (cbar,) = colorbars(fig)
    assert_units(cbar.get_ylabel(), "log_{10}", r"\partial h_t/\partial h_k", "_2")
    meshes = [ax.collections[0] for ax in axes]
    lims = {(m.norm.vmin, m.norm.vmax) for m in meshes}
    assert len(lims) == 1  # one shared colour scale
    vmin, vmax = lims.pop()
    assert vmin == -vmax == pytest.approx(-1.2)  # centred at 0, |max| = 0.3 * 4
    A = meshes[0].get_array()
    M = np.ma.getmaskarray(A).reshape(5, 5)
    assert M[np.triu_indices(5, 1)].all() and not M[np.tril_indices(5)].any()
    assert_units(axes[0].get_xlabel(), "source step")
    assert_units(axes[0].get_ylabel(), "target step")
    assert [ax.get_title() for ax in axes] == ["tanh RNN", "LSTM"]


def test_flow_heatmaps_quantity_filter():
    df = flow_df(quantities=("log10_jac_spectral", "log10_jac_frobenius"))
    with pytest.raises(ValueError, match="several quantities"):
        gp.flow_heatmaps(df)
    fig = gp.flow_heatmaps(df, quantity="frobenius")
    assert "_F" in colorbars(fig)[0].get_ylabel()


# ----------------------------------------------------------------------------- 3 decay_heatmap


def test_decay_heatmap_annotated_means_and_colourbar():
    ax = gp.decay_heatmap(heat_df(), "init", "cell", quantity_label="decay rate (log₁₀ per step)")
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 4
    # default x tanh RNN: mean of -0.04 and -0.039
    assert "\N{MINUS SIGN}0.0395" in texts
    assert [t.get_text() for t in ax.get_xticklabels()] == ["tanh RNN", "GRU"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["default (PyTorch)", "orthogonal"]
    (cbar,) = colorbars(ax.figure)
    assert cbar.get_ylabel() == "decay rate (log₁₀ per step)"
    assert "mean over 2 seeds" in ax.get_title()
    assert ax.get_xlabel() and ax.get_ylabel()


def test_decay_heatmap_numeric_axes_with_units():
    df = heat_df().rename(columns={"init": "seq_len"}).replace({"orthogonal": 50, "default": 100})
    df["seq_len"] = df["seq_len"].astype(int)
    ax = gp.decay_heatmap(df, "seq_len", "cell")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["50", "100"]
    assert_units(ax.get_ylabel(), "steps")


# ----------------------------------------------------------------------------- 4 gain_phase_diagram


def test_gain_phase_diagram_markers_theory_and_edge_of_chaos():
    meas, theo = phase_dfs()
    ax = gp.gain_phase_diagram(meas, theo)
    markers = data_lines(ax)
    assert len(markers) == 4  # 2 input stds x 2 quantities
    assert all(m.get_linestyle() == "None" and m.get_marker() in ("o", "s") for m in markers)
    theory = by_gid(ax, "theory")
    assert len(theory) == 2  # identical theory for both quantities: one curve per input std
    assert all(t.get_linestyle() == "--" for t in theory)
    edges = sorted(line.get_xdata()[0] for line in by_gid(ax, "edge"))
    assert edges == pytest.approx([1.0, 1.5])  # where g - shift crosses 0
    assert all(e.get_linestyle() == ":" for e in by_gid(ax, "edge"))
    zero = by_gid(ax, "reference")
    assert len(zero) == 1 and tuple(zero[0].get_ydata()) == (0, 0)
    texts = legend_texts(ax.get_legend())
    assert any(t.startswith("theory:") for t in texts)
    assert any("edge of chaos" in t for t in texts)
    assert any("95% CI over 3 seeds" in t for t in texts)
    assert_units(ax.get_xlabel(), r"\sigma_w", "std")
    assert_units(ax.get_ylabel(), "ln per step")
    # colour per input std, shared by its markers and theory line
    assert to_hex(markers[0].get_color()) == to_hex(theory[0].get_color())
    assert to_hex(theory[0].get_color()) != to_hex(theory[1].get_color())


def test_gain_phase_diagram_draws_differing_theories_apart():
    meas, theo = phase_dfs()
    theo.loc[theo["quantity"] == "lyapunov", "value"] += 0.1
    ax = gp.gain_phase_diagram(meas, theo)
    assert {t.get_linestyle() for t in by_gid(ax, "theory")} == {"--", "-."}


def test_edge_of_chaos_interpolates():
    from gradlab.plot.phase import edge_of_chaos

    assert edge_of_chaos(np.array([1.0, 0.0, 2.0]), np.array([-0.5, -1.0, 1.5])) == pytest.approx(
        [1.25]
    )
    assert edge_of_chaos(np.array([0.0, 1.0]), np.array([-1.0, -0.5])) == []


# ----------------------------------------------------------------------------- 5 spectra


def test_singular_value_spectra_panels_log_y_and_isometry_line():
    fig = gp.singular_value_spectra(spectra_df())
    axes = panels(fig)
    assert len(axes) == 4  # 2 cells x 2 product lengths
    for ax in axes:
        assert ax.get_yscale() == "log"
        assert len(data_lines(ax)) == 2  # one per init
        (one,) = by_gid(ax, "reference")
        assert tuple(one.get_ydata()) == (1, 1)
    ortho = data_lines(axes[0])[0]
    assert ortho.get_label() == "orthogonal"
    assert np.allclose(ortho.get_ydata(), 10**0.005)  # geometric mean of 1 and 10^0.01
    texts = legend_texts(fig.legends[0])
    assert "Gaussian" in texts and any("min–max over 2 seeds" in t for t in texts)
    assert_units(axes[-1].get_xlabel(), "rank")
    assert_units(axes[0].get_ylabel(), "singular value")
    assert fig.get_suptitle()


# ----------------------------------------------------------------------------- 6 bptt_by_lag


def test_bptt_by_lag_lines_per_cell_and_param_log_y():
    ax = gp.bptt_by_lag(bptt_df())
    lines = data_lines(ax)
    assert len(lines) == 6  # 2 cells x 3 params
    assert ax.get_yscale() == "log"
    assert ax.get_title() == "Share of ∂L/∂W by lag"
    assert len({line.get_linestyle() for line in lines}) == 3
    assert {to_hex(line.get_color()) for line in lines} == {
        gp.CELL_COLORS["rnn_tanh"],
        gp.CELL_COLORS["gru"],
    }
    texts = legend_texts(ax.get_legend())
    assert r"$W_{hh}$ (recurrent)" in texts and "GRU" in texts
    assert any("geometric mean" in t for t in texts)
    assert_units(ax.get_xlabel(), "lag", "steps")
    assert_units(ax.get_ylabel(), "log scale")


def test_bptt_by_lag_normalize_gives_shares():
    ax = gp.bptt_by_lag(bptt_df(seeds=(0,)), normalize=True)
    for line in data_lines(ax):
        assert np.sum(line.get_ydata()) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- 7 training_curves


def test_training_curves_grid_baseline_and_clip_styles():
    fig = gp.training_curves(training_df())
    axes = panels(fig)
    assert len(axes) == 4  # 2 tasks x 2 sequence lengths
    for ax in axes:
        lines = data_lines(ax)
        assert len(lines) == 4  # 2 cells x 2 clip settings
        assert len({line.get_linestyle() for line in lines}) == 2
        (base,) = by_gid(ax, "baseline")
        assert base.get_linestyle() == "--" and to_hex(base.get_color()) == "#000000"
        assert base.get_label() == "no-memory baseline"
        assert ax.get_yscale() == "log"  # loss spans 3 decades
    assert_units(axes[0].get_ylabel(), "loss", "MSE")
    assert_units(axes[2].get_ylabel(), "cross-entropy", "nats")
    assert axes[-1].get_xlabel() == "training iteration"
    texts = legend_texts(fig.legends[0])
    for t in ("tanh RNN", "LSTM", "no clipping", "clip at 1", "no-memory baseline"):
        assert t in texts


def test_training_curves_linear_y_when_loss_does_not_span_decades():
    fig = gp.training_curves(training_df(decades=False))
    assert {ax.get_yscale() for ax in panels(fig)} == {"linear"}


# ----------------------------------------------------------------------------- 8 training_grad_heatmap


def test_training_grad_heatmap_log_colour_one_run():
    ax = gp.training_grad_heatmap(grad_df(), cell="lstm", seed=0)
    (mesh,) = ax.collections
    assert isinstance(mesh.norm, LogNorm)
    assert mesh.norm.vmin == pytest.approx(1e-5) and mesh.norm.vmax == pytest.approx(1.0)
    (cbar,) = colorbars(ax.figure)
    assert_units(cbar.get_ylabel(), r"\partial L/\partial h_t", "log colour scale")
    assert ax.get_xlabel() == "step $t$"
    assert ax.get_ylabel() == "training iteration"
    assert "LSTM" in ax.get_title()


def test_training_grad_heatmap_refuses_mixed_runs_and_unknown_filters():
    with pytest.raises(ValueError, match="mixes runs.*cell"):
        gp.training_grad_heatmap(grad_df())
    with pytest.raises(ValueError, match="no column 'init'"):
        gp.training_grad_heatmap(grad_df(), init="orthogonal")
    with pytest.raises(ValueError, match="no rows with cell='gru'"):
        gp.training_grad_heatmap(grad_df(), cell="gru")


# ----------------------------------------------------------------------------- 9 gate_saturation


def test_gate_saturation_panels_gates_and_init_styles():
    fig = gp.gate_saturation(gates_df())
    axes = panels(fig)
    assert [ax.get_title() for ax in axes] == ["LSTM", "GRU"]
    assert len(data_lines(axes[0])) == 8  # 4 gates x 2 inits
    assert len(data_lines(axes[1])) == 6  # 3 gates x 2 inits
    assert len({line.get_linestyle() for line in data_lines(axes[0])}) == 2
    assert len({to_hex(line.get_color()) for line in data_lines(axes[0])}) == 4
    assert axes[0].get_ylabel() == "fraction saturated (<0.05 or >0.95)"
    assert axes[0].get_xlabel() == "step $t$"
    texts = legend_texts(fig.legends[0])
    assert "f (forget)" in texts and "z (update)" in texts and "init: chrono" in texts
    fig2 = gp.gate_saturation(gates_df(), quantity="gate_mean")
    assert panels(fig2)[0].get_ylabel() == "mean gate activation"


# ----------------------------------------------------------------------------- bad input

CASES = {
    "decay_curves": (lambda df: gp.decay_curves(df), decay_df, "lag"),
    "flow_heatmaps": (lambda df: gp.flow_heatmaps(df), flow_df, "k"),
    "decay_heatmap": (lambda df: gp.decay_heatmap(df, "init", "cell"), heat_df, "init"),
    "gain_phase_diagram": (
        lambda df: gp.gain_phase_diagram(df, phase_dfs()[1]),
        lambda: phase_dfs()[0],
        "input_std",
    ),  # fmt: skip
    "singular_value_spectra": (lambda df: gp.singular_value_spectra(df), spectra_df, "index"),
    "bptt_by_lag": (lambda df: gp.bptt_by_lag(df), bptt_df, "param"),
    "training_curves": (lambda df: gp.training_curves(df), training_df, "clip"),
    "training_grad_heatmap": (
        lambda df: gp.training_grad_heatmap(df, cell="lstm"),
        grad_df,
        "step",
    ),  # fmt: skip
    "gate_saturation": (lambda df: gp.gate_saturation(df), gates_df, "gate"),
    "gates_over_training": (lambda df: gp.gates_over_training(df), gates_training_df, "init"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_missing_column_is_a_value_error_naming_it(name):
    call, build, col = CASES[name]
    df = build().drop(columns=col)
    with pytest.raises(ValueError, match=rf"{name}: .*missing column\(s\) '{col}'.*required") as e:
        call(df)
    assert "value" in str(e.value)  # the required columns are listed


@pytest.mark.parametrize("name", sorted(CASES))
def test_empty_table_is_a_value_error(name):
    call, build, _ = CASES[name]
    df = build().iloc[0:0]
    with pytest.raises(ValueError, match=rf"{name}: .*empty"):
        call(df)


def test_theory_table_is_checked_too():
    meas, theo = phase_dfs()
    with pytest.raises(ValueError, match="theory is missing column.*'gain'"):
        gp.gain_phase_diagram(meas, theo.drop(columns="gain"))


def test_non_dataframe_is_a_type_error():
    with pytest.raises(TypeError, match="decay_curves"):
        gp.decay_curves({"cell": ["lstm"], "lag": [0], "value": [0.0]})


# ----------------------------------------------------------------------------- save


def test_save_is_byte_deterministic(tmp_path):
    fig_a = gp.flow_heatmaps(flow_df())
    a = gp.save(fig_a, tmp_path / "a")
    b = gp.save(fig_a, tmp_path / "b.png")  # the suffix is dropped; same figure saved again
    fig_c = gp.flow_heatmaps(flow_df())  # a fresh figure from the same table
    c = gp.save(fig_c, tmp_path / "c")
    assert [p.name for p in a] == ["a.png", "a.svg"]
    for pa, pb, pc in zip(a, b, c, strict=True):
        assert pa.read_bytes() == pb.read_bytes() == pc.read_bytes()
    assert a[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = a[1].read_text()
    assert "<dc:date>" not in svg and "<svg" in svg


def test_save_accepts_axes(tmp_path):
    ax = gp.decay_curves(decay_df())
    (png,) = gp.save(ax, tmp_path / "sub" / "d", formats=("png",))
    assert png.exists() and png.parent.name == "sub"


# ----------------------------------------------------------------------------- no torch


def _imported_modules(path: Path) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level))
    return out


def test_plot_sources_import_neither_torch_nor_the_rest_of_gradlab():
    """Static half: no import of torch, and nothing from gradlab outside gradlab.plot
    (absolute ``gradlab.x`` or relative ``..x``), which could pull torch in transitively."""
    files = sorted(PLOT_DIR.glob("*.py"))
    assert len(files) >= 5
    for f in files:
        for mod, level in _imported_modules(f):
            assert mod.split(".")[0] != "torch", f"{f.name} imports {mod}"
            assert level <= 1, f"{f.name} imports from outside gradlab.plot ({'.' * level}{mod})"
            if level == 0 and mod.startswith("gradlab"):
                assert mod.startswith("gradlab.plot"), f"{f.name} imports {mod}"


def test_plot_package_runs_with_torch_unimportable(tmp_path):
    """Dynamic half, in a fresh interpreter: torch is made unimportable (a meta-path finder
    raises ImportError for it) and ``gradlab`` is a stub package pointing at the source folder,
    so gradlab/__init__.py (which imports torch for the models) is not run. Importing
    gradlab.plot and drawing and saving a figure must work, and torch must never be loaded."""
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys, types
        class NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, NoTorch())
        stub = types.ModuleType("gradlab")
        stub.__path__ = [{str(ROOT / "gradlab")!r}]
        sys.modules["gradlab"] = stub
        import pandas as pd
        import gradlab.plot as gp
        assert gp.__file__.startswith({str(PLOT_DIR)!r}), gp.__file__
        df = pd.DataFrame(dict(cell=["lstm"] * 3, lag=[0, 1, 2], value=[0.0, -0.1, -0.2]))
        gp.save(gp.decay_curves(df), {str(tmp_path / "sub")!r})
        assert "torch" not in sys.modules, sorted(m for m in sys.modules if "torch" in m)
        print("ok")
        """
    )
    env = dict(os.environ, MPLBACKEND="Agg")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
    # ... and its files are byte-identical to the same figure saved here (across processes)
    df = pd.DataFrame(dict(cell=["lstm"] * 3, lag=[0, 1, 2], value=[0.0, -0.1, -0.2]))
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.use("Agg")
        here = gp.save(gp.decay_curves(df), tmp_path / "here")
    for ext, p in zip(("png", "svg"), here, strict=True):
        assert p.read_bytes() == (tmp_path / f"sub.{ext}").read_bytes()


# ----------------------------------------------------------------------------- gates over training


def test_gates_over_training_panels_scales_and_bands():
    df = gates_training_df()
    fig = gp.gates_over_training(df, horizon=20.0, chance=0.125)
    tau, sat, grad, acc = fig.axes[:4]
    assert tau.get_yscale() == "log" and grad.get_yscale() == "log"
    assert sat.get_yscale() == "linear" and acc.get_ylim() == pytest.approx((-0.02, 1.02))
    # (a): median + 10% + 90% per init; the median (thick) of chrono is 10x default's
    assert len(data_lines(tau)) == 3 * 2
    med = {ln.get_label(): ln for ln in data_lines(tau) if ln.get_linestyle() == "-"}
    ratio = med["chrono"].get_ydata() / med["default (PyTorch)"].get_ydata()
    np.testing.assert_allclose(ratio, 10.0)
    assert len(by_gid(tau, "reference")) == 1  # the delay
    # (b): forget solid + input dashed per init; (c) ∂L/∂h_0 is the step-0 row only
    assert len(data_lines(sat)) == 4
    g = data_lines(grad)[0].get_ydata()
    # geometric mean over seeds of 10^(-4 + s/10), s = 0, 1, 2
    np.testing.assert_allclose(g, 10.0 ** (-4 + 0.1), rtol=1e-12)
    assert len(by_gid(acc, "baseline")) == 1
    # bands: bootstrap CI over 3 seeds, and the legend says so
    assert by_gid(grad, "band")
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("bootstrap 95% CI over 3 seeds" in t for t in texts)
    assert [t for t in texts if t.startswith("init: ")] == ["init: default (PyTorch)", "init: chrono"]


def test_gates_over_training_without_accuracy_draws_the_loss():
    df = gates_training_df()
    df = df[df["quantity"] != "accuracy"]
    extra = pd.DataFrame([dict(init="default", seed=0, iteration=it, quantity=q, value=v)
                          for it in (0, 10) for q, v in (("eval_loss", 1.0 / (1 + it)),
                                                          ("baseline", 0.5))])  # fmt: skip
    fig = gp.gates_over_training(pd.concat([df, extra], ignore_index=True))
    assert "loss" in fig.axes[3].get_ylabel() and len(by_gid(fig.axes[3], "baseline")) == 1


def test_training_curves_accuracy_mode():
    df = training_df()
    acc = df[df["quantity"] == "loss"].assign(quantity="accuracy", value=lambda d: d["value"] / 3)
    fig = gp.training_curves(pd.concat([df, acc]), quantity="accuracy", chance=0.125)
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear" and "accuracy" in ax.get_ylabel()
    assert [ln.get_ydata()[0] for ln in by_gid(ax, "baseline")] == [0.125]
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "chance (0.125)" in texts and "no-memory baseline" not in texts
