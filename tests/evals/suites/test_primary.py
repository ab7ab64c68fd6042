"""Primary metrics: one per suite, from the experiment's choice, the table, or the rule."""

from __future__ import annotations

import pytest

from evals.suites.primary import PRIMARY_METRICS, TAG_MEMBERS, check_primary_metrics, primary_metric, primary_results


@pytest.mark.parametrize(
    "suite, metrics, expected",
    [
        ("jargon_ppl", ["word_perplexity", "byte_perplexity", "bits_per_byte"], "word_perplexity"),
        ("jargon_cloze", ["perplexity", "acc"], "acc"),
        ("jargon_mc", ["acc", "acc_norm"], "acc"),  # the table, not the rule
        ("imageqa_mc", ["acc", "acc_colour", "acc_digit"], "acc"),
        ("hellaswag", ["acc", "acc_norm"], "acc_norm"),  # the rule
        ("boolq", ["acc"], "acc"),
        ("gsm8k", ["exact_match/strict-match", "exact_match/flexible-extract"], "exact_match/strict-match"),
        ("wikitext", ["word_perplexity", "byte_perplexity", "bits_per_byte"], "word_perplexity"),
        ("mme", ["mme_perception_score"], "mme_perception_score"),  # a suite's only metric
        ("squad", ["exact", "f1"], None),  # several, none known: shown, never averaged
    ],
)
def test_primary_metric_of_each_kind_of_suite(suite, metrics, expected):
    assert primary_metric(suite, metrics) == expected


def test_the_experiments_choice_wins_and_is_not_guessed_when_missing():
    assert primary_metric("jargon_mc", ["acc", "acc_norm"], {"jargon_mc": "acc_norm"}) == "acc_norm"
    assert primary_metric("squad", ["exact", "f1"], {"squad": "f1"}) == "f1"
    assert primary_metric("squad", ["exact", "f1"], {"squad": "F1"}) is None


def test_one_primary_per_requested_suite():
    reported = [("jargon_ppl", "word_perplexity"), ("jargon_ppl", "bits_per_byte"), ("jargon_mc", "acc"),
                ("jargon_mc", "acc_norm"), ("mmlu", "acc"), ("mmlu_anatomy", "acc"), ("mmlu_virology", "acc")]  # fmt: skip
    # mmlu is a group: its own row carries the aggregate, its subtasks are not asked for by name
    assert primary_results(reported, ["prunebench_text", "mmlu"]) == {
        ("jargon_ppl", "word_perplexity"), ("jargon_mc", "acc"), ("mmlu", "acc")
    }  # fmt: skip
    # rows recorded before the config said what was asked for: every suite counts
    assert ("mmlu_anatomy", "acc") in primary_results(reported)
    # a standard tag reports under its members' names only: those count
    assert primary_results([("arc_easy", "acc"), ("arc_easy", "acc_norm"), ("arc_challenge", "acc_norm")], ["ai2_arc"]) == {
        ("arc_easy", "acc_norm"), ("arc_challenge", "acc_norm")
    }  # fmt: skip


def test_the_image_tag_members_are_the_image_tasks():
    from evals.imageqa.tasks import IMAGEQA_TAG, IMAGEQA_TASKS

    assert TAG_MEMBERS[IMAGEQA_TAG] == IMAGEQA_TASKS
    assert all(PRIMARY_METRICS[task] == "acc" for task in IMAGEQA_TASKS)


@pytest.mark.parametrize(
    "chosen, suites, message",
    [
        ({"hellaswag": "acc"}, ["prunebench_text"], "suite 'hellaswag' is not evaluated (the suites are jargon_ppl, jargon_cloze, jargon_mc)"),
        ({"jargon_mc": "ppl"}, ["jargon_mc"], "suite 'jargon_mc' reports no metric 'ppl'; it reports acc, acc_norm"),
        ({"imageqa_mc": "acc_size"}, ["prunebench_imageqa"], "suite 'imageqa_mc' reports no metric 'acc_size'"),
    ],
)
def test_a_bad_choice_is_refused_naming_it(chosen, suites, message):
    with pytest.raises(ValueError) as error:
        check_primary_metrics(chosen, suites)
    assert message in str(error.value)


def test_a_good_choice_passes():
    check_primary_metrics({"jargon_mc": "acc_norm", "hellaswag": "acc", "imageqa_short": "acc_digit"},
                          ["prunebench_text", "hellaswag", "prunebench_imageqa"])  # fmt: skip
