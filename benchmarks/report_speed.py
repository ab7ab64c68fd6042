"""Report speed: time `prunebench report` (html, markdown, text) on a database of 10,000 results.

The database is synthetic and written through ResultStore.record, one transaction per run, as the
benchmark flow writes it: 2 models x 31 configurations (dense; magnitude, wanda, sparsegpt and
2:4 at four sparsities; OWL and ECoFLaP allocations of 30 blocks x 7 layers; INTERLACE and ShortGPT
at three drop ratios with 30-layer redundancy matrices), 20 metrics per run, and as many repeated
flow runs (history) as it takes to reach the number of results. Reports read the latest run of
each configuration, so history costs query time, not page size.

    .venv/bin/python benchmarks/report_speed.py                      # 10,000 results, ~1 min on 2 cores
    .venv/bin/python benchmarks/report_speed.py --results 50000 --keep /tmp/big.duckdb
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from flows.cli import main as prunebench
from pruning.specs import method_identity
from reports.records import AllocationRow, RedundancyRow, ResultRow, RunBundle, RunRecord, StageRecord
from reports.store import ResultStore

MODELS = ("smollm2-135m", "toy-vlm")
SUITES = {f"suite_{index}": ("acc", "acc_norm") for index in range(9)} | {"jargon_ppl": ("word_perplexity", "bits_per_byte")}
BLOCKS, LAYERS = 30, ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
T0 = datetime(2025, 1, 1, tzinfo=timezone.utc)


def configurations() -> list[dict]:
    configs = [{"method": "dense", "label": "dense", "params": {"name": "dense"}, "sparsity": 0.0}]
    for method in ("magnitude", "wanda", "sparsegpt", "owl", "ecoflap"):
        for sparsity in (0.4, 0.5, 0.6, 0.7):
            label = f"{'owl+wanda' if method == 'owl' else 'ecoflap(zeroth)+wanda' if method == 'ecoflap' else method} {sparsity:.0%}"
            configs.append({"method": method, "label": label, "params": {"name": method, "sparsity": sparsity}, "sparsity": sparsity})
    configs += [{"method": m, "label": f"{m} 2:4", "params": {"name": m, "n_m": "2:4"}, "sparsity": 0.5} for m in ("wanda", "sparsegpt")]
    for method in ("interlace", "shortgpt"):
        for ratio in (0.125, 0.25, 0.375):
            configs.append({"method": method, "label": f"{method} {ratio * 100:g}%", "params": {"name": method, "drop_ratio": ratio},
                            "sparsity": ratio, "drop_ratio": ratio})  # fmt: skip
    return configs


def bundle(model: str, config: dict, repeat: int, rng: random.Random) -> RunBundle:
    run_id = f"{model}/{config['label']}/{repeat}"
    share = config["sparsity"] * 0.9  # the prunable linears are most of the model
    if "drop_ratio" in config:
        removed = dict(target_drop_ratio=config["drop_ratio"], layers_dropped=round(config["drop_ratio"] * BLOCKS), layers_total=BLOCKS)
    else:
        removed = dict(target_weight_sparsity=config["sparsity"], achieved_weight_sparsity=config["sparsity"])
    finished = T0 + timedelta(days=repeat, minutes=len(run_id))
    run = RunRecord(
        run_id=run_id, flow_run_id=f"flow-{repeat}", experiment="speed", config_hash=f"{model}/{config['label']}",
        model=model, model_source=f"packaged:{model}", method=config["method"], method_label=config["label"],
        method_id=method_identity(config["params"]), method_params=json.dumps(config["params"]),
        **removed, params_total=10**8, params_pruned=int(10**8 * share), params_pruned_share=share,
        seed=0, git_commit="0" * 40, package_versions="{}",
        host="bench", device="cpu", started_at=finished - timedelta(minutes=7), finished_at=finished,
    )  # fmt: skip
    keep = 1.0 - config["sparsity"] ** 2
    results = [
        ResultRow(run_id=run_id, suite=suite, metric=metric, value=(20.0 / keep if metric == "word_perplexity" else
                  0.6 * keep) * rng.uniform(0.98, 1.02), stderr=0.01, higher_is_better=metric != "word_perplexity",
                  is_primary=index == 0)
        for suite, metrics in SUITES.items() for index, metric in enumerate(metrics)
    ]  # fmt: skip
    stages = [StageRecord(run_id=run_id, stage=stage, wall_s=rng.uniform(1, 60), peak_rss_gb=rng.uniform(0.5, 2.0))
              for stage in ("model", "calibration", "prune", "evaluate")]  # fmt: skip
    allocations, redundancy = [], []
    if "drop_ratio" in config:
        redundancy = [
            RedundancyRow(run_id=run_id, method=config["method"], kind=kind, i=i, j=j, value=math.exp(-(j - i) / 6))
            for kind in ("cos_mean", "cos_last") for i in range(BLOCKS) for j in range(i + 1, BLOCKS)
        ]  # fmt: skip
    elif config["sparsity"]:
        spread = 0.08 if config["method"] in ("owl", "ecoflap") else 0.0
        allocations = [
            AllocationRow(run_id=run_id, modality="language", block=block, layer=f"layer.{name}", n_params=10**5,
                          target_sparsity=config["sparsity"] + spread * (2 * block / (BLOCKS - 1) - 1),
                          achieved_sparsity=config["sparsity"], block_score=rng.random() if spread else None)
            for block in range(BLOCKS) for name in LAYERS
        ]  # fmt: skip
    return RunBundle(run=run, results=results, stages=stages, allocations=allocations, redundancy=redundancy)


def build(path: Path, n_results: int) -> tuple[int, float]:
    rng = random.Random(0)
    configs = configurations()
    metrics_per_run = sum(len(metrics) for metrics in SUITES.values())
    per_repeat = len(MODELS) * len(configs) * metrics_per_run
    store = ResultStore(path)
    started = time.perf_counter()
    runs = 0
    for repeat in range(math.ceil(n_results / per_repeat)):
        for model in MODELS:
            for config in configs:
                if runs * metrics_per_run >= n_results:
                    break
                store.record(bundle(model, config, repeat, rng))
                runs += 1
    return runs, time.perf_counter() - started


def timed(argv: list[str], repeats: int, exit_codes: tuple[int, ...] = (0,)) -> tuple[float, int]:
    """Median wall seconds of `prunebench ARGV` in this process, and the size of what it printed."""
    seconds, size = [], 0
    for _ in range(repeats):
        printed = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(printed):
            assert prunebench(argv) in exit_codes
        seconds.append(time.perf_counter() - started)
        size = len(printed.getvalue())
    return statistics.median(seconds), size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--results", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3, help="timed renders per format (median reported)")
    parser.add_argument("--keep", type=Path, help="build the database here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        database = args.keep or Path(scratch) / "results.duckdb"
        runs, build_s = build(database, args.results)
        store = ResultStore(database)
        counts = {table: store.query(f"SELECT count(*) AS n FROM {table}")[0]["n"]
                  for table in ("runs", "results", "allocations", "redundancy", "stages")}  # fmt: skip
        print(f"database: {', '.join(f'{n:,} {table}' for table, n in counts.items())}")
        print(f"recorded {runs} runs in {build_s:.1f} s ({build_s / runs * 1000:.0f} ms per run, one transaction each)")
        page = Path(scratch) / "report.html"
        html_s, _ = timed(["report", "--db", str(database), "--format", "html", "--out", str(page)], args.repeats)
        print(f"report --format html      {html_s:6.2f} s   ({page.stat().st_size / 1024:,.0f} KiB page)")
        for format_ in ("markdown", "text", "json"):
            seconds, size = timed(["report", "--db", str(database), "--format", format_], args.repeats)
            print(f"report --format {format_:<9} {seconds:6.2f} s   ({size / 1024:,.0f} KiB)")
        seconds, _ = timed(["compare", "--db", str(database)], args.repeats, exit_codes=(0, 1))
        print(f"compare (latest flow run) {seconds:6.2f} s")


if __name__ == "__main__":
    main()
