"""Small objects on an object store (leases today), with the conditional writes that make them safe to share.

Every machine of a cluster sees the same object store, and an S3-API store refuses a create whose key exists
(`If-None-Match: *`) and a replace whose ETag changed (`If-Match`): that is all a lease needs, with no DynamoDB.
Reached through obstore (Rust `object_store`, the same client delta-rs uses, with the same options:
`StorageSettings.object_store_options`); credentials come from the standard AWS variables or files.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lfm.config import LfmConfig
from lfm.errors import LfmError
from lfm.storage import Location

if TYPE_CHECKING:
    from obstore.store import ObjectStore


class ObjectStoreError(LfmError):
    """The object store refused or could not be reached; the message names the object and the cause."""


class ObjectExists(ObjectStoreError):
    """A create found the key taken."""


class ObjectChanged(ObjectStoreError):
    """A conditional replace found another version than the one it was based on."""


@dataclass(frozen=True)
class Stored:
    """An object's bytes and the ETag they were read at."""

    data: bytes
    etag: str


def open_store(where: Location, options: Mapping[str, str]) -> ObjectStore:
    """An obstore store rooted at `where`, from delta-rs's options (`allow_http` is a client option in obstore)."""
    from obstore.store import from_url

    config = dict(options)
    allow_http = config.pop("aws_allow_http", "false") == "true"
    return from_url(where.for_delta_rs(), config=config, client_options={"allow_http": allow_http})


class Objects:
    """Conditional reads and writes of the objects under one object-store prefix (`Location`)."""

    def __init__(self, cfg: LfmConfig, where: Location) -> None:
        if where.local:
            raise ObjectStoreError(f"{where.uri} is a local path: local files need no object store")
        self.where = where
        self.store = open_store(where, cfg.storage.object_store_options())

    def _name(self, key: str) -> str:
        return f"{self.where.uri.rstrip('/')}/{key}"

    def create(self, key: str, data: bytes) -> str:
        """Write `key` only if it does not exist (`If-None-Match: *`); its ETag."""
        import obstore
        from obstore.exceptions import AlreadyExistsError, PreconditionError

        try:
            return str(obstore.put(self.store, key, data, mode="create")["e_tag"])
        except (AlreadyExistsError, PreconditionError):
            raise ObjectExists(f"{self._name(key)} exists") from None
        except Exception as err:  # the store unreachable, credentials refused: a message, not a traceback
            raise ObjectStoreError(f"writing {self._name(key)} failed: {err}") from None

    def replace(self, key: str, data: bytes, etag: str) -> str:
        """Overwrite `key` only if it is still at `etag` (`If-Match`); the new ETag."""
        import obstore
        from obstore.exceptions import PreconditionError

        try:
            return str(obstore.put(self.store, key, data, mode={"e_tag": etag})["e_tag"])
        except (PreconditionError, FileNotFoundError):
            raise ObjectChanged(f"{self._name(key)} changed since ETag {etag}") from None
        except Exception as err:
            raise ObjectStoreError(f"replacing {self._name(key)} failed: {err}") from None

    def read(self, key: str) -> Stored | None:
        """The object and its ETag, or None when there is none."""
        import obstore

        try:
            got = obstore.get(self.store, key)
            return Stored(bytes(got.bytes()), str(got.meta["e_tag"]))
        except FileNotFoundError:  # obstore raises the built-in for a missing object
            return None
        except Exception as err:
            raise ObjectStoreError(f"reading {self._name(key)} failed: {err}") from None

    def delete(self, key: str) -> None:
        import obstore

        try:
            obstore.delete(self.store, key)
        except FileNotFoundError:
            return
        except Exception as err:
            raise ObjectStoreError(f"deleting {self._name(key)} failed: {err}") from None
