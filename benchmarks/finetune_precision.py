"""What a bf16 model learns in the finetune stage with fp32 master copies and without, against fp32.

The packaged SmolLM2-135M; --layers train (default the middle five, as a healing finetune after
dropping would), --steps optimizer steps of --batch windows of --seq-len tokens from the Jargon
File's train split, at --lr (INTERLACE's 1e-5) with the stage's schedule (3% warmup, cosine).
Three variants, each from the same weights (the bf16 ones rounded from the fp32 ones):

  fp32            weights and AdamW in fp32
  bf16 + masters  weights stored in bf16, stepped through fp32 copies (`finetune`'s default)
  bf16 stepped    weights and AdamW in bf16 (`master_weights=False`)

Per variant: the share of trained weights that moved, the mean |update|, the cosine of its update
with the fp32 run's, the held-out loss (--eval windows of the calibration split) before and after,
and seconds per step. Ratios are of one run, on this machine.

    .venv/bin/python benchmarks/finetune_precision.py
    .venv/bin/python benchmarks/finetune_precision.py --steps 4 --batch 2 --seq-len 64 --eval 4   # a quick check
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from prune_speed import REPO
from evals.corpora import corpus_documents
from pruning.calibration import calibration_ids
from pruning.finetune import finetune
from pruning.models.sources import load_model, load_tokenizer, materialize_packaged
from pruning.scores.common import calibration_loss
from pruning.specs import ModelSpec

CACHE = REPO / ".prunebench" / "cache"
VARIANTS = {"fp32": ("float32", True), "bf16 + masters": ("bfloat16", True), "bf16 stepped": ("bfloat16", False)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1]
    )  # fmt: skip
    parser.add_argument("--layers", type=int, nargs="+", default=[13, 14, 15, 16, 17], help="decoder layers that train (default: 13-17 of 30)")
    parser.add_argument("--steps", type=int, default=16, help="optimizer steps (default: 16)")
    parser.add_argument("--batch", type=int, default=4, help="windows per step, one micro-batch (default: 4)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per window (default: 128)")
    parser.add_argument("--lr", type=float, default=1e-5, help="peak learning rate (default: 1e-5, INTERLACE's)")
    parser.add_argument("--eval", type=int, default=16, help="held-out windows of the calibration split (default: 16)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("steps", "batch", "seq_len", "eval"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not args.lr > 0:
        parser.error("--lr must be positive")
    return args


def held_out_loss(model: torch.nn.Module, ids: torch.Tensor) -> float:
    with torch.inference_mode():
        return sum(calibration_loss(model, {"input_ids": ids[i : i + 1]}).item() for i in range(ids.shape[0])) / ids.shape[0]


def run(variant: str, checkpoint, train_ids: torch.Tensor, eval_ids: torch.Tensor, args: argparse.Namespace) -> dict:
    dtype, masters = VARIANTS[variant]
    model, _ = load_model(checkpoint, ModelSpec(source=str(checkpoint), dtype=dtype))
    prefixes = [f"model.layers.{i}." for i in args.layers]
    start = {n: p.detach().float().clone() for n, p in model.named_parameters() if n.startswith(tuple(prefixes))}
    before = held_out_loss(model, eval_ids)
    started = time.perf_counter()
    report = finetune(
        model, [{"input_ids": train_ids[i : i + 1]} for i in range(train_ids.shape[0])], prefixes, lr=args.lr,
        effective_batch=args.batch, micro_batch_size=args.batch, master_weights=masters, seed=args.seed, progress=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    update = torch.cat([(p.detach().float() - start[n]).flatten() for n, p in model.named_parameters() if n in start])
    return {
        "update": update, "moved": float((update != 0).float().mean()), "mean_abs": float(update.abs().mean()),
        "before": before, "after": held_out_loss(model, eval_ids), "s_per_step": seconds / report.steps,
        "first_loss": report.first_loss, "last_loss": report.last_loss, "master_params": report.master_params,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = materialize_packaged("smollm2-135m", CACHE / "models")
    tokenizer = load_tokenizer(checkpoint, ModelSpec(source=str(checkpoint)))
    train_ids = calibration_ids(corpus_documents("jargon", "train", CACHE), tokenizer, args.steps * args.batch, args.seq_len, args.seed)
    eval_ids = calibration_ids(corpus_documents("jargon", "calibration", CACHE), tokenizer, args.eval, args.seq_len, args.seed + 1)
    print(f"SmolLM2-135M, layers {args.layers} train: {args.steps} steps of {args.batch} x {args.seq_len} tokens, lr {args.lr:g}; "
          f"held-out loss on {args.eval} x {args.seq_len}; {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")  # fmt: skip
    rows = {variant: run(variant, checkpoint, train_ids, eval_ids, args) for variant in VARIANTS}
    reference = rows["fp32"]["update"]
    print(f"\n| variant | weights moved | mean abs update | cosine with fp32's update | held-out loss before -> after | s/step |")
    print("|---|---:|---:|---:|---:|---:|")
    for variant, row in rows.items():
        cosine = float(torch.nn.functional.cosine_similarity(row["update"].double(), reference.double(), dim=0)) if row["update"].any() else float("nan")
        print(f"| {variant} | {row['moved']:.1%} | {row['mean_abs']:.2e} | {cosine:.3f} | {row['before']:.4f} -> {row['after']:.4f} | {row['s_per_step']:.2f} |")
    n = rows["bf16 + masters"]["master_params"]
    print(f"\nfp32 master copies: {n / 1e6:.1f} M elements, +{n * 8 / 2**20:.0f} MiB (copy and gradient) and fp32 instead of bf16 AdamW moments "
          f"(+{n * 4 / 2**20:.0f} MiB); s/step {rows['bf16 + masters']['s_per_step'] / rows['bf16 stepped']['s_per_step']:.2f}x of bf16 stepped")  # fmt: skip


if __name__ == "__main__":
    main()
