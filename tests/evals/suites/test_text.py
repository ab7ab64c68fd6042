"""The offline text suites: valid lm-eval task files, well-formed items, deterministic builds."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
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
    TextSuite,
    _in_rounds,
    choice_items,
    cloze_items,
    cloze_passages,
    perplexity_items,
    split_sentences,
    suite_items,
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
    assert CLOZE_ITEMS >= 1000 and MC_ITEMS >= 1000  # binomial stderr <= 0.016: methods a few points apart are told apart
    assert len(items_of(suites_dir, "jargon_ppl")) == PPL_DOCUMENTS
    assert len(items_of(suites_dir, "jargon_cloze")) == CLOZE_ITEMS
    assert len(items_of(suites_dir, "jargon_mc")) == MC_ITEMS


def test_no_item_twice_but_several_per_document(suites_dir):
    keys = {
        "jargon_cloze": lambda item: (item["context"], item["target"]),
        "jargon_mc": lambda item: (item["context"], item["choices"][item["label"]]),
    }
    for name, key in keys.items():
        items = items_of(suites_dir, name)
        assert len({key(item) for item in items}) == len(items)
        per_document = Counter((item["corpus"], item["title"]) for item in items)
        assert max(per_document.values()) > 1  # different sentences of one entry
        assert len(per_document) > len(items) / 2  # ... but spread over documents first


def test_the_jargon_file_first_then_docstrings(suites_dir, cache_dir):
    jargon = corpus_documents("jargon", "test", cache_dir)
    cloze = Counter(item["corpus"] for item in items_of(suites_dir, "jargon_cloze"))
    # every cloze passage the Jargon File's test split has, the docstrings the rest
    assert cloze["jargon"] == len(cloze_items(jargon, n_items=CLOZE_ITEMS)) < CLOZE_ITEMS
    assert cloze["docstrings"] == CLOZE_ITEMS - cloze["jargon"]
    # the Jargon File has sentences enough for the multiple-choice suite
    assert Counter(item["corpus"] for item in items_of(suites_dir, "jargon_mc")) == {"jargon": MC_ITEMS}


def test_items_come_from_test_splits_only(suites_dir, cache_dir):
    held_in = {
        corpus: {text.split("\n\n", 1)[0] for split in ("calibration", "train") for text in corpus_documents(corpus, split, cache_dir)}
        for corpus in ("jargon", "docstrings")
    }
    for name in NAMES:
        for item in items_of(suites_dir, name):
            assert item["title"] not in held_in[item["corpus"]]


def test_item_order_is_a_seeded_shuffle(suites_dir):
    """lm-eval's `limit` takes the first N: they must be a fair subset, not the first corpus's items."""
    cloze = items_of(suites_dir, "jargon_cloze")
    first = Counter(item["corpus"] for item in cloze[:100])
    assert 20 <= first["jargon"] <= 60  # 38% of the suite is the Jargon File's
    labels = Counter(item["label"] for item in items_of(suites_dir, "jargon_mc")[:100])
    assert set(labels) == set(range(MC_CHOICES))


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


def test_in_rounds_gives_one_per_group_before_a_second():
    groups = [["a1", "a2", "a3"], [], ["b1"], ["c1", "c2"]]
    drawn = list(_in_rounds(groups, random.Random(0)))
    assert sorted(drawn) == [(0, "a1"), (0, "a2"), (0, "a3"), (2, "b1"), (3, "c1"), (3, "c2")]
    assert {index for index, _ in drawn[:3]} == {0, 2, 3}
    assert {index for index, _ in drawn[3:5]} == {0, 3}
    assert drawn == list(_in_rounds(groups, random.Random(0)))


LONG_ENTRY = (
    "kluge: n.\n\n"
    "A kluge is a clever programming trick intended to solve a particular nasty case in an expedient way. "
    "Hackers say that the hack works, but nobody should trust the kluge. "
    "The word is also used of hardware, where a wire soldered on by hand to fix a bad board is a kluge.\n\n"
    "Every hacker has written a kluge at some time, and every one of them promised to replace the kluge."
)


def test_a_document_gives_one_item_per_passage():
    passages = cloze_passages(LONG_ENTRY)
    assert [passage["target"] for passage in passages] == ["kluge"] * 3
    assert len({passage["context"] for passage in passages}) == 3
    other = LONG_ENTRY.replace("kluge", "hack")
    assert len(cloze_items([LONG_ENTRY, other], n_items=10)) == 6
    first_round = cloze_items([LONG_ENTRY, other], n_items=2)
    assert sorted(item["target"] for item in first_round) == ["hack", "kluge"]  # one per document first
    assert len(cloze_items([LONG_ENTRY, LONG_ENTRY], n_items=10)) == 3  # the same passage twice is one item


def test_suite_items_fill_from_the_next_corpus_and_shuffle():
    suite = TextSuite("toy_cloze", ("first", "second"), cloze_items, None, 3)
    other = LONG_ENTRY.replace("kluge", "hack")
    items = suite_items(suite, [[LONG_ENTRY], [other]])
    assert len(items) == 3
    assert Counter(item["corpus"] for item in items) == {"first": 3}
    items = suite_items(suite, [[LONG_ENTRY[: LONG_ENTRY.index("The word")]], [other]])  # one passage short
    assert Counter(item["corpus"] for item in items) == {"first": 1, "second": 2}
    assert items == suite_items(suite, [[LONG_ENTRY[: LONG_ENTRY.index("The word")]], [other]])
    orders = {tuple(item["context"] for item in suite_items(suite, [[LONG_ENTRY], [other]], seed=seed)) for seed in range(8)}
    assert len(orders) > 1


def test_item_builders_take_sizes_and_seeds(cache_dir):
    documents = corpus_documents("jargon", "test", cache_dir)
    assert len(perplexity_items(documents, n_documents=5)) == 5
    assert len(cloze_items(documents, n_items=7)) == 7
    assert len(choice_items(documents, n_items=9)) == 9
    assert choice_items(documents, n_items=9, seed=1) != choice_items(documents, n_items=9, seed=2)
    assert cloze_items(documents, n_items=9, seed=3) == cloze_items(documents, n_items=9, seed=3)
    assert choice_items(documents, n_items=9, seed=3) == choice_items(documents, n_items=9, seed=3)
    assert cloze_items(documents, n_items=9, seed=1) != cloze_items(documents, n_items=9, seed=2)


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
