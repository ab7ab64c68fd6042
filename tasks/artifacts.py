"""The small values tasks hand each other: paths and numbers, never modules or tensors."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from evals.harness import SampleScore, SuiteScore


class Artifact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StageUsage(Artifact):
    """Cost of the stage when it was computed, and which flow run computed it."""

    wall_s: float
    peak_rss_gb: float
    peak_gpu_gb: float | None = None
    computed_by: str | None = None  # flow run id; differs from the current one when read from cache


class CheckpointRef(Artifact):
    """What downstream cache keys see: where a checkpoint is and a fingerprint of its files."""

    path: str
    fingerprint: str


class ModelCheckpoint(Artifact):
    ref: CheckpointRef
    digest: str  # of the files' contents (`checkpoint_digest`): with dtype and device, the model's identity
    params_total: int
    usage: StageUsage  # never part of a downstream cache key (it changes every run)


class CalibrationSet(Artifact):
    path: str
    digest: str  # of the file's bytes: a truncated or replaced file is recomputed, not read
    n_samples: int
    seq_len: int
    usage: StageUsage


class LayerSparsity(Artifact):
    modality: str
    block: int
    layer: str
    n_params: int
    target_sparsity: float
    achieved_sparsity: float
    block_score: float | None = None


class PrunedCheckpoint(Artifact):
    ref: CheckpointRef
    params_prunable: int
    params_pruned: int
    achieved_sparsity: float  # over the prunable linears
    layers: list[LayerSparsity]
    usage: StageUsage


class BlockScoresResult(Artifact):
    """Global scores per block by modality (`pruning.scores.BlockScores`) and what computing them cost."""

    kind: str
    scores: dict[str, list[float]]
    n_params: dict[str, list[int]]
    n_samples: int  # calibration samples the scores were computed on
    usage: StageUsage


Score = SuiteScore  # one metric of one suite, as the evaluation harness reported it


class EvalScores(Artifact):
    scores: list[Score]
    usage: StageUsage
    items: list[SampleScore] = Field(default_factory=list)  # each item's values behind `scores`
    samples_dir: str | None = None  # the harness's per-sample logs, one <suite>.jsonl each (`eval.log_samples`)


class TrainedModel(Artifact):
    """A model the pipeline trained itself (the embedded toy VLM): where it is and how training went."""

    ref: CheckpointRef
    epoch_losses: list[float]
    n_examples: int
    usage: StageUsage


class FinetunedCheckpoint(Artifact):
    """A checkpoint after the finetune stage: which decoder layers trained and how the loss went."""

    ref: CheckpointRef
    train_layers: list[int]
    steps: int
    examples: int
    first_loss: float
    last_loss: float
    trainable_params: int
    usage: StageUsage


class LayerRedundancyResult(Artifact):
    """`pruning.layerdrop.LayerRedundancy` as plain numbers (cos between decoder-layer boundaries h_0..h_L)."""

    cos_mean: list[list[float]]
    cos_last: list[list[float]]
    angle_last: list[list[float]]  # mean over sequences of arccos(last-token cos) / pi
    n_sequences: int
    protected: list[int]  # layers no method may drop (Qwen3-VL DeepStack targets)
    usage: StageUsage


class SlebResult(Artifact):
    removed: list[int]  # original indices, in removal order
    nll: list[float]  # calibration NLL after each removal
    dense_nll: float
    usage: StageUsage


class DroppedCheckpoint(Artifact):
    """A checkpoint with decoder layers removed, and the plan that removed them (original indices)."""

    ref: CheckpointRef
    n_layers: int  # before dropping
    drop: list[int]
    finetune: list[int]
    anchor: list[int]
    train_layers: list[int]  # the finetune layers' indices in the dropped model
    modality: str
    layer_params: list[int]  # parameters of each original layer
    params_removed: int
    prunable_removed: int  # weights of prunable linears removed with the layers
    prunable_total: int  # weights of every prunable linear of the dense model
    usage: StageUsage

    @property
    def achieved_sparsity(self) -> float:
        """Comparable with weight sparsity: the share of prunable-linear weights gone."""
        return self.prunable_removed / self.prunable_total


class RegressionOutcome(Artifact):
    """A flow run's results against the previous run of each configuration (`prunebench compare`)."""

    markdown: str
    n_worse: int
    n_better: int
