"""The cluster path: a Spark standalone master + worker started from the pyspark installation on loopback, the
backfill submitted with `spark-submit cli/submit.py`, the tables checked from the test's own session."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyspark
import pytest
import yaml

from tests.support.config import REPO, TEST_JAVA_OPTIONS
from tests.support.worlds import D1, D2, SMALL_MODEL, SMALL_TRAIN, reference_states

pytestmark = pytest.mark.slow

SPARK_HOME = Path(pyspark.__file__).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(log: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not in {log} after {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """Stop a daemon and everything it started (executors, Python workers): its own process group."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def standalone(tmp_path):
    """A master and a one-worker cluster (2 cores, 2 GiB) on 127.0.0.1; torn down with all its processes."""
    env = {**os.environ, "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
           "SPARK_LOG_DIR": str(tmp_path / "logs"), "PYSPARK_PYTHON": sys.executable,
           "SPARK_DAEMON_JAVA_OPTS": TEST_JAVA_OPTIONS}
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port = _free_port()
    url = f"spark://127.0.0.1:{port}"
    procs = []
    try:
        mlog = tmp_path / "master.log"
        master = subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(_free_port())],
            stdout=mlog.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
        procs.append(master)
        _wait_for(mlog, "I have been elected leader", master, 90)
        wlog = tmp_path / "worker.log"
        worker = subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.worker.Worker", url, "--host", "127.0.0.1", "--cores", "2",
             "--memory", "2g", "--webui-port", str(_free_port()), "--work-dir", str(tmp_path / "work")],
            stdout=wlog.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
        procs.append(worker)
        _wait_for(wlog, "Successfully registered with master", worker, 90)
        yield url, env
    finally:
        for p in reversed(procs):
            _stop(p)


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
