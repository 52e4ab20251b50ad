"""Entry script for `spark-submit`: the same pipeline functions on any master (standalone, k8s, yarn).

    spark-submit --master spark://HOST:7077 --packages io.delta:delta-spark_2.13:4.0.1 \\
        --conf spark.pyspark.python=/path/to/venv/bin/python cli/submit.py --config lfm.yaml refresh --ds D

`spark_jobs.session.get_spark` keeps what spark-submit passed (master, packages, conf) and adds the Delta extension
and the config's settings spark-submit left unset. Each job writes, audits and publishes like `lfm refresh` /
`lfm backfill`. The lakehouse and registry paths must be reachable from every executor (shared disk or object
store).
"""
from __future__ import annotations

import argparse
import logging
import sys

from lfm.config import load_config
from lfm.errors import LfmError
from lfm.names import check_model_version, check_run_id, parse_ds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="submit.py", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="config file (default: $LFM_CONFIG, ./lfm.yaml)")
    sub = parser.add_subparsers(dest="job", required=True)
    for name in ("refresh", "backfill"):
        p = sub.add_parser(name)
        if name == "refresh":
            p.add_argument("--ds", required=True, type=parse_ds)
        else:
            p.add_argument("--from", dest="first", required=True, type=parse_ds)
            p.add_argument("--to", dest="last", required=True, type=parse_ds)
            p.add_argument("--warmup-days", type=int, default=0)
        p.add_argument("--model", type=check_model_version)
        p.add_argument("--layer")
        p.add_argument("--cold-start", action="store_true")
        p.add_argument("--run-id", type=check_run_id)
        p.add_argument("--no-gate", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    from pipeline.export import backfill_and_release, write_and_release
    from pipeline.spec import resolve_export
    from spark_jobs.session import get_spark

    try:
        cfg = load_config(args.config)
        spark = get_spark(cfg)
        print(f"submit: master {spark.sparkContext.master}, app {spark.sparkContext.applicationId}", flush=True)
        export = resolve_export(cfg, args.model, args.layer)
        gate = cfg.quality.enabled and not args.no_gate
        if args.job == "refresh":
            days = [write_and_release(spark, cfg, export, args.ds, args.cold_start, args.run_id, gate)]
        else:
            days = backfill_and_release(spark, cfg, export, args.first, args.last, args.warmup_days, args.cold_start,
                                        args.run_id, gate)
        for d in days:
            c = d.candidate
            print(f"submit: {args.job} {c.ds} export {c.spec.id} model {c.spec.model_version} layer "
                  f"{c.spec.cr_layer} rows {c.rows} released {d.release is not None}", flush=True)
        spark.stop()
        return 0
    except LfmError as err:
        print(f"submit {args.job}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
