"""What a cached stage's key holds besides its inputs: the code that computes it.

That code is the closure of project modules the task's module imports (every `import` and
`from … import` anywhere in a module, inside functions too, followed transitively) and the
packages those modules import, with the distributions they require, at their installed versions.
So editing `tasks/calibration.py` recomputes the stages that import it and no other; editing
`reports/` recomputes nothing; upgrading lm-eval recomputes the stages whose closure imports it.

A module that reads an installed package's files without importing it (a corpus built from the
docstrings of NLTK's sources) names the packages in a module-level `READS_PACKAGES = ("nltk", ...)`
of string literals; they count as imported. A module that loads the entry points of a group (the
adapters installed packages register) names it in `READS_ENTRY_POINTS = ("prunebench.adapters",)`;
the modules those entry points name count as imported.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.metadata
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy

from flows import environment

ROOT = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = frozenset({"pruning", "evals", "tasks", "flows", "reports"})
# Prefect runs a stage, it does not compute its result: were it counted, upgrading it (or any of
# the web stack it requires) would recompute every stage for nothing.
ORCHESTRATION = frozenset({"prefect"})


@dataclass(frozen=True)
class ModuleSource:
    """One project module as the key sees it: its syntax tree's digest, and what it imports (project
    modules by dotted name, other packages by top-level name)."""

    syntax: str
    project: frozenset[str]
    external: frozenset[str]


@dataclass
class CodeClosure(CachePolicy):
    """Prefect cache policy: a digest of the task module's closure of project modules (their syntax
    trees: comments and formatting do not count) and of the versions of the packages they import.
    Compose with INPUTS. `root` and `versions` point it at another tree or environment (tests).

    Everything is read once per process and instance: a key costs a few dictionary look-ups."""

    root: Path = ROOT
    versions: Callable[[], Mapping[str, str]] = environment.installed_versions
    _modules: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _closures: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _digests: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any) -> str | None:
        if task_ctx is None:
            return None
        return self.digest(task_ctx.task.fn.__module__)

    def __getstate__(self) -> dict:
        # a copy sent to another process (a Dask worker) reads that process's tree and environment
        return {**self.__dict__, "_modules": {}, "_closures": {}, "_digests": {}}

    def reread(self) -> None:
        """Forget what was read: the next key reads the tree and the versions again (a long-lived process
        whose checkout or environment changed under it; benchmarks/cache_invalidation.py)."""
        self._modules.clear()
        self._closures.clear()
        self._digests.clear()

    def digest(self, module: str) -> str:
        """SHA-256 (24 hex digits) over the closure's modules and the versions of the packages it runs on."""
        if module not in self._digests:
            text = hashlib.sha256()
            for name in self.closure(module):
                text.update(f"{name} {self._module(name).syntax}\n".encode())
            text.update(environment.digest_of(self.packages(module)).encode())
            self._digests[module] = text.hexdigest()[:24]
        return self._digests[module]

    def closure(self, module: str) -> tuple[str, ...]:
        """Every project module `module` imports, transitively, itself and parent packages included; sorted."""
        if module not in self._closures:
            if self._path(module) is None:
                raise ValueError(f"{module!r} is not a module of the project under {self.root}: its code cannot be fingerprinted")
            found, queue = set(), [module]
            while queue:
                name = queue.pop()
                if name not in found:
                    found.add(name)
                    queue += self._module(name).project
            self._closures[module] = tuple(sorted(found))
        return self._closures[module]

    def packages(self, module: str) -> dict[str, str]:
        """{distribution: version} of the packages the closure imports and of everything they require
        (a name imported but not installed counts as `absent`: installing it changes the key)."""
        imported = {top for name in self.closure(module) for top in self._module(name).external} - ORCHESTRATION
        by_module = _distributions_by_module()
        distributions = {canonical for top in imported for canonical in by_module.get(top, ())}
        installed = self.versions()
        versions = {name: installed.get(name, "absent") for name in environment.required_distributions(distributions)}
        versions |= {f"{top} (module)": "absent" for top in imported if top not in by_module}
        return versions

    def _module(self, module: str) -> ModuleSource:
        if module not in self._modules:
            self._modules[module] = self._read(module)
        return self._modules[module]

    def _read(self, module: str) -> ModuleSource:
        path = self._path(module)
        tree = ast.parse(path.read_bytes(), filename=str(path))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        named: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                named |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node.module, node.level, package)
                named.add(base)
                named |= {f"{base}.{alias.name}" for alias in node.names}  # `from pkg import submodule`
            elif _literal_import_module(node):
                named.add(node.args[0].value)
        named |= _declared_reads(tree)
        named |= {entry_point.module for group in _declared_reads(tree, "READS_ENTRY_POINTS") for entry_point in _entry_points(group)}
        project, external = set(), set()
        for name in named:
            top = name.split(".")[0]
            if top in PROJECT_PACKAGES:
                parts = name.split(".")
                # importing a.b.c runs a/__init__.py and a/b/__init__.py too
                project |= {".".join(parts[:n]) for n in range(1, len(parts) + 1) if self._path(".".join(parts[:n])) is not None}
            elif top not in sys.stdlib_module_names:
                external.add(top)
        syntax = hashlib.sha256(ast.dump(tree).encode()).hexdigest()
        return ModuleSource(syntax, frozenset(project - {module}), frozenset(external))

    def _path(self, module: str) -> Path | None:
        if module.split(".")[0] not in PROJECT_PACKAGES:
            return None
        base = self.root.joinpath(*module.split("."))
        for path in (base.with_suffix(".py"), base / "__init__.py"):
            if path.is_file():
                return path
        return None


def _absolute(module: str | None, level: int, package: str) -> str:
    """The dotted name a (possibly relative) `from … import` names."""
    if level == 0:
        return module or ""
    base = package.rsplit(".", level - 1)[0] if level > 1 else package
    return f"{base}.{module}" if module else base


def _entry_points(group: str) -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=group))


def _declared_reads(tree: ast.Module, name: str = "READS_PACKAGES") -> set[str]:
    """The string literals a module-level `READS_PACKAGES = (...)` (or another `name`; annotated or not) lists."""
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and target.id == name and isinstance(value, (ast.Tuple, ast.List)):
            return {element.value for element in value.elts if isinstance(element, ast.Constant) and isinstance(element.value, str)}
    return set()


def _literal_import_module(node: ast.AST) -> bool:
    """`importlib.import_module("a.b")` with a literal name: an import by another spelling."""
    return (
        isinstance(node, ast.Call)
        and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
        and len(node.args) >= 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and not node.args[0].value.startswith(".")
    )


@lru_cache(maxsize=1)
def _distributions_by_module() -> dict[str, tuple[str, ...]]:
    """{top-level module: canonical names of the distributions that install it}, read once per process."""
    return {
        top: tuple(sorted({environment.canonical(name) for name in names}))
        for top, names in importlib.metadata.packages_distributions().items()
    }


CODE = CodeClosure()


def code_digest(module: str) -> str:
    """The digest of the code that computes what `module` produces (`CodeClosure.digest`): what a
    stage writes into a directory named by it is never overwritten by another version of the code."""
    return CODE.digest(module)
