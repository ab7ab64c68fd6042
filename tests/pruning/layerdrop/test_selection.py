"""Layer selection on hand-made similarity tables whose right plans are worked out by hand."""

from __future__ import annotations

import math

import pytest

from pruning.errors import ConfigError
from pruning.layerdrop.redundancy import LayerRedundancy
from pruning.layerdrop.selection import (
    LAYER_SELECTORS,
    DropPlan,
    edge_layers,
    interlace_plan,
    n_layers_to_drop,
    random_plan,
    select_layers,
    sleb_plan,
)

# 8 layers. s3 ranks triplets 2 (0.9), 5 (0.85), 4, 3, 1, 0: triplets (2,3,4) and (5,6,7) are taken,
# (4,5,6) and the rest overlap them; layers 0 and 1 are left for the pair fallback (s2: (1,2) ranks
# first but 2 is used, so (0,1)). s1 decides within: 2 > 3 drops 2; 5 < 6 drops 6; 0 < 1 drops 1.
S1 = [0.3, 0.6, 0.7, 0.4, 0.1, 0.2, 0.9, 0.5]
S2 = [0.5, 0.95, 0.2, 0.2, 0.2, 0.2, 0.2]
S3 = [0.1, 0.2, 0.9, 0.3, 0.8, 0.85]


def redundancy_table(
    spans: dict[int, list[float]],
    n_layers: int,
    last: dict[int, list[float]] | None = None,
    angle: dict[int, list[float]] | None = None,
) -> LayerRedundancy:
    """A LayerRedundancy whose cos_mean[i][i+p] = spans[p][i] (cos_last and angle_last likewise from `last`
    and `angle`), 0.5 elsewhere."""

    def matrix(values: dict[int, list[float]]) -> tuple[tuple[float, ...], ...]:
        rows = [[1.0 if i == j else 0.5 for j in range(n_layers + 1)] for i in range(n_layers + 1)]
        for p, row in values.items():
            assert len(row) == n_layers + 1 - p
            for i, value in enumerate(row):
                rows[i][i + p] = rows[i + p][i] = value
        return tuple(tuple(row) for row in rows)

    return LayerRedundancy(cos_mean=matrix(spans), cos_last=matrix(last or {}), angle_last=matrix(angle or {}), n_sequences=1)


def test_interlace_takes_triplets_then_falls_back_to_a_pair():
    plan = interlace_plan(S1, S2, S3, n_drop=3)
    assert plan == DropPlan(drop=(1, 2, 6), finetune=(0, 3, 5), anchor=(4, 7), n_layers=8)


def test_interlace_reads_the_spans_of_a_redundancy_table():
    table = redundancy_table({1: S1, 2: S2, 3: S3}, n_layers=8)
    assert table.s(3) == S3
    plan = select_layers("interlace", 0.4, 8, redundancy=table)  # K = floor(3.2) = 3
    assert plan == DropPlan(drop=(1, 2, 6), finetune=(0, 3, 5), anchor=(4, 7), n_layers=8)
    # two drops come from the two best triplets, no pair needed
    assert select_layers("interlace", 0.25, 8, redundancy=table) == DropPlan(drop=(2, 6), finetune=(3, 5), anchor=(4, 7), n_layers=8)


def test_interlace_drops_the_first_layer_on_a_tie():
    plan = interlace_plan([0.5, 0.5, 0.1, 0.1], [0.1, 0.1, 0.1], [0.9, 0.1], n_drop=1)
    assert plan == DropPlan(drop=(0,), finetune=(1,), anchor=(2,), n_layers=4)


def test_interlace_finetune_all_and_none():
    everything = interlace_plan(S1, S2, S3, n_drop=3, finetune="all")
    assert everything == DropPlan(drop=(1, 2, 6), finetune=(0, 3, 4, 5, 7), anchor=(), n_layers=8)
    assert interlace_plan(S1, S2, S3, n_drop=3, finetune="none") == DropPlan(drop=(1, 2, 6), finetune=(), anchor=(), n_layers=8)


def test_interlace_never_drops_a_protected_layer():
    # layer 2 is the more redundant of (2, 3) but protected: 3 drops and 2 trains instead
    plan = interlace_plan(S1, S2, S3, n_drop=3, protected=frozenset({2}))
    assert plan == DropPlan(drop=(1, 3, 6), finetune=(0, 2, 5), anchor=(4, 7), n_layers=8)
    # both of (2, 3) protected: triplet 2 is skipped; (5,6,7) is taken, 4 and 3 overlap it, then (1,2,3):
    # 2 is protected, so 1 drops, 2 trains, 3 anchors
    plan = interlace_plan(S1, S2, S3, n_drop=2, protected=frozenset({2, 3}))
    assert plan == DropPlan(drop=(1, 6), finetune=(2, 5), anchor=(3, 7), n_layers=8)


def test_interlace_says_when_triplets_and_pairs_run_out():
    # 4 layers, K = 2: the best triplet takes 3 layers, one is left, no pair fits
    with pytest.raises(ValueError, match="only 1 non-overlapping.*2 layers are to be dropped"):
        interlace_plan([0.5] * 4, [0.5] * 3, [0.9, 0.1], n_drop=2)


def test_interlace_on_last_token_similarities():
    # cos_last: triplet 0 ranks first (L1: 0.2 < 0.8 drops 1), then triplet 5 (L1: 0.6 > 0.3 drops 5)
    last = {1: [0.2, 0.8, 0.5, 0.5, 0.5, 0.6, 0.3, 0.5], 2: [0.5] * 7, 3: [0.95, 0.2, 0.1, 0.3, 0.4, 0.5]}
    table = redundancy_table({1: S1, 2: S2, 3: S3}, n_layers=8, last=last)
    plan = select_layers("interlace", 0.25, 8, redundancy=table, options={"tokens": "last"})
    assert plan == DropPlan(drop=(1, 5), finetune=(0, 6), anchor=(2, 7), n_layers=8)
    assert select_layers("interlace", 0.25, 8, redundancy=table, options={"tokens": "mean"}).drop == (2, 6)


def test_interlace_windows_that_end_at_the_last_output_can_be_left_out():
    # 6 layers, K = 2. Triplet 3 = (3, 4, 5) is scored by cos(h_3, h_6), h_6 the last layer's output.
    s1, s2, s3 = [0.5, 0.6, 0.7, 0.2, 0.1, 0.3], [0.4, 0.5, 0.6, 0.7, 0.95], [0.1, 0.2, 0.3, 0.9]
    table = redundancy_table({1: s1, 2: s2, 3: s3}, n_layers=6)
    # to_output: triplet 3 (0.2 > 0.1 drops 3), then triplet 0 (0.5 < 0.6 drops 1)
    assert select_layers("interlace", 0.34, 6, redundancy=table) == DropPlan(drop=(1, 3), finetune=(0, 4), anchor=(2, 5), n_layers=6)
    # to_last_input (the reference scores i in range(L - p)): triplet 2 (0.7 > 0.2 drops 2); triplets 1, 0
    # overlap it; pairs 3, 2, 1 overlap too (pair 4 = (4, 5) ends at h_6: not a candidate); pair 0 drops 1
    plan = select_layers("interlace", 0.34, 6, redundancy=table, options={"windows": "to_last_input"})
    assert plan == DropPlan(drop=(1, 2), finetune=(0, 3), anchor=(4,), n_layers=6)
    with pytest.raises(ValueError, match="windows must be"):
        select_layers("interlace", 0.34, 6, redundancy=table, options={"windows": "inputs"})


def test_interlace_with_the_first_and_last_layers_protected():
    table = redundancy_table({1: S1, 2: S2, 3: S3}, n_layers=8)
    assert select_layers("interlace", 0.25, 8, redundancy=table) == DropPlan(drop=(2, 6), finetune=(3, 5), anchor=(4, 7), n_layers=8)
    # first 3 and last 1 protected: in triplet (2, 3, 4) layer 2 may not drop, so 3 drops and 2 trains;
    # in (5, 6, 7) the protected 7 may still anchor
    plan = select_layers("interlace", 0.25, 8, redundancy=table, protect_first=3, protect_last=1)
    assert plan == DropPlan(drop=(3, 6), finetune=(2, 5), anchor=(4, 7), n_layers=8)
    # last 2 protected: 6 may not drop, so 5 drops and 6 trains
    plan = select_layers("interlace", 0.25, 8, redundancy=table, protect_last=2)
    assert plan == DropPlan(drop=(2, 5), finetune=(3, 6), anchor=(4, 7), n_layers=8)


def test_protected_edges_are_checked():
    assert edge_layers(8, 2, 1) == frozenset({0, 1, 7})
    assert edge_layers(8) == frozenset()
    with pytest.raises(ValueError, match="leaves none to drop"):
        edge_layers(4, 2, 2)
    with pytest.raises(ValueError, match=">= 0"):
        edge_layers(4, -1, 0)


def test_options_a_selector_does_not_read_are_refused():
    table = redundancy_table({1: S1}, n_layers=8)
    with pytest.raises(ConfigError, match="'shortgpt' has no option tokens; it reads: none"):
        select_layers("shortgpt", 0.25, 8, redundancy=table, options={"tokens": "last"})


def test_shortgpt_drops_the_lowest_block_influence():
    table = redundancy_table({1: S1}, n_layers=8)
    assert table.block_influence() == pytest.approx([1 - s for s in S1])
    assert select_layers("shortgpt", 0.25, 8, redundancy=table) == DropPlan(drop=(2, 6), finetune=(), anchor=(), n_layers=8)
    assert select_layers("shortgpt", 0.25, 8, redundancy=table, protected={6}).drop == (1, 2)
    healed = select_layers("shortgpt", 0.25, 8, redundancy=table, finetune="all")
    assert healed.finetune == (0, 1, 3, 4, 5, 7) and healed.anchor == ()


def test_angular_drops_the_closest_contiguous_block_on_the_last_token():
    # 6 layers, K = 2: cos_last[i][i+2] highest at i = 3 -> drop 3, 4
    last_cos = [0.1, 0.5, 0.2, 0.95, 0.3]
    table = redundancy_table({}, n_layers=6, last={2: last_cos})
    assert table.angular_distance(2) == pytest.approx([math.acos(c) / math.pi for c in last_cos])
    assert select_layers("angular", 0.34, 6, redundancy=table) == DropPlan(drop=(3, 4), finetune=(), anchor=(), n_layers=6)
    assert select_layers("angular", 0.34, 6, redundancy=table, protected={4}).drop == (1, 2)
    assert select_layers("angular", 0.34, 6, redundancy=table, finetune="all").finetune == (0, 1, 2, 5)
    with pytest.raises(ValueError, match="no interleaved finetune set"):
        select_layers("angular", 0.34, 6, redundancy=table, finetune="interleaved")


def test_angular_distance_averaged_per_sequence_can_rank_blocks_differently():
    # arccos of the mean cosine ranks block 3 first; the mean of per-sequence distances ranks block 1 first
    last_cos = [0.1, 0.5, 0.2, 0.95, 0.3]
    mean_distance = [0.4, 0.1, 0.3, 0.2, 0.35]
    table = redundancy_table({}, n_layers=6, last={2: last_cos}, angle={2: mean_distance})
    assert table.angular_distance(2, "distance") == mean_distance
    assert select_layers("angular", 0.34, 6, redundancy=table).drop == (3, 4)
    assert select_layers("angular", 0.34, 6, redundancy=table, options={"average": "distance"}).drop == (1, 2)


def test_consecutive_can_start_at_the_most_redundant_layer_that_fits():
    # s_2 ranks the run (3, 4); s_1 is highest at layer 5, where no run of 2 fits, then at layer 1
    s1, s2 = [0.2, 0.9, 0.3, 0.4, 0.1, 0.99], [0.1, 0.5, 0.2, 0.95, 0.3]
    table = redundancy_table({1: s1, 2: s2}, n_layers=6)
    assert select_layers("consecutive", 0.34, 6, redundancy=table) == DropPlan(drop=(3, 4), finetune=(2, 5), anchor=(), n_layers=6)
    plan = select_layers("consecutive", 0.34, 6, redundancy=table, options={"start": "layer"})
    assert plan == DropPlan(drop=(1, 2), finetune=(3, 4), anchor=(), n_layers=6)  # the K layers after the run


def test_consecutive_drops_the_block_with_the_most_similar_ends():
    table = redundancy_table({2: [0.1, 0.5, 0.2, 0.95, 0.3]}, n_layers=6)
    plan = select_layers("consecutive", 0.34, 6, redundancy=table)
    assert plan == DropPlan(drop=(3, 4), finetune=(2, 5), anchor=(), n_layers=6)  # nearest kept, after first
    assert select_layers("consecutive", 0.34, 6, redundancy=table, finetune="none").finetune == ()


def test_random_selection_is_seeded():
    first = random_plan(12, 3, seed=7)
    assert first == random_plan(12, 3, seed=7)
    assert len({random_plan(12, 3, seed=seed).drop for seed in range(6)}) > 1
    assert len(first.drop) == len(first.finetune) == 3 and not set(first.drop) & set(first.finetune)
    assert all(not {0, 1} & set(random_plan(12, 3, seed=seed, protected=frozenset({0, 1})).drop) for seed in range(20))
    assert select_layers("random", 0.25, 12, seed=7) == first


def test_sleb_takes_its_order_skipping_protected_layers():
    assert sleb_plan([3, 0, 5], n_layers=6, n_drop=2) == DropPlan(drop=(0, 3), finetune=(), anchor=(), n_layers=6)
    assert select_layers("sleb", 0.34, 6, sleb_order=[3, 0, 5], protect_first=1).drop == (3, 5)
    assert sleb_plan([3, 0, 5], n_layers=6, n_drop=2, protected=frozenset({0})).drop == (3, 5)
    assert select_layers("sleb", 0.34, 6, sleb_order=[3, 0, 5], finetune="all").finetune == (1, 2, 4, 5)


def test_no_selector_drops_protected_layers_even_when_they_look_most_redundant():
    # layers 0 and 1 are identities by every measure; 0 and 1 are protected (DeepStack)
    s = {p: [0.99 if i < 2 else 0.3 for i in range(9 - p)] for p in (1, 2, 3, 4)}
    table = redundancy_table(s, n_layers=8, last=s)
    for name in LAYER_SELECTORS:
        plan = select_layers(name, 0.25, 8, redundancy=table, sleb_order=[0, 1, 5, 6], protected={0, 1})
        assert not {0, 1} & set(plan.drop), name
        assert len(plan.drop) == 2, name


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.2])
def test_drop_ratio_must_lie_strictly_between_0_and_1(ratio):
    with pytest.raises(ValueError, match=f"drop_ratio must lie in \\(0, 1\\), got {ratio}"):
        n_layers_to_drop(ratio, 32)


def test_layer_count_follows_floor_of_ratio_times_layers():
    assert n_layers_to_drop(0.25, 32) == 8
    assert n_layers_to_drop(0.29, 100) == 29  # not 28 from 28.999999999999996
    with pytest.raises(ValueError, match="drop_ratio=0.1 of 4 layers drops none"):
        n_layers_to_drop(0.1, 4)
    with pytest.raises(ValueError, match="only 1 of 3 are not protected"):
        select_layers("shortgpt", 0.67, 3, redundancy=redundancy_table({}, 3), protected={0, 1})


def test_selection_inputs_are_checked():
    with pytest.raises(ConfigError, match="no layer selector 'bogus'"):
        select_layers("bogus", 0.25, 8)
    with pytest.raises(ValueError, match="pass redundancy="):
        select_layers("interlace", 0.25, 8)
    with pytest.raises(ValueError, match="covers 6 layers, the model has 8"):
        select_layers("shortgpt", 0.25, 8, redundancy=redundancy_table({}, 6))
    with pytest.raises(ValueError, match="pass sleb_order="):
        select_layers("sleb", 0.25, 8)


def test_drop_plan_round_trips_and_rejects_overlaps():
    plan = DropPlan(drop=(4, 1), finetune=(2,), anchor=(3,), n_layers=6)
    assert plan.drop == (1, 4) and plan.kept == (0, 2, 3, 5)
    assert DropPlan.from_dict(plan.to_dict()) == plan
    with pytest.raises(ValueError, match="two of drop"):
        DropPlan(drop=(1,), finetune=(1,), anchor=(), n_layers=4)
    with pytest.raises(ValueError, match="outside 0..3"):
        DropPlan(drop=(4,), finetune=(), anchor=(), n_layers=4)
