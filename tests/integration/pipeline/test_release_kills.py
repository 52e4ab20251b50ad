"""SIGKILL at each phase of a day's materialize and refresh (write, audit, publish), tested against independent
evidence: after every kill, training sets and the online store (through Feast's own reader) see one complete
release. Its own file so that a parallel test run starts it first (it is the longest test)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lfm.config import LfmConfig
from tests.support.releases import (D3, EMBEDDING, joined, lake_config, newest_release, online, partition,
                                    training_rows, vectors, write_conf)
from tests.support.cli import cli
from tests.support.worlds import D1, D2

pytestmark = pytest.mark.slow


def _commits(table_dir: Path) -> int:
    return len(list((table_dir / "_delta_log").glob("*.json"))) if (table_dir / "_delta_log").is_dir() else 0


def _new_parquet(table_dir: Path, before: set) -> bool:
    return any(p not in before for p in table_dir.rglob("*.parquet") if "_delta_log" not in p.parts)


WRITING_ONLINE = "all four tables checked; writing the online store"  # materialize's log line before its write


def _phase_signals(cfg: LfmConfig, export_id: str, out: Path) -> dict:
    """For each phase, the command that reaches it and a probe that turns true once the phase has begun (read off
    the file system and the command's own output only)."""
    lake = Path(cfg.lakehouse)
    ur_files = set(p for p in (lake / "ur").rglob("*.parquet"))
    counts = {t: _commits(lake / t) for t in ("refresh_log", "gate_status")}
    ann = Path(cfg.feast.repo_path) / "data" / "ann" / export_id

    def committed(table: str):
        return lambda: _commits(lake / table) > counts[table]

    return {  # materialize first: D2 is released and online, so its reload reaches both phases
        "materialize: writing the online store": ("materialize", lambda: WRITING_ONLINE in out.read_text()),
        "materialize: building the ANN index": ("materialize", lambda: ann.is_dir() and any(
            p.name.startswith(f".{D2}") for p in ann.iterdir())),
        "refresh: writing the embedding tables": ("refresh", lambda: _new_parquet(lake / "ur", ur_files)),
        "candidate recorded: the gate is running": ("refresh", committed("refresh_log")),
        "verdicts recorded: publish is next": ("refresh", committed("gate_status")),
    }


def _lfm(conf: Path, verb: str, model: str) -> list[str]:
    """`lfm refresh|materialize --ds D2 --model MODEL` (refresh writes, gates and publishes)."""
    import sys

    return [sys.executable, "-m", "cli.main", "--config", str(conf), verb, "--ds", str(D2), "--model", model]


def _run_and_kill(command: list[str], out: Path, probe, timeout: float = 900) -> tuple[bool, str]:
    """`command` in its own process group, SIGKILLed as soon as `probe()` is true; (killed, its output's tail)."""
    import os
    import signal
    import subprocess
    import time

    from tests.support.config import REPO

    with out.open("w") as fh:
        proc = subprocess.Popen(command, cwd=str(REPO), start_new_session=True, stdout=fh, stderr=subprocess.STDOUT)
    deadline, killed = time.monotonic() + timeout, False
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if probe():
                os.killpg(proc.pid, signal.SIGKILL)  # the driver, its JVM and the Python workers
                killed = True
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None and not killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    return killed, out.read_text()[-3000:]


def _readers_agree_on_one_release(spark, cfg: LfmConfig, export_id: str, d1: dict, d2: dict) -> str:
    """Training sets and the online store each see one complete day (D2's release, else D1's): never a mix."""
    from lakehouse import candidates

    release = newest_release(cfg, D2, export_id)
    if release is not None and release["status"] == "released":
        for table in EMBEDDING:  # every named version holds the whole candidate: one row per key
            part = partition(cfg, table, D2, export_id, release["table_versions"][table])
            cand = [c for c in candidates.latest_per_export(cfg, [D2]) if c.spec.id == export_id]
            key = "user_id" if table in ("ur", "cr_user") else "video_id"
            assert part[key].is_unique and len(part) == (cand[0].rows[table] if cand else len(part))
    want = d2 if release is not None and release["status"] == "released" else d1
    users = sorted(set(d1) & set(d2))[:12]
    got = joined(spark, cfg, export_id, training_rows(cfg, D3, users, users))
    for u, v in zip(got["user_id"], got["cr_user"]):
        np.testing.assert_array_equal(np.asarray(v, dtype=np.float32), want[int(u)])
    served = online(cfg, export_id, users)
    online_day = {u: ("d2" if np.array_equal(np.asarray(v, np.float32), d2[u]) else
                      "d1" if np.array_equal(np.asarray(v, np.float32), d1[u]) else "other")
                  for u, v in zip(served["user_id"], served["cr_user"])}
    assert len(set(online_day.values())) == 1 and "other" not in online_day.values(), online_day
    return release["status"] if release else "none"


def test_sigkill_at_each_phase_leaves_every_reader_on_one_complete_release(spark, world, tmp_path):
    """D2's materialize killed at each of its phases, then its refresh (write, audit, publish) at each of its
    phases, then the refresh run to the end: after every kill, training sets and the online store see one whole
    day. (A kill while the CR states are written is a kill inside a table write, like the embedding tables'.)"""
    from pipeline.daily import run_days

    cfg = lake_config(world, "killed")
    conf = write_conf(cfg, tmp_path / "lfm.yaml")
    out = tmp_path / "lfm.out"
    run_days(cfg, [D1], lambda: spark, model_version=world.model_a, cold_start=True)
    from lakehouse import candidates

    export_id = candidates.latest_per_export(cfg, [D1])[0].spec.id
    d1 = vectors(partition(cfg, "cr_user", D1, export_id), "user_id", "cr_user")
    run_days(cfg, [D2], lambda: spark, model_version=world.model_a)
    d2 = vectors(partition(cfg, "cr_user", D2, export_id), "user_id", "cr_user")
    seen = {}
    for phase in list(_phase_signals(cfg, export_id, out)):
        verb, probe = _phase_signals(cfg, export_id, out)[phase]  # baselines taken now, after the last kill
        killed, output = _run_and_kill(_lfm(conf, verb, world.model_a), out, probe)
        assert killed, f"the run ended before phase {phase!r}:\n{output}"
        seen[phase] = _readers_agree_on_one_release(spark, cfg, export_id, d1, d2)
    assert {seen[p] for p in seen if p.startswith("materialize")} == {"released"}, seen
    # a kill inside refresh leaves D2 withdrawn (its rewrite began) or released (not yet superseded)
    assert set(seen.values()) <= {"released", "withdrawn"}, seen
    done = cli("--config", str(conf), "refresh", "--ds", str(D2), "--model", world.model_a)
    assert done.code == 0, done.err
    assert _readers_agree_on_one_release(spark, cfg, export_id, d1, d2) == "released"
