"""Which days a schedule tick asks for (`orchestration.catchup.plan`), over days whose state is given as data."""
from __future__ import annotations

import datetime as dt

from orchestration.catchup import LastRun, plan

D = [dt.date(2022, 5, 1) + dt.timedelta(days=i) for i in range(5)]
T = dt.datetime(2022, 5, 10, tzinfo=dt.timezone.utc)


def ask(done=(), runs=None, released=None):
    runs, released = runs or {}, released or {}
    return plan(D, lambda d: d in done, runs.get, released.get)


def test_a_missed_day_is_asked_for_with_the_new_one_oldest_first():
    assert ask(done=D[:2]).days == D[2:]
    assert ask(done=D[:2]).stopped is None


def test_only_the_days_after_the_newest_done_one_are_considered():
    assert ask(done={D[0], D[3]}).days == [D[4]]  # a hole behind a done day is not walked back into
    assert ask(done=D).days == []


def test_a_running_day_stops_the_plan_before_it():
    out = ask(done=D[:1], runs={D[2]: LastRun("r2", True, False, T)})
    assert out.days == [D[1]] and out.stopped == f"{D[2]} is running (run r2)"


def test_a_failed_day_is_not_retried_and_nothing_after_it_is_asked_for():
    out = ask(done=D[:1], runs={D[1]: LastRun("r1", False, True, T)}, released={D[0]: T - dt.timedelta(hours=1)})
    assert out.days == [] and f"{D[1]} failed in run r1" in out.stopped and "does not retry" in out.stopped


def test_a_day_that_failed_for_want_of_its_previous_day_is_asked_again_once_that_day_is_released():
    blocked = {D[2]: LastRun("r2", False, True, T)}
    assert ask(done=D[:2], runs=blocked, released={D[1]: T + dt.timedelta(minutes=5)}).days == D[2:]
    assert ask(done=D[:2], runs=blocked, released={D[1]: T - dt.timedelta(minutes=5)}).days == []
    assert ask(done=D[:2], runs=blocked).days == []
