"""Feast definitions and `lfm register`, without Spark: names, types, tags, sources, idempotence, current version.

Every Feast repo (registry, online store, feature_store.yaml) lives under the test's tmp_path.
"""
from __future__ import annotations

import datetime as dt
import sqlite3

import numpy as np
import pytest

from conftest import make_config
from feature_repo.errors import NothingRegistered, SpecConflict, UnknownModelVersion
from feature_repo.specs import CURRENT_SERVICE, TABLES, VersionSpec, service_name, spec_from_card, view_name
from lfm.names import BadInput

V1 = VersionSpec("a1" * 10, ur_dim=16, ir_dim=16, cr_dim=8, cr_layer="dnn_0")
V2 = VersionSpec("b2" * 10, ur_dim=12, ir_dim=12, cr_dim=10, cr_layer="cross_2")


def _store(cfg):
    from feature_repo.store import open_store

    return open_store(cfg)


def test_views_are_per_version_typed_tagged_and_read_only_their_version(cfg):
    from feast.types import Array, Float32

    from feature_repo.entities import entities
    from feature_repo.feature_services import version_service
    from feature_repo.feature_views import feature_views

    ents = entities(cfg)
    assert ents["user"].join_key == "user_id" and ents["video"].join_key == "video_id"
    views = feature_views(cfg, V1, ents)
    assert set(views) == set(TABLES)
    for table, fv in views.items():
        assert fv.name == f"{table}_v{V1.version}" == view_name(table, V1.version)
        assert fv.ttl == dt.timedelta(days=cfg.feast.ttl_days)
        assert fv.tags["model_version"] == V1.version and fv.tags["dim"] == str(V1.dim(table))
        assert fv.tags["cr_layer"] == ("dnn_0" if table.startswith("cr_") else "")
        (feat,) = fv.features
        assert feat.name == table and feat.dtype == Array(Float32) and feat.vector_length == V1.dim(table)
        src = fv.batch_source
        assert src.path == cfg.table_path(table) and src.table_format.format_type.value == "delta"
        assert src.timestamp_field == "event_timestamp" and src.date_partition_column == "ds"
        assert f"model_version = '{V1.version}'" in src.query and f"delta.`{cfg.table_path(table)}`" in src.query
        assert ("cr_layer = 'dnn_0'" in src.query) == table.startswith("cr_")
    other = feature_views(cfg, V2, ents)
    assert {fv.name for fv in views.values()}.isdisjoint(fv.name for fv in other.values())
    svc = version_service(V1, views)
    assert svc.name == service_name(V1.version) and len(svc.feature_view_projections) == 4


def test_schema_key_names_flow_into_entities_and_sources(tmp_path):
    cfg = make_config(tmp_path, schema={"user_key": "uid", "item_key": "ad_id", "user_fields": [{"name": "uid"}],
                                        "item_fields": [{"name": "ad_id"}]})
    from feature_repo.entities import entities
    from feature_repo.feature_views import feature_views

    views = feature_views(cfg, V1, entities(cfg))
    assert views["ur"].entity_columns[0].name == "uid" and views["cr_item"].entity_columns[0].name == "ad_id"
    assert "CAST(`ad_id` AS BIGINT) AS `ad_id`" in views["ir"].batch_source.query


def test_register_is_idempotent_additive_and_current_is_explicit(cfg):
    from feature_repo.register import register, registered
    from feature_repo.store import repo_dir

    first = register(cfg, [V1])
    assert first.added == [V1.version] and first.current == V1.version and first.applied
    assert (repo_dir(cfg) / "feature_store.yaml").is_file()
    again = register(cfg, [V1])
    assert not again.applied and again.unchanged == [V1.version]

    second = register(cfg, [V1, V2])  # a new version adds its views beside the old ones
    assert second.added == [V2.version] and second.current == V1.version  # current stays until pinned
    store = _store(cfg)
    names = {fv.name for fv in store.list_feature_views()}
    assert names == {view_name(t, v.version) for t in TABLES for v in (V1, V2)}
    assert {s.name for s in store.list_feature_services()} == {service_name(V1.version), service_name(V2.version),
                                                                CURRENT_SERVICE}
    reg = registered(store)
    assert reg.specs == {V1.version: V1, V2.version: V2} and reg.current == V1.version

    switched = register(cfg, [], current=V2.version)
    assert switched.current == V2.version and switched.previous_current == V1.version
    cur = _store(cfg).get_feature_service(CURRENT_SERVICE)
    assert cur.tags["model_version"] == V2.version
    assert {p.name for p in cur.feature_view_projections} == {view_name(t, V2.version) for t in TABLES}

    with pytest.raises(UnknownModelVersion, match="not registered"):
        register(cfg, [], current="c3" * 10)
    with pytest.raises(UnknownModelVersion, match="registered:"):
        registered(_store(cfg)).require("d4" * 10)


def test_config_pins_current_and_registry_is_sqlite(tmp_path):
    cfg = make_config(tmp_path, feast={"current_version": V1.version})
    from feature_repo.register import register
    from feature_repo.store import registry_file

    assert register(cfg, [V1, V2]).current == V1.version
    with sqlite3.connect(registry_file(cfg)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"feature_views", "feature_services", "entities"} <= tables


def test_register_refuses_changed_widths_and_repoints_a_changed_cr_layer(cfg):
    from feature_repo.register import register, registered

    register(cfg, [V1])
    with pytest.raises(SpecConflict, match="widths cannot change"):
        register(cfg, [VersionSpec(V1.version, 32, 16, 8, "dnn_0")])
    relayered = VersionSpec(V1.version, 16, 16, 4, "cross_1")
    res = register(cfg, [relayered])
    assert res.updated == [V1.version]
    store = _store(cfg)
    assert registered(store).specs[V1.version] == relayered
    assert "cr_layer = 'cross_1'" in store.get_feature_view(view_name("cr_user", V1.version)).batch_source.query


def test_nothing_registered_and_bad_specs_are_clear(cfg):
    from feature_repo.register import registered

    with pytest.raises(NothingRegistered, match="lfm register"):
        registered(_store(cfg)).require(None)
    with pytest.raises(BadInput):
        VersionSpec("not-a-hash", 8, 8, 8, "x")
    with pytest.raises(SpecConflict, match="CR layer"):
        VersionSpec("e5" * 10, 8, 8, 8, "x'; DROP")


def test_adapter_from_model_card():
    from lfm.config import DataSchema
    from lfm.config.model import ModelSettings
    from models.registry import ModelCard

    card = ModelCard(model_version="f6" * 10, ur_dim=64, ir_dim=64, cr_points={"cross_1": 360, "dnn_0": 256,
                     "dnn_1": 64}, selected_cr_layer="dnn_0", schema=DataSchema(), metrics={}, model=ModelSettings(),
                     tasks=["is_click"], scenarios=["<unk>"], created_at="2022-05-01T00:00:00")
    assert spec_from_card(card) == VersionSpec("f6" * 10, 64, 64, 256, "dnn_0")
    unselected = ModelCard(**{**card.__dict__, "selected_cr_layer": None})
    assert spec_from_card(unselected).cr_layer == "dnn_1"  # the refresh's rule: the last CR point


def test_bulk_codec_is_byte_identical_to_feast():
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from feature_repo.codec import decode_vector, encode_vectors, entity_keys, feast_value_bytes

    mat = np.random.default_rng(0).normal(size=(50, 200)).astype(np.float32)  # 800-byte payload: 2-byte varints
    enc = encode_vectors(mat)
    assert all(e == feast_value_bytes(row) for e, row in zip(enc, mat))
    assert all(np.array_equal(decode_vector(e, 200), row) for e, row in zip(enc, mat))
    assert decode_vector(b"", 200) is None and decode_vector(Value().SerializeToString(), 200) is None
    ids = [0, 7, 2**40, -3]
    keys = entity_keys("user_id", ids)
    assert keys == [serialize_entity_key(EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=i)]), 3)
                    for i in ids]
    assert entity_keys("user_id", ["u1"], int64=False) == [serialize_entity_key(
        EntityKey(join_keys=["user_id"], entity_values=[Value(string_val="u1")]), 3)]


@pytest.mark.slow
def test_cli_register_is_driven_by_the_model_registry(tmp_path, capsys):
    """`lfm register` reads the real model registry (a tiny pretrained LFM), so a new version adds views."""
    import yaml

    from lfm.cli import main
    from models.registry import Registry
    from models.training.pretrain import pretrain
    from test_lfm_helpers import TINY_MODEL, TINY_SCHEMA, tiny_config, tiny_table

    cfg = tiny_config(tmp_path)
    conf = tmp_path / "lfm.yaml"
    conf.write_text(yaml.safe_dump({"lakehouse": str(tmp_path / "lake"), "registry": {"path": cfg.registry.path},
                                    "schema": TINY_SCHEMA, "model": TINY_MODEL,
                                    "feast": {"repo_path": str(tmp_path / "fr")}}))
    assert main(["--config", str(conf), "register"]) == 2
    assert "run `lfm pretrain`" in capsys.readouterr().err
    result = pretrain(tiny_table(400, 0), tiny_table(200, 1), cfg, progress=None)
    card = Registry(cfg).register(result.model, result.encoders, result.metrics)
    assert main(["--config", str(conf), "register"]) == 0
    out = capsys.readouterr().out
    assert f"added 1 ['{card.model_version}']" in out and f"current {card.model_version}" in out
    assert main(["--config", str(conf), "register"]) == 0
    assert "nothing written" in capsys.readouterr().out
    fcfg = make_config(tmp_path, feast={"repo_path": str(tmp_path / "fr")})
    from feature_repo.register import registered

    spec = registered(_store(fcfg)).specs[card.model_version]
    last = list(card.cr_points)[-1]
    assert (spec.ur_dim, spec.ir_dim, spec.cr_layer, spec.cr_dim) == (card.ur_dim, card.ir_dim, last,
                                                                       card.cr_points[last])
