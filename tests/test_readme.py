"""The README's Python examples run as written (the API tour must stay true)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_example_runs(i):
    namespace: dict = {}
    if i > 0:  # later blocks reuse the names (torch, gradlab, nn) of the first
        exec(compile("import torch, gradlab\nfrom torch import nn\n", "README", "exec"), namespace)
    exec(compile(BLOCKS[i], f"README block {i}", "exec"), namespace)


def test_readme_has_examples():
    assert len(BLOCKS) >= 4
