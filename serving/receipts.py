"""Receipts of the online store: which release of (ds, export) `lfm materialize` loaded, one small file per day.

The online store itself cannot say which release its rows came from (a rewritten day has the same snapshot time),
so materialize writes a receipt naming the release (refresh run, table versions) once every write of it succeeded
(or once it found a later day of the export online). A withdrawal removes the release's rows, then the receipt.
So a receipt that names anything but the day's current release is a withdrawn release still to be taken out,
and `run-daily` decides "materialized" and "withdrawn but still online" from it without touching the store.
Light on purpose (json and paths only): deciding that a finished day has nothing to do imports no Feast or Spark.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path

from lakehouse.releases import Release
from lfm.config import LfmConfig
from lfm.names import check_export_id, parse_ds


@dataclass(frozen=True)
class Receipt:
    """The release a day's online rows came from."""

    ds: dt.date
    export_id: str
    run_id: str  # the refresh run that wrote the released candidate
    table_versions: dict[str, int]

    def names(self, release: Release | None) -> bool:
        """True when `release` is the very release this receipt loaded (withdrawn rows never match)."""
        return (release is not None and release.released and release.run_id == self.run_id
                and release.table_versions == self.table_versions)


def receipts_dir(cfg: LfmConfig, export_id: str) -> Path:
    from feature_repo.store import repo_dir

    return repo_dir(cfg) / "data" / "online" / check_export_id(export_id)


def _path(cfg: LfmConfig, export_id: str, ds: dt.date) -> Path:
    return receipts_dir(cfg, export_id) / f"{parse_ds(ds).isoformat()}.json"


def write(cfg: LfmConfig, release: Release) -> Receipt:
    """Record that the online store holds `release` (written to a temporary file, then renamed: whole or absent)."""
    path = _path(cfg, release.export_id, release.ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    staging.write_text(json.dumps({"run_id": release.run_id, "table_versions": release.table_versions},
                                  sort_keys=True))
    staging.replace(path)
    return Receipt(release.ds, release.export_id, release.run_id, dict(release.table_versions))


def read(cfg: LfmConfig, export_id: str, ds: dt.date) -> Receipt | None:
    """The receipt of (ds, export), None when the online store holds no release of that day."""
    path = _path(cfg, export_id, ds)
    if not path.is_file():
        return None
    body = json.loads(path.read_text())
    return Receipt(parse_ds(ds), export_id, body["run_id"], {k: int(v) for k, v in body["table_versions"].items()})


def days(cfg: LfmConfig, export_id: str) -> list[dt.date]:
    """The days of the export whose release the online store holds, oldest first."""
    folder = receipts_dir(cfg, export_id)
    return sorted(parse_ds(p.stem) for p in folder.glob("*.json")) if folder.is_dir() else []


def remove(cfg: LfmConfig, export_id: str, ds: dt.date) -> None:
    """The day's release is out of the online store (called last by a withdrawal)."""
    _path(cfg, export_id, ds).unlink(missing_ok=True)
