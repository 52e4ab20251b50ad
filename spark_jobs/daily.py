"""`lfm run-daily --ds D`: ingest -> refresh -> validate -> materialize, each step recorded in `runs`.

A crash or a failed step leaves the earlier steps' results in place; rerunning the same command resumes at the
failed step (see spark_jobs.steps), and rerunning a finished day does nothing unless forced; a second run of a
day that is running fails at once (spark_jobs.locks), so two runs never interleave their writes. The refresh step
publishes the day without gating it; the validate step gates it; materialize loads only what the gate passed, so
a quarantined day never reaches the online store (it keeps the previous day's snapshot).
A range of days runs in order (the CR state is a chain): `--cold-start` applies to its first day only, and every
day uses the model version the first day resolved, even if a newer one is registered meanwhile.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lfm.config import LfmConfig
from lfm.errors import LfmError
from lfm.names import BadInput, check_model_version, check_run_id, parse_ds
from spark_jobs import runs
from spark_jobs.delta_io import table_exists
from spark_jobs.locks import day_lock
from spark_jobs.steps import DayContext, Step, StepFailed, run_steps

log = logging.getLogger("lfm.daily")

STEP_NAMES = ("ingest", "refresh", "validate", "materialize")
Say = Callable[[str], None]


class OnlineStoreDown(LfmError):
    """The online store did not answer during materialize; Delta and the gate verdicts are untouched."""


# --- the four steps ---------------------------------------------------------------------------------------------

def _ingest(source: Path | None) -> Callable[[DayContext], int]:
    def run(ctx: DayContext) -> int:
        if source is not None:
            from spark_jobs.ingest import ingest

            return ingest(ctx.spark, ctx.cfg, source, [ctx.ds], run_id=ctx.run_id).events_rows
        path = ctx.cfg.table_path("events")
        rows = (ctx.spark.read.format("delta").load(path).where(F.col("ds") == F.lit(ctx.ds)).count()
                if table_exists(ctx.spark, path) else 0)
        if rows == 0:
            raise LfmError(f"no events ingested for ds {ctx.ds} and no raw folder given: pass --source DIR "
                           "(a folder in the KuaiRand layout holding that day)")
        return rows
    return run


def _refresh(cold_start: bool) -> Callable[[DayContext], int]:
    def run(ctx: DayContext) -> int:
        from spark_jobs.refresh import refresh

        result = refresh(ctx.spark, ctx.cfg, ctx.ds, model_version=ctx.model_version, cold_start=cold_start,
                         run_id=ctx.run_id, validate=False)
        ctx.model_version = result.model_version
        return int(sum(v for k, v in result.rows.items() if not k.endswith("_state")))
    return run


def _validate(ctx: DayContext) -> int:
    from validation.gate import run_gate

    gate = run_gate(ctx.spark, ctx.cfg, ctx.ds, ctx.model_version, run_id=ctx.run_id)
    log.info("run_id=%s ds=%s step=validate %s", ctx.run_id, ctx.ds, gate.summary().splitlines()[0])
    gate.raise_if_failed()  # QualityGateFailed: the summary names each quarantined table and expectation
    return sum(r.rows for r in gate.tables.values())


def _materialize(ctx: DayContext) -> int:
    from feature_repo.materialize import Skip, materialize
    from feature_repo.register import register
    from feature_repo.specs import specs_from_registry

    if ctx.model_version is None:
        raise LfmError(f"no model version recorded for ds {ctx.ds}: rerun with --force")
    # Idempotent and additive: the run's version gets its views beside the others; `lfm_current` only moves
    # when nothing is current yet (switching serving to a new model is an explicit `lfm register --current`).
    try:
        register(ctx.cfg, specs_from_registry(ctx.cfg, [ctx.model_version]))
        result = materialize(ctx.spark, ctx.cfg, ctx.ds, ctx.model_version)
    except Exception as err:
        if _is_connection_error(err):
            raise OnlineStoreDown(f"the online store ({_store_address(ctx.cfg)}) is unreachable: {err}; nothing "
                                  "else changed (Delta tables and gate verdicts stand): bring it back and rerun "
                                  "the same command, it resumes at materialize") from err
        raise
    refused = [x for x in result.loads if not x.loaded and x.skip is not Skip.newer_online]
    if refused:  # the gate passed a moment ago, so a refusal here is a real fault, not a skip
        raise LfmError(f"materialize of {ctx.ds} refused " + "; ".join(f"{x.table} ({x.reason})" for x in refused))
    return result.rows


def _is_connection_error(err: BaseException) -> bool:
    """Redis' (or a socket's) refusal, however deep in the cause chain."""
    import redis

    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _store_address(cfg: LfmConfig) -> str:
    from lfm.config.serving import OnlineStoreKind

    f = cfg.feast
    return f"redis {f.redis_connection}" if f.online_store == OnlineStoreKind.redis else "sqlite"


def daily_steps(source: Path | None = None, cold_start: bool = False, say: Say | None = None) -> list[Step]:
    """The four steps, each wrapped to report progress through `say` (the demo prints it) when given."""
    steps = [Step("ingest", _ingest(source)), Step("refresh", _refresh(cold_start)),
             Step("validate", _validate), Step("materialize", _materialize)]
    return [_with_progress(s, say) for s in steps] if say else steps


def _with_progress(step: Step, say: Say) -> Step:
    def run(ctx: DayContext) -> int | None:
        say(f"  {ctx.ds} {step.name:<11} ...")
        t0 = time.perf_counter()
        try:
            rows = step.run(ctx)
        except Exception:
            say(f"  {ctx.ds} {step.name:<11} FAILED after {time.perf_counter() - t0:.1f}s")
            raise
        say(f"  {ctx.ds} {step.name:<11} done: {rows or 0:,} rows in {time.perf_counter() - t0:.1f}s")
        return rows
    return Step(step.name, run)


# --- one day, a range of days -------------------------------------------------------------------------------

@dataclass
class DayRun:
    """What one day's invocation did: the step attempts it made (none when the day was already complete)."""

    ds: dt.date
    run_id: str
    model_version: str | None
    steps: list[runs.StepRun]

    @property
    def skipped(self) -> bool:
        return not self.steps


def run_daily(spark: SparkSession, cfg: LfmConfig, ds: str | dt.date, source: Path | None = None,
              model_version: str | None = None, cold_start: bool = False, force: bool = False,
              run_id: str | None = None, say: Say | None = None) -> DayRun:
    """Run (or resume) day `ds`; raises `StepFailed` (the failed step is recorded in `runs`) on a failure."""
    day = parse_ds(ds)
    ctx = DayContext(spark, cfg, day, model_version=check_model_version(model_version) if model_version else None)
    if run_id:
        ctx.run_id = check_run_id(run_id)
    steps = daily_steps(Path(source) if source is not None else None, cold_start, say)
    with day_lock(cfg, "daily", day, ctx.run_id):  # a second run of this day fails here, before any work
        if not force and model_version:
            latest = runs.latest_by_step(spark, cfg, day)
            done = latest.get("refresh")
            if done is not None and done.status == "succeeded" and done.model_version != model_version:
                # The day was exported with another model: redo it from refresh (ingest stands if it succeeded).
                log.info("run_id=%s ds=%s model changed %s -> %s: rerunning from refresh", ctx.run_id, day,
                         done.model_version, model_version)
                ingest_ok = latest.get("ingest") is not None and latest["ingest"].status == "succeeded"
                return DayRun(day, ctx.run_id, model_version,
                              run_steps(ctx, steps[1:] if ingest_ok else steps, force=True))
        attempts = run_steps(ctx, steps, force=force)
    if not attempts and say:
        say(f"  {day} already complete (every step succeeded): nothing to do; --force reruns it")
    return DayRun(day, ctx.run_id, ctx.model_version, attempts)


def run_days(spark: SparkSession, cfg: LfmConfig, days: Sequence[dt.date], source: Path | None = None,
             model_version: str | None = None, cold_start: bool = False, force: bool = False,
             run_id: str | None = None, say: Say | None = None) -> list[DayRun]:
    """Days in order, stopping at the first failure (later days need its CR state)."""
    days = sorted({parse_ds(d) for d in days})
    base = check_run_id(run_id) if run_id else uuid.uuid4().hex[:12]
    if len(days) > 1:
        base = base[:55]  # room for the "-YYYYMMDD" that tells the days of a range apart (64 characters at most)
    out: list[DayRun] = []
    for i, day in enumerate(days):
        try:
            day_run = run_daily(spark, cfg, day, source, model_version, cold_start=cold_start and i == 0,
                                force=force, run_id=base if len(days) == 1 else f"{base}-{day:%Y%m%d}", say=say)
        except StepFailed as err:
            raise DailyFailed(err, _hint(spark, cfg, err), done=out) from err
        out.append(day_run)
        model_version = model_version or day_run.model_version or _recorded_model(spark, cfg, day)
    return out


def _recorded_model(spark: SparkSession, cfg: LfmConfig, day: dt.date) -> str | None:
    last = runs.latest_by_step(spark, cfg, day).get("refresh")
    return last.model_version if last else None


class DailyFailed(LfmError):
    """A step of one day failed; the message is the step's error plus what to do next."""

    def __init__(self, failed: StepFailed, hint: str, done: list[DayRun]):
        self.failed, self.hint, self.done = failed, hint, done
        super().__init__(f"{failed}" + (f"\n  hint: {hint}" if hint else ""))


def _hint(spark: SparkSession, cfg: LfmConfig, err: StepFailed) -> str:
    """The next command to type, for the failures whose fix is a different command rather than a repair."""
    from spark_jobs.refresh import MissingState

    if isinstance(err.cause, MissingState) and "CR layer" not in str(err.cause):
        prev = err.ds - dt.timedelta(days=1)
        before = runs.latest_by_step(spark, cfg, prev)
        if not before:
            return (f"no run of {prev} is recorded, so {err.ds} looks like the first day of a chain: begin it with "
                    f"`lfm run-daily --ds {err.ds} --cold-start`")
        failed = [s for s in STEP_NAMES if s in before and before[s].status != "succeeded"]
        return (f"finish {prev} first (`lfm run-daily --ds {prev}`{', its ' + failed[0] + ' step failed' if failed else ''})"
                f", or begin a new chain at {err.ds} with --cold-start")
    if isinstance(err.cause, OnlineStoreDown):
        return "the earlier steps are recorded as succeeded; once the online store is back, rerun the same command"
    if err.step == "validate":
        return ("the day stays out of the online store (it keeps the previous snapshot); see `lfm status` and the "
                "Data Docs, fix the data or the thresholds, then rerun (it resumes at validate)")
    return ""


# --- lfm status ---------------------------------------------------------------------------------------------

def status_text(spark: SparkSession, cfg: LfmConfig, days: int = 7, only_days: list[dt.date] | None = None,
                model_version: str | None = None) -> str:
    """The last `days` days per step (from `runs`) and per table (gate verdicts), as lines for a terminal."""
    from validation.status import status_rows

    if model_version:
        check_model_version(model_version)
    if days < 1:
        raise BadInput(f"--days must be 1 or more, got {days}")
    lines = [f"lakehouse {cfg.resolve(cfg.lakehouse) if '://' not in cfg.lakehouse else cfg.lakehouse}"]
    steps = runs.recent(spark, cfg, 10_000 if only_days else days)
    if only_days:
        steps = [r for r in steps if r.ds in set(only_days)]
    if model_version:
        steps = [r for r in steps if r.model_version in (None, model_version)]
    lines.append("")
    if steps:
        lines.append("pipeline steps (latest attempt per day and step)")
        lines.append(f"{'ds':<10}  {'step':<11} {'status':<9} {'rows':>11} {'seconds':>8} {'rows/s':>10}  "
                     f"{'model':<16} run")
        for r in steps:
            rate = f"{r.rows_per_second:,.0f}" if r.rows_per_second else "-"
            rows = f"{r.rows:,}" if r.rows is not None else "-"
            lines.append(f"{r.ds}  {r.step:<11} {r.status:<9} {rows:>11} {r.seconds:>8.1f} {rate:>10}  "
                         f"{(r.model_version or '-')[:16]:<16} {r.run_id}")
            if r.error:
                lines += [f"      error: {x}" for x in r.error.splitlines()[:12]]
    else:
        lines.append("pipeline steps: no run-daily runs recorded")
    gate = status_rows(spark, cfg, only_days or None, model_version)
    if not only_days:
        shown = sorted({r.ds for r in gate}, reverse=True)[:days]
        gate = [r for r in gate if r.ds in set(shown)]
    lines.append("")
    if gate:
        lines.append("quality gate (latest verdict per day and table)")
        for r in gate:
            verdict = "passed" if r.passed else "QUARANTINED " + ", ".join(r.failed_expectations)
            lines.append(f"{r.ds}  {r.table:<8} {r.model_version or '-':<16} {verdict}  "
                         f"(run {r.run_id}, {r.checked_at:%Y-%m-%d %H:%M:%S})")
    else:
        lines.append("quality gate: no gate runs recorded")
    return "\n".join(lines)
