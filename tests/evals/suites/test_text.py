"""The offline text suites: valid lm-eval task files, well-formed items, deterministic builds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from evals.corpora import corpus_documents
from evals.suites import LOCAL_SUITES, SUITES, build_suites, expand_suites, local_suite_names
from evals.suites.text import (
    CLOZE_ITEMS,
    MC_CHOICES,
    MC_ITEMS,
    PPL_DOCUMENTS,
    PPL_MAX_WORDS,
    TEXT_TAG,
    choice_items,
    cloze_items,
    perplexity_items,
    split_sentences,
    truncate_words,
)

NAMES = ("jargon_ppl", "jargon_cloze", "jargon_mc")
OUTPUT_TYPES = {"jargon_ppl": "loglikelihood_rolling", "jargon_cloze": "loglikelihood", "jargon_mc": "multiple_choice"}


@pytest.fixture(scope="module")
def suites_dir(tmp_path_factory, cache_dir) -> Path:
    return build_suites([TEXT_TAG], tmp_path_factory.mktemp("suites"), cache_dir)


def items_of(suites_dir: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (suites_dir / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_registry_names():
    assert set(SUITES) == set(NAMES)
    assert LOCAL_SUITES == set(NAMES) | {TEXT_TAG}
    assert local_suite_names()[: len(NAMES) + 1] == sorted(NAMES) + [TEXT_TAG]
    assert expand_suites(["jargon_mc", TEXT_TAG, "hellaswag"]) == ["jargon_mc", "jargon_ppl", "jargon_cloze", "hellaswag"]


def test_task_files_are_valid_lm_eval_configs(suites_dir):
    for name in NAMES:
        config = yaml.safe_load((suites_dir / f"{name}.yaml").read_text())
        assert config["task"] == name and config["tag"] == [TEXT_TAG]
        assert config["dataset_path"] == "json" and config["test_split"] == "test"
        data_file = Path(config["dataset_kwargs"]["data_files"]["test"])
        assert data_file.is_absolute() and data_file == (suites_dir / f"{name}.jsonl").resolve()
        assert config["output_type"] == OUTPUT_TYPES[name]
        assert len(items_of(suites_dir, name)) > 0


def test_lm_eval_indexes_the_directory(suites_dir):
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=False, include_path=str(suites_dir))
    assert set(NAMES) <= set(manager.all_subtasks)
    assert TEXT_TAG in manager.all_tags


def test_default_sizes(suites_dir):
    assert len(items_of(suites_dir, "jargon_ppl")) == PPL_DOCUMENTS
    assert len(items_of(suites_dir, "jargon_cloze")) == CLOZE_ITEMS
    assert len(items_of(suites_dir, "jargon_mc")) == MC_ITEMS


def test_perplexity_documents_are_truncated_held_out_text(suites_dir, cache_dir):
    items = items_of(suites_dir, "jargon_ppl")
    assert len({item["title"] for item in items}) == len(items)
    assert all(len(item["text"].split()) <= PPL_MAX_WORDS for item in items)
    calibration_titles = {text.split("\n\n", 1)[0] for text in corpus_documents("jargon", "calibration", cache_dir)}
    assert not {item["title"] for item in items} & calibration_titles


def test_multiple_choice_items(suites_dir):
    for item in items_of(suites_dir, "jargon_mc"):
        choices = item["choices"]
        assert len(choices) == MC_CHOICES and len(set(choices)) == MC_CHOICES
        assert 0 <= item["label"] < MC_CHOICES
        assert all(choice and not choice[0].isspace() for choice in choices)  # lm-eval adds the " " itself
        assert not item["context"].endswith(choices[item["label"]])


def test_gold_positions_are_spread(suites_dir):
    labels = [item["label"] for item in items_of(suites_dir, "jargon_mc")]
    assert set(labels) == set(range(MC_CHOICES))


def test_cloze_targets_are_removed_content_words(suites_dir):
    for item in items_of(suites_dir, "jargon_cloze"):
        target, context = item["target"], item["context"]
        assert re.fullmatch(r"[A-Za-z]{4,}", target)
        assert not context.rstrip().endswith(target)
        # anchored in the passage, as LAMBADA's targets are: the word occurs earlier in the context
        assert re.search(rf"\b{target}\b", context, flags=re.IGNORECASE)


def test_build_is_deterministic(suites_dir, tmp_path, cache_dir):
    again = build_suites(list(NAMES), tmp_path, cache_dir)
    for name in NAMES:
        assert (again / f"{name}.jsonl").read_bytes() == (suites_dir / f"{name}.jsonl").read_bytes()
        first, second = (yaml.safe_load((d / f"{name}.yaml").read_text()) for d in (suites_dir, again))
        first["dataset_kwargs"]["data_files"] = second["dataset_kwargs"]["data_files"] = None
        assert first == second


def test_build_writes_only_what_is_asked(tmp_path, cache_dir):
    out = build_suites(["jargon_cloze", "hellaswag"], tmp_path / "some", cache_dir)
    assert sorted(p.name for p in out.iterdir()) == ["jargon_cloze.jsonl", "jargon_cloze.yaml"]
    assert build_suites([], tmp_path / "none", cache_dir).is_dir()


def test_item_builders_take_sizes_and_seeds(cache_dir):
    documents = corpus_documents("jargon", "test", cache_dir)
    assert len(perplexity_items(documents, n_documents=5)) == 5
    assert len(cloze_items(documents, n_items=7)) == 7
    assert len(choice_items(documents, n_items=9)) == 9
    assert choice_items(documents, n_items=9, seed=1) != choice_items(documents, n_items=9, seed=2)
    assert cloze_items(documents, n_items=9, seed=3) == cloze_items(documents, n_items=9, seed=3)


def test_split_sentences_keeps_abbreviations_and_initials():
    paragraph = "J. Random Hacker wrote it, e.g. in Lisp. It worked! Did it? “Yes.” Then (i.e. later) it broke."
    assert split_sentences(paragraph) == [
        "J. Random Hacker wrote it, e.g. in Lisp.",
        "It worked!",
        "Did it?",
        "“Yes.”",
        "Then (i.e. later) it broke.",
    ]


def test_truncate_words_cuts_at_a_sentence_end():
    text = "One two three. Four five six seven. Eight nine ten eleven twelve."
    assert truncate_words(text, 100) == text
    assert truncate_words(text, 9) == "One two three. Four five six seven."
    assert truncate_words("a b c d e f", 4) == "a b c d"
    assert truncate_words("Aa bb.\n\nCc dd ee ff gg.\n\nHh ii.", 5) == "Aa bb.\n\nCc dd ee"
    assert truncate_words("Aa bb cc.\n\nDd ee. Ff gg hh ii jj.", 6) == "Aa bb cc.\n\nDd ee."
