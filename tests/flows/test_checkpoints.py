"""A branch's checkpoint chain under each `keep_checkpoints`, with stand-in stages (no Prefect, no model):
what is computed, what is served from the cache, what is rebuilt and what stays on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
from pathlib import Path

import pytest

import flows.checkpoints as checkpoints_module
from flows.checkpoints import BranchCheckpoints
from pruning.models.sources import checkpoint_fingerprint, checkpoint_lock, checkpoint_problem
from tasks.artifacts import CheckpointRef
from tests.pruning.models.test_removal import fake_checkpoint


class Result:
    def __init__(self, ref: CheckpointRef | None = None):
        self.ref, self.samples_dir = ref, None


class FakeStage:
    """A cached stage: a result per parameters (kept across 'runs'), computed once unless refreshed; a
    checkpoint stage writes a directory named by its parameters, an evaluation only reads its input."""

    def __init__(self, name: str, root: Path, cache: dict, computed: list, writes: bool = True, refresh: bool = False):
        self.name, self.root, self.cache, self.computed, self.writes, self.refresh = name, root, cache, computed, writes, refresh

    def key(self, parameters: dict) -> str:
        return f"{self.name}:" + json.dumps({k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in parameters.items()},
                                            sort_keys=True)  # fmt: skip

    def with_options(self, refresh_cache: bool) -> FakeStage:
        return FakeStage(self.name, self.root, self.cache, self.computed, self.writes, refresh_cache)

    def __call__(self, **parameters) -> Result:
        key = self.key(parameters)
        if key in self.cache and not self.refresh:
            return self.cache[key]
        source = parameters.get("checkpoint")
        if source is not None:  # a stage that computes reads its input, whole, the version it was given
            problem = checkpoint_problem(Path(source.path), source.fingerprint)
            assert problem is None, f"{self.name} computes from a checkpoint that is not whole: {problem}"
        self.computed.append(self.name)
        result = Result()
        if self.writes:
            path = self.root / f"{self.name}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
            path.parent.mkdir(parents=True, exist_ok=True)
            with checkpoint_lock(path):  # as save_checkpoint: writers of one checkpoint take turns
                if checkpoint_problem(path) is not None:
                    shutil.rmtree(path, ignore_errors=True)
                    fake_checkpoint(path, bytes(len(self.computed)) * 100)
                result = Result(CheckpointRef(path=str(path), fingerprint=checkpoint_fingerprint(path)))
        self.cache[key] = result
        return result


@pytest.fixture
def stages(tmp_path, monkeypatch):
    cache: dict = {}
    computed: list[str] = []
    monkeypatch.setattr(checkpoints_module, "is_cached", lambda task, **parameters: task.key(parameters) in task.cache)
    monkeypatch.setattr(checkpoints_module, "get_run_logger", lambda: logging.getLogger("test"))
    root = tmp_path / "checkpoints"
    made = {name: FakeStage(name, root, cache, computed, writes=name != "evaluate") for name in ("prune", "finetune", "evaluate")}
    return made, computed, root


def branch(stages, keep: str) -> tuple[bool, list[str]]:
    """prune → finetune → evaluate → (record) → removals, as flows.benchmark._branch runs them."""
    made, computed, root = stages
    before = len(computed)
    with BranchCheckpoints(keep) as checkpoints:
        pruned = checkpoints.stage(made["prune"], method="wanda")
        finetuned = checkpoints.stage(made["finetune"], pruned, steps=2)
        checkpoints.evaluation(made["evaluate"], lambda result: None, finetuned, suites="jargon")
        kept = checkpoints.kept(finetuned)
        checkpoints.remove_unkept(evaluated=True)
    return kept, computed[before:]


def on_disk(root: Path) -> list[str]:
    return sorted(path.name.split("-")[0] for path in root.iterdir() if not path.name.startswith("."))


def test_none_removes_everything_and_a_rerun_serves_the_scores_from_the_cache(stages):
    kept, computed = branch(stages, "none")
    assert computed == ["prune", "finetune", "evaluate"] and not kept and on_disk(stages[2]) == []
    kept, computed = branch(stages, "none")
    assert computed == [] and not kept and on_disk(stages[2]) == []  # nothing rebuilt


def test_last_after_none_rebuilds_the_chain_it_keeps_and_removes_what_came_before(stages):
    branch(stages, "none")
    kept, computed = branch(stages, "last")
    # the finetuned checkpoint is asked for: its source is rebuilt first, then it, then its new evaluation
    assert computed == ["prune", "finetune", "evaluate"] and kept and on_disk(stages[2]) == ["finetune"]
    kept, computed = branch(stages, "last")
    assert computed == [] and kept and on_disk(stages[2]) == ["finetune"]


def test_last_keeps_only_the_evaluated_checkpoint_and_a_rerun_needs_not_the_removed_one(stages):
    kept, computed = branch(stages, "last")
    assert computed == ["prune", "finetune", "evaluate"] and kept and on_disk(stages[2]) == ["finetune"]
    kept, computed = branch(stages, "last")  # the pruned one is gone, but the finetune is cached: not rebuilt
    assert computed == [] and on_disk(stages[2]) == ["finetune"]


def test_all_keeps_everything(stages):
    kept, computed = branch(stages, "all")
    assert kept and on_disk(stages[2]) == ["finetune", "prune"]


def test_a_changed_evaluation_rebuilds_the_removed_checkpoints_it_reads(stages):
    branch(stages, "none")
    made, computed, root = stages
    with BranchCheckpoints("none") as checkpoints:
        pruned = checkpoints.stage(made["prune"], method="wanda")
        finetuned = checkpoints.stage(made["finetune"], pruned, steps=2)
        assert len(computed) == 3 and on_disk(root) == []  # both served from the cache, both removed
        checkpoints.evaluation(made["evaluate"], lambda result: None, finetuned, suites="another")
        checkpoints.remove_unkept(evaluated=True)
    assert computed[3:] == ["prune", "finetune", "evaluate"] and on_disk(root) == []


def test_a_checkpoint_another_branch_holds_is_left_to_it(stages):
    from pruning.models.removal import checkpoint_in_use

    made, computed, root = stages
    branch(stages, "all")
    (pruned,) = [path for path in root.iterdir() if path.name.startswith("prune")]
    with checkpoint_in_use(pruned):  # a concurrent branch finetuning the same pruned checkpoint in another study
        branch(stages, "last")
        assert on_disk(root) == ["finetune", "prune"]
    branch(stages, "last")  # that branch's own removal, once it is done
    assert on_disk(root) == ["finetune"]


def test_concurrent_branches_sharing_a_chain_never_lose_a_checkpoint_they_read(stages):
    """Branches on threads share the prune and the finetune (same keys) and evaluate differently, all with
    `none`: each evaluation reads a whole checkpoint (the stand-in stages check), and nothing stays."""
    made, computed, root = stages
    failures: list[BaseException] = []
    start = threading.Barrier(6)

    def branch_on_thread(index: int) -> None:
        try:
            start.wait()
            with BranchCheckpoints("none") as checkpoints:
                pruned = checkpoints.stage(made["prune"], method="wanda")
                finetuned = checkpoints.stage(made["finetune"], pruned, steps=2)
                checkpoints.evaluation(made["evaluate"], lambda result: None, finetuned, suites=f"suite-{index}")
                checkpoints.remove_unkept(evaluated=True)
        except BaseException as error:  # noqa: BLE001 - reported below
            failures.append(error)

    threads = [threading.Thread(target=branch_on_thread, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    assert computed.count("evaluate") == 6 and on_disk(root) == []
