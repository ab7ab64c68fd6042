"""The one prompt format, and a word-level tokenizer built from the vocabulary that covers it."""

from __future__ import annotations

from evals.imageqa.prompts import answer_text, prompt_tokens, question_text
from evals.imageqa.questions import QUESTION_TYPES, vocabulary
from evals.imageqa.records import load_records
from evals.imageqa.generator import split_path


def test_prompt_and_answer_format(small_build):
    assert question_text({"question": "What colour is the shape?"}) == "Question: What colour is the shape? Answer:"
    assert answer_text("red") == " red"
    record = load_records(split_path(small_build, "test"))[0]
    assert question_text(record) == question_text(record.to_json()) == f"Question: {record.question} Answer:"
    assert prompt_tokens("Question: Is the red circle above? Answer: 3") == ["question", ":", "is", "the", "red", "circle", "above", "?", "answer", ":", "3"]


def test_toy_vlm_tokenizer_from_the_vocabulary_knows_every_prompt_and_answer():
    from pruning.models.toy_vlm import build_tokenizer

    tokenizer = build_tokenizer(vocabulary())
    for qtype in QUESTION_TYPES.values():
        for question in qtype.questions[:50]:
            for choice in qtype.choices:
                text = question_text({"question": question}) + answer_text(choice)
                ids = tokenizer(text, add_special_tokens=False)["input_ids"]
                assert tokenizer.unk_token_id not in ids, text
                assert len(ids) == len(prompt_tokens(text))
