"""Security basics: injection-shaped dates, versions, run ids, table names and entity ids are refused before they
reach a SQL predicate or a path; the feature server binds to loopback by default; a checkpoint carrying a
pickled object is refused without running it. (Configs are parsed with yaml.safe_load: tests/test_config.py.)"""
from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.support.config import REPO, keyed_sources, make_config
from lfm.names import BadInput

D = dt.date(2022, 4, 27)
V = "a1b2c3d4e5f6a7b8c9d0"
SQL = "2022-04-27' OR '1'='1"
PATHS = "../../../etc/passwd"


def tiny_spec():
    from lfm.contract import ExportSpec

    return ExportSpec(V, cr_layer="dnn1", ur_dim=4, ir_dim=4, cr_dim=2, tau_hours=72.0, normalisation="layernorm",
                      state_ttl_days=None, schema_hash="0" * 16)


@pytest.mark.parametrize("argv", [
    ["run-daily", "--ds", SQL],
    ["run-daily", "--ds", "2022-04-27..2022-04-28; DROP TABLE runs"],
    ["run-daily", "--ds", "2022-04-27", "--model", PATHS],
    ["run-daily", "--ds", "2022-04-27", "--run-id", "../../tmp/x"],
    ["run-daily", "--ds", "2022-04-27", "--model", f"{V}' OR '1'='1"],
    ["status", "--model", "x' OR '1'='1"],
    ["status", "--ds", "2022-04-27/../.."],
    ["refresh", "--ds", "2022-04-27", "--model", f"{V} --"],
    ["materialize", "--ds", "DATE'2022-04-27' OR 1=1"],
    ["validate", "--ds", "2022-04-27') OR ('1'='1"],
    ["retrieve", "--user", "1", "--model", PATHS],
    ["models", "show", PATHS],
])
def test_cli_refuses_injection_shaped_values(spark, tmp_path, argv):
    from tests.support.cli import cli

    conf = tmp_path / "lfm.yaml"
    conf.write_text(yaml.safe_dump({"lakehouse": str(tmp_path / "lake"), "registry": {"path": str(tmp_path / "reg")},
                                    "feast": {"repo_path": str(tmp_path / "repo")}}))
    res = cli("--config", str(conf), *argv)
    assert res.code == 2, res
    assert "invalid" in res.err or "bad " in res.err, res.err  # argparse's refusal or the one-line BadInput
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lfm.yaml"]  # no lakehouse, registry or Feast repo


def test_api_refuses_injection_shaped_values_before_any_path_or_query(spark, tmp_path):
    from lakehouse.delta_io import ds_predicate, export_predicate
    from lakehouse.locks import day_lock
    from models.registry import Registry
    from pipeline.daily import run_days
    from pipeline.status import status_text
    from serving.materialize import materialize
    from validation.gate import run_gate
    from validation.status import verdicts

    cfg = make_config(tmp_path)
    calls = {
        "run_days ds": lambda: run_days(cfg, [SQL], lambda: spark),
        "run_days model": lambda: run_days(cfg, [D], lambda: spark, model_version=f"{V}'; --"),
        "run_days model newline": lambda: run_days(cfg, [D], lambda: spark, model_version=f"{V}\n"),
        "run_days run id": lambda: run_days(cfg, [D], lambda: spark, run_id="../../x"),
        "table path": lambda: cfg.table_path("events/../../etc"),
        "table name": lambda: cfg.table_path("runs; DROP TABLE runs"),
        "predicate": lambda: ds_predicate(["2022-04-27') OR (1=1"]),
        "export predicate": lambda: export_predicate([D], "abc' OR '1'='1"),
        "status model": lambda: status_text(cfg, model_version="x' OR '1'='1"),
        "gate verdict ds": lambda: verdicts(cfg, SQL, "0123456789abcdef"),
        "gate verdict export": lambda: verdicts(cfg, D, PATHS),
        "gate run id": lambda: run_gate(spark, cfg, D, tables=["events"], run_id="../x"),
        "materialize ds": lambda: materialize(spark, cfg, "2022-04-27 OR 1=1"),
        "registry": lambda: Registry(cfg).card(PATHS),
        "lock name": lambda: day_lock(cfg, "../daily", D, "r").__enter__(),
    }
    refused = {}
    for name, call in calls.items():
        with pytest.raises(BadInput) as err:
            call()
        refused[name] = str(err.value)
    assert all(msg.startswith("bad ") for msg in refused.values()), refused
    assert list(tmp_path.iterdir()) == []  # refused before anything was created


def test_entity_ids_never_reach_sql_as_text(spark, tmp_path):
    """Integer keys (KuaiRand's) refuse non-integers; string keys are bound parameters, looked up literally."""
    from feature_repo.specs import view_name
    from serving.online import OnlineReader
    from serving.register import register

    spec = tiny_spec()
    cfg = make_config(tmp_path / "int", feast={"repo_path": str(tmp_path / "int" / "repo")})
    register(cfg, [spec])
    reader = OnlineReader(cfg, V)
    with pytest.raises(BadInput, match="takes integer ids within int64"):
        reader.user_vectors(["1 OR 1=1"])
    reader.close()

    cfg = make_config(tmp_path / "str", feast={"repo_path": str(tmp_path / "str" / "repo")},
                      sources=keyed_sources(user_type="string", item_type="string"))
    register(cfg, [spec])
    reader = OnlineReader(cfg, V)
    try:
        ids = ["1' OR '1'='1", f'x"); DROP TABLE "lfm_export_{view_name("ur", spec.id)}"; --']
        got = reader.user_vectors(ids)
        assert not got.found["ur"].any() and not got.found["cr_user"].any()
        assert not reader.user_vectors(ids).found["ur"].any()  # the store and its tables are still there
    finally:
        reader.close()


def _listening(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* write them) of sockets listening on `port`."""
    out = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(name)
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                out.add(addr)
    return out


@pytest.mark.slow
def test_feature_server_binds_to_loopback_by_default(tmp_path):
    import requests

    from lfm.config import config_from_dict, load_config
    from serving.register import register
    from tests.support.redis_local import free_port

    assert config_from_dict({}).feast.server_host == "127.0.0.1"
    assert load_config(REPO / "lfm.yaml").feast.server_host == "127.0.0.1"
    if not Path("/proc/net/tcp").exists():
        pytest.skip("no /proc/net/tcp to read listening addresses from")
    cfg = make_config(tmp_path, feast={"repo_path": str(tmp_path / "repo")})
    register(cfg, [tiny_spec()])
    conf = tmp_path / "lfm.yaml"
    conf.write_text(yaml.safe_dump({"lakehouse": cfg.lakehouse, "feast": {"repo_path": str(tmp_path / "repo")}}))
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "--config", str(conf), "serve", "--port", str(port)],
                            cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not _listening(port) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)  # until uvicorn has bound its socket
        assert proc.poll() is None, proc.stdout.read()
        assert _listening(port) == {"0100007F"}  # 127.0.0.1 only: not 0.0.0.0, not an external interface
        assert requests.get(f"http://127.0.0.1:{port}/health", timeout=30).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class _Payload:
    """Unpickling this calls open(path, 'w'): a file appears only if the checkpoint's pickle is executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return builtins.open, (str(self.path), "w")


def test_checkpoint_with_a_pickled_object_is_refused_without_running_it(tmp_path):
    import torch

    from models.training.pretrain import pretrain
    from models.registry import CARD, WEIGHTS, CheckpointError, Registry
    from tests.support.tiny import tiny_config, tiny_table

    cfg = tiny_config(tmp_path)
    res = pretrain(tiny_table(200, 0), tiny_table(100, 1), cfg, progress=None)
    reg = Registry(cfg)
    card = reg.register(res.model, res.encoders, res.metrics)
    folder = reg.root / card.model_version
    marker = tmp_path / "code_ran"
    state = torch.load(folder / WEIGHTS, weights_only=True)
    torch.save({**state, "__payload__": _Payload(marker)}, folder / WEIGHTS)
    data = json.loads((folder / CARD).read_text())  # the attacker rewrites the recorded file hash too
    data["weights_file_sha256"] = hashlib.sha256((folder / WEIGHTS).read_bytes()).hexdigest()
    (folder / CARD).write_text(json.dumps(data))

    with pytest.raises(CheckpointError, match="cannot be read as tensor-only weights"):
        reg.load(card.model_version)
    with pytest.raises(CheckpointError):
        reg.path(card.model_version)  # what refresh's Extractor goes through
    assert not marker.exists()
    torch.load(folder / WEIGHTS, weights_only=False)  # the payload is live: plain unpickling runs it
    assert marker.exists()
