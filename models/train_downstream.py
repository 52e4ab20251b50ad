"""Train one downstream transfer variant on one scenario and task, and measure it honestly.

Input: a training and a test frame (Arrow table or pandas) holding the task label, the scenario's raw fields,
the keys, `event_timestamp` and the vector columns `ur`, `ir`, `cr_user`, `cr_item` as the Feast point-in-time
retrieval returns them (a row without a snapshot before its time has a null vector; it reads as zeros).
Output: test AUC (and recall@K for the retrieval two-tower) of the model at its best validation epoch.

Honesty rules from DOMAIN.md section 5, enforced here:
- train to convergence: early stopping on validation AUC with patience, never a fixed short budget; the result
  says whether patience (not the epoch cap) ended the run;
- validation is the chronologically last part of the training days, so no row of the future tunes the model;
- deterministic per seed: the same frames, seed and settings give the same weights and AUCs.

This module reads frames only; `lfm train-downstream` and the transfer report fetch them through Feast.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import torch
from sklearn.metrics import roc_auc_score
from torch import Tensor, nn

from lfm.config.model import ModelSettings, TrainSettings
from lfm.config.schema import DataSchema
from models.adapters import AdapterKind, Representation, TransferSpec
from models.downstream import (Batch, DownstreamError, DownstreamRanker, DownstreamSizes, EmptyScenario,  # noqa: F401
                               MissingTask, MissingVectors, VersionMismatch)
from models.encoders import CategoricalEncoder, FeatureEncoders, encode_labels
from models.two_tower import FrozenIrTwoTower, ScratchTwoTower, TwoTower, UserSource, recall_at_k

if TYPE_CHECKING:
    from lfm.config import LfmConfig
    from models.iim import IimSource

log = logging.getLogger(__name__)

EVENT_TIMESTAMP = "event_timestamp"  # the row time column of every Feast training set (docs/contracts.md)


# ----------------------------------------------------------------------------------------------------------------
# Variants: the typed options of the transfer report (DOMAIN.md section 3).

class Granularity(str, Enum):
    none = "none"
    feature = "feature"
    module = "module"
    model = "model"


class TransferVariant(str, Enum):
    none = "none"  # the scenario's own fields only
    ur_linear = "ur_linear"  # SUM-style: UR through one linear projection
    ur_mlp = "ur_mlp"  # UR through the MLP adapter
    ur_ir_mlp = "ur_ir_mlp"  # UR and IR through MLP adapters
    ur_ir_cr_mlp = "ur_ir_cr_mlp"  # UR, IR, CR(user), CR(item), all through MLP adapters
    ur_ir_cr_gate = "ur_ir_cr_gate"  # UR and IR through MLP adapters, CR(user) and CR(item) through sigmoid gates
    cr_gate = "cr_gate"  # CR(user) and CR(item) gates alone: isolates CR, used to compare CR extraction layers
    iim = "iim"  # Isomorphic Interaction Module from the checkpoint's embeddings and first k layers
    iim_random = "iim_random"  # its control: the same architecture from random initialisation
    retrieval_scratch = "retrieval_scratch"  # two-tower on id embeddings (control)
    retrieval_ur = "retrieval_ur"  # frozen IR item side, projection of UR user side
    retrieval_cr_user = "retrieval_cr_user"  # frozen IR item side, projection of CR(user) user side

    @property
    def granularity(self) -> Granularity:
        if self is TransferVariant.none:
            return Granularity.none
        if self in (TransferVariant.iim, TransferVariant.iim_random):
            return Granularity.module
        if self.value.startswith("retrieval_"):
            return Granularity.model
        return Granularity.feature

    @property
    def transfer_spec(self) -> TransferSpec:
        """The adapters of a ranker variant (empty for none and for module/model-level variants)."""
        mlp, gate, lin = AdapterKind.mlp, AdapterKind.gate, AdapterKind.linear
        presets = {
            TransferVariant.ur_linear: TransferSpec.of(ur=lin),
            TransferVariant.ur_mlp: TransferSpec.of(ur=mlp),
            TransferVariant.ur_ir_mlp: TransferSpec.of(ur=mlp, ir=mlp),
            TransferVariant.ur_ir_cr_mlp: TransferSpec.of(ur=mlp, ir=mlp, cr_user=mlp, cr_item=mlp),
            TransferVariant.ur_ir_cr_gate: TransferSpec.of(ur=mlp, ir=mlp, cr_user=gate, cr_item=gate),
            TransferVariant.cr_gate: TransferSpec.of(cr_user=gate, cr_item=gate),
        }
        return presets.get(self, TransferSpec())

    @property
    def user_source(self) -> UserSource | None:
        return {TransferVariant.retrieval_scratch: UserSource.scratch, TransferVariant.retrieval_ur: UserSource.ur,
                TransferVariant.retrieval_cr_user: UserSource.cr_user}.get(self)


@dataclass(frozen=True)
class TransferRequest:
    """One variant to train; `k` is the IIM depth, `spec` overrides a feature-level variant's adapters."""

    variant: TransferVariant
    k: int | None = None
    spec: TransferSpec | None = None

    def __post_init__(self) -> None:
        if self.variant is TransferVariant.iim and self.k is None:
            raise DownstreamError("iim needs k, the number of interaction layers to copy from the checkpoint "
                                  "(--k K; 0 copies the input layers only)")
        if self.variant is not TransferVariant.iim and self.k is not None:
            # the control copies nothing, so it is one model whatever k its IIMs use
            object.__setattr__(self, "k", None)
        if self.k is not None and self.k < 0:
            raise DownstreamError(f"k must be >= 0, got {self.k}")

    @property
    def adapters(self) -> TransferSpec:
        return self.spec if self.spec is not None else self.variant.transfer_spec

    @property
    def label(self) -> str:
        """Stable name in reports: the variant, plus k for the IIM."""
        return self.variant.value if self.k is None else f"{self.variant.value}_k{self.k}"

    @property
    def representations(self) -> tuple[Representation, ...]:
        """The vector columns this variant reads."""
        source = self.variant.user_source
        if source is None:
            return self.adapters.representations
        return () if source is UserSource.scratch else (Representation(source.value), Representation.ir)


# ----------------------------------------------------------------------------------------------------------------
# Settings: every size and budget in one place; `from_config` takes what the platform config already fixes.

@dataclass(frozen=True)
class TrainerSettings:
    """Optimiser and early stopping; defaults fit the 2-core machines and the small KuaiRand tabs."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 1024  # small tabs hold 2-7k training rows: a pretraining batch would be one step per epoch
    max_epochs: int = 100  # a cap only; patience ends a healthy run long before it
    patience: int = 4  # epochs without a validation gain of at least `min_delta` before stopping
    min_delta: float = 1e-4
    min_epochs: int = 5  # no stop before this many epochs: slow starts (flat first epochs) are not convergence
    valid_fraction: float = 0.2  # chronologically last share of the training rows
    threads: int = 2
    eval_batch_size: int = 16384

    @classmethod
    def from_config(cls, train: TrainSettings, **overrides: object) -> "TrainerSettings":
        base = cls(lr=train.lr, weight_decay=train.weight_decay, threads=train.threads,
                   eval_batch_size=train.eval_batch_size)
        return replace(base, **overrides)


@dataclass(frozen=True)
class TwoTowerSettings:
    hidden: tuple[int, ...] = (64,)  # user projection MLP
    scratch_dim: int | None = None  # id-embedding width of the control; from_config sets the IR width (fair)
    recall_k: tuple[int, ...] = (20, 100)


@dataclass(frozen=True)
class DownstreamSettings:
    sizes: DownstreamSizes
    trainer: TrainerSettings = TrainerSettings()
    retrieval: TwoTowerSettings = TwoTowerSettings()
    field_encoding: ModelSettings = ModelSettings()  # numeric buckets and min count of the ranker's vocabularies

    @classmethod
    def from_config(cls, cfg: "LfmConfig", **trainer_overrides: object) -> "DownstreamSettings":
        """Sizes derived from the LFM's (smaller DNN), optimiser from `train`, control width = the IR width."""
        return cls(sizes=DownstreamSizes.from_lfm(cfg.model),
                   trainer=TrainerSettings.from_config(cfg.train, **trainer_overrides),
                   retrieval=TwoTowerSettings(scratch_dim=cfg.model.item_tower[-1]),
                   field_encoding=cfg.model)


# ----------------------------------------------------------------------------------------------------------------
# Frames -> tensors.

Frame = pa.Table | pd.DataFrame


def as_table(frame: Frame) -> pa.Table:
    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, pd.DataFrame):
        return pa.Table.from_pandas(frame, preserve_index=False)
    raise TypeError(f"expected a pyarrow Table or pandas DataFrame, got {type(frame).__name__}")


def vector_matrix(table: pa.Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(n, d) float32 of a list column and a (n,) bool mask of the rows that had a vector (others are zeros)."""
    col = table.column(name).combine_chunks()
    if pa.types.is_null(col.type) or col.null_count == len(col):
        raise MissingVectors(f"column {name!r} is null on every row: no snapshot precedes these rows "
                             "(refresh the day before the first training day)")
    if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type) or pa.types.is_fixed_size_list(col.type)):
        raise MissingVectors(f"column {name!r} holds {col.type}, not a list of floats: pass the Feast vectors")
    present = ~col.is_null().to_numpy(zero_copy_only=False)
    n = len(col)
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)[present]
    d = int(lengths[0])
    if (lengths != d).any():
        raise MissingVectors(f"column {name!r} mixes vector widths {sorted(set(lengths.tolist()))}: one model "
                             "version per training set")
    values = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    out = np.zeros((n, d), dtype=np.float32)
    out[present] = values.reshape(-1, d)
    if not np.isfinite(out).all():
        raise MissingVectors(f"column {name!r} holds NaN or infinite values")
    return out, present


@dataclass
class RowEncoder:
    """Frame -> `Batch` with fixed vocabularies: fields by `FeatureEncoders`, keys by their own vocabulary."""

    fields: FeatureEncoders
    users: CategoricalEncoder
    items: CategoricalEncoder
    item_identity: CategoricalEncoder  # every item of every frame: tells recall candidates apart
    representations: tuple[Representation, ...]
    task: str

    @classmethod
    def fit(cls, train: pa.Table, every: list[pa.Table], schema: DataSchema, fields: FeatureEncoders, task: str,
            representations: tuple[Representation, ...]) -> "RowEncoder":
        """Key vocabularies from the training rows only (an item first seen in test is cold: index 0)."""
        def keys(t: pa.Table, name: str) -> pa.Array:
            return t.column(name).combine_chunks()

        all_items = pa.concat_arrays([pc.cast(keys(t, schema.item_key), pa.string()) for t in every])
        return cls(fields=fields,
                   users=CategoricalEncoder.fit(schema.user_key, keys(train, schema.user_key), 1),
                   items=CategoricalEncoder.fit(schema.item_key, keys(train, schema.item_key), 1),
                   item_identity=CategoricalEncoder.fit(schema.item_key, all_items, 1),
                   representations=representations, task=task)

    def encode(self, table: pa.Table) -> tuple[Batch, dict[str, float]]:
        """The labelled rows as a `Batch`, and per representation the share of rows that had a vector."""
        labels, mask = encode_labels(table, [self.task])
        keep = mask[:, 0] > 0
        vectors, coverage = {}, {}
        for rep in self.representations:
            m, present = vector_matrix(table, rep.value)
            vectors[rep.value] = torch.from_numpy(m)
            coverage[rep.value] = float(present[keep.numpy()].mean()) if bool(keep.any()) else 0.0
        batch = Batch(fields=self.fields.encode_fields(table), labels=labels[:, 0], vectors=vectors,
                      users=torch.from_numpy(self.users.encode(table.column(self.users.name).combine_chunks())),
                      items=torch.from_numpy(self.items.encode(table.column(self.items.name).combine_chunks())),
                      item_keys=torch.from_numpy(
                          self.item_identity.encode(table.column(self.items.name).combine_chunks())))
        return batch.take(torch.nonzero(keep).squeeze(1)), coverage

    def vector_dims(self, batch: Batch) -> dict[Representation, int]:
        return {Representation(k): int(v.shape[1]) for k, v in batch.vectors.items()}


def in_time_order(table: pa.Table, time_column: str) -> pa.Table:
    """Rows sorted by time (stable, so equal times keep their order); unchanged when there is no time column."""
    if time_column not in table.column_names:
        return table
    return table.take(pc.sort_indices(table, sort_keys=[(time_column, "ascending")]))


def chronological_split(table: pa.Table, valid_fraction: float, time_column: str) -> tuple[pa.Table, pa.Table]:
    """(train, valid): the last `valid_fraction` of rows by time is validation."""
    if not 0 < valid_fraction < 1:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    ordered = in_time_order(table, time_column)
    cut = int(round(table.num_rows * (1 - valid_fraction)))
    return ordered.slice(0, cut), ordered.slice(cut)


def check_frames(train: pa.Table, test: pa.Table, task: str, schema: DataSchema, scenario: object = None) -> None:
    """Refuse a missing task column or an empty window before any work (each a clear, fixable message)."""
    where = f"scenario {schema.scenario}={scenario!r}" if scenario is not None else "the training set"
    for name, table in (("training", train), ("test", test)):
        if task not in table.column_names:
            known = [t for t in schema.tasks if t in table.column_names]
            raise MissingTask(f"task column {task!r} does not exist in the {name} frame; tasks present: {known} "
                              f"(schema.tasks lists {schema.tasks})")
        if table.num_rows == 0:
            raise EmptyScenario(f"{where} has no rows in the {name} window: pick a scenario with rows "
                                "on those days, or other days")


# ----------------------------------------------------------------------------------------------------------------
# Training loop.

def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    if len(np.unique(labels)) < 2:
        raise DownstreamError(f"AUC needs both labels; these {len(labels)} rows hold only {np.unique(labels)} "
                              "(a scenario this small or this one-sided cannot be measured)")
    return float(roc_auc_score(labels, scores))


@contextlib.contextmanager
def seeded(seed: int, threads: int) -> Iterator[None]:
    """Seeded torch on a fixed thread count (restored after): the CPU kernels used here are deterministic, so
    this gives bit-identical runs (tests check it) without `use_deterministic_algorithms`, which slows the
    embedding backward pass by about a third on CPU and guards only CUDA kernels."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class EarlyStopping:
    """Tracks the best validation AUC and its weights; says stop after `patience` epochs without a gain."""

    def __init__(self, patience: int, min_delta: float, min_epochs: int = 0) -> None:
        self.patience, self.min_delta, self.min_epochs = patience, min_delta, min_epochs
        self.best = -np.inf
        self.best_epoch = -1
        self.best_state: dict[str, Tensor] | None = None
        self.bad_epochs = 0

    def update(self, metric: float, epoch: int, model: nn.Module) -> bool:
        """Record one epoch's metric; True when training should stop."""
        if metric > self.best + self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = metric, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.bad_epochs += 1
        return self.bad_epochs > self.patience and epoch + 1 >= self.min_epochs


@dataclass(frozen=True)
class FitResult:
    best_valid_auc: float
    best_epoch: int  # 0-based epoch of the kept weights
    epochs: int  # epochs run
    converged: bool  # True when patience ended the run, False when the epoch cap did (then: raise max_epochs)
    history: tuple[float, ...]  # validation AUC per epoch
    seconds: float


@torch.no_grad()
def predict(model: nn.Module, data: Batch, batch_size: int) -> np.ndarray:
    model.eval()
    out = [torch.sigmoid(model(data.take(torch.arange(s, min(s + batch_size, len(data))))))
           for s in range(0, len(data), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def fit(model: nn.Module, train: Batch, valid: Batch, settings: TrainerSettings, seed: int) -> FitResult:
    """AdamW + BCE with early stopping on validation AUC; the model ends holding its best epoch's weights."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.lr,
                            weight_decay=settings.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    stopper = EarlyStopping(settings.patience, settings.min_delta, settings.min_epochs)
    labels = valid.labels.numpy()
    history: list[float] = []
    t0 = time.perf_counter()
    stopped = False
    for epoch in range(settings.max_epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen)
        for s in range(0, len(train), settings.batch_size):
            batch = train.take(order[s:s + settings.batch_size])
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(batch), batch.labels)
            loss.backward()
            opt.step()
        history.append(auc(labels, predict(model, valid, settings.eval_batch_size)))
        if stopper.update(history[-1], epoch, model):
            stopped = True
            break
    assert stopper.best_state is not None
    model.load_state_dict(stopper.best_state)
    return FitResult(best_valid_auc=stopper.best, best_epoch=stopper.best_epoch, epochs=len(history),
                     converged=stopped, history=tuple(history), seconds=time.perf_counter() - t0)


# ----------------------------------------------------------------------------------------------------------------
# One variant end to end on frames.

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
                 settings: DownstreamSettings, seed: int, *, scenario: object = None,
                 iim: "IimSource | None" = None, feature_version: str | None = None,
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
        model = build_model(request, rows, fit_b, settings, iim)
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


def build_model(request: TransferRequest, rows: RowEncoder, train: Batch, settings: DownstreamSettings,
                iim: "IimSource | None") -> nn.Module:
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
        return FrozenIrTwoTower(source, dims[Representation(source.value)], dims[Representation.ir],
                                settings.retrieval.hidden)
    return DownstreamRanker(rows.fields.cardinalities, settings.sizes, request.adapters, dims)


@torch.no_grad()
def retrieval_recall(model: TwoTower, seen: Batch, test: Batch, ks: tuple[int, ...]) -> dict[int, float]:
    """recall@K of the test positives; candidates are all items of `seen` (rows in time order), each with the
    vector of its latest row (for the frozen-IR tower: the newest IR snapshot)."""
    model.eval()
    keys = seen.item_keys.numpy()
    _, first_in_reversed = np.unique(keys[::-1], return_index=True)
    latest = np.sort(len(keys) - 1 - first_in_reversed)  # row of each item's last occurrence
    candidates = seen.take(torch.from_numpy(latest))
    row_of = {int(k): i for i, k in enumerate(keys[latest])}
    positives = torch.nonzero(test.labels > 0).squeeze(1)
    if len(positives) == 0:
        return {}
    target = torch.tensor([row_of.get(int(k), -1) for k in test.item_keys[positives]], dtype=torch.long)
    users = model.user_vectors(test.take(positives))
    items = model.item_vectors(candidates)
    return {k: recall_at_k(users, target, items, k) for k in ks}
