"""An exclusive lock per (job, day), so two runs that replace the same day's partitions never interleave.

Delta's optimistic concurrency refuses a conflicting commit, but a job that writes several tables can then lose
some and win others; two such runs of one day may both fail and roll back (nothing published), or one may roll
back a table the other just published. Holding the day's lock for the whole job makes the second run fail at
once, before any work, with a message naming the holder.
On a local lakehouse the lock is `fcntl.flock` on `<lakehouse>/_locks/<job>-<ds>.lock`: the OS releases it when
its holder exits or is killed (SIGKILL included), so a crash never leaves a stale lock behind. On an object store
(whose machines share no file system) it is a lease, `<lakehouse>/_locks/<job>-<ds>.lease`, created with
`If-None-Match: *` and renewed while held (`lakehouse.leases`): a killed holder frees it when it expires. The lock
yields a fence whose `check()` a holder calls before it commits: a lease lost to another run refuses.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from lfm.config import LfmConfig
from lfm.errors import LfmError
from lfm.names import check_table_name, parse_ds
from lfm.storage import Location

if TYPE_CHECKING:
    from lakehouse.leases import Lease

log = logging.getLogger(__name__)


class DayBusy(LfmError):
    """Another run of the same job and day holds its lock."""


class Fence(Protocol):
    def check(self) -> None:
        """Raise unless the lock is still this holder's (called before a commit)."""


class HeldByTheOS:
    """A flock lasts exactly as long as its holder's process: nothing to check before a commit."""

    def check(self) -> None:
        return None


@contextmanager
def day_lock(cfg: LfmConfig, job: str, ds: str | dt.date, run_id: str) -> Iterator[Fence]:
    """Hold the (job, ds) lock for the block; raise `DayBusy` at once if another run holds it."""
    day, name = parse_ds(ds), check_table_name(job)  # both name the lock file: checked before any mkdir
    where = cfg.location(cfg.lakehouse)
    if not where.local:
        with _lease(cfg, where, f"{name}-{day.isoformat()}.lease", job, day, run_id) as lease:
            yield lease
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
        yield HeldByTheOS()  # closing the file releases the lock


@contextmanager
def _lease(cfg: LfmConfig, where: Location, key: str, job: str, day: dt.date, run_id: str) -> Iterator[Lease]:
    from lakehouse.leases import Lease, LeaseBusy, holder_text
    from lakehouse.objects import Objects

    lease = Lease(Objects(cfg, where.child("_locks")), key, holder_text(run_id), cfg.storage.lease_seconds)
    try:
        lease.acquire()
    except LeaseBusy as err:
        raise DayBusy(f"{job} of {day} is already running ({err})") from None
    try:
        yield lease
    finally:
        lease.release()


def _holder(fh) -> str:
    """Who holds the lock, as its holder wrote it (a holder that has just taken it gets a moment to write)."""
    for _ in range(20):
        fh.seek(0)
        text = fh.read().strip()
        if text:
            return text
        time.sleep(0.05)
    return "holder unknown"
