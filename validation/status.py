"""The `gate_status` table: one verdict row per (gate run, table), appended, never rewritten.

A verdict names exactly what it checked: the export (`export_id`), the Delta version of the table it read
(`table_version`) and the refresh run that wrote it (`refresh_run_id`). The pipeline publishes a release only when,
for every embedding table, the newest verdict of (ds, export) passed *at the candidate's version*; a verdict for
another version (an older candidate, a table rewritten since) never counts, and a gate that crashed records a
failed verdict with its error, so a crash can never leave an old pass standing. Input tables (events, users,
items) do not depend on an export and are recorded with a null export_id. Read and written with delta-rs
(`lakehouse.records`).
On a day with no events (`active` 0 in the verdict's metrics) coverage has nothing to measure: it is reported as
not applicable (`not_applicable`), never as passed; every other check of the table is made and decides.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields

import pyarrow as pa

from lakehouse.records import append_to, newest, rows_of
from lfm.config import LfmConfig
from lfm.contract import GATE_STATUS
from lfm.names import check_export_id, check_model_version, parse_ds

SCHEMA = pa.schema([
    pa.field("ds", pa.date32(), False),
    pa.field("table", pa.string(), False),
    pa.field("export_id", pa.string()),
    pa.field("model_version", pa.string()),
    pa.field("table_version", pa.int64()),  # the Delta version the verdict is about
    pa.field("refresh_run_id", pa.string()),  # the refresh that wrote that version (the candidate)
    pa.field("run_id", pa.string(), False),  # the gate run
    pa.field("passed", pa.bool_(), False),
    pa.field("failed_expectations", pa.list_(pa.string()), False),
    pa.field("checked_at", pa.timestamp("us", tz="UTC"), False),
    pa.field("metrics", pa.map_(pa.string(), pa.float64())),
    pa.field("error", pa.string()),  # the exception when the gate crashed on this table
])


NEEDS_EVENTS = ("coverage",)  # the day metrics a day without events leaves undefined (no entity was active)


def not_applicable(metrics: dict[str, float | None] | None) -> tuple[str, ...]:
    """The checks a verdict's day could not make, read from its own metrics: coverage when the day had no events
    (no active entity to cover); the gate and `lfm status` report them as not applicable instead of passed."""
    return NEEDS_EVENTS if (metrics or {}).get("active") == 0 else ()


@dataclass(frozen=True)
class StatusRow:
    ds: dt.date
    table: str
    export_id: str | None
    model_version: str | None
    table_version: int | None
    refresh_run_id: str | None
    run_id: str
    passed: bool
    failed_expectations: list[str]
    checked_at: dt.datetime
    metrics: dict[str, float | None] = field(default_factory=dict)
    error: str | None = None


def record(cfg: LfmConfig, verdicts: list[StatusRow]) -> None:
    """Append the rows of one gate run in one commit."""
    if not verdicts:
        return
    records = [{**asdict(v), "ds": parse_ds(v.ds), "failed_expectations": list(v.failed_expectations),
                "metrics": {k: (None if x is None else float(x)) for k, x in v.metrics.items()}} for v in verdicts]
    append_to(cfg, GATE_STATUS, records, SCHEMA, {"job": "gate", "run_id": verdicts[0].run_id})


def _latest(cfg: LfmConfig) -> list[StatusRow]:
    names = [f.name for f in fields(StatusRow)]
    best = newest(rows_of(cfg, GATE_STATUS), lambda r: (r["ds"], r["table"], r["export_id"]),
                  "checked_at")
    return [StatusRow(**{k: r[k] for k in names}) for r in best]


def verdicts(cfg: LfmConfig, ds: str | dt.date, export_id: str) -> dict[str, StatusRow]:
    """The newest verdict per embedding table of (ds, export)."""
    day, export = parse_ds(ds), check_export_id(export_id)
    return {v.table: v for v in _latest(cfg) if v.ds == day and v.export_id == export}


def status_rows(cfg: LfmConfig, days: list[dt.date] | None = None,
                model_version: str | None = None) -> list[StatusRow]:
    """The deciding (newest) row per (ds, table, export), ordered by day, table and export."""
    wanted = {parse_ds(d) for d in days} if days else None
    if model_version:
        check_model_version(model_version)
    found = [v for v in _latest(cfg) if (wanted is None or v.ds in wanted)
             and (model_version is None or v.model_version == model_version)]
    return sorted(found, key=lambda v: (v.ds, v.table, v.export_id or ""))
