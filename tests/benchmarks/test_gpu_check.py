"""benchmarks/gpu_check.py on a CPU with the tiny shape: every figure and goal lands in its JSON (numbers, or a
reason why not), so the script cannot rot between the GPU runs it is written for."""

from __future__ import annotations

import json
import math

import pytest

REASONS = ("skipped", "unsupported", "failed")


@pytest.fixture
def gpu_check(benchmark_script):
    return benchmark_script("gpu_check")


def numbers_or_reasons(value, where: str) -> None:
    """Every leaf is a finite number, or a string saying why there is none."""
    if isinstance(value, dict):
        for key, inner in value.items():
            numbers_or_reasons(inner, f"{where}.{key}")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            numbers_or_reasons(inner, f"{where}[{index}]")
    elif isinstance(value, str):
        assert value, where
    else:
        assert isinstance(value, int | float) and math.isfinite(value), (where, value)


def test_a_tiny_cpu_run_writes_every_figure_and_judges_every_goal(gpu_check, tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--shape", "tiny", "--device", "cpu", "--out", str(out), "--repeats", "2", "--warmup", "1"]) == 0
    result = json.loads(out.read_text())
    figures = result["figures"]
    assert list(figures) == list(gpu_check.FIGURES)
    numbers_or_reasons(figures, "figures")
    assert not any("failed" in figure or "skipped" in figure and "budget" in figure["skipped"] for figure in figures.values())
    for key in ("floor", "wanda_50", "sparsegpt_50", "ecoflap_zeroth_wanda_50"):
        assert figures[key]["seconds"] > 0, key
        assert figures[key]["peak_gpu_gib"].startswith("not measured"), key  # CUDA only
    for key in ("wanda_50", "sparsegpt_50", "ecoflap_zeroth_wanda_50"):
        assert figures[key]["x_floor"] == pytest.approx(figures[key]["seconds"] / figures["floor"]["seconds"])
    assert figures["ecoflap_zeroth_wanda_50"]["score_passes"] == 2 * 8  # per_block: 2 per block, one batch of 8
    offload = figures["offload_wanda_50"]
    assert offload["seconds"] > 0
    assert figures["semi_structured_2_4"]["unsupported"].startswith("unsupported on cpu")
    drop = figures["layer_drop"]
    assert (drop["n_layers"], drop["dropped"], drop["ideal"]) == (8, [6, 7], pytest.approx(8 / 6))
    assert set(drop["prefill"]) == {"32", "64"}
    for row in drop["prefill"].values():
        assert row["share_of_ideal"] == pytest.approx(row["decoder_speedup"] / drop["ideal"])
    goals = {goal["goal"]: goal for goal in result["goals"]}
    assert len(goals) == 6
    for goal in goals.values():  # judged where measured; otherwise the reason
        assert goal["pass"] in (True, False) or goal["pass"].startswith("n/a: "), goal
        assert (goal["measured"] is None) == isinstance(goal["pass"], str), goal
    assert goals["Wanda 50% <= 2.0x the floor"]["measured"] == figures["wanda_50"]["x_floor"]
    assert goals["2:4 prefill at 64 tokens >= 1.2x dense"]["pass"].startswith("n/a: unsupported on cpu")
    assert result["settings"]["calibration"].startswith("uniformly random token ids")
    assert result["model"]["n_layers"] == 8 and result["model"]["block_gib"] > 0
    printed = capsys.readouterr().out
    for line in ("floor (one batched forward)", "sparsegpt 50%", "2:4 semi-structured prefill", "25% of the layers dropped", "goals", f"wrote {out}"):
        assert line in printed, line


def test_a_budget_spent_skips_every_figure_and_says_so(gpu_check, tmp_path, capsys):
    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--shape", "tiny", "--device", "cpu", "--out", str(out), "--budget-s", "0"]) == 0
    figures = json.loads(out.read_text())["figures"]
    assert figures["floor"]["skipped"].startswith("budget: ") and "--budget-s 0 used" in figures["floor"]["skipped"]
    assert all(figure == {"skipped": "the floor was not measured, so nothing is measured against it"} for key, figure in figures.items() if key != "floor")
    assert "[n/a ] Wanda 50% <= 2.0x the floor: skipped: the floor was not measured" in capsys.readouterr().out


def test_estimates_scale_with_the_floor_and_the_scoring_passes(gpu_check):
    args = gpu_check.parse_args(["--shape", "tiny", "--device", "cpu"])
    check = gpu_check.Check(args)
    facts = {"build_s": 0.0, "n_layers": 8, "linears_per_block": 7}
    assert set(gpu_check.estimates(check, facts).values()) == {None}  # no floor, nothing to scale
    check.floor_s = 10.0
    per_block = gpu_check.estimates(check, facts)
    assert per_block["wanda_50"] == pytest.approx(25.0) and per_block["sparsegpt_50"] == pytest.approx(60.0)
    args.estimator = "per_tensor"
    assert gpu_check.estimates(check, facts)["ecoflap_zeroth_wanda_50"] - 25.0 == pytest.approx(7 * (per_block["ecoflap_zeroth_wanda_50"] - 25.0))


def test_goals_are_judged_on_hand_made_figures(gpu_check):
    args = gpu_check.parse_args(["--shape", "tiny", "--device", "cpu", "--prefill-lengths", "2048", "8192"])
    figures = {
        "wanda_50": {"seconds": 15.0, "x_floor": 1.96, "peak_gpu_gib": 17.0},
        "sparsegpt_50": {"seconds": 40.0, "x_floor": 5.2, "peak_gpu_gib": 18.0},
        "offload_wanda_50": {"seconds": 30.0, "x_floor": 3.9, "peak_gpu_gib": 2.3},
        "semi_structured_2_4": {"prefill": {"2048": {"speedup": 0.5}, "8192": {"speedup": 1.21}}},
        "layer_drop": {"prefill": {"2048": {"share_of_ideal": 0.95}, "8192": {"share_of_ideal": 0.85}}},
    }
    judged = {row["goal"]: row["pass"] for row in gpu_check.goals(figures, {"block_gib": 0.377}, args)}
    assert judged == {
        "Wanda 50% <= 2.0x the floor": True,
        "SparseGPT 50% <= 5x the floor": False,
        "offloaded Wanda: peak GPU memory <= 2 GiB + one block (2.38 GiB)": True,
        "2:4 prefill at 8192 tokens >= 1.2x dense": True,  # judged at the longest prefill only
        "25% layers dropped, prefill 2048: >= 90% of the ideal decoder speedup": True,
        "25% layers dropped, prefill 8192: >= 90% of the ideal decoder speedup": False,
    }
    figures["offload_wanda_50"] = {"skipped": "offload: prune_model has no execution_device yet"}
    judged = {row["goal"]: row["pass"] for row in gpu_check.goals(figures, {"block_gib": 0.377}, args)}
    assert judged["offloaded Wanda: peak GPU memory <= 2 GiB + one block (2.38 GiB)"] == "n/a: skipped: offload: prune_model has no execution_device yet"
