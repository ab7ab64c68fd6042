"""Leaderboard: latest run per method, retention vs the latest dense run, and the renderings."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from pruning.specs import method_identity
from reports.leaderboard import leaderboard, mean_retention, retention, to_json, to_markdown, to_text
from reports.records import ItemScore, ResultRow, RunBundle, RunRecord
from reports.statistics import perplexity
from reports.sections import report_sections
from reports.store import ResultStore
from tests.reports.synthetic import synthetic_bundle

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


def run(run_id: str, method: str, label: str, hours: float, ppl: float, acc: float, *,
        model: str = "smollm2-135m", experiment: str = "main", sparsity: float = 0.5, source: str | None = None,
        dtype: str | None = None, model_id: str | None = None, **params) -> RunBundle:  # fmt: skip
    sparsity = 0.0 if method == "dense" else sparsity
    finished = T0 + timedelta(hours=hours)
    method_params = {"name": method, **({"sparsity": sparsity} if method != "dense" else {}), **params}
    if label.endswith("2:4"):
        method_params["n_m"] = "2:4"
    record = RunRecord(
        run_id=run_id, flow_run_id=f"flow-{hours}", experiment=experiment, config_hash=f"{model}/{label}",
        model=model, model_source=source or f"packaged:{model}", model_id=model_id, model_dtype=dtype,
        model_device=dtype and "cpu", method=method, method_id=method_identity(method_params),
        method_label=label, method_params=json.dumps(method_params),
        target_weight_sparsity=sparsity, achieved_weight_sparsity=sparsity * 0.998,
        params_total=1000, params_pruned=int(800 * sparsity), params_pruned_share=0.8 * sparsity,
        seed=0, git_commit="abc", package_versions="{}", host="box", device="cpu",
        started_at=finished - timedelta(minutes=5), finished_at=finished,
    )  # fmt: skip
    return RunBundle(
        run=record,
        results=[
            ResultRow(run_id=run_id, suite="jargon_ppl", metric="word_perplexity", value=ppl, higher_is_better=False,
                      is_primary=True),
            ResultRow(run_id=run_id, suite="jargon_mc", metric="acc", value=acc, stderr=0.02, higher_is_better=True,
                      is_primary=True),
        ],
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> ResultStore:
    store = ResultStore(tmp_path_factory.mktemp("leaderboard") / "results.duckdb")
    for bundle in (
        run("dense-old", "dense", "dense", 0, ppl=12.0, acc=0.45),
        run("dense-new", "dense", "dense", 2, ppl=10.0, acc=0.5),
        run("wanda-old", "wanda", "wanda 50%", 0, ppl=40.0, acc=0.2),
        run("wanda-new", "wanda", "wanda 50%", 1, ppl=20.0, acc=0.4),
        run("magnitude", "magnitude", "magnitude 50%", 1, ppl=50.0, acc=0.25),
        run("ablation", "wanda", "wanda 2:4", 3, ppl=30.0, acc=0.3, experiment="ablation"),
        run("other-wanda", "wanda", "wanda 50%", 1, ppl=float("inf"), acc=0.1, model="toy-vlm"),
    ):
        store.record(bundle)
    return store


def by_key(rows):
    return {(row.model, row.method, row.metric): row for row in rows}


def test_latest_run_per_method_and_retention_vs_latest_dense(store):
    rows = by_key(leaderboard(store, model="smollm2-135m", experiment="main"))
    assert {row.run_id for row in rows.values()} == {"dense-new", "wanda-new", "magnitude"}
    assert rows["smollm2-135m", "dense", "word_perplexity"].retention == 1.0
    assert rows["smollm2-135m", "wanda 50%", "word_perplexity"].retention == pytest.approx(10 / 20)  # dense / value
    assert rows["smollm2-135m", "wanda 50%", "acc"].retention == pytest.approx(0.4 / 0.5)  # value / dense
    assert rows["smollm2-135m", "magnitude 50%", "word_perplexity"].retention == pytest.approx(0.2)
    wanda = rows["smollm2-135m", "wanda 50%", "acc"]
    assert (wanda.method_name, wanda.target_weight_sparsity, wanda.achieved_weight_sparsity, wanda.stderr) == ("wanda", 0.5, 0.499, 0.02)
    assert wanda.target_drop_ratio is None and wanda.params_pruned_share == pytest.approx(0.4)
    assert wanda.finished_at == T0 + timedelta(hours=1)


def test_rows_come_dense_first_and_filters_apply(store):
    rows = leaderboard(store)
    assert [row.model for row in rows] == sorted(row.model for row in rows)
    assert rows[0].method == rows[1].method == "dense"
    assert {row.method for row in leaderboard(store, experiment="ablation")} == {"wanda 2:4"}
    assert {row.model for row in leaderboard(store, model="toy-vlm")} == {"toy-vlm"}
    assert leaderboard(store, model="no-such-model") == []


def test_without_a_dense_run_there_is_no_retention(store):
    rows = leaderboard(store, model="toy-vlm")
    assert rows and all(row.retention is None for row in rows)
    # and the dense baseline is looked for only among the runs the filters keep
    assert all(row.retention is None for row in leaderboard(store, experiment="ablation"))


@pytest.mark.parametrize(
    "value, dense, higher_is_better, expected",
    [
        (0.4, 0.5, True, 0.8),
        (20.0, 10.0, False, 0.5),
        (5.0, 10.0, False, 2.0),  # better than dense
        (float("inf"), 10.0, False, 0.0),  # a diverged perplexity keeps nothing
        (0.3, None, True, None),
        (0.3, 0.0, True, None),
        (0.0, 10.0, False, None),
        (float("nan"), 0.5, True, None),
    ],
)
def test_retention(value, dense, higher_is_better, expected):
    assert retention(value, dense, higher_is_better) == (pytest.approx(expected) if expected is not None else None)


def test_json_has_the_documented_keys_and_is_strict(store):
    objects = json.loads(to_json(leaderboard(store)), parse_constant=lambda name: pytest.fail(f"non-JSON {name}"))
    assert {"model", "method", "method_id", "method_params", "target_weight_sparsity", "achieved_weight_sparsity",
            "target_drop_ratio", "layers_dropped", "layers_total", "params_pruned_share", "suite", "metric", "value",
            "retention", "is_primary", "mean_retention", "higher_is_better", "run_id", "finished_at", "stderr",
            "method_name", "model_id"} <= set(objects[0])  # fmt: skip
    diverged = [o for o in objects if o["model"] == "toy-vlm" and o["metric"] == "word_perplexity"]
    assert diverged[0]["value"] is None  # infinity has no strict-JSON spelling
    wanda = [o for o in objects if o["method"] == "wanda 50%" and o["model"] == "smollm2-135m" and o["metric"] == "acc"]
    assert wanda[0]["value"] == 0.4 and wanda[0]["achieved_weight_sparsity"] == 0.499
    assert wanda[0]["method_params"] == {"name": "wanda", "sparsity": 0.5}  # an object, not a JSON string
    assert wanda[0]["method_id"] == method_identity({"name": "wanda", "sparsity": 0.5})
    assert wanda[0]["mean_retention"] == pytest.approx((0.8 + 0.5) / 2)


def test_markdown_ranks_dense_first_then_by_mean_retention(store):
    markdown = to_markdown(leaderboard(store, experiment="main"))
    lines = markdown.splitlines()
    table = lines[lines.index("### smollm2-135m") + 2 :]
    assert [cell.strip() for cell in table[0].split("|")[1:-1]] == [
        "method", "sparsity", "params pruned", "jargon_mc acc ↑ *", "jargon_ppl word_perplexity ↓ *", "mean retention"
    ]  # fmt: skip
    methods = [line.split("|")[1].strip() for line in table[2:5]]
    assert methods == ["dense", "wanda 50%", "magnitude 50%"]  # means 100%, 65%, 35%
    assert [cell.strip() for cell in table[3].split("|")[2:-1]] == ["49.9%", "40.0%", "0.400 (80.0%)", "20.00 (50.0%)", "65.0%"]
    assert "10.00 (100.0%)" in table[2]
    assert "### toy-vlm" in markdown and "no dense run of toy-vlm" in markdown and "inf" in markdown
    assert "↓ lower is better" in markdown and "retention" in lines[-1] + lines[-2]


def test_metrics_filter_sets_columns_and_the_mean(store):
    markdown = to_markdown(leaderboard(store, model="smollm2-135m", experiment="main"), metrics=["jargon_ppl"])
    assert "acc" not in markdown
    wanda = next(line for line in markdown.splitlines() if line.startswith("| wanda 50%"))
    assert wanda.rstrip(" |").endswith("50.0%")  # the mean over the one column shown


def test_text_is_an_aligned_table_without_markdown(store):
    text = to_text(leaderboard(store, model="smollm2-135m"))
    lines = text.splitlines()
    assert lines[0] == "smollm2-135m" and "|" not in text and "###" not in text
    assert [line.split("  ")[0] for line in lines[3:7]] == ["dense", "wanda 50%", "wanda 2:4", "magnitude 50%"]
    assert len({len(line) for line in lines[1:4]}) == 1  # header, rule and rows line up
    assert "↓ lower is better" in text


def test_empty_store_renders_a_message(tmp_path):
    rows = leaderboard(ResultStore(tmp_path / "none.duckdb"))
    assert rows == [] and "no results" in to_markdown(rows) and "no results" in to_text(rows) and to_json(rows) == "[]"


def test_methods_of_one_label_but_other_parameters_are_rows_of_their_own(tmp_path):
    """Keyed on identity: two SparseGPT block sizes are two rows, each with its own latest run, whether
    their labels tell them apart (the config's) or not (older runs, where the start of the id does)."""
    store = ResultStore(tmp_path / "results.duckdb")
    for bundle in (
        run("dense", "dense", "dense", 0, ppl=10.0, acc=0.5),
        run("bs32-old", "sparsegpt", "sparsegpt 50% (blocksize=32)", 1, ppl=40.0, acc=0.2, blocksize=32),
        run("bs32", "sparsegpt", "sparsegpt 50% (blocksize=32)", 2, ppl=20.0, acc=0.4, blocksize=32),
        run("bs128", "sparsegpt", "sparsegpt 50% (blocksize=128)", 1, ppl=25.0, acc=0.3, blocksize=128),
        run("old-32", "sparsegpt", "sparsegpt 60%", 1, ppl=30.0, acc=0.3, sparsity=0.6, blocksize=32),
        run("old-128", "sparsegpt", "sparsegpt 60%", 1, ppl=50.0, acc=0.2, sparsity=0.6, blocksize=128),
    ):
        store.record(bundle)
    rows = leaderboard(store)
    assert {row.run_id for row in rows} == {"dense", "bs32", "bs128", "old-32", "old-128"}
    assert len({row.method_id for row in rows}) == 5
    lines = to_text(rows).splitlines()
    methods = [line.split("  ")[0] for line in lines[3:8]]
    id32, id128 = (method_identity({"name": "sparsegpt", "sparsity": 0.6, "blocksize": size}) for size in (32, 128))
    assert methods == ["dense", "sparsegpt 50% (blocksize=32)", "sparsegpt 50% (blocksize=128)",
                       f"sparsegpt 60% (id {id32[:6]})", f"sparsegpt 60% (id {id128[:6]})"]  # fmt: skip


def _models_of(rows) -> dict[str, set[str]]:
    """model label -> the run ids shown under it"""
    shown: dict[str, set[str]] = {}
    for row in rows:
        shown.setdefault(row.model, set()).add(row.run_id)
    return shown


def test_two_checkpoints_of_one_label_from_two_experiments_are_two_models(tmp_path):
    """/models/base/llama-7b and /models/chat/llama-7b, each alone in its config, were both labelled
    llama-7b: each keeps its own dense baseline, and the labels say which is which."""
    store = ResultStore(tmp_path / "results.duckdb")
    for bundle in (
        run("base-dense", "dense", "dense", 0, ppl=10.0, acc=0.5, model="llama-7b", experiment="base",
            source="/models/base/llama-7b", dtype="float32", model_id="a" * 16),
        run("base-wanda", "wanda", "wanda 50%", 1, ppl=20.0, acc=0.4, model="llama-7b", experiment="base",
            source="/models/base/llama-7b", dtype="float32", model_id="a" * 16),
        run("chat-dense", "dense", "dense", 2, ppl=8.0, acc=0.8, model="llama-7b", experiment="chat",
            source="/models/chat/llama-7b", dtype="float32", model_id="b" * 16),
        run("chat-wanda", "wanda", "wanda 50%", 3, ppl=16.0, acc=0.4, model="llama-7b", experiment="chat",
            source="/models/chat/llama-7b", dtype="float32", model_id="b" * 16),
    ):  # fmt: skip
        store.record(bundle)
    rows = leaderboard(store)
    assert _models_of(rows) == {"llama-7b (base/llama-7b)": {"base-dense", "base-wanda"},
                                "llama-7b (chat/llama-7b)": {"chat-dense", "chat-wanda"}}  # fmt: skip
    acc = {row.run_id: row.retention for row in rows if row.metric == "acc"}
    assert acc["base-wanda"] == pytest.approx(0.4 / 0.5) and acc["chat-wanda"] == pytest.approx(0.4 / 0.8)
    assert {row.model_id for row in rows if row.model.startswith("llama-7b (base")} == {"a" * 16}
    # one experiment alone has one llama-7b; --model takes the recorded label or the one shown
    assert _models_of(leaderboard(store, experiment="chat")) == {"llama-7b": {"chat-dense", "chat-wanda"}}
    assert _models_of(leaderboard(store, model="llama-7b (chat/llama-7b)")) == {"llama-7b (chat/llama-7b)": {"chat-dense", "chat-wanda"}}
    assert len(_models_of(leaderboard(store, model="llama-7b"))) == 2
    assert [line for line in to_markdown(rows).splitlines() if line.startswith("### ")] == [
        "### llama-7b (base/llama-7b)", "### llama-7b (chat/llama-7b)"]  # fmt: skip


def test_a_float32_and_a_bfloat16_study_of_one_model_are_two_models(tmp_path):
    """Two configs, one source, two dtypes: two dense baselines, and retention against the right one,
    whichever dense finished last."""
    store = ResultStore(tmp_path / "results.duckdb")
    source = "/models/llama-7b"
    for bundle in (
        run("fp32-dense", "dense", "dense", 0, ppl=10.0, acc=0.5, model="llama-7b", source=source, dtype="float32", model_id="a" * 16),
        run("fp32-wanda", "wanda", "wanda 50%", 1, ppl=20.0, acc=0.4, model="llama-7b", source=source, dtype="float32", model_id="a" * 16),
        run("bf16-dense", "dense", "dense", 2, ppl=12.0, acc=0.6, model="llama-7b", source=source, dtype="bfloat16", model_id="b" * 16),
        run("bf16-wanda", "wanda", "wanda 50%", 3, ppl=24.0, acc=0.3, model="llama-7b", source=source, dtype="bfloat16", model_id="b" * 16),
    ):  # fmt: skip
        store.record(bundle)
    rows = leaderboard(store)
    assert _models_of(rows) == {"llama-7b (dtype=float32)": {"fp32-dense", "fp32-wanda"},
                                "llama-7b (dtype=bfloat16)": {"bf16-dense", "bf16-wanda"}}  # fmt: skip
    acc = {row.run_id: row.retention for row in rows if row.metric == "acc"}
    assert acc["fp32-wanda"] == pytest.approx(0.4 / 0.5) and acc["bf16-wanda"] == pytest.approx(0.3 / 0.6)


def test_files_changed_under_one_path_and_runs_before_model_ids_are_models_of_their_own(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    source = "/models/llama-7b"
    for bundle in (
        run("legacy", "dense", "dense", 0, ppl=9.0, acc=0.5, model="llama-7b", source=source),  # before schema 7
        run("v1", "dense", "dense", 1, ppl=10.0, acc=0.5, model="llama-7b", source=source, dtype="float32", model_id="a" * 16),
        run("v2", "dense", "dense", 2, ppl=12.0, acc=0.6, model="llama-7b", source=source, dtype="float32", model_id="b" * 16),
        run("other", "dense", "dense", 2, ppl=12.0, acc=0.6, model="smollm2-135m", dtype="float32", model_id="c" * 16),
    ):  # fmt: skip
        store.record(bundle)
    assert _models_of(leaderboard(store)) == {
        "llama-7b (recorded before model ids)": {"legacy"}, "llama-7b (model aaaaaaaa)": {"v1"},
        "llama-7b (model bbbbbbbb)": {"v2"}, "smollm2-135m": {"other"},
    }


def test_model_labels_are_unique_for_any_mix_of_models():
    from reports.leaderboard import RecordedModel, model_labels

    models = [RecordedModel(key=f"k{i}", label="m", source=source, dtype=dtype, device=device, model_id=model_id)
              for i, (source, dtype, device, model_id) in enumerate([
                  ("/a/m", "float32", "cpu", "1" * 16), ("/b/m", "float32", "cpu", "2" * 16),
                  ("/a/m", "bfloat16", "cpu", "3" * 16), ("/a/m", "bfloat16", "cuda", "4" * 16),
                  ("/a/m", "bfloat16", "cuda", "5" * 16), ("/a/m", None, None, None), ("/b/m", None, None, None)])]  # fmt: skip
    labels = model_labels(models)
    assert len(set(labels.values())) == len(models) and all(label.startswith("m (") for label in labels.values())
    assert labels["k1"] == "m (b/m, dtype=float32, device=cpu)"
    assert labels["k3"] == "m (a/m, dtype=bfloat16, device=cuda, model 44444444)"
    assert labels["k5"] == "m (a/m, recorded before model ids)"
    assert model_labels([models[0]]) == {"k0": "m"}


def test_mean_retention_averages_the_primary_metrics_only(tmp_path):
    """jargon_ppl reports three views of one log-likelihood and jargon_mc two accuracies; only the
    primary one of each counts. By hand: word_perplexity 10 -> 20 keeps 10/20 = 0.5, acc 0.5 -> 0.4
    keeps 0.8, so the mean is (0.5 + 0.8) / 2 = 0.65; over all five columns it would be
    (0.5 + 0.8 + 0.9 + 0.75 + 0.95) / 5 = 0.78."""
    store = ResultStore(tmp_path / "results.duckdb")
    for bundle, (byte_ppl, bits, acc_norm) in (
        (run("dense", "dense", "dense", 0, ppl=10.0, acc=0.5), (3.0, 1.5, 0.6)),
        (run("wanda", "wanda", "wanda 50%", 1, ppl=20.0, acc=0.4), (3.0 / 0.9, 1.5 / 0.75, 0.57)),
    ):
        run_id = bundle.run.run_id
        extra = [
            ResultRow(run_id=run_id, suite="jargon_ppl", metric="byte_perplexity", value=byte_ppl, higher_is_better=False),
            ResultRow(run_id=run_id, suite="jargon_ppl", metric="bits_per_byte", value=bits, higher_is_better=False),
            ResultRow(run_id=run_id, suite="jargon_mc", metric="acc_norm", value=acc_norm, higher_is_better=True),
        ]
        store.record(bundle.model_copy(update={"results": [*bundle.results, *extra]}))
    rows = leaderboard(store)
    wanda = [row for row in rows if row.run_id == "wanda"]
    assert {(row.metric, row.is_primary) for row in wanda} == {
        ("word_perplexity", True), ("byte_perplexity", False), ("bits_per_byte", False), ("acc", True), ("acc_norm", False)
    }  # fmt: skip
    assert mean_retention(wanda).value == pytest.approx(0.65) and mean_retention(wanda).n_metrics == 2
    assert all(row.mean_retention == pytest.approx(0.65) for row in wanda)
    line = next(line for line in to_markdown(rows).splitlines() if line.startswith("| wanda 50%"))
    assert line.rstrip(" |").endswith("65.0%")
    assert "0.570 (95.0%)" in line  # acc_norm still shows its own retention
    (point,) = report_sections(store).sparsity_curves[0].points
    assert point.retention == pytest.approx(0.65) and point.n_metrics == 2


def test_layer_drop_runs_show_the_layers_they_dropped(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    store.record(run("dense", "dense", "dense", 0, ppl=10.0, acc=0.5))
    store.record(synthetic_bundle("shortgpt", "shortgpt", "shortgpt 25%", drop_ratio=0.25, hours=1))
    rows = [row for row in leaderboard(store) if row.run_id == "shortgpt"]
    assert {(row.target_weight_sparsity, row.achieved_weight_sparsity, row.target_drop_ratio, row.layers_dropped, row.layers_total)
            for row in rows} == {(None, None, 0.25, 2, 8)}  # fmt: skip
    line = next(line for line in to_text(leaderboard(store)).splitlines() if line.startswith("shortgpt"))
    assert "2/8 layers" in line and "22.5%" in line  # params pruned: 0.25 * 0.9


# -- statistics from per-item scores ------------------------------------------------------------


def with_items(bundle: RunBundle, correct: np.ndarray, logliks: np.ndarray, words: np.ndarray, *, seed: int = 0,
               flow_run_id: str | None = None) -> RunBundle:  # fmt: skip
    """The bundle with per-item scores whose aggregates are its results (acc: mean; ppl: exp(-Σ/Σ))."""
    run_id = bundle.run.run_id
    items = [ItemScore(run_id=run_id, suite="jargon_mc", item=str(k), metric="acc", value=float(v)) for k, v in enumerate(correct)]
    items += [ItemScore(run_id=run_id, suite="jargon_ppl", item=str(k), metric="word_perplexity", value=float(v), weight=float(w))
              for k, (v, w) in enumerate(zip(logliks, words))]  # fmt: skip
    results = [
        row.model_copy(update={"value": float(np.mean(correct)) if row.metric == "acc" else float(perplexity(logliks, words))})
        for row in bundle.results
    ]
    run = bundle.run.model_copy(update={"seed": seed, **({"flow_run_id": flow_run_id} if flow_run_id else {})})
    return bundle.model_copy(update={"run": run, "results": results, "items": items})


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> ResultStore:
    """Dense and three pruned methods on 1,000 items and 50 documents, all in one flow run: wanda and owl
    differ on 14 items (owl 10, wanda 4: tied), magnitude loses 150 items (worse); owl has a second calibration seed."""
    rng = np.random.default_rng(0)
    dense_correct = (rng.random(1000) < 0.7).astype(float)
    words = rng.integers(50, 300, 50).astype(float)
    nats = rng.uniform(2.5, 3.5, 50)

    def correct(lost: int, gained: int = 0) -> np.ndarray:
        out = dense_correct.copy()
        right, wrong = np.flatnonzero(out == 1), np.flatnonzero(out == 0)
        out[right[:lost]], out[wrong[:gained]] = 0.0, 1.0
        return out

    store = ResultStore(tmp_path_factory.mktemp("scored") / "results.duckdb")
    for bundle, outcomes, scale, seed in (
        (run("d", "dense", "dense", 5, 1, 1), dense_correct, 1.0, 0),
        (run("w", "wanda", "wanda 50%", 5, 1, 1), correct(60), 1.3, 0),
        (run("o0", "owl", "owl 50%", 5, 1, 1), correct(64, gained=10), 1.25, 0),
        (run("o1", "owl", "owl 50%", 5, 1, 1), correct(70), 1.28, 1),
        (run("m", "magnitude", "magnitude 50%", 5, 1, 1), correct(210), 2.0, 0),
    ):
        store.record(with_items(bundle, outcomes, -words * nats * scale, words, seed=seed, flow_run_id="flow-5"))
    return store


def test_every_value_has_an_interval_and_retention_a_paired_one(scored):
    rows = by_key(leaderboard(scored))
    dense, wanda = rows[("smollm2-135m", "dense", "acc")], rows[("smollm2-135m", "wanda 50%", "acc")]
    for row in rows.values():
        assert row.n_items == (1000 if row.metric == "acc" else 50)
        assert row.low < row.value < row.high
    assert dense.retention_low is None  # dense against itself: exactly 100%
    assert wanda.retention == pytest.approx(wanda.value / dense.value)
    assert wanda.retention_low < wanda.retention < wanda.retention_high
    # paired: the items both get right or wrong alike cancel, so retention's interval is narrower than
    # wanda's own interval alone (relative to dense), which an unpaired ratio's would exceed by about √2
    assert wanda.retention_high - wanda.retention_low < 0.6 * (wanda.high - wanda.low) / dense.value
    ppl = rows[("smollm2-135m", "wanda 50%", "word_perplexity")]
    assert ppl.retention_low < ppl.retention < ppl.retention_high < 1


def test_ties_with_the_best_method_are_paired_and_corrected(scored):
    rows = by_key(leaderboard(scored))
    verdicts = {method: rows[("smollm2-135m", method, "acc")].versus_best for method in ("dense", "wanda 50%", "owl 50%", "magnitude 50%")}
    # owl is best, 6 items ahead of wanda on 14 discordant ones (10 to 4, McNemar p = 0.18): tied
    assert verdicts == {"dense": None, "wanda 50%": "tied", "owl 50%": "best", "magnitude 50%": "worse"}
    markdown = to_markdown(leaderboard(scored))
    assert "▲" in markdown and "≈" in markdown and "95% interval" in markdown


def test_calibration_seeds_are_one_row_with_their_spread(scored):
    rows = leaderboard(scored)
    owl = [row for row in rows if row.method == "owl 50%"]
    assert {row.run_id for row in owl} == {"o0"}  # the lowest seed's run is the one shown
    acc = next(row for row in owl if row.metric == "acc")
    assert acc.seeds == [0, 1] and acc.seed_values[0] == acc.value and acc.seed_values[1] != acc.value
    spread = np.std(acc.seed_values, ddof=1)
    line = next(line for line in to_text(rows).splitlines() if line.startswith("owl 50%"))
    assert "2 seeds" in line and f"± {spread:.3f}" in line
    assert "calibration seeds" in to_text(rows)


def test_runs_without_items_have_no_statistics(store):
    rows = leaderboard(store)
    assert all(row.low is None and row.retention_low is None and row.versus_best is None for row in rows)
    assert "95% interval]" not in to_text(rows).split("\n")[0]


def test_the_html_report_draws_retention_intervals(scored):
    from reports.html import to_html

    page = to_html(report_sections(scored))
    assert page.count("<circle") >= 6  # 3 methods x 2 primary metrics
    assert "tied with the best" in page and "worse than the best" in page


def test_a_suite_of_one_item_has_no_interval_and_breaks_nothing(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    for bundle, correct in ((run("d", "dense", "dense", 1, 1, 1), [1.0]), (run("w", "wanda", "wanda 50%", 1, 1, 1), [0.0])):
        store.record(with_items(bundle, np.array(correct), np.array([-30.0]), np.array([10.0])))
    rows = leaderboard(store)
    assert rows and all(row.low is None and row.versus_best is None for row in rows)
    from reports.regressions import compare_runs

    assert {change.decided_by for change in compare_runs(store, "d", "w").changes} == {"noise margin"}
