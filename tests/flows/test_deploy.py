"""Scheduled runs: cron validation, the unreachable-server error, and end to end a real Prefect server
on loopback, `prunebench deploy` serving a cron deployment, a run triggered now, its results in DuckDB."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from flows.deploy import (
    benchmark_parameters, cron_schedule, free_port, require_server, server_is_up, stop_process, wait_for_server,
)
from pruning.errors import ConfigError, PrunebenchError
from tests.flows.test_benchmark import REPO, prunebench, query


def tiny_config(tmp: Path, checkpoint: Path, cache_dir: Path, name: str = "deploy-smoke") -> Path:
    config = {
        "name": name,
        "studies": [{
            "model": {"source": str(checkpoint)},
            "methods": [{"name": "dense"}, {"name": "magnitude", "sparsity": 0.5}],
            "eval": {"suites": ["jargon_ppl"], "limit": 2},
        }],
        "output": {"database": str(tmp / "results.duckdb"), "workdir": str(tmp / "work"), "cache": str(cache_dir)},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_cron_schedule_accepts_five_fields_and_a_timezone():
    schedule = cron_schedule("0 3 * * 1-5", "Europe/Paris")
    assert (schedule.cron, schedule.timezone) == ("0 3 * * 1-5", "Europe/Paris")


@pytest.mark.parametrize("cron", ["0 3 * *", "61 3 * * *", "every day", "H 3 * * *"])
def test_cron_schedule_refuses_a_bad_expression(cron):
    with pytest.raises(ConfigError, match=r"--cron .*minute hour day-of-month month day-of-week"):
        cron_schedule(cron)


def test_cron_schedule_refuses_an_unknown_timezone():
    with pytest.raises(ConfigError, match=r"--timezone 'Mars/Olympus'"):
        cron_schedule("0 3 * * *", "Mars/Olympus")


def test_unreachable_server_names_the_url_and_how_to_start_one():
    url = f"http://127.0.0.1:{free_port()}/api"
    assert not server_is_up(url)
    with pytest.raises(PrunebenchError, match=rf"no Prefect server answers at {url}: start one with `prunebench server`"):
        require_server(url)


def test_wait_for_server_is_bounded():
    started = time.monotonic()
    with pytest.raises(PrunebenchError, match="did not answer"):
        wait_for_server(f"http://127.0.0.1:{free_port()}/api", timeout_s=1.0)
    assert time.monotonic() - started < 10


def test_parameters_are_absolute_paths(tmp_path, monkeypatch):
    from flows.config import load_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({
        "name": "c", "studies": [{"model": {"source": "packaged:smollm2-135m"}, "methods": [{"name": "dense"}],
                                  "eval": {"suites": ["jargon_ppl"]}}],
    }))
    parameters = benchmark_parameters(Path("c.yaml"), load_config("c.yaml"))
    assert parameters == {
        "config_path": str(tmp_path / "c.yaml"),
        "database": str(tmp_path / "results" / "prunebench.duckdb"),
        "workdir": str(tmp_path / ".prunebench"),
    }


def test_deploy_checks_cron_then_server_before_anything_loads(tmp_path, cache_dir):
    config = tiny_config(tmp_path, tmp_path / "no-model-needed", cache_dir)
    url = f"http://127.0.0.1:{free_port()}/api"
    bad_cron = prunebench("deploy", str(config), "--cron", "0 3 * *", "--api-url", url, timeout=120)
    assert bad_cron.returncode == 2
    assert "--cron '0 3 * *'" in bad_cron.stderr and url not in bad_cron.stderr
    no_server = prunebench("deploy", str(config), "--cron", "0 3 * * *", "--api-url", url, timeout=120)
    assert no_server.returncode == 2
    assert f"no Prefect server answers at {url}" in no_server.stderr and "prunebench server" in no_server.stderr
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("name: x\nstudies: []\n")
    refused = prunebench("deploy", str(bad_config), "--cron", "0 3 * * *", "--api-url", url, timeout=120)
    assert refused.returncode == 2 and "studies" in refused.stderr


# --- end to end: a real server on loopback ----------------------------------------------------------


def start(*args: str, log: Path, env: dict[str, str], module: str = "flows.cli") -> subprocess.Popen:
    """A command in its own session (so whatever it leaves behind can be ended by group), output to `log`."""
    with log.open("w") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", module, *args],
            cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True,
        )


def stop(process: subprocess.Popen) -> int | None:
    returncode = stop_process(process, grace_s=30)
    try:  # anything left in its session (a flow-run process)
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return returncode


def api(url: str, path: str, body: dict | None = None):
    request = urllib.request.Request(
        f"{url}{path}", data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def poll(what: str, probe, timeout_s: float, *logs: Path):
    """Call `probe` until it returns something truthy; fail with the processes' logs after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = probe()
        except OSError:  # urllib's errors: 404 while a deployment is not there yet, a refused connection
            found = None
        if found:
            return found
        time.sleep(0.5)
    tails = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in logs)
    pytest.fail(f"{what}: not within {timeout_s:.0f} s\n{tails}")


def prefect_cli(url: str, home: Path, *args: str) -> subprocess.CompletedProcess:
    """The `prefect` CLI of this venv, as a user on another shell would run it against the server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    result = subprocess.run(
        [sys.executable, "-m", "prefect", *args], env={**env, "PREFECT_API_URL": url, "PREFECT_HOME": str(home)},
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def triggered_run(url: str, home: Path, deployment: str) -> str:
    """`prefect deployment run`: a flow run of the deployment, scheduled now; its id."""
    (flow_run_id,) = re.findall(r"UUID: ([0-9a-f-]{36})", prefect_cli(url, home, "deployment", "run", deployment).stdout)
    return flow_run_id


def final_state(url: str, flow_run_id: str, timeout_s: float, *logs: Path) -> dict:
    def finished():
        state = api(url, f"/flow_runs/{flow_run_id}")["state"]
        return state if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    return poll(f"flow run {flow_run_id} finishes", finished, timeout_s, *logs)


@pytest.fixture(scope="module")
def tiny_llama(module_tmp, smollm2_checkpoint) -> Path:
    """A 2-layer random-init Llama with SmolLM2's tokenizer (as tests/flows/test_benchmark_layerdrop.py)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pruning.models.sources import save_checkpoint

    tokenizer = AutoTokenizer.from_pretrained(smollm2_checkpoint)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    return save_checkpoint(LlamaForCausalLM(config), tokenizer, module_tmp("deploy") / "tiny-llama")


def start_server(tmp: Path) -> tuple[subprocess.Popen, int, str, Path]:
    """`prunebench server` on a free loopback port with a Prefect home in `tmp`: (process, port, API URL, log)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    log = tmp / "server.log"
    return start("server", "--port", str(port), "--workdir", str(tmp / "work"), log=log, env=env), port, f"http://127.0.0.1:{port}/api", log


@pytest.fixture(scope="module")
def server(module_tmp):
    """`prunebench server` on a free loopback port with a temporary Prefect home; stopped by Ctrl-C at the end."""
    process, port, url, log = start_server(module_tmp("server"))
    try:
        poll("the Prefect server answers", lambda: server_is_up(url), 180, log)
        printed = poll("the server prints its URLs", lambda: "Prefect UI:" in (text := log.read_text()) and text, 30, log)
        assert f"Prefect UI:       http://127.0.0.1:{port}\n" in printed and f"PREFECT_API_URL:  {url}\n" in printed
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert b"<html" in page.read()  # the UI is served ...
        assert api(f"http://127.0.0.1:{port}", "/ui-settings")["api_url"] == url  # ... and talks to this port, not 4200
        yield url, log
    finally:
        returncode = stop(process)
    assert returncode == 0, log.read_text()[-3000:]  # our process: stopped by the Ctrl-C it forwarded
    assert "Server stopped!" in log.read_text()  # Prefect's: shut down cleanly, not killed


@pytest.mark.e2e
def test_a_second_server_on_a_busy_port_fails_before_printing_anything(server, tmp_path):
    port = server[0].split(":")[-1].split("/")[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    second = subprocess.run([sys.executable, "-m", "flows.cli", "server", "--port", port, "--workdir", str(tmp_path / "work")],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert second.returncode == 2
    assert second.stderr.strip() == (f"prunebench: error: port {port} on 127.0.0.1 is in use (a Prefect server answers there): "
                                     "stop what listens there, or choose another with --port")  # fmt: skip
    assert "Prefect UI" not in second.stdout


@pytest.mark.e2e
def test_a_server_killed_with_sigkill_takes_its_prefect_server_along(tmp_path):
    process, _, url, log = start_server(tmp_path)
    try:
        poll("the Prefect server answers", lambda: server_is_up(url), 180, log)
        process.kill()
        process.wait(timeout=30)
        poll("the Prefect server stops with the process that started it", lambda: not server_is_up(url, timeout_s=0.5), 30, log)
    finally:
        stop(process)


@pytest.mark.e2e
def test_served_cron_deployment_runs_and_records_in_duckdb(server, tmp_path, tiny_llama, cache_dir):
    url, server_log = server
    config = tiny_config(tmp_path, tiny_llama, cache_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PREFECT_RUNNER_POLL_FREQUENCY"] = "1"  # the runner looks for due runs every second, not every 10
    log = tmp_path / "deploy.log"
    served = start("deploy", str(config), "--cron", "0 3 * * *", "--api-url", url, log=log, env=env)
    try:
        deployment = poll("the deployment is registered", lambda: api(url, "/deployments/name/benchmark/deploy-smoke"),
                          180, log, server_log)
        (schedule,) = deployment["schedules"]
        assert schedule["schedule"]["cron"] == "0 3 * * *" and schedule["schedule"]["timezone"] == "UTC"
        assert schedule["active"] and not deployment["paused"]
        assert deployment["entrypoint"] == "flows.benchmark.benchmark"
        assert deployment["parameters"] == {
            "config_path": str(config), "database": str(tmp_path / "results.duckdb"), "workdir": str(tmp_path / "work"),
        }

        flow_run_id = triggered_run(url, tmp_path / "client", "benchmark/deploy-smoke")
        assert final_state(url, flow_run_id, 240, log)["type"] == "COMPLETED"
        recorded = query(tmp_path / "results.duckdb", "SELECT method_label, flow_run_id FROM runs ORDER BY method_label")
        assert recorded == [("dense", flow_run_id), ("magnitude 50%", flow_run_id)]
        perplexities = query(tmp_path / "results.duckdb", "SELECT value FROM results WHERE suite = 'jargon_ppl' AND metric = 'word_perplexity'")
        assert len(perplexities) == 2 and all(value > 1 for (value,) in perplexities)

        assert stop_process(served) == 0  # Ctrl-C: the runner stops serving ...
        assert api(url, f"/deployments/{deployment['id']}")["paused"]  # ... and pauses the schedule
    finally:
        stop(served)

    # deploying again updates the same deployment: the new schedule replaces the old one, and it is active again
    again = prunebench("deploy", str(config), "--cron", "15 3 * * 1-5", "--api-url", url, "--no-serve", timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    updated = api(url, "/deployments/name/benchmark/deploy-smoke")
    assert updated["id"] == deployment["id"] and not updated["paused"]
    assert [s["schedule"]["cron"] for s in updated["schedules"]] == ["15 3 * * 1-5"]


@pytest.mark.e2e
def test_deployment_in_a_process_pool_is_run_by_a_worker(server, tmp_path, tiny_llama, cache_dir):
    url, server_log = server
    config = tiny_config(tmp_path, tiny_llama, cache_dir, name="pooled")
    missing = prunebench("deploy", str(config), "--cron", "0 4 * * *", "--api-url", url, "--pool", "no-such-pool", timeout=300)
    assert missing.returncode == 2 and "prefect work-pool create no-such-pool --type process" in missing.stderr

    prefect_cli(url, tmp_path / "client", "work-pool", "create", "gpus", "--type", "process")
    created = prunebench("deploy", str(config), "--cron", "0 4 * * *", "--api-url", url, "--pool", "gpus", timeout=300)
    assert created.returncode == 0, created.stderr[-3000:]
    deployment = api(url, "/deployments/name/benchmark/pooled")
    assert deployment["work_pool_name"] == "gpus" and deployment["entrypoint"] == "flows.benchmark.benchmark"
    assert deployment["schedules"][0]["schedule"]["cron"] == "0 4 * * *"
    job_env = deployment["job_variables"]["env"]
    assert job_env["HF_HUB_OFFLINE"] == "1" and job_env["PREFECT_RESULTS_PERSIST_BY_DEFAULT"] == "true"
    assert "PREFECT_HOME" not in job_env  # the worker machine keeps its own

    flow_run_id = triggered_run(url, tmp_path / "client", "benchmark/pooled")
    # a worker as on a GPU machine: only the API URL in common with the deploying machine
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=url, PREFECT_HOME=str(tmp_path / "worker-home"))
    log = tmp_path / "worker.log"
    worker = start("worker", "start", "--pool", "gpus", "--run-once", log=log, env=env, module="prefect")
    try:
        assert final_state(url, flow_run_id, 240, log, server_log)["type"] == "COMPLETED"
    finally:
        stop(worker)
    recorded = query(tmp_path / "results.duckdb", "SELECT method_label, flow_run_id FROM runs ORDER BY method_label")
    assert recorded == [("dense", flow_run_id), ("magnitude 50%", flow_run_id)]
