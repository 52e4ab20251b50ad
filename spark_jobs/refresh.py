"""The daily refresh: the frozen LFM over day D's users, items and samples -> UR, IR, CR(user), CR(item).

One Spark job per day, in three phases so that nothing partial is ever published:

1. **Plan** (driver, cheap): resolve the model version (default: the registry's latest) and verify it, check its
   data schema against the config and the tables' columns, pick the CR layer (`--layer`, else the one recorded
   by `lfm select-layer`, else the last CR point, i.e. the final hidden layer before the heads), check that day D
   has events and that yesterday's CR state of the same model version and layer exists (else stop, unless
   `cold_start`, which begins a new chain at D with an empty state).
2. **Compute** (Spark): `mapInArrow` over the users (UR), items (IR) and the day's samples (CR at the layer),
   with the `Extractor` loaded once per Python worker and torch pinned to `refresh.torch_threads_per_task`
   threads. CR is reduced per key on the map side (one partial sum per key per Arrow batch, weighted by
   exp(-(T_D - t_j)/tau)), then per key over all batches plus yesterday's state carried by
   exp(-(T_D - T_{D-1})/tau) (`inference.decay`). Results are cached and checked (row counts, every vector
   finite) before anything is written.
3. **Publish**: `ur`, `ir`, `cr_user`, `cr_item` (concurrently), then the states `cr_user_state`, `cr_item_state`
   **last**, each an atomic Delta replace of the (ds, model_version) rows (tables are partitioned by both, so the
   replace swaps one folder and other versions' rows are never touched), each commit's
   userMetadata holding job, run_id, model_version, cr_layer, ds and the input table versions. If any write fails
   the tables already written in this run are restored to their previous contents (time travel), so a failed run
   leaves the previous version of every table readable. A final row in `refresh_log` lists the table versions
   of the complete day: the state tables are written last, so "yesterday's state exists" implies "yesterday's
   exports exist", and a reader that must see one consistent day reads the versions `refresh_log` names.
   The quality gate (`validation.gate.run_gate`) is called after the writes and before the log row
   (`validate=False` skips it; `lfm run-daily` gates in its own step).

Point in time: `event_timestamp` of every row is T_D, the end of day D (D+1 00:00 in `schema.timezone`); the
state of D reads only events of partition D with a timestamp before T_D (rows of partition D stamped at or after
T_D are dropped and counted in the commit metadata) plus the state of D-1.
Bad input: no events for D, a missing or differently-layered previous state, a model trained on another schema
or a table without the schema's columns stop with one `RefreshError` naming the fix. Null, NaN and unseen
feature values go to each field's trained out-of-vocabulary bucket (`models.encoders`); a non-finite output
vector (a broken checkpoint) stops the run before anything is written.
Determinism: with `refresh.deterministic` the day's samples are sorted inside each partition and per-key sums
are taken in a fixed order, so a rerun of a day gives bit-identical tables.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import re
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import StorageLevel
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from py4j.protocol import Py4JJavaError

from inference import decay
from lfm.config import LfmConfig
from lfm.config.refresh import UserScope
from lfm.config.schema import FieldKind
from lfm.errors import LfmError
from lfm.names import BadInput, check_model_version, parse_ds
from spark_jobs.delta_io import (ds_predicate, read_table, replace_partitions, restore_partitions,
                                 table_version)
from spark_jobs.locks import day_lock
from validation.gate import GateResult, run_gate

log = logging.getLogger(__name__)

EXPORT_TABLES = ("ur", "ir", "cr_user", "cr_item")
STATE_TABLES = ("cr_user_state", "cr_item_state")
LOG_TABLE = "refresh_log"
# ds first (the contract's partition column), then the version: a rerun swaps one folder, metadata-only, and two
# versions' rows never share a file.
PARTITION_BY = ("ds", "model_version")
INPUT_TABLES = ("events", "users", "items")
MS_PER_DAY = 86_400_000


class RefreshError(BadInput):
    """A refresh that cannot run as asked; nothing was written. The message names the fix."""


class NoEvents(RefreshError):
    """Day D has no events in the lakehouse."""


class MissingState(RefreshError):
    """Yesterday's CR state (same model version and layer) is missing: the decay chain cannot continue."""


class TableMismatch(RefreshError):
    """The lakehouse tables lack columns (or types) the model's data schema needs."""


class NonFiniteVectors(RefreshError):
    """The model produced NaN or infinite vectors; nothing was published."""


class PublishError(LfmError):
    """Writing a table failed; the tables written earlier in the run were restored."""


# --------------------------------------------------------------------------------------------------------------
# Plan
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RefreshPlan:
    """Everything a day's computation needs, resolved and validated on the driver."""

    ds: dt.date
    model_version: str
    model_dir: str
    cr_layer: str
    cr_dim: int
    ur_dim: int
    ir_dim: int
    run_id: str
    cold_start: bool
    day_end_ms: int  # T_D
    prev_day_end_ms: int | None  # T_{D-1}; None on a cold start
    input_versions: dict[str, int | None] = field(default_factory=dict)
    future_events: int = 0  # rows of partition D stamped at or after T_D (left out of the state)
    warmup_days: int = 0  # set by a backfill whose chain began this many days before its first day

    @property
    def version_predicate(self) -> str:
        return f"model_version = '{check_model_version(self.model_version)}'"

    @property
    def prev_ds(self) -> dt.date:
        return self.ds - dt.timedelta(days=1)


@dataclass(frozen=True)
class DayState:
    """A day's CR state per side, as DataFrames (from the state tables or computed in memory by a warm-up)."""

    ds: dt.date
    user: DataFrame  # key, state array<double>, last_ts
    item: DataFrame


@dataclass
class RefreshResult:
    ds: dt.date
    model_version: str
    cr_layer: str
    run_id: str
    cold_start: bool
    rows: dict[str, int]
    table_versions: dict[str, int | None]
    input_versions: dict[str, int | None]
    future_events_dropped: int
    seconds: float
    gate: object | None = None


def resolve_model(cfg: LfmConfig, model_version: str | None):
    """The verified model card and folder (latest registered unless a version is given)."""
    from models.registry import Registry

    reg = Registry(cfg)
    card = reg.resolve(model_version)
    return card, reg.path(card.model_version)  # loads the weights: verifies their hashes too


def tower_order(points) -> list[str]:
    """CR point names in mixing-tower order (embed, cross1.., fm, dnn1..), whatever order a card lists them in."""
    stages = {"embed": 0, "cross": 1, "fm": 2, "dnn": 3}

    def key(name: str):
        m = re.fullmatch(r"([a-z_]+?)(\d*)", name)
        base, num = (m.group(1), int(m.group(2) or 0)) if m else (name, 0)
        return (stages.get(base, 4), num, name)

    return sorted(points, key=key)


def choose_layer(card, cr_layer: str | None) -> str:
    """--layer, else the layer `lfm select-layer` recorded, else the last CR point (final hidden layer)."""
    if cr_layer:
        if cr_layer not in card.cr_points:
            raise RefreshError(f"layer {cr_layer!r} is not a CR point of model {card.model_version}; choose one of "
                               f"{list(card.cr_points)}")
        return cr_layer
    if card.selected_cr_layer:
        return card.selected_cr_layer
    last = tower_order(card.cr_points)[-1]
    log.warning("model %s has no selected CR layer (run `lfm select-layer`); using the last point %r",
                card.model_version, last)
    return last


def check_tables(spark: SparkSession, cfg: LfmConfig, versions: dict[str, int | None]) -> None:
    """The inputs exist and hold every column the model's schema reads (numeric fields numeric)."""
    s = cfg.schema
    missing_tables = [t for t in INPUT_TABLES if versions.get(t) is None]
    if missing_tables:
        raise TableMismatch(f"lakehouse tables {missing_tables} are missing under {cfg.resolve(cfg.lakehouse)}: "
                            "run `lfm ingest --source DIR` first")
    schemas = {t: read_table(spark, cfg.table_path(t), versions[t]).schema for t in INPUT_TABLES}
    need = {"events": [s.user_key, s.item_key, s.scenario, "event_timestamp", "ds"],
            "users": [s.user_key] + [f.name for f in s.user_fields],
            "items": [s.item_key] + [f.name for f in s.item_fields]}
    for table, cols in need.items():
        names = schemas[table].fieldNames()
        absent = [c for c in cols if c not in names]
        if absent:
            raise TableMismatch(f"table {table!r} lacks columns {absent} that the model's data schema reads; "
                                "re-ingest, or refresh with a model trained on this data's schema")
    numeric = [(t, f.name) for t, fields in (("users", s.user_fields), ("items", s.item_fields))
               for f in fields if f.kind == FieldKind.numeric]
    for table, col in numeric:
        typ = schemas[table][col].dataType
        if not isinstance(typ, T.NumericType):
            raise TableMismatch(f"{table}.{col} is {typ.simpleString()}, but the schema declares it numeric; "
                                "declare it categorical or fix the ingest layout")


def _state_rows(spark: SparkSession, cfg: LfmConfig, name: str, ds: dt.date, version_pred: str,
                table_v: int | None) -> DataFrame | None:
    path = cfg.table_path(name)
    if table_v is None:
        return None
    return read_table(spark, path, table_v).where(f"({ds_predicate([ds])}) AND ({version_pred})")


def plan_refresh(spark: SparkSession, cfg: LfmConfig, ds: str | dt.date, model_version: str | None = None,
                 cr_layer: str | None = None, cold_start: bool = False, run_id: str | None = None,
                 state_in_memory: bool = False, chain_end: dt.date | None = None) -> RefreshPlan:
    """Validate the request (model, schema, tables, events, previous state); raise before any work.

    `state_in_memory`: the previous state comes from the caller (a warm-up), not the state tables.
    `chain_end`: the last day the caller publishes in this chain (a backfill's --to; default this day; date.max
    for computations that publish nothing): published states after it trigger a "rerun them" warning.
    """
    day = parse_ds(ds)
    card, path = resolve_model(cfg, model_version)
    layer = choose_layer(card, cr_layer)
    versions = {t: table_version(spark, cfg.table_path(t)) for t in INPUT_TABLES + STATE_TABLES}
    check_tables(spark, cfg, versions)
    tz = cfg.schema.timezone
    end_ms = decay.day_end_ms(day, tz)
    counts = (read_table(spark, cfg.table_path("events"), versions["events"]).where(ds_predicate([day]))
              .agg(F.count(F.lit(1)).alias("n"),
                   F.sum(F.when(F.unix_millis("event_timestamp") >= end_ms, 1).otherwise(0)).alias("late")).first())
    if not counts["n"]:
        raise NoEvents(f"no events for ds {day} in the lakehouse: ingest that day first (`lfm ingest --ds {day}`)")
    plan = RefreshPlan(ds=day, model_version=card.model_version, model_dir=str(path), cr_layer=layer,
                       cr_dim=card.cr_points[layer], ur_dim=card.ur_dim, ir_dim=card.ir_dim,
                       run_id=run_id or uuid.uuid4().hex[:12], cold_start=cold_start,
                       day_end_ms=end_ms,
                       prev_day_end_ms=None if cold_start else decay.day_end_ms(day - dt.timedelta(days=1), tz),
                       input_versions={**versions, "model": card.model_version}, future_events=int(counts["late"] or 0))
    check_previous_state(spark, cfg, plan, require=not (cold_start or state_in_memory),
                         chain_end=chain_end or day)
    return plan


def check_previous_state(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, require: bool = True,
                         chain_end: dt.date | None = None) -> None:
    """Both states of D-1 exist for this model version and were built at the same layer (when `require`).

    The same query warns when states of later days exist: they were chained from this day's current state.
    """
    prev = plan.prev_ds
    fix = (f"refresh {prev} first (or `lfm backfill --from FIRST --to {plan.ds}`), or begin a new chain at {plan.ds} "
           "with --cold-start (or warm it up with `lfm backfill --warmup-days N`)")
    later: set[dt.date] = set()
    for name in STATE_TABLES:
        v = plan.input_versions.get(name)
        found = [] if v is None else (
            read_table(spark, cfg.table_path(name), v)
            .where(f"ds >= DATE'{prev.isoformat()}' AND {plan.version_predicate}")
            .select("ds", "cr_layer").distinct().collect())
        later |= {r["ds"] for r in found if r["ds"] > (chain_end or plan.ds)}
        if not require:
            continue
        layers = sorted({r["cr_layer"] for r in found if r["ds"] == prev})
        if not layers:
            raise MissingState(f"no {name} for ds {prev} and model {plan.model_version}: the CR decay chain needs "
                               f"yesterday's state; {fix}")
        if layers != [plan.cr_layer]:
            raise MissingState(f"{name} of ds {prev} was built at CR layer {layers}, not {plan.cr_layer!r}: "
                               f"continue with --layer {layers[0]}, or begin a new chain with --cold-start")
    if later:
        log.warning("states after %s exist (from %s) and were chained from the current state of %s; if this run "
                    "changes it, rerun them: lfm backfill --from %s --to %s", plan.ds, min(later), plan.ds,
                    plan.ds + dt.timedelta(days=1), max(later))


def previous_state(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan) -> DayState | None:
    """Yesterday's state from the state tables, pinned to the versions the plan recorded."""
    if plan.cold_start:
        return None
    s = cfg.schema
    frames = []
    for name, key in zip(STATE_TABLES, (s.user_key, s.item_key)):
        rows = _state_rows(spark, cfg, name, plan.prev_ds, plan.version_predicate, plan.input_versions[name])
        frames.append(rows.select(key, "state", "last_ts"))
    return DayState(plan.prev_ds, frames[0], frames[1])


# --------------------------------------------------------------------------------------------------------------
# Compute: Arrow workers (module-level functions, pickled by reference into Spark's Python workers)
# --------------------------------------------------------------------------------------------------------------

def _extractor(plan: RefreshPlan, cfg: LfmConfig):
    from inference.extract import Extractor

    return Extractor(plan.model_dir, threads=cfg.refresh.torch_threads_per_task,
                     batch_rows=cfg.refresh.arrow_batch_rows, schema=cfg.schema)


def tower_batches(batches: Iterator[pa.RecordBatch], extractor, key: str, out: str,
                  side: str) -> Iterator[pa.RecordBatch]:
    """UR (side 'user') or IR ('item') per row: key, vector list<float>, finite flag."""
    fn = extractor.user_vectors if side == "user" else extractor.item_vectors
    for b in batches:
        if b.num_rows == 0:
            continue
        v = fn(b)
        yield pa.RecordBatch.from_arrays(
            [b.column(key), decay.matrix_to_list(v), pa.array(np.isfinite(v).all(axis=1))],
            names=[key, out, "__finite"])


def _group(keys: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Dense group codes (first-appearance order) and the unique keys, for any key type."""
    enc = pc.dictionary_encode(keys)
    return np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64), enc.dictionary


def _partials(codes: np.ndarray, uniques: pa.Array, cr: np.ndarray, w: np.ndarray, t_ms: np.ndarray):
    """Per key of one batch: weighted CR sum (rows in batch order) and the latest event time."""
    perm = np.argsort(codes, kind="stable")
    c = codes[perm]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    sums = np.add.reduceat(cr[perm].astype(np.float64) * w[perm, None], starts, axis=0)
    last = np.maximum.reduceat(t_ms[perm], starts)
    return uniques.take(pa.array(c[starts])), sums, last


def cr_partial_batches(batches: Iterator[pa.RecordBatch], extractor, points: tuple[str, ...], ukey: str,
                       ikey: str, ukey_type: pa.DataType, ikey_type: pa.DataType, day_end_ms: int,
                       tau_hours: float) -> Iterator[pa.RecordBatch]:
    """Map side of CR: per Arrow batch and CR point, one weighted partial sum per user and per item.

    Rows: (ukey, null) for users, (null, ikey) for items; `ord` = partition << 32 | batch number fixes the
    reduce-side summation order. A refresh asks for one point; layer selection for all of them in one pass.
    """
    from pyspark import TaskContext

    ctx = TaskContext.get()
    part = ctx.partitionId() if ctx is not None else 0
    for i, b in enumerate(batches):
        if b.num_rows == 0:
            continue
        t_ms = np.asarray(b.column("__t_ms").to_numpy(zero_copy_only=False), dtype=np.int64)
        w = decay.sample_weights(t_ms, day_end_ms, tau_hours)
        order = (part << 32) | i
        groups = [_group(b.column(ukey)), _group(b.column(ikey))]
        for point in points:
            cr = extractor.cross_vectors(b, point)
            for side, (codes, uniques) in zip(("user", "item"), groups):
                keys, sums, last = _partials(codes, uniques, cr, w, t_ms)
                n = len(keys)
                yield pa.RecordBatch.from_arrays(
                    [pa.array([point] * n, pa.string()),
                     keys.cast(ukey_type) if side == "user" else pa.nulls(n, ukey_type),
                     keys.cast(ikey_type) if side == "item" else pa.nulls(n, ikey_type),
                     pa.array(np.full(n, order, np.int64)), pa.array(np.ones(n)), pa.array(last, pa.int64()),
                     decay.matrix_to_list(sums, pa.float64())],
                    names=["point", "ukey", "ikey", "ord", "scale", "t_last", "vec"])


def _by_point(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Split batches so each holds one CR point (points have different widths)."""
    for b in batches:
        if b.num_rows == 0:
            continue
        points = pc.unique(b.column("point"))
        if len(points) == 1:
            yield b
            continue
        for p in points:
            yield b.filter(pc.equal(b.column("point"), p))


def cr_reduce_batches(batches: Iterator[pa.RecordBatch], normalisation: str) -> Iterator[pa.RecordBatch]:
    """Reduce side of CR: per key, state = sum(scale * vec) in `ord` order; export = normalise(state)."""
    for b in _by_point(batches):
        parts = b.column("parts")
        offsets = np.asarray(parts.offsets, dtype=np.int64)
        inner = parts.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
        state = decay.segment_sum(offsets - offsets[0], decay.list_to_matrix(inner.field("vec")),
                                  scale=inner.field("scale").to_numpy(zero_copy_only=False),
                                  order=inner.field("ord").to_numpy(zero_copy_only=False))
        out = decay.normalise(state, normalisation)
        finite = np.isfinite(state).all(axis=1) & np.isfinite(out).all(axis=1)
        yield pa.RecordBatch.from_arrays(
            [b.column("point"), b.column("ukey"), b.column("ikey"), decay.matrix_to_list(state, pa.float64()),
             decay.matrix_to_list(out), b.column("t_last"), pa.array(finite)],
            names=["point", "ukey", "ikey", "state", "cr", "t_last", "__finite"])


# --------------------------------------------------------------------------------------------------------------
# Compute: Spark plans
# --------------------------------------------------------------------------------------------------------------

def _partitions(spark: SparkSession, cfg: LfmConfig) -> int:
    return cfg.refresh.extraction_partitions or spark.sparkContext.defaultParallelism


def _spread(df: DataFrame, n: int) -> DataFrame:
    """At least `n` partitions, so every core gets a task (a small table is often a single file)."""
    return df.repartition(n) if df.rdd.getNumPartitions() < n else df


def _arrow_conf(spark: SparkSession, cfg: LfmConfig) -> None:
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.refresh.arrow_batch_rows))


def users_in_scope(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan) -> DataFrame:
    """Users who get a UR: the whole users table, or those with events in the trailing window."""
    s = cfg.schema
    users = read_table(spark, cfg.table_path("users"), plan.input_versions["users"])
    users = users.select(s.user_key, *[f.name for f in s.user_fields if f.name != s.user_key])
    if cfg.refresh.users == UserScope.active:
        window = [plan.ds - dt.timedelta(days=i) for i in range(cfg.refresh.active_window_days)]
        active = (read_table(spark, cfg.table_path("events"), plan.input_versions["events"])
                  .where(ds_predicate(window)).select(s.user_key).distinct())
        users = users.join(active, on=s.user_key, how="left_semi")
    return users


def tower_frame(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, side: str) -> DataFrame:
    """key, ur|ir (array<float>), __finite: the tower's vector for every user in scope / every item."""
    s = cfg.schema
    _arrow_conf(spark, cfg)
    if side == "user":
        src, key, out = users_in_scope(spark, cfg, plan), s.user_key, "ur"
    else:
        items = read_table(spark, cfg.table_path("items"), plan.input_versions["items"])
        src = items.select(s.item_key, *[f.name for f in s.item_fields if f.name != s.item_key])
        key, out = s.item_key, "ir"
    src = _spread(src, _partitions(spark, cfg))
    fn = functools.partial(tower_batches, extractor=_extractor(plan, cfg), key=key, out=out, side=side)
    key_type = src.schema[key].dataType.simpleString()
    return src.mapInArrow(fn, f"`{key}` {key_type}, `{out}` array<float>, __finite boolean")


def day_samples(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan) -> DataFrame:
    """The day's samples the CR reads: partition D, stamped before T_D (never anything after D)."""
    from spark_jobs.samples import samples

    s = cfg.schema
    cols = list(dict.fromkeys([s.user_key, s.item_key, *s.feature_names, s.scenario]))
    df = samples(spark, cfg, [plan.ds]).withColumn("__t_ms", F.unix_millis("event_timestamp"))
    df = df.where(F.col("__t_ms") < plan.day_end_ms).select(*cols, "__t_ms")
    df = _spread(df, _partitions(spark, cfg))
    if cfg.refresh.deterministic:  # fixed batch contents -> bit-identical CR and sums on a rerun
        df = df.sortWithinPartitions("__t_ms", s.user_key, s.item_key, s.scenario)
    return df


def cr_frame(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, samples_df: DataFrame,
             prev: DayState | None, points: tuple[str, ...] | None = None) -> DataFrame:
    """Per point and key (ukey or ikey set): state (array<double> at T_D), cr (normalised array<float>), t_last.

    `points` defaults to the plan's layer; `prev` frames may carry a `point` column (multi-point chains).
    """
    s = cfg.schema
    _arrow_conf(spark, cfg)
    points = points or (plan.cr_layer,)
    ut, it = samples_df.schema[s.user_key].dataType, samples_df.schema[s.item_key].dataType
    fn = functools.partial(cr_partial_batches, extractor=_extractor(plan, cfg), points=tuple(points),
                           ukey=s.user_key, ikey=s.item_key, ukey_type=_arrow_type(ut), ikey_type=_arrow_type(it),
                           day_end_ms=plan.day_end_ms, tau_hours=cfg.refresh.tau_hours)
    schema = (f"point string, ukey {ut.simpleString()}, ikey {it.simpleString()}, ord bigint, scale double, "
              "t_last bigint, vec array<double>")
    parts = samples_df.mapInArrow(fn, schema)
    if prev is not None:
        carry = decay.carry_factor(decay.day_end_ms(prev.ds, s.timezone), plan.day_end_ms, cfg.refresh.tau_hours)
        for side, frame, key in (("user", prev.user, s.user_key), ("item", prev.item, s.item_key)):
            ucol = F.col(key).cast(ut) if side == "user" else F.lit(None).cast(ut)
            icol = F.col(key).cast(it) if side == "item" else F.lit(None).cast(it)
            point = F.col("point") if "point" in frame.columns else F.lit(plan.cr_layer)
            parts = parts.unionByName(frame.select(
                point.alias("point"), ucol.alias("ukey"), icol.alias("ikey"), F.lit(-1).cast("bigint").alias("ord"),
                F.lit(carry).cast("double").alias("scale"), F.unix_millis("last_ts").alias("t_last"),
                F.col("state").alias("vec")))
    grouped = parts.groupBy("point", "ukey", "ikey").agg(
        F.collect_list(F.struct("ord", "scale", "vec")).alias("parts"), F.max("t_last").alias("t_last"))
    reduce_fn = functools.partial(cr_reduce_batches, normalisation=cfg.refresh.normalisation.value)
    out = grouped.mapInArrow(reduce_fn, f"point string, ukey {ut.simpleString()}, ikey {it.simpleString()}, "
                                        "state array<double>, cr array<float>, t_last bigint, __finite boolean")
    if cfg.refresh.state_ttl_days:
        out = out.where(F.col("t_last") >= plan.day_end_ms - cfg.refresh.state_ttl_days * MS_PER_DAY)
    return out


def _arrow_type(t: T.DataType) -> pa.DataType:
    """The Arrow type Spark uses for a key column of Spark type `t`."""
    mapping = {T.IntegerType: pa.int32(), T.LongType: pa.int64(), T.ShortType: pa.int16(), T.ByteType: pa.int8(),
               T.StringType: pa.string(), T.DoubleType: pa.float64(), T.FloatType: pa.float32()}
    for cls, arrow in mapping.items():
        if isinstance(t, cls):
            return arrow
    raise TableMismatch(f"entity keys of type {t.simpleString()} are not supported; use int, bigint or string")


@dataclass
class DayOutputs:
    """The six frames of one day, cached and checked, ready to publish."""

    frames: dict[str, DataFrame]
    rows: dict[str, int]
    future_events_dropped: int
    cached: list[DataFrame]

    def release(self) -> None:
        for df in self.cached:
            df.unpersist()


def _worker_message(err: Exception) -> str:
    """The Python exception line from a failed Spark task, instead of a JVM stack trace."""
    text = str(err)
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line and ("Error:" in line or "Exception:" in line) and not line.startswith(("at ", "Suppressed:")):
            return line[:500]
    return text.splitlines()[0][:500] if text else type(err).__name__


def compute_day(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, prev: DayState | None,
                with_towers: bool = True) -> DayOutputs:
    """Run the extraction and aggregation, cache the results and check them; nothing is written."""
    s = cfg.schema
    ts = F.timestamp_millis(F.lit(plan.day_end_ms)).alias("event_timestamp")
    day = F.lit(plan.ds).cast("date").alias("ds")
    version = F.lit(plan.model_version).alias("model_version")
    layer = F.lit(plan.cr_layer).alias("cr_layer")
    cached: list[DataFrame] = []
    checks: dict[str, DataFrame] = {}
    try:
        if with_towers:
            for side, name in (("user", "ur"), ("item", "ir")):
                df = tower_frame(spark, cfg, plan, side).persist(StorageLevel.MEMORY_AND_DISK)
                cached.append(df)
                checks[name] = df
        samples_df = day_samples(spark, cfg, plan)
        cr = cr_frame(spark, cfg, plan, samples_df, prev).persist(StorageLevel.MEMORY_AND_DISK)
        cached.append(cr)
        rows, bad = {}, {}
        for name, df in checks.items():
            r = df.agg(F.count(F.lit(1)).alias("n"),
                       F.sum(F.when(~F.col("__finite"), 1).otherwise(0)).alias("bad")).first()
            rows[name], bad[name] = int(r["n"]), int(r["bad"] or 0)
        r = cr.agg(F.sum(F.when(F.col("ukey").isNotNull(), 1).otherwise(0)).alias("u"),
                   F.sum(F.when(F.col("ikey").isNotNull(), 1).otherwise(0)).alias("i"),
                   F.sum(F.when(~F.col("__finite"), 1).otherwise(0)).alias("bad")).first()
        rows["cr_user"] = rows["cr_user_state"] = int(r["u"] or 0)
        rows["cr_item"] = rows["cr_item_state"] = int(r["i"] or 0)
        bad["cr"] = int(r["bad"] or 0)
        dropped = plan.future_events
    except (PySparkException, Py4JJavaError) as err:
        for df in cached:
            df.unpersist()
        raise RefreshError(f"refresh of {plan.ds} failed in the Spark job, nothing was written: "
                           f"{_worker_message(err)}") from None
    if any(bad.values()):
        for df in cached:
            df.unpersist()
        raise NonFiniteVectors(f"model {plan.model_version} produced NaN/infinite vectors for ds {plan.ds} "
                               f"({ {k: v for k, v in bad.items() if v} }); nothing was written: the checkpoint "
                               "is broken or diverged, re-pretrain or pick another version")
    if rows["cr_user"] == 0:
        for df in cached:
            df.unpersist()
        raise NoEvents(f"no samples of ds {plan.ds} before its day end: nothing to aggregate")
    if dropped:
        log.warning("ds %s: %d event(s) stamped at or after the day end were left out of the CR state",
                    plan.ds, dropped)
    frames = {}
    if with_towers:
        for name, key in (("ur", s.user_key), ("ir", s.item_key)):
            frames[name] = checks[name].select(key, name, version, day, ts)
    user, item = cr.where(F.col("ukey").isNotNull()), cr.where(F.col("ikey").isNotNull())
    frames["cr_user"] = user.select(F.col("ukey").alias(s.user_key), F.col("cr").alias("cr_user"), layer, version,
                                    day, ts)
    frames["cr_item"] = item.select(F.col("ikey").alias(s.item_key), F.col("cr").alias("cr_item"), layer, version,
                                    day, ts)
    last_ts = F.timestamp_millis("t_last").alias("last_ts")
    frames["cr_user_state"] = user.select(F.col("ukey").alias(s.user_key), "state", last_ts, layer, version, day)
    frames["cr_item_state"] = item.select(F.col("ikey").alias(s.item_key), "state", last_ts, layer, version, day)
    return DayOutputs(frames=frames, rows=rows, future_events_dropped=int(dropped), cached=cached)


def state_of(outputs: DayOutputs, ds: dt.date, cfg: LfmConfig) -> DayState:
    """The computed state as a `DayState` for the next day (warm-up chains that publish nothing)."""
    s = cfg.schema
    return DayState(ds, outputs.frames["cr_user_state"].select(s.user_key, "state", "last_ts"),
                    outputs.frames["cr_item_state"].select(s.item_key, "state", "last_ts"))


# --------------------------------------------------------------------------------------------------------------
# Publish
# --------------------------------------------------------------------------------------------------------------

def _metadata(plan: RefreshPlan, name: str, rows: int, dropped: int) -> dict:
    return {"job": "refresh", "table": name, "run_id": plan.run_id, "model_version": plan.model_version,
            "cr_layer": plan.cr_layer, "ds": plan.ds.isoformat(), "cold_start": plan.cold_start,
            "warmup_days": plan.warmup_days, "rows": rows,
            "inputs": plan.input_versions, "future_events_dropped": dropped}


def publish(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, outputs: DayOutputs,
            tables: tuple[str, ...] = EXPORT_TABLES + STATE_TABLES) -> dict[str, int | None]:
    """Write the exports, then the states (in two parallel waves); on a failure restore what was written, raise.

    The four exports are independent commits to four tables, so they go out concurrently (Delta commits are
    mostly driver-side latency); the states follow only once every export has committed.
    """
    waves = [[n for n in EXPORT_TABLES if n in tables], [n for n in STATE_TABLES if n in tables]]
    with ThreadPoolExecutor(max_workers=len(tables)) as pool:
        before = dict(zip(tables, pool.map(lambda n: table_version(spark, cfg.table_path(n)), tables)))

        def write(name: str) -> int | None:
            meta = _metadata(plan, name, outputs.rows[name], outputs.future_events_dropped)
            return replace_partitions(outputs.frames[name], cfg.table_path(name), [plan.ds], meta,
                                      extra_predicate=plan.version_predicate, partition_by=PARTITION_BY)

        written: dict[str, int | None] = {}
        for wave in waves:
            futures = {name: pool.submit(write, name) for name in wave}
            errors = {}
            for name, fut in futures.items():
                try:
                    written[name] = fut.result()
                except Exception as err:  # noqa: BLE001 - collected, rolled back and re-raised below
                    errors[name] = err
            if errors:
                _rollback(spark, cfg, plan, list(written), before)
                failed, err = next(iter(errors.items()))
                detail = _worker_message(err) if isinstance(err, (PySparkException, Py4JJavaError)) else str(err)[:500]
                raise PublishError(f"writing {sorted(errors)} for ds {plan.ds} failed ({detail}); the tables written "
                                   f"in this run ({sorted(written) or 'none'}) were restored to their previous "
                                   "versions") from err
    return written


def _rollback(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, names: list[str],
              before: dict[str, int | None]) -> None:
    for name in reversed(names):
        try:
            restore_partitions(spark, cfg.table_path(name), [plan.ds], before[name],
                               {"job": "refresh-rollback", "run_id": plan.run_id, "model_version": plan.model_version,
                                "ds": plan.ds.isoformat(), "restored_version": before[name]},
                               extra_predicate=plan.version_predicate)
        except Exception:  # noqa: BLE001 - keep restoring the others; the log names what is left to fix
            log.exception("rollback of %s for ds %s failed: restore it from version %s", name, plan.ds, before[name])


def quality_gate(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan) -> GateResult:
    """The quality gate over the just-written day, after the writes and before the refresh_log row.

    What a quarantined day means is the caller's decision (`lfm refresh` exits non-zero, run-daily stops before
    materialize); the gate itself only validates and records.
    """
    dims = {"ur": plan.ur_dim, "ir": plan.ir_dim, "cr_user": plan.cr_dim, "cr_item": plan.cr_dim}
    return run_gate(spark, cfg, plan.ds, plan.model_version, tables=list(EXPORT_TABLES), run_id=plan.run_id,
                    dims=dims)


LOG_SCHEMA = T.StructType([
    T.StructField("ds", T.DateType()), T.StructField("model_version", T.StringType()),
    T.StructField("run_id", T.StringType()), T.StructField("cr_layer", T.StringType()),
    T.StructField("cold_start", T.BooleanType()), T.StructField("committed_at", T.TimestampType()),
    T.StructField("table_versions", T.MapType(T.StringType(), T.LongType())),
    T.StructField("input_versions", T.MapType(T.StringType(), T.LongType())),
    T.StructField("rows", T.MapType(T.StringType(), T.LongType())),
    T.StructField("gate", T.StringType()),
])


def append_log(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, written: dict[str, int | None],
               rows: dict[str, int], gate: object | None) -> None:
    """One row per successful refresh: the table versions that together form the day."""
    row = (plan.ds, plan.model_version, plan.run_id, plan.cr_layer, plan.cold_start,
           dt.datetime.now(dt.timezone.utc), {k: v for k, v in written.items() if v is not None},
           {k: v for k, v in plan.input_versions.items() if isinstance(v, int)}, rows,
           None if gate is None else str(gate)[:2000])
    df = spark.createDataFrame([row], LOG_SCHEMA)
    (df.write.format("delta").mode("append")
     .option("userMetadata", json.dumps({"job": "refresh", "run_id": plan.run_id, "ds": plan.ds.isoformat(),
                                         "model_version": plan.model_version}))
     .save(cfg.table_path(LOG_TABLE)))


# --------------------------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------------------------

def run_day(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, prev: DayState | None,
            validate: bool | None = None) -> RefreshResult:
    """Compute, publish, gate (`validate`: None = `quality.enabled`) and log one planned day."""
    t0 = time.perf_counter()
    # Two runs of one day would each win some tables' commits and roll back the others: the day's lock makes
    # the second fail at once, naming the first (released by the OS even on SIGKILL; spark_jobs.locks).
    with day_lock(cfg, "refresh", plan.ds, plan.run_id):
        outputs = compute_day(spark, cfg, plan, prev)
        try:
            written = publish(spark, cfg, plan, outputs)
        finally:
            outputs.release()
        gate = quality_gate(spark, cfg, plan) if (cfg.quality.enabled if validate is None else validate) else None
        append_log(spark, cfg, plan, written, outputs.rows, gate)
    seconds = time.perf_counter() - t0
    log.info("refresh %s model %s layer %s: %s rows in %.1fs (run %s)", plan.ds, plan.model_version,
             plan.cr_layer, outputs.rows, seconds, plan.run_id)
    return RefreshResult(ds=plan.ds, model_version=plan.model_version, cr_layer=plan.cr_layer, run_id=plan.run_id,
                         cold_start=plan.cold_start, rows=outputs.rows, table_versions=written,
                         input_versions=plan.input_versions, future_events_dropped=outputs.future_events_dropped,
                         seconds=seconds, gate=gate)


def refresh(spark: SparkSession, cfg: LfmConfig, ds: str | dt.date, model_version: str | None = None,
            cr_layer: str | None = None, cold_start: bool = False, run_id: str | None = None,
            validate: bool | None = None) -> RefreshResult:
    """Refresh day `ds`: UR, IR, CR(user), CR(item) and the CR states, published atomically per table.

    `validate` runs the quality gate hook after the writes (None: when `quality.enabled`; run-daily passes False
    and gates in its own step).
    """
    plan = plan_refresh(spark, cfg, ds, model_version, cr_layer, cold_start, run_id)
    return run_day(spark, cfg, plan, previous_state(spark, cfg, plan), validate)
