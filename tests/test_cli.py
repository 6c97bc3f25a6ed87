"""The command line: exit codes, messages, list/figures, and kill-and-resume of a real run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from gradlab._experiment import load_experiment, load_results, run_experiment
from gradlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
TOY = DATA / "toy.toml"
BAD = DATA / "bad"


@pytest.mark.parametrize("path", sorted(BAD.glob("*.toml")), ids=lambda p: p.stem)
def test_bad_file_exits_2_with_one_message_and_writes_nothing(path, tmp_path, capsys):
    results = tmp_path / "res"
    assert main(["run", str(path), "--results", str(results), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(f"gradlab: error: {path}")
    assert captured.err.count("gradlab: error:") == 1
    assert not results.exists()


def test_bad_file_messages_name_key_and_allowed_values(tmp_path, capsys):
    main(["run", str(BAD / "unknown_cell.toml"), "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert '[grid] cell: unknown value "lstmm"' in err
    assert 'allowed: "gru", "lstm", "rnn_relu", "rnn_tanh"' in err


def test_run_a_bare_name_and_missing_name(tmp_path, capsys):
    res = str(tmp_path / "res")
    assert main(["run", "toy", "--experiments", str(DATA), "--results", res, "--no-progress"]) == 0
    assert "toy [default]: 6 points, 0 cached, 6 run, 0 failed" in capsys.readouterr().err
    assert main(["run", "nope", "--experiments", str(DATA), "--results", res]) == 2
    assert "nope.toml: file not found (experiments in" in capsys.readouterr().err


def test_usage_errors_exit_2(capsys):
    assert main(["run", str(TOY), "--scale", "huge"]) == 2
    assert main([]) == 2
    assert main(["run", str(TOY), "--address", "x:1", "--results", "/nonexistent/r"]) == 1
    assert "--address is only used with --executor ray" in capsys.readouterr().err


def test_failing_points_exit_1_and_are_listed(tmp_path, capsys):
    exp = tmp_path / "fails.toml"
    exp.write_text(
        '[experiment]\nname = "fails"\nstudy = "toy"\nrecords = ["log10_decay", "noise"]\n'
        "[grid]\nfail = [false, true]\n"
    )
    assert main(["run", str(exp), "--results", str(tmp_path / "res"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "2 points, 0 cached, 1 run, 1 failed" in err
    assert "FAILED" in err and "RuntimeError: toy study asked to fail" in err


def test_list_shows_points_done_per_scale(tmp_path, capsys):
    exps = tmp_path / "exps"
    exps.mkdir()
    (exps / "toy.toml").write_text(TOY.read_text())
    args = ["list", "--experiments", str(exps), "--results", str(tmp_path / "res")]
    assert main(args) == 0
    assert "toy         toy    0/6" in capsys.readouterr().out
    run_experiment(exps / "toy.toml", scale="quick", results_dir=tmp_path / "res", progress=False)
    assert main(args) == 0
    assert "0/6" not in capsys.readouterr().out  # 2 of 6 done at default
    assert main([*args, "--scale", "quick"]) == 0
    assert "2/2" in capsys.readouterr().out
    (exps / "broken.toml").write_text((BAD / "unknown_cell.toml").read_text())
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert "broken" in out and "invalid" in out and "broken.toml" in err


@pytest.fixture
def fake_figures(monkeypatch):
    calls = []
    module = types.ModuleType("gradlab._figures")
    module.render_all = lambda results, out_dir, scale: calls.append((results, out_dir, scale))
    monkeypatch.setitem(sys.modules, "gradlab._figures", module)
    return calls


def test_figures_runs_what_is_missing_then_renders(tmp_path, fake_figures, capsys):
    exps = tmp_path / "exps"
    exps.mkdir()
    (exps / "toy.toml").write_text(TOY.read_text())
    res, out = tmp_path / "res", tmp_path / "figs"
    argv = ["figures", "--experiments", str(exps), "--results", str(res), "--out", str(out)]
    assert main([*argv, "--scale", "quick", "--no-progress"]) == 0
    ((results, out_dir, scale),) = fake_figures
    assert out_dir == out and scale == "quick" and list(results) == ["toy"]
    pd.testing.assert_frame_equal(
        results["toy"], load_results(exps / "toy.toml", scale="quick", results_dir=res)
    )
    assert "toy [quick]: 2 points" in capsys.readouterr().err


def test_figures_without_the_figures_module_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gradlab._figures", None)  # import fails
    assert main(["figures", "--experiments", str(DATA), "--results", str(tmp_path / "r")]) == 1
    assert "gradlab._figures is not available" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_kill_and_resume_gives_exactly_the_rows_of_an_uninterrupted_run(tmp_path, capsys):
    exps = tmp_path / "exps"
    exps.mkdir()
    exp = exps / "toy.toml"
    exp.write_text(
        textwrap.dedent(
            """\
            [experiment]
            name = "toy"
            study = "toy"
            records = ["log10_decay", "noise"]
            [grid]
            cell = ["rnn_tanh", "gru"]
            seed = [0, 1, 2, 3, 4]
            [fixed]
            sleep = 0.1
            """
        )
    )
    total = len(load_experiment(exp).points)
    res = tmp_path / "res"
    folder = res / "toy"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gradlab", "run", str(exp), "--results", str(res), "--no-progress"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    try:
        while len(list(folder.glob("*.parquet"))) < 3:
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no results appeared"
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = len(list(folder.glob("*.parquet")))
    assert 3 <= done < total
    # what a kill during a write leaves: a temp file of the dead process
    (folder / f".{load_experiment(exp).points[-1].key}.{proc.pid}.0bad.tmp").write_bytes(b"PAR1")

    argv = ["run", str(exp), "--results", str(res), "--no-progress"]
    assert main(argv) == 0
    assert f"{total} points, {done} cached, {total - done} run, 0 failed" in capsys.readouterr().err

    run_experiment(exp, results_dir=tmp_path / "ref", progress=False)
    resumed = load_results(exp, results_dir=res)
    pd.testing.assert_frame_equal(resumed, load_results(exp, results_dir=tmp_path / "ref"))
    assert not resumed.duplicated(["point", "quantity", "lag"]).any()
    assert len(resumed) == total * 2 * 4
    names = sorted(os.listdir(folder))
    assert names == sorted(f"{p.key}.parquet" for p in load_experiment(exp).points)  # no .tmp
    for name in names:
        pq.read_table(folder / name)  # none corrupt
