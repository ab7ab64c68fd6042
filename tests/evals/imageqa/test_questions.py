"""Question types: every drawn image has the answer it was drawn for, read back from the pixels."""

from __future__ import annotations

import random

import pytest

from evals.imageqa.digits import indices_by_digit
from evals.imageqa.questions import QUESTION_TYPES, DrawContext, chance_levels, vocabulary

DRAWS_PER_ANSWER = 15


def _context(image_size: int) -> DrawContext:
    pools = indices_by_digit()
    return DrawContext(image_size, lambda digit: pools[digit][0])


@pytest.mark.parametrize("image_size", [48, 64])
@pytest.mark.parametrize("qtype", list(QUESTION_TYPES))
def test_drawn_images_have_their_answer(qtype, image_size, answer_check):
    question_type = QUESTION_TYPES[qtype]
    rng = random.Random(0)
    for answer in question_type.choices:
        for _ in range(DRAWS_PER_ANSWER):
            question, image = question_type.draw(answer, rng, _context(image_size))
            assert question in question_type.questions
            rendered = image.render(image_size)
            assert rendered.size == (image_size, image_size) and rendered.mode == "RGB"
            answer_check(qtype, question, answer, image.objects, image.digit_index, rendered)


def test_types_choices_and_chance():
    assert list(QUESTION_TYPES) == ["colour", "shape", "count", "position", "relation", "digit"]
    assert QUESTION_TYPES["count"].choices == ("1", "2", "3", "4")
    assert QUESTION_TYPES["position"].choices == ("left", "right", "top", "bottom")
    assert QUESTION_TYPES["relation"].choices == ("left", "right", "above", "below")
    assert QUESTION_TYPES["digit"].choices == tuple("0123456789")
    for qtype in QUESTION_TYPES.values():
        assert len(set(qtype.choices)) == len(qtype.choices) and all(" " not in choice for choice in qtype.choices)
    assert chance_levels() == {"colour": 1 / 6, "shape": 0.25, "count": 0.25, "position": 0.25, "relation": 0.25, "digit": 0.1}


def test_relation_questions_name_two_different_shapes():
    questions = QUESTION_TYPES["relation"].questions
    assert len(questions) == len(set(questions)) == 2 * (6 * 4) * (5 * 3)
    assert "Is the red circle to the left or to the right of the blue square?" in questions
    assert "Is the red circle above or below the red square?" not in questions


def test_vocabulary_is_every_token_of_every_prompt_and_answer():
    words = vocabulary()
    assert list(words) == sorted(set(words))
    assert {"question", ":", "answer", "?", "what", "colour", "cyan", "triangle", "above", "4", "9"} <= set(words)
    assert all(word == word.lower() for word in words)
