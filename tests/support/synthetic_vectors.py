"""Synthetic embedding tables in the contract layout (docs/contracts.md), released through the real gate.

Rows follow the refresh's contract exactly: key, `array<float>` vector, (`cr_layer`), `model_version`, `export_id`,
`ds`, `event_timestamp` = end of day D in `schema.timezone`; written with `replace_partitions` scoped to
(ds, export_id) like the refresh. `release_days` then records each written day as a candidate and runs the real
quality gate and publish over it, so readers see these days only where the gate passed. UR and IR are drawn around
shared cluster centres (real embedding spaces are clustered and users sit near the items they engage with; i.i.d.
Gaussian vectors are the worst case for any ANN index and not what a trained model exports).
"""
from __future__ import annotations

import datetime as dt
import zlib

import numpy as np
import pyarrow as pa

from feature_repo.specs import key_of
from inference.decay import matrix_to_list
from lfm.config import LfmConfig
from lfm.contract import EMBEDDING_TABLES, PARTITION_BY, USER_TABLES, ExportSpec, day_end
from lfm.names import parse_ds

# Synthetic days are independent draws: the day-to-day drift checks do not apply to them.
NO_DRIFT = {"vectors": {"min_mean_cosine": -1.0, "max_moved_share": 1.0}}


def spec(model_version: str, ur_dim: int, ir_dim: int, cr_dim: int, cr_layer: str = "dnn_0") -> ExportSpec:
    return ExportSpec(model_version, cr_layer=cr_layer, ur_dim=ur_dim, ir_dim=ir_dim, cr_dim=cr_dim, tau_hours=72.0,
                      normalisation="layernorm", state_ttl_days=None, schema_hash="0" * 16)


def vectors(seed: int, n: int, dim: int, centres: int = 0, centre_seed: int | None = None,
            spread: float = 0.35) -> np.ndarray:
    """n vectors: i.i.d. Gaussian, or around `centres` points drawn from `centre_seed` (shared across calls)."""
    rng = np.random.default_rng(seed)
    if not centres:
        return rng.normal(size=(n, dim)).astype(np.float32)
    c = np.random.default_rng(seed if centre_seed is None else centre_seed).normal(size=(centres, dim))
    x = c[rng.integers(0, centres, n)] + spread * rng.normal(size=(n, dim))
    return x.astype(np.float32)


def _seed(*parts) -> int:
    return zlib.crc32("/".join(map(str, parts)).encode())


def arrow_table(cfg: LfmConfig, table: str, s: ExportSpec, ds: dt.date, ids: np.ndarray, mat: np.ndarray) -> pa.Table:
    n = len(ids)
    cols = {key_of(cfg, table): pa.array(ids.astype(np.int32)), table: matrix_to_list(mat)}
    if table.startswith("cr_"):
        cols["cr_layer"] = pa.array([s.cr_layer] * n, pa.string())
    cols["model_version"] = pa.array([s.model_version] * n, pa.string())
    cols["export_id"] = pa.array([s.id] * n, pa.string())
    cols["ds"] = pa.array([ds] * n, pa.date32())
    cols["event_timestamp"] = pa.array([day_end(ds, cfg.schema.timezone).replace(tzinfo=None)] * n, pa.timestamp("us"))
    return pa.table(cols)


def day_vectors(s: ExportSpec, table: str, ds: dt.date, n: int, seed: int = 0) -> np.ndarray:
    """The synthetic vectors of (export, table, day): deterministic, different every day. UR and IR share
    one export's cluster centres (a trained two-tower puts users near the items they like); CR is Gaussian."""
    day_seed = _seed(seed, s.id, table, ds.isoformat())
    if table in ("ur", "ir"):
        return vectors(day_seed, n, s.dim(table), centres=16, centre_seed=_seed(seed, s.id, "centres"),
                       spread=0.35 if table == "ir" else 0.5)
    return vectors(day_seed, n, s.dim(table))


def write_days(spark, cfg: LfmConfig, plan: dict[ExportSpec, list], users: int, items: int, seed: int = 0,
               tables: tuple[str, ...] = EMBEDDING_TABLES) -> dict[tuple[str, str, dt.date], np.ndarray]:
    """Write many (export, day) snapshots with one Delta commit per table (tests and benchmarks).

    `plan` maps a spec to its days; replaces those (ds, export) rows. Returns {(export id, table, ds): vectors}.
    """
    from lakehouse.delta_io import replace_partitions

    truth: dict[tuple[str, str, dt.date], np.ndarray] = {}
    for table in tables:
        n = users if table in USER_TABLES else items
        parts, days = [], set()
        for s, ds_list in plan.items():
            for ds in ds_list:
                day = parse_ds(ds)
                mat = day_vectors(s, table, day, n, seed)
                truth[(s.id, table, day)] = mat
                parts.append(arrow_table(cfg, table, s, day, np.arange(n), mat))
                days.add(day)
        exports = " OR ".join(f"export_id = '{s.id}'" for s in plan)
        df = spark.createDataFrame(pa.concat_tables(parts))
        replace_partitions(df, cfg.table_path(table), sorted(days), {"job": "synthetic"}, extra_predicate=exports,
                           partition_by=PARTITION_BY)
    return truth


def release_days(spark, cfg: LfmConfig, plan: dict[ExportSpec, list], run_id: str = "synthetic") -> dict:
    """Record each written (export, day) as a candidate at the tables' current versions, then gate and publish it
    (`pipeline.export.audit_and_publish`, the real gate). Returns {(export id, day): DayRelease}."""
    from lakehouse import candidates
    from lakehouse.delta_io import table_version
    from pipeline.export import audit_and_publish

    versions = {t: int(table_version(spark, cfg.table_path(t))) for t in EMBEDDING_TABLES}
    out = {}
    for s, ds_list in plan.items():
        for ds in sorted(parse_ds(d) for d in ds_list):
            cand = candidates.Candidate(ds=ds, spec=s, run_id=f"{run_id}-{ds:%Y%m%d}", table_versions=versions)
            candidates.append(cfg, cand)
            out[(s.id, ds)] = audit_and_publish(spark, cfg, cand)
    return out
