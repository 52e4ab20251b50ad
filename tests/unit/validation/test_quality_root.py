"""Where the gate writes GE results, Data Docs and reports: beside a local lakehouse, in `quality.context_dir`, or
in a working folder per object-store lakehouse whose files `publish` copies to `<lakehouse>/_quality/`."""
from __future__ import annotations

import pytest

from lfm.config import config_from_dict
from validation.context import address, docs_index, publish, quality_root, shared_home
from validation.errors import QualityError


def test_a_local_lakehouse_or_a_context_dir_keeps_its_quality_root(tmp_path):
    local = config_from_dict({"lakehouse": str(tmp_path / "lake")})
    assert quality_root(local) == tmp_path / "lake" / "_quality" and shared_home(local) is None
    assert docs_index(local) == tmp_path / "lake" / "_quality" / "gx/uncommitted/data_docs/local_site/index.html"
    publish(local)  # nothing to copy: the quality root is what every reader sees
    assert not (tmp_path / "lake").exists()
    chosen = config_from_dict({"lakehouse": "s3a://bucket/lake", "quality": {"context_dir": str(tmp_path / "q")}})
    assert quality_root(chosen) == tmp_path / "q" and shared_home(chosen) is None
    assert address(chosen, tmp_path / "q" / "reports" / "a.png") == tmp_path / "q" / "reports" / "a.png"
    with pytest.raises(QualityError, match="must be a local folder"):
        quality_root(config_from_dict({"quality": {"context_dir": "s3://bucket/q"}}))


def test_an_object_store_lakehouse_works_in_a_cache_folder_and_shares_on_the_store(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    lake = config_from_dict({"lakehouse": "s3a://bucket/lake/"})
    root = quality_root(lake)
    assert root.parent == tmp_path / "cache" / "lfm" / "quality" and len(root.name) == 12
    assert quality_root(config_from_dict({"lakehouse": "s3://bucket/lake"})) == root  # one store, two spellings
    assert quality_root(config_from_dict({"lakehouse": "s3://bucket/other"})) != root
    assert shared_home(lake).uri == "s3a://bucket/lake/_quality"
    assert docs_index(lake) == "s3a://bucket/lake/_quality/gx/uncommitted/data_docs/local_site/index.html"
    png = root / "reports" / "2022-05-06" / "r.png"
    assert address(lake, png) == "s3a://bucket/lake/_quality/reports/2022-05-06/r.png"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert quality_root(lake) == tmp_path / "home" / ".cache" / "lfm" / "quality" / root.name
