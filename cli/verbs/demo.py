"""`lfm demo`: the README's main command (see pipeline.demo)."""
from __future__ import annotations

import argparse
from pathlib import Path

from lfm.config import LfmConfig


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole platform end to end on the embedded default",
                       description="Synthesize (or --data) -> ingest -> pretrain if no model is registered -> "
                       "select the CR layer -> run-daily the last days -> summary with an online lookup.")
    p.add_argument("--data", type=Path, help="a folder holding the sources of lfm.yaml (default: synthesize "
                   "one in the KuaiRand layout)")
    p.add_argument("--users", type=int, default=3000)
    p.add_argument("--items", type=int, default=600)
    p.add_argument("--days", type=int, default=7, help="days to synthesize (5 at least)")
    p.add_argument("--events-per-day", type=int, default=8000)
    p.add_argument("--daily-days", type=int, default=3, help="the last N days go through run-daily (0: prepare the world alone: data, model, CR layer)")
    p.add_argument("--max-epochs", type=int, default=3, help="pretraining epochs when no model is registered")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from pipeline.demo import DemoOptions, run_demo

    result = run_demo(cfg, DemoOptions(data=args.data, users=args.users, items=args.items, days=args.days,
                                       events_per_day=args.events_per_day, daily_days=args.daily_days,
                                       max_epochs=args.max_epochs))
    return 1 if result.failed else 0
