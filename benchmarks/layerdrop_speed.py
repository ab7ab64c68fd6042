"""Layer-dropping speed: prefill and decode latency with K = floor(rho * L) decoder layers dropped vs
dense, as a share of the ideal L / (L - K), and the cost of the redundancy pass and of finetuning.

Dropping K of L equal decoder layers should make the decoder L / (L - K) times faster (INTERLACE's
issue asks for at least 90% of that). The model's other work (embeddings, final norm, lm_head) does
not shrink, so the end-to-end speedup is bounded by Amdahl's law. Three variants are timed in turn
within every repeat (so a change in machine load hits all three alike), medians reported:

  dense     the model as loaded
  dropped   a copy with its last K droppable layers removed by `drop_layers` (which K does not matter
            for speed: the layers have one shape)
  kept      the dense model with every layer skipped (`skipping_layers`) but layer 0 and any
            protected one: `skipping_layers` refuses to skip them all, so the non-decoder cost is
            extrapolated over the n_kept layers left: per layer c = (T_dense - T_kept) / (L - n_kept),
            T_rest = T_kept - n_kept * c

  decoder speedup   (T_dense - T_rest) / (T_dropped - T_rest)     ideal  L / (L - K)
  end-to-end        T_dense / T_dropped                            ideal  1 / ((1 - f) + f (L - K) / L),
                                                                   f = (T_dense - T_rest) / T_dense

Prefill = one forward of 1 x P random token ids with a fresh KV cache, logits of the last token only
(as `generate` runs it). Decode = a greedy loop of T steps of one token each on the KV cache (what
`generate` does, without its logits processors), each step timed alone; median ms per token. VLMs
get a text-only prompt: the vision tower is not run. torch.inference_mode; CUDA synchronised.

Stages (each on a fresh model): the redundancy pass (`layer_redundancy`, N x P random tokens, also as
a multiple of one plain forward of the same batches), and `finetune` of 1 vs 2 layers of the dropped
model (layers i and i+1, so backward reaches equally deep; seconds per optimizer step = median time
between steps after the first). Working memory = peak minus memory in use before the stage (CUDA
allocations on a GPU; resident set size on CPU, where each stage runs in a fresh process unless
--same-process, because RSS freed by an earlier stage would be reused unseen).

Models: the packaged SmolLM2-135M, the toy VLM if it is built (.prunebench/cache/models/toy-vlm),
and a random-init Llama of --shape.

    .venv/bin/python benchmarks/layerdrop_speed.py                                 # SmolLM2 + toy-vlm, CPU
    .venv/bin/python benchmarks/layerdrop_speed.py --threads 1 --seq-len 32 --new-tokens 8 \\
        --repeats 3 --warmup 1 --n-samples 4 --finetune-batch 1 --finetune-steps 3  # a quick check
    python benchmarks/layerdrop_speed.py --shape llama-7b --device cuda --dtype bfloat16 \\
        --models shape                                                             # a GPU: LLaMA-2-7B-shaped, random init
"""

from __future__ import annotations

import argparse
import copy
import gc
import multiprocessing
import os
import platform
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from prune_speed import GIB, REPO, SHAPES, build_model, forward_seconds, measured, synchronize
from pruning.finetune import finetune, layer_prefixes
from pruning.layerdrop import drop_layers, layer_redundancy, n_layers_to_drop, protected_layers, skipping_layers
from pruning.layerdrop.surgery import droppable_group
from pruning.models.adapters import Adapter, adapter_for, blocks
from pruning.models.sources import is_complete_checkpoint, load_model
from pruning.specs import ModelSpec

MODELS = ("smollm2-135m", "toy-vlm", "shape")
TOY_VLM = REPO / ".prunebench" / "cache" / "models" / "toy-vlm"
STAGES = ("inference", "redundancy", "finetune")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1]
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, metavar="MODEL",
                        help=f"which models, of {', '.join(MODELS)} ('shape' = random-init --shape); "
                             "default: smollm2-135m, toy-vlm (skipped with a note if not built), and shape if --shape is given")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="the random-init Llama shape for the model 'shape'")
    parser.add_argument("--layers", type=int, help="decoder layers of the random-init shape (default: the shape's)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weights dtype (default: float32)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads (default: all cores, %(default)s here)")
    parser.add_argument("--drop-ratio", type=float, default=0.25, help="rho: drop K = floor(rho * L) decoder layers (default: 0.25)")
    parser.add_argument("--seq-len", type=int, default=256, help="P: prompt tokens, and tokens per calibration / finetuning sequence (default: 256)")
    parser.add_argument("--new-tokens", type=int, default=32, help="T: tokens generated per decode run (default: 32)")
    parser.add_argument("--repeats", type=int, default=10, help="timed prefills, and timed decode runs, per variant (default: 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds of every variant first (default: 2)")
    parser.add_argument("--n-samples", type=int, default=32, help="N: calibration sequences for the redundancy pass (default: 32)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward in the redundancy pass (default: 8)")
    parser.add_argument("--finetune-steps", type=int, default=4, help="optimizer steps per finetuning run, at least 2 (default: 4)")
    parser.add_argument("--finetune-batch", type=int, default=4, help="sequences per optimizer step, one micro-batch (default: 4)")
    parser.add_argument("--finetune-layer", type=int,
                        help="i: finetune layer i, then layers i and i+1, of the dropped model (default: its middle layer)")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES), metavar="STAGE",
                        help=f"what to measure, of {', '.join(STAGES)} (default: all)")
    parser.add_argument("--same-process", action="store_true",
                        help="run the memory stages in this process on CPU too (faster; later stages may then reuse RSS "
                             "freed by earlier ones and understate their working memory)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.models is None:
        args.models = ["smollm2-135m", "toy-vlm", *(["shape"] if args.shape else [])]
    if "shape" in args.models and args.shape is None:
        parser.error("the model 'shape' needs --shape")
    if args.finetune_steps < 2:
        parser.error("--finetune-steps must be at least 2: seconds per step are timed between steps")
    for name in ("threads", "seq_len", "new_tokens", "repeats", "n_samples", "batch_size", "finetune_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


# --- models ---


def model_label(key: str, args: argparse.Namespace) -> str:
    if key == "shape":
        return f"random-init {args.shape}" + (f" ({args.layers} layers)" if args.layers else "")
    return {"smollm2-135m": "SmolLM2-135M", "toy-vlm": "toy-vlm (text-only prompt)"}[key]


def load(key: str, args: argparse.Namespace) -> nn.Module:
    """A fresh copy of the model `key` on args.device in args.dtype, in eval mode."""
    if key == "toy-vlm":
        spec = ModelSpec(source=str(TOY_VLM), dtype=args.dtype, device=args.device)
        return load_model(TOY_VLM, spec)[0]
    # prune_speed's factory: the packaged SmolLM2 when shape and layers are None, else a random-init Llama
    shape, layers = (args.shape, args.layers) if key == "shape" else (None, None)
    factory_args = argparse.Namespace(**{**vars(args), "shape": shape, "layers": layers, "seq_len": args.seq_len + args.new_tokens})
    return build_model(factory_args)()


def text_config(model: nn.Module):
    return getattr(model.config, "text_config", None) or model.config


def random_token_ids(model: nn.Module, n: int, length: int, seed: int) -> torch.Tensor:
    """n x length uniform token ids, never a VLM's image placeholder (it would ask for image features)."""
    vocab = text_config(model).vocab_size
    image_token = getattr(model.config, "image_token_index", None) or getattr(model.config, "image_token_id", None)
    generator = torch.Generator().manual_seed(seed)
    if image_token is None:
        ids = torch.randint(0, vocab, (n, length), generator=generator)
    else:
        ids = torch.randint(0, vocab - 1, (n, length), generator=generator)
        ids += (ids >= image_token).long()
    return ids.to(next(model.parameters()).device)


def weights_gb(model: nn.Module) -> float:
    return sum(p.numel() * p.element_size() for p in model.parameters()) / GIB


def describe_device(args: argparse.Namespace) -> str:
    if args.device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(args.device))}, torch {torch.__version__}"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            name = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU {name}, {torch.get_num_threads()} torch threads of {os.cpu_count()} cores, torch {torch.__version__}"


@dataclass(frozen=True)
class DropShape:
    n_layers: int  # L
    dropped: tuple[int, ...]  # the last K droppable layers
    kept_for_rest: tuple[int, ...]  # layer 0 and the protected layers: what `skipping_layers` must leave

    @property
    def n_drop(self) -> int:
        return len(self.dropped)


def drop_shape(model: nn.Module, adapter: Adapter, drop_ratio: float) -> DropShape:
    n_layers = len(blocks(model, droppable_group(adapter)))
    protected = protected_layers(model, adapter)
    n_drop = n_layers_to_drop(drop_ratio, n_layers)
    droppable = [index for index in range(1, n_layers) if index not in protected]  # layer 0 stays: decode reads the cache length there
    if n_drop > len(droppable):
        raise ValueError(f"cannot drop {n_drop} layers: only {len(droppable)} of {n_layers} are droppable besides layer 0")
    return DropShape(n_layers, tuple(droppable[-n_drop:]), tuple(sorted({0, *protected})))


# --- the arithmetic ---


@dataclass(frozen=True)
class Speedup:
    dense_ms: float
    rest_ms: float  # the non-decoder part (extrapolated, see the module docstring)
    dropped_ms: float
    n_layers: int
    n_drop: int

    @property
    def decoder_share(self) -> float:
        return (self.dense_ms - self.rest_ms) / self.dense_ms

    @property
    def decoder(self) -> float:
        return (self.dense_ms - self.rest_ms) / (self.dropped_ms - self.rest_ms)

    @property
    def decoder_ideal(self) -> float:
        return self.n_layers / (self.n_layers - self.n_drop)

    @property
    def share_of_ideal(self) -> float:
        return self.decoder / self.decoder_ideal

    @property
    def end_to_end(self) -> float:
        return self.dense_ms / self.dropped_ms

    @property
    def end_to_end_ideal(self) -> float:
        """Amdahl's law: only the decoder share f shrinks, to f (L - K) / L."""
        f = self.decoder_share
        return 1.0 / ((1.0 - f) + f * (self.n_layers - self.n_drop) / self.n_layers)


def rest_ms(dense_ms: float, kept_ms: float, n_layers: int, n_kept: int) -> float:
    """The non-decoder time, from the dense time and the time with only n_kept equal layers left."""
    per_layer_ms = (dense_ms - kept_ms) / (n_layers - n_kept)
    return kept_ms - n_kept * per_layer_ms


# --- latency ---


def prefill_ms(model: nn.Module, ids: torch.Tensor, device: str) -> float:
    synchronize(device)
    start = time.perf_counter()
    model(input_ids=ids, use_cache=True, logits_to_keep=1)
    synchronize(device)
    return (time.perf_counter() - start) * 1e3


def decode_step_ms(model: nn.Module, ids: torch.Tensor, new_tokens: int, device: str) -> list[float]:
    """Greedy decoding on the KV cache after an untimed prefill: each step's milliseconds."""
    out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
    cache, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
    steps = []
    for _ in range(new_tokens):
        synchronize(device)
        start = time.perf_counter()
        out = model(input_ids=token, past_key_values=cache, use_cache=True)
        token = out.logits[:, -1:].argmax(-1)
        synchronize(device)
        steps.append((time.perf_counter() - start) * 1e3)
    return steps


def latency(key: str, args: argparse.Namespace) -> tuple[dict[str, Speedup], DropShape, float]:
    """Median prefill and decode milliseconds of the dense, dropped and kept variants, as Speedups."""
    dense = load(key, args)
    adapter = adapter_for(dense)
    shape = drop_shape(dense, adapter, args.drop_ratio)
    size_gb = weights_gb(dense)
    dropped = copy.deepcopy(dense)
    drop_layers(dropped, adapter_for(dropped), shape.dropped)
    skipped = [index for index in range(shape.n_layers) if index not in shape.kept_for_rest]
    variants = {"dense": (dense, ()), "dropped": (dropped, ()), "kept": (dense, skipped)}  # model, layers skipped
    ids = random_token_ids(dense, 1, args.seq_len, args.seed)
    timings = {(phase, name): [] for phase in ("prefill", "decode") for name in variants}
    with torch.inference_mode():
        for round_index in range(args.warmup + args.repeats):
            for name, (model, skip) in variants.items():
                with skipping_layers(model, adapter, skip) if skip else nullcontext():
                    prefill = prefill_ms(model, ids, args.device)
                    decode = decode_step_ms(model, ids, args.new_tokens, args.device)
                if round_index >= args.warmup:
                    timings["prefill", name].append(prefill)
                    timings["decode", name].extend(decode)
    del dense, dropped, model, variants
    free(args.device)
    speedups = {}
    for phase in ("prefill", "decode"):
        median = {name: statistics.median(timings[phase, name]) for name in ("dense", "dropped", "kept")}
        rest = rest_ms(median["dense"], median["kept"], shape.n_layers, len(shape.kept_for_rest))
        speedups[phase] = Speedup(median["dense"], rest, median["dropped"], shape.n_layers, shape.n_drop)
    return speedups, shape, size_gb


def free(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


# --- stages: redundancy and finetuning, time and working memory ---


def stage(key: str, args: argparse.Namespace, name: str, n_trained: int = 0) -> dict:
    """Run a stage on a fresh model: in a fresh process on CPU (unless --same-process), here on a GPU."""
    if args.device.startswith("cuda") or args.same_process:
        return _stage_here(key, args, name, n_trained)
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_stage_here, key, args, name, n_trained).result()


def _stage_here(key: str, args: argparse.Namespace, name: str, n_trained: int) -> dict:
    torch.set_num_threads(args.threads)
    model = load(key, args)
    adapter = adapter_for(model)
    try:
        if name == "redundancy":
            return _redundancy(model, adapter, args)
        return _finetune(model, adapter, args, n_trained)
    finally:
        del model
        free(args.device)


def _redundancy(model: nn.Module, adapter: Adapter, args: argparse.Namespace) -> dict:
    ids = random_token_ids(model, args.n_samples, args.seq_len, args.seed + 1)
    plain_forward_s = forward_seconds(lambda: model, ids, args, with_loss=False)
    with measured(args.device) as usage:
        layer_redundancy(model, adapter, ids, batch_size=args.batch_size, progress=False)
    return {"seconds": usage["seconds"], "work_gb": usage["work_gb"], "plain_forward_s": plain_forward_s}


def _finetune(model: nn.Module, adapter: Adapter, args: argparse.Namespace, n_trained: int) -> dict:
    """`finetune` of n_trained consecutive layers of the dropped model, one micro-batch per step."""
    shape = drop_shape(model, adapter, args.drop_ratio)
    drop_layers(model, adapter, shape.dropped)
    n_left = shape.n_layers - shape.n_drop
    first = (n_left - 1) // 2 if args.finetune_layer is None else args.finetune_layer
    trained = list(range(first, first + n_trained))
    if trained[-1] >= n_left or first < 0:
        raise ValueError(f"--finetune-layer {first}: layers {trained} do not all exist in the dropped model ({n_left} layers)")
    ids = random_token_ids(model, args.finetune_steps * args.finetune_batch, args.seq_len, args.seed + 2)
    examples = [{"input_ids": ids[row : row + 1]} for row in range(len(ids))]
    with torch.inference_mode():  # untimed: pages in weights a loader left memory-mapped, so RSS counts only the work
        model(input_ids=ids[:1], use_cache=False, logits_to_keep=1)
    step_ends = []

    def on_step(step: int, loss: float, lr: float) -> None:
        synchronize(args.device)
        step_ends.append(time.perf_counter())

    with measured(args.device) as usage:
        report = finetune(
            model, examples, layer_prefixes(adapter, trained), effective_batch=args.finetune_batch,
            micro_batch_size=args.finetune_batch, seed=args.seed, progress=False, on_step=on_step,
        )
    layer_gb = sum(p.numel() * p.element_size() for p in blocks(model, droppable_group(adapter))[first].parameters()) / GIB
    return {
        "seconds": usage["seconds"], "work_gb": usage["work_gb"], "layers": trained,
        "step_s": statistics.median(b - a for a, b in zip(step_ends, step_ends[1:])),
        "trainable_params": report.trainable_params, "layer_gb": layer_gb,
    }


# --- output ---


def print_latency(label: str, speedups: dict[str, Speedup], shape: DropShape, size_gb: float, args: argparse.Namespace) -> None:
    print(f"\n{label}: {shape.n_layers} decoder layers, {size_gb:.2f} GiB of weights ({args.dtype}); "
          f"drop K = {shape.n_drop} (rho = {args.drop_ratio}): layers {list(shape.dropped)}; "
          f"rest extrapolated from layers {list(shape.kept_for_rest)} kept")
    print(f"  {'':<14} {'dense ms':>9} {'rest ms':>8} {'dropped ms':>10} {'decoder share':>13} "
          f"{'decoder speedup':>15} {'ideal':>6} {'% of ideal':>10} {'end-to-end':>10} {'Amdahl ideal':>12}")
    for phase, what in (("prefill", f"prefill {args.seq_len}"), ("decode", "decode / token")):
        s = speedups[phase]
        print(f"  {what:<14} {s.dense_ms:>9.2f} {s.rest_ms:>8.2f} {s.dropped_ms:>10.2f} {s.decoder_share:>13.1%} "
              f"{s.decoder:>15.3f} {s.decoder_ideal:>6.3f} {s.share_of_ideal:>10.1%} {s.end_to_end:>10.3f} {s.end_to_end_ideal:>12.3f}")


def print_stages(key: str, args: argparse.Namespace) -> None:
    memory = "CUDA allocations" if args.device.startswith("cuda") else "RSS" + ("" if args.same_process else ", fresh process each")
    print(f"  {'stage':<34} {'seconds':>9} {'working GiB':>12}   notes ({memory})")
    if "redundancy" in args.stages:
        row = stage(key, args, "redundancy")
        print(f"  {f'redundancy, {args.n_samples} x {args.seq_len} tokens':<34} {row['seconds']:>9.2f} {row['work_gb']:>12.3f}   "
              f"{row['seconds'] / row['plain_forward_s']:.2f} x one plain forward of the same batches ({row['plain_forward_s']:.2f} s)")
    if "finetune" in args.stages:
        rows = [stage(key, args, "finetune", n_trained) for n_trained in (1, 2)]
        for row in rows:
            what = f"finetune layer{'s' if len(row['layers']) > 1 else ''} {','.join(map(str, row['layers']))}, per step"
            print(f"  {what:<34} {row['step_s']:>9.3f} {row['work_gb']:>12.3f}   "
                  f"{row['trainable_params'] / 1e6:.1f} M trained; {args.finetune_steps} steps of {args.finetune_batch} x {args.seq_len} "
                  f"took {row['seconds']:.2f} s")
        one, two = rows
        print(f"  {'per trained layer (2 - 1)':<34} {two['step_s'] - one['step_s']:>+9.3f} {two['work_gb'] - one['work_gb']:>+12.3f}   "
              f"grad + 2 AdamW moments of one layer = {3 * one['layer_gb']:.3f} GiB")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    print(describe_device(args))
    summary = []
    for key in args.models:
        label = model_label(key, args)
        if key == "toy-vlm" and not is_complete_checkpoint(TOY_VLM):
            print(f"\n{label}: skipped, not built in {TOY_VLM} (`prunebench run` on a toy-vlm config trains it)")
            continue
        if "inference" in args.stages:
            speedups, shape, size_gb = latency(key, args)
            print_latency(label, speedups, shape, size_gb, args)
            summary.append((label, speedups))
        else:
            print(f"\n{label}")
        if {"redundancy", "finetune"} & set(args.stages):
            print_stages(key, args)
    if summary:
        print(f"\ndecoder speedup as a share of ideal (goal: >= 90%), rho = {args.drop_ratio}, P = {args.seq_len}, T = {args.new_tokens}")
        for label, speedups in summary:
            print(f"  {label:<34} prefill {speedups['prefill'].share_of_ideal:>6.1%}   decode {speedups['decode'].share_of_ideal:>6.1%}   "
                  f"end-to-end prefill x{speedups['prefill'].end_to_end:.3f}, decode x{speedups['decode'].end_to_end:.3f}")


if __name__ == "__main__":
    main()
