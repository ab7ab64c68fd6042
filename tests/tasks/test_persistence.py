"""Stage results are JSON of our artifacts, and a record that is anything else is refused unread."""

from __future__ import annotations

import base64
import json
import math
import pickle
from pathlib import Path

import pytest

from evals.harness import SuiteScore
from tasks.artifacts import CheckpointRef, EvalScores, RegressionOutcome, StageUsage
from tasks.persistence import STAGE_JSON, StageRecords, UnsafeResult, artifact_kinds, check_record


def test_every_result_kind_round_trips():
    usage = StageUsage(wall_s=1.5, peak_rss_gb=0.25, computed_by="run-1")
    scores = EvalScores(
        scores=[SuiteScore(suite="jargon_ppl", metric="word_perplexity", value=math.inf, stderr=None, higher_is_better=False)],
        items=[], usage=usage,
    )
    for value in ("a/path", "", None, CheckpointRef(path="/x", fingerprint="ab12"), usage, scores,
                  RegressionOutcome(markdown="none", n_worse=0, n_better=1)):  # fmt: skip
        assert STAGE_JSON.loads(STAGE_JSON.dumps(value)) == value
    assert math.isinf(STAGE_JSON.loads(STAGE_JSON.dumps(scores)).scores[0].value)  # not turned into null


def test_only_our_artifacts_are_written():
    assert {"CheckpointRef", "EvalScores", "PrunedCheckpoint", "StageUsage"} <= set(artifact_kinds())
    for value in ({"a": 1}, [1, 2], 3.0, Path("/x"), object()):
        with pytest.raises(TypeError, match="a stage result must be a string, None or an Artifact"):
            STAGE_JSON.dumps(value)


@pytest.mark.parametrize(
    "blob, message",
    [
        (pickle.dumps(CheckpointRef(path="/x", fingerprint="ab")), "not a prunebench result record"),
        (b'{"kind": "Popen", "json": "{}"}', "unknown result kind 'Popen'"),
        (b'{"kind": "CheckpointRef", "json": "{\\"path\\": 1}"}', "does not validate"),
        (b'{"kind": "str", "json": "[1]"}', "holds no string"),
        (b'{"kind": "CheckpointRef"}', "has no JSON text"),
        (b"[]", "not a prunebench result record"),
    ],
)
def test_anything_else_is_refused(blob, message):
    with pytest.raises(UnsafeResult, match=message):
        STAGE_JSON.loads(blob)


def _record(tmp_path: Path, serializer: dict, value: bytes) -> bytes:
    stored = tmp_path / "value"
    stored.write_bytes(value)
    return json.dumps({"storage_key": str(stored), "expiration": None, "serializer": serializer,
                       "prefect_version": "3", "storage_block_id": None}).encode()  # fmt: skip


def test_a_record_of_ours_passes(tmp_path):
    metadata = _record(tmp_path, {"type": "prunebench-json"}, STAGE_JSON.dumps(CheckpointRef(path="/x", fingerprint="ab")))
    assert check_record(metadata, "here") == metadata


class _Payload:
    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize(
    "serializer, problem",
    [
        ({"type": "pickle", "picklelib": "pickle"}, "its serializer is 'pickle'"),
        ({"type": "json", "object_decoder": "logging.config.dictConfig"}, "its serializer is 'json'"),
        ({"type": "prunebench-json", "extra": 1}, "its serializer is 'prunebench-json'"),
        ({"type": "compressed/pickle"}, "its serializer is 'compressed/pickle'"),
    ],
)
def test_a_record_naming_another_serializer_is_refused_unread(tmp_path, caplog, serializer, problem):
    created = tmp_path / "pwned"
    metadata = _record(tmp_path, serializer, base64.encodebytes(pickle.dumps(_Payload(created))))
    with pytest.raises(UnsafeResult, match=problem):
        check_record(metadata, "records/abc")
    assert not created.exists()
    assert f"ignoring the cached result records/abc: {problem}" in caplog.text


def test_a_replaced_value_or_a_foreign_file_is_refused(tmp_path):
    metadata = _record(tmp_path, {"type": "prunebench-json"}, base64.encodebytes(pickle.dumps([1])))
    with pytest.raises(UnsafeResult, match="its value .* is unreadable"):
        check_record(metadata, "here")
    with pytest.raises(UnsafeResult, match="it is not the metadata of a JSON result record"):
        check_record(pickle.dumps({"serializer": {"type": "prunebench-json"}}), "here")
    gone = json.loads(metadata) | {"storage_key": str(tmp_path / "missing")}
    with pytest.raises(UnsafeResult, match="unreadable"):
        check_record(json.dumps(gone).encode(), "here")


def test_records_are_written_whole_and_read_through_the_check(tmp_path):
    records = StageRecords(basepath=str(tmp_path / "records"))
    value = tmp_path / "value"
    value.write_bytes(STAGE_JSON.dumps("suites/dir"))
    metadata = json.dumps({"storage_key": str(value), "serializer": {"type": "prunebench-json"}}).encode()
    records.write_path("key1", metadata, _sync=True)
    assert records.read_path("key1", _sync=True) == metadata
    assert [path.name for path in (tmp_path / "records").iterdir()] == ["key1"]  # no temporary left behind
    (tmp_path / "records" / "key1").write_bytes(b'{"serializer": {"type": "pickle"}}')
    with pytest.raises(UnsafeResult):
        records.read_path("key1", _sync=True)


def test_without_a_basepath_records_live_in_prefects_results_folder(tmp_path, monkeypatch):
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    with temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path / "results"}):
        assert StageRecords()._resolve_path("abc") == (tmp_path / "results" / "records" / "abc").resolve()
