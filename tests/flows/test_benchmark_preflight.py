"""`prunebench run` fails in seconds, before any model loads or trains, when an evaluation backend cannot run."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from flows.config import load_config
from flows.environment import Difference

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
# as filelock 4.3 shipped: the package and its own modules work, `import filelock._api` fails (the module is gone)
BROKEN_FILELOCK = """
import importlib, pkgutil, sys
import filelock
for module in pkgutil.iter_modules(filelock.__path__):
    importlib.import_module(f"filelock.{module.name}")
sys.modules["filelock._api"] = None
"""


def toy_vlm_config(tmp: Path) -> Path:
    config = {
        "name": "preflight",
        "studies": [{"model": {"source": "packaged:toy-vlm"}, "methods": [{"name": "dense"}], "eval": {"suites": ["imageqa_mc"]}}],
        # a cache of its own: no trained toy-vlm in it, so getting past the preflight would mean minutes of training
        "output": {"database": str(tmp / "results.duckdb"), "workdir": str(tmp / "work"), "cache": str(tmp / "cache")},
    }
    path = tmp / "preflight.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_broken_lmms_eval_stops_the_run_before_the_toy_vlm_trains(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BROKEN_FILELOCK)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PYTHONPATH"] = str(site)
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(toy_vlm_config(tmp_path))],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("prunebench: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "lmms-eval cannot evaluate in this environment (ModuleNotFoundError: import of filelock._api halted" in errors[0]
    assert "lmms_eval/evaluator.py:" in errors[0] and "filelock" in errors[0].split("; details in")[0].split(";")[-1]
    assert elapsed < 120, elapsed  # seconds, not the 18 minutes of 2026-12-06
    cache = tmp_path / "cache"
    assert not (cache / "models").exists() and not (tmp_path / "results.duckdb").exists()  # nothing loaded, nothing recorded
    assert not list((cache / "rehearsals").glob("*.ok"))  # a failed rehearsal is not remembered
    log = cache / "rehearsals" / "failed.log"  # but its output and traceback are kept, and named
    assert errors[0].endswith(f"; details in {log}")
    assert "Traceback" in log.read_text() and "filelock._api" in log.read_text()


def test_an_environment_that_differs_from_the_lock_is_named_and_a_passed_rehearsal_remembered(tmp_path, capsys, monkeypatch):
    from flows import benchmark, environment

    config = load_config(toy_vlm_config(tmp_path))
    monkeypatch.setattr(environment, "environment_differences", lambda: [Difference("filelock", "4.2.11", "4.3.2")])
    benchmark.check_environment(config, [], ["some_lmms_task"])
    warning = capsys.readouterr().err
    assert warning.startswith("prunebench: warning: this environment differs from requirements.lock in 1 package(s) "
                              "(filelock 4.3.2 is installed, the lock pins filelock==4.2.11)")  # fmt: skip
    (marker,) = (tmp_path / "cache" / "rehearsals").glob("*.ok")
    assert marker.read_text() == "lmms-eval (import only)\n"
    calls = []
    monkeypatch.setattr("evals.rehearsal.rehearse", lambda *args, **kwargs: calls.append(args) or [])
    benchmark.check_environment(config, [], ["some_lmms_task"])
    assert calls == []  # same environment, code and suites: not rehearsed again
    benchmark.check_environment(config, ["jargon_ppl"], ["some_lmms_task"])
    assert len(calls) == 1  # other suites: rehearsed


def smoke_like_config(tmp: Path, cache_dir: Path, **calibration) -> Path:
    config = {
        "name": "preflight-text",
        "studies": [{"model": {"source": "packaged:smollm2-135m"}, "calibration": {"n_samples": 2, "seq_len": 32, **calibration},
                     "methods": [{"name": "dense"}, {"name": "wanda", "sparsity": 0.5}], "eval": {"suites": ["jargon_ppl"], "limit": 2}}],
        "output": {"database": str(tmp / "results.duckdb"), "workdir": str(tmp / "work"), "cache": str(cache_dir)},
    }  # fmt: skip
    path = tmp / "preflight-text.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize(
    "setup, calibration, expected",
    [
        ("corrupt database", {}, "results.duckdb is not a DuckDB database (corrupt, or another format); it was left as it is"),
        ("none", {"seq_len": 100_000_000}, "calibration.seq_len=100000000: the 'jargon' calibration text has"),
        ("none", {"corpus": "./no-such-corpus.txt"}, "calibration.corpus no-such-corpus.txt: no such file or folder"),
        ("none", {"corpus": "nobody/no-such-dataset"}, "calibration.corpus 'nobody/no-such-dataset' is no built-in corpus"),
    ],
)
def test_what_would_fail_at_recording_or_calibration_fails_before_prefect_starts(tmp_path, cache_dir, setup, calibration, expected):
    if setup == "corrupt database":
        (tmp_path / "results.duckdb").write_bytes(b"not a database" * 100)
    config = smoke_like_config(tmp_path, cache_dir, **calibration)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    result = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(config)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr[-2000:]
    assert "Beginning flow run" not in result.stdout + result.stderr  # refused before the flow (and its API) started
    # `validate` finds what needs no computing, `validate --preflight` also the rest of what `run` checks here
    # (opening the database for writing), the same way (in this process: `validate` alone sets no Prefect home)
    status, _, stderr = validate_here(config)
    if setup == "corrupt database":
        assert status == 0, stderr
        checked = subprocess.run([sys.executable, "-m", "flows.cli", "validate", "--preflight", str(config)],
                                 cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert checked.returncode == 2 and checked.stderr.count("\n") == 1 and expected in checked.stderr, checked.stderr[-2000:]
    else:
        assert status == 2 and stderr.count("\n") == 1 and expected in stderr, stderr


def validate_here(config: Path) -> tuple[int, str, str]:
    """`prunebench validate CONFIG` in this process: (exit status, stdout, stderr)."""
    import contextlib
    import io

    from flows import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = cli.main(["validate", str(config)])
    return status, out.getvalue(), err.getvalue()


@pytest.mark.parametrize(
    "model, suites, expected",
    [
        ({"source": "/no/such/model"}, ["jargon_ppl"], "model path /no/such/model does not exist"),
        ({"source": "someone/not-cached"}, ["jargon_ppl"], "is not in the local Hugging Face cache"),
        ({"source": "packaged:smollm2-135m", "device": "cuda"}, ["jargon_ppl"], "this machine has no CUDA device"),
        ({"source": "packaged:smollm2-135m"}, ["jargon_pp"], "jargon_pp"),
    ],
)
def test_validate_finds_what_needs_no_computing(tmp_path, cache_dir, model, suites, expected):
    config = yaml.safe_load(smoke_like_config(tmp_path, cache_dir).read_text())
    config["studies"][0]["model"] = model
    config["studies"][0]["eval"]["suites"] = suites
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    status, _, stderr = validate_here(path)
    assert status == 2 and stderr.count("\n") == 1 and expected in stderr, stderr
    assert not (tmp_path / "results.duckdb").exists() and not (tmp_path / "work").exists()  # nothing created


def test_validate_preflight_passes_a_config_this_machine_can_run(tmp_path, cache_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    config = smoke_like_config(tmp_path, cache_dir)
    result = subprocess.run([sys.executable, "-m", "flows.cli", "validate", "--preflight", str(config)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0 and result.stdout.endswith(f"{config}: ok (and this machine can run it)\n"), result.stderr[-2000:]
    from reports.store import ResultStore

    assert ResultStore(tmp_path / "results.duckdb").runs() == []  # opened for writing (so created, empty), nothing run


def test_a_family_no_adapter_covers_fails_once_in_one_line_before_prefect_starts(tmp_path):
    """Checked from config.json on the meta device: no weight loads, no stage runs (OPT/Phi-3/GPT-NeoX once
    failed inside every stage, 9 times with two tracebacks, after 40 s of loading)."""
    from transformers import GPTBigCodeConfig, GPTBigCodeForCausalLM

    checkpoint = tmp_path / "tiny-starcoder"
    GPTBigCodeForCausalLM(GPTBigCodeConfig(n_embd=32, n_layer=2, n_head=2, vocab_size=64, n_positions=32)).save_pretrained(checkpoint)
    config = {
        "name": "preflight-adapter",
        "studies": [{"model": {"source": str(checkpoint)}, "methods": [{"name": "magnitude", "sparsity": 0.5}], "eval": {"suites": ["jargon_ppl"]}}],
        "output": {"database": str(tmp_path / "results.duckdb"), "workdir": str(tmp_path / "work"), "cache": str(tmp_path / "cache")},
    }
    path = tmp_path / "adapter.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    result = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(path)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.startswith("prunebench: error: no adapter for model family 'gpt_bigcode'")
    assert "model.adapter" in result.stderr and "prunebench.adapters" in result.stderr
    assert "Beginning flow run" not in result.stdout + result.stderr and not (tmp_path / "results.duckdb").exists()


def test_a_chat_template_the_model_lacks_is_refused_before_anything_loads(tmp_path, tiny_vlm_checkpoint):
    from flows.benchmark import preflight
    from pruning.errors import ConfigError

    def config(checkpoint: Path, suites: list[str]):
        return load_config(_written(tmp_path, {
            "name": "chat", "output": {"database": str(tmp_path / "results.duckdb"), "cache": str(tmp_path / "cache")},
            "studies": [{"model": {"source": str(checkpoint)}, "methods": [{"name": "dense"}],
                         "eval": {"suites": suites, "apply_chat_template": True}}],
        }))  # fmt: skip

    vlm = tiny_vlm_checkpoint(tmp_path / "tiny-vlm", text_layers=1)  # its word-level tokenizer has no chat template
    with pytest.raises(ConfigError, match="eval.apply_chat_template: .* image suites through lmms-eval"):
        preflight(config(vlm, ["imageqa_mc"]))
    with pytest.raises(ConfigError, match=r"eval.apply_chat_template: the tokenizer of .*tiny-vlm has no chat template"):
        preflight(config(vlm, ["jargon_mc"]))


def _written(tmp: Path, config: dict) -> Path:
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
