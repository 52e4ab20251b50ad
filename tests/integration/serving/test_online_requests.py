"""Bad online requests get a clear answer at every edge (HTTP 400, an error naming the key in Python and the CLI),
never a 500 or a traceback: ids outside int64, unknown (misnamed) entity keys, a key the asked views need but the
request lacks, key lists of different lengths. A real Feast repo and sqlite online store, written by the
platform's writer (no Spark)."""
from __future__ import annotations

import numpy as np
import pytest
import requests

from feature_repo.specs import service_name, view_name
from lfm.names import BadInput
from serving.errors import BadEntityRows
from tests.support.cli import cli
from tests.support.config import write_yaml
from tests.support.http import http_server
from tests.support.online_store import SPEC, T1, configured, write

IDS = list(range(10))
BEYOND = [2**63, -(2**63) - 1]


@pytest.fixture(scope="module")
def online(tmp_path_factory):
    cfg = configured(tmp_path_factory.mktemp("online_requests"), "sqlite", "int64")
    return cfg, write(cfg, IDS, T1, seed=5)


def bad_bodies(cfg) -> list[tuple[dict, str]]:
    """(request body, words its 400 must hold)."""
    user, item = cfg.schema.user_key, cfg.schema.item_key
    service = service_name(SPEC.id)
    return [
        ({"feature_service": service, "entities": {user: [2**63], item: [1]}}, f"{user!r} takes integer ids within int64"),
        ({"feature_service": service, "entities": {user: [1], item: [-(2**63) - 1]}}, f"{item!r} takes integer ids"),
        ({"feature_service": service, "entities": {"user": [1], item: [1]}}, "unknown entity key(s) ['user']"),
        ({"feature_service": service, "entities": {user: [1]}}, f"keyed by [{item!r}], but sends no such ids"),
        ({"features": [f"{view_name('ur', SPEC.id)}:ur"], "entities": {item: [1]}}, f"keyed by [{user!r}]"),
        ({"feature_service": service, "entities": {user: [1, 2], item: [1]}}, "differ in length"),
    ]


def test_http_refuses_bad_keys_with_400_naming_them(online):
    from serving.server import build_app

    cfg, mats = online
    with http_server(build_app(cfg)) as url:
        for body, words in bad_bodies(cfg):
            resp = requests.post(f"{url}/get-online-features", json=body, timeout=30)
            assert resp.status_code == 400, (body, resp.status_code, resp.text)
            assert words in resp.json()["detail"], (body, resp.json())
        user_only = {"features": [f"{view_name(t, SPEC.id)}:{t}" for t in ("ur", "cr_user")],
                     "entities": {cfg.schema.user_key: [3]}}
        resp = requests.post(f"{url}/get-online-features", json=user_only, timeout=30)
        assert resp.status_code == 200, resp.text
        got = {n: r["values"] for n, r in zip(resp.json()["metadata"]["feature_names"], resp.json()["results"])}
        np.testing.assert_array_equal(np.asarray(got["ur"][0], dtype=np.float32), mats["ur"][3])


def test_python_lookups_refuse_bad_keys(online):
    from serving.online import OnlineReader, get_online_features

    cfg, mats = online
    for body, words in bad_bodies(cfg):
        service = body.get("feature_service")
        with pytest.raises((BadEntityRows, BadInput)) as err:
            get_online_features(cfg, body["entities"], features=body.get("features"),
                                service=service if service else None)
        assert words in str(err.value), (body, str(err.value))
    got = get_online_features(cfg, [{cfg.schema.user_key: 4, cfg.schema.item_key: 4}], version=SPEC.id)
    np.testing.assert_array_equal(np.asarray(got["cr_item"][0], dtype=np.float32), mats["cr_item"][4])
    reader = OnlineReader(cfg, SPEC.id)
    try:
        for beyond in BEYOND:
            with pytest.raises(BadInput, match="within int64"):
                reader.request(beyond, [1])
    finally:
        reader.close()


def test_cli_retrieve_refuses_an_id_beyond_int64(online, tmp_path):
    cfg, _ = online
    conf = write_yaml(cfg, tmp_path / "lfm.yaml")
    run = cli("--config", str(conf), "retrieve", "--user", str(2**64), "--k", "3")
    assert run.code == 2, (run.out, run.err)
    assert "within int64" in run.err and "Traceback" not in run.err
