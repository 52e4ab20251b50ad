"""Training / extraction samples: the `events` of some days joined with `users` and `items` as of each day.

One row per event with the keys, every schema field, the scenario, the task labels, the raw timestamp,
`event_timestamp` and `ds`. Pretraining reads these through Spark -> Arrow (never the raw files), and the refresh
job reads the same frame for CR, so both see identical feature values. An event of day D meets the feature
snapshots in force on D (`lakehouse.features`), so an old day never sees feature values ingested later.
"""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.delta_io import ds_predicate, read_table, table_exists
from lakehouse.features import feature_history, snapshot_for
from lfm.config import LfmConfig
from lfm.contract import EVENTS, ITEMS, USERS, VALID_FROM
from lfm.names import BadInput, parse_ds


class SamplesError(BadInput):
    """Samples that cannot be built from the lakehouse (missing table, column or days)."""


def _read(spark: SparkSession, cfg: LfmConfig, name: str, version: int | None = None) -> DataFrame:
    path = cfg.table_path(name)
    if not table_exists(spark, path, cfg.delta_rs_options(path)):
        raise SamplesError(f"Delta table {name!r} is missing at {path}: run `lfm ingest --source DIR` first")
    return read_table(spark, path, version)


def _snapshot_of_day(mapping: dict[dt.date, dt.date]) -> Column:
    """valid_from per event row, from its `ds` (a CASE over the few days asked for)."""
    expr = None
    for day, start in mapping.items():
        cond = F.col("ds") == F.lit(day)
        expr = F.when(cond, F.lit(start)) if expr is None else expr.when(cond, F.lit(start))
    return expr


def samples(spark: SparkSession, cfg: LfmConfig, days: list[dt.date | str],
            versions: dict[str, int] | None = None) -> DataFrame:
    """events (for `days`) LEFT JOIN items LEFT JOIN users, each as of the event's day; a missing feature row
    leaves nulls (the OOV bucket). `versions` pins the input tables (a refresh plan's input versions)."""
    if not days:
        raise SamplesError("samples needs at least one day")
    s = cfg.schema
    days = sorted({parse_ds(d) for d in days})
    versions = versions or {}
    events = _read(spark, cfg, EVENTS, versions.get(EVENTS)).where(ds_predicate(days))
    keys = {s.user_key, s.item_key}

    event_cols = list(dict.fromkeys([s.user_key, s.item_key, s.scenario, *s.tasks, s.timestamp,
                                     "event_timestamp", "ds"]))
    missing = [c for c in event_cols if c not in events.columns]
    if missing:
        raise SamplesError(f"events lacks columns {missing} named by the data schema; fix `schema` in lfm.yaml")

    def side(name: str, key: str, fields: list[str]) -> tuple[DataFrame, list[str], Column]:
        """The snapshots the days need, with the per-row valid_from to join on."""
        table, starts = feature_history(spark, cfg, name, versions.get(name))
        own = [f for f in fields if f not in keys and f in table.columns]
        absent = [f for f in fields if f not in keys and f not in table.columns and f not in events.columns]
        if absent or key not in table.columns:
            raise SamplesError(f"{name} lacks columns {absent or [key]} named by the data schema; "
                               "fix `schema` in lfm.yaml or re-ingest")
        mapping = {d: snapshot_for(name, starts, d) for d in days}
        picked = table.where(F.col(VALID_FROM).isin(sorted(set(mapping.values()))))
        start = f"__{name}_from"
        return picked.select(key, *own, F.col(VALID_FROM).alias(start)), own, _snapshot_of_day(mapping).alias(start)

    u, u_cols, u_from = side(USERS, s.user_key, [f.name for f in s.user_fields])
    i, i_cols, i_from = side(ITEMS, s.item_key, [f.name for f in s.item_fields])
    from_events = [f for f in s.feature_names if f not in keys and f not in u_cols + i_cols]
    # Items first: the last join shuffles by user, so a user's samples meet in one partition (the refresh sums CR
    # per user inside each task).
    joined = (events.select(*event_cols, *from_events, u_from, i_from)
              .join(i, on=[s.item_key, "__items_from"], how="left")
              .join(u, on=[s.user_key, "__users_from"], how="left"))
    order = list(dict.fromkeys([s.user_key, s.item_key, *s.feature_names, s.scenario, *s.tasks, s.timestamp,
                                "event_timestamp", "ds"]))
    return joined.select(*[F.col(c) for c in order])


def samples_arrow(spark: SparkSession, cfg: LfmConfig, days: list[dt.date | str]) -> pa.Table:
    """`samples` collected to the driver as one Arrow table (for pretraining on data that fits in memory)."""
    return samples(spark, cfg, days).toArrow()
