"""The `releases` table and the pinned reads every reader of exported data goes through (write-audit-publish).

A release is one row per publish of (ds, export): the candidate's table versions, once the gate passed every
embedding table at exactly those versions. A withdrawal is a later row for the same (ds, export) with status
`withdrawn` (a refresh rewrote the day). The newest row per (ds, export) decides; rows are appended, never
updated. Readers (training sets, materialize, the ANN index) see only released days, each read at the version its
release names (`versionAsOf`), so nothing unaudited — a later rewrite, a crash's half-written table, a plain Delta
writer behind the platform's back — is ever visible to them.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyarrow as pa

from lakehouse.delta_io import read_days
from lakehouse.records import append_to, newest, rows_of
from lfm.config import LfmConfig
from lfm.contract import RELEASES, ExportSpec
from lfm.names import check_export_id, parse_ds

RELEASED, WITHDRAWN = "released", "withdrawn"
SCHEMA = pa.schema([
    pa.field("ds", pa.date32(), False),
    pa.field("export_id", pa.string(), False),
    pa.field("model_version", pa.string(), False),
    pa.field("status", pa.string(), False),  # released | withdrawn
    pa.field("run_id", pa.string(), False),  # the refresh run that wrote the candidate
    pa.field("gate_run_id", pa.string()),  # the gate run(s) whose verdicts passed it (released rows)
    pa.field("table_versions", pa.map_(pa.string(), pa.int64())),
    pa.field("spec", pa.string(), False),
    pa.field("at", pa.timestamp("us", tz="UTC"), False),
    pa.field("reason", pa.string()),
])


@dataclass(frozen=True)
class Release:
    ds: dt.date
    spec: ExportSpec
    status: str
    run_id: str
    gate_run_id: str | None
    table_versions: dict[str, int]
    at: dt.datetime
    reason: str | None = None
    model_version: str = ""  # the version that made the day (of a lineage export: one of its versions)

    def __post_init__(self) -> None:
        if not self.model_version:
            object.__setattr__(self, "model_version", self.spec.model_version)

    @property
    def export_id(self) -> str:
        return self.spec.id

    @property
    def released(self) -> bool:
        return self.status == RELEASED


def _append(cfg: LfmConfig, ds: dt.date, spec: ExportSpec, status: str, run_id: str, gate_run_id: str | None,
            versions: dict[str, int] | None, reason: str | None, model_version: str | None = None) -> Release:
    at = dt.datetime.now(dt.timezone.utc)
    model_version = model_version or spec.model_version
    record = {"ds": parse_ds(ds), "export_id": spec.id, "model_version": model_version, "status": status,
              "run_id": run_id, "gate_run_id": gate_run_id,
              "table_versions": None if versions is None else {k: int(v) for k, v in versions.items()},
              "spec": spec.to_json(), "at": at, "reason": reason}
    append_to(cfg, RELEASES, [record], SCHEMA,
                 {"job": "publish" if status == RELEASED else "withdraw", "ds": parse_ds(ds).isoformat(),
                  "export_id": spec.id, "run_id": run_id})
    return Release(parse_ds(ds), spec, status, run_id, gate_run_id, dict(versions or {}), at, reason, model_version)


def publish(cfg: LfmConfig, ds: dt.date, spec: ExportSpec, run_id: str, gate_run_id: str,
            versions: dict[str, int], model_version: str | None = None) -> Release:
    """Append the release of (ds, export) at `versions` (the caller checked the verdicts against them), made by
    `model_version` (default: the export's model)."""
    return _append(cfg, ds, spec, RELEASED, run_id, gate_run_id, versions, None, model_version)


def withdraw(cfg: LfmConfig, ds: dt.date, spec: ExportSpec, run_id: str, reason: str) -> Release:
    """Make (ds, export) unreleased until a later publish; readers fall back as if the day were absent."""
    return _append(cfg, ds, spec, WITHDRAWN, run_id, None, None, reason)


def _release(r: dict) -> Release:
    return Release(ds=r["ds"], spec=ExportSpec.from_json(r["spec"]), status=r["status"], run_id=r["run_id"],
                   gate_run_id=r["gate_run_id"], table_versions={k: int(v) for k, v in (r["table_versions"] or {}).items()},
                   at=r["at"], reason=r["reason"], model_version=r["model_version"])


def latest(cfg: LfmConfig, export_id: str | None = None, days: list[dt.date] | None = None,
           model_version: str | None = None) -> list[Release]:
    """The deciding (newest) row per (ds, export), released or withdrawn, ordered by day and export."""
    if export_id is not None:
        check_export_id(export_id)
    wanted = {parse_ds(d) for d in days} if days else None
    found = [r for r in rows_of(cfg, RELEASES)
             if (export_id is None or r["export_id"] == export_id) and (wanted is None or r["ds"] in wanted)
             and (model_version is None or r["model_version"] == model_version)]
    best = newest(found, lambda r: (r["ds"], r["export_id"]), "at")
    return [_release(r) for r in sorted(best, key=lambda r: (r["ds"], r["export_id"]))]


def released(cfg: LfmConfig, export_id: str, days: list[dt.date] | None = None) -> dict[dt.date, Release]:
    """Day -> release of one export, for the days whose newest row is a release (withdrawn days are absent)."""
    return {r.ds: r for r in latest(cfg, export_id, days) if r.released}


def release_of(cfg: LfmConfig, ds: dt.date, export_id: str) -> Release | None:
    """The current release of (ds, export); None when never released or withdrawn."""
    return released(cfg, export_id, [parse_ds(ds)]).get(parse_ds(ds))


def _by_version(table: str, export_id: str, released_days: dict[dt.date, Release]) -> dict[int, list[dt.date]]:
    """Released days grouped by the version of `table` their release names (days of one version share a scan)."""
    by_version: dict[int, list[dt.date]] = {}
    for day, r in released_days.items():
        if r.export_id != export_id:
            raise ValueError(f"release of {day} belongs to export {r.export_id}, not {export_id}")
        by_version.setdefault(r.table_versions[table], []).append(day)
    return dict(sorted(by_version.items()))


def released_bytes(cfg: LfmConfig, table: str, export_id: str, released_days: dict[dt.date, Release]) -> int:
    """Bytes on disk (or on the object store) of the released partitions (from the Delta log's add actions; no
    Spark job)."""
    from deltalake import DeltaTable

    total, path = 0, cfg.table_path(table)
    for version, days in _by_version(table, export_id, released_days).items():
        opened = DeltaTable(cfg.location(path).for_delta_rs(), version=version,
                            storage_options=cfg.delta_rs_options(path))
        actions = pa.table(opened.get_add_actions(flatten=True))
        ds = [str(d) for d in actions.column("partition.ds").to_pylist()]
        ex = actions.column("partition.export_id").to_pylist()
        sizes = actions.column("size_bytes").to_pylist()
        wanted = {d.isoformat() for d in days}
        total += sum(s for d, e, s in zip(ds, ex, sizes) if e == export_id and d in wanted)
    return total


def released_frame(spark, cfg: LfmConfig, table: str, export_id: str, released_days: dict[dt.date, Release]):
    """The rows of `table` of the released days of one export, each day read at the version its release names.

    Days released at the same table version share one scan; None when there is no released day. A released
    version whose files are gone or damaged raises `DataFilesLost` here, before any Spark job.
    """
    frames = [read_days(spark, cfg.table_path(table), version, days, export_id)
              for version, days in _by_version(table, export_id, released_days).items()]
    if not frames:
        return None
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f)
    return out
