"""Day-level metrics of one embedding partition: coverage, drift against D-1, collapse, version drift.

Only aggregates and bounded samples reach the driver, in three Spark queries over the cached batch: row counts and
coverage (one join with the day's event keys, read once per gate run: `DayKeys`), the collapse sample (the
`collapse_sample_rows` valid vectors whose seeded key hash is smallest: uniform, exactly that many, the same on a
rerun, no count needed first), and the drift pairs (a join with D-1 on a key-hash sample of about
`drift_sample_rows` entities, the same ones on both days), whose cosines numpy computes. Drift and collapse use
valid vectors only (right width, finite, not all-zero, norm in bounds), so a NaN or a blown-up row trips its own
expectation instead of poisoning these. With `quality.center`, both are measured on vectors minus the day's mean
vector (from the collapse sample): trained exports share one dominant direction that otherwise hides collapse and
shuffling.

Every metric is a number or None (not applicable: no D-1 partition or no entity valid on both days, no events
for D, fewer than two valid vectors), never an error: a collapsed day (every vector identical) has centred
vectors of norm 0, whose cosine is undefined (left out of drift) and whose spectrum is all zero (effective rank
and information abundance 0, which their expectations catch). A day with no events has `active` 0 and no
coverage, which the gate reports as not applicable (`validation.status.not_applicable`).
"""
from __future__ import annotations

import datetime as dt
import functools
import threading
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from inference.analysis import analyse
from lfm.config import LfmConfig
from lfm.contract import EVENTS
from lakehouse.delta_io import ds_predicate, read_table, table_exists
from validation.batch import day_rows, valid_condition
from validation.tables import TableSpec
from validation.version_drift import version_drift

FRAME_COLUMNS = ("rows", "valid_rows", "active", "coverage", "drift_pairs", "drift_mean_cosine",
                 "drift_moved_share", "sample_rows", "effective_rank", "information_abundance", "version_pairs",
                 "version_mean_cosine")
_HASH_RANGE = 1_000_000  # drift keeps keys whose hash mod this falls below share * this
_SLICE_ROWS = 8192  # drift pairs turned into float64 matrices at a time


@dataclass(frozen=True)
class DayMetrics:
    rows: int  # rows of the validated model_version in the partition
    valid_rows: int  # of which right width, finite, not all-zero, norm in bounds
    active: int | None = None  # distinct entities in the day's events (0: a day with no events; None: no events table)
    coverage: float | None = None
    drift_pairs: int = 0  # entities with a valid vector on D-1 and on D (in the drift sample), cosine defined
    drift_mean_cosine: float | None = None
    drift_moved_share: float | None = None
    sample_rows: int = 0
    effective_rank: float | None = None
    information_abundance: float | None = None
    version_pairs: int = 0  # entities whose vectors of this version and the previous one have a cosine
    version_mean_cosine: float | None = None  # None: D-1 was made by the same version, or CR (validation.version_drift)
    drift_histogram: tuple[int, ...] = ()  # counts of per-entity cosines over equal bins of [-1, 1]
    spectrum: np.ndarray | None = field(default=None, repr=False)  # normalised singular values of the sample

    def scalars(self) -> dict[str, float | None]:
        """The metrics as numbers or None (not applicable): the columns the gate adds to its one-row frame."""
        values = asdict(self)
        return {c: None if values[c] is None else float(values[c]) for c in FRAME_COLUMNS}


class DayKeys:
    """The day's distinct event keys, one cached frame per key column, shared by a gate run's tables: UR and CR(u)
    count their coverage against the same users, IR and CR(i) against the same items, so the day's events (several
    rows per entity) are scanned once per key, not once per table. Tables measured at once share the cache safely:
    Spark computes each cached partition once and a second job waits for it.

    `events_version` pins the events table to the version the candidate's refresh read, so coverage counts against
    the events the tables were computed from, not a partition rewritten since (None: the latest version)."""

    def __init__(self, spark: SparkSession, cfg: LfmConfig, ds: dt.date, events_version: int | None = None):
        self._spark, self._cfg, self._ds, self._version = spark, cfg, ds, events_version
        self._frames: dict[str, DataFrame | None] = {}
        self._lock = threading.Lock()

    @functools.cached_property
    def _events(self) -> DataFrame | None:
        """The day's events at the pinned version (None: no events table), looked up once per gate run."""
        path = self._cfg.table_path(EVENTS)
        if self._version is None and not table_exists(self._spark, path, self._cfg.delta_rs_options(path)):
            return None
        return read_table(self._spark, path, self._version).where(ds_predicate([self._ds]))

    def of(self, key: str) -> DataFrame | None:
        """key, __active: each entity with an event on the day (None: no events table)."""
        with self._lock:
            if key not in self._frames:
                events = self._events
                self._frames[key] = None if events is None else (
                    events.select(key).distinct().withColumn("__active", F.lit(True)).persist())
            return self._frames[key]

    def release(self) -> None:
        with self._lock:
            for frame in self._frames.values():
                if frame is not None:
                    frame.unpersist()
            self._frames.clear()


def compute(spark: SparkSession, cfg: LfmConfig, spec: TableSpec, part: DataFrame, ds: dt.date,
            model_version: str, dim: int, day_keys: DayKeys, previous_version: int | None = None,
            export_id: str | None = None, previous_model: str | None = None) -> DayMetrics:
    """All metrics of `part`: the partition's rows of `model_version` with vector statistics, cached by the caller.

    `day_keys` gives the day's active entities; `previous_version` pins the Delta version D-1's partition is read
    at (None: the latest); with `export_id`, D-1 is that export's rows, at its release only (no pin: drift does not
    apply); `previous_model`, the version that made D-1 when another one made D (a lineage's update), adds the
    version drift (`validation.version_drift`).
    """
    t = cfg.quality.thresholds(spec.name)
    valid_sql = valid_condition(dim, t.min_norm, t.max_norm)
    rows, n_valid, active, coverage = _counts(spec, part, valid_sql, day_keys.of(spec.key))
    valid = part.where(valid_sql).select(spec.key, spec.vector)
    sample = _sample(valid, spec, dim, cfg) if n_valid >= 2 else None
    center = sample.mean(axis=0) if sample is not None and cfg.quality.center else np.zeros(dim)
    spectrum = analyse(sample - center) if sample is not None else None
    drift = _drift(spark, cfg, spec, valid, n_valid, ds, model_version, dim, center, previous_version,
                   export_id, own_previous_center=previous_model is not None)
    if previous_model is not None and n_valid >= 2:
        drift |= version_drift(spark, cfg, spec, valid, ds, dim, previous_model)
    return DayMetrics(rows=rows, valid_rows=n_valid, active=active, coverage=coverage, **drift,
                      sample_rows=0 if sample is None else sample.shape[0],
                      effective_rank=None if spectrum is None else spectrum.effective_rank,
                      information_abundance=None if spectrum is None else spectrum.information_abundance,
                      spectrum=None if spectrum is None else spectrum.singular_values)


def _counts(spec: TableSpec, part: DataFrame, valid_sql: str,
            active: DataFrame | None) -> tuple[int, int, int | None, float | None]:
    """Rows, valid rows, the day's active entities and the share of them with a row, in one query."""
    per_key = part.groupBy(spec.key).agg(F.count(F.lit(1)).alias("__n"), F.count_if(F.expr(valid_sql)).alias("__v"))
    totals = [F.coalesce(F.sum("__n"), F.lit(0)).alias("rows"), F.coalesce(F.sum("__v"), F.lit(0)).alias("valid")]
    if active is None:
        row = per_key.agg(*totals).first()
        return int(row["rows"]), int(row["valid"]), None, None
    row = (per_key.join(active, spec.key, "full")
           .agg(*totals, F.count("__active").alias("active"),
                F.count_if(F.col("__active") & F.col("__n").isNotNull()).alias("covered")).first())
    n = int(row["active"])  # 0: the day had no events (coverage undefined: `validation.status.not_applicable`)
    return int(row["rows"]), int(row["valid"]), n, (row["covered"] / n if n else None)


def _sample(valid: DataFrame, spec: TableSpec, dim: int, cfg: LfmConfig) -> np.ndarray | None:
    """The `collapse_sample_rows` valid vectors with the smallest seeded key hash, as a matrix (None below two)."""
    h = F.xxhash64(spec.key, F.lit(cfg.quality.seed))
    arrow = (valid.select(h.alias("__h"), spec.vector).orderBy("__h").limit(cfg.quality.collapse_sample_rows)
             .select(spec.vector).toArrow())
    matrix = _matrix(arrow.column(0), dim)  # (rows, dim)
    return matrix if matrix.shape[0] >= 2 else None


def _drift(spark: SparkSession, cfg: LfmConfig, spec: TableSpec, valid: DataFrame, n_valid: int, ds: dt.date,
           model_version: str, dim: int, center: np.ndarray, previous_version: int | None,
           export_id: str | None, own_previous_center: bool = False) -> dict:
    """Cosine of each entity's D-1 and D vectors (minus `center`): mean, share below `moved_cosine`, histogram.

    With `own_previous_center` (D-1 was made by another version of a lineage, whose vectors have their own mean),
    D-1's vectors are centred by their own mean over the pairs instead of D's.

    Above `drift_sample_rows` valid entities, only those whose key hashes into the sampled share take part, the
    same entities on both days. Spark joins the two days' vectors on the key; the cosines are computed in numpy on
    the driver (at most about `drift_sample_rows` pairs): Spark's array lambdas run interpreted, at about half a
    millisecond per 64-d pair. D-1's vectors are checked there as D's were (width, finite, norm in bounds). A pair
    with a centred vector of norm 0 has no direction, hence no cosine, and is left out.
    """
    path = cfg.table_path(spec.name)
    if not n_valid or (previous_version is None and not table_exists(spark, path, cfg.delta_rs_options(path))):
        return {}
    if export_id is not None and previous_version is None:
        return {}  # an export is compared with D-1's release only; without one, drift does not apply
    prev = day_rows(read_table(spark, cfg.table_path(spec.name), previous_version), ds - dt.timedelta(days=1),
                    export_id)
    if export_id is None:  # an export's D-1 is its release, made by its own version (a lineage's previous one)
        prev = prev.where(F.col("model_version") == model_version)
    if n_valid > cfg.quality.drift_sample_rows:
        keep = int(_HASH_RANGE * cfg.quality.drift_sample_rows / n_valid)
        in_sample = F.pmod(F.xxhash64(spec.key), F.lit(_HASH_RANGE)) < keep
        valid, prev = valid.where(in_sample), prev.where(in_sample)
    pairs = (valid.select(spec.key, F.col(spec.vector).alias("a"))
             .join(prev.where(F.size(spec.vector) == dim).select(spec.key, F.col(spec.vector).alias("b")), spec.key)
             .select("a", "b").toArrow())
    t = cfg.quality.thresholds(spec.name)
    if own_previous_center and cfg.quality.center:
        previous_center = _valid_mean(pairs.column("b"), dim, t.min_norm, t.max_norm)
    else:
        previous_center = center
    cosine = _cosines(pairs, dim, center, previous_center, t.min_norm, t.max_norm)
    bins = cfg.quality.histogram_bins
    histogram = tuple(int(n) for n in np.histogram(cosine, bins=bins, range=(-1.0, 1.0))[0])
    if not cosine.size:
        return {"drift_histogram": histogram}
    return {"drift_pairs": int(cosine.size), "drift_mean_cosine": float(cosine.mean()),
            "drift_moved_share": float((cosine < t.moved_cosine).mean()), "drift_histogram": histogram}


def _cosines(pairs: pa.Table, dim: int, center: np.ndarray, previous_center: np.ndarray, min_norm: float,
             max_norm: float) -> np.ndarray:
    """The defined cosines of the drift pairs (columns a, b) whose D-1 vector is valid (finite, norm in bounds).

    Computed `_SLICE_ROWS` pairs at a time: the float64 copies of a slice are what the driver holds beside the
    Arrow pairs, not six copies of all `drift_sample_rows` of them per table, four tables at once."""
    return np.concatenate([_slice_cosines(pairs.slice(start, _SLICE_ROWS), dim, center, previous_center, min_norm,
                                          max_norm)
                           for start in range(0, pairs.num_rows, _SLICE_ROWS)] or [np.empty(0)])


def _valid_rows(b: np.ndarray, min_norm: float, max_norm: float) -> np.ndarray:
    """Which D-1 vectors are valid: finite, non-zero, norm in bounds."""
    norm_b = np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore"):
        return np.isfinite(b).all(axis=1) & (norm_b > 0) & (norm_b >= min_norm) & (norm_b <= max_norm)


def _valid_mean(column: pa.ChunkedArray, dim: int, min_norm: float, max_norm: float) -> np.ndarray:
    """The mean of the valid vectors of a pairs column, a slice at a time."""
    total, count = np.zeros(dim), 0
    for start in range(0, len(column), _SLICE_ROWS):
        b = _matrix(column.slice(start, _SLICE_ROWS), dim)
        b = b[_valid_rows(b, min_norm, max_norm)]
        total, count = total + b.sum(axis=0), count + b.shape[0]
    return total / max(count, 1)


def _slice_cosines(pairs: pa.Table, dim: int, center: np.ndarray, previous_center: np.ndarray, min_norm: float,
                   max_norm: float) -> np.ndarray:
    a, b = (_matrix(pairs.column(c), dim) for c in ("a", "b"))  # (pairs, dim) each
    b_valid = _valid_rows(b, min_norm, max_norm)
    a, b = a[b_valid] - center, b[b_valid] - previous_center
    length = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    defined = length > 0
    return np.clip((a * b).sum(axis=1)[defined] / length[defined], -1.0, 1.0)  # (pairs with a cosine,)


def _matrix(column: pa.ChunkedArray, dim: int) -> np.ndarray:
    """A list<float> Arrow column of width-`dim` vectors as a float64 matrix (a null element becomes NaN)."""
    values = column.combine_chunks().flatten()
    return np.asarray(values.fill_null(np.nan), dtype=np.float64).reshape(-1, dim)
