"""The `prunebench` command: run a benchmark, validate a config, print the leaderboard.

Heavy imports (torch, transformers, prefect) happen inside the commands that need them, after
the config is validated and the environment is set, so `--help` and config errors are instant.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pruning.errors import PrunebenchError

DEFAULT_DATABASE = Path("results/prunebench.duckdb")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except KeyboardInterrupt:
        return _interrupted()
    except BrokenPipeError:  # `prunebench report | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 0
    except Exception as error:
        from flows.deploy import STOPPED_BY

        if STOPPED_BY:  # whatever a stop signal broke on its way out (Prefect's engine mid-setup, say)
            return _interrupted()
        if args.debug:
            raise
        if isinstance(error, PrunebenchError):
            print(f"prunebench: error: {' '.join(str(error).split())}", file=sys.stderr)  # one line, whatever it quotes
            return 2
        if isinstance(error, ImportError):  # a package of the environment is broken or missing: say which, in one line
            from flows import environment

            line = environment.describe_failure("prunebench cannot start in this environment", error, environment.lock_pins())
            print(f"prunebench: error: {line}", file=sys.stderr)
            return 2
        first = (str(error).strip().splitlines() or [""])[0]
        print(f"prunebench: error: {type(error).__name__}: {first} (an unexpected failure; --debug shows the traceback)", file=sys.stderr)
        return 1


def _interrupted() -> int:
    import signal

    from flows.deploy import STOPPED_BY

    how = f"stopped by {signal.Signals(STOPPED_BY[0]).name}" if STOPPED_BY and STOPPED_BY[0] != signal.SIGINT else "interrupted"
    print(f"prunebench: {how}; finished stages are cached and will be reused", file=sys.stderr)
    return 128 + (STOPPED_BY[0] if STOPPED_BY else signal.SIGINT)


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
    parser.add_argument("--debug", action="store_true", help="show the traceback of an unexpected failure")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    run = commands.add_parser(
        "run",
        help="run the benchmark flow of an experiment config",
        description="Run every study of CONFIG (model x methods x suites), record results, print the leaderboard.",
    )
    run.add_argument("config", type=Path, help="experiment YAML, e.g. configs/default.yaml")
    run.add_argument("--database", type=Path, help="DuckDB file for results (default: the config's output.database)")
    run.add_argument("--workdir", type=Path, help="checkpoints, caches and Prefect state (default: output.workdir)")
    run.add_argument(
        "--fail-on-regression", action="store_true",
        help="exit 1 when a result got worse than the previous run of the same configuration beyond its noise margin "
        "(the flow run then ends in the state 'Regressed' either way)",
    )
    run.set_defaults(command=cmd_run)

    sweep = commands.add_parser(
        "sweep",
        help="run models x methods x ratios of a config, the branches concurrently under a task runner",
        description=(
            "Like `run`, with ratios from the command line: every method with a `sparsity` (`drop_ratio`) field runs "
            "once per value of --sparsity (--drop-ratio); dense and N:M methods run once. Stages the methods share "
            "(model, calibration, block scores, layer redundancy, SLEB orders) run first, once; the branches then run "
            "CONCURRENCY at a time in threads, or on a Dask cluster (--runner dask): a local cluster of worker "
            "processes, or a running scheduler given by --dask-address whose workers import this repository, see the "
            "same paths and reach the same Prefect API (PREFECT_API_URL; see `prunebench server`)."
        ),
        epilog="Example: prunebench sweep configs/smoke.yaml --sparsity 0.3,0.5,0.7 --drop-ratio 0.25 --concurrency 2",
    )
    sweep.add_argument("config", type=Path, help="experiment YAML, e.g. configs/smoke.yaml")
    sweep.add_argument("--sparsity", type=_ratios, metavar="S[,S...]", help="target sparsities, e.g. 0.5,0.6,0.7")
    sweep.add_argument("--drop-ratio", type=_ratios, metavar="R[,R...]", help="shares of decoder layers to drop, e.g. 0.25,0.5")
    sweep.add_argument("--concurrency", type=_positive_int, default=2, help="branches running at once (default: 2)")
    sweep.add_argument("--runner", choices=("thread", "dask"),
                       help="thread: Prefect's thread pool (default); dask: prefect-dask on a Dask cluster")  # fmt: skip
    sweep.add_argument("--dask-address", metavar="tcp://HOST:PORT", help="scheduler of a running Dask cluster (implies --runner dask)")
    sweep.add_argument("--dask-workers", type=_positive_int, metavar="N",
                       help="worker processes of the local Dask cluster (implies --runner dask; default: CONCURRENCY)")  # fmt: skip
    sweep.add_argument("--database", type=Path, help="DuckDB file for results (default: the config's output.database)")
    sweep.add_argument("--workdir", type=Path, help="checkpoints, caches and Prefect state (default: output.workdir)")
    sweep.set_defaults(command=cmd_sweep)

    validate = commands.add_parser(
        "validate", help="check a config without running anything",
        description="Check a config without computing anything: every key, value and method, the labels its studies get, "
                    "that each model's files (or hub cache entry) exist and are readable, the devices exist, the suites are "
                    "known, the calibration text is long enough. With --preflight, also what else `run` checks before any "
                    "compute: each evaluation backend rehearsed on two items, and that the results database opens for "
                    "writing (an empty one is created where there is none).",
    )  # fmt: skip
    validate.add_argument("config", type=Path)
    validate.add_argument("--preflight", action="store_true", help="also rehearse the evaluation backends and open the database for writing, as `run` does")
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
    _database_options(report)
    report.add_argument("--format", choices=("text", "markdown", "json", "html"), default="text")
    report.add_argument("--model", help="only this model: its label, e.g. smollm2-135m, or the longer one the report shows where two models share it")
    report.add_argument(
        "--out", type=Path, help="write to this file instead of printing (html default: report.html beside the database)"
    )
    report.set_defaults(command=cmd_report)

    compare = commands.add_parser(
        "compare",
        help="list results that changed significantly between two runs (paired test); exit 1 on a regression",
        description=(
            "Compare RUN_B (new) with RUN_A (baseline), metric by metric. With one run id: that run against the "
            "previous run of its config. With none: every run of the latest flow run against the previous run of "
            "its config. Both runs were scored on the same items, so each metric is tested item by item (McNemar's "
            "exact test for accuracy, a paired bootstrap otherwise): a result moved when the change is significant "
            "(p < ALPHA) and |change| > TOLERANCE x |before|. Runs recorded without per-item scores (before schema 6) "
            "fall back to the noise margin, |change| > max(TOLERANCE x |before|, Z x sqrt(se_before^2 + se_after^2)), "
            "and the report says which metrics did. "
            "Exit status: 0 nothing got worse, 1 something got worse, 2 nothing to compare."
        ),
    )
    compare.add_argument("run_a", nargs="?", metavar="RUN_A", help="baseline run id (or unique prefix)")
    compare.add_argument("run_b", nargs="?", metavar="RUN_B", help="candidate run id (or unique prefix)")
    _database_options(compare)
    compare.add_argument("--tolerance", type=_non_negative, default=0.01,
                         help="relative change always tolerated, as a fraction of the baseline (default: 0.01)")  # fmt: skip
    compare.add_argument("--z", type=_non_negative, default=2.0,
                         help="standard errors of the difference tolerated, for runs without per-item scores (default: 2)")  # fmt: skip
    compare.add_argument("--alpha", type=_probability, default=0.05,
                         help="significance level of the paired test, two-sided (default: 0.05)")  # fmt: skip
    compare.set_defaults(command=cmd_compare)

    runs = commands.add_parser(
        "runs",
        help="list recorded runs with their checkpoints; show one; delete a run's checkpoint",
        description=(
            "list (default): every recorded run, newest first: id, model, method, primary results, the checkpoint "
            "it evaluated and its size. show RUN: one run in full (record, results, stages, the checkpoint's "
            "manifest: method parameters, calibration, achieved sparsity). rm RUN: delete the checkpoint the run "
            "computed (never a model's own files; a rerun recomputes it), and with --records its rows too."
        ),
        epilog="Example: prunebench runs --method wanda --limit 5 && prunebench runs show 3f2a9c01",
    )
    runs.add_argument("action", nargs="?", choices=("list", "show", "rm"), default="list")
    runs.add_argument("run_id", nargs="?", metavar="RUN", help="run id, or a unique prefix of one (show, rm)")
    _database_options(runs)
    runs.add_argument("--model", help="list: only this model (its label)")
    runs.add_argument("--method", help="list: only this method (its name, e.g. wanda, or its label)")
    runs.add_argument("--limit", type=_positive_int, help="list: the newest N runs")
    runs.add_argument("--records", action="store_true", help="rm: also delete the run's rows from the database")
    runs.set_defaults(command=cmd_runs)

    export = commands.add_parser(
        "export",
        help="write a run's model as a self-contained checkpoint with a model card (compressed; --dense for plain transformers)",
        description=(
            "Write the model run RUN evaluated (pruned, layer-dropped or finetuned) to DIR, a new or empty directory: "
            "weights, config, tokenizer or processor, and a README.md model card (method, parameters, sparsity, "
            "calibration data, the run's scores, how to load it). Pruned weights are stored in compressed-tensors' "
            "sparse format (0.14.0), which prunebench's loader reads and transformers' from_pretrained does not; "
            "--dense writes plain safetensors that from_pretrained loads. A run whose checkpoint was deleted is "
            "rebuilt by re-running its config."
        ),
        epilog="Example: prunebench runs --method wanda --limit 1 && prunebench export 3f2a9c01 exported/wanda50 --dense",
    )
    export.add_argument("run_id", metavar="RUN", help="run id, or a unique prefix of one (`prunebench runs` lists them)")
    export.add_argument("dest", metavar="DIR", type=Path, help="where to write it: a new or empty directory")
    export.add_argument("--dense", action="store_true", help="plain safetensors, loadable by transformers' from_pretrained directly")
    _database_options(export)
    export.set_defaults(command=cmd_export)

    prune = commands.add_parser(
        "prune",
        help="prune one model with one method, in one line (no config file), and save the checkpoint",
        description=(
            "Build a config from the options, run it through the same flow as `run` (cached, recorded in the "
            "database, beside a dense baseline of the model), and write the pruned model to --out (dense). The config "
            "it ran is written beside the database, to rerun or edit. MODEL is a local checkpoint directory, a "
            "hub id in the local Hugging Face cache, or packaged:smollm2-135m."
        ),
        epilog="Example: prunebench prune packaged:smollm2-135m --method wanda --sparsity 0.5 --out pruned/wanda50",
    )
    prune.add_argument("model", metavar="MODEL")
    prune.add_argument("--method", required=True, help="a method name (`prunebench methods` lists them), e.g. wanda, sparsegpt, shortgpt")
    prune.add_argument("--sparsity", type=float, help="share of weights to remove (weight pruning), e.g. 0.5")
    prune.add_argument("--drop-ratio", type=float, help="share of decoder layers to drop (layer dropping), e.g. 0.25")
    prune.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", dest="fields",
                       help="another field of the method, as YAML, e.g. --set blocksize=64 --set n_m=2:4 (repeatable)")  # fmt: skip
    prune.add_argument("--calibration", metavar="CORPUS", help="calibration corpus (default: the config default, jargon)")
    prune.add_argument("--n-samples", type=_positive_int, help="calibration sequences (default: 32; the papers use 128)")
    prune.add_argument("--seq-len", type=_positive_int, help="tokens per calibration sequence (default: 256; the papers use 2048)")
    prune.add_argument("--eval", default="jargon_ppl", metavar="SUITE[,SUITE...]", help="suites to evaluate on (default: jargon_ppl)")
    prune.add_argument("--limit", type=_positive_int, help="at most this many documents per suite")
    prune.add_argument("--include-path", type=Path, action="append", default=[], metavar="DIR",
                       help="a directory of your own lm-eval task YAMLs, whose tasks --eval may name (repeatable)")  # fmt: skip
    prune.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="default: float32")
    prune.add_argument("--device", help="cpu, cuda, cuda:N, ... (default: cpu)")
    prune.add_argument("--offload", choices=("none", "cpu", "disk"), help="keep the weights in RAM (cpu) or memory-mapped files "
                       "(disk) and run one block at a time on --device: a model larger than the GPU (default: none)")
    prune.add_argument("--adapter", type=Path, metavar="YAML", help="the model's adapter file, for a family prunebench has no "
                       "adapter for (README: Architectures)")
    prune.add_argument("--trust-remote-code", action="store_true", help="run the checkpoint's own modelling code (off by default: "
                       "it is code from the checkpoint's authors)")
    prune.add_argument("--out", type=Path, help="write the pruned model here as plain safetensors with a model card (a new directory; "
                       "`prunebench export` writes the compressed form)")
    prune.add_argument("--database", type=Path, default=DEFAULT_DATABASE, help=f"default: {DEFAULT_DATABASE}")
    prune.add_argument("--workdir", type=Path, help="checkpoints, caches and Prefect state (default: .prunebench)")
    prune.add_argument("--cache", type=Path, help="converted models and corpora, shareable between workdirs (default: WORKDIR/cache)")
    prune.set_defaults(command=cmd_prune)

    methods = commands.add_parser("methods", help="list pruning methods and their config fields")
    methods.set_defaults(command=cmd_methods)

    from flows.deploy import DEFAULT_HOST, DEFAULT_PORT  # standard library only: --help stays instant

    server = commands.add_parser(
        "server",
        help="start a local Prefect server with its UI (foreground; Ctrl-C stops it)",
        description=(
            "Run `prefect server start` from this environment and print the UI URL and the PREFECT_API_URL that "
            "`prunebench run`, `prunebench deploy` and workers must use. Its database (runs, deployments, schedules) "
            "lives in WORKDIR/prefect, or in PREFECT_HOME when that is set."
        ),
    )
    server.add_argument("--host", default=DEFAULT_HOST,
                        help=f"interface to bind (default: {DEFAULT_HOST}; 0.0.0.0 lets workers on other machines in)")  # fmt: skip
    server.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}")
    server.add_argument("--workdir", type=Path, default=Path(".prunebench"), help="Prefect home is WORKDIR/prefect (default: .prunebench)")
    server.set_defaults(command=cmd_server)

    deploy = commands.add_parser(
        "deploy",
        help="deploy the benchmark of CONFIG on a cron schedule to a Prefect server, and serve it",
        description=(
            "Create (or update) the deployment benchmark/NAME on the Prefect server at --api-url, with a cron "
            "schedule and CONFIG's paths as parameters, then run its scheduled runs in this process until Ctrl-C "
            "(which pauses the schedule). --no-serve only registers it; --pool puts it in a process work pool "
            "whose workers (`prefect worker start --pool NAME`, one per GPU machine) run it."
        ),
        epilog='Example: prunebench server & prunebench deploy configs/default.yaml --cron "0 3 * * *"',
    )
    deploy.add_argument("config", type=Path, help="experiment YAML, e.g. configs/default.yaml")
    deploy.add_argument("--cron", required=True, help='cron expression: minute hour day-of-month month day-of-week, e.g. "0 3 * * *"')
    deploy.add_argument("--timezone", default="UTC", help="IANA timezone of the cron schedule (default: UTC)")
    deploy.add_argument("--name", help="deployment name (default: the config's name)")
    deploy.add_argument("--api-url",
                        help=f"Prefect API (default: $PREFECT_API_URL, else http://{DEFAULT_HOST}:{DEFAULT_PORT}/api, where `prunebench server` listens)")  # fmt: skip
    deploy.add_argument("--database", type=Path, help="DuckDB file for results (default: the config's output.database)")
    deploy.add_argument("--workdir", type=Path, help="checkpoints, caches and Prefect state (default: output.workdir)")
    where = deploy.add_mutually_exclusive_group()
    where.add_argument("--no-serve", action="store_true", help="only create/update the deployment; something else serves it")
    where.add_argument("--pool", help="create it in this process work pool instead of serving it here")
    deploy.set_defaults(command=cmd_deploy)
    return parser


def _database_options(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--database", "--db", type=Path, help=f"results database (default: {DEFAULT_DATABASE})")
    where.add_argument("--config", type=Path, metavar="CONFIG", help="the results database of this experiment config (its output.database)")


def _results_database(args: argparse.Namespace):
    """The ResultStore of --database, or of --config's output.database, or the default; one that must exist."""
    from reports.store import ResultStore

    if getattr(args, "config", None) is not None:
        from flows.config import load_config

        database = load_config(args.config).output.database
    else:
        database = args.database or DEFAULT_DATABASE
    if not database.is_file():
        raise PrunebenchError(f"no results database at {database}; run `prunebench run CONFIG` first")
    return ResultStore(database)


def cmd_run(args: argparse.Namespace) -> int:
    from flows.config import load_config
    from flows.runtime import configure_environment

    overrides = {"database": args.database, "workdir": args.workdir}
    config = load_config(args.config, overrides)  # fails here, before anything loads
    configure_environment(config.output.workdir)
    from flows import deploy
    from flows.benchmark import REGRESSED, benchmark, preflight

    preflight(config)
    with deploy.run_api():
        deploy.mark_dead_runs_crashed(deploy.FLOW_NAME)
        state = benchmark(
            str(args.config.resolve()),
            database=str(config.output.database.resolve()),
            workdir=str(config.output.workdir.resolve()),
            return_state=True,
        )
    markdown = state.result()  # raises what the flow raised
    print()
    print(markdown)
    _print_checkpoints(config.output.database, str(state.state_details.flow_run_id), config.output.keep_checkpoints)
    print(f"\nresults: {config.output.database}   (prunebench report --database {config.output.database})")
    if state.name == REGRESSED:
        print(f"\nflow run state {REGRESSED}: {state.message} (listed above; prunebench compare)", file=sys.stderr)
        return 1 if args.fail_on_regression else 0
    return 0


def _print_checkpoints(database: Path, flow_run_id: str, keep: str = "last") -> None:
    """Where the checkpoints of this flow run's runs are (dense: the model's own), and which were removed
    (`output.keep_checkpoints`): the evaluated one with `none`, the one before finetuning unless `all`."""
    import json

    from reports.runs import size
    from reports.store import ResultStore

    try:
        runs = [run for run in ResultStore(database).runs() if run.flow_run_id == flow_run_id and run.checkpoint]
    except PrunebenchError:
        return  # the results were printed; the database is named below
    if runs:
        width = max(len(f"{run.model} / {run.method_label}") for run in runs)
        print(f"\ncheckpoints (output.keep_checkpoints: {keep}; prunebench runs lists every recorded run):")
        for run in runs:
            if run.checkpoint_kept is False:
                shown = f"{run.checkpoint}  (removed after its scores were recorded"
                shown += f": {size(run.checkpoint_bytes)} freed)" if run.checkpoint_bytes else "; it was not rebuilt)"
            else:
                shown = f"{run.checkpoint}  ({size(run.checkpoint_bytes)})"
            if keep != "all" and json.loads(run.method_params).get("finetune"):
                shown += "; its checkpoint before finetuning was removed"
            print(f"  {run.model + ' / ' + run.method_label:<{width}}  {shown}")


def cmd_sweep(args: argparse.Namespace) -> int:
    from flows.config import load_config
    from flows.runtime import configure_environment

    dask_options = args.dask_address is not None or args.dask_workers is not None
    if args.runner == "thread" and dask_options:
        raise PrunebenchError("--dask-address and --dask-workers need --runner dask")
    if args.dask_address is not None and args.dask_workers is not None:
        raise PrunebenchError("--dask-workers sizes a local cluster; a running one (--dask-address) has its own workers")
    runner = args.runner or ("dask" if dask_options else "thread")
    config = load_config(args.config, {"database": args.database, "workdir": args.workdir})  # fails here, before anything loads
    configure_environment(config.output.workdir)
    from flows import deploy
    from flows.benchmark import preflight
    from flows.sweep import expand_ratios, run_sweep, task_runner

    swept = expand_ratios(config, args.sparsity, args.drop_ratio, source=str(args.config))
    preflight(swept)
    n_branches = sum(len(study.methods) for study in swept.studies)
    where = args.dask_address or (f"{args.dask_workers or args.concurrency} local Dask workers" if runner == "dask" else f"{args.concurrency} threads")
    print(f"sweep {swept.name}: {n_branches} branches on {where}", flush=True)
    with deploy.run_api():
        deploy.mark_dead_runs_crashed("sweep")
        state = run_sweep(
            str(args.config.resolve()),
            task_runner(runner, args.concurrency, args.dask_address, args.dask_workers),
            sparsity=args.sparsity,
            drop_ratio=args.drop_ratio,
            database=str(config.output.database.resolve()),
            workdir=str(config.output.workdir.resolve()),
            return_state=True,
        )
    markdown = state.result()  # raises what the flow raised
    print()
    print(markdown)
    _print_checkpoints(config.output.database, str(state.state_details.flow_run_id), config.output.keep_checkpoints)
    print(f"\nresults: {config.output.database}   (prunebench report --database {config.output.database})")
    return 0


def _ratios(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated numbers, e.g. 0.5,0.6") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    return values


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def cmd_validate(args: argparse.Namespace) -> int:
    from flows.config import load_config

    config = load_config(args.config)
    for study in config.studies:
        seeds = f", calibration seeds {', '.join(map(str, study.calibration.seeds))}" if study.calibration.seeds else ""
        print(f"{study.model.source}: {len(study.methods)} method(s) on {', '.join(study.eval.suites)}{seeds}")
        for method in study.methods:
            print(f"  {method.method_id}  {method.label}")
    if args.preflight:  # the rehearsal runs the harness as `run` does, with Prefect's home in the workdir
        from flows.runtime import configure_environment

        configure_environment(config.output.workdir)
    for offline in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):  # looked up in the local caches, never fetched
        os.environ.setdefault(offline, "1")
    from flows.benchmark import preflight

    preflight(config, full=args.preflight)
    print(f"{args.config}: ok" + (" (and this machine can run it)" if args.preflight else ""))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from reports.leaderboard import leaderboard, to_json, to_text

    store = _results_database(args)
    if args.format in ("text", "json"):
        rendered = {"text": to_text, "json": to_json}[args.format](leaderboard(store, model=args.model))
    else:
        from reports.html import to_html
        from reports.markdown import report_markdown
        from reports.sections import report_sections

        sections = report_sections(store, model=args.model)
        rendered = to_html(sections, source=str(store.path)) if args.format == "html" else report_markdown(sections)
    out = args.out or (store.path.parent / "report.html" if args.format == "html" else None)
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

    store = _results_database(args)
    margins = {"tolerance": args.tolerance, "z": args.z, "alpha": args.alpha}
    if args.run_b is not None:
        comparison = compare_runs(store, args.run_a, args.run_b, **margins)
    else:
        comparison = compare_with_previous(store, None if args.run_a is None else [args.run_a], **margins)
    if comparison.is_empty:
        raise PrunebenchError("nothing to compare: " + "; ".join(comparison.notes or ["no shared results"]))
    print(to_markdown(comparison))
    return 1 if comparison.has_regression else 0


def cmd_runs(args: argparse.Namespace) -> int:
    from reports.runs import remove_run, run_details, runs_table

    store = _results_database(args)
    if args.action == "list":
        if args.run_id is not None:
            raise PrunebenchError(f"`runs list` takes no run id (did you mean `prunebench runs show {args.run_id}`?)")
        lines = runs_table(store, model=args.model, method=args.method, limit=args.limit)
    elif args.run_id is None:
        raise PrunebenchError(f"`prunebench runs {args.action}` needs a run id (`prunebench runs` lists them)")
    elif args.action == "show":
        lines = run_details(store, args.run_id)
    else:
        lines = remove_run(store, args.run_id, records=args.records)
    print("\n".join(lines))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from flows.export import export_run
    from pruning.models.compressed import stored_format

    store = _results_database(args)
    dest = export_run(store, args.run_id, args.dest, dense=args.dense)
    storage = stored_format(dest)
    how = (f"compressed ({storage}): prunebench's load_model reads it; --dense for plain transformers" if storage
           else "plain safetensors: transformers' from_pretrained loads it")  # fmt: skip
    print(f"exported run {args.run_id} to {dest} ({how}); model card: {dest / 'README.md'}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    import yaml

    from flows.config import load_config
    from flows.export import export_run
    from flows.oneline import oneline_config

    config = oneline_config(
        args.model, args.method, sparsity=args.sparsity, drop_ratio=args.drop_ratio, fields=args.fields,
        calibration=args.calibration, n_samples=args.n_samples, seq_len=args.seq_len, suites=args.eval, limit=args.limit,
        dtype=args.dtype, device=args.device, database=args.database, workdir=args.workdir, cache=args.cache,
        offload=args.offload, adapter=args.adapter, trust_remote_code=args.trust_remote_code, include_path=args.include_path,
    )  # fmt: skip
    if args.out is not None and args.out.exists():
        raise PrunebenchError(f"--out {args.out} exists; name a new directory")
    path = args.database.parent / f"{config['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    load_config(path)  # a bad option fails here, naming the field, before anything loads
    print(f"config: {path}")
    status = cmd_run(argparse.Namespace(config=path, database=None, workdir=None, fail_on_regression=False))
    from reports.store import ResultStore

    runs = [run for run in ResultStore(args.database).runs(experiment=config["name"]) if run.method != "dense"]
    pruned = runs[-1]  # the run just recorded (runs are oldest first)
    print(f"\npruned checkpoint: {pruned.checkpoint}   (prunebench runs show {pruned.run_id[:8]})")
    if args.out is not None:
        export_run(ResultStore(args.database), pruned.run_id, args.out, dense=True)
        print(f"saved to {args.out}   (plain safetensors: transformers' from_pretrained loads it; model card in README.md)")
    return status


def _probability(text: str) -> float:
    value = _non_negative(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


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
    print(
        "\nA list for any field is a grid (`sparsity: [0.5, 0.7]`, `finetune: {lr: [1.0e-5, 1.0e-4]}`): one method per "
        "combination. A method is all of its parameters; `id` only names it."
    )
    return 0


def cmd_server(args: argparse.Namespace) -> int:
    from flows.deploy import run_server
    from flows.runtime import configure_environment

    configure_environment(args.workdir)  # PREFECT_HOME: where the server keeps its database
    return run_server(args.host, args.port)


def cmd_deploy(args: argparse.Namespace) -> int:
    import os

    from flows import deploy
    from flows.config import load_config
    from flows.runtime import configure_environment

    config = load_config(args.config, {"database": args.database, "workdir": args.workdir})  # fails at the door
    api_url = deploy.resolve_api_url(args.api_url)
    os.environ["PREFECT_API_URL"] = api_url  # before Prefect imports: every client below talks to this server
    configure_environment(config.output.workdir)
    schedule = deploy.cron_schedule(args.cron, args.timezone)  # a bad expression fails before the server is contacted
    deploy.require_server(api_url)
    if args.pool:
        deploy.require_process_pool(args.pool)
    from flows.benchmark import preflight

    preflight(config)
    name = args.name or config.name
    deployment = deploy.benchmark_deployment(args.config, config, schedule, name, pool=args.pool)
    what = f"deployment {deploy.FLOW_NAME}/{name} (cron {args.cron!r}, {args.timezone}) on {api_url}"
    if args.pool or args.no_serve:
        deployment_id = deploy.register(deployment)
        print(f"{what}: {deploy.ui_url_of(api_url)}/deployments/deployment/{deployment_id}")
        print(f"its runs start when a worker polls work pool {args.pool!r}: prefect worker start --pool {args.pool}"
              if args.pool else "nothing runs it yet: serve it with the same command without --no-serve")  # fmt: skip
        return 0
    print(f"serving {what}; Ctrl-C stops serving and pauses the schedule", flush=True)
    deploy.serve(deployment)
    return 0


if __name__ == "__main__":
    sys.exit(main())
