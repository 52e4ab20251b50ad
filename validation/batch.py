"""The batch GE validates for a table and day: its Delta partition, plus per-row vector statistics for embeddings.

Higher-order array functions (`forall`, `aggregate`) run interpreted in Spark and dominate the gate's cost on a
large day (about 8 s per pass over 1M x 64-d on 2 busy cores). Computing them once, as columns of the cached
batch, makes every vector expectation and every metric a scalar filter over cached rows instead of another pass
over the arrays. The statistic columns are prefixed `_vec_` and listed in the suite's column-set expectation.
"""
from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from lfm.config import LfmConfig
from lakehouse.delta_io import ds_predicate, export_predicate, read_table, table_exists
from lakehouse.features import features_as_of
from lfm.contract import FEATURE_TABLES
from validation.tables import TableSpec

DIM, FINITE, NORM, ZERO = "_vec_dim", "_vec_finite", "_vec_norm", "_vec_zero"
STAT_COLUMNS = (DIM, FINITE, NORM, ZERO)
INFINITY = "CAST('Infinity' AS DOUBLE)"


def q(column: str) -> str:
    """A backtick-quoted Spark SQL identifier."""
    return "`" + column.replace("`", "``") + "`"


def vector_stats(vector: str) -> dict[str, str]:
    """Per-row statistics of an array<float> column, as Spark SQL (null for a null vector)."""
    v = q(vector)
    return {
        DIM: f"size({v})",
        # abs(NaN) < inf is false (Spark orders NaN above +inf), so NaN, +-inf and null elements all fail
        FINITE: f"forall({v}, x -> x IS NOT NULL AND abs(x) < {INFINITY})",
        NORM: f"sqrt(aggregate({v}, CAST(0 AS DOUBLE), (acc, x) -> acc + CAST(x AS DOUBLE) * CAST(x AS DOUBLE)))",
        ZERO: f"forall({v}, x -> x = 0)",
    }


def valid_condition(dim: int, min_norm: float, max_norm: float) -> str:
    """Rows whose vector can enter drift and collapse metrics: the ones every row-level vector check accepts."""
    return (f"{DIM} = {int(dim)} AND {FINITE} AND NOT {ZERO} "
            f"AND {NORM} BETWEEN CAST('{float(min_norm)!r}' AS DOUBLE) AND CAST('{float(max_norm)!r}' AS DOUBLE)")


def read_batch(spark: SparkSession, cfg: LfmConfig, spec: TableSpec, day: dt.date,
               model_version: str | None, version: int | None = None, export_id: str | None = None) -> DataFrame:
    """The day's partition (users/items: the snapshot in force that day) with vector statistics, not yet cached.

    `version` pins the Delta version read (the candidate's); `export_id` keeps one export's rows of the day.
    A table that does not exist yet reads as an empty frame of the contract schema, so the suite reports it as
    an empty partition instead of the gate crashing.
    """
    path = cfg.table_path(spec.name)
    if table_exists(spark, path) and spec.name in FEATURE_TABLES:
        df = features_as_of(spark, cfg, spec.name, day, version)  # the snapshot in force on the day
    elif table_exists(spark, path):
        df = read_table(spark, path, version)
        if spec.partitioned:
            df = df.where(ds_predicate([day]) if export_id is None else export_predicate([day], export_id))
        if spec.is_embedding and cfg.quality.allow_side_by_side_versions:
            df = df.where(F.col("model_version") == model_version)
    else:
        df = spark.createDataFrame([], spec.empty_schema())
    if spec.vector and spec.vector in df.columns:
        df = df.selectExpr("*", *[f"{sql} AS {name}" for name, sql in vector_stats(spec.vector).items()])
    return df
