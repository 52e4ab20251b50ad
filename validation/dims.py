"""The vector width a table must have for a model version.

The gate must not learn the width from the data it checks (a wholly wrong-width export would look consistent),
so it comes from outside: the caller (refresh knows its model card), else the model registry's card, else
`quality.dims` in config.
"""
from __future__ import annotations

import datetime as dt

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from lfm.config import LfmConfig
from lfm.errors import LfmError
from validation.errors import QualityError


def _from_registry(cfg: LfmConfig, table: str, model_version: str) -> int | None:
    try:
        from models.registry import Registry  # the LFM issue's registry (docs/contracts.md)
    except ImportError:
        return None
    try:
        card = Registry(cfg).card(model_version)
    except (LfmError, KeyError, FileNotFoundError):
        return None
    if table == "ur":
        return card.ur_dim
    if table == "ir":
        return card.ir_dim
    layer = card.selected_cr_layer
    return card.cr_points.get(layer) if layer else None


def expected_dim(cfg: LfmConfig, table: str, model_version: str, given: dict[str, int] | None = None) -> int:
    """Width of `table` vectors for `model_version`: `given`, else the registry card, else `quality.dims`."""
    if given and table in given:
        return int(given[table])
    dim = _from_registry(cfg, table, model_version) or cfg.quality.dims.get(table)
    if not dim:
        raise QualityError(f"cannot tell the expected width of {table} vectors for model {model_version}: "
                           f"register the model (lfm models list) or set quality.dims.{table} in the config")
    return int(dim)


def recorded_dims(spark: SparkSession, cfg: LfmConfig, ds: dt.date, model_version: str | None) -> dict[str, int]:
    """Widths the gate checks against, from the model card and the CR layer the day's refresh recorded.

    Never from the data under test (a wholly wrong-width export would look consistent); the layer comes from
    `refresh_log`, because a model without a selected layer is exported at its last CR point.
    """
    from spark_jobs.delta_io import table_exists
    from spark_jobs.refresh import LOG_TABLE, resolve_model

    if model_version is None:
        return {}
    try:
        card, _ = resolve_model(cfg, model_version)
    except LfmError:  # not in this registry: expected_dim falls back to quality.dims
        return {}
    dims = {"ur": card.ur_dim, "ir": card.ir_dim}
    path = cfg.table_path(LOG_TABLE)
    if table_exists(spark, path):
        last = (spark.read.format("delta").load(path)
                .where((F.col("ds") == F.lit(ds)) & (F.col("model_version") == F.lit(model_version)))
                .orderBy(F.col("committed_at").desc()).select("cr_layer").first())
        if last is not None and last["cr_layer"] in card.cr_points:
            dims["cr_user"] = dims["cr_item"] = int(card.cr_points[last["cr_layer"]])
    return dims
