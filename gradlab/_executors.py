"""Executors: compute study points in this process, a local spawn pool, or Ray tasks.

Every executor maps ``Task``s (study name + resolved params) to ``Outcome``s (the study's frame,
or its error and traceback) and yields them as they complete. Only the driver writes results, so
caching and atomic writes are the same whichever executor computed a point. A worker resolves the
study by name from ``gradlab.studies`` (importing the study's own module if it lives elsewhere).
"""

from __future__ import annotations

import importlib
import multiprocessing
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any

__all__ = ["EXECUTORS", "LocalExecutor", "Outcome", "RayExecutor", "Task", "compute_point", "get"]


@dataclass(frozen=True)
class Task:
    study: str
    params: dict[str, Any]
    module: str = ""  # the module that registers the study, if not gradlab.studies


@dataclass(frozen=True)
class Outcome:
    frame: Any = None  # what the study returned (checked by the driver)
    error: str | None = None
    traceback: str = ""


def _single_thread() -> None:
    """One BLAS/torch thread per worker: the parallelism is across points."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    torch = sys.modules.get("torch")
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _resolve_study(task: Task):
    from gradlab import studies

    if task.study not in studies.available() and task.module:
        importlib.import_module(task.module)
    return studies.get(task.study)


def compute_point(task: Task, worker: bool = False) -> Outcome:
    """Run one study point; never raises for an error of the study itself."""
    if worker:
        _single_thread()
    try:
        study = _resolve_study(task)
        if worker:
            _single_thread()  # the study module may have imported torch just now
        return Outcome(frame=study(task.params))
    except Exception as err:  # noqa: BLE001 - reported by the driver
        return Outcome(error=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())


def _init_worker() -> None:
    _single_thread()
    import gradlab.studies  # noqa: F401 - register the studies once per worker


class LocalExecutor:
    """jobs <= 1: in this process, in order; jobs > 1: a ProcessPoolExecutor with spawn."""

    def __init__(self, jobs: int | None = 1):
        self.jobs = max(1, jobs or 1)

    def map(self, tasks: Sequence[Task]) -> Iterator[tuple[int, Outcome]]:
        if self.jobs == 1 or len(tasks) <= 1:
            for i, task in enumerate(tasks):
                yield i, compute_point(task)
            return
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(
            max_workers=min(self.jobs, len(tasks)), mp_context=ctx, initializer=_init_worker
        )
        try:
            futures: dict[Future, int] = {
                pool.submit(compute_point, task, True): i for i, task in enumerate(tasks)
            }
            pending = set(futures)
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in sorted(done, key=futures.__getitem__):
                    try:
                        outcome = fut.result()
                    except Exception as err:  # noqa: BLE001 - a worker died (BrokenProcessPool)
                        outcome = Outcome(error=f"worker failed: {type(err).__name__}: {err}")
                    yield futures[fut], outcome
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


class RayExecutor:
    """One Ray task per point (num_cpus=1).

    Uses a running Ray session if there is one (call ``ray.init(..., runtime_env=...)`` first to
    ship gradlab to a cluster that does not have it installed), else ``ray.init(address=address)``
    (a local cluster when address is None), shut down at the end. jobs caps the tasks in flight
    (None: all at once, the cluster schedules them).
    """

    def __init__(self, jobs: int | None = None, address: str | None = None):
        self.jobs = jobs if jobs and jobs > 0 else None
        self.address = address

    def map(self, tasks: Sequence[Task]) -> Iterator[tuple[int, Outcome]]:
        try:
            import ray
        except ImportError as err:  # pragma: no cover - ray is a dev dependency
            raise RuntimeError("the ray executor needs ray: pip install 'gradlab[ray]'") from err
        started = not ray.is_initialized()
        if started:
            kwargs: dict[str, Any] = {}
            if self.address is None:  # a local cluster of our own
                kwargs["include_dashboard"] = False
                if self.jobs:
                    kwargs["num_cpus"] = self.jobs
            ray.init(address=self.address, **kwargs)
        remote = ray.remote(num_cpus=1)(compute_point)
        cap = self.jobs or len(tasks)
        queue = list(enumerate(tasks))[::-1]
        pending: dict[Any, int] = {}
        try:
            while queue or pending:
                while queue and len(pending) < cap:
                    i, task = queue.pop()
                    pending[remote.remote(task, True)] = i
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    i = pending.pop(ref)
                    try:
                        outcome = ray.get(ref)
                    except Exception as err:  # noqa: BLE001 - worker or node died
                        outcome = Outcome(error=f"ray task failed: {type(err).__name__}: {err}")
                    yield i, outcome
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            if started:
                ray.shutdown()


EXECUTORS = ("local", "ray")


def get(name: str, jobs: int | None = None, address: str | None = None):
    """An executor by name: "local" or "ray"."""
    if name == "local":
        if address is not None:
            raise ValueError("--address is only used with --executor ray")
        return LocalExecutor(jobs)
    if name == "ray":
        return RayExecutor(jobs, address)
    raise ValueError(f"unknown executor {name!r}; allowed: {', '.join(EXECUTORS)}")
