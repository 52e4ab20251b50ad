"""`lfm train-downstream`: train one transfer variant on one scenario and task, on Feast training sets
(`pipeline.downstream`)."""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from lfm.config import LfmConfig
from lfm.names import check_model_version


# KuaiRand's measurement windows (the LFM is pretrained on 2022-04-25..05-01); override with --train / --test.
DEFAULT_TRAIN_DAYS = "2022-05-02..2022-05-06"
DEFAULT_TEST_DAYS = "2022-05-07..2022-05-08"


def register(sub: argparse._SubParsersAction) -> None:
    from lfm.names import parse_days

    p = sub.add_parser("train-downstream", help="train a downstream transfer variant on a scenario's Feast "
                                                "training set and report its test AUC")
    p.add_argument("--scenario", required=True,
                   help="a value of the schema.scenario column: the surface the downstream model serves")
    p.add_argument("--task", required=True, help="label column (one of schema.tasks)")
    p.add_argument("--transfer", required=True, metavar="VARIANT",
                   help="variant: none, feature level (ur_linear, ur_mlp, ur_ir_mlp, ur_ir_cr_mlp, ur_ir_cr_gate, "
                        "cr_gate), module level (iim, iim_random; need --k), model level (retrieval_*)")
    p.add_argument("--k", type=int, help="IIM: interaction layers copied from the checkpoint (0 = embeddings only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train", type=parse_days, default=parse_days(DEFAULT_TRAIN_DAYS),
                   help=f"training days, FIRST..LAST or a,b,c (default {DEFAULT_TRAIN_DAYS}); the last "
                        "validation share of them (by time) drives early stopping")
    p.add_argument("--test", type=parse_days, default=parse_days(DEFAULT_TEST_DAYS),
                   help=f"test days (default {DEFAULT_TEST_DAYS})")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", type=check_model_version,
                   help="pin this export: an export id, or a model version with one registered export")
    g.add_argument("--feature-service", help="pin this feature service (default: lfm_current, with a warning)")
    p.add_argument("--checkpoint", type=check_model_version,
                   help="IIM checkpoint version (default: the feature service's version; another one is refused)")
    p.add_argument("--max-epochs", type=int, help="epoch cap (early stopping on validation AUC ends runs first)")
    p.add_argument("--patience", type=int, help="epochs without validation gain before stopping")
    p.add_argument("--threads", type=int, help="torch threads (default: downstream.trainer.threads)")
    p.add_argument("--save-projection", type=Path,
                   help="retrieval_ur / retrieval_cr_user: where to save the user projection (default: "
                        "<registry>/downstream/<version>/retrieval_<source>_<scenario>_<task>.pt)")
    p.add_argument("--out", type=Path, help="also write the result as JSON here")
    p.set_defaults(run=run_train_downstream)


# ---- the verb --------------------------------------------------------------------------------------------------

def run_train_downstream(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from models.training.setup import DownstreamSetup
    from models.training.variants import Granularity, TransferRequest
    from pipeline.downstream import check_task, parse_variant, save_projection, train_on_sets, training_sets
    from spark_jobs.session import get_spark

    check_task(cfg, args.task)  # before Spark starts
    request = TransferRequest(parse_variant(args.transfer), k=args.k)
    overrides = {k: v for k, v in (("max_epochs", args.max_epochs), ("patience", args.patience),
                                   ("threads", args.threads)) if v is not None}
    settings = DownstreamSetup.from_config(cfg, **overrides)
    t0 = time.perf_counter()
    spark = get_spark(cfg)  # the Delta-enabled session first: Feast's Spark offline store reuses it
    sets = training_sets(spark, cfg, args.scenario, args.train, args.test, model_version=args.model,
                         feature_service=args.feature_service)
    print(f"train-downstream: {sets.feature_service} (export {sets.export_id}, model {sets.model_version}), scenario "
          f"{args.scenario}: train {sets.train.num_rows:,} / test {sets.test.num_rows:,} rows in {sets.seconds:.1f}s; "
          f"{sets.fell_back:,} rows fell back (their day is not released: an older release within the TTL, else nulls)")
    is_retrieval = request.variant.granularity is Granularity.model
    result = train_on_sets(cfg, sets, args.task, request, args.seed, settings, checkpoint=args.checkpoint,
                           keep_model=is_retrieval)
    f = result.fit
    print(f"{result.label} seed {args.seed}: test AUC {result.test_auc:.4f} on {result.test_rows:,} rows; "
          f"best valid AUC {f.best_valid_auc:.4f} at epoch {f.best_epoch} of {f.epochs} "
          f"({'early-stopped' if f.converged else 'hit the epoch cap: raise --max-epochs'}) in {f.seconds:.1f}s"
          + "".join(f"; recall@{k} {v:.4f}" for k, v in result.recall.items()))
    if result.vector_coverage:
        print("  vector coverage on test rows: " + ", ".join(f"{k} {v:.1%}" for k, v in result.vector_coverage.items()))
    out = {"scenario": args.scenario, "task": args.task, "variant": result.label, "seed": args.seed,
           "model_version": sets.model_version, "feature_service": sets.feature_service,
           "test_auc": result.test_auc, "recall": result.recall, "fit": asdict(f),
           "rows": {"train": result.train_rows, "valid": result.valid_rows, "test": result.test_rows},
           "vector_coverage": dict(result.vector_coverage), "seconds": time.perf_counter() - t0}
    if is_retrieval and result.model is not None and request.variant.user_source.representation is not None:
        path = save_projection(cfg, sets, args.task, result, args.save_projection)
        out["projection"] = str(path)
        print(f"  user projection saved to {path} (load with models.two_tower.load_user_projection; it is a "
              "serving.retrieval encoder)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1, default=str))
    return 0
