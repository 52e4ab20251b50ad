"""Bulk reads and writes of Feast's online stores (sqlite, Redis) in Feast's own layout, through public APIs only.

Writes go to the tables/hashes Feast created at `lfm register` (same keys, same value bytes, same timestamps), so
`FeatureStore.get_online_features` and Feast's HTTP server read what we wrote; tests read every value type back
through Feast's own reader. One request-shaped `read` serves `OnlineReader` (and is the benchmark's raw read).
- sqlite: `write_views` lands every view of a release at once or none of it (one transaction over all views); per
  key, an older snapshot never replaces a newer one (the stored event timestamp wins) — except the snapshot of a
  withdrawn day, which the previous release replaces in place (`replacing`), so a reader never finds the key empty. Redis is written by Spark
  tasks (`serving.online_spark`) with the same per-key rule, one HSET per entity.
- `locked()` serialises writers of one store: two materializes never interleave.
- sqlite: one `UNION ALL` statement per lookup request; Redis: one pipeline of HMGETs per request.
Feast's Redis layout is written with the public `mmh3` package (Feast's own dependency) for the field names and
our own connection-string parser; `tests/integration/serving` pins both against Feast's reader.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import sqlite3
import struct
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lfm.config import LfmConfig
from lfm.config.serving import OnlineStoreKind
from lfm.errors import LfmError

ViewRef = tuple[str, str]  # (feature view name, feature name)
Group = tuple[list[bytes], list[ViewRef]]  # entity keys of one entity, the views read for them
LOCK_TIMEOUT_S = 600


class OnlineBusy(LfmError):
    """Another materialize holds the online store's lock for too long."""


@dataclass(frozen=True)
class ViewWrite:
    """One view's rows of a release: serialized entity keys, serialized values, the snapshot's event time."""

    view: str
    feature: str
    keys: Sequence[bytes]
    values: Sequence[bytes]
    event_ts: dt.datetime


def naive_utc(ts: dt.datetime) -> dt.datetime:
    return ts.astimezone(dt.timezone.utc).replace(tzinfo=None) if ts.tzinfo else ts


class SqliteOnline:
    """Feast's sqlite online store file: table `<project>_<view>`, one row per (entity_key, feature_name)."""

    def __init__(self, path: Path, project: str) -> None:
        self.path, self.project = Path(path), project
        self.conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")  # readers (feature server) are not blocked by a load
        # WAL + NORMAL: a commit survives a process crash; a power cut may lose the last load, which
        # `lfm materialize` simply redoes (the online store is a cache of the released Delta versions).
        self.conn.execute("PRAGMA synchronous=NORMAL")

    def table(self, view: str) -> str:
        return f'"{self.project}_{view}"'

    def write_views(self, writes: Sequence[ViewWrite], replacing: dt.datetime | None = None) -> dict[str, int]:
        """Upsert every view in one transaction; a key keeps a newer stored snapshot unless that snapshot is
        `replacing` (a withdrawn day's). Returns rows written per view."""
        replaced = int(naive_utc(replacing).timestamp()) if replacing else None
        cur = self.conn.cursor()
        cur.execute("BEGIN IMMEDIATE")
        written: dict[str, int] = {}
        try:
            for w in writes:
                # Feast registers a sqlite adapter storing int(naive_utc.timestamp()) and reads it back with
                # datetime.fromtimestamp: we store the very same integer.
                ts = int(naive_utc(w.event_ts).timestamp())
                table = self.table(w.view)
                before = self.conn.total_changes
                cur.executemany(
                    f"INSERT INTO {table} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
                    "VALUES (?, ?, ?, NULL, ?, NULL) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
                    "value = excluded.value, value_text = NULL, event_ts = excluded.event_ts, created_ts = NULL "
                    f"WHERE excluded.event_ts >= {table}.event_ts OR {table}.event_ts = ?",
                    ((k, w.feature, v, ts, replaced) for k, v in zip(w.keys, w.values)))
                written[w.view] = self.conn.total_changes - before
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        return written

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

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock on the store file (released by the OS if the holder dies)."""
        with open(str(self.path) + ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def close(self) -> None:
        self.conn.close()


def parse_redis_connection(text: str) -> tuple[str, int, dict]:
    """`host:port[,db=N][,password=...][,ssl=true][,username=...]`, the form Feast's Redis store takes."""
    first, *options = [p.strip() for p in text.split(",") if p.strip()]
    host, _, port = first.rpartition(":")
    if not host or not port.isdigit():
        raise LfmError(f"feast.redis_connection {text!r}: expected host:port[,db=N,password=...] "
                       "(e.g. 127.0.0.1:6379)")
    kwargs: dict = {}
    for opt in options:
        key, _, value = opt.partition("=")
        if key == "db":
            kwargs["db"] = int(value)
        elif key in ("password", "username"):
            kwargs[key] = value
        elif key == "ssl":
            kwargs["ssl"] = value.lower() in ("true", "1", "yes")
        else:
            raise LfmError(f"feast.redis_connection: unknown option {key!r} (use db, password, username, ssl)")
    return host, int(port), kwargs


def redis_field(view: str, feature: str) -> bytes:
    """The hash field of `view:feature` in Feast's Redis layout: murmur3_32 (unsigned), little-endian bytes."""
    import mmh3

    return struct.pack("<I", mmh3.hash(f"{view}:{feature}", signed=False))


class RedisOnline:
    """Feast's Redis layout: hash per entity (key + project), field mmh3('<view>:<feature>'), `_ts:<view>`."""

    def __init__(self, connection_string: str, project: str) -> None:
        from redis import Redis

        host, port, kwargs = parse_redis_connection(connection_string)
        self.client = Redis(host=host, port=port, **kwargs)
        self.suffix = project.encode("utf-8")
        self.project = project

    def read(self, groups: Sequence[Group]) -> list[list[list[bytes | None]]]:
        """Per group, per view, per key: value bytes or None (one pipeline of HMGETs per request)."""
        with self.client.pipeline(transaction=False) as pipe:
            for keys, views in groups:
                fields = [redis_field(v, f) for v, f in views]
                for k in keys:
                    pipe.hmget(k + self.suffix, fields)
            replies = pipe.execute()
        out, i = [], 0
        for keys, views in groups:
            rows = replies[i: i + len(keys)]
            i += len(keys)
            out.append([[r[vi] for r in rows] for vi in range(len(views))])
        return out

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """A Redis lock shared by every materialize of this store, wherever it runs.

        It expires LOCK_TIMEOUT_S after its holder stops renewing it (a holder that died); a live holder renews it
        every third of that, so a load that takes longer (a big day written by Spark tasks) keeps it."""
        lock = self.client.lock(f"lfm:materialize:{self.project}", timeout=LOCK_TIMEOUT_S,
                                blocking_timeout=LOCK_TIMEOUT_S)
        if not lock.acquire():
            raise OnlineBusy(f"another materialize of the Redis online store held its lock for {LOCK_TIMEOUT_S}s; "
                             "wait for it to finish and rerun")
        done = threading.Event()

        def renew() -> None:
            while not done.wait(LOCK_TIMEOUT_S / 3):
                with contextlib.suppress(Exception):
                    lock.reacquire()

        renewer = threading.Thread(target=renew, daemon=True)
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join()
            with contextlib.suppress(Exception):
                lock.release()

    def close(self) -> None:
        self.client.close()


def store_address(cfg: LfmConfig) -> str:
    f = cfg.feast
    return f"redis {f.redis_connection}" if f.online_store == OnlineStoreKind.redis else "sqlite"


def is_connection_error(err: BaseException) -> bool:
    """Redis' (or a socket's) refusal, however deep in the cause chain."""
    import redis

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def reaching_online(cfg: LfmConfig) -> Iterator[None]:
    """Turn the online store's refusal inside the block into `OnlineStoreDown` naming the store and the fix."""
    from serving.errors import OnlineStoreDown

    try:
        yield
    except OnlineStoreDown:
        raise
    except Exception as err:
        if not is_connection_error(err):
            raise
        raise OnlineStoreDown(f"the online store ({store_address(cfg)}) is unreachable: {err}; nothing else changed "
                              "(Delta tables, verdicts and releases stand): bring it back and rerun the same "
                              "command (run-daily resumes at this step)") from err


def open_online(cfg: LfmConfig) -> SqliteOnline | RedisOnline:
    from feature_repo.store import online_file

    f = cfg.feast
    if f.online_store == OnlineStoreKind.redis:
        return RedisOnline(f.redis_connection, f.project)
    return SqliteOnline(online_file(cfg), f.project)
