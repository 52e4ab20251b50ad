"""A release into Redis from Spark tasks: the driver never holds the vectors, so it scales out with the cluster.

What holds on this path (docs/contracts.md, "Read"):
- every table of the release is read at the Delta version the release names and checked in Spark — no null key
  or vector, the export's width, every value finite, one snapshot time (the end of D) — *before the first write*;
- each entity's views of the release (UR + CR(u) for a user, IR + CR(i) for an item) are joined in Spark and land
  in one HSET: per entity, all of its views or none;
- per key and view, an older snapshot never replaces a newer one: a server-side script compares each entity's
  stored `_ts:<view>` with the release's and sets only what is not older, in one atomic step per entity (the
  store's lock, held by the driver for the whole job, keeps other materializes out meanwhile); a withdrawn day's
  values are the exception: the previous release replaces them in place, so the entity is never found empty;
- across entities the load is not one transaction (that would need every row in one MULTI on one client): a
  failure part-way leaves some entities on the new release and the rest on what they had; the same command again
  writes every entity again (an equal snapshot time is rewritten), which completes it;
- the Feast registry's materialization interval is recorded by the caller only after every partition succeeded.
Keys, fields and values are Feast's own layout (`serving.codec`, `serving.online_io.redis_field`), so Feast's reader
reads them (pinned in tests/integration/serving).
"""
from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakehouse.releases import Release
from lfm.config import LfmConfig
from lfm.config import KeyType
from lfm.contract import EMBEDDING_TABLES, ExportSpec, side_of
from serving.errors import ServingError
from serving.feast_bytes import KeyLayout, ValueLayout

class OnlineUnreachable(ServingError, ConnectionError):
    """A Spark task could not reach the online store (a ConnectionError, so the pipeline reports the store down)."""


@dataclass(frozen=True)
class Audit:
    """What the check pass saw in one released table."""

    table: str
    rows: int
    null_keys: int
    null_vectors: int
    bad_width: int
    nonfinite: int
    min_ts: int | None  # epoch microseconds
    max_ts: int | None

    def problems(self, dim: int, expected_us: int) -> list[str]:
        out = []
        if self.null_keys or self.null_vectors:
            out.append(f"{self.null_vectors} null vectors / {self.null_keys} null keys")
        if self.bad_width:
            out.append(f"{self.bad_width} vectors whose width is not the export's {dim}")
        if self.nonfinite:
            out.append(f"{self.nonfinite} NaN or infinite values")
        if self.rows and (self.min_ts != expected_us or self.max_ts != expected_us):
            out.append(f"snapshot times from {_us(self.min_ts)} to {_us(self.max_ts)} where the contract is one per "
                       f"day, the end of the day ({_us(expected_us)})")
        if not self.rows:
            out.append("no rows")
        return out


def _us(value: int | None) -> str:
    return "null" if value is None else dt.datetime.fromtimestamp(value / 1e6, dt.timezone.utc).isoformat()


@dataclass(frozen=True)
class Side:
    """One entity side of a release: the tables whose views go into one hash per entity key, with Feast's byte
    layouts taken on the driver (`serving.codec`), so tasks never import Feast."""

    tables: tuple[str, ...]
    views: tuple[str, ...]
    key: KeyLayout
    values: tuple[ValueLayout, ...]  # per view
    fields: tuple[bytes, ...]  # per view: the hash field of `view:feature`


@dataclass(frozen=True)
class RedisTarget:
    """Where and when a task writes (picklable; each task opens its own client)."""

    connection: str
    project: str
    ttl_seconds: int | None
    event_seconds: int  # the snapshot time of the release (the end of D), whole seconds
    replaces_seconds: int = 0  # a withdrawn day's snapshot time this load overwrites in place (0: none)


# --- the kernel: Arrow batches in Spark's Python workers -------------------------------------------------------

# One entity per step, atomically: read its stored `_ts:<view>` fields, then set every view whose stored snapshot
# is not newer (seconds of Feast's `google.protobuf.Timestamp` bytes: field 1, tag 0x08, a varint; empty = 0), or
# whose stored snapshot is the withdrawn day's this load replaces.
# KEYS: entity keys. ARGV: event seconds, timestamp bytes, ttl seconds (0 = none), replaced seconds (0 = none), the
# number of views V, V hash fields, V `_ts:` fields, then per entity V values ('' where the entity has no row of
# that view). Returns the entities written per view.
WRITE_NOT_OLDER_LUA = """
local secs, ts, ttl, nv = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5])
local replaced = tonumber(ARGV[4])
local fields, ts_fields, written = {}, {}, {}
for i = 1, nv do fields[i] = ARGV[5 + i]; ts_fields[i] = ARGV[5 + nv + i]; written[i] = 0 end
local function seconds(raw)
  if string.byte(raw, 1) ~= 8 then return 0 end
  local v, mul, pos = 0, 1, 2
  while true do
    local b = string.byte(raw, pos)
    v = v + (b % 128) * mul
    if b < 128 then return v end
    mul, pos = mul * 128, pos + 1
  end
end
local base = 5 + 2 * nv
for j = 1, #KEYS do
  local stored = redis.call('HMGET', KEYS[j], unpack(ts_fields))
  local args = {}
  for i = 1, nv do
    local value, old = ARGV[base + (j - 1) * nv + i], stored[i]
    if value ~= '' and (not old or old == ts or seconds(old) <= secs or (replaced > 0 and seconds(old) == replaced)) then
      args[#args + 1] = fields[i]; args[#args + 1] = value
      args[#args + 1] = ts_fields[i]; args[#args + 1] = ts
      written[i] = written[i] + 1
    end
  end
  if #args > 0 then
    redis.call('HSET', KEYS[j], unpack(args))
    if ttl > 0 then redis.call('EXPIRE', KEYS[j], ttl) end
  end
end
return written
"""
SCRIPT_ENTITIES = 1_000  # entities per script call: bounds how long one call holds the server (a few ms)


def redis_write_batches(batches: Iterator[pa.RecordBatch], side: Side, target: RedisTarget) -> Iterator[pa.RecordBatch]:
    """Per batch of (key, v0, v1, ...): each entity's views whose stored snapshot is not newer, set in one atomic
    server-side step per entity (`WRITE_NOT_OLDER_LUA`, pipelined in chunks). Yields the keys written per view."""
    import redis
    from google.protobuf.timestamp_pb2 import Timestamp

    from serving.online_io import parse_redis_connection

    host, port, kwargs = parse_redis_connection(target.connection)
    client = redis.Redis(host=host, port=port, **kwargs)
    script = client.register_script(WRITE_NOT_OLDER_LUA)
    suffix = target.project.encode("utf-8")
    nv = len(side.views)
    head = [target.event_seconds, Timestamp(seconds=target.event_seconds).SerializeToString(),
            target.ttl_seconds or 0, target.replaces_seconds, nv, *side.fields, *[f"_ts:{v}".encode() for v in side.views]]
    names = [f"w{i}" for i in range(nv)]
    try:
        for b in batches:
            if b.num_rows == 0:
                continue
            keys = b.column("key")
            ids = keys.to_numpy(zero_copy_only=False) if side.key.int64 else keys.to_pylist()
            rkeys = [k + suffix for k in side.key.encode(ids)]
            values = []  # per view: row -> serialized ValueProto, or b"" where the entity has no such row
            for i, layout in enumerate(side.values):
                col = b.column(f"v{i}")
                present = np.asarray(pc.is_valid(col).to_numpy(zero_copy_only=False))
                mat = pc.list_flatten(col).to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, layout.dim)
                encoded = iter(layout.encode(mat))
                values.append([next(encoded) if p else b"" for p in present])
            per_entity = [v for row in zip(*values) for v in row]  # entity-major, V values each
            with client.pipeline(transaction=False) as pipe:
                for lo in range(0, len(rkeys), SCRIPT_ENTITIES):
                    hi = min(lo + SCRIPT_ENTITIES, len(rkeys))
                    script(keys=rkeys[lo:hi], args=head + per_entity[lo * nv:hi * nv], client=pipe)
                counts = pipe.execute()
            written = [sum(int(c[i]) for c in counts) for i in range(nv)]
            yield pa.RecordBatch.from_arrays([pa.array([w], pa.int64()) for w in written], names=names)
    except redis.exceptions.ConnectionError as err:
        raise OnlineUnreachable(f"Redis {host}:{port} refused a Spark task: {err}") from None
    finally:
        client.close()


# --- the driver: check every table, then write both sides from Spark tasks --------------------------------------

def _released(spark, cfg: LfmConfig, release: Release, table: str):
    """One table of the release at its version: key, vector (array<float>), event_timestamp."""
    from pyspark.sql import functions as F

    from feature_repo.specs import key_of, key_type_of
    from lakehouse.delta_io import read_days

    # read_days: a released file vacuumed or truncated is refused naming the table, version and fix
    df = read_days(spark, cfg.table_path(table), release.table_versions[table], [release.ds], release.export_id)
    return df.select(F.col(key_of(cfg, table)).cast(key_type_of(cfg, table).spark).alias("key"),
                     F.col(table).cast("array<float>").alias("vector"), "event_timestamp")


def audit_frame(df, table: str, dim: int) -> Audit:
    """The counts the release check needs, for a frame of (key, vector, event_timestamp), in one JVM pass: a row's
    values are scanned elementwise only when its max, min or NaN probe shows a non-finite or null value."""
    from pyspark.sql import functions as F

    inf, v = float("inf"), F.col("vector")
    hi, lo = F.array_max(v), F.array_min(v)  # NaN sorts above every number; null elements are skipped
    # array_contains: true with a NaN (NaN equals NaN here), null with a null element and no NaN, else false
    suspect = F.coalesce(F.array_contains(v, F.lit(float("nan"))), F.lit(True)) | (hi == inf) | (lo == -inf)
    nonfinite = F.size(F.filter(v, lambda x: x.isNull() | F.isnan(x) | (F.abs(x) == inf)))
    r = df.agg(F.count(F.lit(1)).alias("rows"), F.sum(F.col("key").isNull().cast("long")).alias("null_keys"),
               F.sum(v.isNull().cast("long")).alias("null_vectors"),
               F.sum((v.isNotNull() & (F.size(v) != dim)).cast("long")).alias("bad_width"),
               F.sum(F.when(v.isNotNull() & suspect, nonfinite).otherwise(0)).alias("nonfinite"),
               F.min(F.unix_micros("event_timestamp")).alias("min_ts"),
               F.max(F.unix_micros("event_timestamp")).alias("max_ts")).first()
    return Audit(table, *[int(r[c] or 0) for c in ("rows", "null_keys", "null_vectors", "bad_width", "nonfinite")],
                 r["min_ts"], r["max_ts"])


def audit_release(spark, cfg: LfmConfig, release: Release, end: dt.datetime) -> dict[str, Audit]:
    """Check all four tables in Spark (one pass each, side by side); raise before anything is written."""
    def one(table: str) -> Audit:
        return audit_frame(_released(spark, cfg, release, table), table, release.spec.dim(table))

    with ThreadPoolExecutor(max_workers=len(EMBEDDING_TABLES)) as pool:
        audits = dict(zip(EMBEDDING_TABLES, pool.map(one, EMBEDDING_TABLES)))
    expected = int(end.timestamp() * 1_000_000)
    bad = {t: a.problems(release.spec.dim(t), expected) for t, a in audits.items()}
    bad = {t: p for t, p in bad.items() if p}
    if bad:
        raise ServingError(f"{release.ds} of export {release.export_id}: released tables fail the load checks "
                           f"({'; '.join(f'{t}: ' + ', '.join(p) for t, p in bad.items())}); refusing to load the "
                           "release (nothing was written)")
    return audits


def sides(cfg: LfmConfig, spec: ExportSpec) -> list[Side]:
    """The user side (UR, CR(u)) and the item side (IR, CR(i)) of an export, layouts checked against Feast."""
    from feature_repo.specs import key_of, view_name
    from serving.codec import key_layout, value_layout
    from serving.online_io import redis_field

    out = []
    for entity in ("user", "item"):
        int64 = cfg.key_type(entity) == KeyType.int64
        tables = tuple(t for t in EMBEDDING_TABLES if side_of(t) == entity)
        views = tuple(view_name(t, spec.id) for t in tables)
        out.append(Side(tables, views, key_layout(key_of(cfg, tables[0]), int64),
                        tuple(value_layout(spec.dim(t)) for t in tables),
                        tuple(redis_field(v, t) for v, t in zip(views, tables))))
    return out


def write_release(spark, cfg: LfmConfig, release: Release, end: dt.datetime,
                  replacing: dt.datetime | None = None) -> dict[str, int]:
    """Both entity sides from Spark tasks (the caller holds the store's lock); keys written per view. `replacing`:
    a withdrawn day's snapshot time whose values this release overwrites in place."""
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    f = cfg.feast
    target = RedisTarget(f.redis_connection, f.project, f.redis_key_ttl_days * 86400 or None, int(end.timestamp()),
                         int(replacing.timestamp()) if replacing else 0)
    written: dict[str, int] = {}
    for side in sides(cfg, release.spec):
        frames = [_released(spark, cfg, release, t).select("key", F.col("vector").alias(f"v{i}"))
                  for i, t in enumerate(side.tables)]
        joined = functools.reduce(lambda a, b: a.join(b, on="key", how="full_outer"), frames)
        schema = ", ".join(f"w{i} bigint" for i in range(len(side.tables)))
        fn = functools.partial(redis_write_batches, side=side, target=target)
        try:
            r = joined.mapInArrow(fn, schema).agg(*[F.sum(f"w{i}").alias(f"w{i}")
                                                    for i in range(len(side.tables))]).first()
        except PySparkException as err:
            text = str(err)
            if "OnlineUnreachable" in text or "ConnectionError" in text:
                raise OnlineUnreachable(f"the online store (redis {f.redis_connection}) became unreachable while "
                                        f"Spark tasks wrote {release.ds}: the entities written so far hold the new "
                                        "release; rerun the same command to complete it") from None
            raise ServingError(f"writing {release.ds} of export {release.export_id} to Redis failed in a Spark task "
                               f"({text.splitlines()[0][:300]}); entities written so far hold the new release: rerun "
                               "the same command to complete it") from None
        written.update({v: int(r[f"w{i}"] or 0) for i, v in enumerate(side.views)})
    return written
