"""Which days a schedule tick asks for: every due day not yet done, oldest first, from the newest done one on.

A tick after the scheduler was down asks for the days it missed as well as the new one, in order (runs of one
export go one at a time: `orchestration/dagster.yaml`). It stops at a day that is running, and at a day whose
last run failed: a failed day (a quarantine, a fault that outlived its retries) is not retried by the schedule,
it waits for an operator; except a day that failed because D-1 was not ready, which is asked for again once D-1
has been released since that run began.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class LastRun:
    """The newest orchestrator run of a day."""

    run_id: str
    in_flight: bool  # queued, starting, running or cancelling
    failed: bool
    created: dt.datetime


@dataclass(frozen=True)
class Plan:
    days: list[dt.date]  # to ask for, in order
    stopped: str | None  # why no later day is asked for (None: every due day is asked for or done)


def plan(due: Sequence[dt.date], done: Callable[[dt.date], bool], last_run: Callable[[dt.date], LastRun | None],
         released_at: Callable[[dt.date], dt.datetime | None]) -> Plan:
    """`due`: the days whose events have landed; `done(d)`: released, online and indexed; `released_at(d)`: when
    d's current release was made (None: not released). Only the days after the newest done one are read, so a
    tick costs a few reads however long the chain."""
    due = sorted(due)
    start = next((i + 1 for i in range(len(due) - 1, -1, -1) if done(due[i])), 0)
    asked: list[dt.date] = []
    for day in due[start:]:
        run = last_run(day)
        if run is not None and run.in_flight:
            return Plan(asked, f"{day} is running (run {run.run_id})")
        if run is not None and run.failed:
            before = released_at(day - dt.timedelta(days=1))
            if before is None or before <= run.created:
                return Plan(asked, f"{day} failed in run {run.run_id} and the schedule does not retry a failed day: "
                                   f"read the run's error, fix the cause, then re-execute {day} (or backfill from it)")
        asked.append(day)
    return Plan(asked, None)
