"""Verb of the quality gate: `lfm validate` — audit a day's newest candidate and release it when every table
passed; `lfm status` (cli.verbs.daily) shows verdicts and releases beside the pipeline runs."""
from __future__ import annotations

import argparse

from lfm.config import LfmConfig
from lfm.contract import EMBEDDING_TABLES, INPUT_TABLES
from lfm.names import check_export_id, check_model_version, parse_ds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="gate a day's newest refresh and release it when every table passes; "
                                        "exit 1 if any is quarantined")
    p.add_argument("--ds", required=True, type=parse_ds, help="the day, YYYY-MM-DD")
    p.add_argument("--table", action="append", choices=(*INPUT_TABLES, *EMBEDDING_TABLES),
                   help="validate only these tables (repeatable); input tables are checked alone, without a release; "
                        f"default: {' '.join(EMBEDDING_TABLES)}, then release the day")
    p.add_argument("--model", type=check_model_version, help="the model version whose export to validate "
                   "(default: the day's only export)")
    p.add_argument("--export", type=check_export_id, help="the export id to validate (see `lfm status`)")
    p.set_defaults(run=run_validate)


def run_validate(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from pipeline.export import validate_day
    from spark_jobs.session import get_spark

    day = validate_day(get_spark(cfg), cfg, args.ds, args.model, args.export, args.table)
    print(day.gate.summary())
    if day.release is not None:
        print(f"released {args.ds} of export {day.release.export_id} at "
              + ", ".join(f"{k} v{v}" for k, v in sorted(day.release.table_versions.items())))
    return 0 if day.gate.passed else 1
