"""Spark's Delta tables on a real S3-API server (SeaweedFS, not a mock) through `s3a://`, chosen by config alone, and
two Spark drivers that never overwrite each other's commit (each commit holds the table's lease).

The drivers are two separate processes (tests.support.spark_s3_driver), each with its own small SparkSession
(`local[1]`, 1g) built by `spark_jobs.session.get_spark` from a config whose lakehouse is `s3://<bucket>/...`:
the session-wide `spark` fixture knows no S3, and jars cannot be added to a running JVM. Both start once for the
module (about 15-30 s each, in parallel). What they write is read back independently with delta-rs (`s3://`)."""
from __future__ import annotations

import datetime as dt
import json
import os
import signal
import time

import pytest
from deltalake import DeltaTable

from lakehouse.delta_io import TableLeases
from lfm.config import config_from_dict
from lfm.storage import StorageKind, location
from spark_jobs.session import needs_s3, packages, s3a_conf
from tests.support.spark_s3_driver import DriverProcess

LAKEHOUSE = "spark-lakehouse"
ROUNDS = 6  # per driver, in test (b)


@pytest.fixture(scope="module")
def drivers(s3_server, tmp_path_factory):
    """Two driver processes over the server's bucket; their JVMs start side by side."""
    env = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    logs = tmp_path_factory.mktemp("spark-s3-drivers")
    started = [DriverProcess.start(name, s3_server.uri(LAKEHOUSE), s3_server.endpoint_url, env, logs)
               for name in ("a", "b")]
    try:
        for driver in started:
            ready = driver.wait_ready()
            assert "ready" in ready, ready
        yield started
    finally:
        for driver in started:
            driver.stop()


def table(s3_server, name: str) -> str:
    return s3_server.uri(f"{LAKEHOUSE}/{name}")  # as the config spells it: s3://, made s3a:// for Spark


def rows(day: str, driver: str, *ns: int) -> list[dict]:
    return [{"ds": day, "driver": driver, "n": n} for n in ns]


def delta_rs(s3_server, path: str, version: int | None = None) -> DeltaTable:
    return DeltaTable(path, version=version, storage_options=s3_server.storage_options())


def as_lists(dtable: DeltaTable) -> list[list]:
    return sorted([r["ds"].isoformat(), r["driver"], r["n"]] for r in dtable.to_pyarrow_table().to_pylist())


def lease_exists(s3_server, name: str) -> bool:
    status, _ = s3_server.get_object(f"{LAKEHOUSE}/_locks/table-{name}.lease")
    return status == 200


def s3_config(**storage):
    return config_from_dict({"lakehouse": "s3://bucket/lfm", "storage": storage}, "<test>", ".")


def test_an_s3_lakehouse_adds_the_s3a_connector_and_its_settings_by_config_alone():
    local = config_from_dict({}, "<test>", ".")
    assert not needs_s3(local) and packages(local) == "io.delta:delta-spark_2.13:4.0.1"
    cfg = s3_config(endpoint="http://127.0.0.1:9000", allow_http=True, region="eu-west-1")
    assert needs_s3(cfg)
    assert packages(cfg) == "io.delta:delta-spark_2.13:4.0.1,org.apache.hadoop:hadoop-aws:3.4.1"
    conf = s3a_conf(cfg.storage)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "eu-west-1"
    assert conf["spark.hadoop.fs.s3a.path.style.access"] == "true"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert not any("secret" in k or "access.key" in k for k in conf)  # credentials: the AWS default chain only
    aws = s3a_conf(s3_config(virtual_hosted_style=True).storage)
    assert "spark.hadoop.fs.s3a.endpoint" not in aws and aws["spark.hadoop.fs.s3a.path.style.access"] == "false"
    assert aws["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "true"
    assert location(cfg.table_path("ur")).for_spark() == "s3a://bucket/lfm/ur"


def test_a_table_lease_lives_under_the_lakehouse_locks():
    leases = TableLeases(s3_config(), "run-1")
    folder, key = leases.place("s3a://bucket/lfm/ur")  # either spelling of the same table
    assert (folder.uri, key) == ("s3://bucket/lfm/_locks", "table-ur.lease")
    assert leases.place("s3://bucket/lfm/ur/") == (folder, key)
    elsewhere, key = leases.place("s3://other/tables/ur")  # outside the lakehouse: beside the table
    assert (elsewhere.uri, elsewhere.kind, key) == ("s3://other/tables/_locks", StorageKind.s3, "table-ur.lease")


def test_replace_partitions_on_s3a_reads_back_pinned_and_delta_rs_agrees(drivers, s3_server):
    a, _ = drivers
    path = table(s3_server, "ur")
    assert a.call("exists", table=path) == {"exists": False, "version": None}
    assert a.call("replace", table=path, days=["2022-05-02"], rows=rows("2022-05-02", "a", 1, 2), meta={"step": 1}) == 0
    assert a.call("replace", table=path, days=["2022-05-03"], rows=rows("2022-05-03", "a", 3), meta={"step": 2}) == 1
    # the day re-run: its partition replaced, never duplicated
    assert a.call("replace", table=path, days=["2022-05-02"], rows=rows("2022-05-02", "a", 9), meta={"step": 3}) == 2
    v1 = [["2022-05-02", "a", 1], ["2022-05-02", "a", 2], ["2022-05-03", "a", 3]]
    latest = [["2022-05-02", "a", 9], ["2022-05-03", "a", 3]]
    assert a.call("read", table=path, version=1) == v1  # pinned to a version (time travel through s3a)
    assert a.call("read", table=path) == latest
    assert a.call("dates", table=path, version=0) == ["2022-05-02"]
    assert [(c["version"], c["userMetadata"]) for c in a.call("history", table=path)] == \
        [(2, {"step": 3}), (1, {"step": 2}), (0, {"step": 1})]
    # the driver's log reads (delta-rs with the store's options) answer what a Spark snapshot answers
    for op, args in (("exists", {}), ("history", {}), ("dates", {"version": 0}), ("dates", {})):
        assert a.call(op, table=path, **args) == a.call(op, table=path, reader="spark", **args), op
    assert a.call("day_stats", table=path, version=2, day="2022-05-02") == [1, 9]  # rows and max from the stats
    assert a.call("day_stats", table=path, version=2, day="2022-05-02", reader="spark") is None  # Spark: none
    # independent evidence: delta-rs reads the same table through s3:// at the same versions
    assert as_lists(delta_rs(s3_server, path, 1)) == v1 and as_lists(delta_rs(s3_server, path)) == latest
    assert delta_rs(s3_server, path).version() == 2
    # roll the day back to version 1 (restore_partitions: a time-travel read, then a leased replace)
    assert a.call("restore", table=path, days=["2022-05-02"], version_before=1, meta={"step": 4}) == 3
    assert as_lists(delta_rs(s3_server, path)) == v1
    assert not lease_exists(s3_server, "ur")  # every commit released the table's lease
    assert a.call("session") is True  # get_spark reuses a running session that has the S3A connector


def test_a_write_to_an_s3_table_without_its_lease_is_refused(drivers, s3_server):
    a, _ = drivers
    path = table(s3_server, "unleased")
    a.send("replace", table=path, days=["2022-05-02"], rows=rows("2022-05-02", "a", 1), no_leases=True)
    got = a.answer()
    assert got.get("error") == "LfmError" and "must hold the table's lease" in got["message"], got
    assert a.call("exists", table=path)["exists"] is False


def test_two_drivers_committing_at_once_lose_no_commit(drivers, s3_server):
    a, b = drivers
    path = table(s3_server, "race")
    day = {"a": dt.date(2022, 1, 1), "b": dt.date(2022, 3, 1)}  # two run-daily of different days, say
    versions: dict[int, tuple[str, int]] = {}
    started = time.monotonic()
    for rnd in range(ROUNDS):
        for d in (a, b):  # both commands sent before either answer is read: the commits race
            ds = (day[d.name] + dt.timedelta(days=rnd)).isoformat()
            d.send("replace", table=path, days=[ds], rows=rows(ds, d.name, rnd, 100 + rnd),
                   meta={"driver": d.name, "round": rnd}, run_id=f"driver-{d.name}")
        for d in (a, b):
            got = d.answer()
            assert "ok" in got, (d.name, rnd, got)
            assert got["ok"] not in versions, f"version {got['ok']} reported by two commits"
            versions[got["ok"]] = (d.name, rnd)
    elapsed = time.monotonic() - started
    assert sorted(versions) == list(range(2 * ROUNDS))
    final = delta_rs(s3_server, path)
    assert final.version() == 2 * ROUNDS - 1
    want = sorted([(day[n] + dt.timedelta(days=r)).isoformat(), n, m]
                  for n in ("a", "b") for r in range(ROUNDS) for m in (r, 100 + r))
    assert as_lists(final) == want  # every row of every commit: none overwritten
    history = [c for c in final.history() if c.get("operation") == "WRITE"]
    metas = sorted((json.loads(c["userMetadata"])["driver"], json.loads(c["userMetadata"])["round"])
                   for c in history)
    assert metas == sorted((n, r) for n in ("a", "b") for r in range(ROUNDS))  # each commit once
    for v, (name, rnd) in versions.items():  # each version is the commit its driver reported
        meta = json.loads(next(c for c in history if c["version"] == v)["userMetadata"])
        assert (meta["driver"], meta["round"]) == (name, rnd)
    assert not lease_exists(s3_server, "race")
    print(f"{2 * ROUNDS} racing commits in {elapsed:.1f}s")


def test_a_driver_whose_table_lease_was_taken_over_does_not_commit(drivers, s3_server):
    a, b = drivers
    path = table(s3_server, "fenced")
    assert a.call("replace", table=path, days=["2022-05-01"], rows=rows("2022-05-01", "a", 0)) == 0
    assert a.call("pause_before_fence") is True
    a.send("replace", table=path, days=["2022-05-02"], rows=rows("2022-05-02", "a", 1), lease_seconds=4,
           run_id="paused-driver")
    assert a.answer() == {"paused": "table-fenced.lease"}  # a holds the lease, about to check its fence
    os.kill(a.proc.pid, signal.SIGSTOP)  # a GC pause, a suspended VM: no renewals (its JVM goes on, idle)
    try:
        # b waits for the lease, takes it over once a's expired, and commits
        assert b.call("replace", table=path, days=["2022-05-03"], rows=rows("2022-05-03", "b", 3),
                      run_id="next-driver") == 1
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    a.proc.stdin.write("go\n")
    a.proc.stdin.flush()
    got = a.answer()
    assert got.get("error") == "LeaseLost" and "must not commit" in got["message"], got
    final = delta_rs(s3_server, path)
    assert final.version() == 1
    assert as_lists(final) == [["2022-05-01", "a", 0], ["2022-05-03", "b", 3]]  # a's day never committed
    # a rerun of the refused write takes the (free) lease anew and commits
    assert a.call("replace", table=path, days=["2022-05-02"], rows=rows("2022-05-02", "a", 1)) == 2
    assert as_lists(delta_rs(s3_server, path))[1] == ["2022-05-02", "a", 1]
    assert not lease_exists(s3_server, "fenced")


def test_a_running_session_without_the_s3a_connector_is_refused_for_an_s3_config(spark):
    from lfm.errors import LfmError
    from spark_jobs.session import get_spark

    assert get_spark(config_from_dict({}, "<test>", ".")) is spark  # a local config: reused as always
    with pytest.raises(LfmError, match="started without the S3A connector"):
        get_spark(s3_config(endpoint="http://127.0.0.1:9", allow_http=True))
