"""Cache invalidation: which stages a change of code or of a package recomputes.

Runs a small benchmark config (a random-init 8-layer Llama with SmolLM2's tokenizer, dense and
Wanda 50%, one local suite) through the benchmark flow, then reruns it after each of these changes,
one at a time, from the original tree:

    unchanged                  nothing changed
    edit tasks/calibration.py  a helper of the tasks that read calibration data
    edit reports/leaderboard.py  code no cached stage imports
    lm-eval <version>+fake     the evaluation harness "upgraded"

and prints, per run, how many cached stages were computed and how many were taken from the cache
(Prefect's task runs of the flow run: `Completed` or `Cached`), and which were computed.

Nothing in the checkout is edited: the cache policy (`tasks.cache.CODE`) reads its sources from a
copy of the project's packages, and the copy is what is edited; the package version comes from
the policy's version lookup. Everything is written under --scratch (a temporary folder by default).

    .venv/bin/python benchmarks/cache_invalidation.py           # about a minute on 2 cores
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from flows.runtime import configure_environment

REPO = Path(__file__).resolve().parent.parent
HELPER = "tasks/calibration.py"
UNIMPORTED = "reports/leaderboard.py"
PACKAGE = "lm-eval"
STUDY = {
    "calibration": {"n_samples": 4, "seq_len": 32, "batch_size": 4},
    "methods": [{"name": "dense"}, {"name": "wanda", "sparsity": 0.5}],
    "eval": {"suites": ["jargon_ppl"], "limit": 4},
}


@dataclass
class Rerun:
    """One flow run: which cached stages it computed and which it read from the cache (by stage name)."""

    scenario: str
    computed: Counter
    cached: Counter

    def row(self) -> str:
        names = ", ".join(f"{stage}×{n}" if n > 1 else stage for stage, n in sorted(self.computed.items())) or "-"
        return f"{self.scenario:<30} {sum(self.computed.values()):>8} {sum(self.cached.values()):>6}   {names}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scratch", type=Path, help="folder for the tree copy, the model, the workdir and the results (default: a temporary one, removed)")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".prunebench" / "cache",
                        help="prunebench's cache: the packaged SmolLM2 (its tokenizer) and the corpora (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="cache-invalidation-"))
    try:
        reruns = measure(scratch.resolve(), args.cache_dir.resolve())
    finally:
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"{'scenario':<30} {'computed':>8} {'cached':>6}   computed stages")
    for rerun in reruns:
        print(rerun.row())
    return 0


def measure(scratch: Path, cache_dir: Path) -> list[Rerun]:
    """The first run, then one rerun per scenario, each from the original tree and environment."""
    configure_environment(scratch / "work")  # before Prefect imports: it reads its settings then
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from flows.environment import installed_versions
    from tasks.cache import CODE, PROJECT_PACKAGES

    tree = scratch / "project"
    config = write_config(scratch, tiny_llama(scratch / "tiny-llama", cache_dir), cache_dir)
    installed = dict(installed_versions())
    fake = {**installed, PACKAGE: f"{installed[PACKAGE]}+fake"}
    scenarios = [
        ("first run", None, installed),
        ("unchanged", None, installed),
        (f"edit {HELPER}", HELPER, installed),
        (f"edit {UNIMPORTED}", UNIMPORTED, installed),
        (f"{PACKAGE} {fake[PACKAGE]}", None, fake),
    ]
    original = (CODE.root, CODE.versions)
    reruns = []
    try:
        for scenario, edited, versions in scenarios:
            copy_tree(tree, PROJECT_PACKAGES)
            if edited is not None:
                with open(tree / edited, "a", encoding="utf-8") as source:
                    source.write("\n_EDITED_BY_THE_CACHE_INVALIDATION_BENCHMARK = True\n")
            CODE.root, CODE.versions = tree, (lambda versions=versions: versions)
            CODE.reread()
            reruns.append(flow_run_stages(scenario, config))
    finally:
        CODE.root, CODE.versions = original
        CODE.reread()
    return reruns


def copy_tree(tree: Path, packages) -> None:
    """The project's packages as they are in the checkout (sources only)."""
    shutil.rmtree(tree, ignore_errors=True)
    for package in packages:
        shutil.copytree(REPO / package, tree / package, ignore=shutil.ignore_patterns("__pycache__"))


def tiny_llama(directory: Path, cache_dir: Path) -> Path:
    """An 8-layer random-init Llama (hidden 64) with SmolLM2's tokenizer, saved as a checkpoint directory."""
    if directory.is_dir():
        return directory
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pruning.models.sources import materialize_packaged, save_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(materialize_packaged("smollm2-135m", cache_dir / "models"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=8,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return save_checkpoint(LlamaForCausalLM(config), tokenizer, directory)


def write_config(scratch: Path, checkpoint: Path, cache_dir: Path) -> Path:
    import yaml

    config = {
        "name": "cache-invalidation",
        "studies": [{"model": {"source": str(checkpoint)}, **STUDY}],
        "output": {"database": str(scratch / "results.duckdb"), "workdir": str(scratch / "work"), "cache": str(cache_dir)},
    }
    path = scratch / "cache-invalidation.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def flow_run_stages(scenario: str, config: Path) -> Rerun:
    """Run the benchmark flow on `config`; its cached stages' task runs, computed or read from the cache."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.benchmark import benchmark
    from tasks.common import cached_tasks

    state = benchmark(str(config), return_state=True)
    state.result()  # raises what the flow raised
    cached_keys = {task.task_key for task in cached_tasks()}
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id])))
    stages = [(run.name.split("[")[0], run.state_name) for run in runs if run.task_key in cached_keys]
    return Rerun(
        scenario,
        computed=Counter(stage for stage, state_name in stages if state_name != "Cached"),
        cached=Counter(stage for stage, state_name in stages if state_name == "Cached"),
    )


if __name__ == "__main__":
    sys.exit(main())
