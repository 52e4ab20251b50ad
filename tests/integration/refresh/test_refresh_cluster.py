"""The cluster path: a Spark standalone master + worker started from the pyspark installation on loopback, the
backfill submitted with `spark-submit cli/submit.py`, the tables checked from the test's own session."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from tests.support.cluster import SPARK_HOME, start_standalone
from tests.support.config import REPO, TEST_JAVA_OPTIONS, TEST_SQL_CONF
from tests.support.worlds import D1, D2, SMALL_MODEL, SMALL_TRAIN, reference_states

pytestmark = pytest.mark.slow


@pytest.fixture
def standalone(tmp_path):
    """A master and a one-worker cluster (2 cores, 2 GiB) on 127.0.0.1; torn down with all its processes."""
    cluster = start_standalone(tmp_path, workers=1)
    try:
        yield cluster.url, cluster.env
    finally:
        cluster.stop()


def test_backfill_runs_unchanged_on_a_standalone_cluster(spark, world, tmp_path, standalone):
    from lakehouse.delta_io import commit_info

    url, env = standalone
    cfg = world.config("cluster")
    cfg_file = tmp_path / "lfm.yaml"
    cfg_file.write_text(yaml.safe_dump({
        "lakehouse": str(cfg.resolve(cfg.lakehouse)), "registry": {"path": str(world.registry)},
        "model": SMALL_MODEL, "train": SMALL_TRAIN, "quality": {"enabled": False}}))
    cmd = [str(SPARK_HOME / "bin" / "spark-submit"), "--master", url,
           "--packages", cfg.spark.delta_package,
           "--conf", f"spark.pyspark.python={sys.executable}",
           "--conf", "spark.driver.memory=1g", "--conf", "spark.executor.memory=1g",
           "--conf", "spark.cores.max=2", "--conf", "spark.ui.enabled=false",
           "--conf", f"spark.driver.extraJavaOptions={TEST_JAVA_OPTIONS}",
           "--conf", f"spark.executor.extraJavaOptions={TEST_JAVA_OPTIONS}",
           *[arg for key, value in TEST_SQL_CONF.items() for arg in ("--conf", f"{key}={value}")],
           str(REPO / "cli" / "submit.py"), "--config", str(cfg_file),
           "backfill", "--from", str(D1), "--to", str(D2), "--model", world.model_a, "--cold-start",
           "--run-id", "cluster-run"]
    out = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         start_new_session=True)
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower() or "Exception" in line]
    assert out.returncode == 0, out.stdout[-3000:] + "\n".join(errors[:30])
    assert f"master {url}" in out.stdout and "app-" in out.stdout  # a standalone application, not local[*]

    for table in ("ur", "ir", "cr_user", "cr_item", "cr_user_state", "cr_item_state"):
        df = spark.read.format("delta").load(cfg.table_path(table))
        assert {r["ds"] for r in df.select("ds").distinct().collect()} == {D1, D2}
        assert commit_info(spark, cfg.table_path(table))["userMetadata"]["run_id"] == "cluster-run"
    assert spark.read.format("delta").load(cfg.table_path("ur")).where(f"ds = DATE'{D2}'").count() == 301
    layer = spark.read.format("delta").load(cfg.table_path("cr_user")).select("cr_layer").first()[0]
    ref = reference_states(spark, cfg, world, layer)
    for day in (D1, D2):
        rows = spark.read.format("delta").load(cfg.table_path("cr_user_state")).where(f"ds = DATE'{day}'").collect()
        got = {r["user_id"]: np.asarray(r["state"]) for r in rows}
        keys, state = ref[day]
        assert sorted(got) == sorted(keys.tolist())
        np.testing.assert_allclose(np.stack([got[k] for k in keys.tolist()]), state, rtol=1e-4, atol=1e-6)
