"""Where Feast's registry lives, chosen by the lakehouse alone, and how boto3 is set up to reach it (no server:
creating a boto3 client opens no connection). The registry's round trips on a real S3-API server are in
tests/integration/storage/test_feast_registry_s3.py."""
from __future__ import annotations

import os

import boto3
import pytest
from feast.repo_config import RepoConfig

from feature_repo.store import (ENDPOINT_VARIABLE, config_dict, reach_registry_store, registry_file,
                                registry_location, repo_config)
from tests.support.config import make_config


@pytest.fixture(autouse=True)
def _restored(monkeypatch):
    """`reach_registry_store` sets the process's endpoint variable and boto3's default session: undone after."""
    monkeypatch.setenv(ENDPOINT_VARIABLE, "restored-after-the-test")
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)


def test_a_local_lakehouse_keeps_the_sqlite_registry(tmp_path):
    cfg = make_config(tmp_path)
    assert registry_location(cfg) is None
    assert config_dict(cfg)["registry"] == {"registry_type": "sql", "path": f"sqlite:///{registry_file(cfg)}",
                                            "cache_ttl_seconds": 60}


@pytest.mark.parametrize("lakehouse", ["s3://bucket/lfm", "s3a://bucket/lfm/"])
def test_an_s3_lakehouse_puts_feasts_file_registry_on_the_store(tmp_path, lakehouse):
    cfg = make_config(tmp_path, lakehouse=lakehouse, storage={"endpoint": "http://127.0.0.1:9", "allow_http": True})
    want = "s3://bucket/lfm/_serving/feast/registry.pb"  # Feast's S3 registry store is chosen by `s3://`
    assert registry_location(cfg).for_delta_rs() == want
    assert config_dict(cfg)["registry"] == {"registry_type": "file", "path": want, "cache_ttl_seconds": 60}
    rc = repo_config(cfg)
    assert isinstance(rc, RepoConfig) and rc.registry.path == want and rc.registry.registry_type == "file"


def test_another_object_store_keeps_the_sqlite_registry(tmp_path):
    """Feast's registry is reached with the `storage:` (S3-API) settings only; another store's lakehouse (read by
    Spark's own connector) keeps the registry on the driver's disk."""
    cfg = make_config(tmp_path, lakehouse="gs://bucket/lfm")
    assert registry_location(cfg) is None and config_dict(cfg)["registry"]["registry_type"] == "sql"


def _client_settings():
    client = boto3.resource("s3", endpoint_url=os.environ.get(ENDPOINT_VARIABLE)).meta.client  # as Feast makes it
    return client.meta.endpoint_url, client.meta.region_name, client.meta.config.s3["addressing_style"]


def test_boto3_reaches_the_configured_endpoint_region_and_addressing_style(tmp_path):
    path_style = make_config(tmp_path, lakehouse="s3://bucket/lfm",
                             storage={"endpoint": "http://127.0.0.1:9", "region": "eu-west-3", "allow_http": True})
    reach_registry_store(path_style)
    assert os.environ[ENDPOINT_VARIABLE] == "http://127.0.0.1:9"
    assert _client_settings() == ("http://127.0.0.1:9", "eu-west-3", "path")
    session = boto3.DEFAULT_SESSION
    reach_registry_store(path_style)
    assert boto3.DEFAULT_SESSION is session  # set up once per setting

    aws = make_config(tmp_path, lakehouse="s3://bucket/lfm", storage={"region": "ap-south-1",
                                                                      "virtual_hosted_style": True})
    reach_registry_store(aws)
    assert ENDPOINT_VARIABLE not in os.environ  # no endpoint in the config: AWS itself, whatever was set before
    endpoint, region, style = _client_settings()
    assert region == "ap-south-1" and style == "virtual" and "ap-south-1.amazonaws.com" in endpoint
