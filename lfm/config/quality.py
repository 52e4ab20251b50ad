"""Quality-gate thresholds.

Defaults are chosen to pass healthy exports of a trained model and to fail the faults the gate exists for:
NaN/inf values, a wrong width, exploded or all-zero vectors, missing entities, stale or shuffled vectors and a
collapsed space. Every vector threshold can be overridden per embedding table under `quality.tables.<name>`.
"""
from __future__ import annotations

from pydantic import Field, model_validator

from lfm.config.schema import Strict
from lfm.contract import EMBEDDING_TABLES



class VectorThresholds(Strict):
    """Bounds for one embedding table's vectors and for its day-level metrics."""

    min_norm: float = Field(1e-6, ge=0)  # L2 norm of every non-zero, finite vector ...
    max_norm: float = Field(1e4, gt=0)  # ... lies in [min_norm, max_norm]; catches blow-ups and underflow
    max_zero_share: float = Field(0.01, ge=0, le=1)  # share of all-zero vectors in the partition
    min_coverage: float = Field(0.99, ge=0, le=1)  # share of the day's active users/items that have a vector
    # Drift against D-1 over entities present on both days, on centred vectors (see QualitySettings.center).
    # A frozen model over static features gives UR/IR identical from day to day (cosine 1), so the upper bound
    # stays at 1 unless a table must change daily. KuaiRand CR moves to a centred mean cosine of ~0.94 with ~4%
    # of users below 0.5; vectors shuffled across keys score ~0.02 with ~53% below 0.5.
    min_mean_cosine: float = Field(0.5, ge=-1, le=1)
    max_mean_cosine: float = Field(1.0, ge=-1, le=1)
    moved_cosine: float = Field(0.5, ge=-1, le=1)  # an entity whose cosine to D-1 is below this has "moved"
    max_moved_share: float = Field(0.2, ge=0, le=1)
    # Collapse (docs/domain.md section 4), on a centred sample of the partition: an isotropic d-dim cloud scores close
    # to d, a rank-1 export scores 1. A KuaiRand-trained 64-d export scores erank 7-19 and IA 2.1-2.7.
    min_effective_rank: float = Field(4.0, ge=1)
    min_information_abundance: float = Field(1.5, ge=1)
    # Version drift (a lineage export whose day D is made by a newer version than D-1): the mean centred cosine
    # between one day's UR/IR of the new version and of the previous one, same entities, same features.
    min_version_cosine: float = Field(0.5, ge=-1, le=1)

    @model_validator(mode="after")
    def _ordered(self) -> "VectorThresholds":
        if self.min_norm >= self.max_norm:
            raise ValueError(f"min_norm {self.min_norm} must be below max_norm {self.max_norm}")
        if self.min_mean_cosine > self.max_mean_cosine:
            raise ValueError(f"min_mean_cosine {self.min_mean_cosine} must not exceed max_mean_cosine "
                             f"{self.max_mean_cosine}")
        return self


class TableOverrides(Strict):
    """Per-table overrides of `VectorThresholds`; a key left out keeps the section-wide value."""

    min_norm: float | None = None
    max_norm: float | None = None
    max_zero_share: float | None = None
    min_coverage: float | None = None
    min_mean_cosine: float | None = None
    max_mean_cosine: float | None = None
    moved_cosine: float | None = None
    max_moved_share: float | None = None
    min_effective_rank: float | None = None
    min_information_abundance: float | None = None
    min_version_cosine: float | None = None


class QualitySettings(Strict):
    enabled: bool = True  # `lfm refresh` runs the gate before it reports success
    # Root of the Great Expectations file context (stores, validation results, Data Docs) and of the PNG
    # reports; a local path (GE's file stores are local), used as is. Default: `<lakehouse>/_quality` for a local
    # lakehouse; for a lakehouse on an object store, the working folder
    # `$XDG_CACHE_HOME/lfm/quality/<12 hex of the lakehouse URI's SHA-256>` (~/.cache by default), whose results,
    # Data Docs and reports are copied to `<lakehouse>/_quality/` after each gate run for every machine to read.
    context_dir: str | None = None
    vectors: VectorThresholds = Field(default_factory=VectorThresholds)
    tables: dict[str, TableOverrides] = Field(default_factory=dict)
    collapse_sample_rows: int = Field(5000, ge=2)  # rows sampled for the singular spectrum (SVD on the driver)
    # Measure collapse and drift on vectors minus the day's mean vector (estimated from the collapse sample).
    # Trained towers put every vector near one shared direction (KuaiRand: mean cosine to it > 0.99), so
    # uncentred, a healthy export looks rank-1 (erank ~1.6) and vectors shuffled across keys keep cosine 0.99.
    center: bool = True
    # Drift compares at most about this many entities, chosen by a hash of the key (the same ones on D-1 and D):
    # the mean and the moved share are then known to a few thousandths, at a tenth of the cost on 1M entities.
    drift_sample_rows: int = Field(100_000, ge=1000)
    version_drift_rows: int = Field(2000, ge=2)  # entities whose vectors the previous version recomputes
    histogram_bins: int = Field(40, ge=2)  # drift histogram of per-entity cosines in the PNG report
    events_min_in_day_share: float = Field(0.98, ge=0, le=1)  # events whose local time falls on their ds
    # False: a ds partition must hold exactly one model_version (the one validated). True: versions may sit
    # side by side in a ds partition (distinct Feast view names) and each (ds, version) is validated alone.
    allow_side_by_side_versions: bool = False
    # Tables whose Spark statistics are computed at once, in threads sharing the session: one table's queries are
    # planned and collected while another's run (a tiny table is mostly planning; a small one a single task).
    # bench/gate_time.py at 10k users: the four embedding tables at once take 0.76x the wall of one at a time.
    concurrent_tables: int = Field(4, ge=1)
    seed: int = 0  # sampling seed, so a rerun of the gate on the same data gives the same metrics

    @model_validator(mode="after")
    def _known_tables(self) -> "QualitySettings":
        unknown = sorted(set(self.tables) - set(EMBEDDING_TABLES))
        if unknown:
            raise ValueError(f"quality.tables names unknown tables {unknown}; use {list(EMBEDDING_TABLES)}")
        for table in self.tables:
            self.thresholds(table)  # an override that breaks an ordering (min above max) stops here, at load
        return self

    def thresholds(self, table: str) -> VectorThresholds:
        """The section-wide thresholds with `tables.<table>` overrides applied (and validated again)."""
        override = self.tables.get(table)
        if override is None:
            return self.vectors
        merged = {**self.vectors.model_dump(), **override.model_dump(exclude_none=True)}
        return VectorThresholds.model_validate(merged)
