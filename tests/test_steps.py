"""The resumable step chain over the real `runs` Delta table."""
from __future__ import annotations

import datetime as dt

import pytest

from spark_jobs import runs
from spark_jobs.steps import DayContext, Step, StepFailed, run_steps

DS = dt.date(2022, 5, 2)


def test_resume_from_failed_step_then_nothing_then_force(spark, cfg):
    calls: list[str] = []
    broken = {"b": True}

    def make(name: str, rows: int):
        def run(ctx: DayContext) -> int:
            calls.append(name)
            if broken.get(name):
                raise RuntimeError(f"{name} exploded")
            ctx.model_version = ctx.model_version or "abcdef012345"
            return rows
        return Step(name, run)

    steps = [make("a", 10), make("b", 20), make("c", 30)]
    with pytest.raises(StepFailed, match="step 'b' of 2022-05-02 failed: b exploded"):
        run_steps(DayContext(spark, cfg, DS), steps)
    assert calls == ["a", "b"]
    latest = runs.latest_by_step(spark, cfg, DS)
    assert latest["a"].status == "succeeded" and latest["b"].status == "failed"
    assert "b exploded" in latest["b"].error and "c" not in latest

    broken["b"] = False
    done = run_steps(DayContext(spark, cfg, DS), steps)  # resumes at b, keeps a's model version
    assert calls == ["a", "b", "b", "c"] and [r.step for r in done] == ["b", "c"]
    assert {r.model_version for r in done} == {"abcdef012345"}
    assert done[1].rows == 30 and done[1].rows_per_second > 0

    assert run_steps(DayContext(spark, cfg, DS), steps) == []  # finished: nothing to do
    assert len(run_steps(DayContext(spark, cfg, DS), steps, force=True)) == 3
    history = runs.recent(spark, cfg)
    assert [(r.step, r.status) for r in history] == [("a", "succeeded"), ("b", "succeeded"), ("c", "succeeded")]
