"""Paired comparisons on hand-made item scores whose right answers are known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from reports.statistics import (
    ItemMismatchError,
    ItemScores,
    across_seeds,
    aggregate,
    aggregation,
    align_items,
    column_statistics,
    holm_adjusted,
    mcnemar_p_value,
    mean_difference,
    paired_retention,
    perplexity,
    perplexity_change,
    tied_with_best,
)


def outcomes(n_items: int, n_correct: int) -> np.ndarray:
    """0/1 outcomes, the first n_correct items right."""
    return (np.arange(n_items) < n_correct).astype(float)


def documents(n_documents: int = 200, seed: int = 1) -> ItemScores:
    """Documents of 20 to 400 words at 2 to 4 nats per word."""
    rng = np.random.default_rng(seed)
    words = rng.integers(20, 400, n_documents).astype(float)
    return ItemScores(values=-words * rng.uniform(2.0, 4.0, n_documents), weights=words)


def test_mcnemar_is_the_exact_binomial_test_on_the_discordant_items():
    # 1,000 items: 990 concordant, 8 that only b gets right (n01) and 2 that only a gets right (n10).
    a = np.concatenate([outcomes(990, 600), [0.0] * 8, [1.0] * 2])
    b = np.concatenate([outcomes(990, 600), [1.0] * 8, [0.0] * 2])
    # Two-sided: outcomes at least as unlikely as 8 of 10 under Binomial(10, 1/2) are k <= 2 and k >= 8.
    by_hand = sum(math.comb(10, k) for k in (0, 1, 2, 8, 9, 10)) / 2**10
    assert by_hand == pytest.approx(0.109375)
    assert mcnemar_p_value(a, b) == pytest.approx(by_hand, rel=1e-12)
    comparison = mean_difference(a, b)
    assert comparison.p_value == pytest.approx(by_hand, rel=1e-12)
    assert comparison.estimate == pytest.approx(6 / 1000)
    assert "McNemar" in comparison.method and not comparison.significant


def test_a_constant_difference_is_its_own_interval():
    scores = np.random.default_rng(0).integers(0, 80, 500) / 8  # exact in binary, so b - a is exactly 0.5
    comparison = mean_difference(scores, scores + 0.5)
    assert comparison.estimate == comparison.low == comparison.high == 0.5
    assert comparison.p_value == pytest.approx(2 / 2001)  # every resample on one side of 0
    assert comparison.significant


def test_a_two_point_accuracy_loss_over_2000_items_is_significant():
    a = outcomes(2000, 1200)
    b = a.copy()
    b[:40] = 0.0  # 40 of a's correct items lost, every other item alike
    comparison = mean_difference(a, b)
    assert comparison.estimate == pytest.approx(-0.02)
    assert comparison.low < comparison.estimate < comparison.high < 0
    assert comparison.p_value == pytest.approx(2 * 0.5**40)
    assert comparison.n_items == 2000 and comparison.significant


def test_the_same_outcomes_read_in_another_order_do_not_differ():
    rng = np.random.default_rng(3)
    outcome = {f"item-{k}": (float(rng.integers(0, 2)), 1.0) for k in range(2000)}
    shuffled = {item: outcome[item] for item in rng.permutation(list(outcome))}  # same items, another row order
    assert list(shuffled) != list(outcome)
    aligned = align_items({"a": outcome, "b": shuffled})
    comparison = mean_difference(aligned.runs["a"].values, aligned.runs["b"].values)
    assert comparison.estimate == comparison.low == comparison.high == 0.0
    assert comparison.p_value == 1.0 and not comparison.significant


def test_the_bootstrap_is_seeded():
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 2, 1000).astype(float), rng.integers(0, 2, 1000).astype(float)
    first, again = mean_difference(a, b, seed=7), mean_difference(a, b, seed=7)
    assert (first.low, first.high) == (again.low, again.high)
    other_seed = mean_difference(a, b, seed=8)
    assert (other_seed.low, other_seed.high) != (first.low, first.high)


def test_perplexity_is_recomputed_from_resampled_documents():
    a = documents()
    rng = np.random.default_rng(2)
    b = ItemScores(values=a.values * rng.uniform(1.0, 1.1, a.values.size), weights=a.weights)  # b is worse
    change = perplexity_change(a, b)
    ppl_a, ppl_b = perplexity(a.values, a.weights), perplexity(b.values, b.weights)
    assert ppl_a == pytest.approx(math.exp(-a.values.sum() / a.weights.sum()))
    assert change.difference.estimate == pytest.approx(ppl_b - ppl_a)
    assert change.ratio.estimate == pytest.approx(ppl_b / ppl_a)
    for comparison in (change.difference, change.ratio):
        assert comparison.low <= comparison.estimate <= comparison.high
        assert comparison.significant
    assert change.difference.low > 0 and change.ratio.low > 1
    assert change.difference.p_value == change.ratio.p_value  # ppl_b > ppl_a exactly when the ratio exceeds 1


def test_identical_perplexity_runs_have_ratio_one():
    a = documents()
    change = perplexity_change(a, ItemScores(values=a.values.copy(), weights=a.weights.copy()))
    assert change.ratio.estimate == change.ratio.low == change.ratio.high == 1.0
    assert change.difference.estimate == change.difference.low == change.difference.high == 0.0
    assert change.ratio.p_value == 1.0 and not change.ratio.significant


def test_retention_is_paired_against_dense():
    dense_outcome = outcomes(1000, 600)
    pruned = dense_outcome.copy()
    pruned[:60] = 0.0
    ones = np.ones(1000)
    accuracy = paired_retention(ItemScores(pruned, ones), ItemScores(dense_outcome, ones), "mean")
    assert accuracy.estimate == pytest.approx(540 / 600)
    assert accuracy.low <= accuracy.estimate <= accuracy.high < 1 and accuracy.significant

    dense = documents()
    worse = ItemScores(values=dense.values * 1.05, weights=dense.weights)
    retention = paired_retention(worse, dense, "perplexity")
    ratio = perplexity_change(dense, worse).ratio  # ppl_worse / ppl_dense, from the same resamples
    assert retention.estimate == pytest.approx(1 / ratio.estimate)
    assert retention.low == pytest.approx(1 / ratio.high, rel=1e-4)
    assert retention.high == pytest.approx(1 / ratio.low, rel=1e-4)
    assert retention.low <= retention.estimate <= retention.high < 1

    same = paired_retention(dense, dense, "perplexity")
    assert same.estimate == same.low == same.high == 1.0 and not same.significant


def test_holm_adjusts_step_down():
    assert holm_adjusted([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjusted([0.2, 0.02]) == pytest.approx([0.2, 0.04])
    assert holm_adjusted([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped, then carried up the order


def test_tied_with_best_on_a_constructed_leaderboard():
    best = outcomes(2000, 1500)

    def losing(n_lost: int, n_gained: int = 0) -> ItemScores:
        run = best.copy()
        run[:n_lost] = 0.0  # among best's correct items
        run[1500 : 1500 + n_gained] = 1.0  # among its wrong ones
        return ItemScores(values=run, weights=np.ones(2000))

    runs = {
        "best": ItemScores(values=best, weights=np.ones(2000)),
        "close": losing(5, n_gained=3),  # 8 discordant items, p = 0.73
        "six-a": losing(6),  # p = 2 / 2^6 = 0.03125 each: significant alone, 3 x 0.03125 after Holm over 4 tests
        "six-b": losing(6),
        "far": losing(60),
    }
    ties = tied_with_best(runs, "best", "mean")
    assert ties.comparisons["six-a"].p_value == pytest.approx(0.03125)
    assert ties.adjusted_p["six-a"] == ties.adjusted_p["six-b"] == pytest.approx(0.09375)
    assert ties.tied == {"best", "close", "six-a", "six-b"}
    assert ties.comparisons["far"].estimate == pytest.approx(-0.03)
    uncorrected = tied_with_best(runs, "best", "mean", correction="none")
    assert uncorrected.tied == {"best", "close"}


def test_tied_with_best_on_perplexity():
    best = documents()
    runs = {
        "best": best,
        "same": ItemScores(values=best.values.copy(), weights=best.weights),
        "worse": ItemScores(values=best.values * 1.2, weights=best.weights),
    }
    assert tied_with_best(runs, "best", "perplexity").tied == {"best", "same"}


def test_runs_scored_on_other_items_are_refused():
    a = {"q1": (1.0, 1.0), "q2": (0.0, 1.0), "q3": (1.0, 1.0)}
    b = {"q1": (1.0, 1.0), "q2": (0.0, 1.0), "q4": (1.0, 1.0), "q5": (0.0, 1.0)}
    with pytest.raises(ItemMismatchError, match=r"3 vs 4 items, 1 only in 'dense' \(e\.g\. 'q3'\), 2 only in 'wanda'"):
        align_items({"dense": a, "wanda": b})
    assert issubclass(ItemMismatchError, ValueError)


def test_mean_and_sd_across_seeds():
    spread = across_seeds([1.0, 2.0, 3.0, 4.0])
    assert spread.mean == 2.5 and spread.sd == pytest.approx(math.sqrt(5 / 3)) and spread.n_seeds == 4
    assert across_seeds([0.7]).sd is None


def test_one_column_bootstrap_gives_every_interval_retention_and_tie():
    dense = documents(seed=1)
    runs = {
        "dense": dense,
        "close": ItemScores(values=dense.values * 1.01, weights=dense.weights),
        "far": ItemScores(values=dense.values * 1.3, weights=dense.weights),
    }
    column = column_statistics(runs, "perplexity", dense="dense", best="close")
    for name, scores in runs.items():
        interval = column.intervals[name]
        assert interval.estimate == pytest.approx(perplexity(scores.values, scores.weights))
        assert interval.low < interval.estimate < interval.high
    alone = paired_retention(runs["far"], dense, "perplexity")
    assert column.retention["far"].estimate == pytest.approx(alone.estimate)
    assert column.retention["far"].high < 1 and "dense" not in column.retention
    assert column.ties.tied == {"close"} and column.ties.comparisons["far"].significant
    # the same ties as asking for them alone
    assert tied_with_best({k: v for k, v in runs.items() if k != "dense"}, "close", "perplexity").tied == {"close"}


def test_a_column_of_identical_outcomes_has_a_point_interval():
    column = column_statistics({"a": ItemScores(np.ones(50), np.ones(50))}, "mean")
    assert column.intervals["a"] == (1.0, 1.0, 1.0, 50) and column.ties is None


def test_the_aggregation_of_each_metric_is_the_harness_s():
    assert [aggregation(m) for m in ("acc", "acc_norm", "exact_match/strict-match", "word_perplexity", "byte_perplexity",
                                     "perplexity", "bits_per_byte")] == ["mean"] * 3 + ["perplexity"] * 3 + ["bits_per_byte"]
    loglik, nbytes = np.array([-10.0, -30.0]), np.array([20.0, 20.0])
    assert aggregate(loglik, nbytes, "bits_per_byte") == pytest.approx(1.0 / math.log(2))  # 40 nats over 40 bytes
