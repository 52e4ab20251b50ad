"""Feature history: `users` and `items` as they were on a day.

Ingest writes one snapshot of each per ingest, partitioned by `valid_from` (the first event day ingested with
it). The features of day D are those of the latest snapshot with valid_from <= D, so a backfill of an old day
never reads values ingested later. `features_as_of` is the one reader of that rule (refresh, samples, the gate).
"""
from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse.delta_io import partition_dates, read_table, table_exists
from lfm.config import LfmConfig
from lfm.contract import FEATURE_TABLES, VALID_FROM
from lfm.names import BadInput, parse_ds


class FeatureHistoryError(BadInput):
    """No feature snapshot can serve the day asked for (none yet, or a table written without history)."""


def feature_history(spark: SparkSession, cfg: LfmConfig, table: str,
                    version: int | None = None) -> tuple[DataFrame, list[dt.date]]:
    """Every snapshot of `users` or `items` (pinned to a Delta version when given) and their valid_from days."""
    if table not in FEATURE_TABLES:
        raise FeatureHistoryError(f"{table!r} has no feature history; use one of {list(FEATURE_TABLES)}")
    path = cfg.table_path(table)
    storage = cfg.delta_rs_options(path)
    if not table_exists(spark, path, storage):
        raise FeatureHistoryError(f"Delta table {table!r} is missing at {path}: run `lfm ingest` first")
    df = read_table(spark, path, version)
    if VALID_FROM not in df.columns:
        raise FeatureHistoryError(f"table {table!r} at {path} was written before feature history existed (no "
                                  f"{VALID_FROM} column): re-ingest it with `lfm ingest`")
    return df, partition_dates(spark, path, VALID_FROM, version, storage)


def snapshot_for(table: str, starts: list[dt.date], day: dt.date) -> dt.date:
    """The valid_from of the snapshot in force on `day`: the latest one starting on or before it."""
    valid = [s for s in starts if s <= day]
    if not valid:
        first = f"the first is valid from {starts[0]}" if starts else "it holds none"
        raise FeatureHistoryError(f"no {table} snapshot is valid on {day} ({first}; a snapshot is valid from the "
                                  f"first event day ingested with it): ingest {day} with its {table} source "
                                  f"(`lfm ingest --ds {day}`)")
    return valid[-1]


def features_as_of(spark: SparkSession, cfg: LfmConfig, table: str, ds: dt.date | str,
                   version: int | None = None) -> DataFrame:
    """`users` or `items` as they were on day `ds` (their columns, without valid_from)."""
    df, starts = feature_history(spark, cfg, table, version)
    return df.where(F.col(VALID_FROM) == F.lit(snapshot_for(table, starts, parse_ds(ds)))).drop(VALID_FROM)
