"""The release check that Spark tasks run before Redis is written (serving.online_spark.audit_batches), on plain
Arrow batches: every fault materialize refuses is counted, a healthy batch counts nothing, and `Audit.problems`
turns the counts into the refusal. The Redis write kernel is pinned against Feast's reader in
tests/integration/serving/test_online_layout.py."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from serving.online_spark import Audit, audit_batches

END = dt.datetime(2022, 5, 5, 16, tzinfo=dt.timezone.utc)
END_US = int(END.timestamp() * 1_000_000)
TS = pa.timestamp("us", tz="UTC")


def batch(keys, vectors, times) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(keys, pa.int64()), pa.array(vectors, pa.list_(pa.float32())),
                                       pa.array(times, TS)], names=["key", "vector", "event_timestamp"])


def audit(*batches, dim=3) -> Audit:
    rows = [r for out in audit_batches(iter(batches), dim) for r in out.to_pylist()]
    total = {k: sum(r[k] for r in rows) for k in ("rows", "null_keys", "null_vectors", "bad_width", "nonfinite")}
    return Audit("ur", **total, min_ts=min(r["min_ts"] for r in rows), max_ts=max(r["max_ts"] for r in rows))


def test_a_healthy_release_counts_nothing():
    a = audit(batch([1, 2], [[0.1, 0.2, 0.3], [1, 2, 3]], [END, END]), batch([3], [[0, 0, 1]], [END]))
    assert (a.rows, a.null_keys, a.null_vectors, a.bad_width, a.nonfinite) == (3, 0, 0, 0, 0)
    assert a.min_ts == a.max_ts == END_US and a.problems(3, END_US) == []


def test_every_fault_is_counted_and_named():
    other = END + dt.timedelta(days=1)
    a = audit(batch([1, None, 3, 4, 5], [[0.1, np.nan, 0.3], [1, 2, 3], None, [1, 2], [1, None, np.inf]],
                    [END, END, END, other, END]))
    assert (a.rows, a.null_keys, a.null_vectors, a.bad_width, a.nonfinite) == (5, 1, 1, 1, 3)
    problems = "; ".join(a.problems(3, END_US))
    for part in ("1 null vectors / 1 null keys", "1 vectors whose width is not the export's 3",
                 "3 NaN or infinite values", "snapshot times from 2022-05-05T16:00:00+00:00 to 2022-05-06"):
        assert part in problems
    empty = Audit("ur", 0, 0, 0, 0, 0, None, None)
    assert empty.problems(3, END_US) == ["no rows"]
