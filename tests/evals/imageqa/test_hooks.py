"""The per-document hooks lmms-eval calls: prompt, image, scoring overall and per question type."""

from __future__ import annotations

from pathlib import Path

import pytest

from evals.imageqa import hooks
from pruning.errors import SuiteError

DOC = {
    "id": "test-00001",
    "qtype": "count",
    "question": "How many shapes are there?",
    "answer": "3",
    "choices": ["1", "2", "3", "4"],
    "image": "images/test/test-00001.png",
}


def test_normalize_answer():
    assert hooks.normalize_answer("  The answer is Three. ") == "answer is 3"
    assert hooks.normalize_answer("Red!") == hooks.normalize_answer("red") == "red"
    assert hooks.normalize_answer("a\tblue\nsquare") == "blue square"


def test_multiple_choice_takes_the_most_likely_choice_and_scores_its_type():
    assert hooks.process_results_mc(DOC, [(-4.0, False), (-3.0, False), (-0.5, True), (-2.0, False)]) == {"acc": 1.0, "acc_count": 1.0}
    assert hooks.process_results_mc(DOC, [(-0.1, True), (-3.0, False), (-0.5, False), (-2.0, False)]) == {"acc": 0.0, "acc_count": 0.0}
    assert hooks.process_results_mc(DOC, [-9.0, -9.0, -1.0, -9.0]) == {"acc": 1.0, "acc_count": 1.0}
    # what lmms-eval hands on when a model answers plain tuples
    assert hooks.process_results_mc(DOC, ["(-9.0, False)", "(-0.2, True)", "(-3.5, False)", "(-9, False)"]) == {"acc": 0.0, "acc_count": 0.0}


def test_short_answer_is_exact_match_after_normalising():
    assert hooks.process_results_short(DOC, ["Three."]) == {"acc": 1.0, "acc_count": 1.0}
    assert hooks.process_results_short(DOC, [" 3"]) == {"acc": 1.0, "acc_count": 1.0}
    assert hooks.process_results_short(DOC, ["3 shapes"]) == {"acc": 0.0, "acc_count": 0.0}
    assert hooks.process_results_short(DOC, [""]) == {"acc": 0.0, "acc_count": 0.0}


def test_prompt_hook_refuses_a_record_without_answer():
    assert hooks.doc_to_text(DOC) == "Question: How many shapes are there? Answer:"
    with pytest.raises(SuiteError, match="'test-00001' .*has no 'answer' field"):
        hooks.doc_to_text({**DOC, "answer": None})
    with pytest.raises(SuiteError, match="'test-00001' .*has no 'answer' field"):
        hooks.doc_to_target({key: value for key, value in DOC.items() if key != "answer"})


def test_visual_hook_names_an_undecodable_image(tmp_path: Path):
    image = tmp_path / DOC["image"]
    image.parent.mkdir(parents=True)
    image.write_bytes(b"\x89PNG broken")
    with pytest.raises(SuiteError, match=rf"'test-00001': image {image} cannot be decoded"):
        hooks.doc_to_visual(DOC, tmp_path)
