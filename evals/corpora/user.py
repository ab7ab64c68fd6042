"""The user's own calibration data: a text file, a folder of text files, JSONL or Parquet records, a
dataset in the local Hugging Face cache, or image-question-answer records for a vision-language model.

Papers calibrate on C4 or WikiText, practitioners on their own domain's text. Such a corpus is
calibration data as a whole (nothing of it is evaluated), read in a fixed order, and fails with one
line naming the problem: a missing file, a record without the text field, no text at all. Nothing is
downloaded: a Hugging Face dataset must already be in the local cache.

Each source has a fingerprint of its contents (file digests; the cached dataset's revision and
fingerprint), which the run writes into the calibration spec (`tasks.calibration.fingerprinted`), so
editing the data recomputes the calibration set and everything computed from it.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from evals.corpora import CORPORA, corpus_documents
from evals.imageqa.records import decode_image
from evals.suites import IMAGE_CORPORA
from pruning.errors import ConfigError, PrunebenchError, first_line
from pruning.files import file_digest
from pruning.specs import RECORD_SUFFIXES, CalibrationSpec

# A user corpus is read up to this many characters per calibration token (n_samples x seq_len): C4's
# first shard alone is ~800 MB of text, which would take minutes to tokenise for 128 windows. A
# token is ~4 characters of English, so this leaves the windows ~4x the text they need. The built-in
# corpora are small and read whole, as they always were.
CHARACTERS_READ_PER_TOKEN = 16
IMAGE_QA_FIELDS = ("image", "question", "answer")


@dataclass(frozen=True)
class ImageQuestion:
    """One image-question-answer record of a user's JSONL; the image path as resolved against the file's folder."""

    image_path: Path
    question: str
    answer: str


def is_builtin(calibration: CalibrationSpec) -> bool:
    return calibration.corpus in CORPORA or calibration.corpus in IMAGE_CORPORA


def takes_images(calibration: CalibrationSpec) -> bool:
    """Whether the calibration is image-question-answer pairs (for a VLM), not text."""
    return calibration.corpus in IMAGE_CORPORA or calibration.kind == "image_qa"


def calibration_documents(calibration: CalibrationSpec, cache_dir: Path) -> list[str]:
    """The texts a text calibration draws its windows from: a built-in corpus's calibration split, or the
    user's corpus up to `CHARACTERS_READ_PER_TOKEN` characters per calibration token, in order."""
    if is_builtin(calibration):
        _builtin_takes_no_options(calibration)
        return corpus_documents(calibration.corpus, "calibration", Path(cache_dir))
    budget = calibration.n_samples * calibration.seq_len * CHARACTERS_READ_PER_TOKEN
    documents = list(_within(_user_documents(calibration), budget))
    if not any(text.strip() for text in documents):
        raise ConfigError(f"calibration.corpus {calibration.corpus!r}: no text ({len(documents)} document(s), all empty)")
    return documents


def corpus_fingerprint(calibration: CalibrationSpec) -> str | None:
    """A digest of the user's corpus's contents (16 hex digits); None for a built-in corpus, whose
    contents the code that builds it decides (its stages are keyed on that code)."""
    if is_builtin(calibration):
        return None
    if calibration.kind == "image_qa":
        pairs = image_questions(Path(calibration.corpus))
        parts = [file_digest(Path(calibration.corpus).expanduser())] + [file_digest(pair.image_path) for pair in pairs]
        return _digest(parts)
    path = calibration.local_path
    if path is None:
        return hub_dataset(calibration)[1]
    _exists(path)
    if path.is_dir():
        return _digest(f"{file.relative_to(path).as_posix()} {file_digest(file)}" for file in folder_files(path))
    return file_digest(path)


# ---------------------------------------------------------------------------- local files


def folder_files(folder: Path) -> list[Path]:
    """The files under `folder`, sorted by their path relative to it; hidden ones (.git, .DS_Store) left out."""
    files = [path for path in folder.rglob("*") if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)]
    return sorted(files, key=lambda path: path.relative_to(folder).as_posix())


def record_texts(path: Path, field: str) -> Iterator[str]:
    """The `field` of every record of a JSONL (one object a line) or Parquet file, in file order."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as parquet

        try:
            names = parquet.read_schema(path).names
        except Exception as error:
            raise ConfigError(f"calibration.corpus {path}: not a Parquet file ({type(error).__name__}: {error})") from None
        if field not in names:
            raise _no_field(str(path), field, names)
        for number, text in enumerate(parquet.read_table(path, columns=[field]).column(field).to_pylist()):
            yield _text(text, f"{path} row {number}", field)
        return
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                record = _json_record(line, f"{path}:{number}")
                if field not in record:
                    raise _no_field(f"{path}:{number}", field, record)
                yield _text(record[field], f"{path}:{number}", field)


def image_questions(path: Path) -> list[ImageQuestion]:
    """The records of a JSONL of {image, question, answer} (image paths relative to the file's folder)."""
    path = _exists(Path(path).expanduser())
    pairs = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where, record = f"{path}:{number}", _json_record(line, f"{path}:{number}")
            missing = [name for name in IMAGE_QA_FIELDS if not isinstance(record.get(name), str) or not record[name].strip()]
            if missing:
                raise ConfigError(f"calibration.corpus {where}: no {', '.join(map(repr, missing))} text "
                                  "(each record holds an image path, a question and an answer)")
            image = (path.parent / record["image"]).resolve()
            if not image.is_file():
                raise ConfigError(f"calibration.corpus {where}: image {image} does not exist")
            pairs.append(ImageQuestion(image, record["question"], record["answer"]))
    if not pairs:
        raise ConfigError(f"calibration.corpus {path}: no record")
    return pairs


def load_question_image(pair: ImageQuestion):
    """The record's image as RGB, or one line naming the file."""
    try:
        return decode_image(pair.image_path)
    except PrunebenchError as error:
        raise ConfigError(f"calibration.corpus: {error}") from None


# ---------------------------------------------------------------------------- the Hugging Face cache


def hub_dataset(calibration: CalibrationSpec):
    """(the dataset's split, a fingerprint of it) from the local Hugging Face cache, never the network.

    Offline, `datasets` finds a dataset by name only among the datasets it prepared before (what an
    online `load_dataset` wrote under ~/.cache/huggingface/datasets: datasets/load.py,
    `CachedDatasetModuleFactory`), which is tried first. A repository fetched with `hf download
    --repo-type dataset` lives in the hub cache instead (datasets--owner--name/snapshots/<commit>),
    read next as a local folder, its README's configurations included. The revision read (the
    prepared copy's folder, the snapshot's commit) and the dataset's own fingerprint make its fingerprint."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(name, "1")  # before `datasets` reads them, where it is imported first
    import datasets
    from huggingface_hub import snapshot_download

    from pruning.models.sources import datasets_cache_dir, hub_cache_dir

    name = calibration.corpus
    # both caches as the environment names them now: the libraries read it once, when imported
    options = dict(name=calibration.config, split=calibration.split, data_files=calibration.data_files,
                   cache_dir=str(datasets_cache_dir()))  # fmt: skip
    failures = []
    offline, datasets.config.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE, True  # even where HF_HUB_OFFLINE=0 lets a harness reach the Hub
    try:
        try:
            dataset = datasets.load_dataset(name, **options)
            revision = Path(dataset.cache_files[0]["filename"]).parent.name if dataset.cache_files else "prepared"
        except Exception as error:
            failures.append(f"prepared: {type(error).__name__}: {first_line(error)}")
            try:
                snapshot = Path(snapshot_download(name, repo_type="dataset", cache_dir=hub_cache_dir(), local_files_only=True))
            except Exception as error:  # LocalEntryNotFoundError and friends: no snapshot of it either
                raise ConfigError(_not_cached(calibration)) from error
            try:
                dataset, revision = datasets.load_dataset(str(snapshot), **options), snapshot.name
            except Exception as error:
                raise ConfigError(f"calibration.corpus {name!r}: the hub cache's snapshot {snapshot} cannot be read as asked "
                                  f"({type(error).__name__}: {first_line(error)}); nor a prepared copy ({failures[0]})") from None  # fmt: skip
    finally:
        datasets.config.HF_HUB_OFFLINE = offline
    if calibration.text_field not in dataset.column_names:
        raise _no_field(repr(name), calibration.text_field, dataset.column_names)
    return dataset, _digest([name, revision, dataset._fingerprint, str(len(dataset))])


def _not_cached(calibration: CalibrationSpec) -> str:
    from pruning.models.sources import datasets_cache_dir, hub_cache_dir

    name = calibration.corpus
    config = f", {calibration.config!r}" if calibration.config else ""
    files = f", data_files={calibration.data_files!r}" if calibration.data_files else ""
    return (
        f"calibration.corpus {name!r} is no built-in corpus ({', '.join(sorted([*CORPORA, *IMAGE_CORPORA]))}), no local file or "
        f"folder, and no dataset in the local Hugging Face caches ({datasets_cache_dir()}, {hub_cache_dir()}); on a "
        f"machine with network run `hf download --repo-type dataset {name}` (or python -c \"import datasets; "
        f"datasets.load_dataset({name!r}{config}, split={calibration.split!r}{files})\") and copy the cache here, "
        f"or set calibration.corpus to a local file"
    )


# ---------------------------------------------------------------------------- shared


def _user_documents(calibration: CalibrationSpec) -> Iterator[str]:
    if calibration.kind == "image_qa":
        raise ConfigError(f"calibration.corpus {calibration.corpus!r} holds image-question-answer records, not text")
    path = calibration.local_path
    if path is None:
        dataset = hub_dataset(calibration)[0]
        for start in range(0, len(dataset), 1000):  # a slice at a time: a C4 shard has 356k rows
            for number, text in enumerate(dataset[start : start + 1000][calibration.text_field], start=start):
                yield _text(text, f"{calibration.corpus!r} row {number}", calibration.text_field)
        return
    _exists(path)
    if path.is_dir():
        files = folder_files(path)
        if not files:
            raise ConfigError(f"calibration.corpus {path}: an empty folder")
        yield from (_read_text(file) for file in files)
    elif path.suffix in RECORD_SUFFIXES:
        yield from record_texts(path, calibration.text_field)
    else:
        yield _read_text(path)


def _within(documents: Iterable[str], budget: int) -> Iterator[str]:
    """Documents in order until their characters reach `budget`; the last one cut there."""
    for text in documents:
        if budget <= 0:
            return
        yield text[:budget]
        budget -= len(text) + 2  # the "\n\n" that joins documents


def _builtin_takes_no_options(calibration: CalibrationSpec) -> None:
    """The spec cannot tell a built-in corpus from a Hugging Face dataset by name (`CalibrationSpec.local_path`): here it can."""
    given = sorted({"text_field", "config", "split", "data_files"} & calibration.model_fields_set)
    if given:
        raise ConfigError(f"calibration.{given[0]}: {calibration.corpus!r} is a built-in corpus; {given[0]} is an option of your own data")


def _no_field(where: str, field: str, fields: Iterable[str]) -> ConfigError:
    return ConfigError(f"calibration.corpus {where}: no field {field!r} (fields: {', '.join(fields)}); set calibration.text_field")


def _text(value, where: str, field: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"calibration.corpus {where}: field {field!r} holds {type(value).__name__}, not text")
    return value


def _json_record(line: str, where: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise ConfigError(f"calibration.corpus {where}: not a JSON record ({error})") from None
    if not isinstance(record, dict):
        raise ConfigError(f"calibration.corpus {where}: not a JSON object")
    return record


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"calibration.corpus {path}: not UTF-8 text (byte {error.object[error.start]:#04x} at position {error.start})") from None


def _exists(path: Path) -> Path:
    if not path.exists():
        raise ConfigError(f"calibration.corpus {path}: no such file or folder")
    return path


def _digest(parts: Iterable[str]) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
