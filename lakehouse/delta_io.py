"""Delta Lake helpers shared by every job: existence, reads pinned to a version, atomic partition replace and
restore, commit metadata.

Readers of exported data read the exact versions a release names (`read_table(..., version)`), so a partition
rewritten after its release, by the platform or by anyone else, is invisible to them until it is released again.
Time travel needs the commit log of those versions: new tables keep it for `LOG_RETENTION` (set as table
properties at creation; the platform never VACUUMs). A pinned version whose data files are gone (a VACUUM below
the retention) or damaged (a truncated copy) is refused as `DataFilesLost`, naming the table, the version, the
day and the fix: `read_days` checks the files against their commit before Spark reads them, and `to_arrow`
translates the read error Spark raises lazily, at collection, for damage the check cannot see.

A table's log (exists, version, history, partition values, file statistics) is read with delta-rs, in
milliseconds and without a Spark job (a Spark `DeltaTable` loads the table's snapshot first: 180 ms against 8.5 ms
on an S3 table, docs/object_store_bench.md): on this machine's disk always, on an S3-API store when the caller
passes the store's options (`cfg.delta_rs_options(path)`; credentials come from the AWS environment, as Spark's).
Data is read and written by Spark. On local disk its Delta log store commits with a rename that refuses an
existing version: two writers can never both commit version N. A table on an S3-API store (`lfm.storage`) is read
and written by Spark through `s3a://` (`Location.for_spark()`), and there
Delta-Spark's log store (S3SingleDriverLogStore) is safe for one driver only: two drivers committing version N at
once can silently overwrite each other's commit. So every Spark commit to such a table is made while holding the
table's lease (`TableLeases`: `<lakehouse>/_locks/table-<name>.lease`, `lakehouse.leases`), with the fence checked
right before the commit; a write function refuses an S3 table when it is given no `TableLeases`.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import deltalake
import pyarrow as pa
import pyarrow.compute as pc
from delta.tables import DeltaTable
from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession

from lakehouse.leases import Lease, holder_text, waiting_for
from lakehouse.objects import Objects
from lfm.config import LfmConfig
from lfm.errors import DataFilesLost, LfmError
from lfm.names import check_export_id, parse_ds
from lfm.storage import Location, StorageKind, is_local, location

log = logging.getLogger(__name__)

# Kept for as long as a release may be read (training sets reach back months); Delta's default is 30 days.
LOG_RETENTION = "interval 3650 days"
_TABLE_PROPERTIES = {"delta.logRetentionDuration": LOG_RETENTION,
                     "delta.deletedFileRetentionDuration": LOG_RETENTION}


def _local(path: str) -> bool:
    """A table on this machine's file system (its files can be checked with `stat`)."""
    return is_local(path)


Storage = Mapping[str, str] | None  # delta-rs options of an object store (`cfg.delta_rs_options`); None: none given


def _log_reader(path: str, storage: Storage) -> tuple[str, dict[str, str]] | None:
    """How delta-rs reaches the table (its URI and options), or None where only Spark can: an object store whose
    options were not given, or one delta-rs is not set up for here."""
    where = location(path)
    if where.local:
        return str(where.path()), {}
    if storage is not None and where.kind in DELTA_RS_LOGS:
        return where.for_delta_rs(), dict(storage)
    return None


def _rs_table(reader: tuple[str, dict[str, str]], version: int | None = None) -> deltalake.DeltaTable:
    uri, options = reader
    at = None if version is None else int(version)
    return deltalake.DeltaTable(uri, version=at, storage_options=options or None)


def _spark(path: str) -> str:
    """The text Spark reads `path` by: `s3a://` for an S3-API store (delta-rs and the config spell it `s3://`)."""
    return location(path).for_spark()


# Stores whose Delta-Spark log store lets two drivers overwrite each other's commit: commits there hold a lease.
# (Local disk commits with a rename that refuses an existing file; Delta's GCS and Azure log stores are safe for
# several drivers by their own conditional writes.)
LEASED_COMMITS = frozenset({StorageKind.s3})
DELTA_RS_LOGS = frozenset({StorageKind.s3})  # object stores whose logs delta-rs reads with the `storage:` options


class _Unfenced:
    """The fence of a table whose store itself refuses a second commit of one version: nothing to check."""

    def check(self) -> None:
        return None


class TableLeases:
    """Who commits to object-store tables, and how: each Spark commit to a table on an S3-API store holds that
    table's lease, `<lakehouse>/_locks/table-<name>.lease` (a table outside the lakehouse: `_locks` beside it),
    waiting up to `wait_seconds` for another driver's commit to finish (or for a dead holder's lease to expire).

    Pass one to the write functions (`replace_partitions`, `append_rows`, `overwrite_table`, `restore_partitions`)
    for tables that may be on an object store; local tables ignore it."""

    def __init__(self, cfg: LfmConfig, run_id: str, wait_seconds: float = 600.0) -> None:
        self.cfg, self.run_id, self.wait_seconds = cfg, run_id, wait_seconds
        self._stores: dict[str, Objects] = {}

    def place(self, path: str) -> tuple[Location, str]:
        """The folder and key of the lease of the table at `path`."""
        table = location(path)
        lakehouse = self.cfg.location(self.cfg.lakehouse)
        if lakehouse.kind == table.kind:
            root, mine = lakehouse.for_delta_rs().rstrip("/") + "/", table.for_delta_rs().rstrip("/")
            if mine.startswith(root) and mine != root.rstrip("/"):
                return lakehouse.child("_locks"), f"table-{mine[len(root):].replace('/', '.')}.lease"
        parent, _, name = table.uri.rstrip("/").rpartition("/")
        return location(parent).child("_locks"), f"table-{name}.lease"

    def _objects(self, folder: Location) -> Objects:
        if folder.uri not in self._stores:
            self._stores[folder.uri] = Objects(self.cfg, folder)
        return self._stores[folder.uri]

    @contextmanager
    def held(self, path: str) -> Iterator[Lease]:
        """Hold the lease of the table at `path` for the block (renewed meanwhile); yields it as the fence whose
        `check()` the writer calls right before it commits."""
        folder, key = self.place(path)
        with waiting_for(self._objects(folder), key, holder_text(self.run_id), self.cfg.storage.lease_seconds,
                         self.wait_seconds, f"the commits to {path}") as lease:
            yield lease


def _storage_of(path: str, leases: TableLeases | None) -> Storage:
    """The delta-rs options of `path`'s store, known from the writer's config (None without one)."""
    return leases.cfg.delta_rs_options(path) if leases is not None else None


@contextmanager
def _committing(path: str, leases: TableLeases | None) -> Iterator[_Unfenced | Lease]:
    """The block in which one Spark commit to `path` is made: under the table's lease on a store that needs one."""
    if location(path).kind not in LEASED_COMMITS:
        yield _Unfenced()
        return
    if leases is None:
        raise LfmError(f"{path} is on an S3 object store, where two Spark drivers can overwrite each other's "
                       "commit: a Delta write there must hold the table's lease (pass "
                       "leases=lakehouse.delta_io.TableLeases(cfg, run_id))")
    with leases.held(path) as lease:
        yield lease


def table_exists(spark: SparkSession, path: str, storage: Storage = None) -> bool:
    reader = _log_reader(path, storage)
    if reader is not None:
        return deltalake.DeltaTable.is_deltatable(reader[0], storage_options=reader[1] or None)
    return DeltaTable.isDeltaTable(spark, _spark(path))


def ds_predicate(days: list[dt.date], column: str = "ds") -> str:
    """A SQL predicate over validated dates only (never raw user strings)."""
    if not days:
        raise ValueError("ds_predicate needs at least one day")
    literals = ", ".join(f"DATE'{parse_ds(d).isoformat()}'" for d in sorted(set(days)))
    return f"{column} IN ({literals})"


def export_predicate(days: list[dt.date], export_id: str) -> str:
    """The rows of `days` of one export (partition columns `ds`, `export_id`); both validated first."""
    return f"({ds_predicate(days)}) AND export_id = '{check_export_id(export_id)}'"


def replace_partitions(df: DataFrame, path: str, days: list[dt.date], metadata: dict,
                       extra_predicate: str = "", partition_by: tuple[str, ...] = ("ds",), column: str = "ds",
                       merge_schema: bool = False, leases: TableLeases | None = None) -> int | None:
    """Replace the `ds` partitions `days` of the Delta table at `path` with `df` in one atomic commit.

    Readers see either the old partitions or the new ones, never a mix; rerunning replaces, never duplicates.
    `extra_predicate` narrows the replaced rows further (e.g. one model_version inside a ds).
    `partition_by` applies when the table is created: partitioning by the columns of `extra_predicate` too (e.g.
    ("ds", "model_version")) makes the replace a metadata-only swap of whole folders instead of a file rewrite.
    `column` is the date column the days are of (`valid_from` for feature snapshots); `merge_schema` lets the
    write add columns the table lacks. `leases`: how to commit to a table on an object store (`TableLeases`).
    Returns the table version after the write (the commit just made, unless another writer committed since; on an
    object store, where the commit holds the table's lease, always the commit just made).
    """
    predicate = ds_predicate(days, column)
    if extra_predicate:
        predicate = f"({predicate}) AND ({extra_predicate})"
    spark = df.sparkSession
    writer = df.write.format("delta").option("userMetadata", json.dumps(metadata, sort_keys=True))
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    storage = _storage_of(path, leases)
    with _committing(path, leases) as fence:
        if table_exists(spark, path, storage):
            writer = writer.mode("overwrite").option("replaceWhere", predicate)
        else:
            for key, value in _TABLE_PROPERTIES.items():
                writer = writer.option(key, value)
            writer = writer.mode("overwrite").partitionBy(*partition_by)
        fence.check()
        writer.save(_spark(path))
        return table_version(spark, path, storage)


def append_rows(df: DataFrame, path: str, metadata: dict, leases: TableLeases | None = None) -> int | None:
    """Append `df` in one commit (the record tables: runs, verdicts, candidates, releases); returns its version."""
    writer = df.write.format("delta").mode("append").option("userMetadata", json.dumps(metadata, sort_keys=True))
    storage = _storage_of(path, leases)
    with _committing(path, leases) as fence:
        if not table_exists(df.sparkSession, path, storage):
            for key, value in _TABLE_PROPERTIES.items():
                writer = writer.option(key, value)
        fence.check()
        writer.save(_spark(path))
        return table_version(df.sparkSession, path, storage)


def overwrite_table(df: DataFrame, path: str, metadata: dict, partition_by: tuple[str, ...] = (),
                    leases: TableLeases | None = None) -> None:
    """Replace a whole table (schema and partitioning too) in one commit; the previous version stays in the
    time-travel log."""
    writer = (df.write.format("delta").mode("overwrite").option("overwriteSchema", "true")
              .option("partitionOverwriteMode", "static")  # the whole table, whatever the session's dynamic default
              .partitionBy(*partition_by).option("userMetadata", json.dumps(metadata, sort_keys=True)))
    with _committing(path, leases) as fence:
        fence.check()
        writer.save(_spark(path))


def table_version(spark: SparkSession, path: str, storage: Storage = None) -> int | None:
    """The latest commit version of a Delta table, recorded as an input version in downstream commits."""
    if not table_exists(spark, path, storage):
        return None
    reader = _log_reader(path, storage)
    if reader is not None:
        return int(_rs_table(reader).version())
    return int(DeltaTable.forPath(spark, _spark(path)).history(1).collect()[0]["version"])


@dataclass(frozen=True)
class DayStats:
    rows: int
    latest_ms: int | None  # the largest `time_column` value (epoch ms, truncated as Delta's statistics keep it)


def day_stats(path: str, version: int, day: dt.date, time_column: str, storage: Storage = None) -> DayStats | None:
    """Rows and latest time of the `ds` partition `day` at `version`, from the commit log's per-file statistics
    (no scan, no Spark job); None when they are not at hand (a store delta-rs cannot reach, a file written without
    them)."""
    reader = _log_reader(path, storage)
    if reader is None:
        return None
    actions = pa.table(_rs_table(reader, version).get_add_actions(flatten=True))
    if "partition.ds" not in actions.column_names:
        return None
    mine = actions.filter(pc.equal(actions.column("partition.ds"), pa.scalar(parse_ds(day), pa.date32())))
    latest = f"max.{time_column}"
    if mine.num_rows == 0:
        return DayStats(0, None)
    if latest not in mine.column_names or mine.column("num_records").null_count or mine.column(latest).null_count:
        return None
    return DayStats(int(pc.sum(mine.column("num_records")).as_py()),
                    int(pc.max(pc.cast(mine.column(latest), pa.timestamp("ms", tz="UTC"))).value))


def partition_dates(spark: SparkSession, path: str, column: str, version: int | None = None,
                    storage: Storage = None) -> list[dt.date]:
    """The distinct values of a DATE partition column at `version` (default: latest), sorted: from the commit
    log's file list (no scan) where delta-rs reaches the table, else a Spark query of that column alone."""
    reader = _log_reader(path, storage)
    if reader is not None:
        actions = pa.table(_rs_table(reader, version).get_add_actions(flatten=True))
        name = f"partition.{column}"
        if name in actions.column_names:
            return sorted({d for d in actions.column(name).to_pylist() if d is not None})
    values = read_table(spark, path, version).select(column).distinct().collect()
    return sorted(r[0] for r in values if r[0] is not None)


def read_table(spark: SparkSession, path: str, version: int | None = None) -> DataFrame:
    """A Delta table, pinned to `version` when given, so a job reads exactly the inputs it records."""
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", int(version))
    return reader.load(_spark(path))


def read_days(spark: SparkSession, path: str, version: int, days: list[dt.date], export_id: str) -> DataFrame:
    """The (days, export) partitions of `version`, once every file of them is there at its logged size (a local
    table; Spark would otherwise fail on a lost file only when the rows are collected, in a JVM trace)."""
    if _local(path):
        _check_files(path, int(version), days, export_id)
    return read_table(spark, path, version).where(export_predicate(days, export_id))


def _check_files(path: str, version: int, days: list[dt.date], export_id: str) -> None:
    """Raise `DataFilesLost` for the first file of (days, export) at `version` that is gone or not its logged size."""
    actions = pa.table(deltalake.DeltaTable(path, version=version).get_add_actions(flatten=True)).to_pylist()
    wanted = {parse_ds(d) for d in days}
    for a in actions:
        if a.get("partition.ds") in wanted and a.get("partition.export_id") == export_id:
            file = Path(path, unquote(a["path"]))
            size = file.stat().st_size if file.is_file() else None
            if size != a["size_bytes"]:
                damage = "is gone" if size is None else f"has {size} bytes where its commit logged {a['size_bytes']}"
                raise _lost(path, f"version {version}", file, damage)


_READ_FAULT = re.compile(r"\[FAILED_READ_FILE\.(\w+)\] Encountered error while reading file (\S+?)\.?\s")


def to_arrow(df: DataFrame) -> pa.Table:
    """`df.toArrow()`, with a data file Spark cannot read raised as `DataFilesLost` (table, the version that
    wrote the file, day, fix) instead of a JVM trace: Spark reads lazily, so a pinned read fails here."""
    try:
        return df.toArrow()
    except (PySparkException, Py4JJavaError) as err:
        fault = _READ_FAULT.search(str(err))
        if fault is None:
            raise
        file = Path(unquote(urlparse(fault.group(2)).path))
        root = next((d for d in file.parents if (d / "_delta_log").is_dir()), file.parent)
        damage = "is gone" if fault.group(1) == "FILE_NOT_EXIST" else f"cannot be read ({fault.group(1)})"
        raise _lost(str(root), _writer_version(root, file), file, damage) from None


def _writer_version(root: Path, file: Path) -> str:
    """'version N' for the commit that added `file` to the table at `root` (from its JSON log)."""
    needle = f'"path":"{file.relative_to(root).as_posix()}"'
    for commit in sorted((root / "_delta_log").glob("*.json")):
        if any(needle in line and line.startswith('{"add"') for line in commit.read_text().splitlines()):
            return f"version {int(commit.stem)}"
    return "a version"


def _lost(path: str, version: str, file: Path, damage: str) -> DataFilesLost:
    """The message of a lost or damaged data file: what it was, where, and how to get the day back."""
    day = next((part.split("=", 1)[1] for part in file.parts if part.startswith("ds=")), "D")
    export = next((f" of export {part.split('=', 1)[1]}" for part in file.parts if part.startswith("export_id=")), "")
    return DataFilesLost(
        f"table {Path(path).name} {version} cannot be read: its file {file} (day {day}{export}) {damage}. A VACUUM "
        f"below the tables' retention removes files that releases name, and a damaged copy cannot be read; nothing "
        f"of this version is served. Re-run the day to write, gate and release it again: `lfm refresh --ds {day}` (or `lfm run-daily "
        f"--ds {day} --force`), and never VACUUM these tables below their retention (delta.deletedFileRetentionDuration"
        f" = {LOG_RETENTION})")


def history(spark: SparkSession, path: str, limit: int | None = None, storage: Storage = None) -> list[dict]:
    """The newest `limit` commits (default: all), newest first: version, operation and the parsed userMetadata."""
    reader = _log_reader(path, storage)
    if reader is not None:
        rows = [(c.get("version"), c.get("operation"), c.get("userMetadata"))
                for c in _rs_table(reader).history(limit)]
    else:
        table = DeltaTable.forPath(spark, _spark(path))
        hist = table.history(limit) if limit else table.history()
        rows = [(r["version"], r["operation"], r["userMetadata"])
                for r in hist.select("version", "operation", "userMetadata").collect()]
    out = [{"version": int(v), "operation": op, "userMetadata": json.loads(meta) if meta else {}}
           for v, op, meta in rows]
    return sorted(out, key=lambda c: c["version"], reverse=True)


def commit_info(spark: SparkSession, path: str, version: int | None = None, storage: Storage = None) -> dict:
    """The commit `version` (default: latest): version, operation and the parsed userMetadata."""
    latest = table_version(spark, path, storage)
    want = latest if version is None else int(version)
    found = [c for c in history(spark, path, latest - want + 1, storage) if c["version"] == want] \
        if latest is not None and 0 <= want <= latest else []
    if not found:
        raise ValueError(f"{path} has no commit {version}")
    return found[0]


def restore_partitions(spark: SparkSession, path: str, days: list[dt.date], version_before: int | None,
                       metadata: dict, extra_predicate: str = "", leases: TableLeases | None = None) -> int | None:
    """Undo a replace of (`days`, `extra_predicate`): put back those rows as they were at `version_before`.

    Used to roll back the tables a multi-table job already committed when a later step fails. The rows come
    from time travel; `version_before=None` (the table did not exist) deletes the rows the job wrote.
    """
    storage = _storage_of(path, leases)
    if not table_exists(spark, path, storage):
        return None
    predicate = ds_predicate(days)
    if extra_predicate:
        predicate = f"({predicate}) AND ({extra_predicate})"
    if version_before is None:
        with _committing(path, leases) as fence:
            table = DeltaTable.forPath(spark, _spark(path))
            fence.check()
            table.delete(predicate)
            return table_version(spark, path, storage)
    old = read_table(spark, path, version_before).where(predicate)
    return replace_partitions(old, path, days, metadata, extra_predicate,
                              partition_by=tuple(partition_columns(spark, path)) or ("ds",), leases=leases)


def partition_columns(spark: SparkSession, path: str) -> list[str]:
    """The partition columns of an existing Delta table."""
    return list(DeltaTable.forPath(spark, _spark(path)).detail().first()["partitionColumns"])
