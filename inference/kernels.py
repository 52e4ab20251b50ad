"""The Arrow/numpy kernels of the refresh: functions Spark runs inside its Python workers (`mapInArrow`).

They are module-level so Spark pickles them by reference, and free of Spark so they are tested on plain Arrow
batches. UR/IR: the frozen towers per row. CR, map side: the weighted sum per key of exp(-(T_D - t_j)/tau) * CR_j
(`inference.decay.sample_weights`) over a task's whole partition (`KeySums`), so the shuffle carries about one row
per key and task instead of one per key and Arrow batch (at 1M users, 5M samples a day: ~1.3M rows of 64 doubles
instead of ~7M); reduce side: per key, those sums and yesterday's carried state summed in a fixed order (`ord`),
then normalised (`inference.decay.normalise`).
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


def partial_sums(codes: np.ndarray, uniques: pa.Array, cr: np.ndarray, w: np.ndarray | None, t_ms: np.ndarray):
    """Per key: the (weighted) sum of its rows in row order, float64, and the latest event time."""
    perm = np.argsort(codes, kind="stable")
    c = codes[perm]
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    rows = cr[perm].astype(np.float64)
    if w is not None:
        rows *= w[perm, None]
    sums = np.add.reduceat(rows, starts, axis=0)
    last = np.maximum.reduceat(t_ms[perm], starts)
    return uniques.take(pa.array(c[starts])), sums, last


Sums = tuple[pa.Array, np.ndarray, np.ndarray]  # keys, (k, d) float64 sums, (k,) latest event time (ms)


class KeySums:
    """Sums and latest times per key over one task's batches, summed in arrival order.

    Unsorted input: held rows are compacted (summed per key) once the rows added since reach the rows held (at least
    `min_rows`), so each row is re-summed O(log n) times and memory stays near one row per key. Input sorted by key
    (`sorted_keys`): every key but the batch's last one is complete, so `add` hands those back at once and holds one
    row. Compaction points depend only on row counts, so a rerun over the same partition gives the same bits.
    """

    def __init__(self, sorted_keys: bool = False, min_rows: int = 50_000) -> None:
        self.sorted_keys, self.min_rows = sorted_keys, min_rows
        self.parts: list[Sums] = []
        self.held = self.pending = 0

    def add(self, part: Sums) -> Sums | None:
        """Take one batch's sums; returns the keys now complete (sorted input), else None."""
        self.parts.append(part)
        self.pending += len(part[0])
        if self.sorted_keys:
            keys, sums, last = self._compact()
            n = len(keys) - 1  # the last key may continue in the next batch
            self.parts, self.held, self.pending = [(keys.slice(n), sums[n:], last[n:])], 1, 0
            return (keys.slice(0, n), sums[:n], last[:n]) if n else None
        if self.pending >= max(self.held, self.min_rows):
            self.parts = [self._compact()]
            self.held, self.pending = len(self.parts[0][0]), 0
        return None

    def drain(self) -> Sums | None:
        """Everything still held, one row per key."""
        return self._compact() if self.parts else None

    def _compact(self) -> Sums:
        if len(self.parts) == 1:
            return self.parts[0]
        keys = pa.concat_arrays([k for k, _, _ in self.parts])
        codes, uniques = group_codes(keys)
        return partial_sums(codes, uniques, np.concatenate([s for _, s, _ in self.parts]), None,
                            np.concatenate([t for _, _, t in self.parts]))


def cr_partial_batches(batches: Iterator[pa.RecordBatch], extractor, points: tuple[str, ...], ukey: str,
                       ikey: str, ukey_type: pa.DataType, ikey_type: pa.DataType, day_end_ms: int,
                       tau_hours: float, sorted_by_user: bool = False,
                       out_rows: int = 100_000) -> Iterator[pa.RecordBatch]:
    """Map side of CR: per task and CR point, one weighted sum per user and per item over the whole partition.

    Rows: (ukey, null) for users, (null, ikey) for items; `ord` = partition << 32 | piece number fixes the
    reduce-side summation order. `sorted_by_user`: the partition is sorted by user key, so users are handed on as
    soon as they are complete. A refresh asks for one point; layer selection for all of them in one pass.
    """
    from pyspark import TaskContext

    ctx = TaskContext.get()
    part = ctx.partitionId() if ctx is not None else 0
    sums = {(p, side): KeySums(sorted_keys=sorted_by_user and side == "user") for p in points
            for side in ("user", "item")}
    piece = 0

    def emit(point: str, side: str, found: Sums) -> Iterator[pa.RecordBatch]:
        nonlocal piece
        keys, vec, last = found
        for start in range(0, len(keys), out_rows):
            n = min(out_rows, len(keys) - start)
            k = keys.slice(start, n)
            yield pa.RecordBatch.from_arrays(
                [pa.array([point] * n, pa.string()),
                 k.cast(ukey_type) if side == "user" else pa.nulls(n, ukey_type),
                 k.cast(ikey_type) if side == "item" else pa.nulls(n, ikey_type),
                 pa.array(np.full(n, (part << 32) | piece, np.int64)), pa.array(np.ones(n)),
                 pa.array(last[start:start + n], pa.int64()),
                 decay.matrix_to_list(vec[start:start + n], pa.float64())],
                names=["point", "ukey", "ikey", "ord", "scale", "t_last", "vec"])
            piece += 1

    for b in batches:
        if b.num_rows == 0:
            continue
        t_ms = np.asarray(b.column("__t_ms").to_numpy(zero_copy_only=False), dtype=np.int64)
        w = decay.sample_weights(t_ms, day_end_ms, tau_hours)
        groups = {"user": group_codes(b.column(ukey)), "item": group_codes(b.column(ikey))}
        for point in points:
            cr = extractor.cross_vectors(b, point)  # (n, width) float32
            for side, (codes, uniques) in groups.items():
                done = sums[(point, side)].add(partial_sums(codes, uniques, cr, w, t_ms))
                if done is not None:
                    yield from emit(point, side, done)
    for (point, side), acc in sums.items():
        rest = acc.drain()
        if rest is not None:
            yield from emit(point, side, rest)


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
