"""A Spark driver in its own process, for tests of Delta tables on an S3-API store: one long-lived process with its
own SparkSession (built by `spark_jobs.session.get_spark` from an S3 config) that runs `lakehouse.delta_io` calls
sent as JSON lines on its stdin and answers each with one JSON line on its stdout (prefixed, so the JVM's or a
library's stray output cannot be mistaken for an answer).

Started with `DriverProcess.start(...)` (tests) or `python -m tests.support.spark_s3_driver LAKEHOUSE ENDPOINT`
(the process itself); credentials come from the standard AWS variables of its environment, as in production.
Ops: replace, append, restore, read, history, exists, dates, session, and `pause_before_fence`: the next commit
stops right before its fence check, says so, and goes on when a line arrives on stdin (the test SIGSTOPs it
meanwhile).
"""
from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ANSWER = "@@driver "
REPO = Path(__file__).resolve().parents[2]


# --- the test's side ------------------------------------------------------------------------------------------
@dataclass
class DriverProcess:
    proc: subprocess.Popen
    name: str

    @classmethod
    def start(cls, name: str, lakehouse: str, endpoint: str, env: dict[str, str], log_dir: Path) -> "DriverProcess":
        """Start the process (the JVM comes up in the background: `wait_ready` waits for it)."""
        log_dir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.spark_s3_driver", lakehouse, endpoint, str(log_dir / f"{name}.log")],
            env={**os.environ, **env, "PYTHONPATH": str(REPO)}, cwd=str(REPO), text=True, bufsize=1,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log_dir / f"{name}.stderr", "w"))
        return cls(proc, name)

    def _read_answer(self, timeout: float) -> dict:
        box: list[str] = []

        def read() -> None:
            for line in self.proc.stdout:
                if line.startswith(ANSWER):
                    box.append(line[len(ANSWER):])
                    return

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if not box:
            raise TimeoutError(f"driver {self.name} gave no answer in {timeout:.0f}s (exit code {self.proc.poll()})")
        return json.loads(box[0])

    def wait_ready(self, timeout: float = 300.0) -> dict:
        return self._read_answer(timeout)

    def send(self, op: str, **args) -> None:
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()

    def answer(self, timeout: float = 300.0) -> dict:
        """The next answer: {"ok": result} or {"error": type, "message": text}."""
        return self._read_answer(timeout)

    def call(self, op: str, timeout: float = 300.0, **args):
        self.send(op, **args)
        got = self.answer(timeout)
        if "error" in got:
            raise RuntimeError(f"driver {self.name}: {got['error']}: {got['message']}")
        return got["ok"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # end of commands: the process stops its session and exits
                self.proc.wait(60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(30)


# --- the driver's side ----------------------------------------------------------------------------------------
def _say(obj: object) -> None:
    sys.stdout.write(ANSWER + json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def _rows(cmd: dict) -> list[tuple]:
    return [(dt.date.fromisoformat(r["ds"]), str(r["driver"]), int(r["n"])) for r in cmd["rows"]]


def main(lakehouse: str, endpoint: str, log_file: str) -> None:
    from pyspark.sql.types import DateType, LongType, StringType, StructField, StructType

    from lakehouse import delta_io
    from lakehouse.leases import Lease
    from lfm.config import config_from_dict
    from spark_jobs.session import get_spark
    from tests.support.config import TEST_SPARK_CONF

    conf = {**TEST_SPARK_CONF, "spark.driver.memory": "1g", "spark.sql.shuffle.partitions": "1",
            "spark.default.parallelism": "1", "spark.databricks.delta.snapshotPartitions": "1"}
    cfg = config_from_dict({"lakehouse": lakehouse,
                            "storage": {"endpoint": endpoint, "allow_http": True},
                            "spark": {"master": "local[1]", "conf": conf, "log_file": log_file}},
                           "<driver>", str(Path(log_file).parent))
    started = time.monotonic()
    spark = get_spark(cfg)
    schema = StructType([StructField("ds", DateType()), StructField("driver", StringType()),
                         StructField("n", LongType())])
    _say({"ready": round(time.monotonic() - started, 1), "pid": os.getpid()})

    original_check, pause = Lease.check, threading.Event()

    def check(lease: Lease) -> None:  # the test's hook: stop right before the fence when asked to
        if pause.is_set():
            pause.clear()
            _say({"paused": lease.key})
            sys.stdin.readline()
        original_check(lease)

    Lease.check = check

    def leases(cmd: dict) -> delta_io.TableLeases | None:
        if cmd.get("no_leases"):
            return None
        seconds = float(cmd.get("lease_seconds", cfg.storage.lease_seconds))
        mine = cfg.model_copy(update={"storage": cfg.storage.model_copy(update={"lease_seconds": seconds})})
        return delta_io.TableLeases(mine, cmd.get("run_id", "driver"), wait_seconds=float(cmd.get("wait", 600)))

    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        op, table = cmd["op"], cmd.get("table", "")
        # the log read through delta-rs with the store's options, or (reader "spark") through a Spark snapshot
        storage = None if cmd.get("reader") == "spark" else cfg.delta_rs_options(table) if table else None
        try:
            if op == "pause_before_fence":
                pause.set()
                out = True
            elif op == "replace":
                df = spark.createDataFrame(_rows(cmd), schema)
                days = sorted({dt.date.fromisoformat(d) for d in cmd["days"]})
                out = delta_io.replace_partitions(df, table, days, cmd.get("meta", {}), leases=leases(cmd))
            elif op == "append":
                df = spark.createDataFrame(_rows(cmd), schema)
                out = delta_io.append_rows(df, table, cmd.get("meta", {}), leases=leases(cmd))
            elif op == "restore":
                days = [dt.date.fromisoformat(d) for d in cmd["days"]]
                out = delta_io.restore_partitions(spark, table, days, cmd["version_before"], cmd.get("meta", {}),
                                                  leases=leases(cmd))
            elif op == "read":
                df = delta_io.read_table(spark, table, cmd.get("version"))
                out = sorted([r["ds"].isoformat(), r["driver"], r["n"]] for r in df.collect())
            elif op == "history":
                out = delta_io.history(spark, table, storage=storage)
            elif op == "exists":
                out = {"exists": delta_io.table_exists(spark, table, storage),
                       "version": delta_io.table_version(spark, table, storage)}
            elif op == "session":  # get_spark again: the running session is reused once its S3A is checked
                out = get_spark(cfg) is spark
            elif op == "dates":
                out = [d.isoformat() for d in delta_io.partition_dates(spark, table, "ds", cmd.get("version"), storage)]
            elif op == "day_stats":
                stats = delta_io.day_stats(table, cmd["version"], dt.date.fromisoformat(cmd["day"]), "n", storage)
                out = None if stats is None else [stats.rows, stats.latest_ms]
            else:
                raise ValueError(f"unknown op {op}")
            _say({"ok": out})
        except Exception as err:  # reported to the test, which decides
            _say({"error": type(err).__name__, "message": str(err)[:2000]})
    spark.stop()


if __name__ == "__main__":
    main(*sys.argv[1:4])
