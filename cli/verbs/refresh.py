"""Verbs of the daily export: `lfm refresh`, `lfm backfill`, `lfm select-layer`."""
from __future__ import annotations

import argparse

from lfm.config import LfmConfig
from lfm.names import check_model_version, check_run_id, parse_days, parse_ds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("refresh", help="export one day's UR, IR, CR(user), CR(item) with the frozen LFM",
                       description="Run the frozen LFM over day D's users, items and samples, replace the (D, export) "
                       "partitions of ur, ir, cr_user, cr_item and the CR states (a candidate), then gate exactly "
                       "those versions and release the day when every table passed. The CR state chain needs D-1's "
                       "refresh of the same export spec (model, layer, decay); --cold-start begins a new chain at D.")
    p.add_argument("--ds", required=True, type=parse_ds, help="the day, YYYY-MM-DD")
    p.add_argument("--model", type=check_model_version, help="model version (default: the latest registered)")
    p.add_argument("--layer", help="CR point (default: the one `lfm select-layer` recorded)")
    p.add_argument("--cold-start", action="store_true",
                   help="begin a new CR chain at --ds with an empty state (no previous-day state needed)")
    p.add_argument("--run-id", type=check_run_id, help="recorded in every commit (default: random)")
    p.add_argument("--no-gate", action="store_true", help="write only: the day stays unreleased until `lfm validate`")
    p.set_defaults(run=run_refresh)

    p = sub.add_parser("backfill", help="refresh a range of days in order (the CR state is a chain)",
                       description="Refresh --from..--to in order; the same as refreshing each day in turn.")
    p.add_argument("--from", dest="first", required=True, type=parse_ds, help="first day, YYYY-MM-DD")
    p.add_argument("--to", dest="last", required=True, type=parse_ds, help="last day, YYYY-MM-DD")
    p.add_argument("--model", type=check_model_version, help="model version (default: the latest registered)")
    p.add_argument("--layer", help="CR point (default: the one `lfm select-layer` recorded)")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--cold-start", action="store_true", help="begin a new CR chain at --from")
    start.add_argument("--warmup-days", type=int, default=0, metavar="N",
                       help="begin a new CR chain N days before --from; warm-up days are computed, not published")
    p.add_argument("--run-id", type=check_run_id, help="recorded in every commit (default: random)")
    p.add_argument("--no-gate", action="store_true", help="write only: the days stay unreleased until `lfm validate`")
    p.set_defaults(run=run_backfill)

    p = sub.add_parser("select-layer", help="score every CR point by a CR(u) logistic probe; record the best",
                       description="Chain each CR point's user state over warm-up + probe days, fit a logistic "
                       "probe per scenario on all probe days but the last, report test AUC on the last, and record "
                       "the best point in the registry (refresh then uses it).")
    p.add_argument("--model", type=check_model_version, help="model version (default: the latest registered)")
    p.add_argument("--days", type=parse_days, help="probe days FIRST..LAST (default: the held-out days after the "
                   "model's training and validation days that end before --protect; without it the first two)")
    p.add_argument("--protect", type=parse_window, metavar="FIRST..LAST",
                   help="a downstream study's window (train..test days): never probed; --days inside it are refused")
    p.add_argument("--warmup-days", type=int, default=2, metavar="N", help="state warm-up before the first probe day")
    p.add_argument("--no-record", action="store_true", help="print the table without recording the choice")
    p.add_argument("--show", action="store_true", help="print the recorded selection and its table, compute nothing")
    p.set_defaults(run=run_select_layer)


def parse_window(value: str) -> tuple:
    """`FIRST..LAST`, an inclusive range of days."""
    days = parse_days(value)
    if ".." not in value:
        raise argparse.ArgumentTypeError(f"bad window {value!r}: expected FIRST..LAST")
    return days[0], days[-1]


def _print_day(d) -> None:
    c = d.candidate
    rows = ", ".join(f"{k} {v:,}" for k, v in c.rows.items() if not k.endswith("_state"))
    start = " (cold start)" if c.cold_start else ""
    print(f"refresh {c.ds}: {c.spec.describe()}{start}: {rows} (run {c.run_id})")
    if d.gate is not None:
        print(d.gate.summary())
    if d.release is not None:
        print(f"  released {c.ds} of export {c.spec.id} at " + ", ".join(
            f"{k} v{v}" for k, v in sorted(d.release.table_versions.items())))
    elif d.gate is None:
        print(f"  not gated (--no-gate): {c.ds} of export {c.spec.id} stays unreleased until `lfm validate --ds {c.ds}`")


def run_refresh(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from pipeline.export import raise_if_quarantined, write_and_release
    from pipeline.spec import resolve_export
    from spark_jobs.session import get_spark

    export = resolve_export(cfg, args.model, args.layer)
    day = write_and_release(get_spark(cfg), cfg, export, args.ds, args.cold_start, args.run_id,
                            gate=cfg.quality.enabled and not args.no_gate)
    _print_day(day)
    raise_if_quarantined([day])
    return 0


def run_backfill(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from lfm.names import ds_range
    from pipeline.export import backfill_and_release, raise_if_quarantined
    from pipeline.spec import resolve_export
    from spark_jobs.session import get_spark

    ds_range(args.first, args.last)  # a backwards range is refused before anything loads
    export = resolve_export(cfg, args.model, args.layer)
    days = backfill_and_release(get_spark(cfg), cfg, export, args.first, args.last, warmup_days=args.warmup_days,
                                cold_start=args.cold_start, run_id=args.run_id,
                                gate=cfg.quality.enabled and not args.no_gate)
    for d in days:
        _print_day(d)
    print(f"backfill: {len(days)} day(s) {args.first}..{args.last} written, "
          f"{sum(d.release is not None for d in days)} released")
    raise_if_quarantined(days)
    return 0


def run_select_layer(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from spark_jobs.select_layer import recorded_selection, select_layer

    if args.show:
        from models.registry import Registry

        sel = recorded_selection(Registry(cfg).card(args.model) if args.model else Registry(cfg).latest())
        args.no_record = False
    else:
        from spark_jobs.session import get_spark

        sel = select_layer(get_spark(cfg), cfg, args.model, args.days, args.warmup_days, record=not args.no_record,
                           protect=args.protect)
    print(f"CR(u) probe, task {sel.task}: logistic regression per scenario, trained on "
          f"{sel.probe_days[0]}..{sel.probe_days[-2]}, AUC on {sel.probe_days[-1]} "
          f"(state warmed up from {(sel.warmup_days or sel.probe_days)[0]})"
          + (f"; protected window {args.protect[0]}..{args.protect[1]} not probed" if args.protect else "") + "\n")
    print(sel.markdown())
    verb = "recorded" if not args.no_record else "not recorded (--no-record)"
    why = (f"highest weighted AUC: {sel.best}; chosen: the narrowest point within one paired-bootstrap SE of it"
           if sel.gap_se else f"highest weighted AUC: {sel.best}")
    print(f"\n{why}\nselect-layer: model {sel.model_version}: {sel.selected} {verb}")
    return 0
