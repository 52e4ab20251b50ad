"""The Arrow/numpy kernels of the refresh: functions Spark runs inside its Python workers (`mapInArrow`).

They are module-level so Spark pickles them by reference, and free of Spark so they are tested on plain Arrow
batches. UR/IR: the frozen towers per row. CR, map side: per batch, one weighted partial sum per key of
exp(-(T_D - t_j)/tau) * CR_j (`inference.decay.sample_weights`); reduce side: per key, the partial sums and
yesterday's carried state summed in a fixed order (`ord`), then normalised (`inference.decay.normalise`).
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from inference import decay


def tower_batches(batches: Iterator[pa.RecordBatch], extractor, key: str, out: str,
                  side: str) -> Iterator[pa.RecordBatch]:
    """UR (side 'user') or IR ('item') per row: key, vector list<float>, finite flag."""
    fn = extractor.user_vectors if side == "user" else extractor.item_vectors
    for b in batches:
        if b.num_rows == 0:
            continue
        v = fn(b)
        yield pa.RecordBatch.from_arrays(
            [b.column(key), decay.matrix_to_list(v), pa.array(np.isfinite(v).all(axis=1))],
            names=[key, out, "__finite"])


def group_codes(keys: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Dense group codes (first-appearance order) and the unique keys, for any key type."""
    enc = pc.dictionary_encode(keys)
    return np.asarray(enc.indices.to_numpy(zero_copy_only=False), dtype=np.int64), enc.dictionary


def partial_sums(codes: np.ndarray, uniques: pa.Array, cr: np.ndarray, w: np.ndarray, t_ms: np.ndarray):
    """Per key of one batch: weighted CR sum (rows in batch order) and the latest event time."""
    perm = np.argsort(codes, kind="stable")
    c = codes[perm]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    sums = np.add.reduceat(cr[perm].astype(np.float64) * w[perm, None], starts, axis=0)
    last = np.maximum.reduceat(t_ms[perm], starts)
    return uniques.take(pa.array(c[starts])), sums, last


def cr_partial_batches(batches: Iterator[pa.RecordBatch], extractor, points: tuple[str, ...], ukey: str,
                       ikey: str, ukey_type: pa.DataType, ikey_type: pa.DataType, day_end_ms: int,
                       tau_hours: float) -> Iterator[pa.RecordBatch]:
    """Map side of CR: per Arrow batch and CR point, one weighted partial sum per user and per item.

    Rows: (ukey, null) for users, (null, ikey) for items; `ord` = partition << 32 | batch number fixes the
    reduce-side summation order. A refresh asks for one point; layer selection for all of them in one pass.
    """
    from pyspark import TaskContext

    ctx = TaskContext.get()
    part = ctx.partitionId() if ctx is not None else 0
    for i, b in enumerate(batches):
        if b.num_rows == 0:
            continue
        t_ms = np.asarray(b.column("__t_ms").to_numpy(zero_copy_only=False), dtype=np.int64)
        w = decay.sample_weights(t_ms, day_end_ms, tau_hours)
        order = (part << 32) | i
        groups = [group_codes(b.column(ukey)), group_codes(b.column(ikey))]
        for point in points:
            cr = extractor.cross_vectors(b, point)
            for side, (codes, uniques) in zip(("user", "item"), groups):
                keys, sums, last = partial_sums(codes, uniques, cr, w, t_ms)
                n = len(keys)
                yield pa.RecordBatch.from_arrays(
                    [pa.array([point] * n, pa.string()),
                     keys.cast(ukey_type) if side == "user" else pa.nulls(n, ukey_type),
                     keys.cast(ikey_type) if side == "item" else pa.nulls(n, ikey_type),
                     pa.array(np.full(n, order, np.int64)), pa.array(np.ones(n)), pa.array(last, pa.int64()),
                     decay.matrix_to_list(sums, pa.float64())],
                    names=["point", "ukey", "ikey", "ord", "scale", "t_last", "vec"])


def _by_point(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Split batches so each holds one CR point (points have different widths)."""
    for b in batches:
        if b.num_rows == 0:
            continue
        points = pc.unique(b.column("point"))
        if len(points) == 1:
            yield b
            continue
        for p in points:
            yield b.filter(pc.equal(b.column("point"), p))


def cr_reduce_batches(batches: Iterator[pa.RecordBatch], normalisation: str) -> Iterator[pa.RecordBatch]:
    """Reduce side of CR: per key, state = sum(scale * vec) in `ord` order; export = normalise(state)."""
    for b in _by_point(batches):
        parts = b.column("parts")
        offsets = np.asarray(parts.offsets, dtype=np.int64)
        inner = parts.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
        state = decay.segment_sum(offsets - offsets[0], decay.list_to_matrix(inner.field("vec")),
                                  scale=inner.field("scale").to_numpy(zero_copy_only=False),
                                  order=inner.field("ord").to_numpy(zero_copy_only=False))
        out = decay.normalise(state, normalisation)
        finite = np.isfinite(state).all(axis=1) & np.isfinite(out).all(axis=1)
        yield pa.RecordBatch.from_arrays(
            [b.column("point"), b.column("ukey"), b.column("ikey"), decay.matrix_to_list(state, pa.float64()),
             decay.matrix_to_list(out), b.column("t_last"), pa.array(finite)],
            names=["point", "ukey", "ikey", "state", "cr", "t_last", "__finite"])
