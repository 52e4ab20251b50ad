"""The `ingest_log` table: one row per day an ingest wrote to `events`, with its rows (0: an empty day).

A day with no events and a day whose events were never ingested look alike in `events` (neither has a row), and
an ingest of only empty days commits nothing there (Delta skips a write that adds and removes no file). This record
tells them apart: ingest appends, after its `events` commit, a row per day it wrote naming the rows written and the
events version that holds them. Day D is an **empty day** when its newest row (of an events version at or before
the one read) has 0 rows; a day with no row, or whose newest row has events while the partition holds none (a
writer beside the platform removed them), is not, and is refused. Which days ingest writes as empty, and which it
refuses as not landed yet, is `spark_jobs.ingest.days_to_write`.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa

from lakehouse.records import append_to, newest, rows_of
from lfm.config import LfmConfig
from lfm.contract import INGEST_LOG
from lfm.names import parse_ds

SCHEMA = pa.schema([
    pa.field("ds", pa.date32(), False),
    pa.field("rows", pa.int64(), False),  # events written for the day (0: an empty day)
    pa.field("events_version", pa.int64()),  # the `events` version holding them (None: the table was not created)
    pa.field("run_id", pa.string(), False),
    pa.field("source", pa.string()),
    pa.field("at", pa.timestamp("us", tz="UTC"), False),
])


@dataclass(frozen=True)
class IngestedDay:
    ds: dt.date
    rows: int
    events_version: int | None
    run_id: str
    at: dt.datetime

    @property
    def empty(self) -> bool:
        return self.rows == 0


def record(cfg: LfmConfig, rows: dict[dt.date, int], events_version: int | None, run_id: str,
           source: str | None) -> None:
    """Append one row per day written by one ingest, in one commit (after its `events` commit)."""
    at = dt.datetime.now(dt.timezone.utc)
    records = [{"ds": parse_ds(d), "rows": int(n), "events_version": events_version, "run_id": run_id,
                "source": source, "at": at} for d, n in sorted(rows.items())]
    if records:
        append_to(cfg, INGEST_LOG, records, SCHEMA, {"job": "ingest", "run_id": run_id})


def latest(cfg: LfmConfig, ds: str | dt.date, events_version: int | None = None) -> IngestedDay | None:
    """The newest ingest of `ds` (of an events version at or before `events_version`; None: any), or None."""
    day = parse_ds(ds)
    found = [r for r in rows_of(cfg, INGEST_LOG) if r["ds"] == day
             and (events_version is None or r["events_version"] is None or r["events_version"] <= events_version)]
    best = newest(found, lambda r: r["ds"], "at")
    if not best:
        return None
    r = best[0]
    return IngestedDay(r["ds"], int(r["rows"]), r["events_version"], r["run_id"], r["at"])


def recorded_empty(cfg: LfmConfig, ds: str | dt.date, events_version: int | None = None) -> bool:
    """Whether the newest ingest of `ds` (see `latest`) wrote it as a day with no events."""
    found = latest(cfg, ds, events_version)
    return found is not None and found.empty
