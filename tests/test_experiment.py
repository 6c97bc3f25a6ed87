"""Experiment files, point keys, the runner's cache and atomic writes, local executors."""

from __future__ import annotations

import dataclasses
import os
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gradlab import _executors, studies
from gradlab._experiment import (
    ExperimentError,
    _clean_temps,
    _write_atomic,
    load_experiment,
    load_results,
    point_key,
    run_experiment,
    run_experiments,
)
from gradlab.studies import Param

DATA = Path(__file__).parent / "data"
TOY = DATA / "toy.toml"
BAD = DATA / "bad"


def write_exp(folder: Path, name: str, body: str, records='["log10_decay", "noise"]') -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    head = f'[experiment]\nname = "{name}"\nstudy = "toy"\nrecords = {records}\n'
    path.write_text(head + textwrap.dedent(body))
    return path


def run(path, results, **kw):
    kw.setdefault("progress", False)
    return run_experiment(path, results_dir=results, **kw)


# --- grid and keys ---------------------------------------------------------------------------


def test_grid_expansion_fills_defaults_in_file_order():
    exp = load_experiment(TOY)
    assert (exp.name, exp.study, exp.scale) == ("toy", "toy", "default")
    assert exp.records == ("log10_decay", "noise")
    combos = [(p.params["cell"], p.params["seed"]) for p in exp.points]
    assert combos == [(c, s) for c in ("rnn_tanh", "lstm") for s in (0, 1, 2)]
    for p in exp.points:
        assert list(p.params) == list(studies.get("toy").params)  # schema order, all set
        assert p.params["n"] == 3 and p.params["gain"] == 0.9 and p.params["fail"] is False
        assert p.experiment == "toy" and p.study == "toy"
    assert len({p.key for p in exp.points}) == 6


def test_scales_override_and_scale_is_not_in_the_key():
    default, quick, full = (load_experiment(TOY, s) for s in ("default", "quick", "full"))
    assert [p.params["seed"] for p in quick.points] == [0, 0]
    assert {p.key for p in quick.points} <= {p.key for p in default.points}
    assert len(full.points) == 8 and {p.params["n"] for p in full.points} == {8}
    with pytest.raises(ValueError, match="unknown scale"):
        load_experiment(TOY, "huge")


def test_scale_moves_a_key_between_grid_and_fixed(tmp_path):
    path = write_exp(
        tmp_path,
        "moves",
        """
        [grid]
        seed = [0, 1]
        n = [2, 3]
        [scale.quick]
        fixed = { n = 2 }
        grid = { gain = [0.5, 0.7] }
        """,
    )
    quick = load_experiment(path, "quick")
    assert [(p.params["seed"], p.params["gain"]) for p in quick.points] == [
        (0, 0.5),
        (0, 0.7),
        (1, 0.5),
        (1, 0.7),
    ]
    assert {p.params["n"] for p in quick.points} == {2}


def test_key_is_pinned():
    # canonical JSON of {"params", "study", "version"}: changing the format breaks every cache
    params = {"cell": "rnn_tanh", "seed": 0, "n": 3, "gain": 0.9, "sleep": 0.0, "fail": False}
    assert point_key("toy", params) == "bd4b831902c2d8a0"
    assert load_experiment(TOY).points[0].key == "bd4b831902c2d8a0"


def test_key_changes_with_each_param_and_with_the_study_version():
    base = dict(load_experiment(TOY).points[0].params)
    key = point_key("toy", base)
    changed = {"cell": "gru", "seed": 7, "n": 4, "gain": 0.91, "sleep": 0.5, "fail": True}
    for name, value in changed.items():
        assert point_key("toy", {**base, name: value}) != key, name
    bumped = dataclasses.replace(studies.get("toy"), version=2)
    assert point_key(bumped, base) != key


def test_key_is_canonical_int_for_float_and_explicit_defaults(tmp_path):
    explicit = write_exp(
        tmp_path,
        "explicit",
        """
        [grid]
        cell = ["rnn_tanh", "lstm"]
        seed = [0, 1, 2]
        [fixed]
        n = 3
        gain = 0.9
        sleep = 0
        fail = false
        """,
    )
    assert [p.key for p in load_experiment(explicit).points] == [
        p.key for p in load_experiment(TOY).points
    ]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    gain=st.floats(allow_nan=False, allow_infinity=False),
    order=st.permutations(["cell", "seed", "n", "gain", "sleep", "fail"]),
)
def test_key_ignores_dict_order_and_separates_values(seed, gain, order):
    params = {"cell": "lstm", "seed": seed, "n": 2, "gain": gain, "sleep": 0.0, "fail": False}
    shuffled = {k: params[k] for k in order}
    key = point_key("toy", params)
    assert point_key("toy", shuffled) == key and len(key) == 16
    assert point_key("toy", {**params, "seed": seed + 1}) != key


# --- validation ------------------------------------------------------------------------------

BAD_CASES = {
    # file: fragments the one message must contain (file name, key, allowed values or fix)
    "unknown_key": ["unknown_key.toml", "[grid] sed", "did you mean seed", "cell, seed, n"],
    "unknown_section": ["unknown_section.toml", "[grids]", "allowed sections", "[grid]"],
    "wrong_type": ["wrong_type.toml", "[fixed] n", "expected int", 'string "3"'],
    "unknown_study": ["unknown_study.toml", "study", '"toyy"', 'registered studies: ', '"toy"', '"gradient_decay"'],
    "unknown_cell": [
        "unknown_cell.toml",
        "[grid] cell",
        '"lstmm"',
        '"gru", "lstm", "rnn_relu", "rnn_tanh"',
    ],
    "empty_grid": ["empty_grid.toml", "[grid]", "empty", "seed = [0]"],
    "name_mismatch": ["name_mismatch.toml", "name", 'set name = "name_mismatch"'],
    "grid_and_fixed": ["grid_and_fixed.toml", "seed", "both grid and fixed"],
    "not_toml": ["not_toml.toml", "not valid TOML", "line 3"],
}


@pytest.mark.parametrize("name", sorted(BAD_CASES))
def test_each_validation_error_names_file_key_and_fix(name):
    with pytest.raises(ExperimentError) as info:
        load_experiment(BAD / f"{name}.toml")
    message = str(info.value)
    for fragment in BAD_CASES[name]:
        assert fragment in message, (fragment, message)


def test_all_problems_are_collected():
    with pytest.raises(ExperimentError) as info:
        load_experiment(BAD / "many_problems.toml")
    err = info.value
    assert len(err.problems) == 5
    text = str(err)
    for fragment in ("author", '"rnn_tan"', "seed = [0]", "[fixed] gain", "[scale.huge]"):
        assert fragment in text


def test_missing_required_parameter_and_bad_records(tmp_path, needs_param):
    path = tmp_path / "req.toml"
    path.write_text(
        '[experiment]\nname = "req"\nstudy = "needs_param"\nrecords = "x"\n[grid]\nseed = [0]\n'
    )
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    text = str(info.value)
    assert "[fixed] width: required parameter (int)" in text
    assert "records: expected a non-empty list of strings" in text


def test_missing_file_lists_the_experiments():
    with pytest.raises(ExperimentError, match="file not found.*toy"):
        load_experiment(DATA / "nope.toml")


def test_param_types():
    assert Param(float).coerce(1) == 1.0 and isinstance(Param(float).coerce(1), float)
    with pytest.raises(ValueError, match="expected int, got bool"):
        Param(int).coerce(True)
    with pytest.raises(ValueError, match="expected bool"):
        Param(bool).coerce(1)
    assert Param(list[float]).coerce([1, 2.5]) == [1.0, 2.5]
    with pytest.raises(ValueError, match=r"in list\[int\]: expected int, got string"):
        Param(list[int]).coerce([1, "2"])
    with pytest.raises(ValueError, match='unknown value "c"'):
        Param(list[str], allowed=("a", "b")).coerce(["a", "c"])
    with pytest.raises(TypeError, match="unsupported parameter type"):
        Param(dict)


def test_allowed_values_are_fetched_lazily():
    calls = []

    def names():
        calls.append(1)
        return {"xavier", "orthogonal"}

    param = Param(str, allowed=names)
    assert not calls
    assert param.coerce("xavier") == "xavier" and calls
    with pytest.raises(ValueError, match='allowed: "orthogonal", "xavier"'):
        param.coerce("he")


def test_registering_twice_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        studies.study("toy", params={})(lambda point: pd.DataFrame())


# --- runner ----------------------------------------------------------------------------------


@pytest.fixture
def needs_param():
    studies.study("needs_param", params={"width": Param(int), "seed": 0})(
        lambda point: pd.DataFrame({"quantity": ["x"], "value": [1.0]})
    )
    yield
    del studies._REGISTRY["needs_param"]


@pytest.fixture
def bad_study():
    """A study whose output is broken in the way its `mode` parameter says."""

    def bad(point):
        mode = point["mode"]
        if mode == "ok":
            return pd.DataFrame({"quantity": ["x", "x"], "step": [0, 1], "value": [1.0, 2.0]})
        if mode == "not_frame":
            return [1, 2]
        if mode == "no_value":
            return pd.DataFrame({"quantity": ["x"]})
        if mode == "list_cell":
            return pd.DataFrame({"quantity": ["x"], "value": [1.0], "h": [[1, 2]]})
        if mode == "undeclared":
            return pd.DataFrame({"quantity": ["y"], "value": [1.0]})
        if mode == "clash":
            return pd.DataFrame({"quantity": ["x"], "value": [1.0], "seed": [99]})
        raise AssertionError(mode)

    modes = ["ok", "not_frame", "no_value", "list_cell", "undeclared", "clash"]
    studies.study("bad", params={"mode": Param(str, allowed=modes), "seed": 0})(bad)
    yield modes
    del studies._REGISTRY["bad"]


def test_runner_writes_tidy_rows_with_point_and_param_columns(tmp_path):
    summary = run(TOY, tmp_path / "res")
    assert (summary.total, summary.cached, summary.run, summary.failed) == (6, 0, 6, ())
    rows = load_results(TOY, results_dir=tmp_path / "res")
    assert list(rows.columns) == [
        "experiment",
        "point",
        "cell",
        "seed",
        "n",
        "gain",
        "sleep",
        "fail",
        "quantity",
        "lag",
        "value",
    ]
    assert len(rows) == 6 * 2 * 3 and set(rows["experiment"]) == {"toy"}
    keys = [p.key for p in load_experiment(TOY).points]
    assert list(dict.fromkeys(rows["point"])) == keys  # grid order
    assert sorted(os.listdir(tmp_path / "res" / "toy")) == sorted(f"{k}.parquet" for k in keys)


def test_second_run_is_cached_and_a_new_grid_value_runs_only_new_points(tmp_path):
    res = tmp_path / "res"
    assert run(TOY, res).run == 6
    again = run(TOY, res)
    assert (again.cached, again.run) == (6, 0)
    wider = write_exp(
        tmp_path / "exps",
        "toy",
        """
        [grid]
        cell = ["rnn_tanh", "lstm"]
        seed = [0, 1, 2, 3]
        [fixed]
        n = 3
        """,
    )
    more = run(wider, res)
    assert (more.total, more.cached, more.run) == (8, 6, 2)
    quick = run(TOY, res, scale="quick")
    assert (quick.total, quick.cached, quick.run) == (2, 2, 0)  # shared with default


def test_load_results_has_exactly_the_points_of_the_scale(tmp_path):
    res = tmp_path / "res"
    with pytest.raises(FileNotFoundError, match="6 of 6 points.*gradlab run"):
        load_results(TOY, results_dir=res)
    run(TOY, res, scale="quick")
    assert load_results(TOY, results_dir=res, missing="skip")["seed"].unique().tolist() == [0]
    run(TOY, res)
    quick = load_results(TOY, scale="quick", results_dir=res)
    assert set(quick["seed"]) == {0} and quick["point"].nunique() == 2
    default = load_results("toy", results_dir=res, experiments_dir=DATA)  # bare name
    pd.testing.assert_frame_equal(default[default["seed"] == 0].reset_index(drop=True), quick)


def test_same_config_gives_identical_rows(tmp_path):
    run(TOY, tmp_path / "a")
    run(TOY, tmp_path / "b")
    a = load_results(TOY, results_dir=tmp_path / "a")
    pd.testing.assert_frame_equal(a, load_results(TOY, results_dir=tmp_path / "b"))
    point = load_experiment(TOY).points[2].params
    pd.testing.assert_frame_equal(studies.get("toy")(point), studies.get("toy")(point))


def test_a_failing_point_is_reported_and_the_others_are_kept(tmp_path):
    path = write_exp(tmp_path, "fails", "[grid]\nseed = [0, 1]\nfail = [false, true]\n")
    res = tmp_path / "res"
    summary = run(path, res)
    assert (summary.total, summary.run, len(summary.failed), summary.ok) == (4, 2, 2, False)
    failure = summary.failed[0]
    assert failure.params["fail"] is True
    assert "RuntimeError: toy study asked to fail" in failure.error
    assert "Traceback" in failure.traceback
    files = sorted(os.listdir(res / "fails"))
    assert len(files) == 2 and all(f.endswith(".parquet") for f in files)  # nothing half-written
    assert len(run(path, res).failed) == 2  # retried, still failing; the others cached


def test_bad_study_output_fails_that_point_with_a_clear_message(tmp_path, bad_study):
    path = tmp_path / "badout.toml"
    path.write_text(
        '[experiment]\nname = "badout"\nstudy = "bad"\nrecords = ["x"]\n'
        f"[grid]\nmode = {bad_study!r}\n".replace("'", '"')
    )
    summary = run(path, tmp_path / "res")
    errors = {f.params["mode"]: f.error for f in summary.failed}
    assert summary.run == 1 and set(errors) == set(bad_study) - {"ok"}
    assert "returned list; expected a pandas DataFrame" in errors["not_frame"]
    assert "no value column" in errors["no_value"]
    assert "list-like values in column 'h'" in errors["list_cell"]
    assert "quantities ['y'] not in [experiment] records" in errors["undeclared"]
    assert "column 'seed' whose values differ from the parameter" in errors["clash"]
    rows = load_results(path, results_dir=tmp_path / "res", missing="skip")
    assert rows["step"].tolist() == [0, 1] and set(rows["mode"]) == {"ok"}


def test_atomic_write_leaves_nothing_when_interrupted(tmp_path, monkeypatch):
    frame = pd.DataFrame({"quantity": ["x"], "value": [1.0]})

    def broken(self, fh, **kw):
        fh.write(b"PAR1 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", broken)
    with pytest.raises(KeyboardInterrupt):
        _write_atomic(frame, tmp_path / "k.parquet")
    assert os.listdir(tmp_path) == []


def test_leftover_temp_files_of_dead_writers_are_cleaned(tmp_path):
    dead = tmp_path / ".abc.999999999.ff.tmp"  # no such pid
    live = tmp_path / f".abc.{os.getppid()}.ff.tmp"  # a live writer's: kept
    dead.write_bytes(b"junk")
    live.write_bytes(b"junk")
    assert _clean_temps(tmp_path) == 1
    assert not dead.exists() and live.exists()


def test_local_pool_of_two_spawned_workers_equals_in_process(tmp_path):
    run(TOY, tmp_path / "one", jobs=1)
    summary = run(TOY, tmp_path / "two", jobs=2)
    assert summary.run == 6
    pd.testing.assert_frame_equal(
        load_results(TOY, results_dir=tmp_path / "one"),
        load_results(TOY, results_dir=tmp_path / "two"),
    )


def test_several_experiments_share_one_pool_and_each_gets_its_summary(tmp_path):
    """run_experiments: one pool for all files; rows equal one-by-one runs; failures stay local."""
    fails = write_exp(tmp_path / "exp", "fails", "[grid]\nseed = [0, 1]\nfail = [false, true]\n")
    summaries = run_experiments([TOY, fails], results_dir=tmp_path / "all", jobs=2,
                                progress=False)  # fmt: skip
    assert [s.experiment for s in summaries] == ["toy", "fails"]
    assert [(s.run, len(s.failed)) for s in summaries] == [(6, 0), (2, 2)]
    assert all("asked to fail" in f.error for f in summaries[1].failed)
    run(TOY, tmp_path / "one", jobs=1)
    pd.testing.assert_frame_equal(
        load_results(TOY, results_dir=tmp_path / "all"),
        load_results(TOY, results_dir=tmp_path / "one"),
    )
    again = run_experiments([TOY, fails], results_dir=tmp_path / "all", progress=False)
    assert [(s.cached, s.run) for s in again] == [(6, 0), (2, 0)]  # only the failing retried


def test_worker_imports_the_module_that_registers_a_study(tmp_path, monkeypatch):
    (tmp_path / "plugin_study_mod.py").write_text(
        "import pandas as pd\nfrom gradlab.studies import study\n"
        "@study('plugin_study', params={'seed': 0})\n"
        "def plugin(point):\n    return pd.DataFrame({'quantity': ['q'], 'value': [1.0]})\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        task = _executors.Task("plugin_study", {"seed": 0}, module="plugin_study_mod")
        outcome = _executors.compute_point(task)
        assert outcome.error is None and outcome.frame["value"].tolist() == [1.0]
    finally:
        studies._REGISTRY.pop("plugin_study", None)
        sys.modules.pop("plugin_study_mod", None)
    unknown = _executors.compute_point(_executors.Task("no_such_study", {}))
    assert "unknown study 'no_such_study'" in unknown.error
