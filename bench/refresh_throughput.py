"""Benchmark of the daily refresh: UR / IR / CR extraction through Spark against a plain PyTorch loop.

    .venv/bin/python bench/refresh_throughput.py [--scale 1.0] [--workdir /tmp/lfm_bench] [--out docs/refresh_bench.md]

At --scale 1: synthetic data with 1M users, 100k items and 5M events on the refreshed day (smaller scales shrink all
three). For each of UR (users table), IR (items table) and CR (the day's joined samples at the refresh's layer,
including the per-batch decay weighting and partial sums the refresh does), it measures rows/s of
- `plain`: one Python process, torch with as many threads as Spark has cores, reading the same parquet rows in
  10k-row Arrow batches and running the same `Extractor` (and, for CR, the same partial sums);
- `spark`: the refresh's own `mapInArrow` functions on local[N] (N tasks x 1 torch thread) to a no-op sink;
- `spark+delta`: the same with the Delta write the refresh does (UR, IR; CR includes the reduce side and both
  CR tables);
- `predict_batch_udf`: Spark's other Arrow path (pyspark.ml.functions) with the same Extractor, to a no-op sink;
and the peak resident memory of each (the process, or the Spark JVM plus its Python workers). Then one full
cold-start refresh (plan, compute, publish six tables) at 1%, 10% and 100% of the scale (10k, 100k, 1M users).
Results go to stdout and, with --out, to a markdown file.
"""
from __future__ import annotations

import argparse
import datetime as dt
import inspect
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.memory import TreeSampler  # noqa: E402 - after the path is set

DAY = dt.date(2022, 5, 2)


def make_cfg(root: Path, cores: int):
    from lfm.config import config_from_dict

    return config_from_dict({
        "lakehouse": str(root / "lakehouse"), "registry": {"path": str(root.parent / "registry")},
        "quality": {"enabled": False},
        "train": {"max_epochs": 1, "batch_size": 4096},
        "spark": {"master": f"local[{cores}]", "conf": {
            "spark.sql.session.timeZone": "UTC", "spark.sql.shuffle.partitions": str(2 * cores),
            "spark.default.parallelism": str(cores), "spark.driver.memory": "6g",
            "spark.sql.execution.arrow.pyspark.enabled": "true", "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false", "spark.databricks.delta.snapshotPartitions": "2",
            "spark.sql.sources.partitionOverwriteMode": "dynamic"}},
    }, "<bench>", str(root))


def prepare(spark, workdir: Path, users: int, cores: int, log) -> object:
    """Synthetic data (users, users/10 items, 5*users events on DAY) ingested into its own lakehouse."""
    from spark_jobs.ingest import ingest
    from spark_jobs.synth import SynthSpec, write_synthetic

    root = workdir / f"u{users}"
    cfg = make_cfg(root, cores)
    if (root / "ready").exists():
        return cfg
    shutil.rmtree(root, ignore_errors=True)
    t0 = time.perf_counter()
    spec = SynthSpec(users=users, items=max(users // 10, 10), days=1, events_per_day=5 * users, seed=1,
                     start=DAY.isoformat())
    write_synthetic(spec, root / "src")
    ingest(spark, cfg, root / "src")
    shutil.rmtree(root / "src")
    (root / "ready").write_text("ok")
    log(f"data {users:,} users: synth + ingest {time.perf_counter() - t0:.0f}s")
    return cfg


def pretrain_model(spark, cfg, log) -> str:
    """A default-size LFM trained one epoch on a 200k-row sample (weights do not matter for throughput)."""
    from models.registry import Registry
    from models.training.pretrain import pretrain
    from spark_jobs.samples import samples

    reg = Registry(cfg)
    if reg.list():
        return reg.latest().model_version
    t0 = time.perf_counter()
    df = samples(spark, cfg, [DAY])
    n = df.count()
    table = df.sample(fraction=min(1.0, 250_000 / n), seed=0).toArrow()
    cut = int(table.num_rows * 0.8)
    res = pretrain(table.slice(0, cut), table.slice(cut), cfg, progress=None)
    card = reg.register(res.model, res.encoders, {"bench": True})
    log(f"pretrain on {table.num_rows:,} sampled rows: {time.perf_counter() - t0:.0f}s, model {card.model_version}")
    return card.model_version


# ---- inputs shared by every method: parquet files of exactly the rows each extraction reads ----

def stage_inputs(spark, cfg, plan, workdir: Path) -> dict[str, Path]:
    from lakehouse.features import features_as_of
    from spark_jobs.refresh.compute import day_samples, users_in_scope

    s = cfg.schema
    out = {}
    frames = {
        "UR": users_in_scope(spark, cfg, plan),
        "IR": features_as_of(spark, cfg, "items", plan.ds, plan.input_versions["items"]).select(
            s.item_key, *[f.name for f in s.item_fields if f.name != s.item_key]),
        "CR": day_samples(spark, cfg, plan),
    }
    for name, df in frames.items():
        path = workdir / f"stage_{name}"
        if not path.exists():
            df.write.mode("overwrite").parquet(str(path))
        out[name] = path
    return out


def plain_loop(path: Path, kind: str, model_dir: str, layer: str, cfg_json: str, threads: int,
               batch_rows: int, day_end_ms: int, tau: float) -> tuple[int, float]:
    """Single process: pyarrow reads the parquet in batches, the Extractor runs with `threads` torch threads."""
    import pyarrow.dataset as ds

    from inference import decay
    from inference.extract import Extractor
    from inference.kernels import group_codes, partial_sums
    from lfm.config import LfmConfig

    cfg = LfmConfig.model_validate_json(cfg_json)
    ex = Extractor(model_dir, threads=threads, batch_rows=batch_rows, schema=cfg.schema)
    ex.checkpoint  # load before the clock starts, as a Spark worker does before its first batch
    t0 = time.perf_counter()
    rows = 0
    for b in ds.dataset(str(path), format="parquet").to_batches(batch_size=batch_rows):
        if b.num_rows == 0:
            continue
        if kind == "UR":
            v = ex.user_vectors(b)
        elif kind == "IR":
            v = ex.item_vectors(b)
        else:
            t_ms = b.column("__t_ms").to_numpy()
            w = decay.sample_weights(t_ms, day_end_ms, tau)
            cr = ex.cross_vectors(b, layer)
            for key in (cfg.schema.user_key, cfg.schema.item_key):
                codes, uniques = group_codes(b.column(key))
                partial_sums(codes, uniques, cr, w, t_ms)
            v = cr
        rows += b.num_rows
        del v
    return rows, time.perf_counter() - t0


def _plain_child(args_json: str) -> None:
    """Entry of the plain-loop subprocess: prints rows, seconds and its own peak RSS as JSON."""
    import resource

    a = json.loads(args_json)
    rows, secs = plain_loop(Path(a["path"]), a["kind"], a["model_dir"], a["layer"], a["cfg"], a["threads"],
                            a["batch_rows"], a["day_end_ms"], a["tau"])
    print(json.dumps({"rows": rows, "seconds": secs,
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def run_plain(path, kind, plan, cfg, threads) -> dict:
    import subprocess

    args = {"path": str(path), "kind": kind, "model_dir": plan.model_dir, "layer": plan.cr_layer,
            "cfg": cfg.model_dump_json(by_alias=True), "threads": threads, "batch_rows": cfg.refresh.arrow_batch_rows,
            "day_end_ms": plan.day_end_ms, "tau": cfg.refresh.tau_hours}
    out = subprocess.run([sys.executable, __file__, "--plain-child", json.dumps(args)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def spark_frame(spark, cfg, plan, kind: str, path: Path, fraction: float | None = None):
    """The refresh's own mapInArrow stage over the staged rows (UR/IR: towers; CR: weighted partial sums)."""
    import functools

    from inference.kernels import cr_partial_batches, tower_batches
    from spark_jobs.refresh import compute as R

    s = cfg.schema
    R._arrow_conf(spark, cfg)
    src = spark.read.parquet(str(path))
    src = R._spread(src, R._partitions(spark, cfg))
    if fraction:
        src = src.sample(fraction=fraction, seed=0)
    ex = R._extractor(plan, cfg)
    if kind in ("UR", "IR"):
        key, out, side = (s.user_key, "ur", "user") if kind == "UR" else (s.item_key, "ir", "item")
        fn = functools.partial(tower_batches, extractor=ex, key=key, out=out, side=side)
        return src.mapInArrow(fn, f"`{key}` {src.schema[key].dataType.simpleString()}, `{out}` array<float>, "
                                  "__finite boolean")
    ut, it = src.schema[s.user_key].dataType, src.schema[s.item_key].dataType
    fn = functools.partial(cr_partial_batches, extractor=ex, points=(plan.cr_layer,), ukey=s.user_key,
                           ikey=s.item_key, ukey_type=R._arrow_type(ut), ikey_type=R._arrow_type(it),
                           day_end_ms=plan.day_end_ms, tau_hours=cfg.refresh.tau_hours)
    return src.mapInArrow(fn, f"point string, ukey {ut.simpleString()}, ikey {it.simpleString()}, ord bigint, "
                              "scale double, t_last bigint, vec array<double>")


def pbudf_frame(spark, cfg, plan, kind: str, path: Path):
    """predict_batch_udf with the same Extractor (one vector per row; CR without the partial sums)."""
    from pyspark.ml.functions import predict_batch_udf
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from spark_jobs.refresh import compute as R

    s = cfg.schema
    src = R._spread(spark.read.parquet(str(path)), R._partitions(spark, cfg))
    cols = ([f.name for f in s.user_fields] if kind == "UR" else [f.name for f in s.item_fields] if kind == "IR"
            else list(dict.fromkeys([*s.feature_names, s.scenario])))
    model_dir, threads, layer, batch = plan.model_dir, cfg.refresh.torch_threads_per_task, plan.cr_layer, \
        cfg.refresh.arrow_batch_rows

    def make_predict_fn():
        import pyarrow as pa

        from inference.extract import Extractor

        ex = Extractor(model_dir, threads=threads, batch_rows=batch)

        def predict(*arrays):
            b = pa.RecordBatch.from_arrays([pa.array(a) for a in arrays], names=cols)
            if kind == "UR":
                return ex.user_vectors(b)
            if kind == "IR":
                return ex.item_vectors(b)
            return ex.cross_vectors(b, layer)

        # predict_batch_udf counts the parameters to map one column per model input
        predict.__signature__ = inspect.Signature(
            [inspect.Parameter(f"c{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(len(cols))])
        return predict

    udf = predict_batch_udf(make_predict_fn, return_type=T.ArrayType(T.FloatType()), batch_size=batch)
    return src.select(udf(*[F.col(c) for c in cols]).alias("v"))


def timed_noop(spark, df) -> float:
    t0 = time.perf_counter()
    df.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - t0


def jvm_pid(spark) -> int:
    """The Spark JVM: this process's `java` child (the PySpark gateway)."""
    import psutil

    return next(p.pid for p in psutil.Process().children() if p.name() == "java")


def extraction(spark, cfg, plan, staged, cores: int, log) -> list[dict]:
    """rows/s of every method for UR, IR and CR; medians over `repeats` (ratios within one run)."""
    from pyspark.sql import functions as F

    from lakehouse.delta_io import replace_partitions
    from lfm.contract import PARTITION_BY

    results = []
    for kind in ("UR", "IR", "CR"):
        n = spark.read.parquet(str(staged[kind])).count()
        plain = run_plain(staged[kind], kind, plan, cfg, cores)
        log(f"{kind} plain loop ({cores} threads): {n / plain['seconds']:,.0f} rows/s, "
            f"peak {plain['peak_mib']:.0f} MiB")
        row = {"kind": kind, "rows": n, "plain": n / plain["seconds"], "plain_peak_mib": plain["peak_mib"]}
        timed_noop(spark, spark_frame(spark, cfg, plan, kind, staged[kind], 0.001))  # each worker loads the model
        with TreeSampler(jvm_pid(spark)) as mem:
            secs = timed_noop(spark, spark_frame(spark, cfg, plan, kind, staged[kind]))
        row.update(spark=n / secs, spark_peak_mib=mem.peak()["total"] * 1024)
        log(f"{kind} spark mapInArrow noop: {n / secs:,.0f} rows/s ({n / secs / row['plain']:.2f}x), "
            f"peak {row['spark_peak_mib']:.0f} MiB")
        with TreeSampler(jvm_pid(spark)) as mem:
            secs = timed_noop(spark, pbudf_frame(spark, cfg, plan, kind, staged[kind]))
        row.update(pbudf=n / secs, pbudf_peak_mib=mem.peak()["total"] * 1024)
        log(f"{kind} predict_batch_udf noop: {n / secs:,.0f} rows/s ({n / secs / row['plain']:.2f}x), "
            f"peak {row['pbudf_peak_mib']:.0f} MiB")
        if kind in ("UR", "IR"):
            name = kind.lower()
            df = spark_frame(spark, cfg, plan, kind, staged[kind]).select(
                F.col(cfg.schema.user_key if kind == "UR" else cfg.schema.item_key), name,
                F.lit(plan.model_version).alias("model_version"), F.lit(plan.spec.id).alias("export_id"),
                F.lit(plan.ds).alias("ds"),
                F.timestamp_millis(F.lit(plan.day_end_ms)).alias("event_timestamp"))
            t0 = time.perf_counter()
            replace_partitions(df, str(Path(cfg.resolve(cfg.lakehouse)) / f"bench_{name}"), [plan.ds], {"bench": 1},
                               extra_predicate=f"export_id = '{plan.spec.id}'", partition_by=PARTITION_BY)
            secs = time.perf_counter() - t0
            row["spark_delta"] = n / secs
            log(f"{kind} spark mapInArrow + Delta write: {n / secs:,.0f} rows/s ({n / secs / row['plain']:.2f}x)")
        results.append(row)
    return results


def full_refresh(spark, cfg, model_version: str, log) -> dict:
    from pipeline.spec import resolve_export
    from spark_jobs.refresh import plan_refresh
    from spark_jobs.refresh.compute import compute_day
    from spark_jobs.refresh.write import record_candidate, write_tables

    t0 = time.perf_counter()
    export = resolve_export(cfg, model_version)
    plan = plan_refresh(spark, cfg, export.spec, export.day_model(cfg, DAY), DAY, cold_start=True)
    t1 = time.perf_counter()
    with TreeSampler(jvm_pid(spark)) as mem:
        out = compute_day(spark, cfg, plan, None)
        t2 = time.perf_counter()
        record_candidate(cfg, plan, write_tables(spark, cfg, plan, out), out)
        out.release()
    t3 = time.perf_counter()
    row = {"users": out.rows["ur"], "items": out.rows["ir"], "events": None, "plan_s": t1 - t0, "compute_s": t2 - t1,
           "publish_s": t3 - t2, "total_s": t3 - t0, "peak_mib": mem.peak()["total"] * 1024}
    log(f"refresh {row['users']:,} users: plan {row['plan_s']:.1f}s compute {row['compute_s']:.1f}s "
        f"publish {row['publish_s']:.1f}s total {row['total_s']:.1f}s, peak {row['peak_mib']:.0f} MiB")
    return row


def markdown(args, extract_rows, refresh_rows, cores: int, layer: str, started: str, lines: list[str]) -> str:
    out = [f"## Run of {started} (scale {args.scale}, local[{cores}], layer {layer})", "",
           f"Command: `.venv/bin/python bench/refresh_throughput.py --scale {args.scale}"
           f"{' --skip-' + ' --skip-'.join(args.skip) if args.skip else ''}`  ",
           f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared), "
           f"Python {platform.python_version()}", ""]
    if extract_rows:
        out += ["| what | rows | plain PyTorch rows/s | Spark mapInArrow (noop) | ratio | Spark + Delta write "
                "| ratio | predict_batch_udf (noop) | ratio | peak MiB plain / Spark / pbudf |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        for r in extract_rows:
            delta = (f"{r['spark_delta']:,.0f} | {r['spark_delta'] / r['plain']:.2f}x" if "spark_delta" in r
                     else "(see refresh) | -")
            out.append(f"| {r['kind']} | {r['rows']:,} | {r['plain']:,.0f} | {r['spark']:,.0f} | "
                       f"{r['spark'] / r['plain']:.2f}x | {delta} | {r['pbudf']:,.0f} | "
                       f"{r['pbudf'] / r['plain']:.2f}x | {r['plain_peak_mib']:.0f} / {r['spark_peak_mib']:.0f} / "
                       f"{r['pbudf_peak_mib']:.0f} |")
        out.append("")
    if refresh_rows:
        out += ["| full refresh (cold start) | users | items | events | plan s | compute s | publish s | total s | "
                "s per 1k users | peak MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
        for r in refresh_rows:
            out.append(f"| | {r['users']:,} | {r['items']:,} | {r['events']:,} | {r['plan_s']:.1f} | "
                       f"{r['compute_s']:.1f} | {r['publish_s']:.1f} | {r['total_s']:.1f} | "
                       f"{1000 * r['total_s'] / r['users']:.3f} | {r['peak_mib']:.0f} |")
        out.append("")
    out += ["<details><summary>log</summary>", "", "```", *lines, "```", "</details>", ""]
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="1.0 = 1M users, 100k items, 5M events")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/lfm_bench"))
    p.add_argument("--cores", type=int, default=2, help="Spark local[N] and the plain loop's torch threads")
    p.add_argument("--skip", nargs="*", default=[], choices=["extract", "refresh"])
    p.add_argument("--out", type=Path, help="append the results (markdown) to this file")
    p.add_argument("--plain-child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.plain_child:
        _plain_child(args.plain_child)
        return 0

    from pipeline.spec import resolve_export
    from spark_jobs.refresh import plan_refresh
    from spark_jobs.samples import samples
    from spark_jobs.session import get_spark

    lines: list[str] = []

    def log(msg: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        lines.append(f"{stamp} {msg}")
        print(f"{stamp} {msg}", flush=True)

    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    args.workdir.mkdir(parents=True, exist_ok=True)
    main_users = int(1_000_000 * args.scale)
    cfg = make_cfg(args.workdir / f"u{main_users}", args.cores)
    spark = get_spark(cfg)
    cfg = prepare(spark, args.workdir, main_users, args.cores, log)
    version = pretrain_model(spark, cfg, log)
    export = resolve_export(cfg, version)
    plan = plan_refresh(spark, cfg, export.spec, export.day_model(cfg, DAY), DAY, cold_start=True, run_id="bench")
    extract_rows, refresh_rows = [], []
    if "extract" not in args.skip:
        staged = stage_inputs(spark, cfg, plan, args.workdir / f"u{main_users}")
        extract_rows = extraction(spark, cfg, plan, staged, args.cores, log)
    if "refresh" not in args.skip:
        for frac in (0.01, 0.1, 1.0):
            users = max(int(main_users * frac), 100)
            c = prepare(spark, args.workdir, users, args.cores, log)
            row = full_refresh(spark, c, version, log)
            row["events"] = samples(spark, c, [DAY]).count()
            refresh_rows.append(row)
    text = markdown(args, extract_rows, refresh_rows, args.cores, plan.cr_layer, started, lines)
    print("\n" + text)
    if args.out:
        with args.out.open("a") as fh:
            fh.write(text + "\n")
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
