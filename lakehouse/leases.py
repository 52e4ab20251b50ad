"""Leases on the object store: one holder at a time for a day, an export or a table, across machines.

A lease is an object created with `If-None-Match: *` (so two contenders cannot both create it) that names its
holder and an expiry. The holder renews it every third of `storage.lease_seconds` with `If-Match` on the ETag it
wrote last; a holder that died stops renewing and, once the expiry has passed, the next contender takes the lease
over with `If-Match` on the expired object's ETag (again only one can). Before each commit the holder checks
its fence (`Lease.check`): the stored lease is still the one it wrote and at least a third of its time is left,
so a holder that was paused past its expiry (a long GC, a suspended VM) and whose lease was taken over cannot
commit when it wakes up. The margin assumes clocks that agree to well within a third of a lease.
"""
from __future__ import annotations

import json
import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from lakehouse.objects import ObjectChanged, ObjectExists, Objects, ObjectStoreError
from lfm.errors import LfmError


log = logging.getLogger(__name__)


class LeaseBusy(LfmError):
    """Another live holder has the lease."""


class LeaseLost(LfmError):
    """The lease expired or was taken over: the holder must not commit."""


@dataclass(frozen=True)
class LeaseBody:
    """What a lease object holds: who, a token unique to this acquisition, and until when (epoch seconds)."""

    holder: str
    token: str
    expires: float

    def encode(self) -> bytes:
        return json.dumps({"holder": self.holder, "token": self.token, "expires": self.expires}).encode()

    @classmethod
    def decode(cls, data: bytes) -> "LeaseBody":
        try:
            d = json.loads(data)
            return cls(str(d["holder"]), str(d["token"]), float(d["expires"]))
        except (ValueError, KeyError, TypeError):
            return cls("an unreadable lease", "", 0.0)  # expired: anyone may take it over


def holder_text(run_id: str) -> str:
    return f"run {run_id}, pid {os.getpid()} on {socket.gethostname()}"


class Lease:
    """One acquisition of the lease `key` under `objects`; a context manager that renews it while held."""

    def __init__(self, objects: Objects, key: str, holder: str, seconds: float) -> None:
        self.objects, self.key, self.holder, self.seconds = objects, key, holder, seconds
        self.token = uuid.uuid4().hex
        self.etag = ""
        self.expires = 0.0
        self.lost: str | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._lock = threading.Lock()

    def _body(self) -> tuple[bytes, float]:
        expires = time.time() + self.seconds
        return LeaseBody(self.holder, self.token, expires).encode(), expires

    def acquire(self) -> "Lease":
        """Take the lease, or raise `LeaseBusy` naming its live holder."""
        data, expires = self._body()
        try:
            self.etag = self.objects.create(self.key, data)
        except ObjectExists:
            self.etag = self._take_over(data)
        self.expires = expires
        self._renewer = threading.Thread(target=self._renew_loop, daemon=True, name=f"lease {self.key}")
        self._renewer.start()
        return self

    def _take_over(self, data: bytes) -> str:
        stored = self.objects.read(self.key)
        if stored is None:  # released in between: create it again (one contender wins)
            try:
                return self.objects.create(self.key, data)
            except ObjectExists:
                stored = self.objects.read(self.key)
        if stored is not None:
            other = LeaseBody.decode(stored.data)
            if other.expires > time.time():
                raise LeaseBusy(f"{self.key} is held by {other.holder} until "
                                f"{time.strftime('%H:%M:%S', time.gmtime(other.expires))} UTC: wait for it to "
                                "finish (a holder that died frees it at that time), then rerun")
            try:
                return self.objects.replace(self.key, data, stored.etag)
            except ObjectChanged:
                pass
        raise LeaseBusy(f"{self.key} was taken by another run at the same moment: rerun later")

    def renew(self) -> None:
        """Extend the lease (`If-Match` on our last ETag); a refusal means it was taken over: lost for good."""
        with self._lock:
            if self.lost:
                return
            data, expires = self._body()
            try:
                self.etag = self.objects.replace(self.key, data, self.etag)
                self.expires = expires
            except ObjectChanged:
                self.lost = f"{self.key} was taken over by another run"
            except ObjectStoreError as err:  # unreachable for now: the expiry decides; check() refuses near it
                self.lost = None if time.time() < self.expires else f"{self.key} expired: {err}"

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            self.renew()

    def check(self) -> None:
        """The fence before a commit: raise `LeaseLost` unless the stored lease is ours with a third of it left."""
        with self._lock:
            if self.lost:
                raise LeaseLost(f"{self.lost}: this run must not commit; rerun it")
            left = self.expires - time.time()
            stored = self.objects.read(self.key)
            if stored is None or stored.etag != self.etag or LeaseBody.decode(stored.data).token != self.token:
                self.lost = f"{self.key} was taken over by another run"
                raise LeaseLost(f"{self.lost}: this run must not commit; rerun it")
            if left < self.seconds / 3:
                raise LeaseLost(f"{self.key} has {max(left, 0):.0f}s left of {self.seconds:.0f}s (its renewals "
                                "stalled): this run must not commit; rerun it")

    def release(self) -> None:
        """Stop renewing and delete the lease if it is still ours (a lost one is left to its new holder)."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        with self._lock:
            stored = self.objects.read(self.key)
            if stored is not None and stored.etag == self.etag:
                self.objects.delete(self.key)

    def __enter__(self) -> "Lease":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


@contextmanager
def waiting_for(objects: Objects, key: str, holder: str, seconds: float, wait_seconds: float,
                what: str) -> Iterator[Lease]:
    """Hold the lease `key` for the block, waiting up to `wait_seconds` while another holder has it (a holder that
    died frees it at its expiry); yields it as the fence to check before each commit. `what` names the thing the
    lease guards in the message of a wait that ran out."""
    deadline, pause, waited = time.monotonic() + wait_seconds, 0.1, False
    while True:
        lease = Lease(objects, key, holder, seconds)
        try:
            lease.acquire()
            break
        except LeaseBusy as err:
            if time.monotonic() >= deadline:
                raise LeaseBusy(f"{what} stayed busy for {wait_seconds:.0f}s: {err}") from None
            if not waited:
                log.info("%s is busy; waiting (%s)", what, err)
                waited = True
        time.sleep(pause * random.uniform(0.5, 1.5))  # jittered: two waiting drivers do not poll in step
        pause = min(pause * 2, 1.0)
    try:
        yield lease
    finally:
        try:
            lease.release()
        except ObjectStoreError as err:  # what was committed stands; the lease frees itself at its expiry
            log.warning("releasing %s failed (it expires by itself): %s", key, err)
