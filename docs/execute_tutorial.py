"""Execute the tutorial: jupytext's percent-format source -> a notebook with its outputs.

Used by ``make docs`` (the site renders the executed notebook without running it again) and by
``tests/test_tutorial.py`` (so the tutorial cannot rot). Run from the repository root::

    python docs/execute_tutorial.py [OUT.ipynb] [--timeout SECONDS]

The kernel runs in the repository root with ``MPLBACKEND=Agg``; a cell that raises, or that
runs past ``--timeout`` seconds, fails the run (nbclient's ``CellExecutionError`` or
``CellTimeoutError``) and nothing is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "docs" / "tutorial" / "tutorial.py"
DEFAULT_OUT = ROOT / "build" / "docs" / "tutorial.ipynb"
KERNEL = "gradlab-tutorial"


def execute(source: Path = SOURCE, out: Path | None = DEFAULT_OUT, timeout: int = 600):
    """Read ``source`` with jupytext, execute it with nbclient, write it to ``out``.

    Returns (the executed notebook, seconds it took). ``timeout`` bounds each cell.
    """
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    nb = jupytext.read(source)
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # the kernel imports the gradlab of this checkout, wherever it is installed from
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    # the kernel is this interpreter (not whatever "python3" kernel the user has installed)
    kernels = ROOT / "build" / "docs" / "jupyter"
    spec = kernels / "kernels" / KERNEL
    spec.mkdir(parents=True, exist_ok=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "gradlab tutorial", "language": "python"}))
    os.environ["JUPYTER_PATH"] = os.pathsep.join(
        [str(kernels), *filter(None, [os.environ.get("JUPYTER_PATH")])])
    client = NotebookClient(nb, timeout=timeout, kernel_name=KERNEL,
                            resources={"metadata": {"path": str(ROOT)}})
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        nbformat.write(nb, tmp)
        tmp.replace(out)
    return nb, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default=str(DEFAULT_OUT))
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args(argv)
    _, seconds = execute(out=Path(args.out), timeout=args.timeout)
    print(f"executed {SOURCE.relative_to(ROOT)} in {seconds:.0f} s -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
