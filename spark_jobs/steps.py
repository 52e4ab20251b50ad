"""A resumable chain of named steps for one day, each attempt recorded in the `runs` table.

A rerun skips the steps whose latest attempt succeeded and resumes at the first one that did not; a rerun of a
finished day does nothing unless forced. A failed step records its error and stops the chain.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyspark.sql import SparkSession

from lfm.config import LfmConfig
from lfm.errors import LfmError
from spark_jobs import runs

log = logging.getLogger("lfm.steps")


@dataclass
class DayContext:
    """What every step of one day's run sees; steps may fill `model_version` for the ones after them."""

    spark: SparkSession
    cfg: LfmConfig
    ds: dt.date
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    model_version: str | None = None


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[DayContext], int | None]  # returns the rows it produced (None when that means nothing)


class StepFailed(LfmError):
    def __init__(self, step: str, ds: dt.date, cause: BaseException):
        self.step, self.ds, self.cause = step, ds, cause
        super().__init__(f"step {step!r} of {ds} failed: {cause}; fix the cause and rerun the same command "
                         "(finished steps are skipped)")


def pending_steps(ctx: DayContext, steps: Sequence[Step], force: bool) -> list[Step]:
    """Steps still to run: all when forced, else from the first one whose latest attempt did not succeed."""
    if force:
        return list(steps)
    latest = runs.latest_by_step(ctx.spark, ctx.cfg, ctx.ds)
    for i, step in enumerate(steps):
        last = latest.get(step.name)
        if last is None or last.status != "succeeded":
            if ctx.model_version is None and i > 0:
                ctx.model_version = latest[steps[i - 1].name].model_version
            return list(steps[i:])
    return []


def run_steps(ctx: DayContext, steps: Sequence[Step], force: bool = False) -> list[runs.StepRun]:
    todo = pending_steps(ctx, steps, force)
    if not todo:
        log.info("run_id=%s ds=%s nothing to do: every step succeeded (use --force to rerun)", ctx.run_id, ctx.ds)
    done = []
    for step in todo:
        started = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        t0 = time.perf_counter()
        log.info("run_id=%s ds=%s step=%s started", ctx.run_id, ctx.ds, step.name)
        error, rows = None, None
        try:
            rows = step.run(ctx)
        except Exception as err:  # recorded, then re-raised as StepFailed
            error = err
        seconds = time.perf_counter() - t0
        record = runs.StepRun(
            run_id=ctx.run_id, ds=ctx.ds, step=step.name, model_version=ctx.model_version,
            status="failed" if error else "succeeded", started_at=started,
            ended_at=dt.datetime.now(dt.timezone.utc).replace(tzinfo=None), seconds=seconds, rows=rows,
            rows_per_second=(rows / seconds) if rows and seconds > 0 else None,
            error=_describe(error) if error else None)
        runs.append(ctx.spark, ctx.cfg, record)
        done.append(record)
        log.info("run_id=%s ds=%s step=%s status=%s seconds=%.1f rows=%s", ctx.run_id, ctx.ds, step.name,
                 record.status, seconds, rows)
        if error:
            raise StepFailed(step.name, ctx.ds, error) from error
    return done


def _describe(err: BaseException) -> str:
    if isinstance(err, LfmError):
        return f"{type(err).__name__}: {err}"
    tail = traceback.format_exception_only(type(err), err)[-1].strip()
    return tail[:2000]
