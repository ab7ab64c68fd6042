"""The checkpoints one branch writes and reads, and which of them it keeps (`output.keep_checkpoints`).

A branch's stages form a chain: pruned or dropped checkpoint → finetuned checkpoint → evaluation.
`all` keeps every checkpoint; `last` the evaluated one (the one before finetuning is removed once
the evaluated one is settled); `none` none (the evaluated one is removed once the run is recorded).

A cached stage's result survives its checkpoint's removal, and the next stage's key holds only its
reference: so a checkpoint is made whole (rebuilt, with a warning saying why) only when it is asked
for: when the next stage is not cached and must read it, or when the policy keeps it. A rerun of a
config whose checkpoints were removed serves its scores from the cache and rebuilds nothing; a
changed evaluation, or `keep_checkpoints: last`, rebuilds what it reads.

Safe beside concurrent branches (pruning/models/removal.py): a branch holds (shared) every checkpoint
it makes whole until it is done with it and checks it only while holding it; a removal leaves alone
a checkpoint anyone holds and one rewritten since; a rebuild happens under `checkpoint_lock`, so
branches missing the same checkpoint rebuild it once and the others take that result.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.tasks import Task

from pruning.models.removal import checkpoint_in_use, remove_unused_checkpoint
from pruning.models.sources import checkpoint_lock, checkpoint_problem
from reports.runs import size
from tasks.artifacts import CheckpointRef
from tasks.common import is_cached


@dataclass
class Built:
    """A checkpoint a stage of the branch produced: from the cache or computed now, its files perhaps removed since."""

    task: Task
    parameters: dict[str, Any]
    result: Any  # the stage's artifact; `result.ref` is the checkpoint
    source: Built | None = None  # the earlier stage whose checkpoint this one read (`parameters["checkpoint"]`)


def usable(task: Task, problem_of, **parameters):
    """A cached task's result, or, when what it points to is gone, incomplete or changed (`problem_of`
    says why in one line, or None when it is whole), the task computed again (`recomputed`)."""
    result = task(**parameters)
    problem = problem_of(result)
    return result if problem is None else recomputed(task, problem, parameters)


def recomputed(task: Task, problem: str, parameters: dict):
    """`task` computed afresh, its cache entry replaced, with a warning naming the `problem` of the cached one."""
    get_run_logger().warning("cached result of %s is unusable: %s; rebuilding it", task.name, problem)
    return task.with_options(refresh_cache=True)(**parameters)


class BranchCheckpoints:
    """One branch's checkpoint stages, holds and removals; a context manager that lets go of every hold."""

    def __init__(self, keep: str):
        self.keep = keep
        self.built: list[Built] = []
        self._holds: dict[str, ExitStack] = {}

    def __enter__(self) -> BranchCheckpoints:
        return self

    def __exit__(self, *exc) -> None:
        for path in list(self._holds):
            self._release(path)

    def stage(self, task: Task, source: Built | None = None, **parameters) -> Built:
        """A checkpoint stage, cached or computed; given a `source`, its checkpoint is the stage's `checkpoint`."""
        if source is not None:
            parameters = self._reading(task, source, parameters)
        built = Built(task, parameters, task(**parameters), source)
        self.built.append(built)
        if self.keep == "all":
            self.whole(built)
        return built

    def evaluation(self, task: Task, problem_of, source: Built | CheckpointRef, **parameters):
        """The scores of `source`'s checkpoint (or of the base model's, given its reference); the checkpoints
        before it go (`last`, `none`) once it is settled. A cached result with a `problem_of` it is
        recomputed, with a warning saying why."""
        if not isinstance(source, Built):
            parameters, source = {**parameters, "checkpoint": source}, None
        else:
            if self.keep != "none":
                self.whole(source)
            parameters = self._reading(task, source, parameters)
            self.remove_unkept(evaluated=False)
        result = task(**parameters)
        problem = problem_of(result)
        return result if problem is None else self._recomputed(task, problem, parameters, source)

    def kept(self, evaluated: Built | None) -> bool:
        """Whether the policy keeps the checkpoint the run evaluated: the base model's always; a built one
        unless `none` (whether it is on disk is the record's to check: `flows.benchmark._checkpoint_columns`)."""
        return evaluated is None or self.keep != "none"

    def whole(self, built: Built) -> None:
        """Hold the checkpoint of `built` and make sure it is whole: rebuilt (its source made whole first,
        where the rebuild reads it) if it was removed or damaged. One rebuild of a checkpoint at a time:
        whoever waited for another's takes its result."""
        self._hold(built.result.ref.path)
        problem = checkpoint_problem(Path(built.result.ref.path), built.result.ref.fingerprint)
        if problem is None:
            return
        with checkpoint_lock(Path(built.result.ref.path)):
            if built.source is not None:
                built.parameters = self._reading(built.task, built.source, built.parameters)
            result = built.task(**built.parameters)  # rebuilt meanwhile by another branch, or now
            problem = checkpoint_problem(Path(result.ref.path), result.ref.fingerprint)
            if problem is not None:
                result = self._recomputed(built.task, problem, built.parameters, built.source)
            built.result = result
        self._hold(built.result.ref.path)

    def remove_unkept(self, evaluated: bool) -> None:
        """Remove what the policy does not keep: the checkpoints before the evaluated one (`last`, `none`),
        and with `evaluated` (after the run is recorded) the evaluated one too (`none`)."""
        if self.keep == "all" or not self.built:
            return
        for built in self.built[:-1] if self.keep == "last" or not evaluated else self.built:
            self._remove(built)

    def _recomputed(self, task: Task, problem: str, parameters: dict, source: Built | None):
        """`recomputed`, with `source`'s checkpoint (which the stage reads) made whole first."""
        if source is not None:
            self.whole(source)
            parameters = {**parameters, "checkpoint": source.result.ref}
        return recomputed(task, problem, parameters)

    def _reading(self, task: Task, source: Built, parameters: dict) -> dict:
        """`parameters` with `source`'s checkpoint, made whole first where `task` is not cached and must read it."""
        parameters = {**parameters, "checkpoint": source.result.ref}
        if not is_cached(task, **parameters):
            self.whole(source)
            parameters["checkpoint"] = source.result.ref
        return parameters

    def _remove(self, built: Built) -> None:
        path = built.result.ref.path
        self._release(path)
        if not Path(path).is_dir():
            return
        freed = remove_unused_checkpoint(Path(path), built.result.ref.fingerprint)
        if freed is None:
            get_run_logger().info("left %s in place: another branch is reading it (or rewrote it), and removes it when done", path)
        elif freed:
            get_run_logger().info("removed checkpoint %s: %s freed (output.keep_checkpoints: %s; rebuilt if a stage needs it again)",
                                  path, size(freed), self.keep)  # fmt: skip

    def _hold(self, path: str) -> None:
        if path not in self._holds:
            stack = ExitStack()
            stack.enter_context(checkpoint_in_use(Path(path)))
            self._holds[path] = stack

    def _release(self, path: str) -> None:
        stack = self._holds.pop(path, None)
        if stack is not None:
            stack.close()
