"""The one SparkSession factory: every job, test, Feast's offline store and GE use this Delta-enabled session.

Under `spark-submit` a session may already exist (with its own master and packages); `get_spark` then reuses
it and only checks that Delta is enabled, so the same job code runs locally and on a cluster.
"""
from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from lfm.config import LfmConfig

_DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
_DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


def get_spark(cfg: LfmConfig) -> SparkSession:
    """Return the active Delta-enabled SparkSession, creating it from `cfg.spark` if there is none."""
    active = SparkSession.getActiveSession()
    if active is not None:
        _check_delta(active)
        return active
    # Python workers must run the interpreter (and venv) of the driver, locally and in the cluster test.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.appName(cfg.spark.app_name)
        .master(cfg.spark.master)
        .config("spark.sql.extensions", _DELTA_EXTENSION)
        .config("spark.sql.catalog.spark_catalog", _DELTA_CATALOG)
        .config("spark.jars.packages", cfg.spark.delta_package)
    )
    for key, value in cfg.spark.conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    _check_delta(spark)
    return spark


def _check_delta(spark: SparkSession) -> None:
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if _DELTA_EXTENSION not in extensions:
        raise RuntimeError(
            "the active SparkSession has no Delta extension: start it with spark_jobs.session.get_spark(cfg) "
            f"or pass --conf spark.sql.extensions={_DELTA_EXTENSION} and --packages io.delta:delta-spark_2.13:4.0.1"
        )
