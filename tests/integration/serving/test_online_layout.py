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

from lfm.contract import EMBEDDING_TABLES
from tests.support.online_store import SPEC, T1, T2, configured, feast_read, write

T3 = T2 + dt.timedelta(days=1)


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


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_withdrawn_snapshot_is_replaced_in_place_and_no_other_newer_one_is(tmp_path, request, kind):
    """A withdrawal loads the previous release over the withdrawn day's values (never an empty key in between):
    the older write replaces exactly the keys stamped with the withdrawn day; a key holding a later day keeps it,
    and a key the older release lacks keeps the withdrawn value until the withdrawal deletes it."""
    from feature_repo.specs import view_name
    from serving.online_withdraw import retract_views

    server = request.getfixturevalue("redis_server") if kind == "redis" else None
    cfg = configured(tmp_path, kind, "int64", server)
    withdrawn = write(cfg, [1, 2, 3], T2, seed=2)
    later = write(cfg, [3], T3, seed=3)
    previous = write(cfg, [1, 2, 3], T1, seed=1, replacing=T2)
    got = feast_read(cfg, [1, 2, 3])
    for table in EMBEDDING_TABLES:
        got_t = np.asarray(got[table], dtype=np.float32)
        np.testing.assert_array_equal(got_t[:2], previous[table][:2])
        np.testing.assert_array_equal(got_t[2], later[table][0])
    only_withdrawn = write(cfg, [4], T2, seed=4)  # a key the previous release lacks
    write(cfg, [1, 2, 3], T1, seed=1, replacing=T2)
    np.testing.assert_array_equal(np.asarray(feast_read(cfg, [4])["ur"], np.float32)[0], only_withdrawn["ur"][0])
    retract_views(cfg, [(view_name(t, SPEC.id), t) for t in EMBEDDING_TABLES], T2)
    after = feast_read(cfg, [1, 2, 3, 4])
    assert after["ur"][3] is None and not np.array_equal(withdrawn["ur"][0], np.asarray(after["ur"][0], np.float32))
    np.testing.assert_array_equal(np.asarray(after["ur"][0], np.float32), previous["ur"][0])


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
