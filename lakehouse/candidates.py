"""The `refresh_log` table: one row per complete refresh of (day, export) — a *candidate* for release.

A row names the exact Delta version of each of the six tables the refresh wrote (four embedding tables, two CR
states). It is appended last, after every table committed, so a refresh killed at any moment leaves the previous
candidate as the latest one. The gate audits exactly these versions; a release names them; the next day's refresh
chains from this candidate's state versions.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import pyarrow as pa

from lakehouse.records import append_to, newest, rows_of
from lfm.config import LfmConfig
from lfm.contract import REFRESH_LOG, ExportSpec
from lfm.names import check_export_id, parse_ds

VERSIONS = pa.map_(pa.string(), pa.int64())
SCHEMA = pa.schema([
    pa.field("ds", pa.date32(), False),
    pa.field("export_id", pa.string(), False),
    pa.field("model_version", pa.string(), False),
    pa.field("cr_layer", pa.string(), False),
    pa.field("spec", pa.string(), False),  # ExportSpec JSON
    pa.field("run_id", pa.string(), False),
    pa.field("cold_start", pa.bool_(), False),
    pa.field("warmup_days", pa.int32(), False),
    pa.field("committed_at", pa.timestamp("us", tz="UTC"), False),
    pa.field("table_versions", VERSIONS, False),
    pa.field("input_versions", VERSIONS),
    pa.field("rows", VERSIONS),
    pa.field("future_events_dropped", pa.int64()),
])


@dataclass(frozen=True)
class Candidate:
    ds: dt.date
    spec: ExportSpec
    run_id: str
    table_versions: dict[str, int]  # table -> the Delta version this refresh committed
    cold_start: bool = False
    warmup_days: int = 0
    committed_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    input_versions: dict[str, int] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)
    future_events_dropped: int = 0
    model_version: str = ""  # the version that made the day (of a lineage export: one of its versions)

    def __post_init__(self) -> None:
        if not self.model_version:
            object.__setattr__(self, "model_version", self.spec.model_version)

    @property
    def export_id(self) -> str:
        return self.spec.id


def append(cfg: LfmConfig, c: Candidate) -> None:
    record = {"ds": parse_ds(c.ds), "export_id": c.spec.id, "model_version": c.model_version,
              "cr_layer": c.spec.cr_layer, "spec": c.spec.to_json(), "run_id": c.run_id, "cold_start": c.cold_start,
              "warmup_days": c.warmup_days, "committed_at": c.committed_at, "table_versions": dict(c.table_versions),
              "input_versions": dict(c.input_versions), "rows": dict(c.rows),
              "future_events_dropped": int(c.future_events_dropped)}
    append_to(cfg, REFRESH_LOG, [record], SCHEMA,
                 {"job": "refresh", "run_id": c.run_id, "ds": c.ds.isoformat(), "export_id": c.spec.id})


def _candidate(r: dict) -> Candidate:
    return Candidate(ds=r["ds"], spec=ExportSpec.from_json(r["spec"]), run_id=r["run_id"],
                     table_versions={k: int(v) for k, v in r["table_versions"].items()}, cold_start=r["cold_start"],
                     warmup_days=int(r["warmup_days"]), committed_at=r["committed_at"],
                     input_versions=dict(r["input_versions"] or {}), rows=dict(r["rows"] or {}),
                     future_events_dropped=int(r["future_events_dropped"] or 0), model_version=r["model_version"])


def latest_per_export(cfg: LfmConfig, days: list[dt.date] | None = None,
                      model_version: str | None = None) -> list[Candidate]:
    """The newest candidate of each (ds, export), optionally of some days or made by one model version, by day."""
    wanted = {parse_ds(d) for d in days} if days else None
    found = [r for r in rows_of(cfg, REFRESH_LOG)
             if (wanted is None or r["ds"] in wanted) and (model_version is None or r["model_version"] == model_version)]
    best = newest(found, lambda r: (r["ds"], r["export_id"]), "committed_at")
    return [_candidate(r) for r in sorted(best, key=lambda r: (r["ds"], r["export_id"]))]


def latest(cfg: LfmConfig, ds: dt.date, export_id: str) -> Candidate | None:
    """The newest complete refresh of (ds, export), or None."""
    check_export_id(export_id)
    found = [c for c in latest_per_export(cfg, [ds]) if c.spec.id == export_id]
    return found[0] if found else None
