"""The Transformer figures' plot functions, tested by their artists (labels, scales, lines)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradlab import plot


def _lag_rows():
    rows = []
    for stage in ("init", "trained"):
        for arch, rate in (("rnn_tanh", -0.2), ("lstm", -0.1), ("transformer", 0.0)):
            for seed in (0, 1):
                lag = np.arange(300)
                rows.append(pd.DataFrame({"stage": stage, "arch": arch, "seed": seed, "lag": lag,
                                          "value": -1 + rate * lag + 0.1 * seed}))
    return pd.concat(rows, ignore_index=True)


def test_input_gradient_curves_one_line_per_arch_and_stage_and_the_float32_guide():
    fig = plot.input_gradient_curves(_lag_rows(), labels={"lstm": "LSTM (H = 30)"})
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["init", "trained"]
    for ax in axes:
        data = [ln for ln in ax.get_lines() if ln.get_gid() == "data"]
        assert [ln.get_label() for ln in data] == ["tanh RNN", "LSTM (H = 30)", "Transformer"]
        assert len([c for c in ax.collections if c.get_gid() == "band"]) == 3  # 2 seeds
        ref = [ln for ln in ax.get_lines() if ln.get_gid() == "reference"]
        assert len(ref) == 1 and ref[0].get_ydata()[0] == pytest.approx(-37.93, abs=0.01)
        assert "lag" in ax.get_xlabel()
    assert "partial L" in axes[0].get_ylabel()
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any("float32" in t for t in texts) and any("min–max over 2 seeds" in t for t in texts)


def test_input_gradient_curves_no_guide_when_nothing_is_near_float32s_range():
    df = _lag_rows()
    df["value"] = df["value"].clip(lower=-10)
    fig = plot.input_gradient_curves(df)
    assert not [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "reference"]


def test_length_sweep_log_axes_baseline_and_labels():
    rows = [
        {"task": task, "arch": arch, "seq_len": T, "seed": s, "value": v * (1 + 0.1 * s)}
        for task in ("adding", "copy")
        for arch, v in (("gru", 0.01), ("transformer", 0.1))
        for T in (10, 30, 100)
        for s in range(3)
    ]
    fig = plot.length_sweep(pd.DataFrame(rows), labels={("adding", "gru"): "GRU (H = 34)"})
    assert len(fig.axes) == 2
    for ax, task in zip(fig.axes, ("adding", "copy"), strict=True):
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert ax.get_title() == task
        data = [ln for ln in ax.get_lines() if ln.get_gid() == "data"]
        assert len(data) == 2
        ref = [ln for ln in ax.get_lines() if ln.get_gid() == "reference"]
        assert ref and ref[0].get_ydata()[0] == 1.0
        assert "baseline" in ax.get_ylabel()
    labels = [ln.get_label() for ln in fig.axes[0].get_lines() if ln.get_gid() == "data"]
    assert labels == ["GRU (H = 34)", "Transformer"]
    # the line is the geometric mean over seeds
    y = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "data"][0].get_ydata()
    np.testing.assert_allclose(y, 0.01 * np.exp(np.mean(np.log([1.0, 1.1, 1.2]))))


def test_parallel_timing_guides_and_shared_step_line():
    T = [16, 64, 256, 1024]
    rows = [
        {"arch": a, "seq_len": t, "ms_median": m * t, "ms_min": m * t * 0.9,
         "ms_max": m * t * 1.1, "sequential_steps": 2 if a == "transformer" else t}
        for a, m in (("rnn_tanh", 1.0), ("lstm", 0.5), ("transformer", 0.01))
        for t in T
    ]
    fig = plot.parallel_timing(pd.DataFrame(rows))
    ax, ax2 = fig.axes
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log"
    assert len([ln for ln in ax.get_lines() if ln.get_gid() == "data"]) == 3
    guides = [ln.get_label() for ln in ax.get_lines() if ln.get_gid() == "theory"]
    assert guides == [r"guide: $\propto T$", r"guide: $\propto T^2$"]
    assert "ms" in ax.get_ylabel()
    steps = {ln.get_label(): ln.get_ydata() for ln in ax2.get_lines() if ln.get_gid() == "data"}
    assert steps.keys() == {"tanh RNN / LSTM: T", "Transformer: 2"}
    assert list(steps["tanh RNN / LSTM: T"]) == T
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(t) for t in T]


def test_missing_columns_are_named():
    with pytest.raises(ValueError, match="parallel_timing: df is missing column.*sequential_steps"):
        plot.parallel_timing(pd.DataFrame({"arch": ["lstm"], "seq_len": [1], "ms_median": [1.0]}))
