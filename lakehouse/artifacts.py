"""Files written once and read by many machines (model checkpoints and cards): one folder on this machine's disk,
or one prefix of an object store, chosen by the root's `Location` alone.

Built from a root and the non-secret store options (`StorageSettings.object_store_options`, the ones delta-rs
uses), never from a whole config, so a process that shares no disk and no objects with the driver (a Spark
executor) can open it from what a pickled closure carries; credentials come from that process's own environment
(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...).

An object store has no rename, so a folder of several files cannot appear at once as it does on disk: `publish`
writes its marker file last and create-only (`If-None-Match: *`), and a folder counts as there once its marker is.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from lakehouse.objects import ObjectStoreError, open_store
from lfm.names import BadInput
from lfm.storage import Location

if TYPE_CHECKING:  # obstore is imported where a store is opened: a local registry never loads it
    from obstore.store import ObjectStore

_SECRET_WORDS = ("access_key", "secret", "session_token", "password")  # credentials: never carried, never written
_FIX = ("check that the store is reachable (storage.endpoint, storage.allow_http, storage.region in lfm.yaml) and "
        "that this process's AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) may read and write it")


def without_secrets(options: Mapping[str, str] | None) -> dict[str, str]:
    """The options as a plain dict, refusing credentials: what is pickled or written must not hold them."""
    out = dict(options or {})
    secret = sorted(k for k in out if any(word in k.lower() for word in _SECRET_WORDS))
    if secret:
        raise BadInput(f"store options {secret} are credentials: pass the non-secret options "
                       "(cfg.storage.object_store_options()) and keep credentials in the AWS environment variables")
    return out


@dataclass(frozen=True)
class Artifacts:
    """Named files under one root, on disk (`store` None) or under `prefix` of an obstore store."""

    where: Location
    store: ObjectStore | None = None
    prefix: str = ""  # the key of `where` inside `store`, '' or ending in '/'

    @classmethod
    def at(cls, where: Location, options: Mapping[str, str] | None = None) -> Artifacts:
        """The files under `where`; `options` reach an object store (unused for a local folder)."""
        return cls(where) if where.local else cls(where, open_store(where, options or {}))

    def child(self, name: str) -> Artifacts:
        """The files of the folder `name`, sharing this root's store client."""
        return replace(self, where=self.where.child(name), prefix=f"{self.prefix}{name}/")

    def uri(self, name: str = "") -> str:
        """The path or URI of `name` (of this folder itself when empty), for messages."""
        return self.where.child(name).uri if name else self.where.uri

    def address(self) -> Path | str:
        """A local folder's `Path` (what local tools take), or the object-store URI."""
        return self.where.path() if self.where.local else self.where.uri

    # ---- reading ----
    def read(self, name: str) -> bytes | None:
        """The bytes of `name`, or None when there is none."""
        if self.store is None:
            path = self.where.path() / name
            return path.read_bytes() if path.is_file() else None
        import obstore

        try:
            return bytes(obstore.get(self.store, self.prefix + name).bytes())
        except FileNotFoundError:  # obstore raises the built-in for a missing object
            return None
        except Exception as err:  # unreachable, credentials refused: a message with the fix, not a traceback
            raise self._failed("reading", name, err) from None

    def published(self, folder: str, marker: str) -> bool:
        """Whether `publish` completed `folder`: on disk the folder is there (it appears whole), on a store its
        marker is (written last)."""
        if self.store is None:
            return (self.where.path() / folder).is_dir()
        import obstore

        try:
            obstore.head(self.store, f"{self.prefix}{folder}/{marker}")
            return True
        except FileNotFoundError:
            return False
        except Exception as err:
            raise self._failed("reading", f"{folder}/{marker}", err) from None

    def folders(self, marker: str) -> list[str]:
        """The names of the folders `publish` completed (see `published`), sorted; folders being written on disk
        (named '.*') and marker-less prefixes on a store are not among them."""
        if self.store is None:
            root = self.where.path()
            if not root.is_dir():
                return []
            return sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        import obstore

        try:
            keys = [meta["path"] for batch in obstore.list(self.store, self.prefix or None) for meta in batch]
        except Exception as err:
            raise self._failed("listing", "", err) from None
        rel = (key[len(self.prefix):].split("/") for key in keys)
        return sorted(parts[0] for parts in rel if len(parts) == 2 and parts[1] == marker)

    # ---- writing ----
    def put(self, name: str, data: bytes) -> None:
        """Replace `name` whole: a reader sees the old bytes or the new ones, never a mix."""
        if self.store is None:
            path = self.where.path() / name
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                tmp.write_bytes(data)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            return
        import obstore

        try:
            obstore.put(self.store, self.prefix + name, data)
        except Exception as err:
            raise self._failed("writing", name, err) from None

    def publish(self, folder: str, files: Mapping[str, bytes], marker: str) -> None:
        """Write the new folder `folder` holding `files` so that no reader sees it half-written; a folder that is
        there already is left as it is (the first writer of a content-addressed folder wins).

        On disk the files are written into a hidden folder renamed into place; on a store the files other than
        `marker` are put first and `marker` last, create-only, so a folder whose writer died stays invisible.
        """
        if self.published(folder, marker):
            return
        if self.store is None:
            self._publish_folder(folder, files)
            return
        for name, data in files.items():
            if name != marker:
                self.put(f"{folder}/{name}", data)
        self._create(f"{folder}/{marker}", files[marker])

    def _publish_folder(self, folder: str, files: Mapping[str, bytes]) -> None:
        root = self.where.path()
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder}-", dir=root))
        try:
            for name, data in files.items():
                (tmp / name).write_bytes(data)
            os.replace(tmp, root / folder)  # atomic: readers see no half-written folder
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _create(self, name: str, data: bytes) -> None:
        """Write `name` only if it does not exist (`If-None-Match: *`): a racing writer's object is kept."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            obstore.put(self.store, self.prefix + name, data, mode="create")
        except (AlreadyExistsError, PreconditionError):
            return
        except Exception as err:
            raise self._failed("writing", name, err) from None

    def _failed(self, doing: str, name: str, err: Exception) -> ObjectStoreError:
        cause = (str(err).strip().splitlines() or [""])[0][:300]
        return ObjectStoreError(f"{doing} {self.uri(name)} failed ({type(err).__name__}: {cause}); {_FIX}")
