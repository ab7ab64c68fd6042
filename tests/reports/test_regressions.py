"""Regressions: changes beyond the noise margin are flagged in the right direction, noise is not."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pruning.errors import PrunebenchError
from reports.regressions import (
    compare_flow_run,
    compare_runs,
    compare_with_previous,
    noise_margin,
    to_markdown,
    verdict,
)
from reports.records import ItemScore
from reports.store import ResultStore
from tests.reports.synthetic import synthetic_bundle


def wanda(run_id: str, hours: float, quality: float, *, flow: str | None = None, stderr: float | None = 0.02, **kw):
    return synthetic_bundle(run_id, "wanda", "wanda 50%", sparsity=0.5, quality=quality, hours=hours,
                            flow_run_id=flow, acc_stderr=stderr, **kw)  # fmt: skip


@pytest.fixture
def store(tmp_path) -> ResultStore:
    return ResultStore(tmp_path / "results.duckdb")


def by_metric(comparison):
    return {change.metric: change for change in comparison.changes}


def test_noise_margin_is_the_larger_of_tolerance_and_stderr():
    assert noise_margin(20.0, None, None, tolerance=0.01, z=2) == pytest.approx(0.2)  # no stderr: relative floor
    assert noise_margin(0.5, 0.03, 0.04, tolerance=0.01, z=2) == pytest.approx(2 * 0.05)  # sqrt(.03² + .04²) = .05
    assert noise_margin(0.5, 0.03, None, tolerance=0.5, z=2) == pytest.approx(0.25)
    assert noise_margin(math.inf, None, None) == 0.0


@pytest.mark.parametrize(
    "baseline, candidate, higher_is_better, margin, expected",
    [
        (0.50, 0.40, True, 0.05, "worse"),
        (0.50, 0.46, True, 0.05, "within noise"),
        (0.50, 0.60, True, 0.05, "better"),
        (10.0, 12.0, False, 0.1, "worse"),  # perplexity up
        (10.0, 8.0, False, 0.1, "better"),
        (10.0, math.inf, False, 0.1, "worse"),  # diverged
        (math.inf, 10.0, False, 0.1, "better"),
        (math.inf, math.inf, False, 0.1, "within noise"),
        (0.5, math.nan, True, 0.05, "worse"),  # a failed evaluation
        (0.5, 0.5, True, 0.0, "within noise"),
    ],
)
def test_verdict_follows_the_metric_direction(baseline, candidate, higher_is_better, margin, expected):
    assert verdict(baseline, candidate, higher_is_better, margin) == expected


def test_a_drop_beyond_the_margin_is_a_regression_and_noise_is_not(store):
    store.record(wanda("before", 0, quality=0.8))
    store.record(wanda("after", 1, quality=0.79))  # acc 0.4 -> 0.395 (within 2·0.028); ppl 12.5 -> 12.66 (> 1%)
    comparison = compare_runs(store, "before", "after")
    changes = by_metric(comparison)
    assert changes["acc"].verdict == "within noise" and changes["acc"].margin == pytest.approx(2 * math.sqrt(2) * 0.02)
    assert changes["word_perplexity"].verdict == "worse" and changes["word_perplexity"].delta > 0
    assert comparison.has_regression and [c.metric for c in comparison.worse] == ["word_perplexity"]
    looser = compare_runs(store, "before", "after", tolerance=0.05)
    assert not looser.has_regression and looser.better == [] and len(looser.changes) == 2


def test_without_stderr_only_the_tolerance_protects(store):
    store.record(wanda("before", 0, quality=0.8, stderr=None))
    store.record(wanda("after", 1, quality=0.78, stderr=None))  # acc 0.4 -> 0.39: 2.5% worse
    assert by_metric(compare_runs(store, "before", "after"))["acc"].verdict == "worse"
    assert by_metric(compare_runs(store, "before", "after", tolerance=0.03))["acc"].verdict == "within noise"


def test_default_compares_the_latest_flow_runs_with_the_previous_run_of_each_config(store):
    store.record(wanda("w-1", 0, quality=0.8, flow="flow-a"))
    store.record(synthetic_bundle("d-1", "dense", "dense", hours=0, flow_run_id="flow-a"))
    store.record(wanda("w-2", 1, quality=1.0, flow="flow-b"))  # better: acc 0.4 -> 0.5, ppl 12.5 -> 10
    store.record(synthetic_bundle("d-2", "dense", "dense", hours=1, flow_run_id="flow-b", acc_stderr=0.02))
    store.record(synthetic_bundle("new", "magnitude", "magnitude 50%", sparsity=0.5, hours=1, flow_run_id="flow-b"))
    store.record(wanda("w-other-config", 0.5, quality=0.1, config_hash="other"))  # never a baseline of w-2
    comparison = compare_with_previous(store)
    assert {(p.baseline_run_id, p.candidate_run_id) for p in comparison.pairs} == {("w-1", "w-2"), ("d-1", "d-2")}
    assert not comparison.has_regression and {c.metric for c in comparison.better} == {"acc", "word_perplexity"}
    assert any("magnitude 50%" in note and "no earlier run" in note for note in comparison.notes)
    assert compare_flow_run(store, "flow-b").pairs == comparison.pairs
    one = compare_with_previous(store, ["w-2"])
    assert [(p.baseline_run_id, p.candidate_run_id) for p in one.pairs] == [("w-1", "w-2")]


def test_a_rerun_on_other_model_files_says_so(store):
    """Same config (source, dtype, device), other files under the path: compared, and the note says the
    model changed; runs recorded before model ids say nothing."""
    store.record(wanda("w-1", 0, quality=1.0, model_id="a" * 16))
    store.record(wanda("w-2", 1, quality=1.0, model_id="b" * 16))
    store.record(wanda("w-3", 2, quality=1.0, model_id="b" * 16))
    notes = compare_runs(store, "w-1", "w-2").notes
    assert any("another model than run w-1" in note and "aaaaaaaa → bbbbbbbb" in note for note in notes)
    assert not any("another model" in note for note in compare_runs(store, "w-2", "w-3").notes)


def test_nothing_to_compare_is_reported_not_raised(store):
    assert compare_with_previous(store).is_empty  # no runs at all
    store.record(wanda("only", 0, quality=0.8))
    comparison = compare_with_previous(store)
    assert comparison.is_empty and "no earlier run" in comparison.notes[0]
    assert "Nothing to compare" in to_markdown(comparison)
    assert compare_flow_run(store, "no-such-flow").is_empty


def test_run_ids_may_be_unique_prefixes(store):
    store.record(wanda("abc-1", 0, quality=0.8))
    store.record(wanda("abd-2", 1, quality=0.8))
    assert compare_runs(store, "abc", "abd").pairs[0].candidate_run_id == "abd-2"
    with pytest.raises(PrunebenchError, match="ambiguous"):
        compare_runs(store, "ab", "abd")
    with pytest.raises(PrunebenchError, match="no run 'zzz'"):
        compare_runs(store, "zzz", "abd")


def test_markdown_lists_worse_first_with_before_after_and_margin(store):
    store.record(wanda("before", 0, quality=0.8))
    store.record(wanda("after", 1, quality=0.6))
    markdown = to_markdown(compare_runs(store, "before", "after"))
    lines = markdown.splitlines()
    assert lines[0].startswith("**2 regression(s)**") and "run before → after" in markdown
    rows = [line for line in lines if line.startswith("| worse")]
    assert len(rows) == 2 and "0.400 ± 0.020" in rows[0] and "0.300 ± 0.020" in rows[0] and "-25.0%" in rows[0]
    assert "noise margin" in markdown and "max(0.01 × |before|" in markdown


# -- the paired test on per-item scores -------------------------------------------------------


def with_acc_items(bundle, correct, order=None):
    """The bundle's jargon_mc acc replaced by these 0/1 outcomes (items recorded in `order`)."""
    run_id = bundle.run.run_id
    order = range(len(correct)) if order is None else order
    items = [ItemScore(run_id=run_id, suite="jargon_mc", item=f"doc-{k}", metric="acc", value=float(correct[k])) for k in order]
    results = [row.model_copy(update={"value": float(np.mean(correct))}) if row.metric == "acc" else row for row in bundle.results]
    return bundle.model_copy(update={"results": results, "items": items})


def two_thousand(accuracy: float, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(2000) < accuracy).astype(float)


def test_a_rerun_that_differs_by_item_order_only_is_no_regression(store):
    correct = two_thousand(0.6)
    store.record(with_acc_items(wanda("before", 0, quality=0.8), correct))
    store.record(with_acc_items(wanda("after", 1, quality=0.8), correct, order=np.random.default_rng(1).permutation(2000)))
    comparison = compare_runs(store, "before", "after")
    acc = by_metric(comparison)["acc"]
    assert acc.decided_by == "paired test" and acc.p_value == 1.0 and acc.low == acc.high == 0.0
    assert not comparison.has_regression


def test_a_two_point_loss_over_2000_items_is_a_regression(store):
    before = two_thousand(0.6)
    after = before.copy()
    after[np.flatnonzero(before == 1)[:40]] = 0.0  # 40 of 2,000 items lost: 2 points
    store.record(with_acc_items(wanda("before", 0, quality=0.8), before))
    store.record(with_acc_items(wanda("after", 1, quality=0.8), after))
    comparison = compare_runs(store, "before", "after")
    acc = by_metric(comparison)["acc"]
    assert acc.verdict == "worse" and acc.decided_by == "paired test" and acc.p_value < 1e-9
    assert acc.delta == pytest.approx(-0.02) and acc.high < 0
    # the stderr margin of two independent runs (2 · √2 · 0.011) would have called it noise
    assert abs(acc.delta) < noise_margin(before.mean(), 0.011, 0.011)
    assert "paired p =" in to_markdown(comparison) and "McNemar" in to_markdown(comparison)


def test_noise_in_both_directions_is_no_regression_even_when_it_nets_a_loss(store):
    before = two_thousand(0.6)
    after = before.copy()
    right, wrong = np.flatnonzero(before == 1), np.flatnonzero(before == 0)
    after[right[:30]], after[wrong[:22]] = 0.0, 1.0  # 52 items flip, net 8 lost (0.4 points, beyond the 1% tolerance)
    store.record(with_acc_items(wanda("before", 0, quality=0.8), before))
    store.record(with_acc_items(wanda("after", 1, quality=0.8), after))
    acc = by_metric(compare_runs(store, "before", "after"))["acc"]
    assert acc.verdict == "within noise" and acc.p_value > 0.05


def test_runs_without_items_fall_back_to_the_noise_margin_and_say_so(store):
    store.record(wanda("before", 0, quality=0.8))
    store.record(with_acc_items(wanda("after", 1, quality=0.8), two_thousand(0.4)))
    comparison = compare_runs(store, "before", "after")
    assert {change.decided_by for change in comparison.changes} == {"noise margin"}
    assert any("noise margin, not the paired test: no per-item scores in the baseline" in note for note in comparison.notes)
    assert "noise margin (runs without per-item scores)" in to_markdown(comparison)


def test_runs_scored_on_other_items_fall_back_and_name_the_difference(store):
    store.record(with_acc_items(wanda("before", 0, quality=0.8), two_thousand(0.6)[:1500]))
    store.record(with_acc_items(wanda("after", 1, quality=0.8), two_thousand(0.6)))
    comparison = compare_runs(store, "before", "after")
    assert by_metric(comparison)["acc"].decided_by == "noise margin"
    assert any("scored on other items" in note and "500 only in 'candidate'" in note for note in comparison.notes)
