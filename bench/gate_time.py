"""How long the quality gate adds to one day's refresh, on synthetic exports generated directly in Spark.

For each scale, writes two healthy days (D-1, D) of `ur`, `cr_user` (N users) and `ir`, `cr_item` (M items),
all 64-d, plus a day of events (one event per user), into a fresh lakehouse, then times `run_gate` for D twice
(wall seconds, and CPU seconds of the Spark JVM and Python, which do not depend on how busy the machine is)
in one process: the first run pays GE's start-up (context, suites, first Spark plans), the second is the steady
state of a daily job. Vectors are an N(0,1) base per entity plus N(0, 0.2^2) noise per day, generated in Spark.

    .venv/bin/python bench/gate_time.py --users 27285 --items 7583 --users 1000000 --items 100000
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

from lakehouse.delta_io import replace_partitions, table_version  # noqa: E402
from lfm.config import LfmConfig, config_from_dict  # noqa: E402
from lfm.contract import EMBEDDING_TABLES, PARTITION_BY, day_end  # noqa: E402
from spark_jobs.session import get_spark  # noqa: E402
from tests.support.synthetic_vectors import spec  # noqa: E402

D = dt.date(2022, 5, 2)
DIM = 64
SPEC = spec("beef00c0ffee00c0ffee", ur_dim=DIM, ir_dim=DIM, cr_dim=DIM, cr_layer="dnn_0")


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


def run(spark: SparkSession, root: Path, users: int, items: int) -> dict:
    from validation.gate import run_gate

    shutil.rmtree(root, ignore_errors=True)
    cfg = config_from_dict({"lakehouse": str(root / "lakehouse")})
    t0 = time.perf_counter()
    events(spark, cfg, users, items, D)
    for table, key, n in (("ur", cfg.schema.user_key, users), ("cr_user", cfg.schema.user_key, users),
                          ("ir", cfg.schema.item_key, items), ("cr_item", cfg.schema.item_key, items)):
        embeddings(spark, cfg, table, key, n, D)
    write_s = time.perf_counter() - t0
    runs = []
    versions = {t: int(table_version(spark, cfg.table_path(t))) for t in EMBEDDING_TABLES}  # D-1 and D: one commit
    for _ in range(2):
        cpu0, load0 = cpu_seconds(), os.getloadavg()[0]
        result = run_gate(spark, cfg, D, SPEC, versions=versions, previous_versions=versions)
        assert result.passed, result.summary()
        runs.append({"total_s": round(result.seconds, 1), "cpu_s": round(cpu_seconds() - cpu0, 1),
                     "load_avg": round((load0 + os.getloadavg()[0]) / 2, 1),
                     **{t: round(r.seconds, 1) for t, r in result.tables.items()}})
    return {"users": users, "items": items, "dim": DIM, "write_two_days_s": round(write_s, 1),
            "gate_first_run": runs[0], "gate_second_run": runs[1]}


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
    ap.add_argument("--users", type=int, action="append", default=[], help="repeat with --items per scale")
    ap.add_argument("--items", type=int, action="append", default=[])
    ap.add_argument("--kuairand", type=Path, help="a KuaiRand-layout folder: gate its inputs on every day")
    ap.add_argument("--out", type=Path, default=Path("bench/out/gate_time"))
    args = ap.parse_args()
    if len(args.users) != len(args.items):
        ap.error("give one --items per --users")
    spark = get_spark(config_from_dict({}))
    if args.kuairand:
        print(json.dumps(kuairand(spark, args.out / "kuairand", args.kuairand)), flush=True)
        shutil.rmtree(args.out / "kuairand", ignore_errors=True)
    for users, items in zip(args.users, args.items):
        print(json.dumps(run(spark, args.out / f"u{users}", users, items)), flush=True)
        shutil.rmtree(args.out / f"u{users}", ignore_errors=True)


if __name__ == "__main__":
    main()
