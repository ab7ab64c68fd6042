"""Bring your own: every method on architectures, calibration data and evaluation tasks from outside.

Builds, under --scratch: tiny random-init OPT, Phi-3 and GPT-NeoX checkpoints (SmolLM2's tokenizer); a
local text file and a dataset in a Hugging Face hub cache of its own (a repository snapshot, as
`hf download --repo-type dataset` leaves one), both cut from the Jargon File's calibration split; and an
lm-eval task of the user's (multiple choice over a local JSONL, through `eval.include_path`). Then runs
one config through `prunebench run`: each family by every method (magnitude, Wanda, SparseGPT, Wanda 2:4,
OWL, ECoFLaP; ShortGPT, angular, SLEB, INTERLACE with its finetune, which trains on a built-in corpus's
train split), calibrated on the Jargon File; and Wanda on OPT calibrated on the text file and on the
hub-cache dataset. Prints the run's leaderboard (the flow's own output).

    .venv/bin/python benchmarks/bring_your_own.py            # about 10 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
FAMILIES = ("opt", "phi3", "gpt_neox")
FINETUNE = {"examples": 8, "seq_len": 32, "effective_batch": 4, "micro_batch": 2}
METHODS = [
    {"name": "dense"},
    {"name": "magnitude", "sparsity": 0.5},
    {"name": "wanda", "sparsity": 0.5},
    {"name": "sparsegpt", "sparsity": 0.5},
    {"name": "wanda", "sparsity": 0.5, "n_m": "2:4"},
    {"name": "owl", "sparsity": 0.5},
    {"name": "ecoflap", "sparsity": 0.5, "estimator": "per_block", "score_samples": 4},
    {"name": "shortgpt", "drop_ratio": 0.25},
    {"name": "angular", "drop_ratio": 0.25},
    {"name": "sleb", "drop_ratio": 0.25},
    {"name": "interlace", "drop_ratio": 0.25, "finetune": FINETUNE},
]
MC = [
    ("Which animal barks?", ["dog", "cat", "fish", "owl"], 0), ("What colour is grass?", ["blue", "green", "red", "black"], 1),
    ("How many legs has a spider?", ["two", "four", "six", "eight"], 3), ("Which is a fruit?", ["stone", "chair", "apple", "river"], 2),
    ("What falls from clouds?", ["rain", "sand", "glass", "bread"], 0), ("Where do fish live?", ["trees", "water", "deserts", "caves"], 1),
]  # fmt: skip


def tiny(family: str, vocab_size: int):
    import transformers as tf

    if family == "opt":
        return tf.OPTForCausalLM(tf.OPTConfig(hidden_size=64, num_hidden_layers=8, num_attention_heads=4, ffn_dim=128,
                                              vocab_size=vocab_size, word_embed_proj_dim=64, max_position_embeddings=128))  # fmt: skip
    if family == "phi3":
        return tf.Phi3ForCausalLM(tf.Phi3Config(hidden_size=64, num_hidden_layers=8, num_attention_heads=4, num_key_value_heads=2,
                                                intermediate_size=128, vocab_size=vocab_size, pad_token_id=0))  # fmt: skip
    return tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(hidden_size=64, num_hidden_layers=8, num_attention_heads=4, intermediate_size=128,
                                                  vocab_size=vocab_size, max_position_embeddings=128))  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scratch", type=Path, help="where everything is written (default: a new temporary folder)")
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".prunebench" / "cache", help="converted models and corpora")
    args = parser.parse_args(argv)
    scratch = (args.scratch or Path(tempfile.mkdtemp(prefix="byo-"))).resolve()
    scratch.mkdir(parents=True, exist_ok=True)

    import torch
    from transformers import AutoTokenizer

    from evals.corpora import corpus_documents
    from pruning.models.sources import materialize_packaged, save_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(materialize_packaged("smollm2-135m", args.cache_dir / "models"))
    documents = corpus_documents("jargon", "calibration", args.cache_dir)
    text = scratch / "domain.txt"
    text.write_text("\n\n".join(documents[: len(documents) // 2]))
    # the hub cache as `hf download --repo-type dataset user/domain-text` leaves it
    hub = scratch / "hf" / "hub"
    snapshot = hub / "datasets--user--domain-text" / "snapshots" / ("c0ffee" * 7)[:40]
    snapshot.mkdir(parents=True, exist_ok=True)
    (snapshot / "train.jsonl").write_text("".join(json.dumps({"text": doc}) + "\n" for doc in documents[len(documents) // 2:]))
    (hub / "datasets--user--domain-text" / "refs").mkdir(exist_ok=True)
    (hub / "datasets--user--domain-text" / "refs" / "main").write_text(snapshot.name)
    tasks, data = scratch / "tasks", scratch / "data"
    tasks.mkdir(exist_ok=True)
    data.mkdir(exist_ok=True)
    (data / "items.jsonl").write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in MC))
    (tasks / "my_mc.yaml").write_text(yaml.safe_dump({
        "task": "my_mc", "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data / "items.jsonl")}},
        "test_split": "test", "output_type": "multiple_choice", "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_choice": "choices", "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
    }, sort_keys=False))  # fmt: skip

    evaluation = {"suites": ["jargon_ppl", "my_mc"], "include_path": [str(tasks)], "limit": 20}
    calibration = {"n_samples": 8, "seq_len": 64, "batch_size": 4}
    studies = []
    for family in FAMILIES:
        torch.manual_seed(0)
        checkpoint = save_checkpoint(tiny(family, len(tokenizer)), tokenizer, scratch / f"tiny-{family}")
        studies.append({"model": {"source": str(checkpoint)}, "calibration": calibration, "methods": METHODS, "eval": evaluation})
    for corpus, extra, name in ((str(text), {}, "domain.txt"), ("user/domain-text", {"split": "train"}, "hub-cache dataset")):
        studies.append({"model": {"source": str(scratch / "tiny-opt")}, "calibration": {"corpus": corpus, **extra, **calibration},
                        "methods": [{"name": "wanda", "sparsity": 0.5, "id": f"wanda 50%, calibrated on {name}"}],
                        "eval": evaluation})  # fmt: skip
    config = {"name": "bring-your-own", "studies": studies,
              "output": {"database": str(scratch / "results.duckdb"), "workdir": str(scratch / "work"), "cache": str(args.cache_dir)}}  # fmt: skip
    path = scratch / "bring-your-own.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"config: {path}", flush=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env["HF_HUB_CACHE"] = str(hub)
    return subprocess.run([sys.executable, "-m", "flows.cli", "run", str(path)], cwd=REPO, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
