"""Write-audit-publish, tested against independent evidence (real Spark, Delta, GE, Feast, sqlite; no mocks).

One small lakehouse (the refresh world's inputs, its tiny model A): D1 (cold start) and D2 go through `run-daily`
and are released and materialized. Then each guarantee is tried the way an operator (or an intruder) would:
SIGKILL at each phase of materialize and of refresh (write, audit, publish), partitions rewritten behind the
platform's back with a plain Delta writer (`deltalake`, not the platform's code), a platform rewrite without the
gate, a quarantined day, a different decay mid-chain, a gate that crashes, an older day materialized after a newer
one. The kill test comes first: it starts from the freshly released lake and ends with D2 released again. What
readers see is checked through the readers themselves (training sets, the online store through Feast's own
reader, the ANN index) and against the Delta versions the release names.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from deltalake import DeltaTable

from lfm.config import LfmConfig
from tests.support.cli import cli
from tests.support.kills import KILL_ATTEMPTS, lfm_command, phase_signals, run_and_kill
from tests.support.releases import (D3, EMBEDDING, QUALITY, Lake, joined, lake_config, newest_release, online,
                                    partition, released_lake, tamper, training_rows, vectors, write_conf)
from tests.support.worlds import D1, D2

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lake(spark, world) -> Lake:
    return released_lake(spark, world, "releases", [D1, D2])


# --- the guarantees ---------------------------------------------------------------------------------------------

def _readers_agree_on_one_release(spark, cfg: LfmConfig, export_id: str, d1: dict, d2: dict) -> str:
    """Training sets and the online store each see one complete day (D2's release, else D1's): never a mix."""
    from lakehouse import candidates

    release = newest_release(cfg, D2, export_id)
    if release is not None and release["status"] == "released":
        for table in EMBEDDING:  # every named version holds the whole candidate: one row per key
            part = partition(cfg, table, D2, export_id, release["table_versions"][table])
            cand = [c for c in candidates.latest_per_export(cfg, [D2]) if c.spec.id == export_id]
            key = "user_id" if table in ("ur", "cr_user") else "video_id"
            assert part[key].is_unique and len(part) == (cand[0].rows[table] if cand else len(part))
    want = d2 if release is not None and release["status"] == "released" else d1
    users = sorted(set(d1) & set(d2))[:12]
    got = joined(spark, cfg, export_id, training_rows(cfg, D3, users, users))
    for u, v in zip(got["user_id"], got["cr_user"]):
        np.testing.assert_array_equal(np.asarray(v, dtype=np.float32), want[int(u)])
    served = online(cfg, export_id, users)
    online_day = {u: ("d2" if np.array_equal(np.asarray(v, np.float32), d2[u]) else
                      "d1" if np.array_equal(np.asarray(v, np.float32), d1[u]) else "other")
                  for u, v in zip(served["user_id"], served["cr_user"])}
    assert len(set(online_day.values())) == 1 and "other" not in online_day.values(), online_day
    return release["status"] if release else "none"


def test_sigkill_at_each_phase_leaves_every_reader_on_one_complete_release(spark, lake, tmp_path):
    """D2's materialize killed at each of its phases, then its refresh (write, audit, publish) at each of its
    phases (the last one reached by `lfm validate` of the candidate the refresh recorded before its kill: the same
    audit and publish), then the refresh run to the end: after every kill, training sets and the online store see
    one whole day. (A kill while the CR states are written is a kill inside a table write, like the embedding
    tables'.)"""
    cfg, export_id, out = lake.cfg, lake.export_id, tmp_path / "lfm.out"
    d1 = vectors(partition(cfg, "cr_user", D1, export_id), "user_id", "cr_user")
    d2 = vectors(partition(cfg, "cr_user", D2, export_id), "user_id", "cr_user")
    seen = {}
    for phase in list(phase_signals(cfg, export_id, out)):
        for _ in range(KILL_ATTEMPTS):  # the ANN index of a tiny day is written in milliseconds: a poll can miss it
            verb, probe = phase_signals(cfg, export_id, out)[phase]  # baselines taken now, after the last run
            killed, output = run_and_kill(lfm_command(lake.conf, verb, lake.model), out, probe)
            if killed:
                break
        assert killed, f"the run ended before phase {phase!r} {KILL_ATTEMPTS} times:\n{output}"
        seen[phase] = _readers_agree_on_one_release(spark, cfg, export_id, d1, d2)
    assert {seen[p] for p in seen if p.startswith("materialize")} == {"released"}, seen
    # a kill inside refresh leaves D2 withdrawn (its rewrite began) or released (not yet superseded)
    assert set(seen.values()) <= {"released", "withdrawn"}, seen
    done = cli("--config", str(lake.conf), "refresh", "--ds", str(D2), "--model", lake.model)
    assert done.code == 0, done.err
    assert _readers_agree_on_one_release(spark, cfg, export_id, d1, d2) == "released"


def test_a_release_names_exactly_the_versions_the_gate_passed(lake):
    from lakehouse import candidates

    for day in (D1, D2):
        release = newest_release(lake.cfg, day, lake.export_id)
        assert release["status"] == "released"
        cand = candidates.latest(lake.cfg, day, lake.export_id)
        assert dict(release["table_versions"]) == cand.table_versions
        verdicts = sorted(DeltaTable(lake.cfg.table_path("gate_status")).to_pyarrow_table().to_pylist(),
                          key=lambda v: v["checked_at"])
        checked = {v["table"]: v for v in verdicts if v["ds"] == day and v["export_id"] == lake.export_id}  # newest
        assert set(checked) == set(EMBEDDING)
        for table, v in checked.items():
            assert v["passed"] and v["table_version"] == cand.table_versions[table]
            assert v["refresh_run_id"] == cand.run_id
    status = cli("--config", str(lake.conf), "status", "--days", "2")
    assert status.code == 0 and f"{D2}  {lake.export_id}" in status.out and "RELEASED" in status.out


def test_a_rewrite_behind_the_platforms_back_is_never_served(spark, lake):
    """NaN UR and collapsed CR(u) written into D2's partitions with deltalake: readers keep the audited data."""
    from serving.materialize import materialize
    from serving.retrieval import load_index

    release = newest_release(lake.cfg, D2, lake.export_id)
    audited_ur = vectors(partition(lake.cfg, "ur", D2, lake.export_id, release["table_versions"]["ur"]),
                         "user_id", "ur")
    audited_ir = partition(lake.cfg, "ir", D2, lake.export_id, release["table_versions"]["ir"])
    tamper(lake.cfg, "ur", D2, lake.export_id, lambda v: np.full_like(v, np.nan))
    tamper(lake.cfg, "cr_user", D2, lake.export_id, lambda v: np.ones_like(v))
    assert np.isnan(np.stack(partition(lake.cfg, "ur", D2, lake.export_id)["ur"])).all()  # the table has moved
    users = sorted(audited_ur)[:20]
    items = [int(i) for i in audited_ir["video_id"][:20]]
    got = joined(spark, lake.cfg, lake.export_id, training_rows(lake.cfg, D3, users, items))
    for u, v in zip(got["user_id"], got["ur"]):
        np.testing.assert_array_equal(np.asarray(v, dtype=np.float32), audited_ur[int(u)])
    res = materialize(spark, lake.cfg, D2, lake.export_id)  # reloads D2 from its release
    assert all(x.loaded for x in res.loads)
    served = online(lake.cfg, lake.export_id, users)
    for u, v in zip(served["user_id"], served["ur"]):
        np.testing.assert_array_equal(np.asarray(v, dtype=np.float32), audited_ur[u])
    index = load_index(lake.cfg, lake.export_id, D2)
    assert index.meta["ir_version"] == release["table_versions"]["ir"] and len(index) == len(audited_ir)
    # re-gating audits the candidate's versions, not the tampered ones: the release stands, unchanged
    again = cli("--config", str(lake.conf), "validate", "--ds", str(D2))
    assert again.code == 0, again.err
    assert dict(newest_release(lake.cfg, D2, lake.export_id)["table_versions"]) == dict(release["table_versions"])


def _active_users(cfg: LfmConfig, keys) -> int:
    try:
        return keys.of(cfg.schema.user_key).count()
    finally:
        keys.release()


def test_the_gate_counts_coverage_against_the_events_its_candidate_read(spark, lake):
    """Events of strangers appended to D2 with a plain Delta writer after D2's refresh: auditing D2's candidate
    again counts its coverage against the events version that refresh read, as its first gate did, while the
    events table's latest version does hold the strangers."""
    import pyarrow.compute as pc
    from deltalake import write_deltalake

    from lakehouse import candidates
    from pipeline.export import audit
    from validation.metrics import DayKeys

    cand = candidates.latest(lake.cfg, D2, lake.export_id)
    first = audit(spark, lake.cfg, cand)
    path, offset = lake.cfg.table_path("events"), 10**9
    day = DeltaTable(path).to_pyarrow_table(partitions=[("ds", "=", str(D2))]).slice(0, 40)
    strangers = day.set_column(day.column_names.index("user_id"), "user_id", pc.add(day["user_id"], offset))
    write_deltalake(path, strangers, mode="append")
    try:
        latest, pinned = (_active_users(lake.cfg, DayKeys(spark, lake.cfg, D2, version))
                          for version in (None, cand.input_versions["events"]))
        assert latest == pinned + len(set(strangers["user_id"].to_pylist())) > pinned
        again = audit(spark, lake.cfg, cand)
        for table in ("ur", "cr_user"):
            assert again.tables[table].metrics["active"] == first.tables[table].metrics["active"] == pinned
            assert again.tables[table].metrics["coverage"] == first.tables[table].metrics["coverage"]
        assert again.passed
    finally:
        DeltaTable(path).delete(f"ds = '{D2}' AND user_id >= {offset}")


def test_a_platform_rewrite_is_withdrawn_until_the_gate_passes_it_again(spark, lake):
    from serving.materialize import Skip, materialize
    from tests.support.worlds import refresh

    before = newest_release(lake.cfg, D2, lake.export_id)
    cand = refresh(spark, lake.cfg, D2, lake.model, run_id="rewrite-no-gate", gate=False)  # `lfm refresh --no-gate`
    withdrawn = newest_release(lake.cfg, D2, lake.export_id)
    assert withdrawn["status"] == "withdrawn" and "rewrite-no-gate" in withdrawn["reason"]
    # readers: D2 is absent, so rows on D3 fall back to D1's release (within the TTL) and are counted
    d1 = vectors(partition(lake.cfg, "ur", D1, lake.export_id, newest_release(lake.cfg, D1, lake.export_id)
                           ["table_versions"]["ur"]), "user_id", "ur")
    users = sorted(d1)[:10]
    rows = training_rows(lake.cfg, D3, users, users)
    got = joined(spark, lake.cfg, lake.export_id, rows)
    for u, v in zip(got["user_id"], got["ur"]):
        np.testing.assert_array_equal(np.asarray(v, dtype=np.float32), d1[int(u)])
    from serving.offline import fallback_rows

    assert fallback_rows(spark, lake.cfg, spark.createDataFrame(rows), lake.export_id) == len(rows)
    res = materialize(spark, lake.cfg, D2, lake.export_id)
    assert {x.skip for x in res.loads} == {Skip.unreleased}
    # the gate passes the new candidate: released again, at the new versions
    again = cli("--config", str(lake.conf), "validate", "--ds", str(D2))
    assert again.code == 0, again.err
    now = newest_release(lake.cfg, D2, lake.export_id)
    assert now["status"] == "released" and dict(now["table_versions"]) == cand.table_versions
    assert dict(now["table_versions"]) != dict(before["table_versions"])


def test_a_quarantined_day_never_reaches_a_training_set_the_online_store_or_the_index(spark, world, lake):
    """Another export (UR must move daily): D2 is quarantined by the real gate; every reader keeps D1."""
    from pipeline.daily import DailyFailed, run_days
    from serving.retrieval import load_index

    cfg = lake_config(world, "quarantine", quality={**QUALITY, "tables": {"ur": {"max_mean_cosine": 0.99}}})
    with pytest.raises(DailyFailed, match="step 'validate' of 2022-04-28 failed"):
        run_days(cfg, [D1, D2], lambda: spark, model_version=world.model_a, cold_start=True)
    from lakehouse import candidates

    export_id = candidates.latest_per_export(cfg, [D2])[0].spec.id
    assert newest_release(cfg, D2, export_id) is None and newest_release(cfg, D1, export_id)["status"] == "released"
    d1 = vectors(partition(cfg, "cr_user", D1, export_id), "user_id", "cr_user")
    d2 = vectors(partition(cfg, "cr_user", D2, export_id), "user_id", "cr_user")
    users = sorted(set(d1) & set(d2))[:15]
    assert any(not np.array_equal(d1[u], d2[u]) for u in users)  # D2 is in Delta, and differs
    got = joined(spark, cfg, export_id, training_rows(cfg, D3, users, users))
    for u, v in zip(got["user_id"], got["cr_user"]):
        np.testing.assert_array_equal(np.asarray(v, dtype=np.float32), d1[int(u)])
    served = online(cfg, export_id, users)
    for u, v in zip(served["user_id"], served["cr_user"]):
        np.testing.assert_array_equal(np.asarray(v, dtype=np.float32), d1[u])
    assert load_index(cfg, export_id, D2).meta["ds"] == str(D1)


def test_an_older_day_materialized_after_a_newer_one_leaves_the_newer_online(spark, lake):
    from serving.materialize import materialize

    release = newest_release(lake.cfg, D2, lake.export_id)
    d2 = vectors(partition(lake.cfg, "cr_user", D2, lake.export_id, release["table_versions"]["cr_user"]),
                 "user_id", "cr_user")
    materialize(spark, lake.cfg, D2, lake.export_id)
    materialize(spark, lake.cfg, D1, lake.export_id)
    users = sorted(d2)[:25]
    served = online(lake.cfg, lake.export_id, users)
    for u, v in zip(served["user_id"], served["cr_user"]):
        np.testing.assert_array_equal(np.asarray(v, dtype=np.float32), d2[u])


def test_changing_tau_mid_chain_is_refused(spark, world, lake):
    from spark_jobs.refresh import MissingState
    from tests.support.worlds import refresh

    cfg = lake.cfg.model_copy(update={"refresh": lake.cfg.refresh.model_copy(update={"tau_hours": 24.0})})
    with pytest.raises(MissingState, match=r"another export spec.*tau_hours 72.0 -> 24.0.*--cold-start"):
        refresh(spark, cfg, D2, lake.model)
    res = cli("--config", str(write_conf(cfg, Path(cfg.lakehouse).parent / "tau24.yaml")), "refresh", "--ds",
              str(D2), "--model", lake.model)
    assert res.code == 2 and "another export spec" in res.err and "Traceback" not in res.err


def test_a_gate_crash_never_leaves_a_pass_behind(spark, lake):
    """A data file of the candidate vanishes (storage lost it): the gate's read crashes, the verdict is a failure."""
    from tests.support.worlds import refresh

    cand = refresh(spark, lake.cfg, D2, lake.model, run_id="lost-a-file", gate=False)
    files = DeltaTable(lake.cfg.table_path("ir"), version=cand.table_versions["ir"]).file_uris(
        partition_filters=[("ds", "=", str(D2)), ("export_id", "=", lake.export_id)])
    moved = [Path(f.removeprefix("file://")) for f in files]
    for f in moved:
        f.rename(f.with_name(f.name + ".lost"))
    try:
        res = cli("--config", str(lake.conf), "validate", "--ds", str(D2))
    finally:
        for f in moved:
            f.with_name(f.name + ".lost").rename(f)
    assert res.code != 0 and "Traceback" not in res.err
    verdicts = [v for v in DeltaTable(lake.cfg.table_path("gate_status")).to_pyarrow_table().to_pylist()
                if v["ds"] == D2 and v["table"] == "ir" and v["refresh_run_id"] == "lost-a-file"]
    assert verdicts and not max(verdicts, key=lambda v: v["checked_at"])["passed"]
    assert max(verdicts, key=lambda v: v["checked_at"])["error"]
    assert newest_release(lake.cfg, D2, lake.export_id)["status"] == "withdrawn"  # no release of the crash
    ok = cli("--config", str(lake.conf), "validate", "--ds", str(D2))  # the file is back: a real pass
    assert ok.code == 0 and newest_release(lake.cfg, D2, lake.export_id)["status"] == "released"


def test_nanosecond_entity_timestamps_and_bad_names_get_clear_answers(spark, lake, tmp_path):
    rows = training_rows(lake.cfg, D3, [1, 2, 3], [1, 2, 3])
    rows.to_parquet(tmp_path / "ns.parquet")  # pandas writes nanoseconds
    res = cli("--config", str(lake.conf), "training-set", "--entities", str(tmp_path / "ns.parquet"), "--out",
              str(tmp_path / "out"), "--model", lake.export_id)
    assert res.code == 0, res.err
    assert pd.read_parquet(tmp_path / "out")["ur"].notna().all()
    res = cli("--config", str(lake.conf), "run-daily", "--ds", str(D2), "--model", lake.model + "\n")
    assert res.code == 2 and "--model" in res.err and "Traceback" not in res.err
