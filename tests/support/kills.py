"""SIGKILL at a chosen phase of an `lfm` command: the phase probes (read off the file system and the command's own
output only) and the kill, for the release tests' kill test."""
from __future__ import annotations

import sys
from pathlib import Path

from lfm.config import LfmConfig
from tests.support.worlds import D2

WRITING_ONLINE = "all four tables checked; writing the online store"  # materialize's log line (-v) before its write
POLL_S = 0.002  # the ANN index of a tiny day is staged for a few milliseconds: a slower poll misses it more often
KILL_ATTEMPTS = 3  # a run that ended before its phase (the poll missed that window) is run again, up to this often


def commits(table_dir: Path) -> int:
    return len(list((table_dir / "_delta_log").glob("*.json"))) if (table_dir / "_delta_log").is_dir() else 0


def _new_parquet(table_dir: Path, before: set) -> bool:
    return any(p not in before for p in table_dir.rglob("*.parquet") if "_delta_log" not in p.parts)


def _identity(path: Path) -> tuple[int, int] | None:
    """(inode, mtime) of a file, None when absent: a file swapped in anew never keeps both."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def phase_signals(cfg: LfmConfig, export_id: str, out: Path) -> dict:
    """For each phase, the verb that reaches it and a probe that turns true once the phase has begun."""
    lake = Path(cfg.lakehouse)
    ur_files = set(p for p in (lake / "ur").rglob("*.parquet"))
    counts = {t: commits(lake / t) for t in ("refresh_log", "gate_status")}
    ann = Path(cfg.feast.repo_path) / "data" / "ann" / export_id
    # A tiny day's index is staged in `.<ds>.*` for milliseconds; once swapped in, the command still runs (its
    # summary, Spark's stop) for a fraction of a second, so the probe also fires on the new index itself.
    index_meta = ann / str(D2) / "meta.json"
    saved = _identity(index_meta)

    def committed(table: str):
        return lambda: commits(lake / table) > counts[table]

    return {  # materialize first: D2 is released and online, so its reload reaches both phases
        "materialize: writing the online store": ("materialize", lambda: WRITING_ONLINE in out.read_text()),
        "materialize: saving the ANN index": ("materialize", lambda: ann.is_dir() and (any(
            p.name.startswith(f".{D2}") for p in ann.iterdir()) or _identity(index_meta) != saved)),
        "refresh: writing the embedding tables": ("refresh", lambda: _new_parquet(lake / "ur", ur_files)),
        "candidate recorded: the gate is running": ("refresh", committed("refresh_log")),
        # the candidate recorded before the last kill, audited by `lfm validate`: the same audit and publish as
        # refresh's, reached without recomputing the day
        "verdicts recorded: publish is next": ("validate", committed("gate_status")),
    }


def lfm_command(conf: Path, verb: str, model: str) -> list[str]:
    """`lfm refresh|validate|materialize --ds D2 --model MODEL` as its own process (refresh writes, gates and
    publishes; validate gates and publishes the newest candidate)."""
    return [sys.executable, "-m", "cli.main", "-v", "--config", str(conf), verb, "--ds", str(D2), "--model", model]


def run_and_kill(command: list[str], out: Path, probe, timeout: float = 900,
                 poll_s: float = POLL_S) -> tuple[bool, str]:
    """`command` in its own process group, SIGKILLed as soon as `probe()` is true (asked every `poll_s`);
    (killed, its output's tail)."""
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
            time.sleep(poll_s)
    finally:
        if proc.poll() is None and not killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    return killed, out.read_text()[-3000:]
