"""Compute a planned day in Spark: UR, IR and the decayed CR per key, cached and checked; nothing is written.

`mapInArrow` over the users (UR), the items (IR) and the day's samples (CR at the spec's layer) with the kernels of
`inference.kernels`; the `Extractor` is loaded once per Python worker with torch pinned to
`refresh.torch_threads_per_task` threads. CR is reduced per key on the map side over each task's whole partition
(the samples arrive hash-partitioned by user from their join, so a user's samples meet in one task), then per key
over the tasks plus yesterday's state carried by exp(-(T_D - T_{D-1})/tau).
Point in time: the state of D reads only events of partition D stamped before T_D plus the state of D-1.
A day with no events (`RefreshPlan.empty`) runs the same path: no samples, so its CR state is D-1's state decayed
(the keys D-1 held, `last_ts` unchanged) and UR and IR are whatever the day's users and items in scope give.
Determinism: with `refresh.deterministic` the day's samples are sorted inside each partition (by user, then time)
and per-key sums are taken in a fixed order, so a rerun of a day gives bit-identical tables.
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
from dataclasses import dataclass

import pyarrow as pa
from py4j.protocol import Py4JJavaError
from pyspark import StorageLevel
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from inference import decay
from inference.kernels import cr_partial_batches, cr_reduce_batches, tower_batches
from lakehouse.delta_io import ds_predicate, export_predicate, read_table
from lakehouse.features import features_as_of
from lfm.config import LfmConfig
from lfm.config.refresh import UserScope
from lfm.contract import CR_ITEM, CR_USER, EVENTS, EXPORT_ID, IR, ITEMS, STATE_TABLES, UR, USERS, day_end_ms
from lfm.errors import cause_line
from spark_jobs.refresh.errors import NoEvents, NonFiniteVectors, RefreshError, TableMismatch
from spark_jobs.refresh.plan import RefreshPlan

log = logging.getLogger(__name__)
MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class DayState:
    """A day's CR state per side, as DataFrames (from the state tables or computed in memory by a warm-up)."""

    ds: dt.date
    user: DataFrame  # key, state array<double>, last_ts
    item: DataFrame


@dataclass
class DayOutputs:
    """The six frames of one day, cached and checked, ready to write."""

    frames: dict[str, DataFrame]
    rows: dict[str, int]
    future_events_dropped: int
    cached: list[DataFrame]

    def release(self) -> None:
        for df in self.cached:
            df.unpersist()


def previous_state(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan) -> DayState | None:
    """Yesterday's state, read at the versions of yesterday's complete refresh of this spec."""
    if plan.cold_start or plan.previous is None:
        return None
    s = cfg.schema
    frames = []
    for name, key in zip(STATE_TABLES, (s.user_key, s.item_key)):
        rows = read_table(spark, cfg.table_path(name), plan.previous.table_versions[name])
        frames.append(rows.where(export_predicate([plan.prev_ds], plan.spec.id)).select(key, "state", "last_ts"))
    return DayState(plan.prev_ds, frames[0], frames[1])


def _extractor(plan: RefreshPlan, cfg: LfmConfig):
    from inference.extract import Extractor

    return Extractor(plan.model_dir, threads=cfg.refresh.torch_threads_per_task,
                     batch_rows=cfg.refresh.arrow_batch_rows, schema=cfg.schema,
                     storage=cfg.storage.object_store_options())


def _arrow_type(t: T.DataType) -> pa.DataType:
    """The Arrow type Spark uses for a key column of Spark type `t`."""
    mapping = {T.IntegerType: pa.int32(), T.LongType: pa.int64(), T.ShortType: pa.int16(), T.ByteType: pa.int8(),
               T.StringType: pa.string(), T.DoubleType: pa.float64(), T.FloatType: pa.float32()}
    for cls, arrow in mapping.items():
        if isinstance(t, cls):
            return arrow
    raise TableMismatch(f"entity keys of type {t.simpleString()} are not supported; use int, bigint or string")


def _partitions(spark: SparkSession, cfg: LfmConfig) -> int:
    return cfg.refresh.extraction_partitions or spark.sparkContext.defaultParallelism


def _spread(df: DataFrame, n: int) -> DataFrame:
    """At least `n` partitions, so every core gets a task (a small table is often a single file).

    The partitions are counted on a plan made without adaptive execution: with it, turning the query into an RDD
    runs every shuffle stage of the query (its joins), only to run them again in the extraction. Without it, a
    shuffled frame counts `spark.sql.shuffle.partitions`, and at run time adaptive execution keeps at least one
    partition per core once the data passes a few MB (`coalescePartitions.parallelismFirst`); a scan counts its
    file splits, as before.
    """
    conf = df.sparkSession.conf
    adaptive = conf.get("spark.sql.adaptive.enabled")
    conf.set("spark.sql.adaptive.enabled", "false")
    try:
        count = df.alias("__spread").rdd.getNumPartitions()  # its own plan: `df` keeps the adaptive one
    finally:
        conf.set("spark.sql.adaptive.enabled", adaptive)
    return df.repartition(n) if count < n else df


def _arrow_conf(spark: SparkSession, cfg: LfmConfig) -> None:
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(cfg.refresh.arrow_batch_rows))


def users_in_scope(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan) -> DataFrame:
    """Users who get a UR: the users snapshot in force on the day, or its users with events in the trailing
    window."""
    s = cfg.schema
    users = features_as_of(spark, cfg, USERS, plan.ds, plan.input_versions[USERS])
    users = users.select(s.user_key, *[f.name for f in s.user_fields if f.name != s.user_key])
    if cfg.refresh.users == UserScope.active:
        window = [plan.ds - dt.timedelta(days=i) for i in range(cfg.refresh.active_window_days)]
        active = (read_table(spark, cfg.table_path(EVENTS), plan.input_versions[EVENTS])
                  .where(ds_predicate(window)).select(s.user_key).distinct())
        users = users.join(active, on=s.user_key, how="left_semi")
    return users


def tower_frame(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, side: str) -> DataFrame:
    """key, ur|ir (array<float>), __finite: the tower's vector for every user in scope / every item."""
    s = cfg.schema
    if side == "user":
        src = users_in_scope(spark, cfg, plan)
    else:
        items = features_as_of(spark, cfg, ITEMS, plan.ds, plan.input_versions[ITEMS])
        src = items.select(s.item_key, *[f.name for f in s.item_fields if f.name != s.item_key])
    return tower_vectors(spark, cfg, plan, src, side)


def tower_vectors(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, src: DataFrame, side: str) -> DataFrame:
    """The extraction itself: `src` (key and the side's fields) through the tower, spread over every core."""
    s = cfg.schema
    key, out = (s.user_key, UR) if side == "user" else (s.item_key, IR)
    _arrow_conf(spark, cfg)
    src = _spread(src, _partitions(spark, cfg))
    fn = functools.partial(tower_batches, extractor=_extractor(plan, cfg), key=key, out=out, side=side)
    key_type = src.schema[key].dataType.simpleString()
    return src.mapInArrow(fn, f"`{key}` {key_type}, `{out}` array<float>, __finite boolean")


def day_samples(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan) -> DataFrame:
    """The day's samples the CR reads: partition D, stamped before T_D (never anything after D)."""
    from spark_jobs.samples import samples

    s = cfg.schema
    cols = list(dict.fromkeys([s.user_key, s.item_key, *s.feature_names, s.scenario]))
    df = samples(spark, cfg, [plan.ds], plan.input_versions).withColumn("__t_ms", F.unix_millis("event_timestamp"))
    df = df.where(F.col("__t_ms") < plan.day_end_ms).select(*cols, "__t_ms")
    df = _spread(df, _partitions(spark, cfg))
    if cfg.refresh.deterministic:  # fixed batch contents -> bit-identical CR and sums on a rerun; by user first,
        df = df.sortWithinPartitions(s.user_key, "__t_ms", s.item_key, s.scenario)  # so users complete early
    return df


def cr_frame(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, samples_df: DataFrame,
             prev: DayState | None, points: tuple[str, ...] | None = None) -> DataFrame:
    """Per point and key (ukey or ikey set): state (array<double> at T_D), cr (normalised array<float>), t_last.

    `points` defaults to the spec's layer; `prev` frames may carry a `point` column (multi-point chains).
    Decay and normalisation come from the spec (the space is defined there, not by the current config).
    """
    s = cfg.schema
    spec = plan.spec
    _arrow_conf(spark, cfg)
    points = points or (spec.cr_layer,)
    ut, it = samples_df.schema[s.user_key].dataType, samples_df.schema[s.item_key].dataType
    fn = functools.partial(cr_partial_batches, extractor=_extractor(plan, cfg), points=tuple(points),
                           ukey=s.user_key, ikey=s.item_key, ukey_type=_arrow_type(ut), ikey_type=_arrow_type(it),
                           day_end_ms=plan.day_end_ms, tau_hours=spec.tau_hours,
                           sorted_by_user=cfg.refresh.deterministic)
    schema = (f"point string, ukey {ut.simpleString()}, ikey {it.simpleString()}, ord bigint, scale double, "
              "t_last bigint, vec array<double>")
    parts = samples_df.mapInArrow(fn, schema)
    if prev is not None:
        carry = decay.carry_factor(day_end_ms(prev.ds, s.timezone), plan.day_end_ms, spec.tau_hours)
        for side, frame, key in (("user", prev.user, s.user_key), ("item", prev.item, s.item_key)):
            ucol = F.col(key).cast(ut) if side == "user" else F.lit(None).cast(ut)
            icol = F.col(key).cast(it) if side == "item" else F.lit(None).cast(it)
            point = F.col("point") if "point" in frame.columns else F.lit(spec.cr_layer)
            parts = parts.unionByName(frame.select(
                point.alias("point"), ucol.alias("ukey"), icol.alias("ikey"), F.lit(-1).cast("bigint").alias("ord"),
                F.lit(carry).cast("double").alias("scale"), F.unix_millis("last_ts").alias("t_last"),
                F.col("state").alias("vec")))
    grouped = parts.groupBy("point", "ukey", "ikey").agg(
        F.collect_list(F.struct("ord", "scale", "vec")).alias("parts"), F.max("t_last").alias("t_last"))
    reduce_fn = functools.partial(cr_reduce_batches, normalisation=spec.normalisation)
    out = grouped.mapInArrow(reduce_fn, f"point string, ukey {ut.simpleString()}, ikey {it.simpleString()}, "
                                        "state array<double>, cr array<float>, t_last bigint, __finite boolean")
    if spec.state_ttl_days:
        out = out.where(F.col("t_last") >= plan.day_end_ms - spec.state_ttl_days * MS_PER_DAY)
    return out


def compute_day(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, prev: DayState | None,
                with_towers: bool = True) -> DayOutputs:
    """Run the extraction and aggregation, cache the results and check them; nothing is written."""
    s = cfg.schema
    ts = F.timestamp_millis(F.lit(plan.day_end_ms)).alias("event_timestamp")
    day = F.lit(plan.ds).cast("date").alias("ds")
    version = F.lit(plan.model_version).alias("model_version")
    export = F.lit(plan.spec.id).alias(EXPORT_ID)
    layer = F.lit(plan.cr_layer).alias("cr_layer")
    cached: list[DataFrame] = []
    checks: dict[str, DataFrame] = {}
    try:
        if with_towers:
            for side, name in (("user", UR), ("item", IR)):
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
        rows[CR_USER] = rows[STATE_TABLES[0]] = int(r["u"] or 0)
        rows[CR_ITEM] = rows[STATE_TABLES[1]] = int(r["i"] or 0)
        bad["cr"] = int(r["bad"] or 0)
    except (PySparkException, Py4JJavaError) as err:
        for df in cached:
            df.unpersist()
        raise RefreshError(f"refresh of {plan.ds} failed in the Spark job, nothing was written: "
                           f"{cause_line(err)}") from None
    if any(bad.values()):
        for df in cached:
            df.unpersist()
        raise NonFiniteVectors(f"model {plan.model_version} produced NaN/infinite vectors for ds {plan.ds} "
                               f"({ {k: v for k, v in bad.items() if v} }); nothing was written: the checkpoint "
                               "is broken or diverged, re-pretrain or pick another version")
    if rows[CR_USER] == 0:
        for df in cached:
            df.unpersist()
        if plan.empty:
            raise NoEvents(f"{plan.ds} had no events and the CR state carried from {plan.prev_ds} holds no user (it "
                           "was empty, or every key outlived refresh.state_ttl_days): nothing to export; begin a new "
                           "chain with --cold-start on the next day with events")
        raise NoEvents(f"no samples of ds {plan.ds} before its day end: nothing to aggregate")
    if plan.empty:
        log.info("ds %s had no events: its CR is the state of %s decayed (%d users, %d items)", plan.ds,
                 plan.prev_ds, rows[CR_USER], rows[CR_ITEM])
    if plan.future_events:
        log.warning("ds %s: %d event(s) stamped at or after the day end were left out of the CR state",
                    plan.ds, plan.future_events)
    frames = {}
    if with_towers:
        for name, key in ((UR, s.user_key), (IR, s.item_key)):
            frames[name] = checks[name].select(key, name, version, export, day, ts)
    user, item = cr.where(F.col("ukey").isNotNull()), cr.where(F.col("ikey").isNotNull())
    frames[CR_USER] = user.select(F.col("ukey").alias(s.user_key), F.col("cr").alias(CR_USER), layer, version, export,
                                  day, ts)
    frames[CR_ITEM] = item.select(F.col("ikey").alias(s.item_key), F.col("cr").alias(CR_ITEM), layer, version, export,
                                  day, ts)
    last_ts = F.timestamp_millis("t_last").alias("last_ts")
    frames[STATE_TABLES[0]] = user.select(F.col("ukey").alias(s.user_key), "state", last_ts, layer, version, export,
                                          day)
    frames[STATE_TABLES[1]] = item.select(F.col("ikey").alias(s.item_key), "state", last_ts, layer, version, export,
                                          day)
    return DayOutputs(frames=frames, rows=rows, future_events_dropped=int(plan.future_events), cached=cached)


def state_of(outputs: DayOutputs, ds: dt.date, cfg: LfmConfig) -> DayState:
    """The computed state as a `DayState` for the next day (warm-up chains that write nothing)."""
    s = cfg.schema
    return DayState(ds, outputs.frames[STATE_TABLES[0]].select(s.user_key, "state", "last_ts"),
                    outputs.frames[STATE_TABLES[1]].select(s.item_key, "state", "last_ts"))
