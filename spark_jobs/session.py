"""The one SparkSession factory: every job, test, Feast's offline store and GE use this Delta-enabled session.

Under `spark-submit` the master, packages and conf that spark-submit passed win over the config's (only settings
spark-submit left unset are taken from `lfm.yaml`); an already active session is reused after checking that Delta
is enabled. So the same job code runs locally and on a cluster.

A config with a path on an S3-API store (`lfm.storage.location(path).kind == StorageKind.s3`: the lakehouse, a
source) also gets Spark's S3A connector (`spark.s3_packages`, beside Delta) and the S3A settings of `storage:`
(endpoint, region, path-style access, plain http); credentials come from the AWS SDK's default chain (the standard
AWS variables, ~/.aws files, instance roles), never from `lfm.yaml`. Spark reads such a path as `s3a://`
(`Location.for_spark()`). A config on local disk starts exactly the session it always did.
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
from lfm.config.platform import StorageSettings
from lfm.errors import LfmError
from lfm.storage import StorageKind

log = logging.getLogger(__name__)
DELTA = {"spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
         "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog"}


def get_spark(cfg: LfmConfig) -> SparkSession:
    """Return the active Delta-enabled SparkSession, creating it from `cfg.spark` if there is none."""
    active = SparkSession.getActiveSession()
    s3 = needs_s3(cfg)
    if active is not None:
        _check_delta(active)
        if s3:
            _check_s3a(active, cfg)
        return active
    # Python workers must run the interpreter (and venv) of the driver, locally and in the cluster test.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    given = SparkConf()  # what spark-submit passed (empty when run directly)
    # the config's own conf wins over the S3A settings derived from `storage:` (e.g. another credentials provider)
    wanted = {"spark.app.name": cfg.spark.app_name, **(s3a_conf(cfg.storage) if s3 else {}), **cfg.spark.conf}
    if not _under_spark_submit():
        # spark-submit's JVM is reached only when the context starts, so `given` cannot show its master or
        # packages yet: under spark-submit they are left to it entirely.
        wanted["spark.master"] = cfg.spark.master
        if not given.contains("spark.jars"):
            wanted["spark.jars.packages"] = packages(cfg)
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


def needs_s3(cfg: LfmConfig) -> bool:
    """True when a path of the config (the lakehouse, the sources' root or a source) is on an S3-API store."""
    paths = [cfg.lakehouse, cfg.sources.root, *(source.path for _, source in cfg.sources.declared())]
    return any(cfg.location(p).kind == StorageKind.s3 for p in paths if p)


def packages(cfg: LfmConfig) -> str:
    """`spark.jars.packages`: Delta, plus the S3A connector when the config reaches an S3-API store."""
    wanted = [cfg.spark.delta_package] + ([cfg.spark.s3_packages] if needs_s3(cfg) else [])
    return ",".join(p.strip() for p in wanted if p and p.strip())


# The AWS SDK v2's default chain: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY(/AWS_SESSION_TOKEN), AWS_PROFILE and the
# ~/.aws files, web identity, container and instance roles (the chain delta-rs and obstore follow too).
DEFAULT_CREDENTIALS = "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider"


def s3a_conf(storage: StorageSettings) -> dict[str, str]:
    """The S3A connector's settings (`spark.hadoop.fs.s3a.*`) for the store `storage:` names; no credentials."""
    conf = {
        "spark.hadoop.fs.s3a.endpoint.region": storage.region,
        "spark.hadoop.fs.s3a.path.style.access": str(not storage.virtual_hosted_style).lower(),
        "spark.hadoop.fs.s3a.connection.ssl.enabled": str(not storage.allow_http).lower(),
        "spark.hadoop.fs.s3a.aws.credentials.provider": DEFAULT_CREDENTIALS,
    }
    if storage.endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = storage.endpoint
    return conf


def _check_s3a(spark: SparkSession, cfg: LfmConfig) -> None:
    """An already running session must have been started with the S3A connector (jars cannot be added later);
    read from its conf (public API): `spark.jars.packages` or `spark.jars` naming hadoop-aws."""
    conf = spark.sparkContext.getConf()
    named = ",".join(conf.get(key, "") or "" for key in ("spark.jars.packages", "spark.jars"))
    if "hadoop-aws" not in named:
        raise LfmError(
            "the config names an S3 object store but the active SparkSession was started without the S3A "
            "connector: start Spark with spark_jobs.session.get_spark(cfg) before any other session, or pass "
            f"--packages {cfg.spark.s3_packages} (and the fs.s3a.* settings) to spark-submit")


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
