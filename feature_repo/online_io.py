"""Bulk reads and writes of Feast's online stores (sqlite, Redis) in Feast's own layout.

Writes go to the tables/hashes Feast created at `lfm register` (same keys, same value bytes, same timestamps), so
`FeatureStore.get_online_features` and Feast's HTTP server read what we wrote; tests check exactly that. One
request-shaped read (`read`) serves `OnlineReader`, and `read` with `decode=False` is the benchmark's raw read of
the same bytes.
- sqlite: one upsert transaction per view (readers see the old day or the new day, never a mix);
  one `UNION ALL` statement per lookup request.
- Redis: one MULTI/EXEC per view (all-or-nothing); one pipeline of HMGETs per lookup request.
"""
from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from lfm.config import LfmConfig
from lfm.config.serving import OnlineStoreKind

ViewRef = tuple[str, str]  # (feature view name, feature name)
Group = tuple[list[bytes], list[ViewRef]]  # entity keys of one entity, the views read for them


def naive_utc(ts: dt.datetime) -> dt.datetime:
    return ts.astimezone(dt.timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts


class SqliteOnline:
    """Feast's sqlite online store file: table `<project>_<view>`, one row per (entity_key, feature_name)."""

    def __init__(self, path: Path, project: str) -> None:
        self.path, self.project = Path(path), project
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")  # readers (feature server) are not blocked by a load
        # WAL + NORMAL: a commit survives a process crash; a power cut may lose the last load, which
        # `lfm materialize` simply redoes (the online store is a cache of Delta).
        self.conn.execute("PRAGMA synchronous=NORMAL")

    def table(self, view: str) -> str:
        return f'"{self.project}_{view}"'

    def write(self, view: str, feature: str, keys: Sequence[bytes], values: Sequence[bytes],
              event_ts: dt.datetime) -> None:
        # Feast registers a sqlite adapter storing int(naive_utc.timestamp()) and reads it back with
        # datetime.fromtimestamp: we store the very same integer.
        ts = int(naive_utc(event_ts).timestamp())
        sql = (f"INSERT INTO {self.table(view)} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
               "VALUES (?, ?, ?, NULL, ?, NULL) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
               "value = excluded.value, value_text = NULL, event_ts = excluded.event_ts, created_ts = NULL")
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.executemany(sql, ((k, feature, v, ts) for k, v in zip(keys, values)))
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise

    def read(self, groups: Sequence[Group]) -> list[list[list[bytes | None]]]:
        """Per group, per view, per key: the stored value bytes or None (one SQL statement per request)."""
        parts, params, slots = [], [], []
        for gi, (keys, views) in enumerate(groups):
            if not keys:
                continue
            marks = ",".join("?" * len(keys))
            for vi, (view, feature) in enumerate(views):
                parts.append(f"SELECT {len(slots)}, entity_key, value FROM {self.table(view)} "
                             f"WHERE feature_name = ? AND entity_key IN ({marks})")
                params += [feature, *keys]
                slots.append((gi, vi))
        found: list[dict[bytes, bytes]] = [{} for _ in slots]
        if parts:
            for slot, key, value in self.conn.execute(" UNION ALL ".join(parts), params):
                found[slot][key] = value
        out = [[[None] * len(keys) for _ in views] for keys, views in groups]
        for (gi, vi), hits in zip(slots, found):
            keys = groups[gi][0]
            out[gi][vi] = [hits.get(k) for k in keys]
        return out

    def close(self) -> None:
        self.conn.close()


class RedisOnline:
    """Feast's Redis layout: hash per entity (key + project), field mmh3('<view>:<feature>'), `_ts:<view>`."""

    def __init__(self, connection_string: str, project: str, key_ttl_seconds: int | None = None) -> None:
        from feast.infra.online_stores.redis import RedisOnlineStore
        from redis import Redis

        nodes, kwargs = RedisOnlineStore._parse_connection_string(connection_string)
        self.client = Redis(host=nodes[0]["host"], port=int(nodes[0]["port"]), **kwargs)
        self.suffix = project.encode("utf-8")
        self.ttl = key_ttl_seconds

    @staticmethod
    def field(view: str, feature: str) -> bytes:
        from feast.infra.online_stores.helpers import _mmh3

        return _mmh3(f"{view}:{feature}")

    def write(self, view: str, feature: str, keys: Sequence[bytes], values: Sequence[bytes],
              event_ts: dt.datetime) -> None:
        from google.protobuf.timestamp_pb2 import Timestamp

        ts = Timestamp()
        ts.FromDatetime(event_ts if event_ts.tzinfo else event_ts.replace(tzinfo=dt.timezone.utc))
        ts_bytes, f, ts_field = ts.SerializeToString(), self.field(view, feature), f"_ts:{view}"
        with self.client.pipeline(transaction=True) as pipe:
            for k, v in zip(keys, values):
                rk = k + self.suffix
                pipe.hset(rk, mapping={f: v, ts_field: ts_bytes})
                if self.ttl:
                    pipe.expire(rk, self.ttl)
            pipe.execute()

    def read(self, groups: Sequence[Group]) -> list[list[list[bytes | None]]]:
        """Per group, per view, per key: value bytes or None (one pipeline of HMGETs per request)."""
        with self.client.pipeline(transaction=False) as pipe:
            for keys, views in groups:
                fields = [self.field(v, f) for v, f in views]
                for k in keys:
                    pipe.hmget(k + self.suffix, fields)
            replies = pipe.execute()
        out, i = [], 0
        for keys, views in groups:
            rows = replies[i: i + len(keys)]
            i += len(keys)
            out.append([[r[vi] for r in rows] for vi in range(len(views))])
        return out

    def close(self) -> None:
        self.client.close()


def open_online(cfg: LfmConfig) -> SqliteOnline | RedisOnline:
    from feature_repo.store import online_file

    f = cfg.feast
    if f.online_store == OnlineStoreKind.redis:
        return RedisOnline(f.redis_connection, f.project, f.redis_key_ttl_days * 86400 or None)
    return SqliteOnline(online_file(cfg), f.project)
