"""The batch the gate validates for a table and day: its Delta partition, plus per-row vector statistics.

Higher-order array functions (`aggregate`, `forall`) run interpreted in Spark and dominate the gate's cost on a
large day. One `aggregate` per row (the sum of squares, in double) is enough for every vector statistic: a float
vector squared and summed in double cannot overflow, so the sum is finite exactly when every element is, NaN or
+-inf when one is, null when an element is null, and 0 exactly when every element is 0. The statistic columns
(prefixed `_vec_`) are what the vector checks of `validation.suites` count over, in the table's one aggregation:

- `_vec_dim`: the vector's width;
- `_vec_finite`: no NaN, +-inf or null element;
- `_vec_norm`: the L2 norm of a finite, non-zero vector; null otherwise, so the norm range check leaves
  non-finite and all-zero vectors to their own checks;
- `_vec_zero`: every element is 0.
"""
from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lfm.config import LfmConfig
from lakehouse.delta_io import ds_predicate, export_predicate, read_table, table_exists
from lakehouse.features import features_as_of
from lfm.contract import FEATURE_TABLES
from validation.tables import TableSpec

DIM, FINITE, NORM, ZERO = "_vec_dim", "_vec_finite", "_vec_norm", "_vec_zero"
STAT_COLUMNS = (DIM, FINITE, NORM, ZERO)
_SUMSQ = "__vec_sumsq"  # intermediate, dropped: Spark keeps it computed once (it never inlines a lambda twice)
INFINITY = "CAST('Infinity' AS DOUBLE)"


def q(column: str) -> str:
    """A backtick-quoted Spark SQL identifier."""
    return "`" + column.replace("`", "``") + "`"


def with_vector_stats(df: DataFrame, vector: str) -> DataFrame:
    """`df` plus the `_vec_*` statistics of its array<float> column `vector` (all null for a null vector)."""
    v = q(vector)
    sumsq = f"aggregate({v}, CAST(0 AS DOUBLE), (acc, x) -> acc + CAST(x AS DOUBLE) * CAST(x AS DOUBLE))"
    finite = f"{_SUMSQ} < {INFINITY}"  # NaN sorts above +inf in Spark, so NaN fails too; null stays null
    return (df.selectExpr("*", f"{sumsq} AS {_SUMSQ}")
            .selectExpr("*", f"size({v}) AS {DIM}",
                        f"CASE WHEN {v} IS NOT NULL THEN coalesce({finite}, false) END AS {FINITE}",
                        f"CASE WHEN {_SUMSQ} > 0 AND {finite} THEN sqrt({_SUMSQ}) END AS {NORM}",
                        f"{_SUMSQ} = 0 AS {ZERO}")
            .drop(_SUMSQ))


def sql_double(value: float) -> str:
    """A Spark SQL double literal that keeps every digit of `value` (the text of its repr, cast)."""
    return f"CAST('{float(value)!r}' AS DOUBLE)"


def valid_condition(dim: int, min_norm: float, max_norm: float) -> str:
    """Rows whose vector can enter drift and collapse metrics: the ones every row-level vector check accepts
    (a non-null `_vec_norm` already means finite and not all-zero)."""
    return (f"{DIM} = {int(dim)} AND {NORM} "
            f"BETWEEN {sql_double(min_norm)} AND {sql_double(max_norm)}")


def day_rows(df: DataFrame, day: dt.date, export_id: str | None) -> DataFrame:
    """The rows of `day` (of one export when `export_id` is given) of a `ds`-partitioned table."""
    return df.where(ds_predicate([day]) if export_id is None else export_predicate([day], export_id))


def read_batch(spark: SparkSession, cfg: LfmConfig, spec: TableSpec, day: dt.date,
               model_version: str | None, version: int | None = None, export_id: str | None = None) -> DataFrame:
    """The day's partition (users/items: the snapshot in force that day), as stored (see `with_stats`).

    `version` pins the Delta version read (the candidate's; a pinned version that is gone fails loudly in
    Delta); `export_id` keeps one export's rows of the day. An unpinned table that does not exist yet reads as an
    empty frame of the contract schema, so the suite reports it as an empty partition instead of the gate
    crashing.
    """
    path = cfg.table_path(spec.name)
    storage = cfg.delta_rs_options(path)
    if spec.name in FEATURE_TABLES and table_exists(spark, path, storage):
        df = features_as_of(spark, cfg, spec.name, day, version)  # the snapshot in force on the day
    elif version is not None or table_exists(spark, path, storage):
        df = read_table(spark, path, version)
        if spec.partitioned:
            df = day_rows(df, day, export_id)
        if spec.is_embedding and cfg.quality.allow_side_by_side_versions:
            df = df.where(F.col("model_version") == model_version)
    else:
        df = spark.createDataFrame([], spec.empty_schema())
    return df


def with_stats(df: DataFrame, spec: TableSpec) -> DataFrame:
    """An embedding batch with its vector statistics; unchanged when the vector column is missing or not a
    numeric array (its schema check fails; the vector checks do not apply)."""
    if spec.vector and _numeric_array(df, spec.vector):
        return with_vector_stats(df, spec.vector)
    return df


def _numeric_array(df: DataFrame, column: str) -> bool:
    if column not in df.columns:
        return False
    data_type = df.schema[column].dataType
    return isinstance(data_type, T.ArrayType) and isinstance(data_type.elementType, T.NumericType)
