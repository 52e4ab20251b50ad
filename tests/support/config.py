"""Configs for tests: every writable path under a temporary root."""
from __future__ import annotations

from pathlib import Path

from lfm.config import LfmConfig, config_from_dict

REPO = Path(__file__).resolve().parents[2]
KUAIRAND = REPO.parent / "shared" / "data" / "kuairand-pure"
# The JVMs of a test run live a few minutes on kilobytes of data: the C1 compiler alone and the serial collector
# spend about a quarter less CPU there than the server defaults (tests/integration/data/test_ingest_sources.py:
# 181 -> 134 CPU seconds). tests/conftest.py hands them to every JVM spark-submit starts.
TEST_JVM_OPTIONS = "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"


def make_config(root: Path, **overrides) -> LfmConfig:
    """A config whose every writable path lives under `root` (lakehouse, registry, Feast repo data)."""
    data = {
        "lakehouse": str(root / "lakehouse"),
        "registry": {"path": str(root / "registry")},
        **overrides,
    }
    return config_from_dict(data, "<test>", str(root))
