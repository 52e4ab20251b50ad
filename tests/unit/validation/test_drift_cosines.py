"""Drift's cosines (`validation.metrics._cosines`), computed in slices to bound the driver's memory: across slice
boundaries they are numpy's cosines of the whole, with the pairs whose D-1 vector is invalid left out."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from validation.metrics import _SLICE_ROWS, _cosines, _valid_mean


def test_cosines_in_slices_are_the_whole_days_cosines_without_invalid_pairs():
    rng = np.random.default_rng(5)
    n, dim = 2 * _SLICE_ROWS + 123, 8  # three slices, the last one short
    a = rng.normal(size=(n, dim)).astype(np.float32)
    b = (a + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)
    nan, zero, huge, null = (3, _SLICE_ROWS + 1), (7, 2 * _SLICE_ROWS + 5), 11, 13
    b[list(nan)] = np.nan
    b[list(zero)] = 0.0
    b[huge] *= 1e6  # norm beyond max_norm
    b_rows = b.tolist()
    b_rows[null][0] = None  # a null element reads as NaN
    pairs = pa.table({"a": pa.array(a.tolist(), pa.list_(pa.float32())),
                      "b": pa.array(b_rows, pa.list_(pa.float32()))})
    center = np.full(dim, 0.1)

    got = _cosines(pairs, dim, center, center, min_norm=0.0, max_norm=1e3)

    keep = np.ones(n, dtype=bool)
    keep[[*nan, *zero, huge, null]] = False
    ac, bc = a[keep].astype(np.float64) - center, b[keep].astype(np.float64) - center
    want = (ac * bc).sum(axis=1) / (np.linalg.norm(ac, axis=1) * np.linalg.norm(bc, axis=1))
    assert got.shape == (n - 6,)
    np.testing.assert_allclose(got, np.clip(want, -1.0, 1.0), rtol=1e-9)
    assert _cosines(pairs.slice(0, 0), dim, center, center, 0.0, 1e3).shape == (0,)

    # D-1 made by another version of a lineage: its side is centred by its own mean over the valid pairs
    own = _valid_mean(pairs.column("b"), dim, 0.0, 1e3)
    np.testing.assert_allclose(own, b[keep].astype(np.float64).mean(axis=0), rtol=1e-9)
    bo = b[keep].astype(np.float64) - own
    want_own = (ac * bo).sum(axis=1) / (np.linalg.norm(ac, axis=1) * np.linalg.norm(bo, axis=1))
    np.testing.assert_allclose(_cosines(pairs, dim, center, own, 0.0, 1e3), np.clip(want_own, -1.0, 1.0), rtol=1e-9)
