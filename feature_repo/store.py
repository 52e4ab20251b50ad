"""The generated `feature_store.yaml`: one Feast config derived from `lfm.yaml`, in memory and on disk.

- registry: Feast's SQL registry on a sqlite file (`<repo_path>/data/registry.db`) beside a local lakehouse; with the
  lakehouse on an S3-API store, Feast's file registry on the store itself (`<lakehouse>/_serving/feast/registry.pb`,
  Feast's `S3RegistryStore` through boto3), so every driver of the cluster sees the same exports and `lfm_current`
  (`serving.register` applies to it only while holding the registry's lease: Feast writes it whole);
- offline store: Spark over the Delta tables, on the platform's Delta-enabled session (Feast reuses an active
  SparkSession and ignores `spark_conf`, so callers start it with `spark_jobs.session.get_spark` first);
- online store: sqlite (`<repo_path>/data/online_store.db`) or Redis (`feast.redis_connection`).
The yaml is written for Feast's own CLI (`feast -c <repo_path> feature-views list`); the platform builds the
`RepoConfig` from `lfm.yaml` directly so the two can never disagree.
"""
from __future__ import annotations

import datetime as dt
import os
import threading
import uuid
import warnings
from pathlib import Path

import yaml

from lfm.config import LfmConfig
from lfm.contract import SERVING_DIR
from lfm.config.serving import OnlineStoreKind
from lfm.storage import Location, StorageKind

REGISTRY_FOLDER = (SERVING_DIR, "feast")  # under an object-store lakehouse: Feast's registry, shared by every driver
REGISTRY_OBJECT = "registry.pb"
REGISTRY_CACHE_SECONDS = 60  # how stale a reader's copy may get (writers refresh it under the lease first)
ENDPOINT_VARIABLE = "FEAST_S3_ENDPOINT_URL"  # the only way Feast's S3RegistryStore takes an endpoint


def quiet_feast_warnings() -> None:
    """Feast warns on every Spark source/offline-store call that its Spark API is "alpha" (we pin feast 0.67.0).

    Its spark module installs `simplefilter("once", RuntimeWarning)` at import, so ours goes in after it.
    """
    import feast.infra.offline_stores.contrib.spark_offline_store.spark  # noqa: F401

    warnings.filterwarnings("ignore", message=r"The spark (data source API|offline store) is an experimental",
                            category=RuntimeWarning)


def repo_dir(cfg: LfmConfig) -> Path:
    return cfg.resolve(cfg.feast.repo_path)


def _in_repo(cfg: LfmConfig, rel: str) -> Path:
    p = Path(rel).expanduser()
    return p if p.is_absolute() else repo_dir(cfg) / p


def registry_file(cfg: LfmConfig) -> Path:
    return _in_repo(cfg, cfg.feast.registry_file)


def online_file(cfg: LfmConfig) -> Path:
    return _in_repo(cfg, cfg.feast.online_file)


def registry_location(cfg: LfmConfig) -> Location | None:
    """Where Feast's registry lives on the object store: `<lakehouse>/_serving/feast/registry.pb` when the lakehouse
    is on an S3-API store; None when it is the sqlite file `registry_file(cfg)` (a local lakehouse, or a store
    Feast's registry cannot reach with the `storage:` settings)."""
    where = cfg.location(cfg.lakehouse)
    if where.kind != StorageKind.s3:
        return None
    return _registry_folder(where).child(REGISTRY_OBJECT)


def _registry_folder(lakehouse: Location) -> Location:
    where = lakehouse
    for part in REGISTRY_FOLDER:
        where = where.child(part)
    return where


def _registry(cfg: LfmConfig) -> dict:
    on_store = registry_location(cfg)
    if on_store is None:
        return {"registry_type": "sql", "path": f"sqlite:///{registry_file(cfg)}",
                "cache_ttl_seconds": REGISTRY_CACHE_SECONDS}
    # Feast picks its S3RegistryStore by the `s3://` scheme (delta-rs spells an S3-API store the same way)
    return {"registry_type": "file", "path": on_store.for_delta_rs(), "cache_ttl_seconds": REGISTRY_CACHE_SECONDS}


def config_dict(cfg: LfmConfig) -> dict:
    """The content of `feature_store.yaml` for this config."""
    f = cfg.feast
    if f.online_store == OnlineStoreKind.redis:
        online: dict = {"type": "redis", "connection_string": f.redis_connection}
        if f.redis_key_ttl_days:
            online["key_ttl_seconds"] = f.redis_key_ttl_days * 86400
    else:
        online = {"type": "sqlite", "path": str(online_file(cfg))}
    return {
        "project": f.project,
        "provider": "local",
        "registry": _registry(cfg),
        "offline_store": {"type": "spark"},
        "online_store": online,
        "entity_key_serialization_version": 3,
    }


def repo_config(cfg: LfmConfig):
    from feast.repo_config import RepoConfig

    if registry_location(cfg) is None:
        registry_file(cfg).parent.mkdir(parents=True, exist_ok=True)
    online_file(cfg).parent.mkdir(parents=True, exist_ok=True)
    return RepoConfig(repo_path=repo_dir(cfg), **config_dict(cfg))


def write_feature_store_yaml(cfg: LfmConfig) -> Path:
    """Write `<repo_path>/feature_store.yaml` (generated; do not edit, change lfm.yaml instead)."""
    path = repo_dir(cfg) / "feature_store.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# generated by `lfm register` from lfm.yaml; edit lfm.yaml, not this file\n"
    if registry_location(cfg) is not None and cfg.storage.endpoint:
        text += (f"# Feast's own CLI reaches this registry with {ENDPOINT_VARIABLE}={cfg.storage.endpoint} and the "
                 "AWS credentials in its environment\n")
    text += yaml.safe_dump(config_dict(cfg), sort_keys=False)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


_boto_lock = threading.RLock()  # the process's boto3 setup, and Feast opening the registry by it
_boto_session: tuple[tuple, object] | None = None  # (endpoint, region, addressing style), the session set up
_seeded: set[str] = set()  # registry objects known to exist (this process saw or created them)


def reach_registry_store(cfg: LfmConfig) -> None:
    """Point Feast's S3 registry store at the configured S3-API store, the way Feast and boto3 document it.

    Feast's `S3RegistryStore` (feast/infra/registry/s3.py) builds its client as `boto3.resource("s3",
    endpoint_url=os.environ.get("FEAST_S3_ENDPOINT_URL"))`: the environment variable is its only public way to take
    an endpoint, so this process's `FEAST_S3_ENDPOINT_URL` is set to `storage.endpoint` (removed when the config
    names none: the store is AWS itself). The region and the addressing style go into boto3's default session
    (`boto3.setup_default_session`, whose `resource()` Feast calls), from `storage.region` and
    `storage.virtual_hosted_style` (botocore's `s3.addressing_style`: "path" or "virtual"), so the registry is
    reached exactly like the lakehouse's tables; credentials stay with boto3's default chain (the standard AWS
    variables or files). Set up once per setting per process; call it before Feast opens the registry.
    """
    global _boto_session
    import boto3
    import botocore.session
    from botocore.config import Config

    s = cfg.storage
    want = (s.endpoint, s.region, "virtual" if s.virtual_hosted_style else "path")
    with _boto_lock:
        if s.endpoint:
            os.environ[ENDPOINT_VARIABLE] = s.endpoint
        else:
            os.environ.pop(ENDPOINT_VARIABLE, None)
        if _boto_session is not None and _boto_session[0] == want and boto3.DEFAULT_SESSION is _boto_session[1]:
            return
        core = botocore.session.get_session()
        core.set_default_client_config(Config(s3={"addressing_style": want[2]}))
        boto3.setup_default_session(botocore_session=core, region_name=s.region)
        _boto_session = (want, boto3.DEFAULT_SESSION)


def _seed_registry(cfg: LfmConfig, where: Location) -> None:
    """Create an empty registry object if there is none, create-only (`If-None-Match: *`).

    Feast's registry writes an empty registry itself when it finds none, with a plain put: a reader opening the
    store just as the first `lfm register` writes could then erase that registration. With the object always there,
    Feast only writes it when asked to (`serving.register`, under the registry's lease: `registry_held`)."""
    if where.uri in _seeded:
        return
    from feast.infra.registry.registry import REGISTRY_SCHEMA_VERSION
    from feast.protos.feast.core.Registry_pb2 import Registry as RegistryProto
    from lakehouse.objects import ObjectExists, Objects

    proto = RegistryProto()
    proto.registry_schema_version = REGISTRY_SCHEMA_VERSION
    proto.version_id = str(uuid.uuid4())
    proto.last_updated.FromDatetime(dt.datetime.now(dt.timezone.utc))
    try:
        Objects(cfg, _registry_folder(cfg.location(cfg.lakehouse))).create(REGISTRY_OBJECT, proto.SerializeToString())
    except ObjectExists:
        pass
    _seeded.add(where.uri)


def open_store(cfg: LfmConfig):
    """A `feast.FeatureStore` for this config (no Spark needed until an offline call)."""
    from feast import FeatureStore

    quiet_feast_warnings()
    config = repo_config(cfg)
    on_store = registry_location(cfg)
    store = FeatureStore(config=config)
    if on_store is not None:
        _seed_registry(cfg, on_store)
        with _boto_lock:  # boto3's default session makes clients one thread at a time, with this config's settings
            reach_registry_store(cfg)
            _ = store.registry  # Feast opens the registry (its boto3 client, its first read) now, not lazily
    return store
