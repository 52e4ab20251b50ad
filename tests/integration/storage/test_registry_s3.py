"""The model registry on a real S3-API server (SeaweedFS, tests/support/s3_local.py; not a mock), chosen by
`registry.path: s3://...` alone: the same versions, cards and checks as on disk, an Extractor that loads the
checkpoint in a process sharing nothing with the driver but the store, and no half-written or replaced checkpoint
ever read."""
from __future__ import annotations

import copy
import io
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from inference.extract import Extractor
from lakehouse.objects import ObjectStoreError
from models.registry import (CARD, WEIGHTS, CheckpointError, NoModel, Registry, content_of, tensor_hash,
                             version_of)
from models.training.pretrain import pretrain
from tests.support.config import REPO, make_config
from tests.support.s3_local import free_port
from tests.support.tiny import TINY_SCHEMA, tiny_config, tiny_table


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    cfg = tiny_config(tmp_path_factory.mktemp("train"))
    return pretrain(tiny_table(400, 0), tiny_table(200, 1), cfg, test=tiny_table(200, 2), progress=None)


def store_config(tmp_path, endpoint: str, registry: str):
    return make_config(tmp_path, schema=TINY_SCHEMA, registry={"path": registry},
                       storage={"endpoint": endpoint, "allow_http": True})


@pytest.fixture
def s3_cfg(s3_server, tmp_path, monkeypatch):
    """A config whose registry is a fresh prefix of the server's bucket; credentials only in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    return store_config(tmp_path, s3_server.endpoint_url, s3_server.uri(f"models-{tmp_path.name}"))


def key_of(cfg, version: str, name: str) -> str:
    """The bucket key of a version's file, for writing behind the registry's back."""
    return cfg.registry.path.split("/", 3)[3] + f"/{version}/{name}"


def register(cfg, trained):
    return Registry(cfg).register(trained.model, trained.encoders, trained.metrics)


def test_register_list_card_resolve_load_and_select_on_the_store(s3_cfg, trained, s3_server):
    reg = Registry(s3_cfg)
    assert reg.list() == [] and reg.root == s3_cfg.registry.path
    card = register(s3_cfg, trained)
    assert s3_server.get_object(key_of(s3_cfg, card.model_version, CARD))[0] == 200  # really on the store
    again = register(s3_cfg, copy.deepcopy(trained))  # same content -> same version, the first card kept
    assert again == card
    assert [c.model_version for c in reg.list()] == [card.model_version]
    assert reg.latest() == reg.resolve(None) == reg.resolve(card.model_version) == reg.card(card.model_version)
    assert card.schema == s3_cfg.schema and card.metrics["test"] == trained.metrics["test"]
    loaded = reg.load(card.model_version)
    original = trained.model.state_dict()
    assert all(torch.equal(v, original[k]) for k, v in loaded.model.state_dict().items())
    assert reg.path(card.model_version) == f"{s3_cfg.registry.path}/{card.model_version}"

    selected = reg.set_selected_layer(card.model_version, "dnn1", {"dnn1": 0.71, "cross2": 0.70})
    assert selected.selected_cr_layer == "dnn1"
    fresh = Registry(s3_cfg).card(card.model_version)  # read back from the store, not from this object
    assert fresh.selected_cr_layer == "dnn1" and fresh.probe_table == {"dnn1": 0.71, "cross2": 0.70}
    assert register(s3_cfg, trained).selected_cr_layer == "dnn1"  # re-registering keeps the selection


EXECUTOR = textwrap.dedent("""
    import pickle, sys
    extractor, table = pickle.load(sys.stdin.buffer)
    sys.stdout.buffer.write(pickle.dumps(extractor.user_vectors(table)))
""")


def test_an_executor_sharing_nothing_but_the_store_extracts_what_the_local_copy_does(s3_cfg, trained, s3_server,
                                                                                     tmp_path):
    card = register(s3_cfg, trained)
    local = Registry(tiny_config(tmp_path / "local"))
    assert register(local.cfg, trained).model_version == card.model_version  # content-addressed on both
    table = tiny_table(40, 7)
    expected = Extractor(local.path(card.model_version)).user_vectors(table)

    extractor = Extractor(Registry(s3_cfg).path(card.model_version), storage=s3_cfg.storage.object_store_options())
    payload = pickle.dumps((extractor, table))
    assert s3_server.secret_key.encode() not in payload and s3_server.access_key.encode() not in payload
    env = {"AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key}
    run = subprocess.run([sys.executable, "-c", EXECUTOR], input=payload, env=env, cwd=REPO, capture_output=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr.decode()[-3000:]
    np.testing.assert_array_equal(pickle.loads(run.stdout), expected)


def test_weights_replaced_behind_the_registrys_back_are_refused(s3_cfg, trained, s3_server):
    card = register(s3_cfg, trained)
    state = {k: v.clone() for k, v in trained.model.state_dict().items()}
    state["heads.bias"] += 1.0
    buffer = io.BytesIO()
    torch.save(state, buffer)
    status, body = s3_server.put_object(key_of(s3_cfg, card.model_version, WEIGHTS), buffer.getvalue())
    assert status == 200, body
    reg = Registry(s3_cfg)
    with pytest.raises(CheckpointError, match="corrupt, truncated or was replaced"):
        reg.load(card.model_version)
    with pytest.raises(CheckpointError):
        reg.path(card.model_version)  # what refresh's Extractor goes through
    uri = f"{s3_cfg.registry.path}/{card.model_version}"
    with pytest.raises(CheckpointError, match="corrupt, truncated or was replaced"):
        Extractor(uri, storage=s3_cfg.storage.object_store_options()).user_vectors(tiny_table(5))


def test_a_half_written_version_is_invisible_and_registering_completes_it(s3_cfg, trained, s3_server):
    """A writer that died after the weights and before the card: no reader sees a version, and the next
    register of that content writes it whole."""
    version = version_of(tensor_hash(trained.model.state_dict()),
                         content_of(trained.model, trained.encoders, s3_cfg.schema))
    status, body = s3_server.put_object(key_of(s3_cfg, version, WEIGHTS), b"the first half of a weights file")
    assert status == 200, body
    reg = Registry(s3_cfg)
    assert reg.list() == []
    with pytest.raises(NoModel, match="not in the registry"):
        reg.card(version)
    with pytest.raises(NoModel, match="lfm pretrain"):
        reg.latest()
    assert register(s3_cfg, trained).model_version == version
    reg.load(version)  # the weights were rewritten before the card
    assert [c.model_version for c in reg.list()] == [version]


def test_refused_credentials_and_an_unreachable_store_are_named_with_the_fix(s3_server, tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    refused = store_config(tmp_path, s3_server.endpoint_url, s3_server.uri("models-refused"))
    with pytest.raises(ObjectStoreError, match="(?s)s3://.*models-refused.*AWS_SECRET_ACCESS_KEY"):
        Registry(refused).list()
    nobody = store_config(tmp_path, f"http://127.0.0.1:{free_port()}", s3_server.uri("models-nowhere"))
    with pytest.raises(ObjectStoreError, match="(?s)models-nowhere.*storage.endpoint"):
        Registry(nobody).latest()
