"""Training / extraction samples: the `events` of some days joined with `users` and `items`.

One row per event with the keys, every schema field, the scenario, the task labels, the raw timestamp,
`event_timestamp` and `ds`. Pretraining reads these through Spark -> Arrow (never the raw CSVs), and the refresh
job reads the same frame for CR, so both see identical feature values.
"""
from __future__ import annotations

import datetime as dt

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lfm.config import LfmConfig
from lfm.names import BadInput, parse_ds
from lakehouse.delta_io import ds_predicate, table_exists


class SamplesError(BadInput):
    """Samples that cannot be built from the lakehouse (missing table, column or days)."""


def _read(spark: SparkSession, cfg: LfmConfig, name: str) -> DataFrame:
    path = cfg.table_path(name)
    if not table_exists(spark, path):
        raise SamplesError(f"Delta table {name!r} is missing at {path}: run `lfm ingest --source DIR` first")
    return spark.read.format("delta").load(path)


def samples(spark: SparkSession, cfg: LfmConfig, days: list[dt.date | str]) -> DataFrame:
    """events (for `days`) LEFT JOIN users LEFT JOIN items; a missing feature row leaves nulls (the OOV bucket)."""
    if not days:
        raise SamplesError("samples needs at least one day")
    s = cfg.schema
    days = sorted({parse_ds(d) for d in days})
    events = _read(spark, cfg, "events").where(ds_predicate(days))
    users, items = _read(spark, cfg, "users"), _read(spark, cfg, "items")
    keys = {s.user_key, s.item_key}

    event_cols = list(dict.fromkeys([s.user_key, s.item_key, s.scenario, *s.tasks, s.timestamp,
                                     "event_timestamp", "ds"]))
    missing = [c for c in event_cols if c not in events.columns]
    if missing:
        raise SamplesError(f"events lacks columns {missing} named by the data schema; fix `schema` in lfm.yaml")

    def side(table: DataFrame, name: str, key: str, fields: list[str]) -> tuple[DataFrame, list[str]]:
        own = [f for f in fields if f not in keys and f in table.columns]
        absent = [f for f in fields if f not in keys and f not in table.columns and f not in events.columns]
        if absent or key not in table.columns:
            raise SamplesError(f"{name} lacks columns {absent or [key]} named by the data schema; "
                               "fix `schema` in lfm.yaml or re-ingest")
        return table.select(key, *own), own

    u, u_cols = side(users, "users", s.user_key, [f.name for f in s.user_fields])
    i, i_cols = side(items, "items", s.item_key, [f.name for f in s.item_fields])
    from_events = [f for f in s.feature_names if f not in keys and f not in u_cols + i_cols]
    # Items first: the last join shuffles by user, so a user's samples meet in one partition (the refresh sums CR
    # per user inside each task).
    joined = (events.select(*event_cols, *from_events)
              .join(i, on=s.item_key, how="left")
              .join(u, on=s.user_key, how="left"))
    order = list(dict.fromkeys([s.user_key, s.item_key, *s.feature_names, s.scenario, *s.tasks, s.timestamp,
                                "event_timestamp", "ds"]))
    return joined.select(*[F.col(c) for c in order])


def samples_arrow(spark: SparkSession, cfg: LfmConfig, days: list[dt.date | str]) -> pa.Table:
    """`samples` collected to the driver as one Arrow table (for pretraining on data that fits in memory)."""
    return samples(spark, cfg, days).toArrow()
