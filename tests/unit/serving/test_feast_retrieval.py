"""Standalone retrieval without Spark: FAISS indexes against exact search, persistence, the pluggable encoder."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from serving.errors import NoIndex, ServingError
from serving.retrieval import ItemIndex, Retriever, index_dir, load_index, measure, pick_index, recall_at_k
from tests.support.synthetic_vectors import vectors
from lfm.config.serving import IndexKind, RetrievalSettings

ITEMS = vectors(1, 3000, 32, centres=16)
USERS = vectors(2, 200, 32, centres=16, centre_seed=1, spread=0.5)  # users near the item clusters
IDS = np.arange(100_000, 103_000)


@pytest.mark.parametrize("kind,floor", [(IndexKind.flat, 1.0), (IndexKind.hnsw, 0.9), (IndexKind.ivf, 0.9)])
def test_ann_recall_against_exact_search(kind, floor):
    index = ItemIndex.build(IDS, ITEMS, RetrievalSettings(index=kind))
    ids, scores = index.search(USERS[:5], 50)
    assert ids.shape == (5, 50) and set(ids.ravel().tolist()) <= set(IDS.tolist())
    assert (np.diff(scores, axis=1) <= 1e-5).all()  # best first
    exact = np.argsort(-(ITEMS @ USERS[0]), kind="stable")[:50]
    e_ids, _ = index.exact(USERS[:1], 50)
    assert set(e_ids[0].tolist()) == set(IDS[exact].tolist())
    m = measure(index, USERS, 50)
    assert m["recall"] >= floor and m["qps"] > 0, m
    assert recall_at_k(index, USERS, 50) == m["recall"]


def test_index_round_trips_on_disk_and_only_a_current_release_is_picked(cfg):
    export = "ab" * 8
    for ds, version in (("2022-05-06", 3), ("2022-05-08", 7)):
        meta = {"ds": ds, "ir_version": version, "release_run_id": f"run-{ds}"}
        ItemIndex.build(IDS, ITEMS, RetrievalSettings(), meta=meta).save(index_dir(cfg, export, ds))
    root = index_dir(cfg, export, "2022-05-06").parent
    current = {"2022-05-06": (3, "run-2022-05-06"), "2022-05-08": (7, "run-2022-05-08")}
    assert pick_index(root, current).name == "2022-05-08"
    back = ItemIndex.load(pick_index(root, current, "2022-05-07"))
    assert back.meta["ds"] == "2022-05-06" and len(back) == len(IDS)
    np.testing.assert_array_equal(back.search(USERS[:3], 10)[0],
                                  ItemIndex.build(IDS, ITEMS, RetrievalSettings()).search(USERS[:3], 10)[0])
    assert pick_index(root, current, "2022-05-01") is None
    # 05-08 withdrawn, or re-released at another IR version: its index is never used, 05-06's is
    assert pick_index(root, {"2022-05-06": current["2022-05-06"]}).name == "2022-05-06"
    assert pick_index(root, {**current, "2022-05-08": (9, "run-again")}).name == "2022-05-06"
    with pytest.raises(NoIndex, match="lfm materialize"):
        load_index(cfg, export)  # no release at all in this lakehouse
    # a rewrite replaces the folder whole (staging + rename): no half-written index is ever visible
    ItemIndex.build(IDS[:5], ITEMS[:5], RetrievalSettings(), meta={"ds": "2022-05-08"}).save(root / "2022-05-08")
    assert len(ItemIndex.load(root / "2022-05-08")) == 5 and not [p for p in root.iterdir() if p.name.startswith(".")]


@dataclass
class Projection:
    """A stand-in for the downstream two-tower's learned user projection (a real linear map)."""

    weight: np.ndarray
    source: str = "cr_user"

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        return (vectors @ self.weight).astype(np.float32)


def test_retriever_takes_a_projection_and_refuses_bad_queries():
    index = ItemIndex.build(IDS, ITEMS, RetrievalSettings(index=IndexKind.flat))
    ident = Retriever(index)
    top = ident.retrieve(USERS[0], 5)
    assert [i for i, _ in top] == IDS[np.argsort(-(ITEMS @ USERS[0]), kind="stable")[:5]].tolist()
    w = np.random.default_rng(3).normal(size=(20, 32)).astype(np.float32)  # CR(u) of width 20 -> item space
    cr_u = np.random.default_rng(4).normal(size=20).astype(np.float32)
    projected = Retriever(index, Projection(w)).retrieve(cr_u, 5)
    assert [i for i, _ in projected] == IDS[np.argsort(-(ITEMS @ (cr_u @ w)), kind="stable")[:5]].tolist()
    with pytest.raises(ServingError, match="learned projection"):
        ident.retrieve(cr_u, 5)  # a 20-d vector against a 32-d item space
    with pytest.raises(ServingError, match="NaN"):
        ident.retrieve(np.full(32, np.nan, dtype=np.float32), 5)
    with pytest.raises(ServingError, match="no user vector"):
        ident.retrieve(None, 5)
    assert len(ident.retrieve(USERS[0], 10_000)) == len(IDS)  # k above the item count: every item once
