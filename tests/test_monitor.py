"""gradlab.Monitor: exact rows against a standalone record, which iterations are recorded, a clean
model after exceptions, Parquet parts that survive SIGKILL, summaries against gradlab.theory,
gradlab.report and its plots."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

import gradlab
from gradlab._monitor import curves, summarise
from gradlab.cli import main

ROOT = Path(__file__).resolve().parents[1]


class Net(nn.Module):
    """A recurrent layer and a read-out: the shape of a user's model."""

    def __init__(self, cell=nn.LSTM, I=3, H=5, O=2, **kw):
        super().__init__()
        self.rnn = cell(I, H, batch_first=True, **kw)
        self.head = nn.Linear(H * (2 if kw.get("bidirectional") else 1), O)

    def forward(self, x):
        out, _ = self.rnn(x)  # (B, T, H)
        return self.head(out[:, -1])  # (B, O)


def _batch(B=4, T=7, I=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, I, generator=g), torch.randn(B, 2, generator=g)


def _step(model, opt, x, y):
    loss = (model(x) - y).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()


def _clean(model):
    for m in model.modules():
        assert "forward" not in m.__dict__, m
        assert not m._forward_hooks and not m._forward_pre_hooks, m
        assert not m._backward_hooks


@pytest.mark.parametrize("cell,kw", [(nn.LSTM, {}), (nn.GRU, {"num_layers": 2}),
                                     (nn.RNN, {"bidirectional": True})])  # fmt: skip
def test_frozen_model_rows_equal_standalone_record(cell, kw):
    torch.manual_seed(0)
    model = Net(cell, **kw)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    x, y = _batch()
    with gradlab.record(model, per_sample=True) as rec:
        (model(x) - y).pow(2).mean().backward()
    want = rec.frame()
    with gradlab.Monitor(model, every=3, per_sample=True) as mon:
        for _ in range(7):
            _step(model, opt, x, y)
    got = mon.frame()
    assert sorted(got["iteration"].unique()) == [0, 3, 6]
    for it in (0, 3, 6):
        rows = got[got["iteration"] == it].drop(columns="iteration").reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, want, check_exact=True)
    _clean(model)


def test_model_that_is_itself_a_recurrent_module():
    """A pre-hook comes too late for the model's own forward: a wrapper takes its place."""
    torch.manual_seed(0)
    lstm = nn.LSTM(3, 4, batch_first=True, num_layers=2)
    x = torch.randn(2, 6, 3)
    with gradlab.record(lstm) as rec:
        lstm(x)[0].pow(2).sum().backward()
    want = rec.frame()
    with gradlab.Monitor(lstm, every=2) as mon:
        for _ in range(5):
            lstm(x)[0].pow(2).sum().backward()
            with torch.no_grad():
                lstm(x)
    got = mon.frame()
    assert sorted(got["iteration"].unique()) == [0, 2, 4] and mon.iteration == 5
    for it in (0, 2, 4):
        rows = got[got["iteration"] == it].drop(columns="iteration").reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, want, check_exact=True)
    _clean(lstm)
    with pytest.raises(RuntimeError, match="boom"):
        with gradlab.Monitor(lstm, every=1):
            lstm(x)
            raise RuntimeError("boom")
    _clean(lstm)


def test_recorded_iterations_and_eval_passes_do_not_count():
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    x, y = _batch()
    with gradlab.Monitor(model, every=4) as mon:
        for i in range(10):
            _step(model, opt, x, y)
            with torch.no_grad():  # an evaluation pass after every step
                model(x)
            if i == 7:  # iteration 8, recorded, with a no-grad pass before its backward
                out = model(x)
                with torch.no_grad():
                    model(x)
                (out - y).pow(2).mean().backward()
                opt.zero_grad()
    assert mon.iteration == 11  # 10 steps + the extra grad-enabled forward at i == 7
    f = mon.frame()
    assert sorted(f["iteration"].unique()) == [0, 4, 8]
    # one call per recorded iteration: the no-grad passes after a backward are not recorded
    assert set(f.loc[f["iteration"] != 8, "call"]) == {0}
    # a no-grad pass between a recorded forward and its backward adds no gradient rows
    it8 = f[f["iteration"] == 8]
    assert set(it8["call"]) == {0} and (it8["quantity"] == "grad_norm").any()
    assert sorted(mon.summary()["iteration"].unique()) == [0, 4, 8]
    assert {"iteration", *gradlab._record.FRAME_COLUMNS} == set(f.columns)
    _clean(model)


@pytest.mark.parametrize("where", ["forward", "between", "after_backward", "backward"])
def test_exception_leaves_model_clean(where):
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    x, y = _batch()
    with pytest.raises(RuntimeError, match="boom"):
        with gradlab.Monitor(model, every=2) as mon:
            for i in range(5):
                if where == "forward" and i == 2:  # raised inside the model's forward
                    model.head.register_forward_hook(_boom)
                out = model(x)
                if where == "between" and i == 2:  # a recorded iteration, before backward
                    raise RuntimeError("boom")
                if where == "backward" and i == 3:  # a plain iteration
                    raise RuntimeError("boom")
                (out - y).pow(2).mean().backward()
                if where == "after_backward" and i == 2:  # recorded, its backward finished
                    raise RuntimeError("boom")
                opt.step()
    model.head._forward_hooks.clear()
    _clean(model)
    # a recorded iteration that broke is dropped; finished ones are kept
    want = [0, 2] if where in ("backward", "after_backward") else [0]
    assert sorted(mon.frame()["iteration"].unique()) == want
    with gradlab.record(model) as rec:  # the model still records normally
        (model(x) - y).pow(2).mean().backward()
    assert (rec.frame()["quantity"] == "grad_norm").any()


def test_nonfinite_gradient_is_data_or_error_on_request():
    """By default a NaN gradient is recorded as it is (one warning) and training goes on; with
    on_nonfinite="raise" the FloatingPointError from inside the backward reaches the loop, the
    broken iteration is dropped, and the model is clean either way."""
    model = Net(nn.GRU)
    x, y = _batch()
    with pytest.warns(RuntimeWarning, match="non-finite grad_norm"):
        with gradlab.Monitor(model, every=1) as mon:
            model(x).sum().backward()
            (model(x).sum() * torch.tensor(float("nan"))).backward()
    _clean(model)
    df = mon.frame()
    assert sorted(df["iteration"].unique()) == [0, 1]
    assert df[df.iteration == 1].value.isna().all() and df[df.iteration == 0].value.notna().all()
    with pytest.raises(FloatingPointError, match="non-finite grad_norm"):
        with gradlab.Monitor(model, every=1, on_nonfinite="raise") as mon:
            model(x).sum().backward()
            (model(x).sum() * torch.tensor(float("nan"))).backward()
    _clean(model)
    assert sorted(mon.frame()["iteration"].unique()) == [0]


def _boom(*_):
    raise RuntimeError("boom")


def test_bad_arguments_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="every must be a positive integer"):
        gradlab.Monitor(Net(), every=0)
    with pytest.raises(ValueError, match="unknown quantities"):  # record's check, at enter
        with gradlab.Monitor(Net(), quantities=("nope",)):
            pass
    with pytest.raises(ValueError, match="contains no nn.RNN"):
        with gradlab.Monitor(nn.Linear(2, 2)):
            pass
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "x").write_text("")
    with pytest.raises(FileExistsError, match="new folder per run"):
        with gradlab.Monitor(Net(), path=tmp_path / "run"):
            pass


def test_record_kwargs_pass_through():
    model = Net(nn.GRU)
    x, y = _batch()
    with gradlab.Monitor(model, every=1, quantities=("grad_norm", "jac_norm")) as mon:
        (model(x) - y).pow(2).mean().backward()
    assert set(mon.frame()["quantity"]) == {"grad_norm", "jac_norm_spectral", "jac_norm_frobenius"}
    with pytest.raises(TypeError, match="not_an_option"):
        with gradlab.Monitor(model, not_an_option=1):
            pass


def test_path_streams_parts_and_keeps_only_summaries(tmp_path):
    torch.manual_seed(1)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    x, y = _batch()
    with gradlab.Monitor(model, every=2, path=tmp_path / "run") as mon:
        for i in range(5):
            _step(model, opt, x, y)
            if i == 2:  # readable mid-run: iterations 0 and 2 are harvested at the next forward
                assert sorted(pd.read_parquet(tmp_path / "run")["iteration"].unique()) == [0]
    assert mon._rows == []  # rows are not kept in memory with path=
    parts = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert parts == ["part-0000000000.parquet", "part-0000000002.parquet",
                     "part-0000000004.parquet"]  # fmt: skip
    f = gradlab.Monitor.read(tmp_path / "run")
    pd.testing.assert_frame_equal(f, pd.read_parquet(tmp_path / "run").reset_index(drop=True),
                                  check_dtype=False)  # fmt: skip
    pd.testing.assert_frame_equal(summarise(curves(f)), mon.summary())


def test_summaries_of_a_geometric_curve():
    """‖δ at lag k‖ = r^k: slope log10 r, memory length ceil(ln 1e-3 / ln r), ratio (T-1) log10 r;
    the reverse direction's lag is the step itself."""
    T, r = 40, 0.8
    rows = []
    for d in (0, 1):
        steps = np.arange(T)
        lag = T - 1 - steps if d == 0 else steps
        v = r**lag
        if d == 1:
            v = v.copy()
            v[5] = np.nan
        rows.append(pd.DataFrame({"iteration": 3, "module": "rnn", "call": 0, "layer": 0,
                                  "direction": d, "step": steps, "gate": "", "batch_index": -1,
                                  "quantity": "grad_norm", "value": v}))  # fmt: skip
    s = summarise(curves(pd.concat(rows, ignore_index=True)))
    q = s.set_index(["direction", "quantity"])["value"]
    for d in (0, 1):
        assert q[(d, "log10_decay_rate")] == pytest.approx(math.log10(r), abs=1e-12)
        assert q[(d, "ln_decay_rate")] == pytest.approx(math.log(r), abs=1e-12)
        assert q[(d, "memory_length")] == math.ceil(math.log(1e-3) / math.log(r))
        assert q[(d, "log10_grad_ratio")] == pytest.approx((T - 1) * math.log10(r), abs=1e-12)
    assert q[(0, "nonfinite_frac")] == 0.0
    assert q[(1, "nonfinite_frac")] == pytest.approx(1 / T)


_KILLED = """
import sys, time, torch
from torch import nn
sys.path.insert(0, {root!r})
import gradlab

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = nn.RNN(2, 8, batch_first=True)
    def forward(self, x):
        return self.rnn(x)[0][:, -1].sum()

model = Net()
x = torch.randn(4, 20, 2)
with gradlab.Monitor(model, every=1, path={path!r}) as mon:
    i = 0
    while True:
        model(x).backward()
        i += 1
        if i >= 3:
            print("ready", flush=True)
"""


def test_sigkill_leaves_readable_parquet(tmp_path):
    path = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED.format(root=str(ROOT), path=str(path))],
        stdout=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)  # let it write more parts, then kill it mid-run
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    f = gradlab.Monitor.read(path)
    its = sorted(f["iteration"].unique())
    assert len(its) >= 2 and its == list(range(len(its)))
    assert len(pd.read_parquet(path)) == len(f)
    assert (f.groupby("iteration").size() == f.groupby("iteration").size().iloc[0]).all()


# ---------------------------------------------------------------------------------------------
# gradlab.report and its plots


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("mon") / "run"
    torch.manual_seed(0)
    model = Net(nn.LSTM, I=1, H=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-2)
    x, y = _batch(B=8, T=30, I=1)
    with gradlab.Monitor(model, every=2, path=path) as mon:
        for _ in range(11):
            _step(model, opt, x, y)
    return path, mon


@pytest.fixture(scope="module")
def report_out(run_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rep") / "r"
    assert main(["report", str(run_dir[0]), "--out", str(out), "--iterations", "3",
                 "--formats", "png", "--no-progress"]) == 0  # fmt: skip
    return out


def test_report_writes_figures_and_summary(run_dir, report_out):
    _, mon = run_dir
    names = sorted(p.name for p in report_out.iterdir())
    for stem in ("heatmap_rnn_layer0", "decay_rnn_layer0", "summary"):
        assert f"{stem}.png" in names and f"{stem}.svg" not in names
    pd.testing.assert_frame_equal(pd.read_parquet(report_out / "summary.parquet"), mon.summary())
    md = (report_out / "summary.md").read_text()
    s = mon.summary()
    last = s[(s["iteration"] == 10) & (s["quantity"] == "ln_decay_rate")]["value"].item()
    assert "6 recorded iterations, 0 to 10" in md
    assert f"{last:.3g} (it. 10)" in md
    assert "![heatmap_rnn_layer0](heatmap_rnn_layer0.png)" in md


def test_report_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere"), "--no-progress"]) == 1
    assert "not a folder written by gradlab.Monitor" in capsys.readouterr().err
    with pytest.raises(ValueError, match="holds no part-"):
        gradlab.report(tmp_path, progress=False)


def test_decay_over_training_artists(run_dir):
    from gradlab.plot import decay_over_training

    cur = run_dir[1].curves()
    ax = decay_over_training(cur, n=4, module="rnn", layer=0)
    lines = [ln for ln in ax.get_lines() if ln.get_gid() == "data"]
    assert [ln.get_label() for ln in lines] == [f"iteration {i}" for i in (0, 4, 6, 10)]
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "step $t$"
    assert ax.figure.axes[-1].get_ylabel() == "training iteration"  # the colour bar
    colors = {tuple(ln.get_color()) for ln in lines}
    assert len(colors) == 4
    with pytest.raises(ValueError, match="iterations \\[3\\] not in the table"):
        decay_over_training(cur, iterations=[3])


def test_summary_over_training_artists():
    from gradlab.plot import summary_over_training

    rows = []
    for layer in (0, 1):
        for it in (0, 5, 10):
            for q, v in (("ln_decay_rate", -0.1 * (layer + 1)), ("log10_grad_ratio", -2.0),
                         ("memory_length", math.inf if it == 10 else 20.0)):  # fmt: skip
                rows.append(dict(iteration=it, module="rnn", call=0, layer=layer, direction=0,
                                 quantity=q, value=v))  # fmt: skip
    fig = summary_over_training(pd.DataFrame(rows), seq_len=30)
    axes = fig.axes
    assert len(axes) == 3
    assert axes[-1].get_xlabel() == "training iteration"
    assert "memory length" in axes[1].get_ylabel()
    for ax in axes:
        assert len([ln for ln in ax.get_lines() if ln.get_gid() == "data"]) == 2
    tops = [ln for ln in axes[1].get_lines() if ln.get_gid() == "reference"]
    assert len(tops) == 3  # the T line, and one triangle per layer at iteration 10, y = T
    tri = [ln for ln in tops if ln.get_marker() == "^"]
    assert all(ln.get_xdata()[0] == 10 and ln.get_ydata()[0] == 30 for ln in tri)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["module rnn, layer 0", "module rnn, layer 1", "sequence length $T = 30$",
                      "memory longer than the sequence"]  # fmt: skip


def test_import_gradlab_is_lazy():
    code = ("import sys, gradlab; bad = [m for m in sys.modules if m.split('.')[0] in "
            "('lightning', 'pytorch_lightning', 'tensorboard', 'tensorboardX') or "
            "m == 'torch.utils.tensorboard']; print(bad)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, check=True)  # fmt: skip
    assert out.stdout.strip() == "[]"


def test_example_monitor_digits_smoke(tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("monitor_digits",
                                                  ROOT / "examples" / "monitor_digits.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (res,) = mod.main(["--tiny", "--cells", "lstm", "--runs", str(tmp_path / "runs"),
                       "--out", str(tmp_path / "out")])  # fmt: skip
    assert res["cell"] == "lstm" and 0.0 <= res["accuracy"] <= 1.0
    assert sorted(gradlab.Monitor.read(tmp_path / "runs" / "lstm")["iteration"].unique()) == [
        0, 2, 4]
    assert (tmp_path / "out" / "lstm" / "summary.md").exists()
    assert (tmp_path / "out" / "lstm" / "decay_rnn_layer0.png").exists()


class PackedNet(nn.Module):
    """A classifier on a variable-length batch: last true state of each sample."""

    def __init__(self):
        super().__init__()
        self.rnn = nn.GRU(3, 5, batch_first=True)
        self.head = nn.Linear(5, 2)

    def forward(self, packed):
        _, h = self.rnn(packed)
        return self.head(h[-1])


def test_packed_input_and_compiled_model_as_in_record():
    """Monitor records what record records: a PackedSequence per true step, and a compiled
    model through its eager modules (same rows as a standalone record of the eager model)."""
    torch.manual_seed(0)
    model = PackedNet()
    lengths = torch.tensor([7, 2, 5, 4])
    x = nn.utils.rnn.pack_padded_sequence(torch.randn(4, 7, 3), lengths, batch_first=True,
                                          enforce_sorted=False)
    with gradlab.record(model, per_sample=True) as rec:
        model(x).sum().backward()
    want = rec.frame()
    compiled = torch.compile(model, backend="eager")
    compiled(x).sum().backward()  # compiled before monitoring
    with gradlab.Monitor(compiled, every=2, per_sample=True) as mon:
        for _ in range(3):
            compiled(x).sum().backward()
    got = mon.frame()
    assert sorted(got["iteration"].unique()) == [0, 2]
    for it in (0, 2):
        rows = got[got["iteration"] == it].drop(columns="iteration").reset_index(drop=True)
        pd.testing.assert_frame_equal(rows, want, check_exact=False, rtol=1e-6)
    per = got[(got["iteration"] == 0) & (got["batch_index"] >= 0)]
    assert per.groupby("batch_index")["step"].max().tolist() == (lengths - 1).tolist()
    _clean(model)
