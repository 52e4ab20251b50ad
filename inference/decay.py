"""Time-interval decaying aggregation of per-sample CR into per-key state (docs/domain.md section 2).

The chain, per key k (a user or an item), with T_D the end of day D (`lfm.contract.day_end`):

    S_D(k) = exp(-(T_D - T_{D-1}) / tau) * S_{D-1}(k)  +  sum_j exp(-(T_D - t_j) / tau) * CR_j

over the day's samples j of key k (t_j < T_D). The state S_D is expressed *at* T_D, so carrying it to the next
day needs only the two day ends, never the events again. The exported CR(k) is `normalise(S_D(k))`.

Everything here is plain numpy on arrays (no Spark): the Spark job calls these functions inside its Arrow
workers, and the tests check them against hand-computed values. Sums are taken in a fixed order (the caller's
`order` column) so that a rerun gives bit-identical state, whatever order Spark's shuffle delivers rows in.
"""
from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from lfm.names import BadInput

MS_PER_HOUR = 3_600_000
LAYERNORM_EPS = 1e-5  # as torch.nn.LayerNorm, which the reference code applies without affine parameters
L2_EPS = 1e-12


class FutureEvent(BadInput):
    """A sample at or after the end of the day being aggregated: it would leak the future into the state."""


def decay_factor(elapsed_ms: np.ndarray | float, tau_hours: float) -> np.ndarray | float:
    """exp(-elapsed / tau): the weight of something `elapsed_ms` before the reference time."""
    if tau_hours <= 0:
        raise BadInput(f"tau_hours must be positive, got {tau_hours}")
    return np.exp(-np.asarray(elapsed_ms, dtype=np.float64) / (tau_hours * MS_PER_HOUR))


def sample_weights(t_ms: np.ndarray, day_end_ms_: int, tau_hours: float) -> np.ndarray:
    """Per-sample weights exp(-(T_D - t_j)/tau); a sample at or after T_D is refused (point-in-time)."""
    t = np.asarray(t_ms, dtype=np.int64)
    if t.size and int(t.max()) >= day_end_ms_:
        raise FutureEvent(f"{int((t >= day_end_ms_).sum())} sample(s) at or after the day end "
                          f"{dt.datetime.fromtimestamp(day_end_ms_ / 1000, dt.timezone.utc).isoformat()}: "
                          "day D's state must not read events after D")
    return decay_factor(day_end_ms_ - t, tau_hours)


def carry_factor(prev_day_end_ms: int, day_end_ms_: int, tau_hours: float) -> float:
    """exp(-(T_D - T_{D-1})/tau): how much of yesterday's state survives to the end of today."""
    if day_end_ms_ < prev_day_end_ms:
        raise BadInput("the previous state is newer than the day being computed; refresh days in order")
    return float(decay_factor(day_end_ms_ - prev_day_end_ms, tau_hours))


def group_sum(keys: np.ndarray, vectors: np.ndarray, weights: np.ndarray | None = None,
              order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sum `weights * vectors` per key; returns (unique keys ascending, sums float64 (k, d)).

    `order` (one int per row) fixes the summation order inside each key, so floating-point sums do not depend
    on how rows arrived. Without it rows are summed in the order given.
    """
    keys = np.asarray(keys)
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] != keys.shape[0]:
        raise ValueError(f"vectors must be (n, d) with n = len(keys); got {v.shape} for {keys.shape[0]} keys")
    if weights is not None:
        v = v * np.asarray(weights, dtype=np.float64)[:, None]
    if keys.shape[0] == 0:
        return keys[:0], np.zeros((0, v.shape[1]))
    perm = np.lexsort((np.asarray(order),  keys)) if order is not None else np.argsort(keys, kind="stable")
    k_sorted = keys[perm]
    starts = np.flatnonzero(np.r_[True, k_sorted[1:] != k_sorted[:-1]])
    return k_sorted[starts], np.add.reduceat(v[perm], starts, axis=0)


def segment_sum(offsets: np.ndarray, vectors: np.ndarray, scale: np.ndarray | None = None,
                order: np.ndarray | None = None) -> np.ndarray:
    """Sum consecutive row segments [offsets[i], offsets[i+1]) of `vectors`, each scaled by `scale`.

    This is the reduce side of the Spark job: one segment per key holds yesterday's carried state and the
    day's partial sums; `order` fixes the summation order inside each segment. Every segment must be non-empty.
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    v = np.asarray(vectors, dtype=np.float64)
    n_seg = offsets.shape[0] - 1
    if n_seg <= 0:
        return np.zeros((0, v.shape[1] if v.ndim == 2 else 0))
    if np.any(np.diff(offsets) <= 0):
        raise ValueError("every segment must hold at least one row")
    if scale is not None:
        v = v * np.asarray(scale, dtype=np.float64)[:, None]
    if order is not None:
        seg = np.repeat(np.arange(n_seg), np.diff(offsets))
        v = v[np.lexsort((np.asarray(order), seg))]
    return np.add.reduceat(v, offsets[:-1] - offsets[0], axis=0)


def decay_step(prev_keys: np.ndarray, prev_state: np.ndarray, prev_day_end_ms: int | None,
               day_keys: np.ndarray, day_sums: np.ndarray, day_end_ms_: int,
               tau_hours: float) -> tuple[np.ndarray, np.ndarray]:
    """One day of the chain over whole arrays: S_D = carry * S_{D-1} (+) today's weighted sums, per key.

    Keys present on only one side keep that side's term. `prev_day_end_ms=None` means a cold start (no state).
    The reference implementation for tests and small jobs; the Spark job computes the same per partition.
    """
    day_keys = np.asarray(day_keys)
    day_sums = np.asarray(day_sums, dtype=np.float64)
    if prev_day_end_ms is None or len(prev_keys) == 0:
        return day_keys, day_sums
    f = carry_factor(prev_day_end_ms, day_end_ms_, tau_hours)
    keys = np.concatenate([np.asarray(prev_keys), day_keys])
    vecs = np.concatenate([np.asarray(prev_state, dtype=np.float64) * f, day_sums])
    order = np.r_[np.zeros(len(prev_keys), np.int64), np.ones(len(day_keys), np.int64)]  # state first
    return group_sum(keys, vecs, order=order)


def normalise(x: np.ndarray, kind: str) -> np.ndarray:
    """The exported CR: `layernorm` (per row (x - mean) / sqrt(var + 1e-5), no affine), `l2`, or `none`.

    LayerNorm and L2 are scale-invariant, so a key that stops appearing keeps its last direction while its raw
    state decays; `none` exports the raw decayed sum. Output float32, the tables' vector type.
    """
    x = np.asarray(x, dtype=np.float64)
    kind = getattr(kind, "value", kind)
    if kind == "layernorm":
        mean = x.mean(axis=1, keepdims=True)
        var = x.var(axis=1, keepdims=True)
        out = (x - mean) / np.sqrt(var + LAYERNORM_EPS)
    elif kind == "l2":
        out = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), L2_EPS)
    elif kind == "none":
        out = x
    else:
        raise BadInput(f"unknown CR normalisation {kind!r}: use layernorm, l2 or none")
    return out.astype(np.float32)


# ---- Arrow <-> numpy for vector columns (Spark's Arrow path: array<float|double> is a ListArray) ----

def list_to_matrix(arr: pa.Array | pa.ChunkedArray, dtype=np.float64) -> np.ndarray:
    """A list<float|double> column of equal-length rows as an (n, d) matrix (zero-copy where possible)."""
    if isinstance(arr, pa.ChunkedArray):
        arr = pa.concat_arrays(arr.chunks) if arr.num_chunks != 1 else arr.chunk(0)
    n = len(arr)
    if n == 0:
        return np.zeros((0, 0), dtype=dtype)
    if arr.null_count:
        raise ValueError("vector column holds nulls")
    offsets = np.asarray(arr.offsets)
    widths = np.diff(offsets)
    d = int(widths[0])
    if np.any(widths != d):
        raise ValueError(f"vector column holds rows of different lengths ({sorted(set(widths.tolist()))[:5]})")
    flat = np.asarray(arr.values.slice(int(offsets[0]), n * d).to_numpy(zero_copy_only=False))
    return flat.reshape(n, d).astype(dtype, copy=False)


def matrix_to_list(m: np.ndarray, value_type: pa.DataType = pa.float32()) -> pa.ListArray:
    """An (n, d) matrix as a list<float> Arrow column (Spark's Arrow path rejects FixedSizeList)."""
    m = np.ascontiguousarray(m, dtype=value_type.to_pandas_dtype())
    n, d = m.shape
    if n * d >= 2**31:
        raise ValueError(f"{n} x {d} values do not fit one Arrow list batch; use smaller batches")
    offsets = pa.array(np.arange(0, (n + 1) * d, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(m.reshape(-1), type=value_type))
