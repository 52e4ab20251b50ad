"""Feast's registry on a real S3-API server (SeaweedFS, tests/support/s3_local.py; not a mock), chosen by
`lakehouse: s3://...` alone: what one machine registers (its exports, `lfm_current`) another machine sees, sharing
nothing with it but the store (a fresh config, its own empty Feast repo folder), and registrations made at the same
moment by two drivers all land (Feast writes the registry whole; `lfm register` holds the registry's lease)."""
from __future__ import annotations

import datetime as dt
import threading
import time

import boto3
import pytest

from feature_repo.specs import CURRENT_SERVICE, service_name, view_name
from feature_repo.store import ENDPOINT_VARIABLE, open_store, registry_file, repo_dir
from lakehouse.leases import Lease
from lakehouse.objects import Objects
from lfm.contract import EMBEDDING_TABLES as TABLES
from serving.register import REGISTRY_LEASE, register, registered, registry_held
from tests.support.config import make_config
from tests.support.synthetic_vectors import spec

X = spec("a1" * 10, ur_dim=16, ir_dim=16, cr_dim=8)
Y = spec("b2" * 10, ur_dim=12, ir_dim=12, cr_dim=10, cr_layer="cross_2")
RACERS = [spec(f"{n:02x}" * 10, ur_dim=8, ir_dim=8, cr_dim=4) for n in range(0xc0, 0xc4)]


@pytest.fixture
def machines(s3_server, tmp_path, monkeypatch):
    """Configs of one lakehouse on the store, as machines of a cluster would load them: each its own (empty) Feast
    repo folder; credentials only in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv(ENDPOINT_VARIABLE, "restored-after-the-test")  # set by open_store for Feast: undone after
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    storage = {"endpoint": s3_server.endpoint_url, "allow_http": True, "lease_seconds": 30}
    lakehouse = s3_server.uri(f"lfm-{tmp_path.name}")
    return [make_config(tmp_path / name, lakehouse=lakehouse, storage=storage) for name in "abcd"]


def key_of(cfg, *parts: str) -> str:
    """The bucket key of a path under the lakehouse, for reading behind the platform's back."""
    return "/".join([cfg.lakehouse.split("/", 3)[3], *parts])


def views_of(*specs) -> set[str]:
    return {view_name(t, s.id) for t in TABLES for s in specs}


def test_what_one_machine_registers_another_sees_and_adds_to(machines, s3_server):
    a, b = machines[:2]
    first = register(a, [X], current=X.id)
    assert first.added == [X.id] and first.current == X.id and first.applied
    assert s3_server.get_object(key_of(a, "_serving", "feast", "registry.pb"))[0] == 200  # really on the store
    assert not registry_file(a).exists()  # no sqlite registry on the driver's disk
    assert "registry_type: file" in (repo_dir(a) / "feature_store.yaml").read_text()

    assert not repo_dir(b).exists()  # machine B: nothing of A's on its disk
    store_b = open_store(b)
    seen = registered(store_b)
    assert seen.specs == {X.id: X} and seen.current == X.id
    assert {fv.name for fv in store_b.list_feature_views()} == views_of(X)
    assert {p.name for p in store_b.get_feature_service(CURRENT_SERVICE).feature_view_projections} == views_of(X)

    second = register(b, [Y], store=store_b)
    assert second.added == [Y.id] and second.current == X.id  # current moves only when asked
    store_a = open_store(a)
    store_a.refresh_registry()
    assert registered(store_a).specs == {X.id: X, Y.id: Y}
    assert {fv.name for fv in store_a.list_feature_views()} == views_of(X, Y)
    assert {s.name for s in store_a.list_feature_services()} == {service_name(X.id), service_name(Y.id),
                                                                  CURRENT_SERVICE}
    assert not register(a, [X, Y]).applied  # A's view of the registry is the store's: nothing left to write

    switched = register(a, [], current=Y.id, store=store_a)
    assert switched.current == Y.id and switched.previous_current == X.id
    assert registered(open_store(b)).current == Y.id


def test_drivers_registering_at_the_same_moment_all_land(machines):
    """Four drivers (own configs and Feast repos) register four exports at once: none is lost, though Feast writes
    the registry object whole with a plain put."""
    stores = [open_store(cfg) for cfg in machines]  # opened first: each driver's own registry client
    start, errors = threading.Barrier(len(machines)), []

    def drive(cfg, store, export):
        try:
            start.wait()
            register(cfg, [export], store=store, run_id=f"driver-{export.id}")
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=drive, args=args) for args in zip(machines, stores, RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and not any(t.is_alive() for t in threads)
    back = registered(open_store(machines[0]))
    assert set(back.specs) == {s.id for s in RACERS}
    assert back.current in back.specs  # the first to land made its export current; the others left it
    assert {fv.name for fv in open_store(machines[1]).list_feature_views()} == views_of(*RACERS)


def test_a_busy_registry_is_waited_for_then_applied(machines):
    """Another driver holding the registry's lease makes `register` wait (not fail); it applies once freed, on the
    registry as that driver left it."""
    a, b = machines[:2]
    register(a, [X])
    held = Lease(Objects(a, a.location(a.lakehouse).child("_locks")), REGISTRY_LEASE, "another driver",
                 a.storage.lease_seconds).acquire()
    done: list = []
    waiting = threading.Thread(target=lambda: done.append(register(b, [Y])))
    try:
        waiting.start()
        time.sleep(2.0)
        assert not done  # still waiting for the lease
        meanwhile = open_store(a)  # the registry as the holder found it: only X
        assert set(registered(meanwhile).specs) == {X.id}
    finally:
        held.release()
    waiting.join(30)
    assert done and done[0].added == [Y.id]
    assert set(registered(open_store(a)).specs) == {X.id, Y.id}


def test_materialization_intervals_recorded_under_the_lease_reach_other_machines(machines):
    """What `serving.materialize` records in Feast's registry after a load (each view's interval), written the same
    way: under the registry's lease, on the registry as it stands, seen by another machine."""
    a, b = machines[:2]
    register(a, [X])
    store = open_store(a)
    start = dt.datetime(2022, 5, 6, tzinfo=dt.timezone.utc)
    with registry_held(a, store, run_id="materialize-test") as fence:
        fence.check()
        for t in TABLES:
            store.registry.apply_materialization(store.get_feature_view(view_name(t, X.id)), store.project, start,
                                                 start + dt.timedelta(days=1), commit=True)
    seen = open_store(b).get_feature_view(view_name("ur", X.id))
    assert [(s.date(), e.date()) for s, e in seen.materialization_intervals] == [(start.date(), dt.date(2022, 5, 7))]
