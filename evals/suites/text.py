"""Offline text suites from the test splits of local corpora, written as lm-eval task files.

Three suites, each modelled on a standard lm-eval task so its metrics mean the same thing:
- `jargon_ppl`   (like wikitext): held-out documents, `loglikelihood_rolling`, word/byte perplexity
  and bits per byte;
- `jargon_cloze` (like lambada_openai): a passage without its final word, target " <word>",
  `loglikelihood`, acc (the word is the greedy continuation) and perplexity;
- `jargon_mc`    (like hellaswag): a sentence and the start of the next, its true ending among 4
  endings of other sentences, `multiple_choice`, acc and acc_norm.

Item builders are pure and seeded (same documents + seed -> same items on every machine). A suite
reads its corpora in order, the next only for the items the previous could not give (the Jargon
File's test split has ~380 cloze passages; the docstrings corpus gives the rest), and writes its
items in a seeded random order: lm-eval's `limit` takes the first N, so a limited run scores a
uniform random subset. Items of one document are correlated (neighbouring sentences of one entry).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import yaml

from pruning.errors import SuiteError
from pruning.files import write_text_atomic

T = TypeVar("T")

TEXT_TAG = "prunebench_text"
DEFAULT_SEED = 1234

# Sizes: 1,000 items give a binomial stderr of at most 0.016 (0.05 at the former 100 and 80 items),
# enough to tell pruning methods a few points apart. Token budget (SmolLM2 tokenizer): ppl ~9k,
# cloze ~65k, mc ~210k (every item scores 4 context+ending pairs); the default config evaluates
# the first 100 of each (eval.limit), the benchmark configs all of them.
PPL_DOCUMENTS = 48
PPL_MIN_WORDS = 80  # shorter entries are mostly a definition line: little context to score
PPL_MAX_WORDS = 240
CLOZE_ITEMS = 1000
CLOZE_MAX_CONTEXT_WORDS = 64
MC_ITEMS = 1000
MC_CHOICES = 4
MC_SENTENCE_WORDS = (10, 40)  # words in the sentence whose ending is asked for
MC_PREVIOUS_MAX_WORDS = 40  # the sentence before it joins the context when no longer than this

# --------------------------------------------------------------------------- text helpers (pure)

_ABBREVIATIONS = frozenset(
    "e.g. i.e. etc. vs. cf. esp. approx. al. Dr. Mr. Mrs. Ms. St. Jr. Sr. Prof. Inc. Corp. Ltd. Co. "
    "No. U.S. U.K. alt. abbrev. obs. Syn. n. adj. v. vt. vi. pl. p. pp. ca. Fig. Vol.".split()
)
_SENSE_NUMBER = re.compile(r"^\d+\.\s+")  # "2. Common abbrev for ..." (numbered senses of an entry)
_CLOSERS = ")]\"'”’"
_OPENERS = "([\"'“‘"
_TRAILING = _CLOSERS + ".!?,;:"
# A cloze target must be a content word, not a function word the model gets from syntax alone.
_STOPWORDS = frozenset(
    "that this these those there their them they then than with from have been were what when where which "
    "while will would could should about into over such also only some more most very just like does done "
    "here each other your yours ours much many make made even ever once upon onto".split()
)


def body_paragraphs(document: str) -> list[str]:
    """A corpus document's paragraphs without its title line, sense numbers stripped."""
    _title, *paragraphs = document.split("\n\n")
    return [_SENSE_NUMBER.sub("", paragraph) for paragraph in paragraphs]


def title_of(document: str) -> str:
    return document.split("\n\n", 1)[0]


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a paragraph: split after . ! ? (and closing quotes) before a capital, not after
    an abbreviation or an initial ("J. Random")."""
    words = paragraph.split()
    sentences: list[str] = []
    current: list[str] = []
    for index, word in enumerate(words):
        current.append(word)
        following = words[index + 1] if index + 1 < len(words) else ""
        core = word.rstrip(_CLOSERS)
        ends = core.endswith((".", "!", "?")) and core not in _ABBREVIATIONS and not re.fullmatch(r"[A-Z]\.", core)
        if ends and following and (following.lstrip(_OPENERS)[:1].isupper()):
            sentences.append(" ".join(current))
            current = []
    if current:
        sentences.append(" ".join(current))
    return sentences


def truncate_words(text: str, max_words: int) -> str:
    """At most `max_words` words, cut after the last sentence end that fits (else at a word);
    paragraph breaks are kept."""
    word_ends = [match.end() for match in re.finditer(r"\S+", text)]
    if len(word_ends) <= max_words:
        return text
    head = text[: word_ends[max_words - 1]]
    sentence_ends = [match.end() for match in re.finditer(r"[.!?][)\]\"'”’]*(?=\s)", head)]
    if head.endswith((".", "!", "?")):
        sentence_ends.append(len(head))
    return head[: sentence_ends[-1]] if sentence_ends and sentence_ends[-1] > len(head) // 2 else head


def _n_words(text: str) -> int:
    return len(text.split())


# --------------------------------------------------------------------------- item builders (pure)


def perplexity_items(
    documents: Sequence[str],
    n_documents: int = PPL_DOCUMENTS,
    min_words: int = PPL_MIN_WORDS,
    max_words: int = PPL_MAX_WORDS,
    seed: int = DEFAULT_SEED,
) -> list[dict[str, Any]]:
    """Held-out documents (title + paragraphs), long enough to give context, truncated to `max_words`."""
    eligible = [document for document in documents if _n_words(document) >= min_words]
    chosen = random.Random(seed).sample(eligible, min(n_documents, len(eligible)))
    return [{"title": title_of(document), "text": truncate_words(document, max_words)} for document in chosen]


def _cloze_target(sentence: str) -> str | None:
    """The sentence's final word when it is a content word: alphabetic, >= 4 letters, not a function word."""
    last = sentence.rstrip(_TRAILING).split(" ")[-1]
    if re.fullmatch(r"[A-Za-z]{4,}", last) and last.lower() not in _STOPWORDS and sentence.endswith((".", "!", "?")):
        return last
    return None


def _in_rounds(groups: Sequence[Sequence[T]], rng: random.Random) -> Iterator[tuple[int, T]]:
    """Every (group index, candidate), one per group in each round: groups in a seeded order, each
    group's candidates in a seeded order. The first n spread over as many documents as they can."""
    order = [index for index in rng.sample(range(len(groups)), len(groups)) if groups[index]]
    shuffled = {index: rng.sample(list(groups[index]), len(groups[index])) for index in order}
    for round_index in range(max((len(candidates) for candidates in shuffled.values()), default=0)):
        for index in order:
            if round_index < len(shuffled[index]):
                yield index, shuffled[index][round_index]


def cloze_passages(document: str, max_context_words: int = CLOZE_MAX_CONTEXT_WORDS) -> list[dict[str, Any]]:
    """Every LAMBADA-style item of one document: a passage ending in a sentence whose final word is
    removed. As in LAMBADA, the word must be inferable from the wider passage: it occurs earlier in
    the context, so a model that reads the context can get it and one that lost it cannot."""
    title = title_of(document)
    units = [(p, s) for p, paragraph in enumerate(body_paragraphs(document)) for s in split_sentences(paragraph)]
    passages = []
    for end, (_, sentence) in enumerate(units):
        target = _cloze_target(sentence)
        if target is None:
            continue
        start = end
        while start > 0 and sum(_n_words(s) for _, s in units[start - 1 : end + 1]) <= max_context_words:
            start -= 1
        passage = _join_units(units[start : end + 1])
        context = passage[: passage.rstrip(_TRAILING).rfind(target)].rstrip()
        if _n_words(passage) > max_context_words or _n_words(context) < 12 or context.endswith(target):
            continue
        if re.search(rf"\b{re.escape(target)}\b", context, flags=re.IGNORECASE):
            passages.append({"title": title, "context": context, "target": target})
    return passages


def cloze_items(
    documents: Sequence[str],
    n_items: int = CLOZE_ITEMS,
    max_context_words: int = CLOZE_MAX_CONTEXT_WORDS,
    seed: int = DEFAULT_SEED,
) -> list[dict[str, Any]]:
    """Up to `n_items` cloze items (`cloze_passages`), in rounds of one per document: a document
    gives a second passage only once every document has given its first. No two items are the same."""
    rng = random.Random(seed)
    items: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for _, item in _in_rounds([cloze_passages(document, max_context_words) for document in documents], rng):
        if len(items) == n_items:
            break
        if (item["context"], item["target"]) not in seen:
            seen.add((item["context"], item["target"]))
            items.append(item)
    return items


def _join_units(units: Sequence[tuple[int, str]]) -> str:
    """Sentences back into text: a space inside a paragraph, a blank line between paragraphs."""
    text = ""
    for index, (paragraph, sentence) in enumerate(units):
        if index:
            text += " " if paragraph == units[index - 1][0] else "\n\n"
        text += sentence
    return text


def _is_choice_sentence(sentence: str) -> bool:
    low, high = MC_SENTENCE_WORDS
    return (
        low <= _n_words(sentence) <= high
        and sentence[:1].isupper()
        and sentence.endswith((".", "!", "?"))
        and not re.search(r"[\[\]{}]|https?:|\bSee\b", sentence)
    )


def _halves(sentence: str) -> tuple[str, str]:
    """A sentence cut at its middle word: (start, ending)."""
    words = sentence.split(" ")
    middle = len(words) // 2
    return " ".join(words[:middle]), " ".join(words[middle:])


def choice_items(
    documents: Sequence[str],
    n_items: int = MC_ITEMS,
    n_choices: int = MC_CHOICES,
    max_previous_words: int = MC_PREVIOUS_MAX_WORDS,
    seed: int = DEFAULT_SEED,
) -> list[dict[str, Any]]:
    """HellaSwag-style items: the entry's title, the previous sentence and the first half of a
    sentence; the choices are its true second half and the second halves of sentences of other
    documents with about the same length in characters. Sentences are taken in rounds of one per
    document (as `cloze_items`); no two items are the same.

    Ending a sentence (as HellaSwag's ctx_b does) rather than picking the next whole sentence: the
    SmolLM2-135M scored 38% on whole next sentences (60 items: barely above chance) and 66% on
    endings (50% magnitude pruning: 41%), so endings leave room to see pruning damage."""
    rng = random.Random(seed)
    sentences_by_doc = [
        [split_sentences(paragraph) for paragraph in body_paragraphs(document)] for document in documents
    ]
    pool = sorted(
        {
            (len(ending), ending, d)
            for d, paragraphs in enumerate(sentences_by_doc)
            for sentences in paragraphs
            for sentence in sentences
            if _is_choice_sentence(sentence) and (ending := _halves(sentence)[1])
        }
    )
    positions_by_doc = [
        [(p, index) for p, sentences in enumerate(paragraphs) for index, sentence in enumerate(sentences) if _is_choice_sentence(sentence)]
        for paragraphs in sentences_by_doc
    ]
    items: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for doc_index, (paragraph, index) in _in_rounds(positions_by_doc, rng):
        if len(items) == n_items:
            break
        sentences = sentences_by_doc[doc_index][paragraph]
        start, ending = _halves(sentences[index])
        previous = sentences[index - 1] if index and _n_words(sentences[index - 1]) <= max_previous_words else ""
        title = title_of(documents[doc_index])
        context = f"{title}\n{previous} {start}".replace("\n ", "\n")
        if (context, ending) in seen:
            continue
        distractors = _distractors(pool, ending, doc_index, n_choices - 1, rng)
        if len(distractors) < n_choices - 1:
            continue
        seen.add((context, ending))
        label = rng.randrange(n_choices)
        choices = [*distractors]
        choices.insert(label, ending)
        items.append({"title": title, "context": context, "choices": choices, "label": label})
    return items


def _distractors(
    pool: Sequence[tuple[int, str, int]], ending: str, doc_index: int, n: int, rng: random.Random, nearest: int = 40
) -> list[str]:
    """`n` endings from distinct other documents, drawn among those nearest the true ending in length."""
    others = [(abs(length - len(ending)), sentence, d) for length, sentence, d in pool if d != doc_index and sentence != ending]
    others.sort(key=lambda item: (item[0], item[1]))
    shortlist = others[:nearest]
    rng.shuffle(shortlist)
    chosen: list[str] = []
    used_docs: set[int] = set()
    for _, sentence, d in shortlist:
        if d not in used_docs and sentence not in chosen:
            chosen.append(sentence)
            used_docs.add(d)
        if len(chosen) == n:
            break
    return chosen


# --------------------------------------------------------------------------- lm-eval task configs


def _dataset(data_file: Path, datasets_cache: Path) -> dict[str, Any]:
    """`json` loader on an absolute local file; its Arrow cache kept with ours, not in ~/.cache."""
    return {
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())}, "cache_dir": str(datasets_cache.resolve())},
        "test_split": "test",
    }


def perplexity_task(name: str, data_file: Path, datasets_cache: Path) -> dict[str, Any]:
    return {
        "tag": [TEXT_TAG],
        "task": name,
        **_dataset(data_file, datasets_cache),
        "output_type": "loglikelihood_rolling",
        "doc_to_text": "",
        "doc_to_target": "{{text}}",
        "should_decontaminate": True,
        "doc_to_decontamination_query": "{{text}}",
        "metric_list": [{"metric": "word_perplexity"}, {"metric": "byte_perplexity"}, {"metric": "bits_per_byte"}],
        "metadata": {"version": 1.0},
    }


def cloze_task(name: str, data_file: Path, datasets_cache: Path) -> dict[str, Any]:
    return {
        "tag": [TEXT_TAG],
        "task": name,
        **_dataset(data_file, datasets_cache),
        "output_type": "loglikelihood",
        "doc_to_text": "{{context}}",
        "doc_to_target": "{{' ' + target}}",
        "should_decontaminate": True,
        "doc_to_decontamination_query": "{{context}} {{target}}",
        "metric_list": [
            {"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False},
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


def choice_task(name: str, data_file: Path, datasets_cache: Path) -> dict[str, Any]:
    return {
        "tag": [TEXT_TAG],
        "task": name,
        **_dataset(data_file, datasets_cache),
        "output_type": "multiple_choice",
        "doc_to_text": "{{context}}",
        "doc_to_target": "{{label}}",
        "doc_to_choice": "choices",
        "metric_list": [
            {"metric": "acc", "aggregation": "mean", "higher_is_better": True},
            {"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True},
        ],
        "metadata": {"version": 1.0},
    }


# --------------------------------------------------------------------------- suites and writing


@dataclass(frozen=True)
class TextSuite:
    """A local suite: the corpora whose test splits it reads (in order of preference), how items are
    drawn, how many, and its lm-eval task config."""

    name: str
    corpora: tuple[str, ...]
    make_items: Callable[[Sequence[str], int], list[dict[str, Any]]]  # (documents, at most n) -> items
    task_config: Callable[[str, Path, Path], dict[str, Any]]
    size: int


TEXT_SUITES: tuple[TextSuite, ...] = (
    TextSuite("jargon_ppl", ("jargon",), perplexity_items, perplexity_task, PPL_DOCUMENTS),
    TextSuite("jargon_cloze", ("jargon", "docstrings"), cloze_items, cloze_task, CLOZE_ITEMS),
    TextSuite("jargon_mc", ("jargon", "docstrings"), choice_items, choice_task, MC_ITEMS),
)


def suite_items(suite: TextSuite, documents_by_corpus: Sequence[Sequence[str]], seed: int = DEFAULT_SEED) -> list[dict[str, Any]]:
    """The suite's items: from its first corpus, then from the next for what is missing, each marked
    with its corpus; in a seeded random order, so the first N (lm-eval's `limit`) are a fair subset."""
    items: list[dict[str, Any]] = []
    for corpus, documents in zip(suite.corpora, documents_by_corpus, strict=True):
        if len(items) == suite.size:
            break
        items += [{**item, "corpus": corpus} for item in suite.make_items(documents, suite.size - len(items))]
    random.Random(f"{seed}:{suite.name}:order").shuffle(items)
    return items


def write_suite(suite: TextSuite, documents_by_corpus: Sequence[Sequence[str]], out_dir: Path, datasets_cache: Path) -> Path:
    """`<name>.jsonl` and `<name>.yaml` in `out_dir` (each written whole, then renamed); returns the YAML."""
    items = suite_items(suite, documents_by_corpus)
    if not items:
        raise SuiteError(f"suite {suite.name}: the test splits of {', '.join(suite.corpora)} gave no items")
    out_dir.mkdir(parents=True, exist_ok=True)
    data_file = out_dir / f"{suite.name}.jsonl"
    write_text_atomic(data_file, "".join(json.dumps(item, ensure_ascii=False, sort_keys=True) + "\n" for item in items))
    config = suite.task_config(suite.name, data_file, datasets_cache)
    config_file = out_dir / f"{suite.name}.yaml"
    write_text_atomic(config_file, yaml.safe_dump(config, sort_keys=False, allow_unicode=True, width=1000))
    return config_file
