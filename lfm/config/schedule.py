"""When and how an orchestrator runs the daily chain (`schedule:` in lfm.yaml; the `orchestration` extra reads it).

A day D is due once its events have landed: at `hour:minute` of D+1 in the schema's timezone (the one home of the
day's bounds, `lfm.contract`). `first_day` is the day the CR chain begins (its refresh is a cold start, no D-1
state); `last_day` closes a finished data set (the demo's), so nothing after it is ever due.
"""
from __future__ import annotations

import datetime as dt

from pydantic import Field, field_validator, model_validator

from lfm.config.schema import Strict


class ScheduleSettings(Strict):
    first_day: dt.date | None = None  # the chain's first day (a cold start); the orchestrator refuses to start unset
    last_day: dt.date | None = None  # None: the chain goes on; a date: no day after it is due (a finished data set)
    hour: int = Field(2, ge=0, le=23)  # local time of D+1 by which day D's events have landed
    minute: int = Field(0, ge=0, le=59)
    source: str | None = None  # a raw folder each day is ingested from (as `run-daily --source`); None: ingested
    model: str | None = None  # the export's model version (default: the latest registered, resolved per run)
    layer: str | None = None  # its CR point (default: the one `lfm select-layer` recorded)
    retries: int = Field(3, ge=0, le=20)  # attempts after the first, for transient faults only (Redis, the store)
    retry_delay_s: float = Field(30.0, gt=0)  # before the first retry; doubled each time, +-50% jitter

    @field_validator("model")
    @classmethod
    def _model(cls, value: str | None) -> str | None:
        from lfm.names import BadInput, check_model_version

        try:
            return None if value is None else check_model_version(value)
        except BadInput as err:
            raise ValueError(str(err)) from None

    @model_validator(mode="after")
    def _order(self) -> ScheduleSettings:
        if self.first_day and self.last_day and self.last_day < self.first_day:
            raise ValueError(f"last_day {self.last_day} is before first_day {self.first_day}")
        return self
