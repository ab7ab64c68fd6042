"""What the two local-pruning options that depart from ECoFLaP's published scripts do on the toy VLM:
Wanda's comparison in vision-tower blocks (`vision_selection`: per_row, or layer as ECoFLaP's ViT
pruner does) and padded calibration positions in the layer-input statistics (`padding`: included, as
the published scripts count them, or excluded).

Per calibration seed, method (uniform Wanda; ECoFLaP zeroth-order + Wanda), target sparsity and
combination of the two options: prune the trained toy VLM as the `prune` stage does (the method's
spec gives `prune_model` its options), then score the image-QA test questions: multiple-choice
accuracy (as benchmarks/toy_vlm_recipe.py computes it) and the answer-token NLL. ECoFLaP's block
scores depend on neither option: they are computed once per seed. Calibration is the flow's: N
seeded image-question pairs of the calibration split (`tasks.calibration`), processor-padded per
batch; the share of padded positions is printed first. The toy VLM must be built (`prunebench run
configs/ecoflap-toy-vlm.yaml` trains it into <cache-dir>/models/toy-vlm).

    .venv/bin/python benchmarks/local_options.py                  # full: 3 seeds, 3,000 questions (~75 min, 2 cores)
    .venv/bin/python benchmarks/local_options.py --sparsities 0.6  # half of it
    .venv/bin/python benchmarks/local_options.py --seeds 0 --sparsities 0.5 --eval-items 200   # smoke (~2 min)
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import tempfile
import time
from pathlib import Path
from typing import get_args

import torch
from torch import nn

from evals.imageqa.generator import build_imageqa, split_path
from evals.imageqa.prompts import answer_text, question_text
from evals.imageqa.records import load_image, load_records
from evals.vlm_prompt import vlm_prompt
from pruning.allocation import allocate
from pruning.calibration import multimodal_batches
from pruning.local.walk import calibration_batches, prune_model
from pruning.models.adapters import adapter_for
from pruning.models.sources import checkpoint_fingerprint, load_model, trained_checkpoint
from pruning.scores import zeroth_order_scores
from pruning.scores.common import calibration_loss
from pruning.specs import CalibrationSpec, ECoFLaPSpec, ModelSpec, StatisticsPadding, WandaSelection, WandaSpec
from tasks.artifacts import CheckpointRef
from tasks.calibration import calibration_inputs, calibration_set
from tasks.toy_vlm import TOY_VLM
from toy_vlm_recipe import accuracy

REPO = Path(__file__).resolve().parent.parent
METHODS = ("wanda", "ecoflap")
OPTIONS = list(itertools.product(get_args(WandaSelection), get_args(StatisticsPadding)))  # (vision_selection, padding)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1]
    )
    parser.add_argument("--cache-dir", type=Path, default=REPO / ".prunebench" / "cache", help="holds models/toy-vlm and its image-QA build")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.5, 0.6])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="calibration draws (ECoFLaP's block scores are recomputed on each)")
    parser.add_argument("--n-samples", type=int, default=64, help="calibration image-question pairs (configs/ecoflap-toy-vlm.yaml: 64)")
    parser.add_argument("--batch-size", type=int, default=16, help="calibration pairs per batch (configs/ecoflap-toy-vlm.yaml: 16)")
    parser.add_argument("--eval-items", type=int, help="score the first N test questions only (default: all)")
    parser.add_argument("--eval-batch", type=int, default=32)
    args = parser.parse_args(argv)
    for name in ("n_samples", "batch_size", "eval_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not all(0 < s < 1 for s in args.sparsities):
        parser.error("--sparsities must be in (0, 1)")
    return args


def spec_for(method: str, sparsity: float, vision_selection: str, padding: str) -> WandaSpec | ECoFLaPSpec:
    if method == "wanda":
        return WandaSpec(name="wanda", sparsity=sparsity, vision_selection=vision_selection, padding=padding)
    return ECoFLaPSpec(name="ecoflap", sparsity=sparsity, local="wanda", vision_selection=vision_selection, padding=padding)


def padded_share(batches: list[dict]) -> float:
    """Share of the calibration batches' text positions that are padding (attention_mask == 0)."""
    masks = [batch["attention_mask"] for batch in batches]
    return sum(int((mask == 0).sum()) for mask in masks) / sum(mask.numel() for mask in masks)


def answer_nll(model: nn.Module, processor, records: list, batch_size: int) -> float:
    """Mean NLL per labelled token (each answer and the end-of-turn token after it) over `records`."""
    prompts = [vlm_prompt(processor, question_text(record)) for record in records]
    batches = multimodal_batches(processor, [load_image(r) for r in records], prompts, [answer_text(r.answer) for r in records], batch_size)
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            n_labelled = int((batch["labels"][:, 1:] != -100).sum())  # the loss predicts each label from the position before
            total += calibration_loss(model, batch).item() * n_labelled
            tokens += n_labelled
    return total / tokens


def scored(model: nn.Module, processor, records: list, batch_size: int) -> dict[str, float]:
    return {"accuracy": accuracy(model, processor, records, batch_size)["overall"], "nll": answer_nll(model, processor, records, batch_size)}


def calibration_for(seed: int, args: argparse.Namespace, checkpoint: Path, model_spec: ModelSpec, processor, workdir: str) -> list[dict]:
    """The flow's calibration set for this seed: the same pairs and batches the `prune` stage would use."""
    calibration = CalibrationSpec(corpus="imageqa", n_samples=args.n_samples, batch_size=args.batch_size, seed=seed)
    base = CheckpointRef(path=str(checkpoint), fingerprint=checkpoint_fingerprint(checkpoint))
    made = calibration_set.fn(base, model_spec, calibration, workdir, str(args.cache_dir))
    return calibration_batches(calibration_inputs(Path(made.path), processor, args.batch_size), args.batch_size)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.manual_seed(0)
    checkpoint = trained_checkpoint(TOY_VLM, args.cache_dir / "models")
    model_spec = ModelSpec(source=str(checkpoint))
    dense, processor = load_model(checkpoint, model_spec)
    adapter = adapter_for(dense)
    records = load_records(split_path(build_imageqa(args.cache_dir), "test"))[: args.eval_items]
    print(f"toy-vlm {checkpoint}; {len(records)} test questions; calibration {args.n_samples} pairs in batches of {args.batch_size}")
    started = time.perf_counter()
    baseline = scored(dense, processor, records, args.eval_batch)
    print(f"dense: accuracy {baseline['accuracy']:.4f}, answer NLL {baseline['nll']:.4f} ({time.perf_counter() - started:.0f} s)")

    results: dict[tuple, list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as workdir:
        for seed in args.seeds:
            batches = calibration_for(seed, args, checkpoint, model_spec, processor, workdir)
            print(f"seed {seed}: {padded_share(batches):.1%} of calibration text positions are padding")
            block_scores = None
            if "ecoflap" in args.methods:
                scoring = spec_for("ecoflap", args.sparsities[0], "per_row", "included")
                used = batches[: -(-scoring.n_score_samples // args.batch_size)]  # whole batches holding the score samples
                block_scores = zeroth_order_scores(
                    dense, adapter, used, epsilon=scoring.epsilon, seed=scoring.seed, aggregate=scoring.aggregate,
                    weighted=scoring.weighted, progress=False,
                )
            for method, sparsity, (vision_selection, padding) in itertools.product(args.methods, args.sparsities, OPTIONS):
                spec = spec_for(method, sparsity, vision_selection, padding)
                model = copy.deepcopy(dense)
                block_sparsity = allocate(spec, block_scores) if method == "ecoflap" else None
                started = time.perf_counter()
                prune_model(
                    model, adapter, spec.local, batches, block_sparsity=block_sparsity, target=None if block_sparsity else spec.target,
                    batch_size=args.batch_size, progress=False, options=spec.local_options(),
                    modality_options=spec.modality_options(), exclude_padding=spec.exclude_padding,
                )
                result = scored(model, processor, records, args.eval_batch)
                results.setdefault((method, sparsity, vision_selection, padding), []).append(result)
                print(f"  {spec.base_label} vision_selection={vision_selection} padding={padding}: accuracy {result['accuracy']:.4f}, "
                      f"NLL {result['nll']:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    print_tables(results, args)


def mean_sd(values: list[float]) -> str:
    sd = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.4f}{sd}"


def print_tables(results: dict[tuple, list[dict[str, float]]], args: argparse.Namespace) -> None:
    """Each combination's mean over seeds (± sd), then each option's paired effect (the other held fixed)."""
    print(f"\n| method | sparsity | vision_selection | padding | accuracy | answer NLL |  (mean ± sd over seeds {args.seeds})")
    print("|---|---|---|---|---|---|")
    for (method, sparsity, vision_selection, padding), runs in results.items():
        print(f"| {method} | {sparsity:g} | {vision_selection} | {padding} | {mean_sd([r['accuracy'] for r in runs])} | "
              f"{mean_sd([r['nll'] for r in runs])} |")
    print("\n| method | sparsity | change | other option | Δ accuracy | Δ answer NLL |  (paired by seed: mean ± sd)")
    print("|---|---|---|---|---|---|")
    for method, sparsity in itertools.product(args.methods, args.sparsities):
        for padding in get_args(StatisticsPadding):
            before, after = results[method, sparsity, "per_row", padding], results[method, sparsity, "layer", padding]
            print_effect(method, sparsity, "vision_selection per_row → layer", f"padding {padding}", before, after)
        for vision_selection in get_args(WandaSelection):
            before, after = results[method, sparsity, vision_selection, "included"], results[method, sparsity, vision_selection, "excluded"]
            print_effect(method, sparsity, "padding included → excluded", f"vision_selection {vision_selection}", before, after)


def print_effect(method: str, sparsity: float, change: str, other: str, before: list[dict], after: list[dict]) -> None:
    deltas = {key: [b[key] - a[key] for a, b in zip(before, after)] for key in ("accuracy", "nll")}
    print(f"| {method} | {sparsity:g} | {change} | {other} | {mean_sd(deltas['accuracy'])} | {mean_sd(deltas['nll'])} |")


if __name__ == "__main__":
    main()
