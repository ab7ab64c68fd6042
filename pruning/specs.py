"""Declarative, validated descriptions of what to load and how to prune it.

A spec says *what*; applying it lives elsewhere (`pruning.local`, `pruning.models`). Specs are
frozen pydantic models with `extra="forbid"`, so a typo in a YAML key fails at the door.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


DType = Literal["float32", "bfloat16", "float16"]


class ModelSpec(Spec):
    """Where a model comes from.

    `source` is `packaged:<name>` (shipped in an installed package), a local checkpoint directory,
    or a hub id that must already be in the local Hugging Face cache (nothing is downloaded).
    """

    source: str = Field(min_length=1)
    dtype: DType = "float32"
    device: str = "cpu"
    trust_remote_code: bool = False

    @property
    def label(self) -> str:
        return self.source.removeprefix("packaged:").rstrip("/").split("/")[-1]


class CalibrationSpec(Spec):
    """N sequences of L tokens drawn (seeded) from the calibration split of a local corpus.

    Paper defaults are 128 x 2048 (Wanda, SparseGPT, ECoFLaP); the embedded default is sized for
    two CPU cores.
    """

    corpus: str = "jargon"
    n_samples: int = Field(32, gt=0)
    seq_len: int = Field(256, gt=1)
    seed: int = 0
    batch_size: int = Field(8, gt=0)


_NM = re.compile(r"^(\d+):(\d+)$")


def parse_n_m(pattern: str) -> tuple[int, int]:
    """'2:4' -> (2, 4): N weights kept in every M consecutive input columns (NVIDIA convention)."""
    match = _NM.match(pattern)
    if not match:
        raise ValueError(f"N:M pattern must look like '2:4', got {pattern!r}")
    n, m = int(match[1]), int(match[2])
    if not 0 < n < m:
        raise ValueError(f"N:M pattern needs 0 < N < M, got {pattern!r}")
    return n, m


class _Sparsity(Spec):
    """Shared by local pruners: a target sparsity in [0, 1), or an N:M pattern (which fixes it)."""

    sparsity: float | None = Field(None, ge=0.0, lt=1.0)
    n_m: str | None = Field(None, description="semi-structured pattern, e.g. '2:4' (N kept of M)")

    @model_validator(mode="after")
    def _check_sparsity(self):
        if self.n_m is None:
            if self.sparsity is None:
                raise ValueError("give `sparsity` (a fraction in [0, 1)) or an `n_m` pattern like '2:4'")
            return self
        n, m = parse_n_m(self.n_m)
        implied = 1.0 - n / m
        if self.sparsity is not None and abs(self.sparsity - implied) > 1e-9:
            raise ValueError(f"n_m={self.n_m!r} implies sparsity {implied:g}, but sparsity={self.sparsity:g}")
        object.__setattr__(self, "sparsity", implied)
        return self

    @property
    def target(self) -> float:
        assert self.sparsity is not None
        return self.sparsity

    @property
    def label(self) -> str:
        pattern = self.n_m if self.n_m else f"{round(self.target * 100, 2):g}%"
        return f"{self.name} {pattern}"  # type: ignore[attr-defined]


class DenseSpec(Spec):
    """The unpruned model: the reference every retention figure divides by."""

    name: Literal["dense"] = "dense"

    @property
    def target(self) -> float:
        return 0.0

    @property
    def label(self) -> str:
        return "dense"


class MagnitudeSpec(_Sparsity):
    """|W|, compared over the whole layer (as in the Wanda reference code's magnitude baseline)."""

    name: Literal["magnitude"]


class WandaSpec(_Sparsity):
    """Wanda (Sun et al., 2023): |W_ij| * ||X_j||_2, compared within each output row."""

    name: Literal["wanda"]


MethodSpec = Annotated[Union[DenseSpec, MagnitudeSpec, WandaSpec], Field(discriminator="name")]
