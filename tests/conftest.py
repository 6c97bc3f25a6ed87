import os

os.environ.setdefault("MPLBACKEND", "Agg")
# Idle OpenMP threads sleep instead of spinning (must be set before torch loads its runtime): on a
# busy 2-core machine spinning threads made small torch operations up to 1000x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))]


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import sys
    if "matplotlib.pyplot" in sys.modules:
        sys.modules["matplotlib.pyplot"].close("all")


@pytest.fixture(scope="session")
def executed_tutorial(tmp_path_factory):
    """The tutorial executed once per test session (tests/test_tutorial.py, tests/test_docs.py):
    (the notebook, its path, seconds it took)."""
    pytest.importorskip("jupytext", reason="the tutorial needs the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("nbclient", reason="the tutorial needs the docs extra: pip install -e '.[docs]'")
    import importlib.util
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "docs" / "execute_tutorial.py"
    spec = importlib.util.spec_from_file_location("execute_tutorial", script)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path_factory.mktemp("tutorial") / "tutorial.ipynb"
    nb, seconds = mod.execute(out=out, timeout=300)
    return nb, out, seconds
