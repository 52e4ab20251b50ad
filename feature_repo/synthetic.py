"""Synthetic embedding tables in the contract layout (docs/contracts.md), for tests and the serving benchmark.

Rows follow the refresh's contract exactly: key, `array<float>` vector, (`cr_layer`), `model_version`, `ds`,
`event_timestamp` = end of day D in `schema.timezone`; written with `replace_partitions` scoped to
(ds, model_version) like the refresh. UR and IR are drawn around shared cluster centres (real embedding spaces
are clustered and users sit near the items they engage with; i.i.d. Gaussian vectors are the worst case for any
ANN index and not what a trained model exports).
"""
from __future__ import annotations

import datetime as dt
import zlib

import numpy as np
import pyarrow as pa

from lfm.config import LfmConfig
from lfm.names import parse_ds

from feature_repo.specs import TABLES, VersionSpec, key_of


def day_end(cfg: LfmConfig, ds: dt.date) -> dt.datetime:
    """End of local day `ds` as a naive UTC datetime (what Spark stores for a TIMESTAMP)."""
    from feature_repo.materialize import day_bounds

    return day_bounds(cfg, ds)[1].replace(tzinfo=None)


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


def arrow_table(cfg: LfmConfig, table: str, spec: VersionSpec, ds: dt.date, ids: np.ndarray,
                mat: np.ndarray) -> pa.Table:
    n, dim = mat.shape
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    cols = {key_of(cfg, table): pa.array(ids.astype(np.int32)),
            table: pa.ListArray.from_arrays(offsets, pa.array(mat.ravel(), pa.float32()))}
    if table.startswith("cr_"):
        cols["cr_layer"] = pa.array([spec.cr_layer] * n, pa.string())
    cols["model_version"] = pa.array([spec.version] * n, pa.string())
    cols["ds"] = pa.array([ds] * n, pa.date32())
    cols["event_timestamp"] = pa.array([day_end(cfg, ds)] * n, pa.timestamp("us"))
    return pa.table(cols)


def day_vectors(spec: VersionSpec, table: str, ds: dt.date, n: int, seed: int = 0) -> np.ndarray:
    """The synthetic vectors of (version, table, day): deterministic, different every day. UR and IR share
    one version's cluster centres (a trained two-tower puts users near the items they like); CR is Gaussian."""
    day_seed = _seed(seed, spec.version, table, ds.isoformat())
    if table in ("ur", "ir"):
        return vectors(day_seed, n, spec.dim(table), centres=16, centre_seed=_seed(seed, spec.version, "centres"),
                       spread=0.35 if table == "ir" else 0.5)
    return vectors(day_seed, n, spec.dim(table))


def write_day(spark, cfg: LfmConfig, spec: VersionSpec, ds, users: int, items: int, seed: int = 0,
              tables: tuple[str, ...] = TABLES, ids: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Write one day of the four tables for one version; returns {table: vectors} in id order (0..n-1)."""
    from spark_jobs.delta_io import replace_partitions

    day = parse_ds(ds)
    out = {}
    for table in tables:
        n = users if table in ("ur", "cr_user") else items
        keys = ids[table] if ids and table in ids else np.arange(n)
        mat = day_vectors(spec, table, day, len(keys), seed)
        df = spark.createDataFrame(arrow_table(cfg, table, spec, day, keys, mat))
        replace_partitions(df, cfg.table_path(table), [day], {"job": "synthetic", "model_version": spec.version},
                           extra_predicate=f"model_version = '{spec.version}'")
        out[table] = mat
    return out


def write_days(spark, cfg: LfmConfig, plan: dict[VersionSpec, list], users: int, items: int, seed: int = 0,
               tables: tuple[str, ...] = TABLES) -> dict[tuple[str, str, dt.date], np.ndarray]:
    """Write many (version, day) snapshots with one Delta commit per table (tests and benchmarks).

    `plan` maps a spec to its days; replaces those (ds, version) rows. Returns {(version, table, ds): vectors}.
    """
    from spark_jobs.delta_io import replace_partitions

    truth: dict[tuple[str, str, dt.date], np.ndarray] = {}
    for table in tables:
        n = users if table in ("ur", "cr_user") else items
        parts, days = [], set()
        for spec, ds_list in plan.items():
            for ds in ds_list:
                day = parse_ds(ds)
                mat = day_vectors(spec, table, day, n, seed)
                truth[(spec.version, table, day)] = mat
                parts.append(arrow_table(cfg, table, spec, day, np.arange(n), mat))
                days.add(day)
        versions = " OR ".join(f"model_version = '{s.version}'" for s in plan)
        df = spark.createDataFrame(pa.concat_tables(parts))
        replace_partitions(df, cfg.table_path(table), sorted(days), {"job": "synthetic"}, extra_predicate=versions)
    return truth
