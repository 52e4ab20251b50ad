"""Verbs of the daily export: `lfm refresh`, `lfm backfill`, `lfm select-layer`."""
from __future__ import annotations

import argparse

from lfm.config import LfmConfig
from lfm.names import check_model_version, check_run_id, parse_days, parse_ds


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("refresh", help="export one day's UR, IR, CR(user), CR(item) with the frozen LFM",
                       description="Run the frozen LFM over day D's users, items and samples and replace the "
                       "(D, model version) partitions of ur, ir, cr_user, cr_item and the CR states. The CR state "
                       "chain needs the state of D-1 (same model and layer); --cold-start begins a new chain at D.")
    p.add_argument("--ds", required=True, type=parse_ds, help="the day, YYYY-MM-DD")
    p.add_argument("--model", type=check_model_version, help="model version (default: the latest registered)")
    p.add_argument("--layer", help="CR point (default: the one `lfm select-layer` recorded)")
    p.add_argument("--cold-start", action="store_true",
                   help="begin a new CR chain at --ds with an empty state (no previous-day state needed)")
    p.add_argument("--run-id", type=check_run_id, help="recorded in every commit (default: random)")
    p.add_argument("--no-gate", action="store_true", help="skip the quality gate hook (run-daily gates separately)")
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
    p.add_argument("--no-gate", action="store_true", help="skip the quality gate hook")
    p.set_defaults(run=run_backfill)

    p = sub.add_parser("select-layer", help="score every CR point by a CR(u) logistic probe; record the best",
                       description="Chain each CR point's user state over warm-up + probe days, fit a logistic "
                       "probe per scenario on all probe days but the last, report test AUC on the last, and record "
                       "the best point in the registry (refresh then uses it).")
    p.add_argument("--model", type=check_model_version, help="model version (default: the latest registered)")
    p.add_argument("--days", type=parse_days, help="probe days FIRST..LAST (default: the days after the model's "
                   "training and validation days)")
    p.add_argument("--warmup-days", type=int, default=2, metavar="N", help="state warm-up before the first probe day")
    p.add_argument("--no-record", action="store_true", help="print the table without recording the choice")
    p.add_argument("--show", action="store_true", help="print the recorded selection and its table, compute nothing")
    p.set_defaults(run=run_select_layer)


def _print_result(r) -> None:
    rows = ", ".join(f"{k} {v:,}" for k, v in r.rows.items() if not k.endswith("_state"))
    start = " (cold start)" if r.cold_start else ""
    print(f"refresh {r.ds}: model {r.model_version} layer {r.cr_layer}{start}: {rows} in {r.seconds:.1f}s "
          f"(run {r.run_id})")
    if r.gate is not None and hasattr(r.gate, "summary"):
        print(r.gate.summary())


def _raise_gate(results) -> None:
    for r in results:
        if r.gate is not None and hasattr(r.gate, "raise_if_failed"):
            r.gate.raise_if_failed()


def run_refresh(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from spark_jobs.refresh import refresh
    from spark_jobs.session import get_spark

    r = refresh(get_spark(cfg), cfg, args.ds, args.model, args.layer, args.cold_start, args.run_id,
                validate=False if args.no_gate else None)
    _print_result(r)
    _raise_gate([r])
    return 0


def run_backfill(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from spark_jobs.backfill import backfill
    from spark_jobs.session import get_spark

    results = backfill(get_spark(cfg), cfg, args.first, args.last, args.model, args.layer,
                       warmup_days=args.warmup_days, cold_start=args.cold_start, run_id=args.run_id,
                       validate=False if args.no_gate else None)
    for r in results:
        _print_result(r)
    print(f"backfill: {len(results)} day(s) {args.first}..{args.last} published")
    _raise_gate(results)
    return 0


def run_select_layer(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from spark_jobs.select_layer import recorded_selection, select_layer

    if args.show:
        from models.registry import Registry

        reg = Registry(cfg)
        sel = recorded_selection(reg.card(args.model) if args.model else reg.latest())
        args.no_record = False
    else:
        from spark_jobs.session import get_spark

        sel = select_layer(get_spark(cfg), cfg, args.model, args.days, args.warmup_days, record=not args.no_record)
    print(f"CR(u) probe, task {sel.task}: logistic regression per scenario, trained on "
          f"{sel.probe_days[0]}..{sel.probe_days[-2]}, AUC on {sel.probe_days[-1]} "
          f"(state warmed up from {(sel.warmup_days or sel.probe_days)[0]})\n")
    print(sel.markdown())
    verb = "recorded" if not args.no_record else "not recorded (--no-record)"
    why = (f"highest weighted AUC: {sel.best}; chosen: the narrowest point within one paired-bootstrap SE of it"
           if sel.gap_se else f"highest weighted AUC: {sel.best}")
    print(f"\n{why}\nselect-layer: model {sel.model_version}: {sel.selected} {verb}")
    return 0
