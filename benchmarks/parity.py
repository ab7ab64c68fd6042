"""Parity with the published reference code: ours against the transcriptions in tests/reference.

Each method prunes two fresh copies of one model on the same calibration token ids (the project's
calibration data: seeded windows of the Jargon File's calibration split, as `pruning.calibration`
makes them): one with ours (`pruning.local.walk.prune_model`), one with the transcription of the
reference code. Per method: the share of weights pruned in both or kept in both, per linear
type and overall, the first layer where any mask differs (a float-rounding flip there spreads to
every later layer through their inputs), and the held-out NLL (mean token loss on windows of a
corpus's test split) of both.

  magnitude      ours vs locuslab/wanda `prune_magnitude` (layer-wide, `<=` threshold)
  wanda          ours vs `prune_wanda` (per row; scaler_row a running mean)
  sparsegpt      ours with mask_rule exact, and with mask_rule reference, vs `fasterprune` (`<=` threshold)
  owl            outlier ratios and layer sparsities of both (luuyin/OWL `prune_wanda_outlier`), each side
                 then pruned by its own Wanda at its own sparsities
  ecoflap        one set of our zeroth-order block scores (the spec's default estimator), allocated by
                 ours and by the reference's `compute_the_sparsity_per_group` (ylsung/ECoFLaP), each
                 side pruned by its own Wanda

Our side runs --batch-size sequences per forward, the reference one at a time: the float rounding
differs, and SparseGPT's masks, whose Hessian is rank-deficient when there are fewer calibration
tokens than input features, can amplify it; --batch-size 1 makes both sides' arithmetic the same.

    .venv/bin/python benchmarks/parity.py                          # SmolLM2-135M, 32 x 256, every method
    .venv/bin/python benchmarks/parity.py --layers 2 --n-samples 4 --seq-len 64 --eval-samples 4 \\
        --score-samples 2                                          # smoke: random-init, 2 layers, ~1 min
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from finetune_precision import held_out_loss
from prune_speed import REPO, build_model

sys.path.insert(0, str(REPO))  # tests.reference, the transcriptions

from evals.corpora import CORPORA, corpus_documents  # noqa: E402
from pruning.allocation import ecoflap_sparsities, owl_sparsities  # noqa: E402
from pruning.calibration import calibration_ids  # noqa: E402
from pruning.local.walk import calibration_batches, prune_model  # noqa: E402
from pruning.models.adapters import adapter_for  # noqa: E402
from pruning.models.sources import load_tokenizer, materialize_packaged  # noqa: E402
from pruning.scores import zeroth_order_scores  # noqa: E402
from pruning.scores.outliers import outlier_ratios  # noqa: E402
from pruning.specs import ECoFLaPSpec, ModelSpec, OWLSpec  # noqa: E402
from tests.reference import ecoflap as reference_ecoflap  # noqa: E402
from tests.reference import owl as reference_owl  # noqa: E402
from tests.reference import sparsegpt as reference_sparsegpt  # noqa: E402
from tests.reference import wanda as reference_wanda  # noqa: E402
from tests.reference.agreement import agreement, agreement_by_type, zero_masks  # noqa: E402

CACHE = REPO / ".prunebench" / "cache"
METHODS = ("magnitude", "wanda", "sparsegpt", "owl", "ecoflap")
TYPES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1]
    )  # fmt: skip
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="METHOD", help=f"of {', '.join(METHODS)} (default: all)")
    parser.add_argument("--sparsity", type=float, default=0.5, help="target sparsity of every method (default: 0.5)")
    parser.add_argument("--n-samples", type=int, default=32, help="calibration windows (default: 32)")
    parser.add_argument("--seq-len", type=int, default=256, help="tokens per calibration and held-out window (default: 256)")
    parser.add_argument("--eval-samples", type=int, default=32, help="held-out windows (default: 32)")
    parser.add_argument("--eval-corpus", default="jargon", choices=sorted(CORPORA), help="corpus whose test split is held out (default: jargon)")
    parser.add_argument("--calibration-corpus", default="jargon", choices=sorted(CORPORA), help="corpus of the calibration split (default: jargon)")
    parser.add_argument("--score-samples", type=int, default=32, help="calibration windows of ECoFLaP's zeroth-order scores (default: 32)")
    parser.add_argument("--batch-size", type=int, default=8, help="sequences per forward on our side (default: 8; the reference runs one at a time)")
    parser.add_argument("--layers", type=int, help="a random-init SmolLM2-shaped Llama of this many layers instead of the packaged model (smoke runs)")
    parser.add_argument("--device", default="cpu", help="where both sides run (default: cpu)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0, help="calibration draw; held-out windows use seed + 1 (default: 0)")
    args = parser.parse_args(argv)
    for name in ("n_samples", "seq_len", "eval_samples", "score_samples", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 < args.sparsity < 1:
        parser.error("--sparsity must be in (0, 1)")
    # what prune_speed.build_model reads: the packaged model, or a random-init one of its shape
    args.shape, args.dtype = None, "float32"
    return args


def row(label: str, ours, reference, ids_heldout: torch.Tensor, note: str = "") -> dict:
    """Mask agreement and held-out NLL of two pruned copies."""
    ours_masks, reference_masks = zero_masks(ours), zero_masks(reference)
    return {
        "method": label,
        "by_type": agreement_by_type(ours_masks, reference_masks),
        "overall": agreement(ours_masks, reference_masks),
        "first_layer_differing": min(
            (int(k.split(".")[0]) for k in ours_masks if not torch.equal(ours_masks[k], reference_masks[k])), default=None
        ),
        "nll": (held_out_loss(ours, ids_heldout), held_out_loss(reference, ids_heldout)),
        "note": note,
    }


def run_method(method: str, make, ids: torch.Tensor, heldout: torch.Tensor, args: argparse.Namespace) -> list[dict]:
    s, batch = args.sparsity, args.batch_size
    ours, reference = make(), make()
    adapter = adapter_for(ours)
    if method == "magnitude":
        prune_model(ours, adapter, "magnitude", target=s, progress=False)
        reference_wanda.prune_magnitude(reference, s)
        return [row(f"magnitude {s:.0%}", ours, reference, heldout)]
    if method == "wanda":
        prune_model(ours, adapter, "wanda", ids, target=s, batch_size=batch, progress=False)
        reference_wanda.prune_wanda(reference, ids, s)
        return [row(f"wanda {s:.0%}", ours, reference, heldout)]
    if method == "sparsegpt":
        reference_sparsegpt.prune_sparsegpt(reference, ids, s)
        rows = []
        for rule in ("exact", "reference"):
            ours = make()
            prune_model(ours, adapter, "sparsegpt", ids, target=s, batch_size=batch, progress=False, options={"mask_rule": rule})
            rows.append(row(f"sparsegpt {s:.0%} mask_rule={rule}", ours, reference, heldout))
        return rows
    if method in ("owl", "ecoflap"):  # each side allocates, then prunes with its own Wanda
        allocate = owl_allocations if method == "owl" else ecoflap_allocations
        scores, sparsities, reference_sparsities, note = allocate(ours, reference, ids, args)
        prune_model(ours, adapter, "wanda", ids, block_sparsity=scores.split(sparsities), batch_size=batch, progress=False)
        reference_wanda.prune_wanda(reference, ids, s, layer_sparsities=reference_sparsities)
        return [row(f"{method}+wanda {s:.0%}", ours, reference, heldout, note)]
    raise ValueError(method)


def owl_allocations(ours, reference, ids: torch.Tensor, args: argparse.Namespace):
    """Outlier ratios and layer sparsities of both sides, each measured on its own dense copy."""
    s, spec = args.sparsity, OWLSpec(name="owl", sparsity=args.sparsity)
    ratios = outlier_ratios(ours, adapter_for(ours), ids, m=spec.outlier_m, batch_size=args.batch_size, progress=False)
    values, sizes = ratios.flat()
    sparsities = owl_sparsities(values, sizes, s, spec.lam)
    reference_ratios = reference_owl.outlier_ratios(reference, ids, hyper_m=spec.outlier_m)
    reference_sparsities = reference_owl.layer_sparsities(reference_ratios, s, spec.lam)
    note = (
        f"M={spec.outlier_m:g}, lam={spec.lam:g}: ratios max |diff| {max(abs(100 * a - b) for a, b in zip(values, reference_ratios)):.2e} "
        f"(percent), sparsities max |diff| {max(abs(a - b) for a, b in zip(sparsities, reference_sparsities)):.2e}"
    )
    return ratios, sparsities, reference_sparsities, note


def ecoflap_allocations(ours, reference, ids: torch.Tensor, args: argparse.Namespace):
    """One set of our zeroth-order block scores, allocated by ours and by the reference's rule."""
    s, spec = args.sparsity, ECoFLaPSpec(name="ecoflap", sparsity=args.sparsity)
    batches = calibration_batches(ids[: args.score_samples], args.batch_size)
    scores = zeroth_order_scores(
        ours, adapter_for(ours), batches, spec.epsilon, spec.seed, spec.aggregate, spec.weighted,
        estimator=spec.estimator, progress=False,
    )  # fmt: skip
    values, sizes = scores.flat()
    sparsities = ecoflap_sparsities(values, sizes, s, spec.max_extra)
    groups = {str(b): torch.FloatTensor([v]).sum() for b, v in enumerate(values)}
    allocation = reference_ecoflap.allocation(groups, {str(b): n for b, n in enumerate(sizes)}, s, s + spec.max_extra)
    reference_sparsities = list(allocation.values())
    keeps = [round((1 - x) * n) for x, n in zip(sparsities, sizes)]
    reference_keeps = [round((1 - x) * n) for x, n in zip(reference_sparsities, sizes)]
    note = (
        f"{spec.aggregate} of zeroth-order scores ({spec.estimator}) on {len(batches)} batches: keeps max |diff| per block "
        f"{max(abs(a - b) for a, b in zip(keeps, reference_keeps))} weights, kept in all {sum(keeps)} ours / {sum(reference_keeps)} reference"
    )
    return scores, sparsities, reference_sparsities, note


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    checkpoint = materialize_packaged("smollm2-135m", CACHE / "models")
    tokenizer = load_tokenizer(checkpoint, ModelSpec(source=str(checkpoint)))
    ids = calibration_ids(corpus_documents(args.calibration_corpus, "calibration", CACHE), tokenizer, args.n_samples, args.seq_len, args.seed)
    heldout = calibration_ids(corpus_documents(args.eval_corpus, "test", CACHE), tokenizer, args.eval_samples, args.seq_len, args.seed + 1)
    ids = ids.to(args.device)
    make = build_model(args, args.layers)
    name = f"random-init SmolLM2-shaped Llama, {args.layers} layers" if args.layers else "SmolLM2-135M"
    print(
        f"{name}, fp32, {args.device}, {torch.get_num_threads()} threads, our batch size {args.batch_size}; calibration {args.n_samples} x {args.seq_len} tokens of {args.calibration_corpus}, "
        f"held out {args.eval_samples} x {args.seq_len} of {args.eval_corpus} (test split); dense NLL {held_out_loss(make(), heldout):.4f}"
    )  # fmt: skip
    print(f"\n| method | {' | '.join(t.removesuffix('_proj') for t in TYPES)} | overall | first layer differing | NLL ours / reference | seconds (both sides) |")
    print(f"|---|{'---:|' * len(TYPES)}---:|---:|---:|---:|")
    notes = []
    for method in args.methods:
        started = time.perf_counter()
        for result in run_method(method, make, ids, heldout, args):
            by_type = " | ".join(f"{100 * result['by_type'][t]:.3f}%" for t in TYPES)
            ours_nll, reference_nll = result["nll"]
            first = "-" if result["first_layer_differing"] is None else result["first_layer_differing"]
            print(
                f"| {result['method']} | {by_type} | {100 * result['overall']:.3f}% | {first} | {ours_nll:.4f} / {reference_nll:.4f} "
                f"| {time.perf_counter() - started:.0f} |", flush=True,
            )  # fmt: skip
            if result["note"]:
                notes.append(f"{result['method']}: {result['note']}")
    for note in notes:
        print(f"\n{note}")


if __name__ == "__main__":
    main()
