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
    # Spark's S3A connector, added beside Delta only when a path of the config is on an S3-API store: the
    # hadoop-aws of the Hadoop pyspark 4.0.1 ships (hadoop-client-api-3.4.1). It pulls in the AWS SDK v2 bundle
    # (software.amazon.awssdk:bundle:2.24.6, 558 MB), resolved once into ~/.ivy2.5.2 like the Delta jars.
    s3_packages: str = "org.apache.hadoop:hadoop-aws:3.4.1"
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


class StorageSettings(Strict):
    """How the platform reaches the object store its URIs name (`s3://` / `s3a://`: the lakehouse, the record
    tables, leases). Credentials never live here: the standard AWS variables (AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE) or files (~/.aws/credentials) supply them."""

    endpoint: str | None = None  # an S3-API server other than AWS (MinIO, SeaweedFS, Ceph): http(s)://host:port
    region: str = "us-east-1"
    allow_http: bool = False  # true only for a plain-http endpoint (a server on loopback)
    virtual_hosted_style: bool = False  # bucket in the host name (AWS's default); path style suits MinIO, Ceph
    # A lease (day, export, table) held on the object store lasts this long unless renewed (every third of it);
    # a holder killed without releasing it blocks others at most this long.
    lease_seconds: float = Field(120.0, ge=3.0)

    def object_store_options(self) -> dict[str, str]:
        """Options of delta-rs and obstore (both Rust `object_store`): commits and leases use conditional writes
        (`If-None-Match` / `If-Match` on the ETag), so concurrent writers need no DynamoDB."""
        out = {"aws_region": self.region, "aws_conditional_put": "etag",
               "aws_virtual_hosted_style_request": str(self.virtual_hosted_style).lower()}
        if self.endpoint:
            out["aws_endpoint"] = self.endpoint
        if self.allow_http:
            out["aws_allow_http"] = "true"
        return out
