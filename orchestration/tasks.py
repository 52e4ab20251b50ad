"""One asset's share of a day: a group of `run-daily`'s steps, run through `pipeline.daily.run_days` itself.

Each group runs under the day's lock, records every attempt in `runs` and skips what the day's records say is done
(a rerun of a finished group does nothing), exactly as the CLI does. Errors are sorted into the two kinds the
orchestrator treats differently: transient faults (the online store or the object store unreachable, a lease or
the day's lock held by another run) are raised as they are, for the asset's RetryPolicy to retry with backoff;
everything else (a quarantine, bad input, a broken chain) becomes `dagster.Failure(allow_retries=False)`: retrying
cannot fix it, an operator must.
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import dagster as dg

from lakehouse.leases import LeaseBusy
from lakehouse.locks import DayBusy
from lakehouse.objects import ObjectChanged, ObjectExists, ObjectStoreError
from lfm.config import LfmConfig
from lfm.contract import ExportSpec
from pipeline.daily import DailyFailed, DayRun, run_days
from pipeline.daystate import UPDATE
from serving.errors import OnlineStoreDown
from validation.errors import QualityGateFailed

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# The asset that runs each of run-daily's steps (`pipeline.daystate.STEP_NAMES`; `update` only for a lineage export).
GROUPS: dict[str, tuple[str, ...]] = {
    "events": ("ingest",),
    "candidate": (UPDATE, "refresh", "withdraw", "validate"),  # validate is the gate: the asset's blocking check
    "release": ("publish",),
    "online_store": ("materialize",),
}
TRANSIENT: tuple[type[BaseException], ...] = (OnlineStoreDown, ObjectStoreError, LeaseBusy, DayBusy, ConnectionError,
                                              TimeoutError)
CONFLICTS: tuple[type[BaseException], ...] = (ObjectExists, ObjectChanged)  # a race lost for good: not transient


def export_spec(cfg: LfmConfig) -> ExportSpec:
    """The export the schedule runs (`schedule.model` / `schedule.layer`, else the latest model and its selected
    layer), from the model card alone: no weights read."""
    from pipeline.spec import resolve_spec

    return resolve_spec(cfg, cfg.schedule.model, cfg.schedule.layer)


def run_group(cfg: LfmConfig, day: dt.date, asset: str, spark: Callable[[], SparkSession], run_id: str) -> DayRun:
    """The asset's steps of `day`, resumed from the first one not done; `DailyFailed` (or `DayBusy`) on a failure."""
    s = cfg.schedule
    only = GROUPS[asset]
    return run_days(cfg, [day], spark, source=s.source if "ingest" in only else None, model_version=s.model,
                    cr_layer=s.layer, cold_start=day == s.first_day, run_id=run_id, only=only)[0]


def causes(err: BaseException) -> Iterator[BaseException]:
    """The error, the step's error it wraps (`DailyFailed`), and their `__cause__` chain."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [err]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.failed.cause if isinstance(e, DailyFailed) else None, e.__cause__]


def transient(err: BaseException) -> bool:
    return not any(isinstance(e, CONFLICTS) for e in causes(err)) and any(isinstance(e, TRANSIENT)
                                                                         for e in causes(err))


def quarantine(err: BaseException) -> QualityGateFailed | None:
    """The gate's own failure (its summary names each quarantined table and the Data Docs), if that is the cause."""
    return next((e for e in causes(err) if isinstance(e, QualityGateFailed)), None)


@contextmanager
def failing_closed() -> Iterator[None]:
    """A transient fault leaves as it is (the asset's RetryPolicy retries it with backoff); anything else as a
    Failure that is never retried, its message the platform's own (the fix and the next command)."""
    try:
        yield
    except dg.Failure:
        raise
    except Exception as err:
        if transient(err):
            raise
        raise dg.Failure(description=str(err), metadata={"error": type(err).__name__},
                         allow_retries=False) from err
