"""Small Delta Lake helpers shared by every job: existence, atomic partition replace, commit metadata."""
from __future__ import annotations

import datetime as dt
import json

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession

from lfm.names import parse_ds


def table_exists(spark: SparkSession, path: str) -> bool:
    return DeltaTable.isDeltaTable(spark, path)


def ds_predicate(days: list[dt.date], column: str = "ds") -> str:
    """A SQL predicate over validated dates only (never raw user strings)."""
    if not days:
        raise ValueError("ds_predicate needs at least one day")
    literals = ", ".join(f"DATE'{parse_ds(d).isoformat()}'" for d in sorted(set(days)))
    return f"{column} IN ({literals})"


def replace_partitions(df: DataFrame, path: str, days: list[dt.date], metadata: dict, extra_predicate: str = "") -> None:
    """Replace the `ds` partitions `days` of the Delta table at `path` with `df` in one atomic commit.

    Readers see either the old partitions or the new ones, never a mix; rerunning replaces, never duplicates.
    `extra_predicate` narrows the replaced rows further (e.g. one model_version inside a ds).
    """
    predicate = ds_predicate(days)
    if extra_predicate:
        predicate = f"({predicate}) AND ({extra_predicate})"
    spark = df.sparkSession
    writer = df.write.format("delta").option("userMetadata", json.dumps(metadata, sort_keys=True))
    if table_exists(spark, path):
        writer.mode("overwrite").option("replaceWhere", predicate).save(path)
    else:
        writer.mode("overwrite").partitionBy("ds").save(path)


def overwrite_table(df: DataFrame, path: str, metadata: dict) -> None:
    """Replace a whole (unpartitioned) table in one commit; the previous version stays in the time-travel log."""
    (df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
     .option("userMetadata", json.dumps(metadata, sort_keys=True)).save(path))


def table_version(spark: SparkSession, path: str) -> int | None:
    """The latest commit version of a Delta table, recorded as an input version in downstream commits."""
    if not table_exists(spark, path):
        return None
    return int(DeltaTable.forPath(spark, path).history(1).collect()[0]["version"])
