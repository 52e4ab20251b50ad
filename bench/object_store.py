"""The same `lfm run-daily` day on a local-disk lakehouse and on an S3-API object store (SeaweedFS on loopback).

    PYTHONPATH=. .venv/bin/python bench/object_store.py [--users 100000] [--rounds 1] [--port 8633]
        [--workdir /tmp/lfm_object_store] [--small-model] [--probe-repeats 5] [--out docs/object_store_bench.md]

One invocation, both sides, Spark `local[2]` on each, the raw drop and the model registry on local disk for both
(the same input): only the lakehouse differs (`./lakehouse` against `s3://lfm/bench/<run>/lakehouse`, the S3
credentials in the `lfm` processes' environment, never in the yaml). SeaweedFS is started with
`scripts/seaweedfs.sh start` on `--port` and stopped at the end. The world, the pretrained model and the `lfm`
processes are `bench/daily_scale.py`'s (imported, not copied): N users, N/10 items, 5N events a day, one raw
folder per day; a model pretrained once on a separate 20k-user world.

Each round starts both lakehouses empty and runs, alternating the sides (local first in odd rounds, S3 first in
even ones):
1. `lfm run-daily --ds D0 --cold-start --source raw/D0` on each side (the first Spark start with S3 resolves the
   S3A jars: not compared);
2. `lfm run-daily --ds D1 --source raw/D1` on each side: the compared day, warm against warm. Per step seconds from
   the `runs` table; per step the Spark jobs' wall time from Spark's event log; the driver's time in the code the
   object store changes (Delta log reads, leases and day locks, the record tables through delta-rs, the registry,
   Data Docs and Feast objects, the Spark session's start) from cProfile of the `lfm` process (its main thread);
   the S3A connector's request counts and times (its IOStatistics, logged when the JVM closes the file system);
   the CPU seconds SeaweedFS used.
After the last round: the objects, bytes, `_delta_log` commits and checkpoints per table on both sides (listed with
obstore), then a few primitive operations timed on both sides in this process, alternating, median of
`--probe-repeats` after one warm-up (delta-rs open and record-table read and append, a Spark snapshot / history
read, a Spark commit with its table lease, the day lock, a `_delta_log` listing).

The load average is printed with every figure; ratios are S3 / local measured in the same invocation. cProfile
and the event log cost both sides a little time of their own.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime as dt
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.daily_scale import (D0, D1, STEPS, Command, ensure_model, lfm, load, spark_jobs,  # noqa: E402
                               step_rows, synth, write_config)

SIDES = ("local", "s3")
SEAWEEDFS = REPO / "scripts" / "seaweedfs.sh"
BUCKET = "lfm"  # the script's default bucket (LFM_S3_BUCKET)
CORES = 2  # Spark local[2] on both sides

# The driver code an object store changes, by file and function (None: every function of the file). A category's
# time is what callers outside every category spent in it (cProfile's per-caller cumulative time), so nested calls
# (table_version -> table_exists, a lease -> its objects) count once and the categories do not overlap.
CATEGORIES = (
    ("Delta log reads: exists, version, history, partitions (delta-rs; on S3 with the store's options)",
     "lakehouse/delta_io.py", {"table_exists", "table_version", "history", "partition_dates", "partition_columns",
                               "commit_info", "day_stats", "_check_files"}),
    ("leases (tables, day, export) and their objects", "lakehouse/leases.py", None),
    ("leases (tables, day, export) and their objects", "lakehouse/locks.py", None),
    ("leases (tables, day, export) and their objects", "lakehouse/objects.py", None),
    ("leases (tables, day, export) and their objects", "lakehouse/delta_io.py", {"held", "_committing"}),
    ("record tables through delta-rs (runs, refresh_log, gate_status, releases)", "lakehouse/records.py", None),
    ("registry and Data Docs objects (lakehouse.artifacts)", "lakehouse/artifacts.py", None),
    ("Feast registry and store (a sqlite registry locally, `_serving/feast/registry.pb` and its lease on S3)",
     "feature_repo/store.py", None),
    ("Feast registry and store (a sqlite registry locally, `_serving/feast/registry.pb` and its lease on S3)",
     "serving/register.py", None),
    ("Spark session start (on S3: the S3A connector and AWS SDK jars, the S3A client)", "spark_jobs/session.py",
     {"get_spark"}),
)
# The S3A requests worth a row (IOStatistics names); every other non-zero counter is listed in the details.
S3A_ROWS = (("LIST", "object_list_request"), ("HEAD", "object_metadata_request"), ("GET", "action_http_get_request"),
            ("PUT", "object_put_request"), ("multipart part", "multipart_upload_part_put"),
            ("COPY (rename)", "object_copy_requests"), ("DELETE", "object_delete_request"),
            ("bulk DELETE", "object_bulk_delete_request"))


# --- the object store -----------------------------------------------------------------------------------------

@dataclasses.dataclass
class Store:
    folder: Path
    endpoint: str
    pid: int
    env: dict[str, str]  # AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ... from <folder>/credentials.env

    def cpu(self) -> float:
        """CPU seconds the server has used so far."""
        import psutil

        times = psutil.Process(self.pid).cpu_times()
        return times.user + times.system


def start_store(folder: Path, port: int, log) -> Store:
    """`scripts/seaweedfs.sh start` on `port` with an empty data folder; the credentials it wrote."""
    if (folder / "weed.pid").exists():
        subprocess.run(["bash", str(SEAWEEDFS), "stop", str(folder)], capture_output=True, text=True)
    shutil.rmtree(folder / "data", ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    out = subprocess.run(["bash", str(SEAWEEDFS), "start", str(folder)], env={**env, "LFM_S3_PORT": str(port)},
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"seaweedfs.sh start failed:\n{out.stdout}{out.stderr}")
    creds = dict(line.removeprefix("export ").split("=", 1)
                 for line in (folder / "credentials.env").read_text().splitlines() if line.startswith("export "))
    log(out.stdout.splitlines()[0])
    return Store(folder, creds["AWS_ENDPOINT_URL"], int((folder / "weed.pid").read_text()), creds)


def stop_store(store: Store, log) -> None:
    out = subprocess.run(["bash", str(SEAWEEDFS), "stop", str(store.folder)], capture_output=True, text=True)
    log(f"seaweedfs.sh stop: {(out.stdout or out.stderr).strip()}")


# --- the two sides --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Side:
    name: str  # "local" | "s3"
    root: Path
    config: Path
    # set by run_day: D0's command, D1's command
    cold: Command = dataclasses.field(default=None)  # type: ignore[assignment]
    day: Command = dataclasses.field(default=None)  # type: ignore[assignment]
    steps: dict[str, dict] = dataclasses.field(default_factory=dict)
    jobs: dict[str, tuple[int, float]] = dataclasses.field(default_factory=dict)  # step -> Spark jobs, their s
    categories: dict[str, tuple[float, int]] = dataclasses.field(default_factory=dict)  # -> seconds, calls
    functions: dict[str, tuple[float, int]] = dataclasses.field(default_factory=dict)
    s3a: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # counter -> [count, summed ms]
    store_cpu: float = 0.0  # SeaweedFS's CPU seconds during the compared day
    load_before: str = ""
    load_after: str = ""


def side_config(root: Path, registry: Path, side: str, small_model: bool, store: Store, prefix: str) -> Path:
    """daily_scale's world config (sqlite online store, Spark's event log on), then Spark local[2] and, for the S3
    side, the lakehouse on the store and S3A's IOStatistics logged when the JVM closes the file system."""
    import yaml

    path = write_config(root, registry, "sqlite", None, small_model, event_log=root / "eventlog")
    data = yaml.safe_load(path.read_text())
    data["spark"]["master"] = f"local[{CORES}]"
    if side == "s3":
        data["lakehouse"] = f"s3://{BUCKET}/{prefix}/lakehouse"
        data["storage"] = {"endpoint": store.endpoint, "region": "us-east-1", "allow_http": True}
        data["spark"]["conf"]["spark.hadoop.fs.iostatistics.logging.level"] = "warn"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def fresh_side(base: Path, registry: Path, side: str, small_model: bool, store: Store, prefix: str) -> Side:
    root = base / side
    for old in ("lakehouse", "feature_repo", "eventlog", "data", "day.prof"):
        target = root / old
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    return Side(side, root, side_config(root, registry, side, small_model, store, prefix))


def spark_log(side: Side) -> Path:
    from lfm.config import load_config

    cfg = load_config(side.config)
    return cfg.resolve(cfg.spark.log_file)


def run_day(side: Side, day: dt.date, raw: Path, store: Store, log) -> None:
    """One `lfm run-daily` of `day` on `side`; the compared day (D1) under cProfile, its Spark event log, S3A
    statistics and the server's CPU time recorded."""
    cold = day == D0
    args = ["run-daily", "--ds", day.isoformat(), *(["--cold-start"] if cold else []),
            "--source", str(raw / day.isoformat())]
    if cold:
        side.cold = lfm(side.config, *args, log=lambda m: log(f"[{side.name}] {m}"))
        return
    shutil.rmtree(side.root / "eventlog")  # the cold day's jobs are not the compared day's
    (side.root / "eventlog").mkdir()
    logfile = spark_log(side)
    mark = logfile.stat().st_size if logfile.exists() else 0
    side.load_before, cpu = load(), store.cpu()
    side.day = lfm(side.config, *args, log=lambda m: log(f"[{side.name}] {m}"), profile=side.root / "day.prof")
    side.load_after = load()
    _wait_for_exit(side.day)  # the JVM logs S3A's statistics as it exits, after the `lfm` process
    side.store_cpu = store.cpu() - cpu
    with logfile.open("rb") as fh:
        fh.seek(mark)
        side.s3a = s3a_statistics(fh.read().decode(errors="replace"))
    side.steps = step_rows(side.config, side.day)
    side.jobs = jobs_per_step(side)
    side.categories, side.functions = driver_profile(side.root / "day.prof")


def _wait_for_exit(command: Command, timeout: float = 120.0) -> None:
    """Until every process of the command's tree (the JVM, its Python workers) has exited."""
    import psutil

    left = []
    for pid in command.sampler.cpu:
        try:
            left.append(psutil.Process(pid))
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(left, timeout=timeout)


def jobs_per_step(side: Side) -> dict[str, tuple[int, float]]:
    """The number of Spark jobs each step of D1 started and their summed wall seconds (Spark's event log)."""
    from lfm.config import load_config
    from pipeline import runs

    jobs = spark_jobs(side.root / "eventlog")
    out = {}
    for name, r in runs.latest_by_step(load_config(side.config), D1).items():
        lo, hi = r.started_at.timestamp(), r.ended_at.timestamp()
        mine = [j["seconds"] for j in jobs if lo <= j["start"] <= hi]
        out[name] = (len(mine), sum(mine))
    return out


# --- where the time went: cProfile of the driver, S3A's statistics --------------------------------------------

def _category(key: tuple[str, int, str]) -> str | None:
    file, _, func = key
    file = file.replace(os.sep, "/")
    for name, suffix, funcs in CATEGORIES:
        if file.endswith(suffix) and (funcs is None or func in funcs):
            return name
    return None


def driver_profile(prof: Path) -> tuple[dict[str, tuple[float, int]], dict[str, tuple[float, int]]]:
    """Seconds and calls per category (entered from outside every category), and the cumulative seconds and calls
    of every function of this checkout (bench/ aside)."""
    import pstats

    # (file, line, func) -> (cc, nc, tt, ct, callers)
    stats = pstats.Stats(str(prof)).stats  # type: ignore[attr-defined]
    cats: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    funcs = {}
    root = str(REPO) + os.sep
    for key, (_, calls, _, cumulative, callers) in stats.items():
        cat = _category(key)
        if cat is not None:
            for caller, (_, ncalls, _, ct) in callers.items():
                if _category(caller) is None:
                    cats[cat][0] += ct
                    cats[cat][1] += ncalls
        file = key[0]
        if file.startswith(root) and not file.startswith(root + "bench") and ".venv" not in file:
            funcs[f"{file[len(root):]}:{key[2]}"] = (cumulative, calls)
    return {k: (v[0], v[1]) for k, v in cats.items()}, funcs


_COUNTER = re.compile(r"\(([a-z_.]+)=(\d+)\)")
_MEAN = re.compile(r"\(([a-z_.]+)\.mean=\(samples=(\d+), sum=(\d+),")


def s3a_statistics(text: str) -> dict[str, list[int]]:
    """Counter -> [count, summed milliseconds] over every S3A file system the JVM closed (IOStatistics blocks in
    the Spark log; the summed time of requests made in parallel exceeds their wall time)."""
    out: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    for block in text.split("IOStatistics: counters=")[1:]:
        counters, _, rest = block.partition("gauges=")
        for name, n in _COUNTER.findall(counters):
            out[name][0] += int(n)
        for name, _, total in _MEAN.findall(rest.partition("means=")[2].partition(")));")[0] + ")));"):
            out[name][1] += int(total)
    return dict(out)


# --- what the lakehouse holds ---------------------------------------------------------------------------------

def store_at(cfg, where):
    """An obstore store rooted at `where`: the local folder, or the object store with the config's options."""
    from obstore.store import LocalStore

    from lakehouse.objects import open_store

    return LocalStore(str(where.path())) if where.local else open_store(where, cfg.storage.object_store_options())


def inventory(config: Path) -> dict[str, collections.Counter]:
    """Per top folder of the lakehouse (a table, `_locks`, ...): objects, bytes, data files, `_delta_log` commits,
    checkpoints, Hadoop `.crc` checksum files (local disk only); listed with obstore on both sides."""
    import obstore

    from lfm.config import load_config

    cfg = load_config(config)
    store = store_at(cfg, cfg.location(cfg.lakehouse))
    out: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for batch in obstore.list(store):
        for meta in batch:
            path = meta["path"]
            top, name = path.split("/", 1)[0], path.rsplit("/", 1)[-1]
            t = out[top]
            t["objects"] += 1
            t["bytes"] += meta["size"]
            if name.endswith(".crc"):
                t["crc"] += 1
            elif "/_delta_log/" in f"/{path}":
                t["checkpoints"] += ".checkpoint" in name
                t["commits"] += bool(re.fullmatch(r"\d{20}\.json", name))
            elif name.endswith(".parquet"):
                t["data_files"] += 1
    return dict(out)


# --- primitive operations, both sides in one process ----------------------------------------------------------

def probes(sides: dict[str, Side], repeats: int, log) -> list[tuple[str, dict[str, float | None]]]:
    """Median milliseconds of a few primitive operations per side, after one warm-up, alternating the sides."""
    import deltalake
    import obstore
    import pyarrow as pa
    from delta.tables import DeltaTable

    from lakehouse import delta_io, records
    from lakehouse.locks import day_lock
    from lfm.config import load_config
    from lfm.contract import CR_USER, EVENTS, RUNS
    from spark_jobs.session import get_spark

    cfgs = {name: load_config(s.config) for name, s in sides.items()}
    spark = get_spark(cfgs["s3"])  # the S3A connector on the classpath; it reads local paths as well
    scratch = pa.schema([("n", pa.int64())])

    def table(cfg, name):
        return cfg.table_path(name)

    def rs(cfg, name):
        return cfg.location(table(cfg, name)).for_delta_rs()

    def leased_commit(cfg):
        delta_io.append_rows(spark.range(1), table(cfg, "bench_probe_spark"), {"probe": 1},
                             leases=delta_io.TableLeases(cfg, "bench-probe"))

    def table_lease(cfg):
        if cfg.location(cfg.lakehouse).local:
            return NOT_APPLICABLE  # a local commit holds no lease
        with delta_io.TableLeases(cfg, "bench-probe").held(table(cfg, EVENTS)):
            return None

    def day_lock_once(cfg):
        with day_lock(cfg, "bench_probe", D1, "bench-probe"):
            pass

    def list_log(cfg):
        return sum(len(b) for b in obstore.list(store_at(cfg, cfg.location(table(cfg, EVENTS)).child("_delta_log"))))

    ops = [
        ("delta-rs: open `events` and read its version", lambda c: deltalake.DeltaTable(
            rs(c, EVENTS), storage_options=c.delta_rs_options(c.lakehouse)).version()),
        ("delta-rs: read the `runs` record table (records.rows_of)", lambda c: records.rows_of(c, RUNS)),
        ("delta-rs: append one row to a record table (records.write_record)", lambda c: records.write_record(
            table(c, "bench_probe_records"), [{"n": 1}], scratch, {"probe": 1}, c.delta_rs_options(c.lakehouse))),
        ("Spark: DeltaTable.forPath(`events`).history(1) (snapshot update: log listing)", lambda c: DeltaTable.forPath(
            spark, c.location(table(c, EVENTS)).for_spark()).history(1).collect()),
        ("Spark: count of `cr_user` (snapshot, statistics only)", lambda c: spark.read.format("delta").load(
            c.location(table(c, CR_USER)).for_spark()).count()),
        ("delta_io.table_version(`events`) as the code reads it", lambda c: delta_io.table_version(
            spark, table(c, EVENTS), c.delta_rs_options(table(c, EVENTS)))),
        ("Spark: append one row (delta_io.append_rows; the table lease on S3)", leased_commit),
        ("table lease acquire + release (TableLeases.held)", table_lease),
        ("day lock acquire + release (locks.day_lock: flock locally, a lease on S3)", day_lock_once),
        ("list `events/_delta_log` (obstore)", list_log),
    ]
    out = []
    for label, fn in ops:
        times: dict[str, list[float]] = {name: [] for name in cfgs}
        applies = {name: True for name in cfgs}
        try:
            for i in range(repeats + 1):
                for name in (SIDES if i % 2 == 0 else SIDES[::-1]):
                    t0 = time.perf_counter()
                    applies[name] = fn(cfgs[name]) is not NOT_APPLICABLE
                    if i:
                        times[name].append(1000 * (time.perf_counter() - t0))
        except Exception as err:  # noqa: BLE001 - one failed probe costs its row, not the run's figures
            log(f"probe {label} failed: {type(err).__name__}: {str(err)[:300]}")
            applies = {name: False for name in cfgs}
        medians = {n: statistics.median(v) if applies[n] else None for n, v in times.items()}
        out.append((label, medians))
        log(f"probe {label}: " + ", ".join(f"{n} {_ms(v)}" for n, v in medians.items()) + f" ({load()})")
    spark.stop()
    return out


NOT_APPLICABLE = object()  # what a probe returns on a side where its operation does not exist


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:,.1f} ms"


# --- the report -------------------------------------------------------------------------------------------------

def _ratio(s3: float, local: float) -> str:
    return f"{s3 / local:.2f}x" if local > 0 else "-"


def _step_sums(side: Side, step: str | None) -> tuple[float, int, float]:
    """Seconds, Spark jobs and their seconds of one step of D1, or of all five (`step` None)."""
    names = STEPS if step is None else (step,)
    return (sum(side.steps[n]["seconds"] for n in names), sum(side.jobs.get(n, (0, 0.0))[0] for n in names),
            sum(side.jobs.get(n, (0, 0.0))[1] for n in names))


def round_report(n: int, users: int, sides: dict[str, Side]) -> list[str]:
    loc, s3 = sides["local"], sides["s3"]
    out = [f"### Round {n}: {users:,} users, D1 = {D1} ({'local' if n % 2 else 'S3'} first)", "",
           "| step | local s | S3 s | S3 / local | Spark jobs local (their s) | Spark jobs S3 (their s) |",
           "|---|---|---|---|---|---|"]
    for name in (*STEPS, None):  # None: all five
        (a, ja, jsa), (b, jb, jsb) = (_step_sums(x, name) for x in (loc, s3))
        out.append(f"| {name or 'all five steps'} | {a:.1f} | {b:.1f} | **{_ratio(b, a)}** | {ja} ({jsa:.1f}) | "
                   f"{jb} ({jsb:.1f}) |")
    out.append(f"| **whole `run-daily` (process wall)** | **{loc.day.wall:.1f}** | **{s3.day.wall:.1f}** | "
               f"**{_ratio(s3.day.wall, loc.day.wall)}** | | |")
    out += ["", f"CPU seconds of the `lfm` process tree: local {loc.day.cpu:.1f}, S3 {s3.day.cpu:.1f}; SeaweedFS "
            f"used {s3.store_cpu:.1f} CPU s during the S3 day ({loc.store_cpu:.1f} during the local one). Cold-start "
            f"day D0 (not compared; S3's includes the S3A jars' first load): local {loc.cold.wall:.1f} s, S3 "
            f"{s3.cold.wall:.1f} s. Load average (1 / 5 / 15 min) before / after the day: local "
            f"{loc.load_before} / {loc.load_after}; S3 {s3.load_before} / {s3.load_after}.", "",
            "Driver time in the code the store changes (cProfile of the `lfm` process's main thread: the table "
            "writes of ingest and refresh, the gate's Spark side and the online load run in threads it does not see; "
            "entered from outside every category, so they do not overlap):", "",
            "| code | local s (calls) | S3 s (calls) | S3 extra s |", "|---|---|---|---|"]
    names = list(dict.fromkeys(c[0] for c in CATEGORIES))
    for name in names:
        x, y = loc.categories.get(name, (0.0, 0)), s3.categories.get(name, (0.0, 0))
        out.append(f"| {name} | {x[0]:.1f} ({x[1]}) | {y[0]:.1f} ({y[1]}) | {y[0] - x[0]:+.1f} |")
    ca, cb = (sum(x.categories.get(n, (0.0, 0))[0] for n in names) for x in (loc, s3))
    out.append(f"| the rest of the day (Spark jobs, the threads' writes, Python, imports) | {loc.day.wall - ca:.1f} | "
               f"{s3.day.wall - cb:.1f} | {(s3.day.wall - cb) - (loc.day.wall - ca):+.1f} |")
    diff = sorted(set(loc.functions) | set(s3.functions),
                  key=lambda f: -(s3.functions.get(f, (0.0, 0))[0] - loc.functions.get(f, (0.0, 0))[0]))
    out += ["", "<details><summary>functions of this checkout by extra cumulative time on S3 (cProfile; nested "
            "functions include their callees)</summary>", "", "| function | local s (calls) | S3 s (calls) | extra s |",
            "|---|---|---|---|"]
    for f in diff[:25]:
        x, y = loc.functions.get(f, (0.0, 0)), s3.functions.get(f, (0.0, 0))
        out.append(f"| `{f}` | {x[0]:.2f} ({x[1]}) | {y[0]:.2f} ({y[1]}) | {y[0] - x[0]:+.2f} |")
    out += ["", "</details>", "", "S3A requests of the S3 day (the JVM's IOStatistics; summed request time, "
            "requests overlap across threads):", "", "| request | count | summed s |", "|---|---|---|"]
    for label, key in S3A_ROWS:
        count, ms = s3.s3a.get(key, [0, 0])
        out.append(f"| {label} (`{key}`) | {count:,} | {ms / 1000:.1f} |")
    rest = ", ".join(f"{k}={v[0]:,}" + (f" ({v[1] / 1000:.1f}s)" if v[1] else "")
                     for k, v in sorted(s3.s3a.items()) if v[0] and not k.endswith((".min", ".max")))
    out += ["", f"<details><summary>every non-zero S3A counter</summary>", "", rest or "(none logged)", "",
            "</details>", ""]
    return out


def inventory_report(inv: dict[str, dict[str, collections.Counter]]) -> list[str]:
    out = ["| folder | objects local / S3 | MB local / S3 | data files local / S3 | `_delta_log` commits local "
           "/ S3 | checkpoints local / S3 | `.crc` local |", "|---|---|---|---|---|---|---|"]
    total: dict[str, collections.Counter] = {side: collections.Counter() for side in SIDES}
    for top in sorted(set(inv["local"]) | set(inv["s3"])):
        a, b = inv["local"].get(top, collections.Counter()), inv["s3"].get(top, collections.Counter())
        total["local"].update(a)
        total["s3"].update(b)
        out.append(_inventory_row(top, a, b))
    out.append(_inventory_row("**all**", total["local"], total["s3"]))
    return out


def _inventory_row(top: str, a: collections.Counter, b: collections.Counter) -> str:
    return (f"| {top} | {a['objects']:,} / {b['objects']:,} | {a['bytes'] / 1e6:.1f} / {b['bytes'] / 1e6:.1f} | "
            f"{a['data_files']:,} / {b['data_files']:,} | {a['commits']} / {b['commits']} | "
            f"{a['checkpoints']} / {b['checkpoints']} | {a['crc']:,} |")


def report(rounds: list[dict[str, Side]], users: int, inv, probed, started: str, command: str,
           lines: list[str]) -> str:
    out = [f"## Run of {started}: {users:,} users, local[{CORES}], {os.cpu_count()} cores", "",
           f"Command: `{command}`", ""]
    if len(rounds) > 1:
        out += ["| round | first | steps local s | steps S3 s | S3 / local | run-daily local s | run-daily S3 s | "
                "S3 / local |", "|---|---|---|---|---|---|---|---|"]
        for i, r in enumerate(rounds, 1):
            a, b = (sum(s["seconds"] for s in r[x].steps.values()) for x in SIDES)
            out.append(f"| {i} | {'local' if i % 2 else 'S3'} | {a:.1f} | {b:.1f} | {_ratio(b, a)} | "
                       f"{r['local'].day.wall:.1f} | {r['s3'].day.wall:.1f} | "
                       f"{_ratio(r['s3'].day.wall, r['local'].day.wall)} |")
        out.append("")
    for i, r in enumerate(rounds, 1):
        out += round_report(i, users, r)
    out += ["### What the lakehouses hold after the last round (obstore listing)", "", *inventory_report(inv), "",
            "### Primitive operations, both sides in one process (median of the repeats after one warm-up)", "",
            "| operation | local ms | S3 ms | S3 / local |", "|---|---|---|---|"]
    for label, m in probed:
        ratio = _ratio(m["s3"], m["local"]) if m["s3"] is not None and m["local"] is not None else "-"
        out.append(f"| {label} | {_ms(m['local'])} | {_ms(m['s3'])} | {ratio} |")
    out += ["", "<details><summary>log</summary>", "", "```", *lines, "```", "</details>", ""]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=1, help="fresh lakehouses and both sides' two days, per round")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/lfm_object_store"))
    p.add_argument("--port", type=int, default=8633, help="SeaweedFS's S3 port (LFM_S3_PORT); +1..+3, +10000.. too")
    p.add_argument("--small-model", action="store_true", help="a tiny LFM (a smoke run), not the default size")
    p.add_argument("--probe-repeats", type=int, default=5)
    p.add_argument("--out", type=Path, help="append the report (markdown) to this file")
    args = p.parse_args(argv)

    lines: list[str] = []

    def log(msg: str) -> None:
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        lines.append(line)
        print(line, flush=True)

    started = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    workdir = args.workdir.resolve()
    registry = workdir / "registry"
    log(f"start ({load()})")
    ensure_model(workdir, registry, args.small_model, log)
    base = workdir / f"u{args.users}"
    raw = synth(base, args.users, 2, D0, 5, log)
    store = start_store(workdir / "seaweedfs", args.port, log)
    os.environ.update(store.env)  # the `lfm` processes (and this one's probes) reach the store with these
    rounds: list[dict[str, Side]] = []
    try:
        for n in range(1, args.rounds + 1):
            prefix = f"bench/{time.strftime('%Y%m%d-%H%M%S')}/u{args.users}"
            sides = {s: fresh_side(base, registry, s, args.small_model, store, prefix) for s in SIDES}
            order = SIDES if n % 2 else SIDES[::-1]
            log(f"--- round {n}: {args.users:,} users, {' then '.join(order)} ({load()})")
            for day in (D0, D1):
                for s in order:
                    run_day(sides[s], day, raw, store, log)
            a, b = (sides[s].day.wall for s in SIDES)
            log(f"round {n}: run-daily D1 local {a:.1f}s, S3 {b:.1f}s: {_ratio(b, a)} ({load()})")
            rounds.append(sides)
        inv = {s: inventory(rounds[-1][s].config) for s in SIDES}
        probed = probes(rounds[-1], args.probe_repeats, log)
    finally:
        stop_store(store, log)
    command = "PYTHONPATH=. .venv/bin/python bench/object_store.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    text = report(rounds, args.users, inv, probed, started, command, lines)
    print("\n" + text)
    if args.out:
        with args.out.open("a") as fh:
            fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
