"""Entry script for `spark-submit`: the same refresh / backfill functions on any master (standalone, k8s, yarn).

    spark-submit --master spark://HOST:7077 --packages io.delta:delta-spark_2.13:4.0.1 \\
        --conf spark.pyspark.python=/path/to/venv/bin/python spark_jobs/submit.py --config lfm.yaml refresh --ds D

The session is built from what spark-submit passed (master, packages, conf) plus the Delta extension and the
config's `spark.conf` entries that spark-submit did not set; `get_spark` then reuses it, so the jobs run
unchanged. The lakehouse and registry paths must be reachable from every executor (shared disk or object store).
"""
from __future__ import annotations

import argparse
import logging
import sys

from pyspark import SparkConf
from pyspark.sql import SparkSession

from lfm.config import LfmConfig, load_config
from lfm.errors import LfmError
from lfm.names import check_model_version, parse_ds

_DELTA = {"spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
          "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog"}


def session_for_submit(cfg: LfmConfig) -> SparkSession:
    """A Delta-enabled session on spark-submit's master; spark-submit's own settings win over the config's."""
    given = SparkConf()
    builder = SparkSession.builder.appName(cfg.spark.app_name)
    for key, value in {**cfg.spark.conf, **_DELTA}.items():
        if not given.contains(key):
            builder = builder.config(key, value)
    if not given.contains("spark.jars.packages") and not given.contains("spark.jars"):
        builder = builder.config("spark.jars.packages", cfg.spark.delta_package)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    return spark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="submit.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="config file (default: $LFM_CONFIG, ./lfm.yaml)")
    sub = parser.add_subparsers(dest="job", required=True)
    p = sub.add_parser("refresh")
    p.add_argument("--ds", required=True, type=parse_ds)
    p.add_argument("--model", type=check_model_version)
    p.add_argument("--layer")
    p.add_argument("--cold-start", action="store_true")
    p.add_argument("--run-id")
    p = sub.add_parser("backfill")
    p.add_argument("--from", dest="first", required=True, type=parse_ds)
    p.add_argument("--to", dest="last", required=True, type=parse_ds)
    p.add_argument("--model", type=check_model_version)
    p.add_argument("--layer")
    p.add_argument("--cold-start", action="store_true")
    p.add_argument("--warmup-days", type=int, default=0)
    p.add_argument("--run-id")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    from spark_jobs.session import get_spark

    try:
        cfg = load_config(args.config)
        session_for_submit(cfg)
        spark = get_spark(cfg)  # reuses the session above (and checks Delta)
        print(f"submit: master {spark.sparkContext.master}, app {spark.sparkContext.applicationId}", flush=True)
        if args.job == "refresh":
            from spark_jobs.refresh import refresh

            results = [refresh(spark, cfg, args.ds, args.model, args.layer, args.cold_start, args.run_id)]
        else:
            from spark_jobs.backfill import backfill

            results = backfill(spark, cfg, args.first, args.last, args.model, args.layer,
                               warmup_days=args.warmup_days, cold_start=args.cold_start, run_id=args.run_id)
        for r in results:
            print(f"submit: {args.job} {r.ds} model {r.model_version} layer {r.cr_layer} rows {r.rows}", flush=True)
        spark.stop()
        return 0
    except LfmError as err:
        print(f"submit {args.job}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
