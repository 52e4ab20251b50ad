"""Verbs that bring raw data in: `lfm synth`, `lfm ingest`."""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from lfm.config import LfmConfig
from lfm.config.sources import DuplicatePolicy
from lfm.names import parse_ds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="write a synthetic data set in the KuaiRand layout (the default sources)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--events-per-day", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--start", default="2022-04-25", help="first day, YYYY-MM-DD")
    p.set_defaults(run=run_synth)

    p = sub.add_parser("ingest", help="ingest the sources declared in lfm.yaml (`sources:`) into the lakehouse")
    p.add_argument("--source", help="folder relative source paths resolve against (default: "
                   "sources.root)")
    p.add_argument("--ds", nargs="*", help="only these days (YYYY-MM-DD); default: every day in the source")
    p.add_argument("--dry-run", action="store_true", help="check everything and report the mapping, row counts "
                   "and days found; write nothing")
    p.add_argument("--allow-empty", action="store_true", help="a --ds day the source holds no event of is recorded "
                   "as a day with no events even after the log's last event (without it such a day is refused as "
                   "not landed yet; one inside the log's span is an empty day anyway)")
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
    from spark_jobs.precheck import precheck
    from spark_jobs.session import get_spark

    days = [parse_ds(d) for d in args.ds] if args.ds else None
    t0 = time.perf_counter()
    checked = precheck(cfg, args.source)  # a misspelled column is named before Spark starts
    result = ingest(get_spark(cfg), cfg, args.source, days, dry_run=args.dry_run, prechecked=checked,
                    allow_empty=args.allow_empty)
    if args.dry_run:
        print("\n".join(dry_run_lines(result)))
        return 0
    print(f"ingest: events {result.events_rows:,} rows in {len(result.days)} ds partitions "
          f"({result.days[0]}..{result.days[-1]}){empty_text(result)}, users {result.users_rows:,}, items "
          f"{result.items_rows:,} -> {cfg.location(cfg.lakehouse).uri} in {time.perf_counter() - t0:.1f}s")
    print(f"ingest: {duplicates_line(result)}")
    return 0


def empty_text(result) -> str:
    """', of which N with no events (empty days): D, ...' when some days written had no events."""
    if not result.empty_days:
        return ""
    return (f", of which {len(result.empty_days)} with no events (empty days): "
            + ", ".join(d.isoformat() for d in result.empty_days))


def duplicates_line(result) -> str:
    """The exact duplicate events found in the days ingested and what `sources.events.duplicates` did with them."""
    if not result.duplicate_rows:
        return "no exact duplicate events"
    done = "dropped (one copy of each written)" if result.duplicates == DuplicatePolicy.drop else "kept"
    return (f"{result.duplicate_rows:,} exact duplicate event rows {'would be ' if result.dry_run else ''}{done} "
            f"(sources.events.duplicates: {result.duplicates.value})")


def dry_run_lines(result) -> list[str]:
    """The dry-run report: each source's columns and their roles, rows, the days found, the snapshots it would
    write."""
    lines = ["ingest --dry-run: every check passed; nothing was written", f"checked {result.before_spark}", "",
             f"{'source':<16} {'column':<24} {'from raw':<24} {'type':<10} role"]
    for m in result.mapping:
        lines.append(f"{m.source:<16} {m.name:<24} {m.raw:<24} {m.type:<10} {m.role or '-'}")
    lines.append("")
    lines.append("rows read: " + ", ".join(f"{k} {v:,}" for k, v in result.source_rows.items()))
    found = result.days_found
    lines.append(f"days found: {len(found)} ({found[0]}..{found[-1]})" if found else "days found: none")
    lines.append(f"would write: events {result.events_rows:,} rows in {len(result.days)} ds partitions "
                 f"({result.days[0]}..{result.days[-1]}){empty_text(result)}")
    lines.append(f"duplicates: {duplicates_line(result)}")
    for table, start in result.snapshots.items():
        lines.append(f"would write: {table} snapshot valid from {start}" if start else
                     f"{table}: the snapshot in force on {result.days[0]} already holds these rows (nothing to write)")
    return lines
