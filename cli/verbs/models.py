"""Verbs of the LFM: `lfm pretrain`, `lfm pretrain-sweep`, `lfm models list`, `lfm models show VERSION`."""
from __future__ import annotations

import argparse
import json
import time

from lfm.config import LfmConfig
from lfm.config.model import EmbeddingVariant
from lfm.names import BadInput, check_model_version, parse_days


def _with_overrides(cfg: LfmConfig, args: argparse.Namespace) -> LfmConfig:
    model, train = {}, {}
    if getattr(args, "embedding", None):
        model["embedding"] = EmbeddingVariant(args.embedding)
    if getattr(args, "max_epochs", None):
        train["max_epochs"] = args.max_epochs
    if not model and not train:
        return cfg
    return cfg.model_copy(update={"model": cfg.model.model_copy(update=model),
                                  "train": cfg.train.model_copy(update=train)})


def register(sub: argparse._SubParsersAction) -> None:
    def add_split_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--train", required=True, type=parse_days, help="training days, FIRST..LAST or a,b,c")
        p.add_argument("--valid", required=True, type=parse_days, help="validation days (early stopping)")
        p.add_argument("--test", type=parse_days, help="held-out test days for the reported metrics")
        p.add_argument("--max-epochs", type=int, help="override train.max_epochs")

    p = sub.add_parser("pretrain", help="pretrain the LFM on lakehouse days and register the checkpoint")
    add_split_args(p)
    p.add_argument("--seed", type=int, help="override train.seed")
    p.add_argument("--embedding", choices=[v.value for v in EmbeddingVariant], help="override model.embedding")
    p.add_argument("--continue", dest="parent", type=check_model_version, metavar="VERSION",
                   help="continue this registered version on later days (its architecture, its vocabularies grown "
                        "by the new ids, its weights as the start); the new version records it as its parent")
    p.set_defaults(run=run_pretrain)

    p = sub.add_parser("pretrain-sweep", help="pretrain embedding variants x seeds; print the test AUC table of "
                       "the largest scenarios")
    add_split_args(p)
    p.add_argument("--seeds", default="0,1,2", help="comma list of seeds")
    p.add_argument("--variants", default="plain,stem,crocodile", help="comma list of model.embedding values")
    p.add_argument("--task", default=None, help="task reported (default: the schema's first task)")
    p.add_argument("--out", help="also write the table (markdown) to this file")
    p.set_defaults(run=run_sweep)

    p = sub.add_parser("models", help="list or show registered LFM versions")
    msub = p.add_subparsers(dest="models_verb", required=True, metavar="ACTION")
    q = msub.add_parser("list", help="every registered version, oldest first")
    q.set_defaults(run=run_list)
    q = msub.add_parser("show", help="one version's card: dims, CR points, schema, metrics")
    q.add_argument("version", type=check_model_version)
    q.add_argument("--json", action="store_true", help="print the whole card as JSON")
    q.set_defaults(run=run_show)


def _load_splits(cfg: LfmConfig, args: argparse.Namespace):
    from spark_jobs.samples import samples_arrow
    from spark_jobs.session import get_spark

    t0 = time.perf_counter()
    spark = get_spark(cfg)
    tables = {name: samples_arrow(spark, cfg, days) for name, days in
              (("train", args.train), ("valid", args.valid), ("test", args.test)) if days}
    print("samples: " + ", ".join(f"{k} {v.num_rows:,} rows" for k, v in tables.items())
          + f" read from the lakehouse in {time.perf_counter() - t0:.1f}s")
    return tables


def run_pretrain(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from models.registry import Registry
    from models.training.metrics import metrics_table
    from pipeline.lineage import train_version
    from spark_jobs.session import get_spark

    if args.parent and args.embedding:
        raise BadInput("--embedding cannot change a continued model: a lineage keeps its parent's architecture")
    cfg = _with_overrides(cfg, args)
    t0 = time.perf_counter()
    done = train_version(get_spark(cfg), cfg, args.train, args.valid, args.test, parent=args.parent, seed=args.seed)
    card, metrics, lineage = done.card, done.metrics, done.card.lineage
    split = "test" if "test" in metrics else "valid"
    print(f"\n{split} metrics (AUC / impression-weighted GAUC per scenario and task):")
    print(metrics_table(metrics, split))
    if args.parent:
        added = ", ".join(f"{k} +{v:,}" for k, v in done.result.vocab_growth.items() if v) or "none"
        print(f"\ncontinued {args.parent} on {len(args.train)} day(s): new ids {added}; seen through "
              f"{lineage.seen_through}")
    print(f"\npretrain: model {card.model_version} registered in {Registry(cfg).root} "
          f"(best epoch {metrics['best_epoch']} of {metrics['epochs_run']}, {time.perf_counter() - t0:.1f}s); "
          f"UR {card.ur_dim}-d, IR {card.ir_dim}-d, CR points {card.cr_points}")
    return 0


def run_sweep(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from models.training.sweep import sweep, sweep_markdown

    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    variants = [EmbeddingVariant(v.strip()) for v in args.variants.split(",") if v.strip()]
    if "test" not in vars(args) or not args.test:
        raise BadInput("pretrain-sweep reports test AUC: pass --test DAYS")
    cfg = _with_overrides(cfg, args)
    tables = _load_splits(cfg, args)
    task = args.task or cfg.schema.tasks[0]
    runs = sweep(tables["train"], tables["valid"], tables["test"], cfg, variants, seeds)
    text = sweep_markdown(runs, task)  # the scenarios with the most test rows
    print("\n" + text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text + "\n")
    return 0


def run_list(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from models.registry import Registry

    reg = Registry(cfg)
    cards = reg.list()
    if not cards:
        print(f"no models in {reg.root}: run `lfm pretrain`")
        return 0
    print(f"{'model_version':<22} {'created_at':<27} {'embedding':<10} {'UR':>4} {'IR':>4} {'layer':<8} valid score")
    for c in cards:
        score = c.metrics.get("history", [{}])
        best = max((h.get("valid_score", 0) for h in score), default=float("nan"))
        print(f"{c.model_version:<22} {c.created_at[:26]:<27} {c.model.embedding.value:<10} {c.ur_dim:>4} "
              f"{c.ir_dim:>4} {c.selected_cr_layer or '-':<8} {best:.4f}")
    return 0


def run_show(args: argparse.Namespace, cfg: LfmConfig) -> int:
    from models.registry import Registry
    from models.training.metrics import metrics_table

    card = Registry(cfg).card(args.version)
    if args.json:
        print(json.dumps({"model_version": card.model_version, "created_at": card.created_at,
                          "ur_dim": card.ur_dim, "ir_dim": card.ir_dim, "cr_points": card.cr_points,
                          "selected_cr_layer": card.selected_cr_layer, "tasks": card.tasks,
                          "scenarios": card.scenarios, "model": card.model.model_dump(mode="json"),
                          "schema": card.schema.model_dump(mode="json", by_alias=True),
                          "metrics": card.metrics, "probe_table": card.probe_table,
                          "lineage": card.lineage.to_dict() if card.lineage else None}, indent=1))
        return 0
    print(f"model {card.model_version} (registered {card.created_at})")
    print(f"  embedding {card.model.embedding.value}, field dim {card.model.embedding_dim}, "
          f"UR {card.ur_dim}-d, IR {card.ir_dim}-d, tasks {card.tasks}")
    print(f"  CR points: {card.cr_points}; selected layer: {card.selected_cr_layer or '(not chosen yet)'}")
    print(f"  trained on {card.metrics.get('days', {})}, seed {card.metrics.get('seed')}, "
          f"best epoch {card.metrics.get('best_epoch')}")
    if card.lineage is not None:
        grown = ", ".join(f"{k} +{v:,}" for k, v in card.lineage.vocab_growth.items() if v) or "none"
        print(f"  lineage: parent {card.lineage.parent or '(a base)'}, seen {len(card.lineage.seen_days)} day(s) "
              f"through {card.lineage.seen_through}, new ids over the parent: {grown}")
    for split in ("valid", "test"):
        if card.metrics.get(split):
            print(f"\n{split}:\n{metrics_table(card.metrics, split)}")
    return 0
