"""The figure set: render_all on the quick results, files, README, determinism; committed figures."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from gradlab._figures import FIGURES, _ci, _rows, _with_sources, render_all
from gradlab.plot._stats import bootstrap_ci
from tests.test_studies import quick_results_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    results = quick_results_for(tmp_path_factory)
    out = tmp_path_factory.mktemp("figures_quick")
    written = render_all(results, out, "quick")
    return results, out, written


def test_every_figure_is_written_as_png_and_svg(rendered):
    _, out, written = rendered
    names = [f.name for f in FIGURES]
    assert len(names) == len(set(names)) >= 10
    for name in names:
        for ext in ("png", "svg"):
            path = out / f"{name}.{ext}"
            assert path.exists() and path.stat().st_size > 1000, path
    assert {p.name for p in written} == {f"{n}.{e}" for n in names for e in ("png", "svg")} | {
        "README.md"
    }
    assert (out / "decay.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_readme_lists_every_figure_with_a_reading_and_the_command(rendered):
    _, out, _ = rendered
    text = (out / "README.md").read_text(encoding="utf-8")
    for spec in FIGURES:
        assert f"]({spec.name}.png)" in text
        assert (f"`experiments/{spec.experiment}.toml`" if spec.source is None
                else f"`{spec.source}` (committed") in text
    assert text.count("Made by: `make figures SCALE=quick`") == len(FIGURES)
    assert "Not drawn" not in text
    # readings quote numbers read off the tables
    decay = text.split("## ")[1]
    assert re.search(r"LSTM −0\.\d+", decay) and re.search(r"tanh RNN −0\.\d+", decay)
    assert "edge of chaos σ_w* = 1.000 (theory)" in text


def test_same_results_give_identical_bytes(rendered, tmp_path):
    results, out, _ = rendered
    subset = {k: results[k] for k in ("decay", "gain", "init")}
    again = render_all(subset, tmp_path, "quick")
    names = {p.name for p in again if p.suffix in (".png", ".svg")}
    # figures that read a committed table (the timing benchmark) are drawn whatever is passed
    drawn = ("decay", "gain", "init", "parallel")
    assert names == {f"{n}.{e}" for n in drawn for e in ("png", "svg")}
    for name in names:
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes(), name


def test_missing_experiment_is_listed_not_drawn(rendered, tmp_path):
    results, _, _ = rendered
    render_all({"bptt": results["bptt"]}, tmp_path, "quick")
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert (tmp_path / "bptt.png").exists() and not (tmp_path / "decay.png").exists()
    assert "## Not drawn" in text and "`gradlab run decay --scale quick`" in text


def test_committed_figures_match_the_figure_list():
    folder = ROOT / "figures"
    readme = folder / "README.md"
    if not readme.exists():
        pytest.skip("figures/ not generated yet (make figures)")
    text = readme.read_text(encoding="utf-8")
    assert "Made by: `make figures`" in text and "SCALE=" not in text
    for spec in FIGURES:
        assert (folder / f"{spec.name}.png").exists() and (folder / f"{spec.name}.svg").exists()
        assert f"]({spec.name}.png)" in text
    size = sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".png", ".svg"))
    assert size < 15e6


def test_transformer_readings_quote_the_tables(rendered):
    _, out, _ = rendered
    text = (out / "README.md").read_text(encoding="utf-8")
    grad = text.split("## Why the Transformer: gradient reaching")[1].split("## ")[0]
    assert re.search(r"init: tanh RNN 10\^−\d+\.\d → 10\^−\d+\.\d", grad)
    long = text.split("## Why the Transformer: final loss")[1].split("## ")[0]
    assert "Sizes: adding: LSTM H = " in long and "over 3 seeds" in long
    assert "OSULeaf at T = 10" in long and "(majority class 0." in long  # the real-data panel
    assert "copy at T = 5" in long  # read from the copy experiment
    par = text.split("## Why the Transformer: the parallelism limit")[1]
    assert "Sequential steps at T = 4096: RNNs 4096, Transformer 2" in par
    assert "Data: `benchmarks/parallel-cpu.csv` (committed" in par


# --- the readings are computed from the tables --------------------------------------------


def _reading(spec, df):
    fig, reading = spec.draw(df.reset_index(drop=True))
    plt.close(getattr(fig, "figure", fig))
    return reading


def _section(text: str, caption: str) -> str:
    return text.split(f"## {caption}\n")[1].split("\n## ")[0]


@pytest.mark.parametrize("spec", FIGURES, ids=[f.name for f in FIGURES])
def test_each_reading_is_the_one_in_the_readme_and_follows_its_table(rendered, spec):
    """The README quotes what the figure's function reads off the table, and a table with other
    values gives another reading: the numbers are computed, not typed in."""
    results, out, _ = rendered
    df = _rows(spec, _with_sources(results))  # a committed table (source=) or a run's rows
    reading = _reading(spec, df)
    assert reading in _section((out / "README.md").read_text(encoding="utf-8"), spec.caption)
    assert re.search(r"\d", reading), "a reading quotes numbers"
    measure = "value" if "value" in df else "ms_median"
    other = df.assign(**{measure: df[measure] * 1.25 + 0.0123})
    assert _reading(spec, other) != reading


def _quoted(values) -> str:
    """How the README writes the mean of ``values`` (one per seed) with its CI."""
    return _ci(*bootstrap_ci(np.asarray(values, dtype=float)))


def test_readings_quote_the_seed_means_of_the_table(rendered):
    """Recompute some of the quoted numbers from the rows, by hand, and find them in the text."""
    results, out, _ = rendered
    text = (out / "README.md").read_text(encoding="utf-8")
    names = {"rnn_tanh": "tanh RNN", "rnn_relu": "ReLU RNN", "lstm": "LSTM", "gru": "GRU"}

    decay = results["decay"]
    section = _section(text, "Gradient norm against lag, per cell, with fitted rates")
    for cell, rows in decay[decay["quantity"] == "log10_decay_rate"].groupby("cell"):
        assert f"{names[cell]} {_quoted(rows['value'])}" in section

    copy = results["copy"]
    section = _section(text, "Copy-memory: accuracy on the recalled symbols")
    names_tf = {**names, "transformer": "Transformer"}
    last = copy[copy["quantity"] == "final_accuracy"]
    for (T, arch), rows in last.groupby(["seq_len", "arch"]):
        assert f"T = {T}:" in section and f"{names_tf[arch]} {_quoted(rows['value'])}" in section

    training = results["training"]

    section = _section(text, "Training loss against the no-memory baseline")
    ev = training[training["quantity"] == "eval_loss"]
    last = ev[ev["iteration"] == ev["iteration"].max()]
    for (task, T), part in last.groupby(["task", "seq_len"]):
        cells = ", ".join(
            f"{names[c]} {_quoted(r['value'])}" for c, r in part.groupby("cell", sort=False)
        )
        assert f"{task} T = {T}:" in section
        for cell, r in part.groupby("cell"):
            assert f"{names[cell]} {_quoted(r['value'])}" in section, cells

    gates = results["gates"]
    section = _section(text, "Gates and the gradient at step 0 over training, per init")
    tau = gates[(gates["quantity"] == "forget_timescale") & (gates["iteration"] == 0)]
    for init, rows in tau.groupby("init"):
        med = np.log10(rows.groupby("seed")["value"].median())
        m, lo, hi = (10**v for v in bootstrap_ci(med))
        assert f"{init}: median timescale {_ci(m, lo, hi)} →" in section
