"""The one SparkSession factory: every job, test, Feast's offline store and GE use this Delta-enabled session.

Under `spark-submit` the master, packages and conf that spark-submit passed win over the config's (only settings
spark-submit left unset are taken from `lfm.yaml`); an already active session is reused after checking that Delta
is enabled. So the same job code runs locally and on a cluster.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from pyspark import SparkConf
from pyspark.sql import SparkSession

from lfm.config import LfmConfig
from lfm.errors import LfmError

log = logging.getLogger(__name__)
DELTA = {"spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
         "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog"}


def get_spark(cfg: LfmConfig) -> SparkSession:
    """Return the active Delta-enabled SparkSession, creating it from `cfg.spark` if there is none."""
    active = SparkSession.getActiveSession()
    if active is not None:
        _check_delta(active)
        return active
    # Python workers must run the interpreter (and venv) of the driver, locally and in the cluster test.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    given = SparkConf()  # what spark-submit passed (empty when run directly)
    wanted = {"spark.app.name": cfg.spark.app_name, **cfg.spark.conf}
    if not _under_spark_submit():
        # spark-submit's JVM is reached only when the context starts, so `given` cannot show its master or
        # packages yet: under spark-submit they are left to it entirely.
        wanted["spark.master"] = cfg.spark.master
        if not given.contains("spark.jars"):
            wanted["spark.jars.packages"] = cfg.spark.delta_package
    builder = SparkSession.builder
    for key, value in wanted.items():
        if not given.contains(key):
            builder = builder.config(key, value)
    for key, value in DELTA.items():
        builder = builder.config(key, value)
    log_file = cfg.spark.log_file
    target = cfg.resolve(log_file) if log_file and cfg.location(log_file).local else None
    with _jvm_output_to(target):
        spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    _check_delta(spark)
    if target is not None:
        log.info("Spark started (%s); the JVM's own output goes to %s", spark.sparkContext.master, target)
    return spark


def _under_spark_submit() -> bool:
    """spark-submit starts the JVM first and hands this process its gateway port (as pyspark's launcher reads it)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


@contextlib.contextmanager
def _jvm_output_to(path: Path | None) -> Iterator[None]:
    """Point file descriptors 1 and 2 at `path` while the JVM starts: it inherits them for its whole life (Ivy's
    resolution chatter, log4j warnings), while this process gets its own terminal back at once."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "ab") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
    try:
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)


def _check_delta(spark: SparkSession) -> None:
    extensions = spark.conf.get("spark.sql.extensions", "") or ""
    if DELTA["spark.sql.extensions"] not in extensions:
        raise LfmError(
            "the active SparkSession has no Delta extension: start it with spark_jobs.session.get_spark(cfg) "
            f"or pass --conf spark.sql.extensions={DELTA['spark.sql.extensions']} and --packages "
            "io.delta:delta-spark_2.13:4.0.1")
