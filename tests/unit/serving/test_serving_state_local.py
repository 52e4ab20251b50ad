"""Beside a local lakehouse the ANN indexes and the online receipts stay files of the Feast repo, where the kill
tests and every local reader look for them (`<repo>/data/ann/<export>/<ds>/`, `<repo>/data/online/<export>/`)."""
from __future__ import annotations

import datetime as dt

import numpy as np

from lakehouse.releases import RELEASED, Release
from serving import receipts
from serving.retrieval import ItemIndex, drop_index, index_dir, save_index
from tests.support.synthetic_vectors import spec, vectors

SPEC = spec("a1b2c3d4e5f6", ur_dim=8, ir_dim=8, cr_dim=4)
DAY = dt.date(2022, 5, 6)


def test_index_and_receipt_keep_their_local_folders(cfg):
    repo = cfg.resolve(cfg.feast.repo_path) / "data"
    save_index(cfg, SPEC.id, DAY, ItemIndex.build(np.arange(30), vectors(1, 30, 8), cfg.feast.retrieval))
    assert index_dir(cfg, SPEC.id, DAY) == repo / "ann" / SPEC.id / DAY.isoformat()
    assert len(ItemIndex.load(index_dir(cfg, SPEC.id, DAY))) == 30
    drop_index(cfg, SPEC.id, DAY)
    assert not index_dir(cfg, SPEC.id, DAY).exists()

    release = Release(DAY, SPEC, RELEASED, "run-1", "gate-1", {"ir": 3}, dt.datetime.now(dt.timezone.utc))
    receipts.write(cfg, release)
    assert [p.name for p in (repo / "online" / SPEC.id).iterdir()] == [f"{DAY}.json"]  # no staging file left
    assert receipts.read(cfg, SPEC.id, DAY).names(release) and receipts.days(cfg, SPEC.id) == [DAY]
    receipts.remove(cfg, SPEC.id, DAY)
    assert receipts.read(cfg, SPEC.id, DAY) is None and receipts.days(cfg, SPEC.id) == []
