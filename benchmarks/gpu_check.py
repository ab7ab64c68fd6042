"""GPU check: the project's pruning and inference speed on one CUDA GPU, against its goals, in under 8 minutes.

A LLaMA-2-7B-shaped model (hidden 4096, 32 layers, 32 heads, intermediate 11008, vocab 32000) is built with
random weights in bf16 directly on the device (no checkpoint is needed to time pruning; a fresh copy per
measurement, seeded). Calibration: 128 x 2048 uniformly random token ids (timing does not depend on the
text). Every figure uses the project's own code (pruning.local.walk.prune_model, pruning.scores,
pruning.allocation, pruning.layerdrop), through benchmarks/prune_speed.py and layerdrop_speed.py:

  floor             one batched forward of the calibration set, no grad, no lm_head, in batches of
                    --batch-size (what pruning uses): the least a calibrated method can spend
  wanda 50%         wall time, time / floor, peak CUDA memory (max_memory_allocated, reset per figure)
  sparsegpt 50%     the same
  offload           Wanda 50% with the model kept in CPU memory and onloaded block by block onto the
                    GPU (`prune_model(..., execution_device=...)`); peak CUDA memory is the point
  2:4 prefill       a 2:4-pruned model (magnitude 2:4) whose block linears are converted with
                    torch.sparse.to_sparse_semi_structured (cuSPARSELt; fp16/bf16 on sm80+), against the
                    same model dense: one prefill of 1 x P tokens (KV cache on, logits of the last
                    token), median of --repeats, at each --prefill-lengths; speedup = dense / sparse
  layer drop 25%    K = floor(0.25 L) decoder layers removed (`drop_layers`) vs dense, timed as
                    layerdrop_speed.py times it. Ideal: only the L decoder layers shrink, to L - K, so
                    the layer-bound part of a prefill gets L / (L - K) = 1.33x faster. Measured
                    decoder speedup = (T_dense - T_rest) / (T_dropped - T_rest), T_rest = embeddings,
                    final norm and lm_head (extrapolated from a run with only layer 0 kept); the goal is
                    >= 90% of the ideal. End to end (T_dense / T_dropped) is bounded lower by Amdahl's law.
  ecoflap           ECoFLaP zeroth-order block scores (--estimator, --score-samples), the allocation
                    (pruning.allocation.allocate), then Wanda at the allocated sparsities: 50% overall

Goals (printed beside the figures, pass/fail): Wanda <= 2.0x floor; SparseGPT <= 5x floor; peak CUDA
memory with offloading <= 2 GiB + one block; 2:4 prefill >= 1.2x dense at the longest prefill (8192);
dropped layers >= 90% of the ideal decoder speedup.

--budget-s: before each figure its cost is estimated from the floor (roughly); a figure that would end
past the budget is skipped, and the JSON says so. A figure already started is not interrupted. A figure
that fails (an error, out of memory) is recorded with its error and the others still run; the exit
status is then 1.

On a CPU (--device cpu) the peak CUDA memory is not measured, 2:4 is reported as unsupported, and the
"offload" figure runs with the model where it computes (nothing to onload); --shape tiny runs every
figure in seconds (what tests/benchmarks/test_gpu_check.py does).

    python benchmarks/gpu_check.py                                    # one CUDA GPU, 7B shape: about 4 min on an H100 (estimated from its 7.65 s floor; not yet run)
    python benchmarks/gpu_check.py --out /tmp/gpu_check.json --budget-s 300
    .venv/bin/python benchmarks/gpu_check.py --shape tiny --device cpu  # the script's own check, seconds
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import torch

from layerdrop_speed import describe_device, free, latency, prefill_ms, random_token_ids
from prune_speed import GIB, REPO, build_model, forward_pass, prune_once
from pruning.errors import first_line
from pruning.local.walk import prune_model
from pruning.models.adapters import adapter_for, blocks, prunable_linears

SHAPES = {"7b": "llama-7b", "tiny": "tiny"}  # --shape -> prune_speed.SHAPES
DEFAULTS = {  # per --shape: calibration sequences, tokens each, prefill lengths
    "7b": dict(n_samples=128, seq_len=2048, prefill_lengths=[2048, 8192]),
    "tiny": dict(n_samples=8, seq_len=32, prefill_lengths=[32, 64]),
}
DEFAULT_OUT = REPO / "benchmarks" / "results" / "gpu_check.json"  # results/ is git-ignored
FIGURES = ("floor", "wanda_50", "sparsegpt_50", "offload_wanda_50", "semi_structured_2_4", "layer_drop", "ecoflap_zeroth_wanda_50")
NO_CUDA = "not measured: CUDA allocations only (--device cpu)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1]
    )
    parser.add_argument("--shape", choices=sorted(SHAPES), default="7b", help="7b: LLaMA-2-7B-shaped (default); tiny: 8 small layers, seconds on a CPU")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="where the model computes (default: cuda)")
    parser.add_argument("--dtype", choices=["bfloat16", "float16", "float32"], help="weights (default: bfloat16 on cuda, float32 on cpu)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="skip the figures that would end after this many seconds, counted from the first "
                        "model build (imports and CUDA's start come before; default: 450)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"the JSON of figures (default: {DEFAULT_OUT.relative_to(REPO)})")
    parser.add_argument("--n-samples", type=int, help="calibration sequences (default: 128; tiny 8)")
    parser.add_argument("--seq-len", type=int, help="tokens per calibration sequence (default: 2048; tiny 32)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward, as pruning runs them (default: 8, calibration.batch_size's default)")
    parser.add_argument("--prefill-lengths", type=int, nargs="+", help="prompt tokens of the timed prefills (default: 2048 8192; tiny 32 64)")
    parser.add_argument("--repeats", type=int, default=5, help="timed prefills per variant and length (default: 5)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed prefills first (default: 2)")
    parser.add_argument("--drop-ratio", type=float, default=0.25, help="share of decoder layers dropped (default: 0.25)")
    parser.add_argument("--score-samples", type=int, default=8, help="calibration samples of ECoFLaP's zeroth-order scores (default: 8)")
    parser.add_argument("--estimator", choices=["per_block", "per_tensor"], default="per_block",
                        help="ECoFLaP's zeroth-order estimator (default: per_block, 2 passes per block; per_tensor, as "
                             "published, takes 7x the passes on a Llama: minutes more on a 7B)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for key, value in DEFAULTS[args.shape].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device here (torch %s); --device cpu runs the check on the CPU" % torch.__version__)
    return args


# --- the figures ---


class Check:
    """The run's state: settings, the model factory, the clock against the budget, the figures so far."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.started = time.monotonic()
        # prune_speed's factory reads --shape as its SHAPES key and builds for the longest sequence asked
        self.build_args = argparse.Namespace(**{**vars(args), "shape": SHAPES[args.shape], "layers": None,
                                                "seq_len": max(args.seq_len, *args.prefill_lengths)})  # fmt: skip
        self.make = build_model(self.build_args)
        self.figures: dict[str, dict] = {}
        self.floor_s: float | None = None

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    def run(self, key: str, measure, estimate_s: float | None) -> None:
        """`figures[key]` = what `measure()` returns, unless the budget has no room for it or it fails."""
        used = self.elapsed_s()
        if estimate_s is None:
            self.figures[key] = {"skipped": "the floor was not measured, so nothing is measured against it"}
        elif used + estimate_s > self.args.budget_s:
            self.figures[key] = {"skipped": f"budget: {used:.0f} s of --budget-s {self.args.budget_s:g} used; this figure needs about {estimate_s:.0f} s"}
        else:
            try:
                self.figures[key] = measure()
            except Exception as error:  # one figure's failure (out of memory, a kernel missing) leaves the others to run
                self.figures[key] = {"failed": f"{type(error).__name__}: {first_line(error)}"}
            free(self.args.device)
        print(f"  [{self.elapsed_s():6.1f} s] {key}: {_summary(self.figures[key])}", flush=True)


def measure_floor(check: Check, ids: torch.Tensor) -> dict:
    floor = forward_pass(check.make, ids, check.args, with_loss=False)
    check.floor_s = floor["seconds"]
    return {"seconds": floor["seconds"], "peak_gpu_gib": _peak(floor)}


def measure_prune(check: Check, ids: torch.Tensor, label: str, make=None, execution_device: str | None = None) -> dict:
    row = prune_once(make or check.make, ids, label, check.args, execution_device=execution_device)
    figure = {"seconds": row["seconds"], "x_floor": row["seconds"] / check.floor_s, "peak_gpu_gib": _peak(row)}
    if "scores_s" in row:
        figure.update(scores_s=row["scores_s"], score_passes=row["score_passes"], estimator=check.args.estimator)
    return figure


def measure_offload(check: Check, ids: torch.Tensor) -> dict:
    device = check.args.device

    def make_on_cpu() -> torch.nn.Module:
        return check.make().to("cpu")  # built on the device (fast), then kept in CPU memory

    figure = measure_prune(check, ids, "wanda 50%", make=make_on_cpu, execution_device=device)
    if device == "cpu":
        figure["note"] = "on a CPU the model computes where it lives: nothing is onloaded"
    return figure


def measure_semi_structured(check: Check) -> dict:
    args = check.args
    if args.device != "cuda":
        return {"unsupported": f"unsupported on {args.device}: semi-structured (2:4) sparse matmuls need CUDA (sm80+, fp16/bf16)"}
    if torch.cuda.get_device_capability() < (8, 0) or args.dtype not in ("bfloat16", "float16"):
        return {"unsupported": f"unsupported here: needs sm80+ and fp16/bf16, this is sm{''.join(map(str, torch.cuda.get_device_capability()))} in {args.dtype}"}
    from torch.sparse import to_sparse_semi_structured

    model = check.make()
    adapter = adapter_for(model)
    prune_model(model, adapter, "magnitude", n_m="2:4", progress=False)  # the pattern; which weights does not matter for speed
    prompts = {length: random_token_ids(model, 1, length, args.seed) for length in args.prefill_lengths}
    dense_ms = {length: _median_prefill_ms(model, ids, args) for length, ids in prompts.items()}
    linears = [linear for group in adapter.groups for block in blocks(model, group) for linear in prunable_linears(block, group).values()]
    try:
        for linear in linears:
            linear.weight = torch.nn.Parameter(to_sparse_semi_structured(linear.weight), requires_grad=False)
    except (RuntimeError, ValueError, NotImplementedError) as error:  # a shape, dtype or kernel this torch build refuses
        return {"unsupported": f"unsupported here: to_sparse_semi_structured refused a {tuple(linear.weight.shape)} weight: {first_line(error)}"}
    sparse_ms = {length: _median_prefill_ms(model, ids, args) for length, ids in prompts.items()}
    prefill = {str(length): {"dense_ms": dense_ms[length], "sparse_ms": sparse_ms[length], "speedup": dense_ms[length] / sparse_ms[length]}
               for length in args.prefill_lengths}  # fmt: skip
    return {"prefill": prefill, "linears_converted": len(linears), "kernel": type(linears[0].weight).__name__}


def measure_layer_drop(check: Check) -> dict:
    args = check.args
    prefill, decode = {}, None
    for length in args.prefill_lengths:
        timing_args = argparse.Namespace(**{**vars(check.build_args), "seq_len": length, "new_tokens": 4})
        speedups, shape, _ = latency("shape", timing_args)
        prefill[str(length)] = _speedup_figures(speedups["prefill"])
        decode = _speedup_figures(speedups["decode"])  # per token, after the longest prompt
    return {"n_layers": shape.n_layers, "dropped": list(shape.dropped), "ideal": shape.n_layers / (shape.n_layers - shape.n_drop),
            "prefill": prefill, "decode_per_token": decode}  # fmt: skip


def _speedup_figures(speedup) -> dict:
    return {"dense_ms": speedup.dense_ms, "rest_ms": speedup.rest_ms, "dropped_ms": speedup.dropped_ms,
            "decoder_speedup": speedup.decoder, "share_of_ideal": speedup.share_of_ideal,
            "end_to_end_speedup": speedup.end_to_end, "amdahl_ideal": speedup.end_to_end_ideal}  # fmt: skip


def _median_prefill_ms(model: torch.nn.Module, ids: torch.Tensor, args: argparse.Namespace) -> float:
    with torch.inference_mode():
        for _ in range(args.warmup):
            prefill_ms(model, ids, args.device)
        return statistics.median(prefill_ms(model, ids, args.device) for _ in range(args.repeats))


# --- the estimates the budget is checked against (rough: multiples of the floor) ---


def estimates(check: Check, model_facts: dict) -> dict[str, float | None]:
    """Seconds each figure should take, from the floor and the time one model build took."""
    args, floor = check.args, check.floor_s
    if floor is None:
        return {key: None for key in FIGURES[1:]}
    build = model_facts["build_s"]
    per_token = floor / (args.n_samples * args.seq_len)
    prefill_tokens = (args.warmup + args.repeats) * sum(args.prefill_lengths)
    score_batches = math.ceil(min(args.score_samples, args.n_samples) / args.batch_size)
    units = model_facts["n_layers"] * (1 if args.estimator == "per_block" else model_facts["linears_per_block"])
    score_pass = 1.3 * floor * min(args.batch_size, args.score_samples) / args.n_samples  # a forward with the loss
    return {
        "wanda_50": 2.5 * floor + build,
        "sparsegpt_50": 6 * floor + build,
        "offload_wanda_50": 4 * floor + 3 * build,
        "semi_structured_2_4": 2 * 1.5 * prefill_tokens * per_token + 2 * build,
        "layer_drop": 3 * 1.5 * prefill_tokens * per_token + 2 * build * len(args.prefill_lengths),  # dense, dropped, kept
        "ecoflap_zeroth_wanda_50": 2 * score_batches * units * score_pass + 2.5 * floor + build,
    }


# --- goals, output ---


def goals(figures: dict, model_facts: dict, args: argparse.Namespace) -> list[dict]:
    """Each goal: what it asks, the measured value, and pass (true/false) or why it was not judged."""
    longest = str(max(args.prefill_lengths))
    limit_gib = 2 + model_facts["block_gib"]
    rows = [
        ("Wanda 50% <= 2.0x the floor", figures["wanda_50"], lambda f: f["x_floor"], lambda v: v <= 2.0, "x"),
        ("SparseGPT 50% <= 5x the floor", figures["sparsegpt_50"], lambda f: f["x_floor"], lambda v: v <= 5.0, "x"),
        (f"offloaded Wanda: peak GPU memory <= 2 GiB + one block ({limit_gib:.2f} GiB)", figures["offload_wanda_50"],
         lambda f: f["peak_gpu_gib"], lambda v: v <= limit_gib, " GiB"),
        (f"2:4 prefill at {longest} tokens >= 1.2x dense", figures["semi_structured_2_4"],
         lambda f: f["prefill"][longest]["speedup"], lambda v: v >= 1.2, "x"),
    ]  # fmt: skip
    for length in args.prefill_lengths:
        rows.append((f"{args.drop_ratio:.0%} layers dropped, prefill {length}: >= 90% of the ideal decoder speedup", figures["layer_drop"],
                     lambda f, length=length: f["prefill"][str(length)]["share_of_ideal"], lambda v: v >= 0.9, "%"))  # fmt: skip
    judged = []
    for goal, figure, value_of, passes, unit in rows:
        reason = _reason(figure)
        value = None if reason else value_of(figure)
        if isinstance(value, str):  # a figure measured without this value (peak memory on a CPU)
            reason, value = value, None
        judged.append({"goal": goal, "measured": value, "unit": unit.strip() or None,
                       "pass": passes(value) if value is not None else f"n/a: {reason}"})  # fmt: skip
    return judged


def print_table(figures: dict, judged: list[dict], args: argparse.Namespace) -> None:
    print(f"\n{'figure':<40} {'seconds':>9} {'x floor':>8} {'peak GPU GiB':>13}")
    names = {"floor": "floor (one batched forward)", "wanda_50": "wanda 50%", "sparsegpt_50": "sparsegpt 50%",
             "offload_wanda_50": f"wanda 50%, model in CPU memory", "ecoflap_zeroth_wanda_50": f"ecoflap zeroth ({args.estimator}) + wanda 50%"}  # fmt: skip
    for key, name in names.items():
        figure = figures[key]
        if _reason(figure):
            print(f"{name:<40} {_reason(figure)}")
            continue
        peak = figure["peak_gpu_gib"]
        x_floor = figure.get("x_floor", 1.0)
        print(f"{name:<40} {figure['seconds']:>9.2f} {x_floor:>8.2f} {'n/a (cpu)' if isinstance(peak, str) else f'{peak:.2f}':>13}")
    semi = figures["semi_structured_2_4"]
    print(f"\n{'2:4 semi-structured prefill':<40} {'dense ms':>9} {'2:4 ms':>8} {'speedup':>8}")
    if _reason(semi):
        print(f"  {_reason(semi)}")
    else:
        for length, row in semi["prefill"].items():
            print(f"{'  ' + length + ' tokens':<40} {row['dense_ms']:>9.2f} {row['sparse_ms']:>8.2f} {row['speedup']:>8.3f}")
    drop = figures["layer_drop"]
    print(f"\n{f'{args.drop_ratio:.0%} of the layers dropped, prefill':<40} {'dense ms':>9} {'rest ms':>8} {'dropped ms':>10} "
          f"{'decoder x':>9} {'ideal':>6} {'% ideal':>8} {'end-to-end x':>12}")  # fmt: skip
    if _reason(drop):
        print(f"  {_reason(drop)}")
    else:
        for length, row in drop["prefill"].items():
            print(f"{'  ' + length + ' tokens':<40} {row['dense_ms']:>9.2f} {row['rest_ms']:>8.2f} {row['dropped_ms']:>10.2f} "
                  f"{row['decoder_speedup']:>9.3f} {drop['ideal']:>6.3f} {row['share_of_ideal']:>8.1%} {row['end_to_end_speedup']:>12.3f}")  # fmt: skip
    print("\ngoals")
    for row in judged:
        verdict = {True: "PASS", False: "FAIL"}.get(row["pass"], "n/a ")
        value = row["measured"]
        shown = "" if value is None else (f"{value:.1%}" if row["unit"] == "%" else f"{value:.2f}{' ' if row['unit'] == 'GiB' else ''}{row['unit']}")
        print(f"  [{verdict}] {row['goal']}: {shown or row['pass'].removeprefix('n/a: ')}")


# --- main ---


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    check = Check(args)
    probe_start = time.monotonic()
    probe = check.make()
    model_facts = _model_facts(probe, time.monotonic() - probe_start)
    ids = random_token_ids(probe, args.n_samples, args.seq_len, args.seed)
    del probe
    free(args.device)
    machine = _machine(args)
    print(f"{machine['device']}, transformers {machine['transformers']}")
    print(f"random-init {SHAPES[args.shape]} ({model_facts['n_layers']} layers, {model_facts['weights_gib']:.2f} GiB of weights in "
          f"{args.dtype}, one block {model_facts['block_gib']:.3f} GiB); calibration: {args.n_samples} x {args.seq_len} random token ids, "
          f"batch {args.batch_size}; budget {args.budget_s:g} s")  # fmt: skip
    check.run("floor", lambda: measure_floor(check, ids), estimate_s=0.0)
    cost = estimates(check, model_facts)
    measures = {
        "wanda_50": lambda: measure_prune(check, ids, "wanda 50%"),
        "sparsegpt_50": lambda: measure_prune(check, ids, "sparsegpt 50%"),
        "offload_wanda_50": lambda: measure_offload(check, ids),
        "semi_structured_2_4": lambda: measure_semi_structured(check),
        "layer_drop": lambda: measure_layer_drop(check),
        "ecoflap_zeroth_wanda_50": lambda: measure_prune(check, ids, "ecoflap(zeroth)+wanda 50%"),
    }
    for key in FIGURES[1:]:
        check.run(key, measures[key], cost[key])
    judged = goals(check.figures, model_facts, args)
    print_table(check.figures, judged, args)
    result = {
        "machine": machine,
        "settings": {**{key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
                     "calibration": "uniformly random token ids (speed does not depend on the text)", "weights": "random init, seeded"},
        "model": model_facts,
        "figures": check.figures,
        "goals": judged,
        "elapsed_s": check.elapsed_s(),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\nwrote {args.out} ({check.elapsed_s():.0f} s)")
    return 1 if any("failed" in figure for figure in check.figures.values()) else 0


def _model_facts(model: torch.nn.Module, build_s: float) -> dict:
    adapter = adapter_for(model)
    group = adapter.groups[-1]
    first = blocks(model, group)[0]
    return {
        "n_layers": len(blocks(model, group)),
        "hidden_size": model.config.hidden_size,
        "vocab_size": model.config.vocab_size,
        "n_params": sum(p.numel() for p in model.parameters()),
        "weights_gib": sum(p.numel() * p.element_size() for p in model.parameters()) / GIB,
        "block_gib": sum(p.numel() * p.element_size() for p in first.parameters()) / GIB,
        "linears_per_block": len(prunable_linears(first, group)),
        "build_s": build_s,
    }


def _machine(args: argparse.Namespace) -> dict:
    import transformers

    machine = {"device": describe_device(args), "torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__}
    if args.device == "cuda":
        machine["capability"] = "sm{}{}".format(*torch.cuda.get_device_capability())
        machine["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / GIB
    return machine


def _peak(row: dict) -> float | str:
    return NO_CUDA if row["peak_gpu_gb"] is None else row["peak_gpu_gb"]


def _reason(figure: dict) -> str | None:
    """Why a figure has no numbers (skipped, unsupported, failed), or None."""
    for key in ("skipped", "unsupported", "failed"):
        if key in figure:
            return figure[key] if figure[key].startswith(key) else f"{key}: {figure[key]}"
    return None


def _summary(figure: dict) -> str:
    if _reason(figure):
        return _reason(figure)
    if "seconds" in figure:
        return f"{figure['seconds']:.2f} s" + (f" = {figure['x_floor']:.2f}x the floor" if "x_floor" in figure else "")
    speedups = [f"{length}: {row.get('speedup', row.get('share_of_ideal')):.2f}" for length, row in figure["prefill"].items()]
    return ("prefill speedups " if "linears_converted" in figure else "prefill shares of the ideal ") + ", ".join(speedups)


if __name__ == "__main__":
    sys.exit(main())
