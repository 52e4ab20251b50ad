"""`lfm run-daily --ds D`: ingest -> refresh -> withdraw -> validate -> publish -> materialize, each attempt in `runs`.

With `updates.every_days` (a lineage export), an `update` step between ingest and refresh continues the model
lineage on the days since its newest version when due (`pipeline.lineage`), and the refresh exports D with the
version trained through D-1.

The export (model version, CR layer, decay: `pipeline.spec`) is resolved once per invocation and passed to every
step and every day. refresh writes a candidate (withdrawing a release of the day it rewrites); withdraw takes such
a withdrawn release out of the online store and the ANN index (the previous release takes its place); validate
gates exactly the candidate's versions; publish releases it when every table passed; materialize loads the
release online (all tables or none). What is done is read from the day's records, not from the attempts
(`pipeline.daystate`): a crash or a failed step leaves the earlier steps' results in place and the same command
resumes at the first step not done, a day rewritten or killed during its gate is gated again, and a finished day
(released and online) does nothing, without Spark, unless forced; a second run of a day that is running fails at
once (lakehouse.locks), so two runs never interleave their writes. A quarantined day is never released, so it
never reaches the online store, a training set or the ANN index (they keep the previous release).
A range of days runs in order (the CR state is a chain): `--cold-start` applies to its first day only.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from lakehouse import candidates, ingests
from lakehouse.locks import day_lock
from lfm.config import LfmConfig
from lfm.contract import ExportSpec
from lfm.errors import LfmError
from lfm.names import check_model_version, check_run_id, parse_ds
from lfm.progress import ticking
from pipeline import runs
from pipeline.daystate import STEP_NAMES, UPDATE, DayState, day_state, ingested
from pipeline.spec import ResolvedExport
from pipeline.steps import DayContext, Step, StepFailed, run_steps
from serving.errors import OnlineStoreDown
from serving.online_io import reaching_online

if TYPE_CHECKING:  # Spark, GE and Feast are imported by the steps that use them: a finished day needs none
    from pyspark.sql import SparkSession

log = logging.getLogger("lfm.daily")

Say = Callable[[str], None]


# --- the six steps ---------------------------------------------------------------------------------------------

def _ingest(source: Path | str | None, allow_empty: bool = False) -> Callable[[DayContext], int]:
    """The day's events from `source`; without one, those already ingested. 0 rows: a day with no events, which
    ingest recorded as such (inside the log's span, or `allow_empty`); one after the log's end is refused."""
    def run(ctx: DayContext) -> int:
        if source is not None:
            from spark_jobs.ingest import ingest

            return ingest(ctx.spark, ctx.cfg, source, [ctx.ds], run_id=ctx.run_id,
                          allow_empty=allow_empty).events_rows
        from pyspark.sql import functions as F

        from lakehouse.delta_io import read_table, table_exists

        path = ctx.cfg.table_path("events")
        rows = (read_table(ctx.spark, path).where(F.col("ds") == F.lit(ctx.ds)).count()
                if table_exists(ctx.spark, path, ctx.cfg.delta_rs_options(path)) else 0)
        if rows == 0 and not ingests.recorded_empty(ctx.cfg, ctx.ds):
            raise LfmError(f"no events ingested for ds {ctx.ds} and no raw folder given: pass --source DIR "
                           "(the folder the sources declared in lfm.yaml resolve against, holding that day; with "
                           "--allow-empty if the day truly had no events)")
        return rows
    return run


def _update(ctx: DayContext) -> int:
    """A lineage export's daily update: continue the lineage on the days since its newest version, when due."""
    from pipeline.lineage import continue_lineage

    card = continue_lineage(ctx.spark, ctx.cfg, ctx.export.spec, ctx.ds, say=None)
    return int(card.metrics["rows"]["train"]) if card else 0


def _update_done(state: Callable[[DayContext], DayState]) -> Callable[[DayContext], bool]:
    """Done once the day has a candidate (its version was chosen then) or when no update is due."""
    def done(ctx: DayContext) -> bool:
        from pipeline.lineage import update_days

        return state(ctx).candidate is not None or not update_days(ctx.cfg, ctx.spec, ctx.ds)
    return done


def _refresh(cold_start: bool) -> Callable[[DayContext], int]:
    def run(ctx: DayContext) -> int:
        from spark_jobs.refresh import refresh

        result = refresh(ctx.spark, ctx.cfg, ctx.export.spec, ctx.export.day_model(ctx.cfg, ctx.ds), ctx.ds,
                         cold_start, ctx.run_id)
        return int(sum(v for k, v in result.rows.items() if not k.endswith("_state")))
    return run


def _candidate(ctx: DayContext):
    from pipeline.export import NoCandidate

    found = candidates.latest(ctx.cfg, ctx.ds, ctx.export.spec.id)
    if found is None:
        raise NoCandidate(f"no complete refresh of {ctx.ds} for {ctx.export.spec.describe()}: rerun with --force")
    return found


def _validate(ctx: DayContext) -> int:
    from pipeline.export import audit

    gate = audit(ctx.spark, ctx.cfg, _candidate(ctx), ctx.run_id)
    log.info("run_id=%s ds=%s step=validate %s", ctx.run_id, ctx.ds, gate.summary().splitlines()[0])
    gate.raise_if_failed()  # QualityGateFailed: the summary names each quarantined table and expectation
    return sum(r.rows for r in gate.tables.values())


def _withdraw(ctx: DayContext) -> int:
    from serving.materialize import withdraw

    done = withdraw(ctx.spark, ctx.cfg, ctx.export.spec, ctx.ds)
    return done.removed if done else 0


def _publish(ctx: DayContext) -> int:
    from pipeline.export import publish

    release = publish(ctx.spark, ctx.cfg, _candidate(ctx))
    return len(release.table_versions)


def _materialize(ctx: DayContext) -> int:
    from feature_repo.store import open_store
    from serving.materialize import materialize
    from serving.register import register

    def load():
        # Idempotent and additive: the run's export gets its views beside the others; `lfm_current` only moves
        # when nothing is current yet (switching serving to another export is an explicit `lfm register --current`).
        store = open_store(ctx.cfg)  # one Feast store (and registry connection) for both
        register(ctx.cfg, [ctx.export.spec], store=store, run_id=ctx.run_id)
        return materialize(ctx.spark, ctx.cfg, ctx.ds, ctx.export.spec.id, store=store)

    with reaching_online(ctx.cfg):  # register reads the store's Feast registry too
        return load().rows


def daily_steps(source: Path | str | None = None, cold_start: bool = False, say: Say | None = None,
                state: Callable[[DayContext], DayState] | None = None, update: bool = False,
                allow_empty: bool = False) -> list[Step]:
    """The six steps (seven with `update`: a lineage export's daily update before the refresh), each wrapped to
    report progress through `say` (the demo prints it) when given; with `state` (the day's records), each step is
    done when they say so, else when its latest attempt succeeded. `allow_empty`: the ingest records a day the
    source holds no event of as an empty day even after the log's end."""
    runs_of = {"ingest": _ingest(source, allow_empty), "refresh": _refresh(cold_start), "withdraw": _withdraw,
               "validate": _validate, "publish": _publish, "materialize": _materialize}
    steps = [Step(name, runs_of[name], _done_by(state, name) if state else None) for name in STEP_NAMES]
    if update:
        steps.insert(1, Step(UPDATE, _update, _update_done(state) if state else None))
    return [_with_progress(s, say) for s in steps] if say else steps


def _done_by(state: Callable[[DayContext], DayState], name: str) -> Callable[[DayContext], bool]:
    if name == "ingest":  # of the day, not of the export: a day is ingested before any model is resolved
        return lambda ctx: ingested(ctx.cfg, ctx.ds)
    return lambda ctx: state(ctx).done(name)


def _with_progress(step: Step, say: Say) -> Step:
    """One line per step when it ends (its rows and seconds, or FAILED); on a terminal, the seconds so far while
    it runs (`lfm.progress`). The log file has the step's start and end with the run id."""
    def run(ctx: DayContext) -> int | None:
        label = f"  {ctx.ds} {step.name:<11}"
        t0 = time.perf_counter()
        try:
            with ticking(label):
                rows = step.run(ctx)
        except Exception:
            say(f"{label} FAILED after {time.perf_counter() - t0:.1f}s")
            raise
        say(f"{label} done: {rows or 0:,} rows in {time.perf_counter() - t0:.1f}s")
        return rows
    return Step(step.name, run, step.done)


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


def run_daily(cfg: LfmConfig, resolve: Callable[[], ResolvedExport], ds: str | dt.date,
              spark_factory: Callable[[], SparkSession], source: Path | str | None = None, cold_start: bool = False,
              force: bool = False, run_id: str | None = None, say: Say | None = None,
              resolve_spec: Callable[[], ExportSpec] | None = None, allow_empty: bool = False,
              only: Collection[str] | None = None) -> DayRun:
    """Run (or resume) day `ds` of one export; raises `StepFailed` (recorded in `runs`) on a failure.

    `resolve` gives the export (called once, when a step first needs it); `resolve_spec` its spec alone, from the
    model card. The steps to run are read from the day's records for this export, under the day's lock, once: a
    day released and online is skipped without starting Spark, importing torch or reading the weights. `only`
    keeps those of the day's steps (in their order): an orchestrator runs each group of steps as a task of its own.
    """
    day = parse_ds(ds)
    ctx = DayContext(cfg, day, resolve, spark_factory=spark_factory, resolve_spec=resolve_spec)
    if run_id:
        ctx.run_id = check_run_id(run_id)
    records: list[DayState] = []

    def state(c: DayContext) -> DayState:  # read once, when the first step asks; the spec alone, from the card
        if not records:
            records.append(day_state(cfg, day, resolve_spec().id if resolve_spec else c.export.spec.id))
        return records[0]

    steps = daily_steps(source, cold_start, say, state, update=cfg.updates.every_days is not None,
                        allow_empty=allow_empty)
    if only is not None:
        steps = [s for s in steps if s.name in only]
    with day_lock(cfg, "daily", day, ctx.run_id) as ctx.fence:  # a second run of this day fails here, at once
        attempts = run_steps(ctx, steps, force=force)
    if not attempts and say:
        say(f"  {day} already complete (released and online): nothing to do; --force reruns it")
    return DayRun(day, ctx.run_id, _made_by(ctx), attempts)


def _made_by(ctx: DayContext) -> str | None:
    """The version that made the day: the export's model, or for a lineage export the one its candidate names."""
    spec = ctx.spec
    if spec is None or not spec.lineage:
        return ctx.model_version
    found = candidates.latest(ctx.cfg, ctx.ds, spec.id)
    return found.model_version if found else None


def run_days(cfg: LfmConfig, days: Sequence[dt.date], spark_factory: Callable[[], SparkSession],
             source: Path | str | None = None, model_version: str | None = None, cr_layer: str | None = None,
             cold_start: bool = False, force: bool = False, run_id: str | None = None,
             say: Say | None = None, export: ResolvedExport | None = None,
             allow_empty: bool = False, only: Collection[str] | None = None) -> list[DayRun]:
    """Days in order, stopping at the first failure (later days need its CR state). The export is resolved once
    (`model_version`, default the latest registered; `cr_layer`, default the selected one) for every day; `only`
    restricts each day to those steps (`run_daily`)."""
    from pipeline.spec import resolve_export
    from pipeline.spec import resolve_spec as card_spec

    if model_version is not None:
        check_model_version(model_version)  # refused before any work, not when a step first resolves it
    resolved: list[ResolvedExport] = [export] if export else []
    specs: list[ExportSpec] = [export.spec] if export else []

    def resolve() -> ResolvedExport:  # once for the whole range, when a step first needs it
        if not resolved:
            resolved.append(resolve_export(cfg, model_version, cr_layer))
        return resolved[0]

    def resolve_spec() -> ExportSpec:  # the spec alone, for the days that turn out to be finished
        if not specs:
            specs.append(resolved[0].spec if resolved else card_spec(cfg, model_version, cr_layer))
        return specs[0]

    days = sorted({parse_ds(d) for d in days})
    base = check_run_id(run_id) if run_id else uuid.uuid4().hex[:12]
    if len(days) > 1:
        base = base[:55]  # room for the "-YYYYMMDD" that tells the days of a range apart (64 characters at most)
    out: list[DayRun] = []
    for i, day in enumerate(days):
        try:
            day_run = run_daily(cfg, resolve, day, spark_factory, source, cold_start=cold_start and i == 0,
                                force=force, run_id=base if len(days) == 1 else f"{base}-{day:%Y%m%d}", say=say,
                                resolve_spec=resolve_spec, allow_empty=allow_empty, only=only)
        except StepFailed as err:
            raise DailyFailed(err, _hint(cfg, err, resolve_spec), done=out) from err
        out.append(day_run)
    return out


class DailyFailed(LfmError):
    """A step of one day failed; the message is the step's error plus what to do next."""

    def __init__(self, failed: StepFailed, hint: str, done: list[DayRun]):
        self.failed, self.hint, self.done = failed, hint, done
        super().__init__(f"{failed}" + (f"\n  hint: {hint}" if hint else ""))


def _hint(cfg: LfmConfig, err: StepFailed, spec: Callable[[], ExportSpec]) -> str:
    """The next command to type, for the failures whose fix is a different command rather than a repair."""
    from spark_jobs.refresh import MissingState

    if isinstance(err.cause, MissingState) and "another export spec" not in str(err.cause):
        prev = err.ds - dt.timedelta(days=1)
        before = day_state(cfg, prev, spec().id)  # where D-1 of this export stands
        if before.candidate is None and not before.ingested:
            return (f"no run of {prev} is recorded, so {err.ds} looks like the first day of a chain: begin it with "
                    f"`lfm run-daily --ds {err.ds} --cold-start`")
        return (f"finish {prev} first (`lfm run-daily --ds {prev}` resumes at its {before.next_step or 'first'} "
                f"step), or begin a new chain at {err.ds} with --cold-start")
    if isinstance(err.cause, OnlineStoreDown):
        return "the earlier steps are recorded as succeeded; once the online store is back, rerun the same command"
    if err.step in ("validate", "publish"):
        return ("the day is not released: training sets, the online store and the ANN index keep the previous "
                "release; see `lfm status` and the Data Docs, fix the data or the thresholds, then rerun (it resumes "
                f"at {err.step})")
    return ""
