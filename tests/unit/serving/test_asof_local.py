"""The driver-side as-of lookup (serving.asof_local) against the rule written out in plain Python.

The Spark-vs-local agreement on real Delta tables is in test_feast_serving.py; this covers the edge cases of the
lookup itself: null keys and times, keys without snapshots, no snapshots at all, the TTL bound, a row exactly at
a snapshot's time, and keys of different integer types.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from serving.asof_local import asof_take

T0 = dt.datetime(2022, 5, 5, 16, tzinfo=dt.timezone.utc)
TS = pa.timestamp("us", tz="UTC")


def reference(row_keys, row_times, snap_keys, snap_times, snap_values, ttl_seconds):
    out = []
    for k, t in zip(row_keys, row_times):
        if k is None or t is None:
            out.append(None)
            continue
        ok = [(st, v) for sk, st, v in zip(snap_keys, snap_times, snap_values)
              if sk == k and st <= t and (not ttl_seconds or st >= t - dt.timedelta(seconds=ttl_seconds))]
        out.append(max(ok, key=lambda x: x[0])[1] if ok else None)
    return out


def arrays(row_keys, row_times, snap_keys, snap_times, snap_values, key_type=pa.int64()):
    return (pa.chunked_array([pa.array(row_keys, key_type)]), pa.chunked_array([pa.array(row_times, TS)]),
            pa.chunked_array([pa.array(snap_keys, pa.int64())]), pa.chunked_array([pa.array(snap_times, TS)]),
            pa.chunked_array([pa.array(snap_values, pa.list_(pa.float32()))]))


@pytest.mark.parametrize("ttl_days", [0, 2])
def test_matches_the_rule_on_random_rows(ttl_days):
    rng = np.random.default_rng(ttl_days)
    days = [T0 + dt.timedelta(days=i) for i in range(5)]
    snaps = [(int(k), d) for d in days for k in rng.choice(30, 20, replace=False)]  # not every key every day
    snap_values = [[float(i), float(k)] for i, (k, _) in enumerate(snaps)]
    row_keys = [None if i % 37 == 0 else int(k) for i, k in enumerate(rng.integers(0, 35, 500))]  # 30..34 unknown
    row_times = [None if i % 53 == 0 else T0 + dt.timedelta(minutes=int(m))
                 for i, m in enumerate(rng.integers(-24 * 60, 7 * 24 * 60, 500))]
    row_times[1] = days[2]  # exactly at a snapshot time: that snapshot counts
    want = reference(row_keys, row_times, [k for k, _ in snaps], [d for _, d in snaps], snap_values, ttl_days * 86400)
    got = asof_take(*arrays(row_keys, row_times, [k for k, _ in snaps], [d for _, d in snaps], snap_values),
                    ttl_seconds=ttl_days * 86400).to_pylist()
    assert got == want
    assert sum(v is None for v in got) > 0 and sum(v is not None for v in got) > 0


def test_no_snapshots_gives_nulls_and_int32_rows_match_int64_snapshots():
    got = asof_take(*arrays([1, 2], [T0, T0], [], [], []), ttl_seconds=0)
    assert got.to_pylist() == [None, None]
    got = asof_take(*arrays([1, 2], [T0, T0], [2], [T0 - dt.timedelta(hours=1)], [[1.0]], key_type=pa.int32()),
                    ttl_seconds=0)
    assert got.to_pylist() == [None, [1.0]]


def test_a_snapshot_after_the_row_is_never_taken():
    later = T0 + dt.timedelta(microseconds=1)
    got = asof_take(*arrays([7], [T0], [7, 7], [T0 - dt.timedelta(days=1), later], [[1.0], [2.0]]), ttl_seconds=0)
    assert got.to_pylist() == [[1.0]]
