"""End to end: a tiny Llama calibrated on the user's own text file; editing the file recomputes the
calibration set and what was computed from it, and nothing else."""

from __future__ import annotations

import pytest
import yaml

from tests.flows.test_benchmark import prunebench, query

pytestmark = pytest.mark.e2e

DOMAIN = "\n\n".join(f"Clause {index}: the supplier shall deliver the goods within {index + 2} working days of the order." for index in range(40))


@pytest.fixture(scope="module")
def runs(module_tmp, cache_dir, smollm2_checkpoint):
    """Three runs of one config: as written, unchanged, and after the corpus file was edited."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pruning.models.sources import save_checkpoint

    tmp = module_tmp("own-calibration")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)  # fmt: skip
    checkpoint = save_checkpoint(LlamaForCausalLM(config), tokenizer, tmp / "tiny-llama")
    corpus = tmp / "contracts.txt"
    corpus.write_text(DOMAIN)
    path = tmp / "own-calibration.yaml"
    path.write_text(yaml.safe_dump({
        "name": "own-calibration",
        "studies": [{
            "model": {"source": str(checkpoint)},
            "calibration": {"corpus": str(corpus), "n_samples": 4, "seq_len": 32, "batch_size": 4},
            "methods": [{"name": "dense"}, {"name": "wanda", "sparsity": 0.5}],
            "eval": {"suites": ["jargon_ppl"], "limit": 2},
        }],
        "output": {"database": str(tmp / "results.duckdb"), "workdir": str(tmp / "work"), "cache": str(cache_dir)},
    }))  # fmt: skip
    outputs = []
    for edit in (None, None, "Clause 0: the buyer pays within thirty days. " * 40):
        if edit:
            corpus.write_text(edit)
        result = prunebench("run", str(path))
        assert result.returncode == 0, result.stderr[-3000:]
        outputs.append(result.stdout + result.stderr)
    return tmp, outputs


def _stages(database, flow_run: int) -> dict[tuple[str, str], bool]:
    """(method, stage) -> cached, for the `flow_run`-th flow run (0 first)."""
    flow_runs = [row[0] for row in query(database, "SELECT flow_run_id, min(started_at) FROM runs GROUP BY 1 ORDER BY 2")]
    rows = query(database, f"SELECT r.method_label, s.stage, s.cached FROM stages s JOIN runs r USING (run_id) "
                           f"WHERE r.flow_run_id = '{flow_runs[flow_run]}'")  # fmt: skip
    return {(method, stage): cached for method, stage, cached in rows}


def test_an_unchanged_corpus_is_cached_and_an_edited_one_recomputed(runs):
    tmp, outputs = runs
    database = tmp / "results.duckdb"
    first, unchanged, edited = (_stages(database, index) for index in range(3))
    assert not first[("wanda 50%", "calibration")] and not first[("wanda 50%", "prune")]
    assert unchanged[("wanda 50%", "calibration")] and unchanged[("wanda 50%", "prune")] and unchanged[("wanda 50%", "evaluate")]
    # the edited file: a new calibration set, so a new pruned checkpoint and its evaluation; the dense model's evaluation stays
    assert not edited[("wanda 50%", "calibration")] and not edited[("wanda 50%", "prune")] and not edited[("wanda 50%", "evaluate")]
    assert edited[("dense", "evaluate")]
    sets = sorted(path.name for path in (tmp / "work" / "calibration").iterdir())
    assert len(sets) == 2 and all(name.startswith("tiny-llama-contracts.txt-") for name in sets), sets
