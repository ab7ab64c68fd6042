"""`prunebench runs`: the list, one run in full, and deleting a computed checkpoint (never a model's own)."""

from __future__ import annotations

import json

import pytest

from pruning.errors import PrunebenchError
from pruning.models.sources import MANIFEST
from reports.runs import remove_run, run_details, runs_table, size
from reports.store import ResultStore
from tests.reports.synthetic import synthetic_bundle


def checkpoint(path, **manifest):
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"\0" * 1500)
    (path / MANIFEST).write_text(json.dumps({"files": {"model.safetensors": 1500}, **manifest}))
    return path


@pytest.fixture
def store(tmp_path):
    store = ResultStore(tmp_path / "results.duckdb")
    base = checkpoint(tmp_path / "models" / "smollm2-135m", source="packaged:smollm2-135m")
    pruned = checkpoint(tmp_path / "work" / "checkpoints" / "wanda-50pct-abc", method={"name": "wanda", "sparsity": 0.5},
                        calibration={"corpus": "jargon", "n_samples": 4}, achieved_sparsity=0.5)  # fmt: skip
    for bundle, path in ((synthetic_bundle("dense-run", "dense", "dense", hours=0), base),
                         (synthetic_bundle("wanda-run", "wanda", "wanda 50%", sparsity=0.5, quality=0.8, hours=1), pruned),
                         (synthetic_bundle("magnitude-run", "magnitude", "magnitude 50%", sparsity=0.5, hours=2), None)):  # fmt: skip
        run = bundle.run.model_copy(update={"checkpoint": None if path is None else str(path), "checkpoint_bytes": None if path is None else 1600})
        store.record(bundle.model_copy(update={"run": run}))
    return store


def test_the_list_is_newest_first_with_primary_results_and_checkpoints(store, tmp_path):
    lines = runs_table(store)
    assert lines[0].split()[:3] == ["run", "finished", "(UTC)"]
    rows = lines[2:]
    assert [row.split()[0] for row in rows] == ["magnitud", "wanda-ru", "dense-ru"]
    wanda = rows[1]
    assert "wanda 50%" in wanda and "jargon_mc acc 0.4" in wanda and "jargon_ppl word_perplexity 12.5" in wanda
    assert str(tmp_path / "work" / "checkpoints" / "wanda-50pct-abc") in wanda and wanda.endswith("1.6 kB")
    assert "(not recorded: before schema 8)" in rows[0]
    assert [row.split()[0] for row in runs_table(store, method="wanda")[2:]] == ["wanda-ru"]
    assert [row.split()[0] for row in runs_table(store, limit=1)[2:]] == ["magnitud"]
    assert runs_table(store, method="sleb") == ["no runs recorded for these filters"]


def test_one_run_in_full_shows_its_results_stages_and_manifest(store):
    text = "\n".join(run_details(store, "wanda"))  # a unique prefix is enough
    assert "run                wanda-run" in text and "wanda 50%" in text and "50.0% of prunable weights (target 50.0%)" in text
    assert "jargon_mc" in text and "stages" in text and f"checkpoint manifest ({MANIFEST})" in text
    assert '"calibration": {' in text and '"achieved_sparsity": 0.5' in text and '"files"' not in text
    with pytest.raises(PrunebenchError, match="no run 'nope'"):
        run_details(store, "nope")


def test_rm_deletes_a_computed_checkpoint_and_with_records_the_rows(store, tmp_path):
    pruned = tmp_path / "work" / "checkpoints" / "wanda-50pct-abc"
    done = remove_run(store, "wanda-run")
    assert not pruned.exists() and done[0].startswith(f"deleted {pruned} (1.6 kB)")
    assert [run.run_id for run in store.runs()] == ["dense-run", "wanda-run", "magnitude-run"]  # rows kept
    assert f"{pruned} (deleted)" in "\n".join(runs_table(store))
    done = remove_run(store, "wanda-run", records=True)
    assert done[0].startswith("run wanda-run has no checkpoint on disk") and "deleted run wanda-run" in done[1]
    assert [run.run_id for run in store.runs()] == ["dense-run", "magnitude-run"]
    assert store.results("wanda-run") == [] and store.stages("wanda-run") == []


def test_rm_never_deletes_a_models_own_files(store, tmp_path):
    with pytest.raises(PrunebenchError, match="is the model's own files, not one a stage computed; nothing deleted"):
        remove_run(store, "dense-run", records=True)
    assert (tmp_path / "models" / "smollm2-135m" / "model.safetensors").is_file()
    assert len(store.runs()) == 3


@pytest.mark.parametrize("n, shown", [(None, "-"), (999, "999 B"), (1500, "1.5 kB"), (2_500_000, "2.5 MB"), (13_476_000_000, "13.5 GB")])
def test_sizes_read_as_people_write_them(n, shown):
    assert size(n) == shown


def test_a_checkpoint_not_kept_says_so_and_how_to_rebuild_it(store, tmp_path):
    removed = tmp_path / "work" / "checkpoints" / "owl-50pct-def"
    bundle = synthetic_bundle("owl-run", "owl", "owl 50%", sparsity=0.5, hours=3)
    store.record(bundle.model_copy(update={"run": bundle.run.model_copy(update={
        "checkpoint": str(removed), "checkpoint_bytes": 1600, "checkpoint_kept": False})}))  # fmt: skip
    assert store.runs()[-1].checkpoint_kept is False
    shown = "\n".join(run_details(store, "owl-run"))
    assert f"{removed} (not kept; a rerun of its config with output.keep_checkpoints: last rebuilds it)" in shown
    assert f"{removed} (not kept;" in runs_table(store)[2]
