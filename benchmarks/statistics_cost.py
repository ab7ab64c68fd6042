"""What the leaderboard's statistics cost: one paired bootstrap per column against one per value.

A leaderboard column (one suite's metric, K methods scored on the same N items) needs every value's
interval, every method's retention interval against dense, and every method's difference from the
best with its p-value. `reports.statistics.column_statistics` makes them rows of one vectorised
statistic, so scipy resamples the items once for the column; the alternative is one bootstrap per
value (an interval, a retention, a difference: about 3K calls). This script times both on the same
hand-made columns (0/1 accuracy and per-document perplexity), checks that they agree (with the same
seed both draw the same resampled items, so every interval end is the same up to rounding; the
check allows 1%), and prints the ratio.

    .venv/bin/python benchmarks/statistics_cost.py                        # K = 12, N = 3,000
    .venv/bin/python benchmarks/statistics_cost.py --methods 24 --items 10000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from reports.statistics import ItemScores, aggregate, column_statistics, paired_difference, paired_retention


def accuracy_column(n_methods: int, n_items: int, rng: np.random.Generator) -> dict[str, ItemScores]:
    dense = (rng.random(n_items) < 0.86).astype(float)
    runs = {"dense": ItemScores(dense, np.ones(n_items))}
    for k in range(n_methods - 1):
        flipped = rng.random(n_items) < 0.02 + 0.01 * k
        runs[f"m{k}"] = ItemScores(np.where(flipped, 1 - dense, dense), np.ones(n_items))
    return runs


def perplexity_column(n_methods: int, n_items: int, rng: np.random.Generator) -> dict[str, ItemScores]:
    words = rng.integers(50, 400, n_items).astype(float)
    nats = rng.uniform(2.5, 3.5, n_items)
    return {("dense" if k == 0 else f"m{k - 1}"): ItemScores(-words * nats * (1 + 0.05 * k + rng.normal(0, 0.02, n_items)), words)
            for k in range(n_methods)}  # fmt: skip


def per_value(runs: dict[str, ItemScores], how: str) -> dict[str, tuple[float, float]]:
    """Every interval by a bootstrap of its own (the leaderboard before one column bootstrap)."""
    from reports.statistics import N_RESAMPLES, _paired_arrays, _paired_bootstrap

    ends = {}
    for name, scores in runs.items():
        arrays = _paired_arrays(scores.values, scores.weights)
        _, low, high, _ = _paired_bootstrap(lambda v, w, axis=-1: aggregate(v, w, how, axis)[np.newaxis], arrays,
                                            nulls=(None,), alpha=0.05, n_resamples=N_RESAMPLES, seed=0)  # fmt: skip
        ends[f"interval {name}"] = (float(low[0]), float(high[0]))
    pruned = [name for name in runs if name != "dense"]
    for name in pruned:
        kept = paired_retention(runs[name], runs["dense"], how)
        ends[f"retention {name}"] = (kept.low, kept.high)
    best = pruned[0]
    for name in pruned[1:]:
        difference = paired_difference(runs[best], runs[name], how)
        ends[f"difference {name}"] = (difference.low, difference.high)
    return ends


def joint(runs: dict[str, ItemScores], how: str) -> dict[str, tuple[float, float]]:
    column = column_statistics(runs, how, dense="dense", best="m0")
    ends = {f"interval {name}": (interval.low, interval.high) for name, interval in column.intervals.items()}
    ends |= {f"retention {name}": (kept.low, kept.high) for name, kept in column.retention.items()}
    ends |= {f"difference {name}": (c.low, c.high) for name, c in column.ties.comparisons.items()}
    return ends


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", type=int, default=12, help="runs in the column, dense included (default 12)")
    parser.add_argument("--items", type=int, default=3000, help="items (or documents) per run (default 3,000)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{args.methods} runs x {args.items:,} items, 2,000 resamples")
    print(f"{'column':<12} {'per value':>10} {'one bootstrap':>14} {'ratio':>7} {'largest |end difference|':>25}")
    for name, make, how in (("accuracy", accuracy_column, "mean"), ("perplexity", perplexity_column, "perplexity")):
        runs = make(args.methods, args.items, rng)
        started = time.perf_counter()
        separate = per_value(runs, how)
        separate_s = time.perf_counter() - started
        started = time.perf_counter()
        together = joint(runs, how)
        joint_s = time.perf_counter() - started
        scale = {key: max(abs(a), abs(b), 1e-12) for key, (a, b) in together.items()}
        largest = max(max(abs(a - c), abs(b - d)) / scale[key] for key, (a, b) in together.items() for c, d in [separate[key]])
        print(f"{name:<12} {separate_s:>9.2f}s {joint_s:>13.2f}s {separate_s / joint_s:>6.1f}x {largest:>24.2%}")
        assert largest < 0.01, f"{name}: the two ways disagree by {largest:.2%} of a value"


if __name__ == "__main__":
    main()
