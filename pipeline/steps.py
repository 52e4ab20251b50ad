"""A resumable chain of named steps for one day, each attempt recorded in the `runs` table.

Whether a step is done is the step's own question (`Step.done`), answered from the day's records when the run
begins: run-daily asks the candidate, verdicts, release and online receipt of the day (`pipeline.daystate`), so a
day withdrawn by a later rewrite is redone even though every attempt once succeeded. A step that has no record of
its own falls back to its latest attempt. A rerun resumes at the first step that is not done; a finished day does
nothing unless forced. A failed step records its error and stops the chain.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from lakehouse.locks import Fence
from lfm.config import LfmConfig
from lfm.contract import ExportSpec
from lfm.errors import LfmError
from pipeline import runs
from pipeline.spec import ResolvedExport

if TYPE_CHECKING:  # pyspark is imported by the steps that run Spark: a finished day needs none of it
    from pyspark.sql import SparkSession

log = logging.getLogger("lfm.steps")


@dataclass
class DayContext:
    """What every step of one day's run sees: the config, the day, the export resolved once, a lazy session.

    The SparkSession is created on first use, so a run that finds nothing to do never starts a JVM.
    """

    cfg: LfmConfig
    ds: dt.date
    resolve: Callable[[], ResolvedExport] | None = None  # resolves the export once, on first use
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    spark_factory: Callable[[], SparkSession] | None = None
    # The spec alone (the model card, no weights): what deciding that a finished day is done needs.
    resolve_spec: Callable[[], ExportSpec] | None = None
    fence: Fence | None = None  # the day's lock, checked before each step: a run whose lease was lost stops
    _spark: SparkSession | None = field(default=None, repr=False)
    _export: ResolvedExport | None = field(default=None, repr=False)
    _spec: ExportSpec | None = field(default=None, repr=False)

    @property
    def spark(self) -> SparkSession:
        if self._spark is None:
            if self.spark_factory is None:
                raise LfmError("this run has no SparkSession factory")
            self._spark = self.spark_factory()
        return self._spark

    @property
    def export(self) -> ResolvedExport:
        if self._export is None:
            if self.resolve is None:
                raise LfmError("this run resolves no export")
            self._export = self.resolve()
        return self._export

    @property
    def spec(self) -> ExportSpec | None:
        """The export's spec: from the export when resolved, else from `resolve_spec` (cheap), else resolved."""
        if self._export is not None:
            return self._export.spec
        if self._spec is None and self.resolve_spec is not None:
            self._spec = self.resolve_spec()
        return self._spec or (self.export.spec if self.resolve else None)

    @property
    def model_version(self) -> str | None:
        return self.spec.model_version if self.spec else None

    @property
    def export_id(self) -> str | None:
        return self.spec.id if self.spec else None


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[DayContext], int | None]  # returns the rows it produced (None when that means nothing)
    # Whether the day already holds what this step makes (asked before the run starts); None: its latest attempt
    # in `runs` succeeded.
    done: Callable[[DayContext], bool] | None = None


class StepFailed(LfmError):
    def __init__(self, step: str, ds: dt.date, cause: BaseException):
        self.step, self.ds, self.cause = step, ds, cause
        super().__init__(f"step {step!r} of {ds} failed: {cause}; fix the cause and rerun the same command "
                         "(finished steps are skipped)")


def pending_steps(ctx: DayContext, steps: Sequence[Step], force: bool) -> list[Step]:
    """Steps still to run: all when forced, else from the first one that is not done."""
    if force:
        return list(steps)
    latest: dict[str, runs.StepRun] | None = None
    for i, step in enumerate(steps):
        if step.done is not None:
            finished = step.done(ctx)
        else:
            latest = runs.latest_by_step(ctx.cfg, ctx.ds) if latest is None else latest
            finished = step.name in latest and latest[step.name].status == "succeeded"
        if not finished:
            return list(steps[i:])
    return []


def run_steps(ctx: DayContext, steps: Sequence[Step], force: bool = False) -> list[runs.StepRun]:
    todo = pending_steps(ctx, steps, force)
    if not todo:
        log.info("run_id=%s ds=%s nothing to do: every step is done (use --force to rerun)", ctx.run_id, ctx.ds)
    done = []
    for step in todo:
        started = dt.datetime.now(dt.timezone.utc)
        t0 = time.perf_counter()
        log.info("run_id=%s ds=%s step=%s started", ctx.run_id, ctx.ds, step.name)
        error, rows = None, None
        try:
            if ctx.fence is not None:
                ctx.fence.check()
            rows = step.run(ctx)
        except Exception as err:  # recorded, then re-raised as StepFailed
            error = err
        seconds = time.perf_counter() - t0
        resolved = ctx._export  # only what the steps so far needed: an ingest-only failure names no export
        record = runs.StepRun(
            run_id=ctx.run_id, ds=ctx.ds, step=step.name,
            model_version=resolved.spec.model_version if resolved else None,
            export_id=resolved.spec.id if resolved else None,
            status="failed" if error else "succeeded", started_at=started,
            ended_at=dt.datetime.now(dt.timezone.utc), seconds=seconds, rows=rows,
            rows_per_second=(rows / seconds) if rows and seconds > 0 else None,
            error=_describe(error) if error else None)
        runs.append(ctx.cfg, record)
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
