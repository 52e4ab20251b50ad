"""An exclusive lock per (job, day), so two runs that replace the same day's partitions never interleave.

Delta's optimistic concurrency refuses a conflicting commit, but a job that writes several tables can then lose
some and win others; two such runs of one day may both fail and roll back (nothing published), or one may roll
back a table the other just published. Holding the day's lock for the whole job makes the second run fail at
once, before any work, with a message naming the holder.
On a local lakehouse the lock is `fcntl.flock` on `<lakehouse>/_locks/<job>-<ds>.lock`: the OS releases it when
its holder exits or is killed (SIGKILL included), so a crash never leaves a stale lock behind. Object stores
(s3a://...) offer no such primitive; there the lock is a no-op and Delta's conflict detection is the guard.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from lfm.config import LfmConfig
from lfm.errors import LfmError
from lfm.names import check_table_name, parse_ds

log = logging.getLogger(__name__)


class DayBusy(LfmError):
    """Another run of the same job and day holds its lock."""


@contextmanager
def day_lock(cfg: LfmConfig, job: str, ds: str | dt.date, run_id: str) -> Iterator[None]:
    """Hold the (job, ds) lock for the block; raise `DayBusy` at once if another run holds it."""
    day, name = parse_ds(ds), check_table_name(job)  # both name the lock file: checked before any mkdir
    if "://" in cfg.lakehouse:
        log.debug("run_id=%s ds=%s no %s lock on an object-store lakehouse", run_id, day, job)
        yield
        return
    folder = cfg.resolve(cfg.lakehouse) / "_locks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{day.isoformat()}.lock"
    with path.open("a+") as fh:  # its own open file description: threads of one process exclude each other too
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fh)
            raise DayBusy(f"{job} of {day} is already running ({holder}): wait for it to finish, then rerun the "
                          "same command (finished steps are skipped)") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, run {run_id}, since "
                 f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M:%S} UTC")
        fh.flush()
        yield  # closing the file releases the lock


def _holder(fh) -> str:
    """Who holds the lock, as its holder wrote it (a holder that has just taken it gets a moment to write)."""
    for _ in range(20):
        fh.seek(0)
        text = fh.read().strip()
        if text:
            return text
        time.sleep(0.05)
    return "holder unknown"
