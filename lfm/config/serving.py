"""Feast settings: repo path, project, online store kind."""
from __future__ import annotations

from enum import Enum

from pydantic import Field

from lfm.config.schema import Strict


class OnlineStoreKind(str, Enum):
    sqlite = "sqlite"
    redis = "redis"


class FeastSettings(Strict):
    repo_path: str = "./feature_repo"
    project: str = "lfm_export"
    online_store: OnlineStoreKind = OnlineStoreKind.sqlite
    redis_connection: str = "127.0.0.1:6379"
    ttl_days: int = Field(2, ge=1)  # a daily refresh; one missed day is tolerated
    server_host: str = "127.0.0.1"  # loopback unless configured otherwise
    server_port: int = Field(6566, ge=1, le=65535)
