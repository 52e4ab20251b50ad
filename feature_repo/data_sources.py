"""One SparkSource per (embedding table, export): the Delta table, filtered to that export's released days.

Every source keeps `path=<delta table>`, `table_format=DeltaFormat()`, `timestamp_field="event_timestamp"` and
`date_partition_column="ds"`, and adds a `query` that selects only the export's rows of the days whose newest
`releases` row is a release. Feast 0.67's SparkSource reads `query` when it is set (materialization and historical
retrieval alike), so Feast's own tools never see another export's rows or an unreleased day. (The platform's own
readers go further and read each day at the exact version its release names: `lakehouse.releases`.)
The key is cast to the entity's Feast type, which follows its declared type (`LfmConfig.key_type`: KuaiRand's
INT ids become BIGINT, Feast's INT64).
"""
from __future__ import annotations

import warnings

from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource
from feast.table_format import DeltaFormat

from lfm.config import LfmConfig
from lfm.errors import LfmError
from lfm.storage import location

from feature_repo.specs import key_of, spec_tags, view_name
from lfm.contract import RELEASES, ExportSpec, side_of


def _quoted_path(path: str) -> str:
    """The table as Spark SQL names it (`s3a://` for an S3-API store)."""
    if "`" in path or "'" in path:
        raise LfmError(f"lakehouse path {path!r} contains a quote; move the lakehouse to a plain path")
    return f"delta.`{location(path).for_spark()}`"


def source_query(cfg: LfmConfig, table: str, spec: ExportSpec) -> str:
    """The Spark SQL a view reads: one export's rows of its released days, typed for Feast."""
    key = key_of(cfg, table)
    key_type = cfg.key_type(side_of(table)).spark.upper()
    export = spec.id  # 16 hex characters, validated by ExportSpec
    released_days = (f"SELECT ds FROM (SELECT ds, status, row_number() OVER (PARTITION BY ds ORDER BY `at` DESC) "
                     f"AS n FROM {_quoted_path(cfg.table_path(RELEASES))} WHERE export_id = '{export}') "
                     "WHERE n = 1 AND status = 'released'")
    return (f"SELECT CAST(`{key}` AS {key_type}) AS `{key}`, `{table}`, event_timestamp, ds "
            f"FROM {_quoted_path(cfg.table_path(table))} WHERE export_id = '{export}' AND ds IN ({released_days})")


def embedding_source(cfg: LfmConfig, table: str, spec: ExportSpec) -> SparkSource:
    with warnings.catch_warnings():  # Feast's "Spark API is alpha" warning on every construction
        warnings.simplefilter("ignore", RuntimeWarning)
        return SparkSource(
            name=f"{view_name(table, spec.id)}_source",
            path=location(cfg.table_path(table)).for_spark(),
            table_format=DeltaFormat(),
            query=source_query(cfg, table, spec),
            timestamp_field="event_timestamp",
            date_partition_column="ds",
            tags={**spec_tags(spec), "table": table},
            description=f"Delta table {table}, released rows of export {spec.id} (model {spec.model_version})",
        )
