"""Synthetic run bundles for report tests (no torch): two models, local pruners at several
sparsities, OWL/ECoFLaP allocations, layer-drop runs with redundancy matrices."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone

from pruning.specs import method_identity
from reports.records import AllocationRow, RedundancyRow, ResultRow, RunBundle, RunRecord, StageRecord

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
LAYERS = ("self_attn.q_proj", "mlp.up_proj")


def synthetic_bundle(
    run_id: str,
    method: str,
    label: str,
    *,
    model: str = "smollm2-135m",
    sparsity: float = 0.0,
    drop_ratio: float | None = None,
    quality: float = 1.0,  # 1 = as good as dense
    hours: float = 0.0,
    config_hash: str | None = None,
    flow_run_id: str | None = None,
    allocation: list[float] | None = None,  # per-block target sparsity
    modalities: tuple[str, ...] = ("language",),
    redundancy_layers: int = 0,
    acc_stderr: float | None = 0.02,
    params: dict | None = None,  # method parameters besides name and ratio
    model_id: str | None = None,
) -> RunBundle:
    params = {"name": method, **(params or {})}
    if drop_ratio is not None:
        params["drop_ratio"] = drop_ratio
        removed = dict(target_drop_ratio=drop_ratio, layers_dropped=int(drop_ratio * 8), layers_total=8)
        share = drop_ratio * 0.9
    else:
        if method != "dense":
            params["sparsity"] = sparsity
        removed = dict(target_weight_sparsity=sparsity, achieved_weight_sparsity=sparsity)
        share = sparsity * 0.8
    finished = T0 + timedelta(hours=hours)
    run = RunRecord(
        run_id=run_id, flow_run_id=flow_run_id or f"flow-{hours}", experiment="main",
        config_hash=config_hash or f"{model}/{label}", model=model, model_source=f"packaged:{model}",
        method=method, method_id=method_identity(params), method_label=label, method_params=json.dumps(params),
        **removed, params_total=1000, params_pruned=round(1000 * share), params_pruned_share=share, seed=0, git_commit="abc123",
        package_versions='{"duckdb": "2.0.0"}', host="box", device="cpu",
        started_at=finished - timedelta(minutes=5), finished_at=finished, model_id=model_id,
    )  # fmt: skip
    results = [
        ResultRow(run_id=run_id, suite="jargon_ppl", metric="word_perplexity", value=10.0 / quality,
                  higher_is_better=False, n_samples=64, is_primary=True),
        ResultRow(run_id=run_id, suite="jargon_mc", metric="acc", value=0.5 * quality, stderr=acc_stderr,
                  higher_is_better=True, n_samples=200, is_primary=True),
    ]  # fmt: skip
    stages = [StageRecord(run_id=run_id, stage="model", wall_s=2.0, peak_rss_gb=0.6, cached=hours > 0),
              StageRecord(run_id=run_id, stage="evaluate", wall_s=30.0 + 10 * sparsity, peak_rss_gb=1.1)]  # fmt: skip
    if method != "dense":
        stages.append(StageRecord(run_id=run_id, stage="prune", wall_s=12.5, peak_rss_gb=0.9, peak_gpu_gb=None))
    allocations = []
    if sparsity and drop_ratio is None:
        blocks = allocation or [sparsity] * 4
        allocations = [
            AllocationRow(run_id=run_id, modality=modality, block=block, layer=layer, n_params=100,
                          target_sparsity=target, achieved_sparsity=min(0.99, target + 0.001),
                          block_score=None if allocation is None else 1.0 / (1 + block))
            for modality in modalities for block, target in enumerate(blocks) for layer in LAYERS
        ]  # fmt: skip
    redundancy = [
        RedundancyRow(run_id=run_id, method=method, kind=kind, i=i, j=j,
                      value=math.exp(-(j - i) / (4 if kind == "cos_mean" else 2)) * (0.9 + 0.1 * (i % 3 == 1)))
        for kind in ("cos_mean", "cos_last") for i in range(redundancy_layers) for j in range(i + 1, redundancy_layers)
    ]  # fmt: skip
    return RunBundle(run=run, results=results, stages=stages, allocations=allocations, redundancy=redundancy)


def synthetic_bundles() -> list[RunBundle]:
    bundles = [synthetic_bundle("dense", "dense", "dense")]
    for sparsity, quality in ((0.5, 0.8), (0.6, 0.65), (0.7, 0.4)):
        pct = f"{sparsity:.0%}"
        bundles += [
            synthetic_bundle(f"wanda-{pct}", "wanda", f"wanda {pct}", sparsity=sparsity, quality=quality),
            synthetic_bundle(f"magnitude-{pct}", "magnitude", f"magnitude {pct}", sparsity=sparsity, quality=quality - 0.2),
            synthetic_bundle(f"owl-{pct}", "owl", f"owl+wanda {pct}", sparsity=sparsity, quality=quality + 0.03,
                             allocation=[sparsity - 0.06, sparsity - 0.02, sparsity + 0.02, sparsity + 0.06]),
        ]  # fmt: skip
    bundles.append(synthetic_bundle("ecoflap-50%", "ecoflap", "ecoflap(zeroth)+wanda 50%", sparsity=0.5, quality=0.85,
                                    allocation=[0.4, 0.45, 0.55, 0.6]))  # fmt: skip
    for ratio, quality in ((0.25, 0.75), (0.5, 0.45)):
        pct = f"{ratio:.0%}"
        bundles += [
            synthetic_bundle(f"interlace-{pct}", "interlace", f"interlace {pct}", drop_ratio=ratio, quality=quality,
                             redundancy_layers=8 if ratio == 0.25 else 0),
            synthetic_bundle(f"shortgpt-{pct}", "shortgpt", f"shortgpt {pct}", drop_ratio=ratio, quality=quality - 0.1),
        ]  # fmt: skip
    bundles += [
        synthetic_bundle("vlm-dense", "dense", "dense", model="toy-vlm"),
        synthetic_bundle("vlm-ecoflap", "ecoflap", "ecoflap(zeroth)+wanda 50%", model="toy-vlm", sparsity=0.5,
                         quality=0.7, allocation=[0.3, 0.5, 0.7], modalities=("vision", "language")),
    ]  # fmt: skip
    return bundles

