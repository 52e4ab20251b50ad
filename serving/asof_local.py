"""The point-in-time rule on Arrow arrays, for training sets that come back to the driver whole.

The rule is the Spark join's (`serving.offline`): per entity row, the snapshot of its key with the greatest
event_timestamp <= the row's time and >= the row's time - TTL; none (unknown key, no snapshot yet, only stale
ones, a null key or time) -> null. For a training set of up to a few million rows the Spark join's fixed costs
(a shuffle per view to group the snapshots by key, then a broadcast) dominate: measured 5 of its 8.6 s on 50k
rows x 4 views. Here Spark only reads the pruned snapshots (the edge where it does the work) and numpy does the
lookup: the snapshots sorted once by (key, time), each row a binary search.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

MICROS = pa.timestamp("us", tz="UTC")


def _micros(times: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Timestamps as int64 microseconds since the epoch, UTC (naive times are UTC, as in the Spark session);
    a null time reads 0 (the caller masks it)."""
    if times.type.tz is None:
        times = pc.assume_timezone(times, "UTC")
    return pc.fill_null(pc.cast(pc.cast(times, MICROS), pa.int64()), 0).to_numpy(zero_copy_only=False)


def _key_codes(row_keys: pa.ChunkedArray, snap_keys: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Dense int codes for the keys of both sides (-1 for a null key): equal keys, equal codes."""
    if row_keys.type != snap_keys.type:  # e.g. int32 rows against int64 snapshots: compare as strings
        row_keys, snap_keys = pc.cast(row_keys, pa.string()), pc.cast(snap_keys, pa.string())
    both = pa.chunked_array(row_keys.chunks + snap_keys.chunks, type=row_keys.type)
    codes = pc.fill_null(pc.dictionary_encode(both).combine_chunks().indices, -1)
    codes = codes.to_numpy(zero_copy_only=False).astype(np.int64)
    return codes[:len(row_keys)], codes[len(row_keys):]


def asof_take(row_keys: pa.ChunkedArray, row_times: pa.ChunkedArray, snap_keys: pa.ChunkedArray,
              snap_times: pa.ChunkedArray, snap_values: pa.ChunkedArray, ttl_seconds: int) -> pa.ChunkedArray:
    """For each row, the value of the newest snapshot of its key not after the row's time (within the TTL)."""
    if len(snap_keys) == 0:
        return pa.chunked_array([pa.nulls(len(row_keys), snap_values.type)])
    row_code, snap_code = _key_codes(row_keys, snap_keys)
    row_t, snap_t = _micros(row_times), _micros(snap_times)
    row_null_t = row_times.is_null().to_numpy(zero_copy_only=False)
    # One sortable int per (key, time): the key's code, then the time's rank among every time on both sides.
    ranks = np.unique(np.concatenate([row_t, snap_t]), return_inverse=True)
    n_times, time_rank = len(ranks[0]), ranks[1]
    if (max(row_code.max(initial=0), snap_code.max(initial=0)) + 1) * n_times >= 2 ** 62:
        raise OverflowError("too many keys x times for the local as-of join; use the Spark join")
    row_comp = row_code * n_times + time_rank[:len(row_t)]
    snap_comp = snap_code * n_times + time_rank[len(row_t):]
    order = np.argsort(snap_comp, kind="stable")
    pos = np.searchsorted(snap_comp[order], row_comp, side="right") - 1  # newest snapshot at or before the row
    chosen = order[np.maximum(pos, 0)]
    hit = (pos >= 0) & (snap_code[chosen] == row_code) & (row_code >= 0) & ~row_null_t
    if ttl_seconds:
        hit &= snap_t[chosen] >= row_t - ttl_seconds * 1_000_000
    return snap_values.take(pa.array(chosen, mask=~hit))
