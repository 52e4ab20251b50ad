"""The CR chain as the orchestrator must respect it: D's refresh needs D-1 gated, a day is done when served.

Dagster runs each partition on its own (a schedule's catch-up, a backfill, a click in the UI), so the rule that
`run-daily` keeps by running days in order is checked here, from the day's records, before D's refresh: D-1 of the
same export must hold a candidate that passed the gate (what D-1's release names; publishing it only records
that). A quarantined D-1 blocks D for good (until D-1 is fixed and rerun); a D-1 not yet run says to run it first.
"""
from __future__ import annotations

import datetime as dt

from lfm.config import LfmConfig
from pipeline.daystate import DayState, day_state
from serving.errors import NoIndex


def blocked(cfg: LfmConfig, day: dt.date, export_id: str) -> str | None:
    """Why `day`'s refresh may not run now (None: the chain allows it)."""
    first = cfg.schedule.first_day
    if first is not None and day <= first:
        return None if day == first else (f"{day} is before schedule.first_day {first}, the first day of the chain: "
                                          "move schedule.first_day to run it")
    prev = day - dt.timedelta(days=1)
    before = day_state(cfg, prev, export_id)
    if before.gated:
        return None
    if before.quarantined:
        return (f"{day} is blocked: its refresh chains from {prev}'s release, and the gate quarantined {prev} "
                f"({', '.join(before.quarantined)}) so there is none. Fix {prev} (its gate's message and the Data "
                f"Docs say why), run {prev} again, then {day}")
    if before.candidate is None:
        return (f"{day} is blocked: {prev} of export {export_id} has not been refreshed; run {prev} first (the "
                "schedule and a backfill run the days in order)")
    return f"{day} is blocked: {prev}'s candidate has not passed the gate yet; run {prev} first"


def index_current(cfg: LfmConfig, export_id: str, day: dt.date) -> bool:
    """The day's ANN index was built from its current release (`serving.retrieval.load_index` picks only such)."""
    from serving.retrieval import load_index

    try:
        return load_index(cfg, export_id, day).meta.get("ds") == day.isoformat()
    except NoIndex:
        return False


def done(cfg: LfmConfig, state: DayState) -> bool:
    """Released, online and indexed: nothing of the day is left to run."""
    return state.next_step is None and index_current(cfg, state.export_id, state.ds)
