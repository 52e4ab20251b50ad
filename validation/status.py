"""The `gate_status` Delta table: one row per (ds, table, model_version, gate run), appended, never rewritten.

The latest run for a (ds, table, model_version) decides: a quarantined day becomes servable only by a later run
that passes. `lfm materialize` loads a table of a day only if `passed_tables` names it; a day that was never
validated is not in the set either, so a missing gate fails closed. Input tables (events, users, items) do not
depend on a model and are recorded with a null model_version.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lfm.config import LfmConfig
from lfm.names import check_model_version, parse_ds
from spark_jobs.delta_io import ds_predicate, table_exists

STATUS_TABLE = "gate_status"
SCHEMA = T.StructType([
    T.StructField("ds", T.DateType(), False),
    T.StructField("table", T.StringType(), False),
    T.StructField("model_version", T.StringType(), True),
    T.StructField("run_id", T.StringType(), False),
    T.StructField("passed", T.BooleanType(), False),
    T.StructField("failed_expectations", T.ArrayType(T.StringType(), False), False),
    T.StructField("checked_at", T.TimestampType(), False),
    T.StructField("metrics", T.MapType(T.StringType(), T.DoubleType(), True), True),
])


@dataclass(frozen=True)
class StatusRow:
    ds: dt.date
    table: str
    model_version: str | None
    run_id: str
    passed: bool
    failed_expectations: list[str]
    checked_at: dt.datetime
    metrics: dict[str, float | None] = field(default_factory=dict)


def record(spark: SparkSession, cfg: LfmConfig, rows: list[StatusRow]) -> None:
    """Append the rows of one gate run in one commit."""
    if not rows:
        return
    data = [(parse_ds(r.ds), r.table, r.model_version, r.run_id, r.passed, list(r.failed_expectations),
             r.checked_at, dict(r.metrics)) for r in rows]
    meta = {"job": "gate", "run_id": rows[0].run_id}
    (spark.createDataFrame(data, SCHEMA).write.format("delta").mode("append")
     .option("userMetadata", json.dumps(meta, sort_keys=True)).save(cfg.table_path(STATUS_TABLE)))


def _latest(spark: SparkSession, cfg: LfmConfig) -> DataFrame | None:
    path = cfg.table_path(STATUS_TABLE)
    if not table_exists(spark, path):
        return None
    newest = Window.partitionBy("ds", "table", "model_version").orderBy(F.col("checked_at").desc(),
                                                                        F.col("run_id").desc())
    return (spark.read.format("delta").load(path).withColumn("__n", F.row_number().over(newest))
            .where("__n = 1").drop("__n"))


def passed_tables(spark: SparkSession, cfg: LfmConfig, ds: str | dt.date, model_version: str) -> set[str]:
    """Tables whose latest gate run for (ds, model_version) passed (plus passed input tables of that ds)."""
    day, version = parse_ds(ds), check_model_version(model_version)
    latest = _latest(spark, cfg)
    if latest is None:
        return set()
    rows = (latest.where(ds_predicate([day]))
            .where((F.col("model_version") == version) | F.col("model_version").isNull())
            .where("passed").select("table").collect())
    return {r["table"] for r in rows}


def status_rows(spark: SparkSession, cfg: LfmConfig, days: list[dt.date] | None = None,
                model_version: str | None = None) -> list[StatusRow]:
    """The deciding (latest) row per (ds, table, model_version), ordered by day, table and version."""
    latest = _latest(spark, cfg)
    if latest is None:
        return []
    if days:
        latest = latest.where(ds_predicate(days))
    if model_version:
        latest = latest.where(F.col("model_version") == check_model_version(model_version))
    rows = latest.orderBy("ds", "table", F.col("model_version").asc_nulls_first()).collect()
    return [StatusRow(ds=r["ds"], table=r["table"], model_version=r["model_version"], run_id=r["run_id"],
                      passed=r["passed"], failed_expectations=list(r["failed_expectations"]),
                      checked_at=r["checked_at"], metrics=dict(r["metrics"] or {})) for r in rows]
