"""What the quality gate costs per table, against the floor: one plain Spark aggregation over the same data.

For each scale, writes two healthy days (D-1, D) of `ur`, `cr_user` (N users) and `ir`, `cr_item` (M items),
all 64-d, plus a day of events (one event per user), into a fresh lakehouse; runs the gate on D twice at the
written versions (the first run pays GE's start-up and Spark's first plans, the second is the steady state of a
daily job); then, in the same process, the floor for each table: one Spark aggregation that reads the same
partition at the same version, computes the same per-row vector statistics and every partition statistic the
gate checks (row count, nulls, width, finiteness, norm bounds, zero share, ds, end of day, model version,
duplicate keys) in one pass. Printed per table: rows, the gate's seconds (tables measured at once share the
cores, so these overlap) and Spark jobs (its job group, `validation.gate.job_group`), the floor's, and their
ratio; per run: the gate's wall seconds and CPU seconds (this process, the Spark JVM and its Python workers). With
`--concurrent-tables 1 2 4`, the steady runs take each of those `quality.concurrent_tables` twice in turn, and
their best walls are compared with one table at a time. Vectors are an N(0,1) base per entity plus N(0, 0.2^2)
noise per day, generated in Spark.

    .venv/bin/python bench/gate_time.py                       # 10k users / 1k items, then 100k / 10k
    .venv/bin/python bench/gate_time.py --users 1000000 --items 100000
    .venv/bin/python bench/gate_time.py --users 10000 --items 1000 --concurrent-tables 1 2 4
    .venv/bin/python bench/gate_time.py --kuairand ../shared/data/kuairand-pure   # the real inputs, every day
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.sql import SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from lakehouse.delta_io import export_predicate, read_table, replace_partitions, table_version  # noqa: E402
from lfm.config import LfmConfig, config_from_dict  # noqa: E402
from lfm.contract import EMBEDDING_TABLES, PARTITION_BY, day_end  # noqa: E402
from spark_jobs.session import get_spark  # noqa: E402
from tests.support.synthetic_vectors import spec  # noqa: E402

D = dt.date(2022, 5, 2)
DIM = 64
SPEC = spec("beef00c0ffee00c0ffee", ur_dim=DIM, ir_dim=DIM, cr_dim=DIM, cr_layer="dnn_0")
SCALES = ((10_000, 1_000), (100_000, 10_000))  # (users, items) when none are given


def embeddings(spark: SparkSession, cfg: LfmConfig, table: str, key: str, n: int, day: dt.date) -> None:
    """Write D-1 and D of `table` for keys 0..n-1 in one commit: a cached N(0,1) base plus N(0, 0.2^2) noise."""
    base = (spark.range(n).select(F.col("id").cast("int").alias(key),
                                  F.expr(f"transform(sequence(1, {DIM}), j -> randn())").alias("__base")).persist())
    frames = []
    for d in (day - dt.timedelta(days=1), day):
        end = day_end(d, cfg.schema.timezone)
        df = base.select(key, F.expr("transform(__base, x -> CAST(x + 0.2 * randn() AS FLOAT))").alias(table))
        if table.startswith("cr_"):
            df = df.withColumn("cr_layer", F.lit(SPEC.cr_layer))
        frames.append(df.withColumn("model_version", F.lit(SPEC.model_version)).withColumn("export_id", F.lit(SPEC.id))
                      .withColumn("ds", F.lit(d)).withColumn("event_timestamp", F.lit(end)))
    replace_partitions(frames[0].unionByName(frames[1]), cfg.table_path(table), [day - dt.timedelta(days=1), day],
                       {"job": "bench"}, extra_predicate=f"export_id = '{SPEC.id}'", partition_by=PARTITION_BY)
    base.unpersist()


def events(spark: SparkSession, cfg: LfmConfig, users: int, items: int, day: dt.date) -> None:
    """One event per user on D (coverage reads the distinct user and item keys of the day)."""
    s = cfg.schema
    df = (spark.range(users).select(F.col("id").cast("int").alias(s.user_key),
                                    (F.col("id") % items).cast("int").alias(s.item_key), F.lit(day).alias("ds")))
    replace_partitions(df, cfg.table_path("events"), [day], {"job": "bench"})


def cpu_seconds() -> float:
    """CPU time used so far by this process and its children (the Spark JVM and its Python workers)."""
    import psutil

    me = psutil.Process()
    total = 0.0
    for p in [me, *me.children(recursive=True)]:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:  # a worker that just exited
            continue
    return total


def jobs_in(spark: SparkSession, group: str) -> int:
    return len(spark.sparkContext.statusTracker().getJobIdsForGroup(group))


def floor(spark: SparkSession, cfg: LfmConfig, table: str, version: int) -> tuple[float, int]:
    """Seconds and Spark jobs of one aggregation computing the gate's partition statistics in one pass."""
    from validation.batch import DIM as WIDTH, FINITE, NORM, ZERO, with_vector_stats
    from validation.tables import table_spec

    tspec = table_spec(cfg, table)
    t = cfg.quality.thresholds(table)
    group = f"bench-floor {table}"
    spark.sparkContext.setJobGroup(group, group)
    before, t0 = jobs_in(spark, group), time.perf_counter()
    part = with_vector_stats(read_table(spark, cfg.table_path(table), version)
                             .where(export_predicate([D], SPEC.id)), table)
    c = F.col
    row = part.agg(
        F.count(F.lit(1)).alias("rows"), *[F.count_if(c(x).isNull()).alias(f"null_{x}") for x in tspec.columns],
        F.count_if(c(WIDTH) != DIM).alias("width"), F.count_if(~c(FINITE)).alias("finite"),
        F.count_if((c(NORM) < t.min_norm) | (c(NORM) > t.max_norm)).alias("norm"),
        F.count_if(c(ZERO)).alias("zero"), F.count_if(c("ds") != F.lit(D)).alias("ds"),
        F.count_if(c("event_timestamp") != F.lit(day_end(D, cfg.schema.timezone))).alias("end_of_day"),
        F.count_if(c("model_version") != SPEC.model_version).alias("version"),
        (F.count(F.lit(1)) - F.count_distinct(tspec.key, "model_version")).alias("duplicates")).first()
    seconds = time.perf_counter() - t0
    assert row["rows"] > 0 and row["duplicates"] == 0, row
    return seconds, jobs_in(spark, group) - before


def with_concurrency(cfg: LfmConfig, tables: int) -> LfmConfig:
    return cfg.model_copy(update={"quality": cfg.quality.model_copy(update={"concurrent_tables": tables})})


def run(spark: SparkSession, root: Path, users: int, items: int, concurrency: list[int]) -> list[dict]:
    from validation.gate import job_group, run_gate

    shutil.rmtree(root, ignore_errors=True)
    cfg = config_from_dict({"lakehouse": str(root / "lakehouse")})
    t0 = time.perf_counter()
    events(spark, cfg, users, items, D)
    sizes = {"ur": users, "cr_user": users, "ir": items, "cr_item": items}
    for table in EMBEDDING_TABLES:
        key = cfg.schema.user_key if table in ("ur", "cr_user") else cfg.schema.item_key
        embeddings(spark, cfg, table, key, sizes[table], D)
    print(f"\n== {users:,} users, {items:,} items, {DIM}-d: wrote two days of four tables in "
          f"{time.perf_counter() - t0:.1f}s", flush=True)
    versions = {t: int(table_version(spark, cfg.table_path(t))) for t in EMBEDDING_TABLES}  # D-1 and D: one commit
    out = []
    default = cfg.quality.concurrent_tables
    steady = [k for _ in range(2) for k in concurrency] if concurrency != [default] else [default]
    for attempt, tables in [("first", default), *[("steady", k) for k in steady]]:
        before = {t: jobs_in(spark, job_group(D, t)) for t in EMBEDDING_TABLES}
        cpu0, load0 = cpu_seconds(), os.getloadavg()[0]
        result = run_gate(spark, with_concurrency(cfg, tables), D, SPEC, versions=versions,
                          previous_versions=versions)
        assert result.passed, result.summary()
        cpu, load = cpu_seconds() - cpu0, (load0 + os.getloadavg()[0]) / 2
        print(f"gate run ({attempt}, {tables} tables at once): {result.seconds:.1f}s wall, {cpu:.1f}s CPU, "
              f"load {load:.1f}", flush=True)
        out.append({"users": users, "items": items, "run": attempt, "concurrent_tables": tables,
                    "wall_s": round(result.seconds, 2), "cpu_s": round(cpu, 1), "load": round(load, 1),
                    "tables": {t: {"rows": sizes[t], "gate_s": round(result.tables[t].seconds, 2),
                                   "gate_jobs": jobs_in(spark, job_group(D, t)) - before[t]}
                               for t in EMBEDDING_TABLES}})
    if len(set(steady)) > 1:
        walls = {k: sorted(r["wall_s"] for r in out[1:] if r["concurrent_tables"] == k) for k in set(steady)}
        print("steady gate wall s (best of 2) by tables at once: " + ", ".join(
            f"{k}: {walls[k][0]:.1f} ({walls[k][0] / walls[1][0]:.2f}x of one at a time)" if 1 in walls else
            f"{k}: {walls[k][0]:.1f}" for k in sorted(walls)), flush=True)
    steady = [r for r in out if r["concurrent_tables"] == default][-1]["tables"]
    for table in EMBEDDING_TABLES:
        floor(spark, cfg, table, versions[table])  # its first plan, as the gate's steady run had
        steady[table]["floor_s"], steady[table]["floor_jobs"] = (round(x, 2) for x in
                                                                 floor(spark, cfg, table, versions[table]))
    print(f"{'table':8} {'rows':>9} {'gate s':>8} {'jobs':>5} {'floor s':>8} {'jobs':>5} {'gate/floor':>10}")
    for table, r in steady.items():
        print(f"{table:8} {r['rows']:>9,} {r['gate_s']:>8.2f} {r['gate_jobs']:>5} {r['floor_s']:>8.2f} "
              f"{r['floor_jobs']:>5} {r['gate_s'] / r['floor_s']:>9.1f}x", flush=True)
    return out


def kuairand(spark: SparkSession, root: Path, source: Path) -> dict:
    """Ingest a KuaiRand-layout folder and gate its inputs (events, users, items) on every day it holds."""
    from spark_jobs.ingest import ingest
    from validation.gate import run_gate

    shutil.rmtree(root, ignore_errors=True)
    cfg = config_from_dict({"lakehouse": str(root / "lakehouse")})
    days = ingest(spark, cfg, source).days
    per_day = {}
    for day in days:
        result = run_gate(spark, cfg, day, tables=["events", "users", "items"])
        per_day[day.isoformat()] = {"passed": result.passed, "s": round(result.seconds, 1),
                                    "failed": {t: list(r.failed) for t, r in result.tables.items() if r.failed}}
    return {"source": str(source), "days": len(days), "all_passed": all(d["passed"] for d in per_day.values()),
            "per_day": per_day}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, action="append", default=[],
                    help="repeat with --items per scale (default: 10000/1000, then 100000/10000)")
    ap.add_argument("--items", type=int, action="append", default=[])
    ap.add_argument("--kuairand", type=Path, help="a KuaiRand-layout folder: gate its inputs on every day")
    ap.add_argument("--out", type=Path, default=Path("bench/out/gate_time"))
    ap.add_argument("--concurrent-tables", type=int, nargs="+", default=[],
                    help="steady runs with each of these quality.concurrent_tables, twice in turn (default: the "
                         "config's)")
    args = ap.parse_args()
    if len(args.users) != len(args.items):
        ap.error("give one --items per --users")
    spark = get_spark(config_from_dict({}))
    if args.kuairand:
        print(json.dumps(kuairand(spark, args.out / "kuairand", args.kuairand)), flush=True)
        shutil.rmtree(args.out / "kuairand", ignore_errors=True)
        return
    for users, items in list(zip(args.users, args.items)) or SCALES:
        concurrency = args.concurrent_tables or [config_from_dict({}).quality.concurrent_tables]
        for r in run(spark, args.out / f"u{users}", users, items, concurrency):
            print(json.dumps(r), flush=True)
        shutil.rmtree(args.out / f"u{users}", ignore_errors=True)


if __name__ == "__main__":
    main()
