"""`lfm status`: the pipeline steps, the gate verdicts and the releases of the last days, without Spark.

Everything is read with delta-rs (`lakehouse.records`), so the answer takes a moment and starts no JVM.
"""
from __future__ import annotations

import datetime as dt

from lakehouse.records import newest, rows
from lfm.config import LfmConfig
from lfm.contract import GATE_STATUS, RELEASES
from lfm.names import BadInput, check_model_version
from pipeline import runs


def _shown_days(records: list[dict], days: int, only_days: list[dt.date] | None) -> set[dt.date]:
    if only_days:
        return set(only_days)
    return set(sorted({r["ds"] for r in records}, reverse=True)[:days])


def status_text(cfg: LfmConfig, days: int = 7, only_days: list[dt.date] | None = None,
                model_version: str | None = None) -> str:
    """The last `days` days per step (runs), per table (gate verdicts) and per export (releases)."""
    if model_version:
        check_model_version(model_version)
    if days < 1:
        raise BadInput(f"--days must be 1 or more, got {days}")
    lines = [f"lakehouse {cfg.resolve(cfg.lakehouse) if '://' not in cfg.lakehouse else cfg.lakehouse}", ""]
    steps = runs.recent(cfg, 10_000 if only_days else days)
    if only_days:
        steps = [r for r in steps if r.ds in set(only_days)]
    if model_version:
        steps = [r for r in steps if r.model_version in (None, model_version)]
    if steps:
        lines.append("pipeline steps (latest attempt per day and step)")
        lines.append(f"{'ds':<10}  {'step':<11} {'status':<9} {'rows':>11} {'seconds':>8} {'rows/s':>10}  "
                     f"{'export':<16} run")
        for r in steps:
            rate = f"{r.rows_per_second:,.0f}" if r.rows_per_second else "-"
            count = f"{r.rows:,}" if r.rows is not None else "-"
            lines.append(f"{r.ds}  {r.step:<11} {r.status:<9} {count:>11} {r.seconds:>8.1f} {rate:>10}  "
                         f"{(r.export_id or '-'):<16} {r.run_id}")
            if r.error:
                lines += [f"      error: {x}" for x in r.error.splitlines()[:12]]
    else:
        lines.append("pipeline steps: no run-daily runs recorded")

    verdicts = newest(rows(cfg.table_path(GATE_STATUS)), lambda r: (r["ds"], r["table"], r["export_id"]), "checked_at")
    if model_version:
        verdicts = [v for v in verdicts if v["model_version"] == model_version]
    shown = _shown_days(verdicts, days, only_days)
    verdicts = sorted((v for v in verdicts if v["ds"] in shown), key=lambda v: (v["ds"], v["table"], v["export_id"] or ""))
    lines.append("")
    if verdicts:
        lines.append("quality gate (latest verdict per day, table and export; version = the Delta version checked)")
        for v in verdicts:
            verdict = "passed" if v["passed"] else "QUARANTINED " + ", ".join(v["failed_expectations"])
            if v.get("error"):
                verdict += f" ({v['error']})"
            version = f"v{v['table_version']}" if v["table_version"] is not None else "-"
            lines.append(f"{v['ds']}  {v['table']:<8} {v['export_id'] or '-':<16} {version:>5}  {verdict}  "
                         f"(run {v['run_id']}, {v['checked_at']:%Y-%m-%d %H:%M:%S})")
    else:
        lines.append("quality gate: no gate runs recorded")

    rel = newest(rows(cfg.table_path(RELEASES)), lambda r: (r["ds"], r["export_id"]), "at")
    if model_version:
        rel = [r for r in rel if r["model_version"] == model_version]
    shown = _shown_days(rel, days, only_days)
    rel = sorted((r for r in rel if r["ds"] in shown), key=lambda r: (r["ds"], r["export_id"]))
    lines.append("")
    if rel:
        lines.append("releases (what training sets, the online store and the ANN index read)")
        for r in rel:
            if r["status"] == "released":
                versions = ", ".join(f"{k} v{v}" for k, v in sorted((r["table_versions"] or {}).items()))
                what = f"RELEASED  {versions}"
            else:
                what = f"WITHDRAWN ({r['reason']})"
            lines.append(f"{r['ds']}  {r['export_id']}  model {r['model_version'][:12]}  {what}  "
                         f"({r['at']:%Y-%m-%d %H:%M:%S})")
    else:
        lines.append("releases: none yet")
    return "\n".join(lines)
