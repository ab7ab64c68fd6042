"""The command line's own behaviour: one line per error, --debug for the traceback, a closed pipe."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows import cli
from tests.flows.test_benchmark import REPO


def _failing(error: BaseException):
    def command(args) -> int:
        raise error

    return command


def test_an_unexpected_failure_is_one_line_and_debug_shows_the_traceback(monkeypatch, capsys):
    monkeypatch.setattr(cli, "cmd_methods", _failing(RuntimeError("boom\nsecond line")))
    assert cli.main(["methods"]) == 1
    assert capsys.readouterr().err == "prunebench: error: RuntimeError: boom (an unexpected failure; --debug shows the traceback)\n"
    with pytest.raises(RuntimeError, match="boom"):
        cli.main(["--debug", "methods"])


def test_a_closed_pipe_ends_the_output_quietly(tmp_path):
    # `prunebench validate CONFIG | head -1`: the reader stops after one line of ~150 KB (more than a pipe holds)
    sparsities = ", ".join(f"{index / 4000:.5f}" for index in range(3000))
    config = tmp_path / "grid.yaml"
    config.write_text(f"name: grid\nstudies:\n  - model: {{source: packaged:smollm2-135m}}\n"
                      f"    methods: [{{name: wanda, sparsity: [{sparsities}]}}]\n    eval: {{suites: [jargon_ppl]}}\n")  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "flows.cli", "validate", str(config)], cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)  # fmt: skip
    first = process.stdout.readline()
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=60) == 0, stderr
    assert first and stderr == ""
