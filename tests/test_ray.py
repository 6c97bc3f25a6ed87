"""The Ray executor on a real local cluster gives the rows of the local executor."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'gradlab[ray]')")

from gradlab._experiment import load_results, run_experiment  # noqa: E402

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def test_ray_rows_equal_local_rows_and_failures_match(tmp_path, cluster):
    exp = tmp_path / "mixed.toml"
    exp.write_text(
        (DATA / "toy.toml")
        .read_text()
        .replace('name = "toy"', 'name = "mixed"')
        .replace("seed = [0, 1, 2]", "seed = [0, 1, 2]\nfail = [false, true]")
    )
    local = run_experiment(exp, results_dir=tmp_path / "local", progress=False)
    remote = run_experiment(exp, results_dir=tmp_path / "ray", executor="ray", progress=False)
    assert (remote.total, remote.run, len(remote.failed)) == (12, 6, 6)
    assert sorted(f.key for f in remote.failed) == sorted(f.key for f in local.failed)
    assert all("toy study asked to fail" in f.error for f in remote.failed)
    assert ray.is_initialized()  # a session it did not start is left running
    pd.testing.assert_frame_equal(
        load_results(exp, results_dir=tmp_path / "ray", missing="skip"),
        load_results(exp, results_dir=tmp_path / "local", missing="skip"),
    )
    assert all(n.endswith(".parquet") for n in os.listdir(tmp_path / "ray" / "mixed"))
    again = run_experiment(
        exp, results_dir=tmp_path / "ray", executor="ray", jobs=1, progress=False
    )
    assert (again.cached, again.run, len(again.failed)) == (6, 0, 6)  # failures retried
