"""The storage seam: which paths are local and how each engine spells an object-store location."""
from __future__ import annotations

from pathlib import Path

import pytest

from lfm.storage import StorageKind, is_local, location
from tests.support.config import make_config


@pytest.mark.parametrize("text,kind", [
    ("/data/lake", StorageKind.local), ("lake", StorageKind.local), ("file:///data/lake", StorageKind.local),
    ("s3://bucket/lake", StorageKind.s3), ("s3a://bucket/lake", StorageKind.s3), ("S3A://bucket/lake", StorageKind.s3),
    ("gs://bucket/lake", StorageKind.object_store), ("abfss://c@acct.dfs.core.windows.net/lake", StorageKind.object_store),
])
def test_the_kind_follows_the_scheme(text, kind):
    assert location(text).kind == kind
    assert is_local(text) == (kind == StorageKind.local)


def test_each_engine_gets_its_own_spelling_of_an_s3_location():
    where = location("s3://bucket/lake").child("events")
    assert where.for_spark() == "s3a://bucket/lake/events"
    assert where.for_delta_rs() == "s3://bucket/lake/events"
    assert location("s3a://bucket/lake/").child("ur").for_delta_rs() == "s3://bucket/lake/ur"
    assert location("gs://bucket/lake").child("ur").for_spark() == "gs://bucket/lake/ur"


def test_local_paths_resolve_against_the_config_folder_and_unquote_file_uris(tmp_path):
    assert location("lake", tmp_path).path() == (tmp_path / "lake").resolve()
    assert location("file:///data/my%20lake").path() == Path("/data/my lake")
    assert location("/data/lake").child("ur").uri == "/data/lake/ur"
    with pytest.raises(ValueError, match="object store"):
        location("s3://bucket/lake").path()


def test_the_config_places_tables_through_the_seam(tmp_path):
    local = make_config(tmp_path)
    assert local.table_path("ur") == str(local.resolve(local.lakehouse) / "ur")
    remote = make_config(tmp_path, lakehouse="s3a://bucket/lfm/")
    assert remote.table_path("ur") == "s3a://bucket/lfm/ur"
    from lfm.errors import LfmError

    with pytest.raises(LfmError, match="object store"):
        remote.resolve(remote.lakehouse)


def test_no_package_tests_for_a_scheme_but_the_seam():
    """Only `lfm.storage` looks at `://`; every other place asks it (a new backend is config, never another test)."""
    from tests.support.config import REPO

    packages = ("lfm", "lakehouse", "models", "inference", "spark_jobs", "validation", "feature_repo", "serving",
                "pipeline", "cli")
    offenders = [f"{path.relative_to(REPO)}:{n}" for pkg in packages for path in sorted((REPO / pkg).rglob("*.py"))
                 if path != REPO / "lfm" / "storage.py"
                 for n, line in enumerate(path.read_text().splitlines(), 1) if '"://"' in line or "'://'" in line]
    assert not offenders, offenders
