"""Ours against llm-compressor (the peer) on SmolLM2-135M: Wanda and SparseGPT, time, quality and masks.

Both tools prune the same dense safetensors checkpoint (the packaged GGUF, dequantized as the
pipeline does it: `materialize_packaged`) at the same uniform sparsity, from the SAME calibration
token ids (--n-samples windows of --seq-len tokens of the Jargon File's calibration split, written
once as safetensors and read by both), in batches of --batch-size, with --threads torch threads
each. Every pruning run is a fresh process: ours is this file in `--worker` mode (our venv), the
peer is benchmarks/peer_driver.py under `.peer-venv/bin/python` (`make peer`). Only the pruning
call is timed (`prune_model` / `oneshot`), not loading or writing. Within each of --rounds rounds
both tools run once per method, the order alternating (ours first in even rounds, the peer first in
odd ones), so drift in the machine's load falls on both.

Same settings on both sides (llm-compressor 0.14.0.1, read in its modifiers' source; see
peer_driver.py): the 7 linears of every decoder layer are pruned, lm_head is not; sequential, layer
by layer, the pruned layer's outputs feeding the next layer; Wanda scores |W|·‖X_j‖ per output row;
SparseGPT with block size --block-size (128 both) and dampening --damp · mean(diag H) (0.01 both).
Known differences that remain: the peer's SparseGPT selects each block's mask with `<=` a sorted
threshold (at least int(n·s) weights, ties included), ours exactly int(n·s) (issue 16); the Hessian
and Wanda's ‖X_j‖² are running averages over sequences there and a running average over tokens / a
plain sum here (common factors: SparseGPT's relative dampening cancels its own, neither changes a
ranking, only the rounding); ties in Wanda's scores are broken by a stable sort there, by `topk` here.
Our extra options (`--option`, e.g. a mask rule) reach our pruner only.

Printed per method: median seconds of ours and of the peer over the rounds, their ratio, held-out
NLL (mean token loss on --heldout windows of the test split, evaluated here on both pruned models)
of ours and the peer's, the share of zeros in the pruned linears of each, and mask agreement (share
of weights pruned by both or kept by both), overall and per linear. The goal (issue 16): NLL within
0.01 and ours ≤ 1.0× the peer's time.

    make peer     # once: llm-compressor's own venv, .peer-venv
    .venv/bin/python benchmarks/peer_llmcompressor.py --rounds 3      # full size: 32 x 256 tokens, 2 threads, all 30 layers
    .venv/bin/python benchmarks/peer_llmcompressor.py --n-samples 4 --seq-len 64 --heldout 4 --threads 1 --layers 4   # a quick check
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from finetune_precision import held_out_loss
from prune_speed import REPO
from evals.corpora import corpus_documents
from pruning.calibration import calibration_ids, load_calibration, save_calibration
from pruning.models.sources import load_model, load_tokenizer, materialize_packaged, save_checkpoint
from pruning.specs import ModelSpec

CACHE = REPO / ".prunebench" / "cache"
PEER_PYTHON = REPO / ".peer-venv" / "bin" / "python"
DRIVER = Path(__file__).resolve().parent / "peer_driver.py"
METHODS = ("wanda", "sparsegpt")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1]
    )  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--n-samples", type=int, default=32, help="calibration windows (default: 32)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per window (default: 256)")
    parser.add_argument("--batch-size", type=int, default=8, help="windows per forward, both tools (default: 8)")
    parser.add_argument("--heldout", type=int, default=16, help="held-out windows of --seq-len tokens, test split (default: 16)")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each tool per method, order alternating (default: 1)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of each tool (default: 2)")
    parser.add_argument("--sparsity", type=float, default=0.5)
    parser.add_argument("--block-size", type=int, default=128, help="SparseGPT's column block, both tools (default: 128)")
    parser.add_argument("--damp", type=float, default=0.01, help="SparseGPT's dampening fraction, both tools (default: 0.01)")
    parser.add_argument("--layers", type=int, help="keep only the first N decoder layers (quick checks; default: all 30)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="extra keyword option of our pruner (JSON value), e.g. --option mask_rule='\"reference\"'")  # fmt: skip
    parser.add_argument("--work", type=Path, default=REPO / ".prunebench" / "peer", help="scratch folder (default: .prunebench/peer)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker", nargs=4, metavar=("CHECKPOINT", "CALIBRATION", "METHOD", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in ("n_samples", "seq_len", "batch_size", "heldout", "rounds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def our_options(args: argparse.Namespace, method: str) -> dict:
    options = {"blocksize": args.block_size, "damp": args.damp} if method == "sparsegpt" else {}
    for item in args.option:
        key, _, value = item.partition("=")
        options[key] = json.loads(value)
    return options


def worker(args: argparse.Namespace) -> None:
    """Our side of one run (a fresh process): prune, write the decoder layers' linear weights, print seconds."""
    from pruning.local.walk import prune_model
    from pruning.models.adapters import adapter_for

    checkpoint, calibration, method, out = args.worker
    model, _ = load_model(Path(checkpoint), ModelSpec(source=checkpoint))
    ids = load_calibration(Path(calibration))
    started = time.perf_counter()
    prune_model(
        model, adapter_for(model), method, ids, target=args.sparsity, batch_size=args.batch_size, progress=False,
        options=our_options(args, method),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    save_file(decoder_linears(model), out)
    print(json.dumps({"seconds": seconds, "threads": torch.get_num_threads()}))


def decoder_linears(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """{`<name>.weight`: weight} of every linear inside the decoder layers (what both tools prune)."""
    return {
        f"{name}.weight": module.weight.detach().contiguous()
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and ".layers." in name
    }


def run(command: list[str], threads: int) -> dict:
    """Run one pruning process; its last stdout line is its JSON result."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare(args: argparse.Namespace) -> tuple[Path, Path, torch.Tensor]:
    """The dense checkpoint (cut to --layers when given), the calibration file and the held-out ids."""
    args.work.mkdir(parents=True, exist_ok=True)
    checkpoint = materialize_packaged("smollm2-135m", CACHE / "models")
    spec = ModelSpec(source=str(checkpoint))
    tokenizer = load_tokenizer(checkpoint, spec)
    if args.layers:
        model, _ = load_model(checkpoint, spec)
        model.model.layers = model.model.layers[: args.layers]
        model.config.num_hidden_layers = args.layers
        checkpoint = save_checkpoint(model, tokenizer, args.work / f"smollm2-135m-{args.layers}-layers")
    ids = calibration_ids(corpus_documents("jargon", "calibration", CACHE), tokenizer, args.n_samples, args.seq_len, args.seed)
    calibration = save_calibration(ids, args.work / "calibration.safetensors")
    heldout = calibration_ids(corpus_documents("jargon", "test", CACHE), tokenizer, args.heldout, args.seq_len, args.seed + 1)
    return checkpoint, calibration, heldout


def nll(checkpoint: Path, weights: dict[str, torch.Tensor] | None, heldout: torch.Tensor) -> float:
    """Held-out mean token loss of the dense checkpoint with `weights` put in place."""
    model, _ = load_model(checkpoint, ModelSpec(source=str(checkpoint)))
    if weights is not None:
        missing = set(weights) - set(model.state_dict())
        if missing:
            raise SystemExit(f"pruned weights {sorted(missing)[:3]} are not in the model")
        model.load_state_dict(weights, strict=False)
    return held_out_loss(model, heldout)


def agreement(ours: dict[str, torch.Tensor], peer: dict[str, torch.Tensor]) -> tuple[float, dict[str, float]]:
    """Share of weights whose pruned/kept state is the same in both, overall and per linear name (q_proj, ...)."""
    same, total, by_kind = 0, 0, {}
    for name, weight in ours.items():
        equal = ((weight == 0) == (peer[name] == 0)).sum().item()
        same, total = same + equal, total + weight.numel()
        kind = name.split(".")[-2]
        hit, count = by_kind.get(kind, (0, 0))
        by_kind[kind] = (hit + equal, count + weight.numel())
    return same / total, {kind: hit / count for kind, (hit, count) in by_kind.items()}


def zero_share(weights: dict[str, torch.Tensor]) -> float:
    """Share of zero entries over all the pruned linears."""
    return sum((weight == 0).sum().item() for weight in weights.values()) / sum(weight.numel() for weight in weights.values())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        worker(args)
        return
    if not PEER_PYTHON.exists():
        raise SystemExit(f"{PEER_PYTHON} is missing: run `make peer` first")
    checkpoint, calibration, heldout = prepare(args)
    here = Path(__file__).resolve()
    settings = [f"--n-samples={args.n_samples}", f"--seq-len={args.seq_len}", f"--batch-size={args.batch_size}", f"--sparsity={args.sparsity}",
                f"--block-size={args.block_size}", f"--damp={args.damp}", f"--threads={args.threads}", *(f"--option={o}" for o in args.option)]  # fmt: skip
    seconds = {(method, tool): [] for method in args.methods for tool in ("ours", "peer")}
    for round_ in range(args.rounds):
        for method in args.methods:
            tools = ("ours", "peer") if round_ % 2 == 0 else ("peer", "ours")
            for tool in tools:
                out = args.work / f"{method}-{tool}.safetensors"
                if tool == "ours":
                    command = [sys.executable, str(here), *settings, "--worker", str(checkpoint), str(calibration), method, str(out)]
                else:
                    command = [str(PEER_PYTHON), str(DRIVER), f"--checkpoint={checkpoint}", f"--calibration={calibration}", f"--method={method}",
                               f"--out={out}", f"--sparsity={args.sparsity}", f"--batch-size={args.batch_size}", f"--block-size={args.block_size}",
                               f"--dampening-frac={args.damp}", f"--threads={args.threads}"]  # fmt: skip
                result = run(command, args.threads)
                seconds[method, tool].append(result["seconds"])
                print(f"round {round_ + 1}/{args.rounds} {method:<9} {tool:<4} {result['seconds']:8.2f} s", flush=True)
    layers = args.layers or "all 30"
    print(f"\nSmolLM2-135M ({layers} layers), {args.sparsity:g} unstructured, calibration {args.n_samples} x {args.seq_len} tokens (batch "
          f"{args.batch_size}), held-out {args.heldout} x {args.seq_len}, {args.threads} thread(s) per tool, {args.rounds} round(s), median seconds")  # fmt: skip
    print(f"dense held-out NLL {nll(checkpoint, None, heldout):.4f}")
    print("| method | ours s | peer s | ours/peer | NLL ours | NLL peer | ΔNLL | sparsity ours / peer | mask agreement | per linear |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for method in args.methods:
        ours_w = load_file(str(args.work / f"{method}-ours.safetensors"))
        peer_w = load_file(str(args.work / f"{method}-peer.safetensors"))
        overall, by_kind = agreement(ours_w, peer_w)
        ours_s, peer_s = statistics.median(seconds[method, "ours"]), statistics.median(seconds[method, "peer"])
        ours_nll, peer_nll = nll(checkpoint, ours_w, heldout), nll(checkpoint, peer_w, heldout)
        kinds = ", ".join(f"{kind} {share:.2%}" for kind, share in by_kind.items())
        sparsity = " / ".join(f"{zero_share(weights):.4%}" for weights in (ours_w, peer_w))
        print(f"| {method} | {ours_s:.1f} | {peer_s:.1f} | {ours_s / peer_s:.2f} | {ours_nll:.4f} | {peer_nll:.4f} | {ours_nll - peer_nll:+.4f} "
              f"| {sparsity} | {overall:.2%} | {kinds} |")  # fmt: skip


if __name__ == "__main__":
    main()
