"""Each suite's primary metric: the one number of a suite that mean retention averages.

A suite reports several metrics, often views of one measurement (word perplexity, byte perplexity
and bits per byte are one log-likelihood), so averaging all of them would count that measurement
several times and weigh suites by how many views they report. A suite's primary metric is, in order:

1. the experiment's choice, `eval.primary_metrics: {suite: metric}`;
2. `PRIMARY_METRICS` below: the local suites, and standard tasks the rule would get wrong;
3. the rule for standard lm-eval tasks: `acc_norm` where the suite reports it, else `acc`
   (the length-normalised accuracy is what multiple-choice leaderboards quote);
4. the suite's only metric, when it reports one; otherwise it has none (shown, never averaged).
An experiment's choice the suite did not report gives it none; a table entry it did not report falls
through to the rule.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path

from evals.suites import IMAGE_SUITES, SUITES, TAG_MEMBERS, expand_suites

PRIMARY_METRICS: dict[str, str] = {
    "jargon_ppl": "word_perplexity",  # as lm-eval's wikitext
    "jargon_cloze": "acc",  # as lambada_openai (its perplexity scores the same target word)
    "jargon_mc": "acc",  # what the README's published tables average
    "imageqa_mc": "acc",  # over every question type; acc_<qtype> are its parts
    "imageqa_short": "acc",
    "wikitext": "word_perplexity",
    "gsm8k": "exact_match/strict-match",
}
RULE = ("acc_norm", "acc")


def primary_metric(suite: str, metrics: Collection[str], chosen: Mapping[str, str] | None = None) -> str | None:
    """The primary metric of `suite` among the `metrics` it reported (see the module docstring)."""
    if chosen and suite in chosen:
        return chosen[suite] if chosen[suite] in metrics else None
    for metric in (PRIMARY_METRICS.get(suite), *RULE):
        if metric in metrics:
            return metric
    return next(iter(metrics)) if len(metrics) == 1 else None


def primary_results(
    reported: Iterable[tuple[str, str]], requested: Sequence[str] | None = None, chosen: Mapping[str, str] | None = None
) -> set[tuple[str, str]]:
    """The (suite, metric) pairs of one run that are primary: one per suite asked for.

    `requested` are the config's `eval.suites` (tags stand for their members); a suite the run reports
    without being asked for (a subtask of a requested lm-eval group, which reports its own aggregate)
    has no primary, unless a requested standard name reported nothing under its own name (an lm-eval
    tag: its results come under its members' names). None: every reported suite counts (rows recorded
    before the config said which suites were asked for).
    """
    by_suite: dict[str, list[str]] = {}
    for suite, metric in reported:
        by_suite.setdefault(suite, []).append(metric)
    eligible = set(by_suite)
    if requested is not None:
        asked = set(expand_suites(requested, TAG_MEMBERS))  # a tag's results come under its members' names
        eligible &= asked
        if any(name not in SUITES and name not in IMAGE_SUITES for name in asked - set(by_suite)):
            eligible |= set(by_suite) - asked
    pairs = set()
    for suite in eligible:
        metric = primary_metric(suite, by_suite[suite], chosen)
        if metric is not None:
            pairs.add((suite, metric))
    return pairs


def check_primary_metrics(chosen: Mapping[str, str], suites: Sequence[str]) -> None:
    """ValueError naming the first entry that names a suite not evaluated, or a metric a local suite
    does not report (standard tasks' metrics are known only once they ran)."""
    evaluated = expand_suites(suites, TAG_MEMBERS)
    for suite, metric in chosen.items():
        if suite not in evaluated:
            raise ValueError(f"suite {suite!r} is not evaluated (the suites are {', '.join(evaluated)})")
        known = local_metrics(suite)
        if known is not None and metric not in known:
            raise ValueError(f"suite {suite!r} reports no metric {metric!r}; it reports {', '.join(known)}")


def local_metrics(suite: str) -> tuple[str, ...] | None:
    """The metrics a local suite reports (from its task config); None for a standard task."""
    if suite in SUITES:
        config = SUITES[suite].task_config(suite, Path("unused.jsonl"), Path("unused"))
        return tuple(entry["metric"] for entry in config["metric_list"])
    if suite in IMAGE_SUITES and suite not in TAG_MEMBERS:
        from evals.imageqa.tasks import metric_keys  # draws in the image generator's imports: only when asked

        return tuple(metric_keys())
    return None
