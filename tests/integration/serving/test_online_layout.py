"""The online stores written in Feast's layout by our own bulk writer, read back through Feast's own reader.

`serving.online_io` writes what Feast's sqlite and Redis online stores hold (entity keys, `ValueProto` float
lists, event timestamps, the Redis field hash) without Feast's private helpers; these tests pin that layout
against `FeatureStore.get_online_features` for every key type (int64, string) and both stores, and check the
per-key rule that an older snapshot never replaces a newer one. No Spark: only Feast, sqlite and a real Redis.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from feature_repo.specs import view_name
from lfm.contract import EMBEDDING_TABLES, USER_TABLES
from tests.support.config import make_config
from tests.support.synthetic_vectors import spec

SPEC = spec("c0ffee00c0ffee00c0ff", ur_dim=8, ir_dim=8, cr_dim=4, cr_layer="dnn_0")
T1 = dt.datetime(2022, 5, 5, 16, tzinfo=dt.timezone.utc)
T2 = T1 + dt.timedelta(days=1)


def configured(tmp_path, kind: str, key_type: str, redis_server=None):
    from serving.register import register

    feast = {"repo_path": str(tmp_path / "repo"), "online_store": kind, "entity_key_type": key_type}
    if redis_server is not None:
        import redis

        redis.Redis(host="127.0.0.1", port=redis_server.port).flushall()
        feast["redis_connection"] = redis_server.connection
    cfg = make_config(tmp_path, feast=feast)
    register(cfg, [SPEC])
    return cfg


def write(cfg, ids: list, day_ts: dt.datetime, seed: int) -> dict[str, np.ndarray]:
    """One 'release' of all four views through our writer (sqlite: the driver's transaction; Redis: the Spark
    tasks' kernel, fed the Arrow batches Spark would hand it); returns the vectors written per table."""
    rng = np.random.default_rng(seed)
    mats = {t: rng.normal(size=(len(ids), SPEC.dim(t))).astype(np.float32) for t in EMBEDDING_TABLES}
    if cfg.feast.online_store.value == "redis":
        redis_write(cfg, ids, day_ts, mats)
        return mats
    from serving.codec import encode_vectors, entity_keys
    from serving.online_io import ViewWrite, open_online

    int64 = cfg.feast.entity_key_type.value == "int64"
    writes = []
    for table in EMBEDDING_TABLES:
        key = cfg.schema.user_key if table in USER_TABLES else cfg.schema.item_key
        writes.append(ViewWrite(view_name(table, SPEC.id), table, entity_keys(key, ids, int64),
                                encode_vectors(mats[table]), day_ts))
    backend = open_online(cfg)
    try:
        with backend.locked():
            backend.write_views(writes)
    finally:
        backend.close()
    return mats


def redis_write(cfg, ids: list, day_ts: dt.datetime, mats: dict[str, np.ndarray]) -> None:
    """Both entity sides through `serving.online_spark.redis_write_batches`, in batches of 3 rows."""
    import pyarrow as pa

    from inference.decay import matrix_to_list
    from serving.online_spark import RedisTarget, redis_write_batches, sides

    f = cfg.feast
    target = RedisTarget(f.redis_connection, f.project, None, int(day_ts.timestamp()))
    for side in sides(cfg, SPEC):
        cols = {"key": pa.array(ids, pa.int64() if side.key.int64 else pa.string())}
        cols.update({f"v{i}": matrix_to_list(mats[t]) for i, t in enumerate(side.tables)})
        batch = pa.RecordBatch.from_pydict(cols)
        list(redis_write_batches(iter([batch.slice(i, 3) for i in range(0, batch.num_rows, 3)]), side, target))


def feast_read(cfg, ids: list) -> dict:
    from feature_repo.store import open_store

    refs = [f"{view_name(t, SPEC.id)}:{t}" for t in EMBEDDING_TABLES]
    rows = [{cfg.schema.user_key: i, cfg.schema.item_key: i} for i in ids]
    return open_store(cfg).get_online_features(features=refs, entity_rows=rows).to_dict()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
@pytest.mark.parametrize("key_type,ids", [("int64", [0, 7, 2**40, -3]), ("string", ["u1", "ü-2", "x' OR 1", ""])])
def test_feasts_reader_reads_what_our_writer_wrote_and_newer_snapshots_win(tmp_path, request, kind, key_type, ids):
    server = request.getfixturevalue("redis_server") if kind == "redis" else None
    cfg = configured(tmp_path, kind, key_type, server)
    newer = write(cfg, ids, T2, seed=2)
    got = feast_read(cfg, ids)
    for table in EMBEDDING_TABLES:
        np.testing.assert_array_equal(np.asarray(got[table], dtype=np.float32), newer[table])
    write(cfg, ids, T1, seed=1)  # an older day written after the newer one: every key keeps the newer vector
    got = feast_read(cfg, ids)
    for table in EMBEDDING_TABLES:
        np.testing.assert_array_equal(np.asarray(got[table], dtype=np.float32), newer[table])
    unknown = "nobody" if key_type == "string" else 123456
    assert feast_read(cfg, [unknown])["ur"] == [None]


def test_redis_connection_strings_parse_like_feasts():
    from serving.online_io import parse_redis_connection

    assert parse_redis_connection("127.0.0.1:6379") == ("127.0.0.1", 6379, {})
    assert parse_redis_connection("redis.internal:6380,db=2,password=s3cret,ssl=true") == (
        "redis.internal", 6380, {"db": 2, "password": "s3cret", "ssl": True})
    from lfm.errors import LfmError

    with pytest.raises(LfmError, match="host:port"):
        parse_redis_connection("redis.internal")
    with pytest.raises(LfmError, match="unknown option 'dbb'"):
        parse_redis_connection("h:1,dbb=2")


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_two_writers_of_one_store_never_interleave(tmp_path, request, kind):
    """`locked()` of one store, taken by two backends at once (as two materialize runs would): the second enters
    only after the first has left, for the sqlite file lock and the shared Redis lock alike."""
    import threading
    import time

    from serving.online_io import open_online

    server = request.getfixturevalue("redis_server") if kind == "redis" else None
    cfg = configured(tmp_path, kind, "int64", server)
    events: list[str] = []
    first_in = threading.Event()

    def hold(name: str, seconds: float) -> None:
        backend = open_online(cfg)
        try:
            with backend.locked():
                events.append(f"{name} in")
                first_in.set()
                time.sleep(seconds)
                events.append(f"{name} out")
        finally:
            backend.close()

    first = threading.Thread(target=hold, args=("first", 1.0))
    first.start()
    assert first_in.wait(30)
    second = threading.Thread(target=hold, args=("second", 0.0))
    second.start()
    first.join(60)
    second.join(60)
    assert events == ["first in", "first out", "second in", "second out"]


def test_redis_writer_sets_only_the_views_an_entity_has_and_counts_what_it_wrote(tmp_path, request):
    """An entity with no row in one of its side's views (the sides' full outer join) gets only the others; a
    rewrite of the same snapshot counts again; an older one counts nothing and changes nothing."""
    import pyarrow as pa

    from inference.decay import matrix_to_list
    from serving.online_spark import RedisTarget, redis_write_batches, sides

    cfg = configured(tmp_path, "redis", "int64", request.getfixturevalue("redis_server"))
    user_side = sides(cfg, SPEC)[0]
    ids = list(range(2_500))  # more entities than one script call takes
    rng = np.random.default_rng(3)
    mats = [rng.normal(size=(len(ids), SPEC.dim(t))).astype(np.float32) for t in user_side.tables]
    second = matrix_to_list(mats[1])
    has_second = np.arange(len(ids)) % 3 != 0
    batch = pa.RecordBatch.from_pydict({"key": pa.array(ids, pa.int64()), "v0": matrix_to_list(mats[0]),
                                        "v1": pa.array(second.to_pylist(), second.type, mask=~has_second)})

    def run(day_ts: dt.datetime) -> list[int]:
        target = RedisTarget(cfg.feast.redis_connection, cfg.feast.project, None, int(day_ts.timestamp()))
        out = list(redis_write_batches(iter([batch]), user_side, target))
        return [int(out[0].column(f"w{i}")[0].as_py()) for i in range(len(user_side.tables))]

    assert run(T2) == [len(ids), int(has_second.sum())]
    assert run(T2) == [len(ids), int(has_second.sum())]
    assert run(T1) == [0, 0]
    got = feast_read(cfg, ids)
    np.testing.assert_array_equal(np.asarray(got[user_side.tables[0]], dtype=np.float32), mats[0])
    second_got = got[user_side.tables[1]]
    assert [v is not None for v in second_got] == has_second.tolist()
    np.testing.assert_array_equal(np.asarray([v for v in second_got if v is not None], dtype=np.float32),
                                  mats[1][has_second])
