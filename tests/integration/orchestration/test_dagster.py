"""The daily chain under Dagster's own local runner (no server, no daemon) on the refresh world's inputs and tiny
model: real Spark, Delta, Great Expectations, Feast and redis-server, no mocks.

One lakehouse, three days, one story (`story`), each outcome recorded for the tests below:
1. the tick after D1 landed asks for D1, which runs cold (the chain's first day) to the ANN index;
2. the scheduler is down when D2 lands; the tick after D3 landed asks for D2 and D3, in that order. This config
   demands that UR moves from day to day, which a frozen model over static user features never does (the planted
   fault): the gate quarantines D2, whose run fails with the gate's message and is not retried; D2 is neither
   released nor served, and D3's refresh is refused; the next tick asks for nothing;
3. the operator relaxes the bound and re-executes D2, which resumes at its gate; the next tick asks for D3 again;
4. the operator backfills D1..D3 in a process of its own, SIGKILLed midway (D1 and D2 done, D3's run started);
   Redis goes down; the backfill is launched again here: D1 and D2 do nothing, D3 runs, and its materialize meets
   the outage, which a retry with backoff survives once Redis is back.
"""
from __future__ import annotations

import datetime as dt
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import numpy as np
import pytest
import yaml
from deltalake import DeltaTable

from lfm.config import load_config
from tests.support.orchestration import (backfill, command, events, landed, run_day, run_requests, tick,
                                         write_conf, write_lake)
from tests.support.releases import QUALITY, newest_release, online, partition, vectors

pytestmark = pytest.mark.slow

D1, D2, D3 = (dt.date(2022, 4, 26) + dt.timedelta(days=i) for i in range(3))
STRICT_UR = {**QUALITY, "tables": {"ur": {"max_mean_cosine": 0.99}}}  # UR must move daily: D2 breaks it
DAYS = (D1, D2, D3)
STEP_START_CANDIDATE = 'Started execution of step "candidate"'  # Dagster's line as a run reaches the candidate


def attempts(cfg, day: dt.date) -> list[tuple[str, str]]:
    """(step, status) of every attempt of the day in `runs`, oldest first (read with delta-rs, not the platform)."""
    rows = DeltaTable(cfg.table_path("runs")).to_pyarrow_table().to_pylist()
    return [(r["step"], r["status"]) for r in sorted(rows, key=lambda r: r["started_at"]) if r["ds"] == day]


def steps_of(cfg, day: dt.date, step: str) -> list[str]:
    return [status for s, status in attempts(cfg, day) if s == step]


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    return {e.step_key for e in events(result, "ASSET_MATERIALIZATION")}


def failure(result: dg.ExecuteInProcessResult, step: str):
    """The step's failure: (its message, its metadata)."""
    found = events(result, "STEP_FAILURE", step)
    assert len(found) == 1, [(e.step_key, e.event_type_value) for e in result.all_events]
    data = found[0].step_failure_data.user_failure_data
    return data.description, data.metadata


def back_after_a_failed_materialize(cfg, day: dt.date, port: int, servers: list) -> threading.Thread:
    """Redis comes back (same port, empty) once an attempt of the day's materialize has failed."""
    from tests.support.redis_local import start_redis

    def watch() -> None:
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline and "failed" not in steps_of(cfg, day, "materialize"):
            time.sleep(0.2)
        servers.append(start_redis(port=port))

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


@dataclass
class Story:
    cfg: object
    defs: dg.Definitions
    export_id: str
    ticks: dict = field(default_factory=dict)  # name -> [RunRequest] or SkipReason
    runs: dict = field(default_factory=dict)  # name -> ExecuteInProcessResult
    after: dict = field(default_factory=dict)  # name -> {day: attempts}
    killed: bool = False
    killed_tail: str = ""
    killed_status: dg.DagsterRunStatus | None = None
    resumed: list = field(default_factory=list)
    quarantined: dict = field(default_factory=dict)  # what readers saw while D2 was quarantined


def quarantine_evidence(cfg, export_id: str) -> dict:
    """D2's release row, the index retrieval picks for D2, D1's and D2's CR(u) in Delta, and what Feast's own
    online reader serves for their common users."""
    from serving.retrieval import load_index

    d1 = vectors(partition(cfg, "cr_user", D1, export_id), "user_id", "cr_user")
    d2 = vectors(partition(cfg, "cr_user", D2, export_id), "user_id", "cr_user")
    return {"release": newest_release(cfg, D2, export_id), "index_day": load_index(cfg, export_id, D2).meta["ds"],
            "d1": d1, "d2": d2, "served": online(cfg, export_id, sorted(set(d1) & set(d2))[:15])}


@pytest.fixture(scope="module")
def story(spark, world, tmp_path_factory) -> Iterator[Story]:
    from orchestration.build import build_definitions
    from orchestration.tasks import export_spec
    from tests.support.kills import run_and_kill
    from tests.support.redis_local import NoRedis, start_redis

    try:
        servers = [start_redis()]
    except NoRedis as err:
        pytest.skip(f"the orchestrated chain over Redis not tested: {err}")
    port = servers[0].port
    schedule = {"first_day": str(D1), "last_day": str(D3), "hour": 2, "model": world.model_a, "retries": 4,
                "retry_delay_s": 1.0}
    conf = write_lake(world, "orchestrated", schedule, STRICT_UR,
                      {"online_store": "redis", "redis_connection": servers[0].connection})
    cfg = load_config(conf)
    defs = build_definitions(str(conf))
    s = Story(cfg, defs, export_spec(cfg).id)
    home = tmp_path_factory.mktemp("dagster_home")  # the instance this process and the killed one share
    instance = dg.DagsterInstance.local_temp(str(home))
    after = lambda: {d: attempts(cfg, d) for d in DAYS}  # noqa: E731
    try:
        s.ticks["d1"] = tick(defs, instance, landed(D1))
        [s.runs["d1"]] = run_requests(defs, instance, s.ticks["d1"])
        s.ticks["catch_up"] = tick(defs, instance, landed(D3))  # D2's tick was missed
        s.runs["d2"], s.runs["d3_blocked"] = run_requests(defs, instance, s.ticks["catch_up"])
        s.after["quarantine"] = after()
        s.quarantined = quarantine_evidence(cfg, s.export_id)
        s.ticks["after_quarantine"] = tick(defs, instance, landed(D3, 2))

        write_conf(conf, {**yaml.safe_load(conf.read_text()), "quality": QUALITY})  # the fix: the bound relaxed
        s.runs["d2_fixed"] = run_day(defs, instance, D2)  # re-executed by the operator
        s.after["fixed"] = after()
        s.ticks["after_fix"] = tick(defs, instance, landed(D3, 3))

        log = Path(cfg.lakehouse).parent / "backfill.log"  # the killed process's output: Dagster's event lines
        s.killed, s.killed_tail = run_and_kill(command(conf, home, list(DAYS)), log,
                                               lambda: log.read_text().count(STEP_START_CANDIDATE) >= 3,
                                               timeout=600, poll_s=0.05)  # D3's candidate step has begun
        s.after["kill"] = after()
        newest = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": str(D3)}), limit=1)
        s.killed_status = newest[0].dagster_run.status if newest else None
        s.ticks["after_kill"] = tick(defs, instance, landed(D3, 4))

        servers[0].stop()  # Redis is down when D3 reaches materialize, back once that attempt has failed
        watcher = back_after_a_failed_materialize(cfg, D3, port, servers)
        s.resumed = backfill(defs, instance, list(DAYS))
        watcher.join(timeout=60)
        s.after["done"] = after()
        yield s
    finally:
        for server in servers:  # the first one too, when the story stopped before its outage (stop is idempotent)
            server.stop()


def days_of(requests) -> list[str]:
    assert isinstance(requests, list), requests
    return [r.partition_key for r in requests]


# --- the schedule ----------------------------------------------------------------------------------------------

def test_the_schedule_asks_for_each_landed_day_and_catches_up_a_missed_one_in_order(story):
    assert days_of(story.ticks["d1"]) == [str(D1)]
    assert days_of(story.ticks["catch_up"]) == [str(D2), str(D3)]  # the missed D2 first
    assert all(r.tags["lfm/export"] == story.export_id for r in story.ticks["catch_up"])
    assert days_of(story.ticks["after_fix"]) == [str(D3)]  # refused for want of D2, asked again once D2 released
    assert story.runs["d1"].success
    assert {"events", "candidate", "release", "online_store", "ann_index"} <= materialized(story.runs["d1"])
    assert [s for s, _ in story.after["quarantine"][D1]] == ["ingest", "refresh", "withdraw", "validate",
                                                              "publish", "materialize"]


def test_a_quarantined_day_fails_with_the_gates_message_and_data_docs_and_is_not_retried(story):
    run = story.runs["d2"]
    assert not run.success
    message, metadata = failure(run, "candidate")
    assert message.startswith(f"quality gate ds={D2} export={story.export_id}")
    assert "ur: quarantined: expect_drift_mean_cosine" in message and "data docs: " in message
    assert "hint: the day is not released" in message and "resumes at validate" in message
    docs = metadata["data_docs"].value
    assert docs.endswith("index.html") and Path(docs).is_file()
    assert metadata["ur"].value.startswith("QUARANTINED at v") and metadata["quarantined"].value == "ur"
    assert metadata["ir"].value.startswith("passed at v")
    assert not events(run, "STEP_UP_FOR_RETRY")  # never retried
    [check] = [e.event_specific_data for e in events(run, "ASSET_CHECK_EVALUATION")]
    assert check.check_name == "gate" and not check.passed and check.description.startswith("quality gate")
    assert "candidate" in materialized(run) and not materialized(run) & {"release", "online_store", "ann_index"}
    assert story.after["quarantine"][D2] == [("ingest", "succeeded"), ("refresh", "succeeded"),
                                             ("withdraw", "succeeded"), ("validate", "failed")]
    skip = story.ticks["after_quarantine"]  # the schedule does not retry it either
    assert isinstance(skip, dg.SkipReason) and f"{D2} failed in run" in skip.skip_message


def test_a_quarantined_day_is_never_served_and_blocks_the_next_days_refresh(story):
    message, _ = failure(story.runs["d3_blocked"], "candidate")
    assert f"{D3} is blocked" in message and f"the gate quarantined {D2} (ur)" in message
    assert story.after["quarantine"][D3] == [("ingest", "succeeded")]  # no refresh of D3 was attempted
    q = story.quarantined
    assert q["release"] is None and q["index_day"] == str(D1)  # no release; retrieval keeps D1's index
    d1, d2 = q["d1"], q["d2"]
    users = sorted(set(d1) & set(d2))[:15]
    assert any(not np.array_equal(d1[u], d2[u]) for u in users)  # D2 is in Delta, and differs
    for u, v in zip(q["served"]["user_id"], q["served"]["cr_user"]):  # the online store keeps D1's vectors
        np.testing.assert_array_equal(np.asarray(v, dtype=np.float32), d1[u])


# --- the fix; the backfill, killed and resumed; the outage ---------------------------------------------------

def test_the_fixed_day_resumes_at_its_gate(story):
    assert story.runs["d2_fixed"].success
    ran = story.after["fixed"][D2][len(story.after["quarantine"][D2]):]
    assert ran == [("validate", "succeeded"), ("publish", "succeeded"), ("materialize", "succeeded")]


def test_a_backfill_killed_midway_resumes_where_it_stopped(story):
    from orchestration.chain import done
    from pipeline.daystate import day_state

    assert story.killed, story.killed_tail
    assert story.killed_status == dg.DagsterRunStatus.STARTED  # the killed worker never ended D3's run
    assert story.after["kill"] == story.after["fixed"]  # D1 and D2 were done: the backfill recorded nothing
    assert isinstance(story.ticks["after_kill"], dg.SkipReason)  # a killed run looks running until monitored
    assert f"{D3} is running" in story.ticks["after_kill"].skip_message
    assert [r.success for r in story.resumed] == [True, True, True]
    for day in (D1, D2):
        assert story.after["done"][day] == story.after["kill"][day]  # relaunched: finished days do nothing
    resumed = [s for s, _ in story.after["done"][D3][len(story.after["kill"][D3]):]]
    assert resumed[:4] == ["refresh", "withdraw", "validate", "publish"] and resumed[-1] == "materialize"
    for day in DAYS:
        assert done(story.cfg, day_state(story.cfg, day, story.export_id)), day  # released, online, indexed


def test_a_transient_redis_outage_is_retried_with_backoff_and_the_run_completes(story):
    d3 = story.resumed[-1]
    retried = events(d3, "STEP_UP_FOR_RETRY", "online_store")
    assert 1 <= len(retried) <= 4
    assert steps_of(story.cfg, D3, "materialize") == ["failed"] * len(retried) + ["succeeded"]
    assert "is unreachable" in retried[0].event_specific_data.error.to_string()
    assert not events(d3, "STEP_UP_FOR_RETRY", "candidate")  # only the step that met the outage
    release = newest_release(story.cfg, D3, story.export_id)
    d3_vectors = vectors(partition(story.cfg, "cr_user", D3, story.export_id, release["table_versions"]["cr_user"]),
                         "user_id", "cr_user")
    users = sorted(d3_vectors)[:10]
    got = online(story.cfg, story.export_id, users)  # Feast's own reader, over the Redis that came back
    for u, v in zip(got["user_id"], got["cr_user"]):
        np.testing.assert_array_equal(np.asarray(v, dtype=np.float32), d3_vectors[u])


# --- what the orchestrator shows; idempotence ------------------------------------------------------------------

def test_the_orchestrator_shows_versions_rows_verdicts_drift_and_the_export(story):
    d3 = story.resumed[-1]
    shown = {e.step_key: e.event_specific_data.materialization.metadata for e in events(d3, "ASSET_MATERIALIZATION")}
    release = newest_release(story.cfg, D3, story.export_id)
    assert shown["release"]["export_id"].value == story.export_id
    for table in ("ur", "ir", "cr_user", "cr_item"):
        assert shown["release"][f"{table}_version"].value == release["table_versions"][table]
        assert shown["release"][f"{table}_rows"].value > 0
        assert shown["candidate"][f"{table}_version"].value == release["table_versions"][table]
    [check] = [e.event_specific_data for e in events(d3, "ASSET_CHECK_EVALUATION")]
    assert check.passed and check.metadata["ur"].value.startswith("passed at v")
    assert 0.99 < check.metadata["ur_drift_mean_cosine"].value <= 1.0 + 1e-6  # UR repeats: the drift is shown
    assert shown["online_store"]["online"].value.endswith("(current)")
    assert shown["ann_index"]["items"].value > 0
    assert shown["ann_index"]["release_run_id"].value == release["run_id"]


# --- the code location -----------------------------------------------------------------------------------------

def test_the_readme_code_location_loads_and_a_day_depends_on_the_day_before(monkeypatch, tmp_path):
    import importlib
    import shutil

    from tests.support.config import REPO

    monkeypatch.setenv("LFM_CONFIG", str(REPO / "lfm.yaml"))  # what scripts/orchestrator.sh serves
    monkeypatch.delitem(sys.modules, "orchestration.definitions", raising=False)
    module = importlib.import_module("orchestration.definitions")
    dg.Definitions.validate_loadable(module.defs)
    chain = module.defs.get_assets_def("candidate").get_partition_mapping(dg.AssetKey("candidate"))
    assert (chain.start_offset, chain.end_offset) == (-1, -1)
    assert {s.name for s in module.defs.schedules} == {"lfm_daily_schedule"}
    shutil.copy(REPO / "orchestration" / "dagster.yaml", tmp_path)  # the instance scripts/orchestrator.sh sets up
    instance = dg.DagsterInstance.local_temp(str(tmp_path))  # Dagster validates the file as it loads it
    assert instance.run_monitoring_enabled
    queue = yaml.safe_load((tmp_path / "dagster.yaml").read_text())["run_queue"]
    assert queue["tag_concurrency_limits"] == [{"key": "lfm/export", "limit": 1}]


def test_a_config_without_the_chains_first_day_is_refused_naming_the_key(tmp_path):
    from lfm.config import ConfigError
    from orchestration.build import build_definitions

    conf = write_conf(tmp_path / "lfm.yaml", {"lakehouse": str(tmp_path / "lake")})
    with pytest.raises(ConfigError, match=r"schedule.first_day is not set.*schedule: \{first_day: "):
        build_definitions(str(conf))
