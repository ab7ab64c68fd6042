"""lm-eval bridge: a tiny random-init Llama with the real SmolLM2 tokenizer through lm-eval's evaluator,
result parsing on a hand-made result dict, unknown names, and one end-to-end check on the real model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from evals.lm_eval_bridge import HarnessScores, SuiteScore, check_suites, evaluate, scores_from_results
from evals.suites import build_suites
from pruning.errors import SuiteError

METRICS = {
    "jargon_ppl": {"word_perplexity": False, "byte_perplexity": False, "bits_per_byte": False},
    "jargon_cloze": {"perplexity": False, "acc": True},
    "jargon_mc": {"acc": True, "acc_norm": True},
}


@pytest.fixture(scope="module")
def suites_dir(tmp_path_factory, cache_dir) -> Path:
    return build_suites(list(METRICS), tmp_path_factory.mktemp("suites"), cache_dir)


@pytest.fixture(scope="module")
def all_local(tiny_llama, smollm2_tokenizer, suites_dir) -> HarnessScores:
    return evaluate(tiny_llama, smollm2_tokenizer, ["prunebench_text"], suites_dir, batch_size=4, limit=3)


def test_random_model_on_all_local_suites(all_local):
    got = {(s.suite, s.metric): s for s in all_local.scores}
    for suite, metrics in METRICS.items():
        for metric, higher_is_better in metrics.items():
            score = got[(suite, metric)]
            assert math.isfinite(score.value) and score.n_samples == 3
            assert score.higher_is_better is higher_is_better
    # a real model scores ~270 here, a random one over 30k (pruning sits in between)
    assert got[("jargon_ppl", "word_perplexity")].value > 30_000
    assert got[("jargon_ppl", "bits_per_byte")].value > 3
    assert got[("jargon_cloze", "acc")].value == 0.0
    assert got[("jargon_mc", "acc")].stderr is not None and got[("jargon_ppl", "word_perplexity")].stderr is None


# How lm-eval aggregates each metric's per-item values (lm_eval/api/metrics.py: mean, perplexity,
# weighted_perplexity, bits_per_byte), written out here from the formulas.
AGGREGATES = {
    "acc": lambda values, weights: sum(values) / len(values),
    "acc_norm": lambda values, weights: sum(values) / len(values),
    "perplexity": lambda values, weights: math.exp(-sum(values) / len(values)),
    "word_perplexity": lambda values, weights: math.exp(-sum(values) / sum(weights)),
    "byte_perplexity": lambda values, weights: math.exp(-sum(values) / sum(weights)),
    "bits_per_byte": lambda values, weights: -sum(values) / sum(weights) / math.log(2),
}


def test_items_reproduce_the_harness_aggregates(all_local):
    """Every suite's score, recomputed from its recorded items alone, is the score lm-eval reported."""
    items: dict[tuple[str, str], list] = {}
    for item in all_local.items:
        items.setdefault((item.suite, item.metric), []).append(item)
    assert set(items) == {(suite, metric) for suite, metrics in METRICS.items() for metric in metrics}
    for score in all_local.scores:
        if score.suite not in METRICS:
            continue
        rows = items[(score.suite, score.metric)]
        assert [row.item for row in rows] == ["0", "1", "2"]  # the first three documents, by lm-eval's doc_id
        values, weights = [row.value for row in rows], [row.weight for row in rows]
        if score.metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
            assert all(weight > 0 for weight in weights)  # words or bytes of each document
        else:
            assert weights == [None] * 3
        assert AGGREGATES[score.metric](values, weights) == pytest.approx(score.value, rel=1e-9), (score.suite, score.metric)


def test_evaluation_is_deterministic(tiny_llama, smollm2_tokenizer, suites_dir):
    first, second = (evaluate(tiny_llama, smollm2_tokenizer, ["jargon_mc"], suites_dir, limit=2) for _ in range(2))
    assert first == second


def test_a_local_suite_that_was_not_built(tiny_llama, smollm2_tokenizer, tmp_path):
    with pytest.raises(SuiteError, match="jargon_ppl.*build_suites"):
        evaluate(tiny_llama, smollm2_tokenizer, ["jargon_ppl"], tmp_path)


def test_no_tokenizer(tiny_llama, suites_dir):
    with pytest.raises(SuiteError, match="tokenizer"):
        evaluate(tiny_llama, None, ["jargon_ppl"], suites_dir)


def test_unknown_suite_lists_the_local_ones():
    check_suites(["jargon_ppl", "prunebench_text"])  # local names need no lm-eval index
    with pytest.raises(SuiteError) as raised:
        check_suites(["jargon_ppl", "no_such_suite_xyz"])
    message = str(raised.value)
    assert message.startswith("unknown suite 'no_such_suite_xyz': not a local suite (jargon_cloze, jargon_mc, jargon_ppl")


def test_standard_task_without_its_dataset_names_the_cache(tiny_llama, smollm2_tokenizer, suites_dir):
    from huggingface_hub import constants

    if (Path(constants.HF_HUB_CACHE) / "datasets--Rowan--hellaswag").exists():
        pytest.skip("hellaswag is in this machine's Hugging Face cache")
    with pytest.raises(SuiteError, match="'hellaswag'.*local Hugging Face cache"):
        evaluate(tiny_llama, smollm2_tokenizer, ["hellaswag"], suites_dir, limit=1)


def test_scores_from_a_hand_made_result_dict():
    results = {
        "results": {
            "jargon_cloze": {"alias": "jargon_cloze", "acc,none": 0.5, "acc_stderr,none": 0.1, "perplexity,none": 12.0,
                             "perplexity_stderr,none": "N/A"},
            "gsm8k": {"exact_match,strict-match": 0.25, "exact_match_stderr,strict-match": 0.05},
        },
        "higher_is_better": {"jargon_cloze": {"acc": True, "perplexity": False}, "gsm8k": {}},
        "n-samples": {"jargon_cloze": {"original": 100, "effective": 10}},
    }
    assert scores_from_results(results).scores == [
        SuiteScore(suite="jargon_cloze", metric="acc", value=0.5, stderr=0.1, higher_is_better=True, n_samples=10),
        SuiteScore(suite="jargon_cloze", metric="perplexity", value=12.0, stderr=None, higher_is_better=False, n_samples=10),
        # no higher_is_better in the output: lm-eval's registry decides; unknown sample count stays None
        SuiteScore(suite="gsm8k", metric="exact_match/strict-match", value=0.25, stderr=0.05, higher_is_better=True),
    ]


@pytest.mark.e2e
def test_real_model_perplexity_is_that_of_a_language_model(smollm2_checkpoint, suites_dir):
    """The suite separates models: SmolLM2-135M scores word perplexity ~270 on the Jargon File
    (token perplexity ~50: jargon, not news prose); random weights score > 30k, 50% magnitude ~17k."""
    from pruning.models.sources import load_model
    from pruning.specs import ModelSpec

    model, tokenizer = load_model(smollm2_checkpoint, ModelSpec(source=str(smollm2_checkpoint)))
    scores = {s.metric: s.value for s in evaluate(model, tokenizer, ["jargon_ppl"], suites_dir, limit=8).scores}
    assert 50 < scores["word_perplexity"] < 1000
    assert scores["bits_per_byte"] < 1.6


def test_an_offloaded_model_scores_the_same_one_block_at_a_time(tiny_llama, smollm2_tokenizer, suites_dir, all_local, monkeypatch):
    """What the evaluation stage does with `offload`: lm-eval's HFLM runs the model inside `onloaded`."""
    import copy

    from pruning.models.adapters import adapter_for
    from pruning.models.offload import offload_model, onloaded
    from tests.pruning.local.test_offload import DeviceLedger

    model = copy.deepcopy(tiny_llama)
    adapter = adapter_for(model)
    offload_model(model, adapter, "disk")
    ledger = DeviceLedger(monkeypatch, model)
    with onloaded(model, adapter, "cpu"):
        offloaded = evaluate(model, smollm2_tokenizer, ["prunebench_text"], suites_dir, batch_size=4, limit=3)
    assert ledger.peak_blocks == 1 and ledger.onloads > 1 + 2 * 2  # the rest once, both layers per forward
    assert offloaded.scores == all_local.scores
