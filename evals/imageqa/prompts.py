"""The text a model sees for an image-QA record, and the form its answer takes after it.

One place for both, used by the lmms-eval task files (`doc_to_text`, the MC continuations), by the
toy VLM's training and by multimodal calibration, so all three score the same strings. The image
placeholder is not part of it: the model's processor or chat template adds that
(`evals.vlm_prompt`).
"""

from __future__ import annotations

import random
import re
from typing import Any, Mapping

QUESTION_PREFIX = "Question:"
ANSWER_CUE = "Answer:"
# lmms-eval joins context and choice with the task's target_delimiter: the same space as below.
ANSWER_DELIMITER = " "


def question_text(record: Mapping[str, Any] | Any) -> str:
    """`Question: <question> Answer:` for a record (a JSONL dict, an lmms-eval doc or an ImageQARecord)."""
    question = record["question"] if isinstance(record, Mapping) else record.question
    return f"{QUESTION_PREFIX} {question} {ANSWER_CUE}"


def answer_text(answer: str) -> str:
    """The continuation that follows `question_text`: `" red"`."""
    return f"{ANSWER_DELIMITER}{answer}"


def prompt_tokens(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks: how a word-level tokenizer splits the text."""
    return re.findall(r"\w+|[^\w\s]", text.lower())


def conversation_turns(record: Any, image_size: int, max_turns: int, rng: random.Random) -> tuple[tuple[str, str], ...]:
    """Training turns for a record: its own question and up to `max_turns - 1` others its scene
    answers (`questions.scene_questions`), in a seeded order, as (question_text, answer_text) pairs.

    A digit image (no scene) gets its own question only."""
    from evals.imageqa.questions import scene_questions

    others = [(question, answer) for _, question, answer in scene_questions(record.objects, image_size) if question != record.question]
    chosen = [(record.question, record.answer), *rng.sample(others, min(len(others), max_turns - 1))]
    rng.shuffle(chosen)
    return tuple((question_text({"question": question}), answer_text(answer)) for question, answer in chosen)


def training_conversations(
    records: list, n_examples: int, max_turns: int, seed: int, type_weights: Mapping[str, float] | None = None
) -> list[tuple[Any, tuple[tuple[str, str], ...]]]:
    """(image, conversation turns) for `n_examples` records sampled (seeded) from a training split:
    what the toy VLM trains on. The sample and the turns each come from their own seeded stream.

    `type_weights` (question type -> weight, default 1) reweights the mix instead: every question
    each training image answers (its own and the others its scene answers, e.g. "What shape is
    shown?" of a colour-question image) is a candidate (image, question) pair, and `n_examples`
    pairs are drawn without replacement with probability proportional to their type's weight
    (Efraimidis-Spirakis keys), one question per example.
    """
    from evals.imageqa.records import load_image

    if type_weights:
        return _reweighted_pairs(records, n_examples, max_turns, seed, type_weights)
    chosen = random.Random(seed).sample(records, min(n_examples, len(records)))
    turns_rng = random.Random(f"{seed}:turns")
    pairs = []
    for record in chosen:
        image = load_image(record)
        pairs.append((image, conversation_turns(record, image.width, max_turns, turns_rng)))
    return pairs


def _reweighted_pairs(records: list, n_examples: int, max_turns: int, seed: int, type_weights: Mapping[str, float]) -> list:
    from evals.imageqa.questions import scene_questions
    from evals.imageqa.records import load_image

    if max_turns != 1:
        raise ValueError("type_weights draws one question per example; use it with max_turns=1")
    if any(weight <= 0 for weight in type_weights.values()):
        raise ValueError(f"type_weights must be positive, got {dict(type_weights)}")
    pools: dict[str, list[tuple[int, str, str]]] = {}
    for index, record in enumerate(records):
        asked = [(record.qtype, record.question, record.answer)]
        if record.objects:
            asked += [found for found in scene_questions(record.objects, load_image(record).width) if found[1] != record.question]
        for qtype, question, answer in asked:
            pools.setdefault(qtype, []).append((index, question, answer))
    unknown = sorted(set(type_weights) - set(pools))
    if unknown:
        raise ValueError(f"type_weights names question types {unknown}; the split has {sorted(pools)}")
    # each type's share of the examples is its weight's share; a type whose pool runs out passes the rest on
    weights = {qtype: type_weights.get(qtype, 1.0) for qtype in sorted(pools)}
    quota, left = {}, n_examples
    for qtype in sorted(weights, key=lambda t: len(pools[t]) / weights[t]):
        share = round(left * weights[qtype] / sum(weights[t] for t in weights if t not in quota))
        quota[qtype] = min(share, len(pools[qtype]))
        left -= quota[qtype]
    rng = random.Random(f"{seed}:reweighted")
    chosen = [pair for qtype in sorted(pools) for pair in rng.sample(pools[qtype], quota[qtype])]
    rng.shuffle(chosen)
    return [(load_image(records[index]), ((question_text({"question": question}), answer_text(answer)),)) for index, question, answer in chosen]
