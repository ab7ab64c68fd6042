"""suite_scores on an lmms-eval-shaped result dict (lm-eval's is covered in test_lm_eval_bridge)."""

from __future__ import annotations

from evals.harness import SuiteScore, suite_scores


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
