"""The resume asks the releases: what `run-daily` redoes, what `lfm status` says and what is served after a
withdrawal, checked against independent evidence (real Spark, Delta, GE, Feast, sqlite and Redis; no mocks).

One small lakehouse (the refresh world's inputs, its tiny model A): D1 (cold start) and D2 through `run-daily`,
released and online. Each test starts from that finished state, withdraws D2 the way an operator does (a rewrite
without the gate, a `run-daily --force` SIGKILLed while its gate runs), reads what is served through Feast's own
reader, the releases and candidates with a plain delta-rs reader and the ANN index from disk, then runs the plain
`run-daily` and checks that it gated D2 again and put it back online, which leaves the next test a finished lake.
"""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable

from lfm.config import LfmConfig
from tests.support.cli import cli
from tests.support.kills import lfm_command, phase_signals, run_and_kill
from tests.support.releases import Lake, newest_release, online, partition, released_lake, vectors
from tests.support.worlds import D1, D2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lake(spark, world) -> Lake:
    return released_lake(spark, world, "resume", [D1, D2])


# --- independent evidence -----------------------------------------------------------------------------------------

def released_cr_user(cfg: LfmConfig, day: dt.date, export_id: str) -> dict:
    """CR(u) of the day's current release, read with delta-rs at the version the `releases` row names."""
    release = newest_release(cfg, day, export_id)
    assert release is not None and release["status"] == "released", release
    return vectors(partition(cfg, "cr_user", day, export_id, release["table_versions"]["cr_user"]),
                   "user_id", "cr_user")


def newest_candidate_run(cfg: LfmConfig, day: dt.date, export_id: str) -> str:
    """The run of the day's newest `refresh_log` row, read with delta-rs."""
    rows = [r for r in DeltaTable(cfg.table_path("refresh_log")).to_pyarrow_table().to_pylist()
            if r["ds"] == day and r["export_id"] == export_id]
    return max(rows, key=lambda r: r["committed_at"])["run_id"]


def served(cfg: LfmConfig, export_id: str, users: list[int]) -> dict:
    """user -> CR(u) as Feast's own online reader returns it (None where it holds nothing)."""
    got = online(cfg, export_id, users)
    return {u: None if v is None else np.asarray(v, dtype=np.float32) for u, v in zip(got["user_id"], got["cr_user"])}


def assert_serves_d2(cfg: LfmConfig, export_id: str, d1: dict, d2: dict) -> None:
    """Every user of D2 is served its D2 vector (and the users of D1 only keep D1's)."""
    users = sorted(d2)[:15] + sorted(set(d1) - set(d2))[:5]
    for u, v in served(cfg, export_id, users).items():
        np.testing.assert_array_equal(v, d2[u] if u in d2 else d1[u])


def assert_serves_d1_in_place_of_d2(cfg: LfmConfig, export_id: str, d1: dict, d2: dict) -> None:
    """D2 is out: its users hold D1's release where D1 has them, nothing where it has not."""
    both, only_d2 = sorted(set(d1) & set(d2))[:15], sorted(set(d2) - set(d1))[:5]
    assert both and only_d2 and any(not np.array_equal(d1[u], d2[u]) for u in both)
    got = served(cfg, export_id, both + only_d2)
    for u in both:
        np.testing.assert_array_equal(got[u], d1[u])
    assert all(got[u] is None for u in only_d2), {u: got[u] for u in only_d2}


def index_day(cfg: LfmConfig, export_id: str, ds: dt.date) -> str:
    from serving.retrieval import load_index

    return load_index(cfg, export_id, ds).meta["ds"]


def resume(lake: Lake) -> list[str]:
    """The plain, documented resume: `lfm run-daily --ds D2`; returns the steps it ran (from `runs`)."""
    from pipeline import runs

    res = cli("--config", str(lake.conf), "run-daily", "--ds", str(D2), "--model", lake.model)
    assert res.code == 0, res.err
    assert "already complete" not in res.out
    run_id = res.out.strip().splitlines()[-1].rsplit("run ", 1)[1].rstrip(")")
    return [r.step for r in sorted(runs.recent(lake.cfg, 10_000), key=lambda r: r.started_at)
            if r.run_id == run_id]


def status(lake: Lake) -> list[str]:
    res = cli("--config", str(lake.conf), "status", "--ds", str(D2))
    assert res.code == 0, res.err
    return res.out.splitlines()


# --- the guarantees ---------------------------------------------------------------------------------------------

def test_a_released_and_online_day_is_not_rerun_and_starts_no_spark(lake):
    from pipeline.daily import run_days

    def no_spark():
        raise AssertionError("a finished day started Spark")

    days = run_days(lake.cfg, [D1, D2], no_spark, model_version=lake.model)
    assert [d.skipped for d in days] == [True, True]
    assert any(x.startswith(f"{D2}  export {lake.export_id}:") and x.endswith("RELEASED, online, complete")
               for x in status(lake))


def test_a_rewrite_without_the_gate_leaves_serving_and_the_plain_rerun_gates_it_again(spark, lake):
    """`refresh --no-gate` of a released day: the release is withdrawn, the online store serves D1's release in
    its place, retrieval stops using D2's index, status tells the story; the plain run-daily gates, releases and
    loads the new candidate (no refresh)."""
    from tests.support.worlds import refresh

    d1, d2 = released_cr_user(lake.cfg, D1, lake.export_id), released_cr_user(lake.cfg, D2, lake.export_id)
    assert_serves_d2(lake.cfg, lake.export_id, d1, d2)
    assert index_day(lake.cfg, lake.export_id, D2) == str(D2)

    cand = refresh(spark, lake.cfg, D2, lake.model, run_id="no-gate-rewrite", gate=False)
    assert newest_release(lake.cfg, D2, lake.export_id)["status"] == "withdrawn"
    assert_serves_d1_in_place_of_d2(lake.cfg, lake.export_id, d1, d2)
    assert index_day(lake.cfg, lake.export_id, D2) == str(D1)  # D2's index is gone; D1's is the newest current
    lines = status(lake)
    story = next(x for x in lines if x.startswith(f"{D2}  export {lake.export_id}:"))
    assert "candidate no-gate-rewrite, not gated, WITHDRAWN" in story and "not online" in story
    assert story.endswith("next: run-daily resumes at validate")
    assert any(x.startswith(f"{D2}  validate    pending") for x in lines)

    assert resume(lake) == ["validate", "publish", "materialize"]
    release = newest_release(lake.cfg, D2, lake.export_id)
    assert release["status"] == "released" and release["run_id"] == cand.run_id
    assert_serves_d2(lake.cfg, lake.export_id, d1, released_cr_user(lake.cfg, D2, lake.export_id))
    assert index_day(lake.cfg, lake.export_id, D2) == str(D2)


def test_run_daily_killed_while_its_gate_runs_is_gated_again_by_the_plain_rerun(spark, lake, tmp_path):
    """SIGKILL `run-daily --force` once its refresh recorded the candidate (the gate is next): the day is not
    complete, and the plain run-daily resumes after the refresh, takes the withdrawn release out of serving if it
    was still online, gates the killed run's candidate and releases and loads it."""
    d1 = released_cr_user(lake.cfg, D1, lake.export_id)
    out = tmp_path / "killed.log"
    probe = phase_signals(lake.cfg, lake.export_id, out)["candidate recorded: the gate is running"][1]
    command = lfm_command(lake.conf, "run-daily", lake.model) + ["--force"]
    killed, tail = run_and_kill(command, out, probe)
    assert killed, tail
    cand_run = newest_candidate_run(lake.cfg, D2, lake.export_id)
    release = newest_release(lake.cfg, D2, lake.export_id)
    assert not (release["status"] == "released" and release["run_id"] == cand_run)  # the killed run released nothing

    steps = resume(lake)  # not "already complete"
    assert "refresh" not in steps and steps[-3:] == ["validate", "publish", "materialize"], steps
    release = newest_release(lake.cfg, D2, lake.export_id)
    assert release["status"] == "released" and release["run_id"] == cand_run
    assert_serves_d2(lake.cfg, lake.export_id, d1, released_cr_user(lake.cfg, D2, lake.export_id))
    assert index_day(lake.cfg, lake.export_id, D2) == str(D2)


def test_redis_a_withdrawn_release_leaves_the_online_store(spark, lake, redis_server, tmp_path):
    """The same over Redis, on a copy of the finished lake: run-daily loads both days (only materialize runs:
    the records say everything else is done), a rewrite without the gate takes D2 out (D1's release in its place),
    the plain rerun brings it back."""
    import redis

    from pipeline.daily import run_days
    from tests.support.config import make_config
    from tests.support.releases import QUALITY
    from tests.support.worlds import SMALL_MODEL, SMALL_TRAIN, refresh

    redis.Redis(host="127.0.0.1", port=redis_server.port).flushall()
    root = tmp_path / "redis_lake"
    shutil.copytree(Path(lake.cfg.lakehouse), root / "lakehouse")
    cfg = make_config(root, registry={"path": lake.cfg.registry.path}, model=SMALL_MODEL, train=SMALL_TRAIN,
                      quality=QUALITY, feast={"repo_path": str(root / "feature_repo"), "online_store": "redis",
                                              "redis_connection": redis_server.connection})
    days = run_days(cfg, [D1, D2], lambda: spark, model_version=lake.model)
    assert [[s.step for s in d.steps] for d in days] == [["materialize"], ["materialize"]]
    d1, d2 = released_cr_user(cfg, D1, lake.export_id), released_cr_user(cfg, D2, lake.export_id)
    assert_serves_d2(cfg, lake.export_id, d1, d2)

    refresh(spark, cfg, D2, lake.model, run_id="redis-rewrite", gate=False)
    assert_serves_d1_in_place_of_d2(cfg, lake.export_id, d1, d2)
    again = run_days(cfg, [D2], lambda: spark, model_version=lake.model)
    assert [s.step for s in again[0].steps] == ["validate", "publish", "materialize"]
    assert_serves_d2(cfg, lake.export_id, d1, released_cr_user(cfg, D2, lake.export_id))
