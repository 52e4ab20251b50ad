"""The README's main job on the embedded default: data in, everything built, a summary out.

Synthesizes a small data set (or uses a folder in the KuaiRand layout) and ingests it into the lakehouse.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lfm.config import LfmConfig


@dataclass(frozen=True)
class DemoOptions:
    data: Path | None = None  # a KuaiRand-layout folder; None = synthesize one
    users: int = 3000
    items: int = 600
    days: int = 7
    events_per_day: int = 8000
    seed: int = 0


def run_demo(cfg: LfmConfig, opts: DemoOptions, say=print) -> None:
    from spark_jobs.ingest import ingest
    from spark_jobs.session import get_spark
    from spark_jobs.synth import SynthSpec, write_synthetic

    t0 = time.perf_counter()
    source = opts.data
    if source is None:
        source = cfg.resolve("./data/synthetic")
        say(f"[1/2] synthesizing {opts.users:,} users, {opts.items:,} items, {opts.days} days into {source}")
        write_synthetic(SynthSpec(users=opts.users, items=opts.items, days=opts.days,
                                  events_per_day=opts.events_per_day, seed=opts.seed,
                                  timezone=cfg.schema.timezone), source)
    say(f"[2/2] ingesting {source} into the Delta lakehouse (first Spark start fetches the Delta jars)")
    spark = get_spark(cfg)
    result = ingest(spark, cfg, Path(source))
    say("\nsummary")
    say(f"  lakehouse     {cfg.resolve(cfg.lakehouse)}")
    say(f"  events        {result.events_rows:>10,} rows in {len(result.days)} ds partitions "
        f"({result.days[0]}..{result.days[-1]})")
    say(f"  users         {result.users_rows:>10,} rows")
    say(f"  items         {result.items_rows:>10,} rows")
    say(f"  wall time     {time.perf_counter() - t0:.0f}s")
