"""What lmms-eval calls per document of the image-QA suites (through the generated `tasks/utils.py`).

Scoring, for both suites: `acc` over every document and `acc_<qtype>` over the documents of one
question type (a document reports only its own type's key, and lmms-eval averages each key over the
documents that report it).
- multiple choice: the choice with the highest log-likelihood, lm-eval's convention and what
  `evals.lmms_eval_bridge` answers (lmms-eval's own models answer a loss; scored here they invert);
- short answer: exact match after `normalize_answer` of the generated text and the answer.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from PIL import Image

from evals.imageqa.prompts import question_text
from evals.imageqa.records import REQUIRED_FIELDS, decode_image
from pruning.errors import SuiteError

ARTICLES = frozenset({"a", "an", "the"})
NUMBER_WORDS = {word: str(value) for value, word in enumerate("zero one two three four five six seven eight nine ten".split())}


def doc_to_visual(doc: Mapping[str, Any], build_root: Path) -> list[Image.Image]:
    """[the record's image], its path taken relative to the build folder."""
    path = Path(build_root) / str(doc["image"])
    try:
        return [decode_image(path)]
    except SuiteError as err:
        raise SuiteError(f"image-QA record {doc.get('id')!r}: {err}") from err


def doc_to_text(doc: Mapping[str, Any]) -> str:
    """The prompt (`evals.imageqa.prompts.question_text`), after checking the record is complete.

    The check sits here because lmms-eval calls this for every document while building requests,
    outside its retry wrappers (an error in `process_docs` or `process_results` is retried and then
    surfaces as a bare RetryError, without the record's name)."""
    missing = [field for field in REQUIRED_FIELDS if doc.get(field) in (None, "", [])]
    if missing:
        raise SuiteError(f"image-QA record {doc.get('id')!r} (image {doc.get('image')}) has no {missing[0]!r} field")
    return question_text(doc)


def doc_to_target(doc: Mapping[str, Any]) -> str:
    if doc.get("answer") in (None, ""):
        raise SuiteError(f"image-QA record {doc.get('id')!r} (image {doc.get('image')}) has no 'answer' field")
    return str(doc["answer"])


def normalize_answer(text: str) -> str:
    """Lower case, punctuation to spaces, articles dropped, number words as digits, single spaces:
    "The answer is Three." and "answer is 3" compare equal."""
    words = re.sub(r"[^\w\s]", " ", str(text).lower()).split()
    return " ".join(NUMBER_WORDS.get(word, word) for word in words if word not in ARTICLES)


def _scores(doc: Mapping[str, Any], correct: bool) -> dict[str, float]:
    value = float(correct)
    return {"acc": value, f"acc_{doc['qtype']}": value}


def log_likelihood(result: Any) -> float:
    """The log-likelihood of one choice's response: a `(log-likelihood, is_greedy)` pair, a bare number,
    or the text of a pair (lmms-eval 0.7.3 turns a model's plain tuple into its `str()`,
    api/instance.py `unwrap_generation_output`)."""
    if isinstance(result, str):
        result = ast.literal_eval(result.strip())
    return float(result[0]) if isinstance(result, (tuple, list)) else float(result)


def process_results_mc(doc: Mapping[str, Any], results: Sequence[Any]) -> dict[str, float]:
    """`results`: one response per choice, in choice order (see `log_likelihood`)."""
    log_likelihoods = [log_likelihood(result) for result in results]
    best = max(range(len(log_likelihoods)), key=lambda index: log_likelihoods[index])  # first of ties
    return _scores(doc, list(doc["choices"])[best] == doc_to_target(doc))


def process_results_short(doc: Mapping[str, Any], results: Sequence[str]) -> dict[str, float]:
    """`results`: [the generated text]."""
    generated = results[0] if results else ""
    return _scores(doc, normalize_answer(generated or "") == normalize_answer(doc_to_target(doc)))
