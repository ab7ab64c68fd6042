"""End to end: the CLI runs the benchmark flow on the smoke config in real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def prunebench(*args: str, timeout: int = 900, own_server: bool = False) -> subprocess.CompletedProcess:
    """`prunebench ARGS` in a process of its own. A run talks to this test process's Prefect API
    (`shared_api_url`), as a user's run does to theirs through PREFECT_API_URL; `own_server` runs it as
    it runs by default, starting and stopping a temporary server of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    if not own_server and args and args[0] in ("run", "prune", "sweep"):
        env["PREFECT_API_URL"] = shared_api_url()
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


_SHARED_API: dict[str, str] = {}


def shared_api_url() -> str:
    """The URL of one Prefect API server per test process, started on first use and stopped when the
    process exits (and with it, if it dies: `tied_to_parent`). Each flow run of the end-to-end tests
    then saves the start and stop of a temporary server of its own (about 15 s on two cores); that
    default path keeps its own tests (test_faults: SIGKILL, SIGTERM, runs left Running; test_deploy)."""
    if "url" not in _SHARED_API:
        import atexit
        import shutil
        import tempfile

        from flows.deploy import TEMPORARY_API_ENVIRONMENT, api_command, free_port, server_urls, stop_process, tied_to_parent, wait_for_server

        home = Path(tempfile.mkdtemp(prefix="prunebench-tests-prefect-"))
        host, port = "127.0.0.1", free_port()
        url = server_urls(host, port)[1]
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}, **TEMPORARY_API_ENVIRONMENT,
               "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}  # fmt: skip
        process = subprocess.Popen(tied_to_parent(api_command(host, port)), env=env)
        wait_for_server(url, 180, process)
        atexit.register(lambda: (stop_process(process, grace_s=10), shutil.rmtree(home, ignore_errors=True)))
        _SHARED_API["url"] = url
    return _SHARED_API["url"]


def smoke_config(tmp: Path, cache_dir: Path, **study_changes) -> Path:
    config = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    config["output"] = {"database": str(tmp / "results.duckdb"), "workdir": str(tmp / "work"), "cache": str(cache_dir)}
    config["studies"][0].update(study_changes)
    path = tmp / "smoke.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def query(database: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(database), read_only=True) as connection:
        return connection.execute(sql).fetchall()


@pytest.fixture(scope="module")
def smoke_run(module_tmp, cache_dir):
    tmp = module_tmp("smoke")
    config = smoke_config(tmp, cache_dir)
    first = prunebench("run", str(config))
    assert first.returncode == 0, first.stderr[-3000:]
    return tmp, config, first


def test_flow_records_every_method_and_prints_leaderboard(smoke_run):
    tmp, config, first = smoke_run
    database = tmp / "results.duckdb"
    methods = sorted(row[0] for row in query(database, "SELECT method_label FROM runs"))
    assert methods == ["dense", "ecoflap(zeroth, per block)+wanda 50%", "magnitude 50%", "wanda 50%"]
    (n_results,) = query(database, "SELECT count(*) FROM results")[0]
    (n_distinct,) = query(database, "SELECT count(DISTINCT (run_id, suite, metric)) FROM results")[0]
    assert n_results == n_distinct > 0
    suites = {row[0] for row in query(database, "SELECT DISTINCT suite FROM results")}
    assert suites == {"jargon_ppl", "jargon_cloze", "jargon_mc"}
    sparsity = dict(query(database, "SELECT method_label, achieved_weight_sparsity FROM runs"))
    assert sparsity["dense"] == 0.0 and sparsity["wanda 50%"] == pytest.approx(0.5, abs=1e-3)
    assert query(database, "SELECT count(*) FROM runs WHERE target_drop_ratio IS NOT NULL OR layers_dropped IS NOT NULL") == [(0,)]
    primary = sorted(query(database, "SELECT DISTINCT suite, metric FROM results WHERE is_primary"))
    assert primary == [("jargon_cloze", "acc"), ("jargon_mc", "acc"), ("jargon_ppl", "word_perplexity")]
    # each item's scores are recorded, and each result is what its items aggregate to (acc: their mean;
    # word perplexity: exp(-Σ log-likelihood / Σ words))
    means = query(database, "SELECT r.value, avg(i.value), count(*), any_value(r.n_samples) FROM results r "
                            "JOIN item_scores i USING (run_id, suite, metric) WHERE r.metric = 'acc' GROUP BY r.run_id, r.suite, r.value")
    assert len(means) == 4 * 2 and all(value == pytest.approx(mean) and count == n == 4 for value, mean, count, n in means)
    weighted = query(database, "SELECT r.value, exp(-sum(i.value) / sum(i.weight)) FROM results r JOIN item_scores i "
                               "USING (run_id, suite, metric) WHERE r.metric = 'word_perplexity' GROUP BY r.run_id, r.value")
    assert len(weighted) == 4 and all(value == pytest.approx(perplexity) for value, perplexity in weighted)
    (n_layers,) = query(database, "SELECT count(*) FROM allocations a JOIN runs r USING (run_id) WHERE r.method = 'wanda'")[0]
    assert n_layers == 30 * 7
    assert "wanda 50%" in first.stdout and "magnitude 50%" in first.stdout
    # every run names the environment that computed it: all installed versions, and the lock
    from flows.environment import LOCK, environment_digest, file_digest

    digests = set(query(database, "SELECT environment_digest, lock_digest FROM runs"))
    assert digests == {(environment_digest(), file_digest(LOCK))}
    # and the model: its files' contents, dtype and device
    from pruning.models.sources import checkpoint_digest
    from pruning.specs import model_identity

    checkpoint = Path(yaml.safe_load(config.read_text())["output"]["cache"]) / "models" / "smollm2-135m"
    models = set(query(database, "SELECT model, model_source, model_id, model_dtype, model_device FROM runs"))
    assert models == {("smollm2-135m", "packaged:smollm2-135m",
                       model_identity(checkpoint_digest(checkpoint, tmp / "digests"), "float32", "cpu"), "float32", "cpu")}  # fmt: skip
    # the HTML report (plots included) is written beside the database and linked as an artifact
    page = (tmp / "report-smoke.html").read_text()
    assert "<svg" in page and "wanda 50%" in page


def test_second_run_recomputes_nothing(smoke_run):
    tmp, config, _ = smoke_run
    second = prunebench("run", str(config))
    assert second.returncode == 0, second.stderr[-3000:]
    database = tmp / "results.duckdb"
    flow_runs = query(database, "SELECT flow_run_id, min(started_at) FROM runs GROUP BY 1 ORDER BY 2")
    assert len(flow_runs) == 2
    latest = flow_runs[-1][0]
    stages = query(
        database,
        f"SELECT s.stage, s.cached FROM stages s JOIN runs r USING (run_id) WHERE r.flow_run_id = '{latest}'",
    )
    computing = [(stage, cached) for stage, cached in stages if stage in ("calibration", "scores", "prune", "evaluate")]
    assert "scores" in {stage for stage, _ in computing}
    assert computing and all(cached for _, cached in computing), computing
    # same numbers as the first run
    values = query(
        database,
        "SELECT r.method_label, s.suite, s.metric, count(DISTINCT s.value) FROM results s JOIN runs r USING (run_id) GROUP BY 1, 2, 3",
    )
    assert all(n == 1 for *_, n in values)


def test_report_json_has_the_documented_keys(smoke_run):
    tmp, _, _ = smoke_run
    report = prunebench("report", "--database", str(tmp / "results.duckdb"), "--format", "json")
    assert report.returncode == 0, report.stderr
    rows = json.loads(report.stdout)
    documented = {"model", "method", "method_id", "method_params", "achieved_weight_sparsity", "suite", "metric", "value",
                  "is_primary", "retention", "mean_retention"}  # fmt: skip
    assert rows and documented <= set(rows[0])
    wanda = next(row for row in rows if row["method"] == "wanda 50%")
    assert wanda["method_params"]["sparsity"] == 0.5 and len(wanda["method_id"]) == 16
    ppl = {r["method"]: r["value"] for r in rows if r["suite"] == "jargon_ppl" and r["metric"] == "word_perplexity"}
    assert ppl["dense"] < ppl["wanda 50%"] and ppl["dense"] < ppl["magnitude 50%"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"model": {"source": "/nonexistent/model/dir"}}, "model path /nonexistent/model/dir does not exist"),
        ({"methods": [{"name": "wanda", "sparsity": 1.0}]}, "sparsity: Input should be less than 1"),
        ({"methods": [{"name": "pruneall", "sparsity": 0.5}]}, "does not match any of the expected tags"),
        ({"eval": {"suites": ["no_such_suite_xyz"]}}, "no_such_suite_xyz"),
        ({"eval": {"suites": ["imageqa_mc"]}}, "'imageqa_mc' shows images and this is a text-only model"),
    ],
)
def test_bad_input_is_one_line_and_loses_nothing(smoke_run, tmp_path, cache_dir, change, message):
    tmp, _, _ = smoke_run
    database = tmp / "results.duckdb"
    before = query(database, "SELECT count(*) FROM results")
    config = smoke_config(tmp_path, cache_dir, **change)
    result = prunebench("run", str(config), "--database", str(database))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert query(database, "SELECT count(*) FROM results") == before


def test_corrupt_checkpoint_is_named(smoke_run, tmp_path, cache_dir):
    tmp, _, _ = smoke_run
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    config = smoke_config(tmp_path, cache_dir, model={"source": str(broken)})
    result = prunebench("run", str(config), "--database", str(tmp / "results.duckdb"))
    assert result.returncode == 2
    assert "cannot read weights" in result.stderr and str(broken) in result.stderr


def test_a_worse_result_than_last_time_ends_the_flow_regressed(smoke_run, tmp_path):
    tmp, config, _ = smoke_run
    database = tmp_path / "results.duckdb"  # a copy: the other tests keep theirs
    database.write_bytes((tmp / "results.duckdb").read_bytes())

    def wanda_did_far_better_last_time() -> None:
        # its results and its items alike (compare tests item by item): every answer right, and every
        # document ln 10 nats more likely per word, so its perplexities a tenth
        wanda_runs = "SELECT run_id FROM runs WHERE method_label = 'wanda 50%'"
        with duckdb.connect(str(database)) as connection:
            connection.execute(
                "UPDATE results SET value = CASE WHEN higher_is_better THEN 1.0 ELSE value / 10 END "
                f"WHERE run_id IN ({wanda_runs})"
            )
            connection.execute(
                "UPDATE item_scores SET value = CASE WHEN metric LIKE 'acc%' THEN 1.0 ELSE value + coalesce(weight, 1) * ln(10) END "
                f"WHERE run_id IN ({wanda_runs})"
            )

    wanda_did_far_better_last_time()
    (n_before,) = query(database, "SELECT count(*) FROM runs")[0]
    plain = prunebench("run", str(config), "--database", str(database))
    assert plain.returncode == 0, plain.stderr[-3000:]  # the run completed; it says what got worse
    assert "flow run state Regressed" in plain.stderr and "worse than the previous run" in plain.stderr
    assert "| worse" in plain.stdout and "wanda 50%" in plain.stdout  # the regression table follows the leaderboard
    (n_after,) = query(database, "SELECT count(*) FROM runs")[0]
    assert n_after == n_before + 4  # everything was still recorded
    unchanged = prunebench("run", str(config), "--database", str(database), "--fail-on-regression")
    assert unchanged.returncode == 0 and "Regressed" not in unchanged.stderr  # same results as last time
    wanda_did_far_better_last_time()
    gated = prunebench("run", str(config), "--database", str(database), "--fail-on-regression")
    assert gated.returncode == 1 and "flow run state Regressed" in gated.stderr, gated.stderr[-3000:]


def test_calibration_seeds_run_calibrated_methods_once_each_and_report_their_spread(smoke_run, tmp_path, cache_dir):
    config = smoke_config(tmp_path, cache_dir, calibration={"n_samples": 4, "seq_len": 64, "batch_size": 4, "seeds": [0, 1]},
                          methods=[{"name": "dense"}, {"name": "wanda", "sparsity": 0.5}])  # fmt: skip
    # the smoke run's workdir: seed 0 is the smoke run's own calibration set, so only seed 1 is computed
    tmp, _, _ = smoke_run
    written = yaml.safe_load(config.read_text())
    config.write_text(yaml.safe_dump({**written, "output": {**written["output"], "workdir": str(tmp / "work")}}))
    result = prunebench("run", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(query(tmp_path / "results.duckdb", "SELECT method_label, seed, cached FROM runs r JOIN stages s USING (run_id) "
                                                     "WHERE s.stage = 'evaluate'"))  # fmt: skip
    # dense reads no calibration: once; seed 0's evaluations come from the smoke run's cache
    assert runs == [("dense", 0, True), ("wanda 50%", 0, True), ("wanda 50%", 1, False)]
    wanda = next(line for line in result.stdout.splitlines() if line.startswith("| wanda 50%"))
    assert "2 seeds" in wanda and "[" in wanda  # the spread over the seeds, beside each value's interval
