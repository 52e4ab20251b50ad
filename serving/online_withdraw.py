"""Take one day's snapshot of an export out of the online store (sqlite or Redis), in Feast's own layout.

A withdrawn release must stop being served. Its rows are exactly the rows of the export's four views stamped with
the day's snapshot time (the end of D, the same for every key by contract), so they are deleted by that stamp:
a key that holds a newer day keeps it, and nothing of another export or day is touched. The caller holds the
store's lock (`locked()`), so no materialize interleaves.
- sqlite: one DELETE per view in one transaction (all or nothing);
- Redis: the project's entity hashes are scanned and a server-side script removes, per entity, each view's value
  and `_ts:<view>` field whose stored snapshot is the day's (atomic per entity; a failure part-way is completed by
  the same command again, which finds the rest).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from lfm.config import LfmConfig

# KEYS: entity hashes. ARGV: the snapshot's timestamp bytes, the number of views V, V value fields, V `_ts:` fields.
# Keys that are not hashes (the materialize lock matches the pattern too) are passed over. Returns the values removed.
DELETE_SNAPSHOT_LUA = """
local ts, nv, removed = ARGV[1], tonumber(ARGV[2]), 0
for j = 1, #KEYS do
  for i = 1, (redis.call('TYPE', KEYS[j]).ok == 'hash') and nv or 0 do
    if redis.call('HGET', KEYS[j], ARGV[2 + nv + i]) == ts then
      redis.call('HDEL', KEYS[j], ARGV[2 + i], ARGV[2 + nv + i])
      removed = removed + 1
    end
  end
end
return removed
"""
SCAN_BATCH = 1_000  # entity hashes per SCAN step and script call


def delete_snapshot(backend, views: Sequence[tuple[str, str]], event_ts: dt.datetime) -> int:
    """Delete the rows of `views` ((view, feature) pairs) stamped `event_ts`; returns the values removed."""
    from serving.online_io import RedisOnline

    if isinstance(backend, RedisOnline):
        return _delete_redis(backend, views, event_ts)
    return _delete_sqlite(backend, views, event_ts)


def _delete_sqlite(backend, views: Sequence[tuple[str, str]], event_ts: dt.datetime) -> int:
    from serving.online_io import naive_utc

    ts = int(naive_utc(event_ts).timestamp())  # the integer `SqliteOnline.write_views` stores
    cur = backend.conn.cursor()
    cur.execute("BEGIN IMMEDIATE")
    before = backend.conn.total_changes
    try:
        for view, feature in views:
            cur.execute(f"DELETE FROM {backend.table(view)} WHERE feature_name = ? AND event_ts = ?", (feature, ts))
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return backend.conn.total_changes - before


def _delete_redis(backend, views: Sequence[tuple[str, str]], event_ts: dt.datetime) -> int:
    from google.protobuf.timestamp_pb2 import Timestamp

    from serving.online_io import redis_field

    ts = Timestamp(seconds=int(event_ts.timestamp())).SerializeToString()  # the bytes the Redis writer stores
    head = [ts, len(views), *[redis_field(v, f) for v, f in views], *[f"_ts:{v}".encode() for v, _ in views]]
    script = backend.client.register_script(DELETE_SNAPSHOT_LUA)
    pattern = b"*" + _glob_escape(backend.suffix)
    removed, batch = 0, []
    for key in backend.client.scan_iter(match=pattern, count=SCAN_BATCH):
        batch.append(key)
        if len(batch) == SCAN_BATCH:
            removed += int(script(keys=batch, args=head))
            batch = []
    if batch:
        removed += int(script(keys=batch, args=head))
    return removed


def _glob_escape(raw: bytes) -> bytes:
    """`raw` as a literal in a Redis MATCH pattern."""
    return b"".join(b"\\" + bytes([c]) if c in b"*?[]\\" else bytes([c]) for c in raw)


def retract_views(cfg: LfmConfig, views: Sequence[tuple[str, str]], event_ts: dt.datetime) -> int:
    """Open the configured store, take its lock and delete the snapshot; returns the values removed."""
    from serving.online_io import open_online

    backend = open_online(cfg)
    try:
        with backend.locked():
            return delete_snapshot(backend, views, event_ts)
    finally:
        backend.close()
