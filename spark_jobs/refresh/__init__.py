"""The daily refresh: the frozen LFM over day D's users, items and samples -> UR, IR, CR(user), CR(item).

Three phases so that nothing partial is ever visible: `plan` (driver, cheap: validate and pin inputs), `compute`
(Spark: extract and aggregate, cache and check), `write` (six atomic Delta replaces, then the candidate row).
The caller passes the export spec, resolved once (`pipeline.spec`); the quality gate and the release are the
pipeline's next steps (`pipeline.export`), never called from here.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass

from pyspark.sql import SparkSession

from lakehouse.candidates import Candidate
from lakehouse.locks import day_lock
from lfm.config import LfmConfig
from lfm.contract import DayModel, ExportSpec
from spark_jobs.refresh.compute import DayState, compute_day, previous_state
from spark_jobs.refresh.errors import (MissingState, NoEvents, NonFiniteVectors, PublishError, RefreshError,
                                       TableMismatch)
from spark_jobs.refresh.plan import RefreshPlan, plan_refresh
from spark_jobs.refresh.write import record_candidate, write_tables

__all__ = ["RefreshResult", "RefreshPlan", "DayState", "refresh", "run_day", "plan_refresh", "RefreshError",
           "NoEvents", "MissingState", "TableMismatch", "NonFiniteVectors", "PublishError", "EXPORT_LOCK"]
log = logging.getLogger(__name__)
EXPORT_LOCK = "export"  # one lock per day for writing a candidate and publishing it (lakehouse.locks)


@dataclass(frozen=True)
class RefreshResult:
    candidate: Candidate
    seconds: float

    @property
    def ds(self) -> dt.date:
        return self.candidate.ds

    @property
    def spec(self) -> ExportSpec:
        return self.candidate.spec

    @property
    def rows(self) -> dict[str, int]:
        return self.candidate.rows

    @property
    def run_id(self) -> str:
        return self.candidate.run_id


def run_day(spark: SparkSession, cfg: LfmConfig, plan: RefreshPlan, prev: DayState | None) -> RefreshResult:
    """Compute and write one planned day, ending in its candidate row."""
    t0 = time.perf_counter()
    # Two runs of one day would each win some tables' commits and roll back the others: the day's lock makes the
    # second fail at once, naming the first (released by the OS even on SIGKILL; lakehouse.locks).
    with day_lock(cfg, EXPORT_LOCK, plan.ds, plan.run_id) as fence:
        outputs = compute_day(spark, cfg, plan, prev)
        try:
            written = write_tables(spark, cfg, plan, outputs)
        finally:
            outputs.release()
        fence.check()
        candidate = record_candidate(cfg, plan, written, outputs)
    seconds = time.perf_counter() - t0
    log.info("refresh %s %s: %s rows in %.1fs (run %s)", plan.ds, plan.spec.describe(), outputs.rows, seconds,
             plan.run_id)
    return RefreshResult(candidate, seconds)


def refresh(spark: SparkSession, cfg: LfmConfig, spec: ExportSpec, model: DayModel, ds: str | dt.date,
            cold_start: bool = False, run_id: str | None = None) -> RefreshResult:
    """Refresh day `ds` of one export with the version that makes it: UR, IR, CR(user), CR(item) and the CR
    states, written atomically per table."""
    plan = plan_refresh(spark, cfg, spec, model, ds, cold_start, run_id)
    return run_day(spark, cfg, plan, previous_state(spark, cfg, plan))
