"""Dagster's own local runner over a lakehouse of the refresh world: configs with a `schedule:`, schedule ticks at
a chosen time, runs of one day in this process, and a backfill's runs (a module entry point for a killed one).

Every run is `execute_in_process` of the code location's job against a real instance (ephemeral, or sqlite in a
folder that a second process shares); no server, no daemon.
"""
from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import dagster as dg
import yaml

from tests.support.config import TEST_SPARK_CONF
from tests.support.worlds import SMALL_MODEL, SMALL_TRAIN, TZ

JOB = "lfm_daily"
SCHEDULE = "lfm_daily_schedule"


def write_lake(world, name: str, schedule: dict, quality: dict, feast: dict | None = None) -> Path:
    """A lakehouse of its own holding copies of the world's ingested inputs, and its lfm.yaml (returned)."""
    world.config(name)
    root = world.root / name
    return write_conf(root / "lfm.yaml", {
        "lakehouse": str(root / "lakehouse"), "registry": {"path": str(world.registry)}, "model": SMALL_MODEL,
        "train": SMALL_TRAIN, "quality": quality, "spark": {"conf": TEST_SPARK_CONF}, "schedule": schedule,
        "feast": {"repo_path": str(root / "feature_repo"), **(feast or {})}})


def write_conf(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def landed(day: dt.date, days_later: int = 1, hour: int = 2) -> dt.datetime:
    """`hour` o'clock (the schedule's) local time, `days_later` days after `day`: when a tick finds `day` due."""
    return dt.datetime.combine(day + dt.timedelta(days=days_later), dt.time(hour), ZoneInfo(TZ))


def tick(defs: dg.Definitions, instance: dg.DagsterInstance, at: dt.datetime):
    """The schedule evaluated at `at`: a list of RunRequests, or a SkipReason."""
    schedule = defs.resolve_schedule_def(SCHEDULE)
    with dg.build_schedule_context(instance=instance, scheduled_execution_time=at,
                                   resources=dict(defs.resources or {})) as context:
        return schedule(context)


def run_day(defs: dg.Definitions, instance: dg.DagsterInstance, day: dt.date | str,
            tags: dict | None = None) -> dg.ExecuteInProcessResult:
    """One day's run of the whole job (what the run launcher does with a RunRequest), never raising."""
    return defs.resolve_job_def(JOB).execute_in_process(partition_key=str(day), instance=instance, tags=tags,
                                                        raise_on_error=False)


def run_requests(defs: dg.Definitions, instance: dg.DagsterInstance,
                 requests: list[dg.RunRequest]) -> list[dg.ExecuteInProcessResult]:
    """A tick's requests run one after the other, in the order asked (the run queue's one run per export)."""
    return [run_day(defs, instance, r.partition_key, r.tags) for r in requests]


def backfill(defs: dg.Definitions, instance: dg.DagsterInstance,
             days: list[dt.date]) -> list[dg.ExecuteInProcessResult]:
    """A backfill's runs: one per day, oldest first, stopping at the first failed day (its successors are
    blocked by it: `orchestration.chain`)."""
    out = []
    for day in sorted(days):
        out.append(run_day(defs, instance, day, {"lfm/backfill": f"{days[0]}..{days[-1]}"}))
        if not out[-1].success:
            break
    return out


def events(result: dg.ExecuteInProcessResult, kind: str, step: str | None = None) -> list[dg.DagsterEvent]:
    """The run's events of one type (e.g. STEP_FAILURE, STEP_UP_FOR_RETRY), of one step if given."""
    return [e for e in result.all_events if e.event_type_value == kind and (step is None or e.step_key == step)]


def command(conf: Path, home: Path, days: list[dt.date]) -> list[str]:
    """This module as its own process: a backfill of `days` (its own SparkSession) over the instance in `home`."""
    return [sys.executable, "-m", "tests.support.orchestration", str(conf), str(home), *map(str, days)]


def main(argv: list[str]) -> int:
    from orchestration.build import build_definitions

    conf, home, *days = argv
    instance = dg.DagsterInstance.local_temp(home)
    results = backfill(build_definitions(conf), instance, [dt.date.fromisoformat(d) for d in days])
    return 0 if all(r.success for r in results) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
