"""Verbs of the daily operation: `lfm run-daily` (the whole chain for a day or a range), `lfm status`."""
from __future__ import annotations

import argparse

from lfm.config import LfmConfig
from lfm.names import check_model_version, check_run_id, parse_days, parse_ds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run-daily", help="ingest -> refresh -> withdraw -> validate -> publish -> materialize one "
                       "day (or a range), resumable", description="Run the daily chain for --ds, each attempt "
                       "recorded in the `runs` table: refresh writes a candidate, withdraw takes a release it "
                       "replaced out of the online store, validate gates exactly its versions, publish releases it, "
                       "materialize loads the release online. What is left to do is read from the day's candidate, "
                       "verdicts, release and online receipt: a rerun resumes at the first step not done (a failed "
                       "step, or a day rewritten or killed during its gate: gated again); a day released and online "
                       "does nothing (no Spark) unless --force. A range FIRST..LAST runs the days in order and stops "
                       "at a failure.")
    p.add_argument("--ds", required=True, type=parse_days, help="the day YYYY-MM-DD, a range FIRST..LAST or a,b,c")
    p.add_argument("--source", help="raw folder (holding the sources of lfm.yaml) to ingest the day "
                   "from; default: the day must already be in the lakehouse")
    p.add_argument("--model", type=check_model_version, help="model version (default: the latest registered)")
    p.add_argument("--layer", help="CR point (default: the one `lfm select-layer` recorded)")
    p.add_argument("--cold-start", action="store_true",
                   help="begin a new CR chain at the (first) day: no previous-day state needed")
    p.add_argument("--allow-empty", action="store_true", help="with --source: a day the source holds no event of "
                   "is ingested as a day with no events even after the log's last event (without it, such a day is "
                   "refused as not landed yet; a day inside the log's span is an empty day anyway)")
    p.add_argument("--force", action="store_true", help="rerun every step even if the day already succeeded")
    p.add_argument("--run-id", type=check_run_id, help="recorded in `runs`, commits and logs (default: random)")
    p.set_defaults(run=run_daily)

    p = sub.add_parser("status", help="the last days per export (candidate, gate, release, online, the next "
                                      "step) and step, per table (quality gate) and per export (releases); "
                                      "starts no Spark")
    p.add_argument("--days", type=int, default=7, help="how many of the most recent days to show (default 7)")
    p.add_argument("--ds", nargs="*", type=parse_ds, help="only these days (YYYY-MM-DD)")
    p.add_argument("--model", type=check_model_version, help="only this model version")
    p.set_defaults(run=run_status)


def _spark(cfg: LfmConfig):
    """The session, started when a step first needs it (a finished day imports no pyspark)."""
    from spark_jobs.session import get_spark

    return get_spark(cfg)


def run_daily(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from pipeline.daily import run_days

    done = run_days(cfg, args.ds, lambda: _spark(cfg), source=args.source, model_version=args.model,
                    cr_layer=args.layer, cold_start=args.cold_start, force=args.force, run_id=args.run_id, say=print,
                    allow_empty=args.allow_empty)
    for day in done:  # each step had its line, a finished day its "already complete": one closing line per day
        if not day.skipped:
            print(f"run-daily {day.ds}: released and online, {len(day.steps)} step(s) in "
                  f"{sum(r.seconds for r in day.steps):.1f}s (model {day.model_version or '-'}, run {day.run_id})")
    return 0


def run_status(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from pipeline.status import status_text

    print(status_text(cfg, days=args.days, only_days=args.ds or None, model_version=args.model))
    return 0
