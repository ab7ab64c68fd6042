"""How a stage's result is kept between runs: JSON of one of our artifacts, and nothing else.

Prefect persists task results with cloudpickle by default and reads a stored record with whatever
serializer the record itself names: a result file replaced by a crafted pickle (or by a JSON record
naming an arbitrary `object_decoder`) would run code on the next `prunebench run`, on every worker
sharing the workdir. So:

- every task and flow serializes its result with `StageJSON`, which writes `{"kind": ..., "json": ...}`
  for a string, None or an `Artifact` of `tasks.artifacts` (pydantic models of paths and numbers) and
  reads back only those kinds, validating the model; it imports nothing a file names;
- a cached stage's record is split, as Prefect does when a cache policy has `key_storage`: the
  metadata (which names the serializer) under the cache key in `StageRecords`, the value under the
  same key in Prefect's result folder. `StageRecords` refuses, before Prefect parses anything,
  metadata whose serializer is not exactly `StageJSON` or whose value `StageJSON` cannot read: the
  stage then counts as not cached and is recomputed with a warning, and the new record replaces the
  refused one;
- Prefect writes the value before the metadata, and `StageRecords` writes the metadata atomically:
  a killed writer leaves a whole record or none.
- tasks whose results nothing reads again (recording, reports) persist nothing.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from prefect._internal.compatibility.async_dispatch import async_dispatch
from prefect.filesystems import LocalFileSystem
from prefect.serializers import Serializer
from pydantic import Field

from pruning.files import atomic_path
from tasks.artifacts import Artifact

SERIALIZER_TYPE = "prunebench-json"
RECORDS_FOLDER = "records"
_log = logging.getLogger("prunebench.results")


class UnsafeResult(ValueError):
    """A stored result that is not a record of ours: never deserialized."""


def artifact_kinds() -> dict[str, type[Artifact]]:
    """{kind: class} of every artifact a stage may return: `Artifact` and its subclasses, by name."""
    kinds, queue = {}, [Artifact]
    while queue:
        cls = queue.pop()
        kinds[cls.__name__] = cls
        queue += cls.__subclasses__()
    return kinds


class StageJSON(Serializer):
    """Prefect serializer for stage results: JSON of a str, None or an `Artifact`; anything else is refused."""

    type: str = Field(default=SERIALIZER_TYPE, frozen=True)

    def dumps(self, obj: Any) -> bytes:
        if obj is None:
            record = {"kind": "none"}
        elif isinstance(obj, str):
            record = {"kind": "str", "json": json.dumps(obj)}
        elif isinstance(obj, Artifact):
            # Python's JSON keeps inf and nan (a broken model's perplexity); pydantic's would write null
            record = {"kind": type(obj).__name__, "json": json.dumps(obj.model_dump(mode="python"))}
        else:
            raise TypeError(f"a stage result must be a string, None or an Artifact of tasks.artifacts, not {type(obj).__name__}")
        return json.dumps(record).encode()

    def loads(self, blob: bytes) -> Any:
        try:
            record = json.loads(blob)
            kind, text = record["kind"], record.get("json")
        except (ValueError, TypeError, KeyError) as error:
            raise UnsafeResult(f"not a prunebench result record ({error})") from error
        if kind == "none":
            return None
        if not isinstance(text, str):
            raise UnsafeResult(f"result record of kind {kind!r} has no JSON text")
        if kind == "str":
            try:
                value = json.loads(text)
            except ValueError as error:
                raise UnsafeResult(f"result record of kind 'str' is not JSON ({error})") from error
            if not isinstance(value, str):
                raise UnsafeResult("result record of kind 'str' holds no string")
            return value
        cls = artifact_kinds().get(kind)
        if cls is None:
            raise UnsafeResult(f"unknown result kind {kind!r}")
        try:
            return cls.model_validate(json.loads(text))
        except ValueError as error:  # a ValidationError too
            raise UnsafeResult(f"result record of kind {kind!r} does not validate: {str(error).splitlines()[0]}") from error


def check_record(metadata: bytes, where: str) -> bytes:
    """`metadata` unchanged when it is the metadata of a Prefect result record written with `StageJSON`
    and the value it points to reads back as one of our results; else UnsafeResult, logged as a
    warning (Prefect then counts the stage as not cached, and it is recomputed)."""
    try:
        record = json.loads(metadata)
        serializer, value_path = record["serializer"], record["storage_key"]
    except (ValueError, TypeError, KeyError):
        serializer = value_path = None
    problem = None
    if serializer != {"type": SERIALIZER_TYPE}:
        named = serializer.get("type") if isinstance(serializer, dict) else None
        problem = f"its serializer is {named!r}" if named else "it is not the metadata of a JSON result record"
    else:
        try:
            StageJSON().loads(Path(value_path).read_bytes())
        except (OSError, ValueError, TypeError) as error:  # UnsafeResult is a ValueError
            problem = f"its value {value_path} is unreadable ({error})"
    if problem is not None:
        _warn(f"ignoring the cached result {where}: {problem}; only prunebench's JSON records are read, so the stage is recomputed")
        raise UnsafeResult(f"{where}: {problem}")
    return metadata


def _warn(message: str) -> None:
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        get_run_logger().warning(message)
    except MissingContextError:
        _log.warning(message)


class StageRecords(LocalFileSystem):
    """Where cached stages' metadata live (a cache policy's `key_storage`): reads only metadata of
    `StageJSON` records, writes atomically. With no `basepath`, it is the folder `records` in Prefect's
    results folder (PREFECT_RESULTS_LOCAL_STORAGE_PATH, which `flows.runtime` points into the workdir),
    looked up when used, not when defined: the values, named by the same keys, lie beside it."""

    _block_type_name = "prunebench stage records"
    _block_type_slug = "prunebench-stage-records"

    def _resolve_path(self, path: str) -> Path:
        if self.basepath is None:
            from prefect.settings import get_current_settings

            results = Path(get_current_settings().results.local_storage_path)
            return self.model_copy(update={"basepath": str(results / RECORDS_FOLDER)})._resolve_path(path)
        return super()._resolve_path(path)

    async def aread_path(self, path: str) -> bytes:
        return check_record(await super().aread_path(path), str(self._resolve_path(path)))

    @async_dispatch(aread_path)
    def read_path(self, path: str) -> bytes:
        return check_record(super().read_path(path, _sync=True), str(self._resolve_path(path)))

    async def awrite_path(self, path: str, content: bytes) -> str:
        return self.write_path(path, content, _sync=True)

    @async_dispatch(awrite_path)
    def write_path(self, path: str, content: bytes) -> str:
        target = self._resolve_path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as tmp:
            tmp.write_bytes(content)
        return str(target)


STAGE_RECORDS = StageRecords()
STAGE_JSON = StageJSON()
