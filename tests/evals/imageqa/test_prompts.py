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


def test_conversation_turns_start_from_the_record_and_add_what_its_scene_answers(small_build):
    import random

    from evals.imageqa.prompts import conversation_turns

    records = load_records(split_path(small_build, "train"))
    for record in records[:40]:
        turns = conversation_turns(record, 48, 3, random.Random(0))
        assert (question_text(record), answer_text(record.answer)) in turns
        assert 1 <= len(turns) <= 3 and len(set(turns)) == len(turns)
        if record.qtype == "digit":
            assert len(turns) == 1
    once = [conversation_turns(r, 48, 4, random.Random(5)) for r in records[:10]]
    assert once == [conversation_turns(r, 48, 4, random.Random(5)) for r in records[:10]]  # seeded


def test_training_conversations_are_a_seeded_sample_with_images(small_build):
    from evals.imageqa.prompts import training_conversations

    records = load_records(split_path(small_build, "train"))
    pairs = training_conversations(records, 5, 1, seed=3)
    assert len(pairs) == 5 and all(image.mode == "RGB" and len(turns) == 1 for image, turns in pairs)
    assert [turns for _, turns in pairs] == [turns for _, turns in training_conversations(records, 5, 1, seed=3)]
    assert [turns for _, turns in pairs] != [turns for _, turns in training_conversations(records, 5, 1, seed=4)]
    assert len(training_conversations(records, 10**6, 1, seed=0)) == len(records)  # capped at the split


def test_type_weights_set_each_question_types_share_of_the_mix(small_build):
    from collections import Counter

    import pytest

    from evals.imageqa.prompts import training_conversations
    from evals.imageqa.questions import SHAPE_QUESTION

    records = load_records(split_path(small_build, "train"))  # 20 per type, scenes answer more
    pairs = training_conversations(records, 120, 1, seed=0, type_weights={"shape": 2.0})
    asked = Counter(turns[0][0] for _, turns in pairs)
    n_shape = asked[question_text({"question": SHAPE_QUESTION})]
    assert len(pairs) == 120 and n_shape == round(120 * 2 / 7)  # weight 2 of 2 + 5 x 1
    assert n_shape > 20  # more shape questions than the split's own shape records: others' images re-asked
    again = training_conversations(records, 120, 1, seed=0, type_weights={"shape": 2.0})
    assert [turns for _, turns in again] == [turns for _, turns in pairs]
    with pytest.raises(ValueError, match="question types"):
        training_conversations(records, 10, 1, seed=0, type_weights={"shapes": 2.0})
    with pytest.raises(ValueError, match="max_turns=1"):
        training_conversations(records, 10, 2, seed=0, type_weights={"shape": 2.0})
