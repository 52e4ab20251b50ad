"""`lfm status`: per day and export, where it stands and each step; then the gate verdicts and the releases.

A day's story comes from its records (`pipeline.daystate`: candidate, verdicts, release, online receipt), the same
ones `run-daily` resumes from, so status and the rerun never disagree; each step shows its latest attempt, and an
attempt that succeeded for data since replaced (a rewrite, a withdrawal) shows as pending. Everything is read with
delta-rs (`lakehouse.records`), so the answer takes a moment and starts no JVM.
"""
from __future__ import annotations

import datetime as dt

from lakehouse import candidates
from lakehouse.records import newest, rows_of
from lfm.config import LfmConfig
from lfm.contract import GATE_STATUS, RELEASES
from lfm.names import BadInput, check_model_version
from pipeline import runs
from pipeline.daystate import DONE, STEP_NAMES, UPDATE, DayState, day_state
from validation.status import not_applicable


def _shown_days(records: list[dict], days: int, only_days: list[dt.date] | None) -> set[dt.date]:
    if only_days:
        return set(only_days)
    return set(sorted({r["ds"] for r in records}, reverse=True)[:days])


def _days_text(cfg: LfmConfig, days: int, only_days: list[dt.date] | None,
               model_version: str | None) -> list[str]:
    """Per shown day (newest first) and export: the day's story, then one line per step."""
    attempts = [r for r in runs.recent(cfg, 10_000)
                if model_version is None or r.model_version in (None, model_version)]
    found = candidates.latest_per_export(cfg, only_days, model_version)
    shown = _shown_days([{"ds": d} for d in {r.ds for r in attempts} | {c.ds for c in found}], days, only_days)
    if not shown:
        return ["days: no run-daily runs or refreshes recorded"]
    lines = ["days (the records decide: candidate -> gate -> release -> online; each step's latest attempt)",
             f"{'ds':<10}  {'step':<11} {'status':<9} {'rows':>11} {'seconds':>8} {'rows/s':>10}  {'export':<16} run"]
    for day in sorted(shown, reverse=True):
        tried = [r for r in attempts if r.ds == day]
        exports = sorted({c.export_id for c in found if c.ds == day} | {r.export_id for r in tried if r.export_id})
        for export_id in exports:
            state = day_state(cfg, day, export_id)
            lines.append(f"{day}  export {export_id}: {state.story()}")
            mine = {r.step: r for r in tried if r.export_id in (None, export_id)}
            steps = list(STEP_NAMES)
            if UPDATE in mine:  # a lineage export's daily update (pipeline.lineage), between ingest and refresh
                steps.insert(1, UPDATE)
            lines += [x for step in steps for x in _step_lines(day, step, state, mine.get(step))]
        if not exports:  # no export resolved yet (ingest failed): the attempts alone
            lines += [x for r in tried for x in _step_lines(day, r.step, None, r)]
    return lines


def _step_lines(day: dt.date, step: str, state: DayState | None, last: runs.StepRun | None) -> list[str]:
    """A step's line: done (`succeeded`, or `done` by another verb), `failed` or `pending`, with its latest attempt."""
    done = (state.done(step) if state is not None and step in DONE
            else last is not None and last.status == "succeeded")
    ok = last is not None and last.status == "succeeded"
    status = ("succeeded" if ok else "done") if done else ("failed" if last and not ok else "pending")
    if last is None:
        return [f"{day}  {step:<11} {status:<9} {'-':>11} {'-':>8} {'-':>10}  {'-':<16} -"]
    rate = f"{last.rows_per_second:,.0f}" if last.rows_per_second else "-"
    count = f"{last.rows:,}" if last.rows is not None else "-"
    out = [f"{day}  {step:<11} {status:<9} {count:>11} {last.seconds:>8.1f} {rate:>10}  "
           f"{(last.export_id or '-'):<16} {last.run_id}"]
    if last.error and status == "failed":
        out += [f"      error: {x}" for x in last.error.splitlines()[:12]]
    if ok and not done:
        out.append(f"      its success ({last.ended_at:%Y-%m-%d %H:%M:%S}) was for data since rewritten or withdrawn")
    return out


def _version_drift(verdict: dict) -> str:
    """', version drift cos C over N' when another version made D than D-1 (a lineage's update)."""
    found = dict(verdict.get("metrics") or {})
    cosine = found.get("version_mean_cosine")
    if cosine is None:
        return ""
    return f", version drift: model {verdict['model_version']} cos {cosine:.3f} over {int(found['version_pairs'])}"


def status_text(cfg: LfmConfig, days: int = 7, only_days: list[dt.date] | None = None,
                model_version: str | None = None) -> str:
    """The last `days` days per export and step (records and runs), per table (verdicts) and export (releases)."""
    if model_version:
        check_model_version(model_version)
    if days < 1:
        raise BadInput(f"--days must be 1 or more, got {days}")
    lines = [f"lakehouse {cfg.location(cfg.lakehouse).uri}", ""]
    lines += _days_text(cfg, days, only_days, model_version)
    verdicts = newest(rows_of(cfg, GATE_STATUS), lambda r: (r["ds"], r["table"], r["export_id"]), "checked_at")
    if model_version:
        verdicts = [v for v in verdicts if v["model_version"] == model_version]
    shown = _shown_days(verdicts, days, only_days)
    verdicts = sorted((v for v in verdicts if v["ds"] in shown), key=lambda v: (v["ds"], v["table"], v["export_id"] or ""))
    lines.append("")
    if verdicts:
        lines.append("quality gate (latest verdict per day, table and export; version = the Delta version checked)")
        for v in verdicts:
            verdict = "passed" if v["passed"] else "QUARANTINED " + ", ".join(v["failed_expectations"])
            skipped = not_applicable(v.get("metrics"))
            if skipped:
                verdict += f" ({', '.join(skipped)} not applicable: no events on the day)"
            if v.get("error"):
                verdict += f" ({v['error']})"
            version = f"v{v['table_version']}" if v["table_version"] is not None else "-"
            lines.append(f"{v['ds']}  {v['table']:<8} {v['export_id'] or '-':<16} {version:>5}  {verdict}  "
                         f"(run {v['run_id']}, {v['checked_at']:%Y-%m-%d %H:%M:%S}){_version_drift(v)}")
    else:
        lines.append("quality gate: no gate runs recorded")

    rel = newest(rows_of(cfg, RELEASES), lambda r: (r["ds"], r["export_id"]), "at")
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
