"""Verbs of the Feast layer: `lfm register`, `lfm materialize`, `lfm training-set`, `lfm serve`, `lfm lookup`,
`lfm retrieve`."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from serving.errors import ServingError
from lfm.config import LfmConfig
from lfm.names import check_model_version, parse_ds

if TYPE_CHECKING:
    from models.two_tower import ProjectionCard


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("register", help="apply the Feast definitions of the lakehouse's exports")
    p.add_argument("--model", nargs="*", type=check_model_version,
                   help="register the export of these model versions under the current config (default: every "
                        "export the lakehouse holds, else every model of the registry)")
    p.add_argument("--current", help="make this export current (lfm_current): an export id, or a model version "
                                     "with one registered export")
    p.set_defaults(run=run_register)

    p = sub.add_parser("materialize", help="load a day's release into the online store (all tables or none)")
    p.add_argument("--ds", required=True, nargs="+", type=parse_ds, help="day(s), YYYY-MM-DD, loaded in order")
    p.add_argument("--model", type=check_model_version, help="only this export: an export id, or a model version "
                   "with one registered export (default: every registered export)")
    p.add_argument("--no-index", action="store_true", help="do not build the day's ANN index over IR")
    p.set_defaults(run=run_materialize)

    p = sub.add_parser("training-set", help="point-in-time join of entity rows with a pinned feature service")
    p.add_argument("--entities", required=True, help="parquet of entity rows (keys, event_timestamp, labels...)")
    p.add_argument("--out", required=True, help="parquet folder to write the training set to")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", type=check_model_version,
                   help="pin this export: an export id, or a model version with one registered export")
    g.add_argument("--feature-service", help="pin this feature service, e.g. lfm_e<export id> (default: "
                                             "lfm_current, with a warning)")
    p.add_argument("--full-feature-names", action="store_true", help="name columns <view>__<feature>")
    p.set_defaults(run=run_training_set)

    p = sub.add_parser("serve", help="start Feast's HTTP feature server (loopback by default)")
    p.add_argument("--host", help="default: feast.server_host")
    p.add_argument("--port", type=int, help="default: feast.server_port")
    p.set_defaults(run=run_serve)

    p = sub.add_parser("lookup", help="a user's and/or an item's online vectors, as the HTTP server reads them")
    p.add_argument("--user", help="user id: prints its UR and CR(u)")
    p.add_argument("--item", help="item id: prints its IR and CR(i)")
    p.add_argument("--model", type=check_model_version,
                   help="an export id or model version (default: the current export)")
    p.set_defaults(run=run_lookup)

    p = sub.add_parser("retrieve", help="top-K items for a user from the day's ANN index over IR")
    p.add_argument("--user", required=True, help="user id")
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--model", type=check_model_version,
                   help="an export id or model version (default: the current export)")
    p.add_argument("--ds", type=parse_ds, help="index of this day (default: the newest)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--projection", type=Path, help="a retrieval two-tower's user projection file (default: the "
                     "newest one `lfm train-downstream --transfer retrieval_ur|retrieval_cr_user` saved for the "
                     "export's model; without one, the raw UR)")
    how.add_argument("--raw", action="store_true", help="rank with the raw, untrained UR even where a trained "
                     "projection exists")
    p.set_defaults(run=run_retrieve)


def run_register(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from pipeline.serving import export_specs
    from serving.register import register as apply

    res = apply(cfg, export_specs(cfg, args.model or None), current=args.current)
    print(f"register: added {len(res.added)} {res.added}, updated {len(res.updated)} {res.updated}, "
          f"unchanged {len(res.unchanged)}; current {res.current}"
          + (f" (was {res.previous_current})" if res.previous_current != res.current else "")
          + ("" if res.applied else " — registry already up to date, nothing written"))
    return 0


def run_materialize(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from serving.materialize import materialize
    from spark_jobs.session import get_spark

    spark = get_spark(cfg)  # the Delta-enabled session first: Feast reuses it
    for day in args.ds:
        res = materialize(spark, cfg, day, args.model, build_index=not args.no_index)
        print(f"materialize {day}: {res.rows:,} rows in {res.seconds:.1f}s"
              + (f", ANN index over {res.index_items:,} items" if res.index_items else ""))
        print(res.summary())
    return 0


def run_training_set(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from serving.offline import write_training_set
    from spark_jobs.session import get_spark

    spark = get_spark(cfg)
    t0 = time.perf_counter()
    report = write_training_set(spark, cfg, args.entities, args.out, feature_service=args.feature_service,
                                version=args.model, full_feature_names=args.full_feature_names)
    print(f"training-set: {report.rows_out:,} rows ({report.rows_in:,} entity rows in) -> {args.out} in "
          f"{time.perf_counter() - t0:.1f}s ({report.engine} join, export {report.export_id}); "
          f"{report.fell_back:,} rows fell back (their day is not released: an older release within the TTL, "
          "else nulls)")
    return 0 if report.rows_in == report.rows_out else 1


def run_serve(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from serving.server import serve

    host, port = args.host or cfg.feast.server_host, args.port or cfg.feast.server_port
    print(f"serve: Feast feature server on http://{host}:{port} (POST /get-online-features)", flush=True)
    serve(cfg, host, port)
    return 0


def run_lookup(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from lfm.names import BadInput
    from serving.online import lookup, parse_id

    asked = [(side, text) for side, text in (("user", args.user), ("item", args.item)) if text is not None]
    if not asked:
        raise BadInput("lfm lookup needs --user ID and/or --item ID")
    found = True
    for side, text in asked:
        looked = lookup(cfg, side, parse_id(cfg, side, text), args.model)
        print("\n".join(looked.lines()))
        found &= all(v is not None for v in looked.vectors.values())
    return 0 if found else 1


def run_retrieve(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from serving.online import parse_id
    from serving.retrieval import retrieve_for_user

    user = parse_id(cfg, "user", args.user)
    encoder, version, says = _user_encoder(args, cfg)
    hits = retrieve_for_user(cfg, user, args.k, version, args.ds, encoder=encoder)
    print(f"retrieve: {says}", file=sys.stderr)  # stdout stays the JSON list
    print(json.dumps([{"item": i, "score": round(s, 6)} for i, s in hits]))
    return 0


def _user_encoder(args: argparse.Namespace, cfg: LfmConfig) -> tuple[object | None, str | None, str]:
    """What maps the user into the item space: --raw's identity, --projection's file, else the newest projection
    saved for the export's model, else the identity; with the export to read and a line saying which."""
    from models.two_tower import load_user_projection

    if args.raw:
        return None, args.model, "ranking with the raw UR (--raw)"
    if args.projection:
        encoder = load_user_projection(args.projection)
        if args.model and encoder.card.model_version != args.model:
            raise ServingError(f"projection {args.projection} was trained on model {encoder.card.model_version}'s "
                               f"vectors, not {args.model}: embeddings of different versions live in different spaces")
        return encoder, args.model or encoder.card.model_version, _projection_says(args.projection, encoder.card)
    from feature_repo.store import open_store
    from pipeline.downstream import trained_projections
    from serving.register import registered

    spec = registered(open_store(cfg)).require(args.model)
    saved = trained_projections(cfg, spec.model_version)
    width = {"ur": spec.ur_dim, "cr_user": spec.cr_dim}
    for path in saved:  # newest first; one trained on another export's CR width does not fit
        encoder = load_user_projection(path)
        if encoder.card.in_dim == width.get(encoder.source) and encoder.card.out_dim == spec.ir_dim:
            others = f"; {len(saved) - 1} other(s) saved (--projection FILE picks one)" if len(saved) > 1 else ""
            return encoder, spec.id, _projection_says(path, encoder.card) + f"{others}; --raw ranks with the raw UR"
    return None, spec.id, (f"ranking with the raw, untrained UR: model {spec.model_version} has no trained user "
                           f"projection{' that fits export ' + spec.id if saved else ''} (`lfm train-downstream "
                           "--transfer retrieval_ur` saves one)")


def _projection_says(path: Path, card: ProjectionCard) -> str:
    return (f"ranking with the trained projection {path} ({card.source} of model {card.model_version} -> IR, "
            f"trained on scenario {card.scenario}, task {card.task})")
