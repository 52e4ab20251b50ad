"""The record tables (`ingest_log`, `refresh_log`, `gate_status`, `releases`, `runs`), read and appended without
Spark.

They hold a few rows per day: delta-rs (`deltalake`) reads or appends them in milliseconds where a Spark job costs
seconds, so deciding that a finished day has nothing to do, `lfm status` and `lfm retrieve` start no JVM. They are
ordinary Delta tables: Spark reads them too (Feast's source queries join `releases`). Appends are single commits,
so a crash leaves either the row or nothing; rows are never updated — the newest row of a key decides.

They are the source of truth (what was refreshed, gated, released, run), so one that cannot be read stops every
reader and writer with a `StorageFault` naming the table and the fix; it never reads as empty.
Fresh or deleted — the rule: a record table was written iff its creation marker `<lakehouse>/_records/<table>`
exists. The marker is written after the table's first commit (and by every later read or append of a table that
lacks one, so lakehouses older than the markers get theirs the first time they are used). A missing table with no
marker was never written (a fresh lakehouse: no rows); a marked table whose `_delta_log` is gone was deleted
(`RecordTableMissing`), and every read or append of *any* record table of that lakehouse checks all markers, so a
deleted `releases` also stops `run-daily`'s "day already done" decision, which reads `runs` only. Which other
tables exist proves nothing: a lakehouse legitimately holds candidates and no `gate_status` (`--no-gate`), or
verdicts and no `releases` (every day quarantined). An object-store lakehouse has no markers: there a missing
record table reads as never written.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, QueryBuilder, write_deltalake
from deltalake.exceptions import DeltaError, TableNotFoundError

from lfm.config import LfmConfig
from lfm.contract import GATE_STATUS, INGEST_LOG, REFRESH_LOG, RELEASES, RUNS
from lfm.errors import RecordTableCorrupt, RecordTableMissing
from lfm.storage import is_local, location

log = logging.getLogger(__name__)

Options = dict[str, str] | None  # delta-rs storage options of an object-store table (None: local or defaults)

COMPACT_EVERY = 20  # commits between compactions of the small append files
CHECKPOINT_EVERY = "10"  # a Delta checkpoint every 10 commits: a reader replays at most 10 JSON entries
MARKERS = "_records"  # <lakehouse>/_records/<table>: that record table was created
# What rebuilds a record table's rows once it is empty again (restored from no backup) or lost its newest commit.
REBUILD = {
    INGEST_LOG: "ingest each day again: `lfm ingest --ds D` (a day with no events is recorded as such anew)",
    REFRESH_LOG: "re-run each day: `lfm refresh --ds D` (or `lfm run-daily --ds D --force`)",
    GATE_STATUS: "gate each day again: `lfm validate --ds D`",
    RELEASES: "gate and publish each day again: `lfm validate --ds D` (nothing is served until a day is released)",
    RUNS: "`lfm run-daily --ds D` records each day's steps anew",
}


def _marker(path: str) -> Path | None:
    """The creation marker of the record table at `path`; None on an object store."""
    if not is_local(path):
        return None
    table = Path(path)
    return table.parent / MARKERS / table.name


def _mark(path: str) -> None:
    """Record that the table at `path` exists (idempotent); a read-only lakehouse is read without marking it."""
    marker = _marker(path)
    if marker is None or marker.exists():
        return
    try:
        marker.parent.mkdir(exist_ok=True)
        marker.touch()
    except OSError as err:
        log.debug("cannot mark record table %s as created: %s", path, err)


def _rebuild(path: str) -> str:
    return REBUILD.get(Path(path).name, "re-run the days that wrote it")


def _missing(path: str, marker: Path) -> RecordTableMissing:
    name = Path(path).name
    return RecordTableMissing(
        f"record table {name} is missing: {path} was written (marker {marker}) but its folder is gone. It is the "
        f"source of truth, so nothing runs until it is back: restore the folder from a backup; without one, delete "
        f"{marker} to start {name} empty, then {_rebuild(path)}")


def _damaged_commits(path: str) -> tuple[list[str], bool]:
    """The commits of a local table's `_delta_log` that do not parse (torn or overwritten), and whether that is
    the newest commit alone (then moving it aside loses just that one append)."""
    if not is_local(path):
        return [], False
    commits, bad = sorted(Path(path, "_delta_log").glob("*.json")), []
    for commit in commits:
        try:
            [json.loads(line) for line in commit.read_text().splitlines() if line.strip()]
        except (ValueError, UnicodeDecodeError):
            bad.append(commit.name)
    return bad, bool(commits) and bad == [commits[-1].name]


def _lost_files(table: DeltaTable) -> str:
    """Which of a local table's data files are gone ('' when none is)."""
    lost = [Path(u).name for u in table.file_uris() if is_local(u) and not location(u).path().is_file()]
    return f"data file {', '.join(lost)} is gone" if lost else ""


def _corrupt(path: str, err: Exception, lost: str = "") -> RecordTableCorrupt:
    """The message of an unreadable record table: what is damaged (a commit, a data file, else delta-rs's own
    first line) and the fix."""
    name, (bad, newest_only) = Path(path).name, _damaged_commits(path)
    what = (lost or (f"commit {', '.join(bad)} of its _delta_log does not parse" if bad else "")
            or (str(err).strip().splitlines() or [type(err).__name__])[0][:300])
    aside = (f"; without one, move {bad[0]} out of {path}/_delta_log (the newest commit: its append is lost), "
             f"then {_rebuild(path)}" if newest_only else "")
    return RecordTableCorrupt(f"record table {name} ({path}) cannot be read: {what}. It is the source of truth, so "
                              f"nothing runs until it reads: restore {path} from a backup{aside}")


def _none_deleted(path: str) -> None:
    """Raise for the first record table of `path`'s lakehouse that was written and whose log is gone."""
    marker = _marker(path)
    if marker is None or not marker.parent.is_dir():
        return
    for other in sorted(marker.parent.iterdir()):
        table = marker.parent.parent / other.name
        if not (table / "_delta_log").is_dir():
            raise _missing(str(table), other)


def _open(path: str, options: Options = None) -> DeltaTable | None:
    """The record table at `path`, or None when it was never written; a deleted or unreadable one raises."""
    _none_deleted(path)
    try:
        table = DeltaTable(location(path).for_delta_rs(), storage_options=options)
    except TableNotFoundError:
        marker = _marker(path)
        if marker is not None and marker.exists():
            raise _missing(path, marker) from None
        return None
    except DeltaError as err:
        raise _corrupt(path, err) from None
    _mark(path)
    return table


def read_records(path: str, options: Options = None) -> pa.Table | None:
    """The whole table as Arrow, or None when it was never written (see the module's rule).

    Read by delta-rs's own engine (`QueryBuilder`), not `to_pyarrow_table`: that one scans through a pyarrow
    dataset over a Python file system, whose I/O threads can still be waiting for the GIL when the interpreter
    exits, and then the process dies of SIGABRT ("terminate called without an active exception", apache/arrow
    #34314) after its work is done.
    """
    table = _open(path, options)
    if table is None:
        return None
    try:
        return pa.table(QueryBuilder().register("records", table).execute("SELECT * FROM records").read_all())
    except Exception as err:  # noqa: BLE001 - delta-rs raises a bare Exception for a lost or damaged data file
        raise _corrupt(path, err, _lost_files(table)) from None


def rows(path: str, options: Options = None) -> list[dict]:
    """The table's rows as dicts (maps become dicts); [] when it was never written. `options`: how delta-rs reaches
    an object store (`LfmConfig.delta_rs_options`)."""
    table = read_records(path, options)
    if table is None:
        return []
    maps = [f.name for f in table.schema if pa.types.is_map(f.type)]
    out = table.to_pylist()
    for r in out:
        for m in maps:
            if r[m] is not None:
                r[m] = dict(r[m])
    return out


def newest(records: Iterable[dict], key: Callable[[dict], object], order: str) -> list[dict]:
    """The newest record (largest `order`) per `key`."""
    best: dict = {}
    for r in records:
        k = key(r)
        if k not in best or r[order] > best[k][order]:
            best[k] = r
    return list(best.values())


def write_record(path: str, records: list[dict], schema: pa.Schema, metadata: dict,
                 options: Options = None) -> None:
    """Append `records` in one Delta commit, with `metadata` in the commit info.

    Every append adds one small file; every `COMPACT_EVERY` commits they are compacted (a commit of its own that
    rewrites no row), so reading a year of records stays one or two file reads. A deleted or unreadable table
    is refused, never appended to: an append would start its history anew.
    """
    _open(path, options)
    maps = [f.name for f in schema if pa.types.is_map(f.type)]
    records = [{**r, **{m: list(r[m].items()) for m in maps if isinstance(r.get(m), dict)}} for r in records]
    uri = location(path).for_delta_rs()
    write_deltalake(uri, pa.Table.from_pylist(records, schema), mode="append", storage_options=options,
                    configuration={"delta.checkpointInterval": CHECKPOINT_EVERY},
                    commit_properties=CommitProperties(custom_metadata={"userMetadata": json.dumps(metadata)}))
    _mark(path)
    table = DeltaTable(uri, storage_options=options)
    if table.version() % COMPACT_EVERY == 0:
        table.optimize.compact()


def rows_of(cfg: LfmConfig, name: str) -> list[dict]:
    """The rows of the lakehouse's record table `name` (on local disk or the object store)."""
    return rows(cfg.table_path(name), cfg.delta_rs_options(cfg.lakehouse))


def append_to(cfg: LfmConfig, name: str, records: list[dict], schema: pa.Schema, metadata: dict) -> None:
    """Append `records` to the lakehouse's record table `name` in one commit (`write_record`)."""
    write_record(cfg.table_path(name), records, schema, metadata, cfg.delta_rs_options(cfg.lakehouse))
