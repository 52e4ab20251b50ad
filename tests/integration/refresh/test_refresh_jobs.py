"""The daily refresh and backfill on a small synthetic lakehouse with tiny pretrained models (real Spark, Delta,
torch; no mocks). The expensive world (ingest + three registered models) is built once per session on disk."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from inference import decay
from tests.support.worlds import (ALL, D1, D2, NEW_ID, TZ, World, backfill, reference_states, refresh, rows_of,
                                  snapshot)
from lfm.contract import day_end_ms
from lfm.names import BadInput

pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def chain(spark, world):
    """Model A refreshed on D1 (cold start) then D2, in its own lakehouse."""
    cfg = world.config("chain")
    r1 = refresh(spark, cfg, D1, world.model_a, cold_start=True, run_id="chain-d1")
    r2 = refresh(spark, cfg, D2, world.model_a, run_id="chain-d2")
    return cfg, r1, r2, snapshot(spark, cfg, world.model_a)


def test_tables_follow_the_contract(spark, world, chain):
    cfg, r1, r2, snap = chain
    s = cfg.schema
    for table, key, vec in (("ur", s.user_key, "ur"), ("ir", s.item_key, "ir"), ("cr_user", s.user_key, "cr_user"),
                            ("cr_item", s.item_key, "cr_item")):
        df = spark.read.format("delta").load(cfg.table_path(table))
        types = dict(df.dtypes)
        assert types[vec] == "array<float>" and types["ds"] == "date" and types["event_timestamp"] == "timestamp"
        assert types["model_version"] == "string"
        assert {r["ds"] for r in df.select("ds").distinct().collect()} == {D1, D2}
    state = dict(spark.read.format("delta").load(cfg.table_path("cr_user_state")).dtypes)
    assert state["state"] == "array<double>" and state["last_ts"] == "timestamp"
    # every user and item gets UR/IR; CR covers every key seen since the chain began
    assert r1.rows["ur"] == r2.rows["ur"] == 301 and r1.rows["ir"] == r2.rows["ir"] == 121
    assert r2.rows["cr_user"] > r1.rows["cr_user"]
    assert {len(r["ur"]) for r in snap["ur"]} == {16}
    assert {len(r["cr_item"]) for r in snap["cr_item"]} == {_width(world, r1.spec.cr_layer)}
    assert {r["export_id"] for t in ALL for r in snap[t]} == {r1.spec.id} == {r2.spec.id}
    # event_timestamp is the end of day D: D+1 00:00 Asia/Shanghai
    for table in ("ur", "ir", "cr_user", "cr_item"):
        for ds in (D1, D2):
            got = spark.read.format("delta").load(cfg.table_path(table)).where(f"ds = DATE'{ds}'") \
                .selectExpr("min(unix_millis(event_timestamp))", "max(unix_millis(event_timestamp))").first()
            assert got[0] == got[1] == day_end_ms(ds, TZ)


def test_unseen_nan_and_null_features_get_oov_vectors(world, chain):
    _, _, _, snap = chain
    for table in ("ur", "cr_user", "ir", "cr_item"):
        vecs = [r[table] for r in snap[table] if r[0] == NEW_ID]
        assert vecs, f"{table} lacks the new entity"
        assert all(np.isfinite(v).all() for v in vecs)


def test_commit_metadata_records_run_and_inputs(spark, world, chain):
    from lakehouse.delta_io import commit_info

    cfg, r1, r2, _ = chain
    for table in ALL:
        meta = commit_info(spark, cfg.table_path(table), r2.table_versions[table])["userMetadata"]
        assert meta["model_version"] == world.model_a and meta["run_id"] == "chain-d2" and meta["ds"] == str(D2)
        assert meta["export_id"] == r2.spec.id and meta["chained_from"] == "chain-d1"
        assert meta["inputs"]["events"] == 0 and meta["inputs"]["users"] == 0 and meta["inputs"]["items"] == 0
    log = spark.read.format("delta").load(cfg.table_path("refresh_log")).where(f"ds = DATE'{D2}'").collect()
    assert [r["run_id"] for r in log] == ["chain-d2"]
    assert dict(log[0]["table_versions"]) == r2.table_versions


def _width(world: World, layer: str) -> int:
    from models.registry import read_card

    return read_card(world.registry / world.model_a)[1].cr_points[layer]


def test_state_matches_the_decay_formula_and_never_reads_the_future(spark, world, chain):
    cfg, r1, _, snap = chain
    ref = reference_states(spark, cfg, world, r1.spec.cr_layer)
    for day in (D1, D2):
        rows = [r for r in snap["cr_user_state"] if r["ds"] == day]
        got = {r["user_id"]: np.asarray(r["state"]) for r in rows}
        keys, state = ref[day]
        assert sorted(got) == sorted(keys.tolist())
        np.testing.assert_allclose(np.stack([got[k] for k in keys.tolist()]), state, rtol=1e-4, atol=1e-6)
        # no state row carries an event at or after its day end
        assert max(r["last_ts"] for r in rows).replace(tzinfo=dt.timezone.utc).timestamp() * 1000 < \
            day_end_ms(day, TZ)
        exported = {r["user_id"]: np.asarray(r["cr_user"]) for r in snap["cr_user"] if r["ds"] == day}
        np.testing.assert_allclose(exported[keys[0]], decay.normalise(state[:1], "layernorm")[0], rtol=1e-3, atol=1e-5)


def test_another_models_rows_stand_beside_and_a_rerun_replaces_the_partition_identically(spark, world, chain):
    """Model B's refresh of D2 writes beside model A's rows; A's rerun of D2 then replaces A's partition
    bit-identically (time travel still shows the first run) and leaves B's rows alone."""
    from delta.tables import DeltaTable

    cfg, _, r2, snap = chain
    refresh(spark, cfg, D2, world.model_b, cold_start=True)
    assert snapshot(spark, cfg, world.model_a) == snap
    b_rows = snapshot(spark, cfg, world.model_b)
    assert b_rows["ur"] and all(r["ds"] == D2 for r in b_rows["ur"])
    assert [r["ur"] for r in b_rows["ur"]] != [r["ur"] for r in snap["ur"] if r["ds"] == D2]  # other vectors
    again = refresh(spark, cfg, D2, world.model_a, run_id="chain-d2-rerun")
    assert snapshot(spark, cfg, world.model_b) == b_rows
    assert snapshot(spark, cfg, world.model_a) == snap  # bit-identical, no duplicates
    for table in ALL:
        assert again.table_versions[table] > r2.table_versions[table]
        # time travel still shows the first run's partition
        assert rows_of(spark, cfg, table, world.model_a, D2, at=r2.table_versions[table]) == \
            [r for r in snap[table] if r["ds"] == D2]
        ops = DeltaTable.forPath(spark, cfg.table_path(table)).history().select("userMetadata").collect()
        assert sum("chain-d2" in (r[0] or "") for r in ops) >= 2


def test_a_second_refresh_of_a_running_day_fails_at_once_and_changes_nothing(spark, world, chain):
    from lakehouse.delta_io import table_version
    from lakehouse.locks import DayBusy, day_lock
    from spark_jobs.refresh import EXPORT_LOCK

    cfg, _, _, snap = chain
    versions = {t: table_version(spark, cfg.table_path(t)) for t in ALL}
    with day_lock(cfg, EXPORT_LOCK, D2, "the-first-run"):  # what a refresh of D2 in flight holds
        with pytest.raises(DayBusy, match="already running.*the-first-run"):
            refresh(spark, cfg, D2, world.model_a, run_id="the-second-run")
    assert {t: table_version(spark, cfg.table_path(t)) for t in ALL} == versions
    assert snapshot(spark, cfg, world.model_a) == snap


def test_backfill_equals_day_by_day(spark, world, chain):
    _, _, _, snap = chain
    cfg = world.config("backfill")
    results = backfill(spark, cfg, D1, D2, world.model_a, cold_start=True)
    assert [r.ds for r in results] == [D1, D2]
    assert snapshot(spark, cfg, world.model_a) == snap


def test_backfill_warmup_publishes_nothing_for_warmup_days(spark, world, chain):
    _, _, _, snap = chain
    cfg = world.config("warmup")
    backfill(spark, cfg, D2, D2, world.model_a, warmup_days=1)
    got = snapshot(spark, cfg, world.model_a)
    assert got == {t: [r for r in rows if r["ds"] == D2] for t, rows in snap.items()}


def test_failed_write_restores_every_table(spark, world, chain):
    """The last table's write fails (a real Delta CHECK constraint); the five written before are restored."""
    from lakehouse.delta_io import table_version
    from spark_jobs.refresh import PublishError

    cfg, r1, _, snap = chain
    path = cfg.table_path("cr_item_state")
    spark.sql(f"ALTER TABLE delta.`{path}` ADD CONSTRAINT same_layer CHECK (cr_layer = '{r1.spec.cr_layer}')")
    other = next(p for p in ("cross1", "dnn1", "embed") if p != r1.spec.cr_layer)
    before = {t: table_version(spark, cfg.table_path(t)) for t in ALL}
    try:
        with pytest.raises(PublishError, match="cr_item_state.*restored"):
            refresh(spark, cfg, D2, world.model_a, layer=other, cold_start=True)
    finally:
        spark.sql(f"ALTER TABLE delta.`{path}` DROP CONSTRAINT same_layer")
    assert snapshot(spark, cfg, world.model_a) == snap
    for t in ALL[:-1]:
        assert table_version(spark, cfg.table_path(t)) >= before[t] + 2  # the write, then the restore
        assert rows_of(spark, cfg, t, world.model_a, D2, at=before[t]) == [r for r in snap[t] if r["ds"] == D2]


def test_nan_model_writes_nothing(spark, world, chain):
    from lakehouse.delta_io import table_version
    from spark_jobs.refresh import NonFiniteVectors

    cfg = chain[0]
    before = {t: table_version(spark, cfg.table_path(t)) for t in ALL + ("refresh_log",)}
    with pytest.raises(NonFiniteVectors, match="NaN/infinite.*nothing was written"):
        refresh(spark, cfg, D1, world.model_nan, cold_start=True)
    assert {t: table_version(spark, cfg.table_path(t)) for t in ALL + ("refresh_log",)} == before


def test_bad_inputs_stop_before_any_write(spark, world):
    from lakehouse.delta_io import overwrite_table, table_exists
    from spark_jobs.refresh import MissingState, NoEvents, TableMismatch

    cfg = world.config("bad")
    with pytest.raises(MissingState, match="--cold-start"):
        refresh(spark, cfg, D2, world.model_a)
    with pytest.raises(NoEvents, match="no events for ds 2022-05-09"):
        refresh(spark, cfg, "2022-05-09", world.model_a, cold_start=True)
    with pytest.raises(BadInput, match="not a CR point"):
        refresh(spark, cfg, D1, world.model_a, layer="cross9", cold_start=True)
    with pytest.raises(BadInput, match="bad date"):
        refresh(spark, cfg, "2022-04-27; DROP TABLE", world.model_a)
    with pytest.raises(BadInput, match="bad model version"):
        refresh(spark, cfg, D1, "../etc", cold_start=True)
    # a model trained on another data schema than the config's
    from lfm.errors import LfmError
    fewer = cfg.schema.model_copy(update={"user_fields": cfg.schema.user_fields[:-1]})
    other = cfg.model_copy(update={"schema_": fewer})
    with pytest.raises(LfmError, match="different data schema"):
        refresh(spark, other, D1, world.model_a, cold_start=True)
    # tables that lack a column the model reads
    users = spark.read.format("delta").load(cfg.table_path("users")).drop("user_active_degree")
    overwrite_table(users, cfg.table_path("users"), {"job": "test"})
    with pytest.raises(TableMismatch, match="user_active_degree"):
        refresh(spark, cfg, D1, world.model_a, cold_start=True)
    assert not any(table_exists(spark, cfg.table_path(t)) for t in ALL)


def test_active_user_scope_takes_users_with_events_in_the_window(spark, world):
    from pipeline.spec import resolve_export
    from spark_jobs.refresh.compute import users_in_scope
    from spark_jobs.refresh.plan import plan_refresh

    cfg = world.config("scope", refresh={"users": "active", "active_window_days": 2})
    export = resolve_export(cfg, world.model_a)
    plan = plan_refresh(spark, cfg, export.spec, export.day_model(cfg, D2), D2, cold_start=True)
    events = spark.read.format("delta").load(cfg.table_path("events"))
    active = events.where(f"ds IN (DATE'{D1}', DATE'{D2}')").select("user_id").distinct().count()
    scoped = users_in_scope(spark, cfg, plan)
    assert scoped.count() == active < events.select("user_id").distinct().count()
