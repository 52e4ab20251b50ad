"""Bad online requests get a clear answer at every edge (HTTP 400, an error naming the key in Python and the CLI),
never a 500 or a traceback: ids outside int64, unknown (misnamed) entity keys, a key the asked views need but the
request lacks (the answer shows a body that works), empty or null ids, no features, key lists of different
lengths. One side's views need that side's key alone, over HTTP and with `lfm lookup`; the README's request bodies
are answered. A real Feast repo and sqlite online store, written by the platform's writer (no Spark)."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import requests

from feature_repo.specs import service_name, view_name
from lfm.names import BadInput
from serving.errors import BadEntityRows, UnknownModelVersion
from tests.support.cli import cli
from tests.support.config import REPO, write_yaml
from tests.support.http import http_server
from tests.support.online_store import SPEC, T1, configured, write

IDS = [*range(10), 42]  # 42: the README's example user
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
        ({"feature_service": service, "entities": {user: [1]}},
         f"keyed by [{item!r}], but sends no such ids: send e.g. {{\"feature_service\": \"{service}\", "
         f"\"entities\": {{\"{user}\": [42], \"{item}\": [7]}}}}, or for the user's vectors alone "
         f"{{\"features\": [\"{view_name('ur', SPEC.id)}:ur\", \"{view_name('cr_user', SPEC.id)}:cr_user\"], "
         f"\"entities\": {{\"{user}\": [42]}}}}"),
        ({"features": [f"{view_name('ur', SPEC.id)}:ur"], "entities": {item: [1]}}, f"keyed by [{user!r}]"),
        ({"feature_service": service, "entities": {user: [1, 2], item: [1]}}, "differ in length"),
        ({"feature_service": service, "entities": {user: [], item: []}}, f"[{user!r}, {item!r}] hold no ids"),
        ({"features": [f"{view_name('ur', SPEC.id)}:ur"], "entities": {user: []}}, f"[{user!r}] hold no ids"),
        ({"features": [f"{view_name('ir', SPEC.id)}:ir"], "entities": {item: [None]}}, f"[{item!r}] hold null ids"),
        ({"features": [f"{view_name('ur', SPEC.id)}:nope"], "entities": {user: [1]}}, ":nope' is not registered"),
    ]


def http_only_bodies(cfg) -> list[tuple[dict, str]]:
    """Bodies only HTTP can send: no features (Python's reader then reads `lfm_current`), a null key list."""
    user, item = cfg.schema.user_key, cfg.schema.item_key
    return [({"entities": {user: [1]}}, 'the request names no features: send "feature_service"'),
            ({"features": [], "entities": {user: [1]}}, "names no features"),
            ({"feature_service": service_name(SPEC.id), "entities": {user: None, item: [1]}}, "hold null ids")]


def test_http_refuses_bad_keys_with_400_naming_them(online):
    from serving.server import build_app

    cfg, mats = online
    with http_server(build_app(cfg)) as url:
        for body, words in bad_bodies(cfg) + http_only_bodies(cfg):
            resp = requests.post(f"{url}/get-online-features", json=body, timeout=30)
            assert resp.status_code == 400, (body, resp.status_code, resp.text)
            assert words in resp.json()["detail"], (body, resp.json())
        for side, key, tables in (("user", cfg.schema.user_key, ("ur", "cr_user")),
                                  ("item", cfg.schema.item_key, ("ir", "cr_item"))):
            one_side = {"features": [f"{view_name(t, SPEC.id)}:{t}" for t in tables], "entities": {key: [3]}}
            resp = requests.post(f"{url}/get-online-features", json=one_side, timeout=30)
            assert resp.status_code == 200, (side, resp.text)
            got = {n: r["values"] for n, r in zip(resp.json()["metadata"]["feature_names"], resp.json()["results"])}
            for t in tables:
                np.testing.assert_array_equal(np.asarray(got[t][0], dtype=np.float32), mats[t][3])
        for body in readme_bodies():
            resp = requests.post(f"{url}/get-online-features", json=body, timeout=30)
            assert resp.status_code == 200, (body, resp.text)
            got = {n: r["values"] for n, r in zip(resp.json()["metadata"]["feature_names"], resp.json()["results"])}
            np.testing.assert_array_equal(np.asarray(got["ur"][0], dtype=np.float32), mats["ur"][IDS.index(42)])


def readme_bodies() -> list[dict]:
    """The request bodies of the README's curl examples (its `<export id>` filled in with the test's export)."""
    text = (REPO / "README.md").read_text()
    bodies = [json.loads(b.replace("<export id>", SPEC.id)) for b in re.findall(r"curl .*\\\n\s*-d '(\{.*\})'", text)]
    assert len(bodies) == 2, bodies  # lfm_current with both keys; a user alone by its refs
    return bodies


def test_cli_lookup_prints_one_sides_vectors_and_their_release(online, tmp_path):
    """`lfm lookup` (the README's verb) reads a user without an item id and an item without a user id, through the
    server's reader, and names the export and the release day; an id with nothing online exits 1."""
    cfg, mats = online
    conf = write_yaml(cfg, tmp_path / "lfm.yaml")
    run = cli("--config", str(conf), "lookup", "--user", "42", "--item", "7")
    assert run.code == 0, (run.out, run.err)
    lines = run.out.splitlines()
    assert lines[0] == f"user 42: export {SPEC.id} (model {SPEC.model_version}, CR layer dnn_0), release of 2022-05-05"
    head = ", ".join(f"{x:+.4f}" for x in mats["ur"][IDS.index(42)][:5])
    assert lines[1] == f"  ur          8-d [{head}, ...]", lines
    assert lines[3].startswith(f"item 7: export {SPEC.id}") and lines[5].startswith("  cr_item     4-d [")
    missing = cli("--config", str(conf), "lookup", "--user", "999")
    assert missing.code == 1 and "  ur       not online" in missing.out and "not online" in missing.out.splitlines()[0]
    for argv, words in ((("lookup",), "needs --user ID and/or --item ID"),
                        (("lookup", "--user", "o'brien"), "'user_id' takes integer ids")):
        refused = cli("--config", str(conf), *argv)
        assert refused.code == 2 and words in refused.err and "Traceback" not in refused.err, refused.err


def test_python_lookups_refuse_bad_keys(online):
    from serving.online import OnlineReader, get_online_features

    cfg, mats = online
    for body, words in bad_bodies(cfg):
        service = body.get("feature_service")
        with pytest.raises((BadEntityRows, BadInput, UnknownModelVersion)) as err:
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
