"""Writing releases into a real online store the way materialize does, and reading them back with Feast's own
reader: shared by the online-store layout tests and the whole-entity read tests (no Spark, no Delta)."""
from __future__ import annotations

import datetime as dt

import numpy as np

from feature_repo.specs import view_name
from lfm.contract import EMBEDDING_TABLES
from tests.support.config import keyed_sources, make_config
from tests.support.synthetic_vectors import spec

SPEC = spec("c0ffee00c0ffee00c0ff", ur_dim=8, ir_dim=8, cr_dim=4, cr_layer="dnn_0")
T1 = dt.datetime(2022, 5, 5, 16, tzinfo=dt.timezone.utc)
T2 = T1 + dt.timedelta(days=1)


def configured(tmp_path, kind: str, key_type: str, redis_server=None):
    """A registered repo of SPEC on `kind`, its keys declared `key_type` ('int64': int, or 'string')."""
    from serving.register import register

    feast = {"repo_path": str(tmp_path / "repo"), "online_store": kind}
    if redis_server is not None:
        import redis

        redis.Redis(host="127.0.0.1", port=redis_server.port).flushall()
        feast["redis_connection"] = redis_server.connection
    column = "int" if key_type == "int64" else key_type
    cfg = make_config(tmp_path, feast=feast, sources=keyed_sources(user_type=column, item_type=column))
    register(cfg, [SPEC])
    return cfg


def write(cfg, ids: list, day_ts: dt.datetime, seed: int, batch_rows: int = 3,
          replacing: dt.datetime | None = None) -> dict[str, np.ndarray]:
    """One 'release' of all four views through our writer (sqlite: the driver's transaction; Redis: the Spark
    tasks' kernel, fed the Arrow batches Spark would hand it), over a withdrawn snapshot `replacing` if given;
    returns the vectors written per table."""
    rng = np.random.default_rng(seed)
    mats = {t: rng.normal(size=(len(ids), SPEC.dim(t))).astype(np.float32) for t in EMBEDDING_TABLES}
    if cfg.feast.online_store.value == "redis":
        redis_write(cfg, ids, day_ts, mats, batch_rows, replacing)
        return mats
    from feature_repo.specs import key_of, key_type_of
    from lfm.config import KeyType
    from serving.codec import encode_vectors, entity_keys
    from serving.online_io import ViewWrite, open_online

    writes = []
    for table in EMBEDDING_TABLES:
        int64 = key_type_of(cfg, table) == KeyType.int64
        writes.append(ViewWrite(view_name(table, SPEC.id), table, entity_keys(key_of(cfg, table), ids, int64),
                                encode_vectors(mats[table]), day_ts))
    backend = open_online(cfg)
    try:
        with backend.locked():
            backend.write_views(writes, replacing)
    finally:
        backend.close()
    return mats


def redis_write(cfg, ids: list, day_ts: dt.datetime, mats: dict[str, np.ndarray], batch_rows: int = 3,
                replacing: dt.datetime | None = None) -> None:
    """Both entity sides through `serving.online_spark.redis_write_batches`, in batches of `batch_rows` rows."""
    import pyarrow as pa

    from inference.decay import matrix_to_list
    from serving.online_spark import RedisTarget, redis_write_batches, sides

    f = cfg.feast
    target = RedisTarget(f.redis_connection, f.project, None, int(day_ts.timestamp()),
                         int(replacing.timestamp()) if replacing else 0)
    for side in sides(cfg, SPEC):
        cols = {"key": pa.array(ids, pa.int64() if side.key.int64 else pa.string())}
        cols.update({f"v{i}": matrix_to_list(mats[t]) for i, t in enumerate(side.tables)})
        batch = pa.RecordBatch.from_pydict(cols)
        batches = [batch.slice(i, batch_rows) for i in range(0, batch.num_rows, batch_rows)]
        list(redis_write_batches(iter(batches), side, target))


def feast_read(cfg, ids: list) -> dict:
    from feature_repo.store import open_store

    refs = [f"{view_name(t, SPEC.id)}:{t}" for t in EMBEDDING_TABLES]
    rows = [{cfg.schema.user_key: i, cfg.schema.item_key: i} for i in ids]
    return open_store(cfg).get_online_features(features=refs, entity_rows=rows).to_dict()
