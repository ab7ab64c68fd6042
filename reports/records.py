"""What a benchmark run leaves behind: plain pydantic rows, no torch.

A *run* is one (model, method) evaluated within one benchmark flow run. `method_id` names the method
(every parameter of its spec, not its label), so reports group runs by it; `config_hash` names the
configuration (model, method, calibration, eval settings but the choice of primary metrics) so that
runs of the same configuration can be compared across time; `run_id` is unique per flow run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunRecord(Record):
    run_id: str
    flow_run_id: str
    experiment: str
    config_hash: str
    model: str  # the model's label in its experiment, e.g. "smollm2-135m"; a display name, never a key
    model_source: str  # where its files were: `packaged:<name>`, a hub id, or a local path (resolved from schema 7)
    method: str  # method name, e.g. "wanda"
    method_id: str  # pruning.specs.method_identity of method_params: what tells one method from another
    method_label: str  # human label, e.g. "sparsegpt 50% (blocksize=32)"; a display name, never a key
    method_params: str  # every parameter of the method spec, as a JSON object
    # Weight pruning: share of the prunable linears' weights set to zero (0 for dense); None for layer dropping.
    target_weight_sparsity: float | None = Field(None, ge=0, le=1)
    achieved_weight_sparsity: float | None = Field(None, ge=0, le=1)
    # Layer dropping: the spec's drop_ratio, decoder layers dropped, and of how many; None otherwise.
    target_drop_ratio: float | None = Field(None, ge=0, le=1)
    layers_dropped: int | None = Field(None, ge=0)
    layers_total: int | None = Field(None, ge=0)
    params_total: int  # every parameter of the dense model
    params_pruned: int  # of those, zeroed by weight pruning or removed with dropped layers
    params_pruned_share: float | None = Field(None, ge=0, le=1)  # params_pruned / params_total (None if 0)
    seed: int
    git_commit: str
    package_versions: str  # JSON object {package: version}
    host: str
    device: str
    started_at: datetime
    finished_at: datetime
    environment_digest: str | None = None  # flows.environment.environment_digest(); None before schema 4
    lock_digest: str | None = None  # SHA-256 of requirements.lock; None before schema 4 or without a lock
    # pruning.specs.model_identity: the model's files' contents, dtype and device; what reports tell models
    # apart by (`model` is a label, `model_source` a place). None for runs recorded before schema 7.
    model_id: str | None = None
    model_dtype: str | None = None  # the spec's dtype and device (`device` says which machine's); None before schema 7
    model_device: str | None = None
    # The checkpoint the run evaluated (pruned, dropped or finetuned; the model's own for dense), and its
    # files' size in bytes. None before schema 8.
    checkpoint: str | None = None
    checkpoint_bytes: int | None = Field(None, ge=0)
    # Whether the run left that checkpoint on disk (`output.keep_checkpoints`); None before schema 9.
    checkpoint_kept: bool | None = None


class ResultRow(Record):
    run_id: str
    suite: str
    metric: str
    value: float
    stderr: float | None = None
    higher_is_better: bool
    n_samples: int | None = None
    is_primary: bool = False  # the suite's primary metric, the one mean retention averages (evals.suites.primary)


class ItemScore(Record):
    """One metric of one item (a suite's document), as the harness logged it (`evals.harness.SampleScore`):
    0/1 for accuracy metrics, the log-likelihood for perplexity metrics. `weight` is the document's
    words or bytes where the suite's score weighs items by it (word_perplexity = exp(-Σvalue / Σweight),
    byte_perplexity, bits_per_byte); None where it aggregates the values alone (acc: their mean;
    perplexity: exp(-mean)). Runs recorded before schema 6 have none."""

    run_id: str
    suite: str
    item: str  # the harness's doc_id: the same document in every run of the suite
    metric: str  # as ResultRow.metric
    value: float
    weight: float | None = None


class StageRecord(Record):
    run_id: str
    stage: str  # "model", "calibration", "prune", "evaluate"
    wall_s: float
    peak_rss_gb: float | None = None
    peak_gpu_gb: float | None = None
    cached: bool = False  # the stage's result came from the cache of an earlier flow run


class AllocationRow(Record):
    """Per-layer sparsity: the target the allocation gave and what pruning achieved."""

    run_id: str
    modality: str
    block: int
    layer: str  # dotted linear name inside the block, e.g. "mlp.up_proj"
    n_params: int
    target_sparsity: float
    achieved_sparsity: float
    block_score: float | None = None  # what set the block's sparsity (ECoFLaP score, OWL outlier ratio)


class RedundancyRow(Record):
    """One cell of a layer-redundancy matrix: cos(h_i, h_j), j > i, where h_i is the hidden state
    entering decoder layer i and h_L the last layer's output (the matrix is symmetric with a unit
    diagonal, so only the upper triangle is stored). INTERLACE ranks triplets by s_3(i) = cell
    (i, i + 3) and picks inside them by s_1 (arXiv 2511.19676); ShortGPT's Block Influence of layer
    i is 1 - cell (i, i + 1)."""

    run_id: str
    method: str  # the layer-drop method whose selection read the matrix, e.g. "interlace"
    kind: Literal["cos_mean", "cos_last"]  # cosine averaged over all tokens, or on the last token only
    i: int = Field(ge=0)
    j: int = Field(ge=0)
    value: float


class RunBundle(Record):
    """Everything one run records, written in one transaction."""

    run: RunRecord
    results: list[ResultRow] = Field(default_factory=list)
    items: list[ItemScore] = Field(default_factory=list)
    stages: list[StageRecord] = Field(default_factory=list)
    allocations: list[AllocationRow] = Field(default_factory=list)
    redundancy: list[RedundancyRow] = Field(default_factory=list)
