"""`lfm materialize --ds D`: load day D's *release* into the online store — every table of it, checked first.

For each export asked for (or every registered one):
- skipped unless (D, export) is released (`lakehouse.releases`): a quarantined, withdrawn or never-validated day
  changes nothing online;
- skipped if the online store already holds a later day's release of the export (its receipt,
  `serving.receipts`): a backfill in any order never rolls the online store back; per key, a newer stored snapshot
  is kept too;
- a release of the day that is no longer current (withdrawn: the day was rewritten) is first taken out
  (`withdraw`): its rows and its ANN index go, the previous release of the export takes their place;
- else each table is read at exactly the version its release names and *all four are checked before the first
  write* (no null key or vector, one width = the export's, every value finite, one snapshot time = the end of D),
  then written under the store's lock and recorded in the Feast registry (materialization interval, so Feast
  serves it) once every write succeeded.
Two writers, one per medium:
- sqlite (the embedded store, one file on this machine): the driver reads the release as Arrow and writes every
  view in one transaction (all or nothing);
- Redis (the store of a deployment): Spark tasks check and write, each partition pipelining its own rows, so the
  driver's memory does not grow with the day (`serving.online_spark`, which says exactly what holds there: one
  HSET per entity with all its views, per-entity atomic; a failure part-way is completed by the rerun).
When IR is loaded, the day's FAISS index for standalone retrieval is built from the same released vectors; the
day's receipt, written last, names the release the online store now holds.
Feast's own `materialize` reads by event-time window and converts every vector to a protobuf in Python; reading
exactly the released partition and writing Feast's bytes in bulk is what makes this path fast (bench/serving.py).
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lakehouse import releases
from lakehouse.delta_io import read_days, to_arrow
from lfm.config import LfmConfig
from lfm.config import KeyType
from lfm.config.serving import OnlineStoreKind
from lfm.contract import EMBEDDING_TABLES, ExportSpec, day_end, day_start
from lfm.names import parse_ds

from feature_repo.specs import key_of, key_type_of, view_name
from serving import receipts
from serving.errors import ServingError
from serving.online_io import reaching_online

log = logging.getLogger("lfm.feast")


class Skip(str, Enum):
    """Why a table of the day was not loaded online."""

    unreleased = "unreleased"  # no release of (D, export): never validated, quarantined or withdrawn
    newer_online = "newer_online"  # the online store already holds a newer snapshot: nothing to do
    empty = "empty"  # the released partition has no rows


@dataclass
class TableLoad:
    export_id: str
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
            lines.append(f"  {x.export_id} {x.table:<8} {state}")
        return "\n".join(lines)


def day_bounds(cfg: LfmConfig, ds: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """[start, end) of local day `ds` in UTC; `end` is the snapshot's event_timestamp by contract."""
    return day_start(ds, cfg.schema.timezone), day_end(ds, cfg.schema.timezone)


def read_release(spark, cfg: LfmConfig, table: str, release: releases.Release) -> pa.Table:
    """One table of a release: its (ds, export) rows at the version the release names, as Arrow."""
    from pyspark.errors import PySparkException
    from pyspark.sql import functions as F

    key_type = key_type_of(cfg, table).spark
    try:
        df = read_days(spark, cfg.table_path(table), release.table_versions[table], [release.ds], release.export_id)
        return to_arrow(df.select(F.col(key_of(cfg, table)).cast(key_type).alias("key"),
                                  F.col(table).cast("array<float>").alias("vector"), F.col("event_timestamp")))
    except PySparkException as err:
        raise ServingError(f"reading {table} of {release.ds} (export {release.export_id}, version "
                           f"{release.table_versions[table]}) failed, nothing was loaded: "
                           f"{str(err).splitlines()[0][:300]}") from None


def unpack(tbl: pa.Table, table: str, dim: int, expected_ts: dt.datetime) -> tuple[np.ndarray, np.ndarray]:
    """(keys, (n, dim) float32 vectors); refuses nulls, other widths, non-finite values or another snapshot time."""
    col = tbl.column("vector").combine_chunks()
    if col.null_count or tbl.column("key").null_count:
        raise ServingError(f"{table}: {col.null_count} null vectors / {tbl.column('key').null_count} null keys in "
                           "a released partition; refusing to load the release")
    lengths = pc.list_value_length(col).to_numpy(zero_copy_only=False)
    if len(lengths) and (lengths.min() != dim or lengths.max() != dim):
        raise ServingError(f"{table}: vectors of widths {sorted(set(lengths.tolist()))[:5]} where the export "
                           f"declares {dim}; refusing to load the release (nothing was written)")
    values = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if not np.isfinite(values).all():
        raise ServingError(f"{table}: NaN or infinite values in a released partition; a non-finite vector is "
                           "never served (nothing was written)")
    times = pc.unique(tbl.column("event_timestamp").combine_chunks())
    stamps = [t.as_py() for t in times]
    stamps = [t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc) for t in stamps]
    if stamps and stamps != [expected_ts]:
        raise ServingError(f"{table}: snapshot times {stamps[:3]} where the contract is one per day, the end of "
                           f"the day ({expected_ts.isoformat()}); refusing to load the release")
    keys = tbl.column("key").to_numpy(zero_copy_only=False)
    return keys, values.reshape(len(keys), dim)


def _checked(cfg: LfmConfig, release: releases.Release, tables: dict[str, pa.Table]):
    """Every table unpacked and checked, before anything is written: {table: (keys, matrix)}."""
    _, end = day_bounds(cfg, release.ds)
    return {t: unpack(tbl, t, release.spec.dim(t), end) for t, tbl in tables.items()}


def _writes(cfg: LfmConfig, spec: ExportSpec, day: dt.date, checked: dict):
    from serving.codec import encode_vectors, entity_keys
    from serving.online_io import ViewWrite

    _, end = day_bounds(cfg, day)
    out = []
    for table, (keys, mat) in checked.items():
        int64 = key_type_of(cfg, table) == KeyType.int64
        kb = entity_keys(key_of(cfg, table), keys if int64 else [str(k) for k in keys], int64)
        out.append(ViewWrite(view_name(table, spec.id), table, kb, encode_vectors(mat), end))
    return out


def materialize(spark, cfg: LfmConfig, ds: str | dt.date, export_ref: str | None = None, store=None,
                build_index: bool = True, replacing: dt.date | None = None) -> MaterializeResult:
    """Load day `ds` of one export (an export id or a model version; default every registered one).

    `replacing` (a withdrawn later day) loads it even when a later day of the export is online, over that day's
    values in place: a withdrawal puts the previous release back without a moment where its keys are empty (the
    writers' per-key rule still keeps every other newer snapshot). An online store that does not answer is
    `OnlineStoreDown`."""
    with reaching_online(cfg):
        return _materialize(spark, cfg, ds, export_ref, store, build_index, replacing)


def _materialize(spark, cfg: LfmConfig, ds: str | dt.date, export_ref: str | None, store, build_index: bool,
                 replacing: dt.date | None) -> MaterializeResult:
    from feature_repo.store import open_store
    from serving.register import registered

    t_all = time.perf_counter()
    day = parse_ds(ds)
    store = store or open_store(cfg)
    reg = registered(store)
    specs = [reg.require(export_ref)] if export_ref else list(reg.specs.values())
    if not specs:
        reg.require(None)  # raises NothingRegistered with the fix
    start, end = day_bounds(cfg, day)
    replaced = day_bounds(cfg, replacing)[1] if replacing else None  # the withdrawn day's snapshot time
    result = MaterializeResult(ds=day)
    for spec in specs:
        release = releases.release_of(cfg, day, spec.id)
        withdraw(spark, cfg, spec, day, store)  # a release of the day other than this one leaves first
        if release is None:
            result.loads += [TableLoad(spec.id, t, False, skip=Skip.unreleased, reason=f"{day} of export {spec.id} "
                                       "is not released (never validated, quarantined or withdrawn)")
                             for t in EMBEDDING_TABLES]
            continue
        later = [d for d in receipts.days(cfg, spec.id) if d > day]
        if later and not replacing:
            result.loads += [TableLoad(spec.id, t, False, skip=Skip.newer_online, reason="online store already "
                                       f"holds the newer release of {later[-1]}") for t in EMBEDDING_TABLES]
            receipts.write(cfg, release)  # the day is as online as it gets: a withdrawal of the later day restores it
            continue
        t0 = time.perf_counter()
        if cfg.feast.online_store == OnlineStoreKind.redis:
            result.loads += _load_from_spark(spark, cfg, store, release, start, end, replaced)
            if build_index:
                result.index_items = index_release(spark, cfg, release)
            receipts.write(cfg, release)
            continue
        with ThreadPoolExecutor(max_workers=len(EMBEDDING_TABLES)) as pool:
            tables = dict(zip(EMBEDDING_TABLES, pool.map(lambda t: read_release(spark, cfg, t, release),
                                                         EMBEDDING_TABLES)))
        checked = _checked(cfg, release, tables)  # all four, before the first write
        empty = [t for t, (keys, _) in checked.items() if len(keys) == 0]
        if empty:
            raise ServingError(f"{day} of export {spec.id}: released tables {empty} have no rows; refusing a partial "
                               "load (nothing was written)")
        result.loads += _write_release(cfg, store, spec, day, checked, start, end, time.perf_counter() - t0, replaced)
        if build_index:
            result.index_items = _index(cfg, spec, release, *checked["ir"])
        receipts.write(cfg, release)
    result.seconds = time.perf_counter() - t_all
    return result


def _write_release(cfg: LfmConfig, store, spec: ExportSpec, day: dt.date, checked: dict, start: dt.datetime,
                   end: dt.datetime, read_seconds: float, replacing: dt.datetime | None) -> list[TableLoad]:
    from serving.online_io import open_online

    t0 = time.perf_counter()
    _log_writing(day, spec.id)
    backend = open_online(cfg)
    try:
        with backend.locked():
            written = backend.write_views(_writes(cfg, spec, day, checked), replacing)
    finally:
        backend.close()
    _record(cfg, store, spec, start, end)
    seconds = read_seconds + time.perf_counter() - t0
    return [TableLoad(spec.id, t, True, rows=len(checked[t][0]), seconds=seconds,
                      reason=f"{written.get(view_name(t, spec.id), 0):,} keys newer than what was online")
            for t in EMBEDDING_TABLES]


def _log_writing(day: dt.date, export_id: str) -> None:
    """The line an operator (and the kill test) sees between the last check and the first online write."""
    log.info("materialize %s export %s: all four tables checked; writing the online store", day, export_id)


def _record(cfg: LfmConfig, store, spec: ExportSpec, start: dt.datetime, end: dt.datetime) -> None:
    """Feast's materialization interval of every view, once every write of the release succeeded (under the
    registry's lease: on an object store Feast rewrites the whole registry)."""
    from serving.register import registry_held

    with registry_held(cfg, store) as fence:
        fence.check()
        for t in EMBEDDING_TABLES:
            store.registry.apply_materialization(store.get_feature_view(view_name(t, spec.id)), store.project,
                                                 start, end, commit=True)


def _load_from_spark(spark, cfg: LfmConfig, store, release: releases.Release, start: dt.datetime,
                     end: dt.datetime, replacing: dt.datetime | None) -> list[TableLoad]:
    """Redis: check all four tables in Spark, then write from Spark tasks under the store's lock."""
    from serving import online_spark
    from serving.online_io import open_online

    t0 = time.perf_counter()
    audits = online_spark.audit_release(spark, cfg, release, end)  # raises before the first write
    _log_writing(release.ds, release.export_id)
    backend = open_online(cfg)
    try:
        with backend.locked():
            written = online_spark.write_release(spark, cfg, release, end, replacing)
    finally:
        backend.close()
    _record(cfg, store, release.spec, start, end)
    seconds = time.perf_counter() - t0
    return [TableLoad(release.export_id, t, True, rows=audits[t].rows, seconds=seconds,
                      reason=f"{written.get(view_name(t, release.export_id), 0):,} keys newer than what was online")
            for t in EMBEDDING_TABLES]


def index_release(spark, cfg: LfmConfig, release: releases.Release) -> int:
    """Build the day's ANN index from exactly its released IR, checked as materialize checks it (what materialize
    does beside the online load; an orchestrator's index task calls it alone); the number of items indexed."""
    keys, mat = _checked(cfg, release, {"ir": read_release(spark, cfg, "ir", release)})["ir"]
    return _index(cfg, release.spec, release, keys, mat)


def _index(cfg: LfmConfig, spec: ExportSpec, release: releases.Release, keys: np.ndarray, mat: np.ndarray) -> int:
    from serving.retrieval import ItemIndex, save_index

    meta = {"model_version": release.model_version, "export_id": spec.id, "ds": release.ds.isoformat(),
            "ir_version": release.table_versions["ir"], "release_run_id": release.run_id}
    save_index(cfg, spec.id, release.ds, ItemIndex.build(keys, mat, cfg.feast.retrieval, meta=meta))
    return len(keys)


# --- withdrawal: a release that is no longer current leaves the online store and the ANN index ----------------------

@dataclass(frozen=True)
class Withdrawal:
    """What taking a withdrawn release of (ds, export) out of serving did."""

    ds: dt.date
    export_id: str
    removed: int  # view values deleted from the online store
    restored: dt.date | None  # the previous release loaded back in its place (None: its keys are simply gone)


def withdraw(spark, cfg: LfmConfig, spec: ExportSpec, ds: dt.date, store=None) -> Withdrawal | None:
    """Take the online release of (ds, export) out when it is no longer the day's current release; None when the
    online store holds the current release or none. Safe to repeat: a failure part-way is finished by the next call.

    Order: the previous released day of the export is loaded over the day's values in place (a reader sees the
    withdrawn day or the previous one, never an empty key), then what is left of the day (keys the previous release
    lacks, found by their snapshot time) and its ANN index go, and only then is the receipt removed, so a crash
    anywhere leaves a receipt that makes the next `run-daily` or `materialize` of the day redo it.
    """
    with reaching_online(cfg):
        return _withdraw(spark, cfg, spec, ds, store)


def _withdraw(spark, cfg: LfmConfig, spec: ExportSpec, ds: dt.date, store) -> Withdrawal | None:
    from serving.online_withdraw import retract_views
    from serving.retrieval import drop_index

    held = receipts.read(cfg, spec.id, ds)
    if held is None or held.names(releases.release_of(cfg, ds, spec.id)):
        return None
    _, end = day_bounds(cfg, ds)
    earlier = [d for d in releases.released(cfg, spec.id) if d < ds]
    if earlier:
        materialize(spark, cfg, earlier[-1], spec.id, store=store, replacing=ds)
    removed = retract_views(cfg, [(view_name(t, spec.id), t) for t in EMBEDDING_TABLES], end)
    drop_index(cfg, spec.id, ds)
    receipts.remove(cfg, spec.id, ds)
    log.info("withdrew %s of export %s from the online store: %d values removed, %s", ds, spec.id, removed,
             f"the release of {earlier[-1]} restored" if earlier else "no earlier release to restore")
    return Withdrawal(ds, spec.id, removed, earlier[-1] if earlier else None)
