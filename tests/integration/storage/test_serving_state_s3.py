"""Serving and quality state on a real S3-API server (SeaweedFS, tests/support/s3_local.py; not a mock), chosen by
`lakehouse: s3://...` alone: the ANN index, the online receipts and the gate's Data Docs and reports are written by
one machine and read by another that shares nothing with it but the store (a fresh config, another Feast repo and
another cache folder)."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from great_expectations.core.run_identifier import RunIdentifier

from lakehouse import releases
from lfm.config.serving import IndexKind, RetrievalSettings
from serving import receipts
from serving.errors import NoIndex
from serving.retrieval import INDEX, ITEM_IDS, MARKER, ItemIndex, drop_index, index_home, load_index, save_index
from tests.support.config import make_config
from tests.support.synthetic_vectors import spec, vectors

SPEC = spec("a1b2c3d4e5f6", ur_dim=16, ir_dim=16, cr_dim=8)
D1, D2 = dt.date(2022, 5, 6), dt.date(2022, 5, 7)
ITEMS = vectors(1, 500, 16, centres=8)
USERS = vectors(2, 20, 16, centres=8, centre_seed=1, spread=0.5)
IDS = np.arange(7_000, 7_500)
HNSW = {"feast": {"retrieval": {"index": "hnsw"}}}  # the index whose search settings a load must restore


@pytest.fixture
def machines(s3_server, tmp_path, monkeypatch):
    """Two configs of one lakehouse on the store, as two machines of a cluster would load them: each its own Feast
    repo (local folders); credentials only in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    storage = {"endpoint": s3_server.endpoint_url, "allow_http": True}
    lakehouse = s3_server.uri(f"lfm-{tmp_path.name}")
    return tuple(make_config(tmp_path / name, lakehouse=lakehouse, storage=storage, **HNSW) for name in "ab")


def key_of(cfg, *parts: str) -> str:
    """The bucket key of a path under the lakehouse, for reading behind the platform's back."""
    return "/".join([cfg.lakehouse.split("/", 3)[3], *parts])


def release(cfg, ds: dt.date, run: str, ir_version: int) -> releases.Release:
    return releases.publish(cfg, ds, SPEC, run, f"gate-{run}", {"ur": 1, "ir": ir_version, "cr_user": 1,
                                                               "cr_item": 1})


def indexed(cfg, r: releases.Release, n: int = len(IDS)) -> ItemIndex:
    """The index materialize builds for release `r` (its meta names the release), saved where it belongs."""
    meta = {"ds": r.ds.isoformat(), "ir_version": r.table_versions["ir"], "release_run_id": r.run_id}
    index = ItemIndex.build(IDS[:n], ITEMS[:n], cfg.feast.retrieval, meta=meta)
    save_index(cfg, SPEC.id, r.ds, index)
    return index


def test_an_index_saved_by_one_machine_is_found_and_searched_by_another(machines, s3_server):
    a, b = machines
    index = indexed(a, release(a, D1, "run-1", 3))
    assert s3_server.get_object(key_of(a, "_serving", "ann", SPEC.id, D1.isoformat(), MARKER))[0] == 200
    assert not (a.resolve(a.feast.repo_path) / "data" / "ann").exists()  # nothing on the driver's disk
    back = load_index(b, SPEC.id)
    assert back.kind == IndexKind.hnsw.value and back.meta["release_run_id"] == "run-1"
    assert back.index.hnsw.efSearch == b.feast.retrieval.hnsw_ef_search
    for got, want in zip(back.search(USERS, 10), index.search(USERS, 10)):
        np.testing.assert_array_equal(got, want)  # the same top-K items with the same scores

    # D1 rewritten and released again at another IR version: its new index replaces the old one
    releases.withdraw(a, D1, SPEC, "run-2", "rewritten")
    indexed(a, release(a, D1, "run-2", 4), n=50)
    again = load_index(b, SPEC.id)
    assert again.meta["release_run_id"] == "run-2" and len(again) == 50
    drop_index(a, SPEC.id, D1)  # a withdrawal drops it: no index of a released day is left
    with pytest.raises(NoIndex, match="lfm materialize"):
        load_index(b, SPEC.id)


def test_a_half_written_index_is_not_an_index(machines):
    a, b = machines
    indexed(a, release(a, D1, "run-1", 3))
    r2 = release(a, D2, "run-2", 5)
    files = ItemIndex.build(IDS, ITEMS, RetrievalSettings(index=IndexKind.flat),
                            meta={"ir_version": 5, "release_run_id": "run-2"}).files()
    day = index_home(a, SPEC.id).child(r2.ds.isoformat())
    for name in (INDEX, ITEM_IDS):  # a writer killed before its marker
        day.put(name, files[name])
    assert load_index(b, SPEC.id).meta["ds"] == D1.isoformat()  # the newest complete index of a released day
    with pytest.raises(NoIndex, match=MARKER):
        ItemIndex.load(index_home(b, SPEC.id).child(D2.isoformat()))
    with pytest.raises(NoIndex, match="up to 2022-05-05"):
        load_index(b, SPEC.id, "2022-05-05")


def test_receipts_round_trip_on_the_store(machines, s3_server):
    a, b = machines
    first, second = release(a, D1, "run-1", 3), release(a, D2, "run-2", 5)
    assert receipts.read(b, SPEC.id, D1) is None and receipts.days(b, SPEC.id) == []
    receipts.write(a, first)
    receipts.write(a, second)
    assert s3_server.get_object(key_of(a, "_serving", "online", SPEC.id, f"{D1}.json"))[0] == 200
    assert not (a.resolve(a.feast.repo_path) / "data" / "online").exists()
    held = receipts.read(b, SPEC.id, D1)
    assert held.names(first) and not held.names(second) and receipts.days(b, SPEC.id) == [D1, D2]
    again = release(b, D1, "run-3", 4)
    receipts.write(b, again)  # the last writer wins
    assert receipts.read(a, SPEC.id, D1).names(again)
    receipts.remove(b, SPEC.id, D1)
    assert receipts.read(a, SPEC.id, D1) is None and receipts.days(a, SPEC.id) == [D2]
    receipts.remove(b, SPEC.id, D1)  # a withdrawal repeated after a crash


def gate_run(cfg, run: str) -> None:
    """What a gate run leaves in the quality root: a GE result of a real suite, its Data Docs page, a PNG."""
    import great_expectations as gx
    from great_expectations.core.expectation_suite import ExpectationSuite

    from validation import context, report
    from validation.metrics import DayMetrics

    suite = ExpectationSuite(name="tiny", expectations=[
        gx.expectations.ExpectColumnValuesToBeBetween(column="x", min_value=0, max_value=10)])
    ctx = context.get_context(cfg)
    key, result = context.validate(ctx, suite, pd.DataFrame({"x": [1.0, 2.0]}), RunIdentifier(run_name=run))
    assert result.success
    context.build_docs(ctx, [key])
    report.write_report(context.quality_root(cfg) / "reports" / D1.isoformat() / f"{run}.png", run,
                        {"ur": (True, DayMetrics(rows=2, valid_rows=2))}, centered=True)


def test_data_docs_and_reports_reach_the_store(machines, tmp_path, monkeypatch):
    from lakehouse.artifacts import Artifacts
    from lfm.storage import location
    from validation import context

    a, b = machines
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-a"))
    root = context.quality_root(a)
    assert root.is_relative_to(tmp_path / "cache-a" / "lfm" / "quality")
    gate_run(a, "run-1")
    context.publish(a)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-b"))  # another machine: nothing of a's on disk
    assert context.quality_root(b) != root
    index = context.docs_index(b)
    assert index == context.docs_index(a) == f"{a.lakehouse}/_quality/gx/uncommitted/data_docs/local_site/index.html"
    store = Artifacts.at(location(a.lakehouse).child("_quality"), b.storage.object_store_options())
    assert b"tiny" in store.read("gx/uncommitted/data_docs/local_site/index.html")
    png = context.address(b, context.quality_root(b) / "reports" / D1.isoformat() / "run-1.png")
    assert png == f"{a.lakehouse}/_quality/reports/{D1}/run-1.png"
    assert store.read(f"reports/{D1}/run-1.png").startswith(b"\x89PNG")

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache-a"))  # the next run on a: only what is new goes up
    store.put(f"reports/{D1}/run-1.png", b"left as it is")
    gate_run(a, "run-2")
    context.publish(a)
    assert b"run-2" in store.read("gx/uncommitted/data_docs/local_site/index.html")
    assert store.read(f"reports/{D1}/run-2.png").startswith(b"\x89PNG")
    assert store.read(f"reports/{D1}/run-1.png") == b"left as it is"
