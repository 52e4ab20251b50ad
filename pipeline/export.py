"""Write-audit-publish of one day's export: refresh -> candidate, gate -> verdicts, publish -> release.

- WRITE: `spark_jobs.refresh` writes the six tables and appends the candidate (exact Delta versions).
- AUDIT: the gate validates the four embedding tables at exactly those versions; drift compares with D-1's
  release. Every verdict names the export, the table version and the candidate's run.
- PUBLISH: under the day's export lock, and only if the candidate is still the newest one of (ds, export) and
  every embedding table's newest verdict passed at the candidate's version, a `releases` row names the versions.
Readers (training sets, materialize, the ANN index) read released days only (`lakehouse.releases`); a release
that a refresh withdrew is taken out of the online store and the ANN index right after it (`serving.materialize.
withdraw`; `run-daily` redoes that after a crash, from the receipt left behind).
"""
from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from pyspark.sql import SparkSession

from lakehouse import candidates, releases
from lakehouse.candidates import Candidate
from lakehouse.locks import day_lock
from lakehouse.releases import Release
from lfm.config import LfmConfig
from lfm.contract import EMBEDDING_TABLES, EVENTS
from lfm.errors import LfmError
from lfm.names import check_export_id, check_model_version, parse_ds
from pipeline.daystate import unpassed
from pipeline.spec import ResolvedExport
from serving.materialize import withdraw
from spark_jobs.backfill import backfill_days
from spark_jobs.refresh import EXPORT_LOCK, RefreshResult, refresh
from validation.errors import QualityGateFailed
from validation.gate import GateResult, run_gate
from validation.status import verdicts

log = logging.getLogger("lfm.export")


class NotPublished(LfmError):
    """A candidate that cannot be released (a newer one exists, or a verdict is missing or for other data)."""


class NoCandidate(LfmError):
    """No complete refresh of the day to validate or publish."""


@dataclass(frozen=True)
class DayRelease:
    """What write-audit-publish did for one day."""

    candidate: Candidate | None  # None when only input tables were validated
    gate: GateResult | None
    release: Release | None  # None when the gate did not run or quarantined a table


def audit(spark: SparkSession, cfg: LfmConfig, candidate: Candidate, run_id: str | None = None) -> GateResult:
    """The gate over exactly the candidate's versions and the events version its refresh read; D-1's release pins
    the drift baseline, and when another version made it (a lineage's update), the version drift's."""
    prev = releases.release_of(cfg, candidate.ds - dt.timedelta(days=1), candidate.spec.id)
    moved = prev is not None and prev.model_version != candidate.model_version  # a lineage's update
    return run_gate(spark, cfg, candidate.ds, candidate.spec, versions=candidate.table_versions,
                    tables=list(EMBEDDING_TABLES), run_id=run_id, refresh_run_id=candidate.run_id,
                    previous_versions=prev.table_versions if prev else None,
                    events_version=candidate.input_versions.get(EVENTS), model_version=candidate.model_version,
                    previous_model_version=prev.model_version if moved else None)


def publish(spark: SparkSession, cfg: LfmConfig, candidate: Candidate) -> Release:
    """Release the candidate if it is still the newest and every embedding table passed at its version."""
    with day_lock(cfg, EXPORT_LOCK, candidate.ds, candidate.run_id) as fence:  # no refresh of the day interleaves
        newest = candidates.latest(cfg, candidate.ds, candidate.spec.id)
        if newest is None or newest.run_id != candidate.run_id:
            raise NotPublished(f"{candidate.ds} of export {candidate.spec.id}: refresh run {candidate.run_id} is no "
                               f"longer the newest candidate ({newest.run_id if newest else 'none'} is); validate "
                               "that one (`lfm validate --ds ...`)")
        found = verdicts(cfg, candidate.ds, candidate.spec.id)
        missing = unpassed(candidate, found)
        if missing:
            raise NotPublished(f"{candidate.ds} of export {candidate.spec.id} is not released: {missing} have no "
                               f"passed verdict at the candidate's versions "
                               f"{ {t: candidate.table_versions[t] for t in missing} } (see `lfm status`)")
        gate_runs = ",".join(sorted({found[t].run_id for t in EMBEDDING_TABLES}))
        fence.check()  # a run whose lease expired (paused past it) must not release over the one that took it
        release = releases.publish(cfg, candidate.ds, candidate.spec, candidate.run_id, gate_runs,
                                   candidate.table_versions, candidate.model_version)
    log.info("run_id=%s ds=%s export %s released at %s", candidate.run_id, candidate.ds, candidate.spec.id,
             candidate.table_versions)
    return release


def audit_and_publish(spark: SparkSession, cfg: LfmConfig, candidate: Candidate,
                      run_id: str | None = None) -> DayRelease:
    """Gate the candidate; publish it when every table passed (a quarantine is returned, not raised)."""
    gate = audit(spark, cfg, candidate, run_id)
    release = publish(spark, cfg, candidate) if gate.passed else None
    return DayRelease(candidate, gate, release)


def write_and_release(spark: SparkSession, cfg: LfmConfig, export: ResolvedExport, ds: str | dt.date,
                      cold_start: bool = False, run_id: str | None = None, gate: bool = True) -> DayRelease:
    """Refresh one day, take a release it withdrew out of serving, then (unless `gate` is False) audit and publish."""
    result = refresh(spark, cfg, export.spec, export.day_model(cfg, ds), ds, cold_start, run_id)
    withdraw(spark, cfg, export.spec, result.candidate.ds)
    if not gate:
        return DayRelease(result.candidate, None, None)
    return audit_and_publish(spark, cfg, result.candidate, result.run_id)


def backfill_and_release(spark: SparkSession, cfg: LfmConfig, export: ResolvedExport, first: str | dt.date,
                         last: str | dt.date, warmup_days: int = 0, cold_start: bool = False,
                         run_id: str | None = None, gate: bool = True) -> list[DayRelease]:
    """Refresh days in order; each day is audited and published before the next one (unless `gate` is False)."""
    done: list[DayRelease] = []

    def after(result: RefreshResult) -> None:
        withdraw(spark, cfg, export.spec, result.candidate.ds)
        done.append(audit_and_publish(spark, cfg, result.candidate, result.run_id) if gate
                    else DayRelease(result.candidate, None, None))

    backfill_days(spark, cfg, export.spec, lambda day: export.day_model(cfg, day), first, last, warmup_days,
                  cold_start, run_id, after)
    return done


def current_candidate(cfg: LfmConfig, ds: str | dt.date, model_version: str | None = None,
                      export_id: str | None = None) -> Candidate:
    """The newest candidate of the day: of `export_id`, or the one export of `model_version` (or of the day)."""
    day = parse_ds(ds)
    found = candidates.latest_per_export(cfg, [day], check_model_version(model_version) if model_version else None)
    if export_id is not None:
        found = [c for c in found if c.spec.id == check_export_id(export_id)]
    if not found:
        raise NoCandidate(f"no complete refresh of {day}" + (f" for model {model_version}" if model_version else "")
                          + (f" and export {export_id}" if export_id else "") + ": run `lfm refresh --ds "
                          f"{day}` (or `lfm run-daily`) first")
    if len(found) > 1:
        raise NoCandidate(f"{day} has candidates of several exports {[c.spec.id for c in found]}: pass --export ID")
    return found[0]


def validate_day(spark: SparkSession, cfg: LfmConfig, ds: str | dt.date, model_version: str | None = None,
                 export_id: str | None = None, tables: list[str] | None = None) -> DayRelease:
    """`lfm validate`: input tables alone (no release), or the day's newest candidate, audited and published."""
    from lfm.contract import INPUT_TABLES

    if tables and set(tables) <= set(INPUT_TABLES):
        return DayRelease(None, run_gate(spark, cfg, ds, tables=tables), None)
    if tables and set(tables) != set(EMBEDDING_TABLES):
        raise NoCandidate(f"a release needs all of {list(EMBEDDING_TABLES)} gated together; pass input tables alone, "
                          "or no --table")
    return audit_and_publish(spark, cfg, current_candidate(cfg, ds, model_version, export_id))


def raise_if_quarantined(days: list[DayRelease]) -> None:
    for d in days:
        if d.gate is not None and not d.gate.passed:
            raise QualityGateFailed(d.gate.summary())
