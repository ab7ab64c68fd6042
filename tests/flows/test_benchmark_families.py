"""End to end: OPT, Phi-3 and GPT-NeoX (built-in adapters) and StarCoder (an adapter YAML given in the
config) go through `prunebench run` by local path: weight pruning, an allocation, layer dropping with
the finetune stage, recorded in DuckDB."""

from __future__ import annotations

import pytest
import yaml

from tests.flows.test_benchmark import prunebench, query

pytestmark = pytest.mark.e2e

FAMILIES = ("opt", "phi3", "gpt_neox", "starcoder")
STARCODER_ADAPTER = {
    "family": "starcoder",
    "model_types": ["gpt_bigcode"],
    "groups": [{"modality": "language", "path": "transformer.h", "prunable": ["attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"], "droppable": True}],
}


def _model(family: str, vocab_size: int):
    import transformers as tf

    if family == "opt":
        return tf.OPTForCausalLM(tf.OPTConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, ffn_dim=128,
                                              vocab_size=vocab_size, word_embed_proj_dim=64, max_position_embeddings=64))  # fmt: skip
    if family == "phi3":
        return tf.Phi3ForCausalLM(tf.Phi3Config(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                                intermediate_size=128, vocab_size=vocab_size, pad_token_id=0))  # fmt: skip
    if family == "gpt_neox":
        return tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                                                      intermediate_size=128, vocab_size=vocab_size, max_position_embeddings=64))  # fmt: skip
    return tf.GPTBigCodeForCausalLM(tf.GPTBigCodeConfig(n_embd=64, n_layer=4, n_head=4, n_inner=128, vocab_size=vocab_size, n_positions=64))


@pytest.fixture(scope="module")
def families_run(module_tmp, cache_dir, smollm2_checkpoint):
    import torch
    from transformers import AutoTokenizer

    from pruning.models.sources import save_checkpoint

    tmp = module_tmp("families")
    tokenizer = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    adapter = tmp / "starcoder.yaml"
    adapter.write_text(yaml.safe_dump(STARCODER_ADAPTER))
    studies = []
    for family in FAMILIES:
        torch.manual_seed(0)
        checkpoint = save_checkpoint(_model(family, len(tokenizer)), tokenizer, tmp / f"tiny-{family}")
        model = {"source": str(checkpoint), **({"adapter": str(adapter)} if family == "starcoder" else {})}
        studies.append({
            "model": model,
            "calibration": {"n_samples": 4, "seq_len": 32, "batch_size": 4},
            "methods": [
                {"name": "dense"},
                {"name": "sparsegpt", "sparsity": 0.5},
                {"name": "owl", "sparsity": 0.5},
                {"name": "shortgpt", "drop_ratio": 0.25, "finetune": {"examples": 4, "seq_len": 32, "effective_batch": 2, "micro_batch": 2}},
            ],
            "eval": {"suites": ["jargon_ppl"], "limit": 2},
        })  # fmt: skip
    config = {
        "name": "families",
        "studies": studies,
        "output": {"database": str(tmp / "results.duckdb"), "workdir": str(tmp / "work"), "cache": str(cache_dir)},
    }
    path = tmp / "families.yaml"
    path.write_text(yaml.safe_dump(config))
    result = prunebench("run", str(path), timeout=1500)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "results.duckdb"


def test_every_family_is_pruned_dropped_finetuned_and_recorded(families_run):
    rows = query(families_run, "SELECT model, method_label, achieved_weight_sparsity, layers_dropped, layers_total FROM runs")
    assert len(rows) == 4 * len(FAMILIES)
    for model, label, sparsity, dropped, total in rows:
        if label.startswith(("sparsegpt", "owl")):
            assert sparsity == pytest.approx(0.5, abs=0.02), (model, label)
        if label.startswith("shortgpt"):
            assert (dropped, total) == (1, 4), (model, label)
    assert {model for model, *_ in rows} == {f"tiny-{family}" for family in FAMILIES}
    ppl = query(families_run, "SELECT count(*) FROM results WHERE metric = 'word_perplexity' AND isfinite(value)")
    assert ppl == [(4 * len(FAMILIES),)]
