"""Experiment files: TOML schema and validation, grid expansion, point keys, atomic result cache.

An experiment file names a registered study and the parameter values to sweep::

    [experiment]
    name = "decay"                   # must match the file stem
    study = "gradient_decay"         # a name registered in gradlab.studies
    description = "Decay of ||dL/dh_{T-k}|| with lag k per cell at default init"
    records = ["log10_grad_norm"]    # quantities the study produces (checked against its rows)

    [grid]                           # each value a list; the points are the cartesian product
    cell = ["rnn_tanh", "lstm", "gru"]
    seed = [0, 1, 2]

    [fixed]                          # one value per parameter, shared by every point
    hidden_size = 64

    [scale.quick]                    # overrides for one scale: quick, default or full
    grid = { seed = [0] }            # a grid key here replaces (or moves a fixed key into) the grid
    fixed = { seq_len = 20 }         # a fixed key here replaces (or moves a grid key out of) it

Every parameter the study declares and the file does not set takes the study's default.

A point's key is a short sha256 of its *resolved* configuration (study name, study version and
every parameter value, defaults filled in) as canonical JSON; the scale is not part of it, so a
point shared by two scales is computed once. Each point's rows are stored in
``<results>/<experiment>/<key>.parquet``, written atomically (temp file in the same folder,
fsync, ``os.replace``), so a run killed at any moment resumes with nothing lost or duplicated.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import itertools
import json
import os
import secrets
import sys
import time
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from gradlab import studies as _studies
from gradlab.studies import _kind, toml_repr

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "SCALES",
    "Experiment",
    "ExperimentError",
    "Failure",
    "Point",
    "Summary",
    "load_experiment",
    "load_results",
    "point_key",
    "resolve_path",
    "run_experiment",
    "run_experiments",
]

SCALES = ("quick", "default", "full")
_SECTIONS = ("experiment", "grid", "fixed", "scale")
_EXPERIMENT_KEYS = ("name", "study", "description", "records")
_RESERVED_COLUMNS = ("experiment", "point")


class ExperimentError(Exception):
    """A malformed experiment file; the message names the file, each key and how to fix it."""

    def __init__(self, path: str | os.PathLike[str], problems: Iterable[str]):
        self.path = Path(path)
        self.problems = list(dict.fromkeys(problems))  # unique, in order
        super().__init__(str(self))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return f"{self.path}: {self.problems[0]}"
        lines = "\n".join(f"  - {p}" for p in self.problems)
        return f"{self.path}: {len(self.problems)} problems in experiment file:\n{lines}"


@dataclass(frozen=True)
class Point:
    """One resolved configuration of a study: every parameter set, keyed by its hash."""

    experiment: str
    study: str
    params: dict[str, Any] = field(hash=False)
    key: str


@dataclass(frozen=True)
class Experiment:
    """A validated experiment file, expanded at one scale."""

    name: str
    study: str
    description: str
    records: tuple[str, ...]
    points: tuple[Point, ...]
    scale: str
    path: Path
    skipped: tuple[tuple[dict[str, Any], str], ...] = ()  # (params, reason): not applicable


def point_key(study: str | _studies.Study, params: Mapping[str, Any]) -> str:
    """sha256 (16 hex digits) of the canonical JSON of study name, version and params.

    params must be resolved (defaults filled, values coerced by the study's schema), so that
    writing a default explicitly, or 1 for 1.0, gives the same key.
    """
    st = _studies.get(study) if isinstance(study, str) else study
    payload = {"study": st.name, "version": st.version, "params": dict(params)}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_path(
    experiment: str | os.PathLike[str], experiments_dir: str | os.PathLike[str] = "experiments"
) -> Path:
    """A path as given, or a bare name resolved to ``<experiments_dir>/<name>.toml``."""
    text = os.fspath(experiment)
    path = Path(text)
    if path.suffix == ".toml" or os.sep in text or "/" in text or path.exists():
        return path
    return Path(experiments_dir) / f"{text}.toml"


# --- validation ------------------------------------------------------------------------------


def _hint(word: str, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"did you mean {close[0]}? " if close else ""


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        folder = path.parent
        found = sorted(p.stem for p in folder.glob("*.toml")) if folder.is_dir() else []
        where = (
            f"experiments in {folder}: {', '.join(found)}" if found else f"no *.toml in {folder}"
        )
        raise ExperimentError(path, [f"file not found ({where})"]) from None
    except OSError as err:
        raise ExperimentError(path, [f"cannot read file: {err.strerror}"]) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ExperimentError(path, [f"not valid TOML: {err}"]) from None


class _Checker:
    """Collects every problem of one file instead of stopping at the first."""

    def __init__(self, path: Path, raw: dict[str, Any]):
        self.path = path
        self.raw = raw
        self.problems: list[str] = []
        self.study: _studies.Study | None = None

    def add(self, message: str) -> None:
        self.problems.append(message)

    def table(self, where: str, value: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        self.add(f"{where}: expected a table, got {_kind(value)} {toml_repr(value)}")
        return {}

    def header(self) -> tuple[str, str, str, tuple[str, ...]]:
        for key in self.raw:
            if key not in _SECTIONS:
                self.add(
                    f"unknown section [{key}]; {_hint(key, _SECTIONS)}allowed sections: "
                    "[experiment], [grid], [fixed], [scale.quick], [scale.default], [scale.full]"
                )
        if "experiment" not in self.raw:
            self.add("[experiment] section is missing; add [experiment] with name, study, records")
        head = self.table("[experiment]", self.raw.get("experiment", {}))
        for key in head:
            if key not in _EXPERIMENT_KEYS:
                self.add(
                    f"[experiment] {key}: unknown key; {_hint(key, _EXPERIMENT_KEYS)}"
                    f"allowed keys: {', '.join(_EXPERIMENT_KEYS)}"
                )

        name = head.get("name")
        if name is None:
            self.add(f'[experiment] name: missing; add name = "{self.path.stem}"')
        elif not isinstance(name, str):
            self.add(f"[experiment] name: expected string, got {_kind(name)} {toml_repr(name)}")
        elif name != self.path.stem:
            self.add(
                f'[experiment] name: "{name}" does not match the file name {self.path.name}; '
                f'set name = "{self.path.stem}" or rename the file to {name}.toml'
            )
        registered = ", ".join(toml_repr(s) for s in _studies.available())
        study = head.get("study")
        if study is None:
            self.add(f"[experiment] study: missing; registered studies: {registered}")
        elif not isinstance(study, str):
            self.add(f"[experiment] study: expected string, got {_kind(study)} {toml_repr(study)}")
        elif study not in _studies.available():
            self.add(
                f"[experiment] study: unknown study {toml_repr(study)}; "
                f"{_hint(study, _studies.available())}registered studies: {registered}"
            )
        else:
            self.study = _studies.get(study)
        description = head.get("description", "")
        if not isinstance(description, str):
            self.add(
                f"[experiment] description: expected string, got {_kind(description)} "
                f"{toml_repr(description)}"
            )
            description = ""
        records = head.get("records")
        if records is None:
            self.add(
                "[experiment] records: missing; list the quantities the study writes, "
                'e.g. records = ["log10_grad_norm"]'
            )
            records = []
        elif (
            not isinstance(records, list)
            or not records
            or not all(isinstance(r, str) for r in records)
        ):
            self.add(
                f"[experiment] records: expected a non-empty list of strings, got "
                f"{toml_repr(records)}"
            )
            records = []
        return (
            name if isinstance(name, str) else self.path.stem,
            study if isinstance(study, str) else "",
            description,
            tuple(records),
        )

    def params(self, where: str, table: dict[str, Any], *, grid: bool) -> dict[str, Any]:
        """Coerced values of one [grid] or [fixed] table (bad keys dropped, reported)."""
        st = self.study
        out: dict[str, Any] = {}
        for key, value in table.items():
            if st is None:  # unknown study: keys cannot be checked
                continue
            if key not in st.params:
                names = ", ".join(st.params)
                self.add(
                    f"{where} {key}: not a parameter of study {toml_repr(st.name)}; "
                    f"{_hint(key, st.params)}parameters: {names}"
                )
                continue
            param = st.params[key]
            if grid:
                if not isinstance(value, list):
                    self.add(
                        f"{where} {key}: expected a list of {param.type_name} values, got "
                        f"{_kind(value)} {toml_repr(value)}; write {key} = [{toml_repr(value)}]"
                        " or move it to [fixed]"
                    )
                    continue
                if not value:
                    self.add(
                        f"{where} {key}: empty list gives no points; give at least one value "
                        "or remove the key"
                    )
                    continue
                values = []
                for item in value:
                    try:
                        values.append(param.coerce(item))
                    except ValueError as err:
                        self.add(f"{where} {key}: {err}")
                seen = [json.dumps(v, sort_keys=True) for v in values]
                dups = sorted({s for s in seen if seen.count(s) > 1})
                if dups:
                    self.add(f"{where} {key}: duplicate values {', '.join(dups)}; list each once")
                elif len(values) == len(value):
                    out[key] = values
            else:
                try:
                    out[key] = param.coerce(value)
                except ValueError as err:
                    sweep = isinstance(value, list) and typing.get_origin(param.type) is not list
                    hint = "; to sweep it, move it to [grid]" if sweep else ""
                    self.add(f"{where} {key}: {err}{hint}")
        return out

    def overlap(self, where: str, grid: dict[str, Any], fixed: dict[str, Any]) -> None:
        for key in grid:
            if key in fixed:
                self.add(
                    f"{where} {key}: set in both grid and fixed; keep it in one of them "
                    "(a list in grid to sweep it, a single value in fixed)"
                )


def _validate(path: Path, raw: dict[str, Any]) -> tuple[_Checker, tuple, dict[str, tuple]]:
    ck = _Checker(path, raw)
    header = ck.header()
    grid_raw = ck.table("[grid]", raw.get("grid", {}))
    fixed_raw = ck.table("[fixed]", raw.get("fixed", {}))
    ck.overlap("[grid]/[fixed]", grid_raw, fixed_raw)
    grid = ck.params("[grid]", grid_raw, grid=True)
    fixed = ck.params("[fixed]", fixed_raw, grid=False)

    scales_raw = ck.table("[scale]", raw.get("scale", {}))
    overrides: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for scale, body in scales_raw.items():
        where = f"[scale.{scale}]"
        if scale not in SCALES:
            ck.add(
                f"unknown section {where}; {_hint(scale, SCALES)}allowed scales: "
                + ", ".join(SCALES)
            )
            continue
        body = ck.table(where, body)
        for key in body:
            if key not in ("grid", "fixed"):
                ck.add(
                    f"{where} {key}: unknown key; {_hint(key, ('grid', 'fixed'))}allowed keys: grid, fixed"
                )
        sg = ck.table(f"[scale.{scale}.grid]", body.get("grid", {}))
        sf = ck.table(f"[scale.{scale}.fixed]", body.get("fixed", {}))
        ck.overlap(where, sg, sf)
        overrides[scale] = (
            ck.params(f"[scale.{scale}.grid]", sg, grid=True),
            ck.params(f"[scale.{scale}.fixed]", sf, grid=False),
        )

    resolved: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for scale in SCALES:
        g, f = dict(grid), dict(fixed)
        sg, sf = overrides.get(scale, ({}, {}))
        for key, values in sg.items():
            f.pop(key, None)
            g[key] = values
        for key, value in sf.items():
            g.pop(key, None)
            f[key] = value
        resolved[scale] = (g, f)

    if ck.study is not None:
        empty = [s for s in SCALES if not resolved[s][0]]
        if empty and not (grid_raw and len(grid) < len(grid_raw)):  # bad keys already reported
            which = "" if len(empty) == len(SCALES) else f" at scale {', '.join(empty)}"
            ck.add(
                f"[grid]: empty{which}; sweep at least one parameter, e.g. seed = [0]"
                f" (parameters: {', '.join(ck.study.params)})"
            )
        for key, param in ck.study.params.items():
            if not param.required:
                continue
            missing = [s for s in SCALES if key not in resolved[s][0] and key not in resolved[s][1]]
            if missing and not (key in grid_raw or key in fixed_raw):
                which = "" if len(missing) == len(SCALES) else f" at scale {', '.join(missing)}"
                ck.add(
                    f"[fixed] {key}: required parameter ({param.type_name}) of study "
                    f"{toml_repr(ck.study.name)} is not set{which}; add it to [fixed] or [grid]"
                )
    return ck, header, resolved


def load_experiment(path: str | os.PathLike[str], scale: str = "default") -> Experiment:
    """Read, validate and expand an experiment file at one scale; ExperimentError if malformed.

    The whole file is validated (every scale), and every problem is reported in one message.
    """
    path = Path(path)
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
    raw = _read_toml(path)
    ck, (name, study, description, records), resolved = _validate(path, raw)
    if ck.problems:
        raise ExperimentError(path, ck.problems)
    st = ck.study
    assert st is not None
    grid, fixed = resolved[scale]
    points, skipped = [], []
    for combo in itertools.product(*grid.values()):
        given = {**fixed, **dict(zip(grid, combo, strict=True))}
        params = {k: given.get(k, p.default) for k, p in st.params.items()}
        reason = st.skip_reason(params)
        if reason is not None:
            skipped.append((params, reason))
            continue
        points.append(
            Point(experiment=name, study=st.name, params=params, key=point_key(st, params))
        )
    if not points:
        raise ExperimentError(
            path,
            [
                f"[grid]: no applicable point at scale {scale} ({len(skipped)} left out, e.g. "
                f"{skipped[0][1]}); add values for which study {toml_repr(st.name)} applies"
            ],
        )
    return Experiment(
        name=name,
        study=study,
        description=description,
        records=records,
        points=tuple(points),
        scale=scale,
        path=path,
        skipped=tuple(skipped),
    )


# --- results ---------------------------------------------------------------------------------


def _result_path(results_dir: Path, point: Point) -> Path:
    return results_dir / point.experiment / f"{point.key}.parquet"


def _is_listlike(value: Any) -> bool:
    return isinstance(value, (list, tuple, dict, set, np.ndarray))


def _param_column(value: Any) -> Any:
    # list-valued parameters become canonical JSON text: no lists in cells
    return json.dumps(value) if isinstance(value, list) else value


class PointError(Exception):
    """A study's return value that cannot be stored."""


def _finalize(exp: Experiment, point: Point, frame: Any) -> pd.DataFrame:
    """The study's rows, checked, with experiment, point and parameter columns in front."""
    where = f"study {exp.study!r} (experiment {exp.name!r}, point {point.key})"
    if not isinstance(frame, pd.DataFrame):
        raise PointError(f"{where} returned {type(frame).__name__}; expected a pandas DataFrame")
    missing = [c for c in ("quantity", "value") if c not in frame.columns]
    if missing:
        raise PointError(
            f"{where} returned no {' and '.join(missing)} column; tidy rows need quantity and value"
            f" (got columns {list(frame.columns)})"
        )
    if frame.columns.duplicated().any():
        raise PointError(f"{where} returned duplicate columns {list(frame.columns)}")
    reserved = [c for c in _RESERVED_COLUMNS if c in frame.columns]
    if reserved:
        raise PointError(f"{where} returned reserved column(s) {reserved}; the runner adds them")
    for col in frame.columns:
        if frame[col].dtype == object and frame[col].map(_is_listlike).any():
            raise PointError(
                f"{where} returned list-like values in column {col!r}; one observation per row"
            )
    if not pd.api.types.is_numeric_dtype(frame["value"]):
        raise PointError(f"{where} returned non-numeric value column ({frame['value'].dtype})")
    extra = sorted(set(map(str, frame["quantity"].unique())) - set(exp.records))
    if extra:
        raise PointError(
            f"{where} returned quantities {extra} not in [experiment] records of {exp.path}; "
            f"records = {list(exp.records)}"
        )
    out = frame.reset_index(drop=True)
    front: dict[str, Any] = {"experiment": exp.name, "point": point.key}
    front.update({k: _param_column(v) for k, v in point.params.items()})
    for col, value in front.items():
        if col in out.columns:
            if not (out[col] == value).all():
                raise PointError(
                    f"{where} returned column {col!r} whose values differ from the parameter "
                    f"{col} = {toml_repr(value)}; drop the column or rename it"
                )
            out = out.drop(columns=col)
    for i, (col, value) in enumerate(front.items()):
        out.insert(i, col, [value] * len(out))
    return out


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _write_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write parquet to a temp file in the same folder, fsync, then rename over ``path``."""
    tmp = path.parent / f".{path.stem}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "wb") as fh:
            frame.to_parquet(fh, index=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _clean_temps(folder: Path) -> int:
    """Remove temp files left by killed runs (their writer's pid is gone); return how many."""
    removed = 0
    for tmp in folder.glob(".*.tmp"):
        parts = tmp.name.split(".")
        try:
            pid = int(parts[2])
        except (IndexError, ValueError):
            pid = -1
        if pid == os.getpid() or (pid > 0 and _pid_alive(pid)):
            continue  # a live writer (another run) owns it
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def _done(exp: Experiment, results_dir: Path) -> list[bool]:
    return [_result_path(results_dir, p).exists() for p in exp.points]


@dataclass(frozen=True)
class Failure:
    """A point whose study raised or returned rows that cannot be stored."""

    key: str
    params: dict[str, Any] = field(hash=False)
    error: str
    traceback: str = ""


@dataclass(frozen=True)
class Summary:
    """What one run did: counts of points, failures, wall time."""

    experiment: str
    scale: str
    total: int
    cached: int
    run: int
    failed: tuple[Failure, ...]
    wall_s: float
    results_dir: Path

    @property
    def ok(self) -> bool:
        return not self.failed

    def __str__(self) -> str:
        return (
            f"{self.experiment} [{self.scale}]: {self.total} points, {self.cached} cached, "
            f"{self.run} run, {len(self.failed)} failed in {self.wall_s:.1f} s "
            f"-> {self.results_dir / self.experiment}"
        )


def run_experiment(
    path: str | os.PathLike[str],
    scale: str = "default",
    results_dir: str | os.PathLike[str] = "results",
    executor: str = "local",
    jobs: int | None = None,
    address: str | None = None,
    progress: bool = True,
    experiments_dir: str | os.PathLike[str] = "experiments",
) -> Summary:
    """Run the points of an experiment that have no result yet; return a Summary.

    path: an experiment file, or a bare name resolved under ``experiments_dir``.
    executor: "local" (jobs=1 or None: in this process; jobs>1: a spawn process pool) or
        "ray" (``ray.init(address=address)``, a local cluster when address is None and ray is
        not initialized yet; jobs caps the tasks in flight, None: no cap).
    A malformed file raises ExperimentError before anything is written. A point that fails is
    recorded in ``Summary.failed`` and the others go on; nothing of it is written.
    """
    (summary,) = run_experiments([path], scale, results_dir, executor, jobs, address, progress,
                                 experiments_dir)  # fmt: skip
    return summary


def run_experiments(
    paths: Sequence[str | os.PathLike[str]],
    scale: str = "default",
    results_dir: str | os.PathLike[str] = "results",
    executor: str = "local",
    jobs: int | None = None,
    address: str | None = None,
    progress: bool = True,
    experiments_dir: str | os.PathLike[str] = "experiments",
) -> list[Summary]:
    """Run several experiments' missing points through ONE executor; a Summary per experiment.

    As :func:`run_experiment` for each path (same arguments), but every point of every
    experiment goes to the same pool, in file order: the workers start once (not once per
    experiment) and no worker idles at the end of an experiment while the other finishes its
    last point. All files are validated before anything runs. ``wall_s`` of each Summary is the
    time from the start until that experiment's last point came back.
    """
    from tqdm.auto import tqdm

    from gradlab import _executors

    t0 = time.perf_counter()
    exps = [load_experiment(resolve_path(p, experiments_dir), scale) for p in paths]
    results = Path(results_dir)
    todos = []
    for exp in exps:
        todo = [p for p, done in zip(exp.points, _done(exp, results), strict=True) if not done]
        todos.append(todo)
        folder = results / exp.name
        if folder.is_dir():
            _clean_temps(folder)
        if todo:
            folder.mkdir(parents=True, exist_ok=True)
    owner = [(e, point) for e, todo in enumerate(todos) for point in todo]  # task i -> (exp, pt)
    failed: list[list[Failure]] = [[] for _ in exps]
    left = [len(todo) for todo in todos]
    wall = [time.perf_counter() - t0 for _ in exps]
    if owner:
        runner = _executors.get(executor, jobs=jobs, address=address)
        names = [exp.name for exp, todo in zip(exps, todos, strict=True) if todo]
        bar = tqdm(
            total=len(owner),
            desc=f"{names[0]} [{scale}]" if len(names) == 1 else f"{len(names)} experiments "
            f"[{scale}]",
            unit="pt",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        )
        tasks = [
            _executors.Task(p.study, p.params, _studies.get(exps[e].study).module)
            for e, p in owner
        ]
        with bar, contextlib.closing(runner.map(tasks)) as outcomes:
            for i, outcome in outcomes:
                e, point = owner[i]
                try:
                    if outcome.error is not None:
                        raise PointError(outcome.error)
                    _write_atomic(
                        _finalize(exps[e], point, outcome.frame), _result_path(results, point)
                    )
                except Exception as err:  # noqa: BLE001 - recorded, reported at the end
                    tb = outcome.traceback if outcome.error is not None else ""
                    failed[e].append(Failure(point.key, dict(point.params), str(err), tb))
                    bar.set_postfix(failed=sum(map(len, failed)))
                bar.update(1)
                left[e] -= 1
                if left[e] == 0:
                    wall[e] = time.perf_counter() - t0
    return [
        Summary(
            experiment=exp.name,
            scale=scale,
            total=len(exp.points),
            cached=len(exp.points) - len(todo),
            run=len(todo) - len(f),
            failed=tuple(f),
            wall_s=w,
            results_dir=results,
        )
        for exp, todo, f, w in zip(exps, todos, failed, wall, strict=True)
    ]


def load_results(
    experiment: str | os.PathLike[str],
    scale: str = "default",
    results_dir: str | os.PathLike[str] = "results",
    experiments_dir: str | os.PathLike[str] = "experiments",
    missing: str = "raise",
) -> pd.DataFrame:
    """The rows of exactly the points of ``experiment`` at ``scale``, in grid order.

    missing: "raise" (FileNotFoundError naming the command to run) or "skip".
    """
    if missing not in ("raise", "skip"):
        raise ValueError(f"missing must be 'raise' or 'skip', not {missing!r}")
    exp = load_experiment(resolve_path(experiment, experiments_dir), scale)
    results = Path(results_dir)
    files = [_result_path(results, p) for p in exp.points]
    absent = [f for f in files if not f.exists()]
    if absent and missing == "raise":
        raise FileNotFoundError(
            f"{len(absent)} of {len(files)} points of experiment {exp.name!r} at scale {scale!r} "
            f"have no results in {results / exp.name}; run: gradlab run {exp.path} --scale {scale}"
            f" --results {results}"
        )
    frames = [pd.read_parquet(f) for f in files if f.exists()]
    if not frames:
        return pd.DataFrame()
    return pd.concat(frames, ignore_index=True)
