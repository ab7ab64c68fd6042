"""Regressions: did a result get worse than the previous run of the same configuration?

Two runs are compared metric by metric ((suite, metric) present in both), and a change counts only
when it is real and large enough to matter:

- **Paired test** (the default, for runs with per-item scores): both runs were scored on the very same
  items, so the difference is tested item by item (reports.statistics: McNemar's exact test for
  accuracy, the paired bootstrap otherwise, with its 95% interval). A change counts when it is
  significant (p < alpha) *and* moves the metric by more than `tolerance · |baseline|`. A rerun that
  differs by noise only (another machine, another batch order) changes few items and is silent; a real
  one-point loss over a couple of thousand items is caught.
- **Noise margin** (fallback, for runs recorded without per-item scores, before schema 6, or scored
  on other items): a change counts beyond

      margin = max(tolerance · |baseline|,  z · sqrt(stderr_baseline² + stderr_candidate²))

  z standard errors of the difference of two independent estimates (a missing stderr counts as 0).
  Scores on the same items are positively correlated, so this over-estimates the noise: it errs
  towards silence. Every comparison says which of the two decided it.

Defaults: tolerance 1%, alpha 5% (two-sided; each metric tested on its own, the tolerance keeps a
significant but negligible change silent), z = 2. Direction comes from each result's
`higher_is_better` (perplexity: lower is better). A value that became NaN or infinitely bad counts as
worse whatever the test; one that stopped being so, better.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from pruning.errors import PrunebenchError
from reports.records import ResultRow, RunRecord
from reports.statistics import ALPHA, MIN_ITEMS, ItemMismatchError, aggregation, align_items, paired_difference
from reports.store import ResultStore
from reports.tables import MISSING, markdown_table, number

DEFAULT_TOLERANCE = 0.01
DEFAULT_Z = 2.0

Verdict = Literal["better", "worse", "within noise"]
Decision = Literal["paired test", "noise margin"]


class Compared(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunPair(Compared):
    """A candidate run and the baseline it is compared with."""

    model: str
    method: str  # the candidate's method label (display only)
    method_id: str  # the candidate's method identity
    config_hash: str
    baseline_run_id: str
    candidate_run_id: str
    same_config: bool  # False when two runs of different configurations were named explicitly


class MetricChange(Compared):
    model: str
    method: str  # label (display only)
    method_id: str
    suite: str
    metric: str
    higher_is_better: bool
    baseline: float
    candidate: float
    baseline_stderr: float | None
    candidate_stderr: float | None
    delta: float  # candidate - baseline, in the metric's own units
    margin: float  # the noise margin (fallback), or the tolerance's share of |baseline| (paired test)
    verdict: Verdict
    decided_by: Decision = "noise margin"
    p_value: float | None = None  # the paired test's two-sided p
    low: float | None = None  # the paired 95% interval of delta
    high: float | None = None
    n_items: int | None = None
    baseline_run_id: str
    candidate_run_id: str


class Comparison(Compared):
    tolerance: float
    z: float
    alpha: float = ALPHA
    pairs: list[RunPair] = Field(default_factory=list)
    changes: list[MetricChange] = Field(default_factory=list)  # every shared metric, moved or not
    notes: list[str] = Field(default_factory=list)  # what could not be compared, and why

    @property
    def worse(self) -> list[MetricChange]:
        return [change for change in self.changes if change.verdict == "worse"]

    @property
    def better(self) -> list[MetricChange]:
        return [change for change in self.changes if change.verdict == "better"]

    @property
    def has_regression(self) -> bool:
        return bool(self.worse)

    @property
    def is_empty(self) -> bool:
        """Nothing was compared: no pair of runs, or no metric the two runs share."""
        return not self.changes


# -- comparing ---------------------------------------------------------------------------------


def noise_margin(baseline: float, baseline_stderr: float | None, candidate_stderr: float | None, *,
                 tolerance: float = DEFAULT_TOLERANCE, z: float = DEFAULT_Z) -> float:  # fmt: skip
    """How far a result may move before it counts as moved (see the module docstring)."""
    spread = math.sqrt((baseline_stderr or 0.0) ** 2 + (candidate_stderr or 0.0) ** 2)
    relative = tolerance * abs(baseline) if math.isfinite(baseline) else 0.0
    return max(relative, z * spread)


def verdict(baseline: float, candidate: float, higher_is_better: bool, margin: float) -> Verdict:
    gain_baseline, gain_candidate = _goodness(baseline, higher_is_better), _goodness(candidate, higher_is_better)
    if not (math.isfinite(gain_baseline) and math.isfinite(gain_candidate)):
        if gain_baseline == gain_candidate:
            return "within noise"
        return "better" if gain_candidate > gain_baseline else "worse"
    gain = gain_candidate - gain_baseline
    if abs(gain) <= margin:
        return "within noise"
    return "better" if gain > 0 else "worse"


def paired_verdict(baseline: float, candidate: float, higher_is_better: bool, p_value: float, *,
                   tolerance: float = DEFAULT_TOLERANCE, alpha: float = ALPHA) -> Verdict:  # fmt: skip
    """Worse or better only when the paired test finds the change significant and it exceeds the
    tolerance's share of the baseline; non-finite values as in `verdict`."""
    if not (math.isfinite(baseline) and math.isfinite(candidate)):
        return verdict(baseline, candidate, higher_is_better, 0.0)
    margin = tolerance * abs(baseline)
    return verdict(baseline, candidate, higher_is_better, margin) if p_value < alpha else "within noise"


def compare_runs(
    store: ResultStore, baseline_run_id: str, candidate_run_id: str, *,
    tolerance: float = DEFAULT_TOLERANCE, z: float = DEFAULT_Z, alpha: float = ALPHA,
) -> Comparison:  # fmt: skip
    """Every metric the two runs share, candidate against baseline. Run ids may be unique prefixes."""
    runs = store.runs()
    baseline, candidate = find_run(runs, baseline_run_id), find_run(runs, candidate_run_id)
    return _compare_pairs(store, [(baseline, candidate)], [], tolerance=tolerance, z=z, alpha=alpha)


def compare_with_previous(
    store: ResultStore, run_ids: Sequence[str] | None = None, *,
    tolerance: float = DEFAULT_TOLERANCE, z: float = DEFAULT_Z, alpha: float = ALPHA,
) -> Comparison:  # fmt: skip
    """Each run against the previous run of its configuration (same config hash, finished earlier).

    `run_ids` default to every run of the latest flow run (the flow run of the most recently
    finished run), so after a benchmark this answers "did anything get worse since last time?".
    """
    runs = store.runs()  # oldest first
    if not runs:
        return Comparison(tolerance=tolerance, z=z, alpha=alpha, notes=["no runs recorded"])
    if run_ids is None:
        latest_flow = runs[-1].flow_run_id
        candidates = [run for run in runs if run.flow_run_id == latest_flow]
    else:
        candidates = [find_run(runs, run_id) for run_id in run_ids]
    pairs, notes = [], []
    for candidate in candidates:
        baseline = previous_run(runs, candidate)
        if baseline is None:
            notes.append(f"{_describe(candidate)}: no earlier run of its config {candidate.config_hash} to compare with")
        else:
            pairs.append((baseline, candidate))
    return _compare_pairs(store, pairs, notes, tolerance=tolerance, z=z, alpha=alpha)


def compare_flow_run(
    store: ResultStore, flow_run_id: str, *, tolerance: float = DEFAULT_TOLERANCE, z: float = DEFAULT_Z,
    alpha: float = ALPHA,
) -> Comparison:
    """Every run one flow run recorded, each against the previous run of its configuration (the
    check a benchmark flow ends with)."""
    run_ids = [run.run_id for run in store.runs() if run.flow_run_id == flow_run_id]
    if not run_ids:
        return Comparison(tolerance=tolerance, z=z, alpha=alpha, notes=[f"flow run {flow_run_id} recorded no runs"])
    return compare_with_previous(store, run_ids, tolerance=tolerance, z=z, alpha=alpha)


def previous_run(runs: Sequence[RunRecord], run: RunRecord) -> RunRecord | None:
    """The latest run of the same config hash that finished before `run` (ties broken by run id).

    The config hash covers the method's identity (every parameter, never its label or `id`), the model,
    calibration and evaluation settings, so a relabelled method still finds its history."""
    earlier = [
        other for other in runs
        if other.config_hash == run.config_hash and (other.finished_at, other.run_id) < (run.finished_at, run.run_id)
    ]  # fmt: skip
    return max(earlier, key=lambda other: (other.finished_at, other.run_id), default=None)


def find_run(runs: Sequence[RunRecord], run_id: str) -> RunRecord:
    """The run with this id, or the only one whose id starts with it; PrunebenchError otherwise."""
    exact = [run for run in runs if run.run_id == run_id]
    matches = exact or [run for run in runs if run.run_id.startswith(run_id)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise PrunebenchError(f"no run {run_id!r} in the results database")
    raise PrunebenchError(f"run id prefix {run_id!r} is ambiguous: {', '.join(run.run_id for run in matches[:5])} ...")


def _compare_pairs(
    store: ResultStore, pairs: list[tuple[RunRecord, RunRecord]], notes: list[str], *, tolerance: float, z: float,
    alpha: float = ALPHA,
) -> Comparison:  # fmt: skip
    run_ids = {run.run_id for pair in pairs for run in pair}
    results, items = _results_of(store, run_ids), store.item_values(run_ids)
    run_pairs, changes = [], []
    for baseline, candidate in pairs:
        run_pairs.append(RunPair(model=candidate.model, method=candidate.method_label, method_id=candidate.method_id,
                                 config_hash=candidate.config_hash,
                                 baseline_run_id=baseline.run_id, candidate_run_id=candidate.run_id,
                                 same_config=baseline.config_hash == candidate.config_hash))  # fmt: skip
        if None not in (baseline.environment_digest, candidate.environment_digest) and baseline.environment_digest != candidate.environment_digest:
            lock = "another lock" if baseline.lock_digest != candidate.lock_digest else "the same lock, other installed packages"
            notes.append(f"{_describe(candidate)}: computed in another environment than run {baseline.run_id} ({lock})")
        if None not in (baseline.model_id, candidate.model_id) and baseline.model_id != candidate.model_id:
            notes.append(f"{_describe(candidate)}: another model than run {baseline.run_id} (its files, dtype or device "
                         f"changed: model {baseline.model_id[:8]} → {candidate.model_id[:8]})")
        before, after = results.get(baseline.run_id, {}), results.get(candidate.run_id, {})
        shared = sorted(before.keys() & after.keys())
        if not shared:
            notes.append(f"{_describe(candidate)}: no metric in common with run {baseline.run_id}")
        for only, side in ((before.keys() - after.keys(), "baseline"), (after.keys() - before.keys(), "candidate")):
            if only:
                notes.append(f"{_describe(candidate)}: only in the {side}: {', '.join('/'.join(key) for key in sorted(only))}")
        fallback: dict[str, list[str]] = {}
        for key in shared:
            old, new = before[key], after[key]
            common = dict(
                model=candidate.model, method=candidate.method_label, method_id=candidate.method_id,
                suite=new.suite, metric=new.metric, higher_is_better=new.higher_is_better, baseline=old.value,
                candidate=new.value, baseline_stderr=old.stderr, candidate_stderr=new.stderr,
                delta=new.value - old.value, baseline_run_id=baseline.run_id, candidate_run_id=candidate.run_id,
            )  # fmt: skip
            paired, why_not = _paired(items.get((baseline.run_id, *key)), items.get((candidate.run_id, *key)), key[1], alpha)
            if paired is not None:
                changes.append(MetricChange(
                    **common, margin=tolerance * abs(old.value) if math.isfinite(old.value) else 0.0,
                    verdict=paired_verdict(old.value, new.value, new.higher_is_better, paired.p_value,
                                           tolerance=tolerance, alpha=alpha),
                    decided_by="paired test", p_value=paired.p_value, low=paired.low, high=paired.high,
                    n_items=paired.n_items,
                ))  # fmt: skip
                continue
            fallback.setdefault(why_not, []).append("/".join(key))
            margin = noise_margin(old.value, old.stderr, new.stderr, tolerance=tolerance, z=z)
            changes.append(MetricChange(**common, margin=margin, verdict=verdict(old.value, new.value, new.higher_is_better, margin)))
        for why_not, keys in fallback.items():
            notes.append(f"{_describe(candidate)}: {', '.join(keys)} compared by the noise margin, not the paired test: {why_not}")
    return Comparison(tolerance=tolerance, z=z, alpha=alpha, pairs=run_pairs, changes=changes, notes=notes)


def _paired(before: dict | None, after: dict | None, metric: str, alpha: float):
    """The paired comparison of two runs' per-item scores of one metric, or (None, why not)."""
    if not before or not after:
        missing = " and ".join(side for side, items in (("baseline", before), ("candidate", after)) if not items)
        return None, f"no per-item scores in the {missing} (recorded before schema 6, or a metric without them)"
    if min(len(before), len(after)) < MIN_ITEMS:
        return None, f"fewer than {MIN_ITEMS} items, nothing to resample"
    try:
        aligned = align_items({"baseline": before, "candidate": after})
    except ItemMismatchError as error:
        return None, f"scored on other items ({error})"
    return paired_difference(aligned.runs["baseline"], aligned.runs["candidate"], aggregation(metric), alpha=alpha), ""


def _results_of(store: ResultStore, run_ids: set[str]) -> dict[str, dict[tuple[str, str], ResultRow]]:
    if not run_ids:
        return {}
    rows = store.query(
        "SELECT * FROM results WHERE run_id IN (SELECT unnest($run_ids))", {"run_ids": sorted(run_ids)}
    )
    by_run: dict[str, dict[tuple[str, str], ResultRow]] = {}
    for row in rows:
        result = ResultRow.model_validate(row)
        by_run.setdefault(result.run_id, {})[(result.suite, result.metric)] = result
    return by_run


def _goodness(value: float, higher_is_better: bool) -> float:
    """The value oriented so that more is better; NaN (a failed evaluation) is the worst there is."""
    if math.isnan(value):
        return -math.inf
    return value if higher_is_better else -value


def _describe(run: RunRecord) -> str:
    return f"{run.model} / {run.method_label} (run {run.run_id})"


# -- rendering ---------------------------------------------------------------------------------


def to_markdown(comparison: Comparison) -> str:
    """A headline, a table of the results that moved (worse first), then what could not be compared."""
    pairs = len(comparison.pairs)
    moved = sorted(comparison.worse + comparison.better, key=lambda c: (c.verdict != "worse", c.model, c.method, c.suite, c.metric))
    steady = len(comparison.changes) - len(moved)
    if comparison.is_empty:
        headline = "**Nothing to compare.**"
    elif comparison.has_regression:
        headline = f"**{len(comparison.worse)} regression(s)** across {pairs} run pair(s)"
    else:
        headline = f"**No regression** across {pairs} run pair(s)"
    if not comparison.is_empty:
        headline += f": {len(comparison.worse)} worse, {len(comparison.better)} better, {steady} within noise."
    parts = [headline, ""]
    if 0 < pairs <= 20:
        parts += [f"- {pair.model} / {pair.method}: run {pair.baseline_run_id} → {pair.candidate_run_id}"
                  for pair in comparison.pairs] + [""]  # fmt: skip
    if moved:
        body = [
            [change.verdict, change.model, change.method, f"{change.suite} {change.metric} {'↑' if change.higher_is_better else '↓'}",
             _value(change.baseline, change.baseline_stderr), _value(change.candidate, change.candidate_stderr),
             _signed(change.delta), _interval(change), _decision(change), _relative(change)]
            for change in moved
        ]  # fmt: skip
        header = ["", "model", "method", "result", "before", "after", "change", "95% interval", "decided by", "relative"]
        parts += markdown_table(header, body, [False, False, False, False, True, True, True, True, True, True]) + [""]
    for pair in comparison.pairs:
        if not pair.same_config:
            parts.append(f"_note: runs {pair.baseline_run_id} and {pair.candidate_run_id} have different configs_")
    parts += [f"_{note}_" for note in comparison.notes]
    rules = []
    if any(change.decided_by == "paired test" for change in comparison.changes):
        rules.append(f"paired test: moved = significant (p < {comparison.alpha:g}; McNemar's exact test for accuracy, "
                     f"the paired bootstrap otherwise, over the same items) and beyond {comparison.tolerance:g} × |before|")  # fmt: skip
    if any(change.decided_by == "noise margin" for change in comparison.changes):
        rules.append(f"noise margin (runs without per-item scores): moved = beyond max({comparison.tolerance:g} × |before|, "
                     f"{comparison.z:g} × √(stderr_before² + stderr_after²))")  # fmt: skip
    parts.append("_" + "; ".join([*rules, "↑ higher is better, ↓ lower is better"]) + "_")
    return "\n".join(parts).rstrip() + "\n"


def _interval(change: MetricChange) -> str:
    if change.low is None or change.high is None:
        return MISSING
    return f"[{_signed(change.low)}, {_signed(change.high)}]"


def _decision(change: MetricChange) -> str:
    if change.decided_by == "paired test" and change.p_value is not None:
        return f"paired p = {change.p_value:.2g} (n = {change.n_items})"
    return f"margin {number(change.margin)}"


def _value(value: float, stderr: float | None) -> str:
    return number(value) if stderr is None else f"{number(value)} ± {number(stderr)}"


def _signed(delta: float) -> str:
    return ("+" if delta > 0 else "") + number(delta) if math.isfinite(delta) else str(delta)


def _relative(change: MetricChange) -> str:
    if change.baseline == 0 or not (math.isfinite(change.baseline) and math.isfinite(change.candidate)):
        return MISSING
    return f"{change.delta / abs(change.baseline):+.1%}"
