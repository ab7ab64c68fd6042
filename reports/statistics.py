"""Which differences are real: paired comparisons of two runs scored on the very same items.

Every method is evaluated on the same items, so two runs are compared item by item (paired), never as
two independent samples: what both runs get right or wrong alike cancels out of the difference.

- Intervals: the paired bootstrap (Koehn 2004, "Statistical significance tests for machine translation
  evaluation"): resample items with replacement, the same items for both runs, and recompute each run's
  metric from the resampled items; `scipy.stats.bootstrap(..., paired=True)` does it. A metric that
  is a ratio of sums (perplexity exp(-Σ loglik / Σ words)) is recomputed from the resampled documents,
  never averaged per document.
- Interval method: percentile, not BCa. It is defined on every input, including the degenerate and
  near-degenerate data paired 0/1 outcomes often are (identical runs, a handful of discordant items),
  where BCa's bias correction and acceleration are NaN or unstable; it respects monotone transforms
  (the interval of a ratio and of its reciprocal agree); and it costs one pass, where BCa's jackknife
  re-evaluates the statistic n times over n - 1 items (10^8 values for a 10k-item suite). Over the
  hundreds to thousands of items of a suite the bootstrap distribution of these sums is close to
  normal, where BCa's second-order corrections are small.
- Tests: accuracy (every value 0 or 1) by McNemar's exact test on the discordant items; anything else
  by the bootstrap itself (the p-value that inverts the percentile interval), so the p-value and the
  interval tell the same story.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict
from scipy import stats

from pruning.errors import PrunebenchError

ALPHA = 0.05  # two-sided: 95% intervals, tests at 5%
N_RESAMPLES = 2000
MIN_ITEMS = 2  # a bootstrap over fewer items has nothing to resample (scipy refuses it)
SEED = 0
# Resampled values held at once: bounds memory for large suites and many runs, whatever n_resamples is.
_RESAMPLED_VALUES_PER_BATCH = 2**24  # over all the arrays resampled together: 128 MiB of float64

# How a run's per-item rows make its metric, as the harness aggregates them: the mean of the values
# (accuracy; weights unused, every item counts once as in lm-eval), perplexity exp(-Σ value / Σ weight)
# over log-likelihoods (weights: words or bytes; 1 for lm-eval's per-token-free `perplexity`, which is
# exp(-mean)), or bits per byte -Σ value / Σ weight / ln 2.
Aggregate = Literal["mean", "perplexity", "bits_per_byte"]
_PERPLEXITIES = frozenset({"word_perplexity", "byte_perplexity", "perplexity"})


class ItemMismatchError(PrunebenchError, ValueError):
    """Two runs to compare item by item that were not scored on the same items."""


@dataclass(frozen=True)
class ItemScores:
    """One run's per-item scores, in the item order of an `align_items` call."""

    values: np.ndarray  # accuracy: 0/1; perplexity: the item's (document's) log-likelihood
    weights: np.ndarray  # perplexity: the item's word (or byte) count; 1 for accuracy


@dataclass(frozen=True)
class AlignedItems:
    item_ids: tuple[Hashable, ...]  # sorted, so results do not depend on the order rows were read in
    runs: dict[str, ItemScores]  # keyed like the mapping given to `align_items`


class PairedComparison(BaseModel):
    """Run b against run a on the same items: an estimate, its (1 - alpha) interval, a two-sided p-value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    estimate: float  # b - a (a difference) or b / a (a ratio, retention)
    low: float
    high: float
    null: float  # the estimate when nothing differs: 0 for a difference, 1 for a ratio
    p_value: float  # two-sided, of the test named in `method`
    n_items: int
    method: str  # how the interval and the p-value were computed
    alpha: float  # the interval is the (1 - alpha) one; `significant` tests at alpha

    @property
    def significant(self) -> bool:
        """p < alpha. For bootstrap p-values this is the interval excluding the null; McNemar's exact p
        and the bootstrap interval of an accuracy difference can disagree at the border, and p decides."""
        return self.p_value < self.alpha


class PerplexityChange(BaseModel):
    """Perplexity of run b against run a, from one paired bootstrap (so both share resamples and p)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    difference: PairedComparison  # ppl_b - ppl_a
    ratio: PairedComparison  # ppl_b / ppl_a


class Interval(NamedTuple):
    """One run's metric with its (1 - alpha) percentile-bootstrap interval over items."""

    estimate: float
    low: float
    high: float
    n_items: int


class SeedSpread(NamedTuple):
    mean: float
    sd: float | None  # sample standard deviation (ddof=1); None for a single seed
    n_seeds: int


# -- items -------------------------------------------------------------------------------------


def align_items(runs: Mapping[str, Mapping[Hashable, tuple[float, float | None]]]) -> AlignedItems:
    """Put several runs' {item_id: (value, weight)} in one item order; refuse runs scored on other items."""
    if not runs:
        raise ValueError("align_items needs at least one run")
    (first_name, first), *others = runs.items()
    for name, items in others:
        if items.keys() != first.keys():
            only_first, only_other = first.keys() - items.keys(), items.keys() - first.keys()
            raise ItemMismatchError(
                f"runs {first_name!r} and {name!r} were scored on different items: {len(first)} vs "
                f"{len(items)} items, {len(only_first)} only in {first_name!r}{_examples(only_first)}, "
                f"{len(only_other)} only in {name!r}{_examples(only_other)}"
            )
    return AlignedItems(item_ids=tuple(sorted(first, key=str)), runs={name: item_scores(items) for name, items in runs.items()})


def _examples(item_ids: set, shown: int = 3) -> str:
    return f" (e.g. {', '.join(repr(item) for item in sorted(item_ids, key=str)[:shown])})" if item_ids else ""


# -- metrics -----------------------------------------------------------------------------------


def perplexity(loglik: ArrayLike, weights: ArrayLike, axis: int = -1) -> np.ndarray:
    """exp(-Σ loglik / Σ weight): word perplexity when the weights are word counts (lm-eval's
    `weighted_perplexity`), byte perplexity for byte counts."""
    return np.exp(-np.sum(loglik, axis=axis) / np.sum(weights, axis=axis))


def aggregate(values: ArrayLike, weights: ArrayLike, how: Aggregate, axis: int = -1) -> np.ndarray:
    """A run's metric from its per-item rows (see `Aggregate`)."""
    if how == "mean":
        return np.mean(values, axis=axis)
    if how == "perplexity":
        return perplexity(values, weights, axis=axis)
    return -np.sum(values, axis=axis) / np.sum(weights, axis=axis) / math.log(2)


def aggregation(metric: str) -> Aggregate:
    """How the harness makes `metric` (a ResultRow/ItemScore metric name, "<metric>/<filter>" for a
    filter other than "none") from its per-item values: lm-eval's `weighted_perplexity` for word and
    byte perplexity, `perplexity` (exp(-mean)) for lambada-style perplexity, `bits_per_byte`, and the
    mean for everything else (accuracy, exact match)."""
    name = metric.split("/", 1)[0]
    if name in _PERPLEXITIES:
        return "perplexity"
    return "bits_per_byte" if name == "bits_per_byte" else "mean"


def item_scores(items: Mapping[Hashable, tuple[float, float | None]]) -> ItemScores:
    """One run's {item: (value, weight)} as arrays in item-id order; a missing weight counts 1."""
    ordered = sorted(items, key=str)
    return ItemScores(
        values=np.array([items[item][0] for item in ordered], dtype=float),
        weights=np.array([1.0 if items[item][1] is None else items[item][1] for item in ordered], dtype=float),
    )


# -- paired comparisons ------------------------------------------------------------------------


def mean_difference(a: ArrayLike, b: ArrayLike, *, alpha: float = ALPHA, n_resamples: int = N_RESAMPLES,
                    seed: int = SEED) -> PairedComparison:  # fmt: skip
    """mean(b) - mean(a) over the same items, with its paired-bootstrap percentile interval. The p-value is
    McNemar's exact test when every value is 0 or 1 (accuracy), else the bootstrap's."""
    a, b = _paired_arrays(a, b)
    differences = b - a
    estimate, low, high, p_bootstrap = _paired_bootstrap(
        lambda a_values, b_values, axis=-1: np.mean(b_values - a_values, axis=axis)[np.newaxis], (a, b),
        nulls=(0.0,), alpha=alpha, n_resamples=n_resamples, seed=seed,
    )  # fmt: skip
    if np.all(differences == differences[0]):
        # No sampling variability: every resample gives the constant back (up to rounding), so it is the interval.
        estimate = low = high = np.array([differences[0]])
    p_value, test = (mcnemar_p_value(a, b), "McNemar exact") if _binary(a, b) else (p_bootstrap[0], "bootstrap")
    return PairedComparison(
        estimate=estimate[0], low=low[0], high=high[0], null=0.0, p_value=p_value, n_items=a.size,
        method=_method(n_resamples, seed, test), alpha=alpha,
    )  # fmt: skip


def mcnemar_p_value(a: ArrayLike, b: ArrayLike) -> float:
    """McNemar's exact test (McNemar 1947) of two 0/1 outcome vectors on the same items: under "no
    difference" each discordant item is equally likely to favour either run, so the items a gets right
    and b wrong (n10) are Binomial(n01 + n10, 1/2). Two-sided p; 1 without discordant items."""
    a, b = _paired_arrays(a, b)
    n10 = int(np.count_nonzero((a == 1) & (b == 0)))
    n01 = int(np.count_nonzero((a == 0) & (b == 1)))
    if n01 + n10 == 0:
        return 1.0
    return float(stats.binomtest(n10, n01 + n10, 0.5).pvalue)


def perplexity_change(a: ItemScores, b: ItemScores, *, alpha: float = ALPHA, n_resamples: int = N_RESAMPLES,
                      seed: int = SEED) -> PerplexityChange:  # fmt: skip
    """ppl_b - ppl_a and ppl_b / ppl_a, documents resampled jointly and each run's perplexity recomputed
    from its resampled documents. The two share one bootstrap, so one p-value (ppl_b > ppl_a exactly
    when the ratio exceeds 1)."""
    arrays = _paired_arrays(a.values, a.weights, b.values, b.weights)

    def difference_and_ratio(a_loglik, a_weights, b_loglik, b_weights, axis=-1):
        ppl_a, ppl_b = perplexity(a_loglik, a_weights, axis), perplexity(b_loglik, b_weights, axis)
        return np.stack([ppl_b - ppl_a, ppl_b / ppl_a])

    estimate, low, high, p_value = _paired_bootstrap(
        difference_and_ratio, arrays, nulls=(0.0, 1.0), alpha=alpha, n_resamples=n_resamples, seed=seed
    )
    common = dict(n_items=arrays[0].size, alpha=alpha, method=_method(n_resamples, seed, "bootstrap"))
    difference, ratio = (
        PairedComparison(estimate=estimate[k], low=low[k], high=high[k], null=null, p_value=p_value[k], **common)
        for k, null in enumerate((0.0, 1.0))
    )
    return PerplexityChange(difference=difference, ratio=ratio)


def paired_retention(run: ItemScores, dense: ItemScores, how: Aggregate, *, alpha: float = ALPHA,
                     n_resamples: int = N_RESAMPLES, seed: int = SEED) -> PairedComparison:  # fmt: skip
    """Retention vs dense with its interval, items resampled jointly: run / dense for a mean (higher is
    better), dense / run for perplexity (lower is better); 1 is "as good as dense" either way (the
    definition of `reports.leaderboard.retention`). The p-value is the bootstrap's, against 1."""
    column = column_statistics({"run": run, "dense": dense}, how, dense="dense", alpha=alpha, n_resamples=n_resamples, seed=seed)
    return column.retention["run"]


def paired_difference(a: ItemScores, b: ItemScores, how: Aggregate, *, alpha: float = ALPHA,
            n_resamples: int = N_RESAMPLES, seed: int = SEED) -> PairedComparison:  # fmt: skip
    """b - a in the metric's own units: `mean_difference` for a mean, `perplexity_change`'s difference,
    otherwise the difference of the two metrics recomputed from each resample (bootstrap p)."""
    if how == "mean":
        return mean_difference(a.values, b.values, alpha=alpha, n_resamples=n_resamples, seed=seed)
    if how == "perplexity":
        return perplexity_change(a, b, alpha=alpha, n_resamples=n_resamples, seed=seed).difference
    column = column_statistics({"a": a, "b": b}, how, best="a", correction="none", alpha=alpha, n_resamples=n_resamples, seed=seed)
    return column.ties.comparisons["b"]


# -- several runs ------------------------------------------------------------------------------


class TiesWithBest(BaseModel):
    """Which runs of one suite's primary metric are statistically tied with the best one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    best: str
    comparisons: dict[str, PairedComparison]  # every other run r against the best: r - best
    adjusted_p: dict[str, float]  # the comparisons' p-values after the multiple-comparison correction
    correction: Literal["holm", "none"]
    tied: frozenset[str]  # the runs whose adjusted p is not below alpha, and the best itself


class ColumnStatistics(BaseModel):
    """Everything a leaderboard column (one suite's metric, several runs on the same items) needs, from
    one paired bootstrap: the same resampled items for every run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    intervals: dict[str, Interval]  # each run's metric and its interval
    retention: dict[str, PairedComparison]  # each run but the dense one against it (`paired_retention`)
    ties: TiesWithBest | None  # among the runs but the dense one, when a best was named and two are compared


def column_statistics(runs: Mapping[str, ItemScores], how: Aggregate, *, dense: str | None = None,
                      best: str | None = None, alpha: float = ALPHA, correction: Literal["holm", "none"] = "holm",
                      n_resamples: int = N_RESAMPLES, seed: int = SEED) -> ColumnStatistics:  # fmt: skip
    """Each run's interval, retention against `dense` and the ties with `best` (see `tied_with_best`),
    from one bootstrap: every row (a run's metric, a retention, a difference from the best) is a row of
    one vectorised statistic, so scipy resamples the items once for all of them. Percentile intervals;
    p-values as in `mean_difference`/`paired_retention` (McNemar's exact test for 0/1 outcomes)."""
    names = list(runs)
    for name in (dense, best):
        if name is not None and name not in runs:
            raise KeyError(f"run {name!r} is not among the runs ({', '.join(names)})")
    contenders = [name for name in names if name != dense]
    pruned = contenders if dense is not None else []
    others = [name for name in contenders if name != best] if best is not None else []
    binary = _binary(*(runs[name].values for name in names))
    if others and correction == "holm" and (how != "mean" or not binary):
        # Enough resamples that the smallest bootstrap p, 2 / (B + 1), is half Holm's strictest level alpha / m.
        n_resamples = max(n_resamples, math.ceil(4 * len(others) / alpha))
    weighted = how != "mean"  # a mean needs no weights: half the arrays to resample
    arrays = _paired_arrays(*(array for name in names for array in ((runs[name].values, runs[name].weights) if weighted else (runs[name].values,))))
    index = {name: position for position, name in enumerate(names)}

    def rows(*resampled, axis=-1):
        metric = [
            aggregate(resampled[2 * k] if weighted else resampled[k], resampled[2 * k + 1] if weighted else resampled[k], how, axis)
            for k in range(len(names))
        ]  # fmt: skip
        with np.errstate(divide="ignore", invalid="ignore"):
            kept = [metric[index[name]] / metric[index[dense]] if how == "mean" else metric[index[dense]] / metric[index[name]]
                    for name in pruned]  # fmt: skip
        differences = [metric[index[name]] - metric[index[best]] for name in others]
        return np.stack([*metric, *kept, *differences])

    nulls = (None,) * len(names) + (1.0,) * len(pruned) + (0.0,) * len(others)
    estimate, low, high, p_bootstrap = _paired_bootstrap(rows, arrays, nulls=nulls, alpha=alpha, n_resamples=n_resamples, seed=seed)
    n_items = arrays[0].size

    def comparison(row: int, null: float, p_value: float, test: str = "bootstrap") -> PairedComparison:
        return PairedComparison(estimate=estimate[row], low=low[row], high=high[row], null=null, p_value=p_value,
                                n_items=n_items, method=_method(n_resamples, seed, test), alpha=alpha)  # fmt: skip

    intervals = {name: Interval(float(estimate[k]), float(low[k]), float(high[k]), n_items) for k, name in enumerate(names)}
    if how == "mean":  # every item alike: no sampling variability, and no rounding around it
        intervals |= {name: Interval(*([intervals[name].estimate] * 3), n_items) for name in names if np.all(runs[name].values == runs[name].values[0])}
    retention = {name: comparison(len(names) + k, 1.0, p_bootstrap[len(names) + k]) for k, name in enumerate(pruned)}
    ties = None
    if others:
        offset = len(names) + len(pruned)
        comparisons = {}
        for k, name in enumerate(others):
            if how == "mean" and binary:
                comparisons[name] = comparison(offset + k, 0.0, mcnemar_p_value(runs[best].values, runs[name].values), "McNemar exact")
            else:
                comparisons[name] = comparison(offset + k, 0.0, p_bootstrap[offset + k])
        p_values = np.array([comparisons[name].p_value for name in others])
        adjusted = holm_adjusted(p_values) if correction == "holm" else p_values
        adjusted_p = {name: float(p) for name, p in zip(others, adjusted)}
        tied = frozenset([best, *(name for name in others if adjusted_p[name] >= alpha)])
        ties = TiesWithBest(best=best, comparisons=comparisons, adjusted_p=adjusted_p, correction=correction, tied=tied)
    return ColumnStatistics(intervals=intervals, retention=retention, ties=ties)


def tied_with_best(runs: Mapping[str, ItemScores], best: str, how: Aggregate, *, alpha: float = ALPHA,
                   correction: Literal["holm", "none"] = "holm", n_resamples: int = N_RESAMPLES,
                   seed: int = SEED) -> TiesWithBest:  # fmt: skip
    """Mark the runs whose paired difference from `best` is not significant at `alpha`.

    Multiple comparisons: the m = len(runs) - 1 tests against the best are corrected by Holm's step-down
    method by default, which bounds the chance of calling *any* run worse than the best when it is not
    (family-wise error) under every dependence between the tests (they all share the best's scores).
    scipy offers only false-discovery-rate corrections (`stats.false_discovery_control`: BH, BY), which
    would call more runs different; "none" tests each at alpha, as the printed intervals (each an
    uncorrected 1 - alpha one) do. So a Holm-tied run may show an interval that excludes 0. The best is
    taken as given: having been picked as the maximum, it is favoured, which no correction here undoes.
    """
    if best not in runs:
        raise KeyError(f"best run {best!r} is not among the runs ({', '.join(runs)})")
    if len(runs) == 1:
        return TiesWithBest(best=best, comparisons={}, adjusted_p={}, correction=correction, tied=frozenset([best]))
    column = column_statistics(runs, how, best=best, alpha=alpha, correction=correction, n_resamples=n_resamples, seed=seed)
    return column.ties


def holm_adjusted(p_values: ArrayLike) -> np.ndarray:
    """Holm's (1979) step-down adjusted p-values: the i-th smallest of m times (m - i + 1), made
    non-decreasing in that order, capped at 1. Reject where adjusted p < alpha. (Not in scipy, whose
    `false_discovery_control` controls the false discovery rate, a different error.)"""
    p_values = np.asarray(p_values, dtype=float)
    order = np.argsort(p_values, kind="stable")
    m = p_values.size
    stepped = np.maximum.accumulate((m - np.arange(m)) * p_values[order])
    adjusted = np.empty_like(p_values)
    adjusted[order] = np.minimum(stepped, 1.0)
    return adjusted


def across_seeds(values: ArrayLike) -> SeedSpread:
    """Mean and sample standard deviation (ddof=1) of one metric over calibration seeds."""
    values = np.asarray(values, dtype=float)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"across_seeds needs a non-empty 1-D array of per-seed values, got shape {values.shape}")
    sd = float(np.std(values, ddof=1)) if values.size > 1 else None
    return SeedSpread(mean=float(np.mean(values)), sd=sd, n_seeds=values.size)


# -- the bootstrap -----------------------------------------------------------------------------


def _paired_arrays(*arrays: ArrayLike) -> tuple[np.ndarray, ...]:
    arrays = tuple(np.asarray(array, dtype=float) for array in arrays)
    shapes = {array.shape for array in arrays}
    if len(shapes) != 1 or arrays[0].ndim != 1 or arrays[0].size < MIN_ITEMS:
        raise ValueError(f"paired comparisons need 1-D arrays of at least {MIN_ITEMS} items, the same items in each, "
                         f"got shapes {[array.shape for array in arrays]}")  # fmt: skip
    return arrays


def _method(n_resamples: int, seed: int, test: str) -> str:
    return f"paired bootstrap percentile interval ({n_resamples} resamples, seed {seed}); {test} p"


def _binary(*arrays: np.ndarray) -> bool:
    """Every value 0 or 1: accuracy-like outcomes, which McNemar's test takes."""
    return all(np.all((array == 0) | (array == 1)) for array in arrays)


def _paired_bootstrap(
    statistic: Callable[..., np.ndarray], arrays: tuple[np.ndarray, ...], *, nulls: tuple[float | None, ...],
    alpha: float, n_resamples: int, seed: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Estimate, percentile interval and bootstrap p of each row of a vectorised statistic
    (one row per entry of `nulls`; a None null gets no p, NaN), the items resampled jointly across `arrays`."""
    n_items = arrays[0].size
    result = stats.bootstrap(
        arrays, statistic, paired=True, vectorized=True, n_resamples=n_resamples, method="percentile",
        confidence_level=1 - alpha, batch=max(1, _RESAMPLED_VALUES_PER_BATCH // (n_items * len(arrays))),
        rng=np.random.default_rng(seed),
    )  # fmt: skip
    estimate = statistic(*arrays, axis=-1)
    low, high = (np.atleast_1d(end) for end in result.confidence_interval)
    replicates = np.atleast_2d(result.bootstrap_distribution)
    p_values = np.array([math.nan if null is None else _bootstrap_p_value(row, null) for row, null in zip(replicates, nulls)])
    return estimate, low, high, p_values


def _bootstrap_p_value(replicates: np.ndarray, null: float) -> float:
    """The two-sided p that inverts the percentile interval: twice the share of resamples on the far side
    of the null (Efron & Tibshirani 1993, An Introduction to the Bootstrap, ch. 16), counted as
    (k + 1) / (B + 1) so that a finite number of resamples never claims p = 0 (Phipson & Smyth 2010)."""
    beyond = min(np.count_nonzero(replicates <= null), np.count_nonzero(replicates >= null))
    return min(1.0, 2 * (beyond + 1) / (replicates.size + 1))
