"""Backfill: refresh a range of days in order, because each day's CR state is built on the previous one.

`backfill_days` runs exactly the code path of `refresh` for D1, D1+1, ..., D2, so refreshing day by day and
backfilling the same range give the same tables. The chain's start:
- by default D1-1's complete refresh of the same export spec must exist (as for `refresh`);
- `cold_start=True` begins a new chain at D1 with an empty state;
- `warmup_days=N` begins a new chain at D1-N and computes the states of D1-N .. D1-1 in memory only (nothing is
  written for the warm-up days), so D1's exported CR already carries N days of history.
`after_day` runs after each day's candidate is written (the pipeline audits and publishes it there); a failure
stops the backfill at that day; the days before it are complete, so rerun from there.
"""
from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import replace

from pyspark.sql import SparkSession

from lfm.config import LfmConfig
from lfm.contract import DayModel, ExportSpec
from lfm.names import BadInput, ds_range
from spark_jobs.refresh import RefreshResult, run_day
from spark_jobs.refresh.compute import DayState, compute_day, previous_state, state_of
from spark_jobs.refresh.plan import plan_refresh

log = logging.getLogger(__name__)

ModelOfDay = Callable[[dt.date], DayModel]  # the version that makes each day (`ResolvedExport.day_model`)


def warm_state(spark: SparkSession, cfg: LfmConfig, spec: ExportSpec, models: ModelOfDay, days: list[dt.date],
               run_id: str) -> DayState | None:
    """The CR state at the end of `days[-1]`, chained from an empty state at `days[0]`; nothing is written.

    Each day's state is materialised with a local checkpoint so the next day's plan stays short.
    """
    state: DayState | None = None
    for i, day in enumerate(days):
        plan = plan_refresh(spark, cfg, spec, models(day), day, cold_start=(i == 0), run_id=run_id,
                            state_in_memory=True, chain_end=dt.date.max)
        out = compute_day(spark, cfg, plan, state, with_towers=False)
        nxt = state_of(out, day, cfg)
        state = DayState(day, nxt.user.localCheckpoint(eager=True), nxt.item.localCheckpoint(eager=True))
        out.release()
        log.info("warm-up %s: state of %s computed (not written)", run_id, day)
    return state


def backfill_days(spark: SparkSession, cfg: LfmConfig, spec: ExportSpec, models: ModelOfDay, first: str | dt.date,
                  last: str | dt.date, warmup_days: int = 0, cold_start: bool = False, run_id: str | None = None,
                  after_day: Callable[[RefreshResult], None] | None = None) -> list[RefreshResult]:
    """Refresh `first`..`last` of one export in order (see the module docstring for how the chain starts)."""
    days = ds_range(first, last)
    if warmup_days < 0:
        raise BadInput(f"--warmup-days must be 0 or more, got {warmup_days}")
    if warmup_days and cold_start:
        raise BadInput("pass either --cold-start (chain begins at --from) or --warmup-days N (chain begins N days "
                       "earlier), not both")
    run_id = run_id or uuid.uuid4().hex[:12]
    prev: DayState | None = None
    if warmup_days:
        start = days[0] - dt.timedelta(days=warmup_days)
        prev = warm_state(spark, cfg, spec, models, ds_range(start, days[0] - dt.timedelta(days=1)), run_id)
    results = []
    for i, day in enumerate(days):
        first_day = i == 0
        plan = plan_refresh(spark, cfg, spec, models(day), day, cold_start=cold_start and first_day, run_id=run_id,
                            state_in_memory=first_day and prev is not None, chain_end=days[-1])
        if first_day and prev is not None:
            plan, state = replace(plan, warmup_days=warmup_days), prev
        else:
            state = previous_state(spark, cfg, plan)
        result = run_day(spark, cfg, plan, state)
        results.append(result)
        if after_day is not None:
            after_day(result)
    return results
