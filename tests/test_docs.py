"""The documentation site builds with ``mkdocs build --strict`` (warnings are errors).

The tutorial page is rendered from the notebook that the session fixture ``executed_tutorial``
executed (tests/conftest.py), the same one tests/test_tutorial.py checks: in a full test run the
tutorial executes once and this build adds only the mkdocs time. Run alone, this test executes
the tutorial first. Skipped, with the reason, when mkdocs is not installed.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_docs_build_strict(executed_tutorial, tmp_path):
    pytest.importorskip("mkdocs", reason="the docs need the docs extra: pip install -e '.[docs]'")
    pytest.importorskip("mkdocstrings", reason="the docs need the docs extra")
    _, notebook, _ = executed_tutorial
    env = {**os.environ, "GRADLAB_DOCS_TUTORIAL": str(notebook), "NO_MKDOCS_2_WARNING": "1"}
    site = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "WARNING" not in proc.stderr

    for page in ["index.html", "tutorial/index.html", "figures/index.html", "theory/index.html",
                 *(f"howto/{p}/index.html" for p in ("record", "monitor", "sweeps", "extend")),
                 *(f"api/{m}/index.html" for m in ("gradlab", "models", "theory", "init", "tasks",
                                                   "train", "plot", "data"))]:
        assert (site / page).is_file(), page
    tutorial = (site / "tutorial" / "index.html").read_text()
    assert tutorial.count("data:image/png") >= 17, "the tutorial page lost its figures"
    # every figure the gallery shows is in the site
    gallery = (ROOT / "figures" / "README.md").read_text()
    for name in set(re.findall(r"\]\(([\w/]+\.png)\)", gallery)):
        assert (site / "figures" / name).is_file(), name
    # the API reference documents every exported name
    import gradlab
    api = (site / "api" / "gradlab" / "index.html").read_text()
    for name in gradlab.__all__:
        if name not in ("models", "theory"):
            assert f'id="gradlab.{name}"' in api, name


HOWTO = sorted((ROOT / "docs" / "howto").glob("*.md"))


@pytest.mark.parametrize("page", HOWTO, ids=[p.stem for p in HOWTO])
def test_howto_examples_run(page, tmp_path, monkeypatch):
    """A page's Python blocks run in order in one namespace, as a reader pastes them."""
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)
    if not blocks:
        pytest.skip(f"{page.name} has no Python example")
    monkeypatch.chdir(tmp_path)  # examples that write runs/ write here
    import gradlab.init

    # the extend page registers an initialisation: into a copy of the registry, for this test only
    monkeypatch.setattr(gradlab.init, "INITS", dict(gradlab.init.INITS))
    namespace: dict = {}
    for i, block in enumerate(blocks):
        if "# not run by the tests" not in block:  # needs the reader's own objects
            exec(compile(block, f"{page.name} block {i}", "exec"), namespace)
