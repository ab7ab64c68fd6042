"""The `prunebench` command: run a benchmark, validate a config, print the leaderboard.

Heavy imports (torch, transformers, prefect) happen inside the commands that need them, after
the config is validated and the environment is set, so `--help` and config errors are instant.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pruning.errors import PrunebenchError

DEFAULT_DATABASE = Path("results/prunebench.duckdb")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except PrunebenchError as err:
        print(f"prunebench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("prunebench: interrupted; finished stages are cached and will be reused", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunebench",
        description=(
            "Benchmark pruning methods on language and vision-language models: calibrate, prune, "
            "evaluate with lm-eval, record every number in DuckDB, and print a leaderboard. "
            "Stages are cached Prefect tasks, so rerunning a config recomputes nothing."
        ),
        epilog="Example: prunebench run configs/default.yaml && prunebench report --format json",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the benchmark flow of an experiment config",
        description="Run every study of CONFIG (model x methods x suites), record results, print the leaderboard.",
    )
    run.add_argument("config", type=Path, help="experiment YAML, e.g. configs/default.yaml")
    run.add_argument("--database", type=Path, help="DuckDB file for results (default: the config's output.database)")
    run.add_argument("--workdir", type=Path, help="checkpoints, caches and Prefect state (default: output.workdir)")
    run.set_defaults(command=cmd_run)

    validate = commands.add_parser("validate", help="check a config without running anything")
    validate.add_argument("config", type=Path)
    validate.set_defaults(command=cmd_validate)

    report = commands.add_parser(
        "report",
        help="print the leaderboard, or write the full report (markdown or a static HTML page)",
        description=(
            "The latest run of each model x method, per suite and metric, with retention vs dense. "
            "text and json: the leaderboard. markdown: the leaderboard, retention curves, allocations, "
            "redundancy and speed/memory tables. html: the same with plots, one self-contained file."
        ),
    )
    report.add_argument("--database", "--db", type=Path, default=DEFAULT_DATABASE, help=f"default: {DEFAULT_DATABASE}")
    report.add_argument("--format", choices=("text", "markdown", "json", "html"), default="text")
    report.add_argument("--model", help="only this model (its label, e.g. smollm2-135m)")
    report.add_argument(
        "--out", type=Path, help="write to this file instead of printing (html default: report.html beside the database)"
    )
    report.set_defaults(command=cmd_report)

    compare = commands.add_parser(
        "compare",
        help="list results that moved beyond their noise margin between two runs; exit 1 on a regression",
        description=(
            "Compare RUN_B (new) with RUN_A (baseline), metric by metric. With one run id: that run against the "
            "previous run of its config. With none: every run of the latest flow run against the previous run of "
            "its config. A result moved when |change| > max(TOLERANCE x |before|, Z x sqrt(se_before^2 + se_after^2)). "
            "Exit status: 0 nothing got worse, 1 something got worse, 2 nothing to compare."
        ),
    )
    compare.add_argument("run_a", nargs="?", metavar="RUN_A", help="baseline run id (or unique prefix)")
    compare.add_argument("run_b", nargs="?", metavar="RUN_B", help="candidate run id (or unique prefix)")
    compare.add_argument("--database", "--db", type=Path, default=DEFAULT_DATABASE, help=f"default: {DEFAULT_DATABASE}")
    compare.add_argument("--tolerance", type=_non_negative, default=0.01,
                         help="relative change always tolerated, as a fraction of the baseline (default: 0.01)")  # fmt: skip
    compare.add_argument("--z", type=_non_negative, default=2.0,
                         help="standard errors of the difference tolerated (default: 2)")  # fmt: skip
    compare.set_defaults(command=cmd_compare)

    methods = commands.add_parser("methods", help="list pruning methods and their config fields")
    methods.set_defaults(command=cmd_methods)
    return parser


def cmd_run(args: argparse.Namespace) -> int:
    from flows.config import load_config
    from flows.runtime import configure_environment

    overrides = {"database": args.database, "workdir": args.workdir}
    config = load_config(args.config, overrides)  # fails here, before anything loads
    configure_environment(config.output.workdir)
    from flows.benchmark import benchmark, preflight

    preflight(config)
    markdown = benchmark(
        str(args.config.resolve()),
        database=str(config.output.database.resolve()),
        workdir=str(config.output.workdir.resolve()),
    )
    print()
    print(markdown)
    print(f"\nresults: {config.output.database}   (prunebench report --database {config.output.database})")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from flows.config import load_config

    config = load_config(args.config)
    for study in config.studies:
        labels = ", ".join(method.label for method in study.methods)
        print(f"{study.model.source}: {labels} on {', '.join(study.eval.suites)}")
    print(f"{args.config}: ok")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from reports.leaderboard import leaderboard, to_json, to_text
    from reports.store import ResultStore

    if not args.database.is_file():
        raise PrunebenchError(f"no results database at {args.database}; run `prunebench run CONFIG` first")
    store = ResultStore(args.database)
    if args.format in ("text", "json"):
        rendered = {"text": to_text, "json": to_json}[args.format](leaderboard(store, model=args.model))
    else:
        from reports.html import to_html
        from reports.markdown import report_markdown
        from reports.sections import report_sections

        sections = report_sections(store, model=args.model)
        rendered = to_html(sections, source=str(args.database)) if args.format == "html" else report_markdown(sections)
    out = args.out or (args.database.parent / "report.html" if args.format == "html" else None)
    if out is None:
        print(rendered)
        return 0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(rendered if rendered.endswith("\n") else rendered + "\n", encoding="utf-8")
    except OSError as error:
        raise PrunebenchError(f"cannot write the report to {out}: {error}") from None
    print(f"wrote {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from reports.regressions import compare_runs, compare_with_previous, to_markdown
    from reports.store import ResultStore

    if not args.database.is_file():
        raise PrunebenchError(f"no results database at {args.database}; run `prunebench run CONFIG` first")
    store = ResultStore(args.database)
    margins = {"tolerance": args.tolerance, "z": args.z}
    if args.run_b is not None:
        comparison = compare_runs(store, args.run_a, args.run_b, **margins)
    else:
        comparison = compare_with_previous(store, None if args.run_a is None else [args.run_a], **margins)
    if comparison.is_empty:
        raise PrunebenchError("nothing to compare: " + "; ".join(comparison.notes or ["no shared results"]))
    print(to_markdown(comparison))
    return 1 if comparison.has_regression else 0


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{text} must be >= 0")
    return value


def cmd_methods(args: argparse.Namespace) -> int:
    import typing

    from pruning.specs import MethodSpec

    for spec in typing.get_args(typing.get_args(MethodSpec)[0]):
        fields = [
            f"{name}={field.default!r}" if not field.is_required() else name
            for name, field in spec.model_fields.items()
            if name != "name"
        ]
        doc = (spec.__doc__ or "").strip().splitlines()[0]
        print(f"{spec.model_fields['name'].annotation.__args__[0]:<10} {doc}")
        if fields:
            print(f"{'':<10} fields: {', '.join(fields)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
