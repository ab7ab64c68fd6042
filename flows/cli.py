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
        help="print the leaderboard from the results database",
        description="The latest run of each model x method, per suite and metric, with retention vs dense.",
    )
    report.add_argument("--database", type=Path, default=DEFAULT_DATABASE, help=f"default: {DEFAULT_DATABASE}")
    report.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    report.add_argument("--model", help="only this model (its label, e.g. smollm2-135m)")
    report.set_defaults(command=cmd_report)

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
    from reports.leaderboard import leaderboard, to_json, to_markdown, to_text
    from reports.store import ResultStore

    if not args.database.is_file():
        raise PrunebenchError(f"no results database at {args.database}; run `prunebench run CONFIG` first")
    rows = leaderboard(ResultStore(args.database), model=args.model)
    render = {"text": to_text, "markdown": to_markdown, "json": to_json}[args.format]
    print(render(rows))
    return 0


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
