"""Building the splits: deterministic bytes, disjoint images, every type in every split with balanced
answers, answers that the stored images bear out, reuse of a complete build."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from evals.imageqa import build_imageqa, read_manifest, split_path, tasks_dir
from evals.imageqa.generator import (
    DEFAULT_SEED,
    DEFAULT_TEST,
    SPLITS,
    PlannedRecord,
    balanced_answers,
    balanced_order,
    partition_digits,
    plan_splits,
    type_counts,
)
from evals.imageqa.questions import QUESTION_TYPES
from evals.imageqa.records import load_records
from pruning.errors import SuiteError

SMALL = {"train": 120, "calibration": 24, "test": 60}


def build_files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file of a build but the task files (they hold absolute paths)."""
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file() and path.parent.name != "tasks"}


def test_type_counts_and_balanced_answers():
    assert type_counts(20, ["a", "b", "c"]) == {"a": 7, "b": 7, "c": 6}
    answers = balanced_answers(["x", "y", "z", "w"], 10, random.Random(0))
    assert len(answers) == 10 and sorted(Counter(answers).values()) == [2, 2, 3, 3]
    assert balanced_answers(["x", "y"], 9, random.Random(1)) == balanced_answers(["x", "y"], 9, random.Random(1))


def test_partition_digits_is_disjoint_and_gives_the_rest_to_the_last_split():
    pools = {"0": list(range(10)), "1": list(range(10, 20))}
    needed = {"test": Counter({"0": 3, "1": 2}), "calibration": Counter({"0": 1}), "train": Counter({"0": 5, "1": 5})}
    partition = partition_digits(needed, seed=3, pools=pools)
    assert [len(partition[split]["0"]) for split in ("test", "calibration", "train")] == [3, 1, 6]
    assert [len(partition[split]["1"]) for split in ("test", "calibration", "train")] == [2, 0, 8]
    for digit, indices in pools.items():
        assert sorted(i for split in partition for i in partition[split][digit]) == indices
    with pytest.raises(SuiteError, match="fewer than the splits ask for"):
        partition_digits({**needed, "test": Counter({"0": 10})}, seed=3, pools=pools)


def test_same_seed_same_bytes_anywhere(small_build, tmp_path):
    again = build_imageqa(tmp_path / "elsewhere", seed=7, **SMALL)
    assert again != small_build
    assert build_files(again) == build_files(small_build)
    assert (tasks_dir(again) / "utils.py").read_bytes() == (tasks_dir(small_build) / "utils.py").read_bytes()
    for name in ("imageqa_mc.yaml", "imageqa_short.yaml"):
        text = (tasks_dir(again) / name).read_text()
        assert str(again) in text and str(small_build) not in text
    other_seed = build_imageqa(tmp_path / "elsewhere", seed=8, **SMALL)
    assert read_manifest(other_seed)["content_sha256"] != read_manifest(small_build)["content_sha256"]


def test_the_test_split_does_not_depend_on_the_other_sizes(small_build, tmp_path):
    bigger_train = build_imageqa(tmp_path, seed=7, train=300, calibration=30, test=SMALL["test"])
    assert split_path(bigger_train, "test").read_bytes() == split_path(small_build, "test").read_bytes()


def test_manifest_counts_and_content_hash(small_build):
    manifest = read_manifest(small_build)
    assert manifest["sizes"] == SMALL and manifest["seed"] == 7 and manifest["image_size"] == 48
    digest = hashlib.sha256()
    for split in SPLITS:
        records = load_records(split_path(small_build, split))
        assert len(records) == SMALL[split]
        assert manifest["counts"][split] == dict(Counter(record.qtype for record in records))
        for record in records:
            digest.update(record.image_path.read_bytes())
        digest.update(split_path(small_build, split).read_bytes())
    assert manifest["content_sha256"] == digest.hexdigest()


def test_splits_share_no_image(small_build):
    keys_by_split, pixels_by_split = {}, {}
    for split in SPLITS:
        records = load_records(split_path(small_build, split))
        keys_by_split[split] = {
            ("digit", r.digit_index) if r.digit_index is not None else tuple(sorted(r.objects)) for r in records
        }
        pixels_by_split[split] = {hashlib.sha1(Image.open(r.image_path).convert("RGB").tobytes()).hexdigest() for r in records}
        if split != "train":  # evaluation splits never show an image twice
            assert len(keys_by_split[split]) == len(pixels_by_split[split]) == len(records)
    for a, b in [("train", "calibration"), ("train", "test"), ("calibration", "test")]:
        assert not keys_by_split[a] & keys_by_split[b], (a, b)
        assert not pixels_by_split[a] & pixels_by_split[b], (a, b)


def test_every_type_in_every_split_with_balanced_answers(small_build):
    for split in SPLITS:
        records = load_records(split_path(small_build, split))
        per_type = Counter(record.qtype for record in records)
        assert set(per_type) == set(QUESTION_TYPES)
        assert max(per_type.values()) - min(per_type.values()) <= 1
        for name, qtype in QUESTION_TYPES.items():
            answers = Counter(record.answer for record in records if record.qtype == name)
            counts = [answers[choice] for choice in qtype.choices]
            assert max(counts) - min(counts) <= 1, (split, name, answers)


def test_balanced_order_keeps_every_prefix_balanced():
    records = [PlannedRecord(qtype, f"{qtype}{index}", "a", None) for qtype, n in (("x", 4), ("y", 4), ("z", 3)) for index in range(n)]
    ordered = balanced_order(records, ["x", "y", "z"], random.Random(0))
    assert sorted(ordered, key=lambda r: r.question) == sorted(records, key=lambda r: r.question)
    assert [r.question for r in ordered if r.qtype == "x"] == ["x0", "x1", "x2", "x3"]  # a type keeps its own order
    assert {r.qtype for r in ordered[:3]} == {"x", "y", "z"} and {r.qtype for r in ordered[9:]} == {"x", "y"}
    assert ordered == balanced_order(records, ["x", "y", "z"], random.Random(0))
    assert [r.qtype for r in ordered] != [r.qtype for r in balanced_order(records, ["x", "y", "z"], random.Random(1))]


def test_every_prefix_of_a_split_is_balanced_over_types(small_build):
    """lmms-eval's `limit` takes the first N records: they must be a fair subset."""
    for split in SPLITS:
        seen: Counter = Counter()
        for record in load_records(split_path(small_build, split)):
            seen[record.qtype] += 1
            assert max(seen.values()) - min(seen[name] for name in QUESTION_TYPES) <= 1


def test_the_default_test_split_is_large_and_balanced():
    """3,000 questions, 500 of each type (binomial stderr <= 0.009 overall, <= 0.022 per type); the
    test split depends only on its seed and size, so it is planned here with tiny other splits."""
    test = plan_splits(DEFAULT_SEED, 48, {"train": 6, "calibration": 6, "test": DEFAULT_TEST})["test"]
    assert DEFAULT_TEST >= 3000 and len(test) == DEFAULT_TEST
    assert Counter(record.qtype for record in test) == {name: DEFAULT_TEST // len(QUESTION_TYPES) for name in QUESTION_TYPES}
    assert Counter(record.qtype for record in test[:600]) == {name: 100 for name in QUESTION_TYPES}
    assert len({(record.question, record.image.key) for record in test}) == len(test)  # no question twice


def test_stored_images_bear_out_their_answers(small_build, answer_check):
    for split in SPLITS:
        for record in load_records(split_path(small_build, split)):
            answer_check(record.qtype, record.question, record.answer, record.objects, record.digit_index, Image.open(record.image_path))


def test_a_complete_build_is_reused_and_follows_a_moved_cache(tmp_path):
    root = build_imageqa(tmp_path / "cache", seed=1, **SMALL)
    manifest_mtime = (root / "manifest.json").stat().st_mtime_ns
    assert build_imageqa(tmp_path / "cache", seed=1, **SMALL) == root
    assert (root / "manifest.json").stat().st_mtime_ns == manifest_mtime
    assert not [path for path in root.parent.iterdir() if path.name.startswith(".")]  # no staging left over
    shutil.move(tmp_path / "cache", tmp_path / "moved")
    moved = build_imageqa(tmp_path / "moved", seed=1, **SMALL)
    assert (moved / "manifest.json").stat().st_mtime_ns == manifest_mtime
    assert f"{moved}/test.jsonl" in (tasks_dir(moved) / "imageqa_mc.yaml").read_text()


def test_an_incomplete_folder_is_rebuilt(tmp_path):
    root = build_imageqa(tmp_path, seed=1, **SMALL)
    (root / "manifest.json").unlink()
    assert build_imageqa(tmp_path, seed=1, **SMALL) == root
    assert read_manifest(root)["sizes"] == SMALL


def test_sizes_too_small_are_refused(tmp_path):
    with pytest.raises(SuiteError, match="smaller than the 6 question types"):
        build_imageqa(tmp_path, calibration=5)
    with pytest.raises(SuiteError, match="image_size 16 is too small"):
        build_imageqa(tmp_path, image_size=16)
    with pytest.raises(SuiteError, match="fewer than the splits ask for"):
        build_imageqa(tmp_path, test=12000, train=60, calibration=60)  # 200 of each digit
