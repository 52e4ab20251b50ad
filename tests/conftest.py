"""Shared fixtures: one real Delta-enabled SparkSession per test session, configs over temporary lakehouses."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from lfm.config import LfmConfig
from tests.support.config import make_config

# The longest test files, started first so that a parallel run (`scripts/test.sh`: two processes, whole files)
# does not end with one of them running alone. test_feast_serving comes second because it does not use the shared
# `world`: it runs beside test_releases while that builds it (a file that needs the world there waits for it,
# measured: 1,870 s for the suite against 1,641-1,788 s).
LONGEST_FIRST = ("test_cluster_s3.py", "test_releases.py", "test_downstream_report.py", "test_feast_serving.py",
                 "test_refresh_jobs.py", "test_resume.py", "test_dagster.py", "test_quality_gate.py",
                 "test_whole_entities.py", "test_storage_faults.py", "test_daily.py", "test_refresh_cluster.py",
                 "test_kuairand_serving.py", "test_byod_pipeline.py", "test_spark_s3.py", "test_ingest.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: a file keeps its order


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from spark_jobs.session import get_spark

    cfg = make_config(tmp_path_factory.mktemp("spark"))
    session = get_spark(cfg)
    yield session
    session.stop()


@pytest.fixture(scope="module")
def compiled(spark):
    """The real KuaiRand log (228,329 events) runs its queries compiled, as the platform does: interpreted, the
    tests' mode for their tiny days (tests.support.config.TEST_SQL_CONF), its ingest took 155 s instead of 62."""
    from tests.support.config import TEST_SQL_CONF

    key = "spark.sql.codegen.factoryMode"
    spark.conf.set(key, "FALLBACK")  # Spark's default: compiled, interpreted where compiling fails
    yield
    spark.conf.set(key, TEST_SQL_CONF[key])


@pytest.fixture
def cfg(tmp_path) -> LfmConfig:
    return make_config(tmp_path)


@pytest.fixture(scope="session")
def synth_source(tmp_path_factory) -> Path:
    """A small synthetic data set in the KuaiRand layout, written once per session."""
    from spark_jobs.synth import SynthSpec, write_synthetic

    out = tmp_path_factory.mktemp("synth")
    write_synthetic(SynthSpec(users=300, items=120, days=4, events_per_day=1500, seed=7, start="2022-04-25"), out)
    return out


@pytest.fixture(scope="session")
def world(spark, synth_source, tmp_path_factory):
    """Ingested synthetic inputs and three tiny registered models (tests.support.worlds), built once for the whole
    run: under pytest-xdist the first worker that asks builds it in the run's shared temporary folder while the
    other waits (the tests only read it and copy its inputs into their own lakehouses)."""
    from tests.support.worlds import build_world

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    with open(base / "refresh_world.lock", "w") as lock:  # closing the file releases the lock
        fcntl.flock(lock, fcntl.LOCK_EX)
        return build_world(spark, synth_source, base)


def _for_the_module(start, missing: type[Exception], what: str):
    """A server started for one test module and stopped after it; skipped, naming why, when it cannot be had."""
    try:
        server = start()
    except missing as err:
        pytest.skip(f"{what} not tested: {err}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_server():
    """A real redis-server on a free loopback port for the module (tests.support.redis_local)."""
    from tests.support.redis_local import NoRedis, start_redis

    yield from _for_the_module(start_redis, NoRedis, "Redis online store")


@pytest.fixture(scope="module")
def s3_server():
    """A real S3-API server (SeaweedFS `weed server -s3`) on free loopback ports for the module, one bucket created
    (tests.support.s3_local; the binary is built by `bash scripts/seaweedfs.sh build`, which scripts/test.sh runs)."""
    from tests.support.s3_local import NoS3, start_s3

    yield from _for_the_module(start_s3, NoS3, "S3 object store")
