"""A log of another shape (tests/support/shop.py) through the whole platform, adapted by lfm.yaml alone.

The shapes at once: a tab-separated rating log (a 1-5 rating, no click column: the task is derived, `rating >= 4`;
no scenario column: it is derived from a page path), string keys that are not digits, members first seen after the
first day (no CR state before it: a mask, not an error), a day nobody acted on between days with events (an empty
day: released and served, its CR the day before's decayed, the next day chained from it; a day after the log's end
is refused), item statistics keyed by another column name.

`lfm ingest --dry-run` reports the mapping and writes nothing; `lfm ingest` loads three days (the second without
events); `lfm pretrain` runs on two; `lfm run-daily` refreshes, gates, publishes and materializes three days, the
second (the empty day) ingested from a folder whose users file changed (a new snapshot, valid from that day); the
online store serves the empty day's Delta vectors under string ids — text with a quote, a slash, a space and a non-ASCII letter (`o'brien/ü 10000`), carried as it is
through the HTTP server, `lfm lookup`, the ANN index of `lfm retrieve` and the point-in-time training sets a
downstream ranker trains on. Real
Spark, Delta, GE, Feast (sqlite online store) and torch; no code path knows this shape. Kept small (120 members,
four days, three of 1,000 events: the second has none, the third spans the DST switch); `lfm select-layer` is
left out to keep it short (it reads the same `samples`; its small-data setting is `refresh.probe_min_test_rows`).
"""
from __future__ import annotations

import datetime as dt
import json
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import requests
import yaml

from lfm.config import load_config
from tests.support.cli import cli
from tests.support.http import http_server
from tests.support.releases import newest_release, partition
from tests.support.shop import TZ, ShopSpec, days, member_ids, shop_config, write_shop

pytestmark = pytest.mark.slow

SPEC = ShopSpec(users=120, items=60, days=4, events_per_day=1000, seed=0, odd_ids=True, late_members=12,
                ratings=True, empty_days=(1,), idle_after_empty=10)
SMALL_MODEL = {"embedding_dim": 4, "user_tower": [16], "item_tower": [16], "cross_layers": 1, "dnn": [16, 8]}
SMALL_TRAIN = {"max_epochs": 2, "batch_size": 512, "threads": 1}
# An 8-d CR layer of a tiny model spans few directions (the collapse bounds are tuned for 64-d exports).
QUALITY = {"vectors": {"min_effective_rank": 1.0, "min_information_abundance": 1.0}}
D = days(SPEC.days)


def test_shop_log_from_raw_files_to_served_embeddings_and_a_downstream_auc(spark, tmp_path):
    from feature_repo.entities import entities
    from lakehouse.features import features_as_of
    from models.downstream import NoReleaseBefore
    from models.registry import Registry
    from models.training.variants import TransferRequest, TransferVariant
    from pipeline.downstream import train_on_sets, training_sets
    from pipeline.spec import resolve_export
    from serving.online import get_online_features
    from spark_jobs.refresh.compute import users_in_scope
    from spark_jobs.refresh.plan import plan_refresh

    raw, raw_v2 = tmp_path / "raw", tmp_path / "raw_v2"
    write_shop(raw, SPEC)
    write_shop(raw_v2, SPEC, users_version=2)  # the same log; a third of the members moved to another country
    conf = tmp_path / "lfm.yaml"
    conf.write_text(yaml.safe_dump(shop_config(tmp_path, raw, ratings=True, model=SMALL_MODEL, train=SMALL_TRAIN,
                                               quality=QUALITY)))
    cfg = load_config(conf)
    lake = tmp_path / "lakehouse"

    dry = cli("--config", str(conf), "ingest", "--dry-run")
    assert dry.code == 0, dry.err
    assert "every check passed; nothing was written" in dry.out
    for line in ("member_id                member                   string     user key",
                 "surface                  = split(page_path, '/')[1] string     scenario",
                 "click                    = rating >= 4            boolean    task (0/1)",
                 "ts                       event_ts                 bigint     event time (s)",
                 "item_id                  product                  string     item key"):
        assert line in dry.out
    assert "rows read: events 3,000, users 120, items 60, item_statistics 60" in dry.out
    assert f"days found: 3 ({D[0]}..{D[-1]})" in dry.out
    assert (f"would write: events 3,000 rows in 4 ds partitions ({D[0]}..{D[-1]}), of which 1 with no events "
            f"(empty days): {D[1]}") in dry.out  # nobody acted on D[1]: inside the log, an empty day
    assert not lake.exists()

    ingested = cli("--config", str(conf), "ingest", "--ds", *map(str, D[:3]))
    assert ingested.code == 0, ingested.err
    assert f"events 2,000 rows in 3 ds partitions ({D[0]}..{D[2]}), of which 1 with no events (empty days): {D[1]}" \
        in ingested.out
    events = spark.read.format("delta").load(cfg.table_path("events"))
    assert dict(events.dtypes)["click"] == "int" and dict(events.dtypes)["member_id"] == "string"
    # The derived task and scenario against the raw rating log, read beside the platform with pandas.
    raw_day = pd.read_csv(raw / "events" / f"ratings_{D[0]:%Y%m%d}.tsv", sep="\t")
    want = sorted(zip(raw_day["page_path"].str.split("/").str[1], (raw_day["rating"] >= 4).astype(int)))
    got = sorted((r[0], r[1]) for r in events.where(f"ds = DATE'{D[0]}'").select("surface", "click").collect())
    assert got == want and {s for s, _ in got} == {"home", "search", "cart"}

    trained = cli("--config", str(conf), "pretrain", "--train", str(D[0]), "--valid", str(D[2]))
    assert trained.code == 0, trained.err
    version = Registry(cfg).latest().model_version

    first = cli("--config", str(conf), "run-daily", "--ds", str(D[0]), "--cold-start")
    assert first.code == 0, first.err + first.out
    second = cli("--config", str(conf), "run-daily", "--ds", str(D[1]), "--source", str(raw_v2))  # the empty day
    assert second.code == 0, second.err + second.out
    more = cli("--config", str(conf), "ingest", "--source", str(raw_v2), "--ds", str(D[3]))
    assert more.code == 0, more.err
    events = spark.read.format("delta").load(cfg.table_path("events"))
    per_day = {r["ds"]: r["count"] for r in events.groupBy("ds").count().collect()}
    assert per_day == {d: SPEC.events_per_day for d in (D[0], D[2], D[3])}  # New York days, the 23-hour DST day too

    # Feature history: the snapshot ingested with D[1] holds from D[1] on; D[0] (a backfill) still reads the first.
    def countries(ds) -> dict[str, str]:
        rows = features_as_of(spark, cfg, "users", ds).select("member_id", "country").collect()
        return {r[0]: r[1] for r in rows}

    before, after = countries(D[0]), countries(D[1])
    assert "BR" not in before.values() and sum(v == "BR" for v in after.values()) == SPEC.users // 3
    assert countries(D[2]) == after  # the same users file again: no new snapshot
    export = resolve_export(cfg, version)
    plan = plan_refresh(spark, cfg, export.spec, export.day_model(cfg, D[0]), D[0], cold_start=True)
    scoped = {r[0]: r[1] for r in users_in_scope(spark, cfg, plan).select("member_id", "country").collect()}
    assert scoped == before

    # Served: Feast's entities follow the keys, and the online store holds the empty day's Delta vectors by string
    # ids (its UR and IR: those of every member and item in force, as on any day).
    ents = entities(cfg)
    assert {e.name: e.join_key for e in ents.values()} == {"member": "member_id", "item": "item_id"}
    ur = (spark.read.format("delta").load(cfg.table_path("ur"))
          .where(f"ds = DATE'{D[1]}'").select("member_id", "ur").first())
    ir = (spark.read.format("delta").load(cfg.table_path("ir"))
          .where(f"ds = DATE'{D[1]}'").select("item_id", "ir").first())
    online = get_online_features(cfg, [{"member_id": ur[0], "item_id": ir[0]}], version=version)
    ur_name = next(k for k in online if k.startswith("ur"))
    ir_name = next(k for k in online if k.startswith("ir"))
    np.testing.assert_allclose(online[ur_name][0], ur[1], rtol=0, atol=1e-6)
    np.testing.assert_allclose(online[ir_name][0], ir[1], rtol=0, atol=1e-6)
    _odd_ids_everywhere(cfg, conf, export.spec.id, ur, ir, D[1])
    empty_cr = _empty_day_between_released_days(cfg, conf, raw_v2, export.spec.id)

    # Downstream: the home page's click model on the point-in-time training sets (rows of D[2], which read the
    # release of the empty day D[1], tested on D[3]). The late members, first seen on D[2], have no CR state before
    # it: their rows are new, not broken.
    sets = training_sets(spark, cfg, "home", [D[2]], [D[3]], model_version=version)
    assert sets.train.num_rows > 400 and sets.test.num_rows > 400
    late = set(member_ids(SPEC, np.arange(SPEC.users - SPEC.late_members, SPEC.users)).tolist())
    rows = sets.train.select(["member_id", "ur", "cr_user"]).to_pylist()
    new = [r for r in rows if r["member_id"] in late]
    assert new and all(r["cr_user"] is None and r["ur"] is not None for r in new)
    assert all(r["cr_user"] is not None for r in rows if r["member_id"] not in late)
    assert all(np.allclose(r["cr_user"], empty_cr[r["member_id"]], rtol=0, atol=1e-6)
               for r in rows if r["member_id"] not in late)  # the empty day's CR(u), as released
    result = train_on_sets(cfg, sets, "click", TransferRequest(TransferVariant.ur_ir_cr_gate), seed=0)
    assert result.vector_coverage["ur"] > 0.9 and result.vector_coverage["ir"] > 0.9
    # No released day before D[0] (its run-daily started the chain): the real cause is named, before any Spark job.
    with pytest.raises(NoReleaseBefore, match=f"released before {D[0]}.*run-daily --ds {D[0] - dt.timedelta(1)}"):
        training_sets(spark, cfg, "home", [D[0]], [D[2]], model_version=version)
    assert 0.55 < result.test_auc <= 1.0  # the planted user-item affinity is learnt
    assert all(c in sets.train.column("member_id")[0].as_py() for c in "'/ ü")  # joined by the odd ids themselves


def _odd_ids_everywhere(cfg, conf, export_id: str, ur, ir, day: dt.date) -> None:
    """A member and a product whose ids hold `'`, `/`, a space and a non-ASCII letter: the HTTP server (the member
    alone, by its refs), `lfm lookup` and the day's ANN index all find them by that text."""
    from feature_repo.specs import view_name
    from serving.retrieval import load_index
    from serving.server import build_app

    member, product = ur[0], ir[0]
    assert all(c in member for c in "'/ ü") and all(c in product for c in "'/ é"), (member, product)
    with http_server(build_app(cfg)) as url:
        body = {"features": [f"{view_name(t, export_id)}:{t}" for t in ("ur", "cr_user")],
                "entities": {"member_id": [member]}}
        resp = requests.post(f"{url}/get-online-features", json=body, timeout=30)
        assert resp.status_code == 200, resp.text
        got = {n: r["values"] for n, r in zip(resp.json()["metadata"]["feature_names"], resp.json()["results"])}
        assert got["member_id"] == [member]
        np.testing.assert_allclose(got["ur"][0], ur[1], rtol=0, atol=1e-6)
    looked = cli("--config", str(conf), "lookup", "--user", member, "--item", product)
    assert looked.code == 0, looked.err + looked.out
    assert f"user {member!r}: export {export_id}" in looked.out and f"release of {day}" in looked.out
    assert f"item {product!r}: export {export_id}" in looked.out
    hits = cli("--config", str(conf), "retrieve", "--user", member, "--k", "5")
    assert hits.code == 0, hits.err
    index = load_index(cfg, export_id, day)
    exact, _ = index.exact(np.asarray([ur[1]], dtype=np.float32), 5)
    assert [h["item"] for h in json.loads(hits.out)] == exact[0].tolist() and product in index.item_ids.tolist()


def _empty_day_between_released_days(cfg, conf, raw, export_id: str) -> dict[str, np.ndarray]:
    """D[1] had no events (inside the log: an empty day) and was released by `run-daily`: coverage not applicable,
    its CR state D[0]'s decayed over 24 hours, served online; D[2] chains from it (its idle members' state decays
    over the 23 hours of the DST day); a day after the log's end is refused and nothing of it is released. The
    evidence goes around the platform: the released versions read with delta-rs, the zone's own clock, the raw
    rating file. Returns the empty day's released CR(u) by member."""
    from feature_repo.specs import view_name
    from serving.online import get_online_features

    def read(table: str, day: dt.date, column: str) -> dict[str, np.ndarray]:
        release = newest_release(cfg, day, export_id)
        assert release is not None and release["status"] == "released", (day, release)
        rows = partition(cfg, table, day, export_id, release["table_versions"][table])
        return {k: np.asarray(v, dtype=np.float64) for k, v in zip(rows["member_id"], rows[column])}

    def end(day: dt.date) -> float:  # T_D: the next local midnight in the shop's zone
        nxt = day + dt.timedelta(days=1)
        return dt.datetime(nxt.year, nxt.month, nxt.day, tzinfo=ZoneInfo(TZ)).timestamp()

    def carry(day: dt.date) -> float:
        return float(np.exp(-(end(day) - end(day - dt.timedelta(days=1))) / 3600 / cfg.refresh.tau_hours))

    shown = cli("--config", str(conf), "status", "--ds", str(D[1]))
    assert f"{D[1]}  export {export_id}: no events (an empty day" in shown.out and "RELEASED" in shown.out, shown.out
    assert shown.out.count("passed (coverage not applicable: no events on the day)") == 4, shown.out
    before, quiet = read("cr_user_state", D[0], "state"), read("cr_user_state", D[1], "state")
    assert set(quiet) == set(before)  # the same members, every state carried by the decay alone
    for key, state in quiet.items():
        np.testing.assert_allclose(state, before[key] * carry(D[1]), rtol=1e-9)
    # CR(u) is that state layer-normalised ((x - mean) / sqrt(var + 1e-5)), and the online store serves it.
    assert cfg.refresh.normalisation.value == "layernorm"
    served = read("cr_user", D[1], "cr_user")
    assert set(served) == set(quiet)
    for key, state in quiet.items():
        np.testing.assert_allclose(served[key], (state - state.mean()) / np.sqrt(state.var() + 1e-5), atol=1e-5)
    member = sorted(served)[0]
    online = get_online_features(cfg, [{"member_id": member}], [f"{view_name('cr_user', export_id)}:cr_user"])
    np.testing.assert_allclose(online["cr_user"][0], served[member], rtol=0, atol=1e-6)

    after = cli("--config", str(conf), "run-daily", "--ds", str(D[2]))  # ingested with the first days
    assert after.code == 0, after.err + after.out
    # D[2] chained from D[1]: the members idle since the empty day hold its state decayed over 23 hours.
    assert end(D[2]) - end(D[1]) == 23 * 3600
    later = read("cr_user_state", D[2], "state")
    acted = set(pd.read_csv(raw / "events" / f"ratings_{D[2]:%Y%m%d}.tsv", sep="\t")["member"])
    idle = set(member_ids(SPEC, np.arange(SPEC.idle_after_empty)).tolist())
    assert set(later) == set(quiet) | acted and set(quiet) - acted == idle
    for key in idle:
        np.testing.assert_allclose(later[key], quiet[key] * carry(D[2]), rtol=1e-9)

    beyond = D[3] + dt.timedelta(days=1)  # after the log's last event: not landed yet
    refused = cli("--config", str(conf), "run-daily", "--ds", str(beyond), "--source", str(raw))
    assert refused.code != 0 and f"no events for ds {beyond} in the source: its log ends at {D[3]}" in refused.err
    assert "--allow-empty" in refused.err and "nothing was written" in refused.err
    assert newest_release(cfg, beyond, export_id) is None
    return served
