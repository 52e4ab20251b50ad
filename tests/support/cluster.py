"""A Spark standalone cluster on loopback for tests: one master and N workers started from the pyspark installation.

Each worker gets its own empty working directory, HOME and scratch folder (`SPARK_LOCAL_DIRS`), so executors share
no folder with the driver or with each other: whatever they read must come from the object store or from the
driver over Spark itself. Everything a daemon starts (executors, Python workers) lives in its own process group,
so `stop` (and `kill_executors`) reach all of it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyspark

from tests.support.config import TEST_JAVA_OPTIONS
from tests.support.s3_local import free_port

SPARK_HOME = Path(pyspark.__file__).parent


def wait_for_text(log: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    """Wait until `text` appears in `log` (the daemon's output); raise with its tail when it does not."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not in {log} after {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a daemon and everything it started: its own process group (SIGTERM, then SIGKILL)."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@dataclass
class Standalone:
    url: str
    env: dict[str, str]
    workers: list[Path]  # each worker's own folder (work dir, HOME, scratch)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def executor_pids(self) -> list[int]:
        """The executor JVMs the workers started now (children of the worker daemons)."""
        out = subprocess.run(["pgrep", "-f", "CoarseGrainedExecutorBackend"], capture_output=True, text=True)
        mine = []
        for pid in (int(p) for p in out.stdout.split()):
            try:
                if os.getpgid(pid) in {p.pid for p in self.procs[1:]}:
                    mine.append(pid)
            except ProcessLookupError:
                continue
        return mine

    def stop(self) -> None:
        for p in reversed(self.procs):
            stop_group(p)


def start_standalone(root: Path, workers: int = 1, cores: int = 2, memory: str = "2g",
                     env: dict[str, str] | None = None) -> Standalone:
    """A master and `workers` workers on 127.0.0.1, each worker in its own folder under `root`."""
    base = {**os.environ, **(env or {}), "SPARK_HOME": str(SPARK_HOME), "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_LOG_DIR": str(root / "logs"), "PYSPARK_PYTHON": sys.executable,
            "SPARK_DAEMON_JAVA_OPTS": TEST_JAVA_OPTIONS}
    spark_class = str(SPARK_HOME / "bin" / "spark-class")
    port = free_port()
    cluster = Standalone(f"spark://127.0.0.1:{port}", base, [])
    try:
        mlog = root / "master.log"
        master = subprocess.Popen(
            [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(free_port())],
            stdout=mlog.open("w"), stderr=subprocess.STDOUT, env=base, start_new_session=True, cwd=root)
        cluster.procs.append(master)
        wait_for_text(mlog, "I have been elected leader", master, 90)
        for i in range(workers):
            home = root / f"worker-{i}"
            for sub in ("work", "home", "scratch"):
                (home / sub).mkdir(parents=True)
            wenv = {**base, "HOME": str(home / "home"), "SPARK_LOCAL_DIRS": str(home / "scratch")}
            wlog = home / "worker.log"
            worker = subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.worker.Worker", cluster.url, "--host", "127.0.0.1",
                 "--cores", str(cores), "--memory", memory, "--webui-port", str(free_port()),
                 "--work-dir", str(home / "work")],
                stdout=wlog.open("w"), stderr=subprocess.STDOUT, env=wenv, start_new_session=True, cwd=home / "work")
            cluster.procs.append(worker)
            cluster.workers.append(home)
            wait_for_text(wlog, "Successfully registered with master", worker, 90)
        return cluster
    except BaseException:
        cluster.stop()
        raise
