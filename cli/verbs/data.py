"""Verbs that bring raw data in: `lfm synth`, `lfm ingest`."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from lfm.config import LfmConfig
from lfm.names import parse_ds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic data set in the KuaiRand layout")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--events-per-day", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", default="2022-04-25", help="first day, YYYY-MM-DD")
    p.set_defaults(run=run_synth)

    p = sub.add_parser("ingest", help="ingest a KuaiRand-layout folder into the Delta lakehouse")
    p.add_argument("--source", required=True, type=Path)
    p.add_argument("--ds", nargs="*", help="only these days (YYYY-MM-DD); default: every day in the source")
    p.set_defaults(run=run_ingest)


def run_synth(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from spark_jobs.synth import SynthSpec, write_synthetic

    spec = SynthSpec(users=args.users, items=args.items, days=args.days, events_per_day=args.events_per_day,
                     seed=args.seed, start=parse_ds(args.start).isoformat(), timezone=cfg.schema.timezone)
    t0 = time.perf_counter()
    counts = write_synthetic(spec, args.out, progress=lambda day, n: print(f"  synth {day}: {n:,} events so far"))
    print(f"synth: wrote {counts} to {args.out} in {time.perf_counter() - t0:.1f}s")
    return 0


def run_ingest(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from spark_jobs.ingest import ingest
    from spark_jobs.session import get_spark

    days = [parse_ds(d) for d in args.ds] if args.ds else None
    t0 = time.perf_counter()
    result = ingest(get_spark(cfg), cfg, args.source, days)
    print(f"ingest: events {result.events_rows:,} rows in {len(result.days)} ds partitions "
          f"({result.days[0]}..{result.days[-1]}), users {result.users_rows:,}, items {result.items_rows:,} "
          f"-> {cfg.resolve(cfg.lakehouse)} in {time.perf_counter() - t0:.1f}s")
    return 0
