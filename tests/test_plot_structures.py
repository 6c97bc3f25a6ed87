"""The real-data figures' plot functions, tested by their artists (labels, scales, lines)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from gradlab import plot

CELLS = ("rnn_tanh", "lstm")
TASKS = ("ucr", "chars", "reverse", "generate")


def _tables():
    metric, profile, credit = [], [], []
    for task in TASKS:
        for cell in CELLS:
            for seed in (0, 1, 2):
                it = np.arange(0, 101, 10)
                metric.append(pd.DataFrame({"task": task, "cell": cell, "seed": seed,
                                            "iteration": it, "value": 1.2 - 0.004 * it}))
                for stage in ("init", "trained"):
                    k = np.arange(20)
                    profile.append(pd.DataFrame({"task": task, "cell": cell, "seed": seed,
                                                 "stage": stage, "step": k,
                                                 "value": -0.1 * (19 - k)}))
                mods = ("decoder", "encoder") if task == "reverse" else ("rnn",)
                for m in mods:
                    lag = np.arange(1 if m == "encoder" else 0, 15)
                    credit.append(pd.DataFrame({"task": task, "cell": cell, "seed": seed,
                                                "module": m, "lag": lag, "value": -0.2 * lag}))
    return (pd.concat(metric, ignore_index=True), pd.concat(profile, ignore_index=True),
            pd.concat(credit, ignore_index=True))  # fmt: skip


def test_structure_panels_a_row_per_structure_with_three_panels():
    metric, profile, credit = _tables()
    fig = plot.structure_panels(metric, profile, credit, floors={"generate": 0.4},
                                boundaries={"reverse": 10},
                                row_titles={"ucr": "many-to-one"})  # fmt: skip
    axes = np.array(fig.axes).reshape(4, 3)
    assert [sub._suptitle.get_text() for sub in fig.subfigs][0] == "many-to-one"
    for (a0, a1, a2), task in zip(axes, TASKS, strict=True):
        assert a0.get_yscale() == "log" and a0.get_xlabel() == "training iteration"
        assert [ln.get_gid() for ln in a0.get_lines()].count("data") == len(CELLS)
        assert len([ln for ln in a0.get_lines() if ln.get_gid() == "reference"]) == 1
        assert len([ln for ln in a0.get_lines() if ln.get_gid() == "floor"]) == (task == "generate")
        assert [ln.get_gid() for ln in a1.get_lines()].count("data") == 2 * len(CELLS)
        assert len([ln for ln in a1.get_lines() if ln.get_gid() == "boundary"]) == (task == "reverse")
        n_mod = 2 if task == "reverse" else 1
        assert [ln.get_gid() for ln in a2.get_lines()].count("data") == n_mod * len(CELLS)
        assert "partial L" in a1.get_ylabel() and "partial L_t" in a2.get_ylabel()
        assert len([c for c in a0.collections if c.get_gid() == "band"]) == len(CELLS)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "bootstrap 95% CI over 3 seeds" in texts[-1]
    assert any("encoder" in t for t in texts) and any("floor" in t for t in texts)


def test_length_effect_accuracy_with_baselines_and_gradient_by_stage():
    acc = pd.DataFrame([{"cell": c, "seq_len": T, "seed": s, "value": 0.5 + 0.01 * s}
                        for c in CELLS for T in (12, 50, 200) for s in range(3)])  # fmt: skip
    grad = pd.DataFrame([{"cell": c, "seq_len": T, "seed": s, "stage": st, "value": -0.05 * T}
                         for c in CELLS for T in (12, 50, 200) for s in range(3)
                         for st in ("init", "trained")])  # fmt: skip
    base = pd.DataFrame([{"baseline": b, "seq_len": T, "value": 0.3}
                         for b in ("majority", "1nn_euclidean", "1nn_dtw")
                         for T in (12, 50, 200)])  # fmt: skip
    fig = plot.length_effect(acc, grad, base)
    a0, a1 = fig.axes
    assert a0.get_xscale() == "log" and a1.get_xscale() == "log"
    assert [t.get_text() for t in a0.get_xticklabels()] == ["12", "50", "200"]
    assert a0.get_ylim() == pytest.approx((0, 1.02))
    assert len([ln for ln in a0.get_lines() if ln.get_gid() == "baseline"]) == 3
    assert len([ln for ln in a1.get_lines() if ln.get_gid() == "data"]) == 2 * len(CELLS)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"majority class", "1-NN Euclidean", "1-NN DTW"} <= set(texts)


def test_missing_column_names_the_function():
    metric, profile, credit = _tables()
    with pytest.raises(ValueError, match="structure_panels"):
        plot.structure_panels(metric.drop(columns="iteration"), profile, credit)
