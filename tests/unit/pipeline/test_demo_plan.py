"""Which days the demo trains, probes and runs daily (`pipeline.demo.plan_days`); `--daily-days 0` runs none, for
the orchestrator to run them (scripts/orchestrator.sh)."""
from __future__ import annotations

import datetime as dt

import pytest

from lfm.names import BadInput
from pipeline.demo import plan_days

DAYS = [dt.date(2022, 4, 25) + dt.timedelta(days=i) for i in range(7)]


def test_the_last_days_run_daily_after_train_valid_and_probe():
    plan = plan_days(DAYS, 3)
    assert plan["train"] == DAYS[:2] and plan["valid"] == DAYS[2:3] and plan["probe"] == DAYS[3:5]
    assert plan["daily"] == DAYS[-3:]  # 2022-04-29..05-01: lfm.yaml's schedule names the same days


def test_zero_daily_days_prepares_the_world_alone():
    assert plan_days(DAYS, 0)["daily"] == []


def test_too_few_days_are_refused():
    with pytest.raises(BadInput, match="at least 5 days"):
        plan_days(DAYS[:4], 1)


def test_the_embedded_configs_schedule_is_the_demo_worlds_daily_days():
    """scripts/orchestrator.sh serves lfm.yaml's `schedule:` over the world `lfm demo` synthesizes by default."""
    from lfm.config import load_config
    from pipeline.demo import DemoOptions
    from spark_jobs.synth import SynthSpec
    from tests.support.config import REPO

    import dataclasses

    default = {f.name: f.default for f in dataclasses.fields(SynthSpec)}["start"]
    start, opts = dt.date.fromisoformat(default), DemoOptions()
    days = plan_days([start + dt.timedelta(days=i) for i in range(opts.days)], opts.daily_days)["daily"]
    schedule = load_config(REPO / "lfm.yaml").schedule
    assert (schedule.first_day, schedule.last_day) == (days[0], days[-1])
