"""The `runs` Delta table: one row per pipeline step attempt, so a day's progress survives any crash.

Rows are appended (never updated): the latest row of a (ds, step) says where that day stands. Appends are
single Delta commits, so a crash leaves either the row or nothing.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from lfm.config import LfmConfig
from spark_jobs.delta_io import table_exists

RUNS_SCHEMA = T.StructType([
    T.StructField("run_id", T.StringType(), False),
    T.StructField("ds", T.DateType(), False),
    T.StructField("step", T.StringType(), False),
    T.StructField("model_version", T.StringType(), True),
    T.StructField("status", T.StringType(), False),  # succeeded | failed
    T.StructField("started_at", T.TimestampType(), False),
    T.StructField("ended_at", T.TimestampType(), False),
    T.StructField("seconds", T.DoubleType(), False),
    T.StructField("rows", T.LongType(), True),
    T.StructField("rows_per_second", T.DoubleType(), True),
    T.StructField("error", T.StringType(), True),
])


@dataclass(frozen=True)
class StepRun:
    run_id: str
    ds: dt.date
    step: str
    model_version: str | None
    status: str
    started_at: dt.datetime
    ended_at: dt.datetime
    seconds: float
    rows: int | None
    rows_per_second: float | None
    error: str | None


def append(spark: SparkSession, cfg: LfmConfig, run: StepRun) -> None:
    df = spark.createDataFrame([tuple(asdict(run).values())], RUNS_SCHEMA)
    df.write.format("delta").mode("append").save(cfg.table_path("runs"))


def latest_by_step(spark: SparkSession, cfg: LfmConfig, ds: dt.date) -> dict[str, StepRun]:
    """The most recent attempt of each step for day `ds`."""
    path = cfg.table_path("runs")
    if not table_exists(spark, path):
        return {}
    rows = (spark.read.format("delta").load(path).where(F.col("ds") == F.lit(ds))
            .withColumn("_n", F.row_number().over(Window.partitionBy("step").orderBy(F.col("ended_at").desc())))
            .where("_n = 1").drop("_n").collect())
    return {r["step"]: StepRun(**r.asDict()) for r in rows}


def recent(spark: SparkSession, cfg: LfmConfig, days: int = 7) -> list[StepRun]:
    """Latest attempt per (ds, step) for the last `days` days that have runs, newest day first."""
    path = cfg.table_path("runs")
    if not table_exists(spark, path):
        return []
    df = spark.read.format("delta").load(path)
    last_days = [r["ds"] for r in df.select("ds").distinct().orderBy(F.col("ds").desc()).limit(days).collect()]
    rows = (df.where(F.col("ds").isin(last_days))
            .withColumn("_n", F.row_number().over(Window.partitionBy("ds", "step").orderBy(F.col("ended_at").desc())))
            .where("_n = 1").drop("_n").orderBy(F.col("ds").desc(), "started_at").collect())
    return [StepRun(**r.asDict()) for r in rows]
