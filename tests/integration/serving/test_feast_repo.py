"""Feast definitions and `lfm register`, without Spark: names, types, tags, sources, idempotence, current export.

Every Feast repo (registry, online store, feature_store.yaml) lives under the test's tmp_path.
"""
from __future__ import annotations

import datetime as dt
import sqlite3

import numpy as np
import pytest

from feature_repo.specs import CURRENT_SERVICE, service_name, view_name
from lfm.contract import EMBEDDING_TABLES as TABLES
from lfm.contract import ExportSpec
from lfm.names import BadInput
from serving.errors import NothingRegistered, UnknownModelVersion
from tests.support.config import keyed_sources, make_config
from tests.support.synthetic_vectors import spec

V1 = spec("a1" * 10, ur_dim=16, ir_dim=16, cr_dim=8, cr_layer="dnn_0")
V2 = spec("b2" * 10, ur_dim=12, ir_dim=12, cr_dim=10, cr_layer="cross_2")


def _store(cfg):
    from feature_repo.store import open_store

    return open_store(cfg)


def test_views_are_per_export_typed_tagged_and_read_only_their_export(cfg):
    from feast.types import Array, Float32

    from feature_repo.entities import entities
    from feature_repo.feature_services import export_service
    from feature_repo.feature_views import feature_views

    ents = entities(cfg)
    assert ents["user"].join_key == "user_id" and ents["item"].join_key == "video_id"
    views = feature_views(cfg, V1, ents)
    assert set(views) == set(TABLES)
    for table, fv in views.items():
        assert fv.name == f"{table}_e{V1.id}" == view_name(table, V1.id)
        assert fv.ttl == dt.timedelta(days=cfg.feast.ttl_days)
        assert fv.tags["model_version"] == V1.model_version and fv.tags["dim"] == str(V1.dim(table))
        assert fv.tags["export_id"] == V1.id and ExportSpec.from_json(fv.tags["export_spec"]) == V1
        assert fv.tags["cr_layer"] == "dnn_0"
        (feat,) = fv.features
        assert feat.name == table and feat.dtype == Array(Float32) and feat.vector_length == V1.dim(table)
        src = fv.batch_source
        assert src.path == cfg.table_path(table) and src.table_format.format_type.value == "delta"
        assert src.timestamp_field == "event_timestamp" and src.date_partition_column == "ds"
        assert f"export_id = '{V1.id}'" in src.query and f"delta.`{cfg.table_path(table)}`" in src.query
        assert f"delta.`{cfg.table_path('releases')}`" in src.query and "status = 'released'" in src.query
    other = feature_views(cfg, V2, ents)
    assert {fv.name for fv in views.values()}.isdisjoint(fv.name for fv in other.values())
    svc = export_service(V1, views)
    assert svc.name == service_name(V1.id) and len(svc.feature_view_projections) == 4


def test_schema_key_names_and_declared_types_flow_into_entities_views_and_sources(tmp_path):
    """The key type follows the declared key columns alone (`LfmConfig.key_type`): here an integer user key and
    a string item key give an INT64 and a STRING entity, typed view keys and the sources' casts."""
    from feast import ValueType
    from feast.types import Int64, String

    from feature_repo.entities import entities
    from feature_repo.feature_views import feature_views

    cfg = make_config(tmp_path, schema={"user_key": "uid", "item_key": "ad_id", "user_fields": [{"name": "uid"}],
                                        "item_fields": [{"name": "ad_id"}]},
                      sources=keyed_sources("uid", "ad_id", user_type="bigint", item_type="string"))
    ents = entities(cfg)
    assert (ents["user"].value_type, ents["item"].value_type) == (ValueType.INT64, ValueType.STRING)
    views = feature_views(cfg, V1, ents)
    assert views["ur"].entity_columns[0].name == "uid" and views["cr_item"].entity_columns[0].name == "ad_id"
    assert views["ur"].entity_columns[0].dtype == Int64 and views["cr_item"].entity_columns[0].dtype == String
    assert "CAST(`ad_id` AS STRING) AS `ad_id`" in views["ir"].batch_source.query
    assert "CAST(`uid` AS BIGINT) AS `uid`" in views["cr_user"].batch_source.query


def test_register_is_idempotent_additive_and_current_is_explicit(cfg):
    from serving.register import register, registered
    from feature_repo.store import repo_dir

    first = register(cfg, [V1])
    assert first.added == [V1.id] and first.current == V1.id and first.applied
    assert (repo_dir(cfg) / "feature_store.yaml").is_file()
    again = register(cfg, [V1])
    assert not again.applied and again.unchanged == [V1.id]

    second = register(cfg, [V1, V2])  # a new export adds its views beside the old ones
    assert second.added == [V2.id] and second.current == V1.id  # current stays until pinned
    store = _store(cfg)
    names = {fv.name for fv in store.list_feature_views()}
    assert names == {view_name(t, v.id) for t in TABLES for v in (V1, V2)}
    assert {s.name for s in store.list_feature_services()} == {service_name(V1.id), service_name(V2.id),
                                                                CURRENT_SERVICE}
    reg = registered(store)
    assert reg.specs == {V1.id: V1, V2.id: V2} and reg.current == V1.id
    assert reg.require(V2.model_version) == V2  # a model version with one export names it

    switched = register(cfg, [], current=V2.model_version)
    assert switched.current == V2.id and switched.previous_current == V1.id
    cur = _store(cfg).get_feature_service(CURRENT_SERVICE)
    assert cur.tags["export_id"] == V2.id and cur.tags["model_version"] == V2.model_version
    assert {p.name for p in cur.feature_view_projections} == {view_name(t, V2.id) for t in TABLES}

    with pytest.raises(UnknownModelVersion, match="not a registered export"):
        register(cfg, [], current="c3" * 10)
    with pytest.raises(UnknownModelVersion, match="registered exports:"):
        registered(_store(cfg)).require("d4" * 10)


def test_config_pins_current_and_registry_is_sqlite(tmp_path):
    cfg = make_config(tmp_path, feast={"current_version": V1.model_version})
    from feature_repo.store import registry_file
    from serving.register import register

    assert register(cfg, [V1, V2]).current == V1.id
    with sqlite3.connect(registry_file(cfg)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"feature_views", "feature_services", "entities"} <= tables


def test_another_layer_or_decay_is_another_export_beside_the_first(cfg):
    from dataclasses import replace

    from serving.register import register, registered

    register(cfg, [V1])
    relayered, retau = replace(V1, cr_layer="cross_1", cr_dim=4), replace(V1, tau_hours=24.0)
    res = register(cfg, [relayered, retau])
    assert res.added == [relayered.id, retau.id] and len({V1.id, relayered.id, retau.id}) == 3
    reg = registered(_store(cfg))
    assert reg.specs == {s.id: s for s in (V1, relayered, retau)} and reg.current == V1.id
    with pytest.raises(UnknownModelVersion, match="several registered exports"):
        reg.require(V1.model_version)  # one model, three spaces: the caller must pick one


def test_register_follows_a_moved_lakehouse(tmp_path):
    from serving.register import register

    first = make_config(tmp_path, feast={"repo_path": str(tmp_path / "repo")})
    register(first, [V1])
    moved = make_config(tmp_path, lakehouse=str(tmp_path / "elsewhere"), feast={"repo_path": str(tmp_path / "repo")})
    res = register(moved, [V1])
    assert res.applied and res.updated == [V1.id]
    src = _store(moved).get_feature_view(view_name("ur", V1.id)).batch_source
    assert src.path == moved.table_path("ur") and f"delta.`{moved.table_path('ur')}`" in src.query


def test_entity_names_follow_the_keys(tmp_path):
    from feature_repo.entities import entities
    from feature_repo.feature_views import feature_views

    cases = {("user_id", "video_id"): ("user", "video"), ("member_id", "item_id"): ("member", "item"),
             ("uid", "sku"): ("uid", "sku")}
    for (ukey, ikey), names in cases.items():
        cfg = make_config(tmp_path, schema={"user_key": ukey, "item_key": ikey, "user_fields": [{"name": ukey}],
                                            "item_fields": [{"name": ikey}]}, sources=keyed_sources(ukey, ikey))
        ents = entities(cfg)
        assert (ents["user"].name, ents["item"].name) == names and ents["item"].join_key == ikey
        assert "video" not in ents["item"].description or ikey == "video_id"
        views = feature_views(cfg, V1, ents)
        assert views["ir"].entities == [names[1]] and views["cr_user"].entities == [names[0]]
        assert views["ir"].name == view_name("ir", V1.id)  # view names stay per export, whatever the keys


def test_register_follows_renamed_keys(tmp_path):
    from serving.register import register

    feast = {"repo_path": str(tmp_path / "repo")}
    register(make_config(tmp_path, feast=feast), [V1])
    renamed = make_config(tmp_path, feast=feast, schema={"user_key": "member_id", "item_key": "item_id",
                                                         "user_fields": [{"name": "member_id"}],
                                                         "item_fields": [{"name": "item_id"}]},
                          sources=keyed_sources("member_id", "item_id"))
    res = register(renamed, [V1])
    assert res.applied and res.updated == [V1.id]
    fv = _store(renamed).get_feature_view(view_name("cr_item", V1.id))
    assert fv.entities == ["item"] and [c.name for c in fv.entity_columns] == ["item_id"]
    assert not register(renamed, [V1]).applied  # now up to date


def test_nothing_registered_and_bad_specs_are_clear(cfg):
    from serving.register import registered

    with pytest.raises(NothingRegistered, match="lfm register"):
        registered(_store(cfg)).require(None)
    with pytest.raises(BadInput):
        spec("not-a-hash", 8, 8, 8, "x")
    with pytest.raises(BadInput, match="CR layer"):
        spec("e5" * 10, 8, 8, 8, "x'; DROP")


def test_export_spec_from_model_card(cfg):
    from lfm.config import DataSchema
    from lfm.config.model import ModelSettings
    from lfm.contract import schema_hash
    from models.exports import spec_for
    from models.registry import ModelCard

    card = ModelCard(model_version="f6" * 10, ur_dim=64, ir_dim=64, cr_points={"cross_1": 360, "dnn_0": 256,
                     "dnn_1": 64}, selected_cr_layer="dnn_0", schema=DataSchema(), metrics={}, model=ModelSettings(),
                     tasks=["is_click"], scenarios=["<unk>"], created_at="2022-05-01T00:00:00")
    got = spec_for(cfg, card)
    assert (got.model_version, got.ur_dim, got.ir_dim, got.cr_dim, got.cr_layer) == ("f6" * 10, 64, 64, 256, "dnn_0")
    assert (got.tau_hours, got.normalisation, got.schema_hash) == (72.0, "layernorm", schema_hash(cfg.schema))
    unselected = ModelCard(**{**card.__dict__, "selected_cr_layer": None})
    assert spec_for(cfg, unselected).cr_layer == "dnn_1"  # the rule: the last CR point


def test_bulk_codec_is_byte_identical_to_feast():
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from serving.codec import decode_vector, encode_vectors, entity_keys, feast_value_bytes

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

    from cli.main import main
    from models.training.pretrain import pretrain
    from models.registry import Registry
    from tests.support.tiny import TINY_MODEL, TINY_SCHEMA, tiny_config, tiny_table

    cfg = tiny_config(tmp_path)
    conf = tmp_path / "lfm.yaml"
    conf.write_text(yaml.safe_dump({"lakehouse": str(tmp_path / "lake"), "registry": {"path": cfg.registry.path},
                                    "schema": TINY_SCHEMA, "model": TINY_MODEL,
                                    "feast": {"repo_path": str(tmp_path / "fr")}}))
    assert main(["--config", str(conf), "register"]) == 2
    assert "lfm pretrain" in capsys.readouterr().err
    result = pretrain(tiny_table(400, 0), tiny_table(200, 1), cfg, progress=None)
    card = Registry(cfg).register(result.model, result.encoders, result.metrics)
    assert main(["--config", str(conf), "register"]) == 0
    out = capsys.readouterr().out
    fcfg = make_config(tmp_path, feast={"repo_path": str(tmp_path / "fr")})
    from serving.register import registered

    got = registered(_store(fcfg)).require(card.model_version)
    assert f"added 1 ['{got.id}']" in out and f"current {got.id}" in out
    assert main(["--config", str(conf), "register"]) == 0
    assert "nothing written" in capsys.readouterr().out
    last = list(card.cr_points)[-1]
    assert (got.ur_dim, got.ir_dim, got.cr_layer, got.cr_dim) == (card.ur_dim, card.ir_dim, last,
                                                                   card.cr_points[last])
