"""Reading a split: complete records load; a record without an answer or an undecodable image fails
with SuiteError naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import ImageFile

from evals.imageqa.generator import SPLITS, split_path
from evals.imageqa.questions import QUESTION_TYPES
from evals.imageqa.records import ImageQARecord, load_image, load_records
from pruning.errors import SuiteError


@pytest.fixture
def build_copy(small_build, tmp_path) -> Path:
    """The test split and its images, copied so a test may break them."""
    root = tmp_path / "build"
    shutil.copytree(small_build / "images" / "test", root / "images" / "test")
    shutil.copy(split_path(small_build, "test"), root / "test.jsonl")
    return root


def test_load_records_gives_complete_records(small_build):
    for split in SPLITS:
        records = load_records(split_path(small_build, split))
        assert len({record.id for record in records}) == len(records)
        for record in records:
            assert isinstance(record, ImageQARecord) and record.image_path.is_absolute() and record.image_path.is_file()
            assert record.choices == QUESTION_TYPES[record.qtype].choices and record.answer in record.choices
            assert record.image == f"images/{split}/{record.id}.png"
    image = load_image(records[0])
    assert image.mode == "RGB" and image.size == (48, 48)


def _rewrite(path: Path, change) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines()]
    change(records)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))


def test_a_record_without_answer_names_the_file_and_record(build_copy):
    path = build_copy / "test.jsonl"
    _rewrite(path, lambda records: records[3].pop("answer"))
    with pytest.raises(SuiteError, match=rf"{path}:4: record 'test-00003' has no 'answer' field"):
        load_records(path)


def test_an_answer_outside_the_choices_is_refused(build_copy):
    path = build_copy / "test.jsonl"
    _rewrite(path, lambda records: records[0].update(answer="magenta"))
    with pytest.raises(SuiteError, match="'magenta', not one of its choices"):
        load_records(path)


def test_an_undecodable_image_names_the_image_file(build_copy):
    image = build_copy / "images" / "test" / "test-00005.png"
    image.write_bytes(b"not a png at all")
    with pytest.raises(SuiteError, match=rf"record 'test-00005': image {image} cannot be decoded"):
        load_records(build_copy / "test.jsonl")
    assert len(load_records(build_copy / "test.jsonl", check_images=False)) == 60


def test_a_truncated_image_fails_even_where_truncated_images_are_allowed(build_copy, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)  # as lmms-eval sets it at import
    image = build_copy / "images" / "test" / "test-00007.png"
    image.write_bytes(image.read_bytes()[:-40])
    with pytest.raises(SuiteError, match=str(image)):
        load_records(build_copy / "test.jsonl")


def test_a_missing_image_or_split_file(build_copy):
    (build_copy / "images" / "test" / "test-00002.png").unlink()
    with pytest.raises(SuiteError, match="test-00002.png, which does not exist"):
        load_records(build_copy / "test.jsonl")
    with pytest.raises(SuiteError, match="does not exist"):
        load_records(build_copy / "train.jsonl")
