"""TensorBoard output of ``gradlab.Monitor`` (needs the ``tensorboard`` package:
``pip install 'gradlab[tensorboard]'``).

Per recurrent module, layer and direction, at each recorded iteration (the TensorBoard step):

    gradlab/<module>/layer<k>[/reverse]/log10_grad_ratio   log10 ‖∂L/∂h_0‖ / ‖∂L/∂h_{T-1}‖
    gradlab/<module>/layer<k>[/reverse]/ln_decay_rate      fitted slope of ln ‖∂L/∂h‖ per step
    gradlab/<module>/layer<k>[/reverse]/log10_decay_rate   the same in log10
    gradlab/<module>/layer<k>[/reverse]/fit_r2             R² of that fit
    gradlab/<module>/layer<k>[/reverse]/memory_length      steps to a 1000× drop (inf: never)
    gradlab/<module>/layer<k>[/reverse]/nonfinite_frac     share of steps with a NaN/Inf norm

and, every ``image_every`` recorded iterations, two images per layer:

    gradlab/<module>/layer<k>[/reverse]/heatmap        iteration × step heatmap so far
    gradlab/<module>/layer<k>[/reverse]/decay_curves   ‖∂L/∂h_t‖ at a few iterations so far
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from .._monitor import CURVE_KEYS, scalars, tag_prefix

__all__ = ["summary_writer", "write_scalars", "write_images", "curve_images", "figure_to_array"]

EXTRA_MESSAGE = (
    "gradlab: TensorBoard output needs the 'tensorboard' package; install it with "
    "pip install 'gradlab[tensorboard]' (or pip install tensorboard)"
)


def summary_writer(target: Any) -> tuple[Any, bool]:
    """A ``SummaryWriter`` for ``target`` (a log dir, or a writer used as is), and whether
    gradlab owns it (and so closes it)."""
    if isinstance(target, (str, os.PathLike)):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # torch raises ImportError when tensorboard is missing
            raise ImportError(EXTRA_MESSAGE) from err
        return SummaryWriter(log_dir=os.fspath(target)), True
    if not (hasattr(target, "add_scalar") and hasattr(target, "add_image")):
        raise TypeError(
            f"Monitor: tensorboard= must be a log dir or a SummaryWriter (with add_scalar and "
            f"add_image), got {type(target).__name__}"
        )
    return target, False


def write_scalars(writer: Any, summary: pd.DataFrame, iteration: int) -> None:
    """One scalar per summary row, at step ``iteration`` (inf is written as inf)."""
    for tag, value in scalars(summary).items():
        writer.add_scalar(tag, value, global_step=iteration)


def figure_to_array(fig: Any) -> np.ndarray:
    """A matplotlib figure rendered to an (H, W, 3) uint8 array; the figure is closed."""
    import matplotlib.pyplot as plt

    try:
        fig.canvas.draw()
        rgba = np.asarray(fig.canvas.buffer_rgba())
        return np.ascontiguousarray(rgba[..., :3])
    finally:
        plt.close(fig)


def curve_images(curves: pd.DataFrame) -> dict[str, np.ndarray]:
    """``{tag: (H, W, 3) uint8}``: the heatmap and the decay curves of every layer so far."""
    import matplotlib

    from ..plot import decay_over_training, training_grad_heatmap

    out = {}
    with matplotlib.rc_context({"figure.dpi": 80}):
        for key, c in curves.groupby(CURVE_KEYS, sort=True):
            prefix = tag_prefix(*key)
            name = dict(zip(CURVE_KEYS, key, strict=True))
            filt = {"module": name["module"], "layer": int(name["layer"])}
            c = c.drop(columns=["call", "direction"])
            if c["iteration"].nunique() > 1:
                ok = np.isfinite(c["value"].to_numpy(float)) & (c["value"].to_numpy(float) > 0)
                if ok.any():
                    ax = training_grad_heatmap(c, **filt)
                    out[f"{prefix}/heatmap"] = figure_to_array(ax.figure)
            ax = decay_over_training(c, **filt)
            out[f"{prefix}/decay_curves"] = figure_to_array(ax.figure)
    return out


def write_images(writer: Any, curves: pd.DataFrame, iteration: int) -> None:
    """:func:`curve_images` to ``writer`` at step ``iteration`` (HWC uint8 images)."""
    for tag, img in curve_images(curves).items():
        writer.add_image(tag, img, global_step=iteration, dataformats="HWC")
