"""The README's main job on the embedded default: data in, a model, several daily runs, a summary out.

1. synthesize a small data set in the KuaiRand layout (or use `--data DIR`) and ingest every day of it;
2. pretrain an LFM on the first days if the registry holds none (the first two days train, the third
   validates; a few epochs keep it under a minute on a laptop);
3. select the CR layer with the probe on the next two days, if the model has no selected layer;
4. `run-daily` the last `daily_days` days in order, the first as a cold start of the CR chain;
5. print the tables and their row counts, the gate verdicts, where the Data Docs are, and one online lookup.
Every step is the platform's own code path (the same functions the `lfm` verbs call); rerunning the demo skips
what is already done (finished days, a registered model, a selected layer).
"""
from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from pathlib import Path

from lfm.config import LfmConfig
from lfm.contract import EXPORT_TABLES, INPUT_TABLES, RECORD_TABLES
from lfm.names import BadInput
from lfm.progress import ticking
from pipeline.daily import DailyFailed, DayRun, Say

SUMMARY_TABLES = (*INPUT_TABLES, *EXPORT_TABLES, *RECORD_TABLES)


@dataclass(frozen=True)
class DemoOptions:
    data: Path | None = None  # a KuaiRand-layout folder; None = synthesize one
    users: int = 3000
    items: int = 600
    days: int = 7
    events_per_day: int = 8000
    seed: int = 0
    daily_days: int = 3  # the last days of the data go through run-daily
    max_epochs: int = 3  # pretraining epochs when no model is registered ...
    batch_size: int = 1024  # ... in smaller batches: 16k training rows need more steps than 4096-row batches give


@dataclass
class DemoResult:
    model_version: str
    cr_layer: str
    days: list[dt.date]
    runs: list[DayRun] = field(default_factory=list)
    failed: str | None = None  # the run-daily error, if a day failed
    seconds: float = 0.0


def plan_days(available: list[dt.date], daily_days: int) -> dict[str, list[dt.date]]:
    """Which ingested days train, validate, probe the layer and run daily (needs five days at least)."""
    if len(available) < 5:
        raise BadInput(f"the demo needs at least 5 days of events (2 train, 1 valid, 2 layer probe), got "
                       f"{len(available)}: synthesize more days (--days) or point --data at a longer log")
    daily_days = max(0, min(daily_days, len(available) - 4))  # 0: the world alone, for an orchestrator to run
    return {"train": available[:2], "valid": available[2:3], "probe": available[3:5],
            "daily": available[len(available) - daily_days:]}


def run_demo(cfg: LfmConfig, opts: DemoOptions, say: Say = print) -> DemoResult:
    from pipeline.daily import run_days
    from spark_jobs.ingest import ingest
    from spark_jobs.session import get_spark
    from spark_jobs.synth import SynthSpec, write_synthetic

    t0 = time.perf_counter()
    source = opts.data
    if source is None:
        source = cfg.resolve("./data/synthetic")
        say(f"[1/6] synthesizing {opts.users:,} users, {opts.items:,} items, {opts.days} days x "
            f"{opts.events_per_day:,} events into {source}")
        write_synthetic(SynthSpec(users=opts.users, items=opts.items, days=opts.days,
                                  events_per_day=opts.events_per_day, seed=opts.seed,
                                  timezone=cfg.schema.timezone), source)
    else:
        say(f"[1/6] using the raw data in {source}")
    say(f"[2/6] ingesting {source} into the Delta lakehouse {cfg.location(cfg.lakehouse).uri} "
        "(the first Spark start fetches the Delta jars)")
    spark = get_spark(cfg)
    t = time.perf_counter()
    with ticking("     "):
        ingested = ingest(spark, cfg, Path(source))
    say(f"      events {ingested.events_rows:,} rows in {len(ingested.days)} days "
        f"({ingested.days[0]}..{ingested.days[-1]}), users {ingested.users_rows:,}, items {ingested.items_rows:,} "
        f"({time.perf_counter() - t:.0f}s)")
    days = plan_days(ingested.days, opts.daily_days)
    card = _ensure_model(spark, cfg, days, opts, say)
    layer = _ensure_layer(spark, cfg, card, days, say)
    result = DemoResult(card.model_version, layer, days["daily"])
    result.seconds = time.perf_counter() - t0
    if not days["daily"]:
        say(f"[5/6] run-daily: no days asked (--daily-days 0); the days {ingested.days[0]}..{ingested.days[-1]} are "
            "ingested, the model registered and its CR layer selected")
        return result
    say(f"[5/6] run-daily {days['daily'][0]}..{days['daily'][-1]} (ingest -> refresh -> validate -> publish -> "
        f"materialize, each step recorded in `runs`; the first day starts the CR chain cold)")
    try:
        result.runs = run_days(cfg, days["daily"], lambda: spark, model_version=card.model_version,
                               cold_start=True, say=say)
    except DailyFailed as err:
        result.runs, result.failed = err.done, str(err)
        say(f"      run-daily stopped: {err}")
    result.seconds = time.perf_counter() - t0
    say("[6/6] summary")
    for line in summary_lines(spark, cfg, result):
        say(line)
    return result


def _ensure_model(spark, cfg: LfmConfig, days: dict[str, list[dt.date]], opts: DemoOptions, say: Say):
    from models.registry import Registry

    reg = Registry(cfg)
    cards = reg.list()
    if cards:
        say(f"[3/6] model {cards[-1].model_version} is registered in {reg.root}: no pretraining")
        return cards[-1]
    from models.training.pretrain import pretrain
    from spark_jobs.samples import samples_arrow

    small = cfg.model_copy(update={"train": cfg.train.model_copy(update={"max_epochs": opts.max_epochs,
                                                                         "batch_size": opts.batch_size})})
    say(f"[3/6] pretraining a small LFM on {days['train'][0]}..{days['train'][-1]} (valid {days['valid'][0]}, "
        f"at most {opts.max_epochs} epochs)")
    t = time.perf_counter()
    train, valid = samples_arrow(spark, cfg, days["train"]), samples_arrow(spark, cfg, days["valid"])
    res = pretrain(train, valid, small, progress=lambda m: say("      " + m.strip()))
    card = Registry(small).register(res.model, res.encoders, {
        **res.metrics, "days": {k: [d.isoformat() for d in days[k]] for k in ("train", "valid")}})
    say(f"      model {card.model_version} registered: UR {card.ur_dim}-d, IR {card.ir_dim}-d, CR points "
        f"{card.cr_points} ({time.perf_counter() - t:.0f}s)")
    return card


def _ensure_layer(spark, cfg: LfmConfig, card, days: dict[str, list[dt.date]], say: Say) -> str:
    from spark_jobs.select_layer import select_layer

    if card.selected_cr_layer:
        say(f"[4/6] CR layer {card.selected_cr_layer} already selected for model {card.model_version}")
        return card.selected_cr_layer
    say(f"[4/6] selecting the CR layer: a CR(u) probe per CR point on {days['probe'][0]}..{days['probe'][-1]}")
    t = time.perf_counter()
    with ticking("     "):
        sel = select_layer(spark, cfg, card.model_version, days["probe"], warmup_days=1, record=True)
    scores = ", ".join(f"{p} {s:.3f}" for p, s in sel.scores.items() if s is not None)
    say(f"      probe AUC: {scores}; selected {sel.selected} ({time.perf_counter() - t:.0f}s)")
    return sel.selected


def summary_lines(spark, cfg: LfmConfig, result: DemoResult) -> list[str]:
    """Tables and row counts, the runs and gate verdicts of the daily days, Data Docs, one online lookup."""
    from lakehouse.delta_io import ds_predicate, read_table, table_exists
    from pipeline.status import status_text
    from validation.context import docs_index

    lines = [f"  model {result.model_version}, CR layer {result.cr_layer}", "", "  Delta tables (rows)"]
    last = result.days[-1]
    for name in SUMMARY_TABLES:
        path = cfg.table_path(name)
        if not table_exists(spark, path, cfg.delta_rs_options(path)):
            lines.append(f"    {name:<14} (not written)")
            continue
        df = read_table(spark, path)
        total = df.count()
        day = f", {df.where(ds_predicate([last])).count():,} on {last}" if "ds" in df.columns else ""
        lines.append(f"    {name:<14} {total:>10,}{day}")
    lines += ["", *(("  " + x).rstrip() for x in status_text(cfg, days=len(result.days)).splitlines()[2:])]
    lines += ["", f"  Data Docs: {docs_index(cfg)}"]
    lines += _lookup_lines(spark, cfg, result.model_version, last)
    lines += ["", f"  wall time {result.seconds:.0f}s" + (" (run-daily FAILED, see above)" if result.failed else "")]
    return lines


def _lookup_lines(spark, cfg: LfmConfig, version: str, last: dt.date) -> list[str]:
    """One user's and one item's vectors read back from the online store (first numbers of each)."""
    from pyspark.sql import functions as F

    from lakehouse.delta_io import read_table
    from serving.online import OnlineReader

    s = cfg.schema
    try:
        user = read_table(spark, cfg.table_path("cr_user")).where(F.col("ds") == F.lit(last)) \
            .select(s.user_key).orderBy(s.user_key).first()
        item = read_table(spark, cfg.table_path("cr_item")).where(F.col("ds") == F.lit(last)) \
            .select(s.item_key).orderBy(s.item_key).first()
        if user is None or item is None:
            return ["", f"  online lookup: no CR rows on {last}"]
        reader = OnlineReader(cfg, version)
        try:
            users, items = reader.request(user[0], [item[0]])
        finally:
            reader.close()
    except Exception as err:  # noqa: BLE001 - the summary reports what it could not read instead of stopping
        return ["", f"  online lookup failed: {err}"]
    lines = ["", f"  online lookup ({cfg.feast.online_store.value} store, model {version}; first 5 of each vector)"]
    for side, key, vecs in (("user", user[0], users), ("item", item[0], items)):
        for table, matrix in vecs.vectors.items():
            if vecs.found[table][0]:
                head = ", ".join(f"{x:+.4f}" for x in matrix[0][:5])
                lines.append(f"    {side} {key} {table:<8} {matrix.shape[1]:>3}-d [{head}, ...]")
            else:
                lines.append(f"    {side} {key} {table:<8} not online")
    return lines
