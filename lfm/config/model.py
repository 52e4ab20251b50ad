"""LFM architecture and pretraining settings (`models/` reads them)."""
from __future__ import annotations

from enum import Enum

from pydantic import Field

from lfm.config.schema import Strict


class EmbeddingVariant(str, Enum):
    """Which embedding layer the LFM uses (docs/domain.md section 4)."""

    plain = "plain"  # one table per field
    stem = "stem"  # shared + task-specific slices, All-Forward Task-specific-Backward gating
    crocodile = "crocodile"  # several tables, one expert each, covariance loss + prior gate


class ModelSettings(Strict):
    embedding_dim: int = Field(10, ge=1)  # per field; under STEM the width of the shared slice
    numeric_buckets: int = Field(16, ge=2)
    min_count: int = Field(1, ge=1)  # ids seen fewer times on the training days go to the OOV bucket
    user_tower: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)  # last width is the UR size
    item_tower: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)  # last width is the IR size
    cross_layers: int = Field(3, ge=0)
    fm: bool = False
    dnn: list[int] = Field(default_factory=lambda: [256, 64])
    embedding: EmbeddingVariant = EmbeddingVariant.plain
    stem_task_dim: int = Field(4, ge=1)  # width of each task-specific slice under STEM
    crocodile_tables: int = Field(2, ge=2)
    crocodile_cov_weight: float = Field(1e-3, ge=0.0)
    # Loss balance across scenarios: scenario s weighs n_s ** power (n_s = its labelled rows in the batch).
    # 1.0 = plain sample mean (big scenarios dominate), 0.0 = every scenario equal (per-domain mean, tiny tabs
    # dominate with noise), 0.5 (default) = square-root balance between the two.
    scenario_weight_power: float = Field(0.5, ge=0.0, le=1.0)


class TrainSettings(Strict):
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    batch_size: int = Field(4096, ge=1)
    max_epochs: int = Field(8, ge=1)
    patience: int = Field(1, ge=0)
    seed: int = 0
    threads: int = Field(2, ge=1)
    eval_batch_size: int = Field(16384, ge=1)


class UpdateSettings(Strict):
    """Daily LFM updates: with `every_days`, `run-daily` continues the export's lineage on the days since its newest
    version once that many have passed, and exports each day with the version trained through the day before."""

    every_days: int | None = Field(None, ge=1)  # None: the export's model stays frozen
    epochs: int = Field(1, ge=1)  # passes over the new days per update (no early stopping: no held-out day)
