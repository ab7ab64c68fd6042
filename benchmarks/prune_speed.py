"""Pruning speed and memory: each method's wall time as a multiple of the floor, and its working
memory, which must not grow with the number of layers.

The floor is one batched forward pass of the calibration set (no lm_head): the least any
calibration-based method must spend. Sequential Wanda needs about two per block (statistics,
then pruned outputs); SparseGPT adds a Hessian inverse per linear; magnitude needs no forward.
ECoFLaP's zeroth-order scores need 2 forward passes (with the loss) per weight tensor and score
batch (`--estimator per_block`: per block and batch): their cost is also given as a multiple of
exactly those passes.

Working memory = peak memory while pruning minus memory before it (the weights): one block's
activations and statistics. `--layer-scaling` prunes random-init models of L and 2L layers of the
same width and prints the ratio of their working memory (about 1 when nothing grows with depth).

    .venv/bin/python benchmarks/prune_speed.py                          # SmolLM2-135M, CPU, ~6 min on 2 cores
    .venv/bin/python benchmarks/prune_speed.py --layer-scaling          # working memory, L vs 2L layers
    python benchmarks/prune_speed.py --shape llama-7b --device cuda --dtype bfloat16 \\
        --n-samples 128 --seq-len 2048                                  # a GPU: LLaMA-2-7B-shaped, random init
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import psutil
import torch

from evals.measure import measure_resources
from pruning.allocation import allocate
from pruning.local.walk import calibration_batches, prune_model
from pruning.models.adapters import adapter_for, blocks, prunable_linears
from pruning.models.sources import load_model, materialize_packaged
from pruning.scores import zeroth_order_scores
from pruning.specs import ECoFLaPSpec, ModelSpec

REPO = Path(__file__).resolve().parent.parent
GIB = 1024**3
# label -> (local pruner, target, n_m, ECoFLaP zeroth-order allocation first)
METHODS = {
    "magnitude 50%": ("magnitude", 0.5, None, False),
    "wanda 50%": ("wanda", 0.5, None, False),
    "wanda 2:4": ("wanda", None, "2:4", False),
    "sparsegpt 50%": ("sparsegpt", 0.5, None, False),
    "sparsegpt 2:4": ("sparsegpt", None, "2:4", False),
    "ecoflap(zeroth)+wanda 50%": ("wanda", 0.5, None, True),
}
SHAPES = {  # random-init Llama shapes: hidden, intermediate, layers, heads, kv heads, vocab
    "llama-7b": (4096, 11008, 32, 32, 32, 32000),
    "smollm2-135m": (576, 1536, 30, 9, 3, 49152),
    "tiny": (64, 128, 8, 4, 4, 512),  # seconds on a CPU: for the tests of these scripts
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--shape", choices=sorted(SHAPES), help="a random-init Llama of this shape instead of the packaged SmolLM2")
    parser.add_argument("--layers", type=int, help="layers of the random-init shape (default: the shape's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--n-samples", type=int, default=32, help="calibration sequences (default: 32)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per sequence (default: 256)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward (default: 8)")
    parser.add_argument("--score-samples", type=int, default=8, help="samples for ECoFLaP's zeroth-order scores (default: 8)")
    parser.add_argument("--estimator", choices=["per_tensor", "per_block"], default="per_tensor", help="ECoFLaP zeroth-order estimator (default: per_tensor, as published; 7x the passes of per_block on a Llama)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS), metavar="METHOD")
    parser.add_argument("--layer-scaling", action="store_true", help="working memory of L vs 2L layers (random init, --shape width)")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@contextmanager
def measured(device: str):
    """Wall seconds, working memory (GiB above what was in use at the start: RSS on CPU, CUDA
    allocations on a GPU) and, on a GPU, peak CUDA allocations (GiB, the weights included) of the
    block, from `evals.measure.measure_resources` (which resets CUDA's peak when the block starts)."""
    result = {}
    gc.collect()
    cuda = device.startswith("cuda")
    synchronize(device)
    start_gb = (torch.cuda.memory_allocated() if cuda else psutil.Process().memory_info().rss) / GIB
    with measure_resources() as usage:
        try:
            yield result
        finally:
            synchronize(device)
    result["seconds"] = usage.wall_s
    result["work_gb"] = (usage.peak_gpu_gb if cuda else usage.peak_rss_gb) - start_gb
    result["peak_gpu_gb"] = usage.peak_gpu_gb if cuda else None


def build_model(args: argparse.Namespace, layers: int | None = None) -> Callable[[], torch.nn.Module]:
    """A factory of the dense model (each method prunes a fresh copy)."""
    dtype = getattr(torch, args.dtype)
    if args.shape is None and layers is None:
        checkpoint = materialize_packaged("smollm2-135m", REPO / ".prunebench" / "cache" / "models")
        spec = ModelSpec(source=str(checkpoint), dtype=args.dtype, device=args.device)
        return lambda: load_model(checkpoint, spec)[0]
    from transformers import LlamaConfig, LlamaForCausalLM

    hidden, intermediate, default_layers, heads, kv_heads, vocab = SHAPES[args.shape or "smollm2-135m"]
    config = LlamaConfig(
        hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers or args.layers or default_layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, vocab_size=vocab, max_position_embeddings=max(4096, args.seq_len),
    )

    def make() -> torch.nn.Module:
        torch.manual_seed(args.seed)
        default_dtype = torch.get_default_dtype()
        torch.set_default_dtype(dtype)  # built in its dtype: a 7B in bf16 never holds a float32 copy (27 GiB)
        try:
            with torch.device(args.device):
                model = LlamaForCausalLM(config)
        finally:
            torch.set_default_dtype(default_dtype)
        return model.to(dtype).eval()

    return make


def prune_once(make, ids, label: str, args: argparse.Namespace, execution_device: str | None = None) -> dict:
    """Prune a fresh model by `label`: seconds, working and peak memory (`measured`), and for ECoFLaP its scoring.
    `execution_device` (where the model is onloaded block by block) is passed to `prune_model` only when given."""
    local, target, n_m, ecoflap = METHODS[label]
    onloading = {} if execution_device is None else {"execution_device": execution_device}
    model = make()
    adapter = adapter_for(model)
    row = {}
    with measured(args.device) as total:
        block_sparsity = None
        if ecoflap:
            batches = calibration_batches(ids[: args.score_samples], args.batch_size)
            with measured(args.device) as scoring:
                scores = zeroth_order_scores(model, adapter, batches, progress=False, estimator=args.estimator)
            row["scores_s"] = scoring["seconds"]
            units = sum(len(prunable_linears(block, group)) for group in adapter.groups for block in blocks(model, group))
            row["score_passes"] = 2 * len(batches) * (units if args.estimator == "per_tensor" else len(scores.flat()[0]))
            block_sparsity = allocate(ECoFLaPSpec(name="ecoflap", sparsity=target), scores)
            target = None
        prune_model(
            model, adapter, local, ids if local != "magnitude" else None, block_sparsity=block_sparsity,
            target=target, n_m=n_m, batch_size=args.batch_size, progress=False, **onloading,
        )
    row.update(seconds=total["seconds"], work_gb=total["work_gb"], peak_gpu_gb=total["peak_gpu_gb"])
    del model
    gc.collect()
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


def forward_seconds(make, ids, args: argparse.Namespace, with_loss: bool) -> float:
    """One batched pass over `ids`: without lm_head (the pruning floor) or with the loss (what scoring runs)."""
    return forward_pass(make, ids, args, with_loss)["seconds"]


def forward_pass(make, ids, args: argparse.Namespace, with_loss: bool) -> dict:
    """`forward_seconds`, with the pass's working and peak memory (`measured`)."""
    model = make()
    with torch.no_grad():
        model(input_ids=ids[:1], use_cache=False, logits_to_keep=1)  # warm-up, untimed
        with measured(args.device) as floor:
            for batch in ids.split(args.batch_size):
                if with_loss:
                    model(input_ids=batch, labels=batch, use_cache=False)
                else:
                    model(input_ids=batch, use_cache=False, logits_to_keep=1)
    del model
    gc.collect()
    return floor


def speed_table(args: argparse.Namespace) -> None:
    make = build_model(args)
    probe = make()
    vocab, n_layers = probe.config.vocab_size, probe.config.num_hidden_layers
    weights_gb = sum(p.numel() * p.element_size() for p in probe.parameters()) / GIB
    del probe
    generator = torch.Generator().manual_seed(args.seed)
    ids = torch.randint(0, vocab, (args.n_samples, args.seq_len), generator=generator).to(args.device)
    name = f"random-init {args.shape}" if args.shape else "SmolLM2-135M"
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"{name} ({n_layers} layers, {weights_gb:.2f} GiB of weights, {args.dtype}), {args.n_samples} x {args.seq_len} tokens, "
          f"batch {args.batch_size}, {device}")
    floor = forward_seconds(make, ids, args, with_loss=False)
    loss_pass = forward_seconds(make, ids[: args.score_samples], args, with_loss=True) / max(1, -(-args.score_samples // args.batch_size))
    print(f"floor: one forward pass of the calibration set {floor:.2f} s; one scoring forward (batch {args.batch_size}, with loss) {loss_pass:.3f} s")
    print(f"{'method':<27} {'seconds':>9} {'x floor':>8} {'working GiB':>12}   notes")
    for label in args.methods:
        row = prune_once(make, ids, label, args)
        note = ""
        if "scores_s" in row:
            needed = row["score_passes"] * loss_pass
            note = f"scores {row['scores_s']:.1f} s = {row['scores_s'] / needed:.2f} x the {row['score_passes']} forward passes they need"
        print(f"{label:<27} {row['seconds']:>9.2f} {row['seconds'] / floor:>8.2f} {row['work_gb']:>12.3f}   {note}")


def layer_scaling(args: argparse.Namespace) -> None:
    base = args.layers or 4
    generator = torch.Generator().manual_seed(args.seed)
    shape = args.shape or "smollm2-135m"
    vocab = SHAPES[shape][5]
    ids = torch.randint(0, vocab, (args.n_samples, args.seq_len), generator=generator).to(args.device)
    print(f"random-init {shape} width, {base} vs {2 * base} layers, {args.n_samples} x {args.seq_len} tokens, {args.device}, {args.dtype}")
    print(f"{'method':<27} {'GiB @' + str(base):>10} {'GiB @' + str(2 * base):>10} {'ratio':>7}")
    for label in args.methods:
        # each measurement in a fresh process: memory freed by an earlier run would be reused unseen
        work = [_working_memory(args, layers, ids.cpu(), label) for layers in (base, 2 * base)]
        ratio = work[1] / work[0] if work[0] > 0 else float("nan")
        print(f"{label:<27} {work[0]:>10.3f} {work[1]:>10.3f} {ratio:>7.2f}")


def _working_memory(args: argparse.Namespace, layers: int, ids: torch.Tensor, label: str) -> float:
    """Working memory of one pruning run, measured in a fresh process."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_prune_in_this_process, args, layers, ids, label).result()


def _prune_in_this_process(args: argparse.Namespace, layers: int, ids: torch.Tensor, label: str) -> float:
    return prune_once(build_model(args, layers), ids.to(args.device), label, args)["work_gb"]


def main() -> None:
    args = parse_args()
    if args.layer_scaling:
        layer_scaling(args)
    else:
        speed_table(args)


if __name__ == "__main__":
    main()
