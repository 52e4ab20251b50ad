"""The resumable step chain over the real `runs` Delta table."""
from __future__ import annotations

import datetime as dt

import pytest

from lfm.contract import ExportSpec
from pipeline import runs
from pipeline.spec import ResolvedExport
from pipeline.steps import DayContext, Step, StepFailed, run_steps

DS = dt.date(2022, 5, 2)
SPEC = ExportSpec("abcdef012345", cr_layer="dnn1", ur_dim=4, ir_dim=4, cr_dim=2, tau_hours=72.0,
                  normalisation="layernorm", state_ttl_days=None, schema_hash="0" * 16)


def context(cfg) -> DayContext:
    return DayContext(cfg, DS, lambda: ResolvedExport(SPEC, "unused"))


def test_resume_from_failed_step_then_nothing_then_force(cfg):
    calls: list[str] = []
    broken = {"b": True}

    def make(name: str, rows: int):
        def run(ctx: DayContext) -> int:
            calls.append(name)
            if broken.get(name):
                raise RuntimeError(f"{name} exploded")
            assert ctx.export.spec is SPEC  # resolved once, when a step first needs it
            return rows
        return Step(name, run)

    steps = [make("a", 10), make("b", 20), make("c", 30)]
    with pytest.raises(StepFailed, match="step 'b' of 2022-05-02 failed: b exploded"):
        run_steps(context(cfg), steps)
    assert calls == ["a", "b"]
    latest = runs.latest_by_step(cfg, DS)
    assert latest["a"].status == "succeeded" and latest["b"].status == "failed"
    assert "b exploded" in latest["b"].error and "c" not in latest

    broken["b"] = False
    done = run_steps(context(cfg), steps)  # resumes at b, records the export
    assert calls == ["a", "b", "b", "c"] and [r.step for r in done] == ["b", "c"]
    assert {(r.model_version, r.export_id) for r in done} == {("abcdef012345", SPEC.id)}
    assert done[1].rows == 30 and done[1].rows_per_second > 0

    assert run_steps(context(cfg), steps) == []  # finished: nothing to do
    assert len(run_steps(context(cfg), steps, force=True)) == 3
    history = runs.recent(cfg)
    assert [(r.step, r.status) for r in history] == [("a", "succeeded"), ("b", "succeeded"), ("c", "succeeded")]
