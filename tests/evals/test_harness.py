"""suite_scores on an lmms-eval-shaped result dict (lm-eval's is covered in test_lm_eval_bridge), and sample_scores
on hand-made logged samples shaped as each harness writes them."""

from __future__ import annotations

from evals.harness import SampleScore, SuiteScore, harness_scores, sample_scores, suite_scores


def test_lmms_eval_stderr_variants_are_not_metrics():
    results = {
        "results": {
            "imageqa_short": {"alias": "imageqa_short", "exact_match,none": 0.75, "exact_match_stderr,none": 0.1,
                              "exact_match_stderr_clt,none": 0.11, "exact_match_stderr_clustered,none": 0.12,
                              "anls,none": 0.5, "anls_stderr,none": "N/A"},
        },
        "higher_is_better": {"imageqa_short": {"exact_match": True}},
        "n-samples": {"imageqa_short": {"original": 40, "effective": 8}},
    }
    registry = {"anls": True}.get
    assert suite_scores(results, registry) == [
        SuiteScore(suite="imageqa_short", metric="exact_match", value=0.75, stderr=0.1, higher_is_better=True, n_samples=8),
        SuiteScore(suite="imageqa_short", metric="anls", value=0.5, stderr=None, higher_is_better=True, n_samples=8),
    ]


def _lm_eval_sample(doc_id: int, filter_name: str = "none", **metrics) -> dict:
    """A logged sample as lm-eval 0.4 writes it (evaluator.py: `example`, then `example.update(metrics)`)."""
    return {
        "doc_id": doc_id, "doc": {"text": "a document"}, "target": "a document", "arguments": [("", "a document")],
        "resps": [[-12.5]], "filtered_resps": [-12.5], "filter": filter_name, "metrics": list(metrics),
        "doc_hash": "d0c", "prompt_hash": "9r0", "target_hash": "7a6", **metrics,
    }  # fmt: skip


def test_lm_eval_samples_become_item_scores():
    results = {
        "results": {
            "jargon_ppl": {"alias": "jargon_ppl", "sample_len": 2, "word_perplexity,none": 99.0, "word_perplexity_stderr,none": "N/A",
                           "bits_per_byte,none": 1.5, "bits_per_byte_stderr,none": "N/A"},
            "jargon_mc": {"acc,none": 0.5, "acc_stderr,none": 0.5, "f1,none": 0.4, "f1_stderr,none": "N/A"},
            "gsm8k": {"exact_match,strict-match": 1.0, "exact_match,flexible-extract": 0.0},
            "prunebench_text": {"acc,none": 0.5},  # a group: aggregated over its tasks, no samples of its own
        },
        "samples": {
            "jargon_ppl": [_lm_eval_sample(0, word_perplexity=(-120.0, 30), bits_per_byte=(-120.0, 150)),
                           _lm_eval_sample(1, word_perplexity=(-80.5, 20), bits_per_byte=(-80.5, 101))],
            # f1's per-item value is a (gold, prediction) pair for a corpus-level F1: two numbers, yet no item score
            "jargon_mc": [_lm_eval_sample(7, acc=1.0, f1=(1, 1)), _lm_eval_sample(8, acc=0.0, f1=(2, 0))],
            "gsm8k": [_lm_eval_sample(0, "strict-match", exact_match=1.0), _lm_eval_sample(0, "flexible-extract", exact_match=0)],
        },
    }  # fmt: skip
    assert sample_scores(results) == [
        SampleScore(suite="jargon_ppl", item="0", metric="word_perplexity", value=-120.0, weight=30.0),
        SampleScore(suite="jargon_ppl", item="1", metric="word_perplexity", value=-80.5, weight=20.0),
        SampleScore(suite="jargon_ppl", item="0", metric="bits_per_byte", value=-120.0, weight=150.0),
        SampleScore(suite="jargon_ppl", item="1", metric="bits_per_byte", value=-80.5, weight=101.0),
        SampleScore(suite="jargon_mc", item="7", metric="acc", value=1.0),
        SampleScore(suite="jargon_mc", item="8", metric="acc", value=0.0),
        SampleScore(suite="gsm8k", item="0", metric="exact_match/strict-match", value=1.0),
        SampleScore(suite="gsm8k", item="0", metric="exact_match/flexible-extract", value=0.0),
    ]
    evaluation = harness_scores(results, {"f1": True}.get)
    assert evaluation.items == sample_scores(results) and len(evaluation.scores) == 7
    assert sample_scores({k: v for k, v in results.items() if k != "samples"}) == []  # run without log_samples


def _lmms_eval_sample(doc_id: int, **metrics) -> dict:
    """A logged sample as lmms-eval 0.7.3 writes it (evaluator.py `_process_document_results`): no filter, no metric list."""
    return {
        "doc_id": doc_id, "doc": {"question": "what colour is the square ?"}, "target": "red", "arguments": ["what colour ?"],
        "resps": [["red"]], "filtered_resps": ["red"], "token_counts": [None], "doc_hash": "d0c", **metrics,
    }  # fmt: skip


def test_lmms_eval_samples_become_item_scores():
    results = {
        "results": {
            "imageqa_mc": {"alias": "imageqa_mc", "acc,none": 0.5, "acc_stderr,none": 0.5, "acc_stderr_clt,none": 0.5,
                           "acc_colour,none": 1.0, "acc_colour_stderr,none": "N/A", "acc_count,none": 0.0},
            # two filters: lmms-eval logs the documents once per filter, in the order of these keys
            "vqa": {"exact_match,strict": 0.5, "exact_match,lenient": 1.0},
            "mme": {"perception_score,none": 120.0},  # per-item dicts, aggregated by the task's own function
        },
        "samples": {
            "imageqa_mc": [_lmms_eval_sample(0, acc=1.0, acc_colour=1.0), _lmms_eval_sample(1, acc=0.0, acc_count=0.0)],
            "vqa": [_lmms_eval_sample(0, exact_match=1.0), _lmms_eval_sample(1, exact_match=0.0),
                    _lmms_eval_sample(0, exact_match=1.0), _lmms_eval_sample(1, exact_match=1.0)],
            "mme": [_lmms_eval_sample(0, perception_score={"question_id": "q0", "score": 1})],
        },
    }  # fmt: skip
    assert sample_scores(results) == [
        SampleScore(suite="imageqa_mc", item="0", metric="acc", value=1.0),
        SampleScore(suite="imageqa_mc", item="1", metric="acc", value=0.0),
        SampleScore(suite="imageqa_mc", item="0", metric="acc_colour", value=1.0),  # each item scores its own question type
        SampleScore(suite="imageqa_mc", item="1", metric="acc_count", value=0.0),
        SampleScore(suite="vqa", item="0", metric="exact_match/strict", value=1.0),
        SampleScore(suite="vqa", item="1", metric="exact_match/strict", value=0.0),
        SampleScore(suite="vqa", item="0", metric="exact_match/lenient", value=1.0),
        SampleScore(suite="vqa", item="1", metric="exact_match/lenient", value=1.0),
    ]
