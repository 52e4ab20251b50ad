"""Registry round trip, refusal of bad checkpoints, and the Extractor on a registered model (no Spark)."""
from __future__ import annotations

import copy
import hashlib
import json
import pickle
import re

import numpy as np
import pytest
import torch

from lfm.errors import LfmError
from lfm.names import BadInput, check_model_version
from inference.extract import Extractor, vectors_to_arrow
from models.registry import (CARD, WEIGHTS, CheckpointError, NoModel, Registry, SchemaMismatch, load_checkpoint,
                             tensor_hash, version_of)
from models.training.pretrain import pretrain
from tests.support.tiny import TINY_SCHEMA, tiny_config, tiny_table
from tests.support.config import make_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("train"))
    return pretrain(tiny_table(400, 0), tiny_table(200, 1), cfg, test=tiny_table(200, 2), progress=None)


@pytest.fixture
def registered(trained, tmp_path):
    """A fresh registry per test (tests damage it), holding a copy of the module's trained model."""
    result = copy.deepcopy(trained)
    reg = Registry(tiny_config(tmp_path))
    return reg, reg.register(result.model, result.encoders, result.metrics), result


def test_round_trip_saves_lists_and_reloads_bit_identically(registered):
    reg, card, result = registered
    check_model_version(card.model_version)
    assert [c.model_version for c in reg.list()] == [card.model_version]
    assert reg.latest().model_version == card.model_version
    assert card.ur_dim == 6 and card.ir_dim == 5 and card.cr_points == result.model.cr_points
    assert list(card.cr_points) == ["embed", "cross1", "cross2", "dnn1", "dnn2"]  # mixing-tower order survives JSON
    assert card.schema == reg.cfg.schema and card.metrics["test"] == result.metrics["test"]
    loaded = reg.load(card.model_version)
    original = result.model.state_dict()
    assert set(loaded.model.state_dict()) == set(original)
    for k, v in loaded.model.state_dict().items():
        assert v.dtype == original[k].dtype and torch.equal(v, original[k]), k
    t = tiny_table(50, 3)
    a = result.model(result.encoders.encode_fields(t), result.encoders.encode_scenario(t))
    b = loaded.model(loaded.encoders.encode_fields(t), loaded.encoders.encode_scenario(t))
    assert torch.equal(a.logits, b.logits) and all(torch.equal(a.cr[k], b.cr[k]) for k in a.cr)
    again = reg.register(result.model, result.encoders, result.metrics)  # same content -> same version
    assert again.model_version == card.model_version and len(reg.list()) == 1


def test_version_is_a_content_hash(registered, tmp_path):
    reg, card, result = registered
    with torch.no_grad():
        result.model.heads.bias.add_(1e-3)
    other = reg.register(result.model, result.encoders, result.metrics)
    assert other.model_version != card.model_version and len(reg.list()) == 2


def test_resolve_gives_the_named_or_the_latest_version_of_this_schema(registered, tmp_path):
    reg, card, result = registered
    assert reg.resolve(None) == reg.resolve(card.model_version) == card
    with torch.no_grad():
        result.model.heads.bias.add_(1e-3)
    newer = reg.register(result.model, result.encoders, result.metrics)
    assert reg.resolve(None).model_version == newer.model_version
    assert reg.resolve(card.model_version).model_version == card.model_version
    other = make_config(tmp_path, schema={**TINY_SCHEMA, "tasks": ["is_click"]}, registry={"path": str(reg.root)})
    with pytest.raises(SchemaMismatch, match="tasks"):
        Registry(other).resolve(card.model_version)
    with pytest.raises(NoModel, match="lfm pretrain"):
        Registry(make_config(tmp_path / "empty")).resolve(None)


def test_format_1_checkpoints_load_with_their_old_layer_names(registered):
    """Before the shared `Mlp` block, format 1 named the mixing tower's DNN layers mixing.dnn.0, mixing.dnn.1."""
    reg, card, result = registered
    d = reg.root / card.model_version
    state = torch.load(d / WEIGHTS, weights_only=True)
    old = {re.sub(r"^mixing\.dnn\.(\d+)\.", lambda m: f"mixing.dnn.{int(m.group(1)) // 2}.", k): v
           for k, v in state.items()}
    assert {"mixing.dnn.1.weight", "mixing.dnn.2.weight"} & set(old) == {"mixing.dnn.1.weight"}
    torch.save(old, d / WEIGHTS)
    data = json.loads((d / CARD).read_text())
    data["format"] = data["content"]["format"] = 1
    data["weights_tensor_sha256"] = tensor_hash(old)
    data["weights_file_sha256"] = hashlib.sha256((d / WEIGHTS).read_bytes()).hexdigest()
    data["model_version"] = version_of(data["weights_tensor_sha256"], data["content"])
    (d / CARD).write_text(json.dumps(data))
    d.rename(reg.root / data["model_version"])
    loaded = reg.load(data["model_version"])
    t = tiny_table(50, 3)
    a = result.model(result.encoders.encode_fields(t), result.encoders.encode_scenario(t))
    b = loaded.model(loaded.encoders.encode_fields(t), loaded.encoders.encode_scenario(t))
    assert torch.equal(a.logits, b.logits) and all(torch.equal(a.cr[k], b.cr[k]) for k in a.cr)


def test_selected_layer_is_recorded_and_validated(registered):
    reg, card, _ = registered
    updated = reg.set_selected_layer(card.model_version, "dnn1", {"dnn1": 0.71, "cross2": 0.70})
    assert updated.selected_cr_layer == "dnn1" and updated.probe_table == {"dnn1": 0.71, "cross2": 0.70}
    assert reg.card(card.model_version).selected_cr_layer == "dnn1"
    reg.load(card.model_version)  # selection lives outside the hash: still a valid checkpoint
    with pytest.raises(BadInput, match="not a CR point"):
        reg.set_selected_layer(card.model_version, "dnn9", None)


def test_unknown_and_malformed_versions_are_refused(registered, tmp_path):
    reg, _, _ = registered
    with pytest.raises(NoModel):
        reg.card("0" * 20)
    with pytest.raises(BadInput):
        reg.card("../etc")
    with pytest.raises(NoModel):
        Registry(make_config(tmp_path / "empty")).latest()


def test_truncated_weights_are_refused(registered):
    reg, card, _ = registered
    w = reg.root / card.model_version / WEIGHTS
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt, truncated or was replaced"):
        reg.load(card.model_version)


def test_corrupt_weights_are_refused_even_when_the_file_hash_is_updated(registered):
    reg, card, _ = registered
    d = reg.root / card.model_version
    (d / WEIGHTS).write_bytes(b"not a torch file at all")
    data = json.loads((d / CARD).read_text())
    import hashlib

    data["weights_file_sha256"] = hashlib.sha256(b"not a torch file at all").hexdigest()
    (d / CARD).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="cannot be read as tensor-only weights"):
        reg.load(card.model_version)


def test_tampered_tensors_are_refused(registered):
    reg, card, _ = registered
    d = reg.root / card.model_version
    state = torch.load(d / WEIGHTS, weights_only=True)
    state["heads.bias"] = state["heads.bias"] + 1.0
    torch.save(state, d / WEIGHTS)
    import hashlib

    data = json.loads((d / CARD).read_text())
    data["weights_file_sha256"] = hashlib.sha256((d / WEIGHTS).read_bytes()).hexdigest()  # a careful tamperer
    (d / CARD).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="do not hash"):
        reg.load(card.model_version)


def test_edited_card_is_refused(registered):
    reg, card, _ = registered
    d = reg.root / card.model_version
    data = json.loads((d / CARD).read_text())
    data["content"]["encoders"]["user"][0]["vocab"].reverse()  # silently re-map every user id
    (d / CARD).write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="card was edited"):
        reg.card(card.model_version)
    assert reg.list() == []  # listing skips it instead of failing
    (d / CARD).write_text("{truncated")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        reg.card(card.model_version)


def test_schema_mismatch_is_refused(registered, tmp_path):
    reg, card, _ = registered
    schema = {**TINY_SCHEMA, "tasks": ["is_click"]}
    other = make_config(tmp_path, schema=schema, registry={"path": str(reg.root)})
    with pytest.raises(SchemaMismatch, match="different data schema.*tasks"):
        Registry(other).load(card.model_version)
    with pytest.raises(SchemaMismatch):
        Registry(other).path(card.model_version)
    with pytest.raises(SchemaMismatch):
        Extractor(reg.root / card.model_version, schema=other.schema).user_vectors(tiny_table(5))
    assert isinstance(SchemaMismatch("x"), LfmError)


# ---- extraction ----

def test_extractor_shapes_for_every_point_and_pickles(registered):
    reg, card, result = registered
    ex = Extractor(reg.path(card.model_version), threads=1, batch_rows=7)
    ex = pickle.loads(pickle.dumps(ex))
    batch = tiny_table(30, 4).to_batches()[0]
    ur, ir = ex.user_vectors(batch), ex.item_vectors(batch)
    assert ur.shape == (30, card.ur_dim) and ur.dtype == np.float32 and ir.shape == (30, card.ir_dim)
    for point, width in card.cr_points.items():
        cr = ex.cross_vectors(batch, point)
        assert cr.shape == (30, width) and cr.dtype == np.float32
    # driver-side reference: the model's own forward on the same rows
    with torch.no_grad():
        out = result.model.eval()(result.encoders.encode_fields(batch), result.encoders.encode_scenario(batch))
    np.testing.assert_array_equal(ur, out.ur.numpy())
    np.testing.assert_array_equal(ex.cross_vectors(batch, "dnn1"), out.cr["dnn1"].numpy())
    assert np.array_equal(ex.user_vectors(batch), ur)  # deterministic


def test_user_vectors_need_only_user_columns(registered):
    reg, card, _ = registered
    ex = Extractor(reg.path(card.model_version))
    full = tiny_table(20, 5)
    users_only = full.select(["user_id", "user_active_degree", "register_days"])
    assert np.array_equal(ex.user_vectors(users_only), ex.user_vectors(full))
    with pytest.raises(BadInput, match="lacks columns"):
        ex.item_vectors(users_only)
    with pytest.raises(BadInput, match="unknown CR point"):
        ex.cross_vectors(full, "dnn7")
    assert ex.card.model_version == card.model_version and ex.cr_points == card.cr_points


def test_vectors_to_arrow_is_a_float_list():
    arr = vectors_to_arrow(np.arange(6, dtype=np.float32).reshape(3, 2))
    assert str(arr.type) == "list<item: float>" and arr.to_pylist() == [[0, 1], [2, 3], [4, 5]]


def test_load_checkpoint_of_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(tmp_path)


def test_vectors_do_not_depend_on_how_rows_are_batched(registered):
    reg, card, _ = registered
    path = reg.path(card.model_version)
    t = tiny_table(23, 6)
    whole = Extractor(path, batch_rows=1000)
    for rows in (1, 2, 3, 5):  # tiny chunks take other BLAS paths unless padded
        ex = Extractor(path, batch_rows=rows)
        assert np.array_equal(ex.user_vectors(t), whole.user_vectors(t))
        assert np.array_equal(ex.cross_vectors(t, "cross1"), whole.cross_vectors(t, "cross1"))
