"""Report sections: which runs land on which curve, per-block allocations, redundancy matrices, costs."""

from __future__ import annotations

import pytest

from pruning.specs import method_identity
from reports.sections import report_sections, series_id, series_label, stage_rank
from reports.store import ResultStore
from tests.reports.synthetic import synthetic_bundle


@pytest.fixture(scope="module")
def sections(synthetic_store):
    return report_sections(synthetic_store)


def curve(curves, model, series):
    return next(c for c in curves if c.model == model and c.series == series)


def test_sparsity_curves_group_labels_by_family_and_sort_by_sparsity(sections):
    wanda = curve(sections.sparsity_curves, "smollm2-135m", "wanda")
    assert [(p.x, p.method) for p in wanda.points] == [(0.5, "wanda 50%"), (0.6, "wanda 60%"), (0.7, "wanda 70%")]
    assert [p.retention for p in wanda.points] == pytest.approx([0.8, 0.65, 0.4])  # mean of ppl and acc retention (both primary)
    assert all(p.n_metrics == 2 for p in wanda.points)
    series = {(c.model, c.series) for c in sections.sparsity_curves}
    assert ("smollm2-135m", "owl+wanda") in series and ("toy-vlm", "ecoflap(zeroth)+wanda") in series
    assert not any(c.series in ("dense", "interlace", "shortgpt") for c in sections.sparsity_curves)


def test_layer_drop_runs_are_drawn_against_their_drop_ratio(sections):
    assert {c.series for c in sections.drop_ratio_curves} == {"interlace", "shortgpt"}
    interlace = curve(sections.drop_ratio_curves, "smollm2-135m", "interlace")
    assert [(p.x, p.retention) for p in interlace.points] == [(0.25, pytest.approx(0.75)), (0.5, pytest.approx(0.45))]


def test_only_non_uniform_allocations_are_profiled_per_block(sections):
    profiles = {(p.model, p.method): p for p in sections.allocations}
    # uniform runs (wanda, magnitude) are left out: their one sparsity is in the leaderboard
    assert set(profiles) == {
        ("smollm2-135m", "owl+wanda 50%"), ("smollm2-135m", "owl+wanda 60%"), ("smollm2-135m", "owl+wanda 70%"),
        ("smollm2-135m", "ecoflap(zeroth)+wanda 50%"), ("toy-vlm", "ecoflap(zeroth)+wanda 50%"),
    }  # fmt: skip
    ecoflap = profiles["smollm2-135m", "ecoflap(zeroth)+wanda 50%"]
    assert [b.target_sparsity for b in ecoflap.blocks] == pytest.approx([0.4, 0.45, 0.55, 0.6])
    assert [b.n_params for b in ecoflap.blocks] == [200] * 4  # two layers of 100 per block
    assert ecoflap.blocks[1].block_score == pytest.approx(0.5) and ecoflap.target_sparsity == 0.5
    vlm = profiles["toy-vlm", "ecoflap(zeroth)+wanda 50%"]
    assert [(b.modality, b.block) for b in vlm.blocks][:4] == [("vision", 0), ("vision", 1), ("vision", 2), ("language", 0)]


def test_redundancy_matrices_are_square_with_the_recorded_cells(sections):
    maps = {m.kind: m for m in sections.redundancy}
    assert set(maps) == {"cos_mean", "cos_last"}
    cos_mean = maps["cos_mean"]
    assert (cos_mean.model, cos_mean.method, cos_mean.selector) == ("smollm2-135m", "interlace 25%", "interlace")
    assert len(cos_mean.values) == 8 and all(len(row) == 8 for row in cos_mean.values)
    assert cos_mean.values[0][0] is None and cos_mean.values[3][2] is None  # only j > i recorded
    assert cos_mean.values[0][1] == pytest.approx(0.9 * 2.718281828 ** (-1 / 4))


def test_costs_list_stages_in_pipeline_order_dense_first(sections):
    smollm = [c for c in sections.costs if c.model == "smollm2-135m"]
    assert smollm[0].method == "dense" and [s.stage for s in smollm[0].stages] == ["model", "evaluate"]
    wanda = next(c for c in smollm if c.method == "wanda 60%")
    assert [(s.stage, s.wall_s) for s in wanda.stages] == [("model", 2.0), ("prune", 12.5), ("evaluate", 36.0)]
    assert stage_rank("calibration") < stage_rank("prune") < stage_rank("evaluate") < stage_rank("zzz-custom")


def test_filters_and_an_empty_store(synthetic_store, tmp_path):
    vlm = report_sections(synthetic_store, model="toy-vlm")
    assert {row.model for row in vlm.leaderboard} == {"toy-vlm"} and not vlm.drop_ratio_curves and not vlm.redundancy
    empty = report_sections(ResultStore(tmp_path / "none.duckdb"))
    assert empty.is_empty and not (empty.sparsity_curves or empty.allocations or empty.costs)


@pytest.mark.parametrize(
    "label, series",
    [
        ("wanda 50%", "wanda"),
        ("ecoflap(zeroth)+wanda 62.5%", "ecoflap(zeroth)+wanda"),
        ("interlace 25% no-ft", "interlace no-ft"),
        ("interlace[random] 25%", "interlace[random]"),
        ("shortgpt 25% +ft", "shortgpt +ft"),
        ("wanda 2:4", "wanda 2:4"),
        ("dense", "dense"),
    ],
)
def test_series_label_drops_the_ratio(label, series):
    assert series_label(label) == series


def test_series_id_is_the_identity_of_the_parameters_but_the_ratio():
    at_50 = {"name": "sparsegpt", "sparsity": 0.5, "blocksize": 32}
    assert series_id(at_50, "sparsity") == series_id({**at_50, "sparsity": 0.7}, "sparsity") == method_identity(
        {"name": "sparsegpt", "blocksize": 32}
    )
    assert series_id(at_50, "sparsity") != series_id({**at_50, "blocksize": 128}, "sparsity")


def test_lines_are_keyed_on_parameters_not_labels(tmp_path):
    """Two SparseGPT block sizes recorded under the same labels (an older config) are two lines, told
    apart by their identity; their ratios join their own line whatever the labels say."""
    store = ResultStore(tmp_path / "results.duckdb")
    store.record(synthetic_bundle("dense", "dense", "dense"))
    for blocksize, quality in ((32, 0.9), (128, 0.7)):
        for sparsity in (0.5, 0.6):
            store.record(synthetic_bundle(f"sparsegpt-{blocksize}-{sparsity}", "sparsegpt", f"sparsegpt {sparsity:.0%}",
                                          sparsity=sparsity, quality=quality - (sparsity - 0.5), params={"blocksize": blocksize}))  # fmt: skip
    curves = report_sections(store).sparsity_curves
    assert len(curves) == 2 and len({c.series_id for c in curves}) == 2
    assert all(c.series.startswith("sparsegpt (id ") for c in curves)
    by_blocksize = {c.series_id: c for c in curves}
    small = by_blocksize[series_id({"name": "sparsegpt", "blocksize": 32}, "sparsity")]
    assert [(p.x, p.run_id) for p in small.points] == [(0.5, "sparsegpt-32-0.5"), (0.6, "sparsegpt-32-0.6")]
    assert [p.retention for p in small.points] == pytest.approx([0.9, 0.8])
