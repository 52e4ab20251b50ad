"""Configs for tests: every writable path under a temporary root."""
from __future__ import annotations

from pathlib import Path

from lfm.config import LfmConfig, config_from_dict

REPO = Path(__file__).resolve().parents[2]
KUAIRAND = REPO.parent / "shared" / "data" / "kuairand-pure"


def make_config(root: Path, **overrides) -> LfmConfig:
    """A config whose every writable path lives under `root` (lakehouse, registry, Feast repo data)."""
    data = {
        "lakehouse": str(root / "lakehouse"),
        "registry": {"path": str(root / "registry")},
        **overrides,
    }
    return config_from_dict(data, "<test>", str(root))
