"""The gradlab command line: ``gradlab run | list | figures | report`` (also ``python -m gradlab``).

Exit codes: 0 success; 1 a point or the figures failed; 2 a malformed experiment file or a
usage error (nothing is written then).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gradlab._experiment import (
    SCALES,
    Experiment,
    ExperimentError,
    Summary,
    load_experiment,
    load_results,
    run_experiments,
)

__all__ = ["main"]


def _common(p: argparse.ArgumentParser, *, run: bool) -> None:
    p.add_argument(
        "--scale", choices=SCALES, default="default", help="grid size (default: %(default)s)"
    )
    p.add_argument(
        "--results", default="results", metavar="DIR", help="results folder (default: %(default)s)"
    )
    p.add_argument(
        "--experiments",
        default="experiments",
        metavar="DIR",
        help="where bare experiment names are found (default: %(default)s)",
    )
    if run:
        p.add_argument(
            "--jobs",
            "-j",
            type=int,
            default=None,
            metavar="N",
            help="parallel points (local: default 1; ray: default no cap)",
        )
        p.add_argument("--executor", choices=("local", "ray"), default="local")
        p.add_argument("--address", default=None, metavar="ADDR", help="Ray cluster address")
        p.add_argument(
            "--no-progress", dest="progress", action="store_false", help="no progress bar"
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gradlab", description="Run gradlab experiments and draw their figures."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the missing points of one experiment")
    p.add_argument("experiment", help="experiments/NAME.toml, or a bare NAME")
    _common(p, run=True)
    p.set_defaults(func=_cmd_run)
    p = sub.add_parser("list", help="list the experiments and how many points are done")
    _common(p, run=False)
    p.set_defaults(func=_cmd_list)
    p = sub.add_parser("figures", help="run what is missing, then draw every figure")
    _common(p, run=True)
    p.add_argument("--out", default="figures", metavar="DIR", help="(default: %(default)s)")
    p.set_defaults(func=_cmd_figures)
    p = sub.add_parser("report", help="figures and summary.md of a gradlab.Monitor(path=) folder")
    p.add_argument("path", help="the folder a gradlab.Monitor streamed its rows to")
    p.add_argument("--out", default=None, metavar="DIR", help="(default: PATH-report)")
    p.add_argument("--iterations", type=int, default=6, metavar="N",
                   help="iterations in the decay-curve figure (default: %(default)s)")
    p.add_argument("--formats", nargs="+", default=["png", "svg"], metavar="EXT",
                   help="figure formats (default: png svg)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(func=_cmd_report)
    return parser


def _err(message: str) -> None:
    print(f"gradlab: error: {message}", file=sys.stderr)


def _report(summary: Summary) -> None:
    print(summary, file=sys.stderr)
    for i, failure in enumerate(summary.failed):
        params = ", ".join(f"{k}={v!r}" for k, v in failure.params.items())
        print(f"  FAILED {failure.key} ({params}): {failure.error}", file=sys.stderr)
        if i == 0 and failure.traceback:
            print("  " + failure.traceback.rstrip().replace("\n", "\n  "), file=sys.stderr)


def _run(args: argparse.Namespace, experiments: list[str | Path]) -> list[Summary]:
    """Run the experiments' missing points through one executor; report each; the summaries."""
    summaries = run_experiments(
        experiments,
        scale=args.scale,
        results_dir=args.results,
        executor=args.executor,
        jobs=args.jobs,
        address=args.address,
        progress=args.progress,
        experiments_dir=args.experiments,
    )
    for summary in summaries:
        _report(summary)
    return summaries


def _cmd_run(args: argparse.Namespace) -> int:
    return 0 if _run(args, [args.experiment])[0].ok else 1


def _discover(args: argparse.Namespace) -> tuple[list[Experiment], list[ExperimentError]]:
    folder = Path(args.experiments)
    if not folder.is_dir():
        raise ExperimentError(folder, ["experiments folder not found; pass --experiments DIR"])
    good, bad = [], []
    for path in sorted(folder.glob("*.toml")):
        try:
            good.append(load_experiment(path, args.scale))
        except ExperimentError as err:
            bad.append(err)
    return good, bad


def _n_done(exp: Experiment, results: str) -> int:
    return sum((Path(results) / exp.name / f"{p.key}.parquet").exists() for p in exp.points)


def _cmd_list(args: argparse.Namespace) -> int:
    good, bad = _discover(args)
    rows = [("experiment", "study", f"done/{args.scale}", "description")]
    for exp in good:
        rows.append(
            (
                exp.name,
                exp.study,
                f"{_n_done(exp, args.results)}/{len(exp.points)}",
                exp.description,
            )
        )
    for err in bad:
        rows.append((err.path.stem, "?", "invalid", "(see error below)"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)) + "  " + row[3])
    for err in bad:
        _err(str(err))
    return 2 if bad else 0


def _cmd_figures(args: argparse.Namespace) -> int:
    try:
        from gradlab._figures import render_all
    except ModuleNotFoundError as err:
        if err.name not in ("gradlab._figures",):
            raise
        _err("gradlab._figures is not available in this installation; cannot draw figures")
        return 1
    good, bad = _discover(args)
    if bad:
        for err in bad:
            _err(str(err))
        return 2
    if not good:
        _err(f"no experiment files in {args.experiments}")
        return 1
    todo = [exp.path for exp in good if _n_done(exp, args.results) < len(exp.points)]
    summaries = _run(args, todo) if todo else []
    if not all(s.ok for s in summaries):
        _err("some points failed; figures not drawn")
        return 1
    results = {
        exp.name: load_results(exp.path, scale=args.scale, results_dir=args.results) for exp in good
    }
    out = Path(args.out)
    render_all(results, out, args.scale)
    print(f"figures [{args.scale}] -> {out}", file=sys.stderr)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from gradlab._report import report

    out = report(args.path, args.out, iterations=args.iterations, progress=args.progress,
                 formats=tuple(args.formats))
    print(f"report -> {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``gradlab``; returns the exit code."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: usage error (2) or --help (0)
        return int(exit_.code or 0)
    try:
        return args.func(args)
    except ExperimentError as err:
        _err(str(err))
        return 2
    except KeyboardInterrupt:
        _err("interrupted; finished points are kept, rerun to resume")
        return 130
    except Exception as err:  # noqa: BLE001 - one clear line, exit 1
        _err(f"{type(err).__name__}: {err}")
        return 1
