"""Receipts of the online store: which release of (ds, export) `lfm materialize` loaded, one small file per day.

The online store itself cannot say which release its rows came from (a rewritten day has the same snapshot time),
so materialize writes a receipt naming the release (refresh run, table versions) once every write of it succeeded
(or once it found a later day of the export online). A withdrawal removes the release's rows, then the receipt.
So a receipt that names anything but the day's current release is a withdrawn release still to be taken out,
and `run-daily` decides "materialized" and "withdrawn but still online" from it without touching the store.
Beside a local lakehouse the receipts are files of the Feast repo (`<repo>/data/online/<export>/<ds>.json`); with
the lakehouse on an object store they are objects (`<lakehouse>/_serving/online/<export>/<ds>.json`), so the
driver of the next run, on whichever machine, reads what this one wrote (`serving_home`).
Light on purpose (json and paths only): deciding that a finished day has nothing to do imports no Feast or Spark.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from lakehouse.artifacts import Artifacts
from lakehouse.objects import ObjectStoreError, Objects, open_store
from lakehouse.releases import Release
from lfm.contract import SERVING_DIR
from lfm.config import LfmConfig
from lfm.names import check_export_id, parse_ds
from lfm.storage import Location, location



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


def serving_home(cfg: LfmConfig, part: str, export_id: str) -> Location:
    """Where the export's serving state `part` ('online' receipts, 'ann' indexes) lives: in the Feast repo
    (`<repo>/data/<part>/<export>`) beside a local lakehouse, `<lakehouse>/_serving/<part>/<export>` when the
    lakehouse is on an object store (a driver's local disk does not outlive its run on a cluster)."""
    lake = cfg.location(cfg.lakehouse)
    if not lake.local:
        return lake.child(SERVING_DIR).child(part).child(check_export_id(export_id))
    from feature_repo.store import repo_dir

    return location(str(repo_dir(cfg) / "data" / part / check_export_id(export_id)))


def serving_files(cfg: LfmConfig, part: str, export_id: str) -> Artifacts:
    """The files of `serving_home`, on disk or on the lakehouse's object store."""
    return Artifacts.at(serving_home(cfg, part, export_id), cfg.storage.object_store_options())


def _files(cfg: LfmConfig, export_id: str) -> Artifacts:
    return serving_files(cfg, "online", export_id)


def _name(ds: dt.date | str) -> str:
    return f"{parse_ds(ds).isoformat()}.json"


def write(cfg: LfmConfig, release: Release) -> Receipt:
    """Record that the online store holds `release`, replacing the day's receipt whole (a local file is renamed
    into place; an object is put: either way a reader sees the old receipt or the new one, the last writer wins)."""
    files = _files(cfg, release.export_id)
    if files.where.local:
        files.where.path().mkdir(parents=True, exist_ok=True)
    body = json.dumps({"run_id": release.run_id, "table_versions": release.table_versions}, sort_keys=True)
    files.put(_name(release.ds), body.encode())
    return Receipt(release.ds, release.export_id, release.run_id, dict(release.table_versions))


def read(cfg: LfmConfig, export_id: str, ds: dt.date) -> Receipt | None:
    """The receipt of (ds, export), None when the online store holds no release of that day."""
    raw = _files(cfg, export_id).read(_name(ds))
    if raw is None:
        return None
    body = json.loads(raw)
    return Receipt(parse_ds(ds), export_id, body["run_id"], {k: int(v) for k, v in body["table_versions"].items()})


def days(cfg: LfmConfig, export_id: str) -> list[dt.date]:
    """The days of the export whose release the online store holds, oldest first."""
    home = serving_home(cfg, "online", export_id)
    if home.local:
        names = [p.name for p in home.path().glob("*.json")] if home.path().is_dir() else []
    else:
        names = [n for n in _object_names(cfg, home) if n.endswith(".json")]
    return sorted(parse_ds(n.removesuffix(".json")) for n in names)


def _object_names(cfg: LfmConfig, where: Location) -> list[str]:
    """The names of the objects directly under `where` (the shared seams list folders, not plain files)."""
    import obstore

    try:
        listed = obstore.list_with_delimiter(open_store(where, cfg.storage.object_store_options()))
    except Exception as err:  # the store unreachable, credentials refused: a message, not a traceback
        raise ObjectStoreError(f"listing {where.uri} failed: {err}") from None
    return [meta["path"].rpartition("/")[2] for meta in listed["objects"]]


def remove(cfg: LfmConfig, export_id: str, ds: dt.date) -> None:
    """The day's release is out of the online store (called last by a withdrawal)."""
    home = serving_home(cfg, "online", export_id)
    if home.local:
        (home.path() / _name(ds)).unlink(missing_ok=True)
    else:
        Objects(cfg, home).delete(_name(ds))
