"""End to end on a vision-language model given by local path: the same flow, image calibration, lmms-eval.

The model is a tiny random-init toy VLM saved as an ordinary checkpoint directory, exactly how a
user points `model:` at a real LLaVA on disk; training the embedded one is tested apart.
"""

from __future__ import annotations

import pytest
import yaml

from tests.flows.test_benchmark import prunebench, query

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def vlm_run(module_tmp, cache_dir, tiny_vlm_checkpoint):
    tmp = module_tmp("vlm")
    checkpoint = tiny_vlm_checkpoint(tmp / "tiny-vlm", text_layers=2)
    config = {
        "name": "vlm-smoke",
        "studies": [
            {
                "model": {"source": str(checkpoint)},
                "calibration": {"corpus": "imageqa", "n_samples": 4, "batch_size": 4},
                "methods": [
                    {"name": "dense"},
                    {"name": "wanda", "sparsity": 0.5},
                    {"name": "ecoflap", "sparsity": 0.5, "score_samples": 4},
                    {"name": "owl", "sparsity": 0.5, "local": "sparsegpt", "lam": 0.05},
                ],
                "eval": {"suites": ["imageqa_mc", "imageqa_short"], "limit": 6},
            }
        ],
        "output": {"database": str(tmp / "results.duckdb"), "workdir": str(tmp / "work"), "cache": str(cache_dir)},
    }
    path = tmp / "vlm.yaml"
    path.write_text(yaml.safe_dump(config))
    result = prunebench("run", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "results.duckdb"


def test_vlm_runs_record_overall_and_per_type_accuracy(vlm_run):
    methods = sorted(row[0] for row in query(vlm_run, "SELECT method_label FROM runs"))
    assert methods == ["dense", "ecoflap(zeroth)+wanda 50%", "owl+sparsegpt 50%", "wanda 50%"]
    metrics = {(suite, metric) for suite, metric in query(vlm_run, "SELECT DISTINCT suite, metric FROM results")}
    for suite in ("imageqa_mc", "imageqa_short"):
        assert (suite, "acc") in metrics
        assert any(m.startswith("acc_") for s, m in metrics if s == suite)
    # lmms-eval's per-item scores are recorded: every image-QA result is the mean of its items
    means = query(vlm_run, "SELECT r.value, avg(i.value), count(*) FROM results r JOIN item_scores i USING (run_id, suite, metric) "
                           "WHERE r.metric = 'acc' GROUP BY r.run_id, r.suite, r.value")
    assert len(means) == 4 * 2 and all(value == pytest.approx(mean) and count == 6 for value, mean, count in means)


def test_allocations_share_one_budget_over_vision_and_language_blocks(vlm_run):
    # ECoFLaP: no block above target + max_extra; OWL: within target ± 2λ (the spread is 2λ around the mean)
    for label, low, high in (("ecoflap(zeroth)+wanda 50%", 0.0, 0.6), ("owl+sparsegpt 50%", 0.4, 0.6)):
        rows = query(
            vlm_run,
            "SELECT a.modality, a.block, a.n_params, a.target_sparsity, a.achieved_sparsity, a.block_score "
            f"FROM allocations a JOIN runs r USING (run_id) WHERE r.method_label = '{label}'",
        )
        assert {row[0] for row in rows} == {"vision", "language"}
        assert all(row[5] is not None for row in rows)  # the score that set each block's sparsity is kept
        targets = {(modality, block): target for modality, block, _, target, _, _ in rows}
        assert len(set(targets.values())) > 1  # not uniform
        assert all(low - 1e-9 <= t <= high + 1e-9 for t in targets.values())
        total = sum(r[2] for r in rows)
        weighted_target = sum(r[2] * r[3] for r in rows) / total
        weighted_achieved = sum(r[2] * r[4] for r in rows) / total
        assert weighted_target == pytest.approx(0.5, abs=1e-6)
        # Wanda prunes floor(s × row width) weights per row, as the reference does: on this model's rows of
        # 32 inputs a layer may fall up to 1/32 below its target (on real widths, 576 and up, < 0.2%)
        assert all(target - 1 / 32 - 1e-9 <= achieved <= target + 1e-9 for *_, target, achieved, _ in rows)
        assert weighted_achieved == pytest.approx(0.5, abs=1 / 32)
    stages = {row[0] for row in query(vlm_run, "SELECT s.stage FROM stages s JOIN runs r USING (run_id) WHERE r.method = 'ecoflap'")}
    assert {"scores", "calibration", "prune", "evaluate"} <= stages


def test_wanda_pruned_vision_and_language_blocks(vlm_run):
    rows = query(
        vlm_run,
        "SELECT a.modality, min(a.achieved_sparsity), max(a.achieved_sparsity) FROM allocations a JOIN runs r USING (run_id) "
        "WHERE r.method = 'wanda' GROUP BY 1",
    )
    by_modality = {modality: (low, high) for modality, low, high in rows}
    assert set(by_modality) == {"vision", "language"}
    for low, high in by_modality.values():
        assert 0.49 <= low <= high <= 0.51


def test_image_calibration_of_a_text_model_is_refused(vlm_run, tmp_path, cache_dir):
    from tests.flows.test_benchmark import smoke_config

    config = smoke_config(tmp_path, cache_dir, calibration={"corpus": "imageqa", "n_samples": 4})
    result = prunebench("run", str(config), "--database", str(vlm_run))
    assert result.returncode == 2
    assert "image-QA calibration needs a vision-language model" in result.stderr.strip().splitlines()[-1]
