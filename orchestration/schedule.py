"""The daily schedule: at `schedule.hour:minute` in the schema's timezone, ask for the days whose events have landed.

Day D's partition window ends at D+1 hour:minute local (`daily_partitions`), so the tick at that moment finds D
due; `orchestration.catchup` decides which due days to ask for (the missed ones too, in order).
"""
import datetime as dt

import dagster as dg

from lfm.config import LfmConfig
from lfm.names import parse_ds
from pipeline.daystate import DayState, day_state
from orchestration.catchup import LastRun, plan
from orchestration.chain import done
from orchestration.resource import LfmPlatform
from orchestration.tasks import export_spec

EXPORT_TAG = "lfm/export"  # runs of one export go one at a time (orchestration/dagster.yaml's run queue)
IN_FLIGHT = {dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING}
FAILED = {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def daily_partitions(cfg: LfmConfig) -> dg.DailyPartitionsDefinition:
    """One partition per day from `schedule.first_day` (through `last_day`), each ending when its events have
    landed: at D+1 hour:minute in the schema's timezone."""
    s = cfg.schedule
    end = (s.last_day + dt.timedelta(days=2)).isoformat() if s.last_day else None  # end_date is exclusive and
    # counts from midnight, while the last window ends at last_day+1 hour:minute
    parts = dg.DailyPartitionsDefinition(start_date=s.first_day.isoformat(), end_date=end, hour_offset=s.hour,
                                         minute_offset=s.minute, timezone=cfg.schema.timezone)
    return parts


def released_at(state: DayState) -> dt.datetime | None:
    return state.release.at if state.released else None


def last_run(instance: dg.DagsterInstance, key: str) -> LastRun | None:
    found = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": key}), limit=1)
    if not found:
        return None
    rec = found[0]
    return LastRun(rec.dagster_run.run_id, rec.dagster_run.status in IN_FLIGHT, rec.dagster_run.status in FAILED,
                   rec.create_timestamp)


def build_schedule(cfg: LfmConfig, partitions: dg.DailyPartitionsDefinition,
                   job) -> dg.ScheduleDefinition:
    s = cfg.schedule

    @dg.schedule(name="lfm_daily_schedule", job=job, cron_schedule=f"{s.minute} {s.hour} * * *",
                 execution_timezone=cfg.schema.timezone, description="each day once its events have landed; a "
                 "tick also catches up the days missed while the scheduler was down, oldest first")
    def tick(context: dg.ScheduleEvaluationContext, lfm: LfmPlatform):
        current = lfm.config()
        export_id = export_spec(current).id
        keys = partitions.get_partition_keys(current_time=context.scheduled_execution_time)
        out = plan([parse_ds(k) for k in keys], lambda d: done(current, day_state(current, d, export_id)),
                   lambda d: last_run(context.instance, d.isoformat()),
                   lambda d: released_at(day_state(current, d, export_id)))
        if out.stopped:
            context.log.info(out.stopped)
        if not out.days:
            return dg.SkipReason(out.stopped or "every day whose events have landed is released, online and indexed")
        return [dg.RunRequest(partition_key=d.isoformat(), run_key=d.isoformat(), tags={EXPORT_TAG: export_id})
                for d in out.days]

    return tick
