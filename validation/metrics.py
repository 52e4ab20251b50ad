"""Day-level metrics of one embedding partition, computed in Spark: coverage, drift against D-1, collapse.

Only aggregates and a bounded sample reach the driver: coverage and drift are joins and sums in Spark, the drift
histogram is grouped in Spark, and the collapse metrics use at most `quality.collapse_sample_rows` vectors. On a
large day drift uses a key-hash sample of `quality.drift_sample_rows` entities (the same ones on both days).
Drift and collapse use valid vectors only (right width, finite, not all-zero, norm in bounds), so a NaN or a
blown-up row trips its own expectation instead of poisoning these. With `quality.center`, both are measured on
vectors minus the day's mean vector (from the collapse sample): trained exports share one dominant direction that
otherwise hides collapse and shuffling. A metric that cannot be computed (no D-1 partition, no events for D) is
None and its expectation does not apply.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from inference.analysis import analyse
from lfm.config import LfmConfig
from lakehouse.delta_io import ds_predicate, table_exists
from validation.batch import read_batch, valid_condition
from validation.tables import TableSpec

FRAME_COLUMNS = ("rows", "valid_rows", "active", "coverage", "drift_pairs", "drift_mean_cosine",
                 "drift_moved_share", "sample_rows", "effective_rank", "information_abundance")


@dataclass(frozen=True)
class DayMetrics:
    rows: int  # rows of the validated model_version in the partition
    valid_rows: int  # of which right width, finite, not all-zero, norm in bounds
    active: int | None = None  # distinct entities in the day's events
    coverage: float | None = None
    drift_pairs: int = 0  # entities with a valid vector on D-1 and on D (in the drift sample)
    drift_mean_cosine: float | None = None
    drift_moved_share: float | None = None
    sample_rows: int = 0
    effective_rank: float | None = None
    information_abundance: float | None = None
    drift_histogram: tuple[int, ...] = ()  # counts of per-entity cosines over equal bins of [-1, 1]
    spectrum: np.ndarray | None = field(default=None, repr=False)  # normalised singular values of the sample

    def scalars(self) -> dict[str, float | None]:
        values = asdict(self)
        return {c: None if values[c] is None else float(values[c]) for c in FRAME_COLUMNS}

    def frame(self) -> pd.DataFrame:
        """The one-row frame the `<table>_metrics` suite validates (None becomes NaN: not applicable)."""
        return pd.DataFrame([self.scalars()], columns=list(FRAME_COLUMNS), dtype="float64")


def compute(spark: SparkSession, cfg: LfmConfig, spec: TableSpec, part: DataFrame, ds: dt.date,
            model_version: str, dim: int, previous_version: int | None = None,
            export_id: str | None = None) -> DayMetrics:
    """All metrics of `part`: the partition's rows of `model_version` with vector statistics, cached by the caller."""
    t = cfg.quality.thresholds(spec.name)
    valid_sql = valid_condition(dim, t.min_norm, t.max_norm)
    counts = part.agg(F.count(F.lit(1)).alias("rows"), F.count_if(F.expr(valid_sql)).alias("valid")).first()
    n_valid = int(counts["valid"])
    valid = part.where(valid_sql).select(spec.key, spec.vector)
    sample = _sample(valid.select(spec.vector), n_valid, dim, cfg)
    center = sample.mean(axis=0) if sample is not None and cfg.quality.center else np.zeros(dim)
    spectrum = analyse(sample - center) if sample is not None else None
    active, coverage = _coverage(spark, cfg, spec, part, ds)
    drift = _drift(spark, cfg, spec, valid, n_valid, ds, model_version, valid_sql, center, previous_version,
                   export_id)
    return DayMetrics(rows=int(counts["rows"]), valid_rows=n_valid, active=active, coverage=coverage, **drift,
                      sample_rows=0 if sample is None else sample.shape[0],
                      effective_rank=None if spectrum is None else spectrum.effective_rank,
                      information_abundance=None if spectrum is None else spectrum.information_abundance,
                      spectrum=None if spectrum is None else spectrum.singular_values)


def _sample(vectors: DataFrame, n_valid: int, dim: int, cfg: LfmConfig) -> np.ndarray | None:
    """At most `collapse_sample_rows` valid vectors as a matrix on the driver (None below two rows)."""
    limit = cfg.quality.collapse_sample_rows
    if n_valid < 2:
        return None
    fraction = min(1.0, 1.2 * limit / n_valid)  # a little over the target, then cut: sample() is approximate
    sample = vectors if fraction >= 1.0 else vectors.sample(False, fraction, cfg.quality.seed)
    column = sample.limit(limit).toArrow().column(0).combine_chunks()
    matrix = np.asarray(column.flatten(), dtype=np.float64).reshape(-1, dim)
    return matrix if matrix.shape[0] >= 2 else None


def _coverage(spark: SparkSession, cfg: LfmConfig, spec: TableSpec, part: DataFrame,
              ds: dt.date) -> tuple[int | None, float | None]:
    """Share of the entities in D's events that have a row (any vector) in the partition."""
    path = cfg.table_path("events")
    if not table_exists(spark, path):
        return None, None
    active = spark.read.format("delta").load(path).where(ds_predicate([ds])).select(spec.key).distinct()
    have = part.select(spec.key).distinct().withColumn("__has", F.lit(1))
    row = active.join(have, spec.key, "left").agg(F.count(F.lit(1)).alias("n"), F.count("__has").alias("k")).first()
    n = int(row["n"])
    return (n, row["k"] / n) if n else (None, None)


def _norm(v: Column) -> Column:
    return F.sqrt(F.aggregate(v, F.lit(0.0), lambda acc, x: acc + x * x))


def _drift(spark: SparkSession, cfg: LfmConfig, spec: TableSpec, valid: DataFrame, n_valid: int, ds: dt.date,
           model_version: str, valid_sql: str, center: np.ndarray, previous_version: int | None = None,
           export_id: str | None = None) -> dict:
    """Cosine of each entity's D-1 and D vectors (minus `center`): mean, share below `moved_cosine`, histogram.

    Above `drift_sample_rows` valid entities, only those whose key hashes into the sampled share take part, the
    same entities on both days; the filter is on the key, so Spark applies it before computing D-1's statistics.
    """
    bins = cfg.quality.histogram_bins
    moved = cfg.quality.thresholds(spec.name).moved_cosine
    if not table_exists(spark, cfg.table_path(spec.name)):
        return {}
    if export_id is not None and previous_version is None:
        return {}  # an export is compared with D-1's release only; without one, drift does not apply
    prev = read_batch(spark, cfg, spec, ds - dt.timedelta(days=1), model_version, version=previous_version,
                      export_id=export_id)
    prev = prev.where(F.col("model_version") == model_version)
    if n_valid > cfg.quality.drift_sample_rows:
        in_sample = F.pmod(F.xxhash64(spec.key), F.lit(1_000_000)) < int(1_000_000 * cfg.quality.drift_sample_rows
                                                                          / n_valid)
        valid, prev = valid.where(in_sample), prev.where(in_sample)
    mu = F.array(*[F.lit(float(x)) for x in center])

    def shift(v: Column) -> Column:
        return F.zip_with(v.cast("array<double>"), mu, lambda x, m: x - m)

    pairs = (valid.select(spec.key, shift(F.col(spec.vector)).alias("a"))
             .join(prev.where(valid_sql).select(spec.key, shift(F.col(spec.vector)).alias("b")), spec.key))
    dot = F.aggregate(F.zip_with("a", "b", lambda x, y: x * y), F.lit(0.0), lambda acc, z: acc + z)
    cosine = F.greatest(F.lit(-1.0), F.least(F.lit(1.0), dot / (_norm(F.col("a")) * _norm(F.col("b")))))
    rows = (pairs.select(cosine.alias("c")).where("c IS NOT NULL")
            .groupBy(F.least(F.lit(bins - 1), F.floor((F.col("c") + 1) / 2 * bins)).cast("int").alias("bin"))
            .agg(F.count(F.lit(1)).alias("n"), F.sum("c").alias("s"), F.count_if(F.col("c") < moved).alias("m"))
            .collect())
    histogram = [0] * bins
    for r in rows:
        histogram[r["bin"]] = int(r["n"])
    pairs_n = sum(histogram)
    if not pairs_n:
        return {"drift_histogram": tuple(histogram)}
    return {"drift_pairs": pairs_n, "drift_mean_cosine": sum(r["s"] for r in rows) / pairs_n,
            "drift_moved_share": sum(r["m"] for r in rows) / pairs_n, "drift_histogram": tuple(histogram)}
