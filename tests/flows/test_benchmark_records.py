"""What `run_bundle` records for a run, from hand-made stage results: each removal in its own column,
the method's identity and parameters, which result of each suite is primary, and every item's scores."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest

from evals.harness import SampleScore, SuiteScore
from flows.benchmark import run_bundle
from flows.config import ExperimentConfig, spec_hash
from pruning.specs import model_identity
from tasks.artifacts import CheckpointRef, DroppedCheckpoint, EvalScores, ModelCheckpoint, PrunedCheckpoint, StageUsage

USAGE = StageUsage(wall_s=1.0, peak_rss_gb=0.5)
REF = CheckpointRef(path="/nowhere", fingerprint="f")
BASE = ModelCheckpoint(ref=REF, digest="0123456789abcdef", params_total=1000, usage=USAGE)
PRUNED = PrunedCheckpoint(ref=REF, params_prunable=800, params_pruned=396, achieved_sparsity=0.495, layers=[], usage=USAGE)
DROPPED = DroppedCheckpoint(ref=REF, n_layers=8, drop=[3, 5], finetune=[], anchor=[], train_layers=[], modality="language",
                            layer_params=[110] * 8, params_removed=220, prunable_removed=200, prunable_total=800, usage=USAGE)  # fmt: skip
SCORES = EvalScores(usage=USAGE, scores=[
    SuiteScore(suite="jargon_ppl", metric=metric, value=2.0, stderr=None, higher_is_better=False)
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte")
] + [SuiteScore(suite="jargon_mc", metric=metric, value=0.5, stderr=0.1, higher_is_better=True) for metric in ("acc", "acc_norm")],
items=[SampleScore(suite="jargon_ppl", item="0", metric="word_perplexity", value=-120.5, weight=30.0)]
    + [SampleScore(suite="jargon_mc", item=item, metric="acc", value=float(item == "1")) for item in ("0", "1")])  # fmt: skip
STARTED = datetime(2025, 3, 1, tzinfo=timezone.utc)


def experiment(**evaluation) -> ExperimentConfig:
    return ExperimentConfig.model_validate({"name": "records", "studies": [{
        "model": {"source": "packaged:smollm2-135m"},
        "methods": [{"name": "dense"}, {"name": "sparsegpt", "sparsity": 0.5, "blocksize": 32}, {"name": "shortgpt", "drop_ratio": 0.25}],
        "eval": {"suites": ["jargon_ppl", "jargon_mc"], **evaluation},
    }]})  # fmt: skip


@pytest.fixture(scope="module")
def bundles():
    config = experiment(primary_metrics={"jargon_mc": "acc_norm"})
    study = config.studies[0]
    dense, sparsegpt, shortgpt = study.methods
    return {
        method.name: run_bundle(config, study, method, BASE, None, pruned, SCORES, STARTED)
        for method, pruned in ((dense, None), (sparsegpt, PRUNED), (shortgpt, DROPPED))
    }


REMOVED = ("target_weight_sparsity", "achieved_weight_sparsity", "target_drop_ratio", "layers_dropped", "layers_total",
           "params_pruned", "params_pruned_share")  # fmt: skip


def test_each_kind_of_removal_has_its_own_columns(bundles):
    assert {name: tuple(getattr(bundle.run, field) for field in REMOVED) for name, bundle in bundles.items()} == {
        "dense": (0.0, 0.0, None, None, None, 0, 0.0),
        "sparsegpt": (0.5, 0.495, None, None, None, 396, pytest.approx(0.396)),
        "shortgpt": (None, None, 0.25, 2, 8, 220, pytest.approx(0.22)),
    }


def test_the_run_carries_its_method_identity_and_every_parameter(bundles):
    sparsegpt = experiment().studies[0].methods[1]
    run = bundles["sparsegpt"].run
    assert run.method_id == sparsegpt.method_id
    assert json.loads(run.method_params) == sparsegpt.canonical_params() and json.loads(run.method_params)["blocksize"] == 32


def test_the_run_carries_its_model_identity(bundles):
    run = bundles["dense"].run
    assert (run.model, run.model_source, run.model_dtype, run.model_device) == ("smollm2-135m", "packaged:smollm2-135m", "float32", "cpu")
    assert run.model_id == model_identity("0123456789abcdef", "float32", "cpu")
    assert model_identity("0123456789abcdef", "bfloat16", "cpu") != run.model_id != model_identity("f" * 16, "float32", "cpu")


def test_one_primary_result_per_suite_the_config_choosing_where_it_says(bundles):
    primary = {(row.suite, row.metric) for row in bundles["dense"].results if row.is_primary}
    assert primary == {("jargon_ppl", "word_perplexity"), ("jargon_mc", "acc_norm")}


def test_choosing_primary_metrics_leaves_the_config_hash_alone(bundles):
    plain = experiment()
    study = plain.studies[0]
    again = run_bundle(plain, study, study.methods[1], BASE, None, PRUNED, SCORES, STARTED)
    assert again.run.config_hash == bundles["sparsegpt"].run.config_hash
    # and it is the hash earlier versions recorded, so `compare` finds the runs from before
    assert again.run.config_hash == spec_hash(study.model, study.methods[1], study.calibration, study.eval)
    assert {(row.suite, row.metric) for row in again.results if row.is_primary} == {("jargon_ppl", "word_perplexity"), ("jargon_mc", "acc")}


def test_other_contents_of_the_users_task_files_are_another_config_and_logging_samples_is_not(bundles):
    plain = experiment(log_samples=True)
    study, sparsegpt = plain.studies[0], plain.studies[0].methods[1]
    assert run_bundle(plain, study, sparsegpt, BASE, None, PRUNED, SCORES, STARTED).run.config_hash == bundles["sparsegpt"].run.config_hash
    six, three = (run_bundle(plain, study, sparsegpt, BASE, None, PRUNED, SCORES, STARTED, task_files=digest).run.config_hash
                  for digest in ("digest of 6 items", "digest of 3 items"))  # fmt: skip
    assert len({six, three, bundles["sparsegpt"].run.config_hash}) == 3


def test_every_item_score_is_recorded_under_the_run(bundles):
    for bundle in bundles.values():
        assert [(row.run_id, row.suite, row.item, row.metric, row.value, row.weight) for row in bundle.items] == [
            (bundle.run.run_id, "jargon_ppl", "0", "word_perplexity", -120.5, 30.0),
            (bundle.run.run_id, "jargon_mc", "0", "acc", 0.0, None),
            (bundle.run.run_id, "jargon_mc", "1", "acc", 1.0, None),
        ]


def test_the_run_says_whether_it_kept_its_checkpoint(bundles, tmp_path):
    from tests.pruning.models.test_removal import fake_checkpoint

    config = experiment()
    study = config.studies[0]
    on_disk = PRUNED.model_copy(update={"ref": CheckpointRef(path=str(fake_checkpoint(tmp_path / "sparsegpt")), fingerprint="f")})
    kept = run_bundle(config, study, study.methods[1], BASE, None, on_disk, SCORES, STARTED).run
    assert kept.checkpoint_kept and kept.checkpoint_bytes > 1000
    removed = run_bundle(config, study, study.methods[1], BASE, None, on_disk, SCORES, STARTED, checkpoint_kept=False).run
    assert removed.checkpoint_kept is False and removed.checkpoint == str(tmp_path / "sparsegpt")
    assert bundles["sparsegpt"].run.checkpoint_kept is False  # its checkpoint is not on disk: nothing kept
