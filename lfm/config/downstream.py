"""Downstream trainer settings (`lfm train-downstream`, the transfer report): optimiser, early stopping, retrieval.

The downstream models' widths are not set here: they derive from the LFM's `model` section
(`models.downstream.DownstreamSizes.from_lfm`), so a downstream ranker always matches the LFM it is compared with.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import Field

from lfm.config.schema import Strict

Width = Annotated[int, Field(ge=1)]


class TrainerSettings(Strict):
    """Optimiser and early stopping; the defaults fit the 2-core machines and the small KuaiRand tabs."""

    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    # Small tabs hold 2-7k training rows: a pretraining-sized batch would be one step per epoch.
    batch_size: int = Field(1024, ge=1)
    max_epochs: int = Field(100, ge=1)  # a cap only; patience ends a healthy run long before it
    patience: int = Field(4, ge=0)  # epochs without a validation gain of at least `min_delta` before stopping
    min_delta: float = Field(1e-4, ge=0)
    min_epochs: int = Field(5, ge=0)  # no stop before this many epochs: flat first epochs are not convergence
    valid_fraction: float = Field(0.2, gt=0, lt=1)  # chronologically last share of the training rows
    threads: int = Field(2, ge=1)  # torch threads of one run
    eval_batch_size: int = Field(16384, ge=1)


class TwoTowerSettings(Strict):
    """The retrieval two-towers (model-level transfer)."""

    hidden: tuple[Width, ...] = (64,)  # hidden widths of the user projection; () is one linear map
    scratch_dim: Width | None = None  # id-embedding width of the control; null: the IR width (a fair control)
    recall_k: tuple[Width, ...] = Field((20, 100), min_length=1)


class DownstreamSettings(Strict):
    trainer: TrainerSettings = Field(default_factory=TrainerSettings)
    retrieval: TwoTowerSettings = Field(default_factory=TwoTowerSettings)
