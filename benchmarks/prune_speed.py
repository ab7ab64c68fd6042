"""Local-pruning speed on CPU: each method's wall time and peak RSS, as a multiple of the floor.

The floor is one batched forward pass of the calibration set through the model: the least any
calibration-based method must spend. Sequential Wanda needs about two (statistics, then pruned
outputs, per block); magnitude needs none. Model: the packaged SmolLM2-135M, fp32.

    .venv/bin/python benchmarks/prune_speed.py             # 32 x 256 random tokens, ~2 min on 2 cores
    .venv/bin/python benchmarks/prune_speed.py --text some_prose.txt --n-samples 64
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

import torch

from evals.measure import measure_resources
from pruning.calibration import calibration_ids
from pruning.local.walk import prune_model
from pruning.models.adapters import adapter_for
from pruning.models.sources import load_model, materialize_packaged
from pruning.specs import ModelSpec

REPO = Path(__file__).resolve().parent.parent
METHODS = {  # label -> prune_model arguments
    "magnitude 50%": dict(method_name="magnitude", target=0.5),
    "wanda 50%": dict(method_name="wanda", target=0.5),
    "wanda 2:4": dict(method_name="wanda", n_m="2:4"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-samples", type=int, default=32, help="calibration sequences (default: 32)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per sequence (default: 256)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward (default: 8)")
    parser.add_argument("--text", type=Path, help="draw calibration windows from this text file instead of random ids")
    parser.add_argument("--repeats", type=int, default=1, help="runs per row; the fastest is reported (default: 1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".prunebench" / "cache" / "models")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    checkpoint = materialize_packaged("smollm2-135m", args.cache_dir)
    spec = ModelSpec(source=str(checkpoint))
    model, tokenizer = load_model(checkpoint, spec)
    if args.text:
        ids = calibration_ids([args.text.read_text()], tokenizer, args.n_samples, args.seq_len, args.seed)
    else:
        generator = torch.Generator().manual_seed(args.seed)
        ids = torch.randint(0, model.config.vocab_size, (args.n_samples, args.seq_len), generator=generator)
    print(f"SmolLM2-135M fp32, {args.n_samples} x {args.seq_len} tokens, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")

    # logits_to_keep=1: the walk never runs lm_head, so neither does the floor
    floors = []
    with torch.no_grad():
        model(input_ids=ids[:1], use_cache=False, logits_to_keep=1)  # warm-up, untimed
        for _ in range(args.repeats):
            with measure_resources() as usage:
                for batch in ids.split(args.batch_size):
                    model(input_ids=batch, use_cache=False, logits_to_keep=1)
            floors.append(usage)
    rows = {"forward (floor)": floors}
    for label, method in METHODS.items():
        rows[label] = []
        for _ in range(args.repeats):
            del model
            gc.collect()
            model, _ = load_model(checkpoint, spec)  # every run prunes the dense weights
            with measure_resources() as usage:
                prune_model(model, adapter_for(model), calibration=ids, batch_size=args.batch_size, progress=False, **method)
            rows[label].append(usage)

    floor_s = min(usage.wall_s for usage in floors)
    print(f"{'method':<16} {'seconds':>8} {'x floor':>8} {'peak RSS GB':>12}")
    for label, runs in rows.items():
        wall_s = min(usage.wall_s for usage in runs)
        peak_rss_gb = max(usage.peak_rss_gb for usage in runs)
        print(f"{label:<16} {wall_s:>8.2f} {wall_s / floor_s:>8.2f} {peak_rss_gb:>12.2f}")


if __name__ == "__main__":
    main()
