"""Serving on the real KuaiRand log: exports of 2022-05-05 and 2022-05-08, a point-in-time
training set for tab 0 of 2022-05-06 and the online store, each checked against the Delta rows.

A tiny LFM (one epoch) keeps it affordable; what is under test is the platform's plumbing, not the model. The
05-08 export is a second cold-started chain so that a *later* snapshot than the right one exists: a join that
took the newest snapshot instead of the one before each row's time would be caught.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from lfm.contract import day_end_ms
from tests.support.config import KUAIRAND, make_config

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not KUAIRAND.is_dir(), reason=f"KuaiRand-Pure not found at {KUAIRAND}")]

SNAPSHOT, TRAIN_DAY, LATEST = dt.date(2022, 5, 5), dt.date(2022, 5, 6), dt.date(2022, 5, 8)
TINY_MODEL = {"embedding_dim": 4, "user_tower": [16], "item_tower": [16], "cross_layers": 1, "dnn": [16, 8]}
USER_TABLES, ITEM_TABLES = ("ur", "cr_user"), ("ir", "cr_item")


def _delta_vectors(spark, cfg, table: str, key: str, version: str, day: dt.date) -> dict[int, np.ndarray]:
    rows = (spark.read.format("delta").load(cfg.table_path(table))
            .where(f"model_version = '{version}' AND ds = DATE'{day}'").select(key, table).collect())
    return {r[0]: np.asarray(r[1], dtype=np.float32) for r in rows}


@pytest.fixture(scope="module")
def kuairand(spark, tmp_path_factory, compiled):
    """Ingest, pretrain + register a tiny LFM, refresh, gate and release 05-05 and 05-08, materialize 05-08."""
    from lakehouse import releases
    from models.training.pretrain import pretrain
    from models.registry import Registry
    from serving.materialize import materialize
    from serving.register import register
    from spark_jobs.ingest import ingest
    from spark_jobs.samples import samples_arrow
    from tests.support.worlds import refresh

    # An 8-d final layer spans fewer directions than a production width: the collapse floor follows the width.
    cfg = make_config(tmp_path_factory.mktemp("kuairand"), model=TINY_MODEL,
                      train={"max_epochs": 1, "batch_size": 4096, "threads": 2},
                      quality={"vectors": {"min_effective_rank": 2.0, "min_information_abundance": 1.2}})
    # only the days read: the LFM is not under test, so it trains on the snapshot day and stops on the next
    ingest(spark, cfg, KUAIRAND, [SNAPSHOT, TRAIN_DAY, LATEST])
    result = pretrain(samples_arrow(spark, cfg, [SNAPSHOT]), samples_arrow(spark, cfg, [TRAIN_DAY]), cfg, progress=None)
    version = Registry(cfg).register(result.model, result.encoders, {"test": "kuairand serving"}).model_version
    for day in (SNAPSHOT, LATEST):  # write, the real gate, publish: readers need the release
        spec = refresh(spark, cfg, day, version, cold_start=True, gate=True).spec
        assert releases.release_of(cfg, day, spec.id) is not None, day
    register(cfg, [spec], current=spec.id)
    loaded = materialize(spark, cfg, LATEST, spec.id, build_index=False)
    assert all(x.loaded for x in loaded.loads), loaded.summary()
    return cfg, version


@pytest.mark.parametrize("engine", ["spark", "local"])
def test_training_set_of_tab0_on_0506_carries_the_0505_snapshot(spark, kuairand, engine):
    """Both join engines: the Spark one (`training_set`) and the driver-side one `training_table` takes here."""
    from pyspark.sql import functions as F

    from serving.offline import training_set, training_table
    from spark_jobs.samples import samples

    cfg, version = kuairand
    s = cfg.schema
    rows = (samples(spark, cfg, [TRAIN_DAY]).where(F.col(s.scenario) == 0)
            .select(s.user_key, s.item_key, "event_timestamp", s.scenario, *s.tasks))
    n = rows.count()
    assert n > 1000  # KuaiRand tab 0 has ~1.4k samples that day
    got = (training_set(spark, cfg, rows, version=version).toPandas() if engine == "spark" else
           training_table(spark, cfg, rows, version=version).to_pandas())
    assert len(got) == n  # every entity row comes back
    expected = {t: _delta_vectors(spark, cfg, t, s.user_key if t in USER_TABLES else s.item_key, version, SNAPSHOT)
                for t in (*USER_TABLES, *ITEM_TABLES)}
    # The 05-05 snapshot is stamped at its day end (05-06 00:00 local). KuaiRand logs a few rows of day 05-06 up
    # to ~2 h before that instant: they precede every snapshot here, so they must get nulls, not 05-05's vectors.
    visible_ms = day_end_ms(SNAPSHOT, s.timezone)
    checked = early = 0
    for _, r in got.iterrows():
        after = r["event_timestamp"].value // 1_000_000 >= visible_ms
        early += not after
        for table in (*USER_TABLES, *ITEM_TABLES):
            key = r[s.user_key] if table in USER_TABLES else r[s.item_key]
            if after and key in expected[table]:
                np.testing.assert_array_equal(np.asarray(r[table], dtype=np.float32), expected[table][key])
                checked += 1
            else:  # before the snapshot, or no 05-05 vector for this key: null, never 05-08's
                assert r[table] is None or (isinstance(r[table], float) and np.isnan(r[table])), (table, key)
    assert checked >= 3 * (n - early) and early < n // 10  # UR and IR exist for every key; most CR keys too
    # the trap is armed: the later (05-08) snapshot holds other CR vectors for the same users
    later = _delta_vectors(spark, cfg, "cr_user", s.user_key, version, LATEST)
    both = [u for u in later if u in expected["cr_user"]]
    assert both and sum(not np.array_equal(later[u], expected["cr_user"][u]) for u in both) > len(both) // 2


def test_online_store_returns_the_0508_delta_rows(spark, kuairand):
    from serving.online import get_online_features

    cfg, version = kuairand
    s = cfg.schema
    delta = {t: _delta_vectors(spark, cfg, t, s.user_key if t in USER_TABLES else s.item_key, version, LATEST)
             for t in (*USER_TABLES, *ITEM_TABLES)}
    users = sorted(delta["cr_user"])[:200]
    items = sorted(delta["cr_item"])[:200]
    got = get_online_features(cfg, {s.user_key: users, s.item_key: items}, version=version)
    for table in (*USER_TABLES, *ITEM_TABLES):
        ids = got[s.user_key] if table in USER_TABLES else got[s.item_key]
        for key, vec in zip(ids, got[table]):
            np.testing.assert_array_equal(np.asarray(vec, dtype=np.float32), delta[table][key])
