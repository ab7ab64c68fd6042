"""The user's own lm-eval tasks (`eval.include_path`) through the lm-eval bridge: a multiple-choice task
over a local JSONL, few-shot prompts, chat templates, the per-sample log, and names that are not known."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.lm_eval_bridge import check_suites, evaluate, has_chat_template
from pruning.errors import SuiteError


@pytest.fixture(scope="module")
def include_path(tmp_path_factory, user_mc_task) -> Path:
    return user_mc_task(tmp_path_factory.mktemp("user-task"))


def logged(samples_dir: Path, suite: str = "my_mc") -> list[dict]:
    return [json.loads(line) for line in (samples_dir / f"{suite}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def zero_shot(tiny_llama, smollm2_tokenizer, include_path, tmp_path_factory):
    samples_dir = tmp_path_factory.mktemp("zero-shot")
    scores = evaluate(tiny_llama, smollm2_tokenizer, ["my_mc"], None, batch_size=4, include_path=[include_path], samples_dir=samples_dir)
    return scores, logged(samples_dir)


def test_a_user_task_is_evaluated_end_to_end(zero_shot):
    scores, samples = zero_shot
    (acc,) = [score for score in scores.scores if score.suite == "my_mc"]
    assert acc.metric == "acc" and acc.n_samples == 6 and acc.higher_is_better
    items = [item for item in scores.items if item.suite == "my_mc"]
    assert [item.item for item in items] == [str(n) for n in range(6)]
    assert acc.value == pytest.approx(sum(item.value for item in items) / 6)
    # the per-sample log: one line per document, its four (context, choice) requests and what scored them
    assert [sample["doc_id"] for sample in samples] == list(range(6))
    first = samples[0]
    assert first["doc"]["question"] == "Which animal barks?" and first["target"] == 0 and first["acc"] in (0.0, 1.0)
    assert [argument[1] for argument in first["arguments"]] == [" dog", " cat", " fish", " owl"]
    assert first["arguments"][0][0] == "Question: Which animal barks?\nAnswer:"


def test_num_fewshot_puts_the_shots_in_every_prompt(tiny_llama, smollm2_tokenizer, include_path, zero_shot, tmp_path):
    evaluate(tiny_llama, smollm2_tokenizer, ["my_mc"], None, include_path=[include_path], num_fewshot=2, limit=2, samples_dir=tmp_path)
    for shot, zero in zip(logged(tmp_path), zero_shot[1]):
        context = shot["arguments"][0][0]
        assert context != zero["arguments"][0][0] and context.endswith(zero["arguments"][0][0])
        assert "Question: What is hot?\nAnswer: fire" in context and "Question: Which one flies?\nAnswer: bird" in context


def test_chat_template(tiny_llama, smollm2_tokenizer, smollm2_checkpoint, include_path, tmp_path):
    evaluate(tiny_llama, smollm2_tokenizer, ["my_mc"], None, include_path=[include_path], apply_chat_template=True, limit=1,
             samples_dir=tmp_path)  # fmt: skip
    context = logged(tmp_path)[0]["arguments"][0][0]
    assert context.startswith("<|im_start|>") and "Which animal barks?" in context
    assert has_chat_template(smollm2_checkpoint)


def test_chat_template_without_one(tiny_llama, include_path, tmp_path):
    from evals.imageqa.questions import vocabulary
    from pruning.models.toy_vlm import build_tokenizer

    word_level = build_tokenizer(vocabulary())
    with pytest.raises(SuiteError, match="eval.apply_chat_template: .* has no chat template"):
        evaluate(tiny_llama, word_level, ["my_mc"], None, include_path=[include_path], apply_chat_template=True)
    word_level.save_pretrained(tmp_path)
    assert not has_chat_template(tmp_path)


def test_check_suites_knows_user_tasks_and_suggests_the_closest_name(include_path):
    check_suites(["my_mc", "jargon_mc"], [include_path])
    with pytest.raises(SuiteError) as raised:
        check_suites(["my_mcc"], [include_path])
    assert f"not a task under include_path ({include_path})" in str(raised.value)
    assert str(raised.value).endswith("did you mean 'my_mc'?")
    with pytest.raises(SuiteError, match=r"unknown suite 'jargon_mcq'.*did you mean 'jargon_mc'\?$"):
        check_suites(["jargon_mcq"])


def test_a_user_task_may_not_take_a_local_suites_name(tmp_path, include_path):
    (tmp_path / "jargon_mc.yaml").write_text((include_path / "my_mc.yaml").read_text().replace("task: my_mc", "task: jargon_mc"))
    with pytest.raises(SuiteError, match="named 'jargon_mc', as a local suite of prunebench; rename it"):
        check_suites(["jargon_mc"], [tmp_path])
