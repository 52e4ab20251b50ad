"""Ingest the declared sources (`sources:` in lfm.yaml) into the Delta tables `events` (by ds), `users`, `items`.

Everything is checked before anything is written: first, without Spark (`spark_jobs.precheck`), the declaration
against the data schema, the files and their columns and the derived columns' expressions; then every source
(files found, declared columns present, values of their declared types, tasks 0/1 or boolean, keys set and
unique, event times plausible for their unit, days parseable), in one Spark pass per source; each failure stops
the run with one message that names the source, the column, the config key to change and a sample bad value.
Re-ingesting a day replaces its partition atomically, so reruns never duplicate.
A day the source holds no event of is written as an **empty day** (its partition emptied, and recorded as such in
`ingest_log`: `lakehouse.ingests`) when it lies inside the log's span (a later day has events, so its own are not
still on their way), or with `allow_empty` (the caller says the day truly had none); a day after the log's last
event is refused as not landed yet, and one before its first as outside the log (nothing is written).
The same pass counts the events' exact duplicates (rows equal in every declared column) by day;
`sources.events.duplicates` keeps them (the default), drops all but one copy of each, or refuses the ingest.

`users` and `items` keep their history (`lakehouse.features`): each ingest writes its snapshot as the partition
`valid_from` = the first event day it ingests, unless the snapshot in force on that day already holds the same
rows. A source without daily snapshots is therefore valid from its first ingest on. A daily drop carries the whole
users and items files: when the declaration and the files' bytes are those the snapshot in force was ingested
from (recorded in its commit), they are neither read nor checked again; when the bytes differ but the rows are
the same (an order-free hash taken in the checking pass), nothing is written.
`dry_run=True` runs every check and reports the mapping, row counts and days, writing nothing.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from lakehouse import ingests
from lakehouse.delta_io import TableLeases, history, overwrite_table, read_table, replace_partitions, table_exists
from lakehouse.features import FeatureHistoryError, feature_history, snapshot_for
from lfm.config import LfmConfig
from lfm.config.sources import ColumnType, DuplicatePolicy, SourceFormat, SourceRole, TimeUnit, column_roles
from lfm.contract import EVENTS, ITEMS, USERS, VALID_FROM
from lfm.names import parse_ds
from lfm.storage import is_local, location
from spark_jobs.precheck import Prechecked, precheck
from spark_jobs.raw_input import Checked, ColumnRules, IngestError, RawInput, check_values, read_source

__all__ = ["IngestError", "IngestResult", "MappedColumn", "ingest"]

log = logging.getLogger("lfm.ingest")

PLAUSIBLE_DAYS = (dt.date(1971, 1, 1), dt.date(2200, 1, 1))  # event days outside: the time unit is wrong
SNAPSHOT_SOURCES = {USERS: (SourceRole.users,), ITEMS: (SourceRole.items, SourceRole.item_statistics)}


@dataclass(frozen=True)
class MappedColumn:
    """One declared column, for the dry-run report."""

    source: str
    name: str
    raw: str
    type: str
    role: str


@dataclass(frozen=True)
class IngestResult:
    events_rows: int  # rows written (on a dry run, that would be): without the duplicates dropped
    days: list[dt.date]  # the days written (or, on a dry run, that would be), the empty ones included
    users_rows: int  # rows of the users snapshot ingested
    items_rows: int
    source_rows: dict[str, int] = field(default_factory=dict)  # rows per source (a held one: as recorded)
    days_found: list[dt.date] = field(default_factory=list)  # every day the events source holds
    snapshots: dict[str, dt.date | None] = field(default_factory=dict)  # table -> valid_from written (None: same)
    mapping: list[MappedColumn] = field(default_factory=list)
    duplicate_rows: int = 0  # exact duplicate events in the days written (copies beyond the first of each row)
    duplicates: DuplicatePolicy = DuplicatePolicy.keep  # what was done with them (sources.events.duplicates)
    before_spark: str = ""  # what was checked before Spark started (`spark_jobs.precheck`)
    dry_run: bool = False
    empty_days: list[dt.date] = field(default_factory=list)  # of `days`, those written with no events


@dataclass
class _Read:
    raw: RawInput
    frame: DataFrame  # the declared columns, typed (events: plus event_timestamp and ds)
    checked: Checked  # the checking pass's aggregates


@dataclass(frozen=True)
class _Events:
    """The events to write, decided from the checking pass."""

    frame: DataFrame
    day_rows: dict[dt.date, int]  # rows to write per day asked for (when none were: every day of the log's span);
    # 0: a day with no events, written as an empty day
    present: list[dt.date]  # every day the source holds events of
    duplicates: dict[dt.date, int]  # exact duplicate rows by day (days with some), among the days asked for

    @property
    def days(self) -> list[dt.date]:
        return sorted(self.day_rows)

    @property
    def rows(self) -> int:
        return sum(self.day_rows.values())

    @property
    def empty(self) -> list[dt.date]:
        return [d for d in self.days if not self.day_rows[d]]

    @property
    def duplicate_rows(self) -> int:
        return sum(self.duplicates.values())


def _rules(cfg: LfmConfig, role: SourceRole) -> ColumnRules:
    s = cfg.schema
    if role == SourceRole.events:
        required = [s.user_key, s.item_key, s.scenario, s.timestamp] + ([s.date] if s.date else [])
        return ColumnRules(tasks=frozenset(s.tasks), required=tuple(dict.fromkeys(required)), timezone=s.timezone)
    key = s.user_key if role == SourceRole.users else s.item_key
    return ColumnRules(required=(key,), unique=key, timezone=s.timezone)


def _content_hash(columns: list[str]) -> Column:
    """Order-free content of a keyed source: the XOR of every row's hash (keys are unique, so no row cancels)."""
    return F.bit_xor(F.xxhash64(*[F.col(c) for c in columns])).alias("__hash")


def read_checked(spark: SparkSession, cfg: LfmConfig, raw: RawInput) -> _Read:
    """One declared source, typed and checked in one Spark pass (events: grouped by day, with their times)."""
    rules = _rules(cfg, raw.role)
    df = read_source(spark, raw, rules)
    keep: list[str] = list(raw.source.columns)
    if raw.role != SourceRole.events:
        return _Read(raw, df.select(*keep), check_values(df, raw, rules, (_content_hash(keep),)))
    df = with_event_time(df, cfg)
    bad_ts = F.sum(F.when(F.col("event_timestamp").isNull(), 1).otherwise(0)).alias("__bad_ts")
    # A struct, not the columns: COUNT(DISTINCT a, b) would skip every row holding a null.
    distinct = F.count_distinct(F.struct(*keep)).alias("__distinct_rows")
    checked = check_values(df, raw, rules, (bad_ts, distinct), by=F.col("ds"))
    return _Read(raw, df.select(*keep, "event_timestamp", "ds"), checked)


def _micros(x: Column, unit: TimeUnit, typ: ColumnType) -> Column:
    """Epoch microseconds of an epoch number; null when out of range (never an overflow error)."""
    scale = {TimeUnit.s: 1_000_000, TimeUnit.ms: 1_000, TimeUnit.us: 1}[unit]
    if typ == ColumnType.double:
        return F.round(F.try_multiply(x, F.lit(float(scale)))).try_cast("bigint")
    return F.try_multiply(x.cast("bigint"), F.lit(scale)).try_cast("bigint")


def with_event_time(events: DataFrame, cfg: LfmConfig) -> DataFrame:
    """`event_timestamp` from the event time in its unit, and `ds`: the date column's day, else the event
    time's calendar day in schema.timezone (null where either does not parse)."""
    s, src = cfg.schema, cfg.sources.events
    unit = src.unit_of_time(s.timestamp)  # checked set (check_mapping) before any data is read
    if unit == TimeUnit.timestamp:
        ts = F.col(s.timestamp)
    else:
        ts = F.timestamp_micros(_micros(F.col(s.timestamp), unit, src.columns[s.timestamp].type))
    events = events.withColumn("event_timestamp", ts)
    if s.date is None:
        wall = F.col("event_timestamp").cast("timestamp_ntz")  # wall clock in the session's zone
        ds = F.to_date(F.convert_timezone(F.current_timezone(), F.lit(s.timezone), wall))
    elif src.columns[s.date].type == ColumnType.date:
        ds = F.col(s.date)
    else:
        ds = F.to_date(F.try_to_timestamp(F.col(s.date).cast("string"), F.lit(src.date_format)))
    return events.withColumn("ds", ds)


def build_events(read: _Read, cfg: LfmConfig, days: list[dt.date] | None, allow_empty: bool = False) -> _Events:
    """Check the event times and days (from the checking pass, no further Spark job but for a sample); returns
    the events of the asked days (all when none were) with their rows, exact duplicates and empty days
    (`days_to_write`)."""
    s, src, events = cfg.schema, cfg.sources.events, read.frame
    stats, per_day = read.checked.stats, read.checked.per_group()
    label = read.raw.label
    if stats["__bad_ts"]:
        sample = events.filter(F.col("event_timestamp").isNull()).select(s.timestamp).first()[0]
        raise IngestError(f"{label}: {src.shown(s.timestamp)} has {stats['__bad_ts']} value(s) that are "
                          f"not times in unit {src.unit_of_time(s.timestamp).value} (e.g. {sample!r}); fix the file or "
                          "sources.events.time_unit in lfm.yaml")
    if per_day.get(None):
        bad = [r[0] for r in events.filter(F.col("ds").isNull()).select(s.date).limit(3).collect()]
        raise IngestError(f"{label}: {src.shown(s.date)} holds values that are not "
                          f"{src.date_format.lower()} dates, e.g. {bad}; fix the log file or "
                          "sources.events.date_format in lfm.yaml")
    present = sorted(d for d in per_day if d is not None)
    lo, hi = PLAUSIBLE_DAYS
    if present and (present[0] < lo or present[-1] >= hi):
        raise IngestError(f"{label}: the events fall on {present[0]}..{present[-1]} when column "
                          f"{src.raw_name(s.timestamp)!r} is read in unit {src.unit_of_time(s.timestamp).value}"
                          + ("" if s.date is None else f" and {src.raw_name(s.date)!r} as {src.date_format}")
                          + ": is sources.events.time_unit right (s, ms, us or timestamp)?")
    wanted = days_to_write(present, days, allow_empty)
    distinct = read.checked.per_group("__distinct_rows")
    duplicates = {d: per_day[d] - distinct[d] for d in wanted if per_day.get(d, 0) > distinct.get(d, 0)}
    frame = events if days is None else events.filter(F.col("ds").isin(wanted))
    return _Events(frame, {d: per_day.get(d, 0) for d in wanted}, present, duplicates)


def days_to_write(present: list[dt.date], days: list[dt.date] | None, allow_empty: bool = False) -> list[dt.date]:
    """The days to write, from the days the source holds events of (`present`, sorted) and the days asked for
    (None: every day of the log's span, its gaps as empty days).

    A day asked for without events is an empty day inside the span (a later day has events, so its own are not
    still on the way); after the log's last event it is refused as not landed yet, before its first as outside
    the log, unless `allow_empty` (the caller knows the day had none)."""
    if days is None:
        if not present:
            raise IngestError("the events source holds no event: check sources.events.path (and --source)")
        return [present[0] + dt.timedelta(days=i) for i in range((present[-1] - present[0]).days + 1)]
    wanted = sorted({parse_ds(d) for d in days})
    empty = [d for d in wanted if d not in set(present)]
    if allow_empty or not empty:
        return wanted
    shown = ", ".join(d.isoformat() for d in empty)
    if not present:
        raise IngestError(f"no events for ds {shown} in the source, which holds no event at all: nothing was "
                          "written; if the events have not landed yet, ingest once they have; if the day truly had "
                          "none, pass --allow-empty (lfm ingest, lfm run-daily) to record it as an empty day")
    late = [d for d in empty if d > present[-1]]
    if late:
        raise IngestError(f"no events for ds {', '.join(d.isoformat() for d in late)} in the source: its log ends "
                          f"at {present[-1]}, so these events have not landed yet; nothing was written: ingest the "
                          "day once its files are there, or, if it truly had no events, pass --allow-empty "
                          "(lfm ingest, lfm run-daily) to record it as an empty day")
    early = [d for d in empty if d < present[0]]
    if early:
        raise IngestError(f"no events for ds {', '.join(d.isoformat() for d in early)} in the source: its log "
                          f"begins at {present[0]}; nothing was written: pass days from {present[0]} on, or "
                          "--allow-empty if these days truly had no events")
    return wanted


def apply_duplicates(events: _Events, read: _Read, policy: DuplicatePolicy) -> _Events:
    """sources.events.duplicates: keep the exact duplicates, write one copy of each, or refuse (nothing written)."""
    found = events.duplicate_rows
    if not found or policy == DuplicatePolicy.keep:
        return events
    if policy == DuplicatePolicy.refuse:
        days = ", ".join(f"{d} ({n:,})" for d, n in sorted(events.duplicates.items()))
        raise IngestError(f"sources.events: {found:,} exact duplicate event row(s) (equal to another row in every "
                          f"declared column) on {days}, in {', '.join(duplicate_files(read, events))}; nothing was "
                          "written: remove them from the files, or set sources.events.duplicates in lfm.yaml to "
                          "drop (write one copy of each) or keep")
    return replace(events, frame=events.frame.dropDuplicates(),
                   day_rows={d: n - events.duplicates.get(d, 0) for d, n in events.day_rows.items()})


def duplicate_files(read: _Read, events: _Events, most: int = 5) -> list[str]:
    """The files holding the duplicated rows (a second pass over those days, taken only to refuse them)."""
    days = sorted(events.duplicates)
    frame = read.frame.where(F.col("ds").isin(days)).withColumn("__file", F.input_file_name())
    repeated = (frame.groupBy(*read.raw.source.columns).agg(F.count(F.lit(1)).alias("__n"),
                                                           F.collect_set("__file").alias("__files"))
                .where(F.col("__n") > 1))
    uris = repeated.select(F.explode("__files")).distinct().limit(most).collect()
    return sorted(str(location(r[0]).path()) if is_local(r[0]) else r[0] for r in uris) or [read.raw.label]


# --- feature snapshots ------------------------------------------------------------------------------------------

def signature(raws: list[RawInput]) -> str | None:
    """sha256 over the declarations and the files' bytes, in order: what a snapshot was ingested from. None for a
    source that is not plain local files (a Delta table, an object store): those are always read."""
    h = hashlib.sha256()
    for raw in raws:
        if raw.source.format == SourceFormat.delta or not all(is_local(f) for f in raw.files):
            return None
        h.update(raw.source.model_dump_json().encode())
        for f in raw.files:
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def in_force_record(spark: SparkSession, cfg: LfmConfig, table: str, day: dt.date) -> dict | None:
    """What the snapshot in force on `day` was ingested from (its commit's `snapshot` record), or None when that
    is unknown: no snapshot, or a commit by another writer since (then the sources are read and compared)."""
    path = cfg.table_path(table)
    storage = cfg.delta_rs_options(path)
    if not table_exists(spark, path, storage):
        return None
    try:
        _, starts = feature_history(spark, cfg, table)
        start = snapshot_for(table, starts, day).isoformat()
    except FeatureHistoryError:  # a table without history, or no snapshot in force yet: nothing is held
        return None
    for commit in history(spark, path, storage=storage):
        meta = commit["userMetadata"]
        if meta.get("job") != "ingest" or "snapshot" not in meta:
            return None  # another writer touched the table: what it holds is unknown
        if meta.get(VALID_FROM) == start:
            return meta["snapshot"]
    return None


@dataclass
class _Snapshot:
    """One feature table's snapshot, decided (and its schema checked) before any write."""

    table: str
    valid_from: dt.date
    record: dict  # signature, rows and content hash per source: what the commit records
    frame: DataFrame | None = None  # None: the snapshot in force holds these rows (nothing to write)
    legacy: bool = False  # the table predates feature history: it is replaced whole

    @property
    def write(self) -> bool:
        return self.frame is not None


def plan_snapshot(spark: SparkSession, cfg: LfmConfig, table: str, raws: list[RawInput],
                  valid_from: dt.date) -> _Snapshot:
    """Read and check the table's sources unless the snapshot in force was ingested from the same bytes; write
    only when its rows differ from the snapshot in force."""
    sig = signature(raws)
    held = in_force_record(spark, cfg, table, valid_from)
    if sig is not None and held is not None and held.get("signature") == sig:
        return _Snapshot(table, valid_from, held)
    reads = {raw.role: read_checked(spark, cfg, raw) for raw in raws}
    record = {"signature": sig, "rows": {r.value: x.checked.rows for r, x in reads.items()},
              "content": {r.value: str(x.checked.stats["__hash"]) for r, x in reads.items()},
              "declaration": hashlib.sha256("".join(x.raw.source.model_dump_json() for x in reads.values())
                                            .encode()).hexdigest()}
    if held is not None and (held.get("content"), held.get("declaration")) == (record["content"],
                                                                                record["declaration"]):
        return _Snapshot(table, valid_from, record)
    frame = reads[raws[0].role].frame
    if len(raws) > 1:  # item statistics: both sides have unique keys (checked), so one row per item stays
        frame = frame.join(reads[raws[1].role].frame, on=cfg.schema.item_key, how="left")
    legacy = _check_table_schema(spark, cfg, table, frame)
    return _Snapshot(table, valid_from, record, frame, legacy)


def _check_table_schema(spark: SparkSession, cfg: LfmConfig, table: str, frame: DataFrame) -> bool:
    """Refuse a column whose type changed against the table; True when the table predates feature history."""
    path = cfg.table_path(table)
    if not table_exists(spark, path, cfg.delta_rs_options(path)):
        return False
    existing = read_table(spark, path)
    if VALID_FROM not in existing.columns:
        return True
    have = dict(existing.dtypes)
    changed = [(c, have[c], t) for c, t in frame.dtypes if c in have and have[c] != t]
    if changed:
        c, old, new = changed[0]
        raise IngestError(f"table {table!r} holds column {c!r} as {old}, the source now gives {new}: declare the "
                          f"old type in lfm.yaml (sources.*.columns.{c}.type), or ingest into a new lakehouse")
    return False


def write_snapshot(spark: SparkSession, snap: _Snapshot, path: str, meta: dict,
                   leases: TableLeases) -> None:
    """The snapshot as partition valid_from, in at least one file per core (the refresh reads them as that many
    tasks without a shuffle of its own)."""
    rows = snap.frame.repartition(spark.sparkContext.defaultParallelism).withColumn(VALID_FROM,
                                                                                    F.lit(snap.valid_from))
    meta = {**meta, VALID_FROM: snap.valid_from.isoformat(), "snapshot": snap.record}
    if snap.legacy:
        overwrite_table(rows, path, meta, partition_by=(VALID_FROM,), leases=leases)
    else:
        replace_partitions(rows, path, [snap.valid_from], meta, partition_by=(VALID_FROM,), column=VALID_FROM,
                           merge_schema=True, leases=leases)


# --- the job ----------------------------------------------------------------------------------------------------

def _mapping(cfg: LfmConfig) -> list[MappedColumn]:
    roles = column_roles(cfg.schema, cfg.sources)
    return [MappedColumn(role.value, name, src.raw_name(name), col.type.value, roles[(role, name)])
            for role, src in cfg.sources.declared() for name, col in src.columns.items()]


def ingest(spark: SparkSession, cfg: LfmConfig, source: Path | str | None = None,
           days: list[dt.date] | None = None, run_id: str | None = None, dry_run: bool = False,
           prechecked: Prechecked | None = None, allow_empty: bool = False) -> IngestResult:
    """Check every source (first what needs no Spark, unless `prechecked` says it was done before Spark started),
    then write `events` (only the given days' partitions, an empty day's empty) and the feature snapshots, side by
    side. Row counts come from the checking passes, so nothing is read again after the writes. `allow_empty`: a
    day asked for without events is an empty day even outside the log's span (`days_to_write`)."""
    prechecked = prechecked or precheck(cfg, source)
    root, located = prechecked.root, prechecked.located
    events_read = read_checked(spark, cfg, located[SourceRole.events])
    policy = cfg.sources.events.duplicates
    events = apply_duplicates(build_events(events_read, cfg, days, allow_empty), events_read, policy)
    written_days = events.days
    start = written_days[0]
    snaps = [plan_snapshot(spark, cfg, table, [located[r] for r in roles if r in located], start)
             for table, roles in SNAPSHOT_SOURCES.items()]
    rows = {SourceRole.events.value: events_read.checked.rows}
    for snap in snaps:
        rows.update(snap.record["rows"])
    result = dict(events_rows=events.rows, days=written_days, users_rows=rows["users"], items_rows=rows["items"],
                  source_rows=rows, days_found=events.present, mapping=_mapping(cfg),
                  snapshots={p.table: p.valid_from if p.write else None for p in snaps},
                  duplicate_rows=events.duplicate_rows, duplicates=policy, before_spark=prechecked.summary(),
                  empty_days=events.empty)
    if dry_run:
        return IngestResult(dry_run=True, **result)

    run_id = run_id or uuid.uuid4().hex[:12]
    meta = {"job": "ingest", "run_id": run_id, "source": root.uri if root else "sources in lfm.yaml"}
    log.info("run_id=%s ingest events rows=%d days=%s empty_days=%s duplicate_rows=%d duplicates=%s", run_id,
             events.rows, ",".join(d.isoformat() for d in written_days),
             ",".join(d.isoformat() for d in events.empty) or "-", events.duplicate_rows, policy.value)
    leases = TableLeases(cfg, run_id)
    writes = [lambda: replace_partitions(events.frame, cfg.table_path(EVENTS), written_days,
                                         {**meta, "days": [d.isoformat() for d in written_days]}, leases=leases)]
    writes += [lambda p=p: write_snapshot(spark, p, cfg.table_path(p.table), meta, leases)
               for p in snaps if p.write]
    with ThreadPoolExecutor(max_workers=len(writes)) as pool:
        version = [fut.result() for fut in [pool.submit(w) for w in writes]][0]
    # Recorded once the days are in: a crash before leaves an empty day unrecorded, refused until ingested again.
    ingests.record(cfg, events.day_rows, version, run_id, meta["source"])
    return IngestResult(**result)
