"""The release check run in Spark before Redis is written (`serving.online_spark.audit_frame`): every fault
materialize refuses is counted (NaN, infinities and null elements one by one, whatever else the row holds), a
healthy frame counts nothing, and `Audit.problems` turns the counts into the refusal. The Redis write kernel is
pinned against Feast's reader in test_online_layout.py; the refusal end to end in test_feast_serving.py."""
from __future__ import annotations

import datetime as dt

import numpy as np

from serving.online_spark import Audit, audit_frame

END = dt.datetime(2022, 5, 5, 16, tzinfo=dt.timezone.utc)
END_US = int(END.timestamp() * 1_000_000)


def audit(spark, rows: list[tuple], dim: int = 3) -> Audit:
    df = spark.createDataFrame(rows, "key bigint, vector array<float>, event_timestamp timestamp")
    return audit_frame(df, "ur", dim)


def test_a_healthy_release_counts_nothing(spark):
    a = audit(spark, [(1, [0.1, 0.2, 0.3], END), (2, [1.0, 2.0, 3.0], END), (3, [0.0, -3e38, 3e38], END)])
    assert (a.rows, a.null_keys, a.null_vectors, a.bad_width, a.nonfinite) == (3, 0, 0, 0, 0)
    assert a.min_ts == a.max_ts == END_US and a.problems(3, END_US) == []


def test_every_fault_is_counted_and_named(spark):
    other = END + dt.timedelta(days=1)
    nan, inf = float("nan"), float("inf")
    a = audit(spark, [(1, [0.1, nan, 0.3], END), (None, [1.0, 2.0, 3.0], END), (3, None, END), (4, [1.0, 2.0], other),
                      (5, [1.0, None, inf], END), (6, [-inf, nan, None], END), (7, [None, 1.0, 2.0], END)])
    assert (a.rows, a.null_keys, a.null_vectors, a.bad_width, a.nonfinite) == (7, 1, 1, 1, 7)
    problems = "; ".join(a.problems(3, END_US))
    for part in ("1 null vectors / 1 null keys", "1 vectors whose width is not the export's 3",
                 "7 NaN or infinite values", "snapshot times from 2022-05-05T16:00:00+00:00 to 2022-05-06"):
        assert part in problems
    empty = Audit("ur", 0, 0, 0, 0, 0, None, None)
    assert empty.problems(3, END_US) == ["no rows"]


def test_the_counts_agree_with_numpy_on_random_faults(spark):
    rng = np.random.default_rng(5)
    mat = rng.normal(size=(500, 8)).astype(np.float32)
    faults = rng.random(mat.shape) < 0.01
    mat[faults] = rng.choice(np.array([np.nan, np.inf, -np.inf], np.float32), size=int(faults.sum()))
    holes = (rng.random(mat.shape) < 0.005) & ~faults
    rows = [(i, [None if holes[i, j] else float(mat[i, j]) for j in range(8)], END) for i in range(len(mat))]
    a = audit(spark, rows, dim=8)
    assert a.nonfinite == int(faults.sum() + holes.sum()) > 0
    assert (a.rows, a.null_keys, a.null_vectors, a.bad_width) == (500, 0, 0, 0)
