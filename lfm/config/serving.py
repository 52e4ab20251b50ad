"""Feast settings: where the generated Feast repo lives, which online store serves, TTL, server and ANN index.

The Feast repo (`repo_path`) holds what Feast generates: `feature_store.yaml` (written by `lfm register`),
`data/registry.db` (the SQL registry on sqlite; with the lakehouse on an object store the registry is
`<lakehouse>/_serving/feast/registry.pb` instead) and `data/online_store.db` (the sqlite online store). The
definitions themselves are code in the `feature_repo` package, built per model version from the model registry.
"""
from __future__ import annotations

import re
from enum import Enum

from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from lfm.config.schema import Strict
from lfm.names import MODEL_VERSION



class OnlineStoreKind(str, Enum):
    sqlite = "sqlite"
    redis = "redis"


class IndexKind(str, Enum):
    """FAISS index over a day's item vectors (inner product)."""

    flat = "flat"  # exact search; the reference for recall
    hnsw = "hnsw"  # graph index (inner product via the MIPS-to-L2 reduction): no training, high recall
    ivf = "ivf"  # inverted lists: needs training, scales to many millions of items


class RetrievalSettings(Strict):
    """Standalone retrieval (model-level transfer): an ANN index over the day's IR vectors."""

    index: IndexKind = IndexKind.hnsw
    hnsw_m: int = Field(32, ge=4, le=256)
    hnsw_ef_construction: int = Field(80, ge=8)
    hnsw_ef_search: int = Field(128, ge=1)  # raise for recall, lower for speed
    ivf_nlist: int = Field(0, ge=0)  # 0 = about 4 * sqrt(items)
    ivf_nprobe: int = Field(32, ge=1)
    threads: int = Field(1, ge=1)  # FAISS OpenMP threads in the serving process


class FeastSettings(Strict):
    repo_path: str = "./feature_repo"  # generated Feast repo: feature_store.yaml and data/
    project: str = "lfm_export"
    # sqlite file of Feast's SQL registry (relative to repo_path); a local lakehouse only: with the lakehouse on an
    # object store the registry is <lakehouse>/_serving/feast/registry.pb
    registry_file: str = "data/registry.db"
    online_file: str = "data/online_store.db"  # sqlite online store file (relative to repo_path)
    online_store: OnlineStoreKind = OnlineStoreKind.sqlite
    redis_connection: str = "127.0.0.1:6379"  # host:port[,db=N,password=...] as Feast's Redis store takes it
    redis_key_ttl_days: int = Field(0, ge=0)  # expire entity keys not rewritten for this long; 0 = never
    ttl_days: int = Field(2, ge=1)  # a daily refresh; one missed day is tolerated
    current_version: str | None = None  # pin the "current" model version; unset = keep the registered one
    # PIT join: a view's snapshots (in the rows' time range) up to this size are broadcast; above it, a
    # sort-merge join. Broadcasting tens of MB of vector arrays measured slower than the shuffle here.
    offline_broadcast_mb: int = Field(16, ge=0)
    # Training sets that come back to the driver (Arrow, or one parquet file) up to this many entity rows and
    # this much of pruned snapshots (Spark's estimate) are joined in Arrow there; 0 rows = always the Spark join.
    offline_local_rows: int = Field(2_000_000, ge=0)
    offline_local_mb: int = Field(2048, ge=0)
    server_host: str = "127.0.0.1"  # loopback unless configured otherwise
    server_port: int = Field(6566, ge=1, le=65535)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)

    @model_validator(mode="before")
    @classmethod
    def _removed_keys(cls, data: object) -> object:
        if isinstance(data, dict) and "entity_key_type" in data:
            raise PydanticCustomError(
                "removed_key", "feast.entity_key_type is no longer a setting: the key type now follows `schema`, the "
                "declared type of the user and item key columns in `sources` (e.g. "
                "sources.users.columns.<user_key>.type: string); delete feast.entity_key_type from the config")
        return data

    @field_validator("project")
    @classmethod
    def _project_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", v):
            raise ValueError("feast.project must be letters, digits and '_' and start with a letter")
        return v

    @field_validator("current_version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        if v is not None and not MODEL_VERSION.fullmatch(v):
            raise ValueError("feast.current_version must be a model version (a hex content hash)")
        return v
