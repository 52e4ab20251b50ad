"""One downstream transfer variant on one scenario and task, trained and measured on frames.

Input: a training and a test frame (see `encoding`); output: test AUC (and recall@K for the retrieval
two-tower) of the model at its best validation epoch. Validation is the chronologically last part of the training
days, so no row of the future tunes the model, and a run is deterministic per seed (same frames, seed and
settings give the same weights and AUCs). This module reads frames only; `lfm train-downstream` and the transfer
report fetch them through Feast.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
from torch import nn

from lfm.config.schema import DataSchema
from models.adapters import Representation
from models.downstream import Batch, DownstreamError, DownstreamRanker, EmptyScenario, MissingVectors
from models.encoders import FeatureEncoders
from models.iim import IimSource
from models.training.encoding import (EVENT_TIMESTAMP, Frame, RowEncoder, as_table, check_frames,
                                      chronological_split, in_time_order)
from models.training.fit import FitResult, auc, fit, predict
from models.training.recall import retrieval_recall
from models.training.seeding import seeded
from models.training.setup import DownstreamSetup
from models.training.variants import Granularity, TransferRequest, TransferVariant
from models.two_tower import FrozenIrTwoTower, ScratchTwoTower, UserSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TransferResult:
    label: str  # variant (with k for the IIM)
    seed: int
    test_auc: float
    fit: FitResult
    train_rows: int
    valid_rows: int
    test_rows: int
    vector_coverage: Mapping[str, float]  # share of test rows that had each vector (the rest read as zeros)
    recall: Mapping[int, float] = field(default_factory=dict)  # K -> recall@K, retrieval variants only
    model: nn.Module | None = field(default=None, repr=False, compare=False)
    test_labels: np.ndarray | None = field(default=None, repr=False, compare=False)  # for test-row bootstraps
    test_scores: np.ndarray | None = field(default=None, repr=False, compare=False)


def run_transfer(train: Frame, test: Frame, task: str, request: TransferRequest, schema: DataSchema,
                 settings: DownstreamSetup, seed: int, *, scenario: object = None,
                 iim: IimSource | None = None, feature_version: str | None = None,
                 keep_model: bool = False) -> TransferResult:
    """Train `request` on `train` (its chronological tail validates) and score it on `test`.

    `iim`: the checkpoint for module-level variants; `feature_version`: the model version of the feature service
    the frames came from (an IIM from another version is refused: the comparison would mix two LFMs).
    """
    train_t, test_t = as_table(train), in_time_order(as_table(test), EVENT_TIMESTAMP)
    check_frames(train_t, test_t, task, schema, scenario)
    reps = request.representations
    missing = [r.value for r in reps if r.value not in train_t.column_names or r.value not in test_t.column_names]
    if missing:
        raise MissingVectors(f"{request.label} reads {[r.value for r in reps]} but the frames lack {missing}: "
                             "fetch a training set from a feature service that serves them")
    fit_part, valid_part = chronological_split(train_t, settings.trainer.valid_fraction, EVENT_TIMESTAMP)

    if request.variant.granularity is Granularity.module:
        if iim is None:
            raise DownstreamError(f"{request.label} needs the LFM checkpoint: pass its registered model version")
        iim.check_feature_version(feature_version)
        field_encoders = iim.encoders  # the checkpoint's vocabularies: its embedding rows mean these values
    else:
        field_encoders = FeatureEncoders.fit(fit_part, schema, settings.field_encoding)
    rows = RowEncoder.fit(fit_part, [train_t, test_t], schema, field_encoders, task, reps)
    fit_b, _ = rows.encode(fit_part)
    valid_b, _ = rows.encode(valid_part)
    test_b, coverage = rows.encode(test_t)
    for name, b in (("training", fit_b), ("validation", valid_b), ("test", test_b)):
        if len(b) == 0:
            raise EmptyScenario(f"no labelled {task!r} rows in the {name} part of scenario {scenario!r}")

    with seeded(seed, settings.trainer.threads):
        model = build_variant_model(request, rows, fit_b, settings, iim)
        result = fit(model, fit_b, valid_b, settings.trainer, seed)
        test_scores = predict(model, test_b, settings.trainer.eval_batch_size)
        test_auc = auc(test_b.labels.numpy(), test_scores)
        recall: dict[int, float] = {}
        if request.variant.granularity is Granularity.model:
            recall = retrieval_recall(model, Batch.concat([fit_b, valid_b, test_b]), test_b,
                                      settings.retrieval.recall_k)
    log.info("%s seed %d: test AUC %.4f (valid %.4f at epoch %d of %d, %s) in %.1fs", request.label, seed,
             test_auc, result.best_valid_auc, result.best_epoch, result.epochs,
             "converged" if result.converged else "hit the epoch cap", result.seconds)
    return TransferResult(label=request.label, seed=seed, test_auc=test_auc, fit=result, train_rows=len(fit_b),
                          valid_rows=len(valid_b), test_rows=len(test_b), vector_coverage=coverage, recall=recall,
                          model=model if keep_model else None, test_labels=test_b.labels.numpy(),
                          test_scores=test_scores)


def build_variant_model(request: TransferRequest, rows: RowEncoder, train: Batch, settings: DownstreamSetup,
                iim: IimSource | None) -> nn.Module:
    """The untrained model of one variant (call it after seeding torch)."""
    variant = request.variant
    if variant.granularity is Granularity.module:
        assert iim is not None
        return iim.build(k=request.k or 0, pretrained=variant is TransferVariant.iim)
    source = variant.user_source
    dims = rows.vector_dims(train)
    if source is UserSource.scratch:
        dim = settings.retrieval.scratch_dim or settings.sizes.embedding_dim
        return ScratchTwoTower(rows.users.cardinality, rows.items.cardinality, dim, settings.retrieval.hidden)
    if source is not None:
        return FrozenIrTwoTower(source, dims[source.representation], dims[Representation.ir],
                                settings.retrieval.hidden)
    return DownstreamRanker(rows.fields.cardinalities, settings.sizes, request.adapters, dims)
