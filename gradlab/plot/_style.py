"""Shared look of every gradlab figure: fixed colours, readable labels, line styles.

One colour per cell kind, the same in every figure (seaborn "colorblind", i.e. Okabe-Ito-like):

    rnn_tanh  tanh RNN   blue        #0173b2
    rnn_relu  ReLU RNN   vermillion  #d55e00
    lstm      LSTM       green       #029e73
    gru       GRU        purple      #cc78bc
    transformer  Transformer  orange  #de8f05  (not a cell; drawn beside them)

Theory overlays are black dashed and labelled "theory: ...", references (y = 0, y = 1,
baselines) are black/grey dotted or dashed, measurements are coloured solid lines or markers.
Every artist that carries data gets a ``gid`` so tests (and users) can find it:
``"data"`` (a measured mean line), ``"band"`` (its seed band), ``"fit"`` (a least-squares fit),
``"theory"``, ``"reference"`` (zero lines, baselines, edge-of-chaos markers).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

# seaborn's "colorblind" palette, written out so the plot package does not need seaborn at import.
CB = [
    "#0173b2",  # 0 blue
    "#de8f05",  # 1 orange
    "#029e73",  # 2 green
    "#d55e00",  # 3 vermillion
    "#cc78bc",  # 4 reddish purple
    "#ca9161",  # 5 tan
    "#fbafe4",  # 6 pink
    "#949494",  # 7 grey
    "#ece133",  # 8 yellow
    "#56b4e9",  # 9 sky blue
]

CELL_ORDER: tuple[str, ...] = ("rnn_tanh", "rnn_relu", "lstm", "gru")
CELL_LABELS: dict[str, str] = {
    "rnn_tanh": "tanh RNN",
    "rnn_relu": "ReLU RNN",
    "lstm": "LSTM",
    "gru": "GRU",
    "transformer": "Transformer",
}
CELL_COLORS: dict[str, str] = {
    "rnn_tanh": CB[0],
    "rnn_relu": CB[3],
    "lstm": CB[2],
    "gru": CB[4],
    "transformer": CB[1],
}
_SPARE_CELL_COLORS = [CB[9], CB[5], CB[7], CB[6], CB[8]]

# Initialisations (names of gradlab.init's registry); fixed colours where an init is the hue.
INIT_ORDER: tuple[str, ...] = (
    "default", "orthogonal", "gaussian", "xavier_uniform", "xavier_normal",
    "kaiming", "irnn", "forget_bias", "chrono",
)  # fmt: skip
INIT_LABELS: dict[str, str] = {
    "default": "default (PyTorch)",
    "orthogonal": "orthogonal",
    "gaussian": "Gaussian",
    "xavier_uniform": "Xavier uniform",
    "xavier_normal": "Xavier normal",
    "kaiming": "Kaiming",
    "irnn": "IRNN (identity)",
    "forget_bias": "forget bias",
    "chrono": "chrono",
}
INIT_COLORS: dict[str, str] = {
    "default": CB[7],
    "orthogonal": CB[1],
    "gaussian": CB[9],
    "xavier_uniform": CB[5],
    "xavier_normal": CB[6],
    "kaiming": CB[0],
    "irnn": CB[3],
    "forget_bias": CB[2],
    "chrono": CB[4],
}

# Gates in PyTorch order; LSTM f and GRU z (the gates that keep memory) share a colour.
GATE_ORDER: tuple[str, ...] = ("i", "f", "g", "o", "r", "z", "n")
GATE_LABELS: dict[str, str] = {
    "i": "i (input)",
    "f": "f (forget)",
    "g": "g (candidate)",
    "o": "o (output)",
    "r": "r (reset)",
    "z": "z (update)",
    "n": "n (candidate)",
}
GATE_COLORS: dict[str, str] = {
    "i": CB[1],
    "f": CB[9],
    "g": CB[5],
    "o": "#4d4d4d",
    "r": CB[1],
    "z": CB[9],
    "n": CB[5],
}
_GATE_ALIASES = {
    "input": "i", "forget": "f", "cell": "g", "candidate": "g", "output": "o",
    "reset": "r", "update": "z", "new": "n",
}  # fmt: skip

LINESTYLES: tuple[Any, ...] = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))

THEORY = {"color": "black", "linestyle": "--", "linewidth": 1.4}
REFERENCE = {"color": "0.35", "linestyle": ":", "linewidth": 1.0}
BAND_ALPHA = 0.2
LINEWIDTH = 1.8
MINUS = "\N{MINUS SIGN}"

# Axis labels (mathtext for norms and derivatives).
LAG_LABEL = r"lag $k = T - t$ (steps)"
STEP_LABEL = r"step $t$"
SIGMA_W_LABEL = r"$\sigma_w$ (recurrent weight std $\times \sqrt{N}$)"
COLUMN_LABELS: dict[str, str] = {
    "cell": "cell",
    "init": "initialisation",
    "seq_len": r"sequence length $T$ (steps)",
    "gain": SIGMA_W_LABEL,
    "input_std": r"input std $\sigma_x$",
    "task": "task",
    "lag": LAG_LABEL,
    "step": STEP_LABEL,
    "clip": "gradient clipping",
    "seed": "seed",
}


def ordered(values: Iterable[Any], order: Sequence[Any] = ()) -> list[Any]:
    """Unique ``values``: those in ``order`` first (in that order), the rest sorted."""
    present = list(dict.fromkeys(values))
    known = [v for v in order if v in present]
    rest = [v for v in present if v not in order]
    try:
        rest = sorted(rest)
    except TypeError:
        rest = sorted(rest, key=str)
    return known + rest


def cells_in(values: Iterable[Any]) -> list[Any]:
    return ordered(values, CELL_ORDER)


def cell_label(cell: Any) -> str:
    return CELL_LABELS.get(cell, str(cell))


def cell_colors(cells: Sequence[Any]) -> dict[Any, str]:
    """Fixed colours for the four kinds; spare colours for unknown kinds, in sorted order."""
    spare = iter(_SPARE_CELL_COLORS * (1 + len(cells)))
    return {c: CELL_COLORS[c] if c in CELL_COLORS else next(spare) for c in cells}


def inits_in(values: Iterable[Any]) -> list[Any]:
    return ordered(values, INIT_ORDER)


def init_label(init: Any) -> str:
    return INIT_LABELS.get(init, str(init))


def init_colors(inits: Sequence[Any]) -> dict[Any, str]:
    spare = iter([CB[8], "#4d4d4d", *CB] * (1 + len(inits)))
    return {i: INIT_COLORS[i] if i in INIT_COLORS else next(spare) for i in inits}


def gate_key(gate: Any) -> Any:
    g = str(gate).lower()
    return _GATE_ALIASES.get(g, g)


def gate_label(gate: Any) -> str:
    return GATE_LABELS.get(gate_key(gate), str(gate))


def gate_color(gate: Any, fallback_index: int) -> str:
    return GATE_COLORS.get(gate_key(gate), CB[(fallback_index + 5) % len(CB)])


def linestyles(values: Sequence[Any]) -> dict[Any, Any]:
    return {v: LINESTYLES[i % len(LINESTYLES)] for i, v in enumerate(values)}


def column_label(col: str) -> str:
    return COLUMN_LABELS.get(col, col.replace("_", " "))


def tick_label(col: str, value: Any) -> str:
    """How one value of column ``col`` reads on a tick or in a title."""
    if col == "cell":
        return cell_label(value)
    if col == "init":
        return init_label(value)
    if isinstance(value, (float, np.floating)):
        return fmt_num(float(value), 3)
    return str(value)


def fmt_num(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits and a true minus sign."""
    if not np.isfinite(x):
        return str(x)
    s = f"{x:.{digits}g}" if (x == 0 or 1e-3 <= abs(x) < 1e4) else f"{x:.{digits - 1}e}"
    return s.replace("-", MINUS)


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize, layout="constrained")
        return fig, ax
    return ax.figure, ax


def new_figure(fig: Figure | None, figsize: tuple[float, float]) -> Figure:
    if fig is None:
        return plt.figure(figsize=figsize, layout="constrained")
    return fig


def grid(fig: Figure, nrows: int, ncols: int, **kw: Any) -> np.ndarray:
    """A 2-D array of Axes on ``fig`` (always 2-D, whatever nrows/ncols)."""
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return axes


def figure_legend(fig: Figure, handles: list[Any], **kw: Any) -> None:
    """A legend for the whole figure, to the right of the panels."""
    if not handles:
        return
    engine = fig.get_layout_engine()
    if engine is not None and type(engine).__name__ == "ConstrainedLayoutEngine":
        fig.legend(handles=handles, loc="outside right center", **kw)
    else:
        fig.legend(handles=handles, loc="upper right", **kw)


def line_handle(label: str, **kw: Any) -> Line2D:
    kw.setdefault("color", "black")
    kw.setdefault("linewidth", LINEWIDTH)
    return Line2D([], [], label=label, **kw)


def band_handle(label: str) -> Patch:
    return Patch(facecolor="0.5", alpha=0.35, edgecolor="none", label=label)


def band_text(band: str | None, n: int | str, *, geometric: bool = False,
              what: str = "seeds") -> str:  # fmt: skip
    """Legend text of a line with a band over ``n`` (a count, or a range such as "3–5")."""
    mean = "geometric mean" if geometric else "mean"
    if band == "minmax":
        return f"line: {mean}; band: min–max over {n} {what}"
    if band == "bootstrap":
        return f"line: {mean}; band: bootstrap 95% CI over {n} {what}"
    return f"line: {mean}; band: 95% CI over {n} {what}"


def title_case_task(task: Any) -> str:
    return str(task).replace("_", " ")
