"""Version drift: how far a lineage's new version moved one day's vectors from the previous version's.

Day D of a lineage export is made by version v; D-1's release by v-1. For UR and IR, whose inputs are the entity
features alone, the gate takes a key-hash sample of D's valid vectors as stored (v's), recomputes the same
entities' vectors with v-1 from the same features (the snapshot in force on D, through the registry's verified
checkpoint) and measures each entity's cosine, both sides centred by their own sample mean when
`quality.center` (trained towers share one dominant direction that otherwise hides a jump). A mean below
`min_version_cosine` quarantines the table: a jump that large changes what every downstream model reads.
CR is a decayed sum over days made by several versions; its day-over-day drift (`validation.metrics`) covers it.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from inference.extract import Extractor
from lakehouse.features import features_as_of
from lfm.config import LfmConfig
from lfm.contract import IR, ITEMS, UR, USERS
from models.registry import Registry
from validation.tables import TableSpec

TOWER_TABLES = {UR: USERS, IR: ITEMS}  # the tables whose vectors one version computes from features alone


def version_drift(spark: SparkSession, cfg: LfmConfig, spec: TableSpec, valid: DataFrame, ds: dt.date, dim: int,
                  previous_model: str) -> dict[str, float | int | None]:
    """{version_pairs, version_mean_cosine} of `valid` (the day's valid rows: key, vector) against
    `previous_model`'s vectors of the same entities on the same features; empty for a table without a tower."""
    if spec.name not in TOWER_TABLES:
        return {}
    h = F.xxhash64(spec.key, F.lit(cfg.quality.seed))
    sample = valid.select(h.alias("__h"), spec.key, spec.vector).orderBy("__h").limit(cfg.quality.version_drift_rows)
    features = features_as_of(spark, cfg, TOWER_TABLES[spec.name], ds)
    batch = sample.join(features, on=spec.key, how="inner").drop("__h").toArrow()
    if batch.num_rows < 2:
        return {"version_pairs": 0, "version_mean_cosine": None}
    values = batch.column(spec.vector).combine_chunks().flatten()
    new = np.asarray(values, dtype=np.float64).reshape(-1, dim)  # (n, dim): version v, as stored
    extractor = Extractor(Registry(cfg).path(previous_model), schema=cfg.schema,
                          storage=cfg.storage.object_store_options())
    old = (extractor.user_vectors(batch) if spec.name == UR else extractor.item_vectors(batch)).astype(np.float64)
    if cfg.quality.center:
        new, old = new - new.mean(axis=0), old - old.mean(axis=0)
    length = np.linalg.norm(new, axis=1) * np.linalg.norm(old, axis=1)  # (n,)
    defined = length > 0
    cosine = np.clip((new * old).sum(axis=1)[defined] / length[defined], -1.0, 1.0)
    return {"version_pairs": int(cosine.size), "version_mean_cosine": float(cosine.mean()) if cosine.size else None}
