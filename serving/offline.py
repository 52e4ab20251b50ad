"""Point-in-time training sets: entity rows joined with a pinned feature service's vectors as of each row's time.

Resolution goes through the Feast registry (feature service -> feature views -> their export and table), and the
join reads *released* snapshots only, each day at the Delta version its release names (`lakehouse.releases`): a
day that is not released (quarantined, withdrawn, never validated) is skipped as if absent, so the join takes the
previous released snapshot within the TTL; `fallback_rows` counts the rows that fell back. We do not call Feast's
`get_historical_features`: its Spark template joins every view three times (range join, latest, re-join) and
measured ~1.3k rows/s here (50k rows x 2 views in 39 s), and its file offline store silently de-duplicated 37%
of entity rows (docs/domain.md section 6). The join here, per view:
1. snapshots of the view in the rows' time range (ds partition pruning), grouped per key into an array of
   (event_timestamp, vector) structs: one small shuffle of the snapshot side only;
2. a left join of the entity rows on the key (broadcast when the grouped side is small, `feast.offline_
   broadcast_mb`), so the entity side is never shuffled, re-keyed or de-duplicated;
3. per row, the snapshot with the greatest event_timestamp <= the row's time and >= time - TTL
   (`array_max(filter(...))`); none -> null.
A left join against one row per key keeps every entity row, duplicates included, in their columns; a row
never sees a snapshot stamped after its own time, so day D's snapshot (stamped D+1 00:00 local) is invisible
to a row during day D.

`training_table` returns the set as an Arrow table on the driver; up to `feast.offline_local_rows` entity rows
(and `feast.offline_local_mb` of pruned snapshots) it reads the snapshots with Spark and applies the same rule
in Arrow (`serving.asof_local`), skipping the distributed join's per-view shuffle and broadcast;
`write_training_set` writes either result as parquet. `tests/test_feast_serving.py` checks both engines give
the same rows.
"""
from __future__ import annotations

import datetime as dt
import logging

import pyarrow as pa
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lfm.config import LfmConfig

from lfm.contract import EMBEDDING_TABLES

from serving.errors import BadEntityRows, MixedModelVersions, ServingError

log = logging.getLogger("lfm.feast")
TS = "event_timestamp"


@dataclass(frozen=True)
class ViewPlan:
    """What the join needs of one view, all read from the Feast registry."""

    name: str
    feature: str  # the vector column (= feature name)
    key: str  # join key
    table: str  # the Delta table the view serves (= feature name)
    export_id: str
    ttl_seconds: int
    dim: int
    model_version: str


def plan_service(store, service) -> list[ViewPlan]:
    """Feature service -> views -> their export and table, from the registry; refuses a service of two exports."""
    plans = []
    for proj in service.feature_view_projections:
        fv = store.get_feature_view(proj.name, allow_registry_cache=True)
        tags = fv.tags or {}
        if not tags.get("export_id") or tags.get("table") not in EMBEDDING_TABLES:
            raise ServingError(f"feature view {fv.name} carries no export tags; it was not registered by "
                               "`lfm register`")
        keys = [c.name for c in fv.entity_columns]
        for feat in (proj.features or fv.features):
            plans.append(ViewPlan(name=fv.name, feature=feat.name, key=keys[0], table=tags["table"],
                                  export_id=tags["export_id"],
                                  ttl_seconds=int(fv.ttl.total_seconds()) if fv.ttl else 0,
                                  dim=int(tags.get("dim", 0) or 0), model_version=tags.get("model_version", "")))
    exports = {p.export_id for p in plans}
    if len(exports) > 1:
        raise MixedModelVersions(f"feature service {service.name} spans exports {sorted(exports)}: vectors of two "
                                 "exports live in different spaces")
    return plans


def released_days(cfg: LfmConfig, plan: ViewPlan, lo: dt.datetime, hi: dt.datetime) -> dict:
    """The view's released days a row in [lo, hi] can see: a day of margin on both ends for the local-day vs UTC
    offset (the timestamp rule in the join is exact) and the TTL before lo."""
    from lakehouse import releases

    first = (lo - dt.timedelta(seconds=plan.ttl_seconds or 10 * 365 * 86400)).date() - dt.timedelta(days=1)
    last = hi.date() + dt.timedelta(days=1)
    return {d: r for d, r in releases.released(cfg, plan.export_id).items() if first <= d <= last}


def released_base(spark, cfg: LfmConfig, plan: ViewPlan, days: dict):
    """(key, vector, event_timestamp, ds) of the given released days, each read at its release's version; an empty
    frame of that shape when there is none."""
    from pyspark.sql import functions as F

    from feature_repo.specs import key_type_of
    from lakehouse import releases

    key_type = key_type_of(cfg, plan.table).spark
    columns = [F.col(plan.key).cast(key_type).alias(plan.key), F.col(plan.table).alias(plan.feature),
               F.col(TS), F.col("ds")]
    frame = releases.released_frame(spark, cfg, plan.table, plan.export_id, days)
    if frame is None:
        schema = f"`{plan.key}` {key_type}, `{plan.feature}` array<float>, {TS} timestamp, ds date"
        return spark.createDataFrame([], schema)
    return frame.select(*columns)


def fallback_rows(spark, cfg: LfmConfig, entities, export_id: str) -> int:
    """Entity rows whose previous local day (the snapshot they would normally see) is not released: they got an
    older release within the TTL, or nulls. One Spark aggregation."""
    from pyspark.sql import functions as F

    from lakehouse import releases

    released = sorted(releases.released(cfg, export_id))
    natural = F.date_sub(F.to_date(F.from_utc_timestamp(F.col(TS), cfg.schema.timezone)), 1)
    cond = ~natural.isin(released) if released else F.lit(True)
    row = entities.agg(F.count_if(F.col(TS).isNotNull() & cond).alias("n")).first()
    return int(row["n"] or 0)


def _read_entity_parquet(spark, cfg: LfmConfig, path: str):
    """Entity rows from parquet. Nanosecond timestamps (pandas' default) are cast to microseconds on the way in
    when the set fits the driver; beyond that they are refused by name with the fix (Spark reads no nanos)."""
    import pyarrow.dataset as pads
    from pyspark.errors import PySparkException

    try:
        dataset = pads.dataset(path, format="parquet")
    except (OSError, ValueError) as err:
        raise BadEntityRows(f"cannot read entity rows {path}: {str(err).splitlines()[0][:200]}") from None
    nanos = [f.name for f in dataset.schema if pa.types.is_timestamp(f.type) and f.type.unit == "ns"]
    if nanos:
        if dataset.count_rows() > max(cfg.feast.offline_local_rows, 1):
            raise BadEntityRows(f"{path}: column(s) {nanos} hold nanosecond timestamps, which Spark cannot read; "
                                "write them in microseconds (pandas: df.to_parquet(path, coerce_timestamps='us', "
                                "allow_truncated_timestamps=True))")
        table = dataset.to_table()
        for name in nanos:
            i = table.schema.get_field_index(name)
            table = table.set_column(i, name, table.column(name).cast(pa.timestamp("us", tz=table.schema.field(i).type.tz),
                                                                       safe=False))
        return spark.createDataFrame(table)
    try:
        df = spark.read.parquet(path)
        df.schema  # noqa: B018 - resolve now, so a bad file fails here with its name
        return df
    except PySparkException as err:
        raise BadEntityRows(f"cannot read entity rows {path}: {str(err).splitlines()[0][:200]}") from None


def _entity_frame(spark, cfg: LfmConfig, entity_rows):
    """A Spark DataFrame of the entity rows (DataFrame, pandas, or a parquet path) with a TIMESTAMP column."""
    import pandas as pd
    from pyspark.sql import DataFrame
    from pyspark.sql import functions as F

    if isinstance(entity_rows, DataFrame):
        df = entity_rows
    elif isinstance(entity_rows, pd.DataFrame):
        df = spark.createDataFrame(entity_rows)
    elif isinstance(entity_rows, str) or hasattr(entity_rows, "__fspath__"):
        df = _read_entity_parquet(spark, cfg, str(entity_rows))
    else:
        raise BadEntityRows(f"entity rows must be a Spark DataFrame, a pandas DataFrame or a parquet path, "
                            f"not {type(entity_rows).__name__}")
    types = dict(df.dtypes)
    missing = [c for c in (cfg.schema.user_key, cfg.schema.item_key, TS) if c not in types]
    if missing:
        raise BadEntityRows(f"entity rows lack column(s) {missing}; they need {cfg.schema.user_key}, "
                            f"{cfg.schema.item_key} and {TS} (the time each row's features must predate)")
    if types[TS] == "timestamp_ntz":
        df = df.withColumn(TS, F.col(TS).cast("timestamp"))  # naive times are read as UTC (session zone)
    elif types[TS] != "timestamp":
        raise BadEntityRows(f"{TS} must be a timestamp, not {types[TS]}")
    return df


def output_names(plans: list[ViewPlan], columns: list[str], full_feature_names: bool) -> list[str]:
    """The vector columns the join adds; refuses names the entity rows already use."""
    names = [f"{p.name}__{p.feature}" if full_feature_names else p.feature for p in plans]
    clash = sorted(set(names) & set(columns))
    if clash or len(set(names)) != len(names):
        raise BadEntityRows(f"entity rows already hold column(s) {clash or names}; rename them or use "
                            "full_feature_names")
    return names


def by_key(plans: list[ViewPlan], names: list[str]) -> tuple[list[ViewPlan], list[str]]:
    """Views that share a join key next to each other (both engines add the columns in this order): a sort-merge
    join then reuses the entity side's partitioning by that key instead of shuffling the rows once per view."""
    order = sorted(range(len(plans)), key=lambda i: plans[i].key)
    return [plans[i] for i in order], [names[i] for i in order]


def pruned_snapshots(spark, cfg: LfmConfig, plan: ViewPlan, lo: dt.datetime, hi: dt.datetime):
    """((__k, t, v) of the view's released snapshots a row in [lo, hi] can see, nothing stamped after hi;
    their bytes on disk, from the Delta log)."""
    from pyspark.sql import functions as F

    from lakehouse.releases import released_bytes

    days = released_days(cfg, plan, lo, hi)
    frame = (released_base(spark, cfg, plan, days).where(F.col(TS) <= F.lit(hi))
             .select(F.col(plan.key).alias("__k"), F.col(TS).alias("t"), F.col(plan.feature).alias("v")))
    return frame, released_bytes(cfg, plan.table, plan.export_id, days)


def asof_join(spark, cfg: LfmConfig, entities, plans: list[ViewPlan], full_feature_names: bool = False):
    """Left as-of join of `entities` with each planned view, in Spark (see module docstring)."""
    from pyspark.sql import functions as F

    names = output_names(plans, entities.columns, full_feature_names)
    limit = cfg.feast.offline_broadcast_mb * 1024 * 1024
    plans, names = by_key(plans, names)
    lo_hi = entities.agg(F.min(TS), F.max(TS)).first()
    if lo_hi[0] is None:
        return entities.select("*", *[F.lit(None).cast("array<float>").alias(n) for n in names])
    out = entities
    with ThreadPoolExecutor(max_workers=len(plans)) as pool:  # one Delta log read per view, concurrently
        snaps = list(pool.map(lambda p: pruned_snapshots(spark, cfg, p, lo_hi[0], lo_hi[1]), plans))
    for (snap, size), plan, name in zip(snaps, plans, names):
        grouped = snap.select("__k", F.struct("t", "v").alias("s")).groupBy("__k").agg(
            F.collect_list("s").alias("__snaps"))
        if size <= limit:
            grouped = F.broadcast(grouped)
        out = out.join(grouped, out[plan.key] == grouped["__k"], "left")
        cond = f"s.t <= `{TS}`" + (f" AND s.t >= `{TS}` - INTERVAL {plan.ttl_seconds} SECONDS"
                                   if plan.ttl_seconds else "")
        out = out.withColumn(name, F.expr(f"array_max(filter(__snaps, s -> {cond})).v")).drop("__k", "__snaps")
    return out


def local_join(spark, cfg: LfmConfig, entities, plans: list[ViewPlan], full_feature_names: bool = False):
    """The same join as `asof_join` with the lookup in Arrow on the driver (`serving.asof_local`): an Arrow
    table, or None when the rows or the pruned snapshots exceed `feast.offline_local_rows` / `offline_local_mb`
    or no row has a time (then the Spark join is the one that scales; the bounded collect of up to `offline_local_rows` + 1 rows
    that found out is the price of not counting the rows first)."""
    import pyarrow.compute as pc

    from lakehouse.delta_io import to_arrow
    from serving.asof_local import asof_take

    limit_rows, limit_bytes = cfg.feast.offline_local_rows, cfg.feast.offline_local_mb * 1024 * 1024
    names = output_names(plans, entities.columns, full_feature_names)
    plans, names = by_key(plans, names)
    if limit_rows == 0:
        return None
    rows = entities.limit(limit_rows + 1).toArrow()
    if rows.num_rows > limit_rows:
        return None
    lo, hi = (x.as_py() for x in pc.min_max(rows.column(TS)).values())
    if lo is None:  # no row has a time: nothing to prune by; the Spark join answers with nulls
        return None
    with ThreadPoolExecutor(max_workers=len(plans)) as pool:
        snaps = list(pool.map(lambda p: pruned_snapshots(spark, cfg, p, lo, hi), plans))
        if any(size > limit_bytes for _, size in snaps):
            return None
        tables = list(pool.map(lambda s: to_arrow(s[0]), snaps))
    for plan, name, snap in zip(plans, names, tables):
        rows = rows.append_column(name, asof_take(rows.column(plan.key), rows.column(TS), snap.column("__k"),
                                                  snap.column("t"), snap.column("v"), plan.ttl_seconds))
    return rows


def prepare(spark, cfg: LfmConfig, entity_rows, feature_service: str | None, version: str | None, store):
    """(entity DataFrame, the pinned service's view plans), refusing unknown versions and bad rows up front."""
    from serving.online import resolve_service
    from feature_repo.store import open_store

    store = store or open_store(cfg)
    service = resolve_service(store, feature_service, version)
    plans = plan_service(store, service)
    if feature_service is None and version is None:
        log.warning("training set from %s (model %s): pin a version with --model or --feature-service",
                    service.name, plans[0].model_version if plans else "?")
    return _entity_frame(spark, cfg, entity_rows), plans


def training_set(spark, cfg: LfmConfig, entity_rows, feature_service: str | None = None,
                 version: str | None = None, full_feature_names: bool = False, store=None):
    """Entity rows + the pinned service's vectors as of each row's `event_timestamp` (a Spark DataFrame).

    `feature_service` (e.g. `lfm_e<export id>`) or `version` (an export id, or a model version with one export)
    pins the features; neither = `lfm_current` (logged, since a trainer should pin one). Every entity row comes
    back exactly once, in its own columns; only released days are seen.
    """
    entities, plans = prepare(spark, cfg, entity_rows, feature_service, version, store)
    return asof_join(spark, cfg, entities, plans, full_feature_names)


def training_table(spark, cfg: LfmConfig, entity_rows, feature_service: str | None = None,
                   version: str | None = None, full_feature_names: bool = False, store=None):
    """`training_set` as an Arrow table on the driver: joined locally when small enough (`local_join`), else the
    Spark join collected. Same rows, same columns either way."""
    entities, plans = prepare(spark, cfg, entity_rows, feature_service, version, store)
    table = local_join(spark, cfg, entities, plans, full_feature_names)
    return table if table is not None else asof_join(spark, cfg, entities, plans, full_feature_names).toArrow()


@dataclass(frozen=True)
class TrainingSetReport:
    engine: str  # "local" (Arrow on the driver) or "spark"
    export_id: str
    rows_in: int
    rows_out: int
    fell_back: int  # rows whose previous day is not released (see `fallback_rows`)


def write_training_set(spark, cfg: LfmConfig, entity_rows, out: str, feature_service: str | None = None,
                       version: str | None = None, full_feature_names: bool = False,
                       store=None) -> TrainingSetReport:
    """Write the training set as a parquet folder at `out` (replaced, never half-written). A small set is joined
    locally and written by pyarrow, a large one written by Spark's executors into a staging folder first."""
    import shutil
    import tempfile
    from pathlib import Path

    import pyarrow.parquet as pq

    entities, plans = prepare(spark, cfg, entity_rows, feature_service, version, store)
    export_id = plans[0].export_id
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    table = local_join(spark, cfg, entities, plans, full_feature_names)
    if table is None:
        engine = "spark"
        asof_join(spark, cfg, entities, plans, full_feature_names).write.mode("overwrite").parquet(str(staging))
        rows_in, rows_out = entities.count(), spark.read.parquet(str(staging)).count()
    else:
        engine = "local"
        pq.write_table(table, staging / "part-00000.parquet")
        rows_in = rows_out = table.num_rows
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return TrainingSetReport(engine, export_id, rows_in, rows_out, fallback_rows(spark, cfg, entities, export_id))
