"""Leases on a real S3-API server (SeaweedFS): one holder across processes, a dead holder's lease expires, and a
holder paused past its expiry (SIGSTOP) cannot commit when it wakes up."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from lakehouse.leases import Lease, LeaseBusy, LeaseLost
from lakehouse.objects import Objects
from lfm.storage import location
from tests.support.config import REPO, make_config

SECONDS = 3.0  # the lease time of these tests (storage.lease_seconds): short, so expiry is quick to reach


@pytest.fixture
def s3_cfg(s3_server, tmp_path, monkeypatch):
    """A config whose lakehouse is a fresh prefix of the server's bucket; credentials only in the environment."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    storage = {"endpoint": s3_server.endpoint_url, "allow_http": True, "lease_seconds": SECONDS}
    return make_config(tmp_path, lakehouse=s3_server.uri(f"lfm-{tmp_path.name}"), storage=storage)


def objects(cfg) -> Objects:
    return Objects(cfg, location(cfg.lakehouse).child("_locks"))


HOLDER = textwrap.dedent("""
    import sys
    from lakehouse.leases import Lease, LeaseLost
    from lakehouse.objects import Objects
    from lfm.config import config_from_dict
    from lfm.storage import location
    lakehouse, endpoint = sys.argv[1], sys.argv[2]
    cfg = config_from_dict({"lakehouse": lakehouse, "storage": {"endpoint": endpoint, "allow_http": True,
                           "lease_seconds": 3}}, "<holder>", ".")
    lease = Lease(Objects(cfg, location(lakehouse).child("_locks")), "day.lease", "the holder process", 3).acquire()
    print("held", flush=True)
    sys.stdin.readline()  # the test pauses us here (SIGSTOP), then lets us go on
    try:
        lease.check()
        print("committed", flush=True)
    except LeaseLost as err:
        print(f"refused: {err}", flush=True)
""")


def start_holder(cfg, s3_server) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, cfg.lakehouse, s3_server.endpoint_url], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc


def test_one_holder_at_a_time_and_the_busy_message_names_it(s3_cfg):
    store = objects(s3_cfg)
    with Lease(store, "day.lease", "run A", SECONDS) as first:
        with pytest.raises(LeaseBusy, match="held by run A"):
            Lease(store, "day.lease", "run B", SECONDS).acquire()
        time.sleep(SECONDS * 1.2)  # past the first expiry: the renewals keep it
        with pytest.raises(LeaseBusy, match="held by run A"):
            Lease(store, "day.lease", "run B", SECONDS).acquire()
        first.check()
    with Lease(store, "day.lease", "run B", SECONDS) as second:  # released: free at once
        second.check()
    assert store.read("day.lease") is None


def test_racing_contenders_one_wins(s3_cfg):
    store = objects(s3_cfg)
    won, busy = [], []
    barrier = threading.Barrier(6)

    def contend(i: int) -> None:
        barrier.wait()
        try:
            won.append(Lease(store, "race.lease", f"run {i}", SECONDS).acquire())
        except LeaseBusy:
            busy.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(won) == 1 and len(busy) == 5
    won[0].release()


def test_a_killed_holder_blocks_only_until_its_lease_expires(s3_cfg, s3_server):
    holder = start_holder(s3_cfg, s3_server)
    holder.kill()  # SIGKILL: no release, no renewal
    holder.wait(30)
    store = objects(s3_cfg)
    with pytest.raises(LeaseBusy, match="held by the holder process"):
        Lease(store, "day.lease", "the next run", SECONDS).acquire()
    time.sleep(SECONDS + 0.5)
    with Lease(store, "day.lease", "the next run", SECONDS) as lease:
        lease.check()


def test_a_holder_paused_past_its_expiry_cannot_commit_when_it_wakes(s3_cfg, s3_server):
    holder = start_holder(s3_cfg, s3_server)
    os.kill(holder.pid, signal.SIGSTOP)  # a long GC pause, a suspended VM: no renewals
    try:
        time.sleep(SECONDS + 0.5)
        taker = Lease(objects(s3_cfg), "day.lease", "the next run", SECONDS).acquire()  # takes the expired lease
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    out, err = holder.communicate("go\n", timeout=60)
    assert out.startswith("refused:") and "taken over" in out, (out, err)
    taker.check()  # the new holder's fence holds
    taker.release()


def test_the_day_lock_on_an_object_store_lakehouse_is_a_lease(s3_cfg):
    from lakehouse.locks import DayBusy, day_lock

    with day_lock(s3_cfg, "daily", "2022-05-02", "run-one") as fence:
        with pytest.raises(DayBusy, match="daily of 2022-05-02 is already running .*run run-one"):
            with day_lock(s3_cfg, "daily", "2022-05-02", "run-two"):
                pass
        with day_lock(s3_cfg, "daily", "2022-05-03", "run-two") as other_day:  # another day: its own lease
            other_day.check()
        fence.check()
    with day_lock(s3_cfg, "daily", "2022-05-02", "run-two") as fence:  # released at the end of the block
        fence.check()
