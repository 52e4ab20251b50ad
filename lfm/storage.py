"""Where a path lives: the one place that tells this machine's disk from an object store.

Every reader and writer of the platform asks `location(...)` instead of looking for a scheme in the text, so a new
backend is a new entry in `SCHEMES`, never another test spread over the packages. A path without a scheme (or
`file://`) is on this machine's file system; `s3://` and `s3a://` are one S3-API object store, spelled `s3a://`
for Spark's Hadoop connector and `s3://` for delta-rs; other schemes (`gs://`, `abfss://`, ...) are object stores
that Spark reaches through its own connectors.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from urllib.parse import unquote


class StorageKind(str, Enum):
    """What holds a path: this machine's disk, or an object store its processes share over the network."""

    local = "local"
    s3 = "s3"  # an S3-API store: AWS S3, MinIO, SeaweedFS, Ceph
    object_store = "object_store"  # another store Spark reaches through its own connector (GCS, ADLS, ...)


SCHEMES = {"file": StorageKind.local, "s3": StorageKind.s3, "s3a": StorageKind.s3}
SPARK_SCHEME = {StorageKind.s3: "s3a"}  # Spark's Hadoop connector for the kind
DELTA_RS_SCHEME = {StorageKind.s3: "s3"}  # delta-rs's (object_store's) scheme for the kind


@dataclass(frozen=True)
class Location:
    """A path or URI with what holds it; `uri` keeps the text as given (a local path is absolute)."""

    uri: str
    kind: StorageKind
    scheme: str = ""

    @property
    def local(self) -> bool:
        return self.kind == StorageKind.local

    def path(self) -> Path:
        """The file-system path of a local location (`file://` removed)."""
        if not self.local:
            raise ValueError(f"{self.uri} is on an object store, not a local path")
        return Path(unquote(self.uri.removeprefix("file://")) if self.scheme == "file" else self.uri)

    def child(self, name: str) -> "Location":
        """The location of `name` inside this one."""
        if self.local:
            return location(str(self.path() / name))
        return Location(self.uri.rstrip("/") + "/" + name, self.kind, self.scheme)

    def _as(self, schemes: dict[StorageKind, str]) -> str:
        if self.local:
            return str(self.path())
        scheme = schemes.get(self.kind)
        return self.uri if scheme is None else scheme + self.uri[len(self.scheme):]

    def for_spark(self) -> str:
        """The text Spark reads and writes it by (`s3a://` for an S3-API store)."""
        return self._as(SPARK_SCHEME)

    def for_delta_rs(self) -> str:
        """The text delta-rs reads and writes it by (`s3://` for an S3-API store)."""
        return self._as(DELTA_RS_SCHEME)


def scheme_of(text: str) -> str:
    """The URI scheme of `text` ('' for a plain path)."""
    head, sep, _ = text.partition("://")
    return head.lower() if sep and head.isidentifier() else ""


def location(text: str, base_dir: str | Path | None = None) -> Location:
    """Where `text` lives; a relative local path resolves against `base_dir` (the config file's folder)."""
    scheme = scheme_of(text)
    if scheme:
        return Location(text, SCHEMES.get(scheme, StorageKind.object_store), scheme)
    path = Path(text).expanduser()
    if not path.is_absolute():
        path = ((Path(base_dir) if base_dir is not None else Path.cwd()) / path).resolve()
    return Location(str(path), StorageKind.local)


def is_local(text: str) -> bool:
    """True for a path on this machine's file system (no scheme, or `file://`)."""
    return SCHEMES.get(scheme_of(text), StorageKind.local if not scheme_of(text) else None) == StorageKind.local
