"""The tutorial (docs/tutorial/tutorial.py) runs top to bottom, so it cannot rot.

It is executed once per session by the ``executed_tutorial`` fixture (tests/conftest.py:
jupytext -> notebook -> nbclient, 300 s per cell); a cell that raises fails the run, and the
notebook's own ``assert``s check its BPTT terms against autograd. tests/test_docs.py builds
the site from the same executed notebook. Its run time is printed, not asserted.
"""

import re
from pathlib import Path

TUTORIAL = Path(__file__).resolve().parents[1] / "docs" / "tutorial" / "tutorial.py"


def test_tutorial_source_is_percent_format_without_outputs():
    text = TUTORIAL.read_text()
    assert "format_name: percent" in text
    assert text.count("# %%") >= 20
    # a .py source cannot hold outputs; nothing else (no .ipynb) is committed next to it
    assert sorted(p.name for p in TUTORIAL.parent.iterdir() if p.suffix == ".ipynb") == []


def test_tutorial_executes(executed_tutorial):
    nb, _, seconds = executed_tutorial
    print(f"tutorial executed in {seconds:.0f} s")
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), "a code cell did not run"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    images = [o for c in code for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 17, f"{len(images)} figures; the tutorial draws 17"


def test_tutorial_follows_the_lecture():
    headings = re.findall(r"^# ## (.+)$", TUTORIAL.read_text(), flags=re.M)
    order = ["recurrence", "structures", "Backpropagation through time", "Vanishing",
             "Exploding", "LSTM and GRU", "Transformer", "Your own model"]
    positions = [next(i for i, h in enumerate(headings) if word.lower() in h.lower())
                 for word in order]
    assert positions == sorted(positions), headings
