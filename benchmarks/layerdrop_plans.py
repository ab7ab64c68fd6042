"""Which layers each layer-drop option picks on the packaged SmolLM2-135M, and what a finetune step costs.

No evaluation: this prints the drop plans the options of docs/methods.md ("Layer dropping",
"INTERLACE") give at one drop ratio, from one redundancy measurement per `states` (text calibration
has no padding, so `padding` changes nothing here), so a reader sees which options can move a result
before paying for a study. SLEB's options need its NLL order (the study computes it); not run here.

With --time-finetune N it also times N optimizer steps of INTERLACE's default plan with the study's
finetune settings (only the partner layers train) and prints seconds per step and the steps that fit
in --budget-minutes, which sizes `finetune.examples` (examples = steps x effective batch).

    .venv/bin/python benchmarks/layerdrop_plans.py                                   # 32 x 256, as the studies
    .venv/bin/python benchmarks/layerdrop_plans.py --n-samples 4 --seq-len 64 --time-finetune 2   # quick
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from evals.corpora import corpus_documents
from pruning.calibration import calibration_ids
from pruning.finetune import finetune, layer_prefixes
from pruning.layerdrop import drop_layers, finetune_indices, layer_redundancy, select_layers
from pruning.models.adapters import adapter_for
from pruning.models.sources import load_model, materialize_packaged, text_tokenizer
from pruning.specs import ModelSpec

VARIANTS = [  # (label, selector, states, options, protect_first, protect_last)
    ("shortgpt", "shortgpt", "block_io", {}, 0, 0),
    ("shortgpt states=output_hidden_states", "shortgpt", "output_hidden_states", {}, 0, 0),
    ("angular", "angular", "block_io", {}, 0, 0),
    ("angular average=distance", "angular", "block_io", {"average": "distance"}, 0, 0),
    ("interlace", "interlace", "block_io", {}, 0, 0),
    ("interlace tokens=last", "interlace", "block_io", {"tokens": "last"}, 0, 0),
    ("interlace protect 2/2", "interlace", "block_io", {}, 2, 2),
    ("interlace protect 4/2", "interlace", "block_io", {}, 4, 2),
    ("interlace windows=to_last_input", "interlace", "block_io", {"windows": "to_last_input"}, 0, 0),
    ("interlace as its reference (output_hidden_states, to_last_input)", "interlace", "output_hidden_states",
     {"windows": "to_last_input"}, 0, 0),
    ("consecutive start=block", "consecutive", "block_io", {}, 0, 0),
    ("consecutive start=layer", "consecutive", "block_io", {"start": "layer"}, 0, 0),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache-dir", type=Path, default=Path(".prunebench/cache"))
    parser.add_argument("--n-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--drop-ratio", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--time-finetune", type=int, default=0, metavar="STEPS", help="time this many finetune steps (0: none)")
    parser.add_argument("--effective-batch", type=int, default=16)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--finetune-seq-len", type=int, default=128)
    parser.add_argument("--budget-minutes", type=float, default=60.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    spec = ModelSpec(source="packaged:smollm2-135m")
    path = materialize_packaged("smollm2-135m", args.cache_dir / "models")
    model, tokenizer = load_model(path, spec)
    adapter = adapter_for(model)
    texts = corpus_documents("jargon", "calibration", args.cache_dir)
    ids = calibration_ids(texts, text_tokenizer(tokenizer), args.n_samples, args.seq_len, seed=0)
    measured = {}
    for states in ("block_io", "output_hidden_states"):
        started = time.perf_counter()
        measured[states] = layer_redundancy(model, adapter, ids, batch_size=8, progress=False, states=states)
        print(f"redundancy ({states}): {time.perf_counter() - started:.1f} s")
    n_layers = measured["block_io"].n_layers
    for label, selector, states, options, first, last in VARIANTS:
        plan = select_layers(selector, args.drop_ratio, n_layers, redundancy=measured[states], options=options,
                             protect_first=first, protect_last=last)
        print(f"{label:66s} drop {list(plan.drop)}  finetune {list(plan.finetune)}")

    if args.time_finetune:
        plan = select_layers("interlace", args.drop_ratio, n_layers, redundancy=measured["block_io"])
        drop_layers(model, adapter, plan.drop)
        train_texts = corpus_documents("jargon", "train", args.cache_dir)
        n_examples = args.time_finetune * args.effective_batch
        rows = calibration_ids(train_texts, text_tokenizer(tokenizer), n_examples, args.finetune_seq_len, seed=0)
        stamps: list[float] = []
        finetune(model, [{"input_ids": rows[i : i + 1]} for i in range(n_examples)],
                 layer_prefixes(adapter, finetune_indices(plan)), lr=1e-4, micro_batch_size=args.micro_batch,
                 effective_batch=args.effective_batch, progress=False, on_step=lambda *_: stamps.append(time.perf_counter()))
        per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
        steps = int(args.budget_minutes * 60 / per_step) if per_step == per_step else 0
        print(f"finetune: {per_step:.1f} s per step ({args.effective_batch} x {args.finetune_seq_len} tokens, "
              f"{len(plan.finetune)} layers train, {args.threads} threads); {args.budget_minutes:g} min = {steps} steps "
              f"= examples {steps * args.effective_batch}")


if __name__ == "__main__":
    main()
