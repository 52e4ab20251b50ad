"""Verb of the quality gate: `lfm validate` (run the suites on one day); `lfm status` (lfm.commands.daily) shows
the verdicts beside the pipeline runs."""
from __future__ import annotations

import argparse

from lfm.config import LfmConfig
from lfm.config.quality import EMBEDDING_TABLES
from lfm.names import parse_ds

TABLES = ("events", "users", "items", *EMBEDDING_TABLES)  # kept literal so `lfm --help` does not import GE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="run the quality gate on one day's partitions; exit 1 if any is quarantined")
    p.add_argument("--ds", required=True, help="the day, YYYY-MM-DD")
    p.add_argument("--table", action="append", choices=TABLES,
                   help=f"a table to validate (repeatable); default: {' '.join(EMBEDDING_TABLES)}")
    p.add_argument("--model", help="model version; default: the version with most rows in the day's partitions")
    p.set_defaults(run=run_validate)


def run_validate(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from spark_jobs.session import get_spark
    from validation.gate import run_gate

    result = run_gate(get_spark(cfg), cfg, parse_ds(args.ds), args.model, args.table)
    print(result.summary())
    return 0 if result.passed else 1

