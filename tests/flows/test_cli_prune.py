"""The one-line prune end to end, then `runs` list/show/rm and `report --config` on what it recorded."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.flows.test_benchmark import prunebench, query
from tests.flows.test_sweep import tiny_llama

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pruned(module_tmp, cache_dir, smollm2_checkpoint, user_mc_task):
    tmp = module_tmp("oneline")
    model = tiny_llama(tmp / "tiny-llama", smollm2_checkpoint)
    tasks = user_mc_task(tmp / "user")
    result = prunebench("prune", str(model), "--method", "wanda", "--sparsity", "0.5", "--n-samples", "4", "--seq-len", "32",
                        "--eval", "jargon_ppl,my_mc", "--include-path", str(tasks),
                        "--limit", "2", "--out", str(tmp / "out" / "wanda50"), "--database", str(tmp / "results.duckdb"),
                        "--workdir", str(tmp / "work"), "--cache", str(cache_dir))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, result


def test_prune_runs_the_flow_records_it_and_saves_a_loadable_checkpoint(pruned):
    tmp, result = pruned
    from transformers import AutoModelForCausalLM

    config = tmp / "prune-tiny-llama-wanda-50.yaml"
    assert f"config: {config}" in result.stdout and yaml.safe_load(config.read_text())["studies"][0]["methods"][1] == {
        "name": "wanda", "sparsity": 0.5}  # fmt: skip
    checkpoint = re.search(r"^pruned checkpoint: (\S+)", result.stdout, re.M).group(1)
    assert checkpoint.startswith(str(tmp / "work" / "checkpoints" / "tiny-llama" / "wanda-50pct-"))
    assert f"  tiny-llama / wanda 50%  {checkpoint}  (" in result.stdout  # the run's own list of checkpoints
    assert query(tmp / "results.duckdb", "SELECT method_label, checkpoint FROM runs WHERE method = 'wanda'") == [("wanda 50%", checkpoint)]
    # the user's own task (--include-path), evaluated beside the built-in suite for both runs
    assert yaml.safe_load(config.read_text())["studies"][0]["eval"]["include_path"] == [str(tmp / "user" / "tasks")]
    assert query(tmp / "results.duckdb", "SELECT DISTINCT suite FROM results ORDER BY 1") == [("jargon_ppl",), ("my_mc",)]
    saved = AutoModelForCausalLM.from_pretrained(tmp / "out" / "wanda50")
    weight = saved.model.layers[0].mlp.up_proj.weight
    assert (weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)


def test_runs_lists_shows_and_removes_with_report_by_config(pruned):
    tmp, _ = pruned
    config = str(tmp / "prune-tiny-llama-wanda-50.yaml")
    listed = prunebench("runs", "--config", config)
    assert listed.returncode == 0, listed.stderr
    wanda = [line for line in listed.stdout.splitlines() if "wanda 50%" in line]
    assert len(wanda) == 1 and "jargon_ppl word_perplexity" in wanda[0]
    run_id = wanda[0].split()[0]
    shown = prunebench("runs", "show", run_id, "--database", str(tmp / "results.duckdb"))
    assert shown.returncode == 0 and '"achieved_sparsity": 0.5' in shown.stdout and '"n_samples": 4' in shown.stdout, shown.stderr
    report = prunebench("report", "--config", config)
    assert report.returncode == 0 and "wanda 50%" in report.stdout, report.stderr
    dense = [line for line in listed.stdout.splitlines() if " dense " in line][0].split()[0]
    refused = prunebench("runs", "rm", dense, "--config", config)
    assert refused.returncode != 0 and "the model's own files" in refused.stderr and (tmp / "tiny-llama").is_dir()
    removed = prunebench("runs", "rm", run_id, "--records", "--config", config)
    assert removed.returncode == 0 and "deleted run" in removed.stdout, removed.stderr
    assert query(tmp / "results.duckdb", "SELECT count(*) FROM runs WHERE method = 'wanda'") == [(0,)]
    assert (tmp / "out" / "wanda50").is_dir()  # the user's copy is theirs
    missing = prunebench("runs", "show")
    assert missing.returncode != 0 and missing.stderr.count("\n") == 1
