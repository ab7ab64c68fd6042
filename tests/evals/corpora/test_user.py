"""The user's own calibration data: each source read in its order, its errors one line, its fingerprint its contents."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evals.corpora.user import calibration_documents, corpus_fingerprint, image_questions
from pruning.errors import ConfigError
from pruning.files import file_digest
from pruning.specs import CalibrationSpec

DOCUMENTS = ["First document, about pruning.", "Second one: sparsity.", "Third, short."]


def spec(corpus, **options) -> CalibrationSpec:
    return CalibrationSpec(corpus=str(corpus), n_samples=2, seq_len=4, **options)


def jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


# ---------------------------------------------------------------------------- local files


def test_a_text_file_is_one_document_and_its_digest_its_fingerprint(tmp_path):
    path = tmp_path / "domain.txt"
    path.write_text("\n\n".join(DOCUMENTS))
    assert calibration_documents(spec(path), tmp_path) == ["\n\n".join(DOCUMENTS)]
    assert corpus_fingerprint(spec(path)) == file_digest(path)
    path.write_text("edited")
    assert corpus_fingerprint(spec(path)) == file_digest(path)


def test_a_folder_is_its_files_sorted_by_path_hidden_ones_left_out(tmp_path):
    folder = tmp_path / "docs"
    (folder / "b").mkdir(parents=True)
    (folder / "b" / "one.txt").write_text(DOCUMENTS[1])
    (folder / "a.txt").write_text(DOCUMENTS[0])
    (folder / "c.md").write_text(DOCUMENTS[2])
    (folder / ".hidden").write_text("not calibration")
    assert calibration_documents(spec(folder), tmp_path) == DOCUMENTS
    before = corpus_fingerprint(spec(folder))
    assert corpus_fingerprint(spec(folder)) == before  # the same contents, the same fingerprint
    (folder / "c.md").write_text("Third, edited.")
    edited = corpus_fingerprint(spec(folder))
    (folder / "c.md").rename(folder / "d.md")  # the same bytes under another name: another corpus
    assert len({before, edited, corpus_fingerprint(spec(folder))}) == 3


def test_jsonl_and_parquet_records_give_their_text_field_in_order(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = jsonl(tmp_path / "records.jsonl", [{"body": text, "id": index} for index, text in enumerate(DOCUMENTS)])
    assert calibration_documents(spec(records, text_field="body"), tmp_path) == DOCUMENTS
    table = tmp_path / "records.parquet"
    pq.write_table(pa.table({"text": DOCUMENTS, "id": [0, 1, 2]}), table)
    assert calibration_documents(spec(table), tmp_path) == DOCUMENTS
    assert corpus_fingerprint(spec(table)) == file_digest(table)


def test_each_problem_of_the_data_is_one_line_naming_it(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = jsonl(tmp_path / "records.jsonl", [{"text": "fine"}, {"body": "no text field"}])
    with pytest.raises(ConfigError, match=rf"^calibration.corpus {records}:2: no field 'text' \(fields: body\); set calibration.text_field$"):
        calibration_documents(spec(records), tmp_path)
    table = tmp_path / "records.parquet"
    pq.write_table(pa.table({"body": DOCUMENTS}), table)
    with pytest.raises(ConfigError, match=r"no field 'text' \(fields: body\); set calibration.text_field$"):
        calibration_documents(spec(table), tmp_path)
    numbers = jsonl(tmp_path / "numbers.jsonl", [{"text": 3}])
    with pytest.raises(ConfigError, match=r"numbers.jsonl:1: field 'text' holds int, not text$"):
        calibration_documents(spec(numbers), tmp_path)
    (tmp_path / "blank.txt").write_text(" \n\n ")
    with pytest.raises(ConfigError, match=r"^calibration.corpus '.*blank.txt': no text \(1 document\(s\), all empty\)$"):
        calibration_documents(spec(tmp_path / "blank.txt"), tmp_path)
    with pytest.raises(ConfigError, match=r"^calibration.corpus .*missing.txt: no such file or folder$"):
        calibration_documents(spec(tmp_path / "missing.txt"), tmp_path)
    (tmp_path / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1.txt: not UTF-8 text \(byte 0xe9 at position 3\)$"):
        calibration_documents(spec(tmp_path / "latin1.txt"), tmp_path)


def test_a_big_corpus_is_read_up_to_sixteen_characters_per_calibration_token(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("x" * 1000)
    (text,) = calibration_documents(spec(path), tmp_path)  # 2 x 4 tokens
    assert text == "x" * (2 * 4 * 16)
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(10):
        (folder / f"{index}.txt").write_text("y" * 50)
    documents = calibration_documents(spec(folder), tmp_path)  # 128 characters: 50, "\n\n", 50, "\n\n", 24
    assert [len(text) for text in documents] == [50, 50, 24]


def test_a_builtin_corpus_is_read_whole_and_has_no_fingerprint(cache_dir):
    from evals.corpora import corpus_documents

    assert calibration_documents(spec("jargon"), cache_dir) == corpus_documents("jargon", "calibration", cache_dir)
    assert corpus_fingerprint(spec("jargon")) is None
    with pytest.raises(ConfigError, match=r"^calibration.text_field: 'jargon' is a built-in corpus; text_field is an option of your own data$"):
        calibration_documents(spec("jargon", text_field="body"), cache_dir)


# ---------------------------------------------------------------------------- image-question-answer records


def test_image_question_records_resolve_images_beside_the_file_and_fingerprint_them(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    Image.new("RGB", (4, 4), "red").save(tmp_path / "images" / "a.png")
    records = jsonl(tmp_path / "vqa.jsonl", [{"image": "images/a.png", "question": "What colour?", "answer": "red"}])
    calibration = spec(records, kind="image_qa")
    (pair,) = image_questions(records)
    assert (pair.image_path, pair.question, pair.answer) == ((tmp_path / "images" / "a.png").resolve(), "What colour?", "red")
    before = corpus_fingerprint(calibration)
    Image.new("RGB", (4, 4), "blue").save(tmp_path / "images" / "a.png")
    assert corpus_fingerprint(calibration) != before  # an edited image is edited calibration data
    jsonl(records, [{"image": "images/b.png", "question": "What colour?", "answer": "red"}])
    with pytest.raises(ConfigError, match=r"vqa.jsonl:1: image .*b.png does not exist$"):
        image_questions(records)
    jsonl(records, [{"image": "images/a.png", "question": "What colour?"}])
    with pytest.raises(ConfigError, match=r"vqa.jsonl:1: no 'answer' text \(each record holds an image path, a question and an answer\)$"):
        image_questions(records)


# ---------------------------------------------------------------------------- the Hugging Face cache


@pytest.fixture
def hf_caches(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """Empty hub and datasets caches of this test's own, under an HF_HOME set after both libraries were
    imported (they read it once, at import: the caches must still be found from it at call time)."""
    import datasets  # noqa: F401 - imported first on purpose
    import huggingface_hub  # noqa: F401

    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_DATASETS_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return tmp_path / "hf" / "hub", tmp_path / "hf" / "datasets"


def hub_snapshot(hub: Path, repo_id: str, files: dict[str, str], commit: str) -> Path:
    """A dataset repository as `hf download --repo-type dataset` leaves it: snapshots/<commit>/..., refs/main."""
    repo = hub / f"datasets--{repo_id.replace('/', '--')}"
    for name, text in files.items():
        (repo / "snapshots" / commit / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / "snapshots" / commit / name).write_text(text)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


TINY_README = """---
configs:
- config_name: en
  data_files:
  - split: train
    path: en/train.jsonl
- config_name: de
  data_files:
  - split: train
    path: de/train.jsonl
---
A tiny corpus.
"""


def test_a_hub_snapshot_is_read_by_name_config_and_split_offline(hf_caches):
    hub, _ = hf_caches
    english = [{"text": text} for text in DOCUMENTS]
    files = {"README.md": TINY_README, "en/train.jsonl": "".join(json.dumps(r) + "\n" for r in english),
             "de/train.jsonl": json.dumps({"text": "Ein Dokument."}) + "\n"}  # fmt: skip
    hub_snapshot(hub, "user/tiny", files, "a" * 40)
    assert calibration_documents(spec("user/tiny", config="en"), hub) == DOCUMENTS
    assert calibration_documents(spec("user/tiny", config="de"), hub) == ["Ein Dokument."]
    # the paper setting's form: one file of the repository named, no configuration
    assert calibration_documents(spec("user/tiny", data_files="en/train.jsonl"), hub) == DOCUMENTS
    first = corpus_fingerprint(spec("user/tiny", config="en"))
    assert first == corpus_fingerprint(spec("user/tiny", config="en"))
    files["en/train.jsonl"] = json.dumps({"text": "A new revision."}) + "\n"
    hub_snapshot(hub, "user/tiny", files, "b" * 40)  # refs/main moves to the new commit
    assert calibration_documents(spec("user/tiny", config="en"), hub) == ["A new revision."]
    assert corpus_fingerprint(spec("user/tiny", config="en")) != first


def test_a_dataset_prepared_by_an_earlier_load_is_read_by_name_offline(hf_caches, tmp_path):
    """What `load_dataset(name, split=...)` reads offline by name: the datasets cache of prepared Arrow files."""
    from datasets.packaged_modules.json.json import Json

    _, prepared = hf_caches
    source = jsonl(tmp_path / "train.jsonl", [{"text": text} for text in DOCUMENTS])
    # an online load_dataset("user/prepared", split="train") leaves datasets/user___prepared/default/0.0.0/<commit>/
    # {dataset_info.json, prepared-train.arrow}: prepared here from a local file, then moved where that load puts it
    builder = Json(cache_dir=str(tmp_path / "staging"), dataset_name="prepared", hash="c" * 40, data_files={"train": str(source)})
    builder.download_and_prepare()
    (version,) = (tmp_path / "staging" / "prepared").glob("*/0.0.0")
    (prepared / "user___prepared" / "default").mkdir(parents=True)
    version.rename(prepared / "user___prepared" / "default" / "0.0.0")
    source.unlink()  # nothing but the prepared copy is left
    assert calibration_documents(spec("user/prepared"), tmp_path) == DOCUMENTS
    assert corpus_fingerprint(spec("user/prepared")) == corpus_fingerprint(spec("user/prepared"))
    with pytest.raises(ConfigError, match=r"no field 'body' \(fields: text\); set calibration.text_field$"):
        calibration_documents(spec("user/prepared", text_field="body"), tmp_path)


def test_a_dataset_in_neither_cache_fails_with_how_to_get_it(hf_caches, tmp_path):
    with pytest.raises(ConfigError) as failed:
        calibration_documents(spec("allenai/c4", data_files="en/c4-train.00000-of-01024.json.gz"), tmp_path)
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith("calibration.corpus 'allenai/c4' is no built-in corpus (docstrings, imageqa, jargon), no local file or folder, "
                              f"and no dataset in the local Hugging Face caches ({tmp_path / 'hf' / 'datasets'}, {tmp_path / 'hf' / 'hub'}); ")  # fmt: skip
    assert "`hf download --repo-type dataset allenai/c4`" in message
    assert "datasets.load_dataset('allenai/c4', split='train', data_files='en/c4-train.00000-of-01024.json.gz')" in message
    assert not list((tmp_path / "hf").rglob("*.arrow"))  # nothing fetched, nothing prepared
