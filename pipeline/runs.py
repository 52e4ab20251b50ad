"""The `runs` Delta table: one row per pipeline step attempt, so a day's progress survives any crash.

Rows are appended (never updated): they are the history `lfm status` shows. Where a day stands is read from its
records (`pipeline.daystate`: candidate, verdicts, release, online receipt), which every verb writes; only ingest
is judged by its latest attempt (its `ingest_log` row says what the day holds, not that this run took its drop). Appends are single Delta commits, so a crash
leaves either the row or nothing. The table is read and written with delta-rs
(`deltalake`), not Spark: deciding that a finished day has nothing to do, or printing `lfm status`, starts no JVM
and runs no Spark job. It is an ordinary Delta table (Spark reads it too).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, fields

import pyarrow as pa

from lakehouse.records import append_to, newest, rows_of
from lfm.config import LfmConfig
from lfm.contract import RUNS

SCHEMA = pa.schema([
    pa.field("run_id", pa.string(), False),
    pa.field("ds", pa.date32(), False),
    pa.field("step", pa.string(), False),
    pa.field("model_version", pa.string()),
    pa.field("export_id", pa.string()),
    pa.field("status", pa.string(), False),  # succeeded | failed
    pa.field("started_at", pa.timestamp("us", tz="UTC"), False),
    pa.field("ended_at", pa.timestamp("us", tz="UTC"), False),
    pa.field("seconds", pa.float64(), False),
    pa.field("rows", pa.int64()),
    pa.field("rows_per_second", pa.float64()),
    pa.field("error", pa.string()),
])


@dataclass(frozen=True)
class StepRun:
    run_id: str
    ds: dt.date
    step: str
    model_version: str | None
    export_id: str | None
    status: str
    started_at: dt.datetime
    ended_at: dt.datetime
    seconds: float
    rows: int | None
    rows_per_second: float | None
    error: str | None


def append(cfg: LfmConfig, run: StepRun) -> None:
    append_to(cfg, RUNS, [asdict(run)], SCHEMA,
                 {"job": "runs", "run_id": run.run_id, "ds": run.ds.isoformat(), "step": run.step})


def _all(cfg: LfmConfig) -> list[dict]:
    return rows_of(cfg, RUNS)


def _step_run(r: dict) -> StepRun:
    return StepRun(**{f.name: r.get(f.name) for f in fields(StepRun)})


def latest_by_step(cfg: LfmConfig, ds: dt.date) -> dict[str, StepRun]:
    """The most recent attempt of each step for day `ds`."""
    best = newest([r for r in _all(cfg) if r["ds"] == ds], lambda r: r["step"], "ended_at")
    return {r["step"]: _step_run(r) for r in best}


def recent(cfg: LfmConfig, days: int = 7) -> list[StepRun]:
    """Latest attempt per (ds, step) for the last `days` days that have runs, newest day first."""
    records = _all(cfg)
    last_days = set(sorted({r["ds"] for r in records}, reverse=True)[:days])
    best = newest([r for r in records if r["ds"] in last_days], lambda r: (r["ds"], r["step"]), "ended_at")
    return sorted((_step_run(r) for r in best), key=lambda r: (-r.ds.toordinal(), r.started_at))

