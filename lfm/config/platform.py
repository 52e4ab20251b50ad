"""Where things live and how Spark runs: lakehouse, Spark, model registry."""
from __future__ import annotations

from pydantic import Field

from lfm.config.schema import Strict


class SparkSettings(Strict):
    """Spark settings; change `master` (spark://, k8s://, yarn) to run the same jobs on a cluster."""

    master: str = "local[*]"
    app_name: str = "lfm-export"
    # Where the JVM's own output goes (Ivy's dependency resolution on first start, Spark's warnings), so a run
    # shows the platform's progress; relative to the config's folder. Empty: the terminal.
    log_file: str = "./data/logs/spark.log"
    delta_package: str = "io.delta:delta-spark_2.13:4.0.1"  # resolved from Maven Central on first start
    conf: dict[str, str] = Field(default_factory=lambda: {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": "4",
        "spark.default.parallelism": "2",
        "spark.driver.memory": "4g",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        # no call-site capture (two py4j calls and a stack walk) for every column function a job builds
        "spark.python.sql.dataFrameDebugging.enabled": "false",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.sql.sources.partitionOverwriteMode": "dynamic",
    })


class RegistrySettings(Strict):
    """The model registry: one folder per model version (weights, config, vocabularies, metrics)."""

    path: str = "./data/model_registry"
