"""One SparkSource per (embedding table, model version): the Delta table, filtered to that version's rows.

Every source keeps `path=<delta table>`, `table_format=DeltaFormat()`, `timestamp_field="event_timestamp"` and
`date_partition_column="ds"`, and adds a `query` that selects only the view's model version (and, for CR, its
layer). Feast 0.67's SparkSource reads `query` when it is set (materialization and historical retrieval alike)
and keeps `path` for reference, so no view can ever read another version's rows even though all versions share
one Delta table. The key is cast to the entity's Feast type (KuaiRand ids are Spark INT, Feast wants INT64).
"""
from __future__ import annotations

import warnings

from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.table_format import DeltaFormat

from lfm.config import LfmConfig
from lfm.config.serving import EntityKeyType
from lfm.errors import LfmError

from feature_repo.specs import VersionSpec, key_of, view_name


def _quoted_path(path: str) -> str:
    if "`" in path or "'" in path:
        raise LfmError(f"lakehouse path {path!r} contains a quote; move the lakehouse to a plain path")
    return f"delta.`{path}`"


def source_query(cfg: LfmConfig, table: str, spec: VersionSpec) -> str:
    """The Spark SQL a view reads: one version's (and layer's) rows of the Delta table, typed for Feast."""
    key = key_of(cfg, table)
    key_type = "BIGINT" if cfg.feast.entity_key_type == EntityKeyType.int64 else "STRING"
    where = f"model_version = '{spec.version}'"  # version and layer are validated (hex / safe characters)
    if spec.layer(table):
        where += f" AND cr_layer = '{spec.layer(table)}'"
    return (f"SELECT CAST(`{key}` AS {key_type}) AS `{key}`, `{table}`, event_timestamp, ds "
            f"FROM {_quoted_path(cfg.table_path(table))} WHERE {where}")


def embedding_source(cfg: LfmConfig, table: str, spec: VersionSpec) -> SparkSource:
    tags = {"model_version": spec.version, "table": table}
    if spec.layer(table):
        tags["cr_layer"] = spec.layer(table)
    with warnings.catch_warnings():  # Feast's "Spark API is alpha" warning on every construction
        warnings.simplefilter("ignore", RuntimeWarning)
        return _source(cfg, table, spec, tags)


def _source(cfg: LfmConfig, table: str, spec: VersionSpec, tags: dict) -> SparkSource:
    return SparkSource(
        name=f"{view_name(table, spec.version)}_source",
        path=cfg.table_path(table),
        table_format=DeltaFormat(),
        query=source_query(cfg, table, spec),
        timestamp_field="event_timestamp",
        date_partition_column="ds",
        tags=tags,
        description=f"Delta table {table}, rows of model {spec.version}",
    )
