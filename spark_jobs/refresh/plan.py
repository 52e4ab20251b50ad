"""Plan a day's refresh on the driver: validate everything before any work, pin every input to a version.

The plan is a function of (day, export spec, config): the spec (model version, CR layer, dims, decay) is resolved
once by the caller and never re-derived here. Checks: the input tables exist with the schema's columns, a users
and an items snapshot is in force on D (feature history), day D has events or ingest recorded it as a day with
none (an empty day, `lakehouse.ingests`: its CR is D-1's state decayed; it cannot begin a chain), and — unless the
day begins a chain — the previous day's complete refresh (`refresh_log`) of the *same export spec* exists; a chain
at D-1 under another spec of the same model (another tau, layer, normalisation...) is refused with the differences
and the fix (`--cold-start` begins a new chain: another spec is another space).
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass, field

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from lakehouse import candidates, ingests
from lakehouse.candidates import Candidate
from lakehouse.delta_io import day_stats, ds_predicate, read_table, table_version
from lakehouse.features import feature_history, snapshot_for
from lfm.config import LfmConfig
from lfm.config.schema import FieldKind
from lfm.contract import EVENTS, FEATURE_TABLES, INPUT_TABLES, ITEMS, USERS, DayModel, ExportSpec, day_end_ms
from lfm.names import parse_ds
from spark_jobs.refresh.errors import MissingState, NoEvents, TableMismatch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RefreshPlan:
    """Everything a day's computation needs, resolved and validated on the driver."""

    ds: dt.date
    spec: ExportSpec
    model: DayModel  # the version that makes the day (the frozen model, or the lineage's) and its verified folder
    run_id: str
    cold_start: bool
    day_end_ms: int  # T_D
    prev_day_end_ms: int | None  # T_{D-1}; None on a cold start
    input_versions: dict[str, int] = field(default_factory=dict)  # events, users, items
    previous: Candidate | None = None  # D-1's complete refresh of this spec: the states the chain continues
    future_events: int = 0  # rows of partition D stamped at or after T_D (left out of the state)
    warmup_days: int = 0  # set by a backfill whose chain began this many days before its first day
    empty: bool = False  # D had no events (recorded by ingest): CR is D-1's state decayed, UR and IR as any day

    @property
    def model_version(self) -> str:
        return self.model.version

    @property
    def model_dir(self) -> str:
        return self.model.model_dir

    @property
    def cr_layer(self) -> str:
        return self.spec.cr_layer

    @property
    def prev_ds(self) -> dt.date:
        return self.ds - dt.timedelta(days=1)


def check_tables(spark: SparkSession, cfg: LfmConfig, versions: dict[str, int | None]) -> None:
    """The inputs exist and hold every column the model's schema reads (numeric fields numeric)."""
    s = cfg.schema
    missing_tables = [t for t in INPUT_TABLES if versions.get(t) is None]
    if missing_tables:
        raise TableMismatch(f"lakehouse tables {missing_tables} are missing under "
                            f"{cfg.location(cfg.lakehouse).uri}: "
                            "run `lfm ingest --source DIR` first")
    schemas = {t: read_table(spark, cfg.table_path(t), versions[t]).schema for t in INPUT_TABLES}
    need = {EVENTS: [s.user_key, s.item_key, s.scenario, "event_timestamp", "ds"],
            USERS: [s.user_key] + [f.name for f in s.user_fields],
            ITEMS: [s.item_key] + [f.name for f in s.item_fields]}
    for table, cols in need.items():
        names = schemas[table].fieldNames()
        absent = [c for c in cols if c not in names]
        if absent:
            raise TableMismatch(f"table {table!r} lacks columns {absent} that the model's data schema reads; "
                                "re-ingest, or refresh with a model trained on this data's schema")
    numeric = [(t, f.name) for t, fields in ((USERS, s.user_fields), (ITEMS, s.item_fields))
               for f in fields if f.kind == FieldKind.numeric]
    for table, col in numeric:
        typ = schemas[table][col].dataType
        if not isinstance(typ, T.NumericType):
            raise TableMismatch(f"{table}.{col} is {typ.simpleString()}, but the schema declares it numeric; "
                                "declare it categorical or fix the declared type in sources (lfm.yaml)")


def check_snapshots(spark: SparkSession, cfg: LfmConfig, versions: dict[str, int], day: dt.date) -> None:
    """A users and an items snapshot is in force on `day` at the pinned versions (feature history)."""
    for table in FEATURE_TABLES:
        _, starts = feature_history(spark, cfg, table, versions[table])
        snapshot_for(table, starts, day)


def plan_refresh(spark: SparkSession, cfg: LfmConfig, spec: ExportSpec, model: DayModel, ds: str | dt.date,
                 cold_start: bool = False, run_id: str | None = None, state_in_memory: bool = False,
                 chain_end: dt.date | None = None) -> RefreshPlan:
    """Validate the request (tables, events, previous state of this spec); raise before any work.

    `state_in_memory`: the previous state comes from the caller (a warm-up), not the state tables.
    `chain_end`: the last day the caller writes in this chain (a backfill's --to; default this day; date.max for
    computations that write nothing): complete refreshes after it trigger a "rerun them" warning.
    """
    day = parse_ds(ds)
    paths = {t: cfg.table_path(t) for t in INPUT_TABLES}
    versions = {t: table_version(spark, p, cfg.delta_rs_options(p)) for t, p in paths.items()}
    check_tables(spark, cfg, versions)
    check_snapshots(spark, cfg, versions, day)
    tz = cfg.schema.timezone
    end_ms = day_end_ms(day, tz)
    rows, late = day_counts(spark, cfg, versions[EVENTS], day, end_ms)
    empty = empty_day(cfg, day, rows, versions[EVENTS], cold_start)
    previous = None if (cold_start or state_in_memory) else previous_candidate(cfg, spec, day)
    warn_later_days(cfg, spec, day, chain_end or day)
    check_model(spec, model)
    return RefreshPlan(ds=day, spec=spec, model=model, run_id=run_id or uuid.uuid4().hex[:12],
                       cold_start=cold_start, day_end_ms=end_ms,
                       prev_day_end_ms=None if cold_start else day_end_ms(day - dt.timedelta(days=1), tz),
                       input_versions={t: int(v) for t, v in versions.items()}, previous=previous,
                       future_events=late, empty=empty)


def empty_day(cfg: LfmConfig, day: dt.date, rows: int, events_version: int, cold_start: bool) -> bool:
    """Whether D is a day with no events, which ingest recorded as such (at or before the events version read);
    a day without rows that no ingest recorded as empty is refused (not ingested, or its events not landed), and so
    is a cold start on an empty day (a chain begins on a day with events: an empty state decayed is nothing)."""
    if rows:
        return False
    if not ingests.recorded_empty(cfg, day, events_version):
        raise NoEvents(f"no events for ds {day} in the lakehouse, and no ingest recorded it as a day without events: "
                       f"ingest that day first (`lfm ingest --ds {day}`; a day the log holds no event of is recorded "
                       "as an empty day when a later day has events, or with --allow-empty)")
    if cold_start:
        raise NoEvents(f"{day} had no events (an empty day, recorded by ingest): a CR chain cannot begin on it; "
                       "begin the chain with --cold-start on a day with events, or continue it from "
                       f"{day - dt.timedelta(days=1)}")
    return True


def check_model(spec: ExportSpec, model: DayModel) -> None:
    """A frozen export is made by its own model only (a lineage's versions are picked by `pipeline.lineage`)."""
    if not spec.lineage and model.version != spec.model_version:
        raise TableMismatch(f"{spec.describe()} is made by model {spec.model_version}, not {model.version}")


def day_counts(spark: SparkSession, cfg: LfmConfig, version: int, day: dt.date, end_ms: int) -> tuple[int, int]:
    """(events of partition `day`, of them stamped at or after T_D): from the commit log's file statistics when
    they settle it (every file's latest time a millisecond or more before T_D), else counted by Spark."""
    path = cfg.table_path(EVENTS)
    stats = day_stats(path, version, day, "event_timestamp", cfg.delta_rs_options(path))
    if stats is not None and (stats.rows == 0 or stats.latest_ms < end_ms - 1):
        return stats.rows, 0
    r = (read_table(spark, cfg.table_path(EVENTS), version).where(ds_predicate([day]))
         .agg(F.count(F.lit(1)).alias("n"),
              F.sum(F.when(F.unix_millis("event_timestamp") >= end_ms, 1).otherwise(0)).alias("late")).first())
    return int(r["n"] or 0), int(r["late"] or 0)


def previous_candidate(cfg: LfmConfig, spec: ExportSpec, day: dt.date) -> Candidate:
    """D-1's complete refresh of this spec; refuses a missing one and one built under another spec."""
    prev = day - dt.timedelta(days=1)
    found = candidates.latest(cfg, prev, spec.id)
    if found is not None:
        return found
    fix = (f"refresh {prev} first (or `lfm backfill --from FIRST --to {day}`), or begin a new chain at {day} "
           "with --cold-start (or warm it up with `lfm backfill --warmup-days N`)")
    others = [c for c in candidates.latest_per_export(cfg, [prev]) if c.spec.model_version == spec.model_version]
    if others:
        diffs = "; ".join(f"{c.spec.id}: {', '.join(c.spec.differences(spec))}" for c in others)
        raise MissingState(f"the CR chain of model {spec.model_version} at {prev} was built under another export "
                           f"spec ({diffs}); vectors of two specs live in different spaces and one chain never "
                           f"mixes them: begin a new chain for {spec.id} with --cold-start at {day} (or restore "
                           "the previous settings)")
    raise MissingState(f"no complete refresh of {prev} for {spec.describe()}: the CR decay chain needs "
                       f"yesterday's state; {fix}")


def warn_later_days(cfg: LfmConfig, spec: ExportSpec, day: dt.date, chain_end: dt.date) -> None:
    """Complete refreshes after `chain_end` were chained from the current state of `day`: say to rerun them."""
    later = sorted(c.ds for c in candidates.latest_per_export(cfg) if c.spec.id == spec.id and c.ds > chain_end)
    if later:
        log.warning("refreshes after %s exist (from %s) and were chained from the current state of %s; if this run "
                    "changes it, rerun them: lfm backfill --from %s --to %s", day, later[0], day,
                    day + dt.timedelta(days=1), later[-1])
