"""Feast over real Delta tables: released materialization, online lookups (sqlite and Redis), the HTTP feature
server, point-in-time training sets and retrieval from the materialized IR.

The lake (written once per module with Spark, in the contract layout) holds export V1 for 2022-05-05..08 and
export V2 (another model, other widths) for 2022-05-08; every day goes through the real gate and publish. V1's
cr_item of 2022-05-08 holds NaN vectors (a planted fault): the gate quarantines it, so V1's 2022-05-08 is never
released and every reader keeps 05-07 for V1. 2022-05-09 has no data at all. Each online store kind gets its own
Feast repo under tmp, registered and materialized day by day.
"""
from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from cli.main import main
from feature_repo.specs import service_name, view_name
from lfm.contract import EMBEDDING_TABLES as TABLES
from lfm.contract import USER_TABLES, ExportSpec
from lfm.names import BadInput
from serving.errors import BadEntityRows, MixedModelVersions, ServingError, UnknownModelVersion
from serving.materialize import Skip
from tests.support.config import make_config, write_yaml
from tests.support.http import http_server
from tests.support.synthetic_vectors import NO_DRIFT, spec

V1 = spec("a1b2c3d4e5f6a7b8c9d0", ur_dim=16, ir_dim=16, cr_dim=8, cr_layer="dnn_0")
V2 = spec("0f1e2d3c4b5a69788796", ur_dim=12, ir_dim=10, cr_dim=6, cr_layer="cross_2")
DAYS = [dt.date(2022, 5, 5) + dt.timedelta(days=i) for i in range(4)]  # 05-05 .. 05-08
V1_RELEASED = DAYS[:3]  # 05-08 is quarantined for V1 (NaN cr_item)
MISSING = dt.date(2022, 5, 9)
USERS, ITEMS = 40, 30
TZ_OFFSET = dt.timedelta(hours=8)  # Asia/Shanghai, the schema's timezone


def day_end_utc(day: dt.date) -> dt.datetime:
    """End of local day D = D+1 00:00 Asia/Shanghai, as an aware UTC datetime."""
    return dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), dt.timezone.utc) - TZ_OFFSET


@dataclass
class Lake:
    root: Path
    truth: dict  # (version, table, day) -> (n, dim) float32, row i = entity id i


@pytest.fixture(scope="module")
def lake(spark, tmp_path_factory) -> Lake:
    from lakehouse.delta_io import replace_partitions
    from tests.support.synthetic_vectors import arrow_table, release_days, write_days

    root = tmp_path_factory.mktemp("feast_lake")
    cfg = make_config(root, quality=NO_DRIFT)
    plan = {V1: DAYS, V2: DAYS[-1:]}
    truth = write_days(spark, cfg, plan, USERS, ITEMS, seed=3)
    nan = np.full((ITEMS, V1.cr_dim), np.nan, dtype=np.float32)  # the planted fault
    replace_partitions(spark.createDataFrame(arrow_table(cfg, "cr_item", V1, DAYS[-1], np.arange(ITEMS), nan)),
                       cfg.table_path("cr_item"), [DAYS[-1]], {"job": "planted-fault"},
                       extra_predicate=f"export_id = '{V1.id}'")
    released = release_days(spark, cfg, plan)
    assert [day for (export, day), r in sorted(released.items()) if export == V1.id and r.release] == V1_RELEASED
    finite = "vector_finite(cr_item)"  # NaN planted in CR(i) of the last day
    assert finite in released[(V1.id, DAYS[-1])].gate.tables["cr_item"].failed
    return Lake(root, truth)


def feast_config(lake: Lake, root: Path, kind: str = "sqlite", redis_connection: str | None = None):
    feast = {"repo_path": str(root / "feature_repo"), "online_store": kind}
    if redis_connection:
        feast["redis_connection"] = redis_connection
    return make_config(root, lakehouse=str(lake.root / "lakehouse"), feast=feast)


def online_dump(cfg) -> dict:
    """Everything in the online store (to prove a skipped materialization changed nothing)."""
    from serving.online_io import RedisOnline, SqliteOnline, open_online

    store = open_online(cfg)
    try:
        if isinstance(store, SqliteOnline):
            names = [r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            return {n: sorted(store.conn.execute(f'SELECT entity_key, feature_name, value, event_ts FROM "{n}"'))
                    for n in names}
        assert isinstance(store, RedisOnline)
        return {k: store.client.hgetall(k) for k in sorted(store.client.keys("*"))}
    finally:
        store.close()


@dataclass
class Served:
    kind: str
    cfg: object
    results: dict  # day -> MaterializeResult
    unchanged_after_skips: bool


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def served(request, spark, lake, tmp_path_factory) -> Served:
    from serving.materialize import materialize
    from serving.register import register

    kind = request.param
    conn = None
    if kind == "redis":
        server = request.getfixturevalue("redis_server")
        import redis

        redis.Redis(host="127.0.0.1", port=server.port).flushall()
        conn = server.connection
    cfg = feast_config(lake, tmp_path_factory.mktemp(f"served_{kind}"), kind, conn)
    register(cfg, [V1, V2], current=V1.id)
    results = {day: materialize(spark, cfg, day) for day in DAYS}
    before = online_dump(cfg)
    results[MISSING] = materialize(spark, cfg, MISSING)  # no data, no release
    results["older"] = materialize(spark, cfg, DAYS[1])  # a re-run of an older day must not roll back
    return Served(kind, cfg, results, online_dump(cfg) == before)


def expected(lake: Lake, spec: ExportSpec, table: str, day: dt.date) -> np.ndarray:
    return lake.truth[(spec.id, table, day)]


# --- materialization ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_materialize_loads_only_released_days_all_tables_or_none(served):
    r = served.results
    for day in DAYS[:3]:
        loaded = {(x.export_id, x.table) for x in r[day].loads if x.loaded}
        assert loaded == {(V1.id, t) for t in TABLES}, day  # V2 has no release before 05-08
        assert all(x.rows == (USERS if x.table in USER_TABLES else ITEMS) for x in r[day].loads if x.loaded)
    last = {(x.export_id, x.table): x for x in r[DAYS[-1]].loads}
    for t in TABLES:  # one quarantined table keeps the whole day of V1 out; V2's release loads whole
        assert not last[(V1.id, t)].loaded and last[(V1.id, t)].skip is Skip.unreleased
        assert "not released" in last[(V1.id, t)].reason and last[(V2.id, t)].loaded
    assert not any(x.loaded for x in r[MISSING].loads) and r[MISSING].rows == 0
    assert not any(x.loaded for x in r["older"].loads)
    assert all(x.skip is Skip.newer_online for x in r["older"].loads if x.export_id == V1.id)
    assert served.unchanged_after_skips  # a missing/quarantined/older day changes nothing online


@pytest.mark.slow
def test_redis_load_of_a_faulty_release_is_refused_in_spark_before_any_write(spark, redis_server, tmp_path):
    """A release that the gate never passed (published here directly, a NaN planted in CR(item) and a second
    snapshot time in UR) is checked by Spark tasks and refused before the first HSET: Redis stays empty and Feast's
    registry records no materialization."""
    import redis

    from lakehouse import candidates, releases
    from lakehouse.delta_io import replace_partitions, table_version
    from serving.materialize import materialize
    from serving.register import register
    from tests.support.synthetic_vectors import arrow_table, write_days

    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    client.flushall()
    cfg = make_config(tmp_path, feast={"repo_path": str(tmp_path / "feature_repo"), "online_store": "redis",
                                       "redis_connection": redis_server.connection})
    day = DAYS[0]
    write_days(spark, cfg, {V1: [day]}, USERS, ITEMS, seed=9)
    nan = np.ones((ITEMS, V1.cr_dim), dtype=np.float32)
    nan[3, 1] = np.nan
    replace_partitions(spark.createDataFrame(arrow_table(cfg, "cr_item", V1, day, np.arange(ITEMS), nan)),
                       cfg.table_path("cr_item"), [day], {"job": "planted-fault"},
                       extra_predicate=f"export_id = '{V1.id}'")
    late = arrow_table(cfg, "ur", V1, day, np.arange(USERS), np.ones((USERS, V1.ur_dim), np.float32))
    late = late.set_column(late.schema.get_field_index("event_timestamp"), "event_timestamp",
                           pa.array([day_end_utc(day + dt.timedelta(days=i % 2)).replace(tzinfo=None)
                                     for i in range(USERS)], pa.timestamp("us")))
    replace_partitions(spark.createDataFrame(late), cfg.table_path("ur"), [day], {"job": "planted-fault"},
                       extra_predicate=f"export_id = '{V1.id}'")
    versions = {t: int(table_version(spark, cfg.table_path(t))) for t in TABLES}
    candidates.append(cfg, candidates.Candidate(ds=day, spec=V1, run_id="planted", table_versions=versions))
    releases.publish(cfg, day, V1, "planted", "no-gate", versions)
    register(cfg, [V1])
    with pytest.raises(ServingError) as err:
        materialize(spark, cfg, day)
    assert "cr_item: 1 NaN or infinite values" in str(err.value) and "ur: snapshot times from" in str(err.value)
    assert "nothing was written" in str(err.value)
    assert client.dbsize() == 0
    from feature_repo.store import open_store

    store = open_store(cfg)
    assert all(not store.get_feature_view(view_name(t, V1.id)).materialization_intervals for t in TABLES)


@pytest.mark.slow
def test_an_unreachable_redis_is_a_message_for_materialize_and_lookups(spark, lake, tmp_path):
    """Redis stopped after `lfm register`: `lfm materialize` and `lfm retrieve` exit 2 naming the store and the
    fix, no traceback; the Delta release is untouched."""
    from serving.register import register
    from tests.support.cli import cli
    from tests.support.redis_local import start_redis

    server = start_redis()
    cfg = feast_config(lake, tmp_path, "redis", server.connection)
    register(cfg, [V1], current=V1.id)
    server.stop()
    conf = write_yaml(cfg, tmp_path / "lfm.yaml")
    for argv in (["materialize", "--ds", str(DAYS[0])], ["retrieve", "--user", "3"]):
        run = cli("--config", str(conf), *argv)
        assert run.code == 2, (argv, run.out, run.err)
        assert f"the online store (redis {server.connection}) is unreachable" in run.err, run.err
        assert "bring it back and rerun" in run.err and "Traceback" not in run.err


@pytest.mark.slow
def test_online_store_returns_exactly_the_latest_materialized_delta_rows(served, spark, lake):
    from serving.online import OnlineReader, get_online_features

    latest = {t: DAYS[-2] for t in TABLES}  # V1's 05-08 is not released
    delta = {}  # the rows as they are in Delta (read back with Spark, not the generator's arrays)
    for table, day in latest.items():
        key = "user_id" if table in USER_TABLES else "video_id"
        rows = (spark.read.format("delta").load(served.cfg.table_path(table))
                .where(f"export_id = '{V1.id}' AND ds = DATE'{day}'").select(key, table).collect())
        delta[table] = {r[0]: np.asarray(r[1], dtype=np.float32) for r in rows}
        np.testing.assert_array_equal(np.stack([delta[table][i] for i in sorted(delta[table])]),
                                      expected(lake, V1, table, day))
    users, items = list(range(USERS)), list(range(ITEMS))
    rows = [{"user_id": users[i % USERS], "video_id": items[i % ITEMS]} for i in range(USERS)]
    got = get_online_features(served.cfg, rows, version=V1.id)
    for table in TABLES:
        ids = got["user_id"] if table in USER_TABLES else got["video_id"]
        for i, vec in zip(ids, got[table]):
            np.testing.assert_array_equal(np.asarray(vec, dtype=np.float32), delta[table][i])

    reader = OnlineReader(served.cfg)  # current = V1; one round trip for 1 user + all items
    u, it = reader.request(7, items)
    np.testing.assert_array_equal(u.vectors["ur"][0], delta["ur"][7])
    np.testing.assert_array_equal(it.vectors["cr_item"], np.stack([delta["cr_item"][i] for i in items]))
    assert reader.spec == V1
    reader.close()

    v2 = OnlineReader(served.cfg, V2.id)
    for table in TABLES:
        side = v2.user_vectors(range(USERS), (table,)) if table in USER_TABLES else \
            v2.item_vectors(range(ITEMS), (table,))
        np.testing.assert_array_equal(side.vectors[table], expected(lake, V2, table, DAYS[-1]))
    v2.close()


@pytest.mark.slow
def test_unknown_ids_are_null_and_bad_requests_are_refused(served):
    from serving.online import OnlineReader, get_online_features

    got = get_online_features(served.cfg, [{"user_id": 10_000, "video_id": 3}, {"user_id": 2, "video_id": -5}],
                              version=V1.id)
    assert got["ur"][0] is None and got["cr_user"][0] is None and got["ir"][1] is None and got["cr_item"][1] is None
    assert got["ir"][0] is not None and got["ur"][1] is not None
    reader = OnlineReader(served.cfg, V1.id)
    u, it = reader.request(10_000, [3, 99_999])
    assert not u.found["ur"][0] and np.isnan(u.vectors["ur"][0]).all()  # missing is NaN + found False, never 0
    assert it.found["ir"].tolist() == [True, False] and it.to_dict()["ir"][1] is None
    with pytest.raises(BadInput, match="integers"):
        reader.request("seven", [1])
    reader.close()

    mixed = [f"{view_name('ur', V1.id)}:ur", f"{view_name('ir', V2.id)}:ir"]
    with pytest.raises(MixedModelVersions, match="different embedding spaces"):
        get_online_features(served.cfg, [{"user_id": 1, "video_id": 1}], features=mixed)
    with pytest.raises(UnknownModelVersion, match="not a registered export"):
        get_online_features(served.cfg, [{"user_id": 1, "video_id": 1}], version="c" * 20)
    with pytest.raises(UnknownModelVersion, match="not registered"):
        get_online_features(served.cfg, [{"user_id": 1}], features=[f"ur_e{'c' * 16}:ur"])
    with pytest.raises(UnknownModelVersion):
        OnlineReader(served.cfg, "d" * 20)


# --- HTTP feature server -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_feature_server_answers_over_http(served, lake):
    import requests

    from serving.server import build_app

    with http_server(build_app(served.cfg)) as url:
        assert requests.get(f"{url}/health", timeout=10).status_code == 200
        body = {"feature_service": service_name(V1.id),
                "entities": {"user_id": [5, 10_000], "video_id": [6, 7]}}
        resp = requests.post(f"{url}/get-online-features", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        data = resp.json()
        names = data["metadata"]["feature_names"]
        col = {n: data["results"][i] for i, n in enumerate(names)}
        np.testing.assert_array_equal(np.asarray(col["ur"]["values"][0], dtype=np.float32),
                                      expected(lake, V1, "ur", DAYS[-2])[5])
        np.testing.assert_array_equal(np.asarray(col["cr_item"]["values"][1], dtype=np.float32),
                                      expected(lake, V1, "cr_item", DAYS[-2])[7])
        assert col["ur"]["values"][1] is None and col["cr_user"]["values"][1] is None  # unknown user: null
        # Feast's statuses differ by store: sqlite says NOT_FOUND; its Redis reader returns an empty value
        # marked PRESENT with a 1970 timestamp (Feast 0.67 behaviour). The value is null either way.
        assert col["ur"]["statuses"][1] == ("NOT_FOUND" if served.kind == "sqlite" else "PRESENT")

        mixed = {"features": [f"{view_name('ur', V1.id)}:ur", f"{view_name('ir', V2.id)}:ir"],
                 "entities": {"user_id": [1], "video_id": [1]}}
        resp = requests.post(f"{url}/get-online-features", json=mixed, timeout=30)
        assert resp.status_code == 400 and "mixes exports" in resp.json()["detail"]
        text_id = {"feature_service": service_name(V1.id), "entities": {"user_id": ["five"], "video_id": [6]}}
        resp = requests.post(f"{url}/get-online-features", json=text_id, timeout=30)
        assert resp.status_code == 400 and "'user_id' takes integer ids" in resp.json()["detail"]
        one = {"features": [f"{view_name('ir', V2.id)}:ir"], "entities": {"video_id": [2]}}
        resp = requests.post(f"{url}/get-online-features", json=one, timeout=30)
        assert resp.status_code == 200
        np.testing.assert_array_equal(np.asarray(resp.json()["results"][1]["values"][0], dtype=np.float32),
                                      expected(lake, V2, "ir", DAYS[-1])[2])
        push = requests.post(f"{url}/push", json={"push_source_name": "x", "df": {}}, timeout=10)
        assert push.status_code == 403 and "lfm materialize" in push.json()["detail"]


@pytest.mark.slow
def test_lfm_serve_cli_starts_the_server_on_loopback(served, tmp_path):
    import os
    import subprocess
    import sys

    import requests

    from tests.support.redis_local import free_port

    if served.kind != "sqlite":
        pytest.skip("the CLI path is the same for both stores; covered with sqlite")
    port = free_port()
    conf = write_yaml(served.cfg, tmp_path / "lfm.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "--config", str(conf), "serve", "--port", str(port)],
                            cwd=str(Path(__file__).resolve().parents[3]), env={**os.environ},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline, ok = time.monotonic() + 120, False
        while time.monotonic() < deadline and proc.poll() is None and not ok:
            try:
                ok = requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
            except requests.ConnectionError:
                time.sleep(0.3)
        assert ok, proc.stdout.read() if proc.poll() is not None else "no answer within 120 s"
        resp = requests.post(f"http://127.0.0.1:{port}/get-online-features", timeout=30,
                             json={"feature_service": "lfm_current", "entities": {"user_id": [1], "video_id": [2]}})
        assert resp.status_code == 200 and resp.json()["results"][1]["statuses"][0] == "PRESENT"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- retrieval on the materialized IR -----------------------------------------------------------------------


@pytest.mark.slow
def test_retrieve_uses_the_days_index_and_the_users_online_vector(served, lake, tmp_path, capsys):
    from serving.retrieval import Retriever, load_index, retrieve_for_user

    if served.kind != "sqlite":
        pytest.skip("index and lookup are store-independent beyond the online read tested above")
    index = load_index(served.cfg, V1.id)
    assert index.meta["ds"] == DAYS[-2].isoformat() and len(index) == ITEMS  # the newest released day of V1
    ir, ur = expected(lake, V1, "ir", DAYS[-2]), expected(lake, V1, "ur", DAYS[-2])
    exact = np.argsort(-(ir @ ur[3]), kind="stable")[:5]
    raw_top = exact.tolist()
    hits = retrieve_for_user(served.cfg, 3, 5)
    assert [i for i, _ in hits] == exact.tolist()
    np.testing.assert_allclose([s for _, s in hits], (ir @ ur[3])[exact], rtol=1e-5)
    assert Retriever(index).retrieve(ur[3], 5) == hits

    conf = write_yaml(served.cfg, tmp_path / "lfm.yaml")
    assert main(["--config", str(conf), "retrieve", "--user", "3", "--k", "5"]) == 0
    said = capsys.readouterr()
    assert [h["item"] for h in json.loads(said.out)] == exact.tolist()
    assert f"ranking with the raw, untrained UR: model {V1.model_version} has no trained user projection" in said.err
    assert main(["--config", str(conf), "retrieve", "--user", "10000", "--k", "5"]) == 2
    assert "no ur vector online" in capsys.readouterr().err

    # a retrieval two-tower's saved user projection (lfm train-downstream) in front of the same index
    import torch

    from models.two_tower import ProjectionCard, UserProjection, UserSource, projection_path, save_user_projection
    from pipeline.downstream import PROJECTIONS_DIR

    torch.manual_seed(0)
    proj = UserProjection(ur.shape[1], ir.shape[1], ())
    card = ProjectionCard(source="ur", in_dim=ur.shape[1], out_dim=ir.shape[1], hidden=(), model_version=V1.model_version,
                          scenario="0", task="is_click")
    path = save_user_projection(tmp_path / "proj.pt", SimpleNamespace(user=proj), card)
    projected = proj.project(ur[3:4])[0]
    exact = np.argsort(-(ir @ projected), kind="stable")[:5]
    assert main(["--config", str(conf), "retrieve", "--user", "3", "--k", "5", "--projection", str(path)]) == 0
    assert [h["item"] for h in json.loads(capsys.readouterr().out)] == exact.tolist()
    assert main(["--config", str(conf), "retrieve", "--user", "3", "--projection", str(path),
                 "--model", V2.model_version]) == 2
    assert "different spaces" in capsys.readouterr().err

    # saved where `lfm train-downstream` saves it, the projection is the default (the output names it); --raw
    # ranks with the raw UR; another model's export has none
    saved = projection_path(served.cfg.resolve(served.cfg.registry.path) / PROJECTIONS_DIR, V1.model_version,
                            UserSource.ur, "0", "is_click")
    save_user_projection(saved, SimpleNamespace(user=proj), card)
    try:
        assert main(["--config", str(conf), "retrieve", "--user", "3", "--k", "5"]) == 0
        said = capsys.readouterr()
        assert [h["item"] for h in json.loads(said.out)] == exact.tolist()
        assert f"ranking with the trained projection {saved} (ur of model {V1.model_version} -> IR, trained on " \
               "scenario 0, task is_click); --raw ranks with the raw UR" in said.err
        assert main(["--config", str(conf), "retrieve", "--user", "3", "--k", "5", "--raw"]) == 0
        said = capsys.readouterr()
        assert [h["item"] for h in json.loads(said.out)] == raw_top and "raw UR (--raw)" in said.err
    finally:
        saved.unlink()
        saved.with_suffix(".json").unlink()


# --- offline: point-in-time training sets ------------------------------------------------------------------


@pytest.fixture
def offline_cfg(lake, tmp_path):
    from serving.register import register

    cfg = feast_config(lake, tmp_path)
    register(cfg, [V1, V2], current=V1.id)
    return cfg


def pit_expected(lake: Lake, spec: ExportSpec, table: str, entity: int | None, t: dt.datetime,
                 days: list[dt.date], ttl: dt.timedelta = dt.timedelta(days=2)) -> np.ndarray | None:
    """The reference rule, in plain Python: the newest snapshot with t - ttl <= end(D) <= t."""
    if entity is None or not (0 <= entity < (USERS if table in USER_TABLES else ITEMS)):
        return None
    ok = [d for d in days if t - ttl <= day_end_utc(d) <= t]
    return expected(lake, spec, table, max(ok))[entity] if ok else None


ENGINES = ("spark", "local")


def joined(engine: str, spark, cfg, rows, **pin) -> pd.DataFrame:
    """The training set from one join engine: the distributed Spark join, or the driver-side Arrow join."""
    from serving.offline import local_join, prepare, training_set

    if engine == "spark":
        return training_set(spark, cfg, rows, **pin).toPandas()
    entities, plans = prepare(spark, cfg, rows, pin.get("feature_service"), pin.get("version"), None)
    table = local_join(spark, cfg, entities, plans)
    assert table is not None, "small rows must take the local engine"
    return table.to_pandas()


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_training_set_for_a_day_sees_only_the_previous_days_snapshot(spark, lake, offline_cfg, engine):
    """Rows of 2022-05-06 (local) get the 2022-05-05 snapshot, never the same day's, which a naive join leaks."""
    from pyspark.sql import functions as F

    day = dt.date(2022, 5, 6)
    local_midnight = day_end_utc(day - dt.timedelta(days=1))  # 05-06 00:00 local = end of 05-05
    times = [local_midnight + dt.timedelta(seconds=1), local_midnight + dt.timedelta(hours=12),
             day_end_utc(day) - dt.timedelta(microseconds=1)]  # 23:59:59.999999 local
    rows = pd.DataFrame({"user_id": [1, 2, 3], "video_id": [4, 5, 6], "event_timestamp": times, "tab": [0, 0, 0],
                         "is_click": [1, 0, 1]})
    got = joined(engine, spark, offline_cfg, rows, version=V1.id).sort_values("user_id").reset_index(drop=True)
    assert len(got) == 3 and got["tab"].tolist() == [0, 0, 0]
    for i, r in got.iterrows():
        for table, key in (("ur", "user_id"), ("ir", "video_id"), ("cr_user", "user_id"), ("cr_item", "video_id")):
            np.testing.assert_array_equal(np.asarray(r[table], dtype=np.float32),
                                          expected(lake, V1, table, day - dt.timedelta(days=1))[r[key]])
    # the planted trap: joining on the row's local calendar day picks the same day's snapshot (a leak)
    ur = spark.read.format("delta").load(offline_cfg.table_path("ur")).where(f"export_id = '{V1.id}'")
    ents = spark.createDataFrame(rows).withColumn(
        "local_day", F.to_date(F.from_utc_timestamp("event_timestamp", "Asia/Shanghai")))
    naive = ents.join(ur, (ents.user_id == ur.user_id) & (ents.local_day == ur.ds)).select(ents.user_id, "ur")
    leaked = {r[0]: np.asarray(r[1], dtype=np.float32) for r in naive.collect()}
    for u in (1, 2, 3):
        np.testing.assert_array_equal(leaked[u], expected(lake, V1, "ur", day)[u])  # same-day vectors: the leak


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_training_set_keeps_every_entity_row_and_matches_the_reference_rule(spark, lake, offline_cfg, engine):
    rng = np.random.default_rng(11)
    n = 600
    start = day_end_utc(DAYS[0]) - dt.timedelta(hours=30)  # before the first snapshot: nulls
    times = [start + dt.timedelta(minutes=int(m)) for m in rng.integers(0, 7 * 24 * 60, n)]  # to ~05-11: past TTL
    users = rng.integers(0, USERS + 5, n)  # some unknown users
    items = rng.integers(0, ITEMS + 5, n)
    dup = rng.choice(n, 150, replace=False)  # 150 exact duplicates of (keys, time): the file store drops these
    src = rng.choice(n, 150)
    users[dup], items[dup] = users[src], items[src]
    for d, s in zip(dup, src):
        times[d] = times[s]
    times[0] = day_end_utc(DAYS[1])  # exactly at a snapshot's time: that snapshot counts (<= t)
    rows = pd.DataFrame({"row_id": np.arange(n), "user_id": users, "video_id": items, "event_timestamp": times,
                         "label": rng.integers(0, 2, n)})
    ents = spark.createDataFrame(rows)
    got = joined(engine, spark, offline_cfg, ents, feature_service=service_name(V1.id))
    got = got.sort_values("row_id").reset_index(drop=True)
    assert len(got) == n and got["row_id"].tolist() == list(range(n))  # every row, exactly once
    assert got["label"].tolist() == rows["label"].tolist()
    nulls = 0
    for r, t in zip(got.itertuples(), times):
        for table in TABLES:
            key = r.user_id if table in USER_TABLES else r.video_id
            want = pit_expected(lake, V1, table, int(key), t, V1_RELEASED)
            have = getattr(r, table)
            if want is None:
                nulls += 1
                assert have is None, (r.row_id, table)
            else:
                np.testing.assert_array_equal(np.asarray(have, dtype=np.float32), want)
    assert 0 < nulls < n * 4  # both outcomes exercised (unknown keys, before first snapshot, past TTL)


@pytest.mark.slow
def test_training_set_agrees_with_feasts_spark_offline_store(spark, lake, offline_cfg):
    """Feast's own get_historical_features over the same registry and rows gives the same vectors, and so do
    both of our engines (and `training_table`, whichever it picks)."""
    from serving.offline import training_table
    from feature_repo.store import open_store

    rng = np.random.default_rng(5)
    n = 80
    times = [day_end_utc(DAYS[0]) + dt.timedelta(minutes=int(m)) for m in rng.integers(0, 4 * 24 * 60, n)]
    rows = pd.DataFrame({"row_id": np.arange(n), "user_id": rng.integers(0, USERS + 3, n),
                         "video_id": rng.integers(0, ITEMS, n), "event_timestamp": times})
    ents = spark.createDataFrame(rows)
    store = open_store(offline_cfg)
    feast_df = store.get_historical_features(entity_df=ents, features=store.get_feature_service(
        service_name(V1.id))).to_spark_df().toPandas().sort_values("row_id").reset_index(drop=True)
    spark_only = offline_cfg.model_copy(update={"feast": offline_cfg.feast.model_copy(
        update={"offline_local_rows": 0})})
    ours = {engine: joined(engine, spark, offline_cfg, ents, version=V1.id) for engine in ENGINES}
    ours["table"] = training_table(spark, offline_cfg, ents, version=V1.id).to_pandas()
    ours["table, spark-only config"] = training_table(spark, spark_only, ents, version=V1.id).to_pandas()
    for name, frame in ours.items():
        frame = frame.sort_values("row_id").reset_index(drop=True)
        assert len(feast_df) == len(frame) == n, name
        assert list(frame.columns) == list(ours["spark"].columns), name  # same columns, same order
        for table in TABLES:
            for a, b in zip(feast_df[table], frame[table]):
                assert (a is None) == (b is None), name
                if a is not None:
                    np.testing.assert_array_equal(np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32))


def test_training_set_refuses_bad_rows_unknown_versions_and_mixed_services(spark, tmp_path):
    """Refused before any Delta read, so no lake is needed: a registered Feast repo is enough."""
    from feast import FeatureService

    from serving.offline import training_set
    from serving.register import register
    from feature_repo.store import open_store

    offline_cfg = feast_config(Lake(tmp_path / "no_lake", {}), tmp_path)
    register(offline_cfg, [V1, V2], current=V1.id)

    ok = pd.DataFrame({"user_id": [1], "video_id": [2], "event_timestamp": [day_end_utc(DAYS[1])]})
    with pytest.raises(BadEntityRows, match="event_timestamp"):
        training_set(spark, offline_cfg, ok.drop(columns=["event_timestamp"]), version=V1.id)
    with pytest.raises(BadEntityRows, match="must be a timestamp"):
        training_set(spark, offline_cfg, ok.assign(event_timestamp="2022-05-06"), version=V1.id)
    with pytest.raises(BadEntityRows, match="already hold"):
        training_set(spark, offline_cfg, ok.assign(ur=1.0), version=V1.id)
    with pytest.raises(UnknownModelVersion):
        training_set(spark, offline_cfg, ok, version="e" * 20)
    with pytest.raises(UnknownModelVersion, match="not registered"):
        training_set(spark, offline_cfg, ok, feature_service="nope")
    store = open_store(offline_cfg)
    store.apply([FeatureService(name="mixed", features=[store.get_feature_view(view_name("ur", V1.id)),
                                                        store.get_feature_view(view_name("ir", V2.id))])])
    with pytest.raises(MixedModelVersions):
        training_set(spark, offline_cfg, ok, feature_service="mixed")


@pytest.mark.slow
def test_cli_training_set_writes_every_row(spark, lake, offline_cfg, tmp_path, capsys):
    rows = pd.DataFrame({"user_id": [1, 1, 2, 99], "video_id": [3, 3, 4, 5], "label": [1, 1, 0, 1],
                         "event_timestamp": [day_end_utc(DAYS[2]) + dt.timedelta(hours=h) for h in (1, 1, 2, 3)]})
    ents = tmp_path / "entities.parquet"
    spark.createDataFrame(rows).write.parquet(str(ents))
    conf = write_yaml(offline_cfg, tmp_path / "lfm.yaml")
    out = tmp_path / f"ts_{uuid.uuid4().hex[:6]}"
    assert main(["--config", str(conf), "training-set", "--entities", str(ents), "--out", str(out),
                 "--model", V1.id]) == 0
    said = capsys.readouterr().out
    assert "4 rows (4 entity rows in)" in said and "(local join, export" in said and "0 rows fell back" in said
    got = spark.read.parquet(str(out)).orderBy("user_id", "event_timestamp").toPandas()
    np.testing.assert_array_equal(np.asarray(got["ur"][0], dtype=np.float32), expected(lake, V1, "ur", DAYS[2])[1])
    assert got["ur"][3] is None and got["ir"][3] is not None  # unknown user: null, its known item still joined
    from serving.offline import training_set  # the CLI took the local engine; the Spark engine agrees

    spark_set = training_set(spark, offline_cfg, str(ents), version=V1.id)
    written = spark.read.parquet(str(out))
    assert written.exceptAll(spark_set).count() == 0 and spark_set.exceptAll(written).count() == 0
