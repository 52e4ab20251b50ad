"""What the platform will rely on from an S3-API object store, proved against a real one (SeaweedFS, tests/support/
s3_local.py; not a mock): conditional create, and delta-rs commits that never lose one another on it."""
from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import threading
import time
import uuid

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError
from deltalake.transaction import AddAction


def _key(prefix: str) -> str:
    return f"{prefix}/{uuid.uuid4().hex}"


def test_server_starts_quickly_and_checks_signatures(s3_server):
    assert s3_server.startup_s < 30, f"weed server took {s3_server.startup_s:.1f}s to accept a write"
    key = _key("auth")
    assert s3_server.put_object(key, b"signed")[0] == 200
    forged = type(s3_server)(s3_server.process, s3_server.port, s3_server.workdir, s3_server.access_key,
                             "not-the-secret", s3_server.bucket)
    status, body = forged.put_object(key, b"forged")
    assert status == 403, body
    assert s3_server.get_object(key) == (200, b"signed")


def test_second_put_if_none_match_is_refused(s3_server):
    """PutObject with `If-None-Match: *` creates a key once; a second one gets 412 PreconditionFailed and the first
    object stays (this is what delta-rs's commit relies on with AWS_CONDITIONAL_PUT=etag)."""
    key = _key("cond")
    assert s3_server.put_object(key, b"first", if_none_match=True)[0] == 200
    status, body = s3_server.put_object(key, b"second", if_none_match=True)
    assert status == 412, body
    assert b"PreconditionFailed" in body
    assert s3_server.get_object(key) == (200, b"first")
    # without the header the same PUT overwrites: the refusal above comes from the condition, not the key
    assert s3_server.put_object(key, b"third")[0] == 200
    assert s3_server.get_object(key) == (200, b"third")


def test_racing_conditional_puts_have_exactly_one_winner(s3_server):
    """Two threads PUT the same fresh key with `If-None-Match: *` at the same moment, 30 times: each time exactly
    one wins, and the key holds the winner's bytes."""
    rounds, writers = 30, 2
    barrier = threading.Barrier(writers)
    keys = [_key("race") for _ in range(rounds)]
    results: dict[tuple[int, int], int] = {}

    def writer(w: int) -> None:
        for r, key in enumerate(keys):
            barrier.wait()
            results[(w, r)] = s3_server.put_object(key, f"writer-{w}".encode(), if_none_match=True)[0]

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for r, key in enumerate(keys):
        statuses = [results[(w, r)] for w in range(writers)]
        winners = [w for w in range(writers) if statuses[w] == 200]
        assert len(winners) == 1, f"round {r}: statuses {statuses}"
        assert all(s in (412, 409) for w, s in enumerate(statuses) if w not in winners), statuses
        assert s3_server.get_object(key) == (200, f"writer-{winners[0]}".encode())


def _batch(writer: int, round_: int, rows: int = 5) -> pa.Table:
    return pa.table({"writer": pa.array([writer] * rows, pa.int32()), "round": pa.array([round_] * rows, pa.int32()),
                     "i": pa.array(range(rows), pa.int32())})


def test_delta_table_write_append_read(s3_server):
    uri = s3_server.uri(_key("delta"))
    opts = s3_server.storage_options()
    write_deltalake(uri, _batch(0, 0), storage_options=opts)
    write_deltalake(uri, _batch(0, 1), mode="append", storage_options=opts)
    table = DeltaTable(uri, storage_options=opts)
    assert table.version() == 1
    got = table.to_pyarrow_table().sort_by([("round", "ascending"), ("i", "ascending")])
    assert got.equals(pa.concat_tables([_batch(0, 0), _batch(0, 1)]))
    history = sorted(table.history(), key=lambda h: h["version"])
    assert [(h["version"], h["operation"]) for h in history] == [(0, "WRITE"), (1, "WRITE")]


def test_a_stale_delta_writer_loses_the_version_and_retries(s3_server):
    """Deterministic form of the race below: a writer whose snapshot is at version 0 commits after another writer took
    version 1. Its PUT of _delta_log/...01.json (If-None-Match: *) is refused, so version 1 is never overwritten: with
    no retries allowed the commit fails; with delta-rs's default retries it lands at version 2."""
    opts = s3_server.storage_options()
    for retries, expected_version in ((0, 1), (None, 2)):
        name = _key("delta-stale")
        uri = s3_server.uri(name)
        write_deltalake(uri, _batch(0, 0), storage_options=opts)
        stale = DeltaTable(uri, storage_options=opts)  # snapshot: version 0
        write_deltalake(uri, _batch(1, 0), mode="append", storage_options=opts)  # the other writer: version 1
        buf = io.BytesIO()
        pq.write_table(_batch(2, 0), buf)
        assert s3_server.put_object(f"{name}/stale-part.parquet", buf.getvalue())[0] == 200
        add = AddAction("stale-part.parquet", len(buf.getvalue()), {}, int(time.time() * 1000), True,
                        json.dumps({"numRecords": 5}))
        props = CommitProperties(max_commit_retries=retries) if retries is not None else None
        if retries == 0:
            with pytest.raises(CommitFailedError):
                stale.create_write_transaction([add], "append", _batch(2, 0).schema, commit_properties=props)
        else:
            stale.create_write_transaction([add], "append", _batch(2, 0).schema, commit_properties=props)
        table = DeltaTable(uri, storage_options=opts)
        assert table.version() == expected_version
        writers = sorted(set(table.to_pyarrow_table()["writer"].to_pylist()))
        assert writers == ([0, 1] if retries == 0 else [0, 1, 2])  # version 1 (writer 1) survives either way


def _assert_every_commit_once(uri: str, opts: dict, writers: int, rounds: int) -> int:
    """The table has version 0 (create) plus one version per append, each append's rows, and each append's commit
    exactly once. Returns how many appends delta-rs had to retry (it lost the race for a version: its conditional
    put was refused, and it committed at the next one)."""
    table = DeltaTable(uri, storage_options=opts)
    history = sorted(table.history(), key=lambda h: h["version"])
    assert table.version() == writers * rounds
    assert [h["version"] for h in history] == list(range(writers * rounds + 1))
    tags = [(int(h["writer"]), int(h["round"])) for h in history[1:]]
    assert sorted(tags) == [(w, r) for w in range(writers) for r in range(rounds)]
    got = table.to_pyarrow_table()
    assert got.num_rows == 5 * writers * rounds
    assert sorted(set(zip(got["writer"].to_pylist(), got["round"].to_pylist()))) == sorted(tags)
    return sum(int(h.get("operationMetrics", {}).get("num_retries", 0)) > 0 for h in history[1:])


def test_two_threads_appending_at_once_lose_no_commit(s3_server):
    uri, opts = s3_server.uri(_key("delta-threads")), s3_server.storage_options()
    write_deltalake(uri, _batch(0, 0).slice(0, 0), storage_options=opts)  # version 0: the empty table
    writers, rounds = 2, 20
    barrier, errors = threading.Barrier(writers), []

    def writer(w: int) -> None:
        try:
            for r in range(rounds):
                barrier.wait()
                write_deltalake(uri, _batch(w, r), mode="append", storage_options=opts,
                                commit_properties=CommitProperties(custom_metadata={"writer": str(w), "round": str(r)}))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    retried = _assert_every_commit_once(uri, opts, writers, rounds)
    print(f"threads: {retried} of {writers * rounds} appends committed after losing a race for a version")


WRITER = textwrap.dedent("""
    import json, sys, time
    import pyarrow as pa
    from deltalake import CommitProperties, write_deltalake
    uri, opts, w = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
    rounds, start = int(sys.argv[4]), float(sys.argv[5])
    time.sleep(max(0.0, start - time.time()))  # both processes start appending at the same moment
    for r in range(rounds):
        batch = pa.table({"writer": pa.array([w] * 5, pa.int32()), "round": pa.array([r] * 5, pa.int32()),
                          "i": pa.array(range(5), pa.int32())})
        write_deltalake(uri, batch, mode="append", storage_options=opts,
                        commit_properties=CommitProperties(custom_metadata={"writer": str(w), "round": str(r)}))
""")


def test_two_processes_appending_at_once_lose_no_commit(s3_server):
    uri, opts = s3_server.uri(_key("delta-procs")), s3_server.storage_options()
    write_deltalake(uri, _batch(0, 0).slice(0, 0), storage_options=opts)
    writers, rounds = 2, 20
    start = time.time() + 3.0  # after both interpreters have imported deltalake
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, uri, json.dumps(opts), str(w), str(rounds), str(start)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for w in range(writers)]
    for p in procs:
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0, out
    retried = _assert_every_commit_once(uri, opts, writers, rounds)
    print(f"processes: {retried} of {writers * rounds} appends committed after losing a race for a version")


def test_a_missing_binary_is_a_clear_error(monkeypatch, tmp_path):
    from tests.support.s3_local import NoS3, start_s3

    monkeypatch.setenv("LFM_SEAWEEDFS_BIN", str(tmp_path / "weed"))
    with pytest.raises(NoS3, match="scripts/seaweedfs.sh build"):
        start_s3()
