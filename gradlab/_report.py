"""``gradlab.report`` / ``gradlab report PATH``: the figures and a summary of a monitored run.

Reads a ``gradlab.Monitor(path=...)`` folder one part file at a time (each reduced at once to its
batch-mean ‖∂L/∂h_t‖₂ curves, so a long run never sits in memory whole), then writes to ``out``:

    heatmap_<module>_layer<k>.png/.svg   ‖∂L/∂h_t‖ for every (recorded iteration, step t)
    decay_<module>_layer<k>.png/.svg     ‖∂L/∂h_t‖ against t at a few iterations
    summary.png/.svg                     decay rate, memory length, first/last ratio over training
    summary.md                           the numbers: first, last, min and max of each summary
    curves.parquet, summary.parquet      the tables the figures were drawn from
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ._monitor import CURVE_KEYS, curves, part_files, summarise

__all__ = ["report"]


def _stem(key: tuple) -> str:
    module, call, layer, direction = key
    s = f"{module}_layer{int(layer)}".replace("/", "_").replace(".", "_")
    if int(direction) == 1:
        s += "_reverse"
    if int(call) > 0:
        s += f"_call{int(call)}"
    return s


def _fmt(x: float) -> str:
    if not np.isfinite(x):
        return "∞" if x > 0 else ("−∞" if x < 0 else "n/a")
    return f"{x:.3g}"


def report(
    path: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    iterations: int = 6,
    progress: bool = True,
    formats: tuple[str, ...] = ("png", "svg"),
) -> Path:
    """Figures and ``summary.md`` of the monitor folder ``path``, written to ``out``.

    Args:
        path: a folder written by ``gradlab.Monitor(path=...)`` (also while the run goes on).
        out: output folder (default ``<path>-report`` next to ``path``); created.
        iterations: how many recorded iterations the decay-curve figure shows (spread evenly).
        progress: a tqdm progress bar over the part files and the figures.
        formats: figure file formats (see ``gradlab.plot.save``).

    Returns:
        The output folder.

    Examples:
        >>> import os, tempfile, torch, gradlab
        >>> gru = torch.nn.GRU(1, 8, batch_first=True)
        >>> run = os.path.join(tempfile.mkdtemp(), "run")
        >>> with gradlab.Monitor(gru, every=1, path=run) as mon:
        ...     for _ in range(3):
        ...         gru(torch.randn(4, 20, 1))[0][:, -1].sum().backward()
        >>> out = gradlab.report(run, progress=False, formats=("png",))
        >>> (out / "summary.md").exists()
        True
    """
    from tqdm.auto import tqdm

    from . import plot

    path = Path(path)
    parts = part_files(path)
    if not path.is_dir():
        raise FileNotFoundError(f"report: {str(path)!r} is not a folder written by gradlab.Monitor")
    if not parts:
        raise ValueError(
            f"report: {str(path)!r} holds no part-*.parquet files; point it at the path= folder "
            f"of a gradlab.Monitor that has recorded at least one iteration"
        )
    out = Path(out) if out is not None else path.with_name(path.name + "-report")
    out.mkdir(parents=True, exist_ok=True)
    cols = ["iteration", "module", "call", "layer", "direction", "step", "batch_index",
            "quantity", "value"]  # fmt: skip
    pieces = []
    for p in tqdm(parts, desc="reading parts", unit="part", disable=not progress):
        pieces.append(curves(pd.read_parquet(p, columns=cols)))
    cur = pd.concat(pieces, ignore_index=True)
    if cur.empty:
        raise ValueError(f"report: {str(path)!r} holds no grad_norm rows to draw")
    summ = summarise(cur)
    cur.to_parquet(out / "curves.parquet", index=False)
    summ.to_parquet(out / "summary.parquet", index=False)

    import matplotlib.pyplot as plt

    keys = sorted(cur[CURVE_KEYS].drop_duplicates().itertuples(index=False, name=None))
    written = []
    bar = tqdm(total=2 * len(keys) + 1, desc="figures", unit="fig", disable=not progress)
    for key in keys:
        c = cur
        for k, v in zip(CURVE_KEYS, key, strict=True):
            c = c[c[k] == v]
        module, layer = key[0], int(key[2])
        title_run = f"run {path.name}: " + plot.monitor.run_label(module, layer, key[3], key[1])
        if c["iteration"].nunique() > 1 and (c["value"] > 0).any():
            ax = plot.training_grad_heatmap(
                c[["iteration", "step", "value"]],
                title=f"Gradient reaching each step during training\n{title_run}",
            )
            written += plot.save(ax, out / f"heatmap_{_stem(key)}", formats=formats)
            plt.close(ax.figure)
        bar.update()
        ax = plot.decay_over_training(
            c[["iteration", "step", "value"]], n=iterations,
            title=f"Gradient reaching each step, during training\n{title_run}",
        )  # fmt: skip
        written += plot.save(ax, out / f"decay_{_stem(key)}", formats=formats)
        plt.close(ax.figure)
        bar.update()
    fig = plot.summary_over_training(summ, seq_len=int(cur["step"].max()) + 1,
                                     title=f"Gradient decay over training: run {path.name}")
    written += plot.save(fig, out / "summary", formats=formats)
    plt.close(fig)
    bar.update()
    bar.close()
    (out / "summary.md").write_text(_markdown(path, cur, summ, written, out), encoding="utf-8")
    return out


_MD_QUANTITIES = [
    ("log10_grad_ratio", "log10 ‖∂L/∂h_0‖ / ‖∂L/∂h_{T−1}‖"),
    ("ln_decay_rate", "fitted decay rate (ln per step)"),
    ("memory_length", "memory length (steps to a 1000× drop)"),
    ("nonfinite_frac", "share of non-finite steps"),
]


def _markdown(path: Path, cur: pd.DataFrame, summ: pd.DataFrame, written: list[Path],
              out: Path) -> str:  # fmt: skip
    its = sorted(cur["iteration"].unique())
    lines = [
        f"# gradlab report: `{path.name}`",
        "",
        f"{len(its)} recorded iterations, {its[0]} to {its[-1]}; "
        f"sequence length T = {int(cur['step'].max()) + 1}.",
        "",
    ]
    for key, s in summ.groupby(CURVE_KEYS, sort=True):
        from .plot.monitor import run_label

        lines += [f"## {run_label(key[0], key[2], key[3], key[1])}", "",
                  "| quantity | first | last | min | max |", "|---|---|---|---|---|"]  # fmt: skip
        for q, label in _MD_QUANTITIES:
            r = s[s["quantity"] == q].sort_values("iteration")
            if r.empty:
                continue
            v = r["value"].to_numpy(float)
            fin = v[np.isfinite(v)]
            lo = float(fin.min()) if fin.size else math.nan
            hi = float(v.max()) if v.size else math.nan
            lines.append(f"| {label} | {_fmt(v[0])} (it. {int(r['iteration'].iloc[0])}) | "
                         f"{_fmt(v[-1])} (it. {int(r['iteration'].iloc[-1])}) | {_fmt(lo)} | "
                         f"{_fmt(hi)} |")  # fmt: skip
        lines.append("")
    lines += ["## Figures", ""]
    shown = [p for p in written if p.suffix == ".png"] or [p for p in written if p.suffix == ".svg"]
    lines += [f"![{p.stem}]({p.name})" for p in shown]
    lines.append("")
    return "\n".join(lines)
