"""Shared fixtures: one real Delta-enabled SparkSession per test session, configs over temporary lakehouses."""
from __future__ import annotations

from pathlib import Path

import pytest

from lfm.config import LfmConfig, config_from_dict

REPO = Path(__file__).resolve().parents[1]
KUAIRAND = REPO.parent / "shared" / "data" / "kuairand-pure"


def make_config(root: Path, **overrides) -> LfmConfig:
    """A config whose every writable path lives under `root` (lakehouse, registry, Feast repo data)."""
    data = {
        "lakehouse": str(root / "lakehouse"),
        "registry": {"path": str(root / "registry")},
        **overrides,
    }
    return config_from_dict(data, "<test>", str(root))


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    from spark_jobs.session import get_spark

    cfg = make_config(tmp_path_factory.mktemp("spark"))
    session = get_spark(cfg)
    yield session
    session.stop()


@pytest.fixture
def cfg(tmp_path) -> LfmConfig:
    return make_config(tmp_path)


@pytest.fixture(scope="session")
def synth_source(tmp_path_factory) -> Path:
    """A small synthetic data set in the KuaiRand layout, written once per session."""
    from spark_jobs.synth import SynthSpec, write_synthetic

    out = tmp_path_factory.mktemp("synth")
    write_synthetic(SynthSpec(users=300, items=120, days=4, events_per_day=1500, seed=7, start="2022-04-25"), out)
    return out
