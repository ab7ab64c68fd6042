"""The cache policy's code key on a small project tree of our own, and the closures of the real tasks."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from flows.environment import installed_versions
from tasks.cache import CodeClosure

# A project in miniature: tasks import helpers, helpers import kernels (one inside a function, one
# relatively, one by `importlib.import_module`), two modules import packages, reports import a task.
TREE = {
    "pruning/__init__.py": "",
    "pruning/errors.py": "class ConfigError(ValueError):\n    pass\n",
    "pruning/kernel.py": "import math\n\nimport transformers\n\nfrom .errors import ConfigError\n\n\ndef mask(x):\n    return math.floor(x)\n",
    "pruning/corpus.py": "def windows(text):\n    return text.split()\n",
    "tasks/__init__.py": "",
    "tasks/common.py": "from pruning.errors import ConfigError\n\nCACHED = 'inputs + code'\n",
    "tasks/calibration.py": (
        "from pruning import corpus\nfrom tasks.common import CACHED\n\n\n"
        "def calibration_set(text):\n    return corpus.windows(text)\n\n\n"
        "def calibration_inputs(path):\n    import importlib\n    return importlib.import_module('pruning.errors')\n"
    ),
    "tasks/prune.py": (
        "from tasks.calibration import calibration_inputs\nfrom tasks.common import CACHED\n\n\n"
        "def pruned_checkpoint(path):\n    from pruning.kernel import mask\n    return mask(calibration_inputs(path))\n"
    ),
    "tasks/evaluate.py": "import duckdb\n\nfrom tasks.common import CACHED\n\n\ndef eval_scores(path):\n    return duckdb.sql(path)\n",
    "reports/__init__.py": "",
    "reports/table.py": "from tasks.evaluate import eval_scores\n",
}
TASKS = ("tasks.calibration", "tasks.prune", "tasks.evaluate")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    for name, text in TREE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def task_context(module: str):
    """What `compute_key` reads of Prefect's TaskRunContext: the task function's module."""
    return SimpleNamespace(task=SimpleNamespace(fn=SimpleNamespace(__module__=module)))


def keys(root: Path, versions: dict[str, str] | None = None) -> dict[str, str]:
    """Each task's key from a policy as a fresh process builds it (it reads the tree once)."""
    policy = CodeClosure(root=root, versions=lambda: versions if versions is not None else installed_versions())
    return {module: policy.compute_key(task_context(module), {}, {}) for module in TASKS}


def changed(before: dict[str, str], after: dict[str, str]) -> set[str]:
    return {module for module in before if before[module] != after[module]}


def test_a_closure_is_exactly_what_the_module_imports_transitively(project):
    policy = CodeClosure(root=project)
    assert policy.closure("tasks.prune") == (
        "pruning", "pruning.corpus", "pruning.errors", "pruning.kernel",
        "tasks", "tasks.calibration", "tasks.common", "tasks.prune",
    )  # fmt: skip
    assert policy.closure("tasks.evaluate") == ("pruning", "pruning.errors", "tasks", "tasks.common", "tasks.evaluate")
    assert "reports.table" not in {m for task in TASKS for m in policy.closure(task)}


def test_the_packages_are_those_imported_in_the_closure_and_what_they_require(project):
    policy = CodeClosure(root=project)
    assert {"transformers", "tokenizers", "safetensors", "huggingface-hub"} <= set(policy.packages("tasks.prune"))
    assert "duckdb" not in policy.packages("tasks.prune")
    assert set(policy.packages("tasks.evaluate")) == {"duckdb"}
    assert set(policy.packages("tasks.calibration")) == set()  # math and importlib are the standard library's


def test_editing_a_helper_changes_the_keys_of_exactly_the_tasks_that_import_it(project):
    before = keys(project)
    assert keys(project) == before  # stable from process to process
    calibration = project / "tasks" / "calibration.py"
    calibration.write_text(calibration.read_text().replace("return corpus.windows(text)", "return corpus.windows(text)[:8]"))
    assert changed(before, keys(project)) == {"tasks.calibration", "tasks.prune"}
    kernel = project / "pruning" / "kernel.py"
    before = keys(project)
    kernel.write_text(kernel.read_text().replace("math.floor", "math.ceil"))
    assert changed(before, keys(project)) == {"tasks.prune"}  # imported inside a function
    before = keys(project)
    (project / "pruning" / "errors.py").write_text("class ConfigError(TypeError):\n    pass\n")
    assert changed(before, keys(project)) == set(TASKS)


def test_editing_what_no_task_imports_or_only_comments_changes_no_key(project):
    before = keys(project)
    (project / "reports" / "table.py").write_text("from tasks.evaluate import eval_scores\n\nTITLE = 'leaderboard'\n")
    (project / "reports" / "plots.py").write_text("import matplotlib\n")
    kernel = project / "pruning" / "kernel.py"
    kernel.write_text("# why: the floor, as the paper's Eq. 3\n" + kernel.read_text().replace("(x):", "( x ):"))
    assert keys(project) == before


def test_a_package_version_change_reaches_only_the_tasks_that_import_it_or_what_requires_it(project):
    installed = dict(installed_versions())
    before = keys(project, installed)
    assert changed(before, keys(project, {**installed, "duckdb": "99.0"})) == {"tasks.evaluate"}
    assert changed(before, keys(project, {**installed, "tokenizers": "0.0.1"})) == {"tasks.prune"}  # transformers requires it
    assert changed(before, keys(project, {**installed, "prefect": "9.9.9"})) == set()  # imported by none


def test_a_task_outside_the_project_is_refused(project):
    with pytest.raises(ValueError, match="'__main__' is not a module of the project"):
        CodeClosure(root=project).compute_key(task_context("__main__"), {}, {})


def test_no_cached_task_of_the_real_tree_depends_on_reports_and_calibration_sees_its_helpers():
    from tasks.cache import CODE
    from tasks.common import cached_tasks

    closures = {task.name: CODE.closure(task.fn.__module__) for task in cached_tasks()}
    assert {"calibration_set", "pruned_checkpoint", "eval_scores", "finetuned_checkpoint"} <= set(closures)
    assert all(not module.startswith("reports") for closure in closures.values() for module in closure)
    assert {"tasks.calibration", "pruning.calibration", "tasks.cache"} <= set(closures["calibration_set"])
    # the harnesses reach the evaluation stage, not the pruning stages
    assert "lm-eval" in CODE.packages("tasks.evaluate") and "lm-eval" not in CODE.packages("tasks.prune")


def test_packages_a_module_reads_without_importing_count_as_imported(project):
    (project / "pruning" / "corpus.py").write_text(
        'READS_PACKAGES: tuple[str, ...] = ("duckdb",)  # its files are read, never imported\n\n\n'
        "def windows(text):\n    return text.split()\n"
    )
    installed = dict(installed_versions())
    before = keys(project, installed)
    assert changed(before, keys(project, {**installed, "duckdb": "99.0"})) == {"tasks.calibration", "tasks.prune", "tasks.evaluate"}


def test_the_suite_stage_is_keyed_on_the_packages_its_docstring_corpus_reads():
    from tasks.cache import CODE

    assert {"nltk", "networkx", "sympy"} <= set(CODE.packages("tasks.suites"))


def test_modules_an_entry_point_group_loads_count_as_imported(project, monkeypatch):
    """An installed package's adapters (`prunebench.adapters`) are code the pruning stages run: upgrading it recomputes them."""
    import importlib.metadata

    from tasks import cache

    (project / "pruning" / "kernel.py").write_text('READS_ENTRY_POINTS = ("prunebench.adapters",)\n')
    found = [importlib.metadata.EntryPoint("starcoder", "duckdb.adapters:STARCODER", "prunebench.adapters")]
    monkeypatch.setattr(cache, "_entry_points", lambda group: found if group == "prunebench.adapters" else [])
    installed = dict(installed_versions())
    before = keys(project, installed)
    assert changed(before, keys(project, {**installed, "duckdb": "99.0"})) == {"tasks.prune", "tasks.evaluate"}
