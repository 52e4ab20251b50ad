"""Pretraining: (Arrow tables, config) -> trained LFM + metrics. No Spark here; callers bring the tables.

Reproducible by construction: a fixed seed, deterministic torch algorithms, a fixed thread count, rows sorted
before encoding and vocabularies sorted, so the same inputs and seed give the same metrics bit for bit.
Early stopping keeps the epoch with the best validation score: the mean over tasks of the row-weighted mean of
per-scenario AUCs (pooled AUC would mostly rank the tabs' click rates, which differ a lot between scenarios).
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from lfm.config import DataSchema, LfmConfig
from lfm.config.model import TrainSettings
from lfm.errors import LfmError
from models.encoders import FeatureEncoders, as_strings, column_array, encode_labels, require_columns
from models.lfm import Lfm, build_lfm, lfm_loss
from models.training.metrics import auc, gauc, monitor_score
from models.training.seeding import seeded

if TYPE_CHECKING:
    from models.registry import Checkpoint

Progress = Callable[[str], None]


class PretrainError(LfmError):
    """Training data that cannot produce a model (empty split, no labels)."""


@dataclass
class EncodedSplit:
    """One split as tensors, plus what evaluation needs (raw scenario names, user codes for GAUC)."""

    fields: torch.Tensor  # (n, fields) int64
    scenario: torch.Tensor  # (n,) int64
    labels: torch.Tensor  # (n, tasks) float32
    mask: torch.Tensor  # (n, tasks) float32
    scenario_names: np.ndarray  # (n,) raw scenario values as strings
    users: np.ndarray  # (n,) int codes of the user key

    @property
    def rows(self) -> int:
        return int(self.fields.shape[0])


@dataclass
class PretrainResult:
    model: Lfm
    encoders: FeatureEncoders
    metrics: dict = field(default_factory=dict)
    vocab_growth: dict[str, int] = field(default_factory=dict)  # continued models: ids added per field


def sort_rows(table: pa.Table, schema: DataSchema) -> pa.Table:
    """Rows in a canonical order (time, keys, scenario, labels), whatever order Spark delivered them in."""
    keys = [c for c in [schema.timestamp, "event_timestamp", schema.user_key, schema.item_key, schema.scenario,
                        *schema.tasks] if c in table.schema.names]
    return table.sort_by([(k, "ascending") for k in dict.fromkeys(keys)])


def encode_split(table: pa.Table, encoders: FeatureEncoders, schema: DataSchema) -> EncodedSplit:
    require_columns(table, [schema.user_key, schema.scenario, *schema.tasks], "pretraining samples")
    labels, mask = encode_labels(table, schema.tasks)
    users = pc.dictionary_encode(as_strings(column_array(table, schema.user_key))).indices
    scenarios = as_strings(column_array(table, schema.scenario)).to_pylist()
    return EncodedSplit(fields=encoders.encode_fields(table), scenario=encoders.encode_scenario(table),
                        labels=labels, mask=mask, scenario_names=np.asarray(scenarios, dtype=object),
                        users=pc.fill_null(users, -1).to_numpy(zero_copy_only=False))


@torch.inference_mode()
def predict(model: Lfm, split: EncodedSplit, batch_size: int) -> np.ndarray:
    """Logits (n, tasks) in row order, in eval mode."""
    model.eval()
    out = [model(split.fields[i:i + batch_size], split.scenario[i:i + batch_size]).logits
           for i in range(0, split.rows, batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, split.labels.shape[1]), np.float32)


def evaluate(model: Lfm, split: EncodedSplit, tasks: list[str], batch_size: int) -> list[dict]:
    """One row per (scenario, task), plus scenario '*' (all rows pooled): n, positives, AUC, GAUC."""
    scores = predict(model, split, batch_size)
    rows = []
    scen_values = sorted(set(split.scenario_names), key=lambda v: (len(v), v))
    for t, task in enumerate(tasks):
        keep = split.mask[:, t].numpy() > 0
        y, s = split.labels[:, t].numpy()[keep], scores[keep, t]
        names, users = split.scenario_names[keep], split.users[keep]
        for scen in ["*", *scen_values]:
            sel = np.ones(len(y), bool) if scen == "*" else names == scen
            if not sel.any():
                continue
            rows.append({"scenario": scen, "task": task, "n": int(sel.sum()), "positives": int(y[sel].sum()),
                         "auc": _nan_none(auc(y[sel], s[sel])), "gauc": _nan_none(gauc(users[sel], y[sel], s[sel]))})
    return rows


def _nan_none(x: float) -> float | None:
    return None if np.isnan(x) else round(float(x), 6)


# ---- training ----

def train_epoch(model: Lfm, opt: torch.optim.Optimizer, data: EncodedSplit, ts: TrainSettings, power: float,
                gen: torch.Generator, progress: Progress | None, epoch: int) -> float:
    model.train()
    perm = torch.randperm(data.rows, generator=gen)
    n_batches = (data.rows + ts.batch_size - 1) // ts.batch_size
    report_every = max(1, n_batches // 4)
    total = 0.0
    for b, start in enumerate(range(0, data.rows, ts.batch_size)):
        idx = perm[start:start + ts.batch_size]
        out = model(data.fields[idx], data.scenario[idx])
        loss = lfm_loss(out, data.labels[idx], data.mask[idx], data.scenario[idx], model.spec.n_scenarios, power)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += float(loss.detach())
        if progress and (b + 1) % report_every == 0 and b + 1 < n_batches:
            progress(f"  epoch {epoch} batch {b + 1}/{n_batches} loss {total / (b + 1):.4f}")
    return total / max(n_batches, 1)


def _start(train: pa.Table, cfg: LfmConfig, parent: Checkpoint | None) -> tuple[FeatureEncoders, Lfm]:
    """Fresh encoders and an untrained model, or the parent's grown by `train`'s new ids with its weights."""
    from models.lineage import carry_weights

    if parent is None:
        encoders = FeatureEncoders.fit(train, cfg.schema, cfg.model)
        return encoders, build_lfm(encoders, cfg.schema, cfg.model)
    encoders = parent.encoders.extended(train, parent.card.model)
    model = build_lfm(encoders, cfg.schema, parent.card.model)  # the new rows' initialisation follows the seed
    carry_weights(parent.model, model)
    return encoders, model


def pretrain(train: pa.Table, valid: pa.Table, cfg: LfmConfig, test: pa.Table | None = None,
             seed: int | None = None, progress: Progress | None = print,
             parent: Checkpoint | None = None) -> PretrainResult:
    """Fit encoders on `train`, train with AdamW, stop early on validation, report valid (and test) metrics.

    With `parent`, continue that model instead (`models.lineage`): its architecture, its vocabularies grown by the
    ids `train` adds, its weights as the start."""
    schema, ts = cfg.schema, cfg.train
    settings = parent.card.model if parent is not None else cfg.model
    seed = ts.seed if seed is None else seed
    for name, table in (("train", train), ("valid", valid), ("test", test)):
        if table is not None and table.num_rows == 0:
            raise PretrainError(f"the {name} split has no rows: pick days that `lfm ingest` wrote to the lakehouse")
    t0, c0 = time.perf_counter(), time.process_time()
    with seeded(seed, ts.threads, deterministic_algorithms=True):
        train, valid = sort_rows(train, schema), sort_rows(valid, schema)
        encoders, model = _start(train, cfg, parent)
        tr, va = encode_split(train, encoders, schema), encode_split(valid, encoders, schema)
        te = encode_split(sort_rows(test, schema), encoders, schema) if test is not None else None
        opt = torch.optim.AdamW(model.parameters(), lr=ts.lr, weight_decay=ts.weight_decay)
        gen = torch.Generator().manual_seed(seed)
        if progress:
            start = f"continuing {parent.card.model_version}" if parent is not None else "pretrain"
            progress(f"{start}: {settings.embedding.value} LFM, {sum(p.numel() for p in model.parameters()):,} "
                     f"parameters, train {tr.rows:,} / valid {va.rows:,} rows, seed {seed}")
        best_score, best_state, best_epoch, history = -np.inf, None, 0, []
        for epoch in range(1, ts.max_epochs + 1):
            e0 = time.perf_counter()
            loss = train_epoch(model, opt, tr, ts, settings.scenario_weight_power, gen, progress, epoch)
            score = monitor_score(evaluate(model, va, schema.tasks, ts.eval_batch_size))
            history.append({"epoch": epoch, "train_loss": round(loss, 6), "valid_score": round(score, 6)})
            if progress:
                progress(f"  epoch {epoch}: train loss {loss:.4f}, valid score {score:.4f} "
                         f"({time.perf_counter() - e0:.1f}s)")
            if score > best_score:
                best_score, best_state, best_epoch = score, copy.deepcopy(model.state_dict()), epoch
            elif epoch - best_epoch >= max(1, ts.patience):
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        model.eval()
        metrics = {
            "seed": seed, "embedding": settings.embedding.value, "best_epoch": best_epoch,
            "epochs_run": len(history), "history": history,
            "rows": {"train": tr.rows, "valid": va.rows, **({"test": te.rows} if te else {})},
            "valid": evaluate(model, va, schema.tasks, ts.eval_batch_size),
        }
        if te is not None:
            metrics["test"] = evaluate(model, te, schema.tasks, ts.eval_batch_size)
    metrics["train_seconds"] = round(time.perf_counter() - t0, 2)
    metrics["train_cpu_seconds"] = round(time.process_time() - c0, 2)  # wall time is noisy on a shared machine
    growth = encoders.growth_over(parent.encoders) if parent is not None else {}
    return PretrainResult(model=model, encoders=encoders, metrics=metrics, vocab_growth=growth)


