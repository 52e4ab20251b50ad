"""The whole `lfm run-daily` at 10k, 100k and 1M users against the compute floor of the same day.

    PYTHONPATH=. .venv/bin/python bench/daily_scale.py [--users 10000 100000 1000000] [--online redis|sqlite]
        [--workdir /tmp/lfm_daily_scale] [--out docs/daily_scale.md]

Per scale N: a synthetic KuaiRand-layout world (N users, N/10 items, 5N events a day; one raw folder per day as a
daily drop arrives), then, each as its own `lfm` process exactly as an operator types it:
1. `lfm run-daily --ds D0 --cold-start --source raw/D0` (the cold-start day that begins the CR chain);
2. `lfm run-daily --ds D1 --source raw/D1`: the measured day, five steps (ingest, refresh, validate, publish,
   materialize) whose seconds and rows come from the `runs` table it writes, and whose peak memory comes from
   psutil sampling the process tree every 0.2 s: the driver (the `lfm` process), the JVM, the Python workers
   (the JVM's Python children), attributed to a step by the step's start and end in `runs`;
3. the same command again (a finished day: nothing to do) and `lfm status`, timed;
4. the **compute floor** of D1: one plain Python process, no Spark, torch with as many threads as Spark has cores,
   over exactly the rows the refresh read (staged to Parquet by a Spark child from the refresh's own frames, not
   timed): UR, IR and CR with `inference.extract.Extractor`, the decayed CR aggregation with `inference.decay` in
   numpy (per-batch weighted sums into a dense per-key accumulator, plus yesterday's state carried), and its
   outputs written as plain Parquet;
5. the Spark extraction probe, warm, to a no-op sink, against the floor's plain UR / IR loops over the same rows:
   the refresh's own UR / IR frames (reading the Delta inputs as of the day, the active users' semi-join, the
   extraction), and the extraction alone (`tower_vectors`, the refresh's `mapInArrow` stage, over the staged
   Parquet files the loop reads).
A model (default size, one epoch on a separate 20k-user world) is pretrained once and shared by every scale.
Ratios are to the floor measured in the same invocation; the load average is printed with every figure.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.memory import GIB, TreeSampler  # noqa: E402 - after the path is set

D0, D1 = dt.date(2022, 5, 1), dt.date(2022, 5, 2)  # the cold-start day and the measured day
PRETRAIN_START = dt.date(2022, 4, 28)
STEPS = ("ingest", "refresh", "validate", "publish", "materialize")
SMALL_MODEL = {"embedding_dim": 4, "user_tower": [16], "item_tower": [16], "cross_layers": 1, "dnn": [16, 8]}
# The tiny model's 8-d CR spans few directions: its collapse bounds are relaxed (as in the pipeline tests); the
# default-size model runs under the shipped thresholds.
SMALL_QUALITY = {"vectors": {"min_effective_rank": 1.0, "min_information_abundance": 1.0}}


def load() -> str:
    return "load " + " / ".join(f"{x:.1f}" for x in os.getloadavg())


# --- the process tree of one `lfm` command, sampled -----------------------------------------------------------

@dataclasses.dataclass
class Command:
    args: list[str]
    wall: float
    output: str
    sampler: TreeSampler
    cpu: float  # CPU seconds of the command and the descendants it waited for (load-independent)


def lfm(config: Path, *args: str, log=print, profile: Path | None = None) -> Command:
    """`lfm --config CONFIG ARGS` as its own process (this checkout's code), sampled; raises on a failure.
    With `profile`, the process runs under cProfile, its stats written there."""
    prefix = ["-m", "cProfile", "-o", str(profile)] if profile else []
    cmd = [sys.executable, *prefix, "-m", "cli.main", "--config", str(config), *args]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=config.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    with TreeSampler(proc.pid) as sampler:
        output, _ = proc.communicate()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    waited = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    cpu = max(waited, sum(sampler.cpu.values()))  # the JVM is not waited for; its workers come and go
    if proc.returncode != 0:
        raise RuntimeError(f"lfm {' '.join(args)} failed ({proc.returncode}):\n{output[-4000:]}")
    log(f"lfm {' '.join(args)}: {wall:.1f}s, {cpu:.1f} CPU s ({load()})")
    return Command(list(args), wall, output, sampler, cpu)


def child(flag: str, payload: dict) -> dict:
    """This script in a child process (`--stage-child` with Spark, `--floor-child` without); its JSON answer."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, __file__, flag, json.dumps(payload)], env=env, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{flag} failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- worlds ---------------------------------------------------------------------------------------------------

def write_config(root: Path, registry: Path, online: str, redis: str | None, small_model: bool,
                 event_log: Path | None = None) -> Path:
    """The world's `lfm.yaml`: the platform's defaults but for paths, the online store, one pretraining epoch,
    and (`event_log`) Spark's event log for the profile."""
    import yaml

    from lfm.config.platform import SparkSettings

    feast = {"repo_path": "./feature_repo", "project": f"lfm_{root.name}", "online_store": online}
    if redis:
        feast["redis_connection"] = redis
    data = {"lakehouse": "./lakehouse", "registry": {"path": str(registry)}, "feast": feast,
            "train": {"max_epochs": 1}}
    if small_model:
        data["model"] = SMALL_MODEL
        data["quality"] = SMALL_QUALITY
    if event_log:
        event_log.mkdir(parents=True, exist_ok=True)
        data["spark"] = {"conf": {**SparkSettings().conf, "spark.eventLog.enabled": "true",
                                  "spark.eventLog.dir": event_log.as_uri(), "spark.eventLog.compress": "false",
                                  "spark.eventLog.rolling.enabled": "false"}}
    path = root / "lfm.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def synth(root: Path, users: int, days: int, start: dt.date, events_per_user: int, log) -> Path:
    from spark_jobs.synth import SynthSpec, write_synthetic

    raw = root / "raw"
    if (raw / "done").exists():
        return raw
    shutil.rmtree(raw, ignore_errors=True)
    t0 = time.perf_counter()
    spec = SynthSpec(users=users, items=max(users // 10, 10), days=days, events_per_day=events_per_user * users,
                     seed=1, start=start.isoformat())
    write_synthetic(spec, raw, split_days=True)
    (raw / "done").write_text("ok")
    log(f"synth {users:,} users x {days} days: {time.perf_counter() - t0:.1f}s")
    return raw


def ensure_model(workdir: Path, registry: Path, small_model: bool, log) -> None:
    """Pretrain once (one epoch on a separate 20k-user world) unless the registry holds a model."""
    from lfm.config import load_config
    from models.registry import Registry

    root = workdir / "model"
    config = write_config(root, registry, "sqlite", None, small_model)
    if Registry(load_config(config)).list():
        return
    raw = synth(root, 20_000, 2, PRETRAIN_START, 5, log)
    for day in (0, 1):
        lfm(config, "ingest", "--source", str(raw / (PRETRAIN_START + dt.timedelta(days=day)).isoformat()), log=log)
    nxt = PRETRAIN_START + dt.timedelta(days=1)
    lfm(config, "pretrain", "--train", PRETRAIN_START.isoformat(), "--valid", nxt.isoformat(), log=log)


# --- one scale ------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class ScaleResult:
    users: int
    items: int
    events: int
    cold: Command
    day: Command
    steps: dict[str, dict]  # step -> seconds, rows, rows_s, peak GiB per class
    rerun: Command
    status: Command
    floor: dict
    probe: dict
    load_during: str
    profile: list[str] = dataclasses.field(default_factory=list)

    @property
    def steps_s(self) -> float:
        return sum(s["seconds"] for s in self.steps.values())


def step_rows(config: Path, day: Command) -> dict[str, dict]:
    """Each step of D1 from the `runs` table (delta-rs), with its peak memory from the samples in its window."""
    from lfm.config import load_config
    from pipeline import runs

    latest = runs.latest_by_step(load_config(config), D1)
    out = {}
    for name in STEPS:
        r = latest[name]
        if r.status != "succeeded":
            raise RuntimeError(f"step {name} of {D1} did not succeed: {r.error}")
        peak = day.sampler.peak(r.started_at.timestamp(), r.ended_at.timestamp())
        out[name] = {"seconds": r.seconds, "rows": r.rows or 0, "rows_s": r.rows_per_second, **peak}
    return out


def run_scale(workdir: Path, registry: Path, users: int, online: str, redis, small_model: bool, cores: int,
              log, profile: bool = False) -> ScaleResult:
    root = workdir / f"u{users}"
    for old in ("lakehouse", "feature_repo", "eventlog"):  # every scale starts from an empty lake and store
        shutil.rmtree(root / old, ignore_errors=True)
    if redis is not None:
        redis.flushall()
    event_log = root / "eventlog" if profile else None
    config = write_config(root, registry, online, redis.connection if redis else None, small_model, event_log)
    raw = synth(root, users, 2, D0, 5, log)
    log(f"--- {users:,} users ({load()})")
    cold = lfm(config, "run-daily", "--ds", D0.isoformat(), "--cold-start", "--source", str(raw / D0.isoformat()),
               log=log)
    before = load()
    if event_log:  # the cold-start day's jobs are not the measured day's
        shutil.rmtree(event_log)
        event_log.mkdir()
    prof = root / "day.prof" if profile else None
    day = lfm(config, "run-daily", "--ds", D1.isoformat(), "--source", str(raw / D1.isoformat()), log=log,
              profile=prof)
    during = f"{before} before, {load()} after"
    steps = step_rows(config, day)
    profiled = profile_text(config, prof, event_log, steps) if profile else []
    rerun = lfm(config, "run-daily", "--ds", D1.isoformat(), "--source", str(raw / D1.isoformat()), log=log)
    if "already complete" not in rerun.output:
        raise RuntimeError(f"the rerun of a finished day did work:\n{rerun.output[-2000:]}")
    status = lfm(config, "status", "--days", "2", log=log)
    stage = root / "floor_inputs"
    probe = child("--stage-child", {"config": str(config), "out": str(stage)})
    log(f"staged the floor's inputs; Spark probe UR {probe['ur_rows_s']:,.0f} rows/s (extraction alone "
        f"{probe['ur_extract_rows_s']:,.0f}), IR {probe['ir_rows_s']:,.0f} rows/s ({probe['ir_extract_rows_s']:,.0f}) "
        f"({load()})")
    floor = child("--floor-child", {"config": str(config), "stage": str(stage), "out": str(root / "floor_out"),
                                    "threads": cores, "day_end_ms": probe["day_end_ms"],
                                    "prev_day_end_ms": probe["prev_day_end_ms"], "layer": probe["layer"],
                                    "model_dir": probe["model_dir"], "tau_hours": probe["tau_hours"],
                                    "normalisation": probe["normalisation"]})
    log(f"floor: {floor['seconds']:.1f}s (UR {floor['ur_s']:.1f}, IR {floor['ir_s']:.1f}, CR {floor['cr_s']:.1f}, "
        f"peak {floor['peak_gib']:.2f} GiB) ({load()})")
    shutil.rmtree(root / "floor_out", ignore_errors=True)
    return ScaleResult(users, probe["items"], probe["events"], cold, day, steps, rerun, status, floor,
                       probe, during, profiled)


# --- the children -----------------------------------------------------------------------------------------------

def stage_child(payload: dict) -> dict:
    """Spark: the refresh's own frames of D1 to Parquet (the floor's inputs), then the warm UR / IR probe."""
    from lfm.config import load_config
    from pipeline.spec import resolve_export
    from spark_jobs.refresh import plan_refresh
    from spark_jobs.refresh.compute import day_samples, previous_state, tower_frame, tower_vectors, users_in_scope
    from spark_jobs.session import get_spark
    from lakehouse.features import features_as_of
    from lfm.contract import ITEMS

    cfg = load_config(payload["config"])
    out = Path(payload["out"])
    spark = get_spark(cfg)
    export = resolve_export(cfg)
    plan = plan_refresh(spark, cfg, export.spec, export.day_model(cfg, D1), D1)
    prev = previous_state(spark, cfg, plan)
    s = cfg.schema
    items = features_as_of(spark, cfg, ITEMS, plan.ds, plan.input_versions[ITEMS]).select(
        s.item_key, *[f.name for f in s.item_fields if f.name != s.item_key])
    frames = {"users": users_in_scope(spark, cfg, plan), "items": items, "samples": day_samples(spark, cfg, plan),
              "state_user": prev.user, "state_item": prev.item}
    counts = {}
    for name, df in frames.items():
        df.write.mode("overwrite").parquet(str(out / name))
        counts[name] = spark.read.parquet(str(out / name)).count()
    tower_frame(spark, cfg, plan, "item").write.format("noop").mode("overwrite").save()  # warm the workers
    rates = {}
    for side, name in (("user", "users"), ("item", "items")):
        staged = spark.read.parquet(str(out / name))  # the rows the floor's loop reads, from the same files
        for probe in ("", "extract_"):
            t0 = time.perf_counter()
            frame = tower_vectors(spark, cfg, plan, staged, side) if probe else tower_frame(spark, cfg, plan, side)
            frame.write.format("noop").mode("overwrite").save()
            rates[f"{probe}{side}"] = counts[name] / (time.perf_counter() - t0)
    spark.stop()
    return {"users": counts["users"], "items": counts["items"], "events": counts["samples"],
            "ur_rows_s": rates["user"], "ir_rows_s": rates["item"], "ur_extract_rows_s": rates["extract_user"],
            "ir_extract_rows_s": rates["extract_item"], "day_end_ms": plan.day_end_ms,
            "prev_day_end_ms": plan.prev_day_end_ms, "layer": plan.cr_layer, "model_dir": plan.model_dir,
            "tau_hours": plan.spec.tau_hours, "normalisation": plan.spec.normalisation}


def floor_child(payload: dict) -> dict:
    """The compute floor: one process, no Spark; read Parquet, extract, aggregate, write Parquet."""
    import resource

    import numpy as np
    import pyarrow as pa
    import pyarrow.dataset as pads
    import pyarrow.parquet as pq

    from inference import decay
    from inference.extract import Extractor
    from lfm.config import load_config

    cfg = load_config(payload["config"])
    s = cfg.schema
    stage, out = Path(payload["stage"]), Path(payload["out"])
    out.mkdir(parents=True, exist_ok=True)
    rows = cfg.refresh.arrow_batch_rows
    ex = Extractor(payload["model_dir"], threads=payload["threads"], batch_rows=rows, schema=s)
    ex.checkpoint  # loaded before the clock starts, as a Spark worker loads it before its first batch
    end, prev_end, tau = payload["day_end_ms"], payload["prev_day_end_ms"], payload["tau_hours"]
    timings = {}

    def towers(name: str, key: str, fn) -> None:
        """Read, extract, write; `<name>_loop` is the read + extract part alone (what the Spark probe does)."""
        t0, loop, writer = time.perf_counter(), 0.0, None
        mark = t0
        for b in pads.dataset(str(stage / name)).to_batches(batch_size=rows):
            v = fn(b)  # (n, dim) float32
            loop += time.perf_counter() - mark
            part = pa.table({key: b.column(key), "vector": decay.matrix_to_list(v)})
            writer = writer or pq.ParquetWriter(str(out / f"{name}.parquet"), part.schema)
            writer.write_table(part)
            mark = time.perf_counter()
        writer.close()
        timings[name] = time.perf_counter() - t0
        timings[f"{name}_loop"] = loop

    towers("users", s.user_key, ex.user_vectors)
    towers("items", s.item_key, ex.item_vectors)

    t0 = time.perf_counter()
    universe = {side: np.sort(pads.dataset(str(stage / name)).to_table(columns=[key]).column(key).to_numpy())
                for side, name, key in (("user", "users", s.user_key), ("item", "items", s.item_key))}
    dim = ex.cr_points[payload["layer"]]
    acc = {side: np.zeros((len(u), dim)) for side, u in universe.items()}  # weighted sums per key, float64
    last = {side: np.full(len(u), -1, np.int64) for side, u in universe.items()}
    for b in pads.dataset(str(stage / "samples")).to_batches(batch_size=rows):
        t_ms = b.column("__t_ms").to_numpy()
        w = decay.sample_weights(t_ms, end, tau)
        cr = ex.cross_vectors(b, payload["layer"])  # (n, dim) float32
        for side, key in (("user", s.user_key), ("item", s.item_key)):
            keys = b.column(key).to_numpy()
            uniq, sums = decay.group_sum(keys, cr, w)
            idx = np.searchsorted(universe[side], uniq)
            acc[side][idx] += sums
            np.maximum.at(last[side], np.searchsorted(universe[side], keys), t_ms)
    carry = decay.carry_factor(prev_end, end, tau)
    for side, key in (("user", s.user_key), ("item", s.item_key)):
        prev = pq.read_table(str(stage / f"state_{side}"))
        idx = np.searchsorted(universe[side], prev.column(key).to_numpy())
        acc[side][idx] += carry * decay.list_to_matrix(prev.column("state"))
        prev_last = prev.column("last_ts").cast(pa.int64()).to_numpy() // 1000
        np.maximum.at(last[side], idx, prev_last)
        present = last[side] >= 0
        state = acc[side][present]
        pq.write_table(pa.table({key: universe[side][present], "cr": decay.matrix_to_list(
            decay.normalise(state, payload["normalisation"]))}), str(out / f"cr_{side}.parquet"))
        pq.write_table(pa.table({key: universe[side][present], "state": decay.matrix_to_list(state, pa.float64()),
                                 "last_ts": last[side][present]}), str(out / f"cr_{side}_state.parquet"))
    timings["cr"] = time.perf_counter() - t0
    return {"seconds": timings["users"] + timings["items"] + timings["cr"], "ur_s": timings["users"],
            "ir_s": timings["items"], "cr_s": timings["cr"], "ur_loop_s": timings["users_loop"],
            "ir_loop_s": timings["items_loop"],
            "peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB}


# --- the profile of the measured day ---------------------------------------------------------------------------

def spark_jobs(event_log: Path) -> list[dict]:
    """Every Spark job of the event logs under `event_log`: id, call site, wall seconds, task seconds."""
    jobs: dict[tuple[str, int], dict] = {}
    stage_job: dict[tuple[str, int], int] = {}
    for path in sorted(p for p in event_log.iterdir() if p.is_file() and not p.name.startswith(".")):
        for line in path.open():
            e = json.loads(line)
            kind = e.get("Event")
            if kind == "SparkListenerJobStart":
                props = e.get("Properties") or {}
                jobs[(path.name, e["Job ID"])] = {
                    "site": props.get("callSite.short", "?"), "start": e["Submission Time"], "end": None,
                    "task_s": 0.0, "tasks": 0}
                for stage in e.get("Stage IDs", []):
                    stage_job[(path.name, stage)] = e["Job ID"]
            elif kind == "SparkListenerJobEnd":
                jobs[(path.name, e["Job ID"])]["end"] = e["Completion Time"]
            elif kind == "SparkListenerTaskEnd":
                job = stage_job.get((path.name, e["Stage ID"]))
                if job is not None and (path.name, job) in jobs:
                    metrics = e.get("Task Metrics") or {}
                    jobs[(path.name, job)]["task_s"] += metrics.get("Executor Run Time", 0) / 1000
                    jobs[(path.name, job)]["tasks"] += 1
    return [{"id": k[1], "site": v["site"], "seconds": ((v["end"] or v["start"]) - v["start"]) / 1000,
             "task_s": v["task_s"], "tasks": v["tasks"], "start": v["start"] / 1000} for k, v in jobs.items()]


def profile_text(config: Path, prof: Path, event_log: Path, steps: dict[str, dict]) -> list[str]:
    """Where the measured day's time went: Spark jobs per step (wall, task time, call site), then the driver's
    own functions by cumulative time (cProfile)."""
    import io
    import pstats

    from lfm.config import load_config
    from pipeline import runs

    out = []
    windows = {n: (r.started_at.timestamp(), r.ended_at.timestamp())
               for n, r in runs.latest_by_step(load_config(config), D1).items()}
    jobs = spark_jobs(event_log)
    for name in STEPS:
        lo, hi = windows[name]
        mine = sorted((j for j in jobs if lo <= j["start"] <= hi), key=lambda j: -j["seconds"])
        busy = sum(j["seconds"] for j in mine)
        out.append(f"{name}: {steps[name]['seconds']:.1f}s, {len(mine)} Spark jobs, {busy:.1f}s in jobs "
                   f"({sum(j['task_s'] for j in mine):.1f}s of task time)")
        out += [f"    job {j['id']:>3} {j['seconds']:6.1f}s  tasks {j['tasks']:>3} {j['task_s']:6.1f}s  {j['site']}"
                for j in mine[:12]]
    buf = io.StringIO()
    stats = pstats.Stats(str(prof), stream=buf)
    stats.sort_stats("cumulative").print_stats(r"/(spark_jobs|validation|serving|pipeline|lakehouse|inference)/", 40)
    out += ["", "driver functions by cumulative time (cProfile):",
            *[ln for ln in buf.getvalue().splitlines() if ln.strip()][-42:]]
    return out


# --- the report -------------------------------------------------------------------------------------------------

def report(results: list[ScaleResult], online: str, cores: int, started: str, command: str, lines: list[str]) -> str:
    out = [f"## Run of {started} ({online} online store, local[{cores}])", "", f"Command: `{command}`", ""]
    out += ["| users | items | events | step | seconds | rows | rows/s | peak GiB driver / JVM / workers / all |",
            "|---|---|---|---|---|---|---|---|"]
    for r in results:
        for i, (name, s) in enumerate(r.steps.items()):
            lead = f"| {r.users:,} | {r.items:,} | {r.events:,}" if i == 0 else "| | |"
            rate = f"{s['rows_s']:,.0f}" if s["rows_s"] and name != "publish" else "-"
            out.append(f"{lead} | {name} | {s['seconds']:.1f} | {s['rows']:,} | {rate} | {s['driver']:.2f} / "
                       f"{s['jvm']:.2f} / {s['workers']:.2f} / {s['total']:.2f} |")
        whole = r.day.sampler.peak()
        out.append(f"| | | | **whole `run-daily`** (steps {r.steps_s:.1f}s) | **{r.day.wall:.1f}** | | | "
                   f"{whole['driver']:.2f} / {whole['jvm']:.2f} / {whole['workers']:.2f} / {whole['total']:.2f} |")
        out.append(f"| | | | compute floor (UR {r.floor['ur_s']:.1f}, IR {r.floor['ir_s']:.1f}, CR "
                   f"{r.floor['cr_s']:.1f}) | {r.floor['seconds']:.1f} | | | {r.floor['peak_gib']:.2f} (one process) |")
    out += ["", "| users | run-daily / floor | refresh / floor | gate / refresh | s per 1k users | Spark UR / plain "
            "(refresh's frame; extraction alone) | Spark IR / plain (same) | cold-start day s | "
            "rerun of a finished day s (CPU s) | `lfm status` s (CPU s) | load during the day |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        f = r.floor
        out.append(f"| {r.users:,} | {r.day.wall / f['seconds']:.2f}x | "
                   f"{r.steps['refresh']['seconds'] / f['seconds']:.2f}x | "
                   f"{r.steps['validate']['seconds'] / r.steps['refresh']['seconds']:.0%} | "
                   f"{1000 * r.day.wall / r.users:.3f} | "
                   f"{r.probe['ur_rows_s'] / (r.users / f['ur_loop_s']):.2f}x; "
                   f"{r.probe['ur_extract_rows_s'] / (r.users / f['ur_loop_s']):.2f}x | "
                   f"{r.probe['ir_rows_s'] / (r.items / f['ir_loop_s']):.2f}x; "
                   f"{r.probe['ir_extract_rows_s'] / (r.items / f['ir_loop_s']):.2f}x | {r.cold.wall:.1f} | "
                   f"{r.rerun.wall:.1f} ({r.rerun.cpu:.1f}) | {r.status.wall:.1f} ({r.status.cpu:.1f}) | "
                   f"{r.load_during} |")
    for r in results:
        if r.profile:
            out += ["", f"<details><summary>profile of the measured day at {r.users:,} users</summary>", "", "```",
                    *r.profile, "```", "</details>"]
    out += ["", "<details><summary>log</summary>", "", "```", *lines, "```", "</details>", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--workdir", type=Path, default=Path("/tmp/lfm_daily_scale"))
    p.add_argument("--online", choices=["redis", "sqlite"], default="redis")
    p.add_argument("--small-model", action="store_true", help="a tiny LFM (the smoke test), not the default size")
    p.add_argument("--profile", action="store_true",
                   help="run the measured day under cProfile with Spark's event log; print where its time went")
    p.add_argument("--out", type=Path, help="append the report (markdown) to this file")
    p.add_argument("--stage-child", help=argparse.SUPPRESS)
    p.add_argument("--floor-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.stage_child or args.floor_child:
        fn = stage_child if args.stage_child else floor_child
        print(json.dumps(fn(json.loads(args.stage_child or args.floor_child))))
        return 0

    lines: list[str] = []

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        lines.append(line)
        print(line, flush=True)

    cores = os.cpu_count() or 1
    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    workdir = args.workdir.resolve()
    registry = workdir / "registry"
    redis = None
    if args.online == "redis":
        from tests.support.redis_local import start_redis

        redis = start_redis()
    try:
        ensure_model(workdir, registry, args.small_model, log)
        results = [run_scale(workdir, registry, n, args.online, redis_client(redis), args.small_model, cores, log,
                             args.profile) for n in args.users]
    finally:
        if redis is not None:
            redis.stop()
    command = "PYTHONPATH=. .venv/bin/python bench/daily_scale.py " + " ".join(
        (argv if argv is not None else sys.argv[1:]))
    text = report(results, args.online, cores, started, command, lines)
    print("\n" + text)
    if args.out:
        with args.out.open("a") as fh:
            fh.write(text + "\n")
    return 0


class _Redis:
    """The bench's Redis: its connection string, and a flush between scales."""

    def __init__(self, server) -> None:
        import redis

        self.connection = server.connection
        self.client = redis.Redis(host="127.0.0.1", port=server.port)

    def flushall(self) -> None:
        self.client.flushall()


def redis_client(server):
    return _Redis(server) if server is not None else None


if __name__ == "__main__":
    sys.exit(main())
