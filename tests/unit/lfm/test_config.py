"""Config: embedded default, file loading, relative paths, and one clear message for a bad key or value."""
from __future__ import annotations

import pytest

from lfm.config import ConfigError, FieldKind, load_config


def test_embedded_default_is_kuairand(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LFM_CONFIG", raising=False)
    cfg = load_config()
    assert cfg.schema.user_key == "user_id" and cfg.schema.item_key == "video_id"
    assert cfg.schema.scenario == "tab" and "is_click" in cfg.schema.tasks
    assert len(cfg.schema.user_fields) == 27 and len(cfg.schema.item_fields) == 9
    assert cfg.spark.master == "local[*]"
    assert cfg.table_path("events") == str(tmp_path / "data" / "lakehouse" / "events")


def test_repo_lfm_yaml_is_valid():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[3] / "lfm.yaml")
    assert cfg.feast.online_store.value in {"sqlite", "redis"}


def test_relative_paths_resolve_against_config_folder(tmp_path, monkeypatch):
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "lfm.yaml").write_text("lakehouse: ../lh\nspark:\n  master: spark://10.0.0.1:7077\n")
    monkeypatch.chdir("/")
    cfg = load_config(conf / "lfm.yaml")
    assert cfg.table_path("ur") == str(tmp_path / "lh" / "ur")
    assert cfg.spark.master == "spark://10.0.0.1:7077"


def test_object_store_lakehouse_is_kept_as_uri(tmp_path):
    (tmp_path / "c.yaml").write_text("lakehouse: s3a://bucket/lfm\n")
    assert load_config(tmp_path / "c.yaml").table_path("ir") == "s3a://bucket/lfm/ir"


def test_env_var_selects_config(tmp_path, monkeypatch):
    (tmp_path / "other.yaml").write_text("schema:\n  user_fields: [{name: a}, {name: b, kind: numeric}]\n")
    monkeypatch.setenv("LFM_CONFIG", str(tmp_path / "other.yaml"))
    cfg = load_config()
    assert [f.kind for f in cfg.schema.user_fields] == [FieldKind.categorical, FieldKind.numeric]


@pytest.mark.parametrize("text, named", [
    ("lakehous: ./x\n", "lakehous: unknown key"),
    ("spark:\n  mastr: local\n", "spark.mastr: unknown key"),
    ("refresh:\n  tau_hours: -1\n", "refresh.tau_hours"),
    ("feast:\n  online_store: cassandra\n", "feast.online_store"),
    ("schema:\n  user_fields: [{name: a, kind: text}]\n", "schema.user_fields.0.kind"),
    ("schema:\n  tasks: []\n", "schema"),
])
def test_bad_key_or_value_names_it(tmp_path, text, named):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "bad.yaml")
    assert named in str(err.value)


def test_missing_and_unparseable_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "x.yaml").write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "x.yaml")
    (tmp_path / "y.yaml").write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "y.yaml")
