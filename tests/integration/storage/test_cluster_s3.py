"""The platform where its users run it: the lakehouse, the record tables, the model registry and the raw sources on
an S3-API object store (SeaweedFS, a real server), Spark on a standalone master with 2 workers that share no disk
with the driver (each worker has its own empty work dir, HOME and scratch folder), the online store in Redis.

The driver is `lfm` itself, started as its own process with a config that names all of this (nothing else changes):
`run-daily` of two days (ingest from the object store, refresh on the executors, the quality gate, publish,
materialize into Redis), then a training set, an online lookup and `lfm retrieve` read them back. Faults on the way:
a worker SIGKILLed during day 1's refresh, the driver SIGKILLed at day 2's publish; each day ends with exactly one
complete release, checked against the tables read independently with delta-rs from the object store.
"""
from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from deltalake import DeltaTable

from lfm.config import config_from_dict, load_config
from tests.support.cluster import start_standalone
from tests.support.config import TEST_JAVA_OPTIONS, TEST_SPARK_CONF
from tests.support.releases import QUALITY
from tests.support.worlds import D1, D2, SMALL_MODEL, SMALL_TRAIN

pytestmark = pytest.mark.slow

PREFIX = "cluster"  # everything of this test under s3://<bucket>/cluster/
LEASE_SECONDS = 6  # a killed driver's day lease frees itself this fast (the default is 120 s)
STEP_TIMEOUT = 900


@pytest.fixture(scope="module")
def cluster(s3_server, tmp_path_factory):
    """2 workers, 2 cores and 1 GiB executors each; their environment has the S3 credentials and nothing else of
    the driver's (the AWS variables stand for the instance role a real cluster would have)."""
    root = tmp_path_factory.mktemp("cluster")
    creds = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    started = start_standalone(root, workers=2, cores=2, memory="1500m", env=creds)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(scope="module")
def site(s3_server, redis_server, cluster, world, tmp_path_factory):
    """The driver's folder and config: lakehouse, registry and raw files on S3 (the quality gate's working folder
    in the driver's own folder); the raw files and model A uploaded to the store first."""
    import obstore
    from obstore.store import from_url

    from models.registry import Registry, load_checkpoint

    driver = tmp_path_factory.mktemp("driver")
    storage = {"endpoint": s3_server.endpoint_url, "allow_http": True, "lease_seconds": LEASE_SECONDS}
    conf = {**TEST_SPARK_CONF, "spark.executor.memory": "1g", "spark.driver.memory": "1g",
            "spark.executor.extraJavaOptions": TEST_JAVA_OPTIONS, "spark.task.maxFailures": "4",
            "spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "4"}
    data = {"lakehouse": s3_server.uri(f"{PREFIX}/lake"), "registry": {"path": s3_server.uri(f"{PREFIX}/models")},
            "storage": storage, "spark": {"master": cluster.url, "conf": conf, "log_file": "./spark.log"},
            "model": SMALL_MODEL, "train": SMALL_TRAIN, "quality": QUALITY,
            "feast": {"online_store": "redis", "redis_connection": redis_server.connection}}
    cfg_file = driver / "lfm.yaml"
    cfg_file.write_text(yaml.safe_dump(data))
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")}, "XDG_CACHE_HOME": str(driver / "cache"),
           "AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    os.environ.update(env)  # this process reads the store too (delta-rs, the registry), as the driver does

    store = from_url(s3_server.uri(f"{PREFIX}/raw"), config={"aws_endpoint": s3_server.endpoint_url,
                                                             "aws_region": "us-east-1"},
                     client_options={"allow_http": True})
    for f in sorted((world.root / "src").iterdir()):
        obstore.put(store, f.name, f.read_bytes())
    cfg = load_config(cfg_file)
    local = config_from_dict({"registry": {"path": str(world.registry)}}, "<test>", str(world.root))
    ck = load_checkpoint(Registry(local).path(world.model_a), local.schema)
    card = Registry(cfg).register(ck.model, ck.encoders, {"copied_from": "the local registry"})
    assert card.model_version == world.model_a  # content-addressed: the same model, the same version
    return cfg_file, cfg, env, card


def lfm(site, *args: str, timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess:
    cfg_file, _, env, _ = site
    return subprocess.run([sys.executable, "-m", "cli.main", "--config", str(cfg_file), *args], env=env,
                          cwd=cfg_file.parent, capture_output=True, text=True, timeout=timeout)


def run_daily(site, day: dt.date, *extra: str) -> list[str]:
    _, cfg, _, card = site
    return [sys.executable, "-m", "cli.main", "-v", "--config", str(site[0]), "run-daily", "--ds", str(day),
            "--source", cfg.location(cfg.lakehouse).uri.rsplit("/", 1)[0] + "/raw", "--model", card.model_version,
            "--layer", list(card.cr_points)[-1], *extra]


def run_until(command: list[str], env: dict, cwd: Path, out: Path, when, then) -> subprocess.Popen:
    """Start `command` in its own process group; call `then(proc)` once `when(output so far)` is true."""
    with out.open("w") as fh:
        proc = subprocess.Popen(command, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + STEP_TIMEOUT
    while proc.poll() is None and time.monotonic() < deadline:
        if when(out.read_text(errors="replace")):
            then(proc)
            break
        time.sleep(0.05)
    try:
        proc.wait(timeout=STEP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    return proc


def delta_rs(s3_server, table: str, version: int | None = None) -> DeltaTable:
    return DeltaTable(s3_server.uri(f"{PREFIX}/lake/{table}"), version=version,
                      storage_options=s3_server.storage_options())


def releases_of(s3_server, day: dt.date) -> list[dict]:
    rows = delta_rs(s3_server, "releases").to_pyarrow_table().to_pylist()
    return [r for r in rows if r["ds"] == day]


def assert_one_complete_release(s3_server, day: dt.date, model: str) -> dict:
    """Exactly one release of `day`, naming every export table at a version that holds the day's rows of `model`
    (read with delta-rs from the store, not through the platform)."""
    mine = [r for r in releases_of(s3_server, day) if r["status"] == "released"]
    assert len(mine) == 1, mine
    versions = dict(mine[0]["table_versions"])
    assert set(versions) == {"ur", "ir", "cr_user", "cr_item", "cr_user_state", "cr_item_state"}
    for table, version in versions.items():
        rows = delta_rs(s3_server, table, version).to_pyarrow_table(
            filters=[("ds", "=", day), ("model_version", "=", model)])
        assert rows.num_rows > 0, (table, version)
    return versions


def test_run_daily_on_a_two_worker_cluster_against_s3(site, cluster, s3_server, tmp_path):
    cfg_file, cfg, env, card = site
    driver = cfg_file.parent

    # Day 1 (cold start): a worker and its executor SIGKILLed once the refresh runs on the executors.
    def kill_a_worker(proc):
        time.sleep(2)  # the refresh's first tasks are on the executors by now
        stop_group_hard(cluster.procs[1])

    out1 = tmp_path / "day1.log"
    proc = run_until(run_daily(site, D1, "--cold-start"), env, driver, out1,
                     lambda text: "step=refresh started" in text, kill_a_worker)
    text = out1.read_text(errors="replace")
    if proc.returncode != 0:  # failed cleanly: a message, no traceback; the rerun finishes the day
        assert "Traceback" not in text and "error" in text, text[-3000:]
        rerun = subprocess.run(run_daily(site, D1, "--cold-start"), env=env, cwd=driver, capture_output=True,
                               text=True, timeout=STEP_TIMEOUT)
        assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert_one_complete_release(s3_server, D1, card.model_version)

    # Day 2, first run: the driver paused (SIGSTOP: a GC pause, a suspended VM) as publish starts, past its leases'
    # expiry; another run takes the day's and the export's leases over; the driver wakes and must not publish.
    out2 = tmp_path / "day2-paused.log"
    takers = []

    def pause_past_the_leases(proc):
        os.killpg(proc.pid, signal.SIGSTOP)
        try:
            time.sleep(LEASE_SECONDS + 1)
            takers.extend(take_over(cfg, [f"daily-{D2}.lease", f"export-{D2}.lease"]))
        finally:
            os.killpg(proc.pid, signal.SIGCONT)

    proc = run_until(run_daily(site, D2), env, driver, out2, lambda text: "step=publish started" in text,
                     pause_past_the_leases)
    text = out2.read_text(errors="replace")
    assert proc.returncode > 0 and "Traceback" not in text, text[-3000:]  # failed with a message, not killed
    assert "taken over" in text or "already running" in text, text[-3000:]
    assert not [r for r in releases_of(s3_server, D2) if r["status"] == "released"]
    for lease in takers:
        lease.release()

    # Day 2, second run: the driver SIGKILLed as publish starts; the rerun (once the dead run's day lease expired)
    # resumes and releases the day once.
    out3 = tmp_path / "day2-killed.log"
    proc = run_until(run_daily(site, D2), env, driver, out3, lambda text: "step=publish started" in text,
                     lambda p: os.killpg(p.pid, signal.SIGKILL))
    assert proc.returncode == -signal.SIGKILL, out3.read_text()[-3000:]
    time.sleep(LEASE_SECONDS + 1)
    rerun = subprocess.run(run_daily(site, D2), env=env, cwd=driver, capture_output=True, text=True,
                           timeout=STEP_TIMEOUT)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    versions = assert_one_complete_release(s3_server, D2, card.model_version)

    # Read back: an online lookup equals the released rows; a training set; top-K retrieval.
    from serving.online import OnlineReader

    cr_user = delta_rs(s3_server, "cr_user", versions["cr_user"]).to_pyarrow_table(
        filters=[("ds", "=", D2), ("model_version", "=", card.model_version)]).to_pylist()
    user = cr_user[0]
    reader = OnlineReader(cfg, card.model_version)
    try:
        got = reader.user_vectors([user["user_id"]])
    finally:
        reader.close()
    np.testing.assert_allclose(np.asarray(got.vectors["cr_user"][0]), np.asarray(user["cr_user"]), rtol=1e-6)

    entities = driver / "entities.parquet"
    pd.DataFrame({"user_id": [r["user_id"] for r in cr_user[:5]], "video_id": [1] * 5,
                  "event_timestamp": pd.Timestamp(f"{D2 + dt.timedelta(days=1)} 12:00", tz="UTC"),
                  "label": [1, 0, 1, 0, 1]}).to_parquet(entities, coerce_timestamps="us")
    ts = lfm(site, "training-set", "--entities", str(entities), "--out", str(driver / "ts"),
             "--model", card.model_version)
    assert ts.returncode == 0, ts.stdout[-3000:] + ts.stderr[-3000:]
    frame = pd.read_parquet(driver / "ts")
    assert len(frame) == 5 and frame.filter(like="cr_user").notna().all().all(), frame

    export_id = releases_of(s3_server, D2)[-1]["export_id"]
    for key in (f"_serving/ann/{export_id}/{D2}/meta.json", f"_serving/online/{export_id}/{D2}.json",
                "_quality/gx/uncommitted/data_docs/local_site/index.html"):
        status, _ = s3_server.get_object(f"{PREFIX}/lake/{key}")
        assert status == 200, key  # the ANN index, the online receipt and the Data Docs are on the store

    top = lfm(site, "retrieve", "--user", str(user["user_id"]), "--k", "3", "--model", card.model_version)
    assert top.returncode == 0, top.stderr[-3000:]
    assert top.stdout.count('"item"') == 3, top.stdout


def take_over(cfg, keys: list[str]) -> list:
    """Take the leases `keys` under `<lakehouse>/_locks` as another run would once they expired."""
    from lakehouse.leases import Lease, holder_text
    from lakehouse.objects import Objects

    store = Objects(cfg, cfg.location(cfg.lakehouse).child("_locks"))
    return [Lease(store, key, holder_text("the run that took over"), LEASE_SECONDS).acquire() for key in keys]


def stop_group_hard(proc: subprocess.Popen) -> None:
    """SIGKILL a worker daemon and everything it started (its executor and Python workers)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)

