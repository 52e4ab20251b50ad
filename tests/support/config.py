"""Configs for tests: every writable path under a temporary root."""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from lfm.config import LfmConfig, config_from_dict
from lfm.config.platform import SparkSettings

REPO = Path(__file__).resolve().parents[2]
KUAIRAND = REPO.parent / "shared" / "data" / "kuairand-pure"
# The tests' JVMs compile with C1 only: their queries are tiny and short-lived, so C2's compile threads compete
# with the work for the two cores without paying back (a cold `lfm validate` of a tiny day: 82 -> 60 s). The
# platform's default keeps the JVM's own tiering: large days run C2-compiled loops. The cluster test gives the
# same option to its master, worker, driver and executors.
# C1 alone also shrinks the JVM's code cache to 48 MB (the tiered default is 240 MB); a test process's JVM that
# outgrows it dies ("Out of space in CodeCache for method handle intrinsic": Spark exits on that VM error), so
# the cache keeps the tiered size.
TEST_JAVA_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:ReservedCodeCacheSize=240m"
# For the same reason the tests' queries run interpreted: generating and compiling (Janino) the code of every
# plan costs more than running a few thousand rows through it (a warm gate of a tiny day: 10.1 -> 6.3 s; a
# released two-day lake, both variants run side by side: 301 -> 267 s). Spark's own test suites run this mode beside the compiled one; the platform's
# default compiles, as large days need.
TEST_SQL_CONF = {"spark.sql.codegen.factoryMode": "NO_CODEGEN"}
TEST_SPARK_CONF = {**SparkSettings().conf, **TEST_SQL_CONF, "spark.driver.extraJavaOptions": TEST_JAVA_OPTIONS}


def make_config(root: Path, **overrides) -> LfmConfig:
    """A config whose every writable path lives under `root` (lakehouse, registry, Feast repo data)."""
    data = {
        "lakehouse": str(root / "lakehouse"),
        "registry": {"path": str(root / "registry")},
        "spark": {"conf": TEST_SPARK_CONF},
        **overrides,
    }
    return config_from_dict(data, "<test>", str(root))


def write_yaml(cfg: LfmConfig, path: Path) -> Path:
    """An `lfm.yaml` for the CLI holding the config's lakehouse, registry and Feast settings."""
    data = {"lakehouse": cfg.lakehouse, "registry": {"path": cfg.registry.path},
            "feast": json.loads(cfg.feast.model_dump_json()), "spark": {"conf": cfg.spark.conf}}
    path.write_text(yaml.safe_dump(data))
    return path


def keyed_sources(user_key: str = "user_id", item_key: str = "video_id", user_type: str = "int",
                  item_type: str = "int") -> dict:
    """A minimal `sources:` block declaring only the keys, with their types: the key type (`LfmConfig.key_type`)
    follows these declarations, so tests of serving alone state their keys this way."""
    return {"events": {"path": "events.csv", "columns": {user_key: user_type, item_key: item_type}},
            "users": {"path": "users.csv", "columns": {user_key: user_type}},
            "items": {"path": "items.csv", "columns": {item_key: item_type}}}
