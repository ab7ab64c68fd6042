"""ECoFLaP's zeroth-order estimators side by side: how stable is the allocation across perturbation
seeds, and how well does it rank blocks as the first-order (gradient) scores do, at the same number
of forward passes?

`per_tensor` (the published code) perturbs each prunable weight tensor of a block on its own: 2·T
forward passes per batch for a block of T tensors. `per_block` perturbs the whole block at once: 2
per batch. At equal cost per_block therefore sees T times as many batches (`--batches K` gives
per_tensor K batches and per_block K·T). For each estimator and each of `--seeds` perturbation
seeds the block scores become ECoFLaP allocations (`--sparsity`, max_extra 0.1, one budget over
vision and language blocks). Printed per estimator:

  - per-block std of the allocated sparsity across seeds (mean over blocks, and the largest);
  - Spearman's ρ (scipy) of each seed's scores with the first-order scores (exact gradients, on
    all the batches per_block sees: the best estimate at hand of what both approximate), mean and
    range over seeds, and of the seed-mean allocation with the first-order allocation.

    .venv/bin/python benchmarks/ecoflap_estimator.py                           # toy-vlm (trained by `make run`)
    .venv/bin/python benchmarks/ecoflap_estimator.py --model smollm2 --batches 1 --batch-size 4 --seq-len 128 --seeds 3
    .venv/bin/python benchmarks/ecoflap_estimator.py --model tiny --seeds 3    # a random-init 4-layer Llama: a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from pruning.allocation import ecoflap_sparsities
from pruning.local.walk import calibration_batches
from pruning.models.adapters import adapter_for
from pruning.models.sources import load_model, materialize_packaged
from pruning.scores import first_order_scores, zeroth_order_scores
from pruning.specs import ModelSpec

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".prunebench" / "cache"
ESTIMATORS = ("per_tensor", "per_block")


def parse_args() -> argparse.Namespace:
    doc = __doc__.split("\n\n")
    parser = argparse.ArgumentParser(
        description=doc[0], epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="toy-vlm", help="toy-vlm, smollm2, tiny, or a checkpoint directory (default: toy-vlm)")
    parser.add_argument("--seeds", type=int, default=5, help="perturbation seeds per estimator (default: 5)")
    parser.add_argument("--batches", type=int, default=2, help="calibration batches for per_tensor; per_block gets T times as many (default: 2)")
    parser.add_argument("--batch-size", type=int, default=8, help="samples per batch (default: 8)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per text sample (default: 128)")
    parser.add_argument("--sparsity", type=float, default=0.5, help="ECoFLaP target for the allocations (default: 0.5)")
    parser.add_argument("--aggregate", choices=["sum", "mean"], default="mean", help="block score: total or per weight (default: mean)")
    parser.add_argument("--epsilon", type=float, default=1e-3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write every run's scores and allocations here")
    return parser.parse_args()


def load(args: argparse.Namespace) -> tuple[torch.nn.Module, object]:
    """The dense model and its preprocessor (None for the random-init one)."""
    if args.model == "tiny":
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, intermediate_size=128, vocab_size=128)
        return LlamaForCausalLM(config).eval(), None
    if args.model == "smollm2":
        path = materialize_packaged("smollm2-135m", CACHE / "models")
    elif args.model == "toy-vlm":
        path = CACHE / "models" / "toy-vlm"
        if not (path / "config.json").is_file():
            raise SystemExit(f"{path} is not built: `make run` (or any config with packaged:toy-vlm) trains it first")
    else:
        path = Path(args.model)
    return load_model(path, ModelSpec(source=str(path)))


def calibration(preprocessor, n_samples: int, args: argparse.Namespace) -> list[dict]:
    """`n_samples` calibration samples in batches: Jargon File windows, or image-QA pairs for a VLM."""
    if preprocessor is None:  # the random-init model: random token ids
        ids = torch.randint(0, 128, (n_samples, args.seq_len), generator=torch.Generator().manual_seed(1))
        return calibration_batches(ids, args.batch_size)
    from evals.corpora import corpus_documents
    from pruning.calibration import calibration_ids
    from pruning.models.sources import is_multimodal

    if not is_multimodal(preprocessor):
        texts = corpus_documents("jargon", "calibration", CACHE)
        return calibration_batches(calibration_ids(texts, preprocessor, n_samples, args.seq_len, seed=0), args.batch_size)
    import random

    from evals.imageqa.generator import build_imageqa, split_path
    from evals.imageqa.prompts import answer_text, question_text
    from evals.imageqa.records import load_image, load_records
    from evals.vlm_prompt import vlm_prompt
    from pruning.calibration import multimodal_batches

    records = random.Random(0).sample(load_records(split_path(build_imageqa(CACHE), "calibration")), n_samples)
    prompts = [vlm_prompt(preprocessor, question_text(r)) for r in records]
    return multimodal_batches(preprocessor, [load_image(r) for r in records], prompts, [answer_text(r.answer) for r in records], args.batch_size)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    model, preprocessor = load(args)
    adapter = adapter_for(model)
    tensors = len(_block_tensors(model, adapter))
    batches = calibration(preprocessor, args.batch_size * args.batches * tensors, args)
    few = batches[: args.batches]
    plan = {"per_tensor": few, "per_block": batches}
    print(
        f"{args.model}: {tensors} prunable tensors per block; per_tensor on {len(few)} batches, per_block on "
        f"{len(batches)} batches of {args.batch_size}: {2 * tensors * len(few)} forward passes per language block each"
    )

    first = first_order_scores(model, adapter, batches, aggregate=args.aggregate, progress=False)
    values, sizes = first.flat()
    first_allocation = ecoflap_sparsities(values, sizes, args.sparsity)
    runs: dict[str, list[dict]] = {name: [] for name in ESTIMATORS}
    for seed in range(args.seeds):
        for estimator in ESTIMATORS:  # alternated, so a slower period of the machine hits both
            start = time.perf_counter()
            scores = zeroth_order_scores(
                model, adapter, plan[estimator], args.epsilon, seed, args.aggregate, estimator=estimator, progress=False
            )
            flat, _ = scores.flat()
            runs[estimator].append(
                {"seed": seed, "seconds": time.perf_counter() - start, "scores": flat, "allocation": ecoflap_sparsities(flat, sizes, args.sparsity)}
            )
            print(f"  seed {seed} {estimator}: {runs[estimator][-1]['seconds']:.1f} s", flush=True)

    labels = [f"{modality[0]}{index}" for modality, n in first.n_params.items() for index in range(len(n))]
    print(f"\ntarget {args.sparsity:g}, aggregate {args.aggregate}, {args.seeds} seeds; first-order allocation:")
    print("  " + " ".join(f"{label}:{s:.2f}" for label, s in zip(labels, first_allocation)))
    print(f"\n| estimator | passes/block | s/run | sparsity std across seeds: mean | max (block) | ρ(scores, first order): mean [min, max] | ρ(mean allocation, first order) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for estimator in ESTIMATORS:
        allocations = [run["allocation"] for run in runs[estimator]]
        stds = [statistics.pstdev(column) for column in zip(*allocations)]
        worst = max(range(len(stds)), key=stds.__getitem__)
        rhos = [spearmanr(run["scores"], values).statistic for run in runs[estimator]]
        mean_allocation = [statistics.fmean(column) for column in zip(*allocations)]
        rho_allocation = spearmanr(mean_allocation, first_allocation).statistic
        passes = 2 * tensors * len(few)
        seconds = statistics.fmean(run["seconds"] for run in runs[estimator])
        print(
            f"| {estimator} | {passes} | {seconds:.1f} | {statistics.fmean(stds):.3f} | {stds[worst]:.3f} ({labels[worst]}) | "
            f"{statistics.fmean(rhos):.3f} [{min(rhos):.3f}, {max(rhos):.3f}] | {rho_allocation:.3f} |"
        )
        print("  mean allocation: " + " ".join(f"{label}:{s:.2f}" for label, s in zip(labels, mean_allocation)))
    if args.json:
        args.json.write_text(json.dumps({"labels": labels, "first_order": {"scores": values, "allocation": first_allocation}, "runs": runs}, indent=1))


def _block_tensors(model: torch.nn.Module, adapter) -> list:
    """The prunable tensors of the first language block (T of the per-tensor estimator)."""
    from pruning.models.adapters import blocks, prunable_linears

    group = adapter.groups[-1]
    return list(prunable_linears(blocks(model, group)[0], group).values())


if __name__ == "__main__":
    main()
