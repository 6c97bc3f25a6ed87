"""Lightning callback: ``gradlab.Monitor`` on a ``LightningModule``, logged through the trainer's
loggers (needs the ``lightning`` package: ``pip install 'gradlab[lightning]'``).

Usage::

    from gradlab.integrations.lightning import GradientFlow

    trainer = lightning.Trainer(callbacks=[GradientFlow(every=50)], logger=TensorBoardLogger(...))
    trainer.fit(module, loader)

Iteration i is the i-th training batch of the fit (0-based): batches 0, every, 2·every, ... are
recorded with ``gradlab.record`` on the whole ``LightningModule`` (so every ``nn.RNN``/``nn.LSTM``/
``nn.GRU`` inside it), from ``on_train_batch_start`` to ``on_train_batch_end``. The scalars of
``gradlab.integrations.tensorboard`` go to every logger (``log_metrics`` at step i), the images to
loggers whose ``experiment`` has ``add_image`` (TensorBoard).
"""

from __future__ import annotations

import os
from typing import Any

import pandas as pd

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as err:  # pragma: no cover - exercised only without lightning
    raise ImportError(
        "gradlab.integrations.lightning needs the 'lightning' package; install it with "
        "pip install 'gradlab[lightning]' (or pip install lightning)"
    ) from err

from .._monitor import Monitor, scalars

__all__ = ["GradientFlow"]


class GradientFlow(Callback):
    """Monitor the recurrent modules of the ``LightningModule`` during ``fit``.

    Args:
        every: record training batches 0, every, 2·every, ...
        path: a folder for the rows as Parquet parts (see ``gradlab.Monitor``); default: in
            memory (``callback.monitor.frame()`` after the fit).
        image_every: images every ``image_every`` recorded batches (and at the end of the fit).
        quantities, per_sample, **record_kwargs: passed to ``gradlab.record``.

    After the fit, ``callback.monitor`` is the ``gradlab.Monitor`` (``frame()``, ``summary()``,
    ``curves()``).
    """

    def __init__(
        self,
        every: int = 50,
        *,
        path: str | os.PathLike | None = None,
        image_every: int = 10,
        **record_kwargs: Any,
    ):
        super().__init__()
        self.every = every
        self.path = path
        self.image_every = image_every
        self.record_kwargs = record_kwargs
        self.monitor: Monitor | None = None
        self._imaged = -1

    # -- lifecycle ------------------------------------------------------------------------------
    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        mon = Monitor(pl_module, every=self.every, path=self.path, image_every=self.image_every,
                      **self.record_kwargs)  # fmt: skip
        mon._auto = False  # this callback says where iterations start and end
        mon.__enter__()
        self.monitor = mon

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any,
                             batch_idx: int) -> None:  # fmt: skip
        if self.monitor is not None and self.monitor._active:
            self.monitor._begin()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:  # fmt: skip
        mon = self.monitor
        if mon is None or not mon._active:
            return
        it = mon._rec_iteration
        summary = mon._end()
        if summary is None:
            return
        self._log(trainer, summary, it)
        if (mon._n_recorded - 1) % self.image_every == 0:
            self._images(trainer, it)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._finish(trainer)

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        if self.monitor is not None and self.monitor._active:
            self.monitor.__exit__(type(exception), exception, exception.__traceback__)

    def teardown(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if self.monitor is not None and self.monitor._active:
            self.monitor.__exit__(None, None, None)

    # -- output ---------------------------------------------------------------------------------
    def _finish(self, trainer: Any) -> None:
        mon = self.monitor
        if mon is None or not mon._active:
            return
        it = mon._rec_iteration
        summary = mon._end()  # a batch that ended without on_train_batch_end (rare)
        if summary is not None:
            self._log(trainer, summary, it)
        last = mon._last_harvested
        if last >= 0 and self._imaged != last:
            self._images(trainer, last)
        mon.__exit__(None, None, None)

    def _log(self, trainer: Any, summary: pd.DataFrame, iteration: int) -> None:
        metrics = scalars(summary)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=iteration)

    def _images(self, trainer: Any, iteration: int) -> None:
        sinks = [lg.experiment for lg in trainer.loggers
                 if hasattr(getattr(lg, "experiment", None), "add_image")]  # fmt: skip
        if not sinks or self.monitor is None:
            return
        from .tensorboard import curve_images

        for tag, img in curve_images(self.monitor.curves()).items():
            for w in sinks:
                w.add_image(tag, img, global_step=iteration, dataformats="HWC")
        self._imaged = iteration
