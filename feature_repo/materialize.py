"""`lfm materialize --ds D`: load day D's snapshot into the online store, only where the quality gate passed.

For each registered version (or `--model V`) and each of UR, IR, CR(user), CR(item):
- skipped unless `validation.status.passed_tables(spark, cfg, D, V)` names the table (a missing, failed or
  never-validated partition changes nothing online);
- skipped if the online store already holds a newer snapshot of that view (a backfill in any order never rolls
  the online store back);
- else the partition's rows are read through the view's own Feast source (the version-filtered Delta query),
  checked (one vector width, one snapshot timestamp), written in Feast's layout in one transaction per view,
  and recorded in the Feast registry (materialization interval, view state AVAILABLE_ONLINE) so Feast serves it.
The gate query and the four partition reads run as concurrent Spark jobs; writing starts only after the gate's
verdict and only for the tables it passed (a read of a table it did not pass is discarded).
When IR is loaded, the day's FAISS index for standalone retrieval is built from the same vectors.
Feast's own `materialize` reads by event-time window and converts every vector to a protobuf in Python; reading
exactly the gated partition and writing Feast's bytes in bulk is what makes this path fast (bench/serving.py).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from enum import Enum
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lfm.config import LfmConfig
from lfm.config.serving import EntityKeyType
from lfm.names import parse_ds

from feature_repo.errors import ServingError
from feature_repo.specs import TABLES, VersionSpec, key_of, view_name

log = logging.getLogger("lfm.feast")
Gate = Callable[..., set]


class Skip(str, Enum):
    """Why a table of the day was not loaded online."""

    gate = "gate"  # the quality gate has not passed it (missing, failed or never validated): a refusal
    newer_online = "newer_online"  # the online store already holds a newer snapshot: nothing to do
    empty = "empty"  # the partition has no rows


@dataclass
class TableLoad:
    version: str
    table: str
    loaded: bool
    rows: int = 0
    reason: str = ""
    seconds: float = 0.0
    skip: Skip | None = None


@dataclass
class MaterializeResult:
    ds: dt.date
    loads: list[TableLoad] = field(default_factory=list)
    index_items: int = 0
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(x.rows for x in self.loads if x.loaded)

    def summary(self) -> str:
        lines = []
        for x in self.loads:
            state = f"loaded {x.rows:,} rows in {x.seconds:.2f}s" if x.loaded else f"skipped: {x.reason}"
            lines.append(f"  {x.version} {x.table:<8} {state}")
        return "\n".join(lines)


def quality_gate(spark, cfg: LfmConfig, ds: dt.date, version: str) -> set:
    """The quality gate's verdict (validation issue); imported lazily so serving has no import-time dependency."""
    from validation.status import passed_tables

    return set(passed_tables(spark, cfg, ds, version))


def day_bounds(cfg: LfmConfig, ds: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of local day `ds` in UTC; `end` is the snapshot's event_timestamp by contract."""
    tz = ZoneInfo(cfg.schema.timezone)
    start = dt.datetime.combine(ds, dt.time(), tz).astimezone(dt.timezone.utc)
    end = dt.datetime.combine(ds + dt.timedelta(days=1), dt.time(), tz).astimezone(dt.timezone.utc)
    return start, end


def _newest_loaded(fv) -> dt.datetime | None:
    ends = [end for _, end in (fv.materialization_intervals or [])]
    if not ends:
        return None
    return max(e if e.tzinfo else e.replace(tzinfo=dt.timezone.utc) for e in ends)


def read_partition(spark, cfg: LfmConfig, fv, table: str, ds: dt.date) -> pa.Table:
    """One day's rows of a view through the view's own source query (so exactly its version and layer)."""
    from pyspark.sql import functions as F

    from pyspark.errors import PySparkException

    key_type = "bigint" if cfg.feast.entity_key_type == EntityKeyType.int64 else "string"
    try:
        return (spark.sql(fv.batch_source.query).where(F.col("ds") == F.lit(ds))
                .select(F.col(key_of(cfg, table)).cast(key_type).alias("key"),
                        F.col(table).cast("array<float>").alias("vector"), F.col("event_timestamp"))
                .toArrow())
    except PySparkException as err:
        raise ServingError(f"reading {table} of {ds} for {fv.name} failed, nothing of it was loaded: "
                           f"{str(err).splitlines()[0][:300]}") from None


def unpack(tbl: pa.Table, table: str, dim: int) -> tuple[np.ndarray, np.ndarray, dt.datetime]:
    """(keys, (n, dim) float32 vectors, the one snapshot timestamp); refuses nulls, mixed widths or times."""
    col = tbl.column("vector").combine_chunks()
    if col.null_count or tbl.column("key").null_count:
        raise ServingError(f"{table}: {col.null_count} null vectors / {tbl.column('key').null_count} null keys in "
                           "a partition the gate passed; refusing to load it")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths.min() != dim or lengths.max() != dim):
        raise ServingError(f"{table}: vectors of widths {sorted(set(lengths.tolist()))[:5]} where the registered "
                           f"view declares {dim}; re-register the model version (lfm register)")
    values = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    times = pc.unique(tbl.column("event_timestamp").combine_chunks())
    if len(times) != 1:
        raise ServingError(f"{table}: {len(times)} different event_timestamps in one ds partition; the contract "
                           "is one snapshot time per day (end of day)")
    ts = times[0].as_py()
    ts = ts if ts.tzinfo else ts.replace(tzinfo=dt.timezone.utc)
    keys = tbl.column("key").to_numpy(zero_copy_only=False)
    return keys, values.reshape(len(keys), dim), ts


def _write(cfg: LfmConfig, backend, fv, table: str, keys: np.ndarray, mat: np.ndarray, ts: dt.datetime) -> None:
    from feature_repo.codec import encode_vectors, entity_keys

    int64 = cfg.feast.entity_key_type == EntityKeyType.int64
    kb = entity_keys(key_of(cfg, table), keys if int64 else [str(k) for k in keys], int64)
    backend.write(fv.name, table, kb, encode_vectors(mat), ts)


def _load(cfg: LfmConfig, store, backend, fv, table: str, spec: VersionSpec, day: dt.date,
          tbl: pa.Table) -> tuple[TableLoad, tuple[np.ndarray, np.ndarray] | None]:
    """Write one read partition online and record the interval in Feast's registry; (load, (keys, vectors))."""
    t0 = time.perf_counter()
    if tbl.num_rows == 0:
        return TableLoad(spec.version, table, False, reason="no rows in the Delta partition", skip=Skip.empty), None
    keys, mat, ts = unpack(tbl, table, spec.dim(table))
    _write(cfg, backend, fv, table, keys, mat, ts)
    start, _ = day_bounds(cfg, day)
    store.registry.apply_materialization(fv, store.project, start, ts, commit=True)
    return TableLoad(spec.version, table, True, rows=len(keys), seconds=time.perf_counter() - t0), (keys, mat)


def materialize(spark, cfg: LfmConfig, ds: str | dt.date, model_version: str | None = None,
                gate: Gate | None = None, store=None, build_index: bool = True) -> MaterializeResult:
    """Load day `ds` for one version (or every registered one); see the module docstring for the rules."""
    from feature_repo.online_io import open_online
    from feature_repo.register import registered
    from feature_repo.store import open_store

    t_all = time.perf_counter()
    day = parse_ds(ds)
    store = store or open_store(cfg)
    reg = registered(store)
    versions = [reg.require(model_version).version] if model_version else sorted(reg.specs)
    if not versions:
        reg.require(None)  # raises NothingRegistered with the fix
    gate = gate or quality_gate
    _, day_end = day_bounds(cfg, day)
    result = MaterializeResult(ds=day)
    backend = open_online(cfg)
    try:
        for version in versions:
            spec = reg.specs[version]
            views, newest = {}, {}
            for table in TABLES:
                views[table] = store.get_feature_view(view_name(table, version))
                newest[table] = _newest_loaded(views[table])
            fresh = [t for t in TABLES if newest[t] is None or newest[t] <= day_end]
            # The gate query and the partition reads run concurrently (Spark runs jobs from several threads);
            # nothing is written before the gate's verdict, and only what it passed; each passed table is
            # written as soon as its read is back, while the other reads still run.
            loads: dict[str, TableLoad] = {}
            with ThreadPoolExecutor(max_workers=1 + len(fresh)) as pool:
                verdict = pool.submit(gate, spark, cfg, day, version)
                reads = {pool.submit(read_partition, spark, cfg, views[t], t, day): t for t in fresh}
                passed = verdict.result()
                for table in TABLES:
                    if table not in passed:
                        loads[table] = TableLoad(version, table, False, skip=Skip.gate, reason=f"quality gate has "
                                                 f"not passed {table} of {day} (missing, failed or not validated)")
                    elif table not in fresh:
                        loads[table] = TableLoad(version, table, False, skip=Skip.newer_online, reason=f"online store "
                                                 f"already holds the newer snapshot ending {newest[table].isoformat()}")
                for future in [f for f, t in reads.items() if t not in passed]:
                    future.cancel()
                for future in as_completed([f for f, t in reads.items() if t in passed]):
                    table = reads[future]
                    loads[table], written = _load(cfg, store, backend, views[table], table, spec, day,
                                                  future.result())
                    if table == "ir" and build_index and written is not None:
                        from feature_repo.retrieval import ItemIndex, index_dir

                        keys, mat = written
                        ItemIndex.build(keys, mat, cfg.feast.retrieval,
                                        meta={"model_version": version, "ds": day.isoformat()}
                                        ).save(index_dir(cfg, version, day))
                        result.index_items = len(keys)
            result.loads += [loads[t] for t in TABLES]
    finally:
        backend.close()
    result.seconds = time.perf_counter() - t_all
    return result
